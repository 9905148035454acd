"""Ablation of LCKD's two ingredients on phantoms, with equal budgets.

    python Testing/experiments/ablation.py --out ablation-results

Three runs share the data, the schedule, the seed and the number of steps:
  (a) LCKD: teachers elected on the validation split, distillation weight 0.1;
  (b) no distillation: the same run with distillation weight 0 (no teachers);
  (c) a fixed teacher chosen at random (seeded) among the scans (a) did not elect, no
      election: does electing the teacher matter, or would any teacher do?
  (d) LCKD with ten times the distillation weight (1.0): is the paper's 0.1 too weak to
      matter at this scale? (not part of the paper's ablation; `--no-extra` skips it).
Each model is evaluated on held-out phantom cases with all 15 modality subsets. Besides
the mean over the 15 subsets, the script reports what distillation is for: for each
region, the mean Dice over the subsets that lack the teacher (a) elected for that region
(e.g. ET over the 7 subsets without T1ce).

To keep the trainings within an hour or so on 2 CPU cores, the phantoms are made at
1.5 mm (104 x 160 x 160 voxels, the same brain as a 1 mm BraTS case) and the models train
on that grid with 48^3 patches (72 mm).
Everything is printed at the end and written as ablation.md / ablation.json under --out.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import numpy as np
import torch

from lckd.datasets import write_split
from lckd.evaluate import evaluate_cases, format_table
from lckd.inference import Segmenter
from lckd.labels import REGIONS
from lckd.modalities import MODALITIES, all_subsets, subset_key
from lckd.phantom import write_phantom_dataset
from lckd.training.data import load_cases, select_cases
from lckd.training.presets import TrainConfig
from lckd.training.trainer import RunOptions, Trainer


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="ablation-results", help="results folder (tables, JSON)")
    p.add_argument("--work", default=None, help="working folder for data and runs (default: OUT/work)")
    p.add_argument("--train-cases", type=int, default=48)
    p.add_argument("--val-cases", type=int, default=4)
    p.add_argument("--test-cases", type=int, default=12)
    p.add_argument("--spacing", type=float, default=1.5, help="mm; phantoms are made and trained at this spacing")
    p.add_argument("--patch", type=int, default=48)
    p.add_argument("--warmup-steps", type=int, default=600)
    p.add_argument("--missing-steps", type=int, default=5400)
    p.add_argument("--election-every", type=int, default=1000)
    p.add_argument("--seed", type=int, default=0, help="training seed, shared by the three runs")
    p.add_argument("--teacher-seed", type=int, default=2023, help="seed of the random fixed teacher of run (c)")
    p.add_argument("--threads", type=int, default=None)
    p.add_argument("--no-extra", action="store_true", help="run only (a), (b), (c)")
    return p.parse_args(argv)


def make_data(work: Path, args) -> Path:
    """Phantoms (train, val, test from disjoint seeds) and a split file; reused if present."""
    data, split = work / "data", work / "split.csv"
    if split.is_file():
        return split
    shape = tuple(int(round(n / args.spacing)) for n in (155, 240, 240))
    spacing = (args.spacing,) * 3
    ids = {}
    for name, n, seed in (("train", args.train_cases, 10_000), ("val", args.val_cases, 20_000),
                          ("test", args.test_cases, 30_000)):
        folders = write_phantom_dataset(data, n, seed=seed, shape=shape, spacing=spacing, progress=True)
        ids[name] = [f.name for f in folders]
    write_split(split, ids)
    return split


def random_teacher(elected: list[str], seed: int) -> str:
    """A scan drawn at random (seeded) from those run (a) did not elect."""
    others = [m for m in MODALITIES if m not in elected] or list(MODALITIES)
    return others[int(np.random.default_rng(seed).integers(len(others)))]


def variant(key: str, elected: list[str] | None, args) -> dict:
    """Label and config overrides of run `key`; (c) needs the teachers (a) elected."""
    if key == "a":
        return {"label": "LCKD (elected teachers, KD 0.1)", "overrides": {}}
    if key == "b":
        return {"label": "no distillation (KD 0)", "overrides": {"kd_weight": 0.0, "election_every": 0}}
    if key == "c":
        teacher = random_teacher(elected or [], args.teacher_seed)
        return {"label": f"fixed random teacher ({teacher}, KD 0.1)", "overrides": {"fixed_teachers": (teacher,)}}
    return {"label": "LCKD with KD 1.0", "overrides": {"kd_weight": 1.0}}


def train_and_evaluate(key: str, spec: dict, base: TrainConfig, work: Path, split: Path, args) -> dict:
    cfg = base.with_overrides(**spec["overrides"])
    opts = RunOptions(data=str(work / "data"), split=str(split), out=str(work / f"run-{key}"), name=f"ablation-{key}",
                      threads=args.threads, final_eval=False, progress=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, opts)
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.net.eval()
    seg = Segmenter(trainer.net, trainer.card(), torch.device("cpu"))
    cases = load_cases(select_cases(opts.data, split, "test"), cfg, trainer.order, dtype=np.float32)
    report = evaluate_cases(seg, cases)
    history = trainer.meta["history"]
    return {"label": spec["label"], "config": cfg.to_dict(), "train_seconds": round(seconds, 1),
            "teachers": trainer.meta["teachers"], "election": history[-1] if history else None,
            "per_subset": report["per_subset"], "mean": report["mean"], "cases": report["cases"]}


def region_teachers(election: dict) -> dict[str, str]:
    """The modality elected for each region (the best single modality in the final table)."""
    table = election["table"]
    return {r: max(MODALITIES, key=lambda m: (table[m][r], -MODALITIES.index(m))) for r in REGIONS}


def lacking_teacher_means(result: dict, teachers: dict[str, str]) -> dict[str, float]:
    """Per region, the mean Dice over the subsets without that region's elected teacher."""
    out = {}
    for r in REGIONS:
        keys = [subset_key(s) for s in all_subsets() if teachers[r] not in s]
        out[r] = float(np.mean([result["per_subset"][k][r] for k in keys]))
    out["mean"] = float(np.mean([out[r] for r in REGIONS]))
    return out


def summary_markdown(results: dict, teachers: dict[str, str], args) -> str:
    lines = [f"Budget per run: {args.warmup_steps} + {args.missing_steps} steps, batch 2, {args.patch}^3 patches "
             f"at {args.spacing:g} mm; {args.train_cases} training, {args.val_cases} validation and "
             f"{args.test_cases} test phantoms. Elected teachers of (a): "
             + ", ".join(f"{r} {m}" for r, m in teachers.items()) + ".", "",
             "| run | mean Dice ET | TC | WT | without the region's teacher: ET | TC | WT | mean | train s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---:|"]
    for key, res in results.items():
        lack = res["lacking_teacher"]
        lines.append(f"| ({key}) {res['label']} | " + " | ".join(f"{res['mean'][r]:.3f}" for r in REGIONS) + " | "
                     + " | ".join(f"{lack[r]:.3f}" for r in REGIONS) + f" | {lack['mean']:.3f} | "
                     f"{res['train_seconds']:.0f} |")
    for key, res in results.items():
        lines += ["", f"### ({key}) {res['label']}: 15 subsets", "",
                  format_table({"per_subset": res["per_subset"], "mean": res["mean"]})]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = make_data(work, args)
    base = TrainConfig(preset="ablation", network="lite", patch=(args.patch,) * 3, batch=2,
                       warmup_steps=args.warmup_steps, missing_steps=args.missing_steps, optimizer="adamw",
                       lr=2e-3, weight_decay=1e-4, election_every=args.election_every, election_cases=0,
                       election_box=0, checkpoint_every=10 ** 9, seed=args.seed, spacing=(args.spacing,) * 3)
    results = {}
    for key in ("a", "b", "c") if args.no_extra else ("a", "b", "c", "d"):
        spec = variant(key, results["a"]["teachers"] if "a" in results else None, args)
        print(f"\n=== run ({key}): {spec['label']} ===", flush=True)
        results[key] = train_and_evaluate(key, spec, base, work, split, args)
    teachers = region_teachers(results["a"]["election"])
    for res in results.values():
        res["lacking_teacher"] = lacking_teacher_means(res, teachers)
    text = summary_markdown(results, teachers, args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(text)
    (out / "ablation.json").write_text(json.dumps({"teachers": teachers, "results": results,
                                                   "args": vars(args)}, indent=2) + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
