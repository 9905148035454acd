"""Brain mask and normalisation: 0 and constant non-zero backgrounds are not brain."""
from __future__ import annotations

import numpy as np

from lckd.prep.foreground import face_background
from lckd.prep.preprocess import brain_mask, normalise, prepare_case


def _brain(bg: float = 0.0) -> np.ndarray:
    a = np.full((40, 50, 60), bg, dtype=np.float32)
    rng = np.random.default_rng(0)
    a[8:32, 10:40, 12:48] = rng.normal(2.0, 0.5, (24, 30, 36))
    return a


def test_constant_nonzero_background_is_found_and_excluded():
    z = _brain(-1.37)                      # a z-scored export: background at -mean/std
    assert face_background(z) == np.float32(-1.37)
    mask = brain_mask([z])
    assert mask.sum() == 24 * 30 * 36
    assert face_background(_brain(0.0)) == 0.0


def test_noisy_border_means_no_constant_background():
    a = np.random.default_rng(1).normal(10, 1, (20, 20, 20)).astype(np.float32)
    assert face_background(a) == 0.0
    assert brain_mask([a]).all()


def test_zscored_export_and_zero_background_prepare_to_the_same_network_input():
    plain, exported = _brain(0.0), _brain(0.0)
    inside = exported != 0
    exported[inside] = (exported[inside] - exported[inside].mean()) / exported[inside].std()
    exported[~inside] = -exported[inside].mean() / 1.0 - 0.8     # constant, not 0
    a = prepare_case({"FLAIR": plain}, ["T1", "T1ce", "T2", "FLAIR"])
    b = prepare_case({"FLAIR": exported}, ["T1", "T1ce", "T2", "FLAIR"])
    assert a.x.shape == b.x.shape and a.box == b.box
    assert np.allclose(a.x, b.x, atol=1e-4)
    assert normalise(exported)[~inside].max() == 0.0
