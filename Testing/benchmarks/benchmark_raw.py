"""Raw-scan pipeline benchmark: the whole `lckd segment` on raw series, and what `auto` costs BraTS input.

One run, side by side, each measurement in its own process (`lckd segment -v --json`, the
model loaded as a user's run loads it), 2 CPU threads by default:

1. a raw phantom (`lckd phantom --raw`: 3D T1ce + 2D T1/T2/FLAIR with skull, neck, bias
   fields), all four series, default settings (`--preprocess auto`): wall time, stage
   times, peak memory. Targets: <= 90 s and <= 4 GB on 2 cores.
2. a BraTS-style (skull-stripped, co-registered) phantom of the same size class, all four
   scans, `--preprocess auto` against `--preprocess off`: the fast path must stay as fast
   (the detection itself, the "detect" stage, under 0.5 s).

    python Testing/benchmarks/benchmark_raw.py [--threads 2] [--model lckd-lite-phantom]
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

FLAGS = {"T1": "--t1", "T1ce": "--t1ce", "T2": "--t2", "FLAIR": "--flair"}


def run_segment(files: dict, out: Path, model: str, threads: int, preprocess: str) -> dict:
    """`lckd segment` in a child process: wall seconds, peak RSS (MB) and its JSON record."""
    cmd = [sys.executable, "-m", "lckd.frontends.cli", "segment", "-o", str(out), "--json", "--model", model,
           "--device", "cpu", "--threads", str(threads), "--preprocess", preprocess, "-q", "-v"]
    for m, p in files.items():
        cmd += [FLAGS[m], str(p)]
    before = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    t = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    wall = time.perf_counter() - t
    if done.returncode != 0:
        raise SystemExit(f"lckd segment failed:\n{done.stderr}")
    peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss
    record = json.loads(out.with_name(out.name.replace(".nii.gz", ".json")).read_text())
    return {"wall_s": wall, "peak_mb": max(peak, before) / 1024, "record": record}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--model", default="lckd-lite-phantom")
    ap.add_argument("--seed", type=int, default=100)
    args = ap.parse_args()
    import SimpleITK as sitk

    from lckd.research.phantom import make_phantom
    from lckd.research.rawphantom import write_raw_phantom

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        folder = write_raw_phantom(work, args.seed)
        cid = folder.name
        raw = {m: folder / f"{cid}-{s}.nii.gz" for m, s in (("T1", "t1n"), ("T1ce", "t1c"), ("T2", "t2w"),
                                                           ("FLAIR", "t2f"))}
        images, _ = make_phantom(args.seed).to_sitk(integer=True)
        brats = {}
        for m, img in images.items():
            brats[m] = work / f"brats-{m}.nii.gz"
            sitk.WriteImage(img, str(brats[m]))
        print("running the raw phantom (auto) ...", file=sys.stderr, flush=True)
        r = run_segment(raw, work / "raw.nii.gz", args.model, args.threads, "auto")
        rows = []
        for mode in ("off", "auto", "off", "auto"):          # alternated: drift hits both alike
            print(f"running the BraTS-style phantom ({mode}) ...", file=sys.stderr, flush=True)
            rows.append((mode, run_segment(brats, work / f"brats-{mode}.nii.gz", args.model, args.threads, mode)))

    stages = r["record"]["timings_s"]
    print(f"\nRaw phantom (seed {args.seed}), 4 series, {args.threads} threads, `lckd segment --preprocess auto`:")
    print(f"  {r['record']['preprocessing']}")
    print("  stages (s): " + ", ".join(f"{k} {v:.2f}" for k, v in stages.items()))
    print(f"  whole command {r['wall_s']:.1f} s (target <= 90 s), peak memory {r['peak_mb'] / 1024:.2f} GB "
          f"(target <= 4 GB)")
    off = [x for m, x in rows if m == "off"]
    auto = [x for m, x in rows if m == "auto"]
    detect = [x["record"]["timings_s"].get("detect", 0.0) for x in auto]
    print("\nBraTS-style phantom, 4 scans, --preprocess off vs auto (two runs each, alternated):")
    def seconds(values) -> str:
        return ", ".join(f"{v:.1f}" for v in values)

    print(f"  off: {seconds(x['wall_s'] for x in off)} s;  auto: {seconds(x['wall_s'] for x in auto)} s;  "
          f"detection inside auto: {', '.join(f'{d:.3f}' for d in detect)} s (target < 0.5 s)")
    print(f"  auto decided: {auto[0]['record']['preprocessing']}")


if __name__ == "__main__":
    main()
