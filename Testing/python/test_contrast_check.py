"""The contrast check: scans under the wrong flag are reported or refused, correct ones pass,
noise inside a brain outline is reported, and the quality estimate hears about it."""
from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from conftest import needs_shared_data, shared_data
from lckd.base.errors import InputError
from lckd.base.modalities import MODALITIES
from lckd.inference import contrastcheck
from lckd.inference.contrastcheck import ContrastModel, check_scans, load_model
from lckd.io.datasets import find_cases
from lckd.prep.modelgrid import load_case
from lckd.prep.preprocess import prepare_case
from lckd.research.phantom import make_phantom

CASE = "BraTS2021_00000"
ORDER = list(MODALITIES)


@pytest.fixture(scope="module")
def real_case():
    root = shared_data("brats-labelled")
    if not root.exists():
        pytest.skip(f"shared data not available: {root}")
    case = next(c for c in find_cases(root) if c.case_id == CASE)
    return case, load_case(case, ORDER, (1.0, 1.0, 1.0))


def _flagged(x: np.ndarray, flags: dict) -> np.ndarray:
    """Channels rearranged so that channel `flag` holds the scan whose true contrast is flags[flag]."""
    out = np.zeros_like(x)
    for flag, true in flags.items():
        out[ORDER.index(flag)] = x[ORDER.index(true)]
    return out


def _present(flags) -> np.ndarray:
    return np.array([m in flags for m in ORDER])


def test_shipped_check_loads_and_pairs_are_antisymmetric():
    model = load_model()
    assert model.classes == tuple(MODALITIES)
    assert len(model.pairs) == 6
    again = ContrastModel.from_dict(model.to_dict())
    f = np.random.default_rng(0).normal(size=(2, len(contrastcheck.FEATURES))) * model.scale + model.mean
    assert np.allclose(again.probabilities(f), model.probabilities(f))
    p = model.pair_probability(f[0], "T1", f[1], "FLAIR")
    assert p == pytest.approx(1.0 - model.pair_probability(f[1], "T1", f[0], "FLAIR"))
    assert p == pytest.approx(model.pair_probability(f[1], "FLAIR", f[0], "T1"))


@needs_shared_data("brats-labelled")
def test_correct_flags_pass_and_swaps_are_refused(real_case):
    _, lc = real_case
    assert not check_scans(lc.x, lc.present, ORDER, 1.0).messages
    for a, b in (("T1", "FLAIR"), ("T1", "T1ce"), ("T2", "FLAIR")):
        flags = {m: m for m in ORDER}
        flags[a], flags[b] = b, a
        report = check_scans(_flagged(lc.x, flags), lc.present, ORDER, 1.0)
        assert report.checked and report.messages, (a, b)
        assert any(f"given as {a} and {b} look swapped" in m for m in report.messages), report.messages


@needs_shared_data("brats-labelled")
def test_a_t1_given_as_t2_alone_is_reported(real_case):
    _, lc = real_case
    flags = {"T2": "T1"}
    report = check_scans(_flagged(lc.x, flags), _present(flags), ORDER, 1.0)
    assert report.looks_like["T2"] == "T1"
    assert any("given as T2 looks like T1" in m for m in report.messages)


@needs_shared_data("brats-labelled")
def test_noise_inside_a_brain_outline_looks_like_no_contrast(real_case):
    _, lc = real_case
    brain = lc.x[0] != 0
    noise = np.zeros_like(lc.x)
    noise[0][brain] = np.random.default_rng(1).normal(size=int(brain.sum()))
    report = check_scans(noise, _present({"T1"}), ORDER, 1.0)
    assert report.unknown == ["T1"]
    assert "looks like no MRI contrast" in report.messages[0]


def test_small_volumes_are_not_judged_and_a_full_size_phantom_passes():
    small = prepare_case(make_phantom(3, (40, 48, 48)).images, ORDER)
    assert check_scans(small.x, small.present, ORDER, 1.0).checked is False
    full = prepare_case(make_phantom(4).images, ORDER)
    report = check_scans(full.x, full.present, ORDER, 1.0)
    assert report.checked and not report.refuse


@needs_shared_data("brats-labelled")
def test_the_cli_refuses_a_swap_before_the_network_and_trust_flags_goes_on(real_case, tmp_path):
    case, _ = real_case
    files = case.images
    cmd = [sys.executable, "-m", "lckd.frontends.cli", "segment", "-q", "--threads", "1",
           "--t1", str(files["FLAIR"]), "--flair", str(files["T1"]), "--t1ce", str(files["T1ce"]),
           "-o", str(tmp_path / "seg.nii.gz")]
    run = subprocess.run(cmd, capture_output=True, text=True, encoding="utf-8", errors="replace", timeout=300,
                         cwd=Path(__file__).resolve().parents[2])
    assert run.returncode != 0
    assert "look swapped" in run.stderr and "--trust-flags" in run.stderr
    assert not (tmp_path / "seg.nii.gz").exists()


@needs_shared_data("brats-labelled")
def test_trusted_flags_segment_with_the_doubt_in_warnings_and_quality(real_case):
    from lckd.inference import Segmenter, SegmentOptions

    case, _ = real_case
    files = case.images
    seg = Segmenter.load(None, device="cpu")
    swapped = {"T1": files["FLAIR"], "FLAIR": files["T1"]}
    with pytest.raises(InputError, match="look swapped"):
        seg.segment(swapped)
    res = seg.segment(swapped, SegmentOptions(trust_flags=True))
    assert any("look swapped" in w for w in res.warnings)
    assert res.quality["low_confidence"] is True
    assert any("look swapped" in r for r in res.quality["reasons"])
