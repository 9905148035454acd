"""Deterministic synthetic BraTS-like cases (brain, tissues, tumour) in four MRI contrasts.

A phantom is built in two steps:

1. Anatomy (from the seed only): a skull-stripped brain (deformed, tapered ellipsoid) with
   cortical grey matter folded around sulci, white matter, deep grey nuclei, ventricles, a
   thin outer CSF rim, the interhemispheric fissure, a few vessels, and a glioma in one
   hemisphere: enhancing rim (ET), necrotic core (NCR, sometimes absent) and oedema (ED)
   that spreads through white matter.
2. Appearance (per modality): per-tissue mean intensities that keep each contrast's
   characteristic tumour appearance (T1ce: bright ET, dark necrosis; FLAIR: bright whole
   tumour, dark CSF; T2: bright oedema close to CSF; T1: tumour slightly dark), tissue
   texture, partial-volume blur, a smooth bias field, Rician noise, gamma and a global
   scale/offset. With ``randomize_appearance=True`` all of these are drawn from wide
   ranges (the SynthSeg idea), otherwise fixed mid-range values are used.

Geometry is defined in "reference millimetres" (q-space): the BraTS grid, 240 x 240 x 155
at 1 mm, is the reference; a grid with another shape or spacing is mapped onto it with one
isotropic scale, so a 64^3 phantom is the same brain shrunk to fit. The anatomy of a seed
is therefore the same at every resolution (thin structures get a floor of about one voxel
so they do not vanish). Anatomy and appearance use separate random streams, so the label
map of a seed does not depend on ``randomize_appearance``.

Matched against the one real BraTS 2023 case in ../shared/data/real (BraTS-GLI-00001-000,
brain = voxels non-zero in all four scans):

                                    real case           default phantom, mean of seeds 0-11
  brain fraction of 240x240x155     18.4 %              18.6 % (sd 2.2)
  brain bounding box z, y, x        137 190 140         136 189 140
  brain median T1/T1ce/T2/FLAIR     973 2973 571 1010   the same (scaled to them)
  p1, p5, p95, p99 / median  T1     .32 .56 1.29 1.40   .27 .49 1.25 1.32
                             T1ce   .39 .60 1.33 2.09   .33 .57 1.27 1.97
                             T2     .19 .54 2.80 3.90   .36 .65 2.69 3.53
                             FLAIR  .13 .29 1.74 2.46   .17 .42 1.88 2.59
  WM high-pass std / median         .071 .078 .154 .112 .064 .064 .130 .102
  (T1, T1ce, T2, FLAIR)

Tissue means in the real case relative to the median (rough 3-class k-means on T1, T2,
FLAIR): CSF T1 0.75, T1ce 0.7, T2 2.9-3.4, FLAIR 0.3-0.6; GM T1 0.8-0.95, T2 1.1-1.2,
FLAIR 1.1-1.2; WM T1 1.05-1.1, T2 0.8, FLAIR 0.8; FLAIR-bright lesion T2 1.9, FLAIR 2.25;
enhancing rim T1ce 2.2. The outermost voxel layer is dark in every contrast (partial
volume with what skull stripping removed). The phantom's low tails (p1, p5 of T2 and
FLAIR) are less deep than the real ones. The FLAIR hyperintensity of the real case
(Testing/experiments/real_case_check.py) against its white matter: T1 0.83, T1ce 0.71,
T2 2.45, FLAIR 2.67; the phantom's oedema is drawn around those (T1 0.75-0.90 and T1ce
0.68-0.88 x WM, T2 0.40-0.70 x CSF, about 2 x median), which leaves FLAIR the clearest
single view of the whole tumour, as on real scans, and T2 oedema confusable with CSF.
Testing/python/test_phantom.py compares these statistics when the real case is present.
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from scipy import ndimage

from ..base.errors import InputError
from ..base.modalities import MODALITIES

if TYPE_CHECKING:  # SimpleITK is imported lazily: building arrays does not need it
    import SimpleITK as sitk

__all__ = ["PhantomCase", "make_phantom", "write_phantom_dataset", "REAL_MEDIANS"]

# --------------------------------------------------------------------------- constants

#: Reference field of view in mm, array order (z, y, x): the BraTS grid at 1 mm.
REF_FOV_MM = np.array([155.0, 240.0, 240.0])

#: Brain semi-axes (z, y, x) in reference mm, before deformation. The real case's brain is
#: widest 4 mm below the grid centre (188 x 138 mm there) and reaches 72 mm up and 64 mm
#: down from that level, where it narrows and loses its frontal part (posterior fossa,
#: temporal lobes). Separate superior / inferior z semi-axes model that asymmetry.
BRAIN_SEMI_AXES = np.array([71.0, 93.0, 70.0])   # z (superior), y, x
BRAIN_SEMI_Z_INFERIOR = 63.0
BRAIN_CENTRE = np.array([-3.0, 3.5, -1.0])         # q-mm offset from the grid centre

#: Median of brain voxels per modality in the real BraTS 2023 case (int16 scanner units);
#: the default phantom is scaled to these.
REAL_MEDIANS = {"T1": 973.0, "T1ce": 2973.0, "T2": 571.0, "FLAIR": 1010.0}

# Tissue codes of the internal tissue map (the label map is derived from it).
# EDGE is the outermost layer inside the skull-stripping mask (partial volume with dura
# and skull remnants).
BG, CSF, GM, WM, DGM, VESSEL, ED, NCR, ET, EDGE = range(10)
_N_TISSUES = 10
_TISSUE_NAMES = ("BG", "CSF", "GM", "WM", "DGM", "VESSEL", "ED", "NCR", "ET", "EDGE")
_LABEL_OF_TISSUE = np.array([0, 0, 0, 0, 0, 0, 2, 1, 4, 0], dtype=np.uint8)  # BraTS 2018

# Per-modality tissue means relative to the brain median (roughly: each image is
# re-normalised to its measured median afterwards): tissue -> (reference, lo, hi).
# A reference tissue name means "lo..hi times that tissue's mean", which keeps the
# contrast ordering whatever is drawn. Defaults are the midpoints. Ordering that matters:
#   T1   : WM > GM > CSF; tumour slightly dark; ET ~ NCR (no enhancement); ED ~ WM.
#   T1ce : ET >> everything (but vessels also enhance); NCR dark; ED barely below WM.
#   T2   : CSF brightest; ED and tumour nearly as bright (confusable with CSF).
#   FLAIR: CSF dark; ED and whole tumour bright; ET ~ NCR.
_MEANS: dict[str, dict[int, tuple[str | None, float, float]]] = {
    "T1": {
        CSF: (None, 0.30, 0.60), GM: (None, 0.72, 0.86), WM: (None, 1.02, 1.14),
        DGM: (None, 0.85, 0.98), VESSEL: (None, 0.50, 0.80), EDGE: (None, 0.20, 0.50),
        ED: ("WM", 0.75, 0.90), NCR: ("WM", 0.65, 0.85), ET: ("NCR", 0.98, 1.15),
    },
    "T1ce": {
        CSF: (None, 0.45, 0.75), GM: (None, 0.84, 0.96), WM: (None, 1.00, 1.12),
        DGM: (None, 0.90, 1.02), VESSEL: (None, 1.80, 3.00), EDGE: (None, 0.25, 0.60),
        ED: ("WM", 0.68, 0.88), NCR: (None, 0.40, 0.70), ET: ("WM", 1.70, 2.60),
    },
    "T2": {
        CSF: (None, 3.00, 4.20), GM: (None, 0.92, 1.12), WM: (None, 0.62, 0.84),
        DGM: (None, 0.80, 1.00), VESSEL: (None, 0.30, 0.70), EDGE: (None, 0.10, 0.35),
        ED: ("CSF", 0.40, 0.70), NCR: ("ED", 1.00, 1.25), ET: ("NCR", 0.75, 1.00),
    },
    "FLAIR": {
        CSF: (None, 0.12, 0.40), GM: (None, 1.00, 1.25), WM: (None, 0.75, 0.92),
        DGM: (None, 0.85, 1.05), VESSEL: (None, 0.30, 0.60), EDGE: (None, 0.05, 0.25),
        ED: (None, 1.90, 2.80), NCR: ("ED", 0.75, 1.00), ET: ("NCR", 0.90, 1.10),
    },
}

# Texture amplitude (relative std) per tissue: (lo, hi); tumour is more heterogeneous.
_TEXTURE = {CSF: (0.02, 0.06), GM: (0.03, 0.08), WM: (0.02, 0.07), DGM: (0.03, 0.08),
            VESSEL: (0.05, 0.15), EDGE: (0.05, 0.15),
            ED: (0.05, 0.12), NCR: (0.08, 0.20), ET: (0.06, 0.16)}

# Appearance ranges (lo, hi) used when randomising; defaults are fixed mid-range values.
_APPEARANCE_RANGES = {
    "blur_sigma": (0.3, 1.2),      # voxels, per axis: partial volume / resolution
    "bias_std": (0.0, 0.30),       # std of the log of the multiplicative bias field
    "noise": (0.01, 0.12),         # Rician noise sigma relative to the brain median
    "gamma": (0.75, 1.35),
    "scale": (0.4, 2.5),           # times the real case's median
    "offset": (0.0, 0.15),         # relative to the median, added inside the brain
}
_APPEARANCE_DEFAULTS = {"blur_sigma": 0.7, "bias_std": 0.08, "gamma": 1.0, "scale": 1.0,
                        "offset": 0.0}
# Default noise per modality, set so that the high-pass std / median in white matter is
# close to the real case's (T1 0.07, T1ce 0.08, T2 0.15, FLAIR 0.11).
_NOISE_DEFAULTS = {"T1": 0.06, "T1ce": 0.065, "T2": 0.11, "FLAIR": 0.09}


# --------------------------------------------------------------------------- public API

@dataclass
class PhantomCase:
    """One synthetic case: four co-registered scans and its BraTS 2018 label map."""

    images: dict[str, np.ndarray]          # canonical modality -> float32 (z, y, x)
    label: np.ndarray                      # uint8 (z, y, x): 0 bg, 1 NCR, 2 ED, 4 ET
    spacing: tuple[float, float, float]    # (x, y, z) mm, SimpleITK order
    origin: tuple[float, float, float]
    direction: tuple[float, ...]           # 9 values, SimpleITK order
    seed: int = 0
    info: dict = field(default_factory=dict)   # generation parameters (for debugging)

    def to_sitk(self, integer: bool = False) -> tuple[dict[str, sitk.Image], sitk.Image]:
        """The scans and the label map as SimpleITK images carrying the case geometry.

        ``integer`` rounds the scans to int16, the pixel type of BraTS files (a quarter of
        the float32 file size, since noise does not compress).
        """
        import SimpleITK as sitk

        def scan(arr: np.ndarray) -> np.ndarray:
            return np.clip(np.rint(arr), 0, np.iinfo(np.int16).max).astype(np.int16) if integer else arr

        def wrap(arr: np.ndarray) -> sitk.Image:
            img = sitk.GetImageFromArray(arr)
            img.SetSpacing(self.spacing)
            img.SetOrigin(self.origin)
            img.SetDirection(self.direction)
            return img

        return {m: wrap(scan(a)) for m, a in self.images.items()}, wrap(self.label)


def make_phantom(
    seed: int,
    shape: Sequence[int] = (155, 240, 240),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    *,
    randomize_appearance: bool = True,
    direction: Sequence[float] | None = None,
    origin: Sequence[float] | None = None,
) -> PhantomCase:
    """Build a BraTS-like case.

    ``shape`` is (z, y, x); ``spacing``, ``origin`` and ``direction`` are in SimpleITK
    order (x, y, z) and only set the geometry (the anatomy is placed in index space, so
    the brain's superior side is towards +z index whatever the direction). Same seed,
    same arguments -> identical arrays.
    """
    shape_t = _check_shape(shape)
    spacing_t = _check_triplet(spacing, "spacing", positive=True)
    origin_t = (0.0, 0.0, 0.0) if origin is None else _check_triplet(origin, "origin")
    direction_t = _check_direction(direction)

    # Independent random streams per component: the anatomy does not depend on the
    # appearance flag, and a stream whose number of draws depends on the grid (noise,
    # fields with a voxel-size floor) cannot shift the others.
    anat_seq, app_seq = np.random.SeedSequence(int(seed)).spawn(2)
    grid = _Grid(shape_t, spacing_t)
    anatomy = _make_anatomy(grid, anat_seq)
    param_rng, texture_rng, *render_rngs = _streams(app_seq, 2 + len(MODALITIES))
    params = _draw_appearance(param_rng, randomize_appearance)

    # Texture shared by all contrasts (same tissue microstructure), mixed per modality.
    # Fields in float64, stored as float32: the images then do not depend on the number
    # of BLAS threads either (except, very rarely, in the last bit).
    coords = grid.crop_coords(anatomy.crop, np.float64)
    fine = _smooth_field(texture_rng, coords, max(3.0, 1.5 * grid.voxel_q), anatomy.extent)
    coarse = _smooth_field(texture_rng, coords, 10.0, anatomy.extent)
    fine, coarse = fine.astype(np.float32), coarse.astype(np.float32)

    images = {}
    for m, rng in zip(MODALITIES, render_rngs):
        crop_img = _render(m, anatomy, params[m], fine, coarse, grid, rng)
        full = np.zeros(shape_t, dtype=np.float32)
        full[anatomy.crop] = crop_img
        images[m] = full

    label = np.zeros(shape_t, dtype=np.uint8)
    label[anatomy.crop] = _LABEL_OF_TISSUE[anatomy.tissue]
    info = {"tumour": anatomy.tumour, "appearance": params,
            "randomize_appearance": bool(randomize_appearance)}
    return PhantomCase(images=images, label=label, spacing=spacing_t, origin=origin_t,
                       direction=direction_t, seed=int(seed), info=info)


def write_phantom_dataset(
    out_dir: str | Path,
    n: int,
    *,
    seed: int = 0,
    shape: Sequence[int] = (155, 240, 240),
    spacing: Sequence[float] = (1.0, 1.0, 1.0),
    layout: str = "brats2023",
    randomize_appearance: bool = True,
    progress: bool = False,
) -> list[Path]:
    """Write ``n`` phantom cases in a BraTS layout; returns the case folders.

    Case ``i`` is ``make_phantom(seed + i)`` and its id carries that seed
    ("BraTS-PHANTOM-00007-000" in the 2023 layout, "PHANTOM-00007" in the 2018 one), so
    sets written with different seeds never share ids and any case can be rebuilt.
    """
    from ..io.datasets import LAYOUTS, write_case

    if layout not in LAYOUTS:
        raise InputError(f"unknown dataset layout '{layout}': use one of {', '.join(LAYOUTS)}")
    if n < 0:
        raise InputError(f"number of phantom cases must be >= 0, got {n}")
    seeds = range(int(seed), int(seed) + int(n))
    if progress:
        from tqdm.auto import tqdm
        seeds = tqdm(seeds, desc="phantoms", unit="case")
    paths = []
    for s in seeds:
        case = make_phantom(s, shape, spacing, randomize_appearance=randomize_appearance)
        images, label = case.to_sitk(integer=True)
        case_id = f"BraTS-PHANTOM-{s:05d}-000" if layout == "brats2023" else f"PHANTOM-{s:05d}"
        paths.append(write_case(out_dir, case_id, images, label, layout=layout))
    return paths


# --------------------------------------------------------------------------- geometry

class _Grid:
    """Voxel centres of the output grid in reference millimetres (q-space), per axis."""

    def __init__(self, shape: tuple[int, int, int], spacing_xyz: tuple[float, float, float]):
        self.shape = shape
        spacing_zyx = np.array(spacing_xyz[::-1], dtype=float)
        fov = np.array(shape) * spacing_zyx
        # One isotropic factor keeps the brain's physical proportions and makes it fit
        # the tightest axis of the field of view.
        self.scale = float(np.min(fov / REF_FOV_MM))
        self.step_q = spacing_zyx / self.scale          # voxel size in q-mm, per axis
        self.voxel_q = float(np.mean(self.step_q))      # for thickness floors
        self.axes = [((np.arange(n) + 0.5) - n / 2.0) * st
                     for n, st in zip(shape, self.step_q)]

    def crop_slices(self, lo: np.ndarray, hi: np.ndarray) -> tuple[slice, slice, slice]:
        """Index slices covering the q-space box [lo, hi] (clipped to the grid)."""
        out = []
        for ax, a, b in zip(self.axes, lo, hi):
            idx = np.nonzero((ax >= a) & (ax <= b))[0]
            out.append(slice(int(idx[0]), int(idx[-1]) + 1) if idx.size else slice(0, 0))
        return out[0], out[1], out[2]

    def crop_coords(self, crop: tuple[slice, slice, slice], dtype: type = np.float32
                    ) -> list[np.ndarray]:
        return [ax[s].astype(dtype) for ax, s in zip(self.axes, crop)]


def _streams(seq: np.random.SeedSequence, n: int) -> list[np.random.Generator]:
    """``n`` independent generators derived from ``seq``."""
    return [np.random.default_rng(s) for s in seq.spawn(n)]


def _smooth_field(rng: np.random.Generator, coords: Sequence[np.ndarray], length: float,
                  extent: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
    """Zero-mean, about unit-variance random field with correlation length ``length`` (q-mm).

    Gaussian bumps on a regular control lattice spanning ``extent`` (a q-space box that
    depends on the anatomy, not on the grid, so a seed gives the same field at every
    resolution), evaluated separably with three small matrix products: far cheaper than
    filtering white noise at full resolution. The dtype follows ``coords``: the anatomy
    uses float64 so that its thresholds (hence the label map) do not depend on how many
    threads BLAS uses (float32 sums in another order differ in the last bit).
    """
    dtype = np.result_type(coords[0].dtype, np.float32)
    mats = []
    for c, lo, hi in zip(coords, extent[0], extent[1]):
        n_ctrl = int(np.ceil((hi - lo) / length)) + 3
        ctrl = lo - length + np.arange(n_ctrl) * length
        w = np.exp(-0.5 * ((c[:, None] - ctrl[None, :]) / (0.6 * length)) ** 2)
        w /= np.sqrt((w ** 2).sum(axis=1, keepdims=True)) + 1e-12   # unit variance
        mats.append(w.astype(dtype))
    mz, my, mx = mats
    ctrl_vals = rng.standard_normal((mz.shape[1], my.shape[1], mx.shape[1])).astype(dtype)
    f = ctrl_vals @ mx.T                       # (cz, cy, nx)
    f = my @ f                                 # (cz, ny, nx)
    f = mz @ f.reshape(f.shape[0], -1)         # (nz, ny * nx)
    return f.reshape(mz.shape[0], my.shape[0], mx.shape[0])


# --------------------------------------------------------------------------- anatomy

@dataclass
class _Anatomy:
    tissue: np.ndarray                       # uint8 tissue codes inside the crop
    brain: np.ndarray                        # bool, inside the crop
    crop: tuple[slice, slice, slice]
    extent: tuple[np.ndarray, np.ndarray]    # q-space box of the brain (lo, hi)
    tumour: dict


def _make_anatomy(grid: _Grid, seq: np.random.SeedSequence) -> _Anatomy:
    """Tissue map of a brain with a tumour (one random stream per component)."""
    rng, grey_rng, cortex_rng, fold_rng, vent_rng, rim_rng, tumour_rng = _streams(seq, 7)
    # Brain pose and size: small jitter around the real case's proportions.
    centre = BRAIN_CENTRE + rng.uniform(-3, 3, 3)
    size = rng.uniform(0.95, 1.05) * rng.uniform(0.97, 1.03, 3)
    semi = BRAIN_SEMI_AXES * size
    semi_inf = BRAIN_SEMI_Z_INFERIOR * size[0]
    lo = centre - np.array([semi_inf, semi[1], semi[2]]) * 1.12
    extent = (lo, centre + semi * 1.12)
    crop = grid.crop_slices(*extent)
    qz, qy, qx = grid.crop_coords(crop, np.float64)
    dz = (qz - centre[0])[:, None, None]
    dy = (qy - centre[1])[None, :, None]
    dx = (qx - centre[2])[None, None, :]
    coords = (qz, qy, qx)

    # Level set rho (< 1 inside): tapered towards the inferior side (temporal lobes,
    # cerebellum) and deformed by a low-frequency field for an irregular outline.
    w = np.where(dz > 0, dz / semi[0], dz / semi_inf)
    below = np.clip(-w, 0.0, 1.0) ** 2
    taper = 1.0 - 0.6 * below
    # Inferior slices lose the frontal lobe: their centre moves posterior (+y).
    dy_inf = dy - 0.3 * semi[1] * below
    front = 1.0 - 0.06 * np.clip(-dy / semi[1], 0.0, 1.0)   # frontal pole a bit narrower
    rho = np.sqrt((dx / (semi[2] * taper * front)) ** 2 + (dy_inf / (semi[1] * taper)) ** 2
                  + w ** 2)
    rho *= 1.0 + 0.04 * _smooth_field(rng, coords, 45.0, extent)
    brain = rho < 1.0
    # Depth below the surface along the ray from the centre (cheap stand-in for a distance
    # transform, exact for a sphere, good enough for a nearly round shape).
    dist = np.sqrt(dx ** 2 + dy ** 2 + dz ** 2)
    depth = dist * (1.0 / np.maximum(rho, 1e-3) - 1.0)
    del rho

    tissue = np.where(brain, WM, BG).astype(np.uint8)
    floor = grid.voxel_q          # thin structures stay at least about a voxel thick

    _add_deep_grey(tissue, brain, dx, dy, dz, semi, grey_rng)
    _add_cortex(tissue, brain, depth, coords, extent, floor, cortex_rng, fold_rng)
    _add_ventricles(tissue, brain, dx, dy, dz, semi, floor, vent_rng)
    # Interhemispheric fissure: a thin CSF sheet at the midline, above the corpus callosum.
    half = max(1.2, 0.6 * floor)
    fissure = brain & (np.abs(dx) < half) & (depth < 0.55 * semi[0]) & (w > -0.35)
    tissue[fissure] = CSF
    # Sagittal sinus along the top of the fissure: an enhancing vessel in T1ce, like the
    # bright midline and sulcal vessels that set the real case's T1ce p99 (2.1 x median).
    tissue[fissure & (depth < 6.0)] = VESSEL
    # Outer CSF rim (subarachnoid space), patchy, and outside it the EDGE layer that the
    # skull-stripping mask keeps but that holds no brain; it is thicker where the rim is
    # missing. Real outermost voxels are as mixed: T2 p10 / p50 / p90 = 0.17 / 0.68 / 3.1
    # x median (often dark, sometimes bright CSF).
    patches = _smooth_field(rim_rng, coords, 15.0, extent)
    tissue[brain & (patches > -0.3) & (depth < max(1.7, 0.6 * floor))] = CSF
    edge = 0.8 + 1.2 * np.clip(-patches, 0.0, 1.0)
    tissue[brain & (depth < edge)] = EDGE

    tumour = _add_tumour(tissue, brain, qz, qy, qx, centre, semi, grid, tumour_rng)
    return _Anatomy(tissue=tissue, brain=brain, crop=crop, extent=extent, tumour=tumour)


def _add_deep_grey(tissue: np.ndarray, brain: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                   dz: np.ndarray, semi: np.ndarray, rng: np.random.Generator) -> None:
    """Thalamus / basal ganglia: a grey ellipsoid either side of the midline."""
    for side in (-1.0, 1.0):
        c = np.array([0.0, 6.0, side * 0.2 * semi[2]]) + rng.uniform(-2, 2, 3)
        a = np.array([0.16, 0.20, 0.14]) * semi * rng.uniform(0.85, 1.15)
        inside = (((dz - c[0]) / a[0]) ** 2 + ((dy - c[1]) / a[1]) ** 2
                  + ((dx - c[2]) / a[2]) ** 2) < 1
        tissue[inside & brain] = DGM


def _add_cortex(tissue: np.ndarray, brain: np.ndarray, depth: np.ndarray,
                coords: Sequence[np.ndarray], extent: tuple[np.ndarray, np.ndarray],
                floor: float, rng: np.random.Generator, fold_rng: np.random.Generator) -> None:
    """Grey-matter ribbon folded around sulci (CSF), with a few vessels in the sulci.

    Sulci are the zero set of a random field near the surface: thin, winding sheets like
    real sulci (one every ~12 mm); grey matter lines them, so what is left of white
    matter near the surface forms the gyral cores.
    """
    # Lattice spacing 4-6 mm gives a correlation length ell ~ 0.85 x spacing and a zero
    # crossing every ~pi * ell ~ 12 mm, like real sulci. Coarse grids need wider folds.
    fold_len = max(rng.uniform(4.0, 6.0), 2.5 * floor)
    ell = 0.85 * fold_len
    g = _smooth_field(fold_rng, coords, fold_len, extent)   # own stream: size varies
    # Sulcal depth varies over the brain so the grey/white boundary is not a smooth shell.
    variation = _smooth_field(rng, coords, 25.0, extent)
    sulcal_depth = rng.uniform(14.0, 22.0) * (1.0 + 0.3 * variation)
    cortex = rng.uniform(2.5, 3.5)                 # GM thickness, q-mm
    # The band |g| < eps is about 2 * eps * ell thick: CSF ~1 mm (at least a voxel),
    # lined by `cortex` mm of grey matter on each side.
    eps_csf = max(0.55, 0.5 * floor) / ell
    eps_gm = eps_csf + cortex / ell
    ribbon = depth < cortex + 1.0
    folds = (depth < sulcal_depth + cortex) & (np.abs(g) < eps_gm)
    tissue[brain & (ribbon | folds)] = GM
    sulci = brain & (depth < sulcal_depth) & (np.abs(g) < eps_csf)
    tissue[sulci] = CSF
    # Vessels run in the sulci; a bit thicker than the CSF they sit in so that they survive
    # partial-volume blur (real T1ce: 1 % of brain voxels above 2.1 x median, mostly vessels).
    in_sulcus = brain & (depth < sulcal_depth) & (np.abs(g) < 1.8 * eps_csf)
    vessels = in_sulcus & (_smooth_field(rng, coords, 8.0, extent) > 1.2)
    tissue[vessels] = VESSEL


def _add_ventricles(tissue: np.ndarray, brain: np.ndarray, dx: np.ndarray, dy: np.ndarray,
                    dz: np.ndarray, semi: np.ndarray, floor: float,
                    rng: np.random.Generator) -> None:
    """Lateral ventricles (curved, butterfly-like in axial slices) and the third ventricle."""
    size = rng.uniform(0.7, 1.4)                   # atrophy / age
    for side in (-1.0, 1.0):
        length = 0.30 * semi[1] * size ** 0.5
        width = max(0.055 * semi[2] * size, 0.8 * floor)
        height = 0.12 * semi[0] * size ** 0.5
        # Bodies close to the midline, horns splaying out a little at both ends.
        cx = side * (0.075 * semi[2] + 0.06 * semi[2] * np.clip(dy / length, -1, 1) ** 2)
        cz = 0.10 * semi[0] - 0.08 * semi[0] * (dy / length) ** 2
        inside = ((dx - cx) / width) ** 2 + (dy / length) ** 2 + ((dz - cz) / height) ** 2 < 1
        tissue[inside & brain] = CSF
    # Third ventricle: a midline slit between the thalami, below the lateral ventricles.
    third = (np.abs(dx) < max(1.2, 0.6 * floor)) & (np.abs(dy - 6.0) < 0.12 * semi[1]) & \
        (np.abs(dz + 0.08 * semi[0]) < 0.08 * semi[0])
    tissue[third & brain] = CSF


_H_CLIP = 2.0   # shape fields are clipped to +-2 std so the blobs stay bounded


def _add_tumour(tissue: np.ndarray, brain: np.ndarray, qz: np.ndarray, qy: np.ndarray,
                qx: np.ndarray, centre: np.ndarray, semi: np.ndarray, grid: _Grid,
                rng: np.random.Generator) -> dict:
    """Glioma: irregular core (ET rim around NCR) plus oedema spreading through white matter."""
    # Every draw and every random field below depends on the anatomy only, not on the
    # grid, so a seed gives the same tumour at every resolution; the voxel-size floors
    # are applied afterwards.
    side = rng.choice([-1.0, 1.0])
    radius0 = rng.uniform(0.05, 0.20) * 2.0 * semi[2]    # 5-20 % of the brain's width
    # Centre: in one hemisphere, deep enough that most of the tumour is inside the brain.
    margin = max(1.0 - 0.7 * radius0 / semi.min(), 0.3)
    for _ in range(200):
        u = np.array([rng.uniform(-0.35, 0.55), rng.uniform(-0.6, 0.6),
                      side * rng.uniform(0.2, 0.6)])
        if np.sqrt((u ** 2).sum()) < margin:
            break
    t_centre = centre + u * semi
    rim0 = rng.uniform(2.0, 4.0)
    has_necrosis = rng.uniform() > 0.15
    # Necrosis fills most of the core inside the rim (NCR is about a third of TC, as in
    # BraTS glioblastomas), and the oedema reaches 1-6 mm plus up to 80 % of the core's
    # radius beyond it (whole tumour ~100 mL median, as in BraTS).
    necrosis_frac = rng.uniform(0.75, 1.0)
    oedema_radius = radius0 * rng.uniform(1.1, 1.8) + rng.uniform(1.0, 6.0)
    oedema_centre = t_centre + rng.uniform(-0.3, 0.3, 3) * radius0
    radius = max(radius0, 3.0 * grid.voxel_q)
    rim = max(rim0, 1.3 * grid.voxel_q)
    # On coarse grids the oedema must still reach past the (floored) core.
    ed_radius = max(oedema_radius, 1.3 * radius + 1.5 * grid.voxel_q)

    # Work in a box around the oedema only (the tumour is a small part of the brain); it
    # holds the largest radius radial() can produce, so nothing is cut straight.
    reach0 = max(oedema_radius, radius0) * (1.0 + 0.35 * _H_CLIP)
    box = (t_centre - reach0, t_centre + reach0)               # field lattice: grid-free
    reach = ed_radius * (1.0 + 0.35 * _H_CLIP) + 2.0 * grid.voxel_q
    sub = tuple(slice(int(np.searchsorted(ax, c - reach)),
                      int(np.searchsorted(ax, c + reach, side="right")))
                for ax, c in zip((qz, qy, qx), t_centre))
    cz, cy, cx = qz[sub[0]], qy[sub[1]], qx[sub[2]]
    local = (cz, cy, cx)
    h_core = _smooth_field(rng, local, max(0.7 * radius0, 4.0), box)
    h_rim = _smooth_field(rng, local, max(0.5 * radius0, 3.0), box)
    h_ed = _smooth_field(rng, local, max(0.5 * oedema_radius, 5.0), box)

    def radial(c: np.ndarray, r: float, h: np.ndarray, amp: float) -> np.ndarray:
        """Distance to ``c`` over a radius ``r`` modulated by the field ``h`` (< 1 inside)."""
        d = np.sqrt((cz[:, None, None] - c[0]) ** 2 + (cy[None, :, None] - c[1]) ** 2
                    + (cx[None, None, :] - c[2]) ** 2)
        return d / (r * (1.0 + amp * np.clip(h, -_H_CLIP, _H_CLIP)))

    s = radial(t_centre, radius, h_core, 0.25)
    core = s < 1.0
    inner = np.maximum(1.0 - rim / radius * (1.0 + 0.35 * np.clip(h_rim, -_H_CLIP, _H_CLIP)), 0.0)
    necrotic = core & (s < inner * necrosis_frac) if has_necrosis else np.zeros_like(core)
    oedema = radial(oedema_centre, ed_radius, h_ed, 0.35) < 1.0

    t = tissue[sub]
    b = brain[sub]
    # Oedema follows white matter (and deep grey), sparing cortex and CSF.
    t[oedema & b & ((t == WM) | (t == DGM))] = ED
    t[core & b] = ET
    t[necrotic & b] = NCR
    if not (t == ET).any():
        # Tiny grids: keep the promise that every case has some enhancing tumour.
        k = np.unravel_index(np.argmin(np.where(b, s, np.inf)), s.shape)
        t[k] = ET
    return {"side": "+x" if side > 0 else "-x", "centre_q": t_centre.round(1).tolist(),
            "radius_q": round(float(radius), 1), "rim_q": round(float(rim), 1),
            "necrosis": bool(has_necrosis), "oedema_radius_q": round(float(ed_radius), 1)}


# --------------------------------------------------------------------------- appearance

def _draw_appearance(rng: np.random.Generator, randomize: bool) -> dict[str, dict]:
    """Per-modality intensity parameters: drawn from their ranges, or the fixed defaults."""

    def pick(lo: float, hi: float, default: float | None = None) -> float:
        if randomize:
            return float(rng.uniform(lo, hi))
        return 0.5 * (lo + hi) if default is None else default

    out = {}
    for m in MODALITIES:
        means = np.zeros(_N_TISSUES, dtype=np.float32)
        for t, (ref, lo, hi) in _MEANS[m].items():   # references come first in each table
            means[t] = pick(lo, hi) * (means[_TISSUE_NAMES.index(ref)] if ref else 1.0)
        texture = np.zeros(_N_TISSUES, dtype=np.float32)
        for t, (lo, hi) in _TEXTURE.items():
            texture[t] = pick(lo, hi)
        defaults = {**_APPEARANCE_DEFAULTS, "noise": _NOISE_DEFAULTS[m]}
        p: dict[str, Any] = {k: pick(lo, hi, defaults[k]) for k, (lo, hi) in _APPEARANCE_RANGES.items()
                             if k != "blur_sigma"}
        blur = _APPEARANCE_RANGES["blur_sigma"]             # one sigma per axis
        p["blur_sigma"] = tuple(pick(*blur, defaults["blur_sigma"]) for _ in range(3))
        p.update(means=means, texture=texture, texture_mix=pick(0.3, 1.0, 0.6))
        out[m] = p
    return out


def _render(modality: str, anatomy: _Anatomy, p: dict, fine: np.ndarray, coarse: np.ndarray,
            grid: _Grid, rng: np.random.Generator) -> np.ndarray:
    """One contrast inside the crop: tissue means x texture, blur, bias, noise, scaling."""
    t = anatomy.tissue
    mix = p["texture_mix"]
    texture = mix * fine + (1.0 - mix) * coarse
    img = p["means"][t] * (1.0 + p["texture"][t] * texture)
    # Partial volume: blur with the background (0) in, so the brain edge darkens as in
    # real skull-stripped scans.
    img = ndimage.gaussian_filter(img, p["blur_sigma"], truncate=3.0)
    # Smooth multiplicative bias field.
    bias = _smooth_field(rng, grid.crop_coords(anatomy.crop, np.float64), 70.0, anatomy.extent)
    bias = bias.astype(np.float32)
    img *= np.exp(np.float32(p["bias_std"]) * bias)
    # Rician noise (magnitude of complex Gaussian noise), as in magnitude MR images.
    sigma = np.float32(p["noise"] * _median_hint(p["means"]))
    n1 = rng.standard_normal(img.shape, dtype=np.float32)
    n2 = rng.standard_normal(img.shape, dtype=np.float32)
    img = np.sqrt((img + sigma * n1) ** 2 + (sigma * n2) ** 2)
    # Normalise to the brain median, then gamma, scale to scanner-like units and offset.
    brain = anatomy.brain
    med = float(np.median(img[brain][::7])) if brain.any() else 1.0
    img /= max(med, 1e-6)
    if p["gamma"] != 1.0:
        np.power(img, np.float32(p["gamma"]), out=img)
    target = REAL_MEDIANS[modality] * p["scale"]
    img = img * np.float32(target) + np.float32(p["offset"] * target)
    # Skull-stripped: exactly 0 outside the brain, strictly positive inside (int16-like).
    img = np.where(brain, np.maximum(img, 1.0), 0.0).astype(np.float32)
    return img


def _median_hint(means: np.ndarray) -> float:
    """Rough brain median from the tissue means (WM and GM make up most of the brain)."""
    return float(0.5 * (means[WM] + means[GM]))


# --------------------------------------------------------------------------- checks

def _check_shape(shape: Sequence[int]) -> tuple[int, int, int]:
    try:
        out = tuple(int(s) for s in shape)
    except (TypeError, ValueError):
        raise InputError(f"phantom shape must be three integers (z, y, x), got {shape!r}"
                         ) from None
    if len(out) != 3 or min(out) < 8:
        raise InputError(f"phantom shape must be three integers >= 8 (z, y, x), got {shape!r}")
    return out  # type: ignore[return-value]


def _check_triplet(values: Sequence[float], what: str, positive: bool = False
                   ) -> tuple[float, float, float]:
    try:
        out = tuple(float(v) for v in values)
    except (TypeError, ValueError):
        raise InputError(f"phantom {what} must be three numbers (x, y, z), got {values!r}"
                         ) from None
    if len(out) != 3 or not all(np.isfinite(out)) or (positive and min(out) <= 0):
        raise InputError(f"phantom {what} must be three {'positive ' if positive else ''}"
                         f"numbers (x, y, z), got {values!r}")
    return out  # type: ignore[return-value]


def _check_direction(direction: Sequence[float] | None) -> tuple[float, ...]:
    if direction is None:
        return (1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0)
    d = np.asarray(direction, dtype=float)
    if d.size != 9 or not np.allclose(d.reshape(3, 3) @ d.reshape(3, 3).T, np.eye(3), atol=1e-4):
        raise InputError("phantom direction must be 9 numbers of an orthonormal matrix, "
                         f"got {direction!r}")
    return tuple(float(v) for v in d.ravel())
