"""LCKD brain-tumour segmentation core (no Slicer imports).

Segments glioma sub-regions from any non-empty subset of T1, T1ce, T2 and FLAIR with a
network trained by Learnable Cross-modal Knowledge Distillation (Wang et al., MICCAI 2023).
"""
from __future__ import annotations

__version__ = "0.1.0"

# Importing the package changes nothing in the process (no environment variables): the
# Slicer GUI imports it, and every torch later loaded there would inherit a thread policy.
# Only the entry points that own their process (`lckd` command, `python -m lckd.frontends.worker`)
# set the OpenMP wait policy: `lckd.base.threads.apply_wait_policy`.
