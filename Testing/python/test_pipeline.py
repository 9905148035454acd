"""The inference pipeline end to end on phantom files: subsets, geometry, options, cancel."""
from __future__ import annotations

import threading

import numpy as np
import pytest
import SimpleITK as sitk

from lckd.base.errors import Cancelled
from lckd.base.labels import CONVENTIONS
from lckd.base.modalities import all_subsets
from lckd.research.phantom import make_phantom


def _geometry(img: sitk.Image):
    return (img.GetSize(), tuple(np.round(img.GetSpacing(), 5)), tuple(np.round(img.GetOrigin(), 4)),
            tuple(np.round(img.GetDirection(), 5)))


@pytest.mark.parametrize("subset", all_subsets(), ids=lambda s: "+".join(s))
def test_every_subset_segments_files(segmenter, small_case, subset):
    paths, _ = small_case
    res = segmenter.segment({m: paths[m] for m in subset})
    ref = sitk.ReadImage(str(paths[res.reference]))
    assert res.modalities == tuple(subset)
    assert _geometry(res.labelmap) == _geometry(ref)
    lab = sitk.GetArrayFromImage(res.labelmap)
    assert lab.dtype == np.uint8 and set(np.unique(lab)) <= {0, 1, 2, 4}
    brain = sitk.GetArrayFromImage(ref) != 0
    assert not lab[~brain].any()  # nothing outside the brain
    n = {v: int((lab == v).sum()) for v in (1, 2, 4)}
    assert res.volumes_ml["WT"] == pytest.approx(sum(n.values()) / 1000)
    assert res.volumes_ml["TC"] == pytest.approx((n[1] + n[4]) / 1000)


def test_aliases_and_reference_choice(segmenter, small_case):
    paths, _ = small_case
    res = segmenter.segment({"t2w": paths["T2"], "t2f": paths["FLAIR"]})
    assert res.modalities == ("T2", "FLAIR") and res.reference == "FLAIR"
    res = segmenter.segment({"t2w": paths["T2"], "t2f": paths["FLAIR"]}, reference="T2")
    assert res.reference == "T2"


def test_orientation_does_not_change_the_physical_result(segmenter):
    """The same physical volume stored flipped and permuted gives the same segmentation."""
    images, _ = make_phantom(5, (64, 80, 80)).to_sitk()
    flipped = {m: sitk.PermuteAxes(sitk.Flip(img, [True, False, True]), [1, 0, 2]) for m, img in images.items()}
    assert flipped["T1"].GetDirection() != images["T1"].GetDirection()
    a = segmenter.segment(images).labelmap
    b = segmenter.segment(flipped).labelmap
    assert _geometry(b) == _geometry(flipped["T1ce"])
    back = sitk.Resample(b, a, sitk.Transform(), sitk.sitkNearestNeighbor)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(a))


def test_anisotropic_oblique_input_comes_back_on_its_own_grid(segmenter):
    """A thick-slice, oblique acquisition is segmented at 1 mm and returned on its own grid."""
    c, s = np.cos(np.radians(20)), np.sin(np.radians(20))
    direction = (c, -s, 0.0, s, c, 0.0, 0.0, 0.0, 1.0)
    images, label = make_phantom(6, (24, 80, 80), spacing=(1.0, 1.0, 3.0), direction=direction,
                                 origin=(10.0, -20.0, 5.0)).to_sitk()
    res = segmenter.segment({"T1ce": images["T1ce"], "FLAIR": images["FLAIR"]})
    assert _geometry(res.labelmap) == _geometry(images["T1ce"])
    # the tumour is found on the thick slices (WT Dice 0.86 when written), and its volume
    # is counted with the 3 mm slice thickness
    truth = sitk.GetArrayFromImage(label) > 0
    found = sitk.GetArrayFromImage(res.labelmap) > 0
    assert 2 * (truth & found).sum() / (truth.sum() + found.sum()) > 0.7
    assert res.volumes_ml["WT"] == pytest.approx(found.sum() * 1.0 * 1.0 * 3.0 / 1000.0)


def test_mismatched_grids_are_resampled_with_a_warning(segmenter, small_case):
    paths, _ = small_case
    flair = sitk.ReadImage(str(paths["FLAIR"]))
    coarse = sitk.Resample(flair, [40, 40, 32], sitk.Transform(), sitk.sitkLinear, flair.GetOrigin(),
                           [2.0, 2.0, 2.0], flair.GetDirection(), 0.0, flair.GetPixelID())
    res = segmenter.segment({"T1ce": paths["T1ce"], "FLAIR": coarse})
    assert any("grid" in w for w in res.warnings)
    assert _geometry(res.labelmap) == _geometry(sitk.ReadImage(str(paths["T1ce"])))


def test_volume_smaller_than_the_patch_is_padded(segmenter):
    images, _ = make_phantom(7, (20, 30, 26)).to_sitk()
    res = segmenter.segment(images)
    assert res.labelmap.GetSize() == (26, 30, 20)


def test_brats2023_labels_and_probabilities(segmenter, small_case):
    paths, _ = small_case
    a = segmenter.segment(paths, probabilities=True)
    b = segmenter.segment(paths, labels="brats2023")
    la, lb = sitk.GetArrayFromImage(a.labelmap), sitk.GetArrayFromImage(b.labelmap)
    np.testing.assert_array_equal(la == CONVENTIONS["brats2018"]["ET"], lb == CONVENTIONS["brats2023"]["ET"])
    assert not (lb == 4).any()
    p = sitk.GetArrayFromImage(a.probabilities)
    assert p.shape == la.shape + (3,) and p.min() >= 0 and p.max() <= 1
    # hierarchical regions: WT probability above 0.5 wherever a tumour label was written
    assert (p[..., 2][la > 0] > 0.5).all()


def test_progress_is_reported_and_cancel_stops(segmenter, small_case):
    paths, _ = small_case
    seen = []
    segmenter.segment(paths, progress=lambda f, m: seen.append(f))
    assert seen[0] == 0.0 and seen[-1] == 1.0 and seen == sorted(seen)
    stop = threading.Event()

    def cancel_soon(f, m):
        if m.startswith("network: window"):
            stop.set()

    with pytest.raises(Cancelled):
        segmenter.segment(paths, progress=cancel_soon, cancel=stop, overlap=0.9)


def test_mirrored_averaging_costs_n_passes_and_stays_close_to_one(segmenter, small_case):
    from lckd.base.errors import InputError
    from lckd.base.metrics import mask_dice

    paths, label = small_case
    calls = []
    forward = segmenter.net.forward

    def counting(*args, **kwargs):
        calls.append(args[0].shape)
        return forward(*args, **kwargs)

    segmenter.net.forward = counting
    try:
        one = segmenter.segment(paths, probabilities=True)
        n_one = len(calls)
        two = segmenter.segment(paths, probabilities=True, mirrors=2)
    finally:
        del segmenter.net.forward
    assert len(calls) == 3 * n_one                       # each window twice with mirrors=2
    p1, p2 = (sitk.GetArrayFromImage(r.probabilities) for r in (one, two))
    assert not np.allclose(p1, p2) and 0.0 <= p2.min() and p2.max() <= 1.0
    truth = sitk.GetArrayFromImage(sitk.ReadImage(str(label))) > 0
    dice = [mask_dice(sitk.GetArrayFromImage(r.labelmap) > 0, truth) for r in (one, two)]
    assert dice[1] > dice[0] - 0.05, dice                 # the same tumour, averaged
    for bad in (0, 3, 16, "two"):
        with pytest.raises(InputError, match="--mirrors"):
            segmenter.segment(paths, mirrors=bad)
