"""Test helper: one phantom case written as NIfTI files with real SimpleITK I/O."""
from __future__ import annotations

from pathlib import Path

import SimpleITK as sitk


def write_phantom_files(folder: Path, seed: int, shape: tuple) -> tuple[dict, Path]:
    """Write `make_phantom(seed, shape)`'s four scans and its label into `folder`.

    Returns ({modality: path of <modality>.nii.gz}, path of seg.nii.gz).
    """
    from lckd.research.phantom import make_phantom

    images, label = make_phantom(seed, shape).to_sitk()
    paths = {}
    for m, img in images.items():
        paths[m] = folder / f"{m}.nii.gz"
        sitk.WriteImage(img, str(paths[m]))
    sitk.WriteImage(label, str(folder / "seg.nii.gz"))
    return paths, folder / "seg.nii.gz"
