"""``unimatch_supmix``: SupMix inside UniMatch's framework, this project's combination of the two.

UniMatch (:mod:`.unimatch`) takes its pseudo-labels from the student's own weak-view prediction and trains two strong
views and a feature-perturbation stream against them; SupMix (:mod:`.supmix`) pastes regions of labelled images, cut
out by their ground truth, with their ground-truth labels onto unlabelled images and their pseudo-labels. Neither the
paper nor UniMatch nor SSL4MIS combines them; this method does, per iteration:

1. supervised term on the labelled batch (the student, its own forward);
2. the student's no-grad prediction of the weak unlabelled batch (train mode, as UniMatch) -> pseudo-label ``p_u``
   and confidence ``c_u``;
3. for each of the two strong views, its own SupMix paste: every unlabelled image paired with a labelled one
   (``labeled_pairing``), the classes chosen as SupMix chooses them (``supmix_mode``: the paper's hand-chosen classes,
   ``"all"``, ``"random_half"`` or ``"adaptive"``), pasted into the image and into the target with confidence 1;
   then the strong photometric view of the pasted image and UniMatch's CutMix box with the view's partner (the
   pasted mask follows the box, so a pasted pixel moved by CutMix still carries its ground truth);
4. the feature-perturbation stream decodes ``Dropout2d``-perturbed encoder features of the first view's pasted image
   (before its strong augmentation) against its pasted target;
5. unsupervised terms with the confidence mask, pasted pixels always counting; total
   ``(L_sup + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2`` as UniMatch.

Wrapped by SUFD as ``unimatch_supmix_sufd`` (:mod:`.sufd`). docs/methods.md says why the combination and how it was
measured.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from medsemiseg.losses import unsupervised_loss
from medsemiseg.transforms.mixing import mix

from .base import (
    FeatureRequest,
    confidence_and_label,
    dropout_features,
    features_output,
    label_map,
    partner,
    student_forward,
)
from .fixmatch import cutmix_strong_view
from .registry import FlopFloor, MethodSpec
from .supmix import LabelledPaste, paste_labelled
from .unimatch import UniMatch

__all__ = ["UniMatchSupMix", "METHODS", "pasted_strong_view"]


def pasted_strong_view(
    method: Any, x_u: torch.Tensor, plabel: torch.Tensor, conf: torch.Tensor, labeled: dict
) -> dict[str, torch.Tensor]:
    """One strong view of ``method`` (a :class:`UniMatchSupMix`): SupMix paste, strong augmentation, CutMix.

    Returns ``{"pasted", "pasted_target", "pasted_conf", "pasted_mask"}`` (the paste before augmentation, which the
    feature-perturbation stream reads) and ``{"image", "target", "conf", "mask"}`` (the strong view after CutMix:
    image, target, confidence and which pixels carry pasted ground truth).
    """
    img_m, lab_m, conf_m, paste = paste_labelled(method, x_u, plabel, conf, labeled)
    with torch.no_grad():
        strong = method.strong_augment(img_m)
    x_s, lab_s, conf_s, box = cutmix_strong_view(strong, lab_m, conf_m, method.cutmix_p)
    return {
        "pasted": img_m, "pasted_target": lab_m, "pasted_conf": conf_m, "pasted_mask": paste,
        "image": x_s, "target": lab_s, "conf": conf_s, "mask": mix(paste, partner(paste), box),
    }


class UniMatchSupMix(LabelledPaste, UniMatch):
    """UniMatch with SupMix's paste of labelled ground truth in both strong views and the feature-perturbation stream.

    Args:
        num_classes: classes including background.
        supmix_mode, supmix_classes, include_background, labeled_pairing, adaptive_tolerance: the paste, as
            :class:`~.supmix.SupMix` (``"fixed"`` pastes ``supmix_classes``, the paper's hand-chosen minority class 1
            by default).
        conf_threshold, cutmix_p, fp_dropout, loss_weights, unsup_loss, strong_augment, sup_loss, threshold_mode,
            threshold_floor: as :class:`~.unimatch.UniMatch`.
    """

    def __init__(
        self,
        num_classes: int,
        supmix_mode: str = "fixed",
        supmix_classes: Sequence[int] | None = (1,),
        include_background: bool = False,
        labeled_pairing: str = "random",
        conf_threshold: float = 0.95,
        cutmix_p: float = 0.5,
        fp_dropout: float = 0.5,
        loss_weights: Sequence[float] = (0.25, 0.25, 0.5),
        unsup_loss: str = "dice",
        strong_augment: Callable | None = None,
        sup_loss: Callable | None = None,
        threshold_mode: str = "fixed",
        threshold_floor: float = 0.5,
        adaptive_tolerance: float = 0.9,
    ) -> None:
        owner = self._set_paste_mode(supmix_mode, adaptive_tolerance)
        super().__init__(num_classes, conf_threshold, cutmix_p, fp_dropout, loss_weights, unsup_loss, strong_augment,
                         sup_loss, joint_forward=False, threshold_mode=threshold_mode,
                         threshold_floor=threshold_floor)
        self._set_paste_options(owner, supmix_classes, include_background, labeled_pairing)

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:
        x_u, net = self._unlabeled_and_network(engine, unlabeled)
        out: dict = {}
        x_l = labeled["image"]
        label_map(labeled["label"])
        x_u = x_u.to(x_l.dtype)
        size = x_l.shape[2:]
        feats_l = net.encode(x_l)
        pred_l = net.decode(feats_l, size)
        # the weak pass yields pseudo-labels only (detached); autograd only when a wrapper (SUFD) trains through its
        # features. Train mode: BatchNorm on the weak batch's statistics, as UniMatch's weak prediction.
        with torch.set_grad_enabled(features is not None and torch.is_grad_enabled()):
            pred_u_w, feats_u = student_forward(net, x_u, need_features=features is not None)
        out.update(features_output(features, (feats_l, pred_l), (feats_u, pred_u_w)))
        out["pred"] = pred_l
        loss_sup = self.supervised_loss(engine, pred_l, labeled["label"])

        conf, plabel = confidence_and_label(pred_u_w)
        self.observe_classes(labeled["label"], conf, plabel, self.conf_threshold)
        v1 = pasted_strong_view(self, x_u, plabel, conf, labeled)
        v2 = pasted_strong_view(self, x_u, plabel, conf, labeled)
        pred_fp = net.decode(dropout_features(net.encode(v1["pasted"]), self.fp_dropout), size)
        pred_s1, pred_s2 = net(torch.cat([v1["image"], v2["image"]])).chunk(2)

        thr = self.conf_threshold

        def valid(conf_v: torch.Tensor, lab_v: torch.Tensor, pasted: torch.Tensor) -> torch.Tensor:
            return self.confident(conf_v, lab_v, thr) | pasted  # pasted ground-truth pixels always count

        valid_s1 = valid(v1["conf"], v1["target"], v1["mask"])
        valid_s2 = valid(v2["conf"], v2["target"], v2["mask"])
        valid_fp = valid(v1["pasted_conf"], v1["pasted_target"], v1["pasted_mask"])
        loss_s1 = unsupervised_loss(self.unsup_loss, pred_s1, v1["target"], valid_s1)
        loss_s2 = unsupervised_loss(self.unsup_loss, pred_s2, v2["target"], valid_s2)
        loss_fp = unsupervised_loss(self.unsup_loss, pred_fp, v1["pasted_target"], valid_fp)
        return self._total(
            out, loss_sup, loss_s1, loss_s2, loss_fp,
            mask_ratio=self.confident(conf, plabel, thr).float().mean(),
            paste_ratio=(v1["pasted_mask"].float().mean() + v2["pasted_mask"].float().mean()) / 2.0,
        )


METHODS = (
    MethodSpec(
        "unimatch_supmix", UniMatchSupMix,
        "SupMix inside UniMatch: labelled ground truth pasted into both strong views and the perturbed stream",
        # weak no-grad fwd (F) + the pasted image's encoder and perturbed decoder fwd+bwd (3F) + two strong views
        # fwd+bwd (6F)
        floor=FlopFloor(network={"l": 3, "u": 1 + 3 + 2 * 3},
                        text="sup + no-grad fwd (weak u) + FP enc+dec fwd+bwd (pasted u) + 2 fwd+bwd (strong u)"),
        order=90, aliases=("supmix_unimatch",),
    ),
)
