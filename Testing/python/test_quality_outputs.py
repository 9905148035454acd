"""The quality estimate reaches every place a result appears: the batch summary, the worker's
reply and (in test_slicer_logic) the Slicer node, from a card that carries a calibration."""
from __future__ import annotations

import csv
import json

import pytest

from conftest import TEST_MODEL
from lckd.frontends.cli import main
from lckd.inference.quality import FEATURES
from model_copies import model_copy

#: Expects WT Dice 0.6 of every run and flags below 0.7: every run is flagged.
FLAG_ALL = {"features": list(FEATURES), "mean": [0.0] * len(FEATURES), "scale": [1.0] * len(FEATURES),
            "coef": [0.0] * len(FEATURES), "intercept": 0.6, "interval": [-0.15, 0.1], "flag_below": 0.7}


def calibrated_copy(folder, calibration: dict = FLAG_ALL):
    """A copy of the phantom model whose card carries `calibration` (its weights are unchanged)."""
    return model_copy(folder, TEST_MODEL, quality=calibration)


@pytest.fixture(scope="module")
def flagging_card(tmp_path_factory):
    return calibrated_copy(tmp_path_factory.mktemp("flagging_model"))


def test_batch_summary_carries_the_estimate_and_lists_flagged_cases_first_to_review(cohort, flagging_card,
                                                                                      tmp_path, capsys):
    root, ids = cohort
    out = tmp_path / "out"
    assert main(["batch", str(root), str(out), "--model", str(flagging_card), "--device", "cpu", "-q"]) == 1
    printed = capsys.readouterr().out
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    ok = [c for c in ids if rows[c]["status"] == "ok"]
    assert len(ok) == 2
    for c in ok:
        assert rows[c]["expected_wt_dice"] == "0.600" and rows[c]["low_confidence"] == "yes"
        record = json.loads((out / f"{c}.json").read_text())["quality"]
        assert record["expected_wt_dice"] == 0.6 and record["interval"] == [0.45, 0.7]
    failed = next(c for c in ids if rows[c]["status"] == "error")
    assert rows[failed]["expected_wt_dice"] == "" and rows[failed]["low_confidence"] == ""
    assert "low confidence (review first" in printed and all(c in printed for c in ok)
    # the bundled phantom model has no calibration: the columns stay empty, nothing is flagged
    plain = tmp_path / "plain"
    main(["batch", str(root), str(plain), "--model", TEST_MODEL, "--device", "cpu", "-q"])
    with open(plain / "summary.csv", newline="", encoding="utf-8") as f:
        assert {r["low_confidence"] for r in csv.DictReader(f)} == {""}


def test_the_worker_reply_carries_the_estimate(flagging_card, small_case, tmp_path):
    from LCKDSegmentationLib.workerclient import WorkerClient

    files, _ = small_case
    client = WorkerClient(model=str(flagging_card), device="cpu")
    client.start()
    try:
        reply = client.request("segment", timeout=180, inputs={m: str(files[m]) for m in ("T1ce", "FLAIR")},
                               options={"output": str(tmp_path / "seg.nii.gz")})
    finally:
        client.stop()
    assert reply["event"] == "result"
    q = reply["quality"]
    assert q["expected_wt_dice"] == 0.6 and q["low_confidence"] is True
    assert set(q["features"]) == set(FEATURES) and q["kind"] == "estimate, not a measurement"


def test_info_shows_the_clinical_slice_table_and_the_calibration(tmp_path, capsys):
    card_path = calibrated_copy(tmp_path / "model", dict(FLAG_ALL, fitted_on="300 cross-validation test runs"))
    card = json.loads(card_path.read_text())
    row = {"ET": 0.5, "TC": 0.6, "WT": 0.7, "ET_sd": 0.1, "TC_sd": 0.1, "WT_sd": 0.1}
    card["evaluation"] = {"description": "5-fold cross-validation", "folds": 5, "per_subset": {"FLAIR": row},
                          "clinical": {"description": "the same, clinical 2D series", "folds": 5,
                                       "per_subset": {"FLAIR": dict(row, WT=0.61)}}}
    card_path.write_text(json.dumps(card))
    assert main(["info", "--model", str(card_path)]) == 0
    out = capsys.readouterr().out
    assert "on clinical 2D series" in out
    flair = [line for line in out.splitlines() if line.startswith("FLAIR ")]
    assert len(flair) == 2 and "0.700" in flair[0] and "0.610" in flair[1]
    assert "quality estimate:" in out and "300 cross-validation test runs" in out and "below an expected WT " \
        "Dice of 0.70" in " ".join(out.split())
