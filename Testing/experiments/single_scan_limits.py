"""What a single scan can show, and how far the network looks: two limits on single-scan Dice.

    python Testing/experiments/single_scan_limits.py DATA [--model lckd-lite-brats]

1. Separability of the tumour by intensity alone, per scan: on every labelled case (model grid,
   z-scored as the network sees it), the AUC of a voxel's intensity for telling the whole tumour
   from the rest of the brain (0.5 = no information, 1 = a threshold separates them; a scan where
   the tumour is dark scores below 0.5, so max(AUC, 1 - AUC) is reported), and the share of
   tumour-free brain that is at least as bright as the tumour's median (for T2: CSF).
2. The network's effective receptive field: the radius (mm) of the ball around the centre voxel
   that holds 50 %, 90 % and 99 % of the input gradient's magnitude on that voxel's WT logit
   (random input, per single scan). Instance normalisation lets every voxel count a little, so
   the whole window always has some gradient; the radii say where the decision's evidence lies.
   What lies farther, such as the other hemisphere's matching structure, barely moves it.
"""
from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np


def auc(pos: np.ndarray, neg: np.ndarray, rng: np.random.Generator, n: int = 20000) -> float:
    """P(a tumour voxel is brighter than a tumour-free one), from random pairs."""
    a = pos[rng.integers(len(pos), size=n)]
    b = neg[rng.integers(len(neg), size=n)]
    return float(np.mean(a > b) + 0.5 * np.mean(a == b))


def separability(data: Path) -> None:
    from lckd.base.modalities import MODALITIES
    from lckd.prep.modelgrid import load_case, select_cases

    rng = np.random.default_rng(0)
    rows: dict[str, list[tuple[float, float]]] = {m: [] for m in MODALITIES}
    for files in select_cases(data, None, "test"):
        if files.label is None:
            continue
        case = load_case(files, list(MODALITIES), (1.0, 1.0, 1.0), dtype=np.float32)
        wt = case.regions[2]
        brain = np.any(case.x[case.present] != 0, axis=0)
        for i, m in enumerate(MODALITIES):
            if not case.present[i] or wt.sum() < 100:
                continue
            v = case.x[i]
            pos, neg = v[wt], v[brain & ~wt]
            a = auc(pos, neg, rng)
            bright = float(np.mean(neg >= np.median(pos))) if a >= 0.5 else float(np.mean(neg <= np.median(pos)))
            rows[m].append((max(a, 1 - a), bright))
    print("| scan | cases | tumour vs brain AUC, median (range) "
          "| tumour-free brain as bright (dark) as the tumour's median |")
    print("|---|---:|---|---|")
    for m, r in rows.items():
        if r:
            a = np.array(r)
            print(f"| {m} | {len(a)} | {np.median(a[:, 0]):.3f} ({a[:, 0].min():.3f}-{a[:, 0].max():.3f}) "
                  f"| {np.median(a[:, 1]) * 100:.1f} % |")


def receptive_field(model: str, size: int = 96) -> None:
    import torch

    from lckd.model.modelcard import load_model
    from lckd.model.registry import resolve_model

    net, card = load_model(resolve_model(model), device=torch.device("cpu"))
    net.eval()
    print(f"\n{card.name} {card.version}: effective receptive field (input {size}^3 at "
          f"{card.spacing[0]:g} mm, random input)")
    for i, m in enumerate(net.modalities):
        x = torch.randn(1, len(net.modalities), size, size, size)
        x[:, [j for j in range(len(net.modalities)) if j != i]] = 0
        x.requires_grad_(True)
        present = torch.zeros(len(net.modalities), dtype=torch.bool)
        present[i] = True
        c = size // 2
        net(x, present).logits[0, 2, c, c, c].backward()
        g = x.grad[0, i].abs().flatten()
        axes = torch.arange(size, dtype=torch.float32) - c
        zz, yy, xx = torch.meshgrid(axes, axes, axes, indexing="ij")
        r = torch.sqrt(zz ** 2 + yy ** 2 + xx ** 2).flatten() * float(card.spacing[0])
        order = torch.argsort(r)
        mass = torch.cumsum(g[order], 0) / g.sum()
        radii = [float(r[order][int(torch.searchsorted(mass, q))]) for q in (0.5, 0.9, 0.99)]
        print(f"  {m} alone: 50 % within {radii[0]:.0f} mm, 90 % within {radii[1]:.0f} mm, "
              f"99 % within {radii[2]:.0f} mm")


def main() -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", type=Path)
    p.add_argument("--model", default="lckd-lite-brats")
    p.add_argument("--field-only", action="store_true", help="only the receptive field (seconds)")
    args = p.parse_args()
    receptive_field(args.model)
    if not args.field_only:
        separability(args.data)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
