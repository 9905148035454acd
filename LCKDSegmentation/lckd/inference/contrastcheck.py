"""Does each scan look like the contrast its flag claims? A check from the image itself.

A scan given under the wrong flag (T1 and FLAIR swapped, a T1 given as T1ce) makes the network
draw a confident, wrong tumour: the flags tell it which contrast each channel holds. This check
reads what every contrast shows of the brain's tissues, on the normalised scan the network gets
(brain crop, z-score): the shape of the intensity histogram (white matter brighter than grey
on T1, darker on T2 and FLAIR; a long bright tail of vessels, dura and choroid plexus on T1ce),
the centre of the brain (ventricles: dark on T1 and FLAIR, bright on T2), the brain's rim (CSF
in the sulci: bright on T2) and how smooth the image is (noise has no anatomy).

A multinomial logistic regression on those features, fitted on the shared labelled cases at
1 mm and as clinical 2D series, and on phantoms (`Testing/experiments/contrast_check_cv.py`,
cross-validated by case; its table is in docs/QUALITY.md), gives each scan a probability for
each contrast. A scan whose own flag gets a probability under the fitted warning level is
reported with the contrast it looks like; under the refusal level (strong evidence) the run
is refused unless the user says `--trust-flags`. A scan far from every contrast the check was
fitted on (texture without anatomy) is reported as such.

It can miss: it sees global tissue contrast, not the acquisition, so an unusual protocol or a
scan dominated by a huge lesion can look like another contrast, and a wrong flag between two
contrasts that look alike on a given scanner can pass.
"""
from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

#: The contrasts the check tells apart (lckd.modalities.MODALITIES order).
CLASSES = ("T1", "T1ce", "T2", "FLAIR")
QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
#: depth bands below the brain's surface (mm): cortex and sulci, cortex and U-fibres, white matter, deep
DEPTH_BANDS_MM = ((0.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 1e9))
FEATURES = tuple([f"q{q:02d}" for q in QUANTILES] + ["skew", "kurtosis", "mode"]
                 + [f"depth{lo:g}_{stat}" for lo, _ in DEPTH_BANDS_MM for stat in ("median", "q10", "q90")]
                 + ["dark_depth", "bright_depth", "gradient", "neighbour_corr", "bright_share", "dark_share"])
#: where the fitted check is stored (package data)
DEFAULT_PATH = Path(__file__).with_name("contrastcheck.json")
STRIDE = 2                # features read every 2nd voxel along each axis (a quarter of a second per scan)


def subsampled(v: np.ndarray) -> np.ndarray:
    """The scan as the features read it: every STRIDE-th voxel along each axis (float32)."""
    return np.asarray(v, dtype=np.float32)[::STRIDE, ::STRIDE, ::STRIDE]


def contrast_features(v: np.ndarray, mask: np.ndarray | None = None, spacing_mm: float = 1.0,
                      presampled: bool = False) -> np.ndarray:
    """The check's features of one normalised scan (d, h, w; z-scored over the brain, 0 outside).

    `mask` is the brain (default: non-zero voxels); `spacing_mm` the grid's voxel size;
    `presampled`: `v` (and `mask`) are already `subsampled`. Features depend on the image's
    anatomy, not its units, so they are comparable between scanners.
    """
    from scipy import ndimage

    if not presampled:
        v = subsampled(v)
        mask = None if mask is None else np.asarray(mask, dtype=bool)[::STRIDE, ::STRIDE, ::STRIDE]
    mask = (v != 0) if mask is None else np.asarray(mask, dtype=bool)
    vals = v[mask]
    if vals.size < 100:
        return np.full(len(FEATURES), np.nan)
    vals = (vals - vals.mean()) / max(float(vals.std()), 1e-6)
    z = np.zeros_like(v)
    z[mask] = vals
    q = np.percentile(vals, QUANTILES)
    skew = float(np.mean(vals ** 3))
    kurt = float(np.mean(vals ** 4)) - 3.0
    hist, edges = np.histogram(np.clip(vals, -4, 4), bins=80, range=(-4, 4))
    hist = ndimage.gaussian_filter1d(hist.astype(float), 2.0)
    mode = float(edges[int(np.argmax(hist))] + (edges[1] - edges[0]) / 2)
    # depth below the brain's surface (mm): the cortex and the CSF of the sulci lie in the outer
    # few mm, white matter deeper; each contrast orders them differently
    depth = ndimage.distance_transform_edt(mask) * STRIDE * spacing_mm
    d = depth[mask]
    bands = []
    for lo, hi in DEPTH_BANDS_MM:
        band = vals[(d >= lo) & (d < hi)]
        if band.size < 20:
            band = vals
        bands += [float(np.median(band)), *np.percentile(band, [10, 90])]
    order = np.argsort(vals)
    k = max(1, vals.size // 20)
    dark_depth, bright_depth = float(d[order[:k]].mean()), float(d[order[-k:]].mean())
    brain_depth = float(d.mean())
    inner = depth > 3.0
    gz, gy, gx = np.gradient(z)
    gradient = float(np.mean(np.sqrt(gz ** 2 + gy ** 2 + gx ** 2)[inner])) if inner.any() else 0.0
    both = mask[:, :, 1:] & mask[:, :, :-1]
    a, b = z[:, :, 1:][both], z[:, :, :-1][both]
    corr = float(np.corrcoef(a, b)[0, 1]) if a.size > 10 else 0.0
    return np.array(list(q) + [skew, kurt, mode] + bands + [
        dark_depth / brain_depth, bright_depth / brain_depth, gradient, corr,
        float(np.mean(vals > 2.5)), float(np.mean(vals < -2.0))], dtype=float)


@dataclass
class ContrastModel:
    """A fitted check: feature standardisation, logistic weights, and its decision levels."""

    mean: np.ndarray                    # (F,) feature means of the fitting data
    scale: np.ndarray                   # (F,) feature SDs
    weights: np.ndarray                 # (K, F) one row per class
    bias: np.ndarray                    # (K,)
    warn_below: float = 0.05            # probability of the flagged contrast under which a scan is reported
    refuse_below: float = 0.001         # ... under which the run is refused (unless flags are trusted)
    far_above: float = 10.0             # feature distance beyond which a scan looks like no known contrast
    classes: tuple = CLASSES
    fitted_on: dict = field(default_factory=dict)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) class probabilities of (N, F) features (a row of NaN gives uniform)."""
        f = np.atleast_2d(np.asarray(features, dtype=float))
        z = np.nan_to_num((f - self.mean) / self.scale)
        logits = z @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N,) root-mean-square standardised distance of each feature row from the fitting data."""
        f = np.atleast_2d(np.asarray(features, dtype=float))
        z = (f - self.mean) / self.scale
        return np.sqrt(np.nanmean(z ** 2, axis=1))

    def to_dict(self) -> dict:
        return {"format": "lckd-contrast-check/1", "classes": list(self.classes), "features": list(FEATURES),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias.tolist(), "warn_below": self.warn_below, "refuse_below": self.refuse_below,
                "far_above": self.far_above, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> ContrastModel:
        from ..base.errors import ModelError

        if d.get("format") != "lckd-contrast-check/1" or list(d.get("features", [])) != list(FEATURES):
            raise ModelError("contrast check file: unknown format or feature list (made by another version?)")
        return cls(np.asarray(d["mean"], float), np.asarray(d["scale"], float), np.asarray(d["weights"], float),
                   np.asarray(d["bias"], float), float(d["warn_below"]), float(d["refuse_below"]),
                   float(d["far_above"]), tuple(d["classes"]), dict(d.get("fitted_on", {})))


def load_model(path: str | Path | None = None) -> ContrastModel:
    """The fitted check shipped with the package (or the one at `path`)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    return ContrastModel.from_dict(json.loads(p.read_text(encoding="utf-8")))


def fit(features: np.ndarray, labels: np.ndarray, l2: float = 1.0, iterations: int = 500) -> ContrastModel:
    """Multinomial logistic regression (L2 `l2` on standardised features), fitted by Newton-free
    gradient descent with a fixed step (the problem is small and convex)."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(labels, dtype=int)
    keep = np.all(np.isfinite(x), axis=1)
    x, y = x[keep], y[keep]
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    n, f = z.shape
    k = len(CLASSES)
    onehot = np.eye(k)[y]
    w, b = np.zeros((k, f)), np.zeros(k)
    # class weights: each contrast counts equally whatever its number of scans
    cw = n / (k * np.maximum(onehot.sum(0), 1))
    sw = onehot @ cw
    step = 0.5
    for _ in range(iterations):
        logits = z @ w.T + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) * sw[:, None] / n
        w -= step * (g.T @ z + l2 * w / n)
        b -= step * g.sum(0)
    return ContrastModel(mean, scale, w, b)


@dataclass
class ScanVerdict:
    """What the check says about one scan."""

    flag: str
    looks_like: str                     # the most likely contrast
    p_flag: float                       # probability of the flagged contrast
    p_best: float
    distance: float
    level: str                          # "ok", "warn", "refuse" or "unknown" (no anatomy seen)

    def message(self) -> str:
        if self.level == "unknown":
            return (f"the scan given as {self.flag} looks like no MRI contrast the check knows (feature distance "
                    f"{self.distance:.1f}): noise, a non-brain image or an unusual protocol?")
        return (f"the scan given as {self.flag} looks like {self.looks_like} (contrast check: "
                f"{self.p_best:.0%} {self.looks_like}, {self.p_flag:.1%} {self.flag}): check the flags")


def check_scans(x: np.ndarray, present: Sequence[bool], order: Sequence[str],
                model: ContrastModel | None = None, mask: np.ndarray | None = None) -> list[ScanVerdict]:
    """Verdicts for the present channels of a prepared case (M, d, h, w), in `order`."""
    model = load_model() if model is None else model
    names = [order[c] for c in range(len(order)) if present[c]]
    feats = np.array([contrast_features(x[c], mask) for c in range(len(order)) if present[c]])
    probs = model.probabilities(feats)
    dist = model.distance(feats)
    out = []
    for name, p, d in zip(names, probs, dist):
        best = int(np.argmax(p))
        p_flag = float(p[model.classes.index(name)])
        if not np.isfinite(d) or d > model.far_above:
            level = "unknown"
        elif p_flag < model.refuse_below and model.classes[best] != name:
            level = "refuse"
        elif p_flag < model.warn_below and model.classes[best] != name:
            level = "warn"
        else:
            level = "ok"
        out.append(ScanVerdict(name, model.classes[best], p_flag, float(p[best]), float(d), level))
    return out


def same_contrast_pairs(verdicts: Sequence[ScanVerdict]) -> list[tuple[str, str]]:
    """Pairs of scans that both look, clearly, like one and the same contrast."""
    pairs = []
    for i, a in enumerate(verdicts):
        for b in verdicts[i + 1:]:
            if a.looks_like == b.looks_like and min(a.p_best, b.p_best) > 0.9 and a.level != "unknown" \
                    and b.level != "unknown" and (a.level != "ok" or b.level != "ok"):
                pairs.append((a.flag, b.flag))
    return pairs
