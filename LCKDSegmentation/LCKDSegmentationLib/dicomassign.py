"""Assigning volumes loaded through Slicer's DICOM module from their DICOM headers.

Slicer's DICOM scalar volume plugin records, on every volume node it loads, the
SOPInstanceUIDs of the files it came from (node attribute `DICOM.instanceUIDs`, space
separated), and its DICOM database gives each instance's file (`fileForInstance`). The
headers of those files are judged by the same recogniser as `lckd study`
(`lckd.io.dicomstudy.recognise_series`: vendor names, contrast agent, physics, acquisition
order), so a GE "Ax T1 FLAIR" is a T1 and not a FLAIR. Volumes without the attribute, or
whose files the database no longer has, are assigned by their names as before
(`selection.assign_modalities`).

No Slicer import at module level: the file lookup is a plain function (`dicom_file_lookup`
finds Slicer's own), so the rules are testable with slicer-core's MRML nodes and DICOM files.
"""
from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Callable, Optional

from lckd.base.modalities import MODALITIES

from .selection import assign_modalities

#: The node attribute Slicer's DICOM plugins set: the SOPInstanceUIDs of the loaded files.
INSTANCE_UIDS_ATTRIBUTE = "DICOM.instanceUIDs"

FileLookup = Callable[[str], Optional[str]]


def dicom_file_lookup() -> FileLookup | None:
    """Slicer's DICOM database lookup (SOPInstanceUID -> file), or None when there is no open database."""
    import slicer

    database = getattr(slicer, "dicomDatabase", None)
    if database is None or not getattr(database, "isOpen", False):
        return None
    return database.fileForInstance


def node_dicom_files(node: Any, lookup: FileLookup | None) -> list[str]:
    """The files behind a volume node loaded from DICOM ([] when it was not, or they are gone)."""
    if lookup is None:
        return []
    uids = (node.GetAttribute(INSTANCE_UIDS_ATTRIBUTE) or "").split()
    files = []
    for uid in uids:
        if uid == "Unknown":      # what the plugin records for an instance it could not find
            continue
        try:
            found = lookup(uid)
        except Exception:   # noqa: BLE001 - a database error is a volume assigned by its name
            found = None
        if found:
            files.append(str(found))
    return files


def header_assignments(nodes: Iterable[Any], lookup: FileLookup | None) -> tuple[dict, list[str]]:
    """({modality: node ID} recognised from the DICOM headers behind `nodes`, one line per recognised
    series with its reason). Empty when no node came from DICOM or nothing was recognised."""
    from lckd.base.errors import InputError
    from lckd.io.dicomseries import series_from_files
    from lckd.io.dicomstudy import recognise_series

    owner: dict[str, str] = {}
    for node in nodes:
        for path in node_dicom_files(node, lookup):
            owner.setdefault(path, node.GetID())
    if not owner:
        return {}, []
    try:
        study = recognise_series(series_from_files(owner))
    except InputError:
        return {}, []
    picks = {m: owner[str(s.files[0])] for m, s in study.chosen.items()}
    lines = [f"{m}: {s.name()}: {study.roles[s.label].reason}" for m, s in study.chosen.items()]
    return picks, lines


def assign_volumes(nodes: Iterable[Any], lookup: FileLookup | None) -> dict:
    """{modality: node ID} for these volume nodes: first from the DICOM headers of those loaded from
    DICOM, then, for the modalities still open, from the names of the others. A volume whose headers
    were read is decided by them alone: one they set aside (a reformat, DWI) is not taken by its name."""
    nodes = list(nodes)
    picks, _ = header_assignments(nodes, lookup)
    judged = {n.GetID() for n in nodes if node_dicom_files(n, lookup)}
    by_name = assign_modalities((n.GetID(), n.GetName()) for n in nodes if n.GetID() not in judged)
    for modality, node_id in by_name.items():
        picks.setdefault(modality, node_id)
    return {m: picks[m] for m in MODALITIES if m in picks}
