"""Shared pieces of the semi-supervised methods.

A *method* is a small object the :class:`~medsemiseg.engines.SemiSupervisedTrainer` calls once per iteration::

    out = method(engine, labeled, unlabeled)
    # labeled   = {"image": (B_l, C, X, Y) float, "label": (B_l, 1, X, Y)}   on the device
    # unlabeled = {"image": (B_u, C, X, Y) float} (the weak view) or None
    # out = {"loss": total (with grad), "pred": logits of labeled["image"], "loss_sup": ..., ...}

A method that wraps another (SUFD) asks its base step for the student's features explicitly::

    out = base(engine, labeled, unlabeled, features=FeatureRequest("encoder", -1))
    # out["features"] = {"labeled": (B_l, C_f, h, w), "unlabeled": (B_u, C_f, h, w) or None}

``"unlabeled"`` is the weak unlabelled batch's map when the base step runs the student on it (FixMatch, UniMatch;
then with autograd, so a loss on it reaches the network), else ``None`` (ClassMix and SupMix run only the teacher on
the weak view).

Methods hold their hyper-parameters as plain keyword arguments (so a MONAI bundle builds them with ``_target_``)
and list the event handlers they need across iterations (EMA teacher, discriminator step, ramp-up) in
``handlers``; the trainer attaches them. :meth:`Method.checkpoint_objects` names the stateful ones so a bundle
can add them to ``CheckpointSaver``/``CheckpointLoader``.

Conventions shared by all methods (recorded in ``docs/methods.md``):

- the CutMix/ClassMix *mix partner* of unlabelled image ``i`` is image ``i-1`` of the same batch
  (``torch.roll(x, 1, 0)``), the ClassMix convention; FixMatch/UniMatch's reference code draws a second
  unlabelled loader instead;
- strong views are photometric and computed on the device by ``StrongAugment``;
- the supervised term uses, in this order: the method's ``sup_loss``, else the trainer's ``loss_function``, else
  MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``.
"""

from __future__ import annotations

import dataclasses
import math
import numbers
from collections.abc import Callable, Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medsemiseg.losses import default_supervised_loss

__all__ = ["FeatureRequest", "Method", "features_output", "label_map", "student_forward", "partner", "pair_indices",
           "confidence_and_label"]


# -- option checks: every public constructor option of every method is checked with a message naming the method, the
# option, the value and the valid range (a bundle passes them through ``--method_options``, so a wrong value would
# otherwise train silently with, e.g., a threshold no pixel reaches). They draw no random numbers.
def check_real(owner: str, name: str, value: Any, low: float | None = None, high: float | None = None,
               low_open: bool = False, what: str = "a number", high_open: bool = False) -> float:
    """``value`` as a finite float in ``[low, high]`` (open ends with ``low_open`` / ``high_open``); else
    ``TypeError`` (not a number) or ``ValueError`` (out of range), naming owner, option, value and range."""
    if low is not None and high is not None:
        rng = f"in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"
    elif low is not None:
        rng = f"{'>' if low_open else '>='} {low:g}"
    else:
        rng = "(finite)"
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        raise TypeError(f"{owner}({name}={value!r}): must be {what} {rng}, got a {type(value).__name__}.")
    v = float(value)
    ok = (
        math.isfinite(v)
        and (low is None or (v > low if low_open else v >= low))
        and (high is None or (v < high if high_open else v <= high))
    )
    if not ok:
        raise ValueError(f"{owner}({name}={value!r}): must be {what} {rng}.")
    return v


def check_probability(owner: str, name: str, value: Any, what: str = "a probability") -> float:
    """A threshold / probability in ``[0, 1]``."""
    return check_real(owner, name, value, 0.0, 1.0, what=what)


def check_weight(owner: str, name: str, value: Any, what: str = "a weight") -> float:
    """A finite weight ``>= 0`` (0 switches the term off)."""
    return check_real(owner, name, value, 0.0, what=what)


def check_int(owner: str, name: str, value: Any, low: int | None = None, what: str = "an integer") -> int:
    """An integer (a float with an integral value is accepted), ``>= low`` when given."""
    rng = f" >= {low}" if low is not None else ""
    if isinstance(value, bool) or not (
        isinstance(value, numbers.Integral) or (isinstance(value, float) and value.is_integer())
    ):
        raise TypeError(f"{owner}({name}={value!r}): must be {what}{rng}, got a {type(value).__name__}.")
    v = int(value)
    if low is not None and v < low:
        raise ValueError(f"{owner}({name}={value!r}): must be {what}{rng}.")
    return v


def check_flag(owner: str, name: str, value: Any) -> bool:
    """``True``/``False`` (or 1/0); a string such as ``'false'`` is refused instead of being read as true."""
    if isinstance(value, bool) or (isinstance(value, numbers.Integral) and int(value) in (0, 1)):
        return bool(value)
    raise TypeError(f"{owner}({name}={value!r}): must be True or False.")


def check_choice(owner: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """One of ``choices`` (exact strings)."""
    if not isinstance(value, str) or value not in choices:
        raise ValueError(f"{owner}({name}={value!r}): must be one of {', '.join(repr(c) for c in choices)}.")
    return value


UNSUP_LOSSES = ("ce", "dice", "ce+dice")


def label_map(label: torch.Tensor) -> torch.Tensor:
    """``(B, 1, X, Y)`` (or ``(B, X, Y)``) label -> ``(B, X, Y)`` long."""
    if label.ndim == 4 and label.shape[1] == 1:
        label = label[:, 0]
    if label.ndim != 3:
        raise ValueError(f"labels must be (B, 1, X, Y) or (B, X, Y), got {tuple(label.shape)}.")
    return label.long()


def partner(x: torch.Tensor) -> torch.Tensor:
    """The mix partner of every sample: the previous sample of the batch (``torch.roll(x, 1, dims=0)``).

    A batch of one would be its own partner, which makes ClassMix the identity and CutMix paste an image onto
    itself: training would run but the mixing would silently do nothing, so that is refused."""
    if x.shape[0] < 2:
        raise ValueError(
            f"ClassMix/CutMix mix each unlabelled image with another image of its batch, but the unlabelled batch "
            f"holds {x.shape[0]}: set unlabeled_batch_size to 2 or more (the bundles' default is 4)."
        )
    return torch.roll(x, shifts=1, dims=0)


def pair_indices(n_unlabeled: int, n_labeled: int, mode: str = "random", device: Any = None) -> torch.Tensor:
    """Which labelled sample each unlabelled sample is paired with (SupMix).

    ``"random"``: a random permutation of the labelled batch, cycled if the unlabelled batch is larger;
    ``"cycle"``: ``arange(n_unlabeled) % n_labeled``.
    """
    base = torch.arange(n_unlabeled, device=device) % n_labeled
    if mode == "cycle":
        return base
    if mode == "random":
        return torch.randperm(n_labeled, device=device)[base]
    raise ValueError(f"labeled pairing must be 'random' or 'cycle', got {mode!r}.")


@torch.no_grad()
def confidence_and_label(logits: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Max softmax probability and argmax class ``(B, X, Y)`` each, computed in float32."""
    conf, lab = torch.softmax(logits.detach().float(), dim=1).max(dim=1)
    return conf, lab


def student_forward(
    network: torch.nn.Module, x: torch.Tensor, need_features: bool = False
) -> tuple[torch.Tensor, list[torch.Tensor] | None]:
    """Logits of ``network`` on ``x`` and, when asked (or free), its encoder features.

    Networks that follow the package contract (``encode``/``decode``) always go through them, so one forward pass
    serves both the logits and the features; any other ``nn.Module`` is called plainly.
    """
    if hasattr(network, "encode") and hasattr(network, "decode"):
        feats = network.encode(x)
        return network.decode(feats, x.shape[2:]), feats
    if need_features:
        raise TypeError(
            f"{type(network).__name__} has no encode()/decode(); methods that need encoder features "
            "(UniMatch's feature perturbation, SUFD) need a medsemiseg.networks network (UNet, DeepLabV3Plus)."
        )
    return network(x), None


@dataclasses.dataclass(frozen=True)
class FeatureRequest:
    """Which student feature map a wrapping method asks a base step to return in ``out["features"]``.

    Args:
        source: ``"encoder"`` (``network.encode(x)[index]``) or ``"prediction"`` (the soft-max of the logits).
        index: the encoder level for ``"encoder"`` (-1: the deepest).
    """

    source: str = "encoder"
    index: int = -1

    def pick(self, feats: Sequence[torch.Tensor] | None, logits: torch.Tensor | None) -> torch.Tensor | None:
        """The requested map from one student forward's encoder features and logits (``None`` if it has none)."""
        if self.source == "prediction":
            return torch.softmax(logits.float(), dim=1) if logits is not None else None
        return feats[self.index] if feats is not None else None


def features_output(
    request: FeatureRequest | None,
    labeled: tuple[Sequence[torch.Tensor] | None, torch.Tensor | None],
    unlabeled: tuple[Sequence[torch.Tensor] | None, torch.Tensor | None] | None = None,
) -> dict:
    """``{"features": {"labeled": ..., "unlabeled": ...}}`` for a base step's output when ``request`` is given (each
    from a ``(encoder features, logits)`` pair of a student forward; ``unlabeled`` ``None`` when the step has no
    student forward of the weak view), else ``{}``."""
    if request is None:
        return {}
    return {"features": {"labeled": request.pick(*labeled),
                         "unlabeled": request.pick(*unlabeled) if unlabeled is not None else None}}


class Method:
    """Base class: supervised loss, handlers, checkpoint objects.

    Args:
        num_classes: classes including background.
        sup_loss: loss for the labelled batch, ``sup_loss(logits, label (B,1,X,Y))``; ``None`` -> the trainer's
            ``loss_function`` or, when that is ``None`` too, MONAI ``DiceCELoss(to_onehot_y=True, softmax=True)``.
    """

    #: whether the trainer must be given an unlabelled loader
    requires_unlabeled: bool = True

    def __init__(self, num_classes: int, sup_loss: Callable | None = None) -> None:
        owner = type(self).__name__
        if check_int(owner, "num_classes", num_classes) < 2:
            raise ValueError(f"{type(self).__name__}(num_classes={num_classes}): need at least 2 (background + 1).")
        if sup_loss is not None and not callable(sup_loss):
            raise TypeError(
                f"{owner}(sup_loss={sup_loss!r}): must be a callable loss(logits, label) or None, "
                f"got a {type(sup_loss).__name__}."
            )
        self.num_classes = int(num_classes)
        self.sup_loss = sup_loss
        self._default_sup_loss: Callable | None = None
        self.handlers: list = []
        self.class_balance = None  # :class:`~.class_balance.ClassBalance` when a class-aware option is on

    def _setup_class_balance(self, threshold_mode: str, tau: float, adaptive: bool = False,
                             adaptive_tolerance: float = 0.9, threshold_floor: float = 0.5) -> None:
        """``threshold_mode`` (``"fixed"``: every pixel against ``tau``; ``"classwise"``: FlexMatch-style
        thresholds per class) and adaptive SupMix both need the running class statistics of
        :mod:`.class_balance`; they are kept (and checkpointed, and logged every epoch) only when one is on."""
        from .class_balance import THRESHOLD_MODES, ClassBalance, ClassBalanceLogger

        owner = type(self).__name__
        self.threshold_mode = check_choice(owner, "threshold_mode", threshold_mode, THRESHOLD_MODES)
        if self.threshold_mode == "classwise" or adaptive:
            tolerance = check_real(owner, "adaptive_tolerance", adaptive_tolerance, 0.0, 1.0)
            floor = check_real(owner, "threshold_floor", threshold_floor, 0.0, tau)
            self.class_balance = ClassBalance(self.num_classes, tau, floor=floor, tolerance=tolerance)
            self.handlers.append(ClassBalanceLogger(self.class_balance, self.threshold_mode == "classwise", adaptive))

    def _class_balance_options(self) -> dict[str, Any]:
        """Further :meth:`_setup_class_balance` options of a subclass (SupMix's adaptive class choice)."""
        return {}

    def confident(self, conf: torch.Tensor, plabel: torch.Tensor, tau: float) -> torch.Tensor:
        """Which pseudo-labelled pixels count: ``conf >= tau`` or, with ``threshold_mode="classwise"``, ``conf`` at
        least its class's threshold."""
        if self.class_balance is not None and self.threshold_mode == "classwise":
            return self.class_balance.confident(conf, plabel)
        return conf >= tau

    def observe_classes(self, label: torch.Tensor, conf: torch.Tensor, plabel: torch.Tensor, tau: float) -> None:
        """Feed one iteration's labelled ground truth and weak-view pseudo-labels to the class statistics (no-op
        without a class-aware option)."""
        if self.class_balance is None:
            return
        self.class_balance.observe_labels(label)
        self.class_balance.observe_pseudo_labels(plabel, self.confident(conf, plabel, tau), conf)

    # -- pieces used by subclasses ------------------------------------------------------------------
    def supervised_loss(self, engine: Any, pred: torch.Tensor, label: torch.Tensor) -> torch.Tensor:
        fn = self.sup_loss
        if fn is None:
            fn = getattr(engine, "loss_function", None)
        if fn is None:
            if self._default_sup_loss is None:
                self._default_sup_loss = default_supervised_loss()
            fn = self._default_sup_loss
        if label.ndim == pred.ndim - 1:
            label = label.unsqueeze(1)
        return fn(pred.float(), label).mean()

    @staticmethod
    def _require_unlabeled(unlabeled: dict | None, name: str) -> torch.Tensor:
        if unlabeled is None or "image" not in unlabeled:
            raise ValueError(f"{name} needs an unlabelled batch (dict with 'image'); the trainer got none.")
        return unlabeled["image"]

    def checkpoint_objects(self) -> dict[str, Any]:
        """Stateful pieces to add to ``CheckpointSaver(save_dict=...)``/``CheckpointLoader(load_dict=...)``."""
        return {} if self.class_balance is None else {"class_balance": self.class_balance}

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:  # pragma: no cover - abstract
        """One training step: the output dict of the module docstring; with ``features``, also ``out["features"]``."""
        raise NotImplementedError


def dropout_features(feats: Sequence[torch.Tensor], p: float) -> list[torch.Tensor]:
    """UniMatch's feature perturbation: ``Dropout2d(p)`` on every encoder level (always on, as in training)."""
    return [F.dropout2d(f, p=p, training=True) for f in feats]


def build_strong_augment(strong_augment: Callable | None, owner: str = "") -> Callable:
    """The strong-view callable ``(B, C, X, Y) -> (B, C, X, Y)``: the given one, or ``StrongAugment()``.

    Pass ``strong_augment=torch.nn.Identity()`` (or ``lambda x: x``) to switch strong views off.
    """
    if strong_augment is not None:
        if not callable(strong_augment):
            raise TypeError(
                f"{owner or 'method'}(strong_augment={strong_augment!r}): must be callable (images -> images) or "
                f"None, got a {type(strong_augment).__name__}."
            )
        return strong_augment
    from medsemiseg.transforms.views import StrongAugment

    return StrongAugment()


def add_rampup(method: Method, rampup_iters: int, shape: str = "sigmoid") -> None:
    """Give ``method`` an ``unsup_scale`` attribute (1.0) and, when ``rampup_iters > 0``, a ``RampUp`` handler."""
    from medsemiseg.handlers.ramp import RampUp

    method.unsup_scale = 1.0
    if int(rampup_iters) > 0:
        method.unsup_scale = 0.0
        method.handlers.append(RampUp(method, int(rampup_iters), 1.0, attr="unsup_scale", shape=shape))
