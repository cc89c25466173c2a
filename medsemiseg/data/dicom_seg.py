"""DICOM SEG objects (Segmentation Storage) as integer label maps on the grid of the image they segment.

Why this exists: annotation tools used in the clinic (3D Slicer, OHIF, MONAI Label's DICOMweb back end) save
their work as DICOM SEG, not as NIfTI or PNG.  A SEG stores one bit-mask frame per (segment, slice) and says which
slice each frame belongs to by the source image's SOP Instance UID and by its position in the patient; empty
frames are usually left out.  Turning that into a label map needs the image it segments, so the entry point takes
the image as read by :func:`medsemiseg.data.read_image` (a DICOM file or a DICOM series folder) and returns a
``(1, X, Y[, Z])`` label map on exactly that grid.

Rules (each failure is one :class:`~medsemiseg.data.io.DataReadError` naming the SEG file):

- a frame goes to the slice whose SOP Instance UID it references; failing that, to the slice at its
  ``ImagePositionPatient`` (within half the slice spacing); a non-empty frame that matches no slice is an error
  (the SEG belongs to another series), never silently dropped;
- frames must have the image's rows x columns and orientation (resampled segmentations are not supported);
- class of a segment: ``segment_map`` if given (segment number or label -> class index; unlisted segments are
  left out); else, when ``class_names`` are given and *every* segment label matches one of them (case, spaces,
  ``-``/``_`` ignored), the index of that name; else the segment number (DICOM numbers segments from 1, so
  background stays 0);
- ``FRACTIONAL`` segmentations are thresholded at half their maximum value;
- a label map holds one class per pixel, so segments of different classes that overlap are an error that names
  them (pass a ``segment_map`` that leaves one out).
"""

from __future__ import annotations

import os
import re
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from .dicom import SEGMENTATION_STORAGE, is_seg_header
from .io import DataReadError

__all__ = ["SEGMENTATION_STORAGE", "SegFrame", "SegObject", "read_seg", "seg_to_label_map", "segment_classes"]


@dataclass(frozen=True)
class SegFrame:
    """One frame of a SEG: the mask of one segment on one source slice."""

    segment: int
    mask: np.ndarray  # (rows, cols) bool
    source_uid: str | None
    position: np.ndarray | None  # ImagePositionPatient of the frame's first pixel (mm, LPS)
    orientation: np.ndarray | None  # ImageOrientationPatient (row direction, column direction)


@dataclass(frozen=True)
class SegObject:
    """A decoded SEG: segment labels by number, and its frames."""

    path: Path
    segments: dict[int, str]
    frames: list[SegFrame]
    rows: int
    columns: int


def _first(seq_owner, name: str):
    seq = getattr(seq_owner, name, None) if seq_owner is not None else None
    return seq[0] if seq else None


def _vector(value) -> np.ndarray | None:
    return None if value is None else np.asarray([float(v) for v in value], dtype=float)


def read_seg(path: str | os.PathLike) -> SegObject:
    """Decode a DICOM SEG file into its segments and per-frame masks (no image needed)."""
    import pydicom

    p = Path(path)
    try:
        ds = pydicom.dcmread(str(p))
    except Exception as e:
        raise DataReadError(p, f"not a readable DICOM file ({type(e).__name__}: {e}).") from e
    if not is_seg_header(ds):
        raise DataReadError(p, "is not a DICOM SEG object (no Segment Sequence).")
    segments = {int(s.SegmentNumber): str(getattr(s, "SegmentLabel", "") or f"segment {int(s.SegmentNumber)}")
                for s in getattr(ds, "SegmentSequence", [])}
    if not segments:
        raise DataReadError(p, "DICOM SEG lists no segments (empty Segment Sequence).")
    try:
        arr = np.asarray(ds.pixel_array)
    except Exception as e:
        raise DataReadError(p, f"cannot decode the DICOM SEG pixel data ({e}).") from e
    rows, cols = int(ds.Rows), int(ds.Columns)
    arr = arr.reshape(-1, rows, cols)
    seg_type = str(getattr(ds, "SegmentationType", "BINARY")).upper()
    if seg_type == "FRACTIONAL":
        masks = arr > float(getattr(ds, "MaximumFractionalValue", 255) or 255) / 2.0
    else:
        masks = arr > 0
    per_frame = list(getattr(ds, "PerFrameFunctionalGroupsSequence", []) or [])
    shared = _first(ds, "SharedFunctionalGroupsSequence")
    n = masks.shape[0]
    if per_frame and len(per_frame) < n:
        raise DataReadError(p, f"DICOM SEG has {n} frames but only {len(per_frame)} per-frame functional groups.")
    if len(per_frame) > n:
        warnings.warn(
            f"{p}: DICOM SEG has {len(per_frame)} per-frame functional groups for {n} frames of pixel data; "
            f"using the first {n}.",
            stacklevel=2,
        )
    plane = _first(shared, "PlaneOrientationSequence")
    shared_orient = _vector(getattr(plane, "ImageOrientationPatient", None)) if plane is not None else None
    shared_seg = _first(shared, "SegmentIdentificationSequence")
    frames: list[SegFrame] = []
    for i in range(n):
        item = per_frame[i] if per_frame else None
        ident = _first(item, "SegmentIdentificationSequence") or shared_seg
        if ident is not None:
            segment = int(ident.ReferencedSegmentNumber)
        elif len(segments) == 1:
            segment = next(iter(segments))
        else:
            raise DataReadError(p, f"DICOM SEG frame {i + 1} does not say which of its {len(segments)} segments it is.")
        if segment not in segments:
            raise DataReadError(p, f"DICOM SEG frame {i + 1} refers to segment {segment}, which the file does not list.")
        source = _first(_first(item, "DerivationImageSequence"), "SourceImageSequence")
        source_uid = str(source.ReferencedSOPInstanceUID) if source is not None and "ReferencedSOPInstanceUID" in source else None
        pos_item = _first(item, "PlanePositionSequence")
        position = _vector(getattr(pos_item, "ImagePositionPatient", None)) if pos_item is not None else None
        orient_item = _first(item, "PlaneOrientationSequence")
        orientation = _vector(getattr(orient_item, "ImageOrientationPatient", None)) if orient_item is not None else shared_orient
        frames.append(SegFrame(segment, masks[i], source_uid, position, orientation))
    return SegObject(p, segments, frames, rows, cols)


def _norm_name(text: str) -> str:
    return re.sub(r"[\s_\-]+", "", str(text)).casefold()


def segment_classes(
    seg: SegObject, class_names: Sequence[str] | None = None, segment_map: Mapping | None = None
) -> dict[int, int]:
    """Class index of every segment number kept (see the module docstring for the rule)."""
    if segment_map:
        by_label = {_norm_name(v): k for k, v in seg.segments.items()}
        out: dict[int, int] = {}
        for key, cls in segment_map.items():
            if isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.strip().isdigit()):
                number = int(key)
                if number not in seg.segments:
                    raise DataReadError(seg.path, f"segment_map names segment {number}; the SEG has {_describe(seg)}.")
            else:
                number = by_label.get(_norm_name(key))
                if number is None:
                    raise DataReadError(seg.path, f"segment_map names segment {key!r}; the SEG has {_describe(seg)}.")
            out[number] = int(cls)
        return out
    if class_names:
        names = {_norm_name(c): i for i, c in enumerate(class_names)}
        hits = {k: names.get(_norm_name(v)) for k, v in seg.segments.items()}
        if all(h is not None for h in hits.values()):
            return {k: int(h) for k, h in hits.items()}
        if any(h is not None for h in hits.values()):
            missing = [seg.segments[k] for k, h in hits.items() if h is None]
            raise DataReadError(
                seg.path,
                f"some segment labels match the class names {list(class_names)} and some do not ({missing}); "
                "give a segment map (e.g. --segment-map 'Lesion=1,Effusion=3') so no segment gets a wrong class.",
            )
    return {k: k for k in seg.segments}


def _describe(seg: SegObject) -> str:
    return ", ".join(f"{k} {v!r}" for k, v in sorted(seg.segments.items()))


def _reference_slices(reference: MetaTensor, seg_path: Path) -> tuple[list[str | None], np.ndarray | None, np.ndarray | None, float]:
    """SOP Instance UIDs, positions (Z, 3) and orientation of the reference image's slices, in its slice order."""
    import pydicom

    files = reference.meta.get("series_files")
    if not files:
        src = reference.meta.get("filename_or_obj")
        if reference.ndim == 4:
            raise DataReadError(
                seg_path,
                "DICOM SEG masks are supported for single-slice DICOM files and DICOM series folders, not for "
                f"multi-frame or NIfTI images ({src}); export the segmentation to NIfTI instead.",
            )
        files = [src]
    uids: list[str | None] = []
    positions = []
    orientation = None
    thickness = None
    for f in files:
        if not f or not Path(str(f)).is_file():
            raise DataReadError(seg_path, f"a DICOM SEG needs the DICOM image it segments; {f} is not a DICOM file.")
        try:
            h = pydicom.dcmread(str(f), stop_before_pixels=True)
        except Exception as e:
            raise DataReadError(seg_path, f"a DICOM SEG needs a DICOM image; {f} is not one ({e}).") from e
        uids.append(str(h.SOPInstanceUID) if "SOPInstanceUID" in h else None)
        positions.append(_vector(getattr(h, "ImagePositionPatient", None)))
        if orientation is None:
            orientation = _vector(getattr(h, "ImageOrientationPatient", None))
        if thickness is None and getattr(h, "SliceThickness", None):
            thickness = float(h.SliceThickness)
    pos = np.stack(positions) if all(q is not None for q in positions) else None
    if pos is not None and len(pos) > 1:
        gaps = np.linalg.norm(np.diff(pos, axis=0), axis=1)
        gaps = gaps[gaps > 1e-6]
        tol = 0.5 * float(gaps.min()) if gaps.size else 0.5
    else:
        tol = 0.5 * (thickness or 1.0)
    return uids, pos, orientation, tol


def seg_to_label_map(
    path: str | os.PathLike,
    reference: MetaTensor,
    *,
    class_names: Sequence[str] | None = None,
    segment_map: Mapping | None = None,
    dtype: torch.dtype = torch.uint8,
) -> MetaTensor:
    """The SEG at ``path`` as a ``(1, X, Y[, Z])`` label map on the grid of ``reference``.

    ``reference`` is the segmented image as returned by ``read_image`` for a single DICOM file or a DICOM series
    folder (its ``meta`` names the files, so their UIDs and positions can be matched).  ``meta["segment_classes"]``
    of the result records ``{segment label: class index}``.
    """
    p = Path(path)
    seg = read_seg(p)
    classes = segment_classes(seg, class_names, segment_map)
    spatial = tuple(int(s) for s in reference.shape[1:])
    if len(spatial) not in (2, 3):
        raise DataReadError(p, f"reference image has shape {tuple(reference.shape)}; expected (C, X, Y[, Z]).")
    x, y = spatial[0], spatial[1]
    if (seg.columns, seg.rows) != (x, y):
        raise DataReadError(
            p,
            f"DICOM SEG frames are {seg.rows} rows x {seg.columns} columns but the image is {y} x {x}; resampled "
            "segmentations are not supported (export the SEG on the image's grid).",
        )
    uids, positions, orientation, tol = _reference_slices(reference, p)
    index_of = {u: k for k, u in enumerate(uids) if u}
    n_slices = spatial[2] if len(spatial) == 3 else 1
    if len(uids) != n_slices:
        raise DataReadError(p, f"the reference image has {n_slices} slices but names {len(uids)} DICOM files.")
    by_slice: dict[int, list[tuple[int, SegFrame]]] = {}  # slice -> (frame number, frame), in frame order
    unmatched = []
    for i, fr in enumerate(seg.frames):
        if fr.segment not in classes:
            continue
        k = index_of.get(fr.source_uid) if fr.source_uid else None
        if k is None and fr.position is not None and positions is not None:
            d = np.linalg.norm(positions - fr.position[None], axis=1)
            j = int(np.argmin(d))
            if d[j] <= tol:
                k = j
        if k is None:
            if fr.mask.any():
                unmatched.append((i + 1, fr.source_uid, fr.position))
            continue
        if fr.orientation is not None and orientation is not None and not np.allclose(fr.orientation, orientation, atol=1e-3):
            raise DataReadError(
                p,
                f"DICOM SEG frame {i + 1} has orientation {fr.orientation.round(4).tolist()} but the image "
                f"{orientation.round(4).tolist()}; resampled segmentations are not supported.",
            )
        by_slice.setdefault(k, []).append((i + 1, fr))
    if unmatched:
        num, uid, pos = unmatched[0]
        where = f"SOP Instance UID {uid}" if uid else "no source UID"
        if pos is not None:
            where += f", position {pos.round(2).tolist()}"
        raise DataReadError(
            p,
            f"{len(unmatched)} non-empty DICOM SEG frame(s) match no slice of the image "
            f"{reference.meta.get('filename_or_obj')} (first: frame {num}, {where}); is this the segmentation of "
            "another series?",
        )
    if not by_slice and any(fr.mask.any() for fr in seg.frames):
        raise DataReadError(p, "no DICOM SEG frame was kept (segment_map leaves every segment out).")
    label = torch.zeros((x, y, n_slices), dtype=dtype)
    for k, frames in by_slice.items():  # one slice at a time: the overlap bookkeeping stays 2-D
        plane = np.zeros((x, y), dtype=np.int64)
        owner = np.full((x, y), -1, dtype=np.int64)  # segment number that set each pixel
        for _, fr in frames:
            region = fr.mask.T  # (rows, cols) -> (X, Y)
            cls = classes[fr.segment]
            clash = region & (owner >= 0) & (plane != cls)
            if clash.any():
                other = int(np.unique(owner[clash])[0])
                raise DataReadError(
                    p,
                    f"segments {seg.segments[other]!r} ({other}) and {seg.segments[fr.segment]!r} ({fr.segment}) "
                    f"overlap on {int(clash.sum())} pixels of slice {k}, with different classes; a label map holds "
                    "one class per pixel. Give a segment map that leaves one of them out (e.g. --segment-map).",
                )
            plane[region] = cls
            owner[region] = fr.segment
        label[..., k] = torch.from_numpy(plane).to(dtype)
    out = label if len(spatial) == 3 else label[..., 0]
    meta = {k: v for k, v in reference.meta.items() if k not in ("series_files",)}
    meta["filename_or_obj"] = str(p)
    meta["segment_classes"] = {seg.segments[k]: c for k, c in sorted(classes.items())}
    return MetaTensor(out[None], meta=meta)
