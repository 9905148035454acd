"""`lckd evaluate`: metrics and the empty-region rule, and the 15-row reports on two tiny cases."""
from __future__ import annotations

import argparse
import csv
import json

import numpy as np
import pytest
import torch

from lckd.research.evaluate import HD95_PENALTY, add_evaluate_parser, region_metrics, run_evaluate


def _cube(shift: int = 0) -> np.ndarray:
    a = np.zeros((3, 16, 16, 16), dtype=bool)
    a[:, 4:12, 4:12, 4 + shift:12 + shift] = True
    return a


def test_dice_and_hd95_follow_the_spacing_and_the_empty_rule():
    m = region_metrics(_cube(), _cube())
    assert m["ET"] == 1.0 and m["HD95_WT"] == 0.0
    m = region_metrics(_cube(2), _cube(), spacing_zyx=(1.0, 1.0, 1.5))
    assert m["TC"] == pytest.approx(0.75)
    assert m["HD95_TC"] == pytest.approx(3.0)            # 2 voxels x 1.5 mm
    empty = np.zeros_like(_cube())
    m = region_metrics(empty, empty)
    assert (m["ET"], m["HD95_ET"]) == (1.0, 0.0)
    m = region_metrics(_cube(), empty)
    assert (m["WT"], m["HD95_WT"]) == (0.0, HD95_PENALTY)


def test_evaluate_writes_15_subset_rows(tmp_path):
    from lckd.model.modelcard import ModelCard, save_model
    from lckd.model.network import build_network
    from lckd.research.phantom import write_phantom_dataset

    write_phantom_dataset(tmp_path / "data", 2, seed=700, shape=(48, 64, 64))
    torch.manual_seed(0)
    net = build_network("lite")
    with torch.no_grad():   # predict nothing: a random network's noisy masks make HD95 slow
        net.decoder.head.weight.zero_()
        net.decoder.head.bias.fill_(-10.0)
    card = ModelCard(name="tiny", version="0.0.1", architecture=net.cfg.to_dict(), patch_size=[64, 64, 64])
    card_path = save_model(net, card, tmp_path / "model")
    parser = argparse.ArgumentParser()
    add_evaluate_parser(parser.add_subparsers())
    args = parser.parse_args(["evaluate", str(tmp_path / "data"), "--model", str(card_path), "--out",
                              str(tmp_path / "eval"), "--threads", "2", "-q", "--update-card"])
    assert run_evaluate(args) == 0
    rows = list(csv.DictReader(open(tmp_path / "eval" / "evaluation.csv")))
    assert len(rows) == 15 and rows[-1]["subset"] == "T1+T1ce+T2+FLAIR"
    assert all(r["cases"] == "2" for r in rows)
    report = json.loads((tmp_path / "eval" / "evaluation.json").read_text())
    assert len(report["per_subset"]) == 15 and len(report["per_case"]) == 30
    md = (tmp_path / "eval" / "evaluation.md").read_text()
    assert md.count("\n| ") >= 16 and "| mean |" in md
    from lckd.model.modelcard import load_model
    _, card = load_model(card_path)                      # re-saved: sha256 still verifies
    assert card.expected_dice("T1ce+FLAIR") is not None
