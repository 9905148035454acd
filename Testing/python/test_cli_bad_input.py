"""`lckd segment` on bad input: one clear line naming the problem and file, exit 1, no output."""
from __future__ import annotations

import json
import shutil

import numpy as np
import SimpleITK as sitk

from lckd.frontends.cli import main
from lckd.model.registry import resolve_model


def _run(capsys, *args):
    code = main(["segment", "-q", "--threads", "2", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


def _write(img: sitk.Image, path):
    sitk.WriteImage(img, str(path))
    return path


def _assert_refused(capsys, tmp_path, args, *needles):
    out_file = tmp_path / "out" / "seg.nii.gz"
    code, out, err = _run(capsys, *args, "-o", out_file)
    lines = [ln for ln in err.strip().splitlines() if ln]
    assert code == 1, err
    assert len(lines) == 1 and lines[0].startswith("lckd segment: error: "), err
    for n in needles:
        assert n in lines[0], lines[0]
    assert not out_file.exists() and not list((tmp_path / "out").glob("*")) if (tmp_path / "out").exists() else True
    return lines[0]


def test_no_input_at_all(capsys, tmp_path):
    _assert_refused(capsys, tmp_path, [], "no input image")


def test_missing_file(capsys, tmp_path):
    _assert_refused(capsys, tmp_path, ["--t1", tmp_path / "nope.nii.gz"], "T1", "nope.nii.gz")


def test_corrupt_file(capsys, tmp_path):
    bad = tmp_path / "garbage.nii.gz"
    bad.write_bytes(b"\x1f\x8b" + bytes(range(256)) * 10)
    _assert_refused(capsys, tmp_path, ["--flair", bad], "FLAIR", "garbage.nii.gz")


def test_truncated_file(capsys, tmp_path, small_case):
    paths, _ = small_case
    data = paths["T2"].read_bytes()
    cut = tmp_path / "cut.nii.gz"
    cut.write_bytes(data[: len(data) // 2])
    _assert_refused(capsys, tmp_path, ["--t2", cut], "T2", "cut.nii.gz")


def test_2d_and_4d_images(capsys, tmp_path):
    flat = _write(sitk.Image([64, 64], sitk.sitkFloat32) + 1.0, tmp_path / "slice.nii.gz")
    _assert_refused(capsys, tmp_path, ["--t1", flat], "2D", "slice.nii.gz")
    four = _write(sitk.GetImageFromArray(np.ones((3, 16, 16, 16), np.float32), isVector=False), tmp_path / "dwi.nii.gz")
    _assert_refused(capsys, tmp_path, ["--t1", four], "4D", "dwi.nii.gz")


def test_nan_inf_and_all_zero(capsys, tmp_path, small_case):
    paths, _ = small_case
    arr = sitk.GetArrayFromImage(sitk.ReadImage(str(paths["T1"])))
    arr[10, 10, 10] = np.nan
    arr[11, 10, 10] = np.inf
    img = sitk.GetImageFromArray(arr)
    # NRRD keeps NaN; ITK's NIfTI reader turns NaN into 0 before any tool sees it
    _assert_refused(capsys, tmp_path, ["--t1", _write(img, tmp_path / "nan.nrrd")], "nan.nrrd", "NaN")
    zero = sitk.Image(80, 80, 64, sitk.sitkFloat32)
    _assert_refused(capsys, tmp_path, ["--t1", _write(zero, tmp_path / "zero.nii.gz")], "zero.nii.gz")


def test_inputs_that_do_not_overlap(capsys, tmp_path, small_case):
    paths, _ = small_case
    far = sitk.ReadImage(str(paths["FLAIR"]))
    far.SetOrigin((500.0, 0.0, 0.0))
    far_path = _write(far, tmp_path / "far_flair.nii.gz")
    _assert_refused(capsys, tmp_path, ["--t1ce", paths["T1ce"], "--flair", far_path], "far_flair.nii.gz")


def test_unwritable_output(capsys, tmp_path, small_case):
    paths, _ = small_case
    blocker = tmp_path / "a_file"
    blocker.write_text("x")
    code, _, err = _run(capsys, "--t1", paths["T1"], "-o", blocker / "seg.nii.gz")
    assert code == 1 and "a_file" in err and len(err.strip().splitlines()) == 1
    code, _, err = _run(capsys, "--t1", paths["T1"], "-o", tmp_path / "seg.png")
    assert code == 1 and "seg.png" in err


def test_unknown_labels_value(capsys, tmp_path, small_case):
    paths, _ = small_case
    _assert_refused(capsys, tmp_path, ["--t1", paths["T1"], "--labels", "brats2019"], "brats2019", "brats2023")


def test_tampered_weights(capsys, tmp_path, small_case):
    paths, _ = small_case
    card = resolve_model(None)
    copy = tmp_path / "model"
    shutil.copytree(card.parent, copy)
    weights = copy / json.loads(card.read_text())["weights"]["file"]
    data = bytearray(weights.read_bytes())
    data[len(data) // 2] ^= 1
    weights.write_bytes(bytes(data))
    _assert_refused(capsys, tmp_path, ["--t1", paths["T1"], "--model", copy / card.name], "does not match",
                    weights.name)


def test_warnings_do_not_stop_the_job(capsys, tmp_path, small_case):
    """Different grids, the same file twice and a labelmap as image: warned, still segmented."""
    paths, label = small_case
    t2 = sitk.ReadImage(str(paths["T2"]))
    coarse = sitk.Resample(t2, [40, 40, 32], sitk.Transform(), sitk.sitkLinear, t2.GetOrigin(), [2.0] * 3,
                           t2.GetDirection(), 0.0, t2.GetPixelID())
    coarse_path = _write(coarse, tmp_path / "t2_coarse.nii.gz")
    out = tmp_path / "seg.nii.gz"
    code, stdout, err = _run(capsys, "--t1", paths["T1"], "--t1ce", paths["T1"], "--t2", coarse_path,
                             "--flair", label, "-o", out)
    assert code == 0, err
    assert out.is_file()
    assert "grid" in err and "same" in err.lower() and "label" in err.lower()
    assert "whole tumour" in stdout


def test_small_volume_is_padded_and_works(capsys, tmp_path):
    from lckd.research.phantom import make_phantom

    images, _ = make_phantom(11, (24, 32, 30)).to_sitk()
    p = _write(images["FLAIR"], tmp_path / "tiny_flair.nii.gz")
    out = tmp_path / "tiny_seg.seg.nrrd"
    code, stdout, err = _run(capsys, "--flair", p, "-o", out)
    assert code == 0, err
    assert out.is_file()
