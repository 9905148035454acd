"""Raw clinical scans in: detection, each stage of `lckd.prep.rawprep`, the CLI flags, batch, worker, bad input.

The raw phantom (`lckd phantom --raw`) has skull, scalp and neck, 2D series with 4-6 mm
slices on their own tilted grids, scanner noise and bias fields; its skull-stripped twin is
`make_phantom(seed)` on the BraTS grid. The brain extractor is the real one (deepbet).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import RAW_SEED, TEST_MODEL
from lckd.base.errors import InputError
from lckd.base.metrics import mask_dice as dice
from lckd.frontends.cli import main
from lckd.prep.brainextract import extract_brain, extractor_available
from lckd.prep.rawprep import MAX_BRAIN_LITRES, decide, extraction_scan, series_verdict

pytestmark = pytest.mark.skipif(not extractor_available(), reason="brain extractor (deepbet) not installed")


def on_grid(img: sitk.Image, grid: sitk.Image) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.Resample(img, grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0))


def truth(raw_case) -> tuple[sitk.Image, sitk.Image]:
    folder, _ = raw_case
    return (sitk.ReadImage(str(folder / f"{folder.name}-brainmask.nii.gz")),
            sitk.ReadImage(str(folder / f"{folder.name}-seg.nii.gz")))


@pytest.fixture(scope="module")
def twin():
    """The raw phantom's skull-stripped twin on the BraTS grid: (images, label)."""
    from lckd.research.phantom import make_phantom

    return make_phantom(RAW_SEED).to_sitk(integer=True)


# -- the phantom ---------------------------------------------------------------------------
def test_raw_phantom_looks_like_scanner_output(raw_case):
    _, files = raw_case
    series = {m: sitk.ReadImage(str(p)) for m, p in files.items()}
    mask, label = truth(raw_case)
    assert series["T1ce"].GetSpacing() == pytest.approx((1.0, 1.0, 1.0)) and series["T1ce"].GetSize()[2] >= 150
    for m in ("T1", "T2", "FLAIR"):
        assert 4.0 <= series[m].GetSpacing()[2] <= 6.0          # 2D axial series
        assert series[m].GetSize() != series["T1ce"].GetSize()
        tilt = np.degrees(np.arccos(np.clip(np.array(series[m].GetDirection())[8], -1, 1)))
        assert 1.0 < tilt < 10.0                                 # a few degrees off the scanner axes
    for img in series.values():
        arr = sitk.GetArrayViewFromImage(img)
        assert np.count_nonzero(arr == 0) < 0.05 * arr.size    # noise, not zeros, around the head
    m = sitk.GetArrayViewFromImage(mask) > 0
    assert mask.GetSize() == label.GetSize() == series["T1ce"].GetSize()
    assert 1.2 < m.sum() * 1e-6 < 2.3                           # litres at 1 mm
    assert np.all(m[sitk.GetArrayViewFromImage(label) > 0])    # the tumour lies in the brain
    # the head around the brain: much signal outside the true brain mask
    t1 = sitk.GetArrayViewFromImage(series["T1ce"])
    assert np.count_nonzero(t1[~m] > 0.5 * np.median(t1[m])) > 0.25 * m.sum()


# -- detection -----------------------------------------------------------------------------
def test_auto_detection_flags_raw_series_and_passes_stripped_ones(raw_case, twin):
    _, files = raw_case
    for m, path in files.items():
        img = sitk.ReadImage(str(path))
        raw, why = series_verdict(m, sitk.GetArrayViewFromImage(img), img.GetSpacing())
        assert raw is True and why.startswith(m)
    images, _ = twin
    decision = decide(images)
    assert not decision.run and "skull-stripped" in decision.reason
    raw_decision = decide({m: sitk.ReadImage(str(p)) for m, p in files.items()})
    assert raw_decision.run and raw_decision.reason.startswith("scans look unstripped (T1")


def test_auto_detection_on_z_scored_exports_and_zero_filled_heads(twin, raw_case):
    images, _ = twin
    # a z-scored export keeps a constant, non-zero background: still skull-stripped
    flair = sitk.GetArrayFromImage(images["FLAIR"]).astype(np.float32)
    z = np.where(flair > 0, (flair - flair[flair > 0].mean()) / flair[flair > 0].std(), -0.8).astype(np.float32)
    assert series_verdict("FLAIR", z, images["FLAIR"].GetSpacing())[0] is False
    # a scanner that zero-fills the background: judged by how much signal there is
    _, files = raw_case
    t1ce = sitk.ReadImage(str(files["T1ce"]), sitk.sitkFloat32)
    arr = sitk.GetArrayFromImage(t1ce)
    arr[arr < 0.1 * np.percentile(arr, 99)] = 0
    raw, why = series_verdict("T1ce", arr, t1ce.GetSpacing())
    assert raw is True and f"more than a brain (under {MAX_BRAIN_LITRES:g} L)" in why


def test_small_or_noise_volumes_are_not_judged():
    """Volumes smaller than a head (test images, fuzz input) keep the plain path."""
    noise = np.abs(np.random.default_rng(0).normal(0, 100, (40, 48, 48))).astype(np.float32)
    assert series_verdict("T1", noise, (1.0, 1.0, 1.0))[0] is None
    img = sitk.GetImageFromArray(noise)
    assert not decide({"T1": img}).run


# -- stages --------------------------------------------------------------------------------
def test_brain_extraction_meets_the_target_and_ignores_orientation(raw_case):
    _, files = raw_case
    t1ce = sitk.ReadImage(str(files["T1ce"]), sitk.sitkFloat32)
    mask_truth, _ = truth(raw_case)
    mask = extract_brain(t1ce)
    assert mask.GetSize() == t1ce.GetSize() and mask.GetOrigin() == t1ce.GetOrigin()
    assert dice(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(mask_truth)) >= 0.95
    # the same scan stored in another axis order and direction gives the same mask
    flipped = sitk.DICOMOrient(t1ce, "RIA")
    back = sitk.DICOMOrient(extract_brain(flipped), sitk.DICOMOrientImageFilter.GetOrientationFromDirectionCosines(
        t1ce.GetDirection()))
    assert dice(sitk.GetArrayViewFromImage(back), sitk.GetArrayViewFromImage(mask)) > 0.99


def test_extraction_scan_prefers_t1_weighted():
    assert extraction_scan(["FLAIR", "T2", "T1"]) == "T1"
    assert extraction_scan(["T2", "FLAIR"]) == "FLAIR"
    assert extraction_scan(["T2"]) == "T2"


def test_n4_removes_most_of_a_bias_field(twin):
    from lckd.prep.rawprep import _n4

    images, _ = twin
    t1 = sitk.Cast(images["T1"], sitk.sitkFloat32)
    brain = sitk.GetArrayViewFromImage(t1) > 0
    zz = np.linspace(-1, 1, brain.shape[0])[:, None, None]
    field = (1.0 + 0.3 * zz) * np.ones(brain.shape)
    biased = sitk.GetImageFromArray((sitk.GetArrayFromImage(t1) * field).astype(np.float32))
    biased.CopyInformation(t1)
    mask = sitk.GetImageFromArray(brain.astype(np.uint8))
    mask.CopyInformation(t1)
    corrected = sitk.GetArrayFromImage(_n4(biased, mask))

    def top_bottom_ratio(arr):
        zs = np.nonzero(brain.any(axis=(1, 2)))[0]
        lo, hi = zs[0] + (zs[-1] - zs[0]) // 4, zs[-1] - (zs[-1] - zs[0]) // 4
        return np.median(arr[hi:][brain[hi:]]) / np.median(arr[:lo][brain[:lo]])

    before = top_bottom_ratio(sitk.GetArrayFromImage(biased)) / top_bottom_ratio(sitk.GetArrayFromImage(t1))
    after = top_bottom_ratio(corrected) / top_bottom_ratio(sitk.GetArrayFromImage(t1))
    assert before > 1.2 and abs(np.log(after)) < 0.5 * abs(np.log(before))


# -- end to end ----------------------------------------------------------------------------
def test_cli_raw_scans_all_four(raw_case, twin, segmenter, tmp_path, capsys):
    """Acceptance: brain mask Dice >= 0.95; WT within 0.05 of the stripped twin; output on T1ce's grid."""
    _, files = raw_case
    out, bm, rec = tmp_path / "seg.nii.gz", tmp_path / "brain.nii.gz", tmp_path / "rec.json"
    argv = ["segment", "--t1", str(files["T1"]), "--t1ce", str(files["T1ce"]), "--t2", str(files["T2"]),
            "--flair", str(files["FLAIR"]), "-o", str(out), "--brain-mask", str(bm), "--json", str(rec),
            "--model", TEST_MODEL, "--device", "cpu", "-q", "-v"]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "preprocess: scans look unstripped" in printed and "brain: deepbet on T1ce" in printed
    assert "stage times: " in printed and "brain extraction" in printed and "register" in printed
    t1ce = sitk.ReadImage(str(files["T1ce"]))
    labels, mask = sitk.ReadImage(str(out)), sitk.ReadImage(str(bm))
    for img in (labels, mask):
        assert img.GetSize() == t1ce.GetSize()
        assert np.allclose(img.GetOrigin(), t1ce.GetOrigin()) and np.allclose(img.GetDirection(), t1ce.GetDirection())
    mask_truth, label_truth = truth(raw_case)
    assert dice(sitk.GetArrayViewFromImage(mask), sitk.GetArrayViewFromImage(mask_truth)) >= 0.95
    wt_raw = dice(sitk.GetArrayViewFromImage(labels), sitk.GetArrayViewFromImage(label_truth))
    images, label = twin
    stripped = segmenter.segment(images, preprocess="off")
    wt_twin = dice(sitk.GetArrayViewFromImage(stripped.labelmap), sitk.GetArrayViewFromImage(label))
    assert wt_twin > 0.85 and wt_raw >= wt_twin - 0.05, (wt_raw, wt_twin)
    record = json.loads(rec.read_text())
    assert record["options"]["preprocess"] == "auto" and record["options"]["brain_extractor"] == "deepbet"
    assert {"detect", "register", "brain extraction"} <= set(record["timings_s"])
    assert record["preprocessing"].startswith("scans look unstripped")
    # the series of one head, on their own grids and moved, are judged one head after registration
    assert not [w for w in record["warnings"] if "different patients" in w], record["warnings"]


def test_flair_only_raw_scan(raw_case, segmenter):
    """FLAIR alone (a 6 mm 2D series): the brain is found on it and the output lies on its grid."""
    _, files = raw_case
    res = segmenter.segment({"FLAIR": str(files["FLAIR"])}, preprocess="auto")
    flair = sitk.ReadImage(str(files["FLAIR"]))
    assert res.reference == "FLAIR" and res.labelmap.GetSize() == flair.GetSize()
    assert res.preprocessing.endswith("mL") and "deepbet on FLAIR" in res.preprocessing
    mask_truth, label_truth = truth(raw_case)
    assert dice(on_grid(res.brain_mask, mask_truth), sitk.GetArrayViewFromImage(mask_truth)) >= 0.95
    # 6 mm slices cost the phantom model much of its FLAIR WT Dice (README "Raw scans"): a floor
    assert dice(on_grid(res.labelmap, label_truth), sitk.GetArrayViewFromImage(label_truth)) >= 0.5


def test_preprocess_off_segments_as_given_and_writes_no_mask(raw_case, tmp_path, capsys):
    _, files = raw_case
    out, bm = tmp_path / "seg.nii.gz", tmp_path / "brain.nii.gz"
    assert main(["segment", "--flair", str(files["FLAIR"]), "-o", str(out), "--brain-mask", str(bm),
                 "--preprocess", "off", "--model", TEST_MODEL, "--device", "cpu", "-q"]) == 0
    captured = capsys.readouterr()
    assert "preprocess: raw-scan preprocessing off (asked for)" in captured.out
    assert "no brain mask written" in captured.err
    assert out.is_file() and not bm.exists()


def test_bad_preprocess_value_is_refused_by_the_parser(raw_case, tmp_path, capsys):
    _, files = raw_case
    with pytest.raises(SystemExit) as exc:
        main(["segment", "--flair", str(files["FLAIR"]), "-o", str(tmp_path / "x.nii.gz"), "--preprocess", "yes"])
    assert exc.value.code == 2 and "--preprocess" in capsys.readouterr().err


@pytest.mark.skipif(extractor_available("hd-bet"), reason="needs HD-BET to be absent")
def test_a_missing_extractor_is_refused_before_the_model_loads(raw_case, segmenter, tmp_path, capsys):
    _, files = raw_case
    argv = ["segment", "--flair", str(files["FLAIR"]), "-o", str(tmp_path / "x.nii.gz"), "--preprocess", "on",
            "--brain-extractor", "hd-bet", "--model", TEST_MODEL]
    assert main(argv) != 0
    err = capsys.readouterr().err
    assert "hd-bet" in err and "pip install" in err and not (tmp_path / "x.nii.gz").exists()
    # auto falls back to the scans as given, and says so
    res = segmenter.segment({"FLAIR": str(files["FLAIR"])}, brain_extractor="hd-bet")
    assert res.brain_mask is None and any("no brain extractor is installed" in w for w in res.warnings)


# -- bad input -----------------------------------------------------------------------------
def _series(raw_case, m: str) -> sitk.Image:
    return sitk.ReadImage(str(raw_case[1][m]), sitk.sitkFloat32)


def _turned_about_centre(img: sitk.Image, degrees: float) -> sitk.Image:
    """The same voxels with a header that turns them about the volume's centre (a wrong header)."""
    a = np.deg2rad(degrees)
    rx = np.array([[1, 0, 0], [0, np.cos(a), -np.sin(a)], [0, np.sin(a), np.cos(a)]])
    out = sitk.Image(img)
    centre = np.array(img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
    out.SetDirection(tuple((rx @ np.array(img.GetDirection()).reshape(3, 3)).ravel()))
    moved = np.array(out.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()]))
    out.SetOrigin(tuple(np.array(img.GetOrigin()) + centre - moved))
    return out


def _leg() -> sitk.Image:
    """A limb-sized cylinder with scanner noise: no head anywhere."""
    z, y, x = np.mgrid[:150, :200, :200]
    leg = (((y - 100) / 60.0) ** 2 + ((x - 100) / 45.0) ** 2 < 1).astype(np.float32) * 800
    leg += np.abs(np.random.default_rng(1).normal(0, 20, leg.shape)).astype(np.float32)
    return sitk.GetImageFromArray(leg)


@pytest.mark.parametrize("case,message", [
    ("localizer", "a localizer (scout)"),
    ("no head", "no brain found in FLAIR"),
    ("no overlap", "covers only"),
    ("not converged", "did not converge"),
])
def test_bad_raw_input_is_one_clear_error(raw_case, segmenter, case, message):
    t1ce = _series(raw_case, "T1ce")
    inputs = {
        "localizer": lambda: {"T1ce": t1ce, "T2": _series(raw_case, "T2")[:, :, 12:20]},
        "no head": lambda: {"FLAIR": _leg()},
        "no overlap": lambda: {"T1ce": t1ce, "T2": _series(raw_case, "T2")[:, :, 20:32]},
        "not converged": lambda: {"T1ce": t1ce, "T2": _turned_about_centre(_series(raw_case, "T2"), 90)},
    }[case]()
    with pytest.raises(InputError) as exc:
        segmenter.segment(inputs, preprocess="on")
    assert message in str(exc.value) and "\n" not in str(exc.value)


# -- batch and worker ----------------------------------------------------------------------
def test_batch_writes_brain_masks(raw_case, tmp_path, capsys):
    folder, _ = raw_case
    out = tmp_path / "out"
    assert main(["batch", str(folder.parent), str(out), "--modalities", "flair", "--preprocess", "on",
                 "--brain-masks", "--model", TEST_MODEL, "--device", "cpu", "-q"]) == 0
    mask = out / f"{folder.name}_brainmask.nii.gz"
    assert mask.is_file() and (out / f"{folder.name}.nii.gz").is_file()
    record = json.loads((out / f"{folder.name}.json").read_text())
    assert str(mask) in record["outputs"] and record["options"]["preprocess"] == "on"
    mask_truth, _ = truth(raw_case)
    assert dice(on_grid(sitk.ReadImage(str(mask)), mask_truth), sitk.GetArrayViewFromImage(mask_truth)) >= 0.95


def test_worker_serves_raw_scans_with_a_brain_mask(raw_case, tmp_path):
    from LCKDSegmentationLib.workerclient import WorkerClient, WorkerError

    _, files = raw_case
    client = WorkerClient(device="cpu", model=TEST_MODEL)
    client.start()
    try:
        reply = client.request("segment", timeout=300, inputs={"FLAIR": str(files["FLAIR"])}, options={
            "output": str(tmp_path / "seg.nrrd"), "preprocess": "on", "brain_mask_output": str(tmp_path / "bm.nrrd")})
        with pytest.raises(WorkerError) as bad:
            client.request("segment", timeout=60, inputs={"FLAIR": str(files["FLAIR"])},
                           options={"output": str(tmp_path / "x.nrrd"), "preprocess": 1})
    finally:
        client.stop()
    assert reply["event"] == "result", reply
    assert reply["brain_mask"] == str(tmp_path / "bm.nrrd") and (tmp_path / "bm.nrrd").is_file()
    assert "deepbet on FLAIR" in reply["preprocessing"]
    assert "must be strings" in str(bad.value)
