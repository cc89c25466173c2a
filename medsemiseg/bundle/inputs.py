"""Inference inputs as 2D items, and the inputs a run had to skip.

``inferring``'s ``dataset_dir`` is a DICOM file or series folder, a NIfTI file (2D, or 3D run slice by slice), a
PNG/JPG/TIF, a folder of such inputs, or a prepared data set (its test split). :func:`inference_items` lists them as
2D items the bundle's ``preprocessing`` reads (a 3D input as one :class:`~medsemiseg.data.slices.LazySlice` per slice),
with a unique output name each, and checks each input's modality and channels against the bundle's network; an input
that cannot be read is skipped, and :func:`check_skipped_inputs` ends the run with an error naming every one of them
once the others are written (:mod:`.writer`).
"""

from __future__ import annotations

import functools
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any, NamedTuple

import numpy as np

from medsemiseg.data.datalist import load_split
from medsemiseg.tasks import TASKS

from .datalists import datalist_in, resolve_datalist
from .settings import BundleConfigError, is_empty

__all__ = [
    "BUNDLE_FOR_CHANNELS",
    "EXPECTED_MODALITIES",
    "NON_IMAGE_MODALITIES",
    "InferenceItems",
    "SkippedInputsError",
    "check_skipped_inputs",
    "inference_items",
]

logger = logging.getLogger(__name__)

# --------------------------------------------------------------------------------------------------- inference


class _DicomGroup(NamedTuple):
    """Loose DICOM files of one series at the top of an inference folder, read as one volume."""

    folder: Path
    files: tuple[Path, ...]
    name: str

    def __str__(self) -> str:
        first, last = self.files[0].name, self.files[-1].name
        return f"{self.folder} ({len(self.files)} DICOM files of one series: {first} ... {last})"


def _series_label(files: Sequence[Path], index: int) -> str:
    from medsemiseg.data.dicom import read_dicom_header

    number = getattr(read_dicom_header(files[0]), "SeriesNumber", None)
    return str(number).strip() if number not in (None, "") else str(index)


def _inputs_in_folder(folder: Path) -> list[Path | _DicomGroup]:
    """The inference inputs of a folder, in name order.

    - a folder holding one DICOM series and nothing else is one input (a series folder);
    - otherwise its top-level DICOM files are grouped by ``SeriesInstanceUID``: a file alone in its series is a 2D
      input, several files of one series are one volume (named after the folder, or ``<folder>_series<N>`` when
      there are several such series); every other supported file (NIfTI, picture) and every sub-folder holding
      DICOM files (a series folder) is an input of its own. Unsupported files are skipped.
    """
    from medsemiseg.data.dicom import group_dicom_series
    from medsemiseg.data.io import is_supported_file, list_dicom_files

    dicoms = list_dicom_files(folder)
    dicom_set = set(dicoms)
    others: list[Path] = []
    masks: list[str] = []
    for p in sorted(folder.iterdir()):
        if p.is_dir():
            if list_dicom_files(p):
                others.append(p)
        elif p not in dicom_set and is_supported_file(p):
            if _looks_like_mask(p):
                masks.append(p.name)
            else:
                others.append(p)
    if masks:
        logger.warning(
            f"{folder}: skipped {len(masks)} file(s) named like label masks or earlier outputs "
            f"({', '.join(masks[:3])}{', ...' if len(masks) > 3 else ''}); give a file directly to segment it."
        )
    if not dicoms:
        return others
    from medsemiseg.data.dicom import read_dicom_header
    from medsemiseg.data.io import DataReadError

    unreadable = []
    for f in dicoms:  # a damaged file is an input of its own, which inference_items skips, naming it
        try:
            read_dicom_header(f)
        except DataReadError:
            unreadable.append(f)
    if unreadable:
        others += unreadable
        dicoms = [f for f in dicoms if f not in unreadable]
        if not dicoms:
            return sorted(others, key=lambda p: p.name)
    groups = group_dicom_series(dicoms)
    if len(groups) == 1 and not others:
        return [folder]  # a DICOM series folder is one input
    series = [g for g in groups if len(g) > 1]
    entries: list[tuple[str, Path | _DicomGroup]] = [(p.name, p) for p in others]
    for g in groups:
        if len(g) == 1:
            entries.append((g[0].name, g[0]))
        else:
            name = folder.name if len(series) == 1 else f"{folder.name}_series{_series_label(g, series.index(g) + 1)}"
            entries.append((g[0].name, _DicomGroup(folder, tuple(g), name)))
    return [e for _, e in sorted(entries, key=lambda e: e[0])]


def _mask_name_suffixes() -> tuple[str, ...]:
    """Name endings of label masks: ``prepare folder``'s own list (``_mask``, ``_seg``: also this package's outputs),
    CHASE_DB1's ``_1stHO`` / ``_2ndHO`` and DRIVE-style ``_manual1``; lower case."""
    from medsemiseg.data.prepare import MASK_SUFFIXES

    return tuple(s.lower() for s in MASK_SUFFIXES) + ("_1stho", "_2ndho", "_manual1")


def _looks_like_mask(path: Path) -> bool:
    name = path.name.lower()
    for ext in (".nii.gz", ".nii", ".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".gif", ".dcm"):
        if name.endswith(ext):
            name = name[: -len(ext)]
            break
    return name.endswith(_mask_name_suffixes())


def _unique_names(stems: Sequence[str]) -> list[str]:
    """One output name per input: its stem, or ``<stem>_<n>`` with the first ``n`` that is no other input's stem
    and not yet used (compared case-insensitively, for case-insensitive file systems)."""
    reserved = {s.casefold() for s in stems}
    taken: set[str] = set()
    names: list[str] = []
    for stem in stems:
        name = stem
        if name.casefold() in taken:
            n = 1
            while f"{stem}_{n}".casefold() in reserved or f"{stem}_{n}".casefold() in taken:
                n += 1
            name = f"{stem}_{n}"
        taken.add(name.casefold())
        names.append(name)
    return names


#: DICOM modalities that hold no image to segment (refused at inference)
NON_IMAGE_MODALITIES = {
    "RTDOSE": "a radiotherapy dose grid",
    "RTSTRUCT": "a radiotherapy structure set (contours)",
    "RTPLAN": "a radiotherapy plan",
    "RTRECORD": "a radiotherapy treatment record",
    "SR": "a structured report",
    "PR": "a presentation state",
    "KO": "a key object selection",
    "REG": "a registration",
    "SEG": "a segmentation",
}

#: DICOM modalities each bundle's network was trained on (other modalities get a warning at inference)
EXPECTED_MODALITIES = {t.name: t.modalities for t in TASKS.values() if t.modalities}

#: which bundle takes images of how many channels (named in channel-mismatch errors, here and for checkpoints)
BUNDLE_FOR_CHANNELS = {t.in_channels: (t.name, t.images) for t in TASKS.values()}


def _dicom_header_of(src: Any):
    """The header of a DICOM input (file, series folder or loose group; first file of a series), else ``None``."""
    from medsemiseg.data.dicom import read_dicom_header
    from medsemiseg.data.io import detect_format, list_dicom_files

    if isinstance(src, _DicomGroup):
        return read_dicom_header(src.files[0])
    p = Path(str(src))
    fmt = detect_format(p)
    if fmt == "dicom":
        return read_dicom_header(p)
    if fmt == "dicom-series":
        return read_dicom_header(list_dicom_files(p)[0])
    return None


def _check_modality(src: Any, task: str) -> None:
    from medsemiseg.data.io import DataReadError

    if "CT" in EXPECTED_MODALITIES.get(str(task), ()) and _is_picture(src):
        logger.warning(
            f"{src}: a picture (PNG/JPG/TIF...) given to the {task} bundle, whose network reads CT in Hounsfield "
            "units: pictures hold display values (0-255 grey), not Hounsfield units, so its segmentation of this "
            "input is not meaningful. Give the DICOM or NIfTI slice / series instead."
        )
        return
    header = _dicom_header_of(src)
    if header is None:
        return
    modality = str(getattr(header, "Modality", "") or "").strip().upper()
    if modality in NON_IMAGE_MODALITIES:
        raise DataReadError(
            src,
            f"is {NON_IMAGE_MODALITIES[modality]} (DICOM modality {modality}), not an image to segment; give the "
            "image (e.g. the CT series) it belongs to.",
        )
    expected = EXPECTED_MODALITIES.get(str(task))
    if expected and modality and modality not in expected:
        logger.warning(
            f"{src}: DICOM modality {modality}, but the {task} bundle's network was trained on "
            f"{'/'.join(expected)} images only; its segmentation of this input is not meaningful."
        )


def _is_picture(src: Any) -> bool:
    from medsemiseg.data.io import PICTURE_SUFFIXES

    return not isinstance(src, _DicomGroup) and Path(str(src)).name.lower().endswith(PICTURE_SUFFIXES)


def _match_channels(img: Any, src: Any, task: str, in_channels: Any) -> tuple[Any, bool]:
    """``img`` as the network takes it, and whether it was changed (a grey picture repeated to RGB)."""
    from medsemiseg.data.io import DataReadError

    if in_channels is None:
        return img, False
    have, want = int(img.shape[0]), int(in_channels)
    if have == want:
        return img, False
    if have == 1 and want == 3 and _is_picture(src):
        logger.warning(
            f"{src}: grey picture (1 channel) given to the {task} network, which takes RGB (3 channels): its grey "
            "values are repeated into R, G and B."
        )
        return img.repeat(3, *([1] * (img.ndim - 1))), True
    kind = {1: "grey", 3: "RGB colour", 4: "RGBA"}.get(have, "multi-channel")
    fixes = []
    if want == 1 and _is_picture(src):
        fixes.append("convert it to grey first (e.g. PIL: Image.open(path).convert('L').save(...))")
    elif want == 1:  # DICOM or NIfTI, which PIL cannot open; a grey copy of a colour DICOM would hold no HU either
        fixes.append("give the grey original it was made from (a colour DICOM is a screen capture, a rendering or a "
                     "photograph, whose values are no Hounsfield units; CT is stored grey, MONOCHROME2)")
    elif want == 3:
        fixes.append("convert it to RGB first (grey pictures - PNG/JPG/TIF - are repeated to RGB automatically)")
    other = BUNDLE_FOR_CHANNELS.get(have)
    if other is not None and other[0] != task:
        fixes.append(f"use the {other[0]} bundle (bundles/{other[0]}), which is made for {other[1]}")
    raise DataReadError(
        src,
        f"has {have} channel{'s' if have != 1 else ''} ({kind}), but the {task} network expects {want} "
        f"(in_channels {want}); " + ", or ".join(fixes) + ".",
    )


def _read_input(src: Any, task: str, in_channels: Any) -> tuple[Any, bool]:
    """An inference input as the network takes it, and whether its channels were changed (:func:`_match_channels`)."""
    from medsemiseg.data.dicom import read_dicom_series
    from medsemiseg.data.io import read_image

    img = read_dicom_series(src.files, name=src.folder) if isinstance(src, _DicomGroup) else read_image(src)
    return _match_channels(img, src, task, in_channels)


def _read_volume(src: Any, task: str, in_channels: Any) -> Any:
    """:func:`_read_input`'s image alone: what a :class:`~medsemiseg.data.slices.LazySlice` of a 3D input reads."""
    return _read_input(src, task, in_channels)[0]


def inference_items(
    dataset_dir: str | os.PathLike | None,
    task: str,
    cache_dir: str | os.PathLike,
    labeled_fraction: Any = None,
    seed: int = 0,
    split: str = "test",
    in_channels: int | None = None,
) -> list[dict]:
    """Inference inputs as 2D items ``{"image", "name", "source", "slice", "num_slices", "affine",
    "spatial_shape", "slice_spacing_deviation"}``.

    ``dataset_dir`` may be a DICOM file, a DICOM series folder, a NIfTI file (2D, or 3D: run slice by slice), a
    PNG/JPG/TIF, a folder of such inputs (and of DICOM series folders; loose DICOM files in it are grouped by
    series, see :func:`_inputs_in_folder`), or a prepared data set (folder with a datalist / datalist JSON: its
    ``split`` images). Empty: the ``split`` images of the built-in synthetic data set.

    ``name`` is the input's file name without extension, made unique (``<name>_<n>``, never another input's
    name); ``source`` is the input it comes from; ``slice`` is ``-1`` for 2D inputs. With ``in_channels`` (the
    network's), an input with other channels is an error naming the file and the fix, except a grey picture for
    a 3-channel network, which is repeated to RGB (with a warning). A DICOM input that holds no image (RTDOSE,
    RTSTRUCT, SR, ...) is refused; one of a modality the bundle was not trained on (:data:`EXPECTED_MODALITIES`)
    gets a warning.

    Every input is read here once, so bad inputs fail before the first prediction, but no volume is kept: a slice of
    a 3D input is a :class:`~medsemiseg.data.slices.LazySlice`, which reads its volume again when the data loader gets
    to it (one volume in memory at a time; the first input's is kept from here, so a single study is read once).

    Of several inputs, one that cannot be read (a :class:`~medsemiseg.data.io.DataReadError`: empty, truncated,
    NaN voxels, wrong channels, no image...) is skipped with a warning, so the others are still segmented; the
    returned :class:`InferenceItems` lists it in ``skipped`` and the bundle's ``inferring`` ends with an error
    naming every skipped input (:func:`check_skipped_inputs`). A single input, or a folder none of whose inputs
    can be read, is an error at once.
    """
    from medsemiseg.data.io import DataReadError, file_stem
    from medsemiseg.data.slices import LazySlice

    if is_empty(dataset_dir):
        sources: list[Any] = [d["image"] for d in load_split(resolve_datalist(None, task, cache_dir, labeled_fraction, seed), split)]
    else:
        p = Path(str(dataset_dir)).expanduser()
        if not p.exists():
            raise BundleConfigError(f"dataset_dir={str(dataset_dir)!r} (inference input) does not exist.")
        from medsemiseg.data.prepare import POOL_FILE

        prepared = p.is_dir() and (datalist_in(p) is not None or (p / POOL_FILE).is_file())
        if (p.is_file() and p.suffix.lower() == ".json") or prepared:
            sources = [d["image"] for d in load_split(resolve_datalist(p, task, cache_dir, labeled_fraction, seed), split)]
        elif p.is_dir():
            sources = _inputs_in_folder(p)
            if not sources:
                raise BundleConfigError(
                    f"dataset_dir={str(dataset_dir)!r} holds no readable input (DICOM, NIfTI, PNG/JPG/TIF)."
                )
        else:
            sources = [p]
    names = _unique_names([src.name if isinstance(src, _DicomGroup) else file_stem(src) for src in sources])
    items = InferenceItems()
    LazySlice.forget()
    first_volume = None
    for src, name in zip(sources, names):
        try:
            _check_modality(src, task)
            img, changed = _read_input(src, task, in_channels)
        except DataReadError as e:
            if len(sources) == 1:
                raise
            items.skipped.append((str(src), str(e)))
            logger.warning(f"inferring: skipped an input that cannot be read: {e}")
            continue
        source = str(src)
        affine = np.asarray(img.affine, dtype=np.float64)
        if img.ndim == 3:
            items.append(
                {"image": img if changed else str(src), "name": name, "source": source, "slice": -1, "num_slices": 1,
                 "affine": affine, "spatial_shape": np.asarray(img.shape[1:]), "slice_spacing_deviation": 0.0}
            )
            continue
        if img.ndim != 4:
            raise DataReadError(src, f"expected a 2D or 3D image, got shape {tuple(img.shape)}.")
        n_slices = int(img.shape[-1])
        deviation = float(img.meta.get("slice_spacing_deviation", 0.0))
        reader = functools.partial(_read_volume, src, task, in_channels)
        for k in range(n_slices):
            items.append(
                {"image": LazySlice(source, reader, k), "name": name, "source": source, "slice": k,
                 "num_slices": n_slices, "affine": affine, "spatial_shape": np.asarray(img.shape[1:3]),
                 "slice_spacing_deviation": deviation}
            )
        if first_volume is None:
            first_volume = (source, img)  # inference starts with it: kept, not read again
        del img  # the others are read again slice by slice (LazySlice), one at a time
    if first_volume is not None:
        LazySlice.remember(*first_volume)
    if not items:
        raise DataReadError(
            dataset_dir,
            f"none of its {len(sources)} inputs can be read: " + "; ".join(p.rstrip(". ") for _, p in items.skipped)
            + ".",
        )
    return items


class InferenceItems(list):
    """The items of :func:`inference_items` (a plain list to MONAI's ``Dataset``), and ``skipped``: the inputs left
    out because they cannot be read, as ``(input, the error naming it and the fix)``."""

    def __init__(self, items: Sequence[dict] = (), skipped: Sequence[tuple[str, str]] = ()) -> None:
        super().__init__(items)
        self.skipped: list[tuple[str, str]] = list(skipped)


class SkippedInputsError(RuntimeError):
    """An inference run segmented the inputs it could read and skipped others; the message names each of those."""


def check_skipped_inputs(items: Any, written_to: Any = None) -> None:
    """After ``inferring`` ran: an error (exit status != 0) naming every input :func:`inference_items` skipped,
    once the label maps of the others are written; nothing when none was skipped."""
    skipped = list(getattr(items, "skipped", []))
    if not skipped:
        return
    where = f" to {written_to}" if written_to is not None else ""
    n_ok = len({it.get("name") for it in items}) if items else 0
    raise SkippedInputsError(
        f"inferring wrote the label maps of {n_ok} input(s){where}, but {len(skipped)} input(s) could not be read "
        "and were skipped: " + "; ".join(problem.rstrip(". ") for _, problem in skipped)
        + ". Fix or remove them, and run inferring on them again."
    )

