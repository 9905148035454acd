"""Tests of lckd.io.datasets: BraTS layouts, label conventions, atomic writes, splits."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import SimpleITK as sitk

from conftest import shared_data
from lckd.base.errors import InputError, OutputError
from lckd.base.modalities import MODALITIES
from lckd.io.datasets import CaseFiles, find_cases, load_split, make_split, read_label, write_case, write_split
from lckd.research.phantom import make_phantom, write_phantom_dataset

TINY = (20, 32, 32)
NAMES = {
    "brats2018": {"T1": "_t1", "T1ce": "_t1ce", "T2": "_t2", "FLAIR": "_flair", "seg": "_seg"},
    "brats2023": {"T1": "-t1n", "T1ce": "-t1c", "T2": "-t2w", "FLAIR": "-t2f", "seg": "-seg"},
}


@pytest.fixture(scope="module")
def datasets(tmp_path_factory) -> dict[str, Path]:
    """Two tiny phantom cases written in each layout."""
    out = {}
    for layout in ("brats2018", "brats2023"):
        root = tmp_path_factory.mktemp(layout)
        paths = write_phantom_dataset(root, 2, seed=5, shape=TINY, layout=layout)
        assert [p.parent for p in paths] == [root, root]
        out[layout] = root
    return out


def raw_values(path: Path) -> set[int]:
    return set(np.unique(sitk.GetArrayFromImage(sitk.ReadImage(str(path)))).tolist())


def leftovers(folder: Path) -> list[str]:
    return [p.name for p in folder.iterdir() if p.name.startswith(".tmp")]


# --------------------------------------------------------------------------- layouts

@pytest.mark.parametrize("layout,ids", [
    ("brats2018", ["PHANTOM-00005", "PHANTOM-00006"]),
    ("brats2023", ["BraTS-PHANTOM-00005-000", "BraTS-PHANTOM-00006-000"]),
])
def test_find_cases_reads_back_both_layouts(datasets, layout, ids):
    cases = find_cases(datasets[layout])
    assert [c.case_id for c in cases] == ids
    for case in cases:
        assert isinstance(case, CaseFiles) and case.layout == layout
        assert set(case.images) == set(MODALITIES)
        for m, path in case.images.items():
            assert path.name == f"{case.case_id}{NAMES[layout][m]}.nii.gz"
        assert case.label is not None
        assert case.label.name == f"{case.case_id}{NAMES[layout]['seg']}.nii.gz"
        assert not leftovers(case.label.parent)


@pytest.mark.parametrize("layout,et_value", [("brats2018", 4), ("brats2023", 3)])
def test_labels_are_converted_between_conventions(datasets, layout, et_value):
    case = find_cases(datasets[layout])[0]
    values = raw_values(case.label)
    assert et_value in values and values <= {0, 1, 2, et_value}
    expected = make_phantom(5, TINY).label
    label = read_label(case.label, case.layout)
    assert label.dtype == np.uint8
    np.testing.assert_array_equal(label, expected)        # back in the 2018 convention


def test_images_round_trip(datasets):
    """Written as int16, as BraTS files are: the phantom's values rounded, nothing else."""
    case = find_cases(datasets["brats2023"])[1]
    phantom = make_phantom(6, TINY)
    for m, path in case.images.items():
        written = sitk.ReadImage(str(path))
        assert written.GetPixelID() == sitk.sitkInt16
        np.testing.assert_array_equal(sitk.GetArrayFromImage(written), np.rint(phantom.images[m]))


def test_geometry_round_trip(tmp_path):
    c, s = np.cos(0.4), np.sin(0.4)
    direction = (c, 0.0, s, 0.0, -1.0, 0.0, s, 0.0, -c)   # rotation with a flip
    case = make_phantom(1, (16, 24, 20), (0.8, 1.2, 3.0), direction=direction,
                        origin=(-5.5, 12.0, 40.25))
    images, label = case.to_sitk()
    for layout in ("brats2018", "brats2023"):
        write_case(tmp_path / layout, "CASE-1", images, label, layout=layout)
        found = find_cases(tmp_path / layout)[0]
        for path in [*found.images.values(), found.label]:
            img = sitk.ReadImage(str(path))
            assert img.GetSpacing() == pytest.approx((0.8, 1.2, 3.0), abs=1e-5)
            assert img.GetOrigin() == pytest.approx((-5.5, 12.0, 40.25), abs=1e-4)
            assert img.GetDirection() == pytest.approx(direction, abs=1e-5)
        np.testing.assert_array_equal(read_label(found.label, found.layout), case.label)


def test_case_missing_a_modality_and_label(tmp_path):
    images, label = make_phantom(2, TINY).to_sitk()
    write_case(tmp_path, "A", {"t1c": images["T1ce"], "flair": images["FLAIR"]}, None,
               layout="brats2023")                         # aliases accepted
    write_case(tmp_path, "B", images, label)
    (tmp_path / "B" / "B_t2.nii.gz").unlink()
    a, b = find_cases(tmp_path)
    assert a.case_id == "A" and set(a.images) == {"T1ce", "FLAIR"} and a.label is None
    assert a.layout == "brats2023"
    assert b.layout == "brats2018" and set(b.images) == {"T1", "T1ce", "FLAIR"}
    assert b.label is not None


def test_uncompressed_nifti_and_unrelated_files(tmp_path):
    images, _ = make_phantom(2, TINY).to_sitk()
    case_dir = tmp_path / "Brats18_X_1"
    case_dir.mkdir()
    sitk.WriteImage(images["T2"], str(case_dir / "Brats18_X_1_t2.nii"))
    (case_dir / "notes_t1.txt").write_text("not an image")
    sitk.WriteImage(images["T1"], str(case_dir / "Brats18_X_1_mask.nii.gz"))  # unknown suffix
    sitk.WriteImage(images["T1"], str(case_dir / "._Brats18_X_1_t1.nii.gz"))   # macOS fork
    sitk.WriteImage(images["T1"], str(case_dir / ".tmp-abc-Brats18_X_1_t1.nii.gz"))
    (tmp_path / "README.md").write_text("dataset readme")
    (tmp_path / "empty").mkdir()
    junk = tmp_path / "junk"
    junk.mkdir()
    sitk.WriteImage(images["T1"], str(junk / "image.nii.gz"))   # no BraTS suffix
    cases = find_cases(tmp_path)
    assert [c.case_id for c in cases] == ["Brats18_X_1"]
    assert set(cases[0].images) == {"T2"} and cases[0].images["T2"].suffix == ".nii"


def test_root_may_be_a_single_case_folder(datasets):
    folder = datasets["brats2018"] / "PHANTOM-00006"
    cases = find_cases(folder)
    assert len(cases) == 1 and cases[0].case_id == "PHANTOM-00006"


def test_bad_roots_raise_input_error(tmp_path):
    missing = tmp_path / "nowhere"
    with pytest.raises(InputError, match="nowhere"):
        find_cases(missing)
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(InputError, match="file.txt"):
        find_cases(tmp_path / "file.txt")
    empty = tmp_path / "empty"
    (empty / "sub").mkdir(parents=True)
    with pytest.raises(InputError, match="no BraTS case"):
        find_cases(empty)


# --------------------------------------------------------------------------- labels

def _label_image(values, tmp_path: Path, name: str) -> Path:
    arr = np.zeros((4, 5, 6), dtype=np.uint8)
    arr.flat[: len(values)] = values
    path = tmp_path / name
    sitk.WriteImage(sitk.GetImageFromArray(arr), str(path))
    return path


def test_read_label_rejects_foreign_values(tmp_path):
    path = _label_image([1, 2, 4], tmp_path, "x-seg.nii.gz")
    assert set(np.unique(read_label(path, "brats2018")).tolist()) == {0, 1, 2, 4}
    with pytest.raises(InputError, match="x-seg.nii.gz"):
        read_label(path, "brats2023")                      # 4 is not a 2023 label
    path3 = _label_image([1, 2, 3], tmp_path, "y_seg.nii.gz")
    np.testing.assert_array_equal(np.unique(read_label(path3, "brats2023")), [0, 1, 2, 4])
    with pytest.raises(InputError):
        read_label(path3, "brats2018")
    with pytest.raises(InputError, match="layout"):
        read_label(path3, "brats2015")
    with pytest.raises(InputError, match="not found"):
        read_label(tmp_path / "none.nii.gz", "brats2018")
    (tmp_path / "bad.nii.gz").write_bytes(b"not nifti")
    with pytest.raises(InputError, match="bad.nii.gz"):
        read_label(tmp_path / "bad.nii.gz", "brats2018")


def test_write_case_rejects_bad_input_and_leaves_no_partial_files(tmp_path):
    images, label = make_phantom(0, TINY).to_sitk()
    arr = sitk.GetArrayFromImage(label)
    arr[arr == 4] = 3                                     # 2023 values given as 2018
    bad = sitk.GetImageFromArray(arr)
    bad.CopyInformation(label)
    with pytest.raises(InputError, match="2018"):
        write_case(tmp_path, "C1", images, bad, layout="brats2023")
    assert not leftovers(tmp_path / "C1")
    with pytest.raises(InputError, match="case id"):
        write_case(tmp_path, "../escape", images, label)
    with pytest.raises(InputError, match="layout"):
        write_case(tmp_path, "C2", images, label, layout="nnunet")
    with pytest.raises(InputError, match="modality"):
        write_case(tmp_path, "C3", {"PD": images["T1"]}, None)
    with pytest.raises(InputError, match="twice"):
        write_case(tmp_path, "C4", {"t1c": images["T1ce"], "T1ce": images["T1ce"]}, None)
    assert not (tmp_path / "C3").exists() and not (tmp_path / "C4").exists()


def test_failed_write_is_atomic(tmp_path, monkeypatch):
    images, label = make_phantom(0, TINY).to_sitk()
    real_execute = sitk.ImageFileWriter.Execute

    def failing_execute(writer, *args):
        path = writer.GetFileName()
        if "t2f" in path:
            Path(path).write_bytes(b"half a file")        # a partial write, then a crash
            raise RuntimeError("disk full")
        return real_execute(writer, *args)

    monkeypatch.setattr(sitk.ImageFileWriter, "Execute", failing_execute)
    with pytest.raises(OutputError, match="t2f"):
        write_case(tmp_path, "CASE", images, label, layout="brats2023")
    folder = tmp_path / "CASE"
    names = sorted(p.name for p in folder.iterdir())
    assert not leftovers(folder)
    assert "CASE-t2f.nii.gz" not in names                  # no partial target
    for name in names:                                     # what exists is complete
        sitk.ReadImage(str(folder / name))


# --------------------------------------------------------------------------- splits

def test_make_split_is_deterministic_and_disjoint():
    ids = [f"case{i:03d}" for i in range(20)]
    split = make_split(ids, seed=3)
    assert [len(split[s]) for s in ("train", "val", "test")] == [14, 3, 3]
    assert sorted(sum(split.values(), [])) == ids
    assert make_split(list(reversed(ids)), seed=3) == split     # input order irrelevant
    assert make_split(ids, seed=4) != split
    tiny = make_split(["a", "b", "c"])
    assert sorted(len(v) for v in tiny.values()) == [1, 1, 1]
    assert make_split(ids, (1.0, 0.0, 0.0))["train"] == ids
    with pytest.raises(InputError):
        make_split(ids, (0.5, 0.2, 0.2))
    with pytest.raises(InputError, match="duplicate"):
        make_split(["a", "a", "b"])


def test_split_csv_round_trip_and_errors(tmp_path):
    split = make_split([f"c{i}" for i in range(10)], seed=1)
    path = tmp_path / "sub" / "split.csv"
    write_split(path, split)
    assert path.read_text().splitlines()[0] == "case_id,split"
    assert load_split(path) == split
    assert not leftovers(path.parent)

    with pytest.raises(InputError, match="more than one"):
        write_split(tmp_path / "x.csv", {"train": ["a"], "val": ["a"]})
    with pytest.raises(InputError, match="unknown split"):
        write_split(tmp_path / "x.csv", {"training": ["a"]})
    with pytest.raises(InputError, match="not found"):
        load_split(tmp_path / "none.csv")
    bad = tmp_path / "bad.csv"
    bad.write_text("id,fold\na,train\n")
    with pytest.raises(InputError, match="header"):
        load_split(bad)
    bad.write_text("case_id,split\na,train\nb,holdout\n")
    with pytest.raises(InputError, match="line 3"):
        load_split(bad)
    bad.write_text("case_id,split\na,train\na,val\n")
    with pytest.raises(InputError, match="twice"):
        load_split(bad)
    os.remove(bad)


def test_write_phantom_dataset_options(tmp_path, capsys):
    paths = write_phantom_dataset(tmp_path, 1, seed=42, shape=(16, 24, 24), layout="brats2018",
                                  randomize_appearance=False, progress=True)
    assert [p.name for p in paths] == ["PHANTOM-00042"]
    assert "phantoms" in capsys.readouterr().err             # the tqdm bar
    assert write_phantom_dataset(tmp_path / "none", 0) == []
    with pytest.raises(InputError, match="layout"):
        write_phantom_dataset(tmp_path, 1, layout="brats2020")


def test_find_cases_on_the_real_brats2023_case():
    real = shared_data("real")
    if not real.is_dir():
        pytest.skip(f"real BraTS case not available under {real}")
    cases = find_cases(real)
    assert cases and all(c.layout == "brats2023" for c in cases)
    assert set(cases[0].images) == set(MODALITIES)
