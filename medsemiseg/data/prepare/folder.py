"""``prepare folder``: any folder of images with masks found by name (``labels/``, ``masks/``, ``<name>_mask.*``,
MONAI Label's ``labels/final/``, an HDF5 file's label array) and optional unlabelled images; split lists and patient
groups (:mod:`.lists`) for the protocols papers publish."""

from __future__ import annotations

import os
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..declared import INTENSITY_KINDS
from ..hdf5 import has_hdf5_key
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
    PrepareNote,
    _check_same_size,
    _ext,
    _one_run,
    _progress,
    _run_warnings,
    _warn,
    _Writer,
)
from .covid import _note_reoriented, _note_unchecked, _unlabeled_slices
from .lists import (
    LIST_OPTIONS,
    GroupRule,
    check_leakage,
    dangling_link,
    drop_held_out,
    find_inputs,
    resolve_lists,
    split_fractions,
    volumes_of_test,
)
from .pool import _check_plan, _holdout, _Output, _warn_hidden_labels, _warn_splits


def _is_mask_name(p: Path) -> bool:
    return file_stem(p).lower().endswith(MASK_SUFFIXES)


def _image_sources(folder: Path, skip_dirs: set[str]) -> tuple[list[Path], list[Path]]:
    """(images, skipped files) in ``folder``: supported files that are not masks, and DICOM series sub-folders."""
    images, skipped = [], []
    for q in sorted(folder.iterdir()):
        if q.name.startswith(".") or dangling_link(q):
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
        if not dangling_link(q) and q.is_file() and is_supported_file(q):
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
    masks: Sequence[Path], num_classes: int | None, mask_threshold: float | None, where: str,
    read: Mapping[str, Any] | None = None,
) -> bool:
    """Check the label values of all masks of a folder together, before anything is written; returns whether
    255 means 1 (every mask holds only 0 and 255, or only 0).

    Without ``num_classes`` (declared by ``--num-classes`` or ``--class-names``) the values found must be a label map ``0..K-1`` without gaps and with at most
    :data:`_MAX_AUTO_CLASSES` classes: a JPEG or anti-aliased binary mask (values 0..255 smeared along edges) or a
    stray voxel would otherwise become hundreds of classes.  Masks holding 0/1 next to masks holding 0/255 are an
    error too (255 would be 1 in some and a class in others).  DICOM SEG masks are label maps by construction
    (classes from their segments) and are not surveyed; with ``mask_threshold`` nothing is (masks become 0/1).
    ``read``: :func:`read_mask`'s HDF5 options (key, axes).
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
            lab = read_mask(m, None, binary_255=False, **(read or {}))
            found[m] = {int(v) for v in torch.unique(lab.as_tensor()).tolist()}
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


def _count_items(p: Path, read: Mapping[str, Any]) -> int:
    """Slices a labelled input will give, from its header only (for :func:`_check_plan`); 1 when unsure.
    ``read``: the HDF5 image key and axes."""
    try:
        fmt = detect_format(p)
        if fmt == "dicom-series":
            return max(1, len(list_dicom_files(p)))
        if fmt == "hdf5":
            import h5py

            with h5py.File(str(p), "r") as f:
                shape = f[read["hdf5_key"]].shape
            return 1 if len(shape) != 3 else int(shape[0] if read["hdf5_axes"] == "zyx" else shape[2])
        if fmt == "nifti":
            import nibabel as nib

            shape = list(nib.load(str(p)).shape)
            while len(shape) > 2 and shape[-1] == 1:
                shape.pop()
            return int(shape[2]) if len(shape) == 3 else 1
    except Exception:  # the real read reports the problem with the file's name
        return 1
    return 1


def _roles(src: Path, lists: Mapping[str, Any], images: list[Path], unl_dir: Path | None,
           unl_images: list[Path]) -> tuple[dict[Path, str], set[Path], list[Path]]:
    """``({input: role}, inputs a list names, inputs left out)``; roles ``pool`` (a mask makes it a labelled
    candidate), ``labeled`` (fixed labelled), ``unlabeled``, ``validation``, ``test``. Without lists: the documented
    folder layout. With lists: what they name, at any depth of ``src``; ``unlabeled/`` stays unlabelled; other
    inputs join the pool unless ``--labeled-list`` fixes it, then they are left out."""
    if not any(v is not None for v in lists.values()):
        return {**{p: "pool" for p in images}, **{p: "unlabeled" for p in unl_images}}, set(), []
    inputs = find_inputs(src, _is_mask_name)
    roles = resolve_lists(lists, inputs, src)
    listed, left_out = set(roles), []
    top = {p.resolve() for p in images}
    for p in inputs:
        if p in roles:
            continue
        if unl_dir is not None and unl_dir in p.parents:
            roles[p] = "unlabeled"
        elif lists.get("labeled") is None and p.resolve() in top:
            roles[p] = "pool"
        else:
            left_out.append(p)
    if left_out:
        _warn(f"{src}: {len(left_out)} input(s) named in no split list were left out (e.g. {left_out[0]})"
              + ("; --labeled-list fixes the training pool" if lists.get("labeled") is not None else "") + ".",
              PrepareNote)
    return roles, listed, left_out


def _mask_of(p: Path, src: Path, listing: dict, label_key: str) -> Path | None:
    """An HDF5 input holding ``label_key`` is its own mask; anything else's mask is found by :func:`find_mask`."""
    if detect_format(p) == "hdf5" and has_hdf5_key(p, label_key):
        return p
    return find_mask(p, src, listing)


def _check_masked(roles: Mapping[Path, str], masks: Mapping[Path, Path | None], lists: Mapping[str, Any]) -> None:
    for role in ("labeled", "validation", "test"):
        bare = [p for p, r in roles.items() if r == role and masks.get(p) is None]
        if bare:
            raise DataReadError(
                bare[0], f"is named by {LIST_OPTIONS[role]} {lists[role]} but has no mask ({len(bare)} such input(s)): "
                "give it one (labels/<name>.*, <name>_mask.*, or the HDF5 label key: --hdf5-label-key), or move it to "
                "--unlabeled-list."
            )


class _ValueRange:
    """The range of the labelled images' values, for ``--intensity auto``."""

    def __init__(self) -> None:
        self.lo, self.hi, self.whole = float("inf"), float("-inf"), True

    def add(self, img: torch.Tensor) -> None:
        self.lo, self.hi = min(self.lo, float(img.min())), max(self.hi, float(img.max()))
        self.whole = self.whole and bool(torch.equal(img, torch.round(img)))

    def kind(self, where: str) -> str:
        """``hu`` below -200 (CT air is -1000), ``uint8`` for whole numbers in 0..255, else ``percentile``."""
        if self.lo < -200:
            kind, why = "hu", "values below -200: CT in Hounsfield units"
        elif self.lo >= 0 and self.hi <= 255 and self.whole:
            kind, why = "uint8", "whole numbers in 0..255: 8-bit grey or colour values"
        else:
            kind, why = "percentile", "neither Hounsfield units nor 8-bit values: scaled by each image's percentiles"
        _warn(f"{where}intensity {kind!r} (the images' values {self.lo:g}..{self.hi:g}: {why}); pass --intensity "
              "hu|uint8|percentile to declare another.", PrepareNote)
        return kind


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
    labeled_fraction: Any = None,
    seed: int = 0,
    val_fraction: Any = None,
    test_fraction: Any = None,
    val_seed: int = 0,
    overwrite: bool = False,
    progress: bool = True,
    labeled_list: str | os.PathLike | None = None,
    unlabeled_list: str | os.PathLike | None = None,
    val_list: str | os.PathLike | None = None,
    test_list: str | os.PathLike | None = None,
    group_by: str | None = None,
    volume_by: str | None = None,
    intensity: str = "auto",
    hdf5_image_key: str = "image",
    hdf5_label_key: str = "label",
    hdf5_axes: str = "zyx",
) -> Path:
    """Any folder of DICOM series / DICOM files / NIfTI / HDF5 / pictures with optional masks -> 2D items.

    Images with a mask (matched by :func:`find_mask`; an HDF5 file holding ``hdf5_label_key`` is its own mask)
    form the labelled pool; images without one, and everything in ``SRC/unlabeled/``, are unlabelled.  3D inputs
    become slices that share a group, so validation / test never split a volume.  ``num_classes`` defaults to
    (largest label found) + 1 when the masks' values are a label map 0..K-1 (:func:`_survey_mask_values`: checked
    over all masks, which also decides 0/255 -> 0/1 for the whole folder; ``mask_threshold``: value >= T -> 1).  A
    mask may be a DICOM SEG object of a DICOM image or series: segments get their class from ``segment_map``, else
    by label from ``class_names`` when every label matches, else by segment number
    (:mod:`medsemiseg.data.dicom_seg`).

    Split lists (``labeled_list`` ... ``test_list``: files of names, :mod:`.lists`) fix those roles; ``group_by``
    (a regex on file names) makes every random split and the labelled pick move whole patients and refuses a
    patient in two splits; ``volume_by`` (a regex, default ``group_by``) names the volume of a 2D test slice.
    ``labeled_fraction`` defaults to ``full`` with a labelled list, else ``1/8``;
    ``val_fraction`` to 0.1 (0 with a labelled or validation list), ``test_fraction`` to 0.  Test items cut from a
    3D input (or 2D slices of one ``volume_by`` name) carry ``volume`` / ``slice`` for per-volume scoring.
    ``intensity`` (``auto``, or a kind of :data:`~medsemiseg.data.declared.INTENSITY_KINDS`) is declared in
    ``meta.intensity``.  Returns the path of ``datalist.json``.
    """
    src = Path(src_dir)
    if not src.is_dir():
        raise DataReadError(src, "is not a folder.")
    lists = {"labeled": labeled_list, "unlabeled": unlabeled_list, "validation": val_list, "test": test_list}
    labeled_fraction, val_fraction, test_fraction = split_fractions(lists, labeled_fraction, val_fraction,
                                                                    test_fraction)
    if intensity != "auto" and intensity not in INTENSITY_KINDS:
        raise ValueError(f"--intensity {intensity!r}: choose auto or one of {', '.join(INTENSITY_KINDS)}.")
    rule = GroupRule(group_by)
    volume_rule = GroupRule(volume_by, "--volume-by") if volume_by else rule
    read_img = {"hdf5_key": hdf5_image_key, "hdf5_axes": hdf5_axes}
    read_lab = {"hdf5_key": hdf5_label_key, "hdf5_axes": hdf5_axes}
    skip = {"labels", "masks", "unlabeled", "unlabelled", "images"}
    img_root = src / "images" if (src / "images").is_dir() else src
    images, skipped = _image_sources(img_root, skip)
    unl_dir = next((src / d for d in ("unlabeled", "unlabelled") if (src / d).is_dir()), None)
    unl_images, unl_skipped = _image_sources(unl_dir, set()) if unl_dir else ([], [])
    if not images and not unl_images:
        raise DataReadError(
            src,
            "holds no images (DICOM files or series folders, NIfTI, HDF5, PNG/JPG/TIF/GIF); see docs/data.md for the "
            "layout.",
        )
    roles, listed, left_out = _roles(src, lists, images, unl_dir, unl_images)
    listing: dict = {}
    masks = {p: _mask_of(p, src, listing, hdf5_label_key) for p, r in roles.items() if r != "unlabeled"}
    _check_masked(roles, masks, lists)
    pairs = list(masks.items())
    _check_one_image_per_mask(pairs)
    if not any(m for p, m in pairs if roles[p] in ("pool", "labeled")):
        raise DataReadError(
            src,
            "no image has a mask: put masks in labels/<name>.* or next to the image as <name>_mask.* (a MONAI "
            "Label datastore: save labels as final, labels/final/<name>.*; docs/data.md, 'folder').",
        )
    orphans = _warn_orphan_masks(src, img_root, pairs, [p for p, r in roles.items() if r == "unlabeled"])
    parse_fraction(labeled_fraction)
    pool_masked = [p for p, m in pairs if m is not None and roles[p] in ("pool", "labeled")]
    groups = {p: rule(p) for p, m in pairs if m is not None}
    if rule.regex is not None:  # fixed lists that put one patient in two splits: refused before anything is read
        def placeholders(role: str, required: bool = True) -> list[dict]:
            return [{"group": rule(p, required), "image": str(p)} for p, r in roles.items()
                    if r == role and (role != "unlabeled" or p in listed)]

        check_leakage({"training": [{"group": groups[p], "image": str(p)} for p in pool_masked]
                       + placeholders("unlabeled", required=False),
                       "validation": placeholders("validation"), "test": placeholders("test")}, rule)
    _check_plan([(groups[p], _count_items(p, read_img)) for p in pool_masked], val_fraction, test_fraction,
                val_seed, labeled_fraction, f"{src}: ", by_group=rule.regex is not None)
    declared = num_classes if num_classes is not None else len(class_names) if class_names else None
    binary_255 = _survey_mask_values([m for _, m in pairs if m is not None], declared, mask_threshold, f"{src}: ",
                                     read_lab)
    source = str(src.resolve())
    dest = _Output(out, task, source, overwrite, [src])
    writer = _Writer(dest.stage)
    unchecked: list[Path] = []
    reoriented: list[Path] = []
    split: dict[str, list[dict]] = {"pool": [], "labeled": [], "validation": [], "test": []}
    unl_images = ([p for p, r in roles.items() if r == "unlabeled"]  # the unlabeled/ folder, then images without mask
                  + [p for p, r in roles.items() if r == "pool" and masks[p] is None])
    max_label = 0
    channels: set[int] = set()
    segment_classes: dict[str, dict] = {}
    values = _ValueRange()
    volumes: dict[str, dict] = {}
    sizes: dict[str, tuple] = {}
    for p, m in _progress(pairs, len(pairs), f"folder {src.name}", progress):
        if m is None:
            continue
        img = read_image(p, **read_img)
        lab = read_mask(m, declared, threshold=mask_threshold, dtype=torch.uint8, reference=img,
                        class_names=class_names, segment_map=segment_map, binary_255=binary_255, **read_lab)
        if "segment_classes" in lab.meta:
            segment_classes[str(m)] = lab.meta["segment_classes"]
        if m != p:  # an HDF5 file's own label array is on its image's grid
            lab, geometry = align_mask(img, lab, p, m)
            if geometry == "unchecked":
                unchecked.append(m)
            elif geometry == "reoriented":
                reoriented.append(m)
        _check_same_size(img, lab, p, m)
        max_label = max(max_label, int(lab.max()))
        channels.add(int(img.shape[0]))
        values.add(img)
        stem, where = file_stem(p), split[roles[p]]
        if detect_format(p) == "picture":
            where.append({**writer.picture_pair(p, lab, stem), "group": groups[p], "source": str(p)})
            sizes[where[-1]["image"]] = tuple(img.shape[1:])
            continue
        volume = None
        if img.ndim == 4:
            volume = next(v for v in (stem, *(f"{stem}_{i}" for i in range(1, len(volumes) + 2))) if v not in volumes)
            has_geometry = detect_format(p) in ("nifti", "dicom", "dicom-series")
            volumes[volume] = {"slices": int(img.shape[-1]), "source": str(p), "spacing": (
                [float(v) for v in img.meta["spacing"]] if has_geometry else None)}
        for k, (si, sl) in enumerate(zip(iter_slices(img), iter_slices(lab))):
            name = writer.name(f"{stem}_{k:03d}" if img.ndim == 4 else stem, ".nii.gz")
            where.append({**writer.ct_pair(si, sl, name), "group": groups[p], "source": str(p),
                          **({"volume": volume, "slice": k} if volume else {})})
            sizes[where[-1]["image"]] = tuple(si.shape[1:])
    extra_items = _unlabeled_slices(unl_images, writer, "as-stored", progress, read=read_img,
                                    group_of=lambda q: rule(q, required=False))
    n_cls = int(num_classes) if num_classes is not None else max(2, max_label + 1)
    names = list(class_names) if class_names else ["background"] + [f"class{i}" for i in range(1, n_cls)]
    if len(names) != n_cls:
        raise ValueError(f"--class-names gives {len(names)} names for {n_cls} classes.")
    if len(channels) > 1:
        _warn(f"{src}: images have different channel counts {sorted(channels)}.")
    _note_unchecked(unchecked)
    _note_reoriented(reoriented)
    train, val, test = _holdout(split["pool"] + split["labeled"], val_fraction, test_fraction, val_seed, f"{src}: ")
    val, test = split["validation"] + val, split["test"] + test
    if rule.regex is not None:
        extra_items = drop_held_out(extra_items, val + test, f"{src}: ")
        check_leakage({"training": train + extra_items, "validation": val, "test": test}, rule)
    _warn_splits(str(src), val, test)
    _warn_hidden_labels(f"{src}: ", train, labeled_fraction, by_group=rule.regex is not None)
    volumes_meta = volumes_of_test(test, volumes, sizes, volume_rule, f"{src}: ")
    pool = {
        "meta": {
            "task": task,
            "classes": names,
            "intensity": values.kind(f"{src}: ") if intensity == "auto" else intensity,
            "source": source,
            "inputs": {"src_dir": source, "skipped": [str(q) for q in skipped + unl_skipped],
                       "orphan_masks": [str(q) for q in orphans], "left_out": [str(q) for q in left_out]},
            "mask_threshold": mask_threshold,
            **({"dicom_seg_classes": segment_classes} if segment_classes else {}),
            "in_channels": sorted(channels)[0] if len(channels) == 1 else sorted(channels),
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "val_seed": int(val_seed),
            **({"split_lists": {r: str(Path(f).resolve()) for r, f in lists.items() if f is not None}}
               if any(f is not None for f in lists.values()) else {}),
            **({"group_by": group_by} if group_by else {}),
            **({"volume_by": volume_by} if volume_by else {}),
            **({"hdf5": {"image_key": hdf5_image_key, "label_key": hdf5_label_key, "axes": hdf5_axes}}
               if any(detect_format(p) == "hdf5" for p in roles) else {}),
            **({"volumes": volumes_meta} if volumes_meta else {}),
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)
