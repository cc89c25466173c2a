"""SUFD — Sup-Unsup Feature Discriminator (Mano, Saito & Hotta), as a component on top of a base method.

Labelled and unlabelled images differ in quality, and so do the feature maps the network computes for them. SUFD
trains a discriminator ``D`` to tell the two apart and the segmentation network, adversarially, to make its
unlabelled features indistinguishable from labelled ones.

Per iteration (``SUFD(base, ...)`` wraps any base method):

1. the base method's step runs with a :class:`~medsemiseg.methods.base.FeatureRequest` and returns, in
   ``out["features"]``, the student's features of the labelled batch and, where its forward passes include one, of
   the weak unlabelled batch (``feats[feature_index]`` of ``network.encode``, default the deepest; or the soft-max
   prediction with ``feature_source="prediction"``). A missing one is computed here with an extra student forward
   (ClassMix/SupMix never run the student on the weak unlabelled view);
2. after ``warmup_iters`` iterations, the adversarial term ``BCEWithLogits(D(f_u), 1)`` (make unlabelled look
   labelled), computed with ``D``'s parameters frozen so the segmentation backward leaves ``D`` untouched, is added
   to the base loss with weight ``adv_weight`` (default 0.001, adversarial-segmentation practice);
3. the detached features go to ``engine.state.method_output`` (``feat_l``, ``feat_u``) where the
   :class:`~medsemiseg.handlers.DiscriminatorStep` handler trains ``D`` (``BCE(D(f_l),1) + BCE(D(f_u),0)``, its own
   Adam optimiser, lr 1e-4, betas (0.9, 0.99)) after the segmentation optimiser step.

``sufd`` is ClassMix + SUFD and ``supmix_sufd`` SupMix + SUFD; ``fixmatch_sufd``, ``unimatch_sufd`` and
``unimatch_supmix_sufd`` are accepted too (:data:`METHODS`).
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from medsemiseg.handlers.discriminator import DiscriminatorStep

from . import registry
from .base import FeatureRequest, Method, check_choice, check_int, check_real, check_weight, student_forward
from .registry import FlopFloor, MethodSpec

__all__ = ["SUFD", "METHODS"]


class _Frozen:
    """Context manager: ``requires_grad=False`` on a module's parameters, restored on exit."""

    def __init__(self, module: torch.nn.Module) -> None:
        self.module = module
        self.saved: list[bool] = []

    def __enter__(self) -> torch.nn.Module:
        self.saved = [p.requires_grad for p in self.module.parameters()]
        self.module.requires_grad_(False)
        return self.module

    def __exit__(self, *exc: Any) -> None:
        for p, flag in zip(self.module.parameters(), self.saved):
            p.requires_grad_(flag)


class SUFD(Method):
    """Add a Sup-Unsup Feature Discriminator to ``base``.

    Args:
        base: the base method (ClassMix, SupMix, FixMatch, UniMatch...); its loss, pred, terms and handlers are kept.
        discriminator: ``FeatureDiscriminator(in_channels=...)`` judging the chosen feature map.
        adv_weight: weight of the adversarial term in the segmentation loss (0.001), ``>= 0`` (0: no adversarial
            term, ``D`` still trains).
        warmup_iters: iterations without the adversarial term (``D`` trains from the start), an integer ``>= 0``.
        feature_index: which ``network.encode`` level to use (-1: the deepest), an integer.
        feature_source: ``"encoder"`` (default) or ``"prediction"`` (soft-max maps, AdvSemiSeg-style).
        d_lr: discriminator learning rate (Adam, 1e-4), ``> 0``.
        d_betas: Adam betas (0.9, 0.99), two numbers in ``[0, 1)``.
        d_optimizer: a ready ``torch.optim.Optimizer`` for ``D`` instead of Adam(d_lr, d_betas).
    """

    def __init__(
        self,
        base: Method,
        discriminator: torch.nn.Module,
        adv_weight: float = 0.001,
        warmup_iters: int = 0,
        feature_index: int = -1,
        feature_source: str = "encoder",
        d_lr: float = 1e-4,
        d_betas: Sequence[float] = (0.9, 0.99),
        d_optimizer: torch.optim.Optimizer | None = None,
    ) -> None:
        if not isinstance(base, Method):
            raise TypeError(f"SUFD(base=...) must be a medsemiseg method, got {type(base).__name__}.")
        if base.requires_unlabeled is False:
            raise ValueError("SUFD needs unlabelled images; its base method must be semi-supervised (not 'supervised').")
        owner = "SUFD"
        check_choice(owner, "feature_source", feature_source, ("encoder", "prediction"))
        if not isinstance(discriminator, torch.nn.Module):
            raise TypeError(
                f"SUFD(discriminator=...): must be a torch.nn.Module, got a {type(discriminator).__name__}."
            )
        adv_weight = check_weight(owner, "adv_weight", adv_weight, "an adversarial weight")
        warmup_iters = check_int(owner, "warmup_iters", warmup_iters, 0, "a number of iterations")
        feature_index = check_int(owner, "feature_index", feature_index, None, "an encoder level index")
        if d_optimizer is None:
            d_lr = check_real(owner, "d_lr", d_lr, 0.0, low_open=True, what="a learning rate")
            bad_betas = ValueError(f"SUFD(d_betas={d_betas!r}): must be two Adam betas in [0, 1), e.g. (0.9, 0.99).")
            if isinstance(d_betas, (str, bytes)) or not isinstance(d_betas, Sequence) or len(d_betas) != 2:
                raise bad_betas
            try:
                d_betas = tuple(check_real(owner, "d_betas", b, 0.0, 1.0, high_open=True) for b in d_betas)
            except (TypeError, ValueError):
                raise bad_betas from None
        elif not isinstance(d_optimizer, torch.optim.Optimizer):
            raise TypeError(
                f"SUFD(d_optimizer={d_optimizer!r}): must be a torch.optim.Optimizer over the discriminator's "
                "parameters, or None (Adam with d_lr, d_betas)."
            )
        super().__init__(base.num_classes, base.sup_loss)
        self.base = base
        self.discriminator = discriminator
        self.adv_weight = adv_weight
        self.warmup_iters = warmup_iters
        self.feature_index = feature_index
        self.feature_source = feature_source
        self.request = FeatureRequest(feature_source, feature_index)
        self.discriminator_step = DiscriminatorStep(discriminator, optimizer=d_optimizer, lr=d_lr, betas=d_betas)
        self.handlers = list(base.handlers) + [self.discriminator_step]

    def checkpoint_objects(self) -> dict[str, Any]:
        return {**self.base.checkpoint_objects(), "sufd": self.discriminator_step}

    def _features(self, network: torch.nn.Module, x: torch.Tensor, grad: bool) -> torch.Tensor:
        with torch.set_grad_enabled(grad):
            if self.feature_source == "prediction":
                logits, _ = student_forward(network, x)
                return torch.softmax(logits.float(), dim=1)
            if not hasattr(network, "encode"):
                raise TypeError(f"SUFD(feature_source='encoder') needs network.encode(); {type(network).__name__} has none.")
            return network.encode(x)[self.feature_index]

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None, features: FeatureRequest | None = None
    ) -> dict:
        if features is not None:
            raise TypeError("SUFD returns no features to a wrapper: it is the outermost method of a step.")
        x_u = self._require_unlabeled(unlabeled, "SUFD")
        out = self.base(engine, labeled, unlabeled, features=self.request)
        net = engine.network
        given = out.pop("features")
        f_l, f_u = given["labeled"], given["unlabeled"]
        if f_l is None:
            f_l = self._features(net, labeled["image"], grad=False)
        if f_u is None:
            f_u = self._features(net, x_u, grad=True)

        d = self.discriminator
        p = next(d.parameters(), None)
        if p is not None and p.device != f_u.device:
            d.to(f_u.device)
        active = engine.state.iteration > self.warmup_iters and self.adv_weight > 0
        if active:
            with _Frozen(d):
                logit_u = d(f_u)
                loss_adv = F.binary_cross_entropy_with_logits(logit_u.float(), torch.ones_like(logit_u, dtype=torch.float32))
            out["loss"] = out["loss"] + self.adv_weight * loss_adv
        else:
            loss_adv = torch.zeros((), device=f_u.device)
        out["loss_adv"] = loss_adv
        out["feat_l"] = f_l.detach()
        out["feat_u"] = f_u.detach()
        return out


#: SUFD's own options, and those of the discriminator it creates
SUFD_OPTIONS = ("adv_weight", "warmup_iters", "feature_index", "feature_source", "d_lr", "d_betas", "d_optimizer")
DISCRIMINATOR_OPTIONS = ("discriminator", "discriminator_kwargs")


def _feature_channels(network: torch.nn.Module, num_classes: int, feature_source: str, feature_index: int) -> int:
    if feature_source == "prediction":
        return num_classes
    if feature_index == -1 and hasattr(network, "feature_channels"):
        return int(network.feature_channels)
    channels = getattr(network, "encoder_channels", None)
    if channels is not None:
        return int(channels[feature_index])
    raise ValueError(
        f"create_method: cannot tell the channels of encoder level {feature_index} of {type(network).__name__} "
        "(it has no feature_channels/encoder_channels); pass discriminator=FeatureDiscriminator(in_channels=...)."
    )


def build_sufd(spec: MethodSpec, network: torch.nn.Module, num_classes: int, options: dict, what: str) -> SUFD:
    """``spec.base`` built with its options, wrapped in :class:`SUFD` with the rest; the discriminator, unless given,
    is a ``FeatureDiscriminator`` on the network's device whose input channels fit the chosen feature map."""
    base_spec = registry.get(str(spec.base))
    base_valid = base_spec.options
    unknown = sorted(k for k in options if k not in (*base_valid, *SUFD_OPTIONS, *DISCRIMINATOR_OPTIONS))
    if unknown:
        raise TypeError(
            f"{what}: unknown option(s) {unknown}; valid options: {base_valid} ({base_spec.cls.__name__}) and "
            f"{list(SUFD_OPTIONS) + list(DISCRIMINATOR_OPTIONS)} (SUFD)."
        )
    sufd_opts = {k: options.pop(k) for k in SUFD_OPTIONS if k in options}
    disc = options.pop("discriminator", None)
    disc_kwargs = options.pop("discriminator_kwargs", None) or {}
    if not isinstance(disc_kwargs, dict):
        raise TypeError(f"SUFD(discriminator_kwargs={disc_kwargs!r}): must be a dict of FeatureDiscriminator arguments.")
    base = base_spec.create(network, num_classes, options, what)
    if disc is None:
        from medsemiseg.networks import FeatureDiscriminator

        source = sufd_opts.get("feature_source", "encoder")
        check_choice("SUFD", "feature_source", source, ("encoder", "prediction"))
        index = check_int("SUFD", "feature_index", sufd_opts.get("feature_index", -1), None, "an encoder level index")
        levels = getattr(network, "encoder_channels", None)
        if source == "encoder" and levels is not None and not -len(levels) <= index < len(levels):
            raise ValueError(
                f"SUFD(feature_index={index}): {type(network).__name__} has {len(levels)} encoder levels; use "
                f"an index in {-len(levels)}..{len(levels) - 1} (-1: the deepest)."
            )
        disc = FeatureDiscriminator(in_channels=_feature_channels(network, num_classes, source, index),
                                    **dict(disc_kwargs))
    param = next(network.parameters(), None)
    if param is not None:
        disc = disc.to(param.device)
    return SUFD(base, disc, **sufd_opts)


def _sufd(name: str, base: str, summary: str, order: int, floor_text: str | None = None,
          aliases: tuple[str, ...] = ()) -> MethodSpec:
    # on a ClassMix / SupMix base the student never sees the weak unlabelled images, so their features need the
    # student's encoder fwd+bwd (3E, the adversarial gradient flows through it); D fwd+bwd on labelled and unlabelled
    # features (its own step, 3G) and D fwd + input-gradient bwd on the unlabelled ones for the adversarial term (2G:
    # D is frozen there, no weight gradients)
    floor = None if floor_text is None else FlopFloor(
        network={"l": 3, "u": 1 + 3}, encoder={"u": 3}, discriminator={"l": 3, "u": 3 + 2}, text=floor_text)
    return MethodSpec(
        name, SUFD, summary, floor=floor, order=order, listed=floor is not None,
        aliases=aliases, base=base, wrapper_options=SUFD_OPTIONS + DISCRIMINATOR_OPTIONS, build=build_sufd,
    )


METHODS = (
    _sufd("sufd", "classmix", "ClassMix + the Sup-Unsup Feature Discriminator", 50,
          "classmix + enc fwd+bwd (weak u) + D fwd+bwd (l, u) + D adv fwd+input-grad bwd (u)",
          aliases=("classmix_sufd",)),
    _sufd("supmix_sufd", "supmix", "SupMix + SUFD, the paper's full method", 60,
          "supmix + enc fwd+bwd (weak u) + D fwd+bwd (l, u) + D adv fwd+input-grad bwd (u)"),
    _sufd("fixmatch_sufd", "fixmatch", "FixMatch + SUFD", 70),
    _sufd("unimatch_sufd", "unimatch", "UniMatch + SUFD", 80),
    _sufd("unimatch_supmix_sufd", "unimatch_supmix", "SupMix inside UniMatch + SUFD", 95),
)
