"""Reading a case onto the model grid: the one path inference, training and evaluation share.

A case's scans are brought onto one reference grid (the reference is chosen by
`lckd.base.modalities.default_reference`: the first given of T1ce, FLAIR, T1, T2, as at
inference), then onto the model's spacing in LPS orientation, cropped to the brain and
normalised (`lckd.prep.preprocess.prepare_case`). Training and evaluation also read the label
map onto the same grid. So a case on mixed grids is seen the same way when the network
is trained, evaluated and deployed.
"""
from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from ..base.errors import InputError
from ..base.labels import labels_to_regions
from ..base.modalities import default_reference
from ..io.datasets import CaseFiles, find_cases, load_split, read_label
from ..io.imageio import read_image
from . import geometry
from .preprocess import PreparedCase, prepare_case


@dataclass
class LoadedCase:
    """One case on the model grid, cropped to the brain and normalised."""

    case_id: str
    x: np.ndarray            # (M, d, h, w) normalised scans (float16 in the training cache)
    present: np.ndarray      # (M,) bool: scans the case has
    regions: np.ndarray      # (3, d, h, w) bool ET, TC, WT (empty if the case has no label)
    spacing: tuple           # (x, y, z) mm of the model grid


def on_reference_grid(images: Mapping[str, sitk.Image], reference: str) -> dict:
    """Every scan on the reference scan's grid (resampled where its grid differs)."""
    ref = images[reference]
    return {m: img if geometry.same_grid(img, ref) else geometry.resample_onto(img, ref)
            for m, img in images.items()}


def onto_model_grid(images: Mapping[str, sitk.Image], reference: str, spacing: Sequence[float],
                    order: Sequence[str], clip_percentiles: Sequence[float] = (0.5, 99.5)
                    ) -> tuple[sitk.Image, PreparedCase]:
    """Scans already on one grid -> (the reference on the model grid, the prepared arrays).

    Args:
        images: scans by canonical modality, all on the reference's grid.
        reference: the modality whose grid they share.
        spacing: the model's voxel size (x, y, z) in mm.
        order: the network's modality order (the channels of the prepared array).
        clip_percentiles: intensity clipping before the z-score (the card's preprocessing).
    """
    model = {m: geometry.to_model_grid(img, spacing) for m, img in images.items()}
    arrays = {m: sitk.GetArrayFromImage(img) for m, img in model.items()}
    return model[reference], prepare_case(arrays, order, clip_percentiles)


def select_cases(root: str | Path, split_csv: str | Path | None, split: str) -> list[CaseFiles]:
    """Cases of one split ('train', 'val', 'test'); without a split file, every case."""
    cases = find_cases(root)
    if split_csv is None:
        return cases
    ids = set(load_split(split_csv)[split])
    chosen = [c for c in cases if c.case_id in ids]
    missing = ids - {c.case_id for c in chosen}
    if missing:
        raise InputError(f"split file {split_csv}: {len(missing)} '{split}' case(s) not found under {root}, "
                         f"e.g. {sorted(missing)[0]}")
    return chosen


def load_case(case: CaseFiles, order: Sequence[str], spacing: Sequence[float],
              clip_percentiles: Sequence[float] = (0.5, 99.5), dtype=np.float32) -> LoadedCase:
    """Read a case's scans and label, bring them onto the model grid, crop and normalise."""
    images = {m: read_image(p, what=f"{case.case_id} {m}") for m, p in case.images.items()}
    ref_mod = default_reference(images)
    ref = images[ref_mod]
    grid, prepared = onto_model_grid(on_reference_grid(images, ref_mod), ref_mod, spacing, order,
                                     clip_percentiles)
    shape = prepared.x.shape[1:]
    if case.label is not None:
        lab = sitk.GetImageFromArray(read_label(case.label, case.layout))
        lab.CopyInformation(ref)
        lab = sitk.DICOMOrient(lab, "LPS")
        if not geometry.same_grid(lab, grid):
            lab = geometry.resample_onto(lab, grid, label=True)
        regions = labels_to_regions(sitk.GetArrayFromImage(lab)[prepared.box])
    else:
        regions = np.zeros((3,) + shape, dtype=bool)
    return LoadedCase(case.case_id, prepared.x.astype(dtype), prepared.present, regions, tuple(grid.GetSpacing()))


def load_cases(cases: Sequence[CaseFiles], order: Sequence[str], spacing: Sequence[float],
               clip_percentiles: Sequence[float] = (0.5, 99.5), progress: bool = False,
               dtype=np.float16) -> list[LoadedCase]:
    """Load several cases (float16 by default: the training cache), with an optional progress bar."""
    it = cases
    if progress:
        from tqdm.auto import tqdm
        it = tqdm(cases, desc="loading cases", unit="case", leave=False)
    return [load_case(c, order, spacing, clip_percentiles, dtype) for c in it]
