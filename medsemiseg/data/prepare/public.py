"""``prepare drive`` and ``prepare covid-semiseg``: two public data sets, read in their own published layouts.

Both write what every ``prepare`` subcommand writes (:mod:`medsemiseg.data.prepare`: ``images/``, ``labels/``,
``pool.json``, ``datalist.json``), so the bundles, the benchmark grid and ``resplit_prepared`` treat them like any
other prepared folder.  What they add to an item, beyond ``image`` and ``label``:

- ``fov``: the data set's own field-of-view mask (DRIVE), 0/1 PNG; ``evaluating`` scores inside it.
- ``second_observer``: a second annotator's mask of a test item (DRIVE ``test/2nd_manual``), 0/1 PNG;
  ``evaluating`` scores it against ``label`` the same way, as the human agreement a method can be held to.

And to ``meta``: ``classes`` (their number sets the network's outputs) and ``intensity``, the kind of values the
images hold: ``"uint8"`` (8-bit display values, 0-255: photographs, and COVID-SemiSeg's CT slices, which were
windowed and saved as JPG) as opposed to ``"hu"`` (CT in Hounsfield units, ``prepare covid``).  The covid bundle
reads it to choose between its HU window and a plain 0-255 scaling (:mod:`medsemiseg.data.declared`).
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import PICTURE_SUFFIXES, DataReadError, file_stem, read_image, read_mask
from ..splits import parse_fraction
from .core import (
    _check_same_size,
    _one_run,
    _progress,
    _run_warnings,
    _save_png_mask,
    _Writer,
)
from .pool import _check_plan, _holdout, _Output, _warn_splits

__all__ = ["DRIVE_CLASSES", "COVID_SEMISEG_CLASSES", "prepare_drive", "prepare_covid_semiseg"]

DRIVE_CLASSES = ["background", "vessel"]
COVID_SEMISEG_CLASSES = ["background", "ground-glass", "consolidation"]


def _pictures(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in PICTURE_SUFFIXES
                  and not p.name.startswith("."))


def _need_dir(path: Path, what: str, root: Path, layout: str) -> Path:
    if not path.is_dir():
        raise DataReadError(path, f"not found: {root} should hold {what} ({layout}).")
    return path


def _write_mask(writer: _Writer, mask: torch.Tensor, stem: str, suffix: str) -> str:
    rel = f"labels/{stem}{suffix}.png"
    _save_png_mask(mask, writer.out / rel)
    return rel


def _check_not_empty_fov(fov: torch.Tensor, path: Path) -> None:
    if not bool(fov.any()):
        raise DataReadError(path, "field-of-view mask is empty (all 0): scoring inside it would score nothing. "
                                  "Replace it with the data set's original mask.")


# ------------------------------------------------------------------------------------------------------- DRIVE

_DRIVE_LAYOUT = "DRIVE's public layout: training/{images,1st_manual,mask}, test/{images,1st_manual,2nd_manual,mask}"
_DRIVE_IMAGE = re.compile(r"^(\d+)_(training|test)$", re.IGNORECASE)


def _drive_partner(folder: Path, number: str, pattern: str, image: Path, what: str) -> Path:
    """The file of ``folder`` named ``pattern.format(number)`` with any picture extension (DRIVE ships GIFs)."""
    stem = pattern.format(number)
    found = [p for p in folder.iterdir() if file_stem(p).lower() == stem.lower() and p.suffix.lower() in PICTURE_SUFFIXES]
    if not found:
        raise DataReadError(image, f"has no {what} (expected {folder / (stem + '.gif')}); every DRIVE photograph "
                                   "needs its manual vessel mask and its field-of-view mask. Restore the file from "
                                   "the original DRIVE archive, or remove the photograph.")
    return found[0]


def _drive_items(src: Path, split: str, writer: _Writer, progress: bool, second: bool) -> list[dict]:
    root = _need_dir(src / split, f"a {split}/ folder", src, _DRIVE_LAYOUT)
    images_dir = _need_dir(root / "images", f"{split}/images/", src, _DRIVE_LAYOUT)
    manual_dir = _need_dir(root / "1st_manual", f"{split}/1st_manual/", src, _DRIVE_LAYOUT)
    fov_dir = _need_dir(root / "mask", f"{split}/mask/", src, _DRIVE_LAYOUT)
    second_dir = root / "2nd_manual" if second and (root / "2nd_manual").is_dir() else None
    images = [p for p in _pictures(images_dir) if _DRIVE_IMAGE.match(file_stem(p))]
    if not images:
        raise DataReadError(images_dir, f"holds no DRIVE photographs (NN_{split}.tif); {_DRIVE_LAYOUT}.")
    items = []
    for p in _progress(images, len(images), f"drive {split}", progress):
        number = _DRIVE_IMAGE.match(file_stem(p)).group(1)
        manual = _drive_partner(manual_dir, number, "{}_manual1", p, f"manual vessel mask in {manual_dir}")
        fov_path = _drive_partner(fov_dir, number, "{}_" + split + "_mask", p, f"field-of-view mask in {fov_dir}")
        img = read_image(p)
        if int(img.shape[0]) != 3:
            raise DataReadError(p, f"has {int(img.shape[0])} channel(s); DRIVE photographs are RGB. Use the "
                                   "original file from the DRIVE archive.")
        lab = read_mask(manual, len(DRIVE_CLASSES), threshold=128, channel=0, dtype=torch.uint8)
        fov = read_mask(fov_path, 2, threshold=128, channel=0, dtype=torch.uint8)
        _check_same_size(img, lab, p, manual)
        _check_same_size(img, fov, p, fov_path)
        _check_not_empty_fov(fov, fov_path)
        item = writer.picture_pair(p, lab, file_stem(p))
        stem = file_stem(item["image"])
        item.update(fov=_write_mask(writer, fov, stem, "_fov"), group=stem)
        if second_dir is not None:
            found = [q for q in second_dir.iterdir() if file_stem(q).lower() == f"{number}_manual2"]
            if found:
                lab2 = read_mask(found[0], len(DRIVE_CLASSES), threshold=128, channel=0, dtype=torch.uint8)
                _check_same_size(img, lab2, p, found[0])
                item["second_observer"] = _write_mask(writer, lab2, stem, "_observer2")
        items.append(item)
    return items


@_one_run
def prepare_drive(
    src_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0.2,
    val_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """DRIVE (Staal et al. 2004) in its public layout -> photographs, vessel masks, FOV masks, a datalist.

    The 20 training photographs are the pool: ``val_fraction`` of them (default 0.2: 4) are held out for
    validation (``--val-fraction 0`` validates on the test split, CHASE_DB1's convention), and ``labeled_fraction``
    of the rest is labelled (1/8 of 16: 2 photographs), the others unlabelled.  The 20 test photographs are the
    test split, scored against ``1st_manual``; their ``2nd_manual`` masks become each item's ``second_observer``.
    Every item carries its field-of-view mask as ``fov``.  Masks are read as pixel >= 128 -> vessel (DRIVE's GIFs
    hold 0/255; the second observer's are palette GIFs, read by their colours).  Returns ``datalist.json``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, f"is not a folder; give the DRIVE folder holding training/ and test/ ({_DRIVE_LAYOUT}).")
    parse_fraction(labeled_fraction)
    train_images = _need_dir(src / "training" / "images", "training/images/", src, _DRIVE_LAYOUT)
    n_train = sum(1 for p in _pictures(train_images) if _DRIVE_IMAGE.match(file_stem(p)))
    _check_plan([(f"train{i}", 1) for i in range(max(n_train, 1))], val_fraction, 0, val_seed, labeled_fraction,
                f"{src}: ")
    source = str(src.resolve())
    dest = _Output(out, "drive", source, overwrite, [src])
    writer = _Writer(dest.stage)
    train = _drive_items(src, "training", writer, progress, second=False)
    test = _drive_items(src, "test", writer, progress, second=True)
    if val_fraction and float(val_fraction) > 0:
        train, val, _ = _holdout(train, val_fraction, 0, val_seed, f"{src}: ")
        val_is_test = False
    else:
        val, val_is_test = list(test), True
    _warn_splits(str(src), val, test)
    pool = {
        "meta": {
            "task": "drive",
            "classes": DRIVE_CLASSES,
            "in_channels": 3,
            "intensity": "uint8",
            "source": source,
            "inputs": {"src_dir": source},
            "val_fraction": val_fraction,
            "validation_is_test": val_is_test,
            "val_seed": int(val_seed),
            "format": "fundus photographs copied as is (RGB 0-255); vessel, field-of-view and second-observer "
                      "masks 0/1 PNG",
            "citation": "Staal et al., Ridge-based vessel segmentation in color images of the retina, IEEE TMI "
                        "23(4), 2004",
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": [],
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)


# ----------------------------------------------------------------------------------------------- COVID-SemiSeg

_COVID_SS_LAYOUT = ("Inf-Net's layout: TrainingSet/MultiClassInfection-Train/{Imgs,GT}, "
                    "TestingSet/MultiClassInfection-Test/{Imgs,GT}, TrainingSet/LungInfection-Train/Pseudo-label/Imgs")


def _paired(imgs_dir: Path, gt_dir: Path) -> list[tuple[Path, Path]]:
    """``Imgs/<n>.jpg`` with ``GT/<n>.png``; any image or mask without its partner is one error listing them."""
    images = {file_stem(p): p for p in _pictures(imgs_dir)}
    masks = {file_stem(p): p for p in _pictures(gt_dir)}
    if not images:
        raise DataReadError(imgs_dir, f"holds no images; {_COVID_SS_LAYOUT}.")
    lonely_images = sorted(set(images) - set(masks))
    lonely_masks = sorted(set(masks) - set(images))
    if lonely_images or lonely_masks:
        def shown(names: Sequence[str]) -> str:
            return ", ".join(names[:6]) + (f", ... ({len(names)} in all)" if len(names) > 6 else "")

        parts = []
        if lonely_images:
            parts.append(f"images without a mask in {gt_dir}: {shown(lonely_images)}")
        if lonely_masks:
            parts.append(f"masks without an image in {imgs_dir}: {shown(lonely_masks)}")
        raise DataReadError(
            imgs_dir.parent,
            f"Imgs/ holds {len(images)} images and GT/ {len(masks)} masks, paired by name: {'; '.join(parts)}. "
            "Restore the missing files or remove their partners.",
        )
    return [(images[k], masks[k]) for k in sorted(images, key=_natural)]


def _natural(name: str) -> tuple:
    return tuple(int(t) if t.isdigit() else t for t in re.split(r"(\d+)", name))


def _covid_ss_items(pairs: Sequence[tuple[Path, Path]], writer: _Writer, progress: bool, split: str) -> list[dict]:
    """Slices named ``<split>_<name>``: the training and the test set both number theirs from 0."""
    items = []
    for image, mask in _progress(pairs, len(pairs), f"covid-semiseg {split}", progress):
        img = read_image(image)
        if int(img.shape[0]) != 1:
            raise DataReadError(image, f"has {int(img.shape[0])} channels; COVID-SemiSeg's CT slices are grey. "
                                       "Convert it to one channel (PIL: Image.open(path).convert('L')).")
        # palette PNGs: the indices are the classes (0 background, 1 ground-glass, 2 consolidation)
        lab = read_mask(mask, len(COVID_SEMISEG_CLASSES), dtype=torch.uint8, binary_255=False)
        _check_same_size(img, lab, image, mask)
        items.append({**writer.picture_pair(image, lab, f"{split}_{file_stem(image)}"), "group": file_stem(image)})
    return items


@_one_run
def prepare_covid_semiseg(
    src_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0.2,
    val_seed: int = 0,
    extra_unlabeled: bool = True,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """COVID-SemiSeg (Inf-Net, Fan et al. 2020) in its published layout -> slices, masks, a datalist.

    ``MultiClassInfection-Train`` (50 labelled slices) is the pool: ``val_fraction`` (default 0.2: 10 slices) is
    held out for validation and ``labeled_fraction`` of the rest is labelled (1/8 of 40: 5), the others join the
    unlabelled images; ``MultiClassInfection-Test`` (48) is the test split; ``LungInfection-Train/Pseudo-label/Imgs``
    (1600 slices without ground truth: its ``GT`` holds Inf-Net's model outputs and is not read) is the extra
    unlabelled pool.  Masks are palette PNGs whose indices are the classes 0 background, 1 ground-glass,
    2 consolidation (no pleural effusion in this set).  The slices are 8-bit display values (windowed CT saved as
    JPG), not Hounsfield units: ``meta.intensity`` says ``uint8``.  Returns ``datalist.json``.

    ``extra_unlabeled=False`` leaves the 1600 extra slices out (the unlabelled images are then the pool's slices
    whose masks the labelled fraction hides): they come from other collections than the labelled MedSeg slices,
    with another display window and some upside down, so they test whether such unlabelled data helps
    (``docs/results.md``, COVID-SemiSeg).
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, f"is not a folder; give COVID-SemiSeg's Dataset folder ({_COVID_SS_LAYOUT}).")
    parse_fraction(labeled_fraction)
    train_root = _need_dir(src / "TrainingSet" / "MultiClassInfection-Train", "TrainingSet/MultiClassInfection-Train/",
                           src, _COVID_SS_LAYOUT)
    test_root = _need_dir(src / "TestingSet" / "MultiClassInfection-Test", "TestingSet/MultiClassInfection-Test/",
                          src, _COVID_SS_LAYOUT)
    unl_dir = _need_dir(src / "TrainingSet" / "LungInfection-Train" / "Pseudo-label" / "Imgs",
                        "TrainingSet/LungInfection-Train/Pseudo-label/Imgs/ (the unlabelled slices)", src,
                        _COVID_SS_LAYOUT)
    train_pairs = _paired(_need_dir(train_root / "Imgs", "MultiClassInfection-Train/Imgs/", src, _COVID_SS_LAYOUT),
                          _need_dir(train_root / "GT", "MultiClassInfection-Train/GT/", src, _COVID_SS_LAYOUT))
    test_pairs = _paired(_need_dir(test_root / "Imgs", "MultiClassInfection-Test/Imgs/", src, _COVID_SS_LAYOUT),
                         _need_dir(test_root / "GT", "MultiClassInfection-Test/GT/", src, _COVID_SS_LAYOUT))
    unlabeled = sorted(_pictures(unl_dir), key=lambda p: _natural(p.name))
    if not unlabeled:
        raise DataReadError(unl_dir, "holds no unlabelled slices (*.jpg); semi-supervised training needs them. "
                                     "Restore the folder from the COVID-SemiSeg archive.")
    _check_plan([(file_stem(i), 1) for i, _ in train_pairs], val_fraction, 0, val_seed, labeled_fraction, f"{src}: ")
    source = str(src.resolve())
    dest = _Output(out, "covid-semiseg", source, overwrite, [src])
    writer = _Writer(dest.stage)
    train = _covid_ss_items(train_pairs, writer, progress, "train")
    test = _covid_ss_items(test_pairs, writer, progress, "test")
    extra = []
    for p in _progress(unlabeled if extra_unlabeled else [], len(unlabeled) if extra_unlabeled else 0,
                       "covid-semiseg unlabeled", progress):
        img = read_image(p)  # copied as is, but it must decode: a broken file fails here, named, not in training
        if int(img.shape[0]) != 1:
            raise DataReadError(p, f"has {int(img.shape[0])} channels; the unlabelled CT slices must be grey like "
                                   "the labelled ones. Convert it (PIL: Image.open(path).convert('L')).")
        extra.append({**writer.picture_pair(p, None, f"unlabeled_{file_stem(p)}"), "group": f"unlabeled:{p.name}"})
    train, val, _ = _holdout(train, val_fraction, 0, val_seed, f"{src}: ")
    _warn_splits(str(src), val, test)
    pool = {
        "meta": {
            "task": "covid-semiseg",
            "classes": COVID_SEMISEG_CLASSES,
            "in_channels": 1,
            "intensity": "uint8",
            "source": source,
            "inputs": {"src_dir": source},
            "val_fraction": val_fraction,
            "val_seed": int(val_seed),
            "extra_unlabeled": bool(extra_unlabeled),
            "format": "CT slices as 8-bit grey JPG (display values, not HU) copied as is; masks 0/1/2 PNG",
            "citation": "Fan et al., Inf-Net: Automatic COVID-19 Lung Infection Segmentation from CT Images, "
                        "IEEE TMI 39(8), 2020 (labelled slices: MedSeg COVID-19 CT segmentation)",
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)
