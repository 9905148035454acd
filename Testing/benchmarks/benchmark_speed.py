"""Speed and memory benchmark: default `lite` model vs the `paper` configuration vs MONAI SegResNet.

One run, one BraTS-size phantom case (240x240x155, all four modalities), the same
pipeline for every network (read -> crop -> normalise -> sliding window with Gaussian
blending -> labels), 2 CPU threads. Each measurement runs in its own process so its peak
resident memory is its own. Prints a table with ratios to the default model, last.

    python Testing/benchmarks/benchmark_speed.py [--threads 2] [--out results.json]

Targets (issue "core engine"): default end to end <= 1/8 of `paper` and <= 1/4 of
SegResNet in the same run; peak memory of the default <= 3 GB.
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

    from lckd.phantom import make_phantom

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
    from lckd.network import LCKDOutput, build_network

    default = Segmenter.load(device="cpu")
    if kind == "lite":
        return default
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


def _one(kind: str, modalities: list, paths: dict, threads: int) -> dict:
    """Child process: load, segment once end to end, report time and peak memory."""
    import torch

    torch.set_num_threads(threads)
    t = time.perf_counter()
    seg = _segmenter(kind)
    load = time.perf_counter() - t
    params = sum(p.numel() for p in seg.net.parameters())
    t = time.perf_counter()
    res = seg.segment({m: paths[m] for m in modalities})
    total = time.perf_counter() - t
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    return {"kind": kind, "modalities": "+".join(modalities), "params": params, "load_s": load,
            "seconds": total, "network_s": res.timings["network"], "peak_mb": peak_mb}


def _run_child(kind: str, modalities, paths, threads: int) -> dict:
    cmd = [sys.executable, __file__, "--child", json.dumps({"kind": kind, "modalities": list(modalities),
                                                           "paths": paths, "threads": threads})]
    out = subprocess.run(cmd, check=True, capture_output=True, text=True).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--out", default=None, help="also write the results as JSON")
    ap.add_argument("--child", default=None, help=argparse.SUPPRESS)
    args = ap.parse_args()
    if args.child:
        job = json.loads(args.child)
        print(json.dumps(_one(job["kind"], job["modalities"], job["paths"], job["threads"])))
        return

    with tempfile.TemporaryDirectory() as tmp:
        paths = _write_case(Path(tmp))
        arms = [("lite", ALL), ("paper", ALL), ("segresnet", ALL),
                ("lite", ("T1ce",)), ("lite", ("T1ce", "FLAIR")), ("lite", ("T1ce", "T2", "FLAIR"))]
        rows = []
        for kind, mods in arms:
            print(f"running {kind} with {'+'.join(mods)} ...", file=sys.stderr, flush=True)
            rows.append(_run_child(kind, mods, paths, args.threads))
    if args.out:
        Path(args.out).write_text(json.dumps(rows, indent=2))

    base = rows[0]["seconds"]
    print(f"\nOne BraTS-size phantom (240x240x155), {args.threads} CPU threads, whole pipeline per run")
    print("| network | modalities | parameters | end to end (s) | network (s) | time / default | peak RSS (MB) |")
    print("|---|---|---:|---:|---:|---:|---:|")
    for r in rows:
        name = {"lite": "lite (default)", "paper": "paper (untrained)", "segresnet": "MONAI SegResNet"}[r["kind"]]
        print(f"| {name} | {r['modalities']} | {r['params'] / 1e6:.2f} M | {r['seconds']:.1f} | "
              f"{r['network_s']:.1f} | {r['seconds'] / base:.2f} | {r['peak_mb']:.0f} |")
    paper, segres = rows[1]["seconds"], rows[2]["seconds"]
    print(f"\ndefault / paper = 1/{paper / base:.1f} (target <= 1/8);  default / SegResNet = 1/{segres / base:.1f} "
          f"(target <= 1/4);  default peak memory {rows[0]['peak_mb'] / 1024:.2f} GB (target <= 3 GB)")


if __name__ == "__main__":
    main()
