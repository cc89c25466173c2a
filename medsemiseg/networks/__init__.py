"""Segmentation networks with an encode/decode split, and the SUFD feature discriminator.

Every segmentation network here follows one contract (``docs/architecture.md``)::

    feats = net.encode(x)                 # list of encoder features, shallow -> deep; feats[-1] is the deepest
    logits = net.decode(feats, x.shape[2:])
    net(x) == net.decode(net.encode(x), x.shape[2:])
    net.feature_channels                  # channels of feats[-1], what the SUFD discriminator sees
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .deeplabv3plus import DeepLabV3Plus, EncoderLoadReport, load_encoder_weights
from .discriminator import FeatureDiscriminator
from .unet import UNet

__all__ = ["UNet", "DeepLabV3Plus", "FeatureDiscriminator", "EncoderLoadReport", "load_encoder_weights", "get_network"]

_NAMES = {"unet": "unet", "basicunet": "unet", "deeplabv3plus": "deeplabv3plus", "deeplabv3+": "deeplabv3plus"}


def get_network(name: str, in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    """Build a segmentation network by name.

    Args:
        name: ``"unet"`` (:class:`UNet`, 2D) or ``"deeplabv3plus"`` (:class:`DeepLabV3Plus`); case-insensitive.
        in_channels: image channels.
        num_classes: classes including background (logit channels).
        kwargs: passed to the network's constructor (e.g. ``features``, ``dropout`` for UNet; ``backbone``,
            ``output_stride``, ``encoder_weights`` for DeepLabV3Plus).
    """
    key = _NAMES.get(str(name).lower().replace("_", "").replace("-", ""))
    if key == "unet":
        kwargs.setdefault("spatial_dims", 2)
        return UNet(in_channels=in_channels, out_channels=num_classes, **kwargs)
    if key == "deeplabv3plus":
        return DeepLabV3Plus(in_channels=in_channels, num_classes=num_classes, **kwargs)
    raise ValueError(f"get_network(name={name!r}): unknown network; use 'unet' or 'deeplabv3plus'.")
