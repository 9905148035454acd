"""The ablation script (Testing/experiments/ablation.py) end to end, at a toy budget.

Real phantoms, real training and real 15-subset evaluation of all five arms over two seeds,
in a few seconds per run: this checks the plumbing (arms, caching, paired tables), not the
accuracy, which needs the script's default budget (README "Accuracy").
"""
from __future__ import annotations

import importlib.util
import json
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parents[1] / "experiments" / "ablation.py"
TOY = ["--train-cases", "2", "--val-cases", "1", "--test-cases", "1", "--spacing", "4", "--patch", "32",
       "--warmup-steps", "3", "--missing-steps", "5", "--election-every", "8", "--threads", "2"]


def _load_script():
    spec = importlib.util.spec_from_file_location("ablation", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.slow
@pytest.mark.timeout(1800)
def test_ablation_runs_every_arm_over_seeds_reports_paired_differences_and_reuses_finished_runs(tmp_path, capsys):
    ablation = _load_script()
    out = tmp_path / "out"
    assert ablation.main(TOY + ["--out", str(out), "--seeds", "0,1"]) == 0

    runs = json.loads((out / "ablation.json").read_text())["runs"]
    assert list(runs) == ["0", "1"]
    for seed, arms in runs.items():
        assert list(arms) == list(ablation.ARMS)
        configs = {key: res["config"] for key, res in arms.items()}
        assert configs["b"]["kd_weight"] == configs["e"]["kd_weight"] == 0.0
        assert configs["a"]["bottleneck_weight"] == 0.5 and configs["e"]["bottleneck_weight"] == 0.0
        assert configs["d"]["kd_weight"] == 1.0 and configs["a"]["seed"] == int(seed)
        # (c) distils towards one scan that (a) did not elect
        (teacher,) = configs["c"]["fixed_teachers"]
        assert teacher not in arms["a"]["teachers"]
        for res in arms.values():
            assert len(res["per_subset"]) == 15
            lacking = res["lacking_teacher"]
            assert lacking["mean"] == pytest.approx((lacking["ET"] + lacking["TC"] + lacking["WT"]) / 3)

    table = (out / "ablation.md").read_text()
    diffs = ablation.paired_differences({int(s): a for s, a in runs.items()}, "d", "e")
    row_d = next(line for line in table.splitlines() if line.startswith("| (d) |"))
    assert " / ".join(f"{d:+.3f}" for d in diffs) in row_d
    assert f"{sum(d > 0 for d in diffs)}/2" in row_d
    for key in ablation.ARMS:
        assert f"### ({key})" in table

    # a second call with one more arm subset reuses every finished run instead of training again
    capsys.readouterr()
    stamps = {p: p.stat().st_mtime_ns for p in (out / "work").glob("run-*/result.json")}
    assert len(stamps) == 10
    assert ablation.main(TOY + ["--out", str(out), "--seeds", "1", "--arms", "a,e"]) == 0
    assert capsys.readouterr().out.count("reusing") == 2
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps


def test_ablation_refuses_unknown_arms_and_arm_lists_without_a(tmp_path):
    ablation = _load_script()
    for arms in ("b,e", "a,x"):
        with pytest.raises(SystemExit, match="includes a"):
            ablation.main(["--out", str(tmp_path), "--arms", arms])
