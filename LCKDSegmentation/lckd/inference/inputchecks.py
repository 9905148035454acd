"""Checks on input images before segmentation: refuse the unusable, warn about the suspicious.

Errors (`InputError`, one line naming the modality and file): not a scalar 3D volume, a
degenerate volume (fewer than `MIN_AXIS_VOXELS` voxels along an axis, or less than
`MIN_EXTENT_MM` across), NaN or infinite voxels, an empty or constant image, an image
without contrast inside the brain (a mask), inputs whose physical extents do not overlap the
reference. Warnings (returned as strings for the caller to show): an image that looks
like a label map, the same file or the same voxels given for two modalities, an input on
a different grid than the reference (it will be resampled), an input covering little of
the reference's extent, scans that look misregistered against the reference
(`check_alignment`, run by the pipeline unless it co-registers them).

Size policy: a volume smaller than the network's patch is padded and works, so only
volumes that are not really 3D are refused: fewer than 4 voxels along any axis is a slice
or a line (and 4 is the least that trilinear resampling and brain cropping handle sensibly).
"""
from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Union

import numpy as np
import SimpleITK as sitk

from ..base.errors import InputError
from ..base.modalities import canonical, default_reference
from ..io.imageio import check_shape, check_spacing, nonfinite_problem, read_image, read_note, same_voxels
from ..prep.foreground import background_distance_score, face_median
from ..prep.geometry import extents_overlap, physical_bounds, same_grid

__all__ = ["MIN_AXIS_VOXELS", "LABELMAP_MAX_VALUES", "check_image", "check_inputs", "check_alignment",
           "same_grid", "choose_reference", "CheckedInputs", "read_and_check", "estimate_memory", "check_memory"]

#: Fewest voxels along any axis for an image to count as a 3D volume.
MIN_AXIS_VOXELS = 4
#: An integer-valued image with at most this many distinct values (all in 0..255) looks like a label map.
LABELMAP_MAX_VALUES = 8
#: Least physical size (mm) of an input along each axis: 4 voxels of the model's 1 mm grid.
MIN_EXTENT_MM = 4.0
#: Non-background voxels spread over less than this fraction of their magnitude: no contrast.
CONTRAST_MIN_RELATIVE = 1e-6
#: Warn when an input's bounding box covers less than this fraction of the reference's.
MIN_COVERAGE = 0.5


def _label(what: str, source: str | None) -> str:
    return f"{what} '{source}'" if source else what


def check_image(image: sitk.Image, what: str, source: str | None) -> list[str]:
    """Check one input image; raise `InputError` if unusable, return warnings otherwise.

    `what` is the modality (or role) and `source` the file or node it came from; both are
    named in every message. Fast on a BraTS volume (a few numpy passes over a view).
    """
    label = _label(what, source)
    size = tuple(image.GetSize())
    check_shape(image.GetDimension(), size, image.GetNumberOfComponentsPerPixel(), label, image.GetPixelID())
    check_spacing(image.GetSpacing(), label)
    if image.GetDimension() != 3:
        # check_shape lets a 4D image with one time point through for read_image to squeeze;
        # an in-memory image must already be 3D.
        raise InputError(f"{label} is a {image.GetDimension()}D image (size {'x'.join(map(str, size))}); "
                         "a 3D volume is needed")
    if min(size) < MIN_AXIS_VOXELS:
        raise InputError(f"{label} is too small ({'x'.join(map(str, size))} voxels): at least "
                         f"{MIN_AXIS_VOXELS} voxels along each axis are needed for a 3D volume")

    arr = sitk.GetArrayViewFromImage(image)
    if arr.dtype.kind == "f" and not np.isfinite(arr).all():
        n_nan = int(np.count_nonzero(np.isnan(arr)))
        n_inf = int(np.count_nonzero(np.isinf(arr)))
        raise InputError(f"{label} {nonfinite_problem(n_nan, n_inf, arr.size)}")
    lo, hi = arr.min(), arr.max()
    if lo == hi:
        if lo == 0:
            raise InputError(f"{label} is empty (every voxel is 0)")
        raise InputError(f"{label} has the same value ({float(lo):g}) in every voxel; it holds no image")

    _check_extent(image, label)
    _check_contrast(arr, label)

    warnings: list[str] = []
    values = _few_small_integers(arr, float(lo), float(hi))
    if values is not None:
        shown = ",".join(str(v) for v in values)
        warnings.append(f"{label} looks like a label map (values {shown}), not an MR image")
    note = read_note(image)
    if note:   # what the reader did to it (uneven DICOM slices resampled)
        warnings.append(f"{label} {note}")
    return warnings


def _check_extent(image: sitk.Image, label: str) -> None:
    """Refuse an image whose physical size is far below a head's: a header in the wrong units.

    An image at 0.001 mm spacing is a few hundredths of a millimetre across; resampled onto
    the model's 1 mm grid it becomes a single voxel, and the run would end in a puzzling
    "all inputs are empty". Say what is wrong and where instead.
    """
    spacing, size = image.GetSpacing(), image.GetSize()
    extent = [float(sp) * int(n) for sp, n in zip(spacing, size)]
    if min(extent) < MIN_EXTENT_MM:
        raise InputError(f"{label} is only {_fmt(extent)} mm across ({'x'.join(map(str, size))} voxels of "
                         f"{_fmt(spacing)} mm), far smaller than a head; its voxel spacing is wrong (a header in "
                         f"metres or micrometres?); at least {MIN_EXTENT_MM:g} mm along each axis is needed")


def _check_contrast(arr: np.ndarray, label: str) -> None:
    """Refuse an image with no contrast inside the brain: every non-background voxel the same value.

    Such an image (a constant 1e30 brain on a zero background, a binary brain mask) is a
    mask, not a scan, and the network would still segment "tumour" in it. The background is
    the median of the volume's faces (0 for skull-stripped scans).
    """
    background = arr.dtype.type(face_median(arr))
    inside = arr[arr != background]
    if inside.size == 0:
        return  # constant images are refused before
    lo, hi = float(inside.min()), float(inside.max())
    if hi - lo <= CONTRAST_MIN_RELATIVE * max(abs(lo), abs(hi)):
        raise InputError(f"{label} has no contrast inside the brain: all {inside.size} voxels that are not "
                         f"background ({float(background):g}) have the value {lo:g}; it is a mask, not an MR scan")


def _few_small_integers(arr: np.ndarray, lo: float, hi: float) -> list[int] | None:
    """The distinct values if `arr` holds at most LABELMAP_MAX_VALUES integers in 0..255, else None."""
    if lo < 0 or hi > 255:
        return None
    flat = arr.reshape(-1)
    # Quick rejection on a strided sample: any real MR image has many distinct values.
    sample = flat[:: max(1, flat.size // 200_000)]
    if np.unique(sample).size > LABELMAP_MAX_VALUES:
        return None
    ints = flat.astype(np.uint8)
    if flat.dtype.kind == "f" and not np.array_equal(ints, flat):
        return None
    counts = np.bincount(ints, minlength=256)
    values = np.flatnonzero(counts)
    if values.size > LABELMAP_MAX_VALUES:
        return None
    return [int(v) for v in values]


def choose_reference(names, reference: str | None = None) -> str:
    """The reference modality: `reference` if given, else the first of REFERENCE_PREFERENCE present."""
    names = list(names)
    if not names:
        raise InputError("no input image given: give at least one of T1, T1ce, T2, FLAIR")
    if reference is not None:
        if reference not in names:
            raise InputError(f"reference '{reference}' is not among the inputs ({', '.join(names)})")
        return reference
    return default_reference(names)


def _fmt(values) -> str:
    return "x".join(f"{float(v):.3g}" for v in values)


def _grid_differences(a: sitk.Image, ref: sitk.Image, tol: float = 1e-4) -> list[str]:
    parts = []
    if a.GetSize() != ref.GetSize():
        parts.append(f"size {_fmt(a.GetSize())} vs {_fmt(ref.GetSize())}")
    if not np.allclose(a.GetSpacing(), ref.GetSpacing(), atol=tol):
        parts.append(f"spacing {_fmt(a.GetSpacing())} vs {_fmt(ref.GetSpacing())} mm")
    if not np.allclose(a.GetDirection(), ref.GetDirection(), atol=tol):
        parts.append("orientation differs")
    shift = float(np.linalg.norm(np.subtract(a.GetOrigin(), ref.GetOrigin())))
    if shift > tol * 100:
        parts.append(f"origin {shift:.3g} mm apart")
    return parts


def _same_file(a: str | None, b: str | None) -> bool:
    if not a or not b:
        return False
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False  # not files (e.g. Slicer node names) or gone


def check_inputs(images: Mapping[str, sitk.Image], sources: Mapping[str, str | None],
                 *, reference: str | None = None) -> list[str]:
    """Check the inputs against each other; raise `InputError` if unusable, return warnings.

    `images` and `sources` are keyed by modality; the reference is `reference` or the
    first present in REFERENCE_PREFERENCE (T1ce, FLAIR, T1, T2).
    """
    names = list(images)
    ref = choose_reference(names, reference)
    ref_img = images[ref]
    warnings: list[str] = []

    for i, a in enumerate(names):
        for b in names[i + 1:]:
            if _same_file(sources.get(a), sources.get(b)):
                warnings.append(f"{a} and {b} are the same file '{sources.get(a)}'")
            elif same_voxels(images[a], images[b]):
                warnings.append(f"{_label(a, sources.get(a))} and {_label(b, sources.get(b))} have identical "
                                "voxel values: the same scan given twice?")

    ref_lo, ref_hi = physical_bounds(ref_img)
    for m in names:
        if m == ref:
            continue
        img = images[m]
        if not extents_overlap(img, ref_img):
            lo, hi = physical_bounds(img)
            gap = np.maximum(0.0, np.maximum(lo - ref_hi, ref_lo - hi))
            raise InputError(f"{_label(m, sources.get(m))} and {_label(ref, sources.get(ref))} do not overlap in "
                             f"physical space (their extents are {float(np.linalg.norm(gap)):.0f} mm apart); "
                             "are they scans of the same patient and session?")
        if same_grid(img, ref_img):
            continue
        diffs = _grid_differences(img, ref_img)
        warnings.append(f"{m} is on a different grid than {ref} ({'; '.join(diffs) or 'small differences'}); "
                        f"resampled onto {ref}")
        lo, hi = physical_bounds(img)
        inter = np.clip(np.minimum(hi, ref_hi) - np.maximum(lo, ref_lo), 0, None)
        coverage = float(np.prod(inter) / np.prod(ref_hi - ref_lo))
        if coverage < MIN_COVERAGE:
            warnings.append(f"{_label(m, sources.get(m))} covers only {100 * coverage:.0f}% of {ref}'s extent; "
                            "outside it that scan is treated as empty")
    return warnings


#: Voxel size (mm) of the coarse grid on which the alignment check compares the scans' masks.
ALIGN_GRID_MM = 4.0
#: Warn when the centres of two scans' non-background masks are further apart than this (mm) ...
ALIGN_MAX_CENTRE_MM = 3.0
#: ... or when the masks overlap less than this (Dice). Co-registered BraTS scans: Dice >= 0.957,
#: centres <= 2.0 mm apart; a 6 degree / 8 mm shift: Dice <= 0.92, centres >= 6.7 mm apart.
ALIGN_MIN_DICE = 0.93


def _mask_centre(mask: np.ndarray, image: sitk.Image) -> np.ndarray:
    """Physical centre (mm) of a mask on `image`'s grid."""
    idx = np.argwhere(mask).mean(axis=0)[::-1]  # (x, y, z) continuous index
    return np.asarray(image.TransformContinuousIndexToPhysicalPoint([float(v) for v in idx]))


#: Along an axis, a scan whose mask spans less than this share of the other's is taken to have a
#: field of view cut short there (clinical series often cover part of the head; a BraTS case's
#: FLAIR spans 35 of its T1ce's 44 coarse rows): a misregistration moves a mask, it does not
#: shorten it.
CUT_SPAN_SHARE = 0.85
#: Share of the shorter span left out next to a cut end: a cut seldom lies along the grid (that
#: FLAIR's brain thins over its last 40 mm), so the masks are compared away from it.
CUT_MARGIN_SHARE = 0.25


def common_window(a: np.ndarray, b: np.ndarray) -> tuple:
    """Slices of the grid where both scans can be compared, judged from their masks: along each
    axis where one mask spans clearly less than the other (`CUT_SPAN_SHARE`), the overlap of the
    spans, less a margin next to each end where the shorter one is cut (`CUT_MARGIN_SHARE`);
    elsewhere the whole axis."""
    window = []
    for axis in range(a.ndim):
        others = tuple(i for i in range(a.ndim) if i != axis)
        fa, fb = np.flatnonzero(a.any(axis=others)), np.flatnonzero(b.any(axis=others))
        if fa.size and fb.size:
            (s0, s1), (l0, l1) = sorted([(fa[0], fa[-1]), (fb[0], fb[-1])], key=lambda e: e[1] - e[0])
            if s1 - s0 + 1 < CUT_SPAN_SHARE * (l1 - l0 + 1):
                margin = int(round(CUT_MARGIN_SHARE * (s1 - s0 + 1)))
                lo = s0 + margin if s0 > l0 + 1 else max(s0, l0)
                hi = s1 - margin if s1 < l1 - 1 else min(s1, l1)
                window.append(slice(int(lo), int(hi) + 1))
                continue
        window.append(slice(0, a.shape[axis]))
    return tuple(window)


def check_alignment(images: Mapping[str, sitk.Image], reference: str) -> list[str]:
    """Warn about scans that look misregistered against the reference (a quick, intensity-based check).

    Each scan's head/brain mask (non-background voxels, on a ~4 mm grid) is compared with the
    reference's: their overlap (Dice) and the distance between their centres. Works across
    contrasts because it looks only at where the signal is, not what it is. Scans on another
    grid are compared inside their field of view; a scan whose field of view is cut short on
    the same grid (its mask clearly shorter along an axis, `common_window`) is compared inside
    the part both cover. Scans whose mask is (nearly) empty or fills the whole field of view are not judged.
    Skip it when the scans are co-registered anyway.
    """
    ref_score = background_distance_score(images[reference], ALIGN_GRID_MM)
    ref_mask = sitk.GetArrayViewFromImage(ref_score) > 1.0
    warnings: list[str] = []
    for m, img in images.items():
        if m == reference:
            continue
        score = background_distance_score(img, ALIGN_GRID_MM)
        if not same_grid(score, ref_score):
            # -1 marks coarse voxels outside this scan's field of view
            score = sitk.Resample(score, ref_score, sitk.Transform(), sitk.sitkLinear, -1.0, sitk.sitkFloat32)
        arr = sitk.GetArrayViewFromImage(score)
        inside = arr >= 0
        b = arr > 1.0
        # a field of view cut short (either scan's) limits where the two can be compared
        common = np.zeros_like(inside)
        common[common_window(ref_mask & inside, b)] = True
        inside &= common
        a, b = ref_mask & inside, b & inside
        n_in = int(np.count_nonzero(inside))
        na, nb = int(np.count_nonzero(a)), int(np.count_nonzero(b))
        # not judged: nothing to compare, or no background left to tell where the head is
        if min(na, nb) < 50 or max(na, nb) > 0.85 * n_in:
            continue
        dice = 2.0 * np.count_nonzero(a & b) / (na + nb)
        apart = float(np.linalg.norm(_mask_centre(a, ref_score) - _mask_centre(b, ref_score)))
        if dice < ALIGN_MIN_DICE or apart > ALIGN_MAX_CENTRE_MM:
            warnings.append(
                f"{m} looks misaligned with {reference}: their head/brain masks (non-background voxels, "
                f"{ALIGN_GRID_MM:g} mm grid) overlap with Dice {dice:.3f} and their centres are {apart:.1f} mm "
                f"apart (co-registered scans: Dice above {ALIGN_MIN_DICE:g}, under {ALIGN_MAX_CENTRE_MM:g} mm); "
                "co-register them or run with --register (register=True; 'Co-register inputs' in Slicer)")
    return warnings


ImageLike = Union[str, "os.PathLike[str]", sitk.Image]


@dataclass
class CheckedInputs:
    """Input images that passed every check: what `Segmenter.segment` runs on.

    Made by `read_and_check`, so a caller can refuse bad input before loading a model and
    then hand the same images to the segmenter without reading them twice.
    """

    images: dict                                  # canonical modality -> float32 SimpleITK image
    sources: dict                                 # modality -> file path, or "<T1 image in memory>"
    reference: str                                # modality whose grid the output uses
    warnings: list = field(default_factory=list)
    #: (model spacing, max_memory_gb) the memory check passed for (`check_memory`), so a run that
    #: checked its inputs before loading the model is not checked again by `Segmenter.segment`
    memory_checked: tuple | None = None


def read_and_check(inputs: Mapping[str, ImageLike] | CheckedInputs, reference: str | None = None, *,
                   names: Mapping[str, str] | None = None) -> CheckedInputs:
    """Read every input (files or SimpleITK images) and run all input checks; raise `InputError`.

    Keys are modality names or aliases; `None` values are skipped. `reference` is the
    modality whose grid the output uses (default: the first of T1ce, FLAIR, T1, T2 given).
    `names` names images given in memory (e.g. "<DICOM series 5 'AX T1 +C'>"), keyed like `inputs`.
    """
    if isinstance(inputs, CheckedInputs):
        if reference is not None and canonical(reference) != inputs.reference:
            raise InputError(f"reference {reference} differs from the checked inputs' {inputs.reference}")
        return inputs
    if not isinstance(inputs, Mapping) or not inputs:
        raise InputError("no input image given: provide at least one of T1, T1ce, T2, FLAIR")
    images, sources = {}, {}
    for key, value in inputs.items():
        if value is None:
            continue
        mod = canonical(key)
        if mod in images:
            raise InputError(f"modality {mod} given twice ('{key}' and another alias)")
        if not isinstance(value, (str, os.PathLike, sitk.Image)):
            raise InputError(f"{mod}: give a file path or a SimpleITK image, not {type(value).__name__}")
        images[mod] = read_image(value, what=mod)
        if isinstance(value, sitk.Image):
            sources[mod] = (names or {}).get(key) or f"<{mod} image in memory>"
        else:
            from ..io.pathcheck import shown_path
            from ..io.stacks import StackChannel
            sources[mod] = (value.describe() if isinstance(value, StackChannel) else
                            shown_path(value) if isinstance(value, str) else shown_path(os.fspath(value)))
    if not images:
        raise InputError("no input image given: provide at least one of T1, T1ce, T2, FLAIR")
    warnings: list[str] = []
    for mod, img in images.items():
        warnings += check_image(img, mod, sources[mod])
    if reference is not None:
        reference = canonical(reference)
        if reference not in images:
            raise InputError(f"reference modality {reference} is not among the inputs ({', '.join(images)})")
    reference = choose_reference(images, reference)
    warnings += check_inputs(images, sources, reference=reference)
    return CheckedInputs(images, sources, reference, warnings)


#: Bytes per voxel of the model grid the pipeline holds at its peak: fixed part and per scan.
#: Fitted to the peaks reported for a 600x600x400 volume at 1 mm (issue 11: 5.8 GB with one
#: scan, 10.9 GB with four), about 28 + 12 n bytes per voxel; an estimate, not a bound.
MEMORY_PER_VOXEL = (28.0, 12.0)
#: What the process needs besides the volumes (libraries, the network, buffers).
MEMORY_BASE = 600_000_000


def model_grid_voxels(image: sitk.Image, spacing) -> float:
    """Voxels of `image`'s physical extent on a grid with the model's `spacing` (x, y, z mm)."""
    lo, hi = physical_bounds(image)
    extent = np.asarray(hi, float) - np.asarray(lo, float)
    sp = np.asarray([float(v) for v in spacing], float)
    return float(np.prod(np.maximum(np.ceil(extent / sp), 1.0)))


def estimate_memory(images: Mapping[str, sitk.Image], reference: str, spacing) -> int:
    """Approximate peak bytes `Segmenter.segment` needs for these inputs (CPU memory)."""
    n = len(images)
    voxels = model_grid_voxels(images[reference], spacing)
    ref_voxels = float(np.prod(images[reference].GetSize()))
    read = sum(4.0 * float(np.prod(img.GetSize())) for img in images.values())
    # The inputs as read, everything on the model grid, and the outputs back on the reference grid.
    total = MEMORY_BASE + read + voxels * (MEMORY_PER_VOXEL[0] + MEMORY_PER_VOXEL[1] * n) + 16.0 * ref_voxels
    return int(min(total, 1e18))


def check_memory(checked: CheckedInputs, spacing, max_memory_gb=None) -> int:
    """Refuse (`InputError`) inputs whose estimated memory exceeds the limit; return the estimate
    (-1 when these inputs passed the same check already: each run checks once).

    The limit is `max_memory_gb`, else $LCKD_MAX_MEMORY_GB, else 80% of this machine's memory
    (`lckd.base.optionchecks.memory_limit`).
    """
    from ..base.optionchecks import MEMORY_ENV, memory_limit

    key = (None if spacing is None else tuple(float(v) for v in spacing), max_memory_gb)
    if checked.memory_checked == key:
        return -1   # checked already, for the same grid and limit: once per run
    need = estimate_memory(checked.images, checked.reference, spacing)
    limit, source = memory_limit(max_memory_gb)
    if need > limit:
        ref = checked.images[checked.reference]
        size = "x".join(str(s) for s in ref.GetSize())
        sp = "x".join(f"{v:g}" for v in ref.GetSpacing())
        raise InputError(f"this case needs about {need / 1e9:.3g} GB of memory ({checked.reference} is {size} voxels "
                         f"at {sp} mm, {len(checked.images)} scan(s), resampled to the model's "
                         f"{'x'.join(f'{float(v):g}' for v in spacing)} mm), above the limit of "
                         f"{limit / 1e9:.3g} GB ({source}); crop the scans or raise the limit with "
                         f"--max-memory GB or ${MEMORY_ENV}")
    checked.memory_checked = key
    return need
