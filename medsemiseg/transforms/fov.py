"""Field of view of a fundus photograph, so evaluation can ignore the black surround.

CHASE_DB1 ships no field-of-view (FOV) masks (DATA.md); much of the retinal-vessel literature scores inside the FOV
only, where the black corners (a third of the picture) would otherwise add easy background pixels. The FOV is
derived from the image: pixels brighter than ``threshold`` (0-255 scale) in the red channel, the brightest of the
fundus, with holes filled (dark vessels or lesions inside the disc stay in).

Evaluation uses it through the label: :class:`FundusFOVd` sets the label outside the FOV to ``num_classes`` (a value
no class has), and :class:`IgnoreOutsideFOVd`, after the prediction is resized back, turns prediction and label into
one-hot maps that are all zero there, so the per-class counts of :mod:`medsemiseg.metrics` leave those pixels out.
Both are no-ops with ``enabled=False`` (the bundles' default, ``eval_fov: false``).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping

import numpy as np
import torch
from monai.networks.utils import one_hot
from monai.transforms import MapTransform

__all__ = ["fundus_fov", "FundusFOVd", "IgnoreOutsideFOVd"]


def fundus_fov(image: np.ndarray | torch.Tensor, threshold: float = 20.0) -> np.ndarray:
    """Boolean ``(X, Y)`` field of view of an RGB (or grey) fundus image ``(C, X, Y)`` in 0-255."""
    import SimpleITK as sitk

    arr = image.detach().cpu().numpy() if isinstance(image, torch.Tensor) else np.asarray(image)
    if arr.ndim != 3:
        raise ValueError(f"fundus_fov expects a channel-first (C, X, Y) image, got shape {arr.shape}.")
    inside = arr[0] > float(threshold)  # red channel (or the only one)
    filled = sitk.BinaryFillhole(sitk.GetImageFromArray(inside.astype(np.uint8)))
    return sitk.GetArrayFromImage(filled).astype(bool)


class FundusFOVd(MapTransform):
    """Mark the label outside the image's field of view with the value ``num_classes`` (before any resizing).

    Both bundles carry it (their configs differ only in task keys); enabled on a non-RGB image (CT) it refuses."""

    def __init__(self, keys="label", image_key: str = "image", num_classes: int = 2, threshold: float = 20.0,
                 enabled: bool = True, allow_missing_keys: bool = False) -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.num_classes, self.threshold = image_key, int(num_classes), float(threshold)
        self.enabled = bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if not self.enabled:
            return d
        if d[self.image_key].shape[0] != 3:
            raise ValueError(
                f"eval_fov needs RGB fundus photographs (the chase bundle); this image has {d[self.image_key].shape[0]} "
                "channel(s). Leave eval_fov false for CT."
            )
        fov = torch.as_tensor(fundus_fov(d[self.image_key], self.threshold))
        for key in self.key_iterator(d):
            label = d[key]
            if tuple(label.shape[-2:]) != tuple(fov.shape):
                raise ValueError(f"FundusFOVd: label {key!r} {tuple(label.shape)} and image FOV {tuple(fov.shape)} differ.")
            out = label.clone()
            out[..., ~fov.to(out.device)] = self.num_classes
            d[key] = out
        return d


class IgnoreOutsideFOVd(MapTransform):
    """Prediction and label as one-hot ``(K, X, Y)`` maps, all zero where the label holds ``num_classes``."""

    def __init__(self, keys=("pred", "label"), label_key: str = "label", num_classes: int = 2,
                 enabled: bool = True) -> None:
        super().__init__(keys)
        self.label_key, self.num_classes, self.enabled = label_key, int(num_classes), bool(enabled)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        if not self.enabled:
            return d
        outside = torch.as_tensor(d[self.label_key])[0] == self.num_classes  # (X, Y)
        for key in self.key_iterator(d):
            x = torch.as_tensor(d[key])
            if x.shape[0] != 1:
                raise ValueError(f"IgnoreOutsideFOVd: {key!r} must be a (1, X, Y) label map, got {tuple(x.shape)}.")
            idx = x.round().long().clamp(0, self.num_classes - 1)
            oh = one_hot(idx[None], self.num_classes, dim=1)[0].to(torch.uint8)  # integer: metrics keep zeros ignored
            oh[:, outside] = 0
            d[key] = oh
        return d
