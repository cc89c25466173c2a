"""Deterministic phantom data sets written in the *real* on-disk layouts.

Why this module exists: the bundles must train on a fresh machine with nothing downloaded, and every reader,
``prepare`` path and test needs files that look like the public data sets (CHASE_DB1 JPG/PNG, MedSeg COVID-19
NIfTI stacks, a DICOM CT series). Both generators therefore write exactly those formats, so the synthetic data
goes through the same loaders as the real data; they are also the fixture factory of the test suite.

* :func:`generate_covid` -- chest CT slices in Hounsfield units: body (skin/fat/muscle), ribs, sternum, spine,
  mediastinum/heart, two lungs at about -850 HU with vessels and a dependent density gradient, and three lesion
  classes with overlapping appearance: ground-glass (~ -600 HU, blurry edges, textured), consolidation (~ 0..+50 HU,
  sharp, with air bronchograms) and a rarer dependent pleural effusion (a fluid crescent on the posterior side).
  Written as MedSeg's ``tr_im.nii.gz`` / ``tr_mask.nii.gz`` / ``val_im.nii.gz`` (+ ``tr_lungmasks_updated.nii.gz``),
  Radiopaedia-like unlabelled volumes ``unlabeled/rp_im_<i>.nii.gz`` and one DICOM series.
* :func:`generate_chase` -- fundus photographs: circular field of view, uneven illumination, choroidal texture,
  macula, optic disc and branching, tapering vessel trees (width ~5 px down to 1 px), written as CHASE_DB1's
  ``Image_01L.jpg`` + ``Image_01L_1stHO.png`` + ``Image_01L_2ndHO.png`` (a second, slightly different observer).

Array conventions follow docs/architecture.md: CT slice ``k`` is ``data[:, :, k]`` with axes ``(X, Y)``, shown
upright as ``data[:, :, k].T`` (anterior at small ``Y``, posterior / table side at large ``Y``).

Everything is a pure function of the seed: each artefact (and each slice / image) draws from its own
``numpy.random.SeedSequence([seed, stream, index])``, so the same seed gives byte-identical files and changing
one count does not reshuffle the other artefacts.
"""

from __future__ import annotations

import argparse
import hashlib
import math
import sys
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy import ndimage as ndi

__all__ = [
    "COVID_CLASSES",
    "CHASE_CLASSES",
    "ct_phantom_volume",
    "fundus_phantom",
    "generate_covid",
    "generate_chase",
    "chase_names",
    "main",
]

COVID_CLASSES = ("background", "ground-glass", "consolidation", "pleural effusion")
CHASE_CLASSES = ("background", "vessel")

# Independent random streams (SeedSequence entropy) per artefact.
_STREAM = {"tr": 1, "val": 2, "rp": 3, "dicom": 4, "fundus": 5}

_HU_AIR = -1000.0
_HU_MIN, _HU_MAX = -1024.0, 3071.0
# CHASE_DB1 photographs are 999 x 960 (W x H).
_CHASE_ASPECT = 999.0 / 960.0


def _rng(seed: int, stream: str, *index: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), _STREAM[stream], *map(int, index)]))


def _smooth_noise(rng: np.random.Generator, shape, sigma: float) -> np.ndarray:
    """White noise low-passed with a Gaussian of ``sigma`` px, renormalised to zero mean / unit std."""
    n = ndi.gaussian_filter(rng.standard_normal(shape).astype(np.float32), sigma, mode="reflect")
    return (n - n.mean()) / (n.std() + 1e-8)


def _top_k(score: np.ndarray, region: np.ndarray, k: int) -> np.ndarray:
    """Boolean mask of the ``k`` highest-``score`` pixels inside ``region`` (exact area control)."""
    out = np.zeros(score.shape, bool)
    idx = np.flatnonzero(region)
    k = int(min(max(k, 0), idx.size))
    if k == 0:
        return out
    vals = score.ravel()[idx]
    sel = idx[np.argpartition(-vals, k - 1)[:k]]
    out.ravel()[sel] = True
    return out


# ----------------------------------------------------------------------------------------------------------------
# CT phantom
# ----------------------------------------------------------------------------------------------------------------


def _draw_patient(rng: np.random.Generator) -> dict:
    """Body habitus and scanner calibration; fixed within one patient (a contiguous volume)."""
    return {
        "cx": 0.5 + rng.uniform(-0.02, 0.02),
        "cy": 0.5 + rng.uniform(-0.015, 0.02),
        "bx": rng.uniform(0.39, 0.46),  # body half-width (fraction of the image side)
        "by": rng.uniform(0.27, 0.33),  # body half-depth (anterior-posterior)
        "fat": rng.uniform(0.012, 0.04),
        "wall": rng.uniform(0.03, 0.042),
        "lung_scale": rng.uniform(0.92, 1.06),
        "lung_shape": rng.uniform(-1, 1, size=(2, 3, 2)),  # per side: 3 Fourier modes (amplitude, phase)
        "heart": rng.uniform(0.9, 1.15),
        "lung_hu": -865.0 + rng.uniform(-20, 20),  # healthy-lung median lands near -850 with vessels
        "gradient_hu": rng.uniform(20, 70),  # dependent (posterior) lung density increase
        "offset_hu": rng.uniform(-12, 12),
        "noise_hu": rng.uniform(14, 24),
        "n_ribs": int(rng.integers(5, 8)),
    }


def _superellipse(u, v, cx, cy, ax, ay, p=2.0):
    return (np.abs((u - cx) / ax) ** p + np.abs((v - cy) / ay) ** p) <= 1.0


def _ct_anatomy(rng: np.random.Generator, size: int, pat: dict, t: float):
    """Healthy chest slice at cranio-caudal position ``t`` in [0 apex, 1 base].

    Returns (hu, lungs) with ``lungs`` a uint8 map (1 = lung at small X = patient's right, 2 = the other).
    """
    S = size
    g = (np.arange(S, dtype=np.float32) + 0.5) / S
    u, v = np.meshgrid(g, g, indexing="ij")  # u along X (width), v along Y (height; anterior is small v)
    cx, cy, bx, by = pat["cx"], pat["cy"], pat["bx"], pat["by"]
    fat, wall = pat["fat"], pat["wall"]

    tex = _smooth_noise(rng, (S, S), 1.0)  # one texture field serves fat and lung (disjoint regions)
    hu = np.full((S, S), _HU_AIR, np.float32)
    body = _superellipse(u, v, cx, cy, bx, by, 2.3)
    hu[body] = -100.0 + 12.0 * tex[body]  # subcutaneous fat
    muscle = _superellipse(u, v, cx, cy, bx - fat, by - fat, 2.3)
    hu[muscle] = 50.0
    cav_x, cav_y = bx - fat - wall, by - fat - wall
    cavity = _superellipse(u, v, cx, cy, cav_x, cav_y, 2.3)
    hu[cavity] = 35.0  # mediastinal soft tissue / fat mix; lungs are carved out of it below

    # spine (posterior midline), spinal canal, spinous process; sternum (anterior midline)
    sp_y = cy + by - fat - 0.085
    vert = (u - cx) ** 2 + (v - sp_y) ** 2 <= 0.05**2
    hu[vert] = 320.0
    hu[vert & ((u - cx) ** 2 + (v - sp_y) ** 2 >= 0.04**2)] = 650.0
    hu[_superellipse(u, v, cx, sp_y + 0.07, 0.012, 0.03)] = 500.0
    hu[(u - cx) ** 2 + (v - sp_y - 0.062) ** 2 <= 0.017**2] = 20.0
    hu[_superellipse(u, v, cx, cy - by + fat + 0.02, 0.028, 0.011)] = 420.0

    # ribs: oblique cross-sections sitting in the chest wall, skipping the midlines
    rx, ry = bx - fat - 0.5 * wall, by - fat - 0.5 * wall
    for side in (-1, 1):
        angles = np.linspace(-65, 80, pat["n_ribs"]) + rng.uniform(-7, 7, pat["n_ribs"])
        for a in np.deg2rad(angles):
            # angle 0 = lateral, +90 = posterior (large v), -90 = anterior
            px, py = cx + side * rx * np.cos(a) * 0.97, cy + ry * np.sin(a) * 0.97
            tang = (-np.sin(a) * side, np.cos(a))
            i0, i1 = max(int((px - 0.025) * S), 0), min(int((px + 0.025) * S) + 2, S)
            j0, j1 = max(int((py - 0.025) * S), 0), min(int((py + 0.025) * S) + 2, S)
            du, dv = u[i0:i1, j0:j1] - px, v[i0:i1, j0:j1] - py  # a small window around the rib
            along = du * tang[0] + dv * tang[1]
            across = -du * tang[1] + dv * tang[0]
            rib = (along / 0.019) ** 2 + (across / 0.0105) ** 2 <= 1.0
            hu[i0:i1, j0:j1][rib] = 560.0 + rng.uniform(-60, 60)

    # lungs: perturbed ellipses inside the cavity, minus mediastinum, heart and spine
    s_t = pat["lung_scale"] * (0.78 + 0.27 * np.sin(np.pi * min(max(t, 0.0), 1.0)) ** 0.5)
    lungs = np.zeros((S, S), np.uint8)
    inner = _superellipse(u, v, cx, cy, cav_x - 0.006, cav_y - 0.006, 2.3)
    med_half = 0.045 + 0.02 * (1 - t)
    heart = np.zeros((S, S), bool)
    if t >= 0.35:
        hs = pat["heart"] * (0.55 + 0.45 * (t - 0.35) / 0.65)
        heart = ((u - cx - 0.045) / (0.14 * hs)) ** 2 + ((v - cy + 0.035) / (0.115 * hs)) ** 2 <= 1.0
    for k, side in enumerate((-1, 1)):
        lcx, lcy = cx + side * 0.19 * min(bx / 0.42, 1.08), cy + 0.005
        ax, ay = 0.15 * s_t * bx / 0.42, 0.215 * s_t * by / 0.30
        du, dv = (u - lcx) / ax, (v - lcy) / ay
        rho, phi = np.hypot(du, dv), np.arctan2(dv, du)
        coef = pat["lung_shape"][k]
        r = 1.0 + sum(0.06 * coef[m, 0] * np.cos((m + 2) * phi + np.pi * coef[m, 1]) for m in range(3))
        lung = (rho <= r) & inner & (np.abs(u - cx) > med_half) & ~heart
        lung &= (u - cx) ** 2 + (v - sp_y) ** 2 > 0.075**2
        lungs[lung] = k + 1
    lung_any = lungs > 0

    # lung parenchyma: base density with a dependent gradient, texture, vessels and hilar vessels
    ys = np.where(lung_any.any(axis=0))[0]
    v0, v1 = (g[ys[0]], g[ys[-1]]) if ys.size else (0.0, 1.0)
    grad = np.clip((v - v0) / max(v1 - v0, 1e-3), 0, 1) ** 1.5
    base = pat["lung_hu"] + pat["gradient_hu"] * grad + 12.0 * tex
    dots = rng.random((S, S), dtype=np.float32)  # sparse vessel cross-sections, 250..1000 HU*px^2 each
    dots = np.where(dots < 0.012, 250.0 + dots * (750.0 / 0.012), 0.0).astype(np.float32)
    base += ndi.gaussian_filter(dots, 0.65, truncate=3.0)
    hu[lung_any] = base[lung_any]
    for side in (-1, 1):
        for _ in range(int(rng.integers(1, 4))):
            hx = cx + side * (med_half + rng.uniform(0.01, 0.05))
            hy = cy + rng.uniform(-0.06, 0.06)
            hr = rng.uniform(0.008, 0.016)
            hv = lung_any & ((u - hx) ** 2 + (v - hy) ** 2 <= hr**2)
            hu[hv] = 30.0
    if t < 0.35:  # trachea above the carina
        hu[(u - cx) ** 2 + (v - cy + 0.03) ** 2 <= 0.026**2] = _HU_AIR
    else:  # descending aorta beside the spine
        hu[(u - cx - 0.06) ** 2 + (v - sp_y + 0.03) ** 2 <= 0.03**2] = 45.0
    # patient table below the body (posterior, large Y)
    ty = cy + by + 0.035
    table = (np.abs(v - ty - 0.6 * (u - cx) ** 2) < 0.006) & (np.abs(u - cx) < 0.4)
    hu[table & ~body] = 150.0
    return hu, lungs


def _lesion_field(rng, u, v, region, dist, n_seeds, r_range, modulation, centres=None):
    """Smooth random field peaking at ``n_seeds`` sub-pleural, posterior-leaning seeds inside ``region``.

    The lesion is then the top-k pixels of this field, which gives irregular multifocal blobs with an *exact*
    pixel count (how the class frequencies are controlled).
    """
    idx = np.flatnonzero(region)
    if idx.size == 0:
        return np.zeros(u.shape, np.float32), []
    w = np.exp(-dist.ravel()[idx] / 0.04) * (0.5 + v.ravel()[idx])  # peripheral + posterior predominance
    w /= w.sum()
    seeds = list(centres or [])
    picks = rng.choice(idx, size=max(n_seeds - len(seeds), 0), p=w)
    seeds += [(u.ravel()[i], v.ravel()[i]) for i in picks]
    field = np.zeros(u.shape, np.float32)
    for sx, sy in seeds:
        r = rng.uniform(*r_range)
        field += rng.uniform(0.6, 1.0) * np.exp(-((u - sx) ** 2 + (v - sy) ** 2) / (2 * r * r))
    field *= 1.0 + 0.45 * modulation
    return field, seeds


def _ct_slice(rng: np.random.Generator, size: int, pat: dict, t: float, area_ggo: int, area_cons: int,
              area_eff: int, ggo_hu: tuple, cons_hu: tuple, effusion_hu: tuple):
    """One labelled slice. Returns (hu float32, label uint8, lungs uint8, achieved (ggo, cons, eff) areas)."""
    S = size
    hu, lungs = _ct_anatomy(rng, S, pat, t)
    g = (np.arange(S, dtype=np.float32) + 0.5) / S
    u, v = np.meshgrid(g, g, indexing="ij")
    label = np.zeros((S, S), np.uint8)

    # pleural effusion: dependent crescent along the posterior wall of one (or both) lungs
    eff = np.zeros((S, S), bool)
    if area_eff > 0:
        counts = [int((lungs == k).sum()) for k in (1, 2)]
        sides = [int(rng.integers(1, 3))]
        if area_eff > 0.18 * min(counts) or rng.random() < 0.25:
            sides = [1, 2]
        for j, k in enumerate(sides):
            lk = lungs == k
            if not lk.any():
                continue
            want = area_eff // len(sides) + (area_eff % len(sides) if j == 0 else 0)
            want = min(want, int(0.35 * lk.sum()))
            ys = v[lk]
            top, bottom = np.quantile(ys, 0.45), ys.max()
            w = np.clip((v - top) / max(bottom - top, 1e-3), 0, 1) ** 1.3
            d = ndi.distance_transform_edt(lk)
            score = np.where(w > 0, -d / np.maximum(w, 1e-3), -np.inf)
            eff |= _top_k(score, lk & (w > 0), want)
    lung_free = (lungs > 0) & ~eff
    dist = ndi.distance_transform_edt(lungs > 0) / S
    modulation = _smooth_noise(rng, (S, S), 0.02 * S)  # irregular lesion outlines
    tex = _smooth_noise(rng, (S, S), 0.9)  # lesion texture (ground-glass and consolidation are disjoint)

    # consolidation first (often inside ground-glass), then ground-glass around it
    cap_cons = int(0.25 * lung_free.sum())
    cons = np.zeros((S, S), bool)
    seeds_c: list = []
    if area_cons > 0:
        nc = 1 + int(rng.poisson(1.5))
        fc, seeds_c = _lesion_field(rng, u, v, lung_free, dist, nc, (0.018, 0.045), modulation)
        cons = _top_k(fc, lung_free, min(area_cons, cap_cons))
    ggo = np.zeros((S, S), bool)
    if area_ggo > 0:
        avail = lung_free & ~cons
        ng = 1 + int(rng.poisson(2.0))
        near = [(x + rng.normal(0, 0.015), y + rng.normal(0, 0.015)) for x, y in seeds_c if rng.random() < 0.7]
        fg, _ = _lesion_field(rng, u, v, avail, dist, max(ng, len(near)), (0.03, 0.075), -modulation,
                              centres=near)
        ggo = _top_k(fg, avail, min(area_ggo, int(0.45 * avail.sum())))

    # appearance: blurry textured ground-glass, dense consolidation with air bronchograms, homogeneous fluid
    lung_region = lung_free.astype(np.float32)
    soft_g = np.clip(ndi.gaussian_filter(ggo.astype(np.float32), 0.012 * S) * 1.25, 0, 1) * lung_region
    # density varies within and between opacities (faint patches overlap healthy lung in HU)
    soft_g *= np.clip(0.85 + 0.2 * _smooth_noise(rng, (S, S), 0.03 * S), 0.45, 1.05)
    g_val = rng.uniform(*ggo_hu) + 35.0 * tex
    hu = hu * (1 - soft_g) + g_val * soft_g
    if cons.any():
        soft_c = np.clip(ndi.gaussian_filter(cons.astype(np.float32), 0.5) * 1.35, 0, 1) * lung_region
        c_val = rng.uniform(*cons_hu) + 14.0 * tex
        hu = hu * (1 - soft_c) + c_val * soft_c
        core = ndi.binary_erosion(cons, iterations=2)
        lab, n = ndi.label(core)
        for comp in range(1, n + 1):
            pts = np.argwhere(lab == comp)
            if len(pts) < 25 or rng.random() < 0.3:
                continue
            c0 = pts.mean(0)
            ang = rng.uniform(0, np.pi)
            ext = np.sqrt(len(pts)) * 0.45
            tt = np.linspace(-ext, ext, int(4 * ext) + 2)
            line = np.round(c0[None] + tt[:, None] * [np.cos(ang), np.sin(ang)]).astype(int)
            ok = (line >= 0).all(1) & (line < S).all(1)
            line = line[ok]
            line = line[lab[line[:, 0], line[:, 1]] == comp]
            hu[line[:, 0], line[:, 1]] = -800.0 + rng.uniform(-60, 60)
    if eff.any():
        hu[eff] = rng.uniform(*effusion_hu) + 4.0 * tex[eff]
    label[ggo] = 1
    label[cons] = 2
    label[eff] = 3

    # scanner: point-spread blur, calibration offset, correlated noise; integer HU like a real CT
    hu = ndi.gaussian_filter(hu, 0.55)
    hu += pat["offset_hu"] * (hu > -900)
    noise = ndi.gaussian_filter(rng.standard_normal((S, S)).astype(np.float32), 0.6)
    hu += noise * (pat["noise_hu"] / (noise.std() + 1e-8))
    hu = np.clip(np.round(hu), _HU_MIN, _HU_MAX).astype(np.float32)
    lungs = np.where(eff, 0, lungs).astype(np.uint8)
    return hu, label, lungs, (int(ggo.sum()), int(cons.sum()), int(eff.sum()))


def _stack_plan(rng, n, total, frac_ggo, frac_cons, frac_eff, eff_slice_frac, lesion_free_frac, contiguous):
    """Per-slice target areas whose stack means equal the requested class fractions exactly (before caps)."""
    lesion = np.ones(n, bool)
    n_free = int(round(lesion_free_frac * n))
    if 0 < n_free < n:
        lesion[rng.choice(n, n_free, replace=False)] = False
    f = rng.gamma(2.5, 1.0, n) * lesion
    f = f * (n / f.sum()) if f.sum() > 0 else f
    h = rng.gamma(4.0, 1.0, n) * f
    h = h * (n / h.sum()) if h.sum() > 0 else h
    e = np.zeros(n)
    if frac_eff > 0 and eff_slice_frac > 0:
        k = int(min(n, max(1, round(eff_slice_frac * n))))
        chosen = np.arange(n - k, n) if contiguous else rng.choice(n, k, replace=False)  # contiguous: the bases
        e[chosen] = rng.gamma(3.0, 1.0, k)
        e *= n / e.sum()
    return frac_ggo * total * f, frac_cons * total * h, frac_eff * total * e


def ct_phantom_volume(n_slices: int, size: int = 128, *, seed: int = 0, stream: str = "tr", contiguous: bool = False,
                      ggo_fraction: float = 0.045, consolidation_fraction: float = 0.015,
                      effusion_fraction: float = 0.004, effusion_slice_fraction: float = 0.25,
                      lesion_free_fraction: float = 0.1, ggo_hu: tuple = (-650.0, -550.0),
                      consolidation_hu: tuple = (0.0, 50.0), effusion_hu: tuple = (5.0, 25.0)):
    """Generate a CT phantom stack in memory: ``(hu, label, lungs)``, each of shape ``(size, size, n_slices)``.

    ``hu`` is float32 Hounsfield units (integer valued), ``label`` uint8 in 0..3 (:data:`COVID_CLASSES`),
    ``lungs`` uint8 (1 = lung at small X, i.e. the patient's right; 2 = the other; effusion is not lung).

    ``contiguous=False`` gives MedSeg-like independent slices (a new patient and level per slice);
    ``contiguous=True`` one patient scanned apex (k=0) to base, like a Radiopaedia volume or a DICOM series, with
    the effusion in the basal slices. The ``*_fraction`` arguments are the mean fraction of *all* pixels of the
    stack per class; ``effusion_slice_fraction`` is the share of slices that contain effusion and
    ``lesion_free_fraction`` the share with no ground-glass / consolidation. Targets are met exactly unless a slice
    has too little lung, in which case the shortfall is carried to the next slices (so ask for sane values).
    """
    if n_slices < 1:
        raise ValueError(f"n_slices must be >= 1, got {n_slices}")
    if size < 32:
        raise ValueError(f"size must be >= 32 pixels for a recognisable chest, got {size}")
    for name, val in (("ggo_fraction", ggo_fraction), ("consolidation_fraction", consolidation_fraction),
                      ("effusion_fraction", effusion_fraction)):
        if not 0.0 <= val <= 0.2:
            raise ValueError(f"{name} must be within [0, 0.2] (a fraction of all pixels), got {val}")
    for name, val in (("effusion_slice_fraction", effusion_slice_fraction),
                      ("lesion_free_fraction", lesion_free_fraction)):
        if not 0.0 <= val <= 1.0:
            raise ValueError(f"{name} must be within [0, 1], got {val}")
    plan_rng = _rng(seed, stream, 10**6)
    total = size * size
    a_g, a_c, a_e = _stack_plan(plan_rng, n_slices, total, ggo_fraction, consolidation_fraction, effusion_fraction,
                                effusion_slice_fraction, lesion_free_fraction, contiguous)
    hu = np.empty((size, size, n_slices), np.float32)
    label = np.empty((size, size, n_slices), np.uint8)
    lungs = np.empty((size, size, n_slices), np.uint8)
    patient = _draw_patient(plan_rng) if contiguous else None
    debt = np.zeros(3)  # area a capped slice could not hold, carried to the next slices that have that class
    for k in range(n_slices):
        rng = _rng(seed, stream, k)
        if contiguous:
            pat, t = patient, 0.15 + 0.8 * (k / max(n_slices - 1, 1))
        else:
            pat, t = _draw_patient(rng), rng.uniform(0.3, 0.95)
        want = np.array([a_g[k], a_c[k], a_e[k]])
        want = np.where(want > 0, want + debt, 0.0)
        hu[..., k], label[..., k], lungs[..., k], got = _ct_slice(
            rng, size, pat, t, int(round(want[0])), int(round(want[1])), int(round(want[2])),
            tuple(ggo_hu), tuple(consolidation_hu), tuple(effusion_hu))
        debt = np.where(want > 0, np.maximum(want - np.array(got), 0.0), debt)
    return hu, label, lungs


def _nifti_affine(size: int, spacing: float, thickness: float, z0: float = 0.0) -> np.ndarray:
    """Diagonal RAS affine; X runs to the patient's left and Y to posterior (the DICOM LPS axes), centred."""
    aff = np.diag([-spacing, -spacing, thickness, 1.0])
    aff[:3, 3] = [spacing * (size - 1) / 2.0, spacing * (size - 1) / 2.0, z0]
    return aff


def _save_nifti(arr: np.ndarray, path: Path, affine: np.ndarray) -> Path:
    import nibabel as nib

    img = nib.Nifti1Image(arr, affine)
    img.header.set_data_dtype(arr.dtype)
    img.header.set_xyzt_units("mm", "sec")
    img.set_qform(affine, code=1)
    img.set_sform(affine, code=1)
    nib.save(img, str(path))
    return path


def _uid(*parts) -> str:
    """Deterministic DICOM UID in the ``2.25.<128-bit integer>`` form (pydicom's ``generate_uid(prefix=None)``
    is random; a hash keeps the files byte-identical for a seed)."""
    digest = hashlib.sha256("|".join(["medsemiseg-synthetic-ct", *map(str, parts)]).encode()).digest()
    return "2.25." + str(int.from_bytes(digest[:16], "big"))


def _write_dicom_series(hu: np.ndarray, folder: Path, *, seed: int, spacing: float, thickness: float,
                        z0: float) -> list[Path]:
    """One CT Image Storage series; file names deliberately NOT in slice order (readers must sort by position)."""
    import pydicom
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, PYDICOM_IMPLEMENTATION_UID

    folder.mkdir(parents=True, exist_ok=True)
    S, _, n = hu.shape
    study_uid, series_uid, frame_uid = (_uid(seed, what) for what in ("study", "series", "frame"))
    perm = _rng(seed, "dicom", 10**6 + 1).permutation(n)
    if n >= 2 and (np.all(np.diff(perm) > 0) or np.all(np.diff(perm) < 0)):
        perm[[0, 1]] = perm[[1, 0]]  # never hand out a name order that happens to be the slice order (or reversed)
    intercept = -1024.0
    x0 = -spacing * (S - 1) / 2.0  # LPS position of the first pixel (centre of the image at x = y = 0)
    paths = []
    for k in range(n):
        sop_uid = _uid(seed, "sop", k)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = CTImageStorage
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        meta.ImplementationClassUID = PYDICOM_IMPLEMENTATION_UID
        ds = Dataset()
        ds.file_meta = meta
        ds.preamble = b"\0" * 128
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyDate = ds.SeriesDate = ds.ContentDate = "20200401"
        ds.StudyTime = ds.SeriesTime = ds.ContentTime = "120000"
        ds.Modality = "CT"
        ds.Manufacturer = "medsemiseg synthetic phantom"
        ds.PatientName = f"Phantom^{seed}"
        ds.PatientID = f"SYN{seed:06d}"
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.StudyID = "1"
        ds.SeriesNumber = 1
        ds.InstanceNumber = k + 1
        ds.SeriesDescription = "synthetic chest CT phantom"
        ds.BodyPartExamined = "CHEST"
        ds.KVP = "120"
        ds.SliceThickness = f"{thickness:g}"
        ds.PixelSpacing = [f"{spacing:.6g}", f"{spacing:.6g}"]
        z = z0 + k * thickness
        ds.ImagePositionPatient = [f"{x0:.6g}", f"{x0:.6g}", f"{z:.6g}"]
        ds.ImageOrientationPatient = ["1", "0", "0", "0", "1", "0"]
        ds.SliceLocation = f"{z:.6g}"
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows, ds.Columns = S, S
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 16, 16, 15
        ds.PixelRepresentation = 1
        ds.RescaleIntercept = f"{intercept:g}"
        ds.RescaleSlope = "1"
        ds.RescaleType = "HU"
        ds.WindowCenter, ds.WindowWidth = "-600", "1500"
        # DICOM rows run along Y and columns along X: write the transpose of the (X, Y) slice
        stored = np.round(hu[:, :, k].T - intercept).astype("<i2")
        ds.PixelData = np.ascontiguousarray(stored).tobytes()
        path = folder / f"IM{perm[k] + 1:04d}.dcm"
        pydicom.dcmwrite(path, ds, enforce_file_format=True)
        paths.append(path)
    return paths


def generate_covid(out_dir, *, n_slices: int = 40, size: int = 128, n_unlabeled_volumes: int = 2,
                   unlabeled_slices: int = 20, dicom_series: bool = True, seed: int = 0, n_val_slices: int = 4,
                   dicom_slices: int = 16, pixel_spacing: float | None = None, field_of_view_mm: float = 380.0,
                   slice_thickness: float = 5.0, lung_masks: bool = True, ggo_fraction: float = 0.045,
                   consolidation_fraction: float = 0.015, effusion_fraction: float = 0.004,
                   effusion_slice_fraction: float = 0.25, lesion_free_fraction: float = 0.1,
                   ggo_hu: tuple = (-650.0, -550.0), consolidation_hu: tuple = (0.0, 50.0),
                   effusion_hu: tuple = (5.0, 25.0)) -> dict[str, Path]:
    """Write a MedSeg-COVID-19-like data set of CT phantoms into ``out_dir`` and return what was written.

    Files (shapes are ``(X, Y, slices)``; slice k shown upright is ``data[:, :, k].T``):

    * ``tr_im.nii.gz`` float32 HU, ``(size, size, n_slices)``; ``tr_mask.nii.gz`` uint8 labels 0..3
      (:data:`COVID_CLASSES`); ``tr_lungmasks_updated.nii.gz`` uint8 lungs (1 right, 2 left) if ``lung_masks``;
    * ``val_im.nii.gz`` -- ``n_val_slices`` more slices without a mask (as MedSeg ships its validation images);
    * ``unlabeled/rp_im_<i>.nii.gz`` (i = 1..n_unlabeled_volumes) -- contiguous patient volumes, no masks;
    * if ``dicom_series``: ``dicom/series_01/IM####.dcm`` (``dicom_slices`` CT slices, file names shuffled
      relative to slice order) and ``dicom/series_01_mask.nii.gz`` (its labels, slices ordered by increasing z).

    Returned keys: ``root``, ``tr_im``, ``tr_mask``, ``val_im``, ``tr_lungmasks_updated`` (if written),
    ``unlabeled_dir``, ``rp_im_<i>`` per volume, and ``dicom_series`` (the folder) + ``dicom_mask`` if written.

    ``pixel_spacing`` defaults to ``field_of_view_mm / size`` (a 380 mm field of view as in an adult chest CT).
    The class-frequency arguments are described in :func:`ct_phantom_volume`. Existing files of the same names
    are overwritten; other files in ``out_dir`` are left alone.
    """
    if n_unlabeled_volumes < 0 or (n_unlabeled_volumes > 0 and unlabeled_slices < 1):
        raise ValueError("n_unlabeled_volumes must be >= 0 and unlabeled_slices >= 1, "
                         f"got {n_unlabeled_volumes} and {unlabeled_slices}")
    if n_val_slices < 0 or dicom_slices < 1:
        raise ValueError(f"n_val_slices must be >= 0 and dicom_slices >= 1, got {n_val_slices} and {dicom_slices}")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    spacing = float(pixel_spacing) if pixel_spacing else field_of_view_mm / size
    kw = dict(ggo_fraction=ggo_fraction, consolidation_fraction=consolidation_fraction,
              effusion_fraction=effusion_fraction, effusion_slice_fraction=effusion_slice_fraction,
              lesion_free_fraction=lesion_free_fraction, ggo_hu=ggo_hu, consolidation_hu=consolidation_hu,
              effusion_hu=effusion_hu)
    aff = _nifti_affine(size, spacing, slice_thickness)
    written: dict[str, Path] = {"root": out}

    hu, label, lungs = ct_phantom_volume(n_slices, size, seed=seed, stream="tr", **kw)
    written["tr_im"] = _save_nifti(hu, out / "tr_im.nii.gz", aff)
    written["tr_mask"] = _save_nifti(label, out / "tr_mask.nii.gz", aff)
    if lung_masks:
        written["tr_lungmasks_updated"] = _save_nifti(lungs, out / "tr_lungmasks_updated.nii.gz", aff)
    if n_val_slices:
        hu, _, _ = ct_phantom_volume(n_val_slices, size, seed=seed, stream="val", **kw)
        written["val_im"] = _save_nifti(hu, out / "val_im.nii.gz", aff)
    unl = out / "unlabeled"
    unl.mkdir(exist_ok=True)
    written["unlabeled_dir"] = unl
    for i in range(1, n_unlabeled_volumes + 1):
        hu, _, _ = ct_phantom_volume(unlabeled_slices, size, seed=seed * 1000 + i, stream="rp", contiguous=True,
                                     **kw)
        written[f"rp_im_{i}"] = _save_nifti(hu, unl / f"rp_im_{i}.nii.gz", aff)
    if dicom_series:
        hu, label, _ = ct_phantom_volume(dicom_slices, size, seed=seed, stream="dicom", contiguous=True, **kw)
        z0 = -slice_thickness * (dicom_slices - 1)  # the series ends at z = 0 (LPS z grows towards the head)
        series = out / "dicom" / "series_01"
        _write_dicom_series(hu, series, seed=seed, spacing=spacing, thickness=slice_thickness, z0=z0)
        written["dicom_series"] = series
        written["dicom_mask"] = _save_nifti(label, out / "dicom" / "series_01_mask.nii.gz",
                                            _nifti_affine(size, spacing, slice_thickness, z0))
    return written


# ----------------------------------------------------------------------------------------------------------------
# Fundus phantom
# ----------------------------------------------------------------------------------------------------------------


def chase_names(n_images: int) -> list[str]:
    """``Image_01L, Image_01R, ... Image_14R`` (then ``Image_15L`` ...): two eyes per child, like CHASE_DB1."""
    if n_images < 2 or n_images % 2:
        raise ValueError(f"n_images must be an even number >= 2 (a left and a right eye per child), got {n_images}")
    return [f"Image_{i // 2 + 1:02d}{'LR'[i % 2]}" for i in range(n_images)]


def _grow_trees(rng, H, W, disc, fovea, R, centre, temporal, roots=None):
    """Branching, tapering vessel trees rooted at the optic disc, in breadth-first (generation) order.

    Each branch is (points (n, 2) as (row, col), widths (n,), contrast). Widths follow a Murray-like split at
    bifurcations and taper along the length; growth stops at 1 px width, at the field-of-view edge or in the
    foveal avascular zone. ``roots`` (start specs ``(point, angle, width, bend, contrast, generation)``) replaces
    the default trunks leaving the disc; used to sprout extra side branches from existing vessels.
    """
    scale = W / 200.0
    w_min = 1.0
    rd = 0.075 * W
    trunks = []
    for sup in (-1, 1):  # superior (-1, up) and inferior arcades, a vein and an artery each
        for vein in (True, False):
            a0 = np.deg2rad(sup * 90 + rng.uniform(-18, 18) - temporal * sup * rng.uniform(0, 25))
            bend = -temporal * sup * rng.uniform(0.8, 1.2) / (0.33 * W)  # arc around the macula
            w0 = max((4.0 if vein else 3.1) * scale, 2.6 if vein else 2.2) * rng.uniform(0.9, 1.1)
            trunks.append((a0, bend, w0, 0.62 if vein else 0.46))
    for _ in range(int(rng.integers(2, 4))):  # nasal vessels
        a0 = np.deg2rad((180 if temporal > 0 else 0) + rng.uniform(-55, 55))
        trunks.append((a0, rng.normal(0, 0.003), max(2.7 * scale, 2.0) * rng.uniform(0.85, 1.15),
                       rng.uniform(0.45, 0.6)))
    for _ in range(int(rng.integers(1, 3))):  # small macular branches heading temporally
        a0 = np.deg2rad((0 if temporal > 0 else 180) + rng.uniform(-30, 30))
        trunks.append((a0, 0.0, max(2.1 * scale, 1.6), rng.uniform(0.4, 0.55)))

    queue = list(roots or [])
    for a0, bend, w0, con in ([] if roots else trunks):  # vessels emerge from the central cup
        p = np.array(disc) + rng.uniform(0.05, 0.25) * rd * np.array([np.sin(a0), np.cos(a0)])
        queue.append((p, a0, w0, bend, con, 0))
    generations: dict[int, list] = {}
    max_steps = int(1.6 * W) + 1
    n_branches = 0
    while queue and n_branches < 900:
        p, th, w, bend, con, gen = queue.pop(0)
        pr, pc = float(p[0]), float(p[1])
        pts, ws = [(pr, pc)], [w]
        kappa, since, length = 0.0, 0.0, 0.0
        lam = (1.0 if gen == 0 else 0.7) * W
        decay = np.exp(-1.0 / lam)  # taper per 1-px step
        side = 1 if rng.random() < 0.5 else -1
        jitter = rng.normal(0.0, 0.012, max_steps).tolist()  # drawn per branch: the step loop stays scalar
        coin = rng.random(max_steps).tolist()
        d0, d1, c0, c1, f0, f1 = float(disc[0]), float(disc[1]), float(centre[0]), float(centre[1]), \
            float(fovea[0]), float(fovea[1])
        r_stop, f_stop, l_steer = R - 1.0, 0.045 * W, 0.45 * W
        spacing = (8.0 if gen == 0 else 10.0) * scale
        for k in range(max_steps):
            kappa = 0.9 * kappa + jitter[k]
            # gentle steering away from the disc keeps branches running outwards instead of curling back
            steer = 0.0
            if gen > 0 or length > l_steer:
                steer = 0.012 * math.sin(math.atan2(pr - d0, pc - d1) - th)
            th += kappa + (bend * math.exp(-length / (0.55 * W)) if bend else 0.0) + steer
            pr, pc = pr + math.sin(th), pc + math.cos(th)
            w *= decay
            length += 1.0
            since += 1.0
            if w < w_min or math.hypot(pr - c0, pc - c1) > r_stop or math.hypot(pr - f0, pc - f1) < f_stop:
                break
            pts.append((pr, pc))
            ws.append(w)
            if since > 6 * scale and coin[k] < 1.0 / spacing:
                wc = w * rng.uniform(0.5, 0.85)
                if wc >= w_min:
                    w = max((w**3 - wc**3) ** (1 / 3), w_min)
                    side = -side
                    thc = th + side * rng.uniform(0.5, 1.2)
                    th -= side * 0.15
                    queue.append(((pr, pc), thc, wc, rng.normal(0, 0.004), con, gen + 1))
                    since = 0.0
        if len(pts) >= 3:
            generations.setdefault(gen, []).append((np.array(pts), np.array(ws), con))
            n_branches += 1
    order = []
    for gen in sorted(generations):
        branches = generations[gen]
        order += [branches[i] for i in rng.permutation(len(branches))]
    return order


def _raster_branch(pts, ws, shape, chunk: int = 16):
    """Signed distance (px) to a tapered polyline, chunk by chunk on small bounding boxes.

    Yields ``(slices, sdf, mean_radius)`` per run of ``chunk`` segments; the caller takes the
    pointwise minimum into its maps. Exact capsule distances keep 1-px vessels connected and give the photograph a
    sub-pixel (partial-volume) vessel profile.
    """
    for s in range(0, len(pts) - 1, chunk):
        e = min(s + chunk, len(pts) - 1)
        A, B = pts[s:e], pts[s + 1:e + 1]
        ra, rb = ws[s:e] / 2.0, ws[s + 1:e + 1] / 2.0
        seg = np.concatenate([A, B])
        pad = float(max(ra.max(), rb.max())) + 2.5
        r0 = max(int(np.floor(seg[:, 0].min() - pad)), 0)
        r1 = min(int(np.ceil(seg[:, 0].max() + pad)) + 1, shape[0])
        c0 = max(int(np.floor(seg[:, 1].min() - pad)), 0)
        c1 = min(int(np.ceil(seg[:, 1].max() + pad)) + 1, shape[1])
        if r1 <= r0 or c1 <= c0:
            continue
        pr = np.arange(r0, r1, dtype=np.float32)[:, None, None]
        pc = np.arange(c0, c1, dtype=np.float32)[None, :, None]
        dr, dc = B[:, 0] - A[:, 0], B[:, 1] - A[:, 1]
        l2 = np.maximum(dr * dr + dc * dc, 1e-9)
        tt = np.clip(((pr - A[:, 0]) * dr + (pc - A[:, 1]) * dc) / l2, 0.0, 1.0)
        rq = ra + tt * (rb - ra)
        d = np.sqrt((pr - A[:, 0] - tt * dr) ** 2 + (pc - A[:, 1] - tt * dc) ** 2) - rq
        yield (slice(r0, r1), slice(c0, c1)), d.min(2), float(ra.mean())


def fundus_phantom(size: tuple = (192, 200), *, seed: int = 0, index: int = 0, eye: str = "L",
                   vessel_fraction: float = 0.10, noise_std: float = 4.0, observer2_extra: float = 0.08,
                   observer2_drop: float = 0.2, observer2_widen: float = 0.15):
    """One fundus photograph in memory: ``(rgb uint8 (H, W, 3), mask1 bool (H, W), mask2 bool (H, W))``.

    ``vessel_fraction`` is the first observer's vessel share of *all* image pixels: trees are rasterised
    generation by generation until it is reached (it may overshoot by one branch). The second observer also marks
    the next ``observer2_extra`` share of branches (faint ones the first skipped), misses a random
    ``observer2_drop`` share of the thin branches the first marked, and draws vessels ``observer2_widen`` px wider.
    """
    H, W = int(size[0]), int(size[1])
    if H < 48 or W < 48:
        raise ValueError(f"fundus size must be at least 48x48 (H, W), got {size}")
    if not 0.02 <= vessel_fraction <= 0.25:
        raise ValueError(f"vessel_fraction must be within [0.02, 0.25], got {vessel_fraction}")
    if eye not in ("L", "R"):
        raise ValueError(f"eye must be 'L' or 'R', got {eye!r}")
    rng = _rng(seed, "fundus", index)
    centre = np.array([H / 2.0, W / 2.0])
    R = 0.485 * min(H, W)
    temporal = 1 if eye == "L" else -1  # left eye: disc left, macula to the right (as photographed)
    disc = centre + np.array([rng.uniform(-0.06, 0.06) * H, -temporal * rng.uniform(0.08, 0.16) * W])
    fovea = disc + np.array([rng.uniform(0.0, 0.06) * H, temporal * rng.uniform(0.36, 0.42) * W])
    rr, cc = np.mgrid[0:H, 0:W].astype(np.float32)
    fov = np.hypot(rr - centre[0], cc - centre[1]) <= R

    target = vessel_fraction * H * W
    sdf1 = np.full((H, W), np.inf, np.float32)
    sdf2 = np.full((H, W), np.inf, np.float32)
    sdf_img = np.full((H, W), np.inf, np.float32)
    contrast = np.zeros((H, W), np.float32)
    n_extra, n1, extra_done, covered = None, 0, 0, 0
    drawn: list = []
    for attempt in range(12):
        roots = None
        if attempt:  # not enough vessel yet: sprout side branches from vessels already drawn, away from the disc
            cand = []
            for pts, ws, c in drawn:
                ok = (ws >= 1.3) & (np.hypot(pts[:, 0] - disc[0], pts[:, 1] - disc[1]) > 0.15 * W)
                ok[:2] = ok[-2:] = False
                cand += [(k, pts, ws, c) for k in np.flatnonzero(ok)]
            if not cand:
                break
            roots = []
            for j in rng.choice(len(cand), size=min(len(cand), 40), replace=False):
                k, pts, ws, c = cand[j]
                p, w = pts[k], ws[k]
                d = pts[k + 1] - pts[k - 1]
                th = np.arctan2(d[0], d[1]) + rng.choice([-1, 1]) * rng.uniform(0.6, 1.2)
                roots.append((p, th, rng.uniform(1.0, max(1.05, 0.8 * w)), 0.0, c, 1))
        branches = _grow_trees(rng, H, W, disc, fovea, R, centre, temporal, roots=roots)
        drawn += branches
        for pts, ws, con in branches:
            first = n_extra is None
            keep2 = (ws[0] > 1.8 or rng.random() >= observer2_drop) if first else True
            if first:  # coverage bookkeeping on the branch's bounding box only
                pad = ws.max() / 2 + 1
                bb = (slice(max(int(pts[:, 0].min() - pad), 0), int(pts[:, 0].max() + pad) + 2),
                      slice(max(int(pts[:, 1].min() - pad), 0), int(pts[:, 1].max() + pad) + 2))
                covered -= int(np.count_nonzero((sdf1[bb] <= 0) & fov[bb]))
            for sl, sdf, rad in _raster_branch(pts.astype(np.float32), ws.astype(np.float32), (H, W)):
                if first:
                    np.minimum(sdf1[sl], sdf, out=sdf1[sl])
                if keep2:
                    np.minimum(sdf2[sl], sdf, out=sdf2[sl])
                view = sdf_img[sl]
                closer = sdf < view
                contrast[sl][closer] = con * (0.4 + 0.6 * min(1.0, 2 * rad / 3.0))
                view[closer] = sdf[closer]
            if first:
                covered += int(np.count_nonzero((sdf1[bb] <= 0) & fov[bb]))
                n1 += 1
            else:
                extra_done += 1
            if first and covered >= target:
                n_extra = int(round(observer2_extra * n1))
            if n_extra is not None and extra_done >= n_extra:
                break
        if n_extra is not None and extra_done >= n_extra:
            break
        # not enough vessel yet (large target): grow another set of trees from the same disc
    mask1 = (sdf1 <= 0) & fov
    mask2 = (sdf2 <= observer2_widen) & fov

    # photograph: fundus colour, uneven illumination, choroidal texture, macula, disc, vessels, optics, noise
    base = np.array([rng.uniform(165, 215), rng.uniform(62, 92), rng.uniform(22, 42)], np.float32)
    ang = rng.uniform(0, 2 * np.pi)
    lin = ((cc - centre[1]) * np.cos(ang) + (rr - centre[0]) * np.sin(ang)) / R
    rho = np.hypot(rr - centre[0], cc - centre[1]) / R
    illum = (1.0 + rng.uniform(0.15, 0.35) * lin) * (1.0 - rng.uniform(0.2, 0.45) * rho**2)
    chor = _smooth_noise(rng, (H, W), 2.5 * W / 200.0)
    img = base[None, None] * illum[..., None] * (1.0 + np.array([0.07, 0.05, 0.03]) * chor[..., None])
    dm = np.hypot(rr - fovea[0], cc - fovea[1])
    img *= (1.0 - np.array([0.15, 0.3, 0.3]) * np.exp(-(dm**2) / (2 * (0.09 * W) ** 2))[..., None])
    rd = 0.075 * W * rng.uniform(0.9, 1.1)
    dd = np.hypot(rr - disc[0], cc - disc[1])
    img += np.array([45, 85, 55], np.float32) * np.exp(-((dd / rd) ** 4))[..., None]
    img += np.array([15, 35, 35], np.float32) * np.exp(-((dd / (0.45 * rd)) ** 4))[..., None]
    prof = np.clip(0.5 - sdf_img / 1.2, 0.0, 1.0)
    dark = (contrast * prof)[..., None] * np.array([0.45, 1.0, 0.85], np.float32)
    img *= 1.0 - np.clip(dark, 0, 0.9)
    img = ndi.gaussian_filter(img, (0.5, 0.5, 0))
    edge = np.clip((R - np.hypot(rr - centre[0], cc - centre[1])) / 1.5 + 0.5, 0, 1)
    img = img * edge[..., None] + rng.normal(0, noise_std, img.shape) * (0.35 + 0.65 * edge[..., None])
    rgb = np.clip(np.round(img), 0, 255).astype(np.uint8)
    return rgb, mask1, mask2


def _save_mask_png(mask: np.ndarray, path: Path, mode: str) -> Path:
    from PIL import Image

    m = mask.astype(np.uint8) * 255
    if mode == "RGB":
        im = Image.fromarray(np.repeat(m[..., None], 3, axis=2), "RGB")
    elif mode == "L":
        im = Image.fromarray(m, "L")
    elif mode == "1":
        im = Image.fromarray(m, "L").convert("1")
    else:
        raise ValueError(f"mask mode must be one of 'L', 'RGB', '1', got {mode!r}")
    im.save(path, format="PNG")
    return path


def generate_chase(out_dir, *, n_images: int = 28, size: tuple = (192, 200), seed: int = 0,
                   vessel_fraction: float = 0.10, mask_modes: Sequence[str] = ("RGB", "L", "L"),
                   jpeg_quality: int = 92, noise_std: float = 4.0, observer2_extra: float = 0.08,
                   observer2_drop: float = 0.2, observer2_widen: float = 0.15) -> dict:
    """Write a CHASE_DB1-like folder of fundus phantoms into ``out_dir`` and return what was written.

    Per image ``Image_01L.jpg`` (RGB, ``size`` = (H, W), default (192, 200) keeps CHASE's 960:999 aspect),
    ``Image_01L_1stHO.png`` (first observer, the usual ground truth) and ``Image_01L_2ndHO.png`` (second observer),
    masks 0/255. Like the real set, masks are not uniformly encoded: image ``i`` uses ``mask_modes[i % len]``
    (``"RGB"``, ``"L"`` or 1-bit ``"1"``), so readers must take channel 0 and threshold. ``n_images`` must be even
    (left and right eye of each child); names continue past 28 (``Image_15L`` ...).

    Returns ``{"root": Path, "names": [...], "images": [...], "masks_1stHO": [...], "masks_2ndHO": [...]}``.
    """
    names = chase_names(n_images)
    if len(size) != 2:
        raise ValueError(f"size must be (H, W), got {size}")
    if not mask_modes or any(m not in ("L", "RGB", "1") for m in mask_modes):
        raise ValueError(f"mask_modes must be a non-empty sequence of 'L', 'RGB', '1', got {mask_modes}")
    from PIL import Image

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    res: dict = {"root": out, "names": names, "images": [], "masks_1stHO": [], "masks_2ndHO": []}
    for i, name in enumerate(names):
        rgb, m1, m2 = fundus_phantom(size, seed=seed, index=i, eye=name[-1], vessel_fraction=vessel_fraction,
                                     noise_std=noise_std, observer2_extra=observer2_extra,
                                     observer2_drop=observer2_drop, observer2_widen=observer2_widen)
        img_path = out / f"{name}.jpg"
        Image.fromarray(rgb, "RGB").save(img_path, format="JPEG", quality=int(jpeg_quality))
        mode = mask_modes[i % len(mask_modes)]
        res["images"].append(img_path)
        res["masks_1stHO"].append(_save_mask_png(m1, out / f"{name}_1stHO.png", mode))
        res["masks_2ndHO"].append(_save_mask_png(m2, out / f"{name}_2ndHO.png", mode))
    return res


# ----------------------------------------------------------------------------------------------------------------
# CLI
# ----------------------------------------------------------------------------------------------------------------


def _parse_chase_size(text: str) -> tuple[int, int]:
    parts = [p for p in text.lower().replace(",", "x").split("x") if p]
    try:
        vals = [int(p) for p in parts]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size for chase must be H, or HxW / H,W, got {text!r}") from None
    if len(vals) == 1:
        return vals[0], int(round(vals[0] * _CHASE_ASPECT))
    if len(vals) == 2:
        return vals[0], vals[1]
    raise argparse.ArgumentTypeError(f"--size for chase must be H, or HxW / H,W, got {text!r}")


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medsemiseg.data.synthetic --task {covid,chase} --out DIR [--n N] [--size S] [--seed K]``."""
    ap = argparse.ArgumentParser(
        prog="python -m medsemiseg.data.synthetic",
        description="Write a deterministic synthetic data set in the real file layout "
                    "(covid: MedSeg NIfTI stacks + a DICOM series; chase: CHASE_DB1 JPG/PNG).")
    ap.add_argument("--task", required=True, choices=("covid", "chase"))
    ap.add_argument("--out", required=True, type=Path, help="output folder (must be empty unless --overwrite)")
    ap.add_argument("--n", type=int, default=None,
                    help="covid: labelled slices (default 40); chase: images, even (default 28)")
    ap.add_argument("--size", default=None,
                    help="covid: slice side in px (default 128); chase: H or HxW (default 192x200)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--unlabeled-volumes", type=int, default=2, help="covid: extra unlabelled volumes")
    ap.add_argument("--no-dicom", action="store_true", help="covid: skip the DICOM series")
    ap.add_argument("--overwrite", action="store_true", help="write into a non-empty --out")
    args = ap.parse_args(argv)

    out: Path = args.out
    if out.exists() and not out.is_dir():
        ap.error(f"--out {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not args.overwrite:
        ap.error(f"--out {out} is not empty; choose an empty folder or pass --overwrite")
    try:
        if args.task == "covid":
            kw = {}
            if args.n is not None:
                kw["n_slices"] = args.n
            if args.size is not None:
                kw["size"] = int(args.size)
            res = generate_covid(out, seed=args.seed, n_unlabeled_volumes=args.unlabeled_volumes,
                                 dicom_series=not args.no_dicom, **kw)
            import nibabel as nib

            print(f"wrote synthetic MedSeg-like CT set to {out}")
            for key, path in res.items():
                if key == "root":
                    continue
                if path.is_dir():
                    files = sorted(path.iterdir())
                    print(f"  {path.relative_to(out)}/  ({len(files)} files)")
                else:
                    img = nib.load(str(path))
                    print(f"  {path.relative_to(out)}  shape={img.shape} dtype={img.get_data_dtype()}")
        else:
            kw = {}
            if args.n is not None:
                kw["n_images"] = args.n
            if args.size is not None:
                kw["size"] = _parse_chase_size(args.size)
            res = generate_chase(out, seed=args.seed, **kw)
            h, w = kw.get("size", (192, 200))
            print(f"wrote synthetic CHASE_DB1-like set to {out}: {len(res['names'])} images {w}x{h} (W x H)")
            for name in res["names"]:
                print(f"  {name}.jpg  {name}_1stHO.png  {name}_2ndHO.png")
    except (ValueError, argparse.ArgumentTypeError) as exc:
        ap.error(str(exc))
    return 0


if __name__ == "__main__":
    sys.exit(main())
