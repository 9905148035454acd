"""Writing the result into an existing segmentation never loses the user's segments
(LCKDSegmentationLib/output.py), on slicer-core's real MRML classes and conversion rules.

A segmentation made from models or closed surfaces has "Closed surface" as its source
representation; importing a labelmap into it fails, and the old code had removed the
user's segments before that.
"""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")

from lckd.base.labels import CONVENTIONS  # noqa: E402
from lckd.base.segments import SEGMENTS  # noqa: E402
from LCKDSegmentationLib import output  # noqa: E402

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)

LABELS = CONVENTIONS["brats2018"]


@pytest.fixture(scope="module", autouse=True)
def conversion_rules():
    # Real Slicer's Segmentations module registers these at start-up; slicer-core does not.
    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())


@pytest.fixture
def scene():
    return slicer.vtkMRMLScene()


def _labelmap(scene, with_image: bool = True):
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", "result")
    if with_image:
        arr = np.zeros((10, 12, 14), np.uint8)
        arr[2:5, 3:6, 4:8] = LABELS["NCR"]
        arr[5:7, 3:6, 4:8] = LABELS["ED"]
        arr[7:8, 3:6, 4:8] = LABELS["ET"]
        slicer.util.updateVolumeFromArray(node, arr)
    return node


def _surface_segmentation(scene):
    """A user's segmentation built from a model: closed-surface source, one segment."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user segmentation")
    node.GetSegmentation().SetSourceRepresentationName(
        slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(8)
    sphere.Update()
    node.AddSegmentFromClosedSurfaceRepresentation(sphere.GetOutput(), "ventricle", [0.2, 0.3, 0.9])
    return node


def _segment_names(node) -> list[str]:
    seg = node.GetSegmentation()
    return [seg.GetNthSegment(i).GetName() for i in range(seg.GetNumberOfSegments())]


def test_keeping_segments_of_a_closed_surface_segmentation_is_refused_before_any_change(scene):
    node = _surface_segmentation(scene)
    with pytest.raises(output.OutputSegmentationError, match="closed surfaces.*left unchanged"):
        output.fill_segmentation(node, _labelmap(scene), LABELS, keep_other_segments=True)
    assert _segment_names(node) == ["ventricle"]
    assert node.GetSegmentation().GetSourceRepresentationName() == "Closed surface"


def test_replacing_a_closed_surface_segmentation_works(scene):
    """Nothing of the user's is kept: the result's binary labelmap becomes the source."""
    node = _surface_segmentation(scene)
    output.fill_segmentation(node, _labelmap(scene), LABELS, keep_other_segments=False)
    assert [node.GetSegmentation().GetNthSegmentID(i) for i in range(3)] == [s.key for s in SEGMENTS]
    assert node.GetSegmentation().GetSourceRepresentationName() == "Binary labelmap"
    for spec in SEGMENTS:   # every segment received voxels
        lm = node.GetSegmentation().GetSegment(spec.key).GetRepresentation("Binary labelmap")
        assert lm is not None and lm.GetScalarRange()[1] > 0


@pytest.mark.parametrize("keep", [False, True])
def test_a_failed_import_restores_the_users_segments(scene, keep):
    """Any failure after the segments were touched rolls the segmentation back."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "user segmentation")
    node.GetSegmentation().AddEmptySegment("tumour_manual", "my tumour outline", [1.0, 0.0, 1.0])
    node.GetSegmentation().AddEmptySegment("ET", "my old ET", [0.0, 1.0, 1.0])   # an earlier LCKD run's ID
    broken = _labelmap(scene, with_image=False)   # no voxels: the import returns false
    with pytest.raises(output.OutputSegmentationError, match="left as it was"):
        output.fill_segmentation(node, broken, LABELS, keep_other_segments=keep)
    assert _segment_names(node) == ["my tumour outline", "my old ET"]
