"""Patch training for images too large, or structures too thin, to shrink: fundus photographs at their own size.

A retinal vessel is 1-10 pixels wide in a 565 x 584 DRIVE photograph; resizing the photograph to a network input of
192 x 192 erases the thin ones.  With ``patch_size`` set, a bundle instead

- keeps every image at its own size through preprocessing (:func:`whole_image_size` gives ``Resized`` the
  size ``(-1, -1)``, MONAI's "keep this axis"),
- trains on random patches (:class:`RandPatchd`, a share of them centred on foreground pixels -- vessels -- as
  MONAI's ``RandCropByPosNegLabeld`` draws them; unlabelled images get uniformly placed patches), so every method,
  the mixing ones and SUFD included, sees batches of ``patch_size`` patches,
- and validates, evaluates and infers with MONAI's ``SlidingWindowInferer`` over each whole image
  (``roi_size=patch_size``; overlap, blending and windows per batch are bundle keys).
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence
from typing import Any

import numpy as np
from monai.config import KeysCollection
from monai.transforms import MapTransform, RandCropByPosNegLabeld, Randomizable, RandSpatialCropd

__all__ = ["RandPatchd", "check_patch_size", "whole_image_size"]


def check_patch_size(patch_size: Any) -> list[int] | None:
    """``None`` (whole-image training) or two positive whole numbers; anything else names the key and the fix."""
    if patch_size is None or (isinstance(patch_size, str) and patch_size.strip().lower() in ("", "none", "null")):
        return None
    try:
        size = [int(v) for v in patch_size]
        ok = len(size) == 2 and all(v > 0 and float(v) == float(o) for v, o in zip(size, patch_size))
    except (TypeError, ValueError):
        ok = False
    if not ok:
        raise ValueError(
            f"patch_size={patch_size!r}: give two positive whole numbers, e.g. --patch_size \"[128,128]\", or null "
            "to train on whole images resized to image_size."
        )
    return size


def whole_image_size(image_size: Sequence[int], patch_size: Sequence[int] | None) -> list[int]:
    """The ``spatial_size`` the bundles' ``Resized`` brings each whole image to: ``image_size``, or, when training on
    patches, ``[-1, -1]`` (MONAI: keep each axis as it is), so images keep their own resolution."""
    return [-1, -1] if check_patch_size(patch_size) else [int(v) for v in image_size]


class RandPatchd(Randomizable, MapTransform):
    """A random ``spatial_size`` patch of every key; labelled items favour foreground, unlabelled ones are uniform.

    Args:
        keys: keys cropped together (image and label).
        spatial_size: patch size ``(X, Y)``; images must be at least that large (pad them first:
            :func:`medsemiseg.transforms.views.weak_transforms` does).
        label_key: the label map; when an item has it, the patch centre is a foreground pixel (label > 0) with
            probability ``foreground_share`` and a background pixel otherwise (MONAI ``RandCropByPosNegLabeld``
            with ``pos=foreground_share``, ``neg=1-foreground_share``); an item without it (an unlabelled image)
            gets a uniformly placed patch (``RandSpatialCropd``).
        foreground_share: share of labelled patches centred on foreground, in ``[0, 1]``.
        allow_missing_keys: skip keys an item lacks (unlabelled items have no label), so one transform serves both.

    One dict in, one dict out (``RandCropByPosNegLabeld``'s list of one sample is unwrapped), so it composes with
    the other weak-view transforms and batches like any item.
    """

    def __init__(
        self,
        keys: KeysCollection,
        spatial_size: Sequence[int],
        label_key: str = "label",
        foreground_share: float = 0.5,
        allow_missing_keys: bool = True,
    ) -> None:
        MapTransform.__init__(self, keys, allow_missing_keys)
        share = float(foreground_share)
        if not 0.0 <= share <= 1.0:
            raise ValueError(f"RandPatchd(foreground_share={foreground_share}) must be a share in [0, 1].")
        self.label_key = label_key
        self.foreground_share = share
        size = [int(v) for v in spatial_size]
        self.labelled = RandCropByPosNegLabeld(
            keys, label_key=label_key, spatial_size=size, pos=share, neg=1.0 - share, num_samples=1,
            allow_missing_keys=allow_missing_keys,
        )
        self.unlabelled = RandSpatialCropd(keys, roi_size=size, random_size=False, allow_missing_keys=allow_missing_keys)

    def set_random_state(self, seed: int | None = None, state: np.random.RandomState | None = None) -> RandPatchd:
        super().set_random_state(seed, state)
        self.labelled.set_random_state(seed, state)
        self.unlabelled.set_random_state(seed, state)
        return self

    def randomize(self, data: Any = None) -> None:  # the inner croppers draw their own positions
        pass

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        if self.label_key in data:
            return dict(self.labelled(data)[0])
        return dict(self.unlabelled(data))
