"""``unimatch``: UniMatch, as in ``LiheYoung/UniMatch`` ``more-scenarios/medical/unimatch.py``.

FixMatch plus (a) two strong views, each with its own CutMix box, and (b) a feature-perturbation branch: the
decoder run on the weak view's encoder features passed through ``Dropout2d(0.5)`` (on every encoder level, as the
medical UNet does). As in the reference, the weak view's clean and perturbed features are decoded in one batch (so
decoder batch-norm statistics see both); the labelled batch has its own forward unless ``joint_forward`` (see
:mod:`.fixmatch` for why), and the three unlabelled terms use the weak prediction's pseudo-label with the
0.95 confidence mask. Loss ``(L_sup + 0.25 L_s1 + 0.25 L_s2 + 0.5 L_fp) / 2``; unlabelled terms Dice by default
(medical variant), CE optional. Differences from the reference are those of :mod:`.fixmatch`.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from medsemiseg.losses import unsupervised_loss

from .base import (
    FeatureRequest,
    check_probability,
    check_weight,
    confidence_and_label,
    dropout_features,
    features_output,
    label_map,
)
from .fixmatch import FixMatch, cutmix_strong_view
from .registry import FlopFloor, MethodSpec

__all__ = ["UniMatch", "METHODS"]


class UniMatch(FixMatch):
    """UniMatch (dual strong views + feature perturbation).

    Args:
        num_classes: classes including background.
        conf_threshold: pseudo-label confidence threshold (0.95).
        cutmix_p: probability of a CutMix box per sample and view (0.5).
        fp_dropout: ``Dropout2d`` probability of the feature perturbation (0.5), in ``[0, 1]``.
        loss_weights: weights ``>= 0`` of ``(L_s1, L_s2, L_fp)`` (0.25, 0.25, 0.5); the total is halved as in the
            reference.
        unsup_loss: ``"dice"`` (default), ``"ce"`` or ``"ce+dice"``.
        strong_augment, sup_loss, joint_forward, threshold_mode, threshold_floor: as :class:`~.fixmatch.FixMatch`.
    """

    def __init__(
        self,
        num_classes: int,
        conf_threshold: float = 0.95,
        cutmix_p: float = 0.5,
        fp_dropout: float = 0.5,
        loss_weights: Sequence[float] = (0.25, 0.25, 0.5),
        unsup_loss: str = "dice",
        strong_augment: Callable | None = None,
        sup_loss: Callable | None = None,
        joint_forward: bool = False,
        threshold_mode: str = "fixed",
        threshold_floor: float = 0.5,
    ) -> None:
        super().__init__(num_classes, conf_threshold, cutmix_p, unsup_loss, strong_augment, sup_loss, joint_forward,
                         threshold_mode, threshold_floor)
        owner = type(self).__name__
        bad_weights = ValueError(
            f"{owner}(loss_weights={loss_weights!r}): needs three weights >= 0 (s1, s2, fp), e.g. (0.25, 0.25, 0.5)."
        )
        if isinstance(loss_weights, (str, bytes)) or not isinstance(loss_weights, Sequence) or len(loss_weights) != 3:
            raise bad_weights
        self.fp_dropout = check_probability(owner, "fp_dropout", fp_dropout, "a dropout probability")
        try:
            self.loss_weights = tuple(check_weight(owner, "loss_weights", w) for w in loss_weights)
        except (TypeError, ValueError):
            raise bad_weights from None

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:
        x_u, net = self._unlabeled_and_network(engine, unlabeled)
        out: dict = {}
        x_l = labeled["image"]
        label_map(labeled["label"])
        n_l, n_u = x_l.shape[0], x_u.shape[0]
        size = x_l.shape[2:]
        if self.joint_forward:  # the reference: labelled + weak + perturbed weak through one decoder batch
            feats = net.encode(torch.cat([x_l, x_u.to(x_l.dtype)]))
            feats_fp = dropout_features([f[n_l:] for f in feats], self.fp_dropout)
            logits_all = net.decode([torch.cat([f, g]) for f, g in zip(feats, feats_fp)], size)
            logits, pred_fp = logits_all[: n_l + n_u], logits_all[n_l + n_u :]
            pred_l, pred_u_w = logits[:n_l], logits[n_l:]
            feats_l, feats_u = [f[:n_l] for f in feats], [f[n_l:] for f in feats]
        else:  # labelled batch alone; weak + perturbed weak together
            feats_l = net.encode(x_l)
            pred_l = net.decode(feats_l, size)
            feats_u = net.encode(x_u.to(x_l.dtype))
            feats_fp = dropout_features(feats_u, self.fp_dropout)
            pred_u_w, pred_fp = net.decode([torch.cat([f, g]) for f, g in zip(feats_u, feats_fp)], size).chunk(2)
        out.update(features_output(features, (feats_l, pred_l), (feats_u, pred_u_w)))
        out["pred"] = pred_l
        loss_sup = self.supervised_loss(engine, pred_l, labeled["label"])

        conf, plabel = confidence_and_label(pred_u_w)
        self.observe_classes(labeled["label"], conf, plabel, self.conf_threshold)
        with torch.no_grad():
            s1 = self.strong_augment(x_u)
            s2 = self.strong_augment(x_u)
        x_s1, lab1, conf1, _ = cutmix_strong_view(s1, plabel, conf, self.cutmix_p)
        x_s2, lab2, conf2, _ = cutmix_strong_view(s2, plabel, conf, self.cutmix_p)
        pred_s1, pred_s2 = net(torch.cat([x_s1, x_s2])).chunk(2)

        thr = self.conf_threshold
        confident = self.confident(conf, plabel, thr)
        loss_s1 = unsupervised_loss(self.unsup_loss, pred_s1, lab1, self.confident(conf1, lab1, thr))
        loss_s2 = unsupervised_loss(self.unsup_loss, pred_s2, lab2, self.confident(conf2, lab2, thr))
        loss_fp = unsupervised_loss(self.unsup_loss, pred_fp, plabel, confident)
        return self._total(out, loss_sup, loss_s1, loss_s2, loss_fp, mask_ratio=confident.float().mean())

    def _unlabeled_and_network(self, engine: Any, unlabeled: dict | None) -> tuple[torch.Tensor, Any]:
        """The unlabelled images and ``engine.network``; raises ``ValueError`` without unlabelled images and
        ``TypeError`` for a network without ``encode()``/``decode()`` (feature perturbation needs them)."""
        owner = type(self).__name__
        x_u = self._require_unlabeled(unlabeled, owner)
        net = engine.network
        if not (hasattr(net, "encode") and hasattr(net, "decode")):
            raise TypeError(
                f"{owner} needs a network with encode()/decode() for feature perturbation; {type(net).__name__} "
                "has none (use medsemiseg.networks.UNet or DeepLabV3Plus)."
            )
        return x_u, net

    def _total(self, out: dict, loss_sup: torch.Tensor, loss_s1: torch.Tensor, loss_s2: torch.Tensor,
               loss_fp: torch.Tensor, **logged: Any) -> dict:
        """``out`` with UniMatch's total ``(L_sup + w1 L_s1 + w2 L_s2 + wfp L_fp) / 2``, each term and ``logged``."""
        w1, w2, wfp = self.loss_weights
        loss = (loss_sup + w1 * loss_s1 + w2 * loss_s2 + wfp * loss_fp) / 2.0
        out.update(loss=loss, loss_sup=loss_sup, loss_s1=loss_s1, loss_s2=loss_s2, loss_fp=loss_fp,
                   loss_unsup=(loss_s1 + loss_s2) / 2.0, **logged)
        return out


METHODS = (
    MethodSpec(
        "unimatch", UniMatch, "UniMatch: two strong views and feature perturbation",
        # the weak view's encoder fwd+bwd (3E) + its clean decode without grad (F - E) + the perturbed decode
        # fwd+bwd (3(F - E)) + two strong views fwd+bwd (6F)
        floor=FlopFloor(network={"l": 3, "u": 1 + 3 + 2 * 3}, encoder={"u": 3 - 1 - 3},
                        text="sup + enc fwd+bwd (weak u) + clean dec fwd + FP dec fwd+bwd + 2 fwd+bwd (strong u)"),
        order=30,
    ),
)
