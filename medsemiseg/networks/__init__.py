"""Segmentation networks with an encode/decode split, and the SUFD feature discriminator.

Every segmentation network here follows one contract (``docs/architecture.md``)::

    feats = net.encode(x)                 # list of encoder features, shallow -> deep; feats[-1] is the deepest
    logits = net.decode(feats, x.shape[2:])
    net(x) == net.decode(net.encode(x), x.shape[2:])
    net.feature_channels                  # channels of feats[-1], what the SUFD discriminator sees

Networks are found by name through :mod:`.registry` (``get_network``, ``register_network``), as methods are.
"""

from __future__ import annotations

from typing import Any

import torch.nn as nn

from .deeplabv3plus import DeepLabV3Plus, EncoderLoadReport, load_encoder_weights
from .discriminator import FeatureDiscriminator
from .registry import NetworkSpec, get_network, network_names, register_network
from .unet import UNet

__all__ = ["UNet", "DeepLabV3Plus", "FeatureDiscriminator", "EncoderLoadReport", "load_encoder_weights", "get_network",
           "network_names", "register_network", "NetworkSpec"]


def _unet(in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    kwargs.setdefault("spatial_dims", 2)
    return UNet(in_channels=in_channels, out_channels=num_classes, **kwargs)


def _deeplabv3plus(in_channels: int, num_classes: int, **kwargs: Any) -> nn.Module:
    return DeepLabV3Plus(in_channels=in_channels, num_classes=num_classes, **kwargs)


register_network("unet", _unet, aliases=("basicunet",))
register_network("deeplabv3plus", _deeplabv3plus, aliases=("deeplabv3+",))
