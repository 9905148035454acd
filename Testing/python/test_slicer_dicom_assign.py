"""Volumes loaded through Slicer's DICOM module are assigned from their DICOM headers before their
names (LCKDSegmentationLib/dicomassign.py). Real MRML scalar volume nodes (slicer-core) carry the
attribute Slicer's DICOM scalar volume plugin sets (`DICOM.instanceUIDs`: the SOPInstanceUIDs of the
loaded files, space separated); the database lookup is a plain function over real DICOM files
written by the phantom writer; the recognition is the core's own (`lckd.io.dicomstudy`)."""
from __future__ import annotations

from pathlib import Path

import pydicom
import pytest

from module_source import source_of

slicer = pytest.importorskip("slicer")

from lckd.io.dicomseries import find_series  # noqa: E402
from lckd.research.dicomphantom import write_dicom_study  # noqa: E402
from lckd.research.phantom import make_phantom  # noqa: E402
from LCKDSegmentationLib.dicomassign import (  # noqa: E402
    INSTANCE_UIDS_ATTRIBUTE,
    assign_volumes,
    dicom_file_lookup,
    header_assignments,
)
from LCKDSegmentationLib.selection import assign_loaded, assign_modalities  # noqa: E402


@pytest.fixture(scope="module")
def case():
    return make_phantom(3, (12, 24, 24))


def load_like_slicer(scene, folder: Path, order=None) -> tuple[dict, dict]:
    """A volume node per series of a study, named and tagged as Slicer's DICOM plugin does
    ('<number>: <description>', DICOM.instanceUIDs), and the database's lookup {SOPInstanceUID: file}.
    `order` lists series labels in the order they are loaded (default: the study's)."""
    series = {s.label: s for s in find_series(folder)}
    database, nodes = {}, {}
    for label in order or list(series):
        s = series[label]
        uids = []
        for f in s.files:
            uid = str(pydicom.dcmread(f, stop_before_pixels=True).SOPInstanceUID)
            database[uid] = str(f)
            uids.append(uid)
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", f"{s.number}: {s.description or 'Unnamed'}")
        node.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, " ".join(uids))
        nodes[label] = node
    return nodes, database


def _ids(picks: dict, nodes: dict) -> dict:
    names = {n.GetID(): label for label, n in nodes.items()}
    return {m: names[i] for m, i in picks.items()}


def test_headers_assign_what_names_cannot(tmp_path, case):
    """The 'unnamed' vendor: no series description at all, only physics, agent and acquisition order."""
    folder = write_dicom_study(tmp_path / "s", vendor="unnamed", case=case)
    scene = slicer.vtkMRMLScene()
    nodes, database = load_like_slicer(scene, folder)
    volumes = list(nodes.values())
    by_name = assign_modalities((n.GetID(), n.GetName()) for n in volumes)
    assert _ids(by_name, nodes) == {"T1": "6"}              # names tell nothing but a reformat's 't1_mprage'
    picks = assign_volumes(volumes, database.get)
    assert _ids(picks, nodes) == {"T1": "2", "T1ce": "5", "T2": "3", "FLAIR": "4"}
    _, lines = header_assignments(volumes, database.get)
    assert "T1ce: series 5: T1-weighted physics (TR 600 ms, TE 14 ms)" in lines[1] and "acquisition order" in lines[1]


def test_headers_set_aside_a_reformat_the_names_would_take(tmp_path, case):
    """A T1 reformat loaded before the acquisition: its name says T1, its header DERIVED."""
    folder = write_dicom_study(tmp_path / "s", vendor="siemens", case=case)
    scene = slicer.vtkMRMLScene()
    nodes, database = load_like_slicer(scene, folder, order=["6", "2", "3", "4", "5", "7"])
    volumes = list(nodes.values())
    by_name = assign_modalities((n.GetID(), n.GetName()) for n in volumes)
    assert _ids(by_name, nodes)["T1"] == "6"                                        # the reformat
    assert _ids(assign_volumes(volumes, database.get), nodes) == {"T1": "2", "T1ce": "5", "T2": "3", "FLAIR": "4"}


def test_names_fill_what_the_headers_leave_open(tmp_path, case):
    """DICOM T1 and T2; a FLAIR from a NIfTI file (no attribute); a DICOM volume whose files the database
    no longer has (assigned by name); a DICOM DWI never taken by its name."""
    folder = write_dicom_study(tmp_path / "s", vendor="ge", case=case, modalities=("T1", "T2", "T1ce"))
    scene = slicer.vtkMRMLScene()
    nodes, database = load_like_slicer(scene, folder, order=["2", "3", "4", "5"])   # 4: the T1ce, 5: a reformat
    flair = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "BraTS-GLI-00001-000-t2f")
    gone = nodes["4"]
    for uid in gone.GetAttribute(INSTANCE_UIDS_ATTRIBUTE).split():
        del database[uid]                                                         # removed from the database
    volumes = [*nodes.values(), flair]
    picks = assign_volumes(volumes, database.get)
    assert picks["FLAIR"] == flair.GetID()
    assert picks["T1ce"] == gone.GetID()                                           # by its name 'Ax 3D BRAVO +C'
    assert _ids({m: picks[m] for m in ("T1", "T2")}, nodes) == {"T1": "2", "T2": "3"}
    assert nodes["5"].GetID() not in picks.values()          # the reformat: headers read, set aside, not named in


def test_loaded_volumes_use_the_header_picks_and_no_database_means_names():
    scene = slicer.vtkMRMLScene()
    t1 = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "6: t1_mprage_sag_p2_KM_MPR_tra")
    t1.SetAttribute(INSTANCE_UIDS_ATTRIBUTE, "1.2.3 1.2.4")
    assert dicom_file_lookup() is None                   # slicer-core has no DICOM database: names only
    assert assign_volumes([t1], dicom_file_lookup()) == {"T1": t1.GetID()}
    assert assign_volumes([t1], {}.get) == {"T1": t1.GetID()}                     # UIDs the database lacks
    changes = assign_loaded({"T1": None, "T1ce": None}, {}, [(t1.GetID(), t1.GetName())], picks={"T1ce": "x"})
    assert changes == {"T1ce": "x"}


def test_the_widget_assigns_through_the_headers_first():
    body = source_of("autoAssign", "LCKDSegmentationWidget")
    assert "assign_volumes(volumes, dicom_file_lookup())" in body and "assign_modalities(" not in body
    assert "picks=assign_volumes(nodes, dicom_file_lookup())" in source_of("assignLoaded", "LCKDSegmentationWidget")
