"""Feature discriminator for SUFD (Sup-Unsup Feature Discriminator).

SUFD trains a discriminator to tell encoder feature maps of labelled images (target 1) from those of unlabelled
images (target 0), and the segmentation network adversarially to make its unlabelled-image features look
labelled. The discriminator is a small fully convolutional PatchGAN-style network, as in adversarial
semi-supervised segmentation (Hung et al. 2018): strided 4x4 convolutions with LeakyReLU(0.2) and a final
convolution to one channel, giving one real/fake logit per patch ``(B, 1, h, w)``.

The deepest UNet feature is small (8x8 for a 128x128 input), so the strided convolutions use padding 2: each one
maps ``h`` to ``floor(h / 2) + 1``, which is never below 1, so even a 1x1 feature map gives a 1x1 logit map.
"""

from __future__ import annotations

import torch
import torch.nn as nn

__all__ = ["FeatureDiscriminator"]


class FeatureDiscriminator(nn.Module):
    """Per-patch real/fake discriminator on feature maps.

    Args:
        in_channels: channels of the feature map it judges (``net.feature_channels``).
        base_channels: channels of the first convolution; doubled at every further strided layer.
        num_layers: number of strided (stride 2) 4x4 convolutions.
        max_channels: cap on the channel count.
        negative_slope: LeakyReLU slope (0.2, the usual GAN choice).
        spectral_norm: wrap every convolution in spectral normalisation (steadier adversarial training).

    Returns (forward): logits ``(B, 1, h, w)``; apply ``BCEWithLogitsLoss`` against 1 (labelled) or 0 (unlabelled).
    """

    def __init__(
        self,
        in_channels: int,
        base_channels: int = 64,
        num_layers: int = 3,
        max_channels: int = 512,
        negative_slope: float = 0.2,
        spectral_norm: bool = False,
    ) -> None:
        super().__init__()
        if in_channels < 1 or base_channels < 1 or num_layers < 1:
            raise ValueError(
                f"FeatureDiscriminator needs in_channels, base_channels and num_layers >= 1; got "
                f"in_channels={in_channels}, base_channels={base_channels}, num_layers={num_layers}."
            )
        wrap = nn.utils.parametrizations.spectral_norm if spectral_norm else (lambda m: m)
        layers: list[nn.Module] = []
        ch_in = in_channels
        for i in range(num_layers):
            ch_out = min(base_channels * 2**i, max_channels)
            layers += [wrap(nn.Conv2d(ch_in, ch_out, kernel_size=4, stride=2, padding=2)), nn.LeakyReLU(negative_slope, inplace=True)]
            ch_in = ch_out
        layers.append(wrap(nn.Conv2d(ch_in, 1, kernel_size=3, stride=1, padding=1)))
        self.net = nn.Sequential(*layers)
        self.in_channels = in_channels

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        if feats.ndim != 4 or feats.shape[1] != self.in_channels:
            raise ValueError(
                f"FeatureDiscriminator expects feature maps (B, {self.in_channels}, h, w), got {tuple(feats.shape)}; "
                f"build it with in_channels=net.feature_channels."
            )
        return self.net(feats)
