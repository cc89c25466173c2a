"""``prepare folder``: any folder of images with masks found by name (``labels/``, ``masks/``, ``<name>_mask.*``,
MONAI Label's ``labels/final/``) and optional unlabelled images."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..io import (
    DataReadError,
    detect_format,
    file_stem,
    is_supported_file,
    list_dicom_files,
    read_image,
    read_mask,
)
from ..mask_geometry import align_mask
from ..slices import iter_slices
from ..splits import parse_fraction
from .core import (
    MASK_SUFFIXES,
    _check_same_size,
    _ext,
    _one_run,
    _progress,
    _run_warnings,
    _warn,
    _Writer,
)
from .covid import _note_reoriented, _note_unchecked, _unlabeled_slices
from .pool import _check_plan, _holdout, _Output, _warn_hidden_labels, _warn_splits


def _is_mask_name(p: Path) -> bool:
    return file_stem(p).lower().endswith(MASK_SUFFIXES)


def _image_sources(folder: Path, skip_dirs: set[str]) -> tuple[list[Path], list[Path]]:
    """(images, skipped files) in ``folder``: supported files that are not masks, and DICOM series sub-folders."""
    images, skipped = [], []
    for q in sorted(folder.iterdir()):
        if q.name.startswith("."):
            continue
        if q.is_dir():
            if q.name.lower() not in skip_dirs and list_dicom_files(q):
                images.append(q)
            continue
        if is_supported_file(q):
            if not _is_mask_name(q):
                images.append(q)
        else:
            skipped.append(q)
    return images, skipped


def _files_by_stem(folder: Path, cache: dict | None) -> dict[str, list[Path]]:
    """``{stem: [files]}`` of the supported files in ``folder``, listed once per ``cache`` (the caller keeps one per
    data set: listing and sorting the folder once per image would be quadratic in the number of images)."""
    if cache is not None and folder in cache:
        return cache[folder]
    index: dict[str, list[Path]] = {}
    for q in sorted(folder.iterdir()):
        if q.is_file() and is_supported_file(q):
            index.setdefault(file_stem(q), []).append(q)
    if cache is not None:
        cache[folder] = index
    return index


def _mask_folders(src: Path) -> list[Path]:
    """The folders of ``src`` that hold masks by name: ``labels/final/`` (MONAI Label's datastore keeps its confirmed
    labels there; ``labels/original/`` holds model predictions, never used), ``labels/``, ``masks/``."""
    names = (Path("labels") / "final", "labels", "masks", "Labels", "Masks")
    return [src / d for d in names if (src / d).is_dir()]


def find_mask(image: Path, src: Path, listing_cache: dict | None = None) -> Path | None:
    """The mask of ``image`` by the documented rule (see ``docs/data.md``), or ``None``.

    Looked for, in order: ``SRC/labels/final/<stem>.*`` (MONAI Label's datastore), ``SRC/labels/<stem>.*``,
    ``SRC/masks/<stem>.*`` (also with a ``_mask``/``_label``/``_seg`` suffix there), then next to the image
    ``<stem>_mask.*``, ``<stem>_label.*``, ``<stem>_seg.*``, ``<stem>_gt.*``. More than one match in the first place
    that has any is an error. ``listing_cache`` (a dict the caller keeps for one data set) lists each folder once.
    """
    stem = file_stem(image)
    places: list[tuple[Path, list[str]]] = []
    for folder in _mask_folders(src):
        places.append((folder, [stem] + [stem + s for s in MASK_SUFFIXES]))
    places.append((image.parent, [stem + s for s in MASK_SUFFIXES]))
    for folder, stems in places:
        index = _files_by_stem(folder, listing_cache)
        hits = sorted({q for st in stems for q in index.get(st, ()) if q != image})
        if len(hits) > 1:
            raise DataReadError(image, f"has several candidate masks {[str(h) for h in hits]}; keep only one.")
        if hits:
            return hits[0]
    return None


def _check_one_image_per_mask(pairs: Sequence[tuple[Path, Path | None]]) -> None:
    """Images sharing a name (``a.png`` and ``a.jpg``) would share ``labels/a.png``: refuse, never guess."""
    by_mask: dict[Path, list[Path]] = {}
    for p, m in pairs:
        if m is not None:
            by_mask.setdefault(m, []).append(p)
    for m, imgs in by_mask.items():
        if len(imgs) > 1:
            other = imgs[1]
            raise DataReadError(
                m,
                f"is the only mask found for several images ({', '.join(str(p) for p in imgs)}), which share the "
                f"name '{file_stem(imgs[0])}'; a mask belongs to one image. Keep one image per name: rename the "
                f"others (e.g. {other.name} -> {file_stem(other)}_2{_ext(other)}) and give each its own mask, or "
                "move them to unlabeled/.",
            )


def _name_key(stem: str) -> str:
    """Case- and zero-padding-insensitive form of a name, without a mask suffix: ``Case07_mask`` -> ``case7``."""
    s = stem.lower()
    for suf in MASK_SUFFIXES:
        if s.endswith(suf):
            s = s[: -len(suf)]
            break
    return re.sub(r"\d+", lambda mt: str(int(mt.group())), s)


def _warn_orphan_masks(
    src: Path, img_root: Path, pairs: Sequence[tuple[Path, Path | None]], unl_images: Sequence[Path]
) -> list[Path]:
    """Warn about mask files that match no image (``labels/Case07.png`` for ``case7.png``); returns them."""
    used = {m.resolve() for _, m in pairs if m is not None}
    unl_stems = {file_stem(p) for p in unl_images}  # masks of unlabeled/ images are ignored by design
    found: dict[Path, Path] = {}
    for folder in _mask_folders(src):
        for q in sorted(folder.iterdir()):
            if q.is_file() and not q.name.startswith(".") and is_supported_file(q):
                found.setdefault(q.resolve(), q)
    for q in sorted(img_root.iterdir()):
        if q.is_file() and not q.name.startswith(".") and is_supported_file(q) and _is_mask_name(q):
            found.setdefault(q.resolve(), q)
    orphans = [
        q for r, q in found.items()
        if r not in used and file_stem(q) not in unl_stems and _name_key(file_stem(q)) not in map(_name_key, unl_stems)
    ]
    if orphans:
        keys: dict[str, list[str]] = {}
        for p, _ in pairs:
            keys.setdefault(_name_key(file_stem(p)), []).append(p.name)
        described = []
        for q in orphans:
            likely = keys.get(_name_key(file_stem(q)))
            described.append(f"{q}" + (f" (likely the mask of {' / '.join(likely)}: the names differ in case or "
                                       "zero padding)" if likely else ""))
        _warn(
            f"{src}: {len(orphans)} mask file(s) match no image and were ignored: {'; '.join(described)}. A mask is "
            "matched by the exact image name (docs/data.md, 'folder'): rename it (or the image) so the names match; "
            "until then such an image is unlabelled."
        )
    return orphans


_MAX_AUTO_CLASSES = 16  # more labels than this without --num-classes: not a label map (JPEG / anti-aliased)


def _is_dicom_seg(p: Path) -> bool:
    from ..dicom import is_seg_header, read_dicom_header

    return p.is_file() and detect_format(p) == "dicom" and is_seg_header(read_dicom_header(p))


def _values_text(values: Sequence[int], files: Mapping[int, int] | None = None, limit: int = 10) -> str:
    """``0 (12), 1 (12), ..., 255 (3)`` (value (files holding it)); the first and last ones beyond ``limit``."""
    shown = [f"{v} ({files[v]})" if files else str(v) for v in values]
    if len(shown) > limit:
        shown = shown[: limit - 3] + ["..."] + shown[-2:]
    return ", ".join(shown)


def _survey_mask_values(
    masks: Sequence[Path], num_classes: int | None, mask_threshold: float | None, where: str
) -> bool:
    """Check the label values of all masks of a folder together, before anything is written; returns whether
    255 means 1 (every mask holds only 0 and 255, or only 0).

    Without ``num_classes`` (declared by ``--num-classes`` or ``--class-names``) the values found must be a label map ``0..K-1`` without gaps and with at most
    :data:`_MAX_AUTO_CLASSES` classes: a JPEG or anti-aliased binary mask (values 0..255 smeared along edges) or a
    stray voxel would otherwise become hundreds of classes.  Masks holding 0/1 next to masks holding 0/255 are an
    error too (255 would be 1 in some and a class in others).  DICOM SEG masks are label maps by construction
    (classes from their segments) and are not surveyed; with ``mask_threshold`` nothing is (masks become 0/1).
    """
    if mask_threshold is not None:
        return False
    jpeg = [m for m in masks if m.suffix.lower() in (".jpg", ".jpeg")]
    if jpeg:
        _warn(f"{where}{len(jpeg)} mask(s) are JPEG (e.g. {jpeg[0]}): JPEG is lossy and changes label values "
              "along edges; save masks as PNG or NIfTI, or for a binary task pass --mask-threshold 128.")
    found: dict[Path, set[int]] = {}
    for m in masks:
        if not _is_dicom_seg(m):
            found[m] = {int(v) for v in torch.unique(read_mask(m, None, binary_255=False).as_tensor()).tolist()}
    if not found:
        return False
    ones = [m for m, v in found.items() if 1 in v and v <= {0, 1}]
    two55 = [m for m, v in found.items() if 255 in v and v <= {0, 255}]
    union = set().union(*found.values())
    if ones and two55 and union <= {0, 1, 255}:
        raise DataReadError(
            None,
            f"{where}the masks mix two binary encodings: {len(ones)} hold 0/1 (e.g. {ones[0]}) and {len(two55)} hold "
            f"0/255 (e.g. {two55[0]}), so 255 cannot be read as 1 in some and kept as a class in others. Re-save "
            "them one way, or for a binary task pass --mask-threshold 1 (value >= 1 -> 1 for both).",
        )
    if union <= {0, 255}:
        return 255 in union
    if num_classes is not None:
        return False  # read_mask checks 0..num_classes-1 per file, naming it
    first_gap = next(k for k in range(1, len(union) + 2) if k not in union)
    limit = min(first_gap, _MAX_AUTO_CLASSES)
    if min(union) >= 0 and max(union) < limit:
        return False
    bad = {v for v in union if v < 0 or v >= limit}
    files = {v: sum(v in vals for vals in found.values()) for v in union}
    rarest = min(sorted(bad), key=files.get)  # a stray voxel's value, an anti-aliasing grey: the file to look at
    example = next(m for m, vals in found.items() if rarest in vals)
    lossy = " (JPEG is lossy)" if jpeg else ""
    raise DataReadError(
        None,
        f"{where}the masks are not label maps 0..K-1: {len(union)} distinct values in {len(found)} mask(s) "
        f"(value (masks holding it)): {_values_text(sorted(union), files)}; e.g. {example} holds "
        f"{_values_text(sorted(found[example]))}. "
        f"Labels must be 0..K-1 without gaps, at most {_MAX_AUTO_CLASSES} classes unless --num-classes is given. "
        f"Binary masks saved lossy or anti-aliased{lossy}: pass --mask-threshold 128 (value >= 128 -> 1); if these "
        "values are all real classes: --num-classes K; else re-save the masks as PNG or NIfTI without "
        "interpolation (nearest neighbour), labels 0..K-1.",
    )


def _count_items(p: Path) -> int:
    """Slices a labelled input will give, from its header only (for :func:`_check_plan`); 1 when unsure."""
    try:
        fmt = detect_format(p)
        if fmt == "dicom-series":
            return max(1, len(list_dicom_files(p)))
        if fmt == "nifti":
            import nibabel as nib

            shape = list(nib.load(str(p)).shape)
            while len(shape) > 2 and shape[-1] == 1:
                shape.pop()
            return int(shape[2]) if len(shape) == 3 else 1
    except Exception:  # the real read reports the problem with the file's name
        return 1
    return 1


@_one_run
def prepare_folder(
    src_dir: str | os.PathLike,
    out: str | os.PathLike,
    *,
    task: str = "folder",
    num_classes: int | None = None,
    class_names: Sequence[str] | None = None,
    mask_threshold: float | None = None,
    segment_map: Mapping | None = None,
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.0,
    val_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """Any folder of DICOM series / DICOM files / NIfTI / pictures with optional masks -> 2D items.

    Images with a mask (matched by :func:`find_mask`) form the labelled pool; images without one, and everything in
    ``SRC/unlabeled/``, are unlabelled.  3D inputs become slices that share a group, so validation / test never
    split a volume.  ``num_classes`` defaults to (largest label found) + 1 when the masks' values are a label map
    0..K-1 (:func:`_survey_mask_values`: checked over all masks, which also decides 0/255 -> 0/1 for the whole
    folder; ``mask_threshold``: value >= T -> 1).  A mask may be a DICOM SEG object
    of a DICOM image or series: segments get their class from ``segment_map``, else by label from
    ``class_names`` when every label matches, else by segment number (:mod:`medsemiseg.data.dicom_seg`).
    Returns the path of ``datalist.json``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, "is not a folder.")
    skip = {"labels", "masks", "unlabeled", "unlabelled", "images"}
    img_root = src / "images" if (src / "images").is_dir() else src
    images, skipped = _image_sources(img_root, skip)
    unl_dir = next((src / d for d in ("unlabeled", "unlabelled") if (src / d).is_dir()), None)
    unl_images, unl_skipped = _image_sources(unl_dir, set()) if unl_dir else ([], [])
    if not images and not unl_images:
        raise DataReadError(
            src,
            "holds no images (DICOM files or series folders, NIfTI, PNG/JPG/TIF/GIF); see docs/data.md for the layout.",
        )
    listing: dict = {}
    pairs = [(p, find_mask(p, src, listing)) for p in images]
    _check_one_image_per_mask(pairs)
    if not any(m for _, m in pairs):
        raise DataReadError(
            src,
            "no image has a mask: put masks in labels/<name>.* or next to the image as <name>_mask.* (a MONAI "
            "Label datastore: save labels as final, labels/final/<name>.*; docs/data.md, 'folder').",
        )
    orphans = _warn_orphan_masks(src, img_root, pairs, unl_images)
    parse_fraction(labeled_fraction)
    _check_plan([(file_stem(p), _count_items(p)) for p, m in pairs if m is not None], val_fraction, test_fraction,
                val_seed, labeled_fraction, f"{src}: ")
    declared = num_classes if num_classes is not None else len(class_names) if class_names else None
    binary_255 = _survey_mask_values([m for _, m in pairs if m is not None], declared, mask_threshold, f"{src}: ")
    source = str(src.resolve())
    dest = _Output(out, task, source, overwrite, [src])
    writer = _Writer(dest.stage)
    unchecked: list[Path] = []
    reoriented: list[Path] = []
    train: list[dict] = []
    max_label = 0
    channels: set[int] = set()
    segment_classes: dict[str, dict] = {}
    for p, m in _progress(pairs, len(pairs), f"folder {src.name}", progress):
        if m is None:
            unl_images.append(p)
            continue
        img = read_image(p)
        lab = read_mask(m, declared, threshold=mask_threshold, dtype=torch.uint8, reference=img,
                        class_names=class_names, segment_map=segment_map, binary_255=binary_255)
        if "segment_classes" in lab.meta:
            segment_classes[str(m)] = lab.meta["segment_classes"]
        lab, geometry = align_mask(img, lab, p, m)
        if geometry == "unchecked":
            unchecked.append(m)
        elif geometry == "reoriented":
            reoriented.append(m)
        _check_same_size(img, lab, p, m)
        max_label = max(max_label, int(lab.max()))
        channels.add(int(img.shape[0]))
        stem = file_stem(p)
        if detect_format(p) == "picture":
            train.append({**writer.picture_pair(p, lab, stem), "group": stem})
            continue
        for k, (si, sl) in enumerate(zip(iter_slices(img), iter_slices(lab))):
            name = writer.name(f"{stem}_{k:03d}" if img.ndim == 4 else stem, ".nii.gz")
            train.append({**writer.ct_pair(si, sl, name), "group": stem})
    extra_items = _unlabeled_slices(unl_images, writer, "as-stored", progress)
    n_cls = int(num_classes) if num_classes is not None else max(2, max_label + 1)
    names = list(class_names) if class_names else ["background"] + [f"class{i}" for i in range(1, n_cls)]
    if len(names) != n_cls:
        raise ValueError(f"--class-names gives {len(names)} names for {n_cls} classes.")
    if len(channels) > 1:
        _warn(f"{src}: images have different channel counts {sorted(channels)}.")
    _note_unchecked(unchecked)
    _note_reoriented(reoriented)
    train, val, test = _holdout(train, val_fraction, test_fraction, val_seed, f"{src}: ")
    _warn_splits(str(src), val, test)
    _warn_hidden_labels(f"{src}: ", train, labeled_fraction)
    pool = {
        "meta": {
            "task": task,
            "classes": names,
            "source": source,
            "inputs": {"src_dir": source, "skipped": [str(q) for q in skipped + unl_skipped],
                       "orphan_masks": [str(q) for q in orphans]},
            "mask_threshold": mask_threshold,
            **({"dicom_seg_classes": segment_classes} if segment_classes else {}),
            "in_channels": sorted(channels)[0] if len(channels) == 1 else sorted(channels),
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "val_seed": int(val_seed),
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)
