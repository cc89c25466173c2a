"""DICOM files and series: reading, ordering along the slice normal, and errors that name the fix.

:func:`read_dicom_file` reads one file (a 2D image, or a multi-frame one as a stack), :func:`read_dicom_series` the
files of one series as a ``(C, X, Y, Z)`` volume ordered by position along the slice normal (not by
``InstanceNumber``, which scanners and anonymisers renumber), refusing duplicated positions. A compressed file whose
decoder is missing is an error naming the package and its ``pip install`` command (:data:`DICOM_DECODERS`).
:func:`medsemiseg.data.io.read_image` reads DICOM through these.
"""

from __future__ import annotations

import os
import warnings
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor, PydicomReader

from .io import (
    DataReadError,
    _as_tensor_meta,
    _load_with,
    check_finite,
    list_dicom_files,
)

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


def read_dicom_header(path: Path):
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


def read_dicom_file(path: Path, header=None) -> MetaTensor:
    """One DICOM file -> ``(C, X, Y)`` (or ``(C, X, Y, Z)`` for multi-frame), HU via RescaleSlope/Intercept."""
    header = header if header is not None else read_dicom_header(path)
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
        groups.setdefault(str(getattr(read_dicom_header(f), "SeriesInstanceUID", "") or ""), []).append(f)
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
    img = read_dicom_folder(folder, paths).to(torch.float32)
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


def read_dicom_folder(folder: Path, files: Sequence[Path] | None = None) -> MetaTensor:
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
    headers = [read_dicom_header(f) for f in files]
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
        s = read_dicom_file(f, h)
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
