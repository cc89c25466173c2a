"""MONAI-style transforms and pure tensor ops.

* :mod:`.mixing`: CutMix box, ClassMix class mask, SupMix paste (batched torch functions, no state);
* :mod:`.views`: the batched photometric strong view and the weak-view MONAI dictionary transforms;
* :mod:`.intensity`: CT windowing and fundus normalisation dictionary transforms.
"""

from __future__ import annotations

from .mixing import classes_present, classmix_mask, cutmix_box_mask, mix, select_supmix_classes, supmix_paste

__all__ = ["classes_present", "classmix_mask", "cutmix_box_mask", "mix", "select_supmix_classes", "supmix_paste"]
