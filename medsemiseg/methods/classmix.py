"""``classmix``: ClassMix (Olsson et al. 2021) with a mean teacher, after ``WilhelmT/ClassMix`` ``trainSSL.py``.

Per iteration:

1. supervised term on the labelled batch (DiceCE by default; ClassMix itself uses CE);
2. the EMA teacher (:class:`~medsemiseg.handlers.EMATeacher`, eval mode, no grad) predicts the weak unlabelled
   batch: soft-max probabilities, confidence ``c`` and argmax pseudo-label ``p``;
3. for every unlabelled image ``A`` a ClassMix mask ``M`` = half of the classes of the teacher's argmax of ``A``
   (:func:`~medsemiseg.transforms.mixing.classmix_mask`); ``B`` is its mix partner (the previous image of the
   batch); mixed image ``M·A + (1-M)·B`` and, with the same mask, mixed pseudo-label and confidence;
4. strong (photometric) augmentation of the mixed batch, student forward;
5. unsupervised CE against the mixed pseudo-label, weighted by the fraction of pixels whose mixed confidence is
   ``>= 0.968`` (ClassMix's ``threshold_uniform`` pixel weight), mean over pixels;
6. total ``L_sup + unsup_weight * ramp(t) * L_unsup``; the teacher is updated after the optimiser step.

ClassMix also flips the mixed batch; our strong view is photometric only, so no label transform is needed.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch

from medsemiseg.handlers.ema import EMATeacher
from medsemiseg.losses import unsupervised_loss
from medsemiseg.transforms.mixing import classmix_mask, mix

from .base import (
    UNSUP_LOSSES,
    FeatureRequest,
    Method,
    add_rampup,
    build_strong_augment,
    check_choice,
    check_int,
    check_probability,
    check_weight,
    confidence_and_label,
    features_output,
    label_map,
    partner,
    student_forward,
)
from .registry import FlopFloor, MethodSpec

__all__ = ["ClassMix", "classmix_unlabeled", "METHODS", "MEAN_TEACHER_FLOOR", "PSEUDO_LABEL_SOURCES"]

#: where the mean-teacher family takes its pseudo-labels (``pseudo_label_source``): the EMA teacher in eval mode (the
#: paper's framework as built here), the EMA teacher in train mode (ClassMix's ``trainSSL.py``), the student's own
#: no-grad weak-view prediction (FixMatch, UniMatch)
PSEUDO_LABEL_SOURCES = ("teacher", "teacher_train_bn", "student")


def classmix_unlabeled(
    x_u: torch.Tensor, conf: torch.Tensor, plabel: torch.Tensor, num_classes: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """ClassMix of a weak unlabelled batch with its rolled partner: (image, pseudo-label, confidence, mask)."""
    m = classmix_mask(plabel, num_classes)
    img = mix(partner(x_u), x_u, m)
    lab = mix(partner(plabel), plabel, m)
    cf = mix(partner(conf), conf, m)
    return img, lab, cf, m


class ClassMix(Method):
    """ClassMix with an EMA teacher.

    Args:
        network: the student (the trainer's network); the EMA teacher is copied from it.
        num_classes: classes including background.
        conf_threshold: confidence defining ClassMix's uniform pixel weight (0.968), in ``[0, 1]``.
        unsup_weight: weight of the unsupervised term (ClassMix: 1.0), ``>= 0``.
        ema_alpha: maximum EMA decay of the teacher (0.99), in ``[0, 1]``.
        rampup_iters: sigmoid ramp-up of the unsupervised weight over this many iterations (0: off, as ClassMix),
            an integer ``>= 0``.
        unsup_loss: ``"ce"`` (ClassMix) or ``"dice"``/``"ce+dice"`` (the scalar weight then multiplies the loss).
        strong_augment: strong-view callable; default ``StrongAugment()``.
        sup_loss: supervised loss (see :class:`~medsemiseg.methods.base.Method`).
        threshold_mode: ``"fixed"`` (``conf_threshold`` for every class) or ``"classwise"`` (FlexMatch-style per-class
            thresholds, :mod:`.class_balance`); ``threshold_floor``: the lowest class-wise threshold.
        pseudo_label_source: which network labels the weak unlabelled batch (:data:`PSEUDO_LABEL_SOURCES`):
            ``"teacher"`` (default: the EMA teacher in eval mode, BatchNorm on its averaged running statistics),
            ``"teacher_train_bn"`` (the EMA teacher in train mode, BatchNorm on the batch's statistics, as ClassMix's
            ``trainSSL.py`` keeps it) or ``"student"`` (the student's own no-grad prediction in train mode, as
            FixMatch and UniMatch label; no EMA teacher is kept, ``ema_alpha`` is unused).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        num_classes: int,
        conf_threshold: float = 0.968,
        unsup_weight: float = 1.0,
        ema_alpha: float = 0.99,
        rampup_iters: int = 0,
        unsup_loss: str = "ce",
        strong_augment: Callable | None = None,
        sup_loss: Callable | None = None,
        threshold_mode: str = "fixed",
        threshold_floor: float = 0.5,
        pseudo_label_source: str = "teacher",
    ) -> None:
        super().__init__(num_classes, sup_loss)
        owner = type(self).__name__
        self.conf_threshold = check_probability(owner, "conf_threshold", conf_threshold, "a confidence threshold")
        self._setup_class_balance(threshold_mode, self.conf_threshold, threshold_floor=threshold_floor,
                                  **self._class_balance_options())
        self.unsup_weight = check_weight(owner, "unsup_weight", unsup_weight)
        ema_alpha = check_probability(owner, "ema_alpha", ema_alpha, "an EMA decay")
        rampup_iters = check_int(owner, "rampup_iters", rampup_iters, 0, "a number of iterations")
        self.unsup_loss = check_choice(owner, "unsup_loss", unsup_loss, UNSUP_LOSSES)
        self.strong_augment = build_strong_augment(strong_augment, owner)
        self.pseudo_label_source = check_choice(owner, "pseudo_label_source", pseudo_label_source,
                                                PSEUDO_LABEL_SOURCES)
        self.ema: EMATeacher | None = None
        if self.pseudo_label_source != "student":
            self.ema = EMATeacher(network, alpha=ema_alpha)
            self.handlers.append(self.ema)
        add_rampup(self, rampup_iters)

    @property
    def teacher(self) -> torch.nn.Module | None:
        """The EMA teacher network (``None`` with ``pseudo_label_source="student"``)."""
        return None if self.ema is None else self.ema.teacher

    def checkpoint_objects(self) -> dict[str, Any]:
        teacher = {} if self.ema is None else {"teacher": self.ema}
        return {**teacher, **super().checkpoint_objects()}

    def _labeled_step(self, engine: Any, labeled: dict, out: dict, features: FeatureRequest | None) -> torch.Tensor:
        """The supervised term; puts the labelled logits (and, when asked, the features) into ``out``."""
        x_l, y_l = labeled["image"], labeled["label"]
        label_map(y_l)
        pred_l, feats_l = student_forward(engine.network, x_l, need_features=features is not None)
        out.update(features_output(features, (feats_l, pred_l)))
        out["pred"] = pred_l
        return self.supervised_loss(engine, pred_l, y_l)

    def _pseudo_label(
        self, engine: Any, x_u: torch.Tensor, out: dict, features: FeatureRequest | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``(confidence, pseudo-label)`` of the weak batch ``x_u`` from :attr:`pseudo_label_source`.

        The student source runs the student in train mode without autograd, unless a wrapper asked for ``features``:
        then with autograd, and its weak-view features go to ``out["features"]["unlabeled"]`` (the SUFD wrapper
        trains through them instead of running the student once more).
        """
        if self.pseudo_label_source == "student":
            with torch.set_grad_enabled(features is not None and torch.is_grad_enabled()):
                logits, feats = student_forward(engine.network, x_u, need_features=features is not None)
            if features is not None:
                out["features"]["unlabeled"] = features.pick(feats, logits)
            return confidence_and_label(logits)
        return confidence_and_label(self.ema.predict(x_u, train_mode=self.pseudo_label_source == "teacher_train_bn"))

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:
        x_u = self._require_unlabeled(unlabeled, "ClassMix")
        out: dict = {}
        loss_sup = self._labeled_step(engine, labeled, out, features)

        conf, plabel = self._pseudo_label(engine, x_u, out, features)
        self.observe_classes(labeled["label"], conf, plabel, self.conf_threshold)
        img_m, lab_m, conf_m, _ = classmix_unlabeled(x_u, conf, plabel, self.num_classes)
        with torch.no_grad():
            x_s = self.strong_augment(img_m)
        pred_s = engine.network(x_s)
        mask_ratio = self.confident(conf_m, lab_m, self.conf_threshold).float().mean()
        loss_unsup = unsupervised_loss(self.unsup_loss, pred_s, lab_m, mask_ratio)

        loss = loss_sup + self.unsup_weight * self.unsup_scale * loss_unsup
        out.update(loss=loss, loss_sup=loss_sup, loss_unsup=loss_unsup, mask_ratio=mask_ratio,
                   unsup_scale=self.unsup_scale)
        return out


#: a mean-teacher mixing step: the supervised pass, the teacher's no-grad forward of the weak unlabelled batch and
#: the student's trained pass over the mixed batch (SupMix does the same passes)
MEAN_TEACHER_FLOOR = FlopFloor(network={"l": 3, "u": 1 + 3}, text="sup + teacher fwd (u) + fwd+bwd (mixed u)")

METHODS = (
    MethodSpec("classmix", ClassMix, "ClassMix with an EMA mean teacher", floor=MEAN_TEACHER_FLOOR, order=10),
)
