"""Writing a segmentation result: labelmap (NIfTI/NRRD/MHA) or Slicer `.seg.nrrd`, atomically."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import SimpleITK as sitk

from .errors import OutputError
from .imageio import atomic_path, write_image
from .labels import CONVENTIONS
from .segments import SEGMENTS


def ijk_to_lps(image: sitk.Image) -> np.ndarray:
    """4x4 voxel (i, j, k) -> physical LPS matrix of a SimpleITK image."""
    m = np.eye(4)
    m[:3, :3] = np.array(image.GetDirection()).reshape(3, 3) @ np.diag(image.GetSpacing())
    m[:3, 3] = image.GetOrigin()
    return m


def write_labelmap(labelmap: sitk.Image, path: str | Path, convention: str = "brats2018") -> Path:
    """Write a labelmap; `.seg.nrrd` gets Slicer segments with names, colours and terminology."""
    p = Path(path)
    if not p.name.endswith(".seg.nrrd"):
        return write_image(labelmap, p)
    try:
        import slicerio
    except ImportError:
        raise OutputError("writing .seg.nrrd needs the 'slicerio' package: pip install slicerio") from None
    values = CONVENTIONS[convention]
    voxels = np.transpose(sitk.GetArrayFromImage(labelmap), (2, 1, 0))  # (z,y,x) -> (i,j,k)
    seg = slicerio.create_segmentation(voxels.shape, ijk_to_lps(labelmap))
    for info in SEGMENTS:
        slicerio.add_segment(seg, voxels == values[info.key], {
            "id": info.key, "name": info.name, "color": list(info.color),
            "terminology": slicerio.segmentation.terminology_entry_from_string(info.terminology)})
    seg["containedRepresentationNames"] = ["Binary labelmap"]
    seg["masterRepresentation"] = "Binary labelmap"
    try:
        with atomic_path(p) as tmp:
            slicerio.write_segmentation(str(tmp), seg)
    except OSError as e:
        raise OutputError(f"cannot write '{p}': {e.strerror or e}") from None
    return p


OUTPUT_SUFFIXES = (".seg.nrrd", ".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd")


def check_output_path(path: str | Path) -> Path:
    """Fail early (before minutes of work) if `path` has an unknown type or cannot be written."""
    p = Path(path)
    if not any(p.name.endswith(s) for s in OUTPUT_SUFFIXES):
        raise OutputError(f"cannot write '{p}': unknown output type; use one of {', '.join(OUTPUT_SUFFIXES)}")
    if p.is_dir():
        raise OutputError(f"cannot write '{p}': it is a folder")
    try:
        p.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(p.parent / ("._lckd_write_test" + "".join(p.suffixes))) as tmp:
            Path(tmp).write_bytes(b"")
        (p.parent / ("._lckd_write_test" + "".join(p.suffixes))).unlink()
    except OSError as e:
        raise OutputError(f"cannot write '{p}': {e.strerror or e}") from None
    return p
