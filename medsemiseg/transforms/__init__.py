"""MONAI-style transforms and pure tensor ops.

* :mod:`.mixing`: CutMix box, ClassMix class mask, SupMix paste (batched torch functions, no state);
* :mod:`.views`: the batched photometric strong view and the weak-view MONAI dictionary transforms;
* :mod:`.intensity`: CT windowing, grey scaling by kind (HU, 0-255, percentiles) and fundus normalisation;
* :mod:`.patches`: random training patches (foreground-centred for labelled items) for images kept at their size;
* :mod:`.fov`: field-of-view masks for scoring fundus photographs inside the retina.
"""

from __future__ import annotations

from .intensity import LUNG_WINDOW, CTIntensityd, CTWindowd, FundusNormalized, GreyIntensityd
from .mixing import classes_present, classmix_mask, cutmix_box_mask, mix, select_supmix_classes, supmix_paste
from .patches import RandPatchd
from .views import StrongAugment, weak_transforms

__all__ = [
    "CTIntensityd",
    "CTWindowd",
    "FundusNormalized",
    "GreyIntensityd",
    "LUNG_WINDOW",
    "RandPatchd",
    "StrongAugment",
    "weak_transforms",
    "classes_present",
    "classmix_mask",
    "cutmix_box_mask",
    "mix",
    "select_supmix_classes",
    "supmix_paste",
]
