"""`lckd study DIR` (list what a DICOM study folder holds) and the study input of `lckd segment --study`.

Both print every series with its assignment and reason, and the line naming competing series
with the flag that chooses; series are named by number and description only.
"""
from __future__ import annotations

import argparse
import sys
from typing import Any

from ..base.errors import LCKDError

#: The scan flags in study mode take a series (number or UID) or 'none'.
SERIES_HELP = "with --study: the series to use as {mod}, by series number or UID ('none' leaves it out)"


def add_study_parser(sub: Any) -> None:
    p = sub.add_parser("study", help="list the series of a DICOM study folder and what each would be used as",
                       description="Walk a DICOM study folder (nested folders, DICOMDIR or none) and list every "
                                   "series with its assignment (T1, T1ce, T2, FLAIR or set aside) and the reason, "
                                   "as lckd segment --study would use them. Nothing is segmented.")
    p.add_argument("study_dir", help="the study folder")
    for mod, flag in (("T1", "--t1"), ("T1ce", "--t1ce"), ("T2", "--t2"), ("FLAIR", "--flair")):
        p.add_argument(flag, dest=mod, metavar="SERIES", help=SERIES_HELP.format(mod=mod))
    p.add_argument("--json", metavar="FILE", help="also write the listing as JSON (series numbers, descriptions, "
                                                  "assignments, reasons; nothing identifying)")
    p.set_defaults(func=run_study)


def run_study(args: argparse.Namespace) -> int:
    study = load_study(args.study_dir, args)
    if args.json:
        from ..inference.record import write_record
        write_record(study.record(), args.json)
        print(f"wrote {args.json}")
    return 0


def load_study(folder: str, args: argparse.Namespace):
    """Recognise the study with the choices the scan flags give; print the listing; return the `Study`."""
    from ..io.dicomstudy import recognise

    choices = {m: getattr(args, m, None) for m in ("T1", "T1ce", "T2", "FLAIR")}
    study = recognise(folder, choices)
    print_study(study)
    return study


def print_study(study: Any, heading: str = "study") -> None:
    """Print a recognised study: '<heading>: N series; used: ...', then each series with its reason."""
    print(f"{heading}: {len(study.series)} series; used: "
          + ", ".join(f"{m} = {s.name()}" for m, s in study.chosen.items()))
    for line in study.lines():
        print(line)
    sys.stdout.flush()


def study_inputs(args: argparse.Namespace) -> tuple[Any, dict, dict]:
    """For `lckd segment --study`: (study, modality -> image, modality -> source name)."""
    from ..io.dicomstudy import read_study

    if args.stack or args.channels:
        raise LCKDError("give the scans either as --study DIR or as --stack FILE --channels LIST, not both")
    study = load_study(args.study, args)
    images = read_study(study)
    return study, images, {m: study.source_name(m) for m in images}


def reference_series_files(checked: Any, study: Any) -> list | None:
    """The files of the reference scan's DICOM series (for a DICOM SEG), or None when it is not DICOM."""
    import os

    if study is not None:
        return list(study.chosen[checked.reference].files)
    source = checked.sources.get(checked.reference)
    if isinstance(source, str) and os.path.isdir(source):
        from ..io.dicomseries import find_series
        found = [s for s in find_series(source) if s.slices > 1 or s.multiframe]
        if len(found) == 1:
            return list(found[0].files)
    return None
