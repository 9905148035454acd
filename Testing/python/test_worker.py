"""Background worker (`lckd.frontends.worker`) and its client (`LCKDSegmentationLib.workerclient`).

Protocol details run in-process against a stand-in segmenter (fast); the round trip,
loading once, cancel, SIGKILL and malformed input run a real worker process with the
bundled model on a small phantom.
"""
from __future__ import annotations

import io
import json
import os
import signal
import threading
import time
from pathlib import Path
from types import SimpleNamespace

import pytest

from lckd.base.errors import Cancelled, InputError, ModelError
from lckd.frontends import worker as worker_mod
from LCKDSegmentationLib.workerclient import WorkerClient, WorkerError, describe_exit

pytestmark = pytest.mark.slicer_pythons   # also run under Slicer's Python 3.9 and 3.12 (.ci/other-pythons)


# -- in-process protocol tests ---------------------------------------------------------
class _Result:
    def __init__(self, image):
        self.labelmap = image
        self.volumes_ml = {"NCR": 1.0, "ED": 2.0, "ET": 3.0, "TC": 4.0, "WT": 6.0}
        self.modalities = ("T1",)
        self.reference = "T1"
        self.label_convention = "brats2018"
        self.probabilities = None
        self.warnings = ["a warning"]
        self.timings = {}
        self.brain_mask = None
        self.preprocessing = "raw-scan preprocessing off (asked for)"
        self.quality = {"expected_wt_dice": None, "reasons": ["one scan only"]}
        self.notes: list = []
        self.sources = {"T1": "t1.nrrd"}


class _FakeSegmenter:
    """Stands in for `Segmenter`: steps until cancelled or `steps` are done. Carries what the
    result record reads from a loaded model (`lckd.inference.record.run_record`)."""

    device = "cpu"
    card = SimpleNamespace(name="fake", version="0", modalities=("T1",), label_convention="brats2018",
                           description="", intended_use="", scope="a test double", postprocessing={},
                           overlap=0.5, evaluation={})
    asked_device, fixed_threads = "cpu", None

    def model_record(self):
        return {"name": "fake", "version": "0", "card_sha256": None, "scope": "a test double"}

    def __init__(self, steps: int = 3, step_seconds: float = 0.0):
        self.steps, self.step_seconds = steps, step_seconds
        self.started = threading.Event()

    def segment(self, inputs, options=None, *, progress=None, cancel=None):
        import SimpleITK as sitk
        if "T1" not in inputs:
            raise InputError("fake segmenter wants T1")
        self.started.set()
        for i in range(self.steps):
            if cancel is not None and cancel.is_set():
                raise Cancelled("cancelled")
            time.sleep(self.step_seconds)
            progress((i + 1) / self.steps, f"step {i + 1}")
        return _Result(sitk.Image(4, 4, 4, sitk.sitkUInt8))


class _Session:
    """`serve()` on a thread, fed through a pipe, its replies collected as dicts."""

    def __init__(self, load):
        self._r, self._w = os.pipe()
        self.out = io.StringIO()
        self._lock = threading.Lock()
        writer = worker_mod._Writer(self)
        self.code = None
        self.thread = threading.Thread(target=self._run, args=(writer, load), daemon=True)
        self.thread.start()

    # _Writer's stream interface
    def write(self, text):
        with self._lock:
            self.out.write(text)

    def flush(self):
        pass

    def _run(self, writer, load):
        with os.fdopen(self._r, "rb") as stdin:
            self.code = worker_mod.serve(stdin, writer, load)

    def send(self, obj):
        line = obj if isinstance(obj, (str, bytes)) else json.dumps(obj)
        os.write(self._w, (line if isinstance(line, bytes) else line.encode()) + b"\n")

    def close(self):
        os.close(self._w)
        self.thread.join(10)

    def replies(self):
        with self._lock:
            return [json.loads(line) for line in self.out.getvalue().splitlines()]

    def wait_for(self, pred, timeout=10.0):
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            hits = [r for r in self.replies() if pred(r)]
            if hits:
                return hits[0]
            time.sleep(0.01)
        raise AssertionError(f"no matching reply in {self.replies()}")


@pytest.fixture
def image_file(tmp_path):
    import SimpleITK as sitk
    p = tmp_path / "t1.nrrd"
    sitk.WriteImage(sitk.Image(4, 4, 4, sitk.sitkFloat32), str(p))
    return str(p)


def test_malformed_lines_get_errors_and_the_worker_keeps_serving(image_file, tmp_path):
    s = _Session(lambda: _FakeSegmenter())
    bad = [b"{not json", b"\xff\xfe", json.dumps([1, 2]), json.dumps({"id": "a"}),
           json.dumps({"id": "b", "op": "explode"}),
           json.dumps({"id": "c", "op": "segment", "inputs": {}}),
           json.dumps({"id": "d", "op": "segment", "inputs": {"T1": image_file}, "options": {"outptu": "x"}}),
           json.dumps({"id": "e", "op": "segment", "inputs": {"T1": image_file}, "options": {"output": 5}}),
           json.dumps({"id": "f", "op": "segment", "inputs": {"T1": image_file}, "options": {"mirrors": "2"}}),
           json.dumps({"id": "g", "op": "segment", "inputs": {"T1": image_file}, "options": {"mirrors": True}})]
    for line in bad:
        s.send(line)
    s.send({"id": "p", "op": "ping"})
    s.wait_for(lambda r: r["id"] == "p")
    errors = [r for r in s.replies() if r["event"] == "error"]
    assert len(errors) == len(bad)
    assert all(e["error"] == "MalformedRequest" and e["message"] for e in errors)
    assert "outptu" in errors[6]["message"]
    assert all("'mirrors' must be an integer" in e["message"] for e in errors[-2:])
    # ...and real work still goes through
    s.send({"id": "ok", "op": "segment", "inputs": {"T1": image_file},
            "options": {"output": str(tmp_path / "out.nrrd")}})
    res = s.wait_for(lambda r: r["id"] == "ok" and r["event"] in ("result", "error"))
    assert res["event"] == "result" and Path(res["output"]).is_file()
    assert res["volumes_ml"]["WT"] == 6.0 and res["warnings"] == ["a warning"]
    s.close()
    assert s.code == 0


def test_core_errors_are_replies_not_crashes(image_file, tmp_path):
    s = _Session(lambda: _FakeSegmenter())
    s.send({"id": "1", "op": "segment", "inputs": {"T2": image_file}, "options": {"output": str(tmp_path / "o.nrrd")}})
    err = s.wait_for(lambda r: r["id"] == "1" and r["event"] == "error")
    assert err["error"] == "InputError" and "T1" in err["message"]
    s.send({"id": "2", "op": "segment", "inputs": {"T1": image_file}, "options": {"output": str(tmp_path / "o.xyz")}})
    err = s.wait_for(lambda r: r["id"] == "2" and r["event"] == "error")
    assert err["error"] == "OutputError"
    s.send({"id": "3", "op": "ping"})
    assert s.wait_for(lambda r: r["id"] == "3")["pong"] is True
    s.close()


def test_cancel_running_and_queued_jobs(image_file, tmp_path):
    fake = _FakeSegmenter(steps=200, step_seconds=0.01)
    s = _Session(lambda: fake)
    for rid in ("run", "queued"):
        s.send({"id": rid, "op": "segment", "inputs": {"T1": image_file},
                "options": {"output": str(tmp_path / f"{rid}.nrrd")}})
    assert fake.started.wait(10)
    s.send({"id": "c", "op": "cancel"})
    assert set(s.wait_for(lambda r: r["id"] == "c")["cancelled"]) == {"run", "queued"}
    for rid in ("run", "queued"):
        assert s.wait_for(lambda r, rid=rid: r["id"] == rid and r["event"] == "error")["error"] == "Cancelled"
    assert not (tmp_path / "run.nrrd").exists()
    s.send({"id": "i", "op": "info"})
    info = s.wait_for(lambda r: r["id"] == "i")
    assert info["busy"] is None and info["served"] == 1
    s.close()


def test_shutdown_and_end_of_input_stop_the_worker():
    s = _Session(lambda: _FakeSegmenter())
    s.send({"id": "bye", "op": "shutdown"})
    assert s.wait_for(lambda r: r["id"] == "bye")["shutdown"] is True
    s.thread.join(10)
    assert s.code == 0
    s2 = _Session(lambda: _FakeSegmenter())
    s2.close()  # EOF: the parent went away
    assert s2.code == 0


def test_a_model_that_cannot_load_is_one_fatal_error():
    def load():
        raise ModelError("model card 'x.json' not found")
    s = _Session(load)
    s.thread.join(10)
    assert s.code == worker_mod.FATAL_EXIT
    (err,) = s.replies()
    assert err["event"] == "error" and err["fatal"] and err["id"] is None and "x.json" in err["message"]


def test_describe_exit():
    assert describe_exit(1) == "exit status 1"
    assert describe_exit(-9) == "killed by signal SIGKILL"


# -- a real worker process -----------------------------------------------------------
@pytest.fixture(scope="module")
def case_files(tmp_path_factory):
    """A small phantom (64x80x80, anisotropic) as NIfTI files."""
    import SimpleITK as sitk

    from lckd.research.phantom import make_phantom

    folder = tmp_path_factory.mktemp("worker-case")
    images, _ = make_phantom(3, shape=(64, 80, 80), spacing=(1.2, 1.0, 2.0)).to_sitk()
    files = {}
    for mod, img in images.items():
        files[mod] = str(folder / f"{mod}.nii.gz")
        sitk.WriteImage(img, files[mod])
    return files


@pytest.fixture(scope="module")
def client():
    c = WorkerClient(device="cpu")
    c.start()
    yield c
    c.stop()


def _segment_request(client, files, out, **fields):
    return client.send("segment", inputs={m: files[m] for m in ("T1ce", "FLAIR")},
                       options={"output": str(out)}, **fields)


def _wait_event(client, rid, events, timeout=120.0):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for msg in client.poll():
            if msg.get("id") == rid and msg.get("event") in events:
                return msg
        time.sleep(0.01)
    raise AssertionError(f"no {events} for request {rid}")


def test_round_trip_and_the_model_is_loaded_once(client, case_files, tmp_path):
    ready = client.wait_ready(timeout=180)
    assert ready["event"] == "ready" and ready["model"]["name"] and ready["device"] == "cpu"
    pid = client.pid
    first = client.request("info", timeout=30)
    results = [client.request("segment", timeout=120, inputs={m: case_files[m] for m in mods},
                              options={"output": str(tmp_path / f"out{i}.nii.gz")})
               for i, mods in enumerate([("T1ce", "FLAIR"), ("T2",), ("T1", "T1ce", "T2", "FLAIR")])]
    for res, mods in zip(results, [("T1ce", "FLAIR"), ("T2",), ("T1", "T1ce", "T2", "FLAIR")]):
        assert res["event"] == "result" and Path(res["output"]).is_file()
        assert set(res["modalities"]) == set(mods)
        assert set(res["volumes_ml"]) == {"NCR", "ED", "ET", "TC", "WT"}
    last = client.request("info", timeout=30)
    # Same process, same load time, three jobs served: one model load for all requests.
    assert client.pid == pid == first["pid"] == last["pid"]
    assert first["loaded_at"] == last["loaded_at"] == ready["loaded_at"]
    assert last["served"] - first["served"] == 3
    # A warm request costs the pipeline's own time plus writing a small labelmap: nothing is
    # loaded or imported per request (the load, torch's import included, took load_seconds).
    for r in results:
        assert 0 < r["timings"]["total"] <= r["seconds"] < r["timings"]["total"] + min(1.0, ready["load_seconds"])


def test_mirrors_are_echoed_and_bad_values_are_input_errors(client, case_files, tmp_path):
    def segment(n):
        return client.request("segment", timeout=120, inputs={"T2": case_files["T2"]},
                              options={"output": str(tmp_path / f"m{n}.nii.gz"), "mirrors": n})

    assert [segment(n)["mirrors"] for n in (1, 2)] == [1, 2]
    for bad in (0, 3):
        with pytest.raises(WorkerError, match="--mirrors must be 1, 2, 4 or 8") as info:
            segment(bad)
        assert info.value.kind == "InputError"
    assert client.request("ping", timeout=30)["pong"] is True   # still serving
    # (that the averaging is applied, not only echoed, is test_slicer_logic's voxel comparison)


def test_malformed_message_gets_an_error_and_the_worker_keeps_serving(client):
    client.wait_ready(timeout=180)
    pid = client.pid
    client.send_raw("this is not json")
    deadline = time.monotonic() + 30
    errors = []
    while not errors and time.monotonic() < deadline:
        errors = [m for m in client.poll() if m.get("event") == "error"]
        time.sleep(0.01)
    assert errors and errors[0]["error"] == "MalformedRequest"
    assert client.request("ping", timeout=30)["pong"] is True
    assert client.pid == pid


def test_cancel_mid_run(client, case_files, tmp_path):
    client.wait_ready(timeout=180)
    out = tmp_path / "cancelled.nii.gz"
    rid = _segment_request(client, case_files, out)
    _wait_event(client, rid, ("progress",))
    client.cancel(rid)
    end = _wait_event(client, rid, ("result", "error"))
    assert end["event"] == "error" and end["error"] == "Cancelled"
    assert not out.exists()
    assert client.request("ping", timeout=30)["pong"] is True  # same worker, still serving


@pytest.mark.skipif(not hasattr(signal, "SIGKILL"), reason="POSIX signals")
def test_sigkill_mid_run_gives_a_clear_error_and_the_next_request_uses_a_new_worker(client, case_files, tmp_path):
    client.wait_ready(timeout=180)
    old_pid = client.pid
    rid = _segment_request(client, case_files, tmp_path / "killed.nii.gz")
    _wait_event(client, rid, ("progress",))
    os.kill(old_pid, signal.SIGKILL)
    end = _wait_event(client, rid, ("result", "error"), timeout=30)
    assert end["event"] == "error" and end["error"] == "WorkerDied"
    assert "SIGKILL" in end["message"] and "next request starts a new worker" in end["message"]
    assert not client.running
    res = client.request("segment", timeout=240, inputs={"T1ce": case_files["T1ce"]},
                         options={"output": str(tmp_path / "after.nii.gz")})
    assert res["event"] == "result" and client.pid != old_pid
