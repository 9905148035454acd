"""Ablation of LCKD's two ingredients on phantoms, with equal budgets, over several seeds.

    python Testing/experiments/ablation.py --out ablation-results --seeds 0,1,2,3,4

Every run shares the data, the schedule and the number of steps; for each training seed:
  (a) LCKD: teachers elected on the validation split, distillation weight 0.1;
  (b) no distillation: the same run with distillation weight 0 (no teachers);
  (c) a fixed teacher chosen at random (seeded) among the scans (a) did not elect, no
      election: does electing the teacher matter, or would any teacher do?
  (d) LCKD with ten times the distillation weight (1.0): is the paper's 0.1 too weak to
      matter at this scale? (not part of the paper's ablation);
  (e) neither distillation nor bottleneck head: (b) without the head, the best model we
      found that trains without distillation, so the fair opponent of (a) and (d).
`--arms` picks the runs (default all five; every run needs (a)'s teachers). Runs (a) to (d)
train with the bottleneck head (`--bottleneck-weight`, default 0.5; 0 is the paper's design,
where the distillation collapses the bottleneck: README "Method notes"). Each model is
evaluated on held-out phantom cases with all 15 modality subsets. Besides the mean over the
15 subsets, the script reports what distillation is for: for each region, the mean Dice
over the subsets that lack the teacher (a) elected for that region (e.g. ET over the 7
subsets without T1ce), its differences to (b) and (e) paired by seed, and the bottleneck
spread (the mean distillation distance between two modalities' features; near 0 =
collapsed).

To keep each training under about ten minutes on 2 CPU cores, the phantoms are made at
1.5 mm (104 x 160 x 160 voxels, the same brain as a 1 mm BraTS case) and the models train
on that grid with 48^3 patches (72 mm). A finished run keeps its result in
WORK/run-<arm>-s<seed>/result.json and is not trained again, so seeds can be added later.
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

from lckd.base.labels import REGIONS
from lckd.base.modalities import MODALITIES, all_subsets, subset_key
from lckd.inference import Segmenter, SegmentOptions
from lckd.io.datasets import write_split
from lckd.research.evaluate import evaluate_cases, format_table
from lckd.research.phantom import write_phantom_dataset
from lckd.research.training.data import load_cases, select_cases
from lckd.research.training.election import tumour_box
from lckd.research.training.presets import TrainConfig
from lckd.research.training.trainer import RunOptions, Trainer

ARMS = ("a", "b", "c", "d", "e")


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
    p.add_argument("--bottleneck-weight", type=float, default=0.5,
                   help="weight of the bottleneck head's loss in runs (a) to (d) (0: no head, the paper's design)")
    p.add_argument("--seeds", default="0", help="training seeds, comma-separated; every arm runs with each")
    p.add_argument("--arms", default="a,b,c,d,e", help="runs to make, comma-separated among a, b, c, d, e")
    p.add_argument("--teacher-seed", type=int, default=2023, help="seed of the random fixed teacher of run (c)")
    p.add_argument("--threads", type=int, default=None)
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
    if key == "d":
        return {"label": "LCKD with KD 1.0", "overrides": {"kd_weight": 1.0}}
    return {"label": "no distillation, no bottleneck head",
            "overrides": {"kd_weight": 0.0, "election_every": 0, "bottleneck_weight": 0.0}}


def bottleneck_spread(net: torch.nn.Module, cases, patch: int) -> float:
    """Mean L1 distance between two modalities' bottleneck features (the distillation distance).

    Measured with all four scans on a training-size patch centred on each test case's tumour.
    Near 0 means the bottleneck no longer depends on the modality: distillation's trivial
    minimum, where it can transfer nothing.
    """
    dists = []
    for case in cases:
        x = torch.from_numpy(np.asarray(tumour_box(case, patch).x, dtype=np.float32))
        with torch.no_grad():
            f = net(x[None]).features[0]
        m = f.shape[0]
        dists += [(f[i] - f[j]).abs().mean().item() for i in range(m) for j in range(i + 1, m)]
    return float(np.mean(dists))


def train_and_evaluate(key: str, spec: dict, base: TrainConfig, work: Path, split: Path, test_cases, args) -> dict:
    """Train run `key` with `base`'s seed and evaluate it on `test_cases`; a finished run's result is reused."""
    cfg = base.with_overrides(**spec["overrides"])
    run_dir = work / f"run-{key}-s{cfg.seed}"
    cached = run_dir / "result.json"
    if cached.is_file():
        result = json.loads(cached.read_text())
        if result["config"] == cfg.to_dict():
            print(f"reusing {cached}", flush=True)
            return result
    opts = RunOptions(data=str(work / "data"), split=str(split), out=str(run_dir), name=f"ablation-{key}",
                      threads=args.threads, final_eval=False, progress=True)
    t0 = time.perf_counter()
    trainer = Trainer(cfg, opts)
    trainer.train()
    seconds = time.perf_counter() - t0
    trainer.net.eval()
    seg = Segmenter(trainer.net, trainer.card(), torch.device("cpu"))
    report = evaluate_cases(seg, test_cases(trainer.order), options=SegmentOptions(postprocess=False))
    spread = bottleneck_spread(trainer.net, test_cases(trainer.order), args.patch)
    history = trainer.meta["history"]
    result = {"label": spec["label"], "config": cfg.to_dict(), "train_seconds": round(seconds, 1),
              "bottleneck_spread": round(spread, 4),
              "teachers": trainer.meta["teachers"], "election": history[-1] if history else None,
              "per_subset": report["per_subset"], "mean": report["mean"], "cases": report["cases"]}
    cached.write_text(json.dumps(result, indent=1) + "\n")
    return result


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


def _mean_sd(values: list[float], signed: bool = False) -> str:
    return f"{np.mean(values):{'+' if signed else ''}.3f}" + (
        f" ± {np.std(values, ddof=1):.3f}" if len(values) > 1 else "")


def paired_differences(runs: dict, key: str, base: str) -> list[float]:
    """Per seed, run `key`'s without-teacher mean minus run `base`'s (same data, initial weights, batches)."""
    return [runs[seed][key]["lacking_teacher"]["mean"] - runs[seed][base]["lacking_teacher"]["mean"]
            for seed in runs]


def summary_markdown(runs: dict, args) -> str:
    """runs: {seed: {arm: result}}; a table over seeds, the paired differences, each arm's 15 subsets (first seed)."""
    seeds = list(runs)
    arms = list(runs[seeds[0]])
    teachers = {seed: runs[seed]["a"]["region_teachers"] for seed in seeds}
    lines = [f"Budget per run: {args.warmup_steps} + {args.missing_steps} steps, batch 2, {args.patch}^3 patches "
             f"at {args.spacing:g} mm, bottleneck head weight {args.bottleneck_weight:g} (none in (e)); "
             f"{args.train_cases} training, {args.val_cases} validation and {args.test_cases} test phantoms; "
             "training seeds " + ", ".join(map(str, seeds)) + ". Teachers (a) elected, per seed: "
             + "; ".join(f"{seed}: " + ", ".join(f"{r} {m}" for r, m in t.items()) for seed, t in teachers.items())
             + ".", "",
             "Mean ± SD over the seeds. \"Without teacher\": per region, the mean Dice over the 7 subsets "
             "lacking the scan (a) elected for it; the last Dice column averages the three regions.", "",
             "| run | Dice ET | TC | WT | without teacher: ET | TC | WT | mean | per seed "
             "| bottleneck spread | train s |",
             "|---|---:|---:|---:|---:|---:|---:|---:|---|---:|---:|"]
    for key in arms:
        res = [runs[seed][key] for seed in seeds]
        cells = [_mean_sd([r["mean"][reg] for r in res]) for reg in REGIONS]
        cells += [_mean_sd([r["lacking_teacher"][reg] for r in res]) for reg in REGIONS + ("mean",)]
        cells.append(" / ".join(f"{r['lacking_teacher']['mean']:.3f}" for r in res))
        cells.append(_mean_sd([r["bottleneck_spread"] for r in res]))
        cells.append(f"{np.mean([r['train_seconds'] for r in res]):.0f}")
        lines.append(f"| ({key}) {res[0]['label']} | " + " | ".join(cells) + " |")
    bases = [b for b in ("b", "e") if b in arms]
    if bases:
        lines += ["", "Paired differences of the without-teacher mean (same seed: same data, initial weights "
                  "and batches): mean ± SD over the seeds, seeds where the run is higher, per seed.", "",
                  "| run | " + " | ".join(f"minus ({b}) | higher | per seed" for b in bases) + " |",
                  "|---|" + "---:|---:|---|" * len(bases)]
        for key in arms:
            if key in bases:
                continue
            cells = []
            for b in bases:
                diffs = paired_differences(runs, key, b)
                cells += [_mean_sd(diffs, signed=True), f"{sum(d > 0 for d in diffs)}/{len(diffs)}",
                          " / ".join(f"{d:+.3f}" for d in diffs)]
            lines.append(f"| ({key}) | " + " | ".join(cells) + " |")
    for key in arms:
        res = runs[seeds[0]][key]
        lines += ["", f"### ({key}) {res['label']}, seed {seeds[0]}: 15 subsets", "",
                  format_table({"per_subset": res["per_subset"], "mean": res["mean"]})]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    args = parse_args(argv)
    arms = [a.strip() for a in args.arms.split(",") if a.strip()]
    if "a" not in arms or set(arms) - set(ARMS):
        raise SystemExit("--arms: a comma-separated choice among a, b, c, d, e that includes a")
    seeds = [int(x) for x in args.seeds.split(",")]
    out = Path(args.out)
    work = Path(args.work) if args.work else out / "work"
    work.mkdir(parents=True, exist_ok=True)
    if args.threads:
        torch.set_num_threads(args.threads)
    split = make_data(work, args)
    loaded: dict = {}

    def test_cases(order: list[str]) -> list:
        """The test phantoms on the model grid, read once (every run shares grid and preprocessing)."""
        if tuple(order) not in loaded:
            grid = TrainConfig(spacing=(args.spacing,) * 3)
            loaded[tuple(order)] = load_cases(select_cases(work / "data", split, "test"), grid, order,
                                              dtype=np.float32)
        return loaded[tuple(order)]

    runs: dict = {}
    for seed in seeds:
        base = TrainConfig(preset="ablation", network="lite", patch=(args.patch,) * 3, batch=2,
                           warmup_steps=args.warmup_steps, missing_steps=args.missing_steps, optimizer="adamw",
                           lr=2e-3, weight_decay=1e-4, election_every=args.election_every, election_cases=0,
                           election_box=0, checkpoint_every=10 ** 9, seed=seed, spacing=(args.spacing,) * 3,
                           bottleneck_weight=args.bottleneck_weight)
        results: dict = {}
        for key in [k for k in ARMS if k in arms]:
            spec = variant(key, results["a"]["teachers"] if "a" in results else None, args)
            print(f"\n=== seed {seed}, run ({key}): {spec['label']} ===", flush=True)
            results[key] = train_and_evaluate(key, spec, base, work, split, test_cases, args)
        teachers = region_teachers(results["a"]["election"])
        results["a"]["region_teachers"] = teachers
        for res in results.values():
            res["lacking_teacher"] = lacking_teacher_means(res, teachers)
        runs[seed] = results
    text = summary_markdown(runs, args)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ablation.md").write_text(text)
    (out / "ablation.json").write_text(json.dumps({"runs": runs, "args": vars(args)}, indent=2) + "\n")
    print("\n" + text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
