"""The `lckd batch` and `lckd batch-merge` commands: options, torchrun ranks and shards, terminal lines.

The batch itself (case discovery, the loop, records and summaries) is `lckd.frontends.batch`,
which Slicer's `logic.batch` uses too; this module is only the command around it.
"""
from __future__ import annotations

import os
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..base.errors import InputError, LCKDError
from ..io.pathcheck import printable
from ..io.stacks import parse_channels
from .batch import BatchCase, Shard, batch_options, counts, find_batch_cases, merge_parts, run_cases


def distributed_rank() -> tuple[int, int, int]:
    """(rank, world size, local rank) from torchrun's environment; (0, 1, 0) otherwise."""
    return (int(os.environ.get("RANK", 0)), int(os.environ.get("WORLD_SIZE", 1)),
            int(os.environ.get("LOCAL_RANK", 0)))


def print_summary(rows: Sequence[dict]) -> None:
    print(f"\n{'case':<28}{'modalities':<22}{'ET':>8}{'TC':>8}{'WT':>8}{'~WT Dice':>9}{'s':>7}  status")
    for r in rows:
        vols = "".join(f"{r[k]:>8}" for k in ("ET_ml", "TC_ml", "WT_ml"))
        dice = (r.get("expected_wt_dice") or "-") + ("!" if r.get("low_confidence") == "yes" else " ")
        print(f"{r['case'][:27]:<28}{r['modalities'][:21]:<22}{vols}{dice:>9}{r['seconds']:>7}  {r['status']}"
              + (f": {r['message']}" if r["message"] else ""))
    print(summary_line(rows))
    if any(r.get("expected_wt_dice") for r in rows):
        print("~WT Dice: the quality estimate, an expected whole-tumour Dice, not a measurement (README, Quality)")
    print_flagged(rows)


def print_flagged(rows: Sequence[dict]) -> None:
    """The cases whose quality estimate is low, to review first (printed also with -q)."""
    flagged = [r["case"] for r in rows if r.get("low_confidence") == "yes"]
    if flagged:
        print(f"low confidence (review first; column low_confidence in the summary): {', '.join(flagged)}")


def summary_line(rows: Sequence[dict]) -> str:
    c = counts(rows)
    return f"{c['ok']} segmented, {c['skipped']} skipped (already done), {c['error']} failed"


def case_line(index: int, total: int, row: Mapping) -> str:
    """One line per finished case: '[2/10] CASE  T1ce+FLAIR  WT 73.65 mL  4.1 s  ok'."""
    head = f"[{index + 1}/{total}] {row['case']}  {row['modalities'] or '-'}"
    if row["status"] == "error":
        return f"{head}  error: {row['message']}"
    vols = f"  WT {row['WT_ml']} mL, TC {row['TC_ml']} mL, ET {row['ET_ml']} mL" if row["WT_ml"] else ""
    note = " (skipped: already done)" if row["status"] == "skipped" else ""
    if row.get("low_confidence") == "yes":
        why = row["quality_reasons"] or "see the record"
        note += f"  LOW CONFIDENCE (expected WT Dice {row['expected_wt_dice']}: {why})"
    return f"{head}{vols}  {row['seconds']} s  {row['status']}{note}"


# --------------------------------------------------------------------------- `lckd batch`

def run_batch(args) -> int:
    """Run `lckd batch`; returns the exit status (1 if any case failed)."""
    from ..base.modalities import parse_subset
    from ..base.optionchecks import check_process_options
    from ..inference.options import SegmentOptions
    from ..inference.record import model_line, run_options, run_record
    from ..io.pathcheck import check_path_text
    from ..model.modelcard import read_card
    from ..model.registry import resolve_model
    from ..prep.brainextract import check_installed

    run = SegmentOptions.from_args(args)
    check_process_options(threads=args.threads, device=args.device)
    check_installed(run.preprocess, run.brain_extractor)
    check_path_text(args.output_dir, f"output folder '{printable(args.output_dir)}'", LCKDError)
    check_path_text(args.input_dir, f"input folder '{printable(args.input_dir)}'", InputError)
    wanted = parse_subset(args.modalities) if getattr(args, "modalities", None) else None
    channels = parse_channels(getattr(args, "channels", None))
    out_dir = Path(args.output_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise LCKDError(f"cannot create output folder '{out_dir}': {e.strerror or e}") from None
    rank, world, local_rank = distributed_rank()
    shard = Shard.parse(args.shard)
    if world > 1:
        if shard.count > 1:
            raise InputError("use either torchrun or --shard, not both")
        shard = Shard(rank, world)
    ignore = [out_dir] + ([args.probabilities] if getattr(args, "probabilities", None) else [])
    found = find_batch_cases(args.input_dir, channels, ignore=ignore,
                             studies=True if getattr(args, "studies", False) else None)
    choices = series_choices(args, found, wanted)
    cases = shard.take(found)
    device = args.device
    if world > 1 and device in ("auto", "cuda", "gpu"):
        import torch
        if torch.cuda.is_available():
            device = f"cuda:{local_rank % torch.cuda.device_count()}"
    card_path = resolve_model(args.model)
    card = read_card(card_path)  # a bad card is refused before the weights load
    quiet = getattr(args, "quiet", False)
    if rank == 0:
        print(model_line(card), flush=True)
    from ..inference.inputchecks import read_and_check
    from ..inference.resultfiles import check_probability_dir, probability_names, write_result
    from ..inference.segmenter import Segmenter

    seg = Segmenter.load(card_path, device=device, threads=args.threads)
    if rank == 0 and not quiet:
        from ..base.terminal import device_line
        share = f" (share {shard.index + 1} of {shard.count})" if shard.count > 1 else ""
        print(f"{device_line(seg, args.device)}\n{len(cases)} case(s){share} -> {printable(out_dir)}", flush=True)
    model = seg.model_record()   # the same record in the summary and in every case's record
    prob_dir = getattr(args, "probabilities", None)

    def segment_one(case: BatchCase, outputs: list) -> dict:
        t = time.perf_counter()
        inputs: Any = dict(case.images)
        protected, study, dicom_source = list(case.images.values()), None, None
        if case.study is not None:
            study, images, names = read_batch_study(case, choices, quiet=quiet)
            protected = study.files()
            inputs = read_and_check(images, run.reference, names=names)
            dicom_source = study.chosen[inputs.reference].files
        probs = []
        if prob_dir:
            check_probability_dir(prob_dir, protected, stem=case.case_id)
            probs = [Path(prob_dir) / n for n in probability_names(case.case_id).values()]
        res = seg.segment(inputs, run)
        w = time.perf_counter()
        mask_file = (out_dir / f"{case.case_id}_brainmask.nii.gz"
                     if getattr(args, "brain_masks", False) and res.brain_mask is not None else None)
        written = write_result(res, outputs, probabilities_dir=prob_dir, probabilities_stem=case.case_id,
                               brain_mask_file=mask_file, inputs=protected if study is not None else None,
                               dicom_source=dicom_source, model=model)
        if mask_file is not None:
            outputs = outputs + written[-1:]
        timings = dict(res.timings, write=time.perf_counter() - w, total=time.perf_counter() - t)
        record = run_record(seg, res, run, outputs=outputs, probabilities=probs, timings=timings,
                            study=None if study is None else study.record())
        if study is not None and study.competing:   # an automatic choice between series: in the summary row too
            record["warnings"] = list(study.competing) + list(record["warnings"])
        return record

    def on_row(index: int, total: int, row: dict) -> None:
        if row["status"] == "error":
            print(case_line(index, total, row), file=sys.stderr, flush=True)  # at once, not only in the table
        elif not quiet:
            print(case_line(index, total, row), flush=True)

    options = batch_options(run_options(seg.card, run, args.device, args.threads), formats=[args.format],
                            modalities=wanted, channels=channels, probabilities=prob_dir)
    rows = run_cases(cases, out_dir, segment_one, formats=[args.format], overwrite=args.overwrite,
                     modalities=wanted, model=model, options=options, shard=shard,
                     on_row=on_row, input_dir=args.input_dir)
    if world > 1:
        rows = _merge_ranks(out_dir, rank, world)
    if rank == 0:
        if quiet:
            print(summary_line(rows))
            print_flagged(rows)
        else:
            print_summary(rows)
        print(f"summary: {out_dir / (shard.part_name() if world == 1 else 'summary')}.csv (and .json)")
    return 1 if any(r["status"] == "error" for r in rows) else 0


def series_choices(args, cases: Sequence[BatchCase], wanted: Sequence[str] | None) -> dict:
    """The series choices of `lckd batch` over DICOM studies (modality -> series number / UID / 'none'),
    one for every study; modalities left out by `--modalities` are 'none'. Refused in one line for a
    dicom-seg output, or a series flag, where the cases are NIfTI layouts (no DICOM reference)."""
    from ..io.dicomstudy import FLAGS, NONE_CHOICE

    given = {m: getattr(args, m, None) for m in FLAGS if getattr(args, m, None) is not None}
    nifti = any(c.study is None and c.problem is None for c in cases)
    if nifti or not any(c.study is not None for c in cases):
        holds = "NIfTI-layout cases, not DICOM studies" if nifti else "no DICOM study"
        if args.format == "dicom-seg":
            raise InputError(f"--format dicom-seg needs DICOM studies (a SEG references the scanner's series): "
                             f"'{printable(args.input_dir)}' holds {holds}; use nii.gz, nrrd or seg.nrrd")
        if given:
            raise InputError(f"{FLAGS[next(iter(given))]} chooses a series of a DICOM study; "
                             f"'{printable(args.input_dir)}' holds {holds} (--modalities chooses scans)")
        return {}
    choices = dict(given)
    for mod in FLAGS:
        if wanted is not None and mod not in wanted:
            choices[mod] = NONE_CHOICE
    return choices


def read_batch_study(case: BatchCase, choices: Mapping[str, str], *, quiet: bool = False) -> tuple:
    """Recognise a batch case's DICOM study with `choices` (its listing printed under the case's name
    unless `quiet`) and read the chosen series: (study, modality -> image, modality -> source name)."""
    from ..io.dicomstudy import read_study, recognise
    from .studycommand import print_study

    if case.study is None:
        raise ValueError(f"batch case {case.case_id} is not a DICOM study")
    study = recognise(case.study, choices)
    if not quiet:
        print_study(study, heading=f"{printable(case.case_id)}: study")
    images = read_study(study)
    return study, images, {m: study.source_name(m) for m in images}


def run_merge(args) -> int:
    """Run `lckd batch-merge OUT_DIR`."""
    rows = merge_parts(args.output_dir)
    print_summary(rows)
    print(f"summary: {Path(args.output_dir) / 'summary.csv'} (and .json)")
    return 1 if any(r["status"] == "error" for r in rows) else 0


def _merge_ranks(out_dir: Path, rank: int, world: int) -> list:
    """Wait for every rank's part (a gloo barrier), then rank 0 merges them into summary.csv/.json."""
    import torch.distributed as dist

    if not dist.is_initialized():
        dist.init_process_group("gloo")
    dist.barrier()
    rows: list = []
    try:
        if rank == 0:
            rows = merge_parts(out_dir, expect=world)
    finally:
        dist.barrier()              # a failed merge on rank 0 must not leave the others waiting
        dist.destroy_process_group()
    return rows
