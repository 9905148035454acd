"""LCKD brain-tumour segmentation core (no Slicer imports).

Segments glioma sub-regions from any non-empty subset of T1, T1ce, T2 and FLAIR with a
network trained by Learnable Cross-modal Knowledge Distillation (Wang et al., MICCAI 2023).
"""
from __future__ import annotations

import sys as _sys

from . import threads as _threads

__version__ = "0.1.0"

# OpenMP reads its wait policy once, when torch's libraries load, and every lckd entry point
# (the `lckd` command, `python -m lckd.worker`, torchrun) imports this package before torch;
# so this is the one place where it reliably takes effect (lckd/threads.py explains why).
_threads._torch_preloaded = "torch" in _sys.modules
_threads.set_wait_policy_env()
