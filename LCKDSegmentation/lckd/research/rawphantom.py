"""Raw-scan phantoms: what a scanner writes, for testing the raw pipeline (`lckd phantom --raw`).

A skull-stripped phantom (`lckd.research.phantom.make_phantom`, BraTS grid, 1 mm) is placed in a
larger 1 mm "world" and wrapped in a head: extra-axial CSF, the skull's inner and outer
tables (dark in every contrast) with fatty marrow between them, galea/muscle, subcutaneous
fat (bright on T1), skin, and a neck below. Outside the head there is Rician noise, not
zeros, and every series gets its own smooth multiplicative bias field.

The world is then sampled onto series the way a glioma protocol acquires them:

==========  ===============  ==========  =========  =============
scan        acquisition      voxel (mm)  matrix     rotation (deg)
==========  ===============  ==========  =========  =============
T1ce        3D               1.0 iso     256x256    1, -2, 1.5
T1          2D axial         0.94 x 4.0  256x256    3, -2, 1
T2          2D axial         0.86 x 5.0  256x256    -2, 3, -1
FLAIR       2D axial         1.0 x 6.0   230x230    -3, 2, -4
==========  ===============  ==========  =========  =============

Thick slices integrate over the slab (Gaussian slice profile along the slice normal). The
ground truth, brain mask and tumour labels (BraTS 2018 convention), lies on the reference
series' grid (T1ce, the series `modalities.default_reference` picks). The same seed's
skull-stripped phantom (`make_phantom(seed)`) is the "preprocessed" twin the raw pipeline
is compared against.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import SimpleITK as sitk
from scipy import ndimage

from ..base.modalities import MODALITIES
from .phantom import REAL_MEDIANS, make_phantom

__all__ = ["RawPhantom", "SeriesSpec", "SERIES", "make_raw_phantom", "write_raw_phantom"]


@dataclass(frozen=True)
class SeriesSpec:
    """How one series is acquired: voxel size, matrix, slices, rotation and centre shift."""

    spacing: tuple[float, float, float]       # (x, y, z) mm; z = slice thickness = spacing
    size: tuple[int, int, int]                # (x, y, z) voxels
    rotation_deg: tuple[float, float, float]  # about x, y, z
    shift_mm: tuple[float, float, float]      # field-of-view centre offset from the head's


SERIES: dict[str, SeriesSpec] = {
    "T1ce": SeriesSpec((1.0, 1.0, 1.0), (256, 256, 176), (1.0, -2.0, 1.5), (2.0, -3.0, 4.0)),
    "T1": SeriesSpec((0.9375, 0.9375, 4.0), (256, 256, 40), (3.0, -2.0, 1.0), (-3.0, 2.0, 6.0)),
    "T2": SeriesSpec((0.86, 0.86, 5.0), (256, 256, 32), (-2.0, 3.0, -1.0), (1.0, 4.0, 2.0)),
    "FLAIR": SeriesSpec((1.0, 1.0, 6.0), (230, 230, 27), (-3.0, 2.0, -4.0), (-2.0, -2.0, 5.0)),
}

# World padding around the BraTS grid (z below, z above, y, x) in mm: room for the head
# and a neck below the brain.
_PAD = (45, 20, 8, 8)

# Head layers by distance from the brain surface (mm): extra-axial CSF, skull inner table,
# diploe (fatty marrow), outer table. Beyond them, by depth below the head surface: skin,
# subcutaneous fat, muscle/galea.
_CSF_MM, _INNER_MM, _DIPLOE_MM, _OUTER_MM = 1.5, 3.0, 6.0, 7.5
_HEAD_MM = 16.5
_SKIN_MM, _FAT_MM = 1.5, 6.5

# Intensities relative to each contrast's brain median (REAL_MEDIANS): fat is bright on
# T1 and (fast spin echo) T2, cortical bone has almost no signal, CSF is bright only on T2.
_HEAD_TISSUES = {
    #           T1    T1ce   T2    FLAIR
    "csf":    (0.30, 0.30, 3.00, 0.25),
    "bone":   (0.06, 0.06, 0.06, 0.06),
    "marrow": (1.30, 1.30, 0.90, 1.10),
    "muscle": (0.60, 0.70, 0.50, 0.60),
    "fat":    (1.60, 1.60, 1.30, 1.50),
}
_BACKGROUND_SIGMA = 0.02      # x median: noise outside the head (magnitude images: Rician)
_TISSUE_NOISE = 0.05


@dataclass
class RawPhantom:
    """Series as a scanner writes them, with the truth on the reference series' grid."""

    series: dict[str, sitk.Image]     # modality -> float32 image on its own grid
    brain_mask: sitk.Image            # uint8 truth on the reference (T1ce) grid
    label: sitk.Image                 # uint8 BraTS 2018 labels on the reference grid
    reference: str
    seed: int


def _rotation(deg: tuple[float, float, float]) -> np.ndarray:
    ax, ay, az = np.deg2rad(deg)
    rx = np.array([[1, 0, 0], [0, np.cos(ax), -np.sin(ax)], [0, np.sin(ax), np.cos(ax)]])
    ry = np.array([[np.cos(ay), 0, np.sin(ay)], [0, 1, 0], [-np.sin(ay), 0, np.cos(ay)]])
    rz = np.array([[np.cos(az), -np.sin(az), 0], [np.sin(az), np.cos(az), 0], [0, 0, 1]])
    return rz @ ry @ rx


def _series_grid(spec: SeriesSpec, centre: np.ndarray) -> sitk.Image:
    """An empty image with the series' geometry, centred on `centre` + its shift."""
    img = sitk.Image([int(s) for s in spec.size], sitk.sitkFloat32)
    rot = _rotation(spec.rotation_deg)
    img.SetSpacing(spec.spacing)
    img.SetDirection(tuple(rot.ravel()))
    half = (np.array(spec.size) - 1) / 2.0 * np.array(spec.spacing)
    img.SetOrigin(tuple(centre + np.array(spec.shift_mm) - rot @ half))
    return img


def _head_tissues(brain: np.ndarray, rng: np.random.Generator) -> dict[str, np.ndarray]:
    """Boolean maps of the head layers around `brain` (1 mm world grid, z up)."""
    d_brain = ndimage.distance_transform_edt(~brain)
    head = d_brain <= _HEAD_MM
    # Neck: an elliptic cylinder from the bottom of the world to the brain's centre height,
    # a little posterior, as wide as the head's lower half.
    zc = np.nonzero(brain.any(axis=(1, 2)))[0]
    yc, xc = (np.nonzero(brain.any(axis=(0, 2)))[0], np.nonzero(brain.any(axis=(0, 1)))[0])
    cz = int((zc[0] + zc[-1]) / 2)
    cy, cx = (yc[0] + yc[-1]) / 2 + 12 + rng.uniform(-3, 3), (xc[0] + xc[-1]) / 2
    yy, xx = np.ogrid[: brain.shape[1], : brain.shape[2]]
    disc = ((yy - cy) / 62.0) ** 2 + ((xx - cx) / 56.0) ** 2 <= 1.0
    head[:cz] |= disc[None]
    depth = ndimage.distance_transform_edt(head)
    near = ~brain & (d_brain <= _OUTER_MM)
    layers = {
        "csf": ~brain & (d_brain <= _CSF_MM),
        "bone": near & (((d_brain > _CSF_MM) & (d_brain <= _INNER_MM)) | (d_brain > _DIPLOE_MM)),
        "marrow": near & (d_brain > _INNER_MM) & (d_brain <= _DIPLOE_MM),
    }
    soft = head & ~brain & ~near
    layers["muscle"] = soft & ((depth <= _SKIN_MM) | (depth > _FAT_MM))
    layers["fat"] = soft & (depth > _SKIN_MM) & (depth <= _FAT_MM)
    return layers


def _bias_field(shape: tuple[int, ...], rng: np.random.Generator, strength: float = 0.2) -> np.ndarray:
    """A smooth multiplicative field, about 1 +- strength across the world (quadratic)."""
    axes = [np.linspace(-1, 1, n, dtype=np.float32) for n in shape]
    z, y, x = axes[0][:, None, None], axes[1][None, :, None], axes[2][None, None, :]
    a = rng.uniform(-1, 1, 6) * strength / 2
    field = 1 + a[0] * z + a[1] * y + a[2] * x + a[3] * z * y + a[4] * (y * y - 0.3) + a[5] * (x * x - 0.3)
    return np.clip(field, 0.5, 1.5).astype(np.float32)


def make_raw_phantom(seed: int, modalities: tuple[str, ...] = MODALITIES) -> RawPhantom:
    """Series of one raw-scan phantom (deterministic for a seed and the `modalities` asked for)."""
    case = make_phantom(seed)                       # BraTS grid, 1 mm, skull-stripped
    rng = np.random.default_rng(np.random.SeedSequence([int(seed), 7_001]))
    below, above, py, px = _PAD
    pad = ((below, above), (py, py), (px, px))
    brain = np.pad(case.images["T1"] != 0, pad)
    for m in MODALITIES[1:]:
        brain |= np.pad(case.images[m] != 0, pad)
    layers = _head_tissues(brain, rng)
    texture = ndimage.gaussian_filter(rng.standard_normal(brain.shape).astype(np.float32), 2.0)
    texture *= _TISSUE_NOISE / max(float(texture.std()), 1e-6)

    world_geom = sitk.Image([brain.shape[2], brain.shape[1], brain.shape[0]], sitk.sitkFloat32)
    world_geom.SetOrigin((-float(px), -float(py), -float(below)))   # the BraTS grid starts at 0
    centre = np.array(world_geom.TransformContinuousIndexToPhysicalPoint(
        [(brain.shape[2] - 1) / 2, (brain.shape[1] - 1) / 2, (brain.shape[0] - 1) / 2]))

    series = {}
    for m in modalities:
        med = REAL_MEDIANS[m]
        col = MODALITIES.index(m)
        world = np.pad(case.images[m], pad).astype(np.float32)
        for name, mask in layers.items():
            world[mask] = med * _HEAD_TISSUES[name][col] * (1 + texture[mask])
        world *= _bias_field(brain.shape, rng)
        sigma = _BACKGROUND_SIGMA * med
        spec = SERIES[m]
        # slab profile along the slice axis (the series are tilted only a few degrees)
        if spec.spacing[2] > 1.5:
            world = ndimage.gaussian_filter1d(world, spec.spacing[2] / 2.355, axis=0)
        img = sitk.GetImageFromArray(world)
        img.CopyInformation(world_geom)
        out = sitk.Resample(img, _series_grid(spec, centre), sitk.Transform(), sitk.sitkLinear, 0.0)
        arr = sitk.GetArrayFromImage(out)
        # magnitude of complex Gaussian noise: Rician everywhere, never exactly 0 outside the head
        noise_re = rng.normal(0, sigma, arr.shape).astype(np.float32)
        noise_im = rng.normal(0, sigma, arr.shape).astype(np.float32)
        arr = np.sqrt((arr + noise_re) ** 2 + noise_im ** 2)
        series[m] = _with_geometry(arr.astype(np.float32), out)

    reference = "T1ce" if "T1ce" in modalities else modalities[0]
    ref_grid = _series_grid(SERIES[reference], centre)
    truth = {}
    for name, arr in (("brain", brain.astype(np.uint8)), ("label", np.pad(case.label, pad))):
        img = sitk.GetImageFromArray(arr)
        img.CopyInformation(world_geom)
        truth[name] = sitk.Resample(img, ref_grid, sitk.Transform(), sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    return RawPhantom(series, truth["brain"], truth["label"], reference, int(seed))


def _with_geometry(arr: np.ndarray, like: sitk.Image) -> sitk.Image:
    img = sitk.GetImageFromArray(arr)
    img.CopyInformation(like)
    return img


def write_raw_phantom(out_dir: str | Path, seed: int = 0) -> Path:
    """Write one raw phantom as a case folder (2023 names, int16 like scanner output); returns it.

    Besides the four series: `<case>-brainmask.nii.gz` (truth brain mask) and `<case>-seg.nii.gz`
    (tumour labels, BraTS 2023 convention) on the reference series' grid.
    """
    from ..io.datasets import write_case
    from ..io.imageio import write_image

    raw = make_raw_phantom(seed)
    case_id = f"RAW-PHANTOM-{raw.seed:05d}"
    images = {m: _with_geometry(np.clip(np.rint(sitk.GetArrayViewFromImage(img)), 0, 32767).astype(np.int16), img)
              for m, img in raw.series.items()}
    folder = write_case(out_dir, case_id, images, raw.label, layout="brats2023")
    write_image(raw.brain_mask, folder / f"{case_id}-brainmask.nii.gz", what=f"case {case_id} brain mask")
    return folder
