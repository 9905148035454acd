"""Results imported into the scene, headless on real MRML classes from `slicer-core`, without
a worker: `SegmentationLogic._importResult` gets a reply as the worker sends it (a labelmap
file on the reference grid, and a brain mask for raw scans).

Issue 29: an existing segmentation's reference geometry and geometry volume were overwritten
before a refusal and never put back (defect 4); the brain mask was named by an ID in an
attribute, which a scene import does not remap (defect 10).
"""
from __future__ import annotations

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
sitk = pytest.importorskip("SimpleITK")

from lckd.base.segments import SEGMENTS  # noqa: E402
from LCKDSegmentationLib.logic import SegmentationLogic, SegmentJob  # noqa: E402
from LCKDSegmentationLib.output import BRAIN_MASK_ROLE, OutputSegmentationError  # noqa: E402

# slicer_pythons: also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)
pytestmark = [pytest.mark.usefixtures("segmentation_converters"), pytest.mark.slicer_pythons]


def _volume(scene, name: str, spacing: tuple, tmp_path, values=None):
    """A scalar volume read from a NIfTI file, as Slicer loads one."""
    array = np.zeros((12, 16, 16), np.int16) if values is None else values
    image = sitk.GetImageFromArray(array)
    image.SetSpacing(spacing)
    path = tmp_path / f"{name}.nii.gz"
    sitk.WriteImage(image, str(path))
    node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node, path


def _reply(tmp_path, reference_path, mask: bool = False) -> dict:
    """What the worker sends back: labels (BraTS 2018 values) and maybe a brain mask, on the reference grid."""
    reference = sitk.ReadImage(str(reference_path))
    labels = np.zeros(sitk.GetArrayFromImage(reference).shape, np.uint8)
    labels[4:8, 4:8, 4:8] = 2
    labels[5:7, 5:7, 5:7] = 4
    image = sitk.GetImageFromArray(labels)
    image.CopyInformation(reference)
    sitk.WriteImage(image, str(tmp_path / "label.nrrd"))
    reply = {"event": "result", "output": str(tmp_path / "label.nrrd"), "labels": "brats2018",
             "modalities": ["T1"], "volumes_ml": {"WT": 1.0}, "quality": {}}
    if mask:
        brain = sitk.GetImageFromArray((labels >= 0).astype(np.uint8))
        brain.CopyInformation(reference)
        sitk.WriteImage(brain, str(tmp_path / "brainmask.nrrd"))
        reply["brain_mask"] = str(tmp_path / "brainmask.nrrd")
    return reply


def _job(volume, output=None, keep: bool = False, tmp_path=None) -> SegmentJob:
    return SegmentJob("1", {"T1": volume}, "T1", output, keep, False, str(tmp_path))


def _geometry(node) -> tuple:
    segmentation = node.GetSegmentation()
    name = slicer.vtkSegmentationConverter.GetReferenceImageGeometryParameterName()
    return (segmentation.GetConversionParameter(name),
            node.GetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole()))


def _surface_segmentation(scene, geometry_volume):
    """A user's segmentation stored as closed surfaces, with its own geometry volume."""
    node = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "my surfaces")
    node.SetReferenceImageGeometryParameterFromVolumeNode(geometry_volume)
    node.SetNodeReferenceID(node.GetReferenceImageGeometryReferenceRole(), geometry_volume.GetID())
    segmentation = node.GetSegmentation()
    segmentation.SetSourceRepresentationName(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName())
    sphere = vtk.vtkSphereSource()
    sphere.SetRadius(5.0)
    sphere.Update()
    segment = slicer.vtkSegment()
    segment.SetName("my lesion")
    segment.AddRepresentation(slicer.vtkSegmentationConverter.GetClosedSurfaceRepresentationName(),
                              sphere.GetOutput())
    segmentation.AddSegment(segment, "mine")
    return node


def test_a_refused_import_leaves_the_reference_geometry_and_its_volume_as_they_were(tmp_path):
    scene = slicer.vtkMRMLScene()
    t1, t1_path = _volume(scene, "t1", (1.0, 1.0, 1.0), tmp_path)
    other, _ = _volume(scene, "other grid", (0.5, 0.5, 2.0), tmp_path)
    seg = _surface_segmentation(scene, other)
    before = _geometry(seg)
    assert before[1] == other.GetID() and before[0]
    logic = SegmentationLogic(scene)
    with pytest.raises(OutputSegmentationError, match="left unchanged"):
        logic._importResult(_job(t1, seg, keep=True, tmp_path=tmp_path), _reply(tmp_path, t1_path))
    assert _geometry(seg) == before                              # what "left unchanged" promises
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == ["mine"]
    assert segmentation.GetSourceRepresentationName() == "Closed surface"


def test_a_failure_after_the_segments_were_written_restores_the_existing_segmentation(tmp_path, monkeypatch):
    scene = slicer.vtkMRMLScene()
    t1, t1_path = _volume(scene, "t1", (1.0, 1.0, 1.0), tmp_path)
    other, _ = _volume(scene, "other grid", (0.5, 0.5, 2.0), tmp_path)
    seg = scene.AddNewNodeByClass("vtkMRMLSegmentationNode", "mine")
    seg.SetReferenceImageGeometryParameterFromVolumeNode(other)
    seg.SetNodeReferenceID(seg.GetReferenceImageGeometryReferenceRole(), other.GetID())
    seg.GetSegmentation().AddEmptySegment("mine", "my annotation", (0.2, 0.2, 1.0))
    before, nodes = _geometry(seg), scene.GetNumberOfNodes()
    reply = _reply(tmp_path, t1_path, mask=True)
    reply["brain_mask"] = str(tmp_path / "no-such-mask.nrrd")      # fails after the segments were written
    with pytest.raises(OSError, match="could not read the segmentation result"):
        SegmentationLogic(scene)._importResult(_job(t1, seg, tmp_path=tmp_path), reply)
    assert _geometry(seg) == before
    assert seg.GetSegmentation().GetNumberOfSegments() == 1 and seg.GetSegmentation().GetSegment("mine")
    assert not scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems()   # the table it made is gone
    assert seg.GetAttribute("LCKD.Modalities") is None
    assert scene.GetNumberOfNodes() - nodes <= 1   # at most the display node the segmentation lacked


def test_the_brain_mask_is_a_node_reference_that_survives_a_scene_import(tmp_path):
    scene = slicer.vtkMRMLScene()
    t1, t1_path = _volume(scene, "AX FLAIR raw", (1.0, 1.0, 1.0), tmp_path)
    seg = SegmentationLogic(scene)._importResult(_job(t1, tmp_path=tmp_path), _reply(tmp_path, t1_path, mask=True))
    mask = seg.GetNodeReference(BRAIN_MASK_ROLE)
    assert mask is not None and mask.GetName() == "AX FLAIR raw brain mask" and mask.IsA("vtkMRMLLabelMapVolumeNode")
    assert seg.GetAttribute("LCKD.BrainMask") is None
    assert [seg.GetSegmentation().GetNthSegmentID(i) for i in range(3)] == [s.key for s in SEGMENTS]

    # import the scene into one whose node IDs are taken: MRML renames the imported nodes' IDs
    # and remaps references to them (an ID kept in an attribute would point at the wrong node)
    scene.SetSaveToXMLString(1)
    scene.Commit()
    xml = scene.GetSceneXMLString()
    target = slicer.vtkMRMLScene()
    for name in ("unrelated volume", "another volume", "a third"):
        target.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode", name)
        target.AddNewNodeByClass("vtkMRMLScalarVolumeNode", name)
        target.AddNewNodeByClass("vtkMRMLSegmentationNode", name)
    target.SetLoadFromXMLString(1)
    target.SetSceneXMLString(xml)
    target.Import()
    imported = [n for n in _nodes(target, "vtkMRMLSegmentationNode") if n.GetName() == seg.GetName()]
    assert len(imported) == 1
    assert imported[0].GetID() != seg.GetID() or mask.GetID() != imported[0].GetNodeReferenceID(BRAIN_MASK_ROLE)
    back = imported[0].GetNodeReference(BRAIN_MASK_ROLE)
    assert back is not None and back.GetName() == "AX FLAIR raw brain mask"


def test_a_run_without_a_brain_mask_drops_the_reference_of_an_earlier_one(tmp_path):
    scene = slicer.vtkMRMLScene()
    t1, t1_path = _volume(scene, "t1", (1.0, 1.0, 1.0), tmp_path)
    logic = SegmentationLogic(scene)
    seg = logic._importResult(_job(t1, tmp_path=tmp_path), _reply(tmp_path, t1_path, mask=True))
    assert seg.GetNodeReference(BRAIN_MASK_ROLE) is not None
    assert logic._importResult(_job(t1, seg, tmp_path=tmp_path), _reply(tmp_path, t1_path)) is seg
    assert seg.GetNodeReference(BRAIN_MASK_ROLE) is None


def _nodes(scene, cls: str) -> list:
    collection = scene.GetNodesByClass(cls)
    return [collection.GetItemAsObject(i) for i in range(collection.GetNumberOfItems())]
