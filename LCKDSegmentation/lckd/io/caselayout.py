"""BraTS case folders: file naming per layout and case discovery (standard library only).

Split from `lckd.io.datasets` (which re-exports all of it) so that listing the bundled sample
case at Slicer start-up imports neither numpy nor SimpleITK.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

from ..base.errors import InputError
from ..base.modalities import MODALITIES, canonical

LAYOUTS: tuple[str, ...] = ("brats2018", "brats2023")
# File-name suffix of each modality and of the label map, per layout.
_SUFFIX = {
    "brats2018": {"T1": "t1", "T1ce": "t1ce", "T2": "t2", "FLAIR": "flair", "seg": "seg"},
    "brats2023": {"T1": "t1n", "T1ce": "t1c", "T2": "t2w", "FLAIR": "t2f", "seg": "seg"},
}
_SEPARATOR = {"brats2018": "_", "brats2023": "-"}
_LAYOUT_OF_SEPARATOR = {"_": "brats2018", "-": "brats2023"}
# DOTALL and \Z: a case folder (hence its files) may have a newline in its name.
_NIFTI = re.compile(r"^(?P<stem>.+)\.nii(\.gz)?\Z", re.IGNORECASE | re.DOTALL)
_STEM = re.compile(r"^(?P<prefix>.+)(?P<sep>[_-])(?P<suffix>[A-Za-z0-9]+)\Z", re.DOTALL)


@dataclass
class CaseFiles:
    """The files of one case folder."""

    case_id: str
    images: dict[str, Path]     # canonical modality -> file (only those present)
    label: Path | None
    layout: str                 # "brats2018" | "brats2023"


# --------------------------------------------------------------------------- discovery

def find_cases(root: str | Path) -> list[CaseFiles]:
    """Every case folder directly under ``root`` (sorted by id) holding at least one scan.

    Accepts ``.nii.gz`` and ``.nii``; cases may lack some modalities; files and folders
    that do not follow a BraTS naming are ignored. ``root`` may also be a single case
    folder. Raises InputError if ``root`` is missing or holds no case.
    """
    root = Path(root).expanduser()
    if not root.exists():
        raise InputError(f"dataset folder not found: {root}")
    if not root.is_dir():
        raise InputError(f"dataset path is not a folder: {root}")
    cases = []
    # Hidden folders too: '..dots' holding '..dots-t1n.nii.gz' is a case (hidden folders without
    # scans, such as .git, give None below).
    for folder in sorted(p for p in _list_dir(root) if p.is_dir()):
        case = _scan_case_folder(folder)
        if case is not None:
            cases.append(case)
    if not cases:  # the user may have pointed at one case folder
        case = _scan_case_folder(root)
        if case is not None:
            cases.append(case)
    if not cases:
        special = special_entries(root) + [e for p in sorted(_list_dir(root)) if p.is_dir()
                                           for e in special_entries(p, f"{p.name}/")]
        found = f"; {special_text(special)}" if special else ""
        raise InputError(
            f"no BraTS case found under {root}: expected <case>/<case>_t1.nii.gz "
            f"(2018-2021 layout) or <case>/<case>-t1n.nii.gz (2023 layout){found}")
    return sorted(cases, key=lambda c: c.case_id)


def _scan_case_folder(folder: Path) -> CaseFiles | None:
    """Parse one folder; None if it holds no BraTS-named scan."""
    found: dict[str, tuple[int, Path, str]] = {}   # key -> (preference, path, layout)
    for path in sorted(_list_dir(folder)):
        # Hidden files include our own temporary files and macOS '._' resource forks; a hidden
        # file is a scan only when named after its folder (the files of case '..dots').
        parsed = _parse_file_name(path)
        if parsed is None or not path.is_file() or (_hidden(path) and parsed[2] != folder.name):
            continue
        key, layout, prefix = parsed
        # Prefer files named after the folder, then .nii.gz over .nii.
        pref = (0 if prefix == folder.name else 2) + (0 if path.name.lower().endswith(".gz") else 1)
        if key not in found or pref < found[key][0]:
            found[key] = (pref, path, layout)
    images = {m: found[m][1] for m in MODALITIES if m in found}
    if not images:
        return None
    label = found["seg"][1] if "seg" in found else None
    # The label's naming decides the layout (it decides how labels are converted).
    layout_votes = [found["seg"][2]] if "seg" in found else [found[m][2] for m in images]
    layout = max(LAYOUTS, key=layout_votes.count)
    return CaseFiles(case_id=folder.name, images=images, label=label, layout=layout)


def _parse_file_name(path: Path) -> tuple[str, str, str] | None:
    """('T1ce' | 'seg', layout, prefix) for a BraTS-style NIfTI name, else None."""
    m = _NIFTI.match(path.name)
    if not m:
        return None
    s = _STEM.match(m.group("stem"))
    if not s:
        return None
    suffix = s.group("suffix").lower()
    layout = _LAYOUT_OF_SEPARATOR[s.group("sep")]
    if suffix in ("seg", "label", "labels"):
        return "seg", layout, s.group("prefix")
    try:
        return canonical(suffix), layout, s.group("prefix")
    except InputError:
        return None


def case_file_name(case_id: str, key: str, layout: str) -> str:
    """File name of a modality ('T1ce', aliases ok) or of the label ('seg') in a layout."""
    _check_layout(layout)
    k = "seg" if key == "seg" else canonical(key)
    return f"{case_id}{_SEPARATOR[layout]}{_SUFFIX[layout][k]}.nii.gz"


def _list_dir(folder: Path) -> list[Path]:
    try:
        return list(folder.iterdir())
    except OSError as exc:
        raise InputError(f"cannot list folder {folder}: {exc.strerror or exc}") from None


def special_entries(folder: Path, prefix: str = "") -> list[tuple[str, str]]:
    """(name, kind) of the entries of `folder` that are neither files nor folders: named pipes,
    sockets, devices (links followed). A scan name on one of them is no scan; say what it is."""
    from .filetypes import special_file_kind

    out = []
    try:
        entries = sorted(folder.iterdir())
    except OSError:
        return []
    for p in entries:
        try:
            kind = special_file_kind(p.stat().st_mode)
        except OSError:
            continue   # a dangling link: nothing there
        if kind:
            out.append((prefix + p.name, kind))
    return out


def special_text(entries: list[tuple[str, str]]) -> str:
    """'x.nii.gz' is a named pipe, ... (at most three named, then a count)."""
    from .pathcheck import printable

    shown = [f"'{printable(name)}' is {kind}" for name, kind in entries[:3]]
    more = f" and {len(entries) - 3} more" if len(entries) > 3 else ""
    return ", ".join(shown) + more + ", not a regular file"


def _hidden(path: Path) -> bool:
    return path.name.startswith(".")


def _check_layout(layout: str) -> None:
    if layout not in LAYOUTS:
        raise InputError(f"unknown dataset layout '{layout}': use one of {', '.join(LAYOUTS)}")
