"""``prepare covid``: the MedSeg COVID-19 CT segmentation data (NIfTI stacks, its Radiopaedia volumes, DICOM or
DICOM SEG masks, Kaggle's NumPy copy) -> 2D CT slices in Hounsfield units."""

from __future__ import annotations

import os
import shutil
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
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
from ..kaggle_medseg import is_npy, read_npy_images, read_npy_masks
from ..mask_geometry import align_mask
from ..slices import iter_slices
from ..splits import parse_fraction
from .core import (
    COVID_CLASSES,
    ORIENTATIONS,
    PrepareNote,
    _check_same_size,
    _one_run,
    _progress,
    _run_warnings,
    _warn,
    _Writer,
    orient_slice,
)
from .pool import _check_plan, _holdout, _Output, _warn_splits


def _expand_inputs(paths: Sequence[str | os.PathLike]) -> list[Path]:
    """Files stay; a DICOM series folder stays; any other folder becomes its supported files / series sub-folders."""
    out: list[Path] = []
    for p in paths:
        p = Path(p)
        if not p.exists():
            raise DataReadError(p, "no such file or folder.")
        if p.is_dir() and not list_dicom_files(p):
            found = sorted(
                q for q in p.iterdir()
                if not q.name.startswith(".") and (is_supported_file(q) or (q.is_dir() and list_dicom_files(q)))
            )
            if not found:
                raise DataReadError(p, "folder holds no DICOM, NIfTI or picture files.")
            out.extend(found)
        else:
            out.append(p)
    return out


class _Unzip:
    """Zips given to ``prepare covid`` (MedSeg's ``rp_im.zip``, ``rp_msk.zip``), extracted with :mod:`zipfile`
    into one temporary folder that is removed when the run ends, failed or not.  Error messages name the zip
    and its member (``rp_msk.zip:rp_msk/3.nii.gz``), never the temporary copy."""

    def __init__(self) -> None:
        self.tmp: Path | None = None
        self.shown: dict[str, str] = {}  # extraction folder -> "zip path:"

    def __enter__(self) -> _Unzip:
        return self

    def __exit__(self, *exc) -> None:
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def extract(self, zpath: Path) -> Path:
        import tempfile
        import zipfile

        if self.tmp is None:
            self.tmp = Path(tempfile.mkdtemp(prefix="medsemiseg-unzip-")).resolve()
        dest = self.tmp / str(len(self.shown))
        try:
            with zipfile.ZipFile(zpath) as zf:
                for info in zf.infolist():
                    target = (dest / info.filename).resolve()
                    if target != dest and dest not in target.parents:
                        raise DataReadError(zpath, f"member {info.filename!r} would be written outside the "
                                                   "extraction folder; refusing this zip.")
                zf.extractall(dest)
        except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError) as e:
            raise DataReadError(zpath, f"cannot be extracted as a zip file ({e}); download it again.") from None
        self.shown[str(dest)] = f"{zpath}:"
        return dest

    def show(self, path: Path | str) -> str:
        """The name of ``path`` for messages and ``meta``: ``zip:member`` for an extracted file."""
        text = str(path)
        for d, z in self.shown.items():
            if text == d or text.startswith(d + os.sep):
                return z + text[len(d) + 1:]
        return text

    def fix(self, message: str) -> str:
        for d, z in self.shown.items():
            message = message.replace(d + os.sep, z)
        return message


def _is_zip(p: Path) -> bool:
    return p.name.lower().endswith(".zip")


def _volume_name(volume: Path, container: Path | None) -> str:
    """Output stem of a volume: its file stem; a bare number (MedSeg's zips hold ``1.nii.gz`` ... ``9.nii.gz``) gets
    the name of its zip or folder in front, so ``rp_im.zip`` member ``1.nii.gz`` gives ``rp_im_1_000.nii.gz``."""
    stem = file_stem(volume)
    return f"{file_stem(container)}_{stem}" if container is not None and stem.isdigit() else stem


def _covid_volumes(paths: Sequence[str | os.PathLike], unzip: _Unzip) -> tuple[list[Path], dict[Path, str]]:
    """:func:`_expand_inputs`, with ``.zip`` files extracted (:class:`_Unzip`) and replaced by the volumes they hold;
    returns the volumes and their output stems (:func:`_volume_name`)."""
    vols: list[Path] = []
    names: dict[Path, str] = {}
    for arg in paths:
        arg = Path(arg)
        if _is_zip(arg) and arg.is_file():
            root = unzip.extract(arg)
            found = sorted(
                q for q in root.rglob("*")
                if q.is_file() and is_supported_file(q)
                and not any(part.startswith(".") or part == "__MACOSX" for part in q.relative_to(root).parts)
            )
            if not found:
                raise DataReadError(arg, "zip holds no NIfTI, DICOM or picture files.")
        elif arg.is_dir() and not list_dicom_files(arg):
            found = _expand_inputs([arg])
        else:
            found, arg = _expand_inputs([arg]), None
        for v in found:
            vols.append(v)
            names[v] = _volume_name(v, arg)
    return vols, names


def _rp_pairs(rp_image: Path, rp_mask: Path, unzip: _Unzip) -> tuple[list[tuple[Path, Path | None]], dict]:
    """Radiopaedia (MedSeg set 2) image volumes paired with their masks by file name (``1.nii.gz`` in both)."""
    images, names = _covid_volumes([rp_image], unzip)
    if rp_mask is None:
        return [(v, None) for v in images], names
    masks, _ = _covid_volumes([rp_mask], unzip)
    by_key: list[dict[str, Path]] = []
    for vols, option in ((images, "--rp-image"), (masks, "--rp-mask")):
        keyed: dict[str, Path] = {}
        for v in vols:
            key = file_stem(v)
            if key in keyed:
                raise DataReadError(None, f"{option}: two volumes named {key!r}: {unzip.show(keyed[key])} and "
                                          f"{unzip.show(v)}; image and mask volumes are paired by file name.")
            keyed[key] = v
        by_key.append(keyed)
    imgs, msks = by_key
    lonely_img = [unzip.show(imgs[k]) for k in imgs if k not in msks]
    lonely_msk = [unzip.show(msks[k]) for k in msks if k not in imgs]
    if lonely_img or lonely_msk:
        parts = []
        if lonely_img:
            parts.append(f"image volume(s) without a mask of the same file name in {rp_mask}: {', '.join(lonely_img)}")
        if lonely_msk:
            parts.append(f"mask volume(s) without an image of the same file name in {rp_image}: "
                         f"{', '.join(lonely_msk)}")
        raise DataReadError(None, "--rp-image / --rp-mask: " + "; ".join(parts) + ". Image and mask volumes are "
                                  "paired by file name (1.nii.gz with 1.nii.gz); give matching sets (images without "
                                  "masks can go to --unlabeled).")
    return [(imgs[k], msks[k]) for k in imgs], names


def _read_covid_pair(image: Path, mask: Path, segment_map: Mapping | None = None):
    """Image volume + its MedSeg mask (0..3, no 0/255), on the image's grid; ``(img, lab, geometry)``."""
    img = read_image(image)
    lab = read_mask(mask, None, dtype=torch.uint8, reference=img, class_names=COVID_CLASSES, segment_map=segment_map)
    _check_covid_labels(lab, mask)
    _refuse_covid_255(lab, mask)
    lab, geometry = align_mask(img, lab, image, mask)
    _check_same_size(img, lab, image, mask)
    return img, lab, geometry


@_one_run
def prepare_covid(
    image: str | os.PathLike,
    mask: str | os.PathLike,
    out: str | os.PathLike,
    *,
    unlabeled: Sequence[str | os.PathLike] = (),
    labeled_fraction: Any = "1/8",
    seed: int = 0,
    val_fraction: Any = 0.1,
    test_fraction: Any = 0.2,
    val_seed: int = 0,
    orientation: str = "as-stored",
    segment_map: Mapping | None = None,
    rp_image: str | os.PathLike | None = None,
    rp_mask: str | os.PathLike | None = None,
    rp_orientation: str | None = None,
    overwrite: bool = False,
    progress: bool = True,
) -> Path:
    """MedSeg COVID-19 CT (``tr_im.nii.gz`` + ``tr_mask.nii.gz``, or a DICOM series + mask) -> 2D slices.

    Kaggle's NumPy copy works too: ``images_medseg.npy`` + ``masks_medseg.npy`` (one-hot), with
    ``images_radiopedia.npy`` / ``test_images_medseg.npy`` as unlabelled stacks (:mod:`.kaggle_medseg`).
    The mask of a DICOM series may be a DICOM SEG object: its segments get their class by label (``Ground
    glass`` -> 1, ...) or by ``segment_map`` (:mod:`medsemiseg.data.dicom_seg`).

    Each slice of the labelled stack is its own group (MedSeg set 1 mixes >40 patients with no patient ids).
    ``test_fraction`` of the slices is held out as test, then ``val_fraction`` of the rest as validation; the
    remaining training slices are split labelled / unlabelled by ``labeled_fraction`` and ``seed``.  Every slice
    of the ``unlabeled`` volumes joins the unlabelled pool.  Returns the path of ``datalist.json``.

    MedSeg set 2 (Radiopaedia): ``rp_image`` (``rp_im.zip`` or its folder) with ``rp_mask`` (``rp_msk.zip``),
    paired by file name, adds labelled volumes whose slices stay together (one group per volume) in the hold-out;
    ``rp_image`` alone adds them as unlabelled.  ``rp_orientation`` (default ``orientation``) is applied to
    their images and masks alike.  ``.zip`` files are accepted in ``unlabeled`` too.
    """
    for opt, value in (("--orientation", orientation), ("--rp-orientation", rp_orientation)):
        if value is not None and value not in ORIENTATIONS:
            raise ValueError(f"{opt} {value!r}: choose one of {', '.join(ORIENTATIONS)}.")
    if rp_mask is not None and rp_image is None:
        raise ValueError("--rp-mask needs --rp-image (the Radiopaedia image volumes: rp_im.zip or its folder).")
    with _Unzip() as unzip:
        try:
            return _prepare_covid(
                Path(image), Path(mask), out, unzip, unlabeled=unlabeled, labeled_fraction=labeled_fraction,
                seed=seed, val_fraction=val_fraction, test_fraction=test_fraction, val_seed=val_seed,
                orientation=orientation, segment_map=segment_map,
                rp_image=None if rp_image is None else Path(rp_image),
                rp_mask=None if rp_mask is None else Path(rp_mask),
                rp_orientation=orientation if rp_orientation is None else rp_orientation,
                overwrite=overwrite, progress=progress,
            )
        except DataReadError as e:
            if unzip.tmp is None or str(unzip.tmp) not in str(e):
                raise
            raise DataReadError(None, unzip.fix(str(e))) from None
        except ValueError as e:
            if unzip.tmp is None or str(unzip.tmp) not in str(e):
                raise
            raise ValueError(unzip.fix(str(e))) from None


def _prepare_covid(
    image: Path, mask: Path, out, unzip: _Unzip, *, unlabeled, labeled_fraction, seed, val_fraction, test_fraction,
    val_seed, orientation, segment_map, rp_image: Path | None, rp_mask: Path | None, rp_orientation: str, overwrite,
    progress,
) -> Path:
    parse_fraction(labeled_fraction)
    extra, extra_names = _covid_volumes(unlabeled, unzip)
    rp_pairs, rp_names = _rp_pairs(rp_image, rp_mask, unzip) if rp_image is not None else ([], {})
    if rp_pairs:
        rp_args = {rp_image.resolve()} | {v.resolve() for v, _ in rp_pairs}
        for arg in unlabeled:
            if Path(arg).resolve() in rp_args:
                raise ValueError(f"--unlabeled {arg} is also --rp-image: its volumes would be used twice (and, when "
                                 "labelled, validation/test slices would leak into training); leave it out of "
                                 "--unlabeled.")
    source = str(image.resolve())
    img = read_npy_images(image) if is_npy(image) else read_image(image)
    if is_npy(mask):
        lab = read_npy_masks(mask, num_classes=len(COVID_CLASSES))
    else:
        lab = read_mask(mask, None, dtype=torch.uint8, reference=img, class_names=COVID_CLASSES,
                        segment_map=segment_map)
        _check_covid_labels(lab, mask)
        _refuse_covid_255(lab, mask)
    lab, geometry = align_mask(img, lab, image, mask)
    _check_same_size(img, lab, image, mask)
    unchecked = [mask] if geometry == "unchecked" and not is_npy(image) and not is_npy(mask) else []
    reoriented = [mask] if geometry == "reoriented" else []
    rp_sizes: list[int] = []
    for v, m in rp_pairs:  # read and check every Radiopaedia pair before anything is written
        if m is None:
            rp_sizes.append(0)
            continue
        r_img, _r_lab, r_geo = _read_covid_pair(v, m)
        rp_sizes.append(_nz(r_img))
        unchecked += [unzip.show(m)] if r_geo == "unchecked" else []
        reoriented += [unzip.show(m)] if r_geo == "reoriented" else []
        del r_img, _r_lab
    if unchecked:
        _note_unchecked(unchecked)
    _note_reoriented(reoriented)
    plan = [(f"{file_stem(image)}:{k}", 1) for k in range(_nz(img))]
    plan += [(rp_names[v], n) for (v, m), n in zip(rp_pairs, rp_sizes) if m is not None]
    _check_plan(plan, val_fraction, test_fraction, val_seed, labeled_fraction, f"{image}: ")
    inputs = [image, mask, *[Path(u) for u in unlabeled], *[p for p in (rp_image, rp_mask) if p is not None]]
    dest = _Output(out, "covid", source, overwrite, inputs)
    writer = _Writer(dest.stage)
    stem = file_stem(image)
    train: list[dict] = []
    pairs = zip(iter_slices(img), iter_slices(lab))
    for k, (s_img, s_lab) in enumerate(_progress(pairs, _nz(img), f"covid {stem}", progress)):
        name = writer.name(f"{stem}_{k:03d}", ".nii.gz")
        item = writer.ct_pair(orient_slice(s_img, orientation), orient_slice(s_lab, orientation), name)
        train.append({**item, "group": f"{stem}:{k}"})
    del img, lab
    rp_unlabeled = [v for v, m in rp_pairs if m is None]
    for v, m in rp_pairs:
        if m is None:
            continue
        r_img, r_lab, _ = _read_covid_pair(v, m)
        name_stem = rp_names[v]
        pairs = zip(iter_slices(r_img), iter_slices(r_lab))
        for k, (s_img, s_lab) in enumerate(_progress(pairs, _nz(r_img), f"covid {name_stem}", progress)):
            name = writer.name(f"{name_stem}_{k:03d}", ".nii.gz")
            item = writer.ct_pair(orient_slice(s_img, rp_orientation), orient_slice(s_lab, rp_orientation), name)
            train.append({**item, "group": name_stem})  # a whole volume (one patient) is one group
    extra_items = _unlabeled_slices(extra, writer, orientation, progress, names=extra_names)
    extra_items += _unlabeled_slices(rp_unlabeled, writer, rp_orientation, progress, names=rp_names)
    train, val, test = _holdout(train, val_fraction, test_fraction, val_seed, f"{image}: ")
    _warn_splits(str(image), val, test)
    inputs_meta = {"image": source, "mask": str(mask.resolve()),
                   "unlabeled": [unzip.show(p.resolve()) for p in extra]}
    if rp_image is not None:
        inputs_meta.update(rp_image=str(rp_image.resolve()),
                           rp_mask=None if rp_mask is None else str(rp_mask.resolve()),
                           rp_volumes=[[unzip.show(v.resolve()), None if m is None else unzip.show(m.resolve())]
                                       for v, m in rp_pairs])
    pool = {
        "meta": {
            "task": "covid",
            "classes": COVID_CLASSES,
            "source": source,
            "inputs": inputs_meta,
            "orientation": orientation,
            **({"rp_orientation": rp_orientation} if rp_image is not None else {}),
            "val_fraction": val_fraction,
            "test_fraction": test_fraction,
            "val_seed": int(val_seed),
            "format": "2D NIfTI float32 HU images, uint8 masks; arrays (X, Y), show upright as a.T",
            "warnings": _run_warnings(),
        },
        "train": train,
        "extra_unlabeled": extra_items,
        "validation": val,
        "test": test,
    }
    return dest.commit(pool, labeled_fraction, seed)


def _check_covid_labels(lab: torch.Tensor, mask: Path) -> None:
    found = np.unique(lab.detach().cpu().numpy())
    bad = found[found >= len(COVID_CLASSES)]
    if bad.size:
        raise DataReadError(
            mask,
            f"label values {[int(v) for v in bad[:12]]} are outside MedSeg's classes 0..{len(COVID_CLASSES) - 1} "
            f"({', '.join(f'{i} {c}' for i, c in enumerate(COVID_CLASSES))}; values found: "
            f"{[int(v) for v in found[:12]]}). `prepare covid` has exactly these classes: fix the mask (a DICOM SEG: "
            "--segment-map), or prepare data with other classes with `python -m medsemiseg.prepare folder`.",
        )


def _refuse_covid_255(lab: torch.Tensor, mask: Path) -> None:
    """``read_mask`` turns a 0/255 mask into 0/1, which for covid would be class 1 (ground-glass): a MedSeg mask
    holding 255 is an error, not converted."""
    found = torch.unique(lab)
    if not found.numel() or not bool(torch.all((found == 0) | (found == 1))) or not bool(torch.any(found == 1)):
        return  # the 0/255 conversion cannot have happened
    if mask.is_file() and detect_format(mask) == "dicom":
        from ..dicom import is_seg_header, read_dicom_header

        if is_seg_header(read_dicom_header(mask)):
            return  # DICOM SEG segments get their class by label, never by 0/255
    raw = read_image(mask)
    if bool(torch.any(raw == 255)):
        found = np.unique(raw.numpy())
        raise DataReadError(
            mask,
            f"label values [255] are outside MedSeg's classes 0..{len(COVID_CLASSES) - 1} "
            f"({', '.join(f'{i} {c}' for i, c in enumerate(COVID_CLASSES))}; values found: "
            f"{[int(v) for v in found[:12]]}). A 0/255 (binary) mask is not turned into class 1 (ground-glass) by "
            "`prepare covid`: give the MedSeg mask with values 0..3, or prepare a binary data set with "
            "`python -m medsemiseg.prepare folder`.",
        )


def _note_unchecked(masks: Sequence[Path]) -> None:
    if masks:
        shown = ", ".join(str(m) for m in masks[:3]) + (", ..." if len(masks) > 3 else "")
        _warn(
            f"orientation could not be checked for {len(masks)} mask(s) against their images, because the mask or "
            f"the image carries no geometry (a picture, or NIfTI with an identity / no affine): {shown}. Only "
            "their array shapes were compared; make sure they are stored in their image's voxel order.",
            PrepareNote,
        )


def _note_reoriented(masks: Sequence[Path]) -> None:
    if masks:
        shown = ", ".join(str(m) for m in masks[:3]) + (", ..." if len(masks) > 3 else "")
        _warn(f"{len(masks)} mask(s) stored in another axis order / orientation than their images were put on the "
              f"image's voxel grid (by their affines): {shown}.", PrepareNote)


def _nz(img: torch.Tensor) -> int:
    return 1 if img.ndim == 3 else int(img.shape[-1])


def _unlabeled_slices(
    paths: Sequence[Path], writer: _Writer, orientation: str, progress: bool, check=None,
    names: Mapping[Path, str] | None = None, read: Mapping[str, Any] | None = None, group_of=None,
) -> list[dict]:
    """``check(img, path)``, if given, vets each input as read (e.g. CHASE: RGB only) before it is written;
    ``names`` overrides the output stem of some inputs (default: the file's stem); ``read`` are
    :func:`read_image`'s HDF5 options; ``group_of(path)`` the hold-out group (default ``unlabeled:<stem>``)."""
    items: list[dict] = []
    for p in paths:
        fmt = "npy" if is_npy(p) else detect_format(p)
        stem = (names or {}).get(p) or file_stem(p)
        group = group_of(p) if group_of is not None else f"unlabeled:{stem}"
        if fmt == "picture":
            img = read_image(p)  # copied as is, but it must decode: a broken file fails here, named, not in training
            if check is not None:
                check(img, p)
            items.append({**writer.picture_pair(p, None, stem), "group": group})
            continue
        img = read_npy_images(p) if fmt == "npy" else read_image(p, **(read or {}))
        if check is not None:
            check(img, p)
        for k, s in enumerate(_progress(iter_slices(img), _nz(img), f"unlabeled {stem}", progress)):
            name = writer.name(f"{stem}_{k:03d}" if img.ndim == 4 else stem, ".nii.gz")
            items.append({**writer.ct_pair(orient_slice(s, orientation), None, name), "group": group})
    return items
