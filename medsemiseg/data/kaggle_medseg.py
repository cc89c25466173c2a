"""Kaggle's NumPy re-packaging of the MedSeg COVID-19 CT data (the ``covid-segmentation`` competition files).

Why a separate reader: many users have this copy rather than MedSeg's NIfTI files, and its arrays are laid out
differently from everything else the package reads:

- ``images_medseg.npy`` ``(100, 512, 512, 1)``, ``images_radiopedia.npy`` ``(829, 512, 512, 1)``,
  ``test_images_medseg.npy`` ``(10, 512, 512, 1)``: slices first, then rows, columns, one channel; CT values
  (public loaders clip them to about [-1500, 500] HU);
- ``masks_medseg.npy`` / ``masks_radiopedia.npy`` ``(N, 512, 512, 4)``: one channel per class, in the order
  ground-glass, consolidation, lungs other, background.  This copy has **no pleural-effusion channel**, so class 3
  never occurs in data read from it.

``read_npy_images`` gives ``(1, X, Y, Z)`` float32 (X = columns, Y = rows, Z = slice index, MONAI's order as for a
NIfTI stack); ``read_npy_masks`` turns the one-hot channels into the covid bundle's label map (ground-glass 1,
consolidation 2, lungs other and background 0) by the public loaders' rule, the channel with the largest value
(ties: the first), reading the file memory-mapped in chunks.  Pixels where not exactly one channel is set are
counted and reported in a warning rather than silently absorbed.  The arrays carry no spacing or orientation:
check the orientation on a picture (``docs/data.md``) and use ``prepare covid --orientation`` if it is off.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from .io import DataReadError, check_finite

__all__ = ["KAGGLE_CHANNEL_CLASSES", "is_npy", "read_npy_images", "read_npy_masks"]

#: class of each mask channel: ground-glass, consolidation, lungs other, background
KAGGLE_CHANNEL_CLASSES = (1, 2, 0, 0)
_CHUNK = 16  # slices read from the memory map at a time


def is_npy(path: str | os.PathLike) -> bool:
    return Path(path).name.lower().endswith(".npy")


def _load(path: Path) -> np.ndarray:
    if not path.is_file():
        raise DataReadError(path, "no such file.")
    try:
        return np.load(str(path), mmap_mode="r", allow_pickle=False)
    except Exception as e:  # ValueError on pickled / damaged files
        raise DataReadError(path, f"not a readable NumPy array file ({type(e).__name__}: {e}).") from e


def _meta(path: Path, shape: Sequence[int]) -> dict:
    affine = np.eye(4)
    return {
        "affine": torch.as_tensor(affine),
        "original_affine": affine.copy(),
        "spacing": np.ones(3),
        "spatial_shape": np.asarray(shape),
        "filename_or_obj": str(path),
    }


def _chunks(arr: np.ndarray, path: Path | None = None):
    """``(first slice, float32 chunk of slices)`` over a memory-mapped stack, rejecting NaN / infinity."""
    for start in range(0, arr.shape[0], _CHUNK):
        chunk = np.asarray(arr[start : start + _CHUNK], dtype=np.float32)
        if not np.all(np.isfinite(chunk)):
            raise DataReadError(path, "array holds NaN or infinite values.")
        yield start, chunk


def read_npy_images(path: str | os.PathLike) -> MetaTensor:
    """A Kaggle image stack ``(N, rows, cols[, 1])`` -> ``(1, X, Y, Z)`` float32."""
    p = Path(path)
    arr = _load(p)
    if arr.ndim == 4 and arr.shape[-1] == 1:
        arr = arr[..., 0]
    if arr.ndim != 3:
        raise DataReadError(
            p, f"array of shape {arr.shape}; expected a stack of slices (N, rows, cols) or (N, rows, cols, 1)."
        )
    if not np.issubdtype(arr.dtype, np.number) or np.issubdtype(arr.dtype, np.complexfloating):
        raise DataReadError(p, f"array of dtype {arr.dtype}; expected real numbers.")
    vol = np.empty(arr.shape[2:0:-1] + (arr.shape[0],), dtype=np.float32)  # (X, Y, Z), filled chunk by chunk
    for start, chunk in _chunks(arr, p):
        vol[..., start : start + chunk.shape[0]] = chunk.transpose(2, 1, 0)
    img = MetaTensor(torch.from_numpy(vol)[None], meta=_meta(p, vol.shape))
    check_finite(img, p)  # NaN / infinite values are refused naming the file, as read_image does
    return img


def read_npy_masks(
    path: str | os.PathLike, channel_classes: Sequence[int] = KAGGLE_CHANNEL_CLASSES, num_classes: int = 4
) -> MetaTensor:
    """A Kaggle one-hot mask stack ``(N, rows, cols, C)`` -> ``(1, X, Y, Z)`` uint8 label map.

    An integer label stack ``(N, rows, cols)`` is accepted as well (values checked against ``num_classes``).
    """
    p = Path(path)
    arr = _load(p)
    if arr.ndim == 3:
        lab = np.asarray(arr)
        if not np.issubdtype(lab.dtype, np.number) or not np.array_equal(lab, np.round(lab)):
            raise DataReadError(p, "a 3-D mask stack must hold whole-number labels.")
        bad = np.setdiff1d(np.unique(lab), np.arange(num_classes))
        if bad.size:
            raise DataReadError(p, f"labels {bad[:12].tolist()} outside 0..{num_classes - 1}.")
        out = lab.astype(np.uint8).transpose(2, 1, 0)
    elif arr.ndim == 4:
        if arr.shape[-1] != len(channel_classes):
            raise DataReadError(
                p,
                f"mask of shape {arr.shape} has {arr.shape[-1]} channels; Kaggle's MedSeg masks have "
                f"{len(channel_classes)} (ground-glass, consolidation, lungs other, background).",
            )
        lut = np.asarray(channel_classes, dtype=np.uint8)
        out = np.empty(arr.shape[2:0:-1] + (arr.shape[0],), dtype=np.uint8)  # (X, Y, Z)
        not_one_hot = 0
        for start, chunk in _chunks(arr, p):
            not_one_hot += int(np.count_nonzero(np.count_nonzero(chunk > 0.5, axis=-1) != 1))
            out[..., start : start + chunk.shape[0]] = lut[np.argmax(chunk, axis=-1)].transpose(2, 1, 0)
        if not_one_hot:
            warnings.warn(
                f"{p}: {not_one_hot} of {int(np.prod(arr.shape[:3]))} pixels do not have exactly one channel set; "
                "they take the channel with the largest value (ties: the first), as the public loaders do.",
                stacklevel=2,
            )
    else:
        raise DataReadError(p, f"mask of shape {arr.shape}; expected (N, rows, cols, 4) one-hot or (N, rows, cols).")
    out = np.ascontiguousarray(out)
    return MetaTensor(torch.from_numpy(out)[None], meta=_meta(p, out.shape))
