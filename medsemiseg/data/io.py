"""Readers for every input the package accepts, on top of MONAI's ``LoadImage`` readers.

One entry point per role:

- :func:`read_image` -> ``MetaTensor`` float32, channel-first, MONAI spatial order: ``(C, X, Y)`` for a 2D
  picture/slice, ``(C, X, Y, Z)`` for a stack (3D NIfTI, DICOM series, multi-frame DICOM).
- :func:`read_mask` -> ``MetaTensor`` integer ``(1, X, Y[, Z])`` validated against the declared classes.
- :func:`detect_format` and the file-name helpers every reader shares.

DICOM files and series are read by :mod:`.dicom`, HDF5 slices and volumes (one array per key) by :mod:`.hdf5`;
slices of 3D inputs and the bundles' dictionary transform ``LoadSliced`` are in :mod:`.slices`.

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
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, NibabelReader, PILReader
from monai.transforms import LoadImage

__all__ = [
    "DICOM_SUFFIXES",
    "HDF5_SUFFIXES",
    "NIFTI_SUFFIXES",
    "PICTURE_SUFFIXES",
    "DataReadError",
    "check_finite",
    "check_label_values",
    "detect_format",
    "file_stem",
    "is_supported_file",
    "list_dicom_files",
    "quiet_nvimgcodec_notice",
    "read_image",
    "read_mask",
]

PICTURE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".gif", ".bmp")
NIFTI_SUFFIXES = (".nii", ".nii.gz")
DICOM_SUFFIXES = (".dcm", ".dicom", ".ima")
HDF5_SUFFIXES = (".h5", ".hdf5", ".hdf")
_ALL_SUFFIXES = PICTURE_SUFFIXES + NIFTI_SUFFIXES + DICOM_SUFFIXES + HDF5_SUFFIXES


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
    if _suffix(path) in PICTURE_SUFFIXES + NIFTI_SUFFIXES + HDF5_SUFFIXES:
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
    """``"dicom-series"``, ``"dicom"``, ``"nifti"``, ``"hdf5"`` or ``"picture"``; a :class:`DataReadError` otherwise."""
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
    if suffix in HDF5_SUFFIXES:
        return "hdf5"
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


def _read_raw(
    path: str | os.PathLike, role: str, hdf5_key: str | None = None, hdf5_axes: str = "zyx"
) -> MetaTensor:
    from .dicom import (  # imported here: dicom.py builds on this module
        read_dicom_file,
        read_dicom_folder,
    )

    p = Path(path)
    fmt = detect_format(p)
    if fmt == "hdf5":
        from .hdf5 import read_hdf5  # imported here: hdf5.py builds on this module

        if role == "image":
            return read_hdf5(p, hdf5_key or "image", hdf5_axes, "--hdf5-image-key")
        return read_hdf5(p, hdf5_key or "label", hdf5_axes, "--hdf5-label-key")
    if fmt == "dicom-series":
        return read_dicom_folder(p)
    if fmt == "dicom":
        return read_dicom_file(p)
    if fmt == "nifti":
        return _read_nifti(p)
    return _read_picture(p, role)


# ------------------------------------------------------------------------------------------------ public reads


def read_image(path: str | os.PathLike, *, hdf5_key: str | None = None, hdf5_axes: str = "zyx") -> MetaTensor:
    """Read any supported image as float32 ``(C, X, Y)`` or ``(C, X, Y, Z)``.

    An HDF5 file is read from its array ``hdf5_key`` (default ``image``) stored in ``hdf5_axes`` order
    (:mod:`.hdf5`).  CT stays in Hounsfield units (DICOM RescaleSlope/Intercept applied), pictures stay 0-255.
    ``meta`` keeps MONAI's ``affine``/``original_affine``, ``filename_or_obj`` and a ``spacing`` array (one value per
    spatial axis).
    An image holding NaN or infinite values is refused (:func:`check_finite`), and so is one narrower than
    :data:`MIN_IMAGE_SIDE` pixels along X or Y (a 1 x 1 placeholder, a failed export): there is nothing to segment.
    """
    img = _read_raw(path, "image", hdf5_key, hdf5_axes).to(torch.float32)
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
    hdf5_key: str | None = None,
    hdf5_axes: str = "zyx",
) -> MetaTensor:
    """Read an integer label map ``(1, X, Y[, Z])``.

    - an HDF5 file is read from its array ``hdf5_key`` (default ``label``) stored in ``hdf5_axes`` order
      (:mod:`.hdf5`), then checked as any other mask;
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
    from .dicom import (  # imported here: dicom.py builds on this module
        is_seg_header,
        read_dicom_header,
    )

    p = Path(path)
    if p.is_file() and detect_format(p) == "dicom" and is_seg_header(read_dicom_header(p)):
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
    # a threshold reads palette colours
    raw = _read_raw(p, "mask" if threshold is None else "mask-values", hdf5_key, hdf5_axes)
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
