"""Volume nodes to and from files for the worker, with MRML's own readers and writers.

Going through `vtkMRMLVolumeArchetypeStorageNode` keeps the RAS (Slicer) <-> LPS (file)
conversion and the full IJK-to-RAS direction in MRML's hands instead of ours.
"""
from __future__ import annotations

from pathlib import Path

import slicer
import vtk


def world_ijk_to_ras(node) -> vtk.vtkMatrix4x4:
    """The node's IJK-to-RAS matrix with its parent (linear) transforms applied."""
    ijk_to_ras = vtk.vtkMatrix4x4()
    node.GetIJKToRASMatrix(ijk_to_ras)
    transform = node.GetParentTransformNode()
    if transform is not None:
        to_world = vtk.vtkMatrix4x4()
        transform.GetMatrixTransformToWorld(to_world)  # validate_selection refused non-linear ones
        vtk.vtkMatrix4x4.Multiply4x4(to_world, ijk_to_ras, ijk_to_ras)
    return ijk_to_ras


def write_volume(node, path: str | Path) -> Path:
    """Write a scalar volume where it sits in the world (uncompressed NRRD is fastest)."""
    # A scene-less copy sharing the voxels carries the world geometry, so the user's node is untouched.
    copy = slicer.vtkMRMLScalarVolumeNode()
    copy.SetAndObserveImageData(node.GetImageData())
    copy.SetIJKToRASMatrix(world_ijk_to_ras(node))
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    storage.UseCompressionOff()
    if not storage.WriteData(copy):
        raise OSError(f"could not write volume '{node.GetName()}' to '{path}'")
    return Path(path)


def read_labelmap(path: str | Path):
    """Read a labelmap file into a new labelmap node that is not added to any scene."""
    node = slicer.vtkMRMLLabelMapVolumeNode()
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    if not storage.ReadData(node):
        raise OSError(f"could not read the segmentation result '{path}'")
    return node
