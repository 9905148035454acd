"""Raw clinical scans to BraTS-style input: detection, co-registration, brain extraction, N4.

One pipeline for every entry point (`Segmenter.segment` runs it, so the CLI, batch, the
worker and the Slicer module share it), for any subset of scans:

1. refuse localizers (fewer than `MIN_SLICES` slices);
2. co-register every series rigidly onto the reference series (`lckd.prep.registration`) and
   resample it onto the reference grid: the output is drawn on that grid;
3. extract the brain on one scan, the first of `EXTRACTION_PREFERENCE` given (the default
   extractor was trained on T1-weighted scans and measured worst on T2), now on the
   reference grid, and refuse a scan in which no brain is found;
4. refuse series that miss most of the reference's head (before registering) or of the
   brain (after), and series whose head the registration left misaligned with the reference's
   (Dice of the head masks inside the series' field of view), and warn about a series whose
   anatomy inside the extracted brain does not line up with the reference's: scans of another
   patient (`lckd.prep.samehead`);
5. zero everything outside the mask in every series (the network's brain mask is then the
   extracted one) and, on request, correct the bias field with N4 inside it.

`decide` is the `auto` rule: a scan looks unstripped when its background is not one
constant value (scanner noise) or when it holds more signal than a brain could; BraTS-style
input passes in a few hundredths of a second.
"""
from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Callable, Optional

import numpy as np
import SimpleITK as sitk

from ..base.errors import InputError
from ..base.optionchecks import check_brain_extractor, check_preprocess
from .foreground import bright_voxels, face_background
from .samehead import judge_registered

Progress = Optional[Callable[[float, str], None]]

__all__ = ["Decision", "RawPrepared", "decide", "decide_verdicts", "series_verdict", "prepare_raw_scans",
           "extraction_scan"]

#: A series with fewer slices than this along its thinnest axis is a localizer (scout).
MIN_SLICES = 10
#: Scans whose field of view is under this (second-largest side, mm) are not judged by `auto`.
MIN_HEAD_FOV_MM = 120.0
#: Skull-stripped scans keep at least this share of voxels at the one background value.
MIN_CONSTANT_BACKGROUND = 0.2
#: More signal than this (litres) is more than a brain: a head with skull, scalp and neck.
MAX_BRAIN_LITRES = 2.2
#: An extracted mask outside these volumes (mL) or box sides (mm; left-right, front-back,
#: top-bottom) is not an adult brain: the extractors (deepbet, HD-BET) return a confident
#: "brain" even for a leg or pure noise. Measured: 18 BraTS brains 1.4-1.7 L and 132-167 x
#: 153-198 x 128-160 mm (raw phantoms, T2 the loosest, up to 2.24 L); a leg-sized cylinder
#: gave 91 x 114 x 149 mm, noise 195 x 192 x 146 mm and 2.2 L.
BRAIN_ML_RANGE = (600.0, 2600.0)
BRAIN_SIDES_MM = ((105.0, 185.0), (130.0, 225.0), (80.0, 185.0))
#: Share of the brain a registered series must cover (refused under it; noted under 95 %).
MIN_COVERAGE = 0.5
#: Head masks of a registered series and the reference overlap at least this much (Dice):
#: 0.95-0.96 on raw phantoms, 0.84 for a series whose header turns it 90 degrees. A residual
#: error of a few degrees passes (a 30 degree turn registered to 9 degrees off gave 0.93).
MIN_HEAD_DICE = 0.9
#: The scan the brain is extracted on: the first of these given.
EXTRACTION_PREFERENCE = ("T1ce", "T1", "FLAIR", "T2")


@dataclass
class Decision:
    """Whether the raw pipeline runs, and the one line that says why."""

    run: bool
    reason: str
    headline: str = ""        # the reason without its evidence, e.g. "scans look unstripped"


def series_verdict(name: str, array: np.ndarray, spacing) -> tuple[bool | None, str]:
    """(True: unstripped, False: skull-stripped, None: not judged, reason) for one scan.

    `array` is the voxel array in any axis order and `spacing` its voxel size (mm, any order:
    only the field of view's sides and the voxel volume are used), so the Slicer module can
    judge its volume nodes' arrays without copying them into SimpleITK images.
    """
    sides = sorted(np.array(array.shape[::-1], dtype=float) * np.array(spacing, dtype=float))
    if sides[1] < MIN_HEAD_FOV_MM:
        return None, f"{name}: field of view under {MIN_HEAD_FOV_MM:g} mm"
    bg = array.dtype.type(face_background(array))
    at_bg = np.count_nonzero(array == bg)
    if at_bg < MIN_CONSTANT_BACKGROUND * array.size:
        return True, (f"{name}: background is not constant ({at_bg / array.size:.0%} of voxels at one value, "
                      f"skull-stripped scans have over {MIN_CONSTANT_BACKGROUND:.0%})")
    litres = (array.size - at_bg) * float(np.prod(spacing)) / 1e6
    if litres > MAX_BRAIN_LITRES:
        return True, f"{name}: {litres:.1f} L of signal, more than a brain (under {MAX_BRAIN_LITRES:g} L)"
    return False, f"{name}: constant background, {litres:.1f} L of signal"


def decide_verdicts(verdicts: list[tuple[bool | None, str]]) -> Decision:
    """The `auto` decision from every scan's `series_verdict`: raw if any scan looks unstripped."""
    raw = [why for v, why in verdicts if v]
    if raw:
        more = f"; {len(raw) - 1} more scan(s) alike" if len(raw) > 1 else ""
        return Decision(True, f"scans look unstripped ({raw[0]}{more}): extracting the brain",
                        "scans look unstripped")
    return Decision(False, "scans look skull-stripped (constant background, brain-sized): raw-scan "
                           "preprocessing skipped", "scans look skull-stripped")


def decide(images: Mapping[str, sitk.Image], mode: str = "auto") -> Decision:
    """Run the raw pipeline? `on`/`off` say so; `auto` runs it when any scan looks unstripped."""
    check_preprocess(mode)
    if mode != "auto":
        reason = f"raw-scan preprocessing {mode} (asked for)"
        return Decision(mode == "on", reason, reason)
    return decide_verdicts([series_verdict(m, sitk.GetArrayViewFromImage(img), img.GetSpacing())
                            for m, img in images.items()])


def extraction_scan(names) -> str:
    """The scan the brain is extracted on (see EXTRACTION_PREFERENCE)."""
    given = list(names)
    return next((m for m in EXTRACTION_PREFERENCE if m in given), given[0])


@dataclass
class RawPrepared:
    """Scans on the reference grid with everything outside the brain set to 0."""

    images: dict                      # modality -> float32 image on the reference grid
    brain_mask: sitk.Image            # uint8 on the reference grid
    scan: str                         # the scan the brain was extracted on
    summary: str = ""                 # "brain: deepbet on T1ce, 1450 mL"
    notes: list = field(default_factory=list)    # warnings (a series covering part of the brain)
    timings: dict = field(default_factory=dict)
    info: list = field(default_factory=list)     # information (how far registration moved each series)
    #: registered series that do not look like the reference's head (`lckd.prep.samehead`); each is in `notes` too
    mismatches: list = field(default_factory=list)


def _check_slices(images: Mapping[str, sitk.Image]) -> None:
    for m, img in images.items():
        n = min(img.GetSize())
        if n < MIN_SLICES:
            raise InputError(f"{m} has only {n} slices ({'x'.join(map(str, img.GetSize()))}): a localizer "
                             f"(scout), not a diagnostic series; leave it out")


def check_brain_shape(mask: sitk.Image, scan: str) -> float:
    """The mask's volume (mL) if it is shaped like an adult brain (BRAIN_ML_RANGE,
    BRAIN_SIDES_MM), else an InputError: the scan holds no head."""
    oriented = sitk.DICOMOrient(mask, "LPS")      # array axes: top-bottom, front-back, left-right
    arr = sitk.GetArrayViewFromImage(oriented) > 0
    ml = float(np.count_nonzero(arr)) * float(np.prod(mask.GetSpacing())) / 1000.0
    sides = []
    for axis, spacing in zip((2, 1, 0), oriented.GetSpacing()):
        idx = np.nonzero(arr.any(axis=tuple(a for a in range(3) if a != axis)))[0]
        sides.append(float(idx[-1] - idx[0] + 1) * spacing if idx.size else 0.0)
    shaped = all(lo <= v <= hi for v, (lo, hi) in zip(sides, BRAIN_SIDES_MM))
    if not shaped or not BRAIN_ML_RANGE[0] <= ml <= BRAIN_ML_RANGE[1]:
        expected = " x ".join(f"{lo:g}-{hi:g}" for lo, hi in BRAIN_SIDES_MM)
        raise InputError(f"no brain found in {scan}: the extracted region is {' x '.join(f'{v:.0f}' for v in sides)} "
                         f"mm (left-right x front-back x top-bottom) and {ml:.0f} mL, where an adult brain is "
                         f"{expected} mm and {BRAIN_ML_RANGE[0]:g}-{BRAIN_ML_RANGE[1]:g} mL; is it a head scan?")
    return ml


def _fov(moving: sitk.Image, grid: sitk.Image, tx: sitk.Transform) -> np.ndarray:
    """Voxels of `grid` inside `moving`'s field of view once the transform is applied (bool)."""
    ones = sitk.Image(moving.GetSize(), sitk.sitkUInt8) + 1
    ones.CopyInformation(moving)
    return sitk.GetArrayFromImage(sitk.Resample(ones, grid, tx, sitk.sitkNearestNeighbor, 0)) > 0


def _coverage(moving: sitk.Image, mask: sitk.Image, tx: sitk.Transform) -> float:
    """Share of the mask's voxels inside `moving`'s field of view after the transform."""
    m = sitk.GetArrayViewFromImage(mask) > 0
    return float(np.count_nonzero(_fov(moving, mask, tx)[m])) / max(1, int(np.count_nonzero(m)))


def head_mask(image: sitk.Image) -> np.ndarray:
    """The head of a scan without the noise around it (`lckd.prep.foreground.bright_voxels`), also
    on a series resampled onto the reference grid, whose field of view is padded with 0."""
    return bright_voxels(sitk.GetArrayViewFromImage(image))


def _head_overlap(ref_head: np.ndarray, registered: sitk.Image, fov: np.ndarray) -> float:
    """Dice of the reference's head and a registered series' head, inside that series' field of
    view (outside it the resampled series is empty, which says nothing about alignment)."""
    from ..base.metrics import mask_dice

    return mask_dice(ref_head & fov, head_mask(registered) & fov)


def _n4(image: sitk.Image, mask: sitk.Image, shrink: int = 4) -> sitk.Image:
    """N4 bias-field correction fitted on a shrunk copy, applied at full resolution."""
    small = sitk.Shrink(image, [shrink] * 3)
    small_mask = sitk.Shrink(mask, [shrink] * 3)
    n4 = sitk.N4BiasFieldCorrectionImageFilter()
    n4.SetMaximumNumberOfIterations([50, 50, 30])
    n4.Execute(small, small_mask)
    log_field = n4.GetLogBiasFieldAsImage(image)
    return sitk.Cast(image / sitk.Exp(log_field), sitk.sitkFloat32)


def _register_checked(images: Mapping[str, sitk.Image], reference: str, report: Callable[[float, str], None],
                      notes: list) -> tuple[dict, dict]:
    """Every series registered onto the reference grid, with the overlap checks before and after;
    how far each series moved goes to `notes` (information, not a warning)."""
    from .registration import register_inputs

    # scans of one session share scanner coordinates: a series that misses most of the
    # reference's head there cannot be registered onto it, so say so before trying
    ref_head = head_mask(images[reference])
    head = sitk.GetImageFromArray(ref_head.astype(np.uint8))
    head.CopyInformation(images[reference])
    for m, img in images.items():
        cover = _coverage(img, head, sitk.Transform()) if m != reference else 1.0
        if cover < MIN_COVERAGE:
            raise InputError(f"{m} covers only {cover:.0%} of the head in {reference}'s field of view: the "
                             "series do not overlap enough to be registered; leave it out")
    report(0.0, f"register: co-registering onto {reference}")
    registered, transforms = register_inputs(images, reference, notes=notes,
                                             progress=lambda f, m: report(0.05 * f, f"register: {m}"))
    for m in registered:
        if m == reference:
            continue
        overlap = _head_overlap(ref_head, registered[m], _fov(images[m], head, transforms[m]))
        if overlap < MIN_HEAD_DICE:
            raise InputError(f"co-registration of {m} onto {reference} did not converge: their heads overlap "
                             f"with Dice {overlap:.2f} after it (aligned series: over {MIN_HEAD_DICE:g}); check "
                             "that the series are of the same patient and session, and leave out the one "
                             "that is not")
    return registered, transforms


def prepare_raw_scans(images: Mapping[str, sitk.Image], reference: str, *, method: str | None = None,
                      device: str = "cpu", bias_correction: bool = False, progress: Progress = None
                      ) -> RawPrepared:
    """Run the raw pipeline (module docstring); raises InputError with one line on bad input."""
    from .brainextract import extract_brain

    report = progress or (lambda f, m: None)
    method = check_brain_extractor(method)
    _check_slices(images)
    notes: list[str] = []
    info: list[str] = []
    timings: dict[str, float] = {}
    registered: dict = dict(images)
    transforms: dict = {}
    if len(images) > 1:
        t = time.perf_counter()
        registered, transforms = _register_checked(images, reference, report, info)
        timings["register"] = time.perf_counter() - t
    scan = extraction_scan(registered)
    report(0.05, f"brain extraction: {method} on {scan}")
    t = time.perf_counter()
    try:
        mask = extract_brain(registered[scan], method, device)
    except InputError:
        raise
    except (AssertionError, RuntimeError, ValueError, IndexError) as exc:
        raise InputError(f"brain extraction found no brain in {scan} ({type(exc).__name__}): is it a head scan?") \
            from None
    timings["brain extraction"] = time.perf_counter() - t
    brain_ml = check_brain_shape(mask, scan)
    for m, tx in transforms.items():
        if m == reference:
            continue
        cover = _coverage(images[m], mask, tx)
        if cover < MIN_COVERAGE:
            raise InputError(f"{m} covers only {cover:.0%} of the brain after co-registration onto {reference}: "
                             "the series do not overlap; leave it out")
        if cover < 0.95:
            notes.append(f"{m} covers {cover:.0%} of the brain; the rest is segmented without it")
    mismatches = judge_registered(images, reference, transforms, brain=mask) if transforms else []
    notes += [mm.warning() for mm in mismatches]

    t = time.perf_counter()
    out = {}
    for i, (m, img) in enumerate(registered.items()):
        img = sitk.Mask(sitk.Cast(img, sitk.sitkFloat32), mask)
        if bias_correction:
            report(0.07 + 0.03 * i / len(registered), f"bias correction: N4 on {m}")
            img = _n4(img, mask)
        out[m] = img
    timings["bias correction" if bias_correction else "mask"] = time.perf_counter() - t
    summary = f"brain: {method} on {scan}, {brain_ml:.0f} mL" + (", N4 bias correction" if bias_correction else "")
    return RawPrepared(out, mask, scan, summary, notes, timings, info, mismatches)
