"""Field of view of a fundus photograph, so evaluation can ignore the black surround.

The vessel literature scores inside the field of view (FOV) only, where the black corners (a third of the picture)
would otherwise add easy background pixels. DRIVE ships a FOV mask per photograph; ``prepare drive`` keeps it as
each item's ``fov`` key. CHASE_DB1 ships none (DATA.md): its FOV is derived from the image: pixels brighter than
``threshold`` (0-255 scale) in the red channel, the brightest of the fundus, with holes filled (dark vessels or
lesions inside the disc stay in).

Evaluation uses it through the label: :class:`FundusFOVd` sets the label (and a second observer's mask) outside the
FOV to ``num_classes`` (a value no class has), and :class:`IgnoreOutsideFOVd`, after the prediction is resized back,
turns prediction and labels into one-hot maps that are all zero there, so the per-class counts of
:mod:`medsemiseg.metrics` leave those pixels out.

The bundles' ``eval_fov`` (:func:`fov_mode`): ``auto`` (default) scores inside the data set's own FOV masks when
its items carry them and everywhere otherwise; ``true`` also derives a FOV from each image that has no mask;
``false`` scores every pixel.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Any

import numpy as np
import torch
from monai.networks.utils import one_hot
from monai.transforms import MapTransform

__all__ = ["fov_mode", "fundus_fov", "FundusFOVd", "IgnoreOutsideFOVd"]

FOV_MODES = ("auto", "true", "false")


def fov_mode(value: Any) -> str:
    """``eval_fov`` as ``"auto"``, ``"true"`` or ``"false"`` (switch spellings as :func:`medsemiseg.bundle.settings.as_bool`)."""
    text = str(value).strip().lower()
    if text == "auto":
        return "auto"
    if text in ("true", "1", "yes", "on"):
        return "true"
    if text in ("false", "0", "no", "off", "none", "null"):
        return "false"
    raise ValueError(
        f"eval_fov={value!r}: use auto (the data set's field-of-view masks when it has them), true (also derive one "
        "from each fundus photograph without a mask) or false (score every pixel)."
    )


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
    """Mark the labels outside the field of view with the value ``num_classes`` (before any resizing).

    Args:
        keys: the label maps to mark (the ground truth, and a second observer's mask when present).
        image_key: the image a FOV is derived from (mode ``"true"``, items without ``fov_key``).
        fov_key: the item's own FOV mask (0/1, loaded), e.g. DRIVE's.
        num_classes: the marker value (no class has it).
        threshold: red-channel threshold of the derived FOV (0-255 scale).
        mode: :func:`fov_mode`: ``"auto"`` uses ``fov_key`` when the item has it; ``"true"`` also derives one from
            an RGB image; ``"false"`` does nothing. ``enabled`` (a bool) is the older spelling of true/false.

    Both bundles carry it (their configs differ only in task keys); deriving a FOV from a non-RGB image (CT) is
    refused."""

    def __init__(self, keys="label", image_key: str = "image", num_classes: int = 2, threshold: float = 20.0,
                 enabled: bool | None = None, allow_missing_keys: bool = True, fov_key: str = "fov",
                 mode: Any = "true") -> None:
        super().__init__(keys, allow_missing_keys)
        self.image_key, self.num_classes, self.threshold = image_key, int(num_classes), float(threshold)
        self.fov_key = fov_key
        self.mode = fov_mode(mode if enabled is None else enabled)

    def _fov(self, d: Mapping) -> torch.Tensor | None:
        if self.mode == "false":
            return None
        if self.fov_key in d:
            return torch.as_tensor(d[self.fov_key])[0] > 0
        if self.mode == "auto":
            return None
        if d[self.image_key].shape[0] != 3:
            raise ValueError(
                f"eval_fov true derives a field of view from RGB fundus photographs (the chase bundle); this image "
                f"has {d[self.image_key].shape[0]} channel(s). Leave eval_fov auto or false for CT."
            )
        return torch.as_tensor(fundus_fov(d[self.image_key], self.threshold))

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict:
        d = dict(data)
        fov = self._fov(d)
        if fov is None:
            return d
        for key in self.key_iterator(d):
            label = d[key]
            if tuple(label.shape[-2:]) != tuple(fov.shape):
                raise ValueError(f"FundusFOVd: {key!r} {tuple(label.shape)} and the field of view {tuple(fov.shape)} "
                                 "differ in size.")
            out = label.clone()
            out[..., ~fov.to(out.device)] = self.num_classes
            d[key] = out
        return d


class IgnoreOutsideFOVd(MapTransform):
    """Prediction and labels as one-hot ``(K, X, Y)`` maps, all zero where the label holds ``num_classes``.

    ``keys`` may include a second observer's mask (skipped when an item lacks it); ``enabled`` is a switch or a
    :func:`fov_mode` (anything but ``"false"`` converts: with no marked pixel the one-hot maps score as the label
    maps would)."""

    def __init__(self, keys=("pred", "label"), label_key: str = "label", num_classes: int = 2,
                 enabled: Any = True, allow_missing_keys: bool = True) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_key, self.num_classes = label_key, int(num_classes)
        self.enabled = fov_mode(enabled) != "false"

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
