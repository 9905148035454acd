"""`lckd.prep.foreground` gives every caller the mask it computed before the rules moved there.

Each `_old_*` below is the expression its module used before issue 22 (frozen here on purpose,
not imported): a change to a rule, or a caller picking the wrong rule, fails the comparison.
The inputs are real: the BraTS-like phantom (float, int16, and a z-scored export with a
constant non-zero background), the raw-scan phantom (noisy background; also resampled onto
the reference grid, which pads it with 0), and the real BraTS case when ../shared is there.
"""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import RAW_SEED, shared_data
from lckd.inference import inputchecks
from lckd.prep import preprocess, rawprep, registration
from lckd.prep.foreground import face_median


def _old_preprocess_foreground(array: np.ndarray) -> np.ndarray:
    """preprocess.background_value + preprocess.foreground before issue 22."""
    bg = 0.0
    if array.ndim == 3 and min(array.shape) >= 2:
        border = np.concatenate([array[0].ravel(), array[-1].ravel(), array[:, 0].ravel(), array[:, -1].ravel(),
                                 array[:, :, 0].ravel(), array[:, :, -1].ravel()])
        values, counts = np.unique(border, return_counts=True)
        bg = float(values[np.argmax(counts)]) if counts.max() * 2 >= border.size else 0.0
    return (array != 0) & (array != array.dtype.type(bg)) if bg != 0 else array != 0


def _old_registration_foreground(arr: np.ndarray) -> np.ndarray:
    """registration.foreground before issue 22."""
    if (arr > 0).mean() <= 0.9:
        return arr > 0
    return arr > 0.1 * float(np.percentile(arr[:: max(1, arr.shape[0] // 32)], 99))


def _old_head_mask(arr: np.ndarray) -> np.ndarray:
    """rawprep.head_mask before issue 22."""
    positive = arr[arr > 0]
    return arr > (0.1 * float(np.percentile(positive, 99)) if positive.size else 0.0)


def _old_alignment_score(image: sitk.Image) -> np.ndarray:
    """inputchecks._foreground_score before issue 22 (4 mm blocks), as an array."""
    arr = sitk.GetArrayViewFromImage(image)
    rim = np.concatenate([arr[[0, -1]].ravel(), arr[:, [0, -1]].ravel(), arr[:, :, [0, -1]].ravel()])
    dist = np.abs(arr.astype(np.float32) - np.float32(float(np.median(rim))))
    tol = 0.05 * float(np.percentile(dist[::2, ::2, ::2], 99))
    if tol <= 0:
        tol = 1.0
    score = sitk.GetImageFromArray(dist / np.float32(tol))
    score.CopyInformation(image)
    return sitk.GetArrayFromImage(sitk.BinShrink(score, [max(1, int(round(4.0 / s))) for s in image.GetSpacing()]))


def _old_contrast_background(arr: np.ndarray):
    """The background `inputchecks._check_contrast` looked past, before issue 22."""
    rim = np.concatenate([arr[[0, -1]].ravel(), arr[:, [0, -1]].ravel(), arr[:, :, [0, -1]].ravel()])
    return rim.dtype.type(np.median(rim))


def _zscored_export(img: sitk.Image) -> sitk.Image:
    """A skull-stripped scan re-saved z-scored: the brain near 0, a constant non-zero background."""
    arr = sitk.GetArrayFromImage(img).astype(np.float32)
    inside = arr != 0
    arr[inside] = (arr[inside] - arr[inside].mean()) / arr[inside].std()
    arr[~inside] = np.float32(-1.7)
    out = sitk.GetImageFromArray(arr)
    out.CopyInformation(img)
    return out


def _phantom_scans() -> dict[str, sitk.Image]:
    from lckd.research.phantom import make_phantom

    floats, _ = make_phantom(3, (64, 80, 80)).to_sitk()
    ints, _ = make_phantom(4, (64, 80, 80), (1.0, 1.0, 2.0)).to_sitk(integer=True)
    return {"phantom T1ce": floats["T1ce"], "phantom FLAIR int16": ints["FLAIR"],
            "phantom T2 z-scored export": _zscored_export(floats["T2"])}


def _raw_scans() -> dict[str, sitk.Image]:
    from lckd.prep.geometry import resample_onto
    from lckd.research.rawphantom import make_raw_phantom

    raw = make_raw_phantom(RAW_SEED, ("T1ce", "FLAIR"))
    return {"raw T1ce": raw.series["T1ce"], "raw FLAIR": raw.series["FLAIR"],
            "raw FLAIR on the T1ce grid (0-padded)": resample_onto(raw.series["FLAIR"], raw.series["T1ce"])}


REAL_CASE = shared_data("real", "BraTS-GLI-00001-000")


def _real_scans() -> dict[str, sitk.Image]:
    if not REAL_CASE.is_dir():
        return {}
    return {f"real {s}": sitk.ReadImage(str(REAL_CASE / f"{REAL_CASE.name}-{s}.nii.gz")) for s in ("t1c", "t2f")}


@pytest.fixture(scope="module")
def scans() -> dict[str, sitk.Image]:
    return {**_phantom_scans(), **_raw_scans(), **_real_scans()}


KINDS = ["phantom T1ce", "phantom FLAIR int16", "phantom T2 z-scored export", "raw T1ce", "raw FLAIR",
         "raw FLAIR on the T1ce grid (0-padded)", "real t1c", "real t2f"]


@pytest.fixture(params=KINDS)
def scan(request, scans) -> sitk.Image:
    if request.param not in scans:
        pytest.skip(f"real BraTS case not available: {REAL_CASE}")
    return scans[request.param]


def test_preprocess_brain_mask_is_unchanged(scan):
    arr = sitk.GetArrayFromImage(scan)
    expected = _old_preprocess_foreground(arr)
    np.testing.assert_array_equal(preprocess.brain_mask([arr]), expected)
    assert expected.any()


class _Stop(Exception):
    """Stops register_rigid once both masks are seen (the optimiser is not what is compared)."""


def test_registration_foreground_is_unchanged(scan, monkeypatch):
    seen = []

    def centroid(image, mask):      # register_rigid takes the centroids of its fixed and moving masks
        seen.append(mask.copy())
        if len(seen) == 2:
            raise _Stop
        return None

    monkeypatch.setattr(registration, "_centroid", centroid)
    with pytest.raises(_Stop):
        registration.register_rigid(scan, scan)
    expected = _old_registration_foreground(sitk.GetArrayFromImage(sitk.Cast(scan, sitk.sitkFloat32)))
    assert len(seen) == 2
    for mask in seen:
        np.testing.assert_array_equal(mask, expected)


def test_rawprep_head_mask_is_unchanged(scan):
    np.testing.assert_array_equal(rawprep.head_mask(scan), _old_head_mask(sitk.GetArrayViewFromImage(scan)))


def test_alignment_score_is_unchanged(scan):
    score = sitk.GetArrayFromImage(inputchecks.background_distance_score(scan, inputchecks.ALIGN_GRID_MM))
    expected = _old_alignment_score(scan)
    np.testing.assert_array_equal(score, expected)
    np.testing.assert_array_equal(score > 1.0, expected > 1.0)


def test_contrast_check_background_is_unchanged(scan):
    arr = sitk.GetArrayViewFromImage(scan)
    assert arr.dtype.type(face_median(arr)) == _old_contrast_background(arr)


def test_rules_differ_where_the_docs_say():
    """Why there are several rules: on a 0-padded raw series only `bright_voxels` finds the head,
    and on a z-scored export only the faces' rules see past the constant background."""
    from lckd.prep.foreground import bright_voxels, nonzero_nonbackground, nonzero_unless_noisy

    raw = _raw_scans()["raw FLAIR on the T1ce grid (0-padded)"]
    arr = sitk.GetArrayViewFromImage(raw)
    assert nonzero_unless_noisy(arr).sum() > 1.3 * bright_voxels(arr).sum()
    exported = sitk.GetArrayViewFromImage(_phantom_scans()["phantom T2 z-scored export"])
    assert nonzero_nonbackground(exported).sum() < 0.5 * (exported != 0).sum()
