"""Batches: every case of a folder, one implementation for `lckd batch` and Slicer's `logic.batch`.

`run_cases` is the loop both use; they differ only in how one case is segmented (the CLI
in this process, Slicer through its background worker). For every case it writes the
outputs and a result record `<case>.json` (`lckd.inference.record`), and a case counts as done,
and is skipped on the next run, only when its outputs read back complete and its record
reads back: outputs are written atomically and verified, so a failed write never leaves a
case that looks done. A skipped case keeps its volumes in the summary (read from its
record). A case that fails for any reason (bad input, a full disk, an internal error,
running out of memory) is an error row and the batch goes on.

The summary is `summary.csv` (one row per case: volumes, time, status, model) and
`summary.json` (the same rows plus the model, its card's sha256 and the options), written
also when interrupted. `lckd batch` shards cases[k::n] over processes (`--shard K/N`, each
writes `summary-part-K-of-N.*`) or torchrun ranks (rank 0 merges the parts; files, not
pickled objects, cross ranks); `lckd batch-merge` merges parts written by a scheduler.
Input folders: BraTS 2018-2021 / 2023 case folders, an nnU-Net-style flat folder
(`<case>_0000.nii.gz`, ... with `--channels` saying which channel is which scan), or a folder
of DICOM studies (each sub-folder one study, its scans recognised from the headers when the
case runs: `lckd.io.dicomstudy`).
"""
from __future__ import annotations

import csv
import json
import os
import re
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable

from ..base.errors import InputError, LCKDError, OutputError
from ..io.pathcheck import printable

FIELDS = ("case", "modalities", "NCR_ml", "ED_ml", "ET_ml", "TC_ml", "WT_ml", "expected_wt_dice", "low_confidence",
          "quality_reasons", "seconds", "status", "message", "model", "card_sha256")
REGIONS_ML = ("NCR", "ED", "ET", "TC", "WT")
#: Summary layout version (summary.json "format").
SUMMARY_FORMAT = 1
_NNUNET = re.compile(r"^(?P<case>.+)_(?P<channel>\d{4})\.(nii\.gz|nii|nrrd|mha)$", re.IGNORECASE)


@dataclass
class Shard:
    """Which share of the cases this process takes: cases[index::count]."""

    index: int = 0
    count: int = 1

    @classmethod
    def parse(cls, text: str | None) -> Shard:
        if not text:
            return cls()
        try:
            k, n = (int(v) for v in text.split("/"))
        except ValueError:
            raise InputError(f"--shard must look like K/N (for example 0/4), got '{text}'") from None
        if n < 1 or not 0 <= k < n:
            raise InputError(f"--shard {text}: need N >= 1 and 0 <= K < N")
        return cls(k, n)

    def take(self, items: Sequence) -> list:
        return list(items[self.index::self.count])

    def part_name(self) -> str:
        """'summary' for the whole batch, 'summary-part-K-of-N' for a share."""
        return "summary" if self.count == 1 else f"summary-part-{self.index}-of-{self.count}"


@dataclass
class BatchCase:
    """One case of a batch: its id and its scans (canonical modality -> file)."""

    case_id: str
    images: dict
    #: Why a folder found in the input is not a case (it gets an error row with this reason), or None.
    problem: str | None = None
    #: A DICOM study folder: its scans are recognised when the case runs (`images` is then empty).
    study: Path | None = None


#: Output suffix of a `--format` name where the two differ.
FORMAT_SUFFIX = {"dicom-seg": "dcm"}


def output_path(out_dir: Path, case_id: str, fmt: str) -> Path:
    """`<out_dir>/<case>.<suffix>` of an output format (`dicom-seg` is `<case>.dcm`)."""
    return out_dir / f"{case_id}.{FORMAT_SUFFIX.get(fmt, fmt)}"


def record_path(out_dir: Path, case_id: str) -> Path:
    """The result record of a case: `<case>.json` next to its outputs."""
    return out_dir / f"{case_id}.json"


# --------------------------------------------------------------------------- input folders

def _nnunet_files(root: Path) -> dict[str, dict[int, Path]]:
    """case -> channel -> file of the nnU-Net-style names directly in `root`."""
    found: dict[str, dict[int, Path]] = {}
    try:
        entries = sorted(root.iterdir())
    except OSError:
        return {}
    for p in entries:
        m = _NNUNET.match(p.name)
        if m and p.is_file() and not p.name.startswith("."):
            found.setdefault(m.group("case"), {})[int(m.group("channel"))] = p
    return found


def find_batch_cases(input_dir: str | Path, channels: Sequence[str] | None = None, *,
                     ignore: Sequence[str | Path] = (), studies: bool | None = None) -> list[BatchCase]:
    """The cases of a batch folder: BraTS case folders, nnU-Net-style `<case>_0000.nii.gz` files,
    or DICOM studies.

    `studies` True takes every sub-folder as a DICOM study (`find_study_cases`); None (the
    default) does so when the folder holds no NIfTI-layout case but DICOM files; False never.

    nnU-Net names carry no modality, so `channels` (canonical names in channel order) must
    say which is which; a folder of such files without it is refused with an example.
    Every folder found directly under a BraTS-layout `input_dir` is returned: a case, or an
    entry whose `problem` says why it is none (so it gets a summary row); hidden folders
    without scans (.git) and the folders in `ignore` (the batch's own output) are left out.
    """
    root = Path(input_dir).expanduser()
    if studies:
        if channels:
            raise InputError("--channels is for nnU-Net-style folders and 4D files; DICOM studies have their "
                             "scans recognised from the headers")
        return find_study_cases(root, ignore=ignore)
    flat = _nnunet_files(root) if root.is_dir() else {}
    if flat:
        if not channels:
            raise InputError(f"'{printable(root)}' holds nnU-Net-style files (<case>_0000.nii.gz ...): say which "
                             "channel is which scan with --channels, e.g. --channels T1,T1ce,T2,FLAIR (BraTS "
                             "in nnU-Net) or --channels FLAIR,T1,T1ce,T2 (Medical Segmentation Decathlon)")
        cases = []
        for case_id, files in sorted(flat.items()):
            extra = sorted(set(files) - set(range(len(channels))))
            if extra:
                raise InputError(f"case '{printable(case_id)}' has channel {extra[0]:04d} but --channels names "
                                 f"only {len(channels)}")
            cases.append(BatchCase(case_id, {channels[k]: files[k] for k in sorted(files)}))
        return cases
    stacks = _stacked_files(root) if root.is_dir() else {}
    if stacks:
        if not channels:
            raise InputError(f"'{printable(root)}' holds 4D files of scans stacked as channels (the Medical "
                             "Segmentation Decathlon's layout): say which channel is which scan with --channels, "
                             "in the files' order, e.g. --channels FLAIR,T1,T1ce,T2 (the Decathlon's)")
        return [_stack_case(path, n, channels) for path, n in stacks.items()]
    if channels:
        raise InputError("--channels is for nnU-Net-style folders (<case>_0000.nii.gz ...) and folders of 4D "
                         f"files with the scans as channels; '{printable(root)}' holds neither")
    from ..io.datasets import find_cases

    try:
        found = find_cases(root)
    except InputError:
        if studies is None and root.is_dir() and _holds_dicom(root, ignore):
            return find_study_cases(root, ignore=ignore)   # no NIfTI case, but DICOM: a folder of studies
        raise
    cases = [BatchCase(c.case_id, dict(c.images)) for c in found]
    if len(found) == 1 and found[0].case_id == root.name and not (root / root.name).is_dir():
        return cases  # root is itself one case folder: its sub-folders are not cases
    return sorted(cases + _folders_without_scans(root, {c.case_id for c in found}, ignore),
                  key=lambda c: c.case_id)


def _holds_dicom(folder: Path, ignore: Sequence[str | Path] = ()) -> bool:
    """True when a DICOM file (preamble + 'DICM') lies anywhere under `folder` (outside `ignore`)."""
    from ..io.dicomseries import dicom_files

    skip = _real_paths(ignore)
    return any(not any(os.path.realpath(f).startswith(s + os.sep) for s in skip) for f in dicom_files(folder))


def _first_study_uid(folder: Path) -> str | None:
    """The StudyInstanceUID of the first DICOM image file under `folder`, or None."""
    import pydicom

    from ..io.dicomseries import dicom_files

    for path in dicom_files(folder):
        try:
            ds = pydicom.dcmread(path, stop_before_pixels=True, specific_tags=["StudyInstanceUID", "Rows"])
        except Exception:   # noqa: BLE001 - a damaged file: look at the next
            continue
        if "Rows" in ds and ds.get("StudyInstanceUID"):
            return str(ds.StudyInstanceUID)
    return None


def find_study_cases(root: str | Path, *, ignore: Sequence[str | Path] = ()) -> list[BatchCase]:
    """The DICOM studies of a batch folder: each sub-folder is one study (a case named as the folder).

    A folder whose sub-folders all hold one study (series folders of one study), or that holds
    DICOM files itself and no sub-folder does, is itself one study. A sub-folder without a DICOM
    file gets an error row saying so. Recognising a study's scans waits until its case runs, so
    a broken study fails its own row only.
    """
    root = Path(root).expanduser()
    if not root.is_dir():
        raise InputError(f"input folder '{printable(root)}' is not a folder")
    skip = _real_paths(ignore)
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")
                         and os.path.realpath(p) not in skip)
    except OSError as e:
        raise InputError(f"cannot list input folder '{printable(root)}': {e.strerror or e}") from None
    with_dicom = [f for f in folders if _holds_dicom(f)]
    uids = {_first_study_uid(f) for f in with_dicom}
    from ..io.dicomseries import starts_like_dicom
    direct = any(starts_like_dicom(p) for p in root.iterdir())
    if (len(with_dicom) > 1 and len(uids) == 1 and None not in uids) or (direct and not with_dicom):
        return [BatchCase(root.name, {}, study=root)]
    cases = []
    for folder in folders:
        if folder in with_dicom:
            cases.append(BatchCase(folder.name, {}, study=folder))
        else:
            cases.append(BatchCase(folder.name, {}, problem="no DICOM file in this folder (sub-folders searched): "
                                                            "not a study"))
    if not cases:
        raise InputError(f"input folder '{printable(root)}' holds no DICOM study (each study in its own sub-folder)")
    return cases


def _real_paths(paths: Sequence[str | Path]) -> set:
    out = set()
    for p in paths:
        try:
            out.add(os.path.realpath(p))
        except (OSError, ValueError):
            pass
    return out


def _stacked_files(root: Path) -> dict[Path, int]:
    """Image files directly in `root` whose header holds several scans as channels -> channel count."""
    from ..io.filetypes import READ_SUFFIXES
    from ..io.imageio import stack_channel_count

    try:
        entries = sorted(root.iterdir())
    except OSError:
        return {}
    found = {}
    for p in entries:
        # hidden files include macOS '._' resource forks, which the Decathlon's archive is full of
        if p.name.startswith(".") or not p.is_file() or not p.name.lower().endswith(READ_SUFFIXES):
            continue
        n = stack_channel_count(p)
        if n:
            found[p] = n
    return found


def _stack_case(path: Path, count: int, channels: Sequence[str]) -> BatchCase:
    """A case of one stacked file (each named channel an `imageio.StackChannel`), or a refused entry."""
    from ..io.filetypes import image_stem
    from ..io.stacks import StackChannel

    case_id = image_stem(path.name)
    if count != len(channels):
        return BatchCase(case_id, {}, problem=f"the file holds {count} channels but --channels names "
                                              f"{len(channels)} ({', '.join(channels)})")
    return BatchCase(case_id, {m: StackChannel(path, i, count) for i, m in enumerate(channels)})


def _folders_without_scans(root: Path, cases: set, ignore: Sequence[str | Path]) -> list[BatchCase]:
    """A refused entry for each folder under `root` that is not a case (no BraTS-named scan in it);
    the reason names what the folder holds instead of files (a named pipe, a socket, a device)."""
    from ..io.caselayout import special_entries, special_text

    skip = _real_paths(ignore)
    entries = []
    try:
        folders = sorted(p for p in root.iterdir() if p.is_dir())
    except OSError:
        return []
    for folder in folders:
        if folder.name in cases or folder.name.startswith(".") or os.path.realpath(folder) in skip:
            continue
        special = special_entries(folder)
        found = f" ({special_text(special)})" if special else ""
        entries.append(BatchCase(folder.name, {}, problem=(
            f"no scan found in this folder{found}: expected BraTS names such as <case>-t1n.nii.gz (2023) or "
            "<case>_t1.nii.gz (2018-2021), as .nii.gz or .nii")))
    return entries


# --------------------------------------------------------------------------- the loop

def empty_row(case_id: str, modalities: Sequence[str], model: Mapping | None = None) -> dict:
    row = dict.fromkeys(FIELDS, "")
    row.update(case=printable(case_id), modalities="+".join(modalities))
    if model:
        row.update(model=f"{model.get('name', '')} {model.get('version', '')}".strip(),
                   card_sha256=model.get("card_sha256") or "")
    return row


def case_done(out_paths: Sequence[Path], record: Path) -> dict | None:
    """The record of a case whose outputs all read back complete, else None (the case is redone)."""
    from ..inference.record import read_record

    if not all(p.is_file() and output_complete(p) for p in out_paths):
        return None
    return read_record(record)


def output_complete(path: Path) -> bool:
    """True when an output file reads back complete (a DICOM SEG through highdicom, images through ITK)."""
    from ..io.filetypes import is_dicom_seg

    if is_dicom_seg(path.name):
        from ..io.dicomseg import seg_reads_back
        return seg_reads_back(path)
    from ..io.imageio import read_back

    return read_back(path)[0] is not None


def _failure_text(e: BaseException) -> str:
    if isinstance(e, LCKDError):
        return printable(e)
    if isinstance(e, MemoryError):
        return "out of memory (lower --max-memory to refuse such cases early)"
    first = (str(e).strip().splitlines() or [""])[0][:200]
    return printable(f"internal error: {type(e).__name__}: {first}")


SegmentOne = Callable[[BatchCase, "list[Path]"], dict]


def run_cases(cases: Sequence[BatchCase], out_dir: str | Path, segment_one: SegmentOne, *,
              formats: Sequence[str] = ("nii.gz",), overwrite: bool = False, modalities: Sequence[str] | None = None,
              model: Mapping | None = None, options: Mapping | None = None, shard: Shard | None = None,
              on_row: Callable[[int, int, dict], None] | None = None, input_dir: str | Path | None = None
              ) -> list[dict]:
    """Segment `cases` into `out_dir`; write each case's record and the summary; return the rows.

    `segment_one(case, outputs)` writes the case's `outputs` (one per format) and returns
    its result record (`lckd.inference.record.run_record`); it raises on failure. `modalities`
    keeps only those scans of each case. `on_row(index, total, row)` is called as each
    case finishes (the CLI prints a line; Slicer reports progress). The summary is written
    also when the loop is interrupted.
    """
    from ..inference.record import write_record

    out = Path(out_dir)
    shard = shard or Shard()
    wanted = None if modalities is None else set(modalities)
    rows: list[dict] = []
    t0 = time.perf_counter()
    try:
        for index, case in enumerate(cases):
            images = {m: p for m, p in case.images.items() if wanted is None or m in wanted}
            row = empty_row(case.case_id, list(images), model)
            outputs = [output_path(out, case.case_id, f) for f in formats]
            started = time.perf_counter()
            previous = None if overwrite else case_done(outputs, record_path(out, case.case_id))
            if case.problem:
                row.update(status="error", message=printable(case.problem))
            elif not images and case.study is None:
                row.update(status="error", message="none of the requested modalities is present "
                                                   f"(it has {'+'.join(case.images) or 'no scan'})")
            elif previous is not None:
                row.update(_record_fields(previous),
                           status="skipped",
                           message="output exists", modalities="+".join(previous.get("modalities", images)))
                prev_model = previous.get("model") or {}
                row.update(model=f"{prev_model.get('name', '')} {prev_model.get('version', '')}".strip(),
                           card_sha256=prev_model.get("card_sha256") or "")
            else:
                try:
                    record = segment_one(BatchCase(case.case_id, images, study=case.study), outputs)
                    write_record(record, record_path(out, case.case_id))
                    row.update(_record_fields(record),
                               status="ok",
                               modalities="+".join(record.get("modalities", images)),
                               message=printable("; ".join(record.get("warnings", []))))
                except (KeyboardInterrupt, SystemExit):
                    raise
                except BaseException as e:  # one failure must not cost the other cases or the summary
                    row.update(status="error", message=_failure_text(e))
            row["seconds"] = f"{time.perf_counter() - started:.1f}"
            rows.append(row)
            if on_row is not None:
                on_row(index, len(cases), row)
    finally:
        # Also on Ctrl-C / SIGTERM: the cases done so far are on record (the rest simply run next time).
        write_summary(rows, out / shard.part_name(), model=model, options=options,
                      seconds=time.perf_counter() - t0, input_dir=input_dir)
    return rows


def _volume_fields(volumes: Mapping[str, Any]) -> dict:
    out = {}
    for k in REGIONS_ML:
        try:
            out[f"{k}_ml"] = f"{float(volumes[k]):.2f}"
        except (KeyError, TypeError, ValueError):
            out[f"{k}_ml"] = ""
    return out


def _record_fields(record: Mapping) -> dict:
    """A summary row's volume and quality columns from a case's result record."""
    return {**_volume_fields(record.get("volumes_ml", {})), **_quality_fields(record.get("quality"))}


def _quality_fields(quality: Mapping | None) -> dict:
    """The summary's quality columns: expected WT Dice ('' without a calibration), low_confidence
    ('yes'/'no'/''), reasons ('; '-joined). Sorting on low_confidence or expected_wt_dice puts the
    runs to review first at the top."""
    q = quality or {}
    dice, low = q.get("expected_wt_dice"), q.get("low_confidence")
    return {"expected_wt_dice": "" if dice is None else f"{float(dice):.3f}",
            "low_confidence": "" if low is None else ("yes" if low else "no"),
            "quality_reasons": printable("; ".join(q.get("reasons") or []))}


# --------------------------------------------------------------------------- summaries

def counts(rows: Sequence[Mapping]) -> dict:
    """{'ok': n, 'skipped': n, 'error': n} of summary rows."""
    return {s: sum(r["status"] == s for r in rows) for s in ("ok", "skipped", "error")}


def write_summary(rows: Sequence[dict], base: Path, *, model: Mapping | None = None, options: Mapping | None = None,
                  seconds: float | None = None, input_dir: str | Path | None = None) -> tuple[Path, Path]:
    """Write `<base>.csv` and `<base>.json` atomically and check they read back (`OutputError` if not)."""
    from ..inference.record import write_record
    from ..io.atomicwrite import atomic_path
    from ..io.pathcheck import shown_path

    csv_path, json_path = base.with_name(base.name + ".csv"), base.with_name(base.name + ".json")

    def verify(tmp: Path) -> None:
        try:
            with open(tmp, newline="", encoding="utf-8") as f:
                back = list(csv.DictReader(f))
        except (OSError, UnicodeDecodeError, csv.Error):
            back = None
        if back is None or len(back) != len(rows) or any(b["case"] != r["case"] for b, r in zip(back, rows)):
            raise OutputError(f"cannot write summary '{shown_path(csv_path)}': the written file is incomplete "
                              "(is the disk full?)")

    with atomic_path(csv_path, "summary", verify=verify) as tmp:
        with open(tmp, "w", newline="", encoding="utf-8") as f:
            w = csv.DictWriter(f, fieldnames=FIELDS, extrasaction="ignore")
            w.writeheader()
            w.writerows(rows)
    from .. import __version__
    write_record({"format": SUMMARY_FORMAT, "lckd_version": __version__,
                  "input_dir": None if input_dir is None else printable(os.path.abspath(str(input_dir))),
                  "model": dict(model or {}), "options": dict(options or {}), "counts": counts(rows),
                  "seconds": None if seconds is None else round(seconds, 3), "cases": list(rows)}, json_path)
    return csv_path, json_path


def read_summary(path: Path) -> dict:
    """A `summary*.json` written by `write_summary` (`InputError` if unreadable)."""
    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
        assert isinstance(data, dict) and isinstance(data.get("cases"), list)
    except (OSError, ValueError, AssertionError):
        raise InputError(f"cannot read batch summary '{printable(path)}': missing or not a summary "
                         "written by lckd batch") from None
    return data


def merge_parts(out_dir: str | Path, expect: int | None = None) -> list[dict]:
    """Merge the shard summaries `summary-part-K-of-N.json` of `out_dir` into `summary.csv/.json`.

    All N parts must be there (`InputError` naming the missing ones); cases sorted by id.
    `expect` (torchrun: the world size) says which N this run wrote, so parts of an earlier
    run with another N are ignored; without it, parts of several N are refused as ambiguous.
    Returns the merged rows.
    """
    out = Path(out_dir)
    # Only names the shards write count: a stray 'summary-part-a-of-b.json' is not a part.
    names = (re.fullmatch(r"summary-part-\d+-of-(\d+)\.json", p.name) for p in out.glob("summary-part-*-of-*.json"))
    totals = {int(m.group(1)) for m in names if m}
    if not totals:
        raise InputError(f"no shard summaries (summary-part-K-of-N.json) in '{printable(out)}'")
    if expect is None and len(totals) != 1:
        raise InputError(f"'{printable(out)}' holds parts of batches with different N: {sorted(totals)}")
    n = expect or totals.pop()
    missing = [k for k in range(n) if not (out / f"summary-part-{k}-of-{n}.json").is_file()]
    if missing:
        raise InputError(f"shard summaries missing for K = {', '.join(map(str, missing))} of {n}: "
                         "run those shards first")
    data = [read_summary(out / f"summary-part-{k}-of-{n}.json") for k in range(n)]
    rows = sorted((r for d in data for r in d["cases"]), key=lambda r: r["case"])
    first = data[0]
    write_summary(rows, out / "summary", model=first.get("model"), options=first.get("options"),
                  seconds=sum(d.get("seconds") or 0 for d in data), input_dir=first.get("input_dir"))
    return rows


def batch_options(run: Mapping, *, formats: Sequence[str], modalities: Sequence[str] | None = None,
                  channels: Sequence[str] | None = None, probabilities: str | None = None) -> dict:
    """A batch summary's `options`: a case's run options (`lckd.inference.record.run_options`, the
    shape of every case record's) and what the batch adds; `lckd batch` and Slicer's
    `logic.batch` both write this shape."""
    return {**dict(run), "formats": list(formats), "modalities": None if modalities is None else list(modalities),
            "channels": None if channels is None else list(channels), "probabilities": probabilities}
