"""One GUI-path request through the warm worker vs a cold `lckd segment`, same case.

The GUI path is what Apply does: write the selected volume nodes to a private temporary
folder, send the request to the already-loaded worker, poll it, import the labelmap into
a segmentation node with its volumes table and 3D surface. The cold path starts a new
process that imports torch, loads the model and segments. Headless (slicer-core MRML),
CPU by default. Prints times and the ratio; not a pass/fail test.

    python Testing/benchmarks/bench_slicer_gui_path.py [--modalities T1ce,FLAIR] [--device cpu] [--runs 2]
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "LCKDSegmentation"))

import slicer  # noqa: E402

from lckd.model.resources import sample_case  # noqa: E402
from LCKDSegmentationLib.logic import SegmentationLogic  # noqa: E402

FLAGS = {"T1": "--t1", "T1ce": "--t1ce", "T2": "--t2", "FLAIR": "--flair"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--modalities", default="T1,T1ce,T2,FLAIR")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--runs", type=int, default=2)
    args = parser.parse_args()

    factory = slicer.vtkSegmentationConverterFactory.GetInstance()
    factory.RegisterConverterRule(slicer.vtkBinaryLabelmapToClosedSurfaceConversionRule())
    factory.RegisterConverterRule(slicer.vtkClosedSurfaceToBinaryLabelmapConversionRule())
    case = sample_case()
    mods = args.modalities.split(",")
    scene = slicer.vtkMRMLScene()
    volumes = {}
    for m in mods:
        node = scene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", m)
        storage = slicer.vtkMRMLVolumeArchetypeStorageNode()
        storage.SetFileName(str(case.images[m]))
        assert storage.ReadData(node)
        volumes[m] = node

    logic = SegmentationLogic(scene)
    t = time.perf_counter()
    logic.startWorker(device=args.device)
    info = logic.worker.wait_ready(600)
    print(f"worker start + model load (once, when the module is first shown): {time.perf_counter() - t:.2f} s")
    warm = []
    for i in range(args.runs):
        t = time.perf_counter()
        job = logic.startSegment(volumes, device=args.device)
        while not job.done:
            logic.pollJob(job)
            time.sleep(0.02)
        assert not job.failed, job.reply
        warm.append(time.perf_counter() - t)
        print(f"GUI path, warm worker, run {i + 1}: {warm[-1]:.2f} s (worker side {job.reply['seconds']:.2f} s)")
    logic.shutdown()

    with tempfile.TemporaryDirectory() as tmp:
        argv = [sys.executable, "-m", "lckd.frontends.cli", "segment", "-o", str(Path(tmp) / "out.nii.gz"),
                "--device", args.device, "-q"]
        for m in mods:
            argv += [FLAGS[m], str(case.images[m])]
        t = time.perf_counter()
        subprocess.run(argv, check=True, capture_output=True)
        cold = time.perf_counter() - t
    shape = volumes[mods[0]].GetImageData().GetDimensions()
    print(f"cold `lckd segment` (new process): {cold:.2f} s")
    print(f"cold / warm: {cold / min(warm):.1f}x  ({'+'.join(mods)}, {shape[0]}x{shape[1]}x{shape[2]}, "
          f"{info['device']}, model {info.get('model', {}).get('name')})")


if __name__ == "__main__":
    main()
