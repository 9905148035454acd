"""Turning a result labelmap into the module's outputs: segmentation node and volumes table."""
from __future__ import annotations

from collections.abc import Mapping

import slicer
import vtk

from lckd.base.segments import SEGMENTS, region_title
from lckd.inference.record import QUALITY_TAGS, quality_from_tags, quality_tags

from .panel import quality_cell, quality_text

#: Rows of the volumes table, in this order (TC = NCR + ET, WT = TC + ED).
VOLUME_ROWS = tuple((key, region_title(key)) for key in ("NCR", "ED", "ET", "TC", "WT"))

#: Node reference role from the segmentation to its volumes table (re-runs reuse the table).
TABLE_ROLE = "LCKDVolumesTable"
#: Node reference role from the segmentation to the brain mask of raw-scan preprocessing: a
#: reference (not an ID in an attribute), so the scene remaps it when it is imported or loaded.
BRAIN_MASK_ROLE = "LCKDBrainMask"
VOLUME_COLUMN = "Volume (mL)"
#: Column of the volumes table with the quality estimate (on the whole-tumour row, the region it is about).
QUALITY_COLUMN = "Quality estimate"
#: Node attribute with the panel's quality line (console scripts; the record itself is QUALITY_TAGS).
QUALITY_LINE = "LCKD.Quality"


def ids_by_label_value(label_values: dict) -> list:
    """Segment IDs indexed by label value - 1, '' for unused values.

    This is the `updatedSegmentIDs` list `ImportLabelmapToSegmentationNode` wants: entry i
    receives the voxels of label i + 1 (BraTS 2018's 1, 2, 4 give [NCR, ED, '', ET]).
    Segment IDs are the class keys, as in the `.seg.nrrd` files the `lckd` CLI writes.
    """
    ids = [""] * max(label_values[s.key] for s in SEGMENTS)
    for spec in SEGMENTS:
        ids[label_values[spec.key] - 1] = spec.key
    return ids


class OutputSegmentationError(RuntimeError):
    """The result cannot be written into the chosen segmentation; it was left as it was."""


def snapshot_segmentation(segmentation_node):
    """What an import may change in an existing segmentation node (segments, source
    representation, conversion parameters such as the reference geometry, the geometry's
    reference volume, the volumes table, the LCKD.* attributes); returns a function that puts
    it all back and removes a volumes table the import made."""
    segmentation = segmentation_node.GetSegmentation()
    backup = slicer.vtkSegmentation()
    backup.DeepCopy(segmentation)
    roles = (segmentation_node.GetReferenceImageGeometryReferenceRole(), TABLE_ROLE)
    references = {role: segmentation_node.GetNodeReferenceID(role) for role in roles}
    attributes = {name: segmentation_node.GetAttribute(name) for name in segmentation_node.GetAttributeNames()
                  if name.startswith("LCKD.")}

    def restore() -> None:
        scene = segmentation_node.GetScene()
        table = segmentation_node.GetNodeReference(TABLE_ROLE)
        was_modifying = segmentation_node.StartModify()
        try:
            segmentation.DeepCopy(backup)
            for role, node_id in references.items():
                segmentation_node.SetNodeReferenceID(role, node_id)
            for name in segmentation_node.GetAttributeNames():
                if name.startswith("LCKD.") and name not in attributes:
                    segmentation_node.RemoveAttribute(name)
            for name, value in attributes.items():
                segmentation_node.SetAttribute(name, value)
        finally:
            segmentation_node.EndModify(was_modifying)
        if table is not None and table.GetID() != references[TABLE_ROLE] and scene is not None:
            scene.RemoveNode(table)

    return restore


def _source_representation(segmentation) -> str:
    return segmentation.GetSourceRepresentationName()


def fill_segmentation(segmentation_node, labelmap_node, label_values: dict, keep_other_segments: bool = False) -> None:
    """Put the three tumour segments from `labelmap_node` into `segmentation_node`.

    Earlier LCKD segments are always replaced (fixed segment IDs, so re-runs never
    duplicate); any other segment is removed unless `keep_other_segments`.
    `label_values` maps NCR/ED/ET to the labelmap's values (a `lckd.base.labels` convention).

    All or nothing: the segmentation is copied first and restored if anything fails, so the
    user's segments survive a failed import. A segmentation whose source representation is
    not a binary labelmap (made from models or closed surfaces) takes the result only when
    none of its own segments is kept (its source then becomes binary labelmap); keeping
    them would force converting the user's surfaces, so that is refused before any change.
    """
    segmentation = segmentation_node.GetSegmentation()
    labelmap_name = slicer.vtkSegmentationConverter.GetBinaryLabelmapRepresentationName()
    ours = {spec.key for spec in SEGMENTS}
    kept = [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())
            if keep_other_segments and segmentation.GetNthSegmentID(i) not in ours]
    if _source_representation(segmentation) != labelmap_name and kept:
        raise OutputSegmentationError(
            f"'{segmentation_node.GetName()}' stores its segments as "
            f"{_source_representation(segmentation).lower()}s, so the tumour segments cannot be added "
            "next to them without converting them; it was left unchanged. Choose a new output "
            "segmentation, or untick 'Keep other segments'.")
    backup = slicer.vtkSegmentation()
    backup.DeepCopy(segmentation)
    was_modifying = segmentation_node.StartModify()
    try:
        if keep_other_segments:
            for spec in SEGMENTS:
                if segmentation.GetSegment(spec.key) is not None:
                    segmentation.RemoveSegment(spec.key)
        else:
            segmentation.RemoveAllSegments()
        if not kept:   # nothing of the user's is left: the result's own representation leads
            segmentation.SetSourceRepresentationName(labelmap_name)
        for spec in SEGMENTS:
            segmentation.AddEmptySegment(spec.key, spec.name, spec.color)
            segment = segmentation.GetSegment(spec.key)
            segment.SetTag(segment.GetTerminologyEntryTagName(), spec.terminology)
            segment.SetNameAutoGenerated(False)
            segment.SetColorAutoGenerated(False)
        ids = vtk.vtkStringArray()
        for segment_id in ids_by_label_value(label_values):
            ids.InsertNextValue(segment_id)
        if not slicer.vtkSlicerSegmentationsModuleLogic.ImportLabelmapToSegmentationNode(
                labelmap_node, segmentation_node, ids):
            raise OutputSegmentationError("importing the result labelmap into the segmentation failed; "
                                          "the segmentation was left as it was")
    except Exception:
        segmentation.DeepCopy(backup)   # the user's segments come back, whatever failed
        raise
    finally:
        segmentation_node.EndModify(was_modifying)


def write_quality(segmentation_node, quality: Mapping | None) -> None:
    """Keep a run's quality record with its segmentation: as tags of each tumour segment (which
    `.seg.nrrd` files and scenes keep, and the CLI's `.seg.nrrd` files carry too) and as node
    attributes (`QUALITY_TAGS` and `QUALITY_LINE`) for console scripts. No record: none is left."""
    tags = quality_tags(quality)
    segmentation = segmentation_node.GetSegmentation()
    for spec in SEGMENTS:
        segment = segmentation.GetSegment(spec.key)
        if segment is None:
            continue
        for name in QUALITY_TAGS:
            segment.RemoveTag(name)
        for name, value in tags.items():
            segment.SetTag(name, value)
    for name in QUALITY_TAGS:
        segmentation_node.SetAttribute(name, tags.get(name, ""))
    segmentation_node.SetAttribute(QUALITY_LINE, quality_text(quality))


def read_quality(segmentation_node) -> dict | None:
    """The quality record kept with a segmentation (`write_quality`, or a `.seg.nrrd` that `lckd`
    wrote), read back from its tumour segments' tags; None for a segmentation without one."""
    if segmentation_node is None:
        return None
    segmentation = segmentation_node.GetSegmentation()
    for spec in SEGMENTS:
        segment = segmentation.GetSegment(spec.key)
        if segment is None:
            continue
        tags = {}
        for name in QUALITY_TAGS:
            value = vtk.reference("")
            if segment.GetTag(name, value):
                tags[name] = str(value)
        record = quality_from_tags(tags)
        if record is not None:
            return record
    return None


def update_volumes_table(scene, segmentation_node, volumes_ml: dict, modalities, model: str = "",
                         quality: Mapping | None = None):
    """Create or refresh the table of region volumes (mL) referenced by the segmentation; the
    whole-tumour row carries the run's quality estimate (`QUALITY_COLUMN`)."""
    table = segmentation_node.GetNodeReference(TABLE_ROLE)
    if table is None or not scene.IsNodePresent(table):
        table = scene.AddNewNodeByClass("vtkMRMLTableNode",
                                        scene.GenerateUniqueName(f"{segmentation_node.GetName()} volumes"))
        segmentation_node.SetNodeReferenceID(TABLE_ROLE, table.GetID())
    used = "+".join(modalities)
    columns = {"Region": vtk.vtkStringArray(), "Abbreviation": vtk.vtkStringArray(),
               VOLUME_COLUMN: vtk.vtkDoubleArray(), "Modalities": vtk.vtkStringArray(),
               QUALITY_COLUMN: vtk.vtkStringArray()}
    for name, array in columns.items():
        array.SetName(name)
    for key, name in VOLUME_ROWS:
        columns["Region"].InsertNextValue(name)
        columns["Abbreviation"].InsertNextValue(key)
        columns[VOLUME_COLUMN].InsertNextValue(float(volumes_ml.get(key, 0.0)))
        columns["Modalities"].InsertNextValue(used)
        columns[QUALITY_COLUMN].InsertNextValue(quality_cell(quality) if key == "WT" else "")
    was_modifying = table.StartModify()
    table.RemoveAllColumns()
    for array in columns.values():
        table.AddColumn(array)
    # Newer Slicer renamed the setter; either way the first row is data, not titles.
    set_header = getattr(table, "SetUseColumnTitleAsColumnHeader", None) or table.SetUseColumnNameAsColumnHeader
    set_header(True)
    table.SetAttribute("LCKD.Modalities", used)
    table.SetAttribute("LCKD.Model", model or "")
    table.EndModify(was_modifying)
    return table
