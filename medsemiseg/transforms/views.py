"""Weak and strong views of an image for consistency-based semi-supervised learning.

* Weak view: geometric augmentation (random crop or resize, flips, 90-degree rotations for square sizes) applied to
  image and label together in the data pipeline. These are ordinary MONAI dictionary transforms;
  :func:`weak_transforms` returns the list a bundle puts into its training preprocessing (labelled and unlabelled
  items alike: keys missing from unlabelled items are skipped).
* Strong view: photometric perturbation of an already-loaded batch, on the device, inside the method
  (:class:`StrongAugment`). It only changes intensities, never geometry, so the pseudo-label computed on the weak
  view stays aligned with the strong view pixel for pixel, and it never sees labels.

UniMatch's strong view is torchvision ``ColorJitter(0.5, 0.5, 0.5, 0.25)`` with p 0.8, random greyscale p 0.2
and a Gaussian blur p 0.5 (sigma 0.1-2.0) on RGB images. Medical images are often single-channel, so this
implementation uses intensity operations defined for any channel count: brightness, contrast, saturation
(3-channel only), gamma, blur and additive Gaussian noise, each with its own probability and per-sample
parameters.
"""

from __future__ import annotations

import math
from collections.abc import Hashable, Sequence

import torch
import torch.nn as nn
import torch.nn.functional as F
from monai.transforms import (
    RandFlipd,
    RandRotate90d,
    RandRotated,
    RandSpatialCropd,
    Resized,
    SpatialPadd,
)

from .patches import RandPatchd

__all__ = ["StrongAugment", "weak_transforms"]


def _uniform(shape, low: float, high: float, device, generator: torch.Generator | None) -> torch.Tensor:
    if generator is None:
        u = torch.rand(shape, device=device)
    else:
        u = torch.rand(shape, generator=generator, device=generator.device).to(device, non_blocking=True)
    return low + (high - low) * u


class StrongAugment(nn.Module):
    """Batched photometric strong view with per-sample random parameters, on the input's device.

    Applied in this order, each operation to a random subset of the batch:

    1. colour jitter (probability ``p_jitter``, 0.8 as in UniMatch): brightness factor ``U(1 +- brightness)``
       (multiplies intensities), contrast factor ``U(1 +- contrast)`` (scales around each image's mean),
       saturation factor ``U(1 +- saturation)`` for 3-channel images (blends with the greyscale image);
    2. gamma (probability ``p_gamma``): ``x ** g`` with ``g ~ U(gamma)`` on intensities in the value range;
    3. Gaussian blur (probability ``p_blur``, 0.5 as in UniMatch), sigma ``U(blur_sigma)`` pixels, separable
       kernel of radius ``ceil(3 * max sigma)``, replicate padding;
    4. additive Gaussian noise (probability ``p_noise``) with standard deviation ``U(noise_std)``;
    5. clipping to ``value_range`` (unless ``None``).

    Inputs are ``(B, C, X, Y)`` float tensors in ``value_range`` (``(0, 1)``: CT windowed by
    :class:`~medsemiseg.transforms.intensity.CTWindowd`, fundus scaled by
    :class:`~medsemiseg.transforms.intensity.FundusNormalized`). For standardised inputs (mean 0, std 1) pass
    ``value_range=None``: gamma is then skipped, since it is only defined on a known range.

    Args:
        seed: seeds a private CPU generator, so a run's sequence of strong views is reproducible; ``None`` uses
            torch's global RNG of the input's device. A ``generator`` passed to ``forward`` overrides both.

    The input is never modified in place; labels are never passed to this module.
    """

    def __init__(
        self,
        p_jitter: float = 0.8,
        brightness: float = 0.5,
        contrast: float = 0.5,
        saturation: float = 0.5,
        p_gamma: float = 0.3,
        gamma: Sequence[float] = (0.7, 1.5),
        p_blur: float = 0.5,
        blur_sigma: Sequence[float] = (0.1, 2.0),
        p_noise: float = 0.3,
        noise_std: Sequence[float] = (0.0, 0.05),
        value_range: Sequence[float] | None = (0.0, 1.0),
        seed: int | None = None,
    ) -> None:
        super().__init__()
        for name, p in (("p_jitter", p_jitter), ("p_gamma", p_gamma), ("p_blur", p_blur), ("p_noise", p_noise)):
            if not 0.0 <= p <= 1.0:
                raise ValueError(f"StrongAugment({name}={p}) must be a probability in [0, 1].")
        if not 0 < blur_sigma[0] <= blur_sigma[1]:
            raise ValueError(f"StrongAugment(blur_sigma={tuple(blur_sigma)}) must satisfy 0 < low <= high.")
        if not 0 < gamma[0] <= gamma[1]:
            raise ValueError(f"StrongAugment(gamma={tuple(gamma)}) must satisfy 0 < low <= high.")
        self.p_jitter, self.brightness, self.contrast, self.saturation = p_jitter, brightness, contrast, saturation
        self.p_gamma, self.gamma = p_gamma, tuple(gamma)
        self.p_blur, self.blur_sigma = p_blur, tuple(blur_sigma)
        self.p_noise, self.noise_std = p_noise, tuple(noise_std)
        self.value_range = tuple(value_range) if value_range is not None else None
        self.radius = int(math.ceil(3.0 * self.blur_sigma[1]))
        self.generator: torch.Generator | None = None
        if seed is not None:
            self.generator = torch.Generator()
            self.generator.manual_seed(int(seed))

    def _blur(self, x: torch.Tensor, sigma: torch.Tensor) -> torch.Tensor:
        """Separable Gaussian blur with one sigma per sample, as one grouped convolution per axis."""
        b, c, sx, sy = x.shape
        r = self.radius
        t = torch.arange(-r, r + 1, device=x.device, dtype=x.dtype)
        k = torch.exp(-0.5 * (t[None] / sigma[:, None].to(x.dtype)) ** 2)
        k = k / k.sum(dim=1, keepdim=True)  # (B, 2r+1)
        k = k.repeat_interleave(c, dim=0)  # one kernel per (sample, channel) group
        y = x.reshape(1, b * c, sx, sy)
        y = F.pad(y, (0, 0, r, r), mode="replicate")
        y = F.conv2d(y, k[:, None, :, None], groups=b * c)
        y = F.pad(y, (r, r, 0, 0), mode="replicate")
        y = F.conv2d(y, k[:, None, None, :], groups=b * c)
        return y.reshape(b, c, sx, sy)

    def forward(self, x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
        if x.ndim != 4 or not torch.is_floating_point(x):
            raise ValueError(f"StrongAugment expects a float image batch (B, C, X, Y), got {x.dtype} {tuple(x.shape)}.")
        # the methods call this inside the trainer's autocast (amp); the blur's convolutions would then run in
        # float16/bfloat16 and round the image (~1e-3 / 1e-2 on [0, 1]): a strong view is data, computed in x's dtype
        if x.device.type in ("cuda", "cpu"):
            with torch.autocast(x.device.type, enabled=False):
                return self._augment(x, generator)
        return self._augment(x, generator)

    def _augment(self, x: torch.Tensor, generator: torch.Generator | None) -> torch.Tensor:
        g = generator if generator is not None else self.generator
        b, c = x.shape[:2]
        dev = x.device
        dims = (b, 1, 1, 1)

        # draw every random number up front, always the same count: a seeded run is reproducible whatever the
        # outcome of the coin flips
        flips = _uniform((4, b), 0.0, 1.0, dev, g)
        bright = _uniform(dims, 1 - self.brightness, 1 + self.brightness, dev, g)
        contr = _uniform(dims, 1 - self.contrast, 1 + self.contrast, dev, g)
        sat = _uniform(dims, 1 - self.saturation, 1 + self.saturation, dev, g)
        gam = _uniform(dims, self.gamma[0], self.gamma[1], dev, g)
        sigma = _uniform((b,), self.blur_sigma[0], self.blur_sigma[1], dev, g)
        nstd = _uniform(dims, self.noise_std[0], self.noise_std[1], dev, g)
        if g is None:
            noise = torch.randn(x.shape, device=dev, dtype=x.dtype)
        else:
            noise = torch.randn(x.shape, generator=g, device=g.device, dtype=x.dtype).to(dev, non_blocking=True)
        do_jit, do_gam, do_blur, do_noise = (flips < torch.tensor(
            [self.p_jitter, self.p_gamma, self.p_blur, self.p_noise], device=dev
        )[:, None]).reshape(4, b, 1, 1, 1)

        y = x
        # 1. colour jitter
        jit = y * bright.to(y.dtype)
        mean = jit.mean(dim=(1, 2, 3), keepdim=True)
        jit = (jit - mean) * contr.to(y.dtype) + mean
        if c == 3:
            grey = (0.299 * jit[:, 0:1] + 0.587 * jit[:, 1:2] + 0.114 * jit[:, 2:3])
            jit = (jit - grey) * sat.to(y.dtype) + grey
        y = torch.where(do_jit, jit, y)
        # 2. gamma, on the known value range
        if self.value_range is not None:
            lo, hi = self.value_range
            z = ((y - lo) / (hi - lo)).clamp(0.0, 1.0)
            y = torch.where(do_gam, z ** gam.to(y.dtype) * (hi - lo) + lo, y)
        # 3. blur
        y = torch.where(do_blur, self._blur(y, sigma), y)
        # 4. noise
        y = torch.where(do_noise, y + noise * nstd.to(y.dtype), y)
        # 5. clip
        if self.value_range is not None:
            y = y.clamp(self.value_range[0], self.value_range[1])
        return y


def weak_transforms(
    keys: Sequence[Hashable] = ("image", "label"),
    spatial_size: Sequence[int] = (256, 256),
    mode: str = "crop",
    label_keys: Sequence[Hashable] = ("label",),
    prob_flip: float = 0.5,
    prob_rot90: float = 0.5,
    rotate_degrees: float | None = None,
    prob_rotate: float = 0.5,
    allow_missing_keys: bool = True,
    foreground_share: float = 0.5,
) -> list:
    """MONAI dictionary transforms for the weak (geometric) view used in training preprocessing.

    Args:
        keys: keys transformed together (image and label move identically).
        spatial_size: output spatial size ``(X, Y)``.
        mode: ``"crop"``: pad to at least ``spatial_size`` then take a random crop of that size (keeps the pixel
            scale; fundus vessels are a few pixels wide); ``"patch"``: as ``"crop"``, but a labelled item's patch
            is centred on a foreground pixel with probability ``foreground_share``
            (:class:`~medsemiseg.transforms.patches.RandPatchd`); ``"resize"``: resize the whole slice (bilinear
            for images, nearest for labels).
        label_keys: keys holding label maps (nearest-neighbour interpolation, no smoothing).
        prob_flip: probability of a flip along each spatial axis (two independent flips).
        prob_rot90: probability of a rotation by 90, 180 or 270 degrees. Only for a square ``spatial_size``: a
            90/270-degree rotation would swap a non-square view's axes (and items of one batch must share a size),
            so a non-square size gets the two flips alone, which already include the 180-degree rotation.
        rotate_degrees: optional extra rotation in ``[-d, d]`` degrees (UniMatch medical's +-20 alternative).
        prob_rotate: probability of that extra rotation.
        allow_missing_keys: skip keys an item lacks (unlabelled items have no label), so one list serves both.
        foreground_share: ``mode="patch"`` only: share of labelled patches centred on foreground.
    """
    keys = list(keys)
    if len(spatial_size) != 2:
        raise ValueError(f"weak_transforms(spatial_size={tuple(spatial_size)}) must be (X, Y) for 2D slices.")
    interp = ["nearest" if k in label_keys else "bilinear" for k in keys]
    amk = allow_missing_keys
    mode = str(mode).lower()
    if mode == "crop":
        xforms: list = [
            SpatialPadd(keys, spatial_size=spatial_size, mode="constant", allow_missing_keys=amk),
            RandSpatialCropd(keys, roi_size=spatial_size, random_size=False, allow_missing_keys=amk),
        ]
    elif mode == "patch":
        label_key = next((k for k in keys if k in label_keys), None)
        xforms = [
            SpatialPadd(keys, spatial_size=spatial_size, mode="constant", allow_missing_keys=amk),
            RandPatchd(keys, spatial_size, label_key=label_key or "label", foreground_share=foreground_share,
                       allow_missing_keys=amk),
        ]
    elif mode == "resize":
        xforms = [
            Resized(
                keys,
                spatial_size=spatial_size,
                mode=interp,
                anti_aliasing=[k not in label_keys for k in keys],
                allow_missing_keys=amk,
            )
        ]
    else:
        raise ValueError(f"weak_transforms(mode={mode!r}): use 'crop', 'patch' or 'resize'.")
    xforms += [
        RandFlipd(keys, prob=prob_flip, spatial_axis=0, allow_missing_keys=amk),
        RandFlipd(keys, prob=prob_flip, spatial_axis=1, allow_missing_keys=amk),
    ]
    if int(spatial_size[0]) == int(spatial_size[1]):
        # 90/270 degrees would transpose a non-square view (X, Y) -> (Y, X), and items of one batch must share a
        # size; there the two flips above already give the 180-degree rotation
        xforms.append(RandRotate90d(keys, prob=prob_rot90, max_k=3, spatial_axes=(0, 1), allow_missing_keys=amk))
    if rotate_degrees:
        rad = math.radians(float(rotate_degrees))
        xforms.append(
            RandRotated(
                keys,
                range_x=rad,
                prob=prob_rotate,
                keep_size=True,
                mode=interp,
                padding_mode="zeros",
                allow_missing_keys=amk,
            )
        )
    return xforms
