"""Same patient or not, after co-registration: the numbers behind `lckd.prep.samehead`'s thresholds.

For each shared BraTS case (with T1ce and FLAIR), the reference is its T1ce and the moving scan
is one of its other scans (FLAIR, T2, T1 in turn)

- "same": moved by a random rigid motion (up to 5 deg and 5 mm per axis), at 1 mm;
- "same-5mm": the same, cut to 5 mm slices (a clinical series);
- "other": the same contrast of another case (a mixed-patient study),

registered with `lckd.prep.registration.register_rigid` and judged by `compare_heads`; one line
per pair, then the range of each measure per kind.

    python Testing/experiments/samehead_measure.py ../shared/data/brats-labelled --pairs 12
"""
from __future__ import annotations

import argparse
import math
from collections import defaultdict

import numpy as np
import SimpleITK as sitk

from lckd.io.datasets import find_cases
from lckd.prep.geometry import resample_onto
from lckd.prep.registration import register_rigid
from lckd.prep.samehead import compare_heads


def moved(img: sitk.Image, seed: int) -> sitk.Image:
    rng = np.random.default_rng(seed)
    centre = img.TransformContinuousIndexToPhysicalPoint([(n - 1) / 2 for n in img.GetSize()])
    angles = [math.radians(v) for v in rng.uniform(-5, 5, 3)]
    return resample_onto(img, img, sitk.Euler3DTransform(centre, *angles, tuple(rng.uniform(-5, 5, 3))))


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("root")
    ap.add_argument("--pairs", type=int, default=12)
    args = ap.parse_args()
    cases = [c for c in find_cases(args.root) if "T1ce" in c.images and "FLAIR" in c.images]

    def read(p):
        return sitk.Cast(sitk.ReadImage(str(p)), sitk.sitkFloat32)

    seen: dict = defaultdict(list)
    for k in range(min(args.pairs, len(cases))):
        a, b = cases[k], cases[(k * 7 + 3) % len(cases)]
        if a.case_id == b.case_id:
            b = cases[(k + 1) % len(cases)]
        mod = ["FLAIR", "T2", "T1"][k % 3]
        if mod not in a.images or mod not in b.images:
            mod = "FLAIR"
        ref = read(a.images["T1ce"])
        same = moved(read(a.images[mod]), k)
        thick = sitk.BinShrink(same, [1, 1, 5])
        for kind, mov in (("same", same), ("same-5mm", thick), ("other", read(b.images[mod]))):
            c = compare_heads(ref, mov, register_rigid(ref, mov))
            seen[kind].append((c.sharpness, c.outline_dice))
            print(f"{kind:9s} {a.case_id:22s} {b.case_id if kind == 'other' else '':22s} {mod:5s} "
                  f"sharpness {c.sharpness:.3f} outline Dice {c.outline_dice:.3f} same head: {c.same_head}", flush=True)
    for kind, rows in seen.items():
        s, d = np.array(rows, dtype=float).T
        print(f"{kind}: sharpness {s.min():.3f}-{s.max():.3f}, outline Dice {d.min():.3f}-{d.max():.3f} "
              f"({len(rows)} pairs)")


if __name__ == "__main__":
    main()
