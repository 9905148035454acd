"""The `lckd` command line: segment, batch, info, phantom, demo, train, evaluate.

Heavy modules (torch, MONAI) are imported inside the commands so `lckd --help` is instant.
Every user-facing failure is an LCKDError: printed as one line, exit status 1; usage errors
(argparse's, a name beginning with '-') exit with status 2.
"""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from ..base.errors import LCKDError
from ..base.optionchecks import BRAIN_EXTRACTORS, DEFAULT_BRAIN_EXTRACTOR, PREPROCESS_MODES
from ..base.segments import CONVENTIONS

EPILOG = """examples:
  lckd demo                                   segment the bundled sample case
  lckd segment --t2 t2.nii.gz --flair flair.nii.gz -o seg.nii.gz
  lckd segment --t1ce t1c.nrrd -o seg.seg.nrrd --labels brats2023
  lckd study /data/dicom/study1               list the series of a DICOM study and what each is
  lckd segment --study /data/dicom/study1 -o seg.dcm      recognise the scans, write a DICOM SEG
  lckd batch /data/BraTS2021 /out --device cuda
  lckd info
  lckd split /data/BraTS2021 -o split.csv && lckd train /data/BraTS2021 --split split.csv --preset paper --out run
"""


#: Scan options of `lckd segment`: the BraTS 2018-2021 name, then the BraTS 2023 alias.
SCAN_FLAGS = {"T1": ("--t1", "--t1n"), "T1ce": ("--t1ce", "--t1c"), "T2": ("--t2", "--t2w"),
              "FLAIR": ("--flair", "--t2f")}
#: `--format` names and the output suffix of each.
OUTPUT_FORMATS = {"nii.gz": ".nii.gz", "nii": ".nii", "nrrd": ".nrrd", "mha": ".mha", "seg.nrrd": ".seg.nrrd",
                  "dicom-seg": ".dcm"}


def _add_model_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--model", default=None,
                   help="registry name, model card (.json) or folder (default: the bundled model)")
    p.add_argument("--device", default="auto", help="auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N, mps")
    p.add_argument("--threads", type=int, default=None,
                   help="CPU threads for PyTorch (default: the cores available to this process: "
                        "CPU affinity and cgroup quota)")


def _add_segment_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--labels", default=None, metavar="{" + ",".join(CONVENTIONS) + "}",
                   help="label values: brats2018 (1 core, 2 oedema, 4 enhancing) or brats2023 (enhancing = 3) "
                        "(default: the model card's; brats2018 for the bundled models)")
    p.add_argument("--postprocess", action=argparse.BooleanOptionalAction, default=None,
                   help="clean up the labelmap: drop small tumour components, relabel ET under 500 voxels "
                        "as core (default: as the model card says; the bundled real-data model does)")
    p.add_argument("--register", action="store_true",
                   help="rigidly co-register the inputs onto the reference first (mutual information)")
    p.add_argument("--trust-flags", action="store_true",
                   help="segment even when the contrast check finds that a scan does not look like its flag "
                        "(it still warns)")
    p.add_argument("--preprocess", choices=PREPROCESS_MODES, default="auto",
                   help="raw scans (skull on, own grids): co-register, extract the brain, mask; auto (default) "
                        "does it when the scans look unstripped and says what it decided")
    p.add_argument("--brain-extractor", choices=sorted(BRAIN_EXTRACTORS), default=DEFAULT_BRAIN_EXTRACTOR,
                   help=f"brain extraction tool for raw scans (default {DEFAULT_BRAIN_EXTRACTOR}; needs the preprocess "
                        "extra: pip install \"lckd-segmentation[preprocess]\")")
    p.add_argument("--bias-correction", action="store_true",
                   help="raw scans: N4 bias-field correction inside the brain mask (about 0.5-1 s per scan)")
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap (default: the model card's)")
    p.add_argument("--mirrors", type=int, default=1, metavar="N",
                   help="average the network over N mirrored copies of each window: 1 (default), 2, 4 or 8; "
                        "N times the network time (README, Accuracy)")
    p.add_argument("--sw-batch-size", type=int, default=1, help="windows per network call (more is faster on GPUs)")
    p.add_argument("--max-memory", type=float, default=None, metavar="GB",
                   help="refuse a case whose estimated memory exceeds GB (default: $LCKD_MAX_MEMORY_GB, "
                        "else 80%% of this machine's memory)")


# Commands defined in modules that load torch (or MONAI) when imported: each is listed with
# its one-line help and built in full only when it is the command being run, so `lckd
# --help` and the other commands never import torch. The help must equal the module's own
# (test_light_imports checks it).
LAZY_COMMANDS = {
    "demo": ("lckd.frontends.demo", "add_demo_parser", "segment the bundled sample case and save a picture"),
    "train": ("lckd.research.training.command", "add_train_parser",
              "train an LCKD model (teacher election + cross-modal distillation)"),
    "evaluate": ("lckd.research.evaluate", "add_evaluate_parser",
                 "Dice and HD95 for all 15 modality subsets on a labelled data set"),
    "crossval": ("lckd.research.crossval", "add_crossval_parser",
                 "k-fold cross-validation: train and evaluate one model per fold"),
    "calibrate": ("lckd.research.calibration", "add_calibrate_parser",
                  "fit the per-run quality estimate on a cross-validation folder"),
    "study": ("lckd.frontends.studycommand", "add_study_parser",
              "list the series of a DICOM study folder and what each would be used as"),
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
    from .. import __version__
    parser.add_argument("--version", action="version", version=f"lckd {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")

    p = sub.add_parser("segment", help="segment one case from any subset of scans",
                       description="Segment one case. Give any non-empty subset of the four scans "
                                   "(NIfTI, NRRD, MHA, or a DICOM series folder), or a whole DICOM study with "
                                   "--study DIR (its T1, T1ce, T2 and FLAIR are recognised from the headers).")
    for mod, flags in SCAN_FLAGS.items():
        p.add_argument(*flags, dest=mod, metavar="FILE", help=f"{mod} image (alias {flags[1]}, the BraTS 2023 name); "
                                                              "with --study, a series number or UID, or 'none'")
    p.add_argument("--study", metavar="DIR",
                   help="a DICOM study folder (nested, DICOMDIR or none): every series is listed with what it is "
                        "used as and why; the scan flags then choose series (lckd study DIR lists without "
                        "segmenting)")
    p.add_argument("--format", default=None, choices=list(OUTPUT_FORMATS),
                   help="output type when -o has no suffix (dicom-seg: a DICOM SEG .dcm on the reference DICOM "
                        "series; default: the suffix of -o)")
    p.add_argument("--stack", metavar="FILE",
                   help="one 4D file holding the scans as channels (the Medical Segmentation Decathlon's brain "
                        "layout), with --channels naming them in the file's order")
    p.add_argument("--channels", metavar="LIST",
                   help="with --stack: the scan in each channel, in order, e.g. FLAIR,T1,T1ce,T2 (the Decathlon's)")
    p.add_argument("-o", "--output", required=True,
                   help="output labelmap (.nii.gz, .nrrd, .mha), Slicer segmentation (.seg.nrrd) or DICOM SEG "
                        "(.dcm; the reference scan must be DICOM)")
    p.add_argument("--probabilities", metavar="DIR",
                   help="also write ET/TC/WT probability maps into DIR as <output stem>_probability_<region>.nii.gz")
    p.add_argument("--json", nargs="?", const="", default=None, metavar="FILE",
                   help="write the result record (volumes, scans, model, options, warnings, stage times) as JSON "
                        "to FILE; without FILE, next to the output as <output stem>.json")
    p.add_argument("--preview", metavar="PNG",
                   help="save a picture: region outlines on T1ce and FLAIR (or the scans given) at the slice "
                        "with the most tumour, with volumes and the model's scope")
    p.add_argument("--reference", default=None,
                   help="modality whose grid the output uses (default: T1ce, FLAIR, T1, T2, first given)")
    p.add_argument("--brain-mask", metavar="FILE",
                   help="also write the extracted brain mask (raw-scan preprocessing) on the output's grid")
    _add_model_options(p)
    _add_segment_options(p)
    p.add_argument("-q", "--quiet", action="store_true", help="no stage progress (the result is still printed)")
    p.add_argument("-v", "--verbose", action="store_true", help="print the time of every stage at the end")
    p.set_defaults(func=cmd_segment)

    p = sub.add_parser("batch", help="segment every case of a folder (BraTS, nnU-Net layout or DICOM studies)",
                       description="Segment every case under IN_DIR: BraTS 2018-2021 or 2023 case folders, an "
                                   "nnU-Net-style folder of <case>_0000.nii.gz ... files (with --channels), or "
                                   "DICOM study folders (scans recognised from the headers, listed per study), with "
                                   "whatever modalities each case has. Writes OUT_DIR/<case>.<format>, its record "
                                   "<case>.json and summary.csv/.json. Cases already done are skipped (their "
                                   "volumes are kept in the summary). Under torchrun each rank takes its share; "
                                   "--shard K/N does the same for schedulers that start N independent processes "
                                   "(then merge with lckd batch-merge).")
    p.add_argument("input_dir", help="folder of case folders (or of nnU-Net-style files, or of DICOM studies)")
    p.add_argument("output_dir", help="where the outputs, records and summary go")
    p.add_argument("--format", default="nii.gz", choices=["nii.gz", "seg.nrrd", "nrrd", "dicom-seg"],
                   help="output file type (default nii.gz; seg.nrrd is a Slicer segmentation; dicom-seg a DICOM "
                        "SEG <case>.dcm, for DICOM studies only)")
    p.add_argument("--studies", action="store_true",
                   help="each sub-folder of IN_DIR is a DICOM study (found without it when IN_DIR holds DICOM "
                        "files and no NIfTI case): its scans are recognised from the headers, as lckd study lists")
    for mod, flags in SCAN_FLAGS.items():
        p.add_argument(*flags, dest=mod, metavar="SERIES",
                       help=f"DICOM studies: the series to use as {mod} in every study (number or UID; 'none' "
                            "leaves it out); a study without it fails its row")
    p.add_argument("--modalities", default=None, metavar="LIST",
                   help="use only these scans of each case, e.g. t1ce,flair (default: every scan a case has)")
    p.add_argument("--channels", default=None, metavar="LIST",
                   help="nnU-Net-style input: the scan of each channel in order, e.g. T1,T1ce,T2,FLAIR "
                        "(<case>_0000 is the first)")
    p.add_argument("--probabilities", metavar="DIR",
                   help="also write ET/TC/WT probability maps into DIR as <case>_probability_<region>.nii.gz")
    p.add_argument("--shard", default=None, metavar="K/N", help="process only share K (0-based) of N")
    p.add_argument("--overwrite", action="store_true", help="redo cases whose output exists")
    p.add_argument("--brain-masks", action="store_true",
                   help="also write each case's extracted brain mask (raw-scan preprocessing) as "
                        "OUT_DIR/<case>_brainmask.nii.gz")
    _add_model_options(p)
    _add_segment_options(p)
    p.add_argument("-q", "--quiet", action="store_true",
                   help="print only failures (as they happen) and the final counts, no line per case")
    p.set_defaults(func=cmd_batch)

    p = sub.add_parser("batch-merge", help="merge the shard summaries of lckd batch --shard",
                       description="Merge OUT_DIR/summary-part-K-of-N.json (written by lckd batch --shard K/N) "
                                   "into OUT_DIR/summary.csv and summary.json; every part must be there.")
    p.add_argument("output_dir", help="the batch output folder holding the parts")
    p.set_defaults(func=cmd_batch_merge)

    p = sub.add_parser("info", help="show a model card", description="Show a model card in readable form.")
    p.add_argument("--model", default=None, help="registry name, model card (.json) or folder")
    p.add_argument("--list", action="store_true", help="list the models of the registry")
    p.set_defaults(func=cmd_info)

    p = sub.add_parser("phantom", help="write synthetic BraTS-like phantom cases",
                       description="Write N synthetic phantom cases (4 modalities + ground truth).")
    p.add_argument("output_dir", help="folder to write the case folders into")
    p.add_argument("-n", type=int, default=1, help="number of cases (default 1)")
    p.add_argument("--seed", type=int, default=0, help="seed of the first case (default 0); case i uses seed + i")
    p.add_argument("--layout", default="brats2023", choices=["brats2018", "brats2023"],
                   help="file names: brats2023 (<case>-t1n.nii.gz ..., default) or brats2018 (<case>_t1.nii.gz ...)")
    p.add_argument("--shape", default="155,240,240", help="z,y,x voxels (default BraTS 155,240,240)")
    p.add_argument("--raw", action="store_true",
                   help="write what a scanner writes instead: skull, scalp and neck, a 3D 1 mm T1ce and 2D "
                        "axial T1/T2/FLAIR series (4-6 mm slices, own grids), bias fields; with the true brain "
                        "mask (<case>-brainmask.nii.gz) and labels on the T1ce grid")
    p.add_argument("--dicom", metavar="VENDOR", default=None,
                   help="write each case as a DICOM study instead, in one vendor's header conventions (siemens, "
                        "ge, philips, canon, or unnamed: physics only), with a localizer, a reformat, DWI/ADC and "
                        "a screen save besides the four scans (<case>/S0002/IM0001 ...)")
    p.add_argument("--multiframe", action="store_true",
                   help="with --dicom: each scan as one Enhanced MR file (per-frame functional groups)")
    p.add_argument("--compression", choices=["rle", "jpeg2000", "jpeg-lossless"], default=None,
                   help="with --dicom: the scans' pixels in this lossless transfer syntax (RLE Lossless, JPEG 2000 "
                        "Lossless, JPEG Lossless SV1)")
    p.set_defaults(func=cmd_phantom)

    p = sub.add_parser("split", help="write a train/val/test split file for a data folder",
                       description="Write a case_id,split CSV (train / val / test) for the cases under DATA_DIR, "
                                   "for `lckd train --split` and `lckd evaluate --split`. Deterministic for a seed.")
    p.add_argument("data_dir", help="folder of BraTS-layout case folders")
    p.add_argument("-o", "--output", required=True, help="CSV file to write")
    p.add_argument("--fractions", default="0.7,0.15,0.15", help="train,val,test fractions (default 0.7,0.15,0.15)")
    p.add_argument("--seed", type=int, default=0, help="seed of the shuffle (default 0)")
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


def cmd_segment(args) -> int:
    import time

    from ..base.optionchecks import check_process_options
    from ..base.terminal import device_line, print_volumes
    from ..inference.inputchecks import check_memory, read_and_check
    from ..inference.options import SegmentOptions
    from ..inference.record import model_line, output_stem, scans_line, sidecar_path
    from ..inference.resultfiles import check_output_path, check_probability_dir, write_result
    from ..io.filetypes import is_dicom_seg
    from ..model.modelcard import read_card
    from ..model.registry import resolve_model
    from ..prep.brainextract import check_installed
    from .progress import StageProgress

    args.output = output_with_format(args.output, args.format)
    inputs = {m: getattr(args, m) for m in SCAN_FLAGS if getattr(args, m)}
    study, names, protected = None, None, list(inputs.values())
    if args.study:
        from .studycommand import study_inputs
        study, inputs, names = study_inputs(args)
        protected = study.files()
    elif args.stack or args.channels:
        inputs = stack_inputs(args.stack, args.channels, given=inputs)
        protected = list(inputs.values())
    if not inputs:
        raise LCKDError("no input image given: use at least one of --t1, --t1ce, --t2, --flair "
                        "(or --t1n, --t1c, --t2w, --t2f)")
    t0 = time.perf_counter()
    progress = StageProgress(quiet=args.quiet)
    # Everything that can be refused is refused before the model loads (seconds), in this order:
    # options, outputs, inputs, the model card, the memory the case needs.
    options = SegmentOptions.from_args(args)
    check_process_options(threads=args.threads, device=args.device)
    check_output_path(args.output, protected)
    stem = output_stem(args.output)
    if args.probabilities:
        check_probability_dir(args.probabilities, protected, stem=stem)
    json_path = None
    if args.json is not None:
        json_path = sidecar_path(args.output) if args.json == "" else args.json
        _check_side_file(json_path, ".json", protected, "result record")
    if args.preview:
        _check_side_file(args.preview, ".png", protected, "preview")
    if args.brain_mask:
        check_output_path(args.brain_mask, protected, what="brain mask")
    check_installed(options.preprocess, options.brain_extractor)
    progress.stage("read")
    # read and checked once: `Segmenter.segment` takes these checked images as they are
    checked = read_and_check(inputs, args.reference, names=names)
    dicom_source = None
    if is_dicom_seg(str(args.output)):
        from .studycommand import reference_series_files
        dicom_source = reference_series_files(checked, study)
        if not dicom_source:
            raise LCKDError(f"cannot write DICOM SEG '{args.output}': the reference scan ({checked.reference}) is "
                            "not a DICOM series; give the study with --study DIR or the scans as DICOM folders")
    card_path = resolve_model(args.model)
    card = read_card(card_path)
    check_memory(checked, card.spacing, options.max_memory_gb)
    print(model_line(card))
    print(scans_line(checked.sources, checked.reference))
    progress.stage("load")
    from ..inference.segmenter import Segmenter

    try:
        seg = Segmenter.load(card_path, device=args.device, threads=args.threads)
        print(device_line(seg, args.device), flush=True)
        res = seg.segment(checked, options, progress=progress)
        print(f"preprocess: {res.preprocessing}", flush=True)
        for w in res.warnings:
            print(f"warning: {w}", file=sys.stderr)
        for n in res.notes:
            print(f"note: {n}", file=sys.stderr)
        progress.stage("write")
        mask_file = args.brain_mask if args.brain_mask and res.brain_mask is not None else None
        if args.brain_mask and mask_file is None:
            print("warning: no brain mask written: raw-scan preprocessing did not run (use --preprocess on)",
                  file=sys.stderr)
        written = write_result(res, [args.output], probabilities_dir=args.probabilities, probabilities_stem=stem,
                               brain_mask_file=mask_file, inputs=protected, dicom_source=dicom_source,
                               model=seg.model_record())
        # written: the labelmap, the probability maps, then the mask if asked for
        n_probs = len(written) - 1 - (mask_file is not None)
        probs, outputs = written[1:1 + n_probs], [written[0]] + written[1 + n_probs:]
        if args.preview:
            save_result_preview(res, checked.images, args.preview, seg.card, title=f"{stem}: LCKD segmentation")
            outputs.append(args.preview)
        timings = dict(res.timings, read=progress.times.get("read", 0.0) + res.timings.get("read", 0.0),
                       load=progress.times.get("load", 0.0), write=time.perf_counter() - progress.started,
                       total=time.perf_counter() - t0)
        if json_path is not None:
            from ..inference.record import run_record, write_record
            write_record(run_record(seg, res, options, outputs=outputs, probabilities=probs, timings=timings,
                                    study=study.record() if study is not None else None), json_path)
            outputs.append(json_path)
    finally:
        progress.close()
    print_volumes(res.volumes_ml, res.modalities)
    from ..inference.quality import summary_line

    print(summary_line(res.quality))
    for path in outputs + probs:
        print(f"wrote {path}")
    if args.verbose:
        print("stage times: " + ", ".join(f"{k} {v:.2f} s" for k, v in timings.items() if k != "total"))
    print(f"done in {timings['total']:.1f} s on {seg.device.type}")
    return 0


def output_with_format(output: str, fmt: str | None) -> str:
    """`-o` with `--format`'s suffix added when it has none of the output suffixes; refused when it has another."""
    if fmt is None:
        return output
    suffix = OUTPUT_FORMATS[fmt]
    lower = str(output).lower()
    if lower.endswith(suffix) and not (suffix == ".nrrd" and lower.endswith(".seg.nrrd")):
        return output
    if any(lower.endswith(s) for s in OUTPUT_FORMATS.values()):
        raise LCKDError(f"-o '{output}' and --format {fmt} disagree: name the output with {suffix}, or leave "
                        "--format out")
    return str(output) + suffix


def stack_inputs(stack: str | None, channels: str | None, given: dict) -> dict:
    """The scans of `--stack FILE --channels LIST` (`imageio.StackChannel`s), refused in one line when
    either is missing, when single scans are given too, or when the channel names are not unique."""
    from ..io.pathcheck import shown_path
    from ..io.stacks import StackChannel, parse_channels

    if not stack:
        raise LCKDError("--channels names the channels of a --stack file: give --stack FILE too")
    if not channels:
        raise LCKDError(f"--stack '{shown_path(stack)}': name its channels in the file's order with --channels, "
                        "e.g. --channels FLAIR,T1,T1ce,T2 (the Medical Segmentation Decathlon's order)")
    if given:
        raise LCKDError("give the scans either as --stack FILE --channels LIST or as --t1/--t1ce/--t2/--flair, "
                        "not both")
    names = parse_channels(channels) or []
    return {m: StackChannel(stack, i, len(names)) for i, m in enumerate(names)}


def _check_side_file(path, suffix: str, inputs, what: str) -> None:
    """Refuse (before the model loads) a side output with the wrong suffix, unwritable, or an input."""
    from ..base.errors import OutputError
    from ..inference.resultfiles import refuse_input_overwrite
    from ..io.atomicwrite import probe_writable
    from ..io.pathcheck import shown_path

    if not str(path).lower().endswith(suffix):
        raise OutputError(f"cannot write {what} '{shown_path(path)}': its name must end in {suffix}")
    refuse_input_overwrite([path], inputs)
    try:
        probe_writable(path, what)
    except OSError as e:
        raise OutputError(f"cannot write {what} '{shown_path(path)}': {e.strerror or e}") from None


def save_result_preview(res, images: dict, path, card, reference_label=None, title: str = "") -> None:
    """The `--preview` picture of a result: outlines on T1ce and FLAIR (else the scans used)."""
    from .preview import result_figure

    result_figure(res, images, path, card, reference_label=reference_label,
                  title=title or "LCKD segmentation")


def cmd_batch(args) -> int:
    from .batchcommand import run_batch

    return run_batch(args)


def cmd_batch_merge(args) -> int:
    from .batchcommand import run_merge

    return run_merge(args)


def cmd_info(args) -> int:
    from ..model.modelcard import read_card
    from ..model.registry import list_models, resolve_model

    if args.list:
        for e in list_models():
            print(f"{e.name:<28}{'bundled' if e.bundled else 'download'}  {e.description}")
        return 0
    card = read_card(resolve_model(args.model, allow_download=False))
    print(card_text(card))
    print(_wrap("raw scans", _extractors_line()))
    return 0


def _extractors_line() -> str:
    """Which brain extractors (raw-scan preprocessing) are installed, found without importing them."""
    from ..base.optionchecks import BRAIN_EXTRACTORS, DEFAULT_BRAIN_EXTRACTOR
    from ..prep.brainextract import INSTALL_HINT, extractor_available

    have = [n + (" (default)" if n == DEFAULT_BRAIN_EXTRACTOR else "") for n in BRAIN_EXTRACTORS
            if extractor_available(n)]
    if have:
        return "brain extraction with " + ", ".join(have) + " installed (--preprocess auto|on|off)"
    return f"no brain extractor installed: --preprocess on is refused, auto segments as given; {INSTALL_HINT}"


def _wrap(label: str, text: str, width: int = 100) -> str:
    """'label:  text' with the text wrapped under itself."""
    import textwrap

    return textwrap.fill(str(text), width=width, initial_indent=f"{label + ':':<22}", subsequent_indent=" " * 22)


def dice_cell(row: dict, region: str) -> str:
    """'0.812' or, from cross-validation, '0.812 +/- 0.041' (the SD over folds; a real plus-minus
    sign where stdout can print it)."""
    value = row.get(region)
    if not isinstance(value, (int, float)):
        return "-"
    from ..base.terminal import plus_minus

    sd = row.get(f"{region}_sd")
    return f"{value:.3f}" + (f" {plus_minus()} {sd:.3f}" if isinstance(sd, (int, float)) else "")


def card_text(card) -> str:
    """The readable model card `lckd info` prints: what it is, what it was trained on, its scope,
    its teachers and the expected Dice per modality subset (mean and SD over folds when given)."""
    from ..base.labels import THICK_SLICES
    from ..inference.record import scope_line
    from ..model.modelcard import card_summary

    lines = [f"{k + ':':<22}{v}" for k, v in card_summary(card).items() if k not in ("teachers", "intended use")]
    lines.append(_wrap("scope", scope_line(card)))
    lines.append(_wrap("intended use", card.intended_use))
    lines.append(_wrap("training data", card.training.get("data") or "not stated in the model card"))
    start = card.training.get("init_from")
    if isinstance(start, dict):
        lines.append(_wrap("started from", f"{start.get('name')} {start.get('version')} "
                                           f"(weights sha256 {str(start.get('weights_sha256'))[:12]}...)"))
    if card.postprocessing:
        lines.append(_wrap("clean-up (default)", ", ".join(
            f"{k} {v}" if k != THICK_SLICES else
            f"whole tumour above {v['wt_threshold']:g} where a scan has slices of {v['min_slice_mm']:g} mm or more"
            for k, v in card.postprocessing.items())))
    teachers = card.teachers.get("elected") or []
    lines.append(_wrap("teachers", ", ".join(teachers) or "-"))
    table = card.teachers.get("table") or {}
    if table:
        lines.append(_wrap("", "elected by single-scan validation Dice ET/TC/WT: " + "; ".join(
            f"{m} " + "/".join(f"{row.get(r, float('nan')):.2f}" for r in ("ET", "TC", "WT"))
            for m, row in table.items())).replace(":", " ", 1))
    if card.description:
        lines.append("\n" + card.description)
    ev = card.evaluation or {}
    lines += _dice_table(ev, "expected Dice per modality subset")
    if isinstance(ev.get("clinical"), dict):
        lines += _dice_table(ev["clinical"], "on clinical 2D series (T1, T2, FLAIR as 5-6 mm slices, T1ce 1 mm)")
    q = card.quality or {}
    if q.get("flag_below") is not None:
        lines.append("")
        lines.append(_wrap("quality estimate", f"calibrated on {q.get('fitted_on', 'cross-validation runs')}; "
                                               f"low confidence below an expected WT Dice of {q['flag_below']:.2f}"
                                               + (f"; interval: the central {q['interval_level'] * 100:g} % of its "
                                                  "cross-validation errors" if q.get("interval_level") else "")))
    return "\n".join(lines)


def _dice_table(ev: dict, title: str) -> list[str]:
    """A card evaluation's per-subset Dice as `lckd info` lines (empty when it has none)."""
    import textwrap

    from ..base.terminal import plus_minus

    rows = ev.get("per_subset", {})
    if not rows:
        return []
    where = ev.get("description") or ev.get("data") or "held-out cases"
    folds = ev.get("folds")
    spread = any(f"{r}_sd" in row for row in rows.values() for r in ("ET", "TC", "WT"))
    lines = ["", textwrap.fill(f"{title} ({where}"
                               + (f"; mean {plus_minus()} SD over {folds or 'the'} folds)" if spread else ")") + ":",
                               width=100)]
    width = 16 if spread else 8
    lines.append(f"{'subset':<22}" + "".join(f"{r:>{width}}" for r in ("ET", "TC", "WT")))
    items = list(rows.items()) + ([("mean", ev["mean"])] if isinstance(ev.get("mean"), dict) else [])
    for key, row in items:
        lines.append(f"{key:<22}" + "".join(f"{dice_cell(row, r):>{width}}" for r in ("ET", "TC", "WT")))
    return lines


def cmd_split(args) -> int:
    from ..io.datasets import find_cases, make_split, write_split

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
    from ..research.phantom import write_phantom_dataset

    if args.raw and args.dicom:
        raise LCKDError("--dicom writes the standard phantom as a study; it does not combine with --raw")
    if (args.multiframe or args.compression) and not args.dicom:
        raise LCKDError(f"{'--multiframe' if args.multiframe else '--compression'} is for DICOM studies: give "
                        "--dicom VENDOR too")
    if args.raw:
        from ..research.rawphantom import write_raw_phantom
        if args.n < 1:
            raise LCKDError("-n must be at least 1")
        if args.shape != "155,240,240":
            raise LCKDError("--shape does not apply to --raw phantoms (their series have scanner geometry)")
        for i in range(args.n):
            print(f"wrote {write_raw_phantom(args.output_dir, args.seed + i)}", flush=True)
        return 0

    try:
        shape = tuple(int(s) for s in args.shape.split(","))
        assert len(shape) == 3 and min(shape) >= 16
    except (ValueError, AssertionError):
        raise LCKDError(f"--shape must be three integers >= 16 as z,y,x, got '{args.shape}'") from None
    if args.n < 1:
        raise LCKDError("-n must be at least 1")
    if args.dicom:
        from pathlib import Path

        from ..research.dicomphantom import write_dicom_study
        for i in range(args.n):
            case_dir = Path(args.output_dir) / f"Phantom-{args.seed + i:05d}"
            written = write_dicom_study(case_dir, args.seed + i, shape, vendor=args.dicom.lower(),
                                        multiframe=args.multiframe, compression=args.compression)
            print(f"wrote {written}", flush=True)
        return 0
    paths = write_phantom_dataset(args.output_dir, args.n, seed=args.seed, shape=shape, layout=args.layout,
                                  progress=True)
    print(f"wrote {len(paths)} phantom case(s) to {args.output_dir}")
    return 0


def _command_parser(parser: argparse.ArgumentParser, command: str | None) -> argparse.ArgumentParser | None:
    """The subparser of `command`, or None."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return action.choices.get(command) if command else None
    return None


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def dash_name_problem(parser: argparse.ArgumentParser, argv: Sequence[str]) -> str | None:
    """A usage error argparse would word as 12 lines of usage without naming the file: a value or
    name that begins with '-' (`--t1 -x.nii.gz`, `-o -seg.nii.gz`, `lckd batch -in out`). One line
    naming it and how to pass it, or None."""
    command = _command_of(argv)
    sub = _command_parser(parser, command)
    if sub is None or command is None:
        return None
    known = {s for a in sub._actions for s in a.option_strings}
    takes_value = {s for a in sub._actions if a.option_strings and a.nargs in (None, "?")
                   for s in a.option_strings}
    shorts = {s for s in known if len(s) == 2 and s[1] != "-"}
    rest = list(argv[list(argv).index(command) + 1:])
    i = 0
    while i < len(rest):
        tok = rest[i]
        if tok == "--":
            break
        nxt = rest[i + 1] if i + 1 < len(rest) else None
        if tok in takes_value and nxt is not None and nxt.startswith("-") and nxt not in known \
                and not _is_number(nxt):
            return (f"{tok} '{nxt}': a name that begins with '-' is read as an option; write {tok}={nxt} "
                    f"(or {tok} ./{nxt} for a file)")
        if tok in takes_value and nxt is not None:
            i += 2
            continue
        if tok.startswith("-") and tok != "-" and tok not in known and not _is_number(tok):
            option = tok.split("=", 1)[0]
            accepted = (option in known or tok[:2] in shorts
                        or (tok.startswith("--") and any(k.startswith(option) for k in known)))
            if not accepted:
                return (f"'{tok}' is not an option of lckd {command}; a file or folder name that begins with "
                        f"'-' must be written ./{tok}")
        i += 1
    return None


def unusable_argument(parser: argparse.ArgumentParser, args: argparse.Namespace) -> str | None:
    """An argument holding a NUL byte or a lone surrogate (no file name or option value can), or None.

    Checked before any command touches the file system (where it would end in `ValueError:
    embedded null byte`); names that are merely not UTF-8 get their own refusal from the
    command that opens them.
    """
    from ..io.pathcheck import path_problem, printable

    sub = _command_parser(parser, getattr(args, "command", None))
    flags = {a.dest: a.option_strings[-1] if a.option_strings else a.dest for a in (sub._actions if sub else [])}
    for dest, value in vars(args).items():
        if not isinstance(value, str):
            continue
        problem = path_problem(value)
        if problem and "UTF-8" not in problem and "empty" not in problem:
            return f"{flags.get(dest, dest)} '{printable(value)}': {problem.replace('the path', 'it')}"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    """Run the `lckd` command line; returns the exit status.

    0 success; 1 bad input or any other failure (one line on stderr naming the problem and
    the file); 2 a usage error (argparse's, or a name beginning with '-'); 130 interrupted.
    """
    argv = sys.argv[1:] if argv is None else list(argv)
    from ..base.threads import apply_wait_policy

    apply_wait_policy(argv)   # this process is ours: set the OpenMP wait policy before torch loads
    parser = build_parser(argv)
    dash = dash_name_problem(parser, argv)
    if dash:
        _say(f"lckd {_command_of(argv)}: error: {dash}")
        return 2
    args = parser.parse_args(argv)
    args.argv = argv                       # kept for provenance (lckd train records its command)
    if not getattr(args, "func", None):
        parser.print_help()
        return 2
    unusable = unusable_argument(parser, args)
    if unusable:
        _say(f"lckd {args.command}: error: {unusable}")
        return 1
    import os
    import signal
    import threading

    previous = None
    if threading.current_thread() is threading.main_thread():
        previous = signal.signal(signal.SIGTERM, _interrupt)
    try:
        return int(args.func(args) or 0)
    except BrokenPipeError:
        # the reader went away (`lckd info | head`): stop quietly, as Unix tools do; stdout goes to
        # /dev/null so that the interpreter's final flush cannot raise the same error again
        try:
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        except (OSError, ValueError):
            pass
        return 141   # 128 + SIGPIPE, the status a shell reports for a tool stopped by a closed pipe
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
