"""DICOM study in: series found from the headers, recognised in four vendors' conventions and from
physics alone, set aside with reasons, competing series named with the flag that chooses,
explicit choices winning, broken studies refused in one line; nothing identifying printed or
recorded. Studies are generated from small phantoms (`lckd.research.dicomphantom`)."""
from __future__ import annotations

import datetime
import json
import shutil

import numpy as np
import pytest
import SimpleITK as sitk

from lckd.base.errors import InputError
from lckd.frontends.cli import main
from lckd.io.dicomroles import judge
from lckd.io.dicomseries import find_series
from lckd.io.dicomstudy import read_study, recognise
from lckd.research.dicomphantom import PATIENT, write_dicom_study, write_series
from lckd.research.phantom import make_phantom

SHAPE = (20, 40, 40)
EXPECTED_REASON = {   # vendor -> modality -> words its reason must hold
    "siemens": {"T1": "t1_mprage", "T1ce": "ContrastBolusAgent", "T2": "t2_tse", "FLAIR": "dark-fluid"},
    "ge": {"T1": "Ax T1 FLAIR", "T1ce": "+C", "T2": "FRFSE", "FLAIR": "AX T2 FLAIR"},
    "philips": {"T1": "T1W_SE", "T1ce": "post-contrast name 'T1W_3D_TFE_GD'", "T2": "T2W_TSE", "FLAIR": "VIEW_FLAIR"},
    "canon": {"T1": "T1WI", "T1ce": "Gd-T1WI", "T2": "T2WI", "FLAIR": "FLAIR_AX"},
    "unnamed": {"T1": "T1-weighted physics", "T1ce": "acquisition order", "T2": "T2-weighted physics",
                "FLAIR": "inversion time 2500 ms"},
}


@pytest.fixture(scope="module")
def case():
    return make_phantom(5, SHAPE)


@pytest.fixture(scope="module")
def studies(tmp_path_factory, case):
    """One study per vendor convention (the GE one RLE-compressed), with localizer, reformat, DWI,
    ADC, screen save and a text file."""
    root = tmp_path_factory.mktemp("studies")
    return {v: write_dicom_study(root / v, vendor=v, case=case, compression="rle" if v == "ge" else None)
            for v in EXPECTED_REASON}


@pytest.mark.parametrize("vendor", list(EXPECTED_REASON))
def test_each_vendor_convention_is_recognised_with_its_reason(studies, vendor):
    study = recognise(studies[vendor])
    assert {m: s.number for m, s in study.chosen.items()} == {"T1": 2, "T2": 3, "FLAIR": 4, "T1ce": 5}
    for mod, words in EXPECTED_REASON[vendor].items():
        assert words in study.roles[study.chosen[mod].label].reason, (mod, study.roles[study.chosen[mod].label])
    assert not study.competing


def test_non_inputs_are_set_aside_with_reasons(studies):
    series = find_series(studies["siemens"])
    reasons = {s.label: judge(s) for s in series}
    assert [s.label for s in series][:3] == ["1.1", "1.2", "1.3"]   # the three-plane localizer is split
    assert all("localizer" in reasons[f"1.{i}"].reason for i in (1, 2, 3))
    assert "derived or secondary" in reasons["6"].reason and reasons["6"].modality is None
    assert "diffusion" in reasons["7"].reason and "diffusion" in reasons["8"].reason
    assert "screen save" in reasons["99"].reason
    assert all(p.name != "README.txt" for s in series for p in s.files)   # non-DICOM ignored


def test_the_series_read_back_as_the_phantom_compressed_or_not(studies, case):
    scans, _ = case.to_sitk(integer=True)
    for vendor in ("siemens", "ge"):           # ge: RLE Lossless
        images = read_study(recognise(studies[vendor]))
        for mod, image in images.items():
            assert np.array_equal(sitk.GetArrayFromImage(image), sitk.GetArrayFromImage(scans[mod])), (vendor, mod)
            assert np.allclose(image.GetOrigin(), scans[mod].GetOrigin())


def test_contrast_given_earlier_makes_a_later_t1_post_contrast(tmp_path, case):
    """A T1 with no words of its own, acquired after a series that had the agent: T1ce."""
    folder = write_dicom_study(tmp_path / "s", vendor="unnamed", case=case, extras=False, modalities=("T1", "T2"))
    study_keys = _study_keys(folder)
    array = np.asarray(sitk.GetArrayFromImage(case.to_sitk(integer=True)[0]["T1ce"]))
    t1 = dict(description="", sequence="", scanning="SE", acquisition="2D", tr=600.0, te=14.0)
    write_series(folder / "S0007", study_keys, case, array, 7, datetime.datetime(2026, 1, 1, 8, 20),
                 dict(t1, tr=1500.0, te=30.0, agent="Dotarem", description="dsc_perf"))   # perfusion with agent
    write_series(folder / "S0008", study_keys, case, array, 8, datetime.datetime(2026, 1, 1, 8, 30),
                 dict(t1, tr=700.0))
    study = recognise(folder)
    assert study.chosen["T1ce"].number == 8
    assert "after the contrast agent was given" in study.roles["8"].reason


def test_two_post_contrast_candidates_are_named_with_the_flag_that_chooses(tmp_path, case, capsys):
    folder = write_dicom_study(tmp_path / "s", vendor="siemens", case=case, extras=False)
    array = np.asarray(sitk.GetArrayFromImage(case.to_sitk(integer=True)[0]["T1ce"]))
    write_series(folder / "S0010", _study_keys(folder), case, array, 10, datetime.datetime(2026, 1, 1, 8, 40),
                 dict(description="t1_se_tra_KM", sequence="*se2d1", scanning="SE", acquisition="2D",
                      tr=550.0, te=9.0, agent="Gadovist"))
    study = recognise(folder)
    assert study.chosen["T1ce"].number == 4          # the 3D one (no localizer: the scans are series 1-4)
    (line,) = study.competing
    assert line.startswith("T1ce: 2 candidates, series 4 't1_mprage_sag_p2_KM' used (3D") and "--t1ce 10" in line
    chosen = recognise(folder, {"T1ce": "10"})       # the explicit flag wins
    assert chosen.chosen["T1ce"].number == 10 and not chosen.competing
    by_uid = recognise(folder, {"T1ce": chosen.chosen["T1ce"].uid, "T2": "none", "FLAIR": "3"})
    assert by_uid.chosen["T1ce"].number == 10 and "T2" not in by_uid.chosen and by_uid.chosen["FLAIR"].number == 3
    with pytest.raises(InputError, match=r"--t1ce 42: the study has no such series \(its series: 1, 2, 3, 4, 10\)"):
        recognise(folder, {"T1ce": "42"})
    with pytest.raises(InputError, match="--flair 4: series 4 .* is already given as T1ce"):
        recognise(folder, {"T1ce": "4", "FLAIR": "4"})
    assert main(["study", str(folder), "--json", str(tmp_path / "listing.json")]) == 0
    out = capsys.readouterr().out
    assert "choose with --t1ce SERIES, e.g. --t1ce 10" in out and "(T1ce, not used)" in out
    assert json.loads((tmp_path / "listing.json").read_text())["chosen"]["T1ce"] == "4"


def test_missing_slice_is_set_aside_and_refused_when_chosen(tmp_path, case):
    folder = write_dicom_study(tmp_path / "s", vendor="ge", case=case, extras=False, modalities=("T2",))
    array = np.asarray(sitk.GetArrayFromImage(case.to_sitk(integer=True)[0]["FLAIR"]))
    write_series(folder / "S0009", _study_keys(folder), case, array, 9, datetime.datetime(2026, 1, 1, 8, 40),
                 dict(description="AX T2 FLAIR", sequence="", scanning="SE\\IR", acquisition="2D", tr=9000.0,
                      te=120.0, ti=2400.0), skip=(7,))
    study = recognise(folder)
    assert "FLAIR" not in study.chosen
    assert study.roles["9"].reason == "1 slice(s) missing: a gap of 2 mm where the others are 1 mm"
    forced = recognise(folder, {"FLAIR": "9"})
    with pytest.raises(InputError, match=r"FLAIR series 9 'AX T2 FLAIR' has unevenly spaced slices \(a gap of 2 mm"):
        read_study(forced)


def test_broken_and_empty_studies_are_refused_in_one_line(tmp_path, studies):
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "notes.txt").write_text("not DICOM")
    (tmp_path / "junk" / "IM0001").write_bytes(b"\0" * 128 + b"DICM" + b"garbage")   # a damaged DICOM file
    with pytest.raises(InputError, match="holds no DICOM image series"):
        recognise(tmp_path / "junk")
    with pytest.raises(InputError, match="is not a folder"):
        recognise(tmp_path / "missing")
    only_extras = tmp_path / "extras"
    shutil.copytree(studies["siemens"] / "S0001", only_extras / "S0001")
    shutil.copytree(studies["siemens"] / "S0007", only_extras / "S0007")
    with pytest.raises(InputError, match="no T1, T1ce, T2 or FLAIR series recognised among the 4 series"):
        recognise(only_extras)


def test_dicomdir_and_nested_folders(tmp_path, studies):
    from pydicom.fileset import FileSet

    fs = FileSet()
    for s in find_series(studies["canon"]):
        for f in s.files:
            fs.add(str(f))
    fs.write(str(tmp_path / "media"))
    assert (tmp_path / "media" / "DICOMDIR").exists()
    study = recognise(tmp_path / "media")
    assert {m: s.number for m, s in study.chosen.items()} == {"T1": 2, "T2": 3, "FLAIR": 4, "T1ce": 5}


def test_nothing_identifying_is_printed_or_recorded(studies, tmp_path, capsys):
    assert main(["study", str(studies["philips"]), "--json", str(tmp_path / "l.json")]) == 0
    text = capsys.readouterr().out + (tmp_path / "l.json").read_text()
    for value in PATIENT.values():
        if len(value) > 1:
            assert value not in text and value.split("^")[0] not in text
    assert "1.2." not in text   # no UIDs either: series numbers and descriptions only


def _study_keys(folder) -> dict:
    """The study and patient attributes of a generated study, to add a series to it."""
    import pydicom

    ds = pydicom.dcmread(next(p for p in sorted(folder.rglob("IM*"))), stop_before_pixels=True)
    keys = ("StudyInstanceUID", "FrameOfReferenceUID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID",
            "ReferringPhysicianName", "Manufacturer", "ManufacturerModelName", *PATIENT)
    return {k: ds.get(k) for k in keys}


def test_two_studies_sharing_series_numbers_get_distinct_labels(tmp_path, case):
    """Series numbers repeat across studies: the second 'series 1' is listed as 1-2 and chosen by it."""
    write_dicom_study(tmp_path / "both" / "a", vendor="ge", case=case, extras=False, modalities=("T2",))
    write_dicom_study(tmp_path / "both" / "b", vendor="philips", case=case, extras=False, modalities=("T2",))
    series = find_series(tmp_path / "both")
    assert [s.label for s in series] == ["1", "1-2"] and len({s.uid for s in series}) == 2
    study = recognise(tmp_path / "both", {"T2": "1-2"})
    assert study.chosen["T2"].uid == series[1].uid
    assert len(set(study.roles)) == 2                    # one role per series, none overwritten


def test_a_named_pipe_in_a_study_folder_is_passed_over_not_opened(tmp_path):
    """Opening a FIFO waits for a writer forever: the walk must look at the file type first."""
    import os

    from lckd.io.dicomseries import dicom_files, starts_like_dicom

    (tmp_path / "sub").mkdir()
    dicom = tmp_path / "sub" / "IM0001"
    dicom.write_bytes(b"\0" * 128 + b"DICM" + b"\0" * 16)
    (tmp_path / "notes.txt").write_text("not DICOM")
    os.mkfifo(tmp_path / "IM0000")
    assert list(dicom_files(tmp_path)) == [dicom]
    assert not starts_like_dicom(tmp_path / "IM0000") and starts_like_dicom(dicom)
