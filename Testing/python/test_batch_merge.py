"""Merging the shares of a batch: `merge_parts` / `lckd batch-merge` and torchrun's `_merge_ranks`.

The parts are real: `lckd batch --shard K/N` (and, for torchrun, two real processes joined
by a torch.distributed gloo group) segmenting the phantom cohort of conftest (one complete
case, one with only T1ce+FLAIR, one with a corrupt FLAIR) with the small phantom model.
"""
from __future__ import annotations

import csv
import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from conftest import TEST_MODEL
from lckd.base.errors import InputError
from lckd.frontends.batch import SUMMARY_FORMAT, Shard, find_batch_cases, merge_parts, read_summary
from lckd.frontends.cli import main

MODULE_DIR = Path(__file__).resolve().parents[2] / "LCKDSegmentation"
RUN = ["--model", TEST_MODEL, "--device", "cpu", "--threads", "1"]


def _csv_rows(path: Path) -> list[dict]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _part(out: Path, k: int, n: int) -> Path:
    return out / f"summary-part-{k}-of-{n}.json"


def _check_statuses(rows_by_case: dict, ids: list[str]) -> None:
    """What the cohort's construction implies: two cases segment, the corrupt one fails."""
    assert rows_by_case[ids[0]]["status"] == "ok" and rows_by_case[ids[0]]["modalities"] == "T1+T1ce+T2+FLAIR"
    assert rows_by_case[ids[1]]["status"] == "ok" and rows_by_case[ids[1]]["modalities"] == "T1ce+FLAIR"
    assert rows_by_case[ids[2]]["status"] == "error" and "FLAIR" in rows_by_case[ids[2]]["message"]


def _check_volumes_match_records(out: Path, rows: list[dict]) -> None:
    """Each segmented row carries the volumes of the case's own result record <case>.json."""
    for row in rows:
        if row["status"] == "error":
            assert row["WT_ml"] == "" and not (out / f"{row['case']}.json").exists()
            continue
        volumes = json.loads((out / f"{row['case']}.json").read_text())["volumes_ml"]
        for region in ("NCR", "ED", "ET", "TC", "WT"):
            assert row[f"{region}_ml"] == f"{float(volumes[region]):.2f}", (row["case"], region)


@pytest.fixture()
def shard_parts(cohort, tmp_path):
    """The cohort segmented as two shards (`lckd batch --shard 0/2` and `1/2`) into one folder."""
    root, ids = cohort
    out = tmp_path / "out"
    statuses = [main(["batch", str(root), str(out), "--shard", f"{k}/2", "--quiet", *RUN]) for k in (0, 1)]
    return root, out, ids, statuses


# --------------------------------------------------------------------------- Shard

@pytest.mark.parametrize("text, index, count, name", [
    (None, 0, 1, "summary"), ("", 0, 1, "summary"), ("0/1", 0, 1, "summary"),
    ("0/2", 0, 2, "summary-part-0-of-2"), ("2/3", 2, 3, "summary-part-2-of-3"),
])
def test_shard_parse_and_part_name(text, index, count, name):
    shard = Shard.parse(text)
    assert (shard.index, shard.count, shard.part_name()) == (index, count, name)


@pytest.mark.parametrize("text", ["0/0", "-1/2", "3/3", "4/3", "a/b", "1", "1/2/3", "1/-2"])
def test_bad_shard_texts_are_input_errors(text):
    with pytest.raises(InputError, match="--shard"):
        Shard.parse(text)


def test_shards_take_every_item_exactly_once():
    items = [f"case{i}" for i in range(11)]
    for n in (1, 2, 3, 4, 11, 12):
        shares = [Shard(k, n).take(items) for k in range(n)]
        taken = [x for share in shares for x in share]
        assert sorted(taken) == sorted(items) and len(taken) == len(items), n
        assert max(map(len, shares)) - min(map(len, shares)) <= 1, n   # balanced


# --------------------------------------------------------------------------- merge_parts on real parts

def test_merge_parts_of_real_shards(shard_parts, capsys):
    root, out, ids, statuses = shard_parts
    cases = find_batch_cases(root)
    parts = [read_summary(_part(out, k, 2)) for k in (0, 1)]
    for k, part in enumerate(parts):   # each shard wrote its own share, nothing else
        assert [r["case"] for r in part["cases"]] == [c.case_id for c in Shard(k, 2).take(cases)]
    erring = [any(r["status"] == "error" for r in p["cases"]) for p in parts]
    assert statuses == [1 if e else 0 for e in erring]
    assert not (out / "summary.csv").exists() and not (out / "summary.json").exists()

    rows = merge_parts(out)
    assert [r["case"] for r in rows] == sorted(ids)                     # every case once, by id
    by_case = {r["case"]: r for r in rows}
    assert by_case == {r["case"]: r for p in parts for r in p["cases"]}  # rows kept as the shards wrote them
    _check_statuses(by_case, ids)
    _check_volumes_match_records(out, rows)

    assert _csv_rows(out / "summary.csv") == rows
    merged = read_summary(out / "summary.json")
    assert merged["cases"] == rows
    assert merged["counts"] == {"ok": 2, "skipped": 0, "error": 1}
    assert merged["format"] == SUMMARY_FORMAT
    for key in ("model", "options", "input_dir"):
        assert merged[key] == parts[0][key] == parts[1][key], key
    assert merged["seconds"] == pytest.approx(sum(p["seconds"] for p in parts), abs=2e-3)

    # `lckd batch-merge` does the same, again (summary.json itself is not a part), and fails as a case did
    before = (out / "summary.csv").read_bytes()
    capsys.readouterr()
    assert main(["batch-merge", str(out)]) == 1
    printed = capsys.readouterr().out
    assert "2 segmented, 0 skipped (already done), 1 failed" in printed and "summary.csv" in printed
    assert (out / "summary.csv").read_bytes() == before


def test_merge_keeps_skipped_cases_of_a_rerun_shard(shard_parts):
    root, out, ids, _ = shard_parts
    first = {r["case"]: r for r in merge_parts(out)}
    main(["batch", str(root), str(out), "--shard", "1/2", "--quiet", *RUN])   # its cases are done already
    rerun = {r["case"] for r in read_summary(_part(out, 1, 2))["cases"]}
    rows = merge_parts(out)
    assert [r["case"] for r in rows] == sorted(ids)
    for r in rows:
        if r["case"] in rerun and first[r["case"]]["status"] == "ok":
            assert r["status"] == "skipped"
            assert all(r[f"{k}_ml"] == first[r["case"]][f"{k}_ml"] for k in ("NCR", "ED", "ET", "TC", "WT"))
        elif r["case"] not in rerun:
            assert r == first[r["case"]]
    c = read_summary(out / "summary.json")["counts"]
    assert c["skipped"] == sum(first[x]["status"] == "ok" for x in rerun) > 0
    assert c["ok"] + c["skipped"] == 2 and c["error"] == 1
    _check_volumes_match_records(out, rows)


def test_a_missing_part_fails_clearly_and_writes_no_summary(shard_parts, capsys):
    _, out, _, _ = shard_parts
    _part(out, 1, 2).unlink()
    with pytest.raises(InputError, match=r"missing for K = 1 of 2: run those shards first"):
        merge_parts(out)
    assert not (out / "summary.csv").exists() and not (out / "summary.json").exists()
    with pytest.raises(InputError, match=r"missing for K = 0, 1, 2 of 3"):
        merge_parts(out, expect=3)          # torchrun says how many ranks there were
    capsys.readouterr()
    assert main(["batch-merge", str(out)]) == 1
    assert "missing for K = 1 of 2" in capsys.readouterr().err
    assert not (out / "summary.csv").exists()


def test_parts_of_different_batches_or_unreadable_parts_are_refused(shard_parts):
    _, out, _, _ = shard_parts
    stale = _part(out, 0, 3)
    stale.write_bytes(_part(out, 0, 2).read_bytes())   # left over from an earlier --shard 0/3 run
    with pytest.raises(InputError, match=r"different N: \[2, 3\]"):
        merge_parts(out)
    # torchrun knows its world size: the stale part is not one of this run's and is ignored
    rows = merge_parts(out, expect=2)
    assert len(rows) == len({r["case"] for r in rows}) and (out / "summary.csv").is_file()
    (out / "summary.csv").unlink()
    (out / "summary.json").unlink()
    stale.unlink()
    _part(out, 1, 2).write_text('{"cases": [', encoding="utf-8")   # cut off mid-write
    with pytest.raises(InputError, match="cannot read batch summary .*summary-part-1-of-2.json"):
        merge_parts(out)
    assert not (out / "summary.csv").exists()


def test_torchrun_and_shard_together_are_refused(cohort, tmp_path, monkeypatch, capsys):
    root, _ = cohort
    monkeypatch.setenv("RANK", "0")
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("LOCAL_RANK", "0")
    assert main(["batch", str(root), str(tmp_path / "o"), "--shard", "0/2", *RUN]) == 1
    assert "either torchrun or --shard" in capsys.readouterr().err


# --------------------------------------------------------------------------- torchrun: _merge_ranks

def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_two_torchrun_ranks_merge_into_one_summary(cohort, tmp_path):
    """Two real ranks (the environment torchrun gives them), one output folder, a gloo group."""
    pytest.importorskip("torch.distributed")
    import torch.distributed as dist

    if not dist.is_available() or not dist.is_gloo_available():
        pytest.skip("torch.distributed with gloo is not available")
    root, ids = cohort
    out = tmp_path / "out"
    base = dict(os.environ, MASTER_ADDR="127.0.0.1", MASTER_PORT=str(_free_port()), WORLD_SIZE="2",
                OMP_NUM_THREADS="1", PYTHONPATH=os.pathsep.join(filter(None, [str(MODULE_DIR),
                                                                             os.environ.get("PYTHONPATH")])))
    base.pop("LCKD_DEBUG", None)
    procs = [subprocess.Popen([sys.executable, "-m", "lckd.frontends.cli", "batch", str(root), str(out), *RUN],
                              env=dict(base, RANK=str(r), LOCAL_RANK=str(r)), stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for r in (0, 1)]
    results = []
    try:
        for p in procs:
            results.append(p.communicate(timeout=300))
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.communicate()
    (out0, err0), (out1, err1) = results
    cases = find_batch_cases(root)

    # each rank wrote its share as a part, then rank 0 merged the parts after the barrier
    for r in (0, 1):
        part = read_summary(_part(out, r, 2))
        assert [x["case"] for x in part["cases"]] == [c.case_id for c in Shard(r, 2).take(cases)]
    rows = _csv_rows(out / "summary.csv")
    assert [r["case"] for r in rows] == sorted(ids)                  # every case exactly once
    by_case = {r["case"]: r for r in rows}
    _check_statuses(by_case, ids)
    _check_volumes_match_records(out, rows)
    merged = read_summary(out / "summary.json")
    assert merged["cases"] == rows and merged["counts"] == {"ok": 2, "skipped": 0, "error": 1}

    # rank 0 reports the whole batch (and fails, as a case did); rank 1 prints no summary
    assert procs[0].returncode == 1, out0 + err0
    assert procs[1].returncode == 0, out1 + err1
    assert "2 segmented, 0 skipped (already done), 1 failed" in out0
    assert f"summary: {out / 'summary'}.csv" in out0
    assert "summary:" not in out1 and "segmented" not in out1
