"""Slices of 3D inputs, and the dictionary transform the bundles read items with.

:func:`iter_slices` cuts a volume into its 2D ``(C, X, Y)`` slices (each with its own origin in the affine);
:class:`LazySlice` is one such slice of an inference input, read only when :class:`LoadSliced` meets it, so a folder of
studies is listed without holding every volume; :class:`LoadSliced` is what the bundles' ``preprocessing`` reads
images, labels and field-of-view masks with (:func:`medsemiseg.data.io.read_image` / ``read_mask`` underneath);
:func:`item_value` unwraps one field of a decollated inference item.
"""

from __future__ import annotations

import os
from collections.abc import Hashable, Iterator, Mapping
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor
from monai.transforms import MapTransform

from .io import DataReadError, check_label_values, read_image, read_mask

__all__ = ["LazySlice", "LoadSliced", "item_value", "iter_slices", "num_slices"]


def num_slices(img: torch.Tensor) -> int:
    """Number of 2D slices in a ``(C, X, Y)`` (1) or ``(C, X, Y, Z)`` (Z) array."""
    return 1 if img.ndim == 3 else int(img.shape[-1])


#: per-volume metadata that a 2D slice does not carry
_VOLUME_ONLY_META = ("slice_positions", "slice_spacing_deviation")


def _slice(img: MetaTensor, k: int) -> MetaTensor:
    meta = {m: v for m, v in img.meta.items() if m not in _VOLUME_ONLY_META}
    out = MetaTensor(img.as_tensor()[..., k].clone(), meta=meta)
    affine = img.affine.detach().cpu().numpy().astype(float)
    positions = img.meta.get("slice_positions")
    if positions is not None and len(positions) == img.shape[-1]:
        affine[:3, 3] = np.asarray(positions[k], dtype=float)  # the slice's true origin (unevenly spaced series)
    else:
        affine[:3, 3] = affine[:3, 3] + affine[:3, 2] * k  # origin of slice k; in-plane spacing unchanged
    out.affine = torch.as_tensor(affine)
    out.meta["spacing"] = np.asarray(img.meta.get("spacing", np.ones(3)), dtype=float)[:2]
    out.meta["slice_index"] = k
    return out


def item_value(value: Any) -> Any:
    """One field of a decollated inference item as a plain value: a one-element tensor or list (how MONAI's data
    loader batches ``name``, ``slice``, ``affine``...) unwrapped, a larger tensor as a NumPy array."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.detach().cpu().numpy()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return item_value(value[0])
    return value


class LazySlice:
    """Slice ``index`` of a 3D input, read only when a transform asks for it (:class:`LoadSliced` does).

    Inference over a folder of studies lists every slice up front (the data loader needs the count), but must not
    hold every study in memory while it does: one 300-slice 512 x 512 CT is ~300 MB as float32, fifty of them
    would not fit. A ``LazySlice`` names its input (``key``) and how to read it (``reader``: a picklable callable
    returning the ``(C, X, Y, Z)`` volume). The last volume read is kept, per process, so the slices of one input,
    asked for one after another (the inference order), read it once; :meth:`forget` drops it.
    """

    _last: tuple[str, MetaTensor] | None = None

    def __init__(self, key: str, reader: Any, index: int) -> None:
        self.key = str(key)
        self.reader = reader
        self.index = int(index)

    @classmethod
    def remember(cls, key: str, volume: MetaTensor) -> None:
        """Keep ``volume`` as the last one read (the first input of an inference run is read to list its slices)."""
        cls._last = (str(key), volume)

    @classmethod
    def forget(cls) -> None:
        """Drop the kept volume (end of an inference run)."""
        cls._last = None

    def volume(self) -> MetaTensor:
        last = LazySlice._last
        if last is None or last[0] != self.key:
            LazySlice._last = None  # let the previous volume go before the next one is read
            vol = self.reader()
            if not isinstance(vol, MetaTensor):
                vol = MetaTensor(vol)
            if vol.ndim != 4 or not -vol.shape[-1] <= self.index < vol.shape[-1]:
                raise DataReadError(
                    self.key, f"has shape {tuple(vol.shape)}; slice {self.index} of a 3D input was asked for (did the "
                    "file change since the run listed it?).",
                )
            LazySlice._last = last = (self.key, vol)
        return last[1]

    def load(self) -> MetaTensor:
        """The slice as :func:`iter_slices` gives it (``(C, X, Y)``, affine moved to the slice)."""
        return _slice(self.volume(), self.index)

    def __repr__(self) -> str:
        return f"LazySlice({self.key!r}, slice {self.index})"


def iter_slices(img: str | os.PathLike | torch.Tensor, *, label: bool = False, **mask_kwargs) -> Iterator[MetaTensor]:
    """Yield the 2D ``(C, X, Y)`` slices (``meta["slice_index"]`` = k) of an image, a stack or a path to one.

    The affine of slice ``k`` is the volume's, moved to that slice (for a DICOM series: to the slice's own
    ``ImagePositionPatient``, ``meta["slice_positions"]``, so unevenly spaced slices land where they were taken), so a
    prediction saved with it lands where the slice came from.  A 2D input yields itself once.
    """
    if not isinstance(img, torch.Tensor):
        img = read_mask(img, **mask_kwargs) if label else read_image(img)
    if not isinstance(img, MetaTensor):
        img = MetaTensor(img)
    if img.ndim == 3:
        yield img
        return
    if img.ndim != 4:
        raise DataReadError(img.meta.get("filename_or_obj"), f"expected (C, X, Y[, Z]) data, got {tuple(img.shape)}.")
    for k in range(img.shape[-1]):
        yield _slice(img, k)


# ------------------------------------------------------------------------------------------------- transforms


class LoadSliced(MapTransform):
    """Load each key's file into a channel-first 2D ``MetaTensor`` ``(C, X, Y)`` (MONAI dictionary transform).

    Args:
        keys: keys to load (e.g. ``["image", "label"]``).
        label_keys: which of ``keys`` are masks (read with :func:`read_mask`, validated).
        num_classes: declared classes; mask values outside ``0..num_classes-1`` raise an error naming the file.
        mask_threshold: binarise masks at this value (CHASE_DB1-style PNGs: 128); ``None`` keeps integer labels.
        mask_channel: channel of multi-channel mask pictures to use.
        slice_index: for a 3D input, the slice to take; ``None`` accepts only single-slice inputs (use
            :func:`iter_slices` to run over a whole volume).
        label_dtype: dtype of loaded masks (``torch.int64`` suits cross-entropy / one-hot).
        allow_missing_keys: as in MONAI (unlabelled items have no ``"label"``).

    Values that are already tensors / arrays pass through (as ``MetaTensor``), so slices produced by
    :func:`iter_slices` can go through the same pipeline.  When an image and a mask are both loaded, their
    spatial sizes must match.
    """

    def __init__(
        self,
        keys: KeysCollection,
        label_keys: KeysCollection | None = ("label",),
        num_classes: int | None = None,
        mask_threshold: float | None = None,
        mask_channel: int = 0,
        slice_index: int | None = None,
        label_dtype: torch.dtype | str = torch.int64,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        self.label_keys = set() if label_keys is None else {label_keys} if isinstance(label_keys, str) else set(label_keys)
        self.num_classes = None if num_classes is None else int(num_classes)
        self.mask_threshold = mask_threshold
        self.mask_channel = int(mask_channel)
        self.slice_index = slice_index
        self.label_dtype = getattr(torch, label_dtype) if isinstance(label_dtype, str) else label_dtype

    def _to_2d(self, img: MetaTensor, key: Hashable) -> MetaTensor:
        if img.ndim == 3:
            return img
        name = img.meta.get("filename_or_obj", key)
        if self.slice_index is not None:
            if not -img.shape[-1] <= self.slice_index < img.shape[-1]:
                raise DataReadError(name, f"slice_index {self.slice_index} out of range for {img.shape[-1]} slices.")
            return _slice(img, self.slice_index % img.shape[-1])
        raise DataReadError(
            name,
            f"is a stack of {img.shape[-1]} slices; LoadSliced gives 2D items. Prepare the volume into slices "
            "(python -m medsemiseg.prepare), or pass slice_index, or iterate with medsemiseg.data.iter_slices.",
        )

    def __call__(self, data: Mapping[Hashable, Any]) -> dict[Hashable, Any]:
        d = dict(data)
        spatial: dict[Hashable, tuple] = {}
        for key in self.key_iterator(d):
            value = d[key]
            is_label = key in self.label_keys
            if isinstance(value, (str, os.PathLike)):
                if is_label:
                    img = read_mask(
                        value, self.num_classes, threshold=self.mask_threshold, channel=self.mask_channel,
                        dtype=self.label_dtype,
                    )
                else:
                    img = read_image(value)
                img = self._to_2d(img, key)
            elif isinstance(value, LazySlice):
                img = value.load()
            else:
                img = value if isinstance(value, MetaTensor) else MetaTensor(torch.as_tensor(np.asarray(value)))
                if is_label and self.num_classes is not None:
                    check_label_values(img.detach().cpu().numpy(), self.num_classes, img.meta.get("filename_or_obj"))
            d[key] = img
            spatial[key] = tuple(img.shape[1:])
        if len(set(spatial.values())) > 1:
            lab = next((k for k in spatial if k in self.label_keys), list(spatial)[-1])
            other = next(k for k in spatial if spatial[k] != spatial[lab])
            raise DataReadError(
                _name_of(d[lab], data.get(lab)),
                f"size {spatial[lab]} (X, Y) differs from {other!r} {_name_of(d[other], data.get(other))} of size "
                f"{spatial[other]}; a mask must have its image's size.",
            )
        return d


def _name_of(img: Any, fallback: Any) -> str:
    if isinstance(img, MetaTensor) and img.meta.get("filename_or_obj"):
        return str(img.meta["filename_or_obj"])
    return str(fallback)
