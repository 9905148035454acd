"""Outline figures a clinician can read: region contours (not filled) over the scans, one axial slice.

Filled overlays hide the image under the tumour, which is exactly what a reader wants to
check; contours keep it visible and let a prediction and a reference be drawn on one slice.
Arrays are (z, y, x) in LPS order, as `sitk.GetArrayFromImage` of a DICOMOrient(..., "LPS")
image gives them: rows run anterior -> posterior, columns right -> left (radiological view).
"""
from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.errors import InputError
from ..base.labels import labels_to_regions
from ..base.segments import REGION_NAMES, SEGMENTS

# region -> colour of its contour (WT in the oedema colour, TC in the core colour, ET its own)
REGION_COLOURS = {"WT": SEGMENTS[1].color, "TC": SEGMENTS[0].color, "ET": SEGMENTS[2].color}


@dataclass
class Panel:
    """One image of a figure: an axial slice, contours of labelmaps drawn on it, a caption."""

    image: np.ndarray                                   # 2D slice
    caption: str
    labels: list = field(default_factory=list)          # [(2D BraTS-2018 labelmap, linestyle, name)]


def tumour_slice(*labelmaps: np.ndarray) -> int:
    """The axial slice (z index) with the most whole tumour over the given labelmaps."""
    total = sum((lab > 0).sum(axis=(1, 2)) for lab in labelmaps)
    return int(np.argmax(total)) if np.any(total) else labelmaps[0].shape[0] // 2


def _pyplot():
    """matplotlib's pyplot (Agg) and Line2D, imported without a word on stderr.

    Where HOME (and TMPDIR) cannot be written, matplotlib logs two warnings on import ("mkdir -p
    failed", "created a temporary cache directory"); it still works, with a cache of its own in
    a temporary folder, so those lines are only noise around our one line of output.
    """
    import logging

    log = logging.getLogger("matplotlib")
    level = log.level
    log.setLevel(logging.ERROR)
    try:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
        from matplotlib.lines import Line2D
    except ImportError:
        raise InputError("figures need matplotlib: pip install matplotlib") from None
    finally:
        log.setLevel(level)
    return plt, Line2D


def save_outline_figure(panels: Sequence[Panel], path: str | Path, title: str = "",
                        footer: str = "") -> Path:
    """Panels side by side, region contours in the segment colours, orientation letters; PNG."""
    plt, Line2D = _pyplot()
    from ..io.atomicwrite import atomic_path

    width = 4.2 * max(len(panels), 2)
    lines = footer_lines(footer, width)
    # the band under the images: the legend, then the footer lines (8 pt, about 0.16 in each)
    band = 0.35 + 0.16 * len(lines)
    fig, axes = plt.subplots(1, len(panels), figsize=(width, 4.55 + band), facecolor="black", squeeze=False)
    styles: dict = {}
    for ax, panel in zip(axes[0], panels):
        img = panel.image
        inside = img[img != 0]
        lo, hi = np.percentile(inside, (0.5, 99.5)) if inside.size else (0.0, 1.0)
        ax.imshow(img, cmap="gray", vmin=lo, vmax=hi, interpolation="nearest")
        for lab, style, name in panel.labels:
            regions = labels_to_regions(lab)
            for i, r in enumerate(("ET", "TC", "WT")):
                if regions[i].any():
                    ax.contour(regions[i].astype(float), levels=[0.5], colors=[REGION_COLOURS[r]],
                               linewidths=1.2, linestyles=style)
            styles[name] = style
        for text, xy, ha in (("A", (0.5, 0.98), "center"), ("P", (0.5, 0.02), "center"),
                             ("R", (0.01, 0.5), "left"), ("L", (0.99, 0.5), "right")):
            ax.text(*xy, text, color="white", fontsize=9, ha=ha, va="center", transform=ax.transAxes)
        ax.set_title(panel.caption, color="white", fontsize=10)
        ax.axis("off")
    handles = [Line2D([], [], color=REGION_COLOURS[r], label=REGION_NAMES[r]) for r in ("WT", "TC", "ET")]
    handles += [Line2D([], [], color="white", linestyle=s, label=n) for n, s in styles.items()]
    height = fig.get_figheight()
    fig.legend(handles=handles, loc="lower center", ncol=len(handles), frameon=False, labelcolor="white",
               fontsize=9, bbox_to_anchor=(0.5, (0.16 * len(lines) + 0.02) / height))
    if title:
        fig.suptitle(title, color="white", fontsize=11)
    for i, line in enumerate(reversed(lines)):
        fig.text(0.5, (0.06 + 0.16 * i) / height, line, color="#bbbbbb", ha="center", va="bottom", fontsize=8)
    fig.tight_layout(rect=(0, band / height, 1, 0.95))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path) as tmp:
        fig.savefig(str(tmp), dpi=90, facecolor="black", format="png")
    plt.close(fig)
    return path


def footer_lines(footer: str, width_in: float, fontsize: float = 8.0) -> list[str]:
    """The footer's lines wrapped to fit a figure `width_in` inches wide (a long model scope or
    quality line would otherwise run past the picture's edges)."""
    import textwrap

    # an average character of the default sans-serif font is about 0.6 em wide
    chars = max(30, int(width_in * 72 / (0.6 * fontsize)) - 4)
    return [w for line in footer.splitlines() for w in (textwrap.wrap(line, chars) or [""])] if footer else []


#: Scans shown as backgrounds, in order of preference (ET/TC read on T1ce, oedema on FLAIR).
PREVIEW_SCANS = ("T1ce", "FLAIR", "T2", "T1")


def _lps_array(image) -> np.ndarray:
    """(z, y, x) array of a SimpleITK image reoriented to LPS (the layout `Panel` expects)."""
    import SimpleITK as sitk

    return sitk.GetArrayFromImage(sitk.DICOMOrient(image, "LPS"))


def sitk_point_z(image, z: int) -> float:
    """Physical z (LPS, = Slicer's S) of axial slice `z` of the image reoriented to LPS."""
    import SimpleITK as sitk

    return float(sitk.DICOMOrient(image, "LPS").TransformIndexToPhysicalPoint((0, 0, int(z)))[2])


def result_figure(result, images: dict, path: str | Path, card=None, *, reference_label=None,
                  title: str = "", max_panels: int = 2) -> Path:
    """The preview of a `SegmentationResult`: its outlines on T1ce and FLAIR side by side
    (else on the scans it used), at the axial slice with the most tumour.

    `images`: modality -> SimpleITK image (any grid; each is resampled onto the labelmap's).
    `reference_label`: an optional ground-truth labelmap (SimpleITK, BraTS 2018 or 2023
    values) drawn dashed. The footer gives the region volumes and the model's scope line.
    """
    from ..base.labels import CONVENTIONS
    from ..prep import geometry

    def to_2018(arr: np.ndarray, convention: str) -> np.ndarray:
        # The contours read BraTS 2018 values; a 2023 labelmap has ET = 3.
        et = CONVENTIONS[convention]["ET"]
        return np.where(arr == et, 4, arr) if et != 4 else arr

    label_img = result.labelmap
    pred = to_2018(_lps_array(label_img), result.label_convention)
    overlays = [(pred, "solid", "LCKD")]
    if reference_label is not None:
        ref_img = reference_label if geometry.same_grid(reference_label, label_img) else \
            geometry.resample_onto(reference_label, label_img, label=True)
        ref = _lps_array(ref_img)
        overlays.append((np.where(ref == 3, 4, ref), "dashed", "reference"))  # 3 is ET only in BraTS 2023
    z = tumour_slice(*(o[0] for o in overlays))
    shown = [m for m in PREVIEW_SCANS if m in images][:max_panels]
    panels = []
    for m in shown:
        img = images[m] if geometry.same_grid(images[m], label_img) else geometry.resample_onto(images[m], label_img)
        arr = _lps_array(img)
        # Slicer's axial slider shows the S coordinate; LPS z is the same axis with the same sign.
        s_mm = sitk_point_z(label_img, z)
        panels.append(Panel(arr[z], f"{m}   axial S {s_mm:.1f} mm (slice {z + 1} of {arr.shape[0]})",
                            [(lab[z], style, name) for lab, style, name in overlays]))
    vols = result.volumes_ml
    footer = (f"whole tumour {vols['WT']:.1f} mL   tumour core {vols['TC']:.1f} mL   "
              f"enhancing {vols['ET']:.1f} mL   (scans: {', '.join(result.modalities)})")
    if getattr(result, "quality", None):
        from ..inference.quality import summary_line
        footer += "\n" + summary_line(result.quality)
    if card is not None:
        from ..inference.record import model_line
        footer += "\n" + model_line(card)
    return save_outline_figure(panels, path, title=title, footer=footer)
