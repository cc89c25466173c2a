"""Readers for every input the package accepts, on top of MONAI's ``LoadImage`` readers.

One entry point per role:

- :func:`read_image` -> ``MetaTensor`` float32, channel-first, MONAI spatial order: ``(C, X, Y)`` for a 2D
  picture/slice, ``(C, X, Y, Z)`` for a stack (3D NIfTI, DICOM series, multi-frame DICOM).
- :func:`read_mask` -> ``MetaTensor`` integer ``(1, X, Y[, Z])`` validated against the declared classes.
- :class:`LoadSliced` -> the MONAI dictionary transform bundles use for train / validation / inference.
- :func:`iter_slices` -> 2D ``(C, X, Y)`` slices of a 3D input (inference on a CT volume or DICOM series).
- :class:`LazySlice` -> one such slice, read when :class:`LoadSliced` meets it (inference lists every slice of
  every input without holding the volumes).

Why not plain ``LoadImage``: MONAI's readers disagree on channel placement, ``PydicomReader`` sorts a series by
``InstanceNumber`` (which scanners and anonymisers renumber) instead of by position along the slice normal,
multi-frame DICOM comes back with swapped axes, and a mask is never checked.  Everything here still goes through
``PydicomReader`` / ``NibabelReader`` / ``PILReader`` so the metadata (affine, spacing, file name) is MONAI's.

Every failure on bad input is a single :class:`DataReadError` whose message starts with the offending path and
says what to do about it.
"""

from __future__ import annotations

import contextlib
import logging
import os
import warnings
from collections.abc import Hashable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.config import KeysCollection
from monai.data import MetaTensor, NibabelReader, PILReader, PydicomReader
from monai.transforms import LoadImage, MapTransform

__all__ = [
    "DICOM_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PICTURE_SUFFIXES",
    "DataReadError",
    "LazySlice",
    "LoadSliced",
    "check_finite",
    "check_label_values",
    "detect_format",
    "file_stem",
    "group_dicom_series",
    "is_seg_header",
    "is_supported_file",
    "item_value",
    "iter_slices",
    "list_dicom_files",
    "num_slices",
    "quiet_nvimgcodec_notice",
    "read_dicom_series",
    "read_image",
    "read_mask",
]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
_ALL_SUFFIXES = PICTURE_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES


class DataReadError(ValueError):
    """One clear error about one input file: the message names the file, what is wrong and the fix."""

    def __init__(self, path: str | os.PathLike | None, problem: str):
        self.path = None if path is None else str(path)
        super().__init__(f"{self.path}: {problem}" if self.path else problem)


# ----------------------------------------------------------------------------------------------------- formats


def _suffix(path: str | os.PathLike) -> str:
    name = Path(path).name.lower()
    return ".nii.gz" if name.endswith(".nii.gz") else Path(name).suffix


def file_stem(path: str | os.PathLike) -> str:
    """File name without its (double) extension: ``tr_im.nii.gz`` -> ``tr_im``; a folder keeps its name."""
    p = Path(path)
    if p.is_dir():
        return p.name
    name = p.name
    return name[: -len(".nii.gz")] if name.lower().endswith(".nii.gz") else p.stem


def _is_dicom_file(path: Path) -> bool:
    import pydicom

    if path.name.startswith(".") or not path.is_file():
        return False
    if _suffix(path) in DICOM_SUFFIXES:
        return True
    if _suffix(path) in PICTURE_SUFFIXES + NIFTI_SUFFIXES:
        return False
    try:
        return bool(pydicom.misc.is_dicom(str(path)))
    except OSError:
        return False


def list_dicom_files(folder: str | os.PathLike) -> list[Path]:
    """DICOM files directly inside ``folder`` (by ``.dcm``/``.dicom``/``.ima`` suffix or the ``DICM`` preamble)."""
    return sorted(p for p in Path(folder).iterdir() if _is_dicom_file(p))


def is_supported_file(path: str | os.PathLike) -> bool:
    """True for a file whose extension (or DICOM preamble) this module reads."""
    p = Path(path)
    return p.is_file() and (_suffix(p) in _ALL_SUFFIXES or _is_dicom_file(p))


def detect_format(path: str | os.PathLike) -> str:
    """``"dicom-series"``, ``"dicom"``, ``"nifti"`` or ``"picture"``; a :class:`DataReadError` otherwise."""
    p = Path(path)
    if not p.exists():
        raise DataReadError(
            p, "no such file or folder; check the path (a datalist's paths are relative to its folder)."
        )
    if p.is_dir():
        if not list_dicom_files(p):
            raise DataReadError(
                p, "folder holds no DICOM files (expected a DICOM series: *.dcm or files with the DICM preamble)."
            )
        return "dicom-series"
    suffix = _suffix(p)
    if suffix in NIFTI_SUFFIXES:
        return "nifti"
    if suffix in PICTURE_SUFFIXES:
        return "picture"
    if _is_dicom_file(p):
        return "dicom"
    raise DataReadError(
        p,
        f"unknown file type {suffix or '(no extension)'!r}; supported: DICOM ({', '.join(DICOM_SUFFIXES)} or a "
        f"series folder), NIfTI ({', '.join(NIFTI_SUFFIXES)}), pictures ({', '.join(PICTURE_SUFFIXES)}).",
    )


# ------------------------------------------------------------------------------------------------- raw loading


def _picture_converter(role: str):
    """PIL mode normalisation before ``PILReader`` turns the picture into an array.

    Images: palette / CMYK / YCbCr -> RGB, alpha dropped, 1-bit -> 8-bit grey, 16-bit kept.  Masks: palette
    pictures keep their *indices* (that is how indexed label PNGs store classes), 1-bit -> 0/255.  Role
    ``"mask-values"`` (a mask read by value with a threshold, e.g. CHASE_DB1's "channel 0 >= 128"): palette
    pictures are read through their palette (their RGB colours), every other mode as for ``"mask"``.
    """

    def convert(img):
        mode = img.mode
        if mode == "1":
            return img.convert("L")
        if mode.startswith("I;16"):
            return img.convert("I")
        if role == "mask-values" and mode in ("P", "PA"):
            return img.convert("RGB")
        if role in ("mask", "mask-values"):
            if mode in ("P", "PA"):
                return img.convert("P") if mode == "PA" else img
            return img
        if mode in ("P", "PA", "CMYK", "YCbCr", "RGBA", "RGBa", "RGBX"):
            return img.convert("RGB")
        if mode == "LA":
            return img.convert("L")
        return img

    return convert


def _as_tensor_meta(path: Path, array: np.ndarray, meta: dict) -> MetaTensor:
    meta = dict(meta)
    meta["filename_or_obj"] = str(path)
    return MetaTensor(torch.as_tensor(np.ascontiguousarray(array)), meta=meta)


class _DropNvImgCodecNotice(logging.Filter):
    def filter(self, record: logging.LogRecord) -> bool:
        return "nvImageCodec is not available" not in record.getMessage()


_NVIMGCODEC_LOGGER = logging.getLogger("monai.data.nvimgcodec_pydicom_plugin")
_NVIMGCODEC_NOTICE = _DropNvImgCodecNotice()


@contextlib.contextmanager
def quiet_nvimgcodec_notice() -> Iterator[None]:
    """Around a ``LoadImage`` call: drop MONAI's "nvImageCodec is not available" warning.

    ``LoadImage`` builds every default reader besides the one it is given, ``NvImgCodecPydicomReader`` included,
    and that one logs the notice (a GPU JPEG decoder nobody asked for) on every construction: once per file read,
    twice per image/mask pair of ``prepare``. It says nothing about the file being read. Only that message, only
    inside the block: a reader the user builds elsewhere still logs.
    """
    _NVIMGCODEC_LOGGER.addFilter(_NVIMGCODEC_NOTICE)
    try:
        yield
    finally:
        _NVIMGCODEC_LOGGER.removeFilter(_NVIMGCODEC_NOTICE)


def _load_with(reader, path: Path) -> MetaTensor:
    with quiet_nvimgcodec_notice(), warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return LoadImage(reader=reader, image_only=True, ensure_channel_first=False, dtype=np.float32)(str(path))


_JPEG = ("pylibjpeg", "pylibjpeg-libjpeg")
_JPEG2000 = ("pylibjpeg", "pylibjpeg-openjpeg")
#: the decoder packages medsemiseg installs for each compressed transfer syntax pydicom decodes with plugins (RLE
#: and deflate pydicom decodes itself; pylibjpeg-rle only makes RLE faster)
DICOM_DECODERS: dict[str, tuple[str, ...]] = {
    "1.2.840.10008.1.2.4.50": _JPEG,  # JPEG Baseline 8-bit (Pillow decodes it too)
    "1.2.840.10008.1.2.4.51": _JPEG,  # JPEG Extended 12-bit: pylibjpeg-libjpeg only (Pillow, GDCM: 8-bit only)
    "1.2.840.10008.1.2.4.57": _JPEG,  # JPEG Lossless
    "1.2.840.10008.1.2.4.70": _JPEG,  # JPEG Lossless, first-order prediction (the PACS default)
    "1.2.840.10008.1.2.4.80": _JPEG,  # JPEG-LS Lossless
    "1.2.840.10008.1.2.4.81": _JPEG,  # JPEG-LS Near-Lossless
    "1.2.840.10008.1.2.4.90": _JPEG2000,  # JPEG 2000 Lossless
    "1.2.840.10008.1.2.4.91": _JPEG2000,  # JPEG 2000
    "1.2.840.10008.1.2.4.201": _JPEG2000,  # HTJ2K Lossless
    "1.2.840.10008.1.2.4.202": _JPEG2000,  # HTJ2K Lossless RPCL
    "1.2.840.10008.1.2.4.203": _JPEG2000,  # HTJ2K
}

#: what to do with a file no decoder can read
_CONVERT = "convert it to uncompressed DICOM (gdcmconv --raw in.dcm out.dcm, or dcmtk's dcmdjpeg / dcmdrle)"


def _not_installed(packages: Sequence[str]) -> list[str]:
    from importlib import metadata

    missing = []
    for name in packages:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    return missing


def _usable_decoders(ts, header) -> list[str] | None:
    """pydicom's decoder plugins that can decode this file's pixel data; ``None`` with pydicom 2 (no plugin API)."""
    try:
        from pydicom.pixels import get_decoder
    except ImportError:
        return None
    try:
        decoder = get_decoder(ts)
    except NotImplementedError:  # a syntax pydicom has no decoder for (JPIP, MPEG...)
        return []
    usable = list(decoder.available_plugins)
    if str(ts) == "1.2.840.10008.1.2.4.51" and int(getattr(header, "BitsStored", 8) or 8) > 8:
        usable = [u for u in usable if u == "pylibjpeg"]  # Pillow and GDCM decode JPEG Extended at 8 bits only
    return usable


def _dicom_fix_hint(ds) -> str:
    """The end of a "cannot decode the DICOM pixel data" error: which decoder is missing (by package name), or,
    when the decoders for the file's transfer syntax are installed, that the file itself is damaged."""
    ts = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
    if ts is None or not getattr(ts, "is_compressed", False):
        return " The file looks damaged or incomplete; re-export it from the PACS / scanner."
    packages = DICOM_DECODERS.get(str(ts), ())
    usable = _usable_decoders(ts, ds)
    if usable:
        return (
            f" Its pixel data are compressed ({ts.name}) and the installed decoders ({', '.join(usable)}) cannot "
            f"decode them: the compressed data are damaged or do not follow the standard. Re-export the file from "
            f"the PACS / scanner, or {_CONVERT}."
        )
    if not packages:
        return f" Its pixel data are compressed ({ts.name}), which pydicom cannot decode; {_CONVERT}."
    missing = _not_installed(packages)
    if missing:
        return (
            f" Its pixel data are compressed ({ts.name}) and the decoder for it is not installed: "
            f"{' and '.join(missing)}, a dependency of medsemiseg (an install with --no-deps leaves it out). Install "
            f"it with: pip install {' '.join(missing)} (or {_CONVERT})."
        )
    import pydicom

    return (  # installed, but pydicom does not take it: too old, or pydicom 2, which cannot be asked
        f" Its pixel data are compressed ({ts.name}), which needs {' and '.join(packages)} (installed, but not "
        f"usable by this pydicom {pydicom.__version__}): pip install -U pydicom {' '.join(packages)} (or {_CONVERT})."
    )


def _decode_error(path: Path, error: BaseException, header) -> DataReadError:
    """The error for pixel data pydicom could not decode: its message on one line, then :func:`_dicom_fix_hint`."""
    message = " ".join(str(error).split())
    return DataReadError(path, f"cannot decode the DICOM pixel data ({message}).{_dicom_fix_hint(header)}")


SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"  # DICOM SEG SOP class


def is_seg_header(header) -> bool:
    """True for the header of a DICOM SEG object (its SOP class, or a Segment Sequence)."""
    return str(getattr(header, "SOPClassUID", "")) == SEGMENTATION_STORAGE or "SegmentSequence" in header


def _read_dicom_header(path: Path):
    import pydicom

    try:
        return pydicom.dcmread(str(path), stop_before_pixels=True)
    except Exception as e:  # InvalidDicomError, EOF, struct errors on garbage
        raise DataReadError(path, f"not a readable DICOM file ({type(e).__name__}: {e}).") from e


def _pixel_spacing(header) -> tuple[float, float]:
    """``(row spacing, column spacing)`` in mm: ``PixelSpacing``, else ``ImagerPixelSpacing`` (CR / DX), else 1.

    The row spacing is the distance between rows, i.e. along Y; the column spacing is along X.
    """
    for tag in ("PixelSpacing", "ImagerPixelSpacing"):
        value = getattr(header, tag, None)
        try:
            row_sp, col_sp = (float(v) for v in value)
        except (TypeError, ValueError):
            continue
        if np.isfinite(row_sp) and np.isfinite(col_sp) and row_sp > 0 and col_sp > 0:
            return row_sp, col_sp
    return 1.0, 1.0


def _has_patient_geometry(header) -> bool:
    return (
        getattr(header, "ImageOrientationPatient", None) is not None
        and getattr(header, "ImagePositionPatient", None) is not None
    )


def _dicom_multiframe(path: Path, header) -> MetaTensor:
    """Multi-frame or colour DICOM, which ``PydicomReader`` returns with the wrong axes: done by hand here."""
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        arr = np.asarray(ds.pixel_array)
    except Exception as e:
        raise _decode_error(path, e, header) from e
    frames = int(getattr(header, "NumberOfFrames", 1) or 1)
    spp = int(getattr(header, "SamplesPerPixel", 1) or 1)
    if frames == 1:
        arr = arr[None]
    if spp == 1:
        arr = arr[..., None]  # (F, rows, cols, S)
    arr = arr.astype(np.float32) * float(getattr(header, "RescaleSlope", 1) or 1) + float(
        getattr(header, "RescaleIntercept", 0) or 0
    )
    arr = np.transpose(arr, (3, 2, 1, 0))  # (S, X=cols, Y=rows, Z=frames)
    if frames == 1:
        arr = arr[..., 0]
    row_sp, col_sp = _pixel_spacing(header)
    dz = float(getattr(header, "SpacingBetweenSlices", None) or getattr(header, "SliceThickness", None) or 1.0)
    affine = np.diag([col_sp, row_sp, dz, 1.0])
    meta = {"affine": affine, "original_affine": affine.copy(), "spacing": np.array([col_sp, row_sp, dz][: arr.ndim - 1])}
    return _as_tensor_meta(path, arr, meta)


def _read_dicom_file(path: Path, header=None) -> MetaTensor:
    """One DICOM file -> ``(C, X, Y)`` (or ``(C, X, Y, Z)`` for multi-frame), HU via RescaleSlope/Intercept."""
    header = header if header is not None else _read_dicom_header(path)
    if is_seg_header(header):
        raise DataReadError(
            path,
            "is a DICOM SEG object (a segmentation), not an image; give it as the mask of the DICOM file or "
            "series it segments (prepare folder: labels/<name>.dcm; Python: read_mask(path, "
            "reference=read_image(<image or series folder>))).",
        )
    if int(getattr(header, "NumberOfFrames", 1) or 1) > 1 or int(getattr(header, "SamplesPerPixel", 1) or 1) > 1:
        return _dicom_multiframe(path, header)
    try:
        img = _load_with(PydicomReader(swap_ij=True), path)
    except Exception as e:
        raise _decode_error(path, e, header) from e
    img = img.to(torch.float32)[None]  # (1, X, Y); PydicomReader applied slope/intercept when present
    if not _has_patient_geometry(header):
        # CR / DX / US / secondary capture: no patient orientation. PydicomReader then takes the identity in its
        # (row, column) index order and swaps i/j for us, which gives [[0, 1], [1, 0]]: an axis swap the array
        # does not have. The array is (X = columns, Y = rows): a diagonal affine with the pixel spacing.
        row_sp, col_sp = _pixel_spacing(header)
        affine = torch.as_tensor(np.diag([col_sp, row_sp, 1.0, 1.0]))
        img.affine = affine
        img.meta["original_affine"] = affine.clone()
    img.meta["spacing"] = np.asarray(img.pixdim[:2], dtype=float)
    return img


def _series_sort(headers: list, files: list[Path]) -> tuple[list[int], np.ndarray | None]:
    """Order of the slices along the slice normal (ImagePositionPatient . (row x col)), and the unit normal."""
    have_geometry = all(
        getattr(h, "ImagePositionPatient", None) is not None and getattr(h, "ImageOrientationPatient", None) is not None
        for h in headers
    )
    if have_geometry:
        iop = np.asarray(headers[0].ImageOrientationPatient, dtype=float)
        normal = np.cross(iop[:3], iop[3:])
        pos = [float(np.dot(np.asarray(h.ImagePositionPatient, dtype=float), normal)) for h in headers]
        return sorted(range(len(files)), key=lambda i: (pos[i], str(files[i]))), normal
    if all(getattr(h, "InstanceNumber", None) is not None for h in headers):
        warnings.warn("DICOM series without ImagePositionPatient: slices sorted by InstanceNumber.", stacklevel=3)
        return sorted(range(len(files)), key=lambda i: (int(headers[i].InstanceNumber), str(files[i]))), None
    warnings.warn("DICOM series without position or instance numbers: slices sorted by file name.", stacklevel=3)
    return list(range(len(files))), None


#: two slices closer than this along the slice normal (mm) are the same slice
_SAME_POSITION_MM = 1e-3


def group_dicom_series(files: Sequence[str | os.PathLike]) -> list[list[Path]]:
    """DICOM files grouped by ``SeriesInstanceUID``, groups in the order of their first file (files keep theirs).

    Files without a ``SeriesInstanceUID`` form one group. An unreadable file raises :class:`DataReadError`.
    """
    groups: dict[str, list[Path]] = {}
    for f in files:
        f = Path(f)
        groups.setdefault(str(getattr(_read_dicom_header(f), "SeriesInstanceUID", "") or ""), []).append(f)
    return list(groups.values())


def read_dicom_series(files: Sequence[str | os.PathLike], name: str | os.PathLike | None = None) -> MetaTensor:
    """These DICOM files as one series: ``(1, X, Y, Z)``, exactly as :func:`read_image` reads a series folder.

    For files that share a folder with other inputs (inference on a folder of loose DICOM files).  ``name`` becomes
    ``meta["filename_or_obj"]`` and prefixes errors (default: the files' common folder).
    """
    paths = [Path(f) for f in files]
    if not paths:
        raise DataReadError(name, "no DICOM files given for the series.")
    folder = Path(name) if name is not None else Path(os.path.commonpath([str(p.parent) for p in paths]))
    img = _read_dicom_series(folder, paths).to(torch.float32)
    check_finite(img, folder)
    return img


def _check_distinct_slices(folder: Path, files: list[Path], headers: list, normal: np.ndarray | None) -> None:
    """Two files of one slice (a copied file, or two acquisitions at one position) would be stacked twice.

    Every such pair is named in one error, so a folder with several duplicates is fixed in one pass instead of one
    rerun per pair (at most :data:`_PAIRS_SHOWN` pairs are listed, with the total)."""
    seen: dict[str, Path] = {}
    copies: list[str] = []
    for f, h in zip(files, headers):
        uid = str(getattr(h, "SOPInstanceUID", "") or "")
        if uid and uid in seen:
            copies.append(f"{seen[uid].name} and {f.name}")
        else:
            seen[uid] = f
    if copies:
        raise DataReadError(
            folder,
            f"{len(copies)} pair(s) of files are the same slice (same SOPInstanceUID): {_pairs_text(copies)}; "
            "duplicated files: remove one file of each pair.",
        )
    if normal is None:
        return
    pos = [float(np.dot(np.asarray(h.ImagePositionPatient, dtype=float), normal)) for h in headers]  # sorted
    same = [f"{files[i - 1].name} and {files[i].name} ({pos[i]:.3f} mm)" for i in range(1, len(files))
            if abs(pos[i] - pos[i - 1]) < _SAME_POSITION_MM]
    if same:
        raise DataReadError(
            folder,
            f"{len(same)} pair(s) of files are at the same slice position (along the slice normal, same "
            f"ImagePositionPatient): {_pairs_text(same)}; duplicated slices, or several acquisitions / time points in "
            "one series: remove one file of each pair, or put each acquisition in its own folder.",
        )


#: how many duplicate pairs one error lists
_PAIRS_SHOWN = 20


def _pairs_text(pairs: Sequence[str]) -> str:
    shown = "; ".join(pairs[:_PAIRS_SHOWN])
    return shown + (f"; ... ({len(pairs) - _PAIRS_SHOWN} more)" if len(pairs) > _PAIRS_SHOWN else "")


def _read_dicom_series(folder: Path, files: Sequence[Path] | None = None) -> MetaTensor:
    """A DICOM series folder (or the given ``files`` of one) -> ``(1, X, Y, Z)`` float32 HU, slices in
    patient-position order.

    ``PydicomReader`` reads every slice (HU, spacing and affine from MONAI); the order is our own, by position
    along the slice normal, because file names and ``InstanceNumber`` are not reliable.  The volume's affine uses
    the mean slice step; ``meta["slice_positions"]`` keeps each slice's true origin (RAS, mm; what
    :func:`iter_slices` gives each slice) and ``meta["slice_spacing_deviation"]`` the largest distance (mm) of a
    slice from that regular grid (0 for an evenly spaced series).
    """
    files = list_dicom_files(folder) if files is None else [Path(f) for f in files]
    if not files:
        raise DataReadError(folder, "folder holds no DICOM files.")
    headers = [_read_dicom_header(f) for f in files]
    segs = [f for f, h in zip(files, headers) if is_seg_header(h)]
    if segs:
        raise DataReadError(
            folder,
            f"series folder holds a DICOM SEG object ({segs[0].name}); move it out of the image series, e.g. to "
            f"labels/{folder.name}.dcm, where `prepare folder` uses it as the series' mask.",
        )
    uids = {str(getattr(h, "SeriesInstanceUID", "")) for h in headers}
    if len(uids) > 1:
        raise DataReadError(
            folder,
            f"folder mixes {len(uids)} DICOM series (SeriesInstanceUID {sorted(uids)[:3]}...); put each series in "
            "its own folder.",
        )
    order, normal = _series_sort(headers, files)
    files = [files[i] for i in order]
    headers = [headers[i] for i in order]
    _check_distinct_slices(folder, files, headers, normal)
    slices = []
    for f, h in zip(files, headers):
        s = _read_dicom_file(f, h)
        if s.ndim != 3:
            raise DataReadError(f, "multi-frame or colour DICOM inside a series folder is not supported.")
        if slices and s.shape != slices[0].shape:
            raise DataReadError(
                f, f"slice size {tuple(s.shape[1:])} differs from the series' {tuple(slices[0].shape[1:])}."
            )
        slices.append(s)
    first = slices[0]
    vol = torch.stack([s.as_tensor() for s in slices], dim=-1)  # (1, X, Y, Z)
    affine = first.affine.detach().cpu().numpy().astype(float)
    geometry: dict = {}
    if normal is not None:
        # each slice's origin, LPS -> RAS as PydicomReader's affine
        ras = np.stack([np.asarray(h.ImagePositionPatient, dtype=float) for h in headers]) * np.array([-1, -1, 1])
        geometry["slice_positions"] = ras
        geometry["slice_spacing_deviation"] = 0.0
    if len(slices) > 1 and normal is not None:
        step = (ras[-1] - ras[0]) / (len(slices) - 1)  # the mean step: one affine for the whole volume
        affine[:3, 2] = step
        regular = ras[0] + np.arange(len(slices))[:, None] * step
        geometry["slice_spacing_deviation"] = float(np.max(np.linalg.norm(ras - regular, axis=1)))
    elif normal is not None:
        dz = float(getattr(headers[0], "SliceThickness", None) or 1.0)
        affine[:3, 2] = normal * dz * np.array([-1, -1, 1])
    dz = float(np.linalg.norm(affine[:3, 2])) or 1.0
    meta = dict(first.meta)
    meta.update(
        affine=torch.as_tensor(affine),
        original_affine=affine.copy(),
        spacing=np.array([*np.asarray(first.meta["spacing"], dtype=float)[:2], dz]),
        spatial_shape=np.array(vol.shape[1:]),
        filename_or_obj=str(folder),
        series_files=[str(f) for f in files],
        **geometry,
    )
    return MetaTensor(vol, meta=meta)


def _short(error: BaseException, limit: int = 160) -> str:
    """``"Type: first line of the message"``, cut at ``limit`` characters: a library's reason, in brackets."""
    first = (str(error).strip().splitlines() or [""])[0]
    first = first if len(first) <= limit else first[:limit] + "..."
    return f"{type(error).__name__}: {first}" if first else type(error).__name__


def _empty_or_unreadable(path: Path) -> str | None:
    """The problem of a file that is empty or cannot be opened at all, else ``None``."""
    try:
        size = path.stat().st_size
        with open(path, "rb"):
            pass
    except OSError as e:
        return f"cannot be opened ({e.strerror or _short(e)}); check that it exists and that you may read it."
    if size == 0:
        return "is empty (0 bytes): its copy, download or export did not finish; copy or export it again."
    return None


#: the size of a NIfTI-1 header: a shorter file cannot be one
_NIFTI_HEADER_BYTES = 348


def _nifti_problem(path: Path, error: BaseException) -> str:
    """What is wrong with a NIfTI file MONAI's readers refused, in one sentence with the fix.

    ``LoadImage`` answers any unreadable file with every reader's traceback (80 lines and more, ending on "install
    the reader libraries"); nibabel itself names the actual problem, which is classified here: truncated, not
    gzip data, no NIfTI header."""
    import gzip
    import zlib

    problem = _empty_or_unreadable(path)
    if problem:
        return problem
    import nibabel as nib

    try:
        if path.name.lower().endswith(".gz"):  # nibabel reports a cut-off .gz as "Cannot work out file type"
            with gzip.open(path) as f:
                while f.read(1 << 22):
                    pass
        np.asanyarray(nib.load(str(path)).dataobj)
        cause: BaseException = error  # nibabel reads it: MONAI's own step failed
    except Exception as e:  # noqa: BLE001 - classified below, the original is chained by the caller
        cause = e
    text = str(cause)
    if isinstance(cause, (EOFError, zlib.error)) or "end-of-stream" in text:
        return (f"is truncated or damaged: its compressed data ends early or is corrupt ({_short(cause)}); copy or "
                "export it again.")
    if isinstance(cause, gzip.BadGzipFile) or "not a gzip file" in text:
        return (f"is not gzip-compressed although it is named .nii.gz ({_short(cause)}): a damaged file, or another "
                "format renamed; export it again as NIfTI.")
    if "Expected" in text and "bytes" in text:
        return (f"is truncated: it holds fewer bytes of image data than its header declares ({_short(cause)}); copy "
                "or export it again.")
    if "Cannot work out file type" in text or "Empty file" in text:
        if not path.name.lower().endswith(".gz") and path.stat().st_size < _NIFTI_HEADER_BYTES:
            return (f"is truncated: {path.stat().st_size} bytes, shorter than a NIfTI header "
                    f"({_NIFTI_HEADER_BYTES} bytes); copy or export it again.")
        return ("has no valid NIfTI header: a damaged file, or another format under a NIfTI name; export it again "
                "as NIfTI.")
    return f"is not a readable NIfTI file ({_short(cause)}); check that it opens in a NIfTI viewer, or export it again."


def _picture_problem(path: Path, error: BaseException) -> str:
    """What is wrong with a picture MONAI's readers refused, in one sentence with the fix (see
    :func:`_nifti_problem`; PIL names the problem)."""
    problem = _empty_or_unreadable(path)
    if problem:
        return problem
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(str(path)) as im:
            im.load()
        cause: BaseException = error  # PIL decodes it: MONAI's own step failed
    except Exception as e:  # noqa: BLE001 - classified below, the original is chained by the caller
        cause = e
    if isinstance(cause, UnidentifiedImageError):
        return (f"is not a picture PIL can decode: a damaged file, or not a {_suffix(path) or 'picture'} file at all "
                "(another format renamed); open it in an image viewer and export it again.")
    if "truncated" in str(cause):
        return "is truncated: its picture data ends early; copy or export it again."
    return f"is not a readable picture ({_short(cause)}); open it in an image viewer and export it again."


def _read_nifti(path: Path) -> MetaTensor:
    try:
        img = _load_with(NibabelReader(), path)
    except Exception as e:
        raise DataReadError(path, _nifti_problem(path, e)) from e
    shape = tuple(img.shape)
    # A 2D image is often stored as (X, Y, 1); drop trailing singleton axes beyond the first two.
    while img.ndim > 2 and img.shape[-1] == 1:
        img = img[..., 0]
    if img.ndim == 2:
        img = img[None]
    elif img.ndim == 3:
        img = img[None]
    else:
        raise DataReadError(
            path,
            f"NIfTI of shape {shape} has more than 3 non-singleton axes; give a 2D image or a 3D stack of slices "
            "(split 4D series into volumes first).",
        )
    img.meta["spacing"] = np.asarray(img.pixdim[: img.ndim - 1], dtype=float)
    return img


def _read_picture(path: Path, role: str) -> MetaTensor:
    try:
        img = _load_with(PILReader(converter=_picture_converter(role)), path)
    except Exception as e:
        raise DataReadError(path, _picture_problem(path, e)) from e
    if img.ndim == 2:
        img = img[None]
    elif img.ndim == 3:
        img = img.permute(2, 0, 1)  # (X, Y, C) -> (C, X, Y); MetaTensor keeps the 2D spatial affine
    else:
        raise DataReadError(path, f"unexpected picture array shape {tuple(img.shape)} (multi-page TIFF?).")
    img.meta["spacing"] = np.ones(2)
    return img


def _read_raw(path: str | os.PathLike, role: str) -> MetaTensor:
    p = Path(path)
    fmt = detect_format(p)
    if fmt == "dicom-series":
        return _read_dicom_series(p)
    if fmt == "dicom":
        return _read_dicom_file(p)
    if fmt == "nifti":
        return _read_nifti(p)
    return _read_picture(p, role)


# ------------------------------------------------------------------------------------------------ public reads


def read_image(path: str | os.PathLike) -> MetaTensor:
    """Read any supported image as float32 ``(C, X, Y)`` or ``(C, X, Y, Z)``.

    CT stays in Hounsfield units (DICOM RescaleSlope/Intercept applied), pictures stay 0-255.  ``meta`` keeps
    MONAI's ``affine``/``original_affine``, ``filename_or_obj`` and a ``spacing`` array (one value per spatial axis).
    An image holding NaN or infinite values is refused (:func:`check_finite`), and so is one narrower than
    :data:`MIN_IMAGE_SIDE` pixels along X or Y (a 1 x 1 placeholder, a failed export): there is nothing to segment.
    """
    img = _read_raw(path, "image").to(torch.float32)
    check_finite(img, path)
    if img.ndim >= 3 and min(int(s) for s in img.shape[1:3]) < MIN_IMAGE_SIDE:
        raise DataReadError(
            path,
            f"is {int(img.shape[1])} x {int(img.shape[2])} pixels (X x Y): too small to segment (at least "
            f"{MIN_IMAGE_SIDE} pixels along each in-plane axis); a placeholder or a failed export? Export it again.",
        )
    return img


#: the fewest pixels along X and Y that :func:`read_image` accepts: a single row or column has no 2D content
MIN_IMAGE_SIDE = 2


def check_finite(img: torch.Tensor, path: str | os.PathLike | None) -> None:
    """Raise :class:`DataReadError` when ``img`` holds NaN or infinite values, naming how many and the first one.

    A NaN voxel is no intensity: a network given one predicts NaN scores, which the argmax turns into an
    all-background map without a word, and a training on it stops at its first iteration on a NaN loss that names
    no file. Such values come from resampling or masking tools that mark "no data" with NaN."""
    bad = ~torch.isfinite(img)
    if not bool(bad.any()):
        return
    n_nan, n_inf = int(torch.isnan(img).sum()), int(torch.isinf(img).sum())
    first = tuple(int(i) for i in torch.nonzero(bad)[0].tolist())
    what = " and ".join(t for t in (f"{n_nan} NaN" if n_nan else "", f"{n_inf} infinite" if n_inf else "") if t)
    raise DataReadError(
        path,
        f"holds {what} value(s) of {img.numel()} (the first at index {first} of shape {tuple(img.shape)}), which no "
        "network can segment; replace them with a real intensity (e.g. numpy.nan_to_num(a, nan=<background>)) "
        "and save the image again.",
    )


def check_label_values(values: np.ndarray | torch.Tensor, num_classes: int, path: str | os.PathLike | None) -> None:
    """Raise :class:`DataReadError` if any label is outside ``0..num_classes-1``; the message lists what was found."""
    found = np.unique(np.asarray(values))
    bad = found[(found < 0) | (found >= num_classes)]
    if bad.size:
        raise DataReadError(
            path,
            f"label values {_fmt_values(bad)} are outside the declared classes 0..{num_classes - 1} "
            f"(values found: {_fmt_values(found)}). Fix the mask, or declare more classes "
            "(num_classes / --num-classes), or binarise it with a threshold.",
        )


def _fmt_values(v: np.ndarray, limit: int = 12) -> str:
    items = [int(x) if float(x).is_integer() else float(x) for x in v[:limit]]
    return str(items)[:-1] + (", ...]" if v.size > limit else "]")


def read_mask(
    path: str | os.PathLike,
    num_classes: int | None = None,
    *,
    threshold: float | None = None,
    channel: int = 0,
    dtype: torch.dtype = torch.int64,
    reference: MetaTensor | None = None,
    class_names: Sequence[str] | None = None,
    segment_map: Mapping | None = None,
    binary_255: bool = True,
) -> MetaTensor:
    """Read an integer label map ``(1, X, Y[, Z])``.

    - a DICOM SEG object is decoded on the grid of ``reference``, the image it segments as ``read_image`` returned
      it (a DICOM file or series folder); ``class_names`` / ``segment_map`` choose each segment's class
      (:mod:`medsemiseg.data.dicom_seg`);

    - multi-channel pictures (RGB masks): channel ``channel`` is used (CHASE_DB1's PNGs are not uniformly encoded);
    - ``threshold``: label = value >= threshold (CHASE_DB1: 128), for anti-aliased or JPEG-damaged binary masks;
      a palette (indexed) picture is then read by its palette colours (channel ``channel`` of its RGB), not by
      its indices (without a threshold, palette indices are the labels);
    - otherwise the values must be whole numbers; a mask holding only 0 and 255 becomes 0/1 (not with
      ``binary_255=False``: ``prepare folder`` decides that for all masks of a folder together);
    - with ``num_classes`` every value must lie in ``0..num_classes-1``, else one error names the file and values
      (checked before the cast to ``dtype``, so a 16-bit 256 is not read as a uint8 0).
    """
    p = Path(path)
    if p.is_file() and detect_format(p) == "dicom" and is_seg_header(_read_dicom_header(p)):
        if reference is None:
            raise DataReadError(
                p,
                "is a DICOM SEG object; it is read against the image it segments: read_mask(path, "
                "reference=read_image(<the DICOM file or series folder>)).",
            )
        from .dicom_seg import seg_to_label_map

        out = seg_to_label_map(p, reference, class_names=class_names, segment_map=segment_map, dtype=dtype)
        if num_classes is not None:
            check_label_values(out.numpy(), num_classes, p)
        return out
    raw = _read_raw(p, "mask" if threshold is None else "mask-values")  # a threshold reads palette colours
    if raw.shape[0] > 1:
        if channel >= raw.shape[0]:
            raise DataReadError(p, f"mask has {raw.shape[0]} channels, channel {channel} asked.")
        raw = raw[channel : channel + 1]
    arr = raw.as_tensor()
    if threshold is not None:
        out = (arr.to(torch.float64) >= threshold).to(dtype)
        if num_classes is not None:
            check_label_values(out.numpy(), num_classes, p)
    else:
        # float32 as read (exact for whole numbers up to 2**24): a float64 copy cost ~31 bytes a voxel at the peak,
        # 2.4 GB for a 512 x 512 x 300 mask
        a64 = arr if arr.is_floating_point() else arr.to(torch.float64)
        if not torch.all(torch.isfinite(a64)) or not torch.equal(a64, torch.round(a64)):
            frac = np.unique(a64[a64 != torch.round(a64)].numpy())
            raise DataReadError(
                p,
                f"mask holds non-integer values {_fmt_values(frac)}; labels must be whole numbers "
                "(was it resampled with linear interpolation?). Re-export it, or give a threshold.",
            )
        values = torch.unique(a64)
        if binary_255 and values.numel() and bool(torch.all((values == 0) | (values == 255))) \
                and bool(torch.any(values == 255)):
            a64 = a64 / 255.0
        if num_classes is not None:
            check_label_values(a64.numpy(), num_classes, p)
        out = a64.to(dtype)
    return MetaTensor(out, meta=dict(raw.meta))


# ------------------------------------------------------------------------------------------------------ slices


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

