"""BraTS dataset layouts: discover cases, read labels, write cases, train/val/test splits.

Layouts (``<root>/<case>/<file>``):

* ``brats2018`` (BraTS 2018-2021): ``<case>_t1.nii.gz``, ``_t1ce``, ``_t2``, ``_flair``,
  ``_seg``; labels 1 necrotic / non-enhancing core, 2 oedema, 4 enhancing.
* ``brats2023`` (BraTS 2023+): ``<case>-t1n.nii.gz``, ``-t1c``, ``-t2w``, ``-t2f``, ``-seg``;
  labels 1 NCR, 2 ED, 3 ET.

In memory, label maps always use the 2018 convention (ET = 4); conversion happens only
when reading or writing files.
"""
from __future__ import annotations

import csv
import io
import re
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from ..base.errors import InputError, OutputError, itk_error_detail
from .atomicwrite import atomic_path
from .caselayout import (  # noqa: F401 (re-exported: the public home of these names stays here)
    LAYOUTS,
    CaseFiles,
    _check_layout,
    case_file_name,
    find_cases,
)
from .imageio import write_image

if TYPE_CHECKING:
    import SimpleITK as sitk

__all__ = ["CaseFiles", "LAYOUTS", "SPLITS", "find_cases", "read_label", "write_case",
           "case_file_name", "load_split", "write_split", "make_split"]

SPLITS: tuple[str, ...] = ("train", "val", "test")
# Label values allowed in each layout's files; 2023 stores ET as 3.
_FILE_LABELS = {"brats2018": (0, 1, 2, 4), "brats2023": (0, 1, 2, 3)}
_CASE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*$")


# --------------------------------------------------------------------------- labels

def read_label(path: str | Path, layout: str) -> np.ndarray:
    """Read a label map and return it in the 2018 convention (ET = 4), uint8, (z, y, x)."""
    _check_layout(layout)
    import SimpleITK as sitk

    path = Path(path)
    if not path.is_file():
        raise InputError(f"label file not found: {path}")
    try:
        arr = sitk.GetArrayFromImage(sitk.ReadImage(str(path)))
    except RuntimeError as exc:
        raise InputError(f"cannot read label file {path}: {itk_error_detail(exc, 300) or type(exc).__name__}") from None
    return _to_2018(arr, layout, str(path))


def _to_2018(arr: np.ndarray, layout: str, where: str) -> np.ndarray:
    """File label values of ``layout`` -> 2018 convention; InputError on foreign values."""
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise InputError(f"label map {where} has non-integer values")
    values = np.unique(arr)
    bad = sorted(set(values.tolist()) - set(_FILE_LABELS[layout]))
    if bad:
        raise InputError(f"label map {where} has values {bad} not allowed in the {layout} "
                         f"convention (allowed: {list(_FILE_LABELS[layout])})")
    out = arr.astype(np.uint8)
    if layout == "brats2023":
        out[out == 3] = 4
    return out


def _from_2018(arr: np.ndarray, layout: str, where: str) -> np.ndarray:
    """2018 convention -> file values of ``layout`` (ET 4 -> 3 for 2023)."""
    values = set(np.unique(arr).tolist())
    bad = sorted(values - set(_FILE_LABELS["brats2018"]))
    if bad:
        raise InputError(f"label map for {where} has values {bad}; expected the BraTS 2018 "
                         "convention (0, 1 NCR, 2 ED, 4 ET)")
    out = arr.astype(np.uint8)
    if layout == "brats2023":
        out[out == 4] = 3
    return out


# --------------------------------------------------------------------------- writing

def write_case(
    out_root: str | Path,
    case_id: str,
    images: Mapping[str, sitk.Image],
    label: sitk.Image | None,
    layout: str = "brats2018",
) -> Path:
    """Write one case folder ``out_root/case_id`` in ``layout``; returns the folder.

    ``label`` is in the 2018 convention (ET = 4) and is written in the layout's own (ET = 3
    for 2023), as uint8. Each file is written to a temporary name in the same folder and
    renamed, so a failure never leaves a partial file behind.
    """
    import SimpleITK as sitk

    _check_layout(layout)
    if not _CASE_ID.match(case_id or ""):
        raise InputError(f"invalid case id '{case_id}': use letters, digits, '.', '_' or '-'")
    if not images and label is None:
        raise InputError(f"nothing to write for case {case_id}: no image and no label")
    names = [case_file_name(case_id, m, layout) for m in images]   # checks the modalities
    if len(set(names)) != len(names):
        raise InputError(f"case {case_id}: the same modality is given twice "
                         f"({', '.join(str(m) for m in images)})")
    folder = Path(out_root).expanduser() / case_id
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create case folder {folder}: {exc.strerror or exc}") from None
    for name, img in zip(names, images.values()):
        write_image(img, folder / name, what=f"case {case_id} image")
    if label is not None:
        arr = _from_2018(sitk.GetArrayFromImage(label), layout, case_id)
        out = sitk.GetImageFromArray(arr)
        out.CopyInformation(label)
        write_image(out, folder / case_file_name(case_id, "seg", layout), what=f"case {case_id} label")
    return folder


# --------------------------------------------------------------------------- splits

def load_split(csv_path: str | Path) -> dict[str, list[str]]:
    """Read a ``case_id,split`` CSV into {'train': [...], 'val': [...], 'test': [...]}."""
    path = Path(csv_path).expanduser()
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise InputError(f"split file not found: {path}") from None
    except OSError as exc:
        raise InputError(f"cannot read split file {path}: {exc.strerror or exc}") from None
    rows = list(csv.reader(io.StringIO(text)))
    rows = [r for r in rows if any(c.strip() for c in r)]
    if not rows or [c.strip().lower() for c in rows[0][:2]] != ["case_id", "split"]:
        raise InputError(f"split file {path} must start with the header 'case_id,split'")
    out: dict[str, list[str]] = {s: [] for s in SPLITS}
    seen: set[str] = set()
    for lineno, row in enumerate(rows[1:], start=2):
        if len(row) < 2:
            raise InputError(f"split file {path}, line {lineno}: expected 'case_id,split'")
        case_id, split = row[0].strip(), row[1].strip().lower()
        if split not in out:
            raise InputError(f"split file {path}, line {lineno}: unknown split '{row[1].strip()}' "
                             f"(use {', '.join(SPLITS)})")
        if case_id in seen:
            raise InputError(f"split file {path}, line {lineno}: case '{case_id}' listed twice")
        seen.add(case_id)
        out[split].append(case_id)
    return out


def write_split(csv_path: str | Path, splits: Mapping[str, Sequence[str]]) -> None:
    """Write splits as a ``case_id,split`` CSV (atomically); splits must be disjoint."""
    path = Path(csv_path).expanduser()
    unknown = sorted(set(splits) - set(SPLITS))
    if unknown:
        raise InputError(f"unknown split name(s) {unknown} for {path}: use {', '.join(SPLITS)}")
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(["case_id", "split"])
    seen: set[str] = set()
    for split in SPLITS:
        for case_id in splits.get(split, ()):
            if case_id in seen:
                raise InputError(f"case '{case_id}' is in more than one split (writing {path})")
            seen.add(case_id)
            writer.writerow([case_id, split])
    with atomic_path(path, what="split file") as tmp:
        Path(tmp).write_text(buf.getvalue(), encoding="utf-8")


def make_split(case_ids: Iterable[str], fractions: Sequence[float] = (0.7, 0.15, 0.15),
               seed: int = 0) -> dict[str, list[str]]:
    """Deterministic, disjoint train/val/test split (independent of the input order).

    Sizes are rounded; each split with a non-zero fraction gets at least one case when
    there are enough cases. Lists are sorted.
    """
    ids = list(case_ids)
    if len(set(ids)) != len(ids):
        dup = sorted({i for i in ids if ids.count(i) > 1})
        raise InputError(f"duplicate case ids in split: {dup[:5]}")
    fr = np.asarray(fractions, dtype=float)
    if fr.shape != (3,) or np.any(fr < 0) or not np.isclose(fr.sum(), 1.0, atol=1e-6):
        raise InputError(f"split fractions must be three non-negative numbers summing to 1, "
                         f"got {tuple(fractions)}")
    order = sorted(ids)
    perm = np.random.default_rng(seed).permutation(len(order))
    shuffled = [order[i] for i in perm]
    counts = _split_counts(len(order), fr)
    out, start = {}, 0
    for split, k in zip(SPLITS, counts):
        out[split] = sorted(shuffled[start:start + k])
        start += k
    return out


def _split_counts(n: int, fr: np.ndarray) -> list[int]:
    """Sizes of val and test by rounding, train takes the rest; no empty non-zero split."""
    val, test = (int(round(n * f)) for f in fr[1:])
    if n >= int(np.count_nonzero(fr)):
        val = max(val, 1) if fr[1] > 0 else 0
        test = max(test, 1) if fr[2] > 0 else 0
        while fr[0] > 0 and n - val - test < 1:   # keep at least one training case
            if val >= test and val > 1:
                val -= 1
            elif test > 1:
                test -= 1
            else:
                break
    val = min(val, n)
    test = min(test, n - val)
    return [n - val - test, val, test]
