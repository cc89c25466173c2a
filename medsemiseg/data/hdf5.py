"""HDF5 files as images and masks: the layout medical SSL code ships (SSL4MIS, UniMatch, BCP): one file per 2D slice
or 3D volume, holding the image and its label map under two keys (``image`` / ``label`` by default).

:func:`read_hdf5` reads one key of one file into this package's arrays, ``(1, X, Y)`` or ``(1, X, Y, Z)`` with
MONAI's spatial order (``docs/architecture.md``).  How the file stores its axes is said by ``axes``:

- ``"zyx"`` (the default): NumPy picture order, as SimpleITK's ``GetArrayFromImage`` and PIL give it and as
  SSL4MIS's ACDC files hold it: a 2D array is ``(rows, columns)`` = ``(Y, X)``, a 3D one ``(Z, Y, X)``;
- ``"xyz"``: nibabel's order, ``(X, Y)`` / ``(X, Y, Z)`` (SSL4MIS's left-atrium files).

HDF5 carries no geometry here: the affine is the identity and the spacing 1 (distances are in voxels).  Only grey
data are read (one value per voxel); a missing key, an unreadable file or an array of another rank is a
:class:`~medsemiseg.data.io.DataReadError` naming the file, the keys it holds and the option to change.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

from .io import DataReadError, _as_tensor_meta

__all__ = ["HDF5_AXES", "has_hdf5_key", "read_hdf5"]

#: how an HDF5 array stores its axes (module docstring)
HDF5_AXES = ("zyx", "xyz")


def _open(path: Path):
    try:
        import h5py
    except ImportError as e:  # h5py is a dependency; an install made with --no-deps lacks it
        raise DataReadError(path, "is an HDF5 file, and h5py (its reader) is not installed: pip install h5py.") from e
    try:
        return h5py.File(str(path), "r")
    except OSError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise DataReadError(
            path, f"cannot be opened as HDF5 ({first}): a damaged or truncated file, or another format named .h5; "
            "copy or export it again."
        ) from e


def _dataset_names(f) -> list[str]:
    names: list[str] = []
    f.visititems(lambda name, obj: names.append(name) if hasattr(obj, "shape") else None)
    return names


def has_hdf5_key(path: str | os.PathLike, key: str) -> bool:
    """Whether the HDF5 file at ``path`` holds an array under ``key``."""
    with _open(Path(path)) as f:
        return key in f and hasattr(f[key], "shape")


def read_hdf5(path: str | os.PathLike, key: str = "image", axes: str = "zyx", option: str = "--hdf5-image-key"):
    """The array ``key`` of the HDF5 file ``path`` as a float32 ``MetaTensor`` ``(1, X, Y)`` or ``(1, X, Y, Z)``.

    ``axes`` says how the file stores them (module docstring); ``option`` is the setting named when ``key`` is
    missing.  ``meta["hdf5_key"]`` and ``meta["hdf5_dtype"]`` record what was read (an 8-bit image keeps
    ``uint8``, which ``prepare folder`` takes as 0-255 grey values)."""
    p = Path(path)
    if axes not in HDF5_AXES:
        raise DataReadError(p, f"HDF5 axes {axes!r}: give one of {', '.join(HDF5_AXES)} (--hdf5-axes).")
    with _open(p) as f:
        if key not in f or not hasattr(f[key], "shape"):
            held = _dataset_names(f)
            raise DataReadError(
                p, f"holds no array {key!r} (it holds {held or 'no arrays'}); name the key with {option}"
                + (f" (e.g. {option} {held[0]})." if held else ".")
            )
        try:
            raw = np.asarray(f[key][()])
        except OSError as e:
            raise DataReadError(p, f"array {key!r} cannot be read ({e}): a truncated file? Copy it again.") from e
    if raw.ndim not in (2, 3) or raw.dtype.kind not in "biuf":
        raise DataReadError(
            p, f"array {key!r} has shape {raw.shape} and type {raw.dtype}; a grey 2D slice or 3D volume of numbers "
            "is expected (one value per voxel, no colour channels)."
        )
    arr = raw.T if axes == "zyx" else raw  # (Y, X) -> (X, Y); (Z, Y, X) -> (X, Y, Z)
    meta = {"affine": np.eye(4), "original_affine": np.eye(4), "spacing": np.ones(arr.ndim),
            "hdf5_key": key, "hdf5_dtype": str(raw.dtype)}
    return _as_tensor_meta(p, arr.astype(np.float32)[None], meta)
