"""Shared fixtures: small phantom cases written with real SimpleITK I/O."""
from __future__ import annotations

import pytest
import SimpleITK as sitk

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
    from lckd.phantom import make_phantom

    out = tmp_path_factory.mktemp("small_case")
    images, label = make_phantom(3, SMALL).to_sitk()
    paths = {}
    for m, img in images.items():
        paths[m] = out / f"{m}.nii.gz"
        sitk.WriteImage(img, str(paths[m]))
    sitk.WriteImage(label, str(out / "seg.nii.gz"))
    return paths, out / "seg.nii.gz"
