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
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from ..base.modalities import MODALITIES

#: The contrasts the check tells apart: the modalities, in their canonical order.
CLASSES = tuple(MODALITIES)
QUANTILES = (1, 5, 10, 25, 50, 75, 90, 95, 99)
#: depth bands below the brain's surface (mm): cortex and sulci, cortex and U-fibres, white matter, deep
DEPTH_BANDS_MM = ((0.0, 4.0), (4.0, 8.0), (8.0, 16.0), (16.0, 1e9))
FEATURES = tuple([f"q{q:02d}" for q in QUANTILES] + ["skew", "kurtosis", "mode"]
                 + [f"depth{lo:g}_{stat}" for lo, _ in DEPTH_BANDS_MM for stat in ("median", "q10", "q90")]
                 + ["dark_depth", "bright_depth", "gradient", "neighbour_corr", "bright_share", "dark_share"])
#: where the fitted check is stored (package data)
DEFAULT_PATH = Path(__file__).with_name("contrastcheck.json")
SAME_CLEARLY, SAME_AGAINST_FLAG = 0.9, 0.05   # "two scans of one contrast": both clearly, one against its flag
STRIDE = 2                # features read every 2nd voxel along each axis (about 0.1 CPU-s per BraTS scan)


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


def _logistic_fit(z: np.ndarray, onehot: np.ndarray, l2: float, bias: bool, iterations: int = 600
                  ) -> tuple[np.ndarray, np.ndarray]:
    """Weights (K, F) and bias (K,) of a class-balanced softmax regression on standardised `z`
    (gradient descent with a fixed step: the problem is small and convex)."""
    n, f = z.shape
    k = onehot.shape[1]
    w, b = np.zeros((k, f)), np.zeros(k)
    sw = onehot @ (n / (k * np.maximum(onehot.sum(0), 1)))      # every class counts equally
    for _ in range(iterations):
        logits = z @ w.T + b
        logits -= logits.max(1, keepdims=True)
        p = np.exp(logits)
        p /= p.sum(1, keepdims=True)
        g = (p - onehot) * sw[:, None] / n
        w -= 0.5 * (g.T @ z + l2 * w / n)
        if bias:
            b -= 0.5 * g.sum(0)
    return w, b


def _pair_key(a: str, b: str) -> str:
    return f"{a}|{b}"


@dataclass
class ContrastModel:
    """A fitted check: one scan's contrast (softmax regression on its features) and, for every two
    contrasts, which of two scans of one patient is which (logistic regression on the difference
    of their features: far more telling than either scan alone, because the patient, scanner
    and lesion are the same)."""

    mean: np.ndarray                    # (F,) feature means of the fitting data
    scale: np.ndarray                   # (F,) feature SDs
    weights: np.ndarray                 # (K, F) one row per contrast
    bias: np.ndarray                    # (K,)
    pairs: dict = field(default_factory=dict)   # "A|B" (A before B in `classes`) -> (F,) weights on (f_A - f_B) / scale
    warn_below: float = 0.05            # P(flagged contrast) under which a scan is reported
    refuse_below: float = 0.001         # ... under which the run is refused (unless flags are trusted)
    pair_warn_below: float = 0.3        # P(two scans' flags are the right way round) under which they are reported
    pair_refuse_below: float = 0.05     # ... under which the run is refused
    far_above: float = 10.0             # feature distance beyond which a scan looks like no known contrast
    min_brain_ml: float = 300.0         # smaller brains (crops, test volumes) are not judged
    min_neighbour_corr: float = 0.1     # neighbouring voxels less alike than this: texture without anatomy
    classes: tuple = CLASSES
    fitted_on: dict = field(default_factory=dict)

    def probabilities(self, features: np.ndarray) -> np.ndarray:
        """(N, K) contrast probabilities of (N, F) features."""
        f = np.atleast_2d(np.asarray(features, dtype=float))
        z = np.nan_to_num((f - self.mean) / self.scale)
        logits = z @ self.weights.T + self.bias
        logits -= logits.max(axis=1, keepdims=True)
        p = np.exp(logits)
        return p / p.sum(axis=1, keepdims=True)

    def pair_probability(self, features_a: np.ndarray, flag_a: str, features_b: np.ndarray, flag_b: str) -> float:
        """P(scan a is `flag_a` and scan b is `flag_b`, rather than the other way round)."""
        ia, ib = self.classes.index(flag_a), self.classes.index(flag_b)
        if ia > ib:
            return self.pair_probability(features_b, flag_b, features_a, flag_a)
        w = np.asarray(self.pairs[_pair_key(flag_a, flag_b)], dtype=float)
        s = float(np.nan_to_num((np.asarray(features_a) - np.asarray(features_b)) / self.scale) @ w)
        return float(1.0 / (1.0 + np.exp(-np.clip(s, -50, 50))))

    def distance(self, features: np.ndarray) -> np.ndarray:
        """(N,) root-mean-square standardised distance of each feature row from the fitting data."""
        f = np.atleast_2d(np.asarray(features, dtype=float))
        z = (f - self.mean) / self.scale
        return np.sqrt(np.nanmean(z ** 2, axis=1))

    def to_dict(self) -> dict:
        return {"format": FORMAT, "classes": list(self.classes), "features": list(FEATURES),
                "mean": self.mean.tolist(), "scale": self.scale.tolist(), "weights": self.weights.tolist(),
                "bias": self.bias.tolist(), "pairs": {k: np.asarray(v).tolist() for k, v in self.pairs.items()},
                "warn_below": self.warn_below, "refuse_below": self.refuse_below,
                "pair_warn_below": self.pair_warn_below, "pair_refuse_below": self.pair_refuse_below,
                "far_above": self.far_above, "min_brain_ml": self.min_brain_ml,
                "min_neighbour_corr": self.min_neighbour_corr, "fitted_on": self.fitted_on}

    @classmethod
    def from_dict(cls, d: dict) -> ContrastModel:
        from ..base.errors import ModelError

        if d.get("format") != FORMAT or list(d.get("features", [])) != list(FEATURES):
            raise ModelError("contrast check file: unknown format or feature list (made by another version?)")
        return cls(np.asarray(d["mean"], float), np.asarray(d["scale"], float), np.asarray(d["weights"], float),
                   np.asarray(d["bias"], float), {k: np.asarray(v, float) for k, v in d["pairs"].items()},
                   float(d["warn_below"]), float(d["refuse_below"]), float(d["pair_warn_below"]),
                   float(d["pair_refuse_below"]), float(d["far_above"]), float(d["min_brain_ml"]),
                   float(d["min_neighbour_corr"]), tuple(d["classes"]), dict(d.get("fitted_on", {})))


FORMAT = "lckd-contrast-check/2"


def load_model(path: str | Path | None = None) -> ContrastModel:
    """The fitted check shipped with the package (or the one at `path`)."""
    p = Path(path) if path is not None else DEFAULT_PATH
    return ContrastModel.from_dict(json.loads(p.read_text(encoding="utf-8")))


def fit(features: np.ndarray, labels: np.ndarray, groups: Sequence[str], l2: float = 1.0) -> ContrastModel:
    """Fit both parts on scans' features, their true contrasts (indices into CLASSES) and the case
    each scan belongs to (pairs are formed within a case only)."""
    x = np.asarray(features, dtype=float)
    y = np.asarray(labels, dtype=int)
    g = np.asarray(groups)
    keep = np.all(np.isfinite(x), axis=1)
    x, y, g = x[keep], y[keep], g[keep]
    mean, scale = x.mean(0), x.std(0)
    scale[scale < 1e-9] = 1.0
    z = (x - mean) / scale
    w, b = _logistic_fit(z, np.eye(len(CLASSES))[y], l2, bias=True)
    pairs = {}
    for ia in range(len(CLASSES)):
        for ib in range(ia + 1, len(CLASSES)):
            diffs = []
            for case in np.unique(g):
                za, zb = z[(g == case) & (y == ia)], z[(g == case) & (y == ib)]
                diffs += [u - v for u in za for v in zb]
            if not diffs:
                continue
            d = np.array(diffs)
            # both orders, no bias: the model is antisymmetric, P(a, b) = 1 - P(b, a)
            order = np.r_[np.zeros(len(d), int), np.ones(len(d), int)]
            pw, _ = _logistic_fit(np.concatenate([d, -d]), np.eye(2)[order], l2, bias=False)
            pairs[_pair_key(CLASSES[ia], CLASSES[ib])] = pw[0] - pw[1]
    return ContrastModel(mean, scale, w, b, pairs)


@dataclass
class ContrastReport:
    """What the check says about a case's scans."""

    checked: bool                        # False: the brain was too small to judge
    looks_like: dict = field(default_factory=dict)     # flag -> the contrast the scan looks like most
    p_flag: dict = field(default_factory=dict)         # flag -> P(that contrast) from the scan alone
    messages: list = field(default_factory=list)       # one line per doubt
    refuse: bool = False                 # strong evidence that a flag is wrong
    unknown: list = field(default_factory=list)        # flags whose scan looks like no known contrast

    @property
    def doubts(self) -> bool:
        return bool(self.messages)


def judge(features: Mapping[str, np.ndarray], model: ContrastModel, brain_ml: float = 1e9) -> ContrastReport:
    """The check on scans' features by flag (canonical names)."""
    if brain_ml < model.min_brain_ml or not features:
        return ContrastReport(False)
    flags = list(features)
    feats = np.array([features[f] for f in flags])
    probs, dist = model.probabilities(feats), model.distance(feats)
    report = ContrastReport(True)
    for f, p, d in zip(flags, probs, dist):
        best = model.classes[int(np.argmax(p))]
        p_flag = float(p[model.classes.index(f)])
        report.looks_like[f], report.p_flag[f] = best, p_flag
        corr = float(features[f][FEATURES.index("neighbour_corr")])
        if not np.isfinite(d) or d > model.far_above or not corr >= model.min_neighbour_corr:
            report.unknown.append(f)
            report.messages.append(f"the scan given as {f} looks like no MRI contrast the check knows (neighbouring "
                                   f"voxels correlate {corr:.2f}, feature distance {d:.1f}): noise, a non-brain "
                                   "image or an unusual protocol?")
        elif best != f and p_flag < model.warn_below:
            report.refuse |= p_flag < model.refuse_below
            report.messages.append(f"the scan given as {f} looks like {best} (contrast check: "
                                   f"{p.max():.0%} {best}, {p_flag:.1%} {f})")
    judged = [f for f in flags if f not in report.unknown]
    for i, a in enumerate(judged):
        for b in judged[i + 1:]:
            right = model.pair_probability(features[a], a, features[b], b)
            if right < model.pair_warn_below:
                report.refuse |= right < model.pair_refuse_below
                report.messages.append(f"the scans given as {a} and {b} look swapped (contrast check: "
                                       f"{1 - right:.0%} that the {a} scan is the {b} and the other way round)")
    # two scans that both clearly look like one contrast, at least one of them against its flag
    best_p = {f: float(p.max()) for f, p in zip(flags, probs)}
    for i, a in enumerate(judged):
        for b in judged[i + 1:]:
            if report.looks_like[a] == report.looks_like[b] and min(best_p[a], best_p[b]) > SAME_CLEARLY \
                    and min(report.p_flag[a], report.p_flag[b]) < SAME_AGAINST_FLAG:
                report.messages.append(f"the scans given as {a} and {b} both look like {report.looks_like[a]}")
    return report


def check_scans(x: np.ndarray, present: Sequence[bool], order: Sequence[str], spacing_mm: float,
                model: ContrastModel | None = None, mask: np.ndarray | None = None) -> ContrastReport:
    """The check on a prepared case (M, d, h, w normalised channels in `order`, `spacing_mm` voxels)."""
    model = load_model() if model is None else model
    brain = (np.any(x[np.asarray(present, dtype=bool)] != 0, axis=0) if mask is None
             else np.asarray(mask, dtype=bool))
    brain_ml = float(brain.sum()) * spacing_mm ** 3 / 1000.0
    if brain_ml < model.min_brain_ml:
        return ContrastReport(False)
    feats = {order[c]: contrast_features(x[c], brain, spacing_mm) for c in range(len(order)) if present[c]}
    return judge(feats, model, brain_ml)
