"""`lckd segment` as a user runs it: a separate process, the bundled default model, the bundled
sample case, all four scans. The labelmap must reach the Dice the model card recorded for that
case. This is the segment run of the Python 3.9 and 3.12 CI runs (`.ci/other-pythons`): the
process imports the core the way that Python finds it (the installed package, or the module
folder on PYTHONPATH, as Slicer does)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import SimpleITK as sitk

from lckd.frontends.demo import sample_dice
from lckd.model.modelcard import read_card
from lckd.model.registry import default_model_name, resolve_model
from lckd.model.resources import sample_case

pytestmark = pytest.mark.slicer_pythons

CORE_ROOT = Path(__file__).resolve().parents[2] / "LCKDSegmentation"


def test_lckd_segment_reproduces_the_cards_sample_case_dice(tmp_path):
    case = sample_case()
    out = tmp_path / "seg.nii.gz"
    env = dict(os.environ)
    # the core from this checkout, as Slicer imports it from the module folder
    env["PYTHONPATH"] = os.pathsep.join(p for p in (str(CORE_ROOT), env.get("PYTHONPATH", "")) if p)
    cmd = [sys.executable, "-m", "lckd.frontends.cli", "segment", "-q", "--threads", "2", "--device", "cpu",
           "--t1", str(case.images["T1"]), "--t1ce", str(case.images["T1ce"]), "--t2", str(case.images["T2"]),
           "--flair", str(case.images["FLAIR"]), "-o", str(out)]
    run = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=600)
    assert run.returncode == 0, run.stdout + run.stderr
    measured = sample_dice(sitk.ReadImage(str(out)))
    card = read_card(resolve_model(default_model_name(), allow_download=False))
    recorded = card.evaluation["sample_case"]["per_subset"]["T1+T1ce+T2+FLAIR"]
    for region in ("ET", "TC", "WT"):
        assert abs(measured[region] - recorded[region]) <= 0.05, (region, measured, recorded)
