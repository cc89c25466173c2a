"""MONAI-style transforms and pure tensor ops.

* :mod:`.mixing`: CutMix box, ClassMix class mask, SupMix paste (batched torch functions, no state);
* :mod:`.views`: the batched photometric strong view and the weak-view MONAI dictionary transforms;
* :mod:`.intensity`: CT windowing and fundus normalisation dictionary transforms.
"""

from __future__ import annotations

from .intensity import LUNG_WINDOW, CTWindowd, FundusNormalized
from .mixing import classes_present, classmix_mask, cutmix_box_mask, mix, select_supmix_classes, supmix_paste
from .views import StrongAugment, weak_transforms

__all__ = [
    "CTWindowd",
    "FundusNormalized",
    "LUNG_WINDOW",
    "StrongAugment",
    "weak_transforms",
    "classes_present",
    "classmix_mask",
    "cutmix_box_mask",
    "mix",
    "select_supmix_classes",
    "supmix_paste",
]
