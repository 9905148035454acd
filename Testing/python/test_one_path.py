"""One implementation per concept, checked by running it through every entry point.

- the quality features: `Segmenter.segment` (what users run) and evaluation (what the
  calibration is fitted on) build them with one function and get the same numbers;
- the run record: `lckd segment --json`, `lckd batch`, the worker and the Slicer Logic's batch
  write records of one shape (and batch summaries of one shape);
- inputs are read and checked once per run (CLI, batch, worker);
- options are checked once, with the same rules: `lckd evaluate --overlap` as `lckd segment`.
"""
from __future__ import annotations

import json
import threading
from pathlib import Path

import numpy as np
import pytest

from conftest import TEST_MODEL
from lckd.frontends.cli import main
from lckd.inference import Segmenter, SegmentOptions

SHAPE = (48, 64, 64)   # (z, y, x): one sliding window of the lite models


@pytest.fixture(scope="module")
def case_dir(tmp_path_factory):
    """One BraTS 2023 phantom case folder with all four scans and its label."""
    from lckd.research.phantom import write_phantom_dataset

    root = tmp_path_factory.mktemp("one-path") / "data"
    (folder,) = write_phantom_dataset(root, 1, seed=81, shape=SHAPE)
    return root, folder


def _case(folder: Path):
    from lckd.io.datasets import find_cases

    (case,) = find_cases(folder.parent)
    return case


# --------------------------------------------------------------------------- quality features

def test_segmenting_and_evaluating_a_case_give_the_same_quality_features(case_dir, monkeypatch):
    """The bundled model (it has a quality calibration) on one case: the features `Segmenter.segment`
    computes and those the evaluation path computes for the same scans are identical, and so is
    the expected whole-tumour Dice the card's calibration gives for them."""
    from lckd.inference import quality
    from lckd.prep.modelgrid import load_case
    from lckd.research.evaluate import evaluate_cases

    seg = Segmenter.load("lckd-lite-brats", device="cpu", threads=1)
    assert seg.card.quality, "the bundled model carries a quality calibration"
    case = _case(case_dir[1])
    seen: list[dict] = []
    shared = quality.case_features

    def spy(*args, **kwargs):
        feats, label = shared(*args, **kwargs)
        seen.append(dict(feats))
        return feats, label

    monkeypatch.setattr(quality, "case_features", spy)
    options = SegmentOptions()                       # the card's clean-up, overlap: as users run it
    res = seg.segment(case.images, options)
    loaded = load_case(case, seg.net.modalities, seg.card.spacing,
                       seg.card.preprocessing.get("clip_percentiles", (0.5, 99.5)))
    report = evaluate_cases(seg, [loaded], subsets=[tuple(case.images)], options=options)
    assert len(seen) == 2, "both paths build the features with quality.case_features"
    from_segment, from_evaluation = seen
    assert from_segment == from_evaluation
    expected = quality.estimate(from_evaluation, seg.card.quality)
    assert res.quality == expected and res.quality["expected_wt_dice"] is not None
    (row,) = report["per_case"]
    assert row["features"] == {k: round(v, 5) for k, v in from_segment.items()}
    assert report["postprocess"] == options.cleanup_rule(seg.card)   # the same clean-up, from one rule


def test_evaluation_takes_segment_options_and_checks_them_as_segment_does(capsys, tmp_path):
    """`lckd evaluate --overlap 1.5` is refused by the rule `lckd segment --overlap 1.5` is."""
    messages = []
    for argv in (["evaluate", str(tmp_path), "--overlap", "1.5"],
                 ["segment", "--t1", str(tmp_path / "t1.nii.gz"), "-o", str(tmp_path / "o.nii.gz"),
                  "--overlap", "1.5"]):
        assert main(argv) == 1
        messages.append(capsys.readouterr().err.strip().splitlines()[-1].partition(": error: ")[2])
    assert messages[0] == messages[1] and "overlap" in messages[0]


# --------------------------------------------------------------------------- run records

def _shape(record: dict) -> dict:
    """The keys of a record, with those of its nested objects."""
    return {k: (sorted(v) if isinstance(v, dict) and k != "timings_s" else type(v).__name__)
            for k, v in record.items()}


class _Lines:
    """A worker writer's stream: collects the reply lines."""

    def __init__(self):
        self.lines: list[dict] = []
        self.done = threading.Event()

    def write(self, text):
        for line in text.splitlines():
            reply = json.loads(line)
            self.lines.append(reply)
            if reply.get("event") in ("result", "error"):
                self.done.set()

    def flush(self):
        pass


def _worker_record(segmenter, images: dict, output: Path, options: dict) -> dict:
    from lckd.frontends import worker as worker_mod

    stream = _Lines()
    w = worker_mod.Worker(segmenter, worker_mod._Writer(stream))
    try:
        w.handle_line(json.dumps({"id": "r", "op": "segment", "inputs": {m: str(p) for m, p in images.items()},
                                  "options": {"output": str(output), **options}}))
        assert stream.done.wait(120), stream.lines
    finally:
        w.stop()
    results = [r for r in stream.lines if "record" in r]
    assert results, stream.lines
    return results[-1]["record"]


def test_cli_batch_worker_and_slicer_write_records_of_one_shape(case_dir, segmenter, tmp_path):
    root, folder = case_dir
    case = _case(folder)
    images = {m: case.images[m] for m in ("T1ce", "FLAIR")}
    two = tmp_path / "two" / case.case_id
    two.mkdir(parents=True)
    for p in images.values():
        (two / p.name).write_bytes(p.read_bytes())
    common = ["--model", TEST_MODEL, "--device", "cpu", "--mirrors", "2", "--no-postprocess"]
    assert main(["segment", "--t1ce", str(images["T1ce"]), "--flair", str(images["FLAIR"]),
                 "-o", str(tmp_path / "cli.nii.gz"), "--json", str(tmp_path / "cli.json"), "-q", *common]) == 0
    assert main(["batch", str(two.parent), str(tmp_path / "batch"), "-q", *common]) == 0
    records = {"lckd segment": json.loads((tmp_path / "cli.json").read_text()),
               "lckd batch": json.loads((tmp_path / "batch" / f"{case.case_id}.json").read_text()),
               "worker": _worker_record(segmenter, images, tmp_path / "worker.nii.gz",
                                        {"mirrors": 2, "postprocess": False})}
    summaries = {"lckd batch": json.loads((tmp_path / "batch" / "summary.json").read_text())}
    pytest.importorskip("slicer")
    from LCKDSegmentationLib.logic import SegmentationLogic

    logic = SegmentationLogic()
    try:
        logic.batch(two.parent, tmp_path / "slicer", device="cpu", model=TEST_MODEL, mirrors=2, postprocess=False)
    finally:
        logic.shutdown()
    records["Slicer logic"] = json.loads((tmp_path / "slicer" / f"{case.case_id}.json").read_text())
    summaries["Slicer logic"] = json.loads((tmp_path / "slicer" / "summary.json").read_text())

    shapes = {entry: _shape(r) for entry, r in records.items()}
    for entry, shape in shapes.items():
        assert shape == shapes["lckd segment"], entry
    for entry, record in records.items():
        assert record["options"]["mirrors"] == 2 and record["options"]["postprocess"] is None, entry
        assert record["modalities"] == ["T1ce", "FLAIR"] and record["model"]["name"] == TEST_MODEL, entry
        same = {k: v for k, v in record["options"].items() if k != "threads"}
        assert same == {k: v for k, v in records["lckd segment"]["options"].items() if k != "threads"}, entry
    assert sorted(summaries["Slicer logic"]["options"]) == sorted(summaries["lckd batch"]["options"])
    assert summaries["Slicer logic"]["options"]["formats"] == ["seg.nrrd"]


# --------------------------------------------------------------------------- inputs read once

def test_every_entry_point_reads_and_checks_each_input_once(case_dir, segmenter, tmp_path, monkeypatch):
    from lckd.inference import inputchecks

    read, memory = [], []
    real_read, real_memory = inputchecks.read_image, inputchecks.estimate_memory

    def counting_read(value, *args, **kwargs):
        read.append(str(value))
        return real_read(value, *args, **kwargs)

    def counting_memory(*args, **kwargs):
        memory.append(1)
        return real_memory(*args, **kwargs)

    monkeypatch.setattr(inputchecks, "read_image", counting_read)
    monkeypatch.setattr(inputchecks, "estimate_memory", counting_memory)
    case = _case(case_dir[1])
    images = {m: case.images[m] for m in ("T1ce", "FLAIR")}
    runs = {
        "lckd segment": lambda: main(["segment", "--t1ce", str(images["T1ce"]), "--flair", str(images["FLAIR"]),
                                      "-o", str(tmp_path / "cli.nii.gz"), "--model", TEST_MODEL, "--device", "cpu",
                                      "-q"]),
        "lckd batch": lambda: main(["batch", str(case_dir[0]), str(tmp_path / "batch"), "--model", TEST_MODEL,
                                    "--device", "cpu", "--modalities", "T1ce,FLAIR", "-q"]),
        "worker": lambda: _worker_record(segmenter, images, tmp_path / "worker.nii.gz", {}),
    }
    for entry, run in runs.items():
        read.clear()
        memory.clear()
        run()
        assert sorted(read) == sorted(str(p) for p in images.values()), (entry, read)
        assert len(memory) == 1, (entry, len(memory))


def test_segment_keywords_are_a_thin_wrapper_building_segment_options(segmenter, small_case):
    files, _ = small_case
    inputs = {"FLAIR": files["FLAIR"]}
    a = segmenter.segment(inputs, mirrors=2, postprocess=False)
    b = segmenter.segment(inputs, SegmentOptions(mirrors=2, postprocess=False))
    import SimpleITK as sitk

    assert np.array_equal(sitk.GetArrayFromImage(a.labelmap), sitk.GetArrayFromImage(b.labelmap))
    from lckd.base.errors import InputError

    with pytest.raises(InputError, match="mirrors"):
        segmenter.segment(inputs, mirrors=3)
