"""A four-series DICOM study (plus localizer, reformat, DWI/ADC and a screen save) against the same
scans as NIfTI: `lckd segment --study DIR -o result.dcm` vs `lckd segment --t1 ... -o seg.nii.gz`,
each in a fresh process, side by side. The issue's target: the DICOM run at most 5 s slower on
2 CPU cores. Prints times and the difference; not a pass/fail test. Run it on an idle machine.

    python Testing/benchmarks/benchmark_dicom.py [--shape 155,240,240] [--runs 2] [--threads 2] [--vendor ge]
"""
from __future__ import annotations

import argparse
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


def timed(command: list[str]) -> float:
    start = time.perf_counter()
    run = subprocess.run(command, capture_output=True, text=True)
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
    args = parser.parse_args()

    shape = tuple(int(v) for v in args.shape.split(","))
    case = make_phantom(0, shape)
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        study = write_dicom_study(root / "study", vendor=args.vendor, case=case)
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
    print(f"phantom {'x'.join(map(str, shape))}, {args.threads} thread(s), {args.runs} run(s), median wall time:")
    medians = {k: statistics.median(v) for k, v in times.items()}
    for name, value in medians.items():
        print(f"  {name:<22}{value:7.2f} s   (runs: {', '.join(f'{t:.2f}' for t in times[name])})")
    extra = medians["DICOM study -> SEG"] - medians["NIfTI -> .nii.gz"]
    print(f"  DICOM costs {extra:+.2f} s (target: at most +5 s on 2 cores)")


if __name__ == "__main__":
    main()
