"""The quality record stays with the segmentation (issue 29, defect 3 / item 4), headless on real
MRML classes from `slicer-core`: a result imported into the scene carries its expected WT Dice,
interval, low-confidence flag and reasons as tags of its tumour segments and in its volumes
table; `.seg.nrrd` save / load and scene (.mrml) save / load keep them; the CLI's `.seg.nrrd`
carries the same tags, so a CLI result loaded into Slicer shows the line; the panel shows the
line of whichever segmentation is selected, read back from the node.

slicer-core 5.13's `vtkSegmentation` has no segmentation-level tags and its storage node keeps no
custom header field of its own, so the record is kept where Slicer does keep custom text: segment
tags (`SegmentN_Tags`), which slicerio reads too.
"""
from __future__ import annotations

import ast
from pathlib import Path

import numpy as np
import pytest

from lckd.inference.record import QUALITY_TAGS, quality_from_tags, quality_tags
from module_source import calls, method

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
sitk = pytest.importorskip("SimpleITK")
slicerio = pytest.importorskip("slicerio")

from lckd.base.segments import SEGMENTS  # noqa: E402
from LCKDSegmentationLib.logic import SegmentationLogic, SegmentJob  # noqa: E402
from LCKDSegmentationLib.output import QUALITY_COLUMN, TABLE_ROLE, read_quality  # noqa: E402
from LCKDSegmentationLib.panel import quality_text  # noqa: E402

# slicer_pythons: also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)
pytestmark = [pytest.mark.usefixtures("segmentation_converters"), pytest.mark.slicer_pythons]


LOW = {"expected_wt_dice": 0.6, "interval": [0.45, 0.7], "low_confidence": True,
       "reasons": ["one scan only", "tumour drawn over 20 % of the brain"]}
UNCALIBRATED = {"expected_wt_dice": None, "interval": None, "low_confidence": None, "reasons": ["one scan only"]}
LOW_LINE = ("LOW CONFIDENCE: check this result. expected whole-tumour Dice 0.60 (0.45-0.70); an estimate, not a "
            "measurement. Reasons: one scan only, tumour drawn over 20 % of the brain.")


def _record(record: dict) -> dict:
    """What a record reads back as (the estimate's other fields, e.g. features, are not kept)."""
    return {k: record[k] for k in ("expected_wt_dice", "interval", "low_confidence", "reasons")}


def _labels(shape=(12, 16, 16)) -> sitk.Image:
    labels = np.zeros(shape, np.uint8)
    labels[4:8, 4:8, 4:8] = 2
    labels[5:7, 5:7, 5:7] = 4
    labels[4, 4, 4] = 1
    image = sitk.GetImageFromArray(labels)
    image.SetSpacing((1.0, 1.0, 1.5))
    return image


def _imported(scene, tmp_path, quality: dict | None = LOW, output=None):
    """A worker reply (labelmap on the reference grid, with its quality record) imported headless."""
    image = _labels()
    volume_path = tmp_path / "t1.nii.gz"
    sitk.WriteImage(sitk.Cast(image, sitk.sitkInt16), str(volume_path))
    volume = scene.GetFirstNodeByName("t1")
    if volume is None:
        volume = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "t1")
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(volume_path))
        assert storage.ReadData(volume)
    sitk.WriteImage(image, str(tmp_path / "label.nrrd"))
    reply = {"event": "result", "output": str(tmp_path / "label.nrrd"), "labels": "brats2018",
             "modalities": ["T1"], "volumes_ml": {"WT": 0.1}, "quality": quality}
    job = SegmentJob("1", {"T1": volume}, "T1", output, False, False, str(tmp_path))
    return SegmentationLogic(scene)._importResult(job, reply)


def _tags(segment) -> dict:
    out = {}
    for name in QUALITY_TAGS:
        value = vtk.reference("")
        if segment.GetTag(name, value):
            out[name] = str(value)
    return out


def _load_seg_nrrd(path: Path):
    """A `.seg.nrrd` loaded the way Slicer's Add Data loads it (the segmentation storage node)."""
    scene = slicer.vtkMRMLScene()
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "loaded")
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


def _save_seg_nrrd(node, path: Path) -> Path:
    storage = slicer.vtkMRMLSegmentationStorageNode()
    storage.SetFileName(str(path))
    assert storage.WriteData(node)
    return path


# ------------------------------------------------------------------------------- the fields


def test_the_record_round_trips_through_the_text_fields():
    assert quality_from_tags(quality_tags(LOW)) == _record(LOW)
    assert quality_from_tags(quality_tags(UNCALIBRATED)) == _record(UNCALIBRATED)
    assert quality_tags(LOW)["LCKD.WTDiceInterval"] == "0.450 0.700"
    assert quality_tags(None) == {} and quality_from_tags({}) is None
    # a '|' would end the tag in a .seg.nrrd header
    assert "|" not in quality_tags({**LOW, "reasons": ["a | b"]})["LCKD.QualityReasons"]


# ------------------------------------------------------------------------ the Slicer node


def test_an_imported_result_keeps_its_record_on_its_segments_in_its_table_and_attributes(tmp_path):
    scene = slicer.vtkMRMLScene()
    seg = _imported(scene, tmp_path)
    assert read_quality(seg) == _record(LOW)
    assert quality_text(read_quality(seg)) == LOW_LINE
    for spec in SEGMENTS:   # every tumour segment: any of them copied elsewhere still carries it
        assert _tags(seg.GetSegmentation().GetSegment(spec.key)) == quality_tags(LOW)
    assert seg.GetAttribute("LCKD.ExpectedWTDice") == "0.600" and seg.GetAttribute("LCKD.Quality") == LOW_LINE
    table = seg.GetNodeReference(TABLE_ROLE)
    column = table.GetTable().GetColumnByName(QUALITY_COLUMN)
    assert column is not None
    rows = {table.GetCellText(r, 1): column.GetValue(r) for r in range(table.GetNumberOfRows())}
    assert rows["WT"] == "expected Dice 0.60 (0.45-0.70), LOW CONFIDENCE: one scan only, tumour drawn over 20 % " \
                         "of the brain"
    assert rows["ET"] == "" and rows["NCR"] == ""


def test_a_rerun_replaces_the_record_and_one_without_a_record_leaves_none(tmp_path):
    scene = slicer.vtkMRMLScene()
    seg = _imported(scene, tmp_path)
    assert _imported(scene, tmp_path, UNCALIBRATED, output=seg) is seg
    assert read_quality(seg) == _record(UNCALIBRATED)
    assert quality_text(read_quality(seg)) == "Quality estimate: not calibrated for this model. Reasons: one scan only."
    _imported(scene, tmp_path, None, output=seg)   # an older worker sent no record
    assert read_quality(seg) is None and quality_text(read_quality(seg)) == ""


def test_the_record_survives_seg_nrrd_save_and_load(tmp_path):
    seg = _imported(slicer.vtkMRMLScene(), tmp_path)
    path = _save_seg_nrrd(seg, tmp_path / "result.seg.nrrd")
    header = slicerio.read_segmentation(str(path), skip_voxels=True)   # what any reader of the file sees
    for segment in header["segments"]:
        assert segment["tags"] == quality_tags(LOW)
    loaded = _load_seg_nrrd(path)
    assert read_quality(loaded) == _record(LOW)
    assert quality_text(read_quality(loaded)) == LOW_LINE


def test_the_record_and_its_table_survive_scene_save_and_load(tmp_path):
    scene = slicer.vtkMRMLScene()
    seg = _imported(scene, tmp_path)
    folder = tmp_path / "scene"
    folder.mkdir()
    scene.SetRootDirectory(str(folder))
    for node, name in ((seg, "result.seg.nrrd"), (seg.GetNodeReference(TABLE_ROLE), "volumes.tsv")):
        assert node.AddDefaultStorageNode()
        node.GetStorageNode().SetFileName(str(folder / name))
        assert node.GetStorageNode().WriteData(node)
    scene.SetURL(str(folder / "scene.mrml"))
    assert scene.Commit()

    loaded = slicer.vtkMRMLScene()
    loaded.SetURL(str(folder / "scene.mrml"))
    assert loaded.Connect()
    back = loaded.GetFirstNodeByName(seg.GetName())
    assert back is not None and back.GetSegmentation().GetNumberOfSegments() == 3
    assert read_quality(back) == _record(LOW)
    assert back.GetAttribute("LCKD.LowConfidence") == "1"
    table = back.GetNodeReference(TABLE_ROLE)
    assert table is not None
    wt = next(r for r in range(table.GetNumberOfRows()) if table.GetCellText(r, 1) == "WT")
    assert table.GetCellText(wt, table.GetColumnIndex(QUALITY_COLUMN)).startswith("expected Dice 0.60 (0.45-0.70), "
                                                                                   "LOW CONFIDENCE")


# ----------------------------------------------------------------------- the CLI's .seg.nrrd


def test_the_clis_seg_nrrd_carries_the_record_and_slicer_shows_its_line(tmp_path):
    from lckd.inference.resultfiles import write_labelmap, write_result

    path = write_labelmap(_labels(), tmp_path / "case.seg.nrrd", quality=LOW)
    for segment in slicerio.read_segmentation(str(path), skip_voxels=True)["segments"]:
        assert segment["tags"] == quality_tags(LOW)
    assert quality_text(read_quality(_load_seg_nrrd(path))) == LOW_LINE

    class Result:   # what write_result reads of a SegmentationResult (lckd segment, batch, the worker)
        labelmap, label_convention, probabilities, brain_mask, sources = _labels(), "brats2018", None, None, {}
        quality = UNCALIBRATED

    (written,) = write_result(Result(), [tmp_path / "run.seg.nrrd"])
    assert read_quality(_load_seg_nrrd(written)) == _record(UNCALIBRATED)
    # a file without a record (an older lckd) shows no line rather than a wrong one
    assert read_quality(_load_seg_nrrd(write_labelmap(_labels(), tmp_path / "old.seg.nrrd"))) is None


# ----------------------------------------------------------------------------- the panel




def test_the_panel_shows_the_line_of_the_selected_segmentation_read_back_from_the_node():
    show = method("showSelectedResult")
    source = ast.unparse(show)
    assert "read_quality" in calls(show) and "p.outputSegmentation" in source
    assert "self.ui.qualityLabel.text = panel.quality_text(record)" in source
    assert "setMRMLTableNode" in source
    # the selector's choice (any parameter change) and a finished run both show it
    assert "self.showSelectedResult" in calls(method("onParameterNodeModified"))
    assert "self.showSelectedResult" in calls(method("onJobDone"))
    # never the last job's reply
    for name in ("onJobDone", "onApply"):
        text = ast.unparse(method(name))
        assert "qualityLabel.text =" not in text and "reply.get('quality')" not in text
