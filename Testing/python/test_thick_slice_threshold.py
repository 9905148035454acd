"""The whole-tumour threshold of thick-slice runs (a card's `postprocessing.thick_slices`):
runs whose thickest scan reaches `min_slice_mm` draw the whole tumour above `wt_threshold`,
thinner runs and runs without clean-up are unchanged, a malformed rule is refused."""
from __future__ import annotations

import numpy as np
import pytest
import SimpleITK as sitk

from lckd.base.errors import ModelError
from lckd.base.labels import labels_for_run, labels_to_regions, postprocess, regions_to_labels
from lckd.inference import Segmenter
from lckd.model.modelcard import read_card
from lckd.research.phantom import make_phantom
from model_copies import model_copy

RULE = {"min_component_voxels": 50, "min_et_voxels": 0, "thick_slices": {"min_slice_mm": 3.0, "wt_threshold": 0.7}}


def _probabilities() -> np.ndarray:
    """A core of WT 0.9 inside a 0.6 halo, and a speck of 0.9 too small to survive the clean-up."""
    probs = np.zeros((3, 30, 30, 30), np.float32)
    probs[2, 5:20, 5:20, 5:20] = 0.6
    probs[2, 8:17, 8:17, 8:17] = 0.9
    probs[2, 25:27, 25:27, 25:27] = 0.9
    return probs


def test_thick_runs_take_the_higher_threshold_and_thin_runs_the_usual_one():
    probs = _probabilities()
    wt_thick = labels_to_regions(labels_for_run(probs, RULE, 5.0))[2]
    wt_thin = labels_to_regions(labels_for_run(probs, RULE, 1.0))[2]
    assert int(wt_thick.sum()) == 9 ** 3                      # the halo is gone, the core stays
    assert int(wt_thin.sum()) == 15 ** 3                      # halo and core
    assert not wt_thick[25:27, 25:27, 25:27].any() and not wt_thin[25:27, 25:27, 25:27].any()
    assert int(labels_to_regions(labels_for_run(probs, RULE, 3.0))[2].sum()) == 9 ** 3   # the limit is inclusive


def test_without_a_thick_slice_rule_or_without_clean_up_nothing_changes():
    probs = _probabilities()
    plain = {k: v for k, v in RULE.items() if k != "thick_slices"}
    assert np.array_equal(labels_for_run(probs, plain, 6.0), postprocess(regions_to_labels(probs), **plain))
    assert np.array_equal(labels_for_run(probs, None, 6.0), regions_to_labels(probs))   # no clean-up at all
    assert RULE["thick_slices"] == {"min_slice_mm": 3.0, "wt_threshold": 0.7}            # the rule is not consumed


@pytest.mark.parametrize("thick, problem", [
    ({"min_slice_mm": 3.0}, "wt_threshold"),
    ({"min_slice_mm": 3.0, "wt_threshold": 1.0}, "wt_threshold"),
    ({"min_slice_mm": 0, "wt_threshold": 0.7}, "min_slice_mm"),
    ({"min_slice_mm": 3.0, "wt_threshold": 0.7, "ET": 0.6}, "ET"),
])
def test_a_malformed_thick_slice_rule_is_refused_naming_the_field(tmp_path, thick, problem):
    card = model_copy(tmp_path, "lckd-lite-phantom", postprocessing={"thick_slices": thick})
    with pytest.raises(ModelError, match=problem):
        read_card(card)


@pytest.fixture(scope="module")
def thick_and_thin(tmp_path_factory):
    """The phantom case as given (1 mm) and with every scan re-sliced at 5 mm."""
    images, _ = make_phantom(7, (64, 64, 64)).to_sitk()
    thick = {}
    for m, img in images.items():
        size = list(img.GetSize())
        size[2] = size[2] // 5
        spacing = list(img.GetSpacing())
        spacing[2] *= 5
        smooth = sitk.SmoothingRecursiveGaussian(img, [0.01, 0.01, 2.0])
        thick[m] = sitk.Resample(smooth, size, sitk.Transform(), sitk.sitkLinear, img.GetOrigin(), spacing,
                                 img.GetDirection(), 0.0, img.GetPixelID())
    return images, thick


def test_segment_applies_the_rule_to_thick_scans_only(tmp_path, thick_and_thin):
    images, thick = thick_and_thin
    rule = {"min_component_voxels": 50, "min_et_voxels": 500}
    plain = Segmenter.load(str(model_copy(tmp_path / "plain", "lckd-lite-phantom", postprocessing=rule)), threads=2)
    ruled = Segmenter.load(str(model_copy(tmp_path / "ruled", "lckd-lite-phantom", postprocessing=dict(
        rule, thick_slices={"min_slice_mm": 3.0, "wt_threshold": 0.7}))), threads=2)

    def run(seg: Segmenter, scans: dict):
        res = seg.segment(scans, postprocess=True)
        return labels_to_regions(sitk.GetArrayFromImage(res.labelmap))[2], res.notes

    (thick_plain, plain_notes), (thick_ruled, ruled_notes) = run(plain, thick), run(ruled, thick)
    assert thick_ruled.sum() < thick_plain.sum()              # the higher threshold draws less ...
    assert not (thick_ruled & ~thick_plain).any()             # ... and nothing the usual one did not
    assert any("slices 5.0 mm thick: whole tumour where its probability exceeds 0.7" in n for n in ruled_notes)
    assert not any("thick" in n for n in plain_notes)
    (thin_plain, _), (thin_ruled, thin_notes) = run(plain, images), run(ruled, images)
    assert np.array_equal(thin_plain, thin_ruled) and not any("thick" in n for n in thin_notes)   # 1 mm: unchanged


def test_lckd_info_states_the_rule_in_words(tmp_path, capsys):
    from lckd.frontends.cli import main

    card = model_copy(tmp_path, "lckd-lite-phantom", postprocessing={
        "min_component_voxels": 50, "thick_slices": {"min_slice_mm": 3.0, "wt_threshold": 0.7}})
    assert main(["info", "--model", str(card)]) == 0
    out = " ".join(capsys.readouterr().out.split())
    assert "min_component_voxels 50, whole tumour above 0.7 where a scan has slices of 3 mm or more" in out
