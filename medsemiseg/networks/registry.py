"""Segmentation networks found by name, like the methods (:mod:`medsemiseg.methods.registry`).

A network is registered with :func:`register_network` under a canonical name and its aliases; the bundles'
``network_name`` and the cost benchmark's ``--network`` go through :func:`get_network`. Names are matched
case-insensitively with ``_`` and ``-`` ignored (``DeepLabV3+``, ``deeplab_v3plus``...).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

import torch.nn as nn

__all__ = ["NetworkSpec", "get_network", "network_names", "register_network"]

#: ``builder(in_channels, num_classes, **kwargs) -> nn.Module``
Builder = Callable[..., nn.Module]


@dataclass(frozen=True)
class NetworkSpec:
    """A registered network: its canonical ``name``, its ``builder`` and the ``aliases`` it is also found by."""

    name: str
    builder: Builder
    aliases: tuple[str, ...] = ()


_SPECS: dict[str, NetworkSpec] = {}
_KEYS: dict[str, str] = {}  # normalised name or alias -> canonical name


def _key(name: str) -> str:
    return str(name).lower().replace("_", "").replace("-", "")


def register_network(name: str, builder: Builder, aliases: Iterable[str] = ()) -> NetworkSpec:
    """Register ``builder`` as network ``name`` (and ``aliases``).

    Args:
        name: the canonical name (what :func:`network_names` lists).
        builder: ``builder(in_channels, num_classes, **kwargs)`` returning a network that follows the package's
            encode / decode contract (``docs/architecture.md``).
        aliases: other names that find it.

    Returns:
        The :class:`NetworkSpec` registered.

    Raises:
        ValueError: ``name`` or an alias already names another network.
    """
    spec = NetworkSpec(str(name), builder, tuple(str(a) for a in aliases))
    for alias in (spec.name, *spec.aliases):
        taken = _KEYS.get(_key(alias))
        if taken is not None and taken != spec.name:
            raise ValueError(f"register_network({name!r}): the name {alias!r} already names network {taken!r}; "
                             "choose another name or alias.")
    _SPECS[spec.name] = spec
    for alias in (spec.name, *spec.aliases):
        _KEYS[_key(alias)] = spec.name
    return spec


def network_names() -> list[str]:
    """The canonical names of the registered networks, in registration order."""
    return list(_SPECS)


def get_network(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a registered segmentation network by name.

    Args:
        name: a registered name or alias (``"unet"``, ``"deeplabv3plus"``...), case-insensitive.
        in_channels: image channels.
        num_classes: classes including background (logit channels).
        kwargs: passed to the network's builder (e.g. ``features``, ``dropout`` for UNet; ``backbone``,
            ``output_stride``, ``encoder_weights`` for DeepLabV3Plus).

    Returns:
        The network, on the CPU.

    Raises:
        ValueError: ``name`` is not registered; the message lists the registered names.
    """
    canonical = _KEYS.get(_key(name))
    if canonical is None:
        known = ", ".join(repr(n) for n in network_names())
        raise ValueError(f"get_network(name={name!r}): unknown network; use one of {known}.")
    return _SPECS[canonical].builder(in_channels, num_classes, **kwargs)
