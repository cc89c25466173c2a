"""2D UNet with an explicit encoder/decoder split, built on MONAI's ``BasicUNet``.

Semi-supervised methods need the encoder features on their own: UniMatch perturbs them with
``Dropout2d(0.5)`` before decoding (feature perturbation), and SUFD feeds the deepest one to a discriminator.
``BasicUNet.forward`` computes everything in one pass, so this subclass keeps BasicUNet's layers and weights
unchanged (a BasicUNet state dict loads into it and vice versa) and only splits the forward pass into
:meth:`UNet.encode` and :meth:`UNet.decode`.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from monai.networks.nets import BasicUNet

__all__ = ["UNet"]


class UNet(BasicUNet):
    """MONAI ``BasicUNet`` whose forward pass is split into ``encode`` and ``decode``.

    The contract shared by every segmentation network of this package (see ``docs/architecture.md``)::

        feats = net.encode(x)                   # [x0, x1, x2, x3, x4]: shallow -> deep, x4 at 1/16 resolution
        logits = net.decode(feats, x.shape[2:])  # (B, out_channels, *spatial)
        net(x) == net.decode(net.encode(x), x.shape[2:])
        net.feature_channels == features[4]      # channels of feats[-1]

    Defaults follow UniMatch's medical UNet in channels (``16, 32, 64, 128, 256``), batch norm and LeakyReLU 0.01,
    but not in dropout: the reference's encoder blocks drop 0.05, 0.1, 0.2, 0.3, 0.5 (shallow to deep), which also
    makes its train-mode pseudo-labels stochastic; here ``dropout`` is one ratio for every block, 0 by default.
    MONAI's own default is instance norm, which is available through ``norm=("instance", {"affine": True})``.
    Spatial sizes that are not multiples of 16 work as in ``BasicUNet``: each up-sampling step pads its output
    by one pixel (replicate) where the encoder's floor-halving lost one, so the logits always have the input size.

    Args:
        spatial_dims: number of spatial dimensions (2 for this package's slices; 3 also works).
        in_channels: image channels (1 for CT, 3 for fundus photographs).
        out_channels: number of classes (logit channels), background included.
        features: six channel counts: five encoder levels and the channels after the last up-sampling.
        act: activation type and arguments (MONAI ``Act`` spelling).
        norm: normalisation type and arguments (MONAI ``Norm`` spelling).
        bias: whether convolutions have a bias term.
        dropout: dropout ratio inside every convolution block (0 disables it).
        upsample: ``"deconv"``, ``"pixelshuffle"`` or ``"nontrainable"`` (see ``BasicUNet``).
    """

    def __init__(
        self,
        spatial_dims: int = 2,
        in_channels: int = 1,
        out_channels: int = 2,
        features: Sequence[int] = (16, 32, 64, 128, 256, 16),
        act: str | tuple = ("LeakyReLU", {"negative_slope": 0.01, "inplace": True}),
        norm: str | tuple = ("batch", {"affine": True}),
        bias: bool = True,
        dropout: float | tuple = 0.0,
        upsample: str = "deconv",
    ) -> None:
        features = tuple(int(f) for f in features)
        if len(features) != 6:
            raise ValueError(
                f"UNet(features=...) needs six channel counts (five encoder levels + the last decoder level), "
                f"got {len(features)}: {features}. Example: (16, 32, 64, 128, 256, 16)."
            )
        super().__init__(
            spatial_dims=spatial_dims,
            in_channels=in_channels,
            out_channels=out_channels,
            features=features,
            act=act,
            norm=norm,
            bias=bias,
            dropout=dropout,
            upsample=upsample,
        )
        self.spatial_dims = spatial_dims
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.features = features
        self.feature_channels: int = features[4]
        # channels of every encoder level, shallow -> deep (what ``encode`` returns)
        self.encoder_channels: tuple[int, ...] = features[:5]

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return the five encoder levels ``[x0, x1, x2, x3, x4]`` (full resolution ... 1/16)."""
        x0 = self.conv_0(x)
        x1 = self.down_1(x0)
        x2 = self.down_2(x1)
        x3 = self.down_3(x2)
        x4 = self.down_4(x3)
        return [x0, x1, x2, x3, x4]

    def _decode_levels(
        self, x0: torch.Tensor, x1: torch.Tensor, x2: torch.Tensor, x3: torch.Tensor, x4: torch.Tensor
    ) -> torch.Tensor:
        """The decoder on the five encoder levels (TorchScript-compatible: ``forward`` goes through here)."""
        u4 = self.upcat_4(x4, x3)
        u3 = self.upcat_3(u4, x2)
        u2 = self.upcat_2(u3, x1)
        u1 = self.upcat_1(u2, x0)
        return self.final_conv(u1)

    @torch.jit.unused
    def decode(self, feats: Sequence[torch.Tensor], spatial_size: Sequence[int] | None = None) -> torch.Tensor:
        """Decode the (possibly perturbed) encoder levels from :meth:`encode` into logits.

        Args:
            feats: the five tensors ``encode`` returned, in the same order (they may have gone through
                dropout or any other shape-preserving perturbation).
            spatial_size: spatial size of the logits; defaults to that of ``feats[0]`` (the input size).
                The decoder already restores the input size, so interpolation happens only when a caller asks
                for a different one.

        Training-time API: a TorchScript export (``torch.jit.script``, MONAI ``ckpt_export``) keeps ``forward``
        and leaves this method out.
        """
        if len(feats) != 5:
            raise ValueError(f"UNet.decode expects the 5 feature maps returned by UNet.encode, got {len(feats)}.")
        logits = self._decode_levels(*feats)
        if spatial_size is not None and tuple(logits.shape[2:]) != tuple(int(s) for s in spatial_size):
            mode = {1: "linear", 2: "bilinear", 3: "trilinear"}[self.spatial_dims]
            logits = F.interpolate(logits, size=tuple(int(s) for s in spatial_size), mode=mode, align_corners=False)
        return logits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """Logits ``(B, out_channels, *x.shape[2:])``; identical to ``BasicUNet.forward`` for the same weights.

        The decoder restores the input size itself (MONAI's ``UpCat`` pads odd sizes), so this is
        ``decode(encode(x), x.shape[2:])`` without the interpolation check, which keeps it scriptable.
        """
        f = self.encode(x)
        return self._decode_levels(f[0], f[1], f[2], f[3], f[4])
