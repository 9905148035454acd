"""One resources root, one way to find the sample case, one helper for the shared data folder."""
from __future__ import annotations

import shutil
from pathlib import Path

import pytest

import conftest
from lckd.base.errors import ModelError
from lckd.model import resources

MODULE = Path(__file__).resolve().parents[2] / "LCKDSegmentation"
SAMPLE = "BraTS-PHANTOM-SAMPLE-000"


@pytest.fixture(autouse=True)
def _bundled(monkeypatch):
    monkeypatch.delenv("LCKD_RESOURCES", raising=False)


def test_the_resources_root_is_the_modules_resources_folder():
    assert resources.resources_dir() == MODULE / "Resources"
    assert (resources.resources_dir() / "models" / "registry.json").is_file()


def test_the_sample_case_is_the_one_the_demo_always_ran():
    """The files `sample.json` named before the demo found the case by its BraTS names."""
    case = resources.sample_case()
    folder = MODULE / "Resources" / "SampleData" / SAMPLE
    assert case.case_id == SAMPLE and case.layout == "brats2023"
    assert case.images == {m: folder / f"{SAMPLE}-{s}.nii.gz"
                           for m, s in (("T1", "t1n"), ("T1ce", "t1c"), ("T2", "t2w"), ("FLAIR", "t2f"))}
    assert case.label == folder / f"{SAMPLE}-seg.nii.gz"


def test_demo_and_slicer_sample_data_find_the_same_case():
    from lckd.frontends.demo import sample_case
    from LCKDSegmentationLib import sampledata

    case = resources.sample_case()
    assert sample_case() == (case.case_id, case.images, case.label)
    assert sampledata.sample_cases() == resources.sample_cases() == [case]


def test_an_overridden_root_supplies_its_own_sample(tmp_path, monkeypatch):
    root = tmp_path / "res"
    shutil.copytree(MODULE / "Resources" / "models", root / "models")
    (root / "SampleData" / "other-case").mkdir(parents=True)
    shutil.copy(resources.sample_case().images["FLAIR"], root / "SampleData" / "other-case" / "other-case-t2f.nii.gz")
    monkeypatch.setenv("LCKD_RESOURCES", str(root))
    assert resources.resources_dir() == root
    assert [c.case_id for c in resources.sample_cases()] == ["other-case"]
    with pytest.raises(ModelError, match="no bundled sample case with a label"):
        resources.sample_case()


def test_shared_data_follows_the_environment(tmp_path, monkeypatch):
    monkeypatch.delenv(conftest.SHARED_DATA_ENV, raising=False)
    assert conftest.shared_data("real") == MODULE.parents[1] / "shared" / "data" / "real"
    monkeypatch.setenv(conftest.SHARED_DATA_ENV, str(tmp_path))
    assert conftest.shared_data("real", "x") == tmp_path / "real" / "x"
    assert conftest.needs_shared_data("missing").kwargs["reason"].startswith("shared data not available")
