"""One case-loading path (lckd.prep.modelgrid) for inference, training and evaluation."""
from __future__ import annotations

import subprocess
import sys

import numpy as np
import SimpleITK as sitk

from lckd.base.modalities import MODALITIES
from lckd.inference.inputchecks import choose_reference
from lckd.io.datasets import find_cases, write_case
from lckd.prep import geometry, modelgrid
from lckd.prep.preprocess import prepare_case
from lckd.research.phantom import make_phantom

SPACING = (1.0, 1.0, 1.0)


def _write(tmp_path, images, label):
    write_case(tmp_path, "case0", images, label, layout="brats2018")
    (case,) = find_cases(tmp_path)
    return case


def test_one_grid_case_reads_as_before(tmp_path):
    """On one grid the reference does not matter: the arrays are those of the old loader (T1 first)."""
    images, label = make_phantom(4, shape=(40, 48, 48)).to_sitk()
    case = _write(tmp_path, images, label)
    got = modelgrid.load_case(case, MODALITIES, SPACING)
    # the old training loader, written out: reference = first of the network order
    read = {m: sitk.ReadImage(str(p), sitk.sitkFloat32) for m, p in case.images.items()}
    model = {m: geometry.to_model_grid(img, SPACING) for m, img in read.items()}
    old = prepare_case({m: sitk.GetArrayFromImage(i) for m, i in model.items()}, MODALITIES)
    np.testing.assert_array_equal(got.x, old.x.astype(np.float32))
    np.testing.assert_array_equal(got.present, old.present)
    assert got.regions.shape == (3,) + old.x.shape[1:] and got.regions[2].any()


def test_mixed_grids_use_the_inference_reference(tmp_path):
    """T1 on a coarser grid than the others: training reads the case onto T1ce's grid, as inference does."""
    images, label = make_phantom(6, shape=(40, 48, 48)).to_sitk()
    coarse = sitk.Resample(images["T1"], [24, 24, 20], sitk.Transform(), sitk.sitkLinear,
                           images["T1"].GetOrigin(), [2.0, 2.0, 2.0], images["T1"].GetDirection())
    images = dict(images, T1=coarse)
    case = _write(tmp_path, images, label)
    read = {m: sitk.ReadImage(str(p), sitk.sitkFloat32) for m, p in case.images.items()}
    reference = choose_reference(list(read))
    assert reference == "T1ce"
    grid, prepared = modelgrid.onto_model_grid(modelgrid.on_reference_grid(read, reference), reference, SPACING,
                                               MODALITIES)
    got = modelgrid.load_case(case, MODALITIES, SPACING)
    np.testing.assert_array_equal(got.x, prepared.x.astype(np.float32))
    assert got.x.shape[1:] == got.regions.shape[1:]
    # the label stays on its voxels: the truth read back equals the written one inside the crop
    truth = sitk.GetArrayFromImage(sitk.DICOMOrient(label, "LPS"))[prepared.box]
    assert got.regions[2].sum() == (truth > 0).sum()
    # T1 first (the old rule) reads a different case: the rule matters on mixed grids
    _, t1_first = modelgrid.onto_model_grid(modelgrid.on_reference_grid(read, "T1"), "T1", SPACING, MODALITIES)
    assert t1_first.x.shape != prepared.x.shape or not np.array_equal(t1_first.x, prepared.x)


def test_evaluation_and_training_do_not_import_each_other():
    code = ("import sys, lckd.research.evaluate; a = 'lckd.research.training' in sys.modules; "
            "import lckd.research.training.election; print(a)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    assert run.stdout.strip() == "False"
    code = ("import sys, lckd.research.training.election, lckd.research.training.data; "
            "print('lckd.research.evaluate' in sys.modules)")
    run = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert run.returncode == 0 and run.stdout.strip() == "False", run.stderr[-2000:]


def test_training_data_keeps_its_public_names():
    from lckd.research.training import data

    assert data.load_case is modelgrid.load_case and data.LoadedCase is modelgrid.LoadedCase
    assert data.select_cases is modelgrid.select_cases
