"""`lckd train`: argument parsing and the entry point (also runnable as `python -m lckd.research.training.command`)."""
from __future__ import annotations

import argparse
import shlex
import sys

from .presets import DEFAULT_PRESET, NETWORK_NAMES, PRESETS, TrainConfig

EXAMPLES = """examples:
  lckd train /data/phantoms --split split.csv --preset cpu --out runs/lite
  lckd train /data/BraTS2021 --split split.csv --preset paper --device cuda --out runs/paper
  torchrun --nproc_per_node=4 -m lckd.frontends.cli train /data/BraTS2021 --split split.csv --preset paper --out runs/p4
  lckd train /data/phantoms --split split.csv --out runs/lite --resume
"""


def _triple(text: str) -> tuple:
    parts = [int(p) for p in text.replace("x", ",").split(",") if p]
    return tuple(parts * 3) if len(parts) == 1 else tuple(parts)


def fraction(text: str) -> float:
    """argparse type: a number from 0 to 1."""
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not 0.0 <= value <= 1.0:
        raise argparse.ArgumentTypeError(f"{text} is outside 0 to 1")
    return value


def add_train_parser(subparsers) -> argparse.ArgumentParser:
    """Register `lckd train`."""
    p = subparsers.add_parser(
        "train", help="train an LCKD model (teacher election + cross-modal distillation)",
        formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EXAMPLES,
        description="Train an LCKD network on a BraTS-layout folder (2018-2021 or 2023 names, or phantoms). "
                    "Warm-up with all modalities, then a random 1-3 of the 4 per sample; teachers are elected "
                    "on the split's val cases; the final model and its card go to --out. Under torchrun "
                    "it uses DistributedDataParallel (NCCL on GPUs, gloo on CPU).")
    p.add_argument("data", metavar="DATA_DIR", help="folder of case folders")
    p.add_argument("--split", metavar="CSV", default=None,
                   help="case_id,split file (train/val/test); without it every case trains and no election runs")
    p.add_argument("--out", required=True, metavar="DIR", help="output folder (model, checkpoint, log)")
    p.add_argument("--name", default="lckd-model", help="model name (file names and card)")
    p.add_argument("--version", default="0.1.0", help="model version for the card")
    p.add_argument("--description", default="", help="model card description")
    p.add_argument("--data-description", default="", help="what the training data is (for the card)")
    p.add_argument("--resume", action="store_true", help="continue from DIR/checkpoint exactly where it stopped")
    p.add_argument("--stop-at", type=int, default=None, metavar="STEP",
                   help="stop after STEP steps (checkpoint kept; continue later with --resume)")
    add_recipe_arguments(p)
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, auto")
    p.add_argument("--threads", type=int, default=None, help="CPU threads per process (default: all cores)")
    p.add_argument("--no-final-eval", action="store_true", help="skip the 15-subset validation table at the end")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_train)
    return p


def add_recipe_arguments(p: argparse.ArgumentParser) -> None:
    """The training recipe's options (`--preset` and its overrides), shared by `lckd train` and
    `lckd crossval` so that both accept the same recipe the same way."""
    p.add_argument("--preset", choices=sorted(PRESETS), default=DEFAULT_PRESET,
                   help=f"hyper-parameter preset (default: {DEFAULT_PRESET}, the bundled default model's recipe)")
    g = p.add_argument_group("overrides of the preset")
    g.add_argument("--network", choices=NETWORK_NAMES, default=None)
    g.add_argument("--patch", type=_triple, default=None, metavar="ZxYxX", help="e.g. 64 or 80x160x160")
    g.add_argument("--batch", type=int, default=None, help="samples per step and process")
    g.add_argument("--warmup-steps", type=int, default=None)
    g.add_argument("--missing-steps", type=int, default=None)
    g.add_argument("--optimizer", choices=["sgd", "adamw"], default=None)
    g.add_argument("--lr", type=float, default=None)
    g.add_argument("--momentum", type=float, default=None, help="SGD momentum (Nesterov)")
    g.add_argument("--kd-weight", type=float, default=None)
    g.add_argument("--balanced-subsets", action=argparse.BooleanOptionalAction, default=None,
                   help="missing-modality phase: draw the subset first, then a case that has its scans")
    g.add_argument("--centred-fraction", type=fraction, default=None, metavar="F",
                   help="share of crops centred on a tumour voxel (the rest anywhere in the volume)")
    g.add_argument("--bottleneck-weight", type=float, default=None,
                   help="weight of the bottleneck head's loss (0 = no head): stops the distillation "
                        "collapsing the bottleneck, at a small cost of its own (README, Method notes)")
    g.add_argument("--fixed-teachers", default=None, metavar="MODS",
                   help="distil from these modalities without election, e.g. T2 (ablation)")
    g.add_argument("--election-every", type=int, default=None, metavar="N", help="0 = never elect")
    g.add_argument("--election-cases", type=int, default=None)
    g.add_argument("--final-eval-cases", type=int, default=None)
    g.add_argument("--checkpoint-every", type=int, default=None)
    g.add_argument("--seed", type=int, default=None, help="training seed (crossval: also the fold shuffling; "
                                                           "default 0)")
    g.add_argument("--init-from", default=None, metavar="MODEL",
                   help="start from this model's weights (registry name or card; same --network unless "
                        "--init-partial), e.g. lckd-lite-phantom for phantom pre-training; 'none' for random weights")
    g.add_argument("--single-first", action=argparse.BooleanOptionalAction, default=None,
                   help="a third of the missing-modality samples are single scans drawn scan first (each scan equally)")
    g.add_argument("--lesion-mix", type=fraction, default=None, metavar="P", dest="lesion_mix_prob",
                   help="share of samples with another training case's tumour carved in (lesion mixing)")
    g.add_argument("--fabricate", type=fraction, default=None, metavar="P", dest="fabricate_prob",
                   help="share of samples with a fabricated tumour painted into tumour-free tissue at the start, "
                        "falling to none at --fabricate-until of the run")
    g.add_argument("--fabricate-until", type=fraction, default=None, metavar="F",
                   help="fraction of the run after which no tumour is fabricated (default 0.5)")
    g.add_argument("--init-partial", action=argparse.BooleanOptionalAction, default=None,
                   help="--init-from may be another network of the family (e.g. lite into lite-wide): "
                        "copy the tensors whose shapes match, start the rest fresh")


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The preset with the command line's overrides applied (`add_recipe_arguments`)."""
    from ...base.modalities import parse_subset
    fixed = parse_subset(args.fixed_teachers) if args.fixed_teachers else None
    init_from = "" if args.init_from == "none" else args.init_from
    return PRESETS[args.preset].with_overrides(
        network=args.network, patch=args.patch, batch=args.batch, warmup_steps=args.warmup_steps,
        missing_steps=args.missing_steps, optimizer=args.optimizer, lr=args.lr, momentum=args.momentum,
        kd_weight=args.kd_weight, balanced_subsets=args.balanced_subsets, centred_fraction=args.centred_fraction,
        bottleneck_weight=args.bottleneck_weight, fixed_teachers=fixed,
        election_every=args.election_every, election_cases=args.election_cases,
        final_eval_cases=args.final_eval_cases, checkpoint_every=args.checkpoint_every,
        seed=0 if args.seed is None else args.seed, init_from=init_from, init_partial=args.init_partial,
        lesion_mix_prob=args.lesion_mix_prob, single_first=args.single_first,
        fabricate_prob=args.fabricate_prob, fabricate_until=args.fabricate_until)


def run_train(args: argparse.Namespace) -> int:
    """`lckd train`: exit status 0 when the run (or its part up to --stop-at) finished."""
    from .trainer import RunOptions, Trainer, close_distributed

    cfg = config_from_args(args)
    # the card records how to reproduce the run (the program name shortened to `lckd`)
    command = shlex.join(["lckd"] + list(getattr(args, "argv", sys.argv[1:])))
    opts = RunOptions(data=args.data, out=args.out, split=args.split, name=args.name, version=args.version,
                      description=args.description, data_description=args.data_description,
                      device=args.device, threads=args.threads, resume=args.resume, stop_at=args.stop_at,
                      progress=not args.quiet, final_eval=not args.no_final_eval,
                      extra_training={"command": command, "seed": cfg.seed})
    try:
        Trainer(cfg, opts).train()
    finally:
        close_distributed()
    return 0


def main(argv=None) -> int:
    """Stand-alone entry point: `python -m lckd.research.training.command DATA --out DIR ...`."""
    from ...base.errors import LCKDError
    parser = argparse.ArgumentParser(prog="lckd")
    add_train_parser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["train"] + list(sys.argv[1:] if argv is None else argv))
    args.argv = ["train"] + list(sys.argv[1:] if argv is None else argv)
    try:
        return args.func(args)
    except LCKDError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
