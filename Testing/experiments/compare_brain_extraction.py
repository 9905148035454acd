"""Brain extraction tools side by side: mask Dice, seconds and peak memory (README "Raw scans").

Compares the backends of `lckd.prep.brainextract` (deepbet, HD-BET one model without mirroring)
and "none" (no extraction: the head above a tenth of the 99th percentile, what the network
would see without it) on

- raw phantoms (`lckd.research.rawphantom`, every series; truth: the phantom's brain mask), and
- the real BraTS 2023 case in ../shared/data/real (already skull-stripped; truth: its
  non-zero voxels, so a tool must keep a stripped brain as it is).

Each (tool, scan) runs in its own process (`--one`), so the time includes loading the tool and
the peak memory is that process's own; torch uses `--threads` threads (default 2, as CI has).

    python Testing/experiments/compare_brain_extraction.py --seeds 100 101 [--tools deepbet hd-bet none]
"""
from __future__ import annotations

import argparse
import json
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REAL = Path(__file__).resolve().parents[2] / ".." / "shared" / "data" / "real" / "BraTS-GLI-00001-000"


def one(tool: str, scan: str, truth: str | None, threads: int) -> dict:
    """Run one tool on one scan in this process; Dice against `truth` (None: the scan's non-zero voxels)."""
    import SimpleITK as sitk
    import torch

    torch.set_num_threads(threads)
    img = sitk.ReadImage(scan, sitk.sitkFloat32)
    t = time.perf_counter()
    if tool == "none":
        from lckd.prep.rawprep import head_mask
        mask = head_mask(img)
    else:
        from lckd.prep.brainextract import extract_brain
        mask = sitk.GetArrayFromImage(extract_brain(img, tool)) > 0
    seconds = time.perf_counter() - t
    if truth is None:
        ref = sitk.GetArrayFromImage(img) > 0
    else:
        ref = sitk.GetArrayFromImage(sitk.Resample(sitk.ReadImage(truth), img, sitk.Transform(),
                                                   sitk.sitkNearestNeighbor, 0)) > 0
    from lckd.base.metrics import mask_dice
    dice = mask_dice(mask, ref)
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0
    return {"tool": tool, "scan": Path(scan).name, "dice": round(dice, 4), "seconds": round(seconds, 1),
            "peak_mb": round(peak_mb)}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--seeds", type=int, nargs="*", default=[100, 101])
    ap.add_argument("--tools", nargs="+", default=["deepbet", "hd-bet", "none"])
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--one", nargs="+", metavar="ARG", help=argparse.SUPPRESS)   # TOOL SCAN [TRUTH]
    args = ap.parse_args()
    if args.one:
        print(json.dumps(one(args.one[0], args.one[1], args.one[2] if len(args.one) > 2 else None, args.threads)))
        return

    from lckd.research.rawphantom import write_raw_phantom

    work = Path(tempfile.mkdtemp(prefix="bet-compare-"))
    jobs = []
    for seed in args.seeds:
        folder = write_raw_phantom(work, seed)
        truth = str(folder / f"{folder.name}-brainmask.nii.gz")
        jobs += [(str(p), truth) for p in sorted(folder.glob("*.nii.gz")) if not p.name.endswith(("-seg.nii.gz",
                                                                                                   "brainmask.nii.gz"))]
    if REAL.is_dir():
        jobs += [(str(p), None) for p in sorted(REAL.glob("*.nii.gz"))]
    rows = []
    for scan, truth in jobs:
        for tool in args.tools:
            cmd = [sys.executable, __file__, "--threads", str(args.threads), "--one", tool, scan]
            cmd += [truth] if truth else []
            done = subprocess.run(cmd, capture_output=True, text=True)
            if done.returncode != 0:
                print(f"{tool} on {Path(scan).name}: failed: {done.stderr.strip().splitlines()[-1:]}", flush=True)
                continue
            row = json.loads(done.stdout.strip().splitlines()[-1])
            rows.append(row)
            print(f"{row['tool']:<8} {row['scan']:<36} Dice {row['dice']:.3f}  {row['seconds']:5.1f} s  "
                  f"{row['peak_mb']:5d} MB", flush=True)
    print("\ntool      kind         scans  Dice mean (min)   s mean   peak MB max")
    for tool in args.tools:
        for kind, pick in (("raw phantom", lambda r: r["scan"].startswith("RAW")),
                           ("real, stripped", lambda r: not r["scan"].startswith("RAW"))):
            sel = [r for r in rows if r["tool"] == tool and pick(r)]
            if sel:
                d = [r["dice"] for r in sel]
                print(f"{tool:<9} {kind:<14} {len(sel):3d}   {sum(d) / len(d):.3f} ({min(d):.3f})   "
                      f"{sum(r['seconds'] for r in sel) / len(sel):6.1f}   {max(r['peak_mb'] for r in sel):6d}")


if __name__ == "__main__":
    main()
