"""Slicer module Logic, headless, on real MRML classes from `slicer-core`.

Volume nodes come from a phantom case written to NIfTI with an oblique direction and
anisotropic spacing and read back the way Slicer loads files. The Logic runs the warm
worker with the bundled phantom model; its result is compared voxel for voxel with what the
`lckd segment` CLI writes for the same files.
"""
from __future__ import annotations

import csv
import json
import math
import os
import signal
import time
from pathlib import Path

import numpy as np
import pytest

slicer = pytest.importorskip("slicer")
vtk = pytest.importorskip("vtk")
sitk = pytest.importorskip("SimpleITK")

from conftest import TEST_MODEL as MODEL  # noqa: E402
from lckd.base.errors import InputError  # noqa: E402
from lckd.base.hashing import sha256_file  # noqa: E402
from lckd.base.labels import CONVENTIONS  # noqa: E402
from lckd.base.metrics import mask_dice  # noqa: E402
from lckd.base.segments import SEGMENTS  # noqa: E402
from lckd.model.registry import resolve_model  # noqa: E402
from LCKDSegmentationLib import volumeio  # noqa: E402
from LCKDSegmentationLib.logic import SegmentationCancelled, SegmentationFailed, SegmentationLogic  # noqa: E402
from LCKDSegmentationLib.output import BRAIN_MASK_ROLE, TABLE_ROLE, VOLUME_COLUMN  # noqa: E402
from LCKDSegmentationLib.selection import DuplicateVolumeError, LabelmapInputError, NoInputError, SelectionError  # noqa: E402

#: Realistic series names: also what the GUI auto-assigns from.
NAMES = {"T1": "T1 MPRAGE pre", "T1ce": "AX T1 POST GD", "T2": "t2_tse_tra", "FLAIR": "Sag 3D FLAIR"}


def _oblique_direction() -> tuple:
    """Rz(25 deg) @ Rx(10 deg), SimpleITK row-major order: a non-identity, non-axis-aligned frame."""
    a, b = math.radians(25), math.radians(10)
    rz = np.array([[math.cos(a), -math.sin(a), 0], [math.sin(a), math.cos(a), 0], [0, 0, 1]])
    rx = np.array([[1, 0, 0], [0, math.cos(b), -math.sin(b)], [0, math.sin(b), math.cos(b)]])
    return tuple((rz @ rx).ravel())


@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    from lckd.research.phantom import make_phantom

    folder = tmp_path_factory.mktemp("slicer-case")
    phantom = make_phantom(5, shape=(64, 80, 80), spacing=(1.2, 0.9, 2.0),
                           direction=_oblique_direction(), origin=(-40.0, 25.0, -60.0))
    images, _ = phantom.to_sitk()
    files = {}
    for mod, img in images.items():
        files[mod] = folder / f"{mod}.nii.gz"
        sitk.WriteImage(img, str(files[mod]))
    return files


@pytest.fixture(scope="module", autouse=True)
def conversion_rules(segmentation_converters):
    """Real Slicer registers the conversion rules at start-up; slicer-core does not (conftest)."""


@pytest.fixture(scope="module")
def logic():
    lg = SegmentationLogic()
    lg.startWorker(device="cpu", model=MODEL)
    yield lg
    lg.shutdown()


@pytest.fixture
def scene(logic):
    sc = slicer.vtkMRMLScene()
    logic.setScene(sc)
    return sc


def load_volume(scene, path: Path, name: str, labelmap: bool = False):
    """Read a file into a new volume node, as Slicer's loadVolume does."""
    node = scene.AddNewNodeByClass("vtkMRMLLabelMapVolumeNode" if labelmap else "vtkMRMLScalarVolumeNode", name)
    storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
    storage.SetFileName(str(path))
    assert storage.ReadData(node)
    return node


@pytest.fixture
def volumes(scene, case_files):
    return {m: load_volume(scene, p, NAMES[m]) for m, p in case_files.items()}


def scene_state(scene) -> list:
    """Everything a refused or cancelled run must leave as it was."""
    state = []
    for i in range(scene.GetNumberOfNodes()):
        node = scene.GetNthNode(i)
        extra = None
        if node.IsA("vtkMRMLSegmentationNode"):
            seg = node.GetSegmentation()
            extra = [seg.GetNthSegmentID(k) for k in range(seg.GetNumberOfSegments())]
        state.append((node.GetID(), node.GetClassName(), node.GetName(), extra))
    return state


def exported_labels(seg_node, reference_node) -> np.ndarray:
    """The segmentation as BraTS 2018 labels on the reference grid (export numbers segments 1..n)."""
    label_node = slicer.vtkMRMLLabelMapVolumeNode()
    seg_node.GetScene().AddNode(label_node)
    ids = vtk.vtkStringArray()
    for spec in SEGMENTS:
        ids.InsertNextValue(spec.key)
    assert slicer.vtkSlicerSegmentationsModuleLogic.ExportSegmentsToLabelmapNode(seg_node, ids, label_node,
                                                                                 reference_node)
    order = np.array([0] + [CONVENTIONS["brats2018"][s.key] for s in SEGMENTS], dtype=np.uint8)
    arr = order[slicer.util.arrayFromVolume(label_node)]
    m1, m2 = vtk.vtkMatrix4x4(), vtk.vtkMatrix4x4()
    label_node.GetIJKToRASMatrix(m1)
    reference_node.GetIJKToRASMatrix(m2)
    np.testing.assert_allclose(slicer.util.arrayFromVTKMatrix(m1), slicer.util.arrayFromVTKMatrix(m2), atol=1e-6)
    seg_node.GetScene().RemoveNode(label_node)
    return arr


def cli_labels(files: dict, mods, out: Path, *extra: str) -> np.ndarray:
    from lckd.frontends.cli import main

    argv = ["segment", "-o", str(out), "--device", "cpu", "--model", MODEL, "-q", *extra]
    for m in mods:
        argv += ["--" + m.lower(), str(files[m])]
    assert main(argv) == 0
    return sitk.GetArrayFromImage(sitk.ReadImage(str(out)))


@pytest.mark.slicer_pythons
@pytest.mark.parametrize("mods", [("T1ce", "FLAIR"), ("T2",)], ids=["T1ce+FLAIR", "T2"])
def test_segment_matches_cli_voxel_for_voxel(logic, scene, volumes, case_files, tmp_path, mods):
    chosen = {m: volumes[m] for m in mods}
    seg = logic.segment(chosen, device="cpu", model=MODEL)
    reference = chosen[mods[0]]  # T1ce, else T2: the default reference order

    # three named, coloured, coded segments
    segmentation = seg.GetSegmentation()
    assert [segmentation.GetNthSegmentID(i) for i in range(segmentation.GetNumberOfSegments())] == \
        [s.key for s in SEGMENTS]
    for spec in SEGMENTS:
        segment = segmentation.GetSegment(spec.key)
        assert segment.GetName() == spec.name
        np.testing.assert_allclose(segment.GetColor(), spec.color, atol=1e-6)
        terminology = vtk.reference("")
        assert segment.GetTag(segment.GetTerminologyEntryTagName(), terminology)
        assert str(terminology) == spec.terminology
        assert segment.GetLabelValue() == CONVENTIONS["brats2018"][spec.key]

    # voxel for voxel what the CLI writes, on the reference volume's grid
    ours = exported_labels(seg, reference)
    theirs = cli_labels(case_files, mods, tmp_path / "cli.nii.gz")
    assert ours.shape == theirs.shape == slicer.util.arrayFromVolume(reference).shape
    assert np.array_equal(ours, theirs)

    # volumes table: five regions in mL, and the modalities used
    table = seg.GetNodeReference(TABLE_ROLE)
    assert table is not None and table.GetNumberOfRows() == 5
    voxel_ml = float(np.prod(reference.GetSpacing())) / 1000.0
    expected = {"NCR": (theirs == 1).sum(), "ED": (theirs == 2).sum(), "ET": (theirs == 4).sum()}
    expected.update(TC=expected["NCR"] + expected["ET"], WT=(theirs > 0).sum())
    rows = {table.GetCellText(r, 1): float(table.GetCellText(r, 2)) for r in range(5)}
    for key, count in expected.items():
        assert rows[key] == pytest.approx(count * voxel_ml, rel=1e-4, abs=1e-6)
    assert table.GetCellText(0, 3) == "+".join(mods)
    assert table.GetColumnName(2) == VOLUME_COLUMN
    assert seg.GetAttribute("LCKD.Modalities") == "+".join(mods)


@pytest.mark.slicer_pythons
def test_one_request_gives_the_same_voxels_through_every_entry_point(logic, scene, volumes, case_files, tmp_path):
    """One request (non-default options, so each entry point must carry them) through the CLI,
    `lckd batch`, the worker protocol, the Slicer Logic and `Segmenter` (a `SegmentOptions`
    and the old keywords): the same labels, voxel for voxel, and the same recorded options."""
    from lckd.frontends.cli import main
    from lckd.inference import Segmenter, SegmentOptions

    mods = ("T1ce", "FLAIR")
    request = SegmentOptions(mirrors=2, postprocess=False)
    flags = ("--mirrors", "2", "--no-postprocess")
    cli = cli_labels(case_files, mods, tmp_path / "cli.nii.gz", *flags, "--json")
    results = {}

    case = tmp_path / "in" / "CASE-000"
    case.mkdir(parents=True)
    for m, suffix in (("T1ce", "t1c"), ("FLAIR", "t2f")):
        (case / f"CASE-000-{suffix}.nii.gz").write_bytes(case_files[m].read_bytes())
    assert main(["batch", str(tmp_path / "in"), str(tmp_path / "out"), "--device", "cpu", "--model", MODEL, "-q",
                 *flags]) == 0
    results["batch"] = sitk.GetArrayFromImage(sitk.ReadImage(str(tmp_path / "out" / "CASE-000.nii.gz")))

    worker = logic.startWorker(device="cpu", model=MODEL)
    reply = worker.request("segment", timeout=300, inputs={m: str(case_files[m]) for m in mods},
                           options={"output": str(tmp_path / "worker.nii.gz"), **request.to_request()})
    results["worker"] = sitk.GetArrayFromImage(sitk.ReadImage(reply["output"]))

    seg = logic.segment({m: volumes[m] for m in mods}, device="cpu", model=MODEL, mirrors=2, postprocess=False,
                        show3D=False)
    results["Slicer logic"] = exported_labels(seg, volumes["T1ce"])

    segmenter = Segmenter.load(MODEL, device="cpu")
    inputs = {m: case_files[m] for m in mods}
    results["Segmenter"] = sitk.GetArrayFromImage(segmenter.segment(inputs, request).labelmap)
    results["Segmenter keywords"] = sitk.GetArrayFromImage(
        segmenter.segment(inputs, mirrors=2, postprocess=False).labelmap)

    plain = sitk.GetArrayFromImage(segmenter.segment(inputs).labelmap)
    assert not np.array_equal(plain, cli)   # else this case could not tell whether the options arrived
    for entry, labels in results.items():
        assert np.array_equal(labels, cli), entry
    recorded = [json.loads((tmp_path / "cli.json").read_text())["options"],
                json.loads((tmp_path / "out" / "CASE-000.json").read_text())["options"]]
    from lckd.inference.record import run_options

    expected = {k: v for k, v in run_options(segmenter.card, request, "cpu", None).items()
                if k not in ("device", "threads")}
    for options in recorded:
        assert {k: options[k] for k in expected} == expected
    assert expected["mirrors"] == 2 and expected["postprocess"] is None and expected["labels"] == "brats2018"


def test_mirrored_averaging_reaches_the_core_and_bad_values_change_nothing(logic, scene, volumes, case_files,
                                                                           tmp_path):
    mods = ("T1ce", "FLAIR")
    plain = cli_labels(case_files, mods, tmp_path / "plain.nii.gz")
    mirrored = cli_labels(case_files, mods, tmp_path / "mirrored.nii.gz", "--mirrors", "2")
    assert not np.array_equal(plain, mirrored)   # else this case could not tell whether it was applied
    seg = logic.segment({m: volumes[m] for m in mods}, device="cpu", model=MODEL, mirrors=2, show3D=False)
    assert np.array_equal(exported_labels(seg, volumes["T1ce"]), mirrored)
    before = scene_state(scene)
    for bad in (0, 3):
        with pytest.raises(InputError, match="--mirrors"):
            logic.segment({"T2": volumes["T2"]}, device="cpu", model=MODEL, mirrors=bad)
    assert scene_state(scene) == before


def test_running_twice_replaces_segments_and_keeps_others_only_if_asked(logic, scene, volumes):
    chosen = {"FLAIR": volumes["FLAIR"]}
    seg = logic.segment(chosen, device="cpu", model=MODEL, show3D=False)
    before = scene_state(scene)
    again = logic.segment(chosen, outputSegmentation=seg, device="cpu", model=MODEL, show3D=False)
    assert again is seg
    assert scene_state(scene) == before  # no new segmentation, table or any other node
    assert seg.GetSegmentation().GetNumberOfSegments() == 3

    seg.GetSegmentation().AddEmptySegment("mine", "my annotation", (0.2, 0.2, 1.0))
    logic.segment(chosen, outputSegmentation=seg, device="cpu", model=MODEL, keepOtherSegments=True, show3D=False)
    ids = [seg.GetSegmentation().GetNthSegmentID(i) for i in range(seg.GetSegmentation().GetNumberOfSegments())]
    assert sorted(ids) == sorted(["mine"] + [s.key for s in SEGMENTS])
    logic.segment(chosen, outputSegmentation=seg, device="cpu", model=MODEL, show3D=False)
    assert seg.GetSegmentation().GetSegment("mine") is None
    assert seg.GetSegmentation().GetNumberOfSegments() == 3
    assert scene.GetNodesByClass("vtkMRMLTableNode").GetNumberOfItems() == 1


@pytest.mark.slicer_pythons
@pytest.mark.parametrize("what", ["nothing", "all empty", "same node twice", "labelmap", "unknown modality",
                                  "reference not given"])
def test_bad_selections_raise_and_change_nothing(logic, scene, volumes, case_files, what):
    labelmap = load_volume(scene, case_files["T2"], "a labelmap", labelmap=True)
    before = scene_state(scene)
    cases = {
        "nothing": ({}, {}, NoInputError),
        "all empty": ({"T1": None, "T1ce": None, "T2": None, "FLAIR": None}, {}, NoInputError),
        "same node twice": ({"T1": volumes["T1"], "T2": volumes["T1"]}, {}, DuplicateVolumeError),
        "labelmap": ({"T1ce": volumes["T1ce"], "FLAIR": labelmap}, {}, LabelmapInputError),
        "unknown modality": ({"DWI": volumes["T1"]}, {}, SelectionError),
        "reference not given": ({"T1": volumes["T1"]}, {"reference": "FLAIR"}, SelectionError),
    }
    selection, kwargs, error = cases[what]
    with pytest.raises(error) as info:
        logic.segment(selection, device="cpu", model=MODEL, **kwargs)
    assert isinstance(info.value, ValueError) and str(info.value)
    assert scene_state(scene) == before


@pytest.mark.slicer_pythons
def test_cancel_leaves_the_scene_untouched(logic, scene, volumes):
    before = scene_state(scene)
    job = logic.startSegment({"T1ce": volumes["T1ce"], "T2": volumes["T2"]}, device="cpu", model=MODEL)
    while not job.done and job.message == "queued":
        logic.pollJob(job)
        time.sleep(0.01)
    logic.cancelJob(job)
    while not job.done:
        logic.pollJob(job)
        time.sleep(0.01)
    assert job.failed and job.reply["error"] == "Cancelled"
    assert job.segmentation is None and scene_state(scene) == before
    assert not Path(job.temp_dir).exists()
    with pytest.raises(SegmentationCancelled):
        logic.segment({"T1": volumes["T1"]}, device="cpu", model=MODEL, timeout=0.0)
    assert scene_state(scene) == before


@pytest.mark.slicer_pythons
@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_worker_killed_mid_run_fails_clearly_and_the_next_run_works(logic, scene, volumes):
    before = scene_state(scene)
    job = logic.startSegment({"T1ce": volumes["T1ce"]}, device="cpu", model=MODEL, show3D=False)
    while not job.done and job.message == "queued":
        logic.pollJob(job)
        time.sleep(0.01)
    old_pid = logic.worker.pid
    os.kill(old_pid, signal.SIGKILL)
    while not job.done:
        logic.pollJob(job)
        time.sleep(0.01)
    assert job.failed and job.reply["error"] == "WorkerDied" and "SIGKILL" in job.reply["message"]
    assert scene_state(scene) == before
    error = logic._failure(job.reply)  # what segment() raises for it
    assert isinstance(error, SegmentationFailed) and error.kind == "WorkerDied" and "stopped unexpectedly" in str(error)
    seg = logic.segment({"T1ce": volumes["T1ce"]}, device="cpu", model=MODEL, show3D=False)  # starts a new worker
    assert seg.GetSegmentation().GetNumberOfSegments() == 3 and logic.worker.pid != old_pid


@pytest.mark.slicer_pythons
def test_batch_writes_seg_nrrd_and_nifti(logic, scene, tmp_path):
    import slicerio

    from lckd.io.datasets import write_case
    from lckd.research.phantom import make_phantom

    in_dir, out_dir = tmp_path / "in", tmp_path / "out"
    for i, layout in enumerate(("brats2018", "brats2023")):
        images, label = make_phantom(10 + i, shape=(48, 64, 64)).to_sitk()
        write_case(in_dir, f"case{i}", {m: images[m] for m in ("T1ce", "FLAIR")}, label, layout=layout)
    before = scene_state(logic.scene)
    summary = logic.batch(in_dir, out_dir, device="cpu", model=MODEL, writeNifti=True)
    assert summary["succeeded"] == 2 and summary["failed"] == 0
    # the same summary and records as `lckd batch` (one implementation: lckd.frontends.batch.run_cases)
    with open(out_dir / "summary.csv", newline="") as f:
        rows = {r["case"]: r for r in csv.DictReader(f)}
    assert set(rows) == {"case0", "case1"} and summary["model"]["name"] == MODEL
    assert summary["model"]["card_sha256"] == sha256_file(resolve_model(MODEL))
    for case, row in rows.items():
        assert row["status"] == "ok" and row["modalities"] == "T1ce+FLAIR" and row["card_sha256"]
        seg = slicerio.read_segmentation(str(out_dir / f"{case}.seg.nrrd"))
        assert [s["name"] for s in seg["segments"]] == [s.name for s in SEGMENTS]
        labels = sitk.GetArrayFromImage(sitk.ReadImage(str(out_dir / f"{case}.nii.gz")))
        assert set(np.unique(labels)) <= {0, 1, 2, 4}
        record = json.loads((out_dir / f"{case}.json").read_text())
        assert record["modalities"] == ["T1ce", "FLAIR"] and record["model"]["name"] == "lckd-lite-phantom"
        assert float(row["WT_ml"]) == pytest.approx(record["volumes_ml"]["WT"], abs=0.01)
        assert float(row["WT_ml"]) == pytest.approx((labels > 0).sum() * 1.0 / 1000, abs=0.01)  # 1 mm voxels
    assert scene_state(logic.scene) == before  # batch leaves the scene alone
    # done cases are skipped, their volumes kept
    again = logic.batch(in_dir, out_dir, device="cpu", model=MODEL, writeNifti=True)
    assert again["skipped"] == 2 and [r["WT_ml"] for r in again["cases"]] == [rows[c]["WT_ml"] for c in sorted(rows)]
    only = logic.batch(in_dir, tmp_path / "out2", device="cpu", model=MODEL, modalities=["FLAIR"])
    assert all(r["modalities"] == "FLAIR" for r in only["cases"])


def test_write_volume_keeps_world_geometry(scene, case_files, tmp_path):
    node = load_volume(scene, case_files["T1"], "t1")
    original = sitk.ReadImage(str(case_files["T1"]))
    out = volumeio.write_volume(node, tmp_path / "t1.nrrd")
    back = sitk.ReadImage(str(out))
    assert np.array_equal(sitk.GetArrayFromImage(back), sitk.GetArrayFromImage(original))
    np.testing.assert_allclose(back.GetDirection(), original.GetDirection(), atol=1e-5)
    np.testing.assert_allclose(back.GetOrigin(), original.GetOrigin(), atol=1e-4)
    np.testing.assert_allclose(back.GetSpacing(), original.GetSpacing(), atol=1e-6)
    # under a linear transform, the file holds where the volume is shown (RAS +10 in R = LPS -10 in x)
    transform = scene.AddNewNodeByClass("vtkMRMLLinearTransformNode")
    matrix = vtk.vtkMatrix4x4()
    matrix.SetElement(0, 3, 10.0)
    transform.SetMatrixTransformToParent(matrix)
    node.SetAndObserveTransformNodeID(transform.GetID())
    moved = sitk.ReadImage(str(volumeio.write_volume(node, tmp_path / "moved.nrrd")))
    np.testing.assert_allclose(np.subtract(moved.GetOrigin(), original.GetOrigin()), (-10.0, 0, 0), atol=1e-4)


def test_logic_needs_a_scene_outside_slicer():
    if getattr(slicer, "mrmlScene", None) is not None:
        pytest.skip("running inside the Slicer application")
    with pytest.raises(RuntimeError, match="SegmentationLogic\\(scene\\)"):
        _ = SegmentationLogic().scene  # reading the property is what raises


def _table_volumes(seg) -> dict:
    table = seg.GetNodeReference(TABLE_ROLE)
    return {table.GetCellText(r, 1): float(table.GetCellText(r, 2)) for r in range(table.GetNumberOfRows())}


def test_postprocess_none_follows_the_model_card(scene, volumes, tmp_path):
    import json
    import shutil

    from lckd.model.registry import resolve_model

    # The phantom card cleans up nothing, so the default (None) is "no clean-up" for it...
    source = resolve_model(MODEL, allow_download=False)
    card = json.loads(source.read_text())
    assert not card.get("postprocessing")
    # ...and a copy whose rule drops every component under 10^7 voxels must come back empty.
    card["postprocessing"] = {"min_component_voxels": 10_000_000}
    shutil.copy(source.with_name(card["weights"]["file"]), tmp_path / card["weights"]["file"])
    card_path = tmp_path / source.name
    card_path.write_text(json.dumps(card))
    lg = SegmentationLogic(scene)
    chosen = {"T1ce": volumes["T1ce"], "FLAIR": volumes["FLAIR"]}
    try:
        followed = _table_volumes(lg.segment(chosen, device="cpu", model=str(card_path), show3D=False))
        assert lg.postprocessDefault() is True  # what the panel's checkbox starts from
        forced_off = _table_volumes(lg.segment(chosen, device="cpu", model=str(card_path), postprocess=False,
                                               show3D=False))
    finally:
        lg.shutdown()
    assert followed["WT"] == 0.0
    assert forced_off["WT"] > 1.0


def test_the_phantom_card_starts_the_checkbox_off(logic, scene, volumes):
    logic.segment({"T2": volumes["T2"]}, device="cpu", model=MODEL, show3D=False)
    assert logic.postprocessDefault() is False
    assert logic.modelInfo()["name"] == MODEL and logic.modelInfo()["scope"]


def test_a_gpu_that_does_not_exist_is_refused_with_a_clear_message(scene, volumes):
    torch = pytest.importorskip("torch")
    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")
    before = scene_state(scene)
    lg = SegmentationLogic(scene)
    try:
        # Nothing known yet: the worker refuses to load, and that reason is the error.
        with pytest.raises(SegmentationFailed) as info:
            lg.segment({"T2": volumes["T2"]}, device="cuda", model=MODEL)
        assert info.value.kind == "InputError" and "no CUDA GPU" in str(info.value)
        assert "exit status" not in str(info.value)
        # Known now: refused at once, before any worker starts (the panel shows this text).
        assert "No CUDA GPU" in lg.deviceProblem("cuda") and lg.deviceProblem("cpu") is None
        with pytest.raises(SelectionError, match="No CUDA GPU"):
            lg.segment({"T2": volumes["T2"]}, device="cuda", model=MODEL)
        assert lg.worker is None or not lg.worker.running
    finally:
        lg.shutdown()
    assert scene_state(scene) == before

    # A worker started with 'auto' that lands on the CPU tells the same, and keeps running.
    lg = SegmentationLogic(scene)
    try:
        worker = lg.startWorker(device="auto", model=MODEL)
        worker.wait_ready(timeout=180)
        assert "No CUDA GPU" in lg.deviceProblem("cuda:0")
        with pytest.raises(SelectionError):
            lg.startWorker(device="cuda", model=MODEL)
        assert lg.worker is worker and worker.running
    finally:
        lg.shutdown()


def test_raw_scans_are_detected_and_come_back_with_a_brain_mask(logic, scene, volumes, raw_case, tmp_path):
    """The panel's checkbox rule (detectRawScans) and a raw FLAIR through the worker, headless."""
    from lckd.prep.brainextract import extractor_available

    if not extractor_available():
        pytest.skip("brain extractor (deepbet) not installed")
    folder, files = raw_case
    flair = load_volume(scene, files["FLAIR"], "AX FLAIR raw")
    raw, reason = logic.detectRawScans({"FLAIR": flair})
    assert raw and reason.startswith("scans look unstripped (FLAIR")
    stripped, reason = logic.detectRawScans(volumes)
    assert not stripped and "skull-stripped" in reason

    seg = logic.segment({"FLAIR": flair}, device="cpu", model=MODEL, preprocess="on")
    assert "deepbet on FLAIR" in seg.GetAttribute("LCKD.Preprocessing")
    mask = seg.GetNodeReference(BRAIN_MASK_ROLE)
    assert mask is not None and mask.IsA("vtkMRMLLabelMapVolumeNode") and mask.GetName() == "AX FLAIR raw brain mask"
    truth = sitk.ReadImage(str(folder / f"{folder.name}-brainmask.nii.gz"))
    on_flair = sitk.GetArrayFromImage(sitk.Resample(truth, sitk.ReadImage(str(files["FLAIR"])), sitk.Transform(),
                                                    sitk.sitkNearestNeighbor, 0)) > 0
    ours = slicer.util.arrayFromVolume(mask) > 0
    assert ours.shape == on_flair.shape
    assert mask_dice(ours, on_flair) >= 0.9   # 6 mm slices: coarse truth

    again = logic.segment({"FLAIR": flair}, device="cpu", model=MODEL, preprocess="off")
    assert again.GetNodeReference(BRAIN_MASK_ROLE) is None
    assert again.GetAttribute("LCKD.Preprocessing") == "raw-scan preprocessing off (asked for)"

    # the console batch takes the same option, and its records say what was done
    summary = logic.batch(folder.parent, tmp_path / "out", device="cpu", model=MODEL, modalities=["FLAIR"],
                          preprocess="on")
    assert summary["succeeded"] == 1 and summary["options"]["preprocess"] == "on"
    record = json.loads((tmp_path / "out" / f"{folder.name}.json").read_text())
    assert "deepbet on FLAIR" in record["preprocessing"]


@pytest.mark.slicer_pythons
def test_the_quality_estimate_reaches_the_node_and_the_panel_line(scene, volumes, tmp_path):
    from LCKDSegmentationLib.panel import quality_text
    from test_quality_outputs import calibrated_copy

    card = calibrated_copy(tmp_path / "model")
    lg = SegmentationLogic(scene)
    try:
        seg = lg.segment({"T1ce": volumes["T1ce"], "FLAIR": volumes["FLAIR"]}, device="cpu", model=str(card),
                         show3D=False)
    finally:
        lg.shutdown()
    assert seg.GetAttribute("LCKD.ExpectedWTDice") == "0.600"
    assert seg.GetAttribute("LCKD.LowConfidence") == "1"
    line = seg.GetAttribute("LCKD.Quality")
    assert line.startswith("LOW CONFIDENCE: check this result. expected whole-tumour Dice 0.60 (0.45-0.70)")
    assert "an estimate, not a measurement" in line
    # the panel's text for an uncalibrated model says so rather than showing a number
    assert quality_text({"expected_wt_dice": None, "reasons": ["one scan only"]}) == \
        "Quality estimate: not calibrated for this model. Reasons: one scan only."
    assert quality_text(None) == ""
