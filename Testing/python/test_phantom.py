"""Tests of lckd.research.phantom: determinism, geometry, labels, modality contrast, realism."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_data
from lckd.base.errors import InputError
from lckd.base.metrics import mask_dice as dice
from lckd.base.modalities import MODALITIES
from lckd.research.phantom import REAL_MEDIANS, PhantomCase, make_phantom

SMALL = (48, 64, 64)
REAL_DIR = shared_data("real")
REAL_SUFFIX = {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f"}


def brain_mask(case: PhantomCase) -> np.ndarray:
    return case.images["T1"] > 0


# --------------------------------------------------------------------------- basics

def test_same_seed_same_arrays_different_seed_differs():
    a = make_phantom(3, SMALL)
    b = make_phantom(3, SMALL)
    c = make_phantom(4, SMALL)
    for m in MODALITIES:
        np.testing.assert_array_equal(a.images[m], b.images[m])
        assert not np.array_equal(a.images[m], c.images[m])
    np.testing.assert_array_equal(a.label, b.label)
    assert not np.array_equal(a.label, c.label)


def test_shapes_dtypes_and_label_values():
    case = make_phantom(0, SMALL)
    assert set(case.images) == set(MODALITIES)
    for arr in case.images.values():
        assert arr.shape == SMALL and arr.dtype == np.float32
        assert np.isfinite(arr).all()
    assert case.label.shape == SMALL and case.label.dtype == np.uint8
    assert set(np.unique(case.label).tolist()) <= {0, 1, 2, 4}


@pytest.mark.parametrize("shape", [(24, 32, 32), (48, 64, 64)])
def test_every_case_has_enhancing_tumour_and_oedema(shape):
    for seed in range(12):
        label = make_phantom(seed, shape, randomize_appearance=False).label
        assert (label == 4).any(), f"seed {seed}: no ET"
        assert (label == 2).sum() > (label == 4).sum() * 0.2, f"seed {seed}: little oedema"


def test_necrosis_is_sometimes_absent():
    flags = [make_phantom(s, (16, 24, 24)).info["tumour"]["necrosis"] for s in range(60)]
    absent = flags.count(False) / len(flags)
    assert 0.03 <= absent <= 0.35
    # When drawn, the necrotic core shows up in the label map at a moderate resolution.
    present = [s for s, f in zip(range(60), flags) if f][:6]
    hits = sum((make_phantom(s, (64, 80, 80)).label == 1).any() for s in present)
    assert hits >= 4


def test_background_is_zero_outside_the_brain():
    case = make_phantom(5, SMALL)
    brain = brain_mask(case)
    assert 0.05 < brain.mean() < 0.5
    for m, arr in case.images.items():
        np.testing.assert_array_equal(arr > 0, brain, err_msg=m)   # same mask in every scan
        assert arr.min() == 0.0
        assert arr[brain].min() >= 1.0                              # strictly positive inside
    assert not case.label[~brain].any()
    # The border of the volume is background (the brain does not touch the grid edges
    # in x and y, as in BraTS).
    assert not brain[:, 0].any() and not brain[:, :, 0].any() and not brain[:, :, -1].any()


def test_intensities_in_scanner_like_range():
    default = make_phantom(1, SMALL, randomize_appearance=False)
    for m, arr in default.images.items():
        med = np.median(arr[arr > 0])
        assert med == pytest.approx(REAL_MEDIANS[m], rel=0.02)
    for seed in range(4):
        case = make_phantom(seed, SMALL, randomize_appearance=True)
        for m, arr in case.images.items():
            assert arr.max() < 32767, m                  # fits int16 like BraTS files
            assert 50 < np.median(arr[arr > 0]) < 10000, m


def test_appearance_randomisation_keeps_the_anatomy():
    a = make_phantom(7, SMALL, randomize_appearance=False)
    b = make_phantom(7, SMALL, randomize_appearance=True)
    np.testing.assert_array_equal(a.label, b.label)
    np.testing.assert_array_equal(brain_mask(a), brain_mask(b))
    assert not np.allclose(a.images["FLAIR"], b.images["FLAIR"])


def test_small_phantom_is_a_shrunken_brain():
    """Same seed at two resolutions: the same brain and tumour, scaled."""
    coarse = make_phantom(2, (31, 48, 48), randomize_appearance=False)
    fine = make_phantom(2, (62, 96, 96), randomize_appearance=False)
    down = fine.label.reshape(31, 2, 48, 2, 48, 2).max(axis=(1, 3, 5)) > 0
    brain_down = brain_mask(fine).reshape(31, 2, 48, 2, 48, 2).mean(axis=(1, 3, 5)) > 0.5
    assert dice(brain_down, brain_mask(coarse)) > 0.95
    assert dice(down, coarse.label > 0) > 0.75
    # Proportions as at full size: the brain fills ~15-25 % of a BraTS-shaped grid.
    assert 0.12 < brain_mask(fine).mean() < 0.26


def test_anisotropic_spacing_keeps_physical_proportions():
    """Thick slices: the brain keeps its physical shape (height ~ width, as in BraTS)."""
    case = make_phantom(0, (26, 96, 96), (2.5, 2.5, 6.0), randomize_appearance=False)
    zz, yy, xx = np.nonzero(brain_mask(case))
    ext_z = (np.ptp(zz) + 1) * 6.0
    ext_y = (np.ptp(yy) + 1) * 2.5
    ext_x = (np.ptp(xx) + 1) * 2.5
    assert ext_z / ext_x == pytest.approx(137 / 140, rel=0.2)
    assert ext_y / ext_x == pytest.approx(190 / 140, rel=0.2)


def test_to_sitk_honours_geometry():
    # A rotation about z by 30 degrees combined with a flip of y: non-identity, orthonormal.
    c, s = np.cos(np.pi / 6), np.sin(np.pi / 6)
    rot = np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]]) @ np.diag([1.0, -1.0, 1.0])
    direction = tuple(rot.ravel())
    spacing = (0.9, 1.1, 2.5)
    origin = (10.0, -20.5, 33.0)
    case = make_phantom(1, (20, 40, 48), spacing, direction=direction, origin=origin)
    assert case.spacing == spacing and case.origin == origin
    images, label = case.to_sitk()
    for m, img in images.items():
        assert img.GetSize() == (48, 40, 20)
        assert img.GetSpacing() == pytest.approx(spacing)
        assert img.GetOrigin() == pytest.approx(origin)
        assert img.GetDirection() == pytest.approx(direction)
        assert img.GetPixelID() == sitk.sitkFloat32
        np.testing.assert_array_equal(sitk.GetArrayFromImage(img), case.images[m])
    assert label.GetPixelID() == sitk.sitkUInt8
    assert label.GetDirection() == pytest.approx(direction)
    np.testing.assert_array_equal(sitk.GetArrayFromImage(label), case.label)


@pytest.mark.parametrize("kwargs", [
    {"shape": (32, 32)}, {"shape": (4, 32, 32)}, {"spacing": (1.0, -1.0, 1.0)},
    {"spacing": (1.0, 1.0)}, {"direction": (1, 0, 0, 0, 2, 0, 0, 0, 1)}, {"origin": (0, 0)},
])
def test_bad_arguments_raise_input_error(kwargs):
    args = {"shape": (16, 16, 16), **kwargs}
    with pytest.raises(InputError):
        make_phantom(0, **args)


# --------------------------------------------------------------------------- contrast

def separability(pos: np.ndarray, neg: np.ndarray, bins: int = 48) -> float:
    """Total-variation distance between the two intensity histograms (0 = same, 1 = disjoint).

    Unlike a Fisher ratio or an AUC it also scores a class that is both brighter and
    darker than the other (T1ce tumour core: bright rim, dark necrosis).
    """
    edges = np.quantile(np.concatenate([pos, neg]), np.linspace(0.0, 1.0, bins + 1))
    edges[-1] += 1e-3
    hp = np.histogram(pos, edges)[0] / len(pos)
    hn = np.histogram(neg, edges)[0] / len(neg)
    return float(0.5 * np.abs(hp - hn).sum())


def contrast_scores(case: PhantomCase) -> dict[str, dict[str, float]]:
    lab, brain = case.label, brain_mask(case)
    et, ncr, ed = lab == 4, lab == 1, lab == 2
    out = {}
    for m, a in case.images.items():
        out[m] = {
            "ET": separability(a[et], a[ncr | ed]),            # ET vs rest of the tumour
            "TC": separability(a[et | ncr], a[ed]),            # core vs oedema, inside WT
            "WT": separability(a[lab > 0], a[brain & (lab == 0)]),   # WT vs normal brain
        }
    return out


@pytest.mark.parametrize("randomize", [False, True])
def test_modality_contrast_matches_real_mri(randomize):
    """T1ce is the most informative single scan for ET and TC, FLAIR for WT."""
    seeds = range(6)
    scores = [contrast_scores(make_phantom(s, (64, 80, 80), randomize_appearance=randomize))
              for s in seeds]
    mean = {m: {r: np.mean([sc[m][r] for sc in scores]) for r in ("ET", "TC", "WT")}
            for m in MODALITIES}
    best = {r: max(MODALITIES, key=lambda m: mean[m][r]) for r in ("ET", "TC", "WT")}
    assert best == {"ET": "T1ce", "TC": "T1ce", "WT": "FLAIR"}, mean
    # Per case as well: T1ce is best for ET whatever the appearance draw; with the default
    # appearance FLAIR is best for WT in every case too (a rare extreme random draw, very
    # noisy FLAIR with a strong T2 oedema, may let T2 win one case).
    for sc in scores:
        assert max(MODALITIES, key=lambda m: sc[m]["ET"]) == "T1ce"
        if not randomize:
            assert max(MODALITIES, key=lambda m: sc[m]["WT"]) == "FLAIR"
    # Not trivially easy: in the other scans ET is hard to tell from the rest of the
    # tumour, and T2 (bright CSF) is clearly worse than FLAIR for WT.
    assert max(mean[m]["ET"] for m in ("T2", "FLAIR")) < 0.6
    assert mean["T2"]["WT"] < mean["FLAIR"]["WT"] - 0.05


def test_t2_oedema_is_close_to_csf_and_flair_suppresses_csf():
    case = make_phantom(3, (64, 80, 80), randomize_appearance=False)
    from lckd.research.phantom import _MEANS, CSF, ED, WM  # the nominal table, not measured
    t2, fl = _MEANS["T2"], _MEANS["FLAIR"]
    assert t2[ED][0] == "CSF" and t2[ED][2] <= 1.0          # oedema up to CSF brightness
    assert fl[CSF][2] < fl[WM][1]                            # FLAIR: CSF darker than WM
    # Measured: FLAIR's darkest brain voxels are CSF-like, T2's brightest voxels CSF or
    # tumour (both bright).
    fl_img, t2_img = case.images["FLAIR"], case.images["T2"]
    brain = brain_mask(case)
    assert np.median(fl_img[case.label == 2]) > 1.8 * np.median(fl_img[brain])
    assert np.median(t2_img[case.label == 2]) > 1.8 * np.median(t2_img[brain])


# --------------------------------------------------------------------------- realism

def brain_stats(images: dict[str, np.ndarray]) -> dict:
    brain = np.logical_and.reduce([a > 0 for a in images.values()])
    zz, yy, xx = np.nonzero(brain)
    out = {"fraction": brain.mean(),
           "extent": np.array([np.ptp(zz), np.ptp(yy), np.ptp(xx)]) + 1.0}
    for m, a in images.items():
        p = np.percentile(a[brain], [5, 50, 95, 99])
        out[m] = {"p50": p[1], "rel": p[[0, 2, 3]] / p[1]}
    return out


def test_default_phantom_statistics_match_the_real_case():
    case_dirs = sorted(REAL_DIR.glob("*/")) if REAL_DIR.is_dir() else []
    if not case_dirs:
        pytest.skip(f"real BraTS case not available under {REAL_DIR}")
    case_dir = case_dirs[0]
    real = {m: sitk.GetArrayFromImage(sitk.ReadImage(
        str(case_dir / f"{case_dir.name}-{s}.nii.gz"))).astype(np.float32)
        for m, s in REAL_SUFFIX.items()}
    r = brain_stats(real)
    del real
    phantoms = [brain_stats(make_phantom(s, randomize_appearance=False).images) for s in (0, 1)]
    frac = np.mean([p["fraction"] for p in phantoms])
    extent = np.mean([p["extent"] for p in phantoms], axis=0)
    assert frac == pytest.approx(r["fraction"], rel=0.3)
    np.testing.assert_allclose(extent, r["extent"], rtol=0.15)
    for m in MODALITIES:
        p50 = np.mean([p[m]["p50"] for p in phantoms])
        rel = np.mean([p[m]["rel"] for p in phantoms], axis=0)
        assert p50 == pytest.approx(r[m]["p50"], rel=0.05), m
        # p5, p95, p99 relative to the median within a factor 1.6 of the real scan's
        ratio = rel / r[m]["rel"]
        assert np.all((ratio > 1 / 1.6) & (ratio < 1.6)), (m, rel, r[m]["rel"])
    # The same ordering of bright tails as in the real case: T2 (CSF) has the longest.
    tails = {m: np.mean([p[m]["rel"][2] for p in phantoms]) for m in MODALITIES}
    assert max(tails, key=tails.get) == max(MODALITIES, key=lambda m: r[m]["rel"][2]) == "T2"


def test_tumour_volumes_are_brats_like():
    """Region volumes over seeds sit where BraTS glioma cohorts do (median WT ~100 mL,
    TC ~30 mL, ET ~20 mL, necrosis about a third of the core), not trivially large."""
    vols = []
    for seed in range(200, 224):
        label = make_phantom(seed, (78, 120, 120), (2.0, 2.0, 2.0)).label
        ml = {k: float((label == v).sum()) * 8 / 1000 for k, v in (("NCR", 1), ("ED", 2), ("ET", 4))}
        vols.append((ml["ET"], ml["ET"] + ml["NCR"], ml["ET"] + ml["NCR"] + ml["ED"], ml["NCR"]))
    et, tc, wt, ncr = np.median(np.array(vols), axis=0)
    assert 60 < wt < 150 and 15 < tc < 60 and 8 < et < 35, (et, tc, wt)
    assert 0.2 < np.median([v[3] / v[1] for v in vols]) < 0.5
