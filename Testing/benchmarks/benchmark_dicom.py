"""A four-series DICOM study (plus localizer, reformat, DWI/ADC and a screen save) against the same
scans as NIfTI: `lckd segment --study DIR -o result.dcm` vs `lckd segment --t1 ... -o seg.nii.gz`,
each in a fresh process, side by side. The issue's target: the DICOM run at most 5 s slower on
2 CPU cores. Prints both median times side by side, their difference and ratio, and whether the
target holds; not a pass/fail test. Run it on an idle machine: other jobs on the cores make the
numbers meaningless. The subprocesses run this checkout's `lckd` (PYTHONPATH is set), not whatever
`lckd` the environment has installed.

    python Testing/benchmarks/benchmark_dicom.py [--shape 155,240,240] [--runs 2] [--threads 2] [--vendor ge]
                                                 [--multiframe] [--compression rle|jpeg2000|jpeg-lossless]
"""
from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "LCKDSegmentation"))

import SimpleITK as sitk  # noqa: E402

from lckd.research.dicomphantom import write_dicom_study  # noqa: E402
from lckd.research.phantom import make_phantom  # noqa: E402

FLAGS = {"T1": "--t1", "T1ce": "--t1ce", "T2": "--t2", "FLAIR": "--flair"}


#: The target of issue 30: the DICOM run at most this many seconds slower than the NIfTI one.
TARGET_S = 5.0


def timed(command: list[str]) -> float:
    """Wall time of one `lckd` run in a fresh process with this checkout's package first on the path."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT / "LCKDSegmentation"),
                                                                    os.environ.get("PYTHONPATH")])))
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True, env=env)
    if run.returncode != 0:
        raise SystemExit(f"failed: {' '.join(command)}\n{run.stderr}")
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--shape", default="155,240,240", help="phantom z,y,x (the BraTS grid by default)")
    parser.add_argument("--runs", type=int, default=2)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--vendor", default="siemens")
    parser.add_argument("--model", default=None)
    parser.add_argument("--multiframe", action="store_true", help="the study's scans as Enhanced MR files")
    parser.add_argument("--compression", default=None, choices=["rle", "jpeg2000", "jpeg-lossless"],
                        help="the study's scans in this lossless transfer syntax")
    args = parser.parse_args()

    shape = tuple(int(v) for v in args.shape.split(","))
    case = make_phantom(0, shape)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = write_dicom_study(root / "study", vendor=args.vendor, case=case, multiframe=args.multiframe,
                                  compression=args.compression)
        scans, _ = case.to_sitk(integer=True)
        nifti = []
        for mod, image in scans.items():
            sitk.WriteImage(image, str(root / f"{mod}.nii.gz"))
            nifti += [FLAGS[mod], str(root / f"{mod}.nii.gz")]
        common = [sys.executable, "-m", "lckd.frontends.cli", "segment", "--threads", str(args.threads), "-q",
                  "--device", "cpu"] + (["--model", args.model] if args.model else [])
        commands = {"NIfTI -> .nii.gz": common + nifti + ["-o", str(root / "seg.nii.gz")],
                    "DICOM study -> SEG": common + ["--study", str(study), "-o", str(root / "seg.dcm")]}
        times: dict[str, list[float]] = {k: [] for k in commands}
        for _ in range(args.runs):
            for name, command in commands.items():   # interleaved: a busy moment hits both alike
                times[name].append(timed(command))
    kind = ("enhanced multi-frame" if args.multiframe else "single-frame") + (f", {args.compression}"
                                                                               if args.compression else "")
    print(f"phantom {'x'.join(map(str, shape))}, DICOM {kind} ({args.vendor}), {args.threads} thread(s), "
          f"{args.runs} run(s), median wall time:")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, value in medians.items():
        print(f"  {name:<22}{value:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    nifti_s, dicom_s = medians["NIfTI -> .nii.gz"], medians["DICOM study -> SEG"]
    extra = dicom_s - nifti_s
    print(f"  side by side: DICOM {dicom_s:.2f} s vs NIfTI {nifti_s:.2f} s: {extra:+.2f} s, ratio "
          f"{dicom_s / nifti_s:.2f}x")
    print(f"  target (at most +{TARGET_S:g} s on 2 cores): {'met' if extra <= TARGET_S else 'NOT met'}"
          + ("" if args.threads == 2 else f" (measured with {args.threads} threads, not 2)"))


if __name__ == "__main__":
    main()
