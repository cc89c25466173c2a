"""``supmix``: Supervised ClassMix (Mano, Saito & Hotta), on ClassMix's mean-teacher pseudo-label framework.

ClassMix pastes *predicted* classes of one unlabelled image onto another, so it may paste wrong labels. SupMix
pastes regions of a **labelled** image, cut out by its **ground truth**, together with their GT labels, onto an
unlabelled image and onto that image's pseudo-label:

1. supervised term on the labelled batch;
2. EMA teacher on the weak unlabelled batch -> pseudo-label ``p_u``, confidence ``c_u``;
3. (option ``with_classmix=True``: first ClassMix the unlabelled batch with its partner, as in :mod:`.classmix`);
4. pair each unlabelled image with a labelled one (random permutation of the labelled batch, cycled), choose the
   classes to paste (:func:`~medsemiseg.transforms.mixing.select_supmix_classes`: ``"fixed"`` hand-chosen minority
   classes as in the paper, ``"all"`` foreground classes, or ``"random_half"``; or ``"adaptive"``: the foreground
   classes whose share of the teacher's confident pseudo-labels falls short of their labelled prior,
   :mod:`.class_balance`) and paste
   (:func:`~medsemiseg.transforms.mixing.supmix_paste`): mixed image, mixed target, confidence 1 on pasted pixels;
5. strong (photometric) view of the mixed batch, student forward;
6. unsupervised loss (CE by default) against the mixed target with a *pixel-wise* confidence mask
   (``conf >= 0.95``; pasted pixels always count), normalised by the number of pixels (as UniMatch);
7. total ``L_sup + unsup_weight * ramp(t) * L_unsup``; teacher EMA-updated after the optimiser step.

The paper text available to us does not say whether ClassMix mixing is kept alongside the paste; its abstract
describes pasting labelled regions "onto unlabeled images and their pseudo-labeled images", which is the default
here (``with_classmix=False``); ``with_classmix=True`` pastes onto ClassMix-mixed images instead.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from medsemiseg.losses import unsupervised_loss
from medsemiseg.transforms.mixing import classes_present, select_supmix_classes, supmix_paste

from .base import FeatureRequest, build_strong_augment, check_choice, check_flag, check_int, label_map, pair_indices
from .classmix import MEAN_TEACHER_FLOOR, ClassMix, classmix_unlabeled
from .registry import MethodSpec

__all__ = ["LabelledPaste", "SupMix", "METHODS", "SUPMIX_MODES", "paste_labelled"]

SUPMIX_MODES = ("fixed", "all", "random_half", "adaptive")


class LabelledPaste:
    """SupMix's paste options on a method: which classes (``supmix_mode`` / ``supmix_classes``, the adaptive choice
    through the method's class statistics), background or not, and how labelled images are paired. A method calls
    :meth:`_set_paste_mode` before its base ``__init__`` (which asks :meth:`_class_balance_options`), then
    :meth:`_set_paste_options`."""

    supmix_mode: str
    adaptive_tolerance: float

    def _set_paste_mode(self, supmix_mode: Any, adaptive_tolerance: float) -> str:
        """Checks and sets ``supmix_mode`` and ``adaptive_tolerance``; returns the owner name for later messages."""
        owner = type(self).__name__
        self.supmix_mode = check_supmix_mode(owner, supmix_mode)
        self.adaptive_tolerance = adaptive_tolerance
        return owner

    def _set_paste_options(self, owner: str, supmix_classes: Any, include_background: Any,
                           labeled_pairing: Any) -> None:
        self.supmix_classes = check_supmix_classes(owner, self.num_classes, self.supmix_mode, supmix_classes)
        self.include_background = check_flag(owner, "include_background", include_background)
        self.labeled_pairing = check_choice(owner, "labeled_pairing", labeled_pairing, ("random", "cycle"))

    def _class_balance_options(self) -> dict[str, Any]:
        return {"adaptive": self.supmix_mode == "adaptive", "adaptive_tolerance": self.adaptive_tolerance}

    def _choose_classes(self, y_lp: torch.Tensor) -> torch.Tensor:
        return choose_classes(self, y_lp)


class SupMix(LabelledPaste, ClassMix):
    """SupMix with an EMA teacher.

    Args:
        network: the student; the EMA teacher is copied from it.
        num_classes: classes including background.
        supmix_mode: ``"fixed"`` (paste ``supmix_classes``), ``"all"``, ``"random_half"`` or ``"adaptive"`` (classes
            chosen from the data during training, :class:`~.class_balance.ClassBalance`; ``supmix_classes`` unused).
        adaptive_tolerance: ``"adaptive"`` pastes classes whose confident pseudo-label share is below this multiple
            of their prior (0.9).
        supmix_classes: class ids for ``"fixed"`` (paper: ``[1]`` = ground-glass on COVID-19, ``[1]`` = vessel on
            CHASE_DB1).
        include_background: for ``"all"``/``"random_half"``, whether background may be pasted.
        conf_threshold: pixel-wise confidence threshold on the mixed confidence (0.95).
        with_classmix: ClassMix the unlabelled batch first and paste onto the result.
        labeled_pairing: ``"random"`` (a random permutation of the labelled batch, cycled) or ``"cycle"``.
        unsup_weight, ema_alpha, rampup_iters, strong_augment, sup_loss: as :class:`~.classmix.ClassMix`.
        unsup_loss: ``"ce"`` (default), ``"dice"`` or ``"ce+dice"``, all with the pixel-wise confidence mask.
        threshold_mode, threshold_floor: as :class:`~.classmix.ClassMix` (``"classwise"``: per-class thresholds).
        pseudo_label_source: ``"teacher"`` (default), ``"teacher_train_bn"`` or ``"student"``, as
            :class:`~.classmix.ClassMix`.
    """

    def __init__(
        self,
        network: torch.nn.Module,
        num_classes: int,
        supmix_mode: str = "fixed",
        supmix_classes: Sequence[int] | None = (1,),
        include_background: bool = False,
        conf_threshold: float = 0.95,
        with_classmix: bool = False,
        labeled_pairing: str = "random",
        unsup_weight: float = 1.0,
        ema_alpha: float = 0.99,
        rampup_iters: int = 0,
        unsup_loss: str = "ce",
        strong_augment: Callable | None = None,
        sup_loss: Callable | None = None,
        threshold_mode: str = "fixed",
        threshold_floor: float = 0.5,
        adaptive_tolerance: float = 0.9,
        pseudo_label_source: str = "teacher",
    ) -> None:
        owner = self._set_paste_mode(supmix_mode, adaptive_tolerance)
        super().__init__(
            network,
            num_classes,
            conf_threshold=conf_threshold,
            unsup_weight=unsup_weight,
            ema_alpha=ema_alpha,
            rampup_iters=rampup_iters,
            unsup_loss=unsup_loss,
            strong_augment=build_strong_augment(strong_augment, type(self).__name__),
            sup_loss=sup_loss,
            threshold_mode=threshold_mode,
            threshold_floor=threshold_floor,
            pseudo_label_source=pseudo_label_source,
        )
        self._set_paste_options(owner, supmix_classes, include_background, labeled_pairing)
        self.with_classmix = check_flag(owner, "with_classmix", with_classmix)

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:
        x_u = self._require_unlabeled(unlabeled, "SupMix")
        out: dict = {}
        loss_sup = self._labeled_step(engine, labeled, out, features)

        conf, plabel = self._pseudo_label(engine, x_u, out, features)
        self.observe_classes(labeled["label"], conf, plabel, self.conf_threshold)
        img_u, lab_u, conf_u = x_u, plabel, conf
        if self.with_classmix:
            img_u, lab_u, conf_u, _ = classmix_unlabeled(x_u, conf, plabel, self.num_classes)

        img_m, lab_m, conf_m, paste = paste_labelled(self, img_u, lab_u, conf_u, labeled)
        with torch.no_grad():
            x_s = self.strong_augment(img_m)
        pred_s = engine.network(x_s)
        valid = self.confident(conf_m, lab_m, self.conf_threshold) | paste  # pasted GT pixels always count
        loss_unsup = unsupervised_loss(self.unsup_loss, pred_s, lab_m, valid)

        loss = loss_sup + self.unsup_weight * self.unsup_scale * loss_unsup
        out.update(
            loss=loss,
            loss_sup=loss_sup,
            loss_unsup=loss_unsup,
            mask_ratio=valid.float().mean(),
            paste_ratio=paste.float().mean(),
            unsup_scale=self.unsup_scale,
        )
        return out


def check_supmix_mode(owner: str, supmix_mode: Any) -> str:
    """``supmix_mode`` lower-cased, one of :data:`SUPMIX_MODES`; else ``ValueError`` naming ``owner``."""
    mode = str(supmix_mode).lower()
    if mode not in SUPMIX_MODES:
        raise ValueError(f"{owner}(supmix_mode={supmix_mode!r}): must be one of {', '.join(map(repr, SUPMIX_MODES))}.")
    return mode


def check_supmix_classes(owner: str, num_classes: int, mode: str, supmix_classes: Any) -> list[int] | None:
    """The class ids ``supmix_classes`` names (``None`` for none), checked against ``0..num_classes - 1``;
    ``"fixed"`` needs at least one. ``TypeError`` / ``ValueError`` name ``owner``, the value and the valid range."""
    if supmix_classes is not None and (
        isinstance(supmix_classes, (str, bytes)) or not isinstance(supmix_classes, (list, tuple))
    ):
        raise TypeError(
            f"{owner}(supmix_classes={supmix_classes!r}): must be a list of class ids in "
            f"0..{num_classes - 1}, e.g. [1]."
        )
    try:
        classes = [check_int(owner, "supmix_classes", c, None, "a class id") for c in supmix_classes or ()]
    except TypeError:
        raise TypeError(
            f"{owner}(supmix_classes={supmix_classes!r}): must be a list of class ids (integers) in "
            f"0..{num_classes - 1}, e.g. [1]."
        ) from None
    bad = [c for c in classes if not 0 <= c < num_classes]
    if bad:
        raise ValueError(
            f"{owner}(supmix_classes={list(supmix_classes)}): {bad} outside the valid range 0..{num_classes - 1}."
        )
    if mode == "fixed" and not classes:
        raise ValueError(f"{owner}(supmix_mode='fixed') needs supmix_classes=[...], e.g. [1].")
    return classes or None


def choose_classes(method: Any, y_lp: torch.Tensor) -> torch.Tensor:
    """Bool ``(B, num_classes)``: the ground-truth classes ``method`` pastes from each labelled image ``y_lp``
    (``method.supmix_mode``: the data-driven choice of its ``class_balance`` for ``"adaptive"``, else
    :func:`~medsemiseg.transforms.mixing.select_supmix_classes`)."""
    if method.supmix_mode == "adaptive":
        return method.class_balance.choose(classes_present(y_lp, method.num_classes))
    return select_supmix_classes(y_lp, method.num_classes, method.supmix_mode, method.supmix_classes,
                                 method.include_background)


def paste_labelled(
    method: Any, image: torch.Tensor, target: torch.Tensor, confidence: torch.Tensor, labeled: dict
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """SupMix's paste of one unlabelled batch: pair each image with a labelled one (``method.labeled_pairing``),
    choose the classes (:func:`choose_classes`) and paste them with their ground truth
    (:func:`~medsemiseg.transforms.mixing.supmix_paste`). Returns ``(image, target, confidence, pasted mask)``."""
    x_l, y_l = labeled["image"], label_map(labeled["label"])
    idx = pair_indices(image.shape[0], x_l.shape[0], method.labeled_pairing, device=x_l.device)
    x_lp, y_lp = x_l[idx], y_l[idx]
    chosen = method._choose_classes(y_lp)
    return supmix_paste(image, target, confidence, x_lp.to(image.dtype), y_lp, chosen)


METHODS = (
    MethodSpec(
        "supmix", SupMix, "the paper's SupMix: labelled regions pasted by their ground truth, on the mean teacher",
        floor=MEAN_TEACHER_FLOOR, order=40,
    ),
)
