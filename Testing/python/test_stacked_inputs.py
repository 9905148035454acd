"""4D files holding the scans as channels (the Medical Segmentation Decathlon's brain layout):
`lckd segment --stack FILE --channels LIST` and `lckd batch --channels` on a folder of them."""
from __future__ import annotations

import csv

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import TEST_MODEL
from lckd.frontends.cli import main

DECATHLON = ("FLAIR", "T1", "T1ce", "T2")


@pytest.fixture(scope="module")
def stack(small_case, tmp_path_factory):
    """The small phantom's four scans joined into one 4D NIfTI in the Decathlon's channel order."""
    files, _ = small_case
    path = tmp_path_factory.mktemp("stack") / "BRATS_001.nii.gz"
    sitk.WriteImage(sitk.JoinSeries([sitk.ReadImage(str(files[m])) for m in DECATHLON]), str(path))
    return path


def _labels(path) -> np.ndarray:
    return sitk.GetArrayFromImage(sitk.ReadImage(str(path)))


def test_a_stack_segments_exactly_as_its_scans_given_one_by_one(stack, small_case, tmp_path, capsys):
    files, _ = small_case
    common = ["--model", TEST_MODEL, "--device", "cpu", "-q"]
    assert main(["segment", "--stack", str(stack), "--channels", ",".join(DECATHLON), "-o",
                 str(tmp_path / "a.nii.gz"), "--json"] + common) == 0
    assert main(["segment", "--flair", str(files["FLAIR"]), "--t1", str(files["T1"]), "--t1ce", str(files["T1ce"]),
                 "--t2", str(files["T2"]), "-o", str(tmp_path / "b.nii.gz")] + common) == 0
    assert np.array_equal(_labels(tmp_path / "a.nii.gz"), _labels(tmp_path / "b.nii.gz"))
    import json
    inputs = json.loads((tmp_path / "a.json").read_text())["inputs"]
    assert inputs["T1ce"].endswith("BRATS_001.nii.gz (channel 3 of 4)")
    # a subset of the channels: only those scans are used (here the Decathlon's T1ce and FLAIR)
    assert main(["segment", "--stack", str(stack), "--channels", "FLAIR,T1,T1ce,T2", "-o",
                 str(tmp_path / "c.nii.gz")] + common) == 0


@pytest.mark.parametrize("argv, expected", [
    (["--channels", "FLAIR,T1,T1ce"], "holds 4 channels but 3 channel names were given"),
    ([], "name its channels in the file's order with --channels"),
    (["--channels", "FLAIR,FLAIR,T1,T2"], "--channels must name each scan once"),
    (["--channels", "FLAIR,T1,T1ce,T2", "--t1", "x.nii.gz"], "not both"),
])
def test_an_ambiguous_stack_is_refused_in_one_line(stack, tmp_path, capsys, argv, expected):
    out = tmp_path / "seg.nii.gz"
    assert main(["segment", "--stack", str(stack), "-o", str(out)] + argv) == 1
    err = capsys.readouterr().err.strip()
    assert expected in err and len(err.splitlines()) == 1
    assert not out.exists()


def test_a_stack_given_as_one_scan_says_how_to_give_it(stack, tmp_path, capsys):
    assert main(["segment", "--t1", str(stack), "-o", str(tmp_path / "seg.nii.gz")]) == 1
    err = capsys.readouterr().err
    assert "4D image of 4 volumes" in err and "--stack FILE --channels" in err


def test_batch_takes_a_folder_of_stacks_with_their_channel_order(stack, tmp_path, capsys):
    import shutil

    folder = tmp_path / "imagesTr"
    folder.mkdir()
    for name in ("BRATS_001.nii.gz", "BRATS_002.nii.gz"):
        shutil.copy(stack, folder / name)
    assert main(["batch", str(folder), str(tmp_path / "none")]) == 1
    assert "--channels" in capsys.readouterr().err
    out = tmp_path / "out"
    assert main(["batch", str(folder), str(out), "--channels", ",".join(DECATHLON), "--model", TEST_MODEL,
                 "--device", "cpu", "-q"]) == 0
    with open(out / "summary.csv", newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    assert [(r["case"], r["status"], r["modalities"]) for r in rows] == \
        [("BRATS_001", "ok", "T1+T1ce+T2+FLAIR"), ("BRATS_002", "ok", "T1+T1ce+T2+FLAIR")]
    assert np.array_equal(_labels(out / "BRATS_001.nii.gz"), _labels(out / "BRATS_002.nii.gz"))
    wrong = tmp_path / "wrong"
    assert main(["batch", str(folder), str(wrong), "--channels", "FLAIR,T1ce", "-q"]) == 1
    with open(wrong / "summary.csv", newline="", encoding="utf-8") as f:
        assert {r["message"] for r in csv.DictReader(f)} == {
            "the file holds 4 channels but --channels names 2 (FLAIR, T1ce)"}
