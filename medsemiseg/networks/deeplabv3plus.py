"""DeepLabV3+ built from MONAI blocks: a MONAI ResNet encoder, ``SimpleASPP`` and a low-level skip.

UniMatch and ClassMix evaluate natural-image semi-supervised segmentation with DeepLabV3+ on a ResNet. This is the
same design assembled from MONAI parts so that it runs in MONAI bundles without torchvision:

* encoder: ``monai.networks.nets.resnet{18,34,50}`` with ``spatial_dims=2``, a stride-2 7x7 stem and max pooling
  (so ``layer1`` is at 1/4 resolution, as in torchvision); ``layer3``/``layer4`` trade stride for dilation to
  reach the requested ``output_stride`` (16: layer4 dilated; 8: layer3 and layer4 dilated);
* ``monai.networks.blocks.SimpleASPP`` on the deepest feature map;
* decoder: the low-level ``layer1`` feature reduced by a 1x1 convolution, concatenated with the up-sampled ASPP
  output, two 3x3 convolutions, a 1x1 classifier, and bilinear up-sampling to the input size.

``encode`` returns ``[low_level, deepest]`` (``layer1`` and ``layer4`` outputs): exactly what ``decode`` uses,
so UniMatch's feature perturbation (dropout on every returned level) perturbs both decoder inputs, as UniMatch's
DeepLabV3+ does (it drops out ``c1`` and ``c4``).

Pre-trained encoder weights are optional and only ever read from a local file (``encoder_weights``); nothing is
downloaded. The encoder's parameter names are those of torchvision's ResNet (``conv1``, ``bn1``,
``layer1.0.conv1`` ...; downsample convolutions without bias), so a torchvision or timm ResNet checkpoint saved
to disk loads directly.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.networks.blocks import Convolution, SimpleASPP
from monai.networks.nets import resnet18, resnet34, resnet50

__all__ = ["DeepLabV3Plus", "EncoderLoadReport", "load_encoder_weights"]

logger = logging.getLogger(__name__)

_BACKBONES = {"resnet18": resnet18, "resnet34": resnet34, "resnet50": resnet50}
# prefixes that wrappers (DataParallel, DeepLab/UniMatch checkpoints, Lightning) put in front of encoder keys
_STRIP_PREFIXES = ("module.", "encoder.", "backbone.", "model.")
# keys of an ImageNet classifier that an encoder never uses; dropped silently (they are reported as 'ignored')
_HEAD_PREFIXES = ("fc.",)


@dataclass
class EncoderLoadReport:
    """What :func:`load_encoder_weights` did: which keys loaded, which were missing / unexpected / mismatched."""

    path: str
    loaded: list[str] = field(default_factory=list)
    missing: list[str] = field(default_factory=list)
    unexpected: list[str] = field(default_factory=list)
    mismatched: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    adapted: list[str] = field(default_factory=list)

    def summary(self) -> str:
        def _few(keys: list[str]) -> str:
            return ", ".join(keys[:8]) + (f", ... ({len(keys)} in all)" if len(keys) > 8 else "")

        lines = [f"encoder weights from {self.path}: {len(self.loaded)} tensors loaded"]
        if self.adapted:
            lines.append(f"  adapted to the input channels: {_few(self.adapted)}")
        if self.missing:
            lines.append(f"  missing in the checkpoint (kept their random init): {_few(self.missing)}")
        if self.unexpected:
            lines.append(f"  unexpected in the checkpoint (not used): {_few(self.unexpected)}")
        if self.mismatched:
            lines.append(f"  shape mismatch (kept their random init): {_few(self.mismatched)}")
        if self.ignored:
            lines.append(f"  classifier head keys ignored: {_few(self.ignored)}")
        return "\n".join(lines)


def _unwrap_state_dict(obj: object, path: str) -> dict[str, torch.Tensor]:
    """Find the state dict inside a checkpoint (``state_dict`` / ``model`` wrappers) and strip key prefixes."""
    for _ in range(3):  # nested wrappers such as {"model": {"state_dict": ...}}
        if isinstance(obj, Mapping):
            for wrapper in ("state_dict", "model", "model_state_dict", "net"):
                if wrapper in obj and isinstance(obj[wrapper], Mapping):
                    obj = obj[wrapper]
                    break
            else:
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise ValueError(
            f"encoder_weights={path!r} does not hold a state dict (a mapping of parameter names to tensors, "
            f"possibly under 'state_dict' or 'model'); save one with torch.save(model.state_dict(), path)."
        )
    out: dict[str, torch.Tensor] = {}
    for key, value in obj.items():
        stripped = True
        while stripped:
            stripped = False
            for prefix in _STRIP_PREFIXES:
                if key.startswith(prefix):
                    key = key[len(prefix) :]
                    stripped = True
        out[key] = value
    return out


def load_encoder_weights(encoder: nn.Module, path: str | os.PathLike, strict: bool = False) -> EncoderLoadReport:
    """Load a LOCAL checkpoint into ``encoder`` and report what matched.

    Keys are matched after stripping ``module.`` / ``encoder.`` / ``backbone.`` / ``model.`` prefixes; ImageNet
    classifier keys (``fc.*``) are ignored. A first convolution trained on 3-channel images is adapted to a
    1-channel input by summing over its input channels (the usual trick for grey-scale CT). Tensors whose shape
    differs otherwise keep their random initialisation and are reported.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a state dict, no tensor matched at all (wrong architecture / prefix), or
            ``strict`` and any key was missing, unexpected or mismatched.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(
            f"encoder_weights={path!r}: no such file. Give the path of a local checkpoint (a state dict saved "
            f"with torch.save), or encoder_weights=None to start from random weights; nothing is downloaded."
        )
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # corrupt file, pickle with custom classes, ...
        raise ValueError(f"encoder_weights={path!r} could not be read by torch.load(weights_only=True): {e}") from e
    ckpt = _unwrap_state_dict(obj, path)

    report = EncoderLoadReport(path=path)
    own = encoder.state_dict()
    to_load: dict[str, torch.Tensor] = {}
    for key, value in ckpt.items():
        if key.startswith(_HEAD_PREFIXES):
            report.ignored.append(key)
        elif key not in own:
            report.unexpected.append(key)
        elif value.shape == own[key].shape:
            to_load[key] = value
        elif (
            value.ndim == 4
            and own[key].ndim == 4
            and value.shape[0] == own[key].shape[0]
            and value.shape[2:] == own[key].shape[2:]
            and own[key].shape[1] == 1
        ):
            to_load[key] = value.sum(dim=1, keepdim=True)  # RGB stem -> grey-scale stem
            report.adapted.append(key)
        else:
            report.mismatched.append(f"{key} (checkpoint {tuple(value.shape)} vs model {tuple(own[key].shape)})")
    report.loaded = sorted(to_load)
    report.missing = [k for k in own if k not in to_load and not k.endswith("num_batches_tracked")]

    if not to_load:
        raise ValueError(
            f"encoder_weights={path!r}: none of its {len(ckpt)} tensors matches the encoder "
            f"(first checkpoint keys: {list(ckpt)[:5]}; expected keys like {list(own)[:5]}). "
            f"Check that the checkpoint is a ResNet of the same depth as 'backbone'."
        )
    if strict and (report.missing or report.unexpected or report.mismatched):
        raise ValueError(f"encoder_weights loaded with strict=True but keys differ:\n{report.summary()}")
    encoder.load_state_dict(to_load, strict=False)
    if report.missing or report.unexpected or report.mismatched:
        logger.warning(report.summary())
    else:
        logger.info(report.summary())
    return report


def _dilate_layer(layer: nn.Sequential, dilation: int) -> None:
    """Replace the stride of a ResNet stage by dilation (torchvision's ``replace_stride_with_dilation``).

    The stage's strided 3x3 convolution and its strided 1x1 downsample convolution get stride 1, and every 3x3
    convolution of the stage gets ``dilation`` (with matching padding), so the receptive field grows while the
    resolution stays.
    """
    for module in layer.modules():
        if isinstance(module, nn.Conv2d):
            if module.stride != (1, 1):
                module.stride = (1, 1)
            if module.kernel_size == (3, 3):
                module.dilation = (dilation, dilation)
                module.padding = (dilation, dilation)


class DeepLabV3Plus(nn.Module):
    """DeepLabV3+ (ResNet + ``SimpleASPP`` + low-level skip) with the package's encode/decode contract.

    Args:
        in_channels: image channels (1 for CT, 3 for fundus photographs).
        num_classes: number of classes (logit channels), background included.
        backbone: ``"resnet18"``, ``"resnet34"`` or ``"resnet50"`` (MONAI ResNets, ``spatial_dims=2``).
        output_stride: 32 (no dilation), 16 (layer4 dilated; the DeepLabV3+ default) or 8 (layer3 and layer4
            dilated; more memory).
        aspp_channels: channels of each of ``SimpleASPP``'s four branches; its output has ``4 * aspp_channels``.
        aspp_dilations: dilations of the four ASPP branches (kernel sizes 1, 3, 3, 3). The default (1, 6, 12, 18)
            is DeepLabV3+'s for output stride 16.
        low_level_channels: channels the low-level ``layer1`` feature is reduced to (48 in DeepLabV3+).
        decoder_channels: channels of the two 3x3 decoder convolutions (256 in DeepLabV3+; smaller is lighter).
        encoder_weights: optional path of a LOCAL checkpoint loaded into the ResNet encoder (see
            :func:`load_encoder_weights`); the report is kept in ``self.encoder_load_report``.
        encoder_weights_strict: raise if any encoder key is missing, unexpected or mismatched.
    """

    def __init__(
        self,
        in_channels: int = 3,
        num_classes: int = 2,
        backbone: str = "resnet18",
        output_stride: int = 16,
        aspp_channels: int = 64,
        aspp_dilations: Sequence[int] = (1, 6, 12, 18),
        low_level_channels: int = 48,
        decoder_channels: int = 128,
        encoder_weights: str | os.PathLike | None = None,
        encoder_weights_strict: bool = False,
    ) -> None:
        super().__init__()
        if backbone not in _BACKBONES:
            raise ValueError(f"DeepLabV3Plus(backbone={backbone!r}) is not supported; use one of {sorted(_BACKBONES)}.")
        if output_stride not in (8, 16, 32):
            raise ValueError(f"DeepLabV3Plus(output_stride={output_stride}) must be 8, 16 or 32.")
        if len(aspp_dilations) != 4:
            raise ValueError(f"DeepLabV3Plus(aspp_dilations=...) needs four values, got {tuple(aspp_dilations)}.")
        self.in_channels = in_channels
        self.num_classes = num_classes
        self.backbone = backbone
        self.output_stride = output_stride

        encoder = _BACKBONES[backbone](
            pretrained=False,
            spatial_dims=2,
            n_input_channels=in_channels,
            conv1_t_size=7,
            conv1_t_stride=2,
            feed_forward=False,
            bias_downsample=False,  # torchvision layout: downsample convs are followed by BN and have no bias
        )
        # the classification tail is not part of a segmentation encoder
        encoder.avgpool = nn.Identity()
        encoder.fc = None
        if output_stride <= 16:
            _dilate_layer(encoder.layer4, 2 if output_stride == 16 else 4)
        if output_stride == 8:
            _dilate_layer(encoder.layer3, 2)
        self.encoder = encoder

        expansion = 4 if backbone == "resnet50" else 1
        low_in = 64 * expansion
        deep_in = 512 * expansion
        self.feature_channels: int = deep_in
        self.encoder_channels: tuple[int, ...] = (low_in, deep_in)

        self.aspp = SimpleASPP(
            spatial_dims=2,
            in_channels=deep_in,
            conv_out_channels=aspp_channels,
            kernel_sizes=(1, 3, 3, 3),
            dilations=tuple(aspp_dilations),
            norm_type="BATCH",
            acti_type="RELU",
        )
        self.reduce = Convolution(2, low_in, low_level_channels, kernel_size=1, norm="BATCH", act="RELU")
        self.fuse = nn.Sequential(
            Convolution(2, 4 * aspp_channels + low_level_channels, decoder_channels, kernel_size=3, norm="BATCH", act="RELU"),
            Convolution(2, decoder_channels, decoder_channels, kernel_size=3, norm="BATCH", act="RELU"),
        )
        self.classifier = nn.Conv2d(decoder_channels, num_classes, kernel_size=1)

        self.encoder_load_report: EncoderLoadReport | None = None
        if encoder_weights is not None:
            self.encoder_load_report = load_encoder_weights(self.encoder, encoder_weights, strict=encoder_weights_strict)

    def encode(self, x: torch.Tensor) -> list[torch.Tensor]:
        """Return ``[low_level, deepest]``: ResNet ``layer1`` (1/4 resolution) and ``layer4`` (1/output_stride)."""
        e = self.encoder
        x = e.act(e.bn1(e.conv1(x)))
        x = e.maxpool(x)
        c1 = e.layer1(x)
        c4 = e.layer4(e.layer3(e.layer2(c1)))
        return [c1, c4]

    def _decode_levels(self, c1: torch.Tensor, c4: torch.Tensor, spatial_size: list[int]) -> torch.Tensor:
        """ASPP, low-level fusion and classifier, resized to ``spatial_size`` (TorchScript-compatible)."""
        a = self.aspp(c4)
        a = F.interpolate(a, size=c1.shape[2:], mode="bilinear", align_corners=False)
        y = self.fuse(torch.cat([self.reduce(c1), a], dim=1))
        y = self.classifier(y)
        return F.interpolate(y, size=spatial_size, mode="bilinear", align_corners=False)

    @torch.jit.unused
    def decode(self, feats: Sequence[torch.Tensor], spatial_size: Sequence[int]) -> torch.Tensor:
        """Logits ``(B, num_classes, *spatial_size)`` from ``encode``'s (possibly perturbed) features.

        Accepts the two maps ``encode`` returns; a longer list is read as ``[feats[0], ..., feats[-1]]`` with the
        first taken as the low-level and the last as the deepest feature. Training-time API: a TorchScript export
        keeps ``forward`` and leaves this method out.
        """
        if len(feats) < 2:
            raise ValueError(f"DeepLabV3Plus.decode expects [low_level, deepest] from encode, got {len(feats)} map(s).")
        return self._decode_levels(feats[0], feats[-1], [int(s) for s in spatial_size])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.encode(x)
        return self._decode_levels(f[0], f[-1], x.shape[2:])
