"""Shared fixtures: small phantom cases written with real SimpleITK I/O."""
from __future__ import annotations

import os
from pathlib import Path

import pytest

#: Environment variable naming the shared data folder, for a checkout not placed beside it.
SHARED_DATA_ENV = "LCKD_SHARED_DATA"


def shared_data(*parts: str) -> Path:
    """A path in the shared data folder (real BraTS cases): `$LCKD_SHARED_DATA`, else the
    `shared/data` folder beside the checkout (`../shared/data`). May not exist: the tests that
    read it skip then (`needs_shared_data`)."""
    root = os.environ.get(SHARED_DATA_ENV) or Path(__file__).resolve().parents[3] / "shared" / "data"
    return Path(root).joinpath(*parts)


def needs_shared_data(*parts: str) -> pytest.MarkDecorator:
    """Skip the test (or module, as `pytestmark`) when `shared_data(*parts)` is absent."""
    path = shared_data(*parts)
    return pytest.mark.skipif(not path.exists(), reason=f"shared data not available: {path} (${SHARED_DATA_ENV})")


SMALL = (64, 80, 80)  # (z, y, x): a shrunken brain, one or two sliding windows


#: The small bundled phantom model the tests run (the bundled default may become a larger one).
TEST_MODEL = "lckd-lite-phantom"


@pytest.fixture(scope="session")
def segmenter():
    """The bundled phantom model, loaded once for the whole session (2 threads, as CI has)."""
    from lckd.inference import Segmenter

    return Segmenter.load(TEST_MODEL, device="cpu", threads=2)


@pytest.fixture(scope="session")
def small_case(tmp_path_factory):
    """One small phantom case as NIfTI files: (dict modality -> path, label path)."""
    from phantom_files import write_phantom_files

    return write_phantom_files(tmp_path_factory.mktemp("small_case"), 3, SMALL)


@pytest.fixture()
def cohort(tmp_path):
    """Three BraTS 2023 cases: one complete, one without T1/T2, one with a corrupt FLAIR."""
    root = tmp_path / "in"
    from lckd.research.phantom import write_phantom_dataset

    folders = write_phantom_dataset(root, 3, seed=40, shape=SMALL)
    for suffix in ("t1n", "t2w"):
        (folders[1] / f"{folders[1].name}-{suffix}.nii.gz").unlink()
    (folders[2] / f"{folders[2].name}-t2f.nii.gz").write_bytes(b"not an image at all")
    return root, [f.name for f in folders]


#: Seed of the raw-scan phantom the raw-pipeline tests share.
RAW_SEED = 5


@pytest.fixture(scope="session")
def raw_case(tmp_path_factory):
    """One raw-scan phantom (`lckd phantom --raw`) as files: (case folder, {modality: path})."""
    from lckd.research.rawphantom import write_raw_phantom

    folder = write_raw_phantom(tmp_path_factory.mktemp("raw_case"), RAW_SEED)
    cid = folder.name
    files = {m: folder / f"{cid}-{s}.nii.gz" for m, s in (("T1", "t1n"), ("T1ce", "t1c"), ("T2", "t2w"),
                                                          ("FLAIR", "t2f"))}
    return folder, files


@pytest.fixture(scope="session")
def segmentation_converters():
    """Register the segmentation conversion rules real Slicer registers at start-up (slicer-core
    does not); once per process, for every test module that converts representations."""
    slicer = pytest.importorskip("slicer")
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
