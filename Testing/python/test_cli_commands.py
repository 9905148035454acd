"""`lckd segment` from a DICOM series, and the `info`, `phantom` and `demo` commands."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import SMALL
from lckd.frontends.cli import main
from lckd.io.datasets import find_cases, load_split
from lckd.research.phantom import make_phantom


def write_dicom_series(image: sitk.Image, folder, series_uid: str) -> None:
    """Write a 3D image as an MR DICOM series (one file per slice, with its position)."""
    folder.mkdir(parents=True, exist_ok=True)
    image = sitk.Cast(sitk.RescaleIntensity(image, 0, 4000), sitk.sitkInt16)
    direction = image.GetDirection()
    writer = sitk.ImageFileWriter()
    writer.KeepOriginalImageUIDOn()
    for k in range(image.GetDepth()):
        slice_ = image[:, :, k]
        tags = {
            "0008|0060": "MR", "0020|000e": series_uid, "0020|000d": "1.2.826.0.1.3680043.2.1125.1",
            "0020|0013": str(k + 1),
            "0020|0032": "\\".join(f"{v:.6f}" for v in image.TransformIndexToPhysicalPoint((0, 0, k))),
            "0020|0037": "\\".join(f"{v:.6f}" for v in direction[0:7:3] + direction[1:8:3]),
            "0018|0050": f"{image.GetSpacing()[2]:.6f}",
        }
        for key, value in tags.items():
            slice_.SetMetaData(key, value)
        writer.SetFileName(str(folder / f"slice{k:03d}.dcm"))
        writer.Execute(slice_)


@pytest.fixture(scope="module")
def phantom_images():
    images, _ = make_phantom(12, SMALL, (1.0, 1.0, 1.5)).to_sitk()
    return images


def test_segment_reads_a_dicom_series_folder(phantom_images, tmp_path, capsys):
    write_dicom_series(phantom_images["T1ce"], tmp_path / "t1ce", "1.2.826.0.1.3680043.2.1125.2")
    flair = tmp_path / "flair.nii.gz"
    sitk.WriteImage(phantom_images["FLAIR"], str(flair))
    out = tmp_path / "seg.nii.gz"
    code = main(["segment", "-q", "--threads", "2", "--t1ce", str(tmp_path / "t1ce"), "--flair", str(flair),
                 "-o", str(out)])
    assert code == 0, capsys.readouterr().err
    seg, ref = sitk.ReadImage(str(out)), phantom_images["T1ce"]
    assert seg.GetSize() == ref.GetSize()
    assert np.allclose(seg.GetSpacing(), ref.GetSpacing(), atol=1e-4)
    assert np.allclose(seg.GetOrigin(), ref.GetOrigin(), atol=1e-3)
    assert "T1ce, FLAIR" in capsys.readouterr().out


def test_a_folder_with_two_series_names_both(phantom_images, tmp_path, capsys):
    write_dicom_series(phantom_images["T1"], tmp_path / "mixed", "1.2.826.0.1.3680043.2.1125.3")
    write_dicom_series(phantom_images["T2"][:, :, :10], tmp_path / "other", "1.2.826.0.1.3680043.2.1125.4")
    for f in (tmp_path / "other").iterdir():
        f.rename(tmp_path / "mixed" / f"b{f.name}")
    code = main(["segment", "-q", "--t1", str(tmp_path / "mixed"), "-o", str(tmp_path / "o.nii.gz")])
    err = capsys.readouterr().err
    assert code == 1 and "2 DICOM series" in err and "1125.3" in err and "1125.4" in err
    assert not (tmp_path / "o.nii.gz").exists()


def test_info_shows_the_card_and_the_registry(capsys):
    assert main(["info"]) == 0
    out = capsys.readouterr().out
    for field in ("name:", "modalities:", "T1, T1ce, T2, FLAIR", "teachers:", "intended use:"):
        assert field in out
    assert "expected Dice per modality subset" in out and "T1ce+FLAIR" in out
    # the default began from the phantom model's weights, which the card pins by sha256
    from lckd.model.modelcard import read_card
    from lckd.model.registry import resolve_model
    phantom = read_card(resolve_model("lckd-lite-phantom", allow_download=False))
    start = f"lckd-lite-phantom {phantom.version} (weights sha256 {phantom.weights['sha256'][:12]}"
    assert f"started from:         {start}" in out
    from lckd.prep.brainextract import extractor_available
    line = next(x for x in out.splitlines() if x.startswith("raw scans:"))
    assert ("deepbet (default) installed" in line) == extractor_available("deepbet")
    assert main(["info", "--list"]) == 0
    assert "bundled" in capsys.readouterr().out


def test_info_names_each_bundled_models_data_not_a_folder_of_ours(capsys):
    from lckd.model.registry import list_models

    for entry in list_models():
        if entry.bundled:
            assert main(["info", "--model", entry.name]) == 0
            out = capsys.readouterr().out
            assert "training data:" in out
            assert "shared/data" not in out and "brats-labelled" not in out, entry.name


def test_info_into_a_closed_pipe_ends_quietly_like_a_unix_tool():
    """`lckd info | head -1`: the reader leaves before the output is written."""
    import subprocess
    import sys

    proc = subprocess.Popen([sys.executable, "-m", "lckd.frontends.cli", "info"], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE)
    proc.stdout.close()                      # closed before lckd writes: every write meets EPIPE
    err = proc.stderr.read().decode()
    assert proc.wait(timeout=120) == 141     # 128 + SIGPIPE, as a shell reports `cat big | head`
    assert err == "", err                    # no "internal error: BrokenPipeError", no traceback


def test_phantom_command_writes_readable_cases(tmp_path, capsys):
    assert main(["phantom", str(tmp_path / "ph"), "-n", "2", "--seed", "5", "--shape", "40,48,48",
                 "--layout", "brats2018"]) == 0
    cases = find_cases(tmp_path / "ph")
    assert [c.case_id for c in cases] == ["PHANTOM-00005", "PHANTOM-00006"]
    assert all(len(c.images) == 4 and c.label is not None for c in cases)
    assert main(["phantom", str(tmp_path / "x"), "--shape", "4,4"]) == 1

    # a split file for the folder, which `lckd train --split` reads back
    assert main(["split", str(tmp_path / "ph"), "-o", str(tmp_path / "split.csv"), "--fractions", "0.5,0.5,0"]) == 0
    splits = load_split(tmp_path / "split.csv")
    assert sorted(splits["train"] + splits["val"]) == ["PHANTOM-00005", "PHANTOM-00006"]
    assert len(splits["train"]) == 1 and not splits["test"]
    assert main(["split", str(tmp_path / "ph"), "-o", str(tmp_path / "s2.csv"), "--fractions", "0.5,0.6,0"]) == 1


def test_demo_writes_labelmap_png_and_dice(tmp_path, capsys):
    assert main(["demo", str(tmp_path), "--modalities", "t2,flair", "--threads", "2", "-q"]) == 0
    out = capsys.readouterr().out
    assert "modalities used: T2, FLAIR" in out and "Dice vs ground truth" in out
    assert "quality: " in out                               # the run's own estimate line, beside the Dice
    labelmap = next(tmp_path.glob("*_T2+FLAIR_seg.nii.gz"))
    assert sitk.ReadImage(str(labelmap)).GetSize() == (240, 240, 155)
    from lckd.inference.record import scope_line
    from lckd.model.modelcard import read_card
    from lckd.model.registry import resolve_model
    assert scope_line(read_card(resolve_model(None))) in out  # the default model's scope, at every run
    png = next(tmp_path.glob("*.png"))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    img = sitk.GetArrayFromImage(sitk.ReadImage(str(png)))[..., :3].astype(float) / 255
    assert img.shape[1] >= 700                               # two panels: T2 and FLAIR (no T1ce given)
    # outlines in the region colours: the prediction (solid) and the reference (dashed) of WT, TC, ET
    from lckd.frontends.preview import REGION_COLOURS
    for region in ("WT", "TC", "ET"):
        assert (np.abs(img - np.asarray(REGION_COLOURS[region])).max(axis=-1) < 0.06).sum() > 20, region
