"""Speed and memory benchmark: default `lite` model vs the `paper` configuration vs MONAI SegResNet.

One run, one BraTS-size phantom case (240x240x155, all four modalities), the same
pipeline for every network (read -> crop -> normalise -> sliding window with Gaussian
blending -> labels), 2 CPU threads. Each measurement runs in its own process so its peak
resident memory is its own. Prints a table with ratios to the default model, last.

    python Testing/benchmarks/benchmark_speed.py [--threads 2] [--out results.json]
    python Testing/benchmarks/benchmark_speed.py --busy 1     # contention: idle vs N busy, then warm vs cold

Targets (issue "core engine"): default end to end <= 1/8 of `paper` and <= 1/4 of
SegResNet in the same run; peak memory of the default <= 3 GB. With `--busy N` (issue "Stay
fast on a busy machine"): the default model and SegResNet each run idle and beside N
single-threaded busy processes, and the default's slowdown should be no worse than
SegResNet's (<= 2x with one of two cores taken). Threads are left to each arm's own rule
(the default: lckd's ThreadGovernor; SegResNet: the same pipeline, also governed) unless
`--fixed-threads` pins them to `--threads`.
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

ALL = ("T1", "T1ce", "T2", "FLAIR")


def _write_case(folder: Path) -> dict:
    import SimpleITK as sitk

    from lckd.research.phantom import make_phantom

    images, _ = make_phantom(1234).to_sitk()
    paths = {}
    for m, img in images.items():
        paths[m] = str(folder / f"{m}.nii.gz")
        sitk.WriteImage(img, paths[m])
    return paths


def _segmenter(kind: str):
    """The Segmenter for one benchmark arm (the bundled default, or another network in its place)."""
    import dataclasses

    import torch
    from torch import nn

    from lckd.inference import Segmenter
    from lckd.model.network import LCKDOutput, build_network

    default = Segmenter.load(device="cpu")
    if kind == "lite":
        return default
    if kind in ("lite-small", "lite-wide"):   # the capacity table's other points: timing only, untrained weights
        torch.manual_seed(0)
        return Segmenter(build_network(kind).eval(), default.card, torch.device("cpu"))
    if kind == "paper":
        torch.manual_seed(0)
        card = dataclasses.replace(default.card, patch_size=[80, 160, 160], overlap=1 / 3)
        return Segmenter(build_network("paper").eval(), card, torch.device("cpu"))
    if kind == "segresnet":
        from monai.networks.nets import SegResNet

        class AsLCKD(nn.Module):
            """SegResNet behind the LCKDNet call signature (it always reads all four channels)."""

            modalities = default.net.modalities

            def __init__(self):
                super().__init__()
                self.inner = SegResNet(spatial_dims=3, init_filters=16, in_channels=4, out_channels=3,
                                       blocks_down=(1, 2, 2, 4), blocks_up=(1, 1, 1))

            def forward(self, x, present):
                return LCKDOutput(self.inner(x), x.new_zeros(0), present)

        torch.manual_seed(0)
        return Segmenter(AsLCKD().eval(), default.card, torch.device("cpu"))
    raise ValueError(kind)


def _one(kind: str, modalities: list, paths: dict, threads: int, fixed: bool = True) -> dict:
    """Child process: load, segment once end to end, report time, stage times and peak memory."""
    import torch

    torch.set_num_threads(threads)
    t = time.perf_counter()
    seg = _segmenter(kind)
    seg.thread_ceiling = threads
    seg.fixed_threads = threads if fixed else None
    load = time.perf_counter() - t
    params = sum(p.numel() for p in seg.net.parameters())
    t = time.perf_counter()
    res = seg.segment({m: paths[m] for m in modalities})
    total = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "modalities": "+".join(modalities), "params": params, "load_s": load,
            "seconds": total, "network_s": res.timings["network"], "peak_mb": peak_mb,
            "stages": {k: round(v, 2) for k, v in res.timings.items() if k != "total"},
            "threads": sorted(set(seg.thread_history)) or [torch.get_num_threads()]}


def _run_child(kind: str, modalities, paths, threads: int, fixed: bool = True) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps({"kind": kind, "modalities": list(modalities),
                                                           "paths": paths, "threads": threads, "fixed": fixed})]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def _busy(n: int) -> list:
    """N single-threaded processes that keep a core each busy (until killed)."""
    return [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(n)]


def contention(paths: dict, threads: int, busy: int, fixed: bool) -> list:
    """Each arm idle, then beside `busy` busy processes; returns the rows."""
    rows = []
    for kind in ("lite", "segresnet"):
        for load in (0, busy):
            print(f"running {kind}, {load} busy process(es) ...", file=sys.stderr, flush=True)
            hogs = _busy(load)
            try:
                time.sleep(0.5 if load else 0.0)       # let the busy processes settle on their cores
                row = _run_child(kind, ALL, paths, threads, fixed)
            finally:
                for h in hogs:
                    h.kill()
                    h.wait()
            rows.append(dict(row, busy=load))
    print(f"\nOne BraTS-size phantom, all four scans, {threads} threads at most, "
          f"{'fixed' if fixed else 'governed (lckd.base.threads.ThreadGovernor)'}; {busy} busy process(es)")
    print("| network | busy processes | end to end (s) | network (s) | threads used | slowdown |")
    print("|---|---:|---:|---:|---|---:|")
    for kind in ("lite", "segresnet"):
        idle, hot = [r for r in rows if r["kind"] == kind]
        name = {"lite": "lite (default)", "segresnet": "MONAI SegResNet"}[kind]
        for r in (idle, hot):
            print(f"| {name} | {r['busy']} | {r['seconds']:.1f} | {r['network_s']:.1f} | "
                  f"{','.join(map(str, r['threads']))} | {r['seconds'] / idle['seconds']:.2f}x |")
    lite = rows[1]["seconds"] / rows[0]["seconds"]
    seg = rows[3]["seconds"] / rows[2]["seconds"]
    print(f"\nslowdown with {busy} busy: lite {lite:.2f}x, SegResNet {seg:.2f}x (target: lite <= SegResNet, <= 2x); "
          f"lite / SegResNet idle 1/{rows[2]['seconds'] / rows[0]['seconds']:.1f}, "
          f"busy 1/{rows[3]['seconds'] / rows[1]['seconds']:.1f}")
    print("lite stage times idle: " + ", ".join(f"{k} {v:.2f}" for k, v in rows[0]["stages"].items()))
    return rows


def warm_vs_cold() -> None:
    """The warm Slicer worker against a cold `lckd segment` (bench_slicer_gui_path.py), in the same run."""
    script = Path(__file__).with_name("bench_slicer_gui_path.py")
    print("\nwarm worker vs cold command (bench_slicer_gui_path.py --runs 2):", flush=True)
    done = subprocess.run([sys.executable, str(script), "--runs", "2"], capture_output=True, text=True)
    lines = [ln for ln in done.stdout.splitlines() if ln.strip()]
    print("\n".join(lines[-5:]) if done.returncode == 0 else f"  not measured: {done.stderr.strip()[-300:]}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--busy", type=int, default=0, metavar="N",
                    help="contention run: each arm idle and beside N busy processes")
    ap.add_argument("--fixed-threads", action="store_true", help="with --busy: pin threads to --threads")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(_one(job["kind"], job["modalities"], job["paths"], job["threads"], job["fixed"])))
        return

    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_case(Path(tmp))
        if args.busy:
            rows = contention(paths, args.threads, args.busy, args.fixed_threads)
            if args.out:
                Path(args.out).write_text(json.dumps(rows, indent=2))
            warm_vs_cold()
            return
        arms = [("lite", ALL), ("paper", ALL), ("segresnet", ALL), ("lite-small", ALL), ("lite-wide", ALL),
                ("lite", ("T1ce",)), ("lite", ("T1ce", "FLAIR")), ("lite", ("T1ce", "T2", "FLAIR")),
                ("lite-wide", ("T1ce", "FLAIR"))]
        rows = []
        for kind, mods in arms:
            print(f"running {kind} with {'+'.join(mods)} ...", file=sys.stderr, flush=True)
            rows.append(_run_child(kind, mods, paths, args.threads, fixed=False))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))

    base = rows[0]["seconds"]
    print(f"\nOne BraTS-size phantom (240x240x155), {args.threads} CPU threads, whole pipeline per run")
    print("| network | modalities | parameters | end to end (s) | network (s) | time / default | peak RSS (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        name = {"lite": "bundled default", "paper": "paper (untrained)", "segresnet": "MONAI SegResNet",
                "lite-small": "lite-small (untrained)", "lite-wide": "lite-wide (untrained)"}[r["kind"]]
        print(f"| {name} | {r['modalities']} | {r['params'] / 1e6:.2f} M | {r['seconds']:.1f} | "
              f"{r['network_s']:.1f} | {r['seconds'] / base:.2f} | {r['peak_mb']:.0f} |")
    paper, segres = rows[1]["seconds"], rows[2]["seconds"]
    print(f"\ndefault / paper = 1/{paper / base:.1f} (target <= 1/8);  default / SegResNet = 1/{segres / base:.1f} "
          f"(target <= 1/3);  default peak memory {rows[0]['peak_mb'] / 1024:.2f} GB (target < 2 GB)")
    wide = next(r for r in rows if r["kind"] == "lite-wide")
    print(f"lite-wide / SegResNet = 1/{segres / wide['seconds']:.1f} (target <= 1/3 if it ships);  lite-wide peak "
          f"memory {wide['peak_mb'] / 1024:.2f} GB (target < 2 GB)")


if __name__ == "__main__":
    main()
