"""LCKD brain-tumour segmentation core (no Slicer imports).

Segments glioma sub-regions from any non-empty subset of T1, T1ce, T2 and FLAIR with a
network trained by Learnable Cross-modal Knowledge Distillation (Wang et al., MICCAI 2023).
"""
from __future__ import annotations

__version__ = "0.1.0"
