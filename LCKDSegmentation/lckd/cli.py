"""The `lckd` command line: segment, batch, info, phantom, demo, train, evaluate.

Heavy modules (torch, MONAI) are imported inside the commands so `lckd --help` is instant.
Every user-facing failure is an LCKDError: printed as one line, exit status 1.
"""
from __future__ import annotations

import argparse
import sys
from typing import Callable, Sequence

from .errors import LCKDError
from .labels import CONVENTIONS, check_convention

EPILOG = """examples:
  lckd demo                                   segment the bundled sample case
  lckd segment --t2 t2.nii.gz --flair flair.nii.gz -o seg.nii.gz
  lckd segment --t1ce t1c.nrrd -o seg.seg.nrrd --labels brats2023
  lckd batch /data/BraTS2021 /out --device cuda
  lckd info
  lckd split /data/BraTS2021 -o split.csv && lckd train /data/BraTS2021 --split split.csv --preset paper --out run
"""


def _progress_bar(enabled: bool) -> tuple[Callable[[float, str], None], Callable[[], None]]:
    """A tqdm bar driven by (fraction, message) callbacks, and a function that closes it."""
    if not enabled:
        return (lambda f, m: None), (lambda: None)
    from tqdm import tqdm

    bar = tqdm(total=100, unit="%", bar_format="{desc:<28}{percentage:3.0f}%|{bar}| {elapsed}", file=sys.stderr)

    def update(fraction: float, message: str) -> None:
        bar.set_description_str(message[:28])
        bar.n = int(round(100 * fraction))
        bar.refresh()

    return update, bar.close


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="registry name, model card (.json) or folder (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: the cores available to this process: "
                        "CPU affinity and cgroup quota)")


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default="brats2018", metavar="{" + ",".join(CONVENTIONS) + "}",
                   help="label values: brats2018 (1 core, 2 oedema, 4 enhancing; default) or brats2023 (enhancing = 3)")
    p.add_argument("--postprocess", action="store_true",
                   help="drop tiny components; relabel ET under 500 voxels as core (BraTS-style clean-up)")
    p.add_argument("--register", action="store_true",
                   help="rigidly co-register the inputs onto the reference first (mutual information)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the model card's)")
    p.add_argument("--sw-batch-size", type=int, default=1, help="windows per network call (more is faster on GPUs)")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="refuse a case whose estimated memory exceeds GB (default: $LCKD_MAX_MEMORY_GB, "
                        "else 80%% of this machine's memory)")


# Commands defined in modules that load torch (or MONAI) when imported: each is listed with
# its one-line help and built in full only when it is the command being run, so `lckd
# --help` and the other commands never import torch. The help must equal the module's own
# (test_light_imports checks it).
LAZY_COMMANDS = {
    "demo": ("lckd.demo", "add_demo_parser", "segment the bundled sample case and save a picture"),
    "train": ("lckd.training.command", "add_train_parser",
              "train an LCKD model (teacher election + cross-modal distillation)"),
    "evaluate": ("lckd.evaluate", "add_evaluate_parser",
                 "Dice and HD95 for all 15 modality subsets on a labelled data set"),
    "crossval": ("lckd.crossval", "add_crossval_parser",
                 "k-fold cross-validation: train and evaluate one model per fold"),
}


def _command_of(argv: Sequence[str]) -> str | None:
    """The subcommand named in `argv` (the first word that is not an option)."""
    return next((a for a in argv if not a.startswith("-")), None)


def build_parser(argv: Sequence[str] | None = None) -> argparse.ArgumentParser:
    """The `lckd` parser. With `argv`, of the commands in LAZY_COMMANDS only the one `argv`
    names is built in full (the others get their help line); without, all are."""
    lazy_full = set(LAZY_COMMANDS) if argv is None else {_command_of(argv)}
    parser = argparse.ArgumentParser(
        prog="lckd", formatter_class=argparse.RawDescriptionHelpFormatter, epilog=EPILOG,
        description="Brain-tumour segmentation from any subset of T1, T1ce, T2 and FLAIR (LCKD network).")
    from . import __version__
    parser.add_argument("--version", action="version", version=f"lckd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("segment", help="segment one case from any subset of scans",
                       description="Segment one case. Give any non-empty subset of the four scans "
                                   "(NIfTI, NRRD, MHA, or a DICOM series folder).")
    for mod, flag in (("T1", "--t1"), ("T1ce", "--t1ce"), ("T2", "--t2"), ("FLAIR", "--flair")):
        p.add_argument(flag, dest=mod, metavar="FILE", help=f"{mod} image")
    p.add_argument("-o", "--output", required=True,
                   help="output labelmap (.nii.gz, .nrrd, .mha) or Slicer segmentation (.seg.nrrd)")
    p.add_argument("--probabilities", metavar="DIR", help="also write ET/TC/WT probability maps into DIR")
    p.add_argument("--reference", default=None,
                   help="modality whose grid the output uses (default: T1ce, FLAIR, T1, T2, first given)")
    _add_model_options(p)
    _add_segment_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("batch", help="segment every case of a BraTS-layout folder",
                       description="Segment every case folder under IN_DIR (BraTS 2018-2021 or 2023 layout), "
                                   "with whatever modalities each case has. Cases already done are skipped. "
                                   "Under torchrun each rank takes its share; --shard K/N does the same for "
                                   "schedulers that start N independent processes.")
    p.add_argument("input_dir")
    p.add_argument("output_dir")
    p.add_argument("--format", default="nii.gz", choices=["nii.gz", "seg.nrrd", "nrrd"], help="output file type")
    p.add_argument("--shard", default=None, metavar="K/N", help="process only share K (0-based) of N")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    _add_model_options(p)
    _add_segment_options(p)
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("info", help="show a model card", description="Show a model card in readable form.")
    p.add_argument("--model", default=None, help="registry name, model card (.json) or folder")
    p.add_argument("--list", action="store_true", help="list the models of the registry")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("phantom", help="write synthetic BraTS-like phantom cases",
                       description="Write N synthetic phantom cases (4 modalities + ground truth).")
    p.add_argument("output_dir")
    p.add_argument("-n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--layout", default="brats2023", choices=["brats2018", "brats2023"])
    p.add_argument("--shape", default="155,240,240", help="z,y,x voxels (default BraTS 155,240,240)")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("split", help="write a train/val/test split file for a data folder",
                       description="Write a case_id,split CSV (train / val / test) for the cases under DATA_DIR, "
                                   "for `lckd train --split` and `lckd evaluate --split`. Deterministic for a seed.")
    p.add_argument("data_dir")
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    p.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test fractions (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=0)
    p.set_defaults(func=cmd_split)

    for name, (module, adder, summary) in LAZY_COMMANDS.items():
        if name in lazy_full:
            _add_lazy(sub, name, module, adder)
        else:
            sub.add_parser(name, help=summary)
    return parser


def _add_lazy(sub, name: str, module: str, adder: str) -> None:
    """Register a subcommand defined in another module (imported only if present)."""
    import importlib

    try:
        getattr(importlib.import_module(module), adder)(sub)
    except ImportError as e:  # a missing optional part must not break the other commands
        p = sub.add_parser(name, help=f"(unavailable: {e})")
        p.set_defaults(func=lambda args, e=e: _unavailable(name, e))


def _unavailable(name: str, e: Exception) -> int:
    raise LCKDError(f"'lckd {name}' is unavailable: {e}")


def print_volumes(volumes: dict, modalities: Sequence[str]) -> None:
    print(f"modalities used: {', '.join(modalities)}")
    print(f"{'region':<34}{'volume (mL)':>12}")
    names = {"NCR": "necrotic / non-enhancing core (NCR)", "ED": "peritumoral oedema (ED)",
             "ET": "enhancing tumour (ET)", "TC": "tumour core (TC = NCR+ET)", "WT": "whole tumour (WT)"}
    for key in ("NCR", "ED", "ET", "TC", "WT"):
        print(f"{names[key]:<34}{volumes[key]:>12.2f}")


def cmd_segment(args) -> int:
    from .modelcard import read_card
    from .options import check_run_options
    from .output import check_output_path, check_probability_dir, write_result
    from .registry import resolve_model
    from .validation import check_memory, read_and_check

    inputs = {m: getattr(args, m) for m in ("T1", "T1ce", "T2", "FLAIR") if getattr(args, m)}
    if not inputs:
        raise LCKDError("no input image given: use at least one of --t1, --t1ce, --t2, --flair")
    # Everything that can be refused is refused before the model loads (seconds), in this order:
    # options, outputs, inputs, the model card, the memory the case needs.
    check_run_options(overlap=args.overlap, sw_batch_size=args.sw_batch_size, threads=args.threads,
                      device=args.device, max_memory_gb=args.max_memory)
    check_convention(args.labels)
    check_output_path(args.output, inputs.values())
    if args.probabilities:
        check_probability_dir(args.probabilities, inputs.values())
    checked = read_and_check(inputs, args.reference)
    card_path = resolve_model(args.model)
    check_memory(checked, read_card(card_path).spacing, args.max_memory)
    from .inference import Segmenter

    update, close = _progress_bar(not args.quiet)
    try:
        seg = Segmenter.load(card_path, device=args.device, threads=args.threads)
        res = seg.segment(checked, labels=args.labels, register=args.register,
                          probabilities=bool(args.probabilities), postprocess=args.postprocess,
                          overlap=args.overlap, sw_batch_size=args.sw_batch_size, progress=update,
                          max_memory_gb=args.max_memory)
    finally:
        close()
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    write_result(res, [args.output], probabilities_dir=args.probabilities)
    print_volumes(res.volumes_ml, res.modalities)
    print(f"wrote {args.output}  ({res.timings['total']:.1f} s on {seg.device.type})")
    return 0


def cmd_batch(args) -> int:
    from .batch import run_batch

    return run_batch(args)


def cmd_info(args) -> int:
    from .modelcard import card_summary, read_card
    from .registry import list_models, resolve_model

    if args.list:
        for e in list_models():
            print(f"{e.name:<28}{'bundled' if e.bundled else 'download'}  {e.description}")
        return 0
    card = read_card(resolve_model(args.model, allow_download=False))
    for k, v in card_summary(card).items():
        print(f"{k + ':':<22}{v}")
    if card.description:
        print(f"\n{card.description}")
    table = card.evaluation.get("per_subset", {})
    if table:
        print(f"\nexpected Dice per modality subset ({card.evaluation.get('data', 'held-out cases')}):")
        print(f"{'subset':<22}{'ET':>7}{'TC':>7}{'WT':>7}")
        for key, row in table.items():
            print(f"{key:<22}" + "".join(f"{row.get(r, float('nan')):>7.3f}" for r in ("ET", "TC", "WT")))
    return 0


def cmd_split(args) -> int:
    from .datasets import find_cases, make_split, write_split

    try:
        fractions = [float(f) for f in args.fractions.split(",")]
    except ValueError:
        raise LCKDError(f"--fractions must be three numbers like 0.7,0.15,0.15, got '{args.fractions}'") from None
    cases = find_cases(args.data_dir)
    splits = make_split([c.case_id for c in cases], fractions, seed=args.seed)
    write_split(args.output, splits)
    print(f"wrote {args.output}: " + ", ".join(f"{len(v)} {k}" for k, v in splits.items()))
    return 0


def cmd_phantom(args) -> int:
    from .phantom import write_phantom_dataset

    try:
        shape = tuple(int(s) for s in args.shape.split(","))
        assert len(shape) == 3 and min(shape) >= 16
    except (ValueError, AssertionError):
        raise LCKDError(f"--shape must be three integers >= 16 as z,y,x, got '{args.shape}'") from None
    if args.n < 1:
        raise LCKDError("-n must be at least 1")
    paths = write_phantom_dataset(args.output_dir, args.n, seed=args.seed, shape=shape, layout=args.layout,
                                  progress=True)
    print(f"wrote {len(paths)} phantom case(s) to {args.output_dir}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv)
    args = parser.parse_args(argv)
    args.argv = argv                       # kept for provenance (lckd train records its command)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    import os
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except LCKDError as e:
        _say(f"lckd {args.command}: error: {e}")
        return 1
    except KeyboardInterrupt:
        _say("interrupted")
        return 130
    except MemoryError:
        _say(f"lckd {args.command}: error: out of memory (lower --max-memory to refuse such cases early, "
             "or crop the scans)")
        return 1
    except Exception as e:
        if os.environ.get("LCKD_DEBUG"):
            raise
        first = (str(e).strip().splitlines() or [""])[0][:200]
        _say(f"lckd {args.command}: internal error: {type(e).__name__}: {first} "
             "(a bug: please report it; LCKD_DEBUG=1 shows the traceback)")
        return 1
    finally:
        if previous is not None:
            signal.signal(signal.SIGTERM, previous)


def _interrupt(signum, frame) -> None:
    # Schedulers stop jobs with SIGTERM: unwind like Ctrl-C, so every temporary file is removed.
    raise KeyboardInterrupt


def _say(text: str) -> None:
    """One line on stderr, printable whatever the locale or the bytes in file names."""
    try:
        print(text, file=sys.stderr)
    except UnicodeEncodeError:
        enc = getattr(sys.stderr, "encoding", None) or "ascii"
        print(text.encode(enc, "backslashreplace").decode(enc, "replace"), file=sys.stderr)


if __name__ == "__main__":
    sys.exit(main())
