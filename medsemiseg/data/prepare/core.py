"""What every ``prepare`` subcommand shares: the classes, the writers, the warnings, the staged runs.

A failed run removes what it wrote (:func:`_one_run`); the warnings a run gives are kept in the datalist's ``meta``
(:func:`_run_warnings`).
"""

from __future__ import annotations

import contextvars
import functools
import json
import os
import re
import shutil
import sys
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import torch
from monai.data import MetaTensor
from monai.transforms import Compose, Flip, Rotate90

from ..io import DataReadError, file_stem

if TYPE_CHECKING:
    from .pool import _Output

COVID_CLASSES = ["background", "ground-glass", "consolidation", "pleural effusion"]
CHASE_CLASSES = ["background", "vessel"]
#: Operations on the picture *as displayed upright* (``a[0].T``), applied identically to image and mask.
ORIENTATIONS = ("as-stored", "rot90", "rot180", "rot270", "flip-lr", "flip-ud", "transpose")
POOL_FILE = "pool.json"
DATALIST_FILE = "datalist.json"
_OUTPUT_DIRS = ("images", "labels")
MASK_SUFFIXES = ("_mask", "_label", "_labels", "_seg", "_gt")
_STAGE_PREFIX = ".prepare-partial-"  # hidden folder in --out where a run writes before it succeeds


class PrepareWarning(UserWarning):
    """A preparation went through but the result needs attention (no validation / test split, ignored masks)."""


class PrepareNote(PrepareWarning):
    """Something preparation could not check (e.g. the orientation of a mask without geometry)."""


class _Run:
    """One preparation: its staged ``--out`` (removed on failure) and the warnings it gave (kept in ``meta``)."""

    def __init__(self) -> None:
        self.outputs: list[_Output] = []
        self.warnings: list[str] = []
        self.background_masks: list[str] = []  # masks without foreground, warned together (_run_warnings)


_RUN: contextvars.ContextVar[_Run | None] = contextvars.ContextVar("medsemiseg_prepare_run", default=None)


def _one_run(fn):
    """A failed ``prepare_*`` removes what it wrote; the earlier contents of ``--out`` stay as they were."""

    @functools.wraps(fn)
    def wrapper(*args, **kwargs):
        token = _RUN.set(_Run())
        try:
            return fn(*args, **kwargs)
        except BaseException:
            for o in _RUN.get().outputs:
                o.abort()
            raise
        finally:
            _RUN.reset(token)

    return wrapper


def _warn(message: str, category: type[Warning] = PrepareWarning) -> None:
    run = _RUN.get()
    if run is not None:
        run.warnings.append(message)
    warnings.warn(message, category, stacklevel=3)


def _run_warnings() -> list[str]:
    """The warnings this run gave, after one that names every mask without foreground (:func:`_check_same_size`);
    called when the run's meta is built, once everything was read."""
    run = _RUN.get()
    if run is None:
        return []
    if run.background_masks:
        masks, run.background_masks = run.background_masks, []
        shown = ", ".join(masks[:10]) + (f", ... ({len(masks) - 10} more)" if len(masks) > 10 else "")
        _warn(
            f"{len(masks)} mask(s) hold no foreground at all (every pixel background): {shown}. Check that they are "
            "the right masks (an export that lost its labels, or a --mask-threshold above their values); images "
            "that truly show nothing to segment may stay, they teach the network that."
        )
    return list(run.warnings)


# ------------------------------------------------------------------------------------------------- small utils


def write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write JSON atomically (:func:`medsemiseg.atomic_io.atomic_write_text`: temp file + rename), so a reader never
    sees half a datalist and a full disk names the file."""
    from medsemiseg.atomic_io import atomic_write_text

    return atomic_write_text(path, json.dumps(obj, indent=1) + "\n")


def _progress(iterable, total: int | None, desc: str, enabled: bool):
    """A tqdm bar on a terminal; plain ``desc: k/N`` lines (start, every tenth, end) when stderr is a file or a
    pipe (a cluster job, nohup), where tqdm would stay silent for the whole preparation."""
    if enabled and not sys.stderr.isatty():
        return _progress_lines(iterable, total, desc)
    from tqdm.auto import tqdm

    return tqdm(iterable, total=total, desc=desc, unit="item", disable=None if enabled else True, leave=False)


def _progress_lines(iterable, total: int | None, desc: str):
    step = max(1, (total or 0) // 10)
    k = 0
    for k, item in enumerate(iterable, 1):
        if k == 1 or k % step == 0 or k == total:
            print(f"[prepare] {desc}: {k}/{total if total else '?'}", file=sys.stderr, flush=True)
        yield item
    if total is None or k != total:
        print(f"[prepare] {desc}: {k} done", file=sys.stderr, flush=True)


def orient_slice(img: MetaTensor, orientation: str) -> MetaTensor:
    """Apply an upright-display operation to a ``(C, X, Y)`` slice; the affine follows (MONAI transforms).

    ``rot90`` turns the displayed picture 90 degrees counter-clockwise (``np.rot90`` on ``a[0].T``), ``flip-lr``
    mirrors it left-right, ``flip-ud`` top-bottom, ``transpose`` swaps its rows and columns.
    """
    if orientation == "as-stored":
        return img
    if orientation not in ORIENTATIONS:
        raise ValueError(f"--orientation {orientation!r}: choose one of {', '.join(ORIENTATIONS)}.")
    if orientation.startswith("rot"):
        op = Rotate90(k=(4 - int(orientation[3:]) // 90) % 4, spatial_axes=(0, 1))  # display ccw == array cw
    elif orientation == "flip-lr":
        op = Flip(spatial_axis=0)
    elif orientation == "flip-ud":
        op = Flip(spatial_axis=1)
    else:  # transpose == flip X after a quarter turn
        op = Compose([Rotate90(k=1, spatial_axes=(0, 1)), Flip(spatial_axis=0)])
    moved = op(img)
    out = MetaTensor(moved.as_tensor().contiguous(), meta=dict(img.meta))  # drop applied_operations bookkeeping
    out.affine = torch.as_tensor(np.round(moved.affine.detach().cpu().numpy().astype(float), 10))
    return out


def _save_nifti_2d(img: torch.Tensor, path: Path, dtype) -> None:
    import nibabel as nib

    arr = np.asarray(img.detach().cpu().numpy()[0], dtype=dtype)  # (X, Y)
    affine = img.affine.detach().cpu().numpy().astype(float) if isinstance(img, MetaTensor) else np.eye(4)
    if affine.shape != (4, 4):
        affine = np.eye(4)
    nimg = nib.Nifti1Image(arr, affine)
    nimg.header.set_data_dtype(dtype)
    nimg.header.set_qform(affine, code=1)
    nimg.header.set_sform(affine, code=1)
    nib.save(nimg, str(path))


def _save_png_mask(mask: torch.Tensor, path: Path) -> None:
    from PIL import Image

    arr = mask.detach().cpu().numpy()[0]
    if arr.max(initial=0) > 255:
        raise ValueError(f"{path}: labels above 255 cannot be stored in an 8-bit PNG.")
    Image.fromarray(np.ascontiguousarray(arr.T.astype(np.uint8))).save(str(path))  # (X, Y) -> rows = Y


def _check_same_size(image: torch.Tensor, mask: torch.Tensor, image_path, mask_path) -> None:
    """Every image / mask pair's check: the same size; a mask without foreground is noted for one warning naming
    all of them (:func:`_run_warnings`)."""
    if tuple(image.shape[1:]) != tuple(mask.shape[1:]):
        raise DataReadError(
            mask_path,
            f"mask size {tuple(mask.shape[1:])} (X, Y[, Z]) differs from its image {image_path} of size "
            f"{tuple(image.shape[1:])}; image and mask must cover the same pixels.",
        )
    run = _RUN.get()
    if run is not None and not bool(torch.as_tensor(mask).any()):
        run.background_masks.append(str(mask_path))


class _Writer:
    """Names output files uniquely and records relative paths."""

    def __init__(self, out: Path):
        self.out = out
        self.used: set[str] = set()
        for d in _OUTPUT_DIRS:
            (out / d).mkdir(parents=True, exist_ok=True)

    def name(self, stem: str, ext: str) -> str:
        stem = re.sub(r"[^A-Za-z0-9_.-]+", "_", stem) or "item"
        cand, i = stem, 1
        while cand.lower() in self.used:
            cand, i = f"{stem}_{i}", i + 1
        self.used.add(cand.lower())
        return cand + ext

    def ct_pair(self, image: MetaTensor, mask: MetaTensor | None, name: str) -> dict:
        item = {"image": f"images/{name}"}
        _save_nifti_2d(image, self.out / item["image"], np.float32)
        if mask is not None:
            item["label"] = f"labels/{name}"
            _save_nifti_2d(mask, self.out / item["label"], np.uint8)
        return item

    def picture_pair(self, src: Path, mask: MetaTensor | None, name_stem: str) -> dict:
        fname = self.name(name_stem, _ext(src))
        item = {"image": f"images/{fname}"}
        shutil.copyfile(src, self.out / item["image"])
        if mask is not None:
            item["label"] = f"labels/{file_stem(fname)}.png"
            _save_png_mask(mask, self.out / item["label"])
        return item


def _ext(p: Path) -> str:
    return ".nii.gz" if p.name.lower().endswith(".nii.gz") else p.suffix.lower()
