"""``fixmatch``: FixMatch for segmentation, as in ``LiheYoung/UniMatch`` ``fixmatch.py``, in that repository's medical
setting (``more-scenarios/medical/unimatch.py``: Dice loss, UNet). The medical folder has no FixMatch script of its
own; this is its UniMatch step without the second strong view and the feature-perturbation branch.

Per iteration:

1. student forwards (train mode) of the labelled batch and of the weak unlabelled batch; the labelled logits give
   the supervised term, the unlabelled ones, detached, the pseudo-label (argmax) and confidence (max softmax). The
   references run both in one ``cat(labelled, weak unlabelled)`` forward (``joint_forward=True``); by default we
   run them as two forwards, so batch-norm statistics never mix the two sets (see below);
2. strong view of the unlabelled batch (``StrongAugment``, photometric), with a CutMix box (p 0.5, area 2–40 %,
   aspect 0.3–3.3) whose inside comes from the mix partner's strong view; inside the box the pseudo-label and
   confidence come from the partner's prediction too;
3. unsupervised loss on the student's prediction of the mixed strong view, ignoring pixels with confidence
   ``< 0.95``: Dice (medical variant, default) or CE (``unsup_loss="ce"``, divided by the number of pixels);
4. total ``(L_sup + L_unsup) / 2``.

Differences from the reference (the reasons and measurements: ``docs/methods.md``, "FixMatch / UniMatch"): the
labelled and unlabelled batches are forwarded separately unless ``joint_forward=True``; the mix partner is the
previous image of the same batch (``torch.roll``), so its pseudo-label is the same train-mode prediction; the
strong view is ``StrongAugment`` instead of torchvision colour jitter + blur.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medsemiseg.losses import unsupervised_loss
from medsemiseg.transforms.mixing import cutmix_box_mask, mix

from .base import (
    UNSUP_LOSSES,
    FeatureRequest,
    Method,
    build_strong_augment,
    check_choice,
    check_flag,
    check_probability,
    confidence_and_label,
    features_output,
    label_map,
    partner,
    student_forward,
)
from .registry import FlopFloor, MethodSpec

__all__ = ["FixMatch", "cutmix_strong_view", "METHODS"]


def cutmix_strong_view(
    strong: torch.Tensor, plabel: torch.Tensor, conf: torch.Tensor, p: float
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """CutMix a strong view with its rolled partner: (image, pseudo-label, confidence, box)."""
    box = cutmix_box_mask(strong.shape[0], strong.shape[2:], p=p, device=strong.device)
    return (
        mix(strong, partner(strong), box),
        mix(plabel, partner(plabel), box),
        mix(conf, partner(conf), box),
        box,
    )


class FixMatch(Method):
    """FixMatch (weak -> strong consistency with a confidence threshold and CutMix).

    Args:
        num_classes: classes including background.
        conf_threshold: pseudo-label confidence threshold (0.95), in ``[0, 1]``.
        cutmix_p: probability of a CutMix box per sample (0.5), in ``[0, 1]``.
        unsup_loss: ``"dice"`` (medical reference, default), ``"ce"`` or ``"ce+dice"``.
        strong_augment: strong-view callable; default ``StrongAugment()``.
        sup_loss: supervised loss (see :class:`~medsemiseg.methods.base.Method`).
        joint_forward: one ``cat(labelled, weak)`` forward as in the references (``True``), or two forwards so that
            batch-norm statistics are computed per set (``False``, default; module docstring says why).
        threshold_mode: ``"fixed"`` (``conf_threshold`` for every class) or ``"classwise"`` (FlexMatch-style per-class
            thresholds, :mod:`.class_balance`); ``threshold_floor``: the lowest class-wise threshold.
    """

    def __init__(
        self,
        num_classes: int,
        conf_threshold: float = 0.95,
        cutmix_p: float = 0.5,
        unsup_loss: str = "dice",
        strong_augment: Callable | None = None,
        sup_loss: Callable | None = None,
        joint_forward: bool = False,
        threshold_mode: str = "fixed",
        threshold_floor: float = 0.5,
    ) -> None:
        super().__init__(num_classes, sup_loss)
        owner = type(self).__name__
        self.joint_forward = check_flag(owner, "joint_forward", joint_forward)
        self.unsup_loss = check_choice(owner, "unsup_loss", unsup_loss, UNSUP_LOSSES)
        self.conf_threshold = check_probability(owner, "conf_threshold", conf_threshold, "a confidence threshold")
        self._setup_class_balance(threshold_mode, self.conf_threshold, threshold_floor=threshold_floor,
                                  **self._class_balance_options())
        self.cutmix_p = check_probability(owner, "cutmix_p", cutmix_p)
        self.strong_augment = build_strong_augment(strong_augment, owner)

    def _student_forwards(
        self, engine: Any, labeled: dict, x_u: torch.Tensor, out: dict, features: FeatureRequest | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Student on the labelled and weak batches: ``(labelled logits, weak logits)``; the asked-for features go
        to ``out``.

        One forward of ``cat(x_l, x_u)`` when ``joint_forward``, else one per batch (the weak one without autograd
        unless ``features`` asks for its map, which a wrapper's loss then trains through).
        """
        need_feats = features is not None
        x_l = labeled["image"]
        label_map(labeled["label"])
        n_l = x_l.shape[0]
        x_u = x_u.to(x_l.dtype)
        if self.joint_forward:
            logits, feats = student_forward(engine.network, torch.cat([x_l, x_u]), need_feats)
            pred_l, pred_u_w = logits[:n_l], logits[n_l:]
            f_l = [f[:n_l] for f in feats] if feats is not None else None
            f_u = [f[n_l:] for f in feats] if feats is not None else None
        else:
            pred_l, f_l = student_forward(engine.network, x_l, need_feats)
            # the weak pass only yields pseudo-labels (detached): no autograd graph unless its features are asked for
            # (BatchNorm statistics and dropout draws are the same either way; it saves the graph's memory)
            with torch.set_grad_enabled(need_feats and torch.is_grad_enabled()):
                pred_u_w, f_u = student_forward(engine.network, x_u, need_feats)
        out.update(features_output(features, (f_l, pred_l), (f_u, pred_u_w)))
        out["pred"] = pred_l
        return pred_l, pred_u_w

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:
        x_u = self._require_unlabeled(unlabeled, "FixMatch")
        out: dict = {}
        pred_l, pred_u_w = self._student_forwards(engine, labeled, x_u, out, features)
        loss_sup = self.supervised_loss(engine, pred_l, labeled["label"])

        conf, plabel = confidence_and_label(pred_u_w)
        self.observe_classes(labeled["label"], conf, plabel, self.conf_threshold)
        with torch.no_grad():
            strong = self.strong_augment(x_u)
        x_s, lab_s, conf_s, _ = cutmix_strong_view(strong, plabel, conf, self.cutmix_p)
        pred_s = engine.network(x_s)
        loss_unsup = unsupervised_loss(self.unsup_loss, pred_s, lab_s, self.confident(conf_s, lab_s, self.conf_threshold))

        loss = (loss_sup + loss_unsup) / 2.0
        mask_ratio = self.confident(conf, plabel, self.conf_threshold).float().mean()
        out.update(loss=loss, loss_sup=loss_sup, loss_unsup=loss_unsup, mask_ratio=mask_ratio)
        return out


METHODS = (
    MethodSpec(
        "fixmatch", FixMatch, "FixMatch with CutMix, confidence threshold 0.95",
        floor=FlopFloor(network={"l": 3, "u": 1 + 3}, text="sup + no-grad fwd (weak u) + fwd+bwd (strong u)"),
        order=20,
    ),
)
