"""``prepare chase``: the CHASE_DB1 fundus photographs (``Image_01L.jpg`` + ``Image_01L_1stHO.png``) in the
data set's own protocol split."""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import PICTURE_SUFFIXES, DataReadError, file_stem, read_image, read_mask
from ..splits import chase_protocol_split, parse_fraction, resolve_count
from .core import (
    CHASE_CLASSES,
    _check_same_size,
    _one_run,
    _progress,
    _run_warnings,
    _warn,
    _Writer,
)
from .covid import _expand_inputs, _unlabeled_slices
from .pool import _check_plan, _holdout, _Output


def _check_chase_rgb(img: torch.Tensor, path: Path) -> None:
    """CHASE images, labelled or unlabelled, must be RGB (3 channels): the pictures are copied as is and one
    training batch stacks them, so a grey (1-channel) picture would crash training; refuse it here, named."""
    if int(img.shape[0]) != 3:
        kind = {1: "grey (1 channel)", 4: "RGBA"}.get(int(img.shape[0]), f"{int(img.shape[0])} channels")
        raise DataReadError(
            path,
            f"is {kind}, but CHASE_DB1 images must be RGB (3 channels) like the labelled fundus photographs; "
            "`prepare chase` copies pictures as they are and does not convert them. Convert it to RGB first (e.g. "
            "PIL: Image.open(path).convert('RGB').save(...), which repeats grey values into R, G and B).",
        )


_CHASE_RE = re.compile(r"^Image_(\d+)([LR])\.(jpe?g|png|tiff?)$", re.IGNORECASE)


@_one_run
def prepare_chase(
    src_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    protocol: str = "20/8",
    observer: str = "1stHO",
    unlabeled: Sequence[str | os.PathLike] = (),
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0,
    val_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """CHASE_DB1 (``Image_01L.jpg`` ... with ``Image_01L_1stHO.png`` masks) -> images + 0/1 PNG masks.

    Train / test by the sorted-name ``protocol`` (``"20/8"`` default: 01L-10R train, 11L-14R test; ``"8/20"``
    older: the same 8 images in the opposite role, 11L-14R train, 01L-10R test).  With ``val_fraction``
    0 (default) the validation list *is* the test list (mmsegmentation's convention on this tiny data set);
    otherwise that share of the training images is held out, whole children (L and R eye) at a time.
    Masks: channel 0, >= 128 -> vessel (palette PNGs by their palette colour).  Every image, labelled or
    ``unlabeled``, must be RGB (a grey picture is refused, named).  Returns the path of ``datalist.json``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, "is not a folder; give the CHASE_DB1 folder holding Image_01L.jpg ...")
    if observer not in ("1stHO", "2ndHO"):
        raise ValueError(f"--observer {observer!r}: choose 1stHO (usual ground truth) or 2ndHO.")
    images = sorted(p for p in src.iterdir() if _CHASE_RE.match(p.name))
    if not images:
        raise DataReadError(src, "holds no CHASE_DB1 images (Image_01L.jpg ... Image_14R.jpg).")
    if len(images) != 28:
        _warn(f"{src}: {len(images)} CHASE_DB1 images instead of 28; protocol {protocol} scaled.")
    extra = _expand_inputs(unlabeled)
    source = str(src.resolve())
    train_names, test_names = chase_protocol_split([p.name for p in images], protocol)
    parse_fraction(labeled_fraction)
    child = {p.name: f"child{int(_CHASE_RE.match(p.name).group(1)):02d}" for p in images}
    _check_plan([(child[n], 1) for n in train_names], val_fraction, 0, val_seed, labeled_fraction, f"{src}: ")
    dest = _Output(out, "chase", source, overwrite, [src, *extra])
    writer = _Writer(dest.stage)
    items: dict[str, dict] = {}
    for p in _progress(images, len(images), "chase", progress):
        stem = file_stem(p)
        candidates = [q for q in src.glob(f"{stem}_{observer}.*") if q.suffix.lower() in PICTURE_SUFFIXES]
        if not candidates:
            raise DataReadError(p, f"has no {observer} mask (expected {src / (stem + '_' + observer + '.png')}).")
        img = read_image(p)
        _check_chase_rgb(img, p)
        lab = read_mask(candidates[0], len(CHASE_CLASSES), threshold=128, channel=0, dtype=torch.uint8)
        _check_same_size(img, lab, p, candidates[0])
        child = _CHASE_RE.match(p.name).group(1)
        items[p.name] = {**writer.picture_pair(p, lab, stem), "group": f"child{int(child):02d}"}
    train = [items[n] for n in train_names]
    test = [items[n] for n in test_names]
    if resolve_count(val_fraction, len(train), name="--val-fraction") > 0:
        train, val, _ = _holdout(train, val_fraction, 0, val_seed, f"{src}: ")
        val_is_test = False
    else:
        val, val_is_test = list(test), True
    extra_items = _unlabeled_slices(extra, writer, "as-stored", progress, check=_check_chase_rgb)
    pool = {
        "meta": {
            "task": "chase",
            "classes": CHASE_CLASSES,
            "source": source,
            "inputs": {"src_dir": source, "unlabeled": [str(p.resolve()) for p in extra]},
            "protocol": protocol,
            "observer": observer,
            "val_fraction": val_fraction,
            "validation_is_test": val_is_test,
            "val_seed": int(val_seed),
            "format": "fundus pictures copied as is (RGB 0-255), masks 0/1 PNG",
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)
