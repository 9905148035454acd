"""BraTS-style post-processing (lckd.base.labels.postprocess, `--postprocess`): small tumour
components go, a small enhancing tumour becomes core, everything else is left alone."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lckd.base.errors import InputError
from lckd.base.labels import CONVENTIONS, postprocess
from lckd.research.phantom import make_phantom

SHAPE = (40, 40, 40)


def _box(label: np.ndarray, corner, size, value: int) -> None:
    z, y, x = corner
    d, h, w = size
    label[z:z + d, y:y + h, x:x + w] = value


def test_components_under_the_size_limit_are_dropped_at_the_boundary():
    label = np.zeros(SHAPE, np.uint8)
    _box(label, (2, 2, 2), (7, 7, 1), 2)       # 49 voxels: dropped
    _box(label, (2, 20, 2), (5, 10, 1), 2)     # 50 voxels: kept
    out = postprocess(label, min_et_voxels=0)
    assert out[2:9, 2:9, 2].sum() == 0
    assert (out[2:7, 20:30, 2] == 2).all()
    assert int((out > 0).sum()) == 50


def test_a_component_is_all_tumour_labels_together_face_connected():
    label = np.zeros(SHAPE, np.uint8)
    _box(label, (10, 10, 10), (5, 5, 1), 1)    # 25 core voxels ...
    _box(label, (10, 10, 11), (5, 5, 1), 2)    # ... touching 25 oedema voxels: one 50-voxel component
    _box(label, (30, 30, 30), (5, 5, 1), 2)    # 25 voxels ...
    _box(label, (35, 35, 31), (5, 5, 1), 2)    # ... touching it only at a corner: two components
    out = postprocess(label, min_et_voxels=0)
    assert np.array_equal(out[:20, :20, :20], label[:20, :20, :20])
    assert out[25:, 25:, 25:].sum() == 0


@pytest.mark.parametrize("convention", sorted(CONVENTIONS))
def test_small_enhancing_tumour_becomes_core_and_large_stays(convention):
    v = CONVENTIONS[convention]
    label = np.zeros(SHAPE, np.uint8)
    _box(label, (5, 5, 5), (10, 10, 10), v["ED"])
    _box(label, (7, 7, 7), (7, 7, 7), v["ET"])             # 343 ET voxels < 500
    out = postprocess(label, convention)
    assert not (out == v["ET"]).any()
    assert int((out == v["NCR"]).sum()) == 343 and int((out == v["ED"]).sum()) == 1000 - 343
    big = np.zeros(SHAPE, np.uint8)
    _box(big, (5, 5, 5), (10, 10, 10), v["ET"])            # 1000 ET voxels: kept
    assert np.array_equal(postprocess(big, convention), big)


def test_enhancing_voxels_of_dropped_components_do_not_count():
    label = np.zeros(SHAPE, np.uint8)
    _box(label, (5, 5, 5), (8, 8, 8), 4)                    # 512 ET voxels in one component
    _box(label, (30, 30, 30), (3, 3, 3), 4)                 # 27 ET voxels, an island: dropped
    out = postprocess(label)
    assert int((out == 4).sum()) == 512 and out[30:, 30:, 30:].sum() == 0
    _box(label, (5, 5, 5), (8, 8, 8), 0)
    _box(label, (5, 5, 5), (8, 8, 7), 4)                    # 448 + 27 island: 448 < 500 after the drop
    out = postprocess(label)
    assert not (out == 4).any() and int((out == 1).sum()) == 448


def test_input_is_not_modified_and_an_empty_label_stays_empty():
    label = np.zeros(SHAPE, np.uint8)
    _box(label, (1, 1, 1), (2, 2, 2), 4)
    before = label.copy()
    out = postprocess(label)
    assert np.array_equal(label, before) and out.dtype == label.dtype and not out.any()
    assert not postprocess(np.zeros(SHAPE, np.uint8)).any()


def test_a_phantom_ground_truth_loses_only_what_the_rules_name():
    _, seg = make_phantom(3, (48, 64, 64)).to_sitk()
    label = sitk.GetArrayFromImage(seg)
    out = postprocess(label)
    changed = out != label
    # every change is either a dropped voxel or enhancing tumour turned into core
    assert np.all((out[changed] == 0) | ((label[changed] == 4) & (out[changed] == 1)))
    assert int((out > 0).sum()) > 0.9 * int((label > 0).sum())


def test_unknown_convention_is_an_input_error():
    with pytest.raises(InputError, match="brats2018"):
        postprocess(np.zeros(SHAPE, np.uint8), "brats2099")
