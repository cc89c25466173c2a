"""Semi-supervised methods: one module per method, each a callable the trainer runs once per iteration.

=================  ======================================================================================
name               what it is
=================  ======================================================================================
``supervised``     labelled images only (lower bound; full-label upper bound when all images are labelled)
``classmix``       ClassMix with an EMA mean teacher (:class:`ClassMix`)
``fixmatch``       FixMatch with CutMix, threshold 0.95 (:class:`FixMatch`)
``unimatch``       UniMatch: two strong views + feature perturbation (:class:`UniMatch`)
``supmix``         Supervised ClassMix, the paper's SupMix, on the mean-teacher framework (:class:`SupMix`)
``sufd``           ClassMix + Sup-Unsup Feature Discriminator (:class:`SUFD`)
``supmix_sufd``    SupMix + SUFD, the paper's full method (also spelled ``supmix+sufd``)
=================  ======================================================================================

``fixmatch_sufd`` and ``unimatch_sufd`` are accepted too. :func:`create_method` builds any of them by name (what
the bundles' ``--method`` override uses); the classes can also be built directly with ``_target_``.
"""

from __future__ import annotations

import inspect
from typing import Any

import torch

from .base import Method, check_choice, check_int
from .classmix import ClassMix
from .fixmatch import FixMatch
from .sufd import SUFD
from .supervised import Supervised
from .supmix import SupMix
from .unimatch import UniMatch

__all__ = [
    "Method",
    "Supervised",
    "ClassMix",
    "FixMatch",
    "UniMatch",
    "SupMix",
    "SUFD",
    "create_method",
    "METHOD_NAMES",
    "canonical_method_name",
    "requires_unlabeled",
]

METHOD_NAMES = ("supervised", "classmix", "fixmatch", "unimatch", "supmix", "sufd", "supmix_sufd")
_BASES = {"supervised": Supervised, "classmix": ClassMix, "fixmatch": FixMatch, "unimatch": UniMatch, "supmix": SupMix}
_SUFD_BASES = {"sufd": "classmix", "classmix_sufd": "classmix", "supmix_sufd": "supmix", "fixmatch_sufd": "fixmatch", "unimatch_sufd": "unimatch"}
_SUFD_OPTIONS = ("adv_weight", "warmup_iters", "feature_index", "feature_source", "d_lr", "d_betas", "d_optimizer")
_DISC_OPTIONS = ("discriminator", "discriminator_kwargs")


def canonical_method_name(name: str) -> str:
    """``"SupMix+SUFD"`` -> ``"supmix_sufd"``; raises ``ValueError`` listing the valid names."""
    key = str(name).strip().lower().replace("+", "_").replace("-", "_").replace(" ", "")
    if key in _BASES or key in _SUFD_BASES:
        return key
    raise ValueError(
        f"unknown method {name!r}; valid names: {', '.join(METHOD_NAMES)} "
        "(also 'supmix+sufd', 'classmix_sufd', 'fixmatch_sufd', 'unimatch_sufd')."
    )


def requires_unlabeled(name: str) -> bool:
    """Whether the method ``name`` draws an unlabelled batch every step (every method but ``supervised``); a SUFD
    variant follows its base. Known from the class, without building the method."""
    key = canonical_method_name(name)
    return bool(_BASES[_SUFD_BASES.get(key, key)].requires_unlabeled)


def _options_of(cls: type) -> list[str]:
    """The keyword options of a method class (its constructor's parameters but the positional inputs)."""
    params = inspect.signature(cls.__init__).parameters
    return [p for p in params if p not in ("self", "network", "num_classes", "base", "discriminator")]


def _construct(cls: type, args: tuple, options: dict, what: str) -> Any:
    params = inspect.signature(cls.__init__).parameters
    unknown = sorted(k for k in options if k not in params)
    if unknown:
        raise TypeError(f"{what}: unknown option(s) {unknown}; valid options: {_options_of(cls)}.")
    return cls(*args, **options)


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


def create_method(name: str, network: torch.nn.Module, num_classes: int, **options: Any) -> Method:
    """Build a configured method by name.

    Args:
        name: one of ``supervised | classmix | fixmatch | unimatch | supmix | sufd | supmix_sufd`` (or
            ``supmix+sufd``, ``fixmatch_sufd``, ``unimatch_sufd``), case-insensitive.
        network: the segmentation network the trainer trains (already on its device): the EMA teacher is copied
            from it and the discriminator is created on its device with ``in_channels=network.feature_channels``.
        num_classes: classes including background.
        options: keyword arguments of the method's class (e.g. ``conf_threshold``, ``supmix_mode``,
            ``supmix_classes``, ``unsup_loss``, ``strong_augment``, ``sup_loss``); for the SUFD variants also
            ``adv_weight``, ``warmup_iters``, ``feature_index``, ``feature_source``, ``d_lr``, ``d_betas``,
            ``d_optimizer``, and ``discriminator`` (a ready module) or ``discriminator_kwargs`` (for
            ``FeatureDiscriminator``). Unknown options raise ``TypeError`` listing the valid ones (for a SUFD
            variant, the base method's and SUFD's); an option of the wrong type or out of its range raises
            ``TypeError`` / ``ValueError`` naming ``name``, the class, the option, the value and the valid range.
    """
    try:
        return _create_method(name, network, num_classes, options)
    except (ValueError, TypeError) as err:
        if type(err) not in (ValueError, TypeError) or str(err).startswith(("create_method(", "unknown method ")):
            raise  # already names the method (an unknown name says so itself)
        # the same error with the user's method name in front (kept as the root of the chain, which the bundle CLI
        # prints last), with the original traceback
        raise type(err)(f"create_method({name!r}): {err}").with_traceback(err.__traceback__) from None


def _create_method(name: str, network: torch.nn.Module, num_classes: int, options: dict) -> Method:
    key = canonical_method_name(name)
    options = dict(options)
    if key in _SUFD_BASES:
        base_cls = _BASES[_SUFD_BASES[key]]
        base_valid = _options_of(base_cls)
        unknown = sorted(k for k in options if k not in (*base_valid, *_SUFD_OPTIONS, *_DISC_OPTIONS))
        if unknown:
            raise TypeError(
                f"create_method({name!r}): unknown option(s) {unknown}; valid options: {base_valid} "
                f"({base_cls.__name__}) and {list(_SUFD_OPTIONS) + list(_DISC_OPTIONS)} (SUFD)."
            )
        sufd_opts = {k: options.pop(k) for k in _SUFD_OPTIONS if k in options}
        disc = options.pop("discriminator", None)
        disc_kwargs = options.pop("discriminator_kwargs", None) or {}
        if not isinstance(disc_kwargs, dict):
            raise TypeError(
                f"SUFD(discriminator_kwargs={disc_kwargs!r}): must be a dict of FeatureDiscriminator arguments."
            )
        disc_kwargs = dict(disc_kwargs)
        base_key = _SUFD_BASES[key]
        base = _create_method(base_key, network, num_classes, options)
        if disc is None:
            from medsemiseg.networks import FeatureDiscriminator

            source = sufd_opts.get("feature_source", "encoder")
            check_choice("SUFD", "feature_source", source, ("encoder", "prediction"))
            index = sufd_opts.get("feature_index", -1)
            index = check_int("SUFD", "feature_index", index, None, "an encoder level index")
            levels = getattr(network, "encoder_channels", None)
            if source == "encoder" and levels is not None and not -len(levels) <= index < len(levels):
                raise ValueError(
                    f"SUFD(feature_index={index}): {type(network).__name__} has {len(levels)} encoder levels; use "
                    f"an index in {-len(levels)}..{len(levels) - 1} (-1: the deepest)."
                )
            in_ch = _feature_channels(network, num_classes, source, index)
            disc = FeatureDiscriminator(in_channels=in_ch, **disc_kwargs)
        param = next(network.parameters(), None)
        if param is not None:
            disc = disc.to(param.device)
        return _construct(SUFD, (base, disc), sufd_opts, f"create_method({name!r})")
    stray = [k for k in (*_SUFD_OPTIONS, *_DISC_OPTIONS) if k in options]
    if stray:
        raise TypeError(f"create_method({name!r}): {stray} are SUFD options; use a '*_sufd' method (e.g. 'supmix_sufd').")
    cls = _BASES[key]
    if cls in (Supervised, FixMatch, UniMatch):
        return _construct(cls, (num_classes,), options, f"create_method({name!r})")
    return _construct(cls, (network, num_classes), options, f"create_method({name!r})")
