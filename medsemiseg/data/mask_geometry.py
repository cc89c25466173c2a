"""Check that a mask lies on its image's voxel grid, using the geometry (affine) both files carry.

Used by ``python -m medsemiseg.prepare``: a NIfTI mask saved in another orientation than its image (e.g. after
``nib.as_closest_canonical``) has the same array shape but mirrored or transposed content; comparing shapes alone
accepts it.  :func:`align_mask` compares the affines of image and mask, puts a mask that differs only by an axis
permutation / flip onto the image's grid (nibabel ``io_orientation`` / ``ornt_transform`` / ``apply_orientation``),
and refuses one whose geometry still differs.  Pictures, NIfTI files with an identity or no affine (numpy-style
saves) and multi-frame DICOM (no positions) carry no geometry: those are left to the shape check.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch
from monai.data import MetaTensor

from .io import DataReadError, detect_format

__all__ = ["TOLERANCE_VOXELS", "align_mask", "has_geometry"]

#: Image and mask grids agree when every corner voxel centre lies within this share of the smallest voxel size (mm).
TOLERANCE_VOXELS = 0.25


def _affine(t: torch.Tensor) -> np.ndarray | None:
    if not isinstance(t, MetaTensor):
        return None
    a = np.asarray(t.affine.detach().cpu().numpy(), dtype=float)
    if a.shape == (3, 3):  # 2D affine -> 3D, unit third axis
        b = np.eye(4)
        b[:2, :2], b[:2, 3] = a[:2, :2], a[:2, 2]
        a = b
    return a if a.shape == (4, 4) and np.all(np.isfinite(a)) else None


def has_geometry(t: torch.Tensor, path: str | os.PathLike) -> bool:
    """Whether ``t`` (read from ``path``) carries a real position / orientation in space.

    False for pictures, NumPy arrays, NIfTI files with neither qform nor sform (nibabel then invents one) or with
    an identity affine (what ``nib.Nifti1Image(a, np.eye(4))`` writes), and DICOM without ``ImagePositionPatient``.
    """
    p = Path(path)
    if not p.exists() or p.name.lower().endswith(".npy"):
        return False
    try:
        fmt = detect_format(p)
    except DataReadError:
        return False
    a = _affine(t)
    if fmt == "picture" or a is None or np.allclose(a, np.eye(4)):
        return False
    meta = t.meta
    if fmt == "nifti":
        return bool(int(meta.get("sform_code", 0) or 0) > 0 or int(meta.get("qform_code", 0) or 0) > 0)
    return "00200032" in meta or "series_files" in meta  # DICOM: ImagePositionPatient (a series keeps the first's)


def _codes(a: np.ndarray) -> str:
    import nibabel as nib

    return "".join(c or "?" for c in nib.aff2axcodes(a))


def _corners(a: np.ndarray, shape: tuple[int, ...]) -> np.ndarray:
    shape3 = tuple(shape) + (1,) * (3 - len(shape))
    ijk = np.array(np.meshgrid(*[[0, n - 1] for n in shape3], indexing="ij")).reshape(3, -1)
    return a[:3, :3] @ ijk + a[:3, 3:4]


def _tolerance_mm(a: np.ndarray, shape: tuple[int, ...]) -> float:
    shape3 = tuple(shape) + (1,) * (3 - len(shape))
    sizes = [np.linalg.norm(a[:3, i]) for i in range(3) if shape3[i] > 1] or [np.linalg.norm(a[:3, 0])]
    return max(TOLERANCE_VOXELS * float(min(sizes)), 1e-3)


def _fmt_affine(a: np.ndarray) -> str:
    return "[" + ", ".join("[" + ", ".join(f"{v:.4g}" for v in row) + "]" for row in a[:3]) + "]"


def align_mask(
    image: torch.Tensor, mask: torch.Tensor, image_path: str | os.PathLike, mask_path: str | os.PathLike
) -> tuple[torch.Tensor, str]:
    """``(mask on the image's voxel grid, status)``: ``"same"``, ``"reoriented"``, ``"unchecked"``, ``"no-geometry"``
    or ``"size-differs"`` (the mask covers another number of voxels in any orientation: left to a size check).

    ``"unchecked"``: only one of image and mask carries geometry (:func:`has_geometry`); ``"no-geometry"``: neither
    does.  Then the mask is returned unchanged and only its shape can be compared.  A mask whose affine differs
    from the image's by an axis permutation / flip is reoriented (its affine becomes the image's); any other
    difference (origin, spacing, rotation) beyond :data:`TOLERANCE_VOXELS` of a voxel at the grid's corners raises
    :class:`DataReadError` naming both files and both orientations.
    """
    from nibabel.orientations import apply_orientation, inv_ornt_aff, io_orientation, ornt_transform

    if "segment_classes" in getattr(mask, "meta", {}):  # a DICOM SEG is decoded on the image's own grid
        return mask, "same"
    geo_image, geo_mask = has_geometry(image, image_path), has_geometry(mask, mask_path)
    if not (geo_image and geo_mask):
        return mask, "unchecked" if geo_image or geo_mask else "no-geometry"
    a_img, a_msk = _affine(image), _affine(mask)
    shape_img = tuple(image.shape[1:])
    tol = _tolerance_mm(a_img, shape_img)

    def close(a: np.ndarray, shape: tuple[int, ...]) -> float:
        return float(np.max(np.linalg.norm(_corners(a, shape) - _corners(a_img, shape_img), axis=0)))

    arr = np.asarray(mask.detach().cpu().numpy())
    if tuple(arr.shape[1:]) == shape_img and close(a_msk, shape_img) <= tol:
        return mask, "same"
    spatial = arr[0] if arr.ndim == 4 else arr[0][..., None]  # (X, Y, Z)
    transform = ornt_transform(io_orientation(a_msk), io_orientation(a_img))
    moved = apply_orientation(spatial, transform)
    a_moved = a_msk @ inv_ornt_aff(transform, spatial.shape)
    moved_shape = moved.shape if arr.ndim == 4 or moved.shape[2] != 1 else moved.shape[:2]
    if tuple(moved_shape) == shape_img and close(a_moved, shape_img) <= tol:
        out = MetaTensor(torch.as_tensor(np.ascontiguousarray(moved.reshape(shape_img))[None]), meta=dict(mask.meta))
        out.affine = torch.as_tensor(a_img)
        return out, "reoriented"
    if tuple(moved_shape) != shape_img and tuple(arr.shape[1:]) != shape_img:
        return mask, "size-differs"  # not a matter of orientation: the caller's size check names both sizes
    detail = (
        f"its array {tuple(arr.shape[1:])} in that orientation would be {tuple(moved_shape)}"
        if tuple(moved_shape) != shape_img
        else f"even in the image's axis order its voxels lie up to {close(a_moved, shape_img):.3g} mm away "
        f"(tolerance {tol:.3g} mm)"
    )
    raise DataReadError(
        mask_path,
        f"mask geometry does not match its image {image_path}: mask orientation {_codes(a_msk)} affine "
        f"{_fmt_affine(a_msk)}, image orientation {_codes(a_img)} affine {_fmt_affine(a_img)}; {detail}. "
        "Is it the mask of another scan, or resampled? Re-export it on the image's grid "
        "(e.g. nib.Nifti1Image(mask, image.affine)).",
    )

