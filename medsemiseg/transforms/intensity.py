"""Intensity normalisation dictionary transforms: CT windowing, grey scaling by kind, and fundus scaling.

These are the only places where raw intensities become network inputs, so every bundle (train, evaluate,
inference) normalises the same way.

CT slices arrive in Hounsfield units (HU). :class:`CTWindowd` maps a window ``[center - width/2, center +
width/2]`` linearly to ``[0, 1]`` and clips outside it. The default window, centre -500 HU and width 1500 HU
(-1250 ... 250 HU), is chosen for COVID-19 lung lesions: it keeps aerated lung (about -900 HU), ground-glass
opacities (about -700 ... -300 HU), consolidation (about -100 ... 50 HU) and pleural effusion (about 0 ... 30 HU)
all inside the window, so none of the four classes is clipped, while air and bone saturate. It is the usual lung
window (centre -600, width 1500) shifted by 100 HU toward soft tissue so that effusion and consolidation are not
squeezed against the top of the range.

Not every grey data set is CT in HU: COVID-SemiSeg's slices are 8-bit display values (already windowed, saved as JPG),
MR and ultrasound have no absolute scale, and data sets shipped as HDF5 hold values already normalised to 0-1.
:class:`GreyIntensityd` is what the covid bundle uses for any one-channel data: the HU window for ``kind="hu"``, a
plain 0-255 -> 0-1 scaling for ``kind="uint8"``, each image's 0.5-99.5 percentile range -> 0-1 for
``kind="percentile"`` (any modality, any scale), the kind a prepared data set declares
(:mod:`medsemiseg.data.declared`). Data whose values contradict the kind (an HU window over 0-255 values, which
squeezes them into 0.83-1.0; 0-255 scaling over negative HU) are warned about once, naming the file.
``CTIntensityd`` is its earlier name, kept for configs that use it.

Fundus photographs arrive as RGB 0-255. :class:`FundusNormalized` divides by 255 (``[0, 1]``, the range the strong
view expects) and optionally standardises each channel with a given mean and std.
"""

from __future__ import annotations

import logging
from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange, ScaleIntensityRangePercentiles

__all__ = ["CTIntensityd", "CTWindowd", "FundusNormalized", "GREY_KINDS", "GreyIntensityd", "LUNG_WINDOW"]

logger = logging.getLogger(__name__)

# (centre, width) in HU of the lung-lesion window used by the COVID-19 bundle; see the module docstring.
LUNG_WINDOW = (-500.0, 1500.0)


class CTWindowd(MapTransform):
    """Window CT intensities in HU to ``[0, 1]``: ``clip((x - (c - w/2)) / w, 0, 1)``.

    Args:
        keys: keys of the CT images (never the label).
        window_center: window centre in HU (default -500, see the module docstring for why).
        window_width: window width in HU (default 1500).
        allow_missing_keys: skip missing keys instead of raising.
    """

    def __init__(
        self,
        keys: KeysCollection,
        window_center: float = LUNG_WINDOW[0],
        window_width: float = LUNG_WINDOW[1],
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if window_width <= 0:
            raise ValueError(f"CTWindowd(window_width={window_width}) must be positive (HU).")
        self.window_center = float(window_center)
        self.window_width = float(window_width)
        lo = self.window_center - self.window_width / 2
        hi = self.window_center + self.window_width / 2
        self.scaler = ScaleIntensityRange(a_min=lo, a_max=hi, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            d[key] = self.scaler(d[key])
        return d


#: the kinds of grey values :class:`GreyIntensityd` scales, and how
GREY_KINDS = {
    "hu": "CT in Hounsfield units: the HU window",
    "uint8": "8-bit grey values 0-255: divided by 255",
    "percentile": "values of any other scale (MR, ultrasound, data normalised already): each image's 0.5-99.5 "
                  "percentile range scaled to 0-1",
}


class GreyIntensityd(MapTransform):
    """One-channel (grey) intensities of any modality to ``[0, 1]`` by the kind of values the data hold.

    Args:
        keys: keys of the images (never the label).
        kind: ``"hu"`` (Hounsfield units: :class:`CTWindowd` with ``window_center`` / ``window_width``),
            ``"uint8"`` (8-bit grey values: divided by 255, clipped to ``[0, 1]``) or ``"percentile"`` (each image's
            ``percentiles`` range mapped to ``[0, 1]`` and clipped: MONAI's ``ScaleIntensityRangePercentiles``);
            ``None`` means ``"hu"``. :data:`GREY_KINDS` says the same.
        window_center, window_width: the HU window (used with ``kind="hu"``).
        percentiles: ``(lower, upper)`` percentiles of each image mapped to 0 and 1 (used with ``kind="percentile"``).
        allow_missing_keys: skip missing keys instead of raising.

    The first image whose values contradict ``kind`` is warned about (once per transform): under ``"hu"``, an image
    whose values all lie in 0..255 (8-bit display values: the window would squeeze them into its top sixth);
    under ``"uint8"``, one with values below 0 or above 255 (HU or 16-bit data).  The warning names the file and
    the setting to change.  ``"percentile"`` takes any values.
    """

    def __init__(
        self,
        keys: KeysCollection,
        kind: str | None = "hu",
        window_center: float = LUNG_WINDOW[0],
        window_width: float = LUNG_WINDOW[1],
        percentiles: Sequence[float] = (0.5, 99.5),
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        kind = "hu" if kind is None else str(kind).lower()
        if kind not in GREY_KINDS:
            raise ValueError(
                f"{type(self).__name__}(kind={kind!r}): use one of "
                + "; ".join(f"{k!r} ({v})" for k, v in GREY_KINDS.items()) + "."
            )
        lower, upper = (float(p) for p in percentiles)
        if not 0 <= lower < upper <= 100:
            raise ValueError(
                f"{type(self).__name__}(percentiles={tuple(percentiles)}): need 0 <= lower < upper <= 100."
            )
        self.kind = kind
        self.window = CTWindowd(keys, window_center, window_width, allow_missing_keys)
        self.scale = ScaleIntensityRange(a_min=0.0, a_max=255.0, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
        self.stretch = ScaleIntensityRangePercentiles(lower, upper, b_min=0.0, b_max=1.0, clip=True, dtype=np.float32)
        self._warned = False

    def _check(self, img: torch.Tensor, key: Hashable) -> None:
        if self._warned:
            return
        lo, hi = float(img.min()), float(img.max())
        name = getattr(img, "meta", {}).get("filename_or_obj", key)
        if self.kind == "hu" and lo >= 0 and hi <= 255:
            self._warned = True
            looks, fix = (("values normalised to 0-1", "percentile") if hi <= 1 else ("8-bit display values", "uint8"))
            logger.warning(
                f"{name}: values {lo:g}..{hi:g} look like {looks}, not Hounsfield units, but they are windowed as "
                f"HU ({self.window.window_center:g} +- {self.window.window_width / 2:g}), which squeezes them into "
                f"{(lo - self.window.window_center) / self.window.window_width + 0.5:.2f}-"
                f"{(hi - self.window.window_center) / self.window.window_width + 0.5:.2f}. Pass --intensity_kind {fix} "
                "(8-bit grey: uint8; MR, ultrasound or normalised values: percentile), or declare it when preparing "
                "(prepare folder --intensity)."
            )
        elif self.kind == "uint8" and (lo < 0 or hi > 255):
            self._warned = True
            logger.warning(
                f"{name}: values {lo:g}..{hi:g} lie outside 0..255, but intensity_kind is 'uint8' (8-bit display "
                "values scaled by 1/255 and clipped). For CT in Hounsfield units pass --intensity_kind hu; a model "
                "trained on 8-bit slices expects images windowed and saved the same way."
            )

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            self._check(d[key], key)
            op = {"hu": self.window.scaler, "uint8": self.scale, "percentile": self.stretch}[self.kind]
            d[key] = op(d[key])
        return d


#: the earlier name of :class:`GreyIntensityd` (configs written for the covid bundle before it took any grey data)
CTIntensityd = GreyIntensityd


class FundusNormalized(MapTransform):
    """Scale RGB fundus images from 0-255 to ``[0, 1]``, optionally standardise per channel.

    Args:
        keys: keys of the images (never the label).
        max_value: value mapped to 1 (255 for 8-bit photographs).
        mean: optional per-channel mean (of the ``[0, 1]`` values) to subtract, e.g. ImageNet's
            ``(0.485, 0.456, 0.406)`` when the encoder was pre-trained with it.
        std: optional per-channel std to divide by (required together with ``mean``).
        allow_missing_keys: skip missing keys instead of raising.

    Standardised images are no longer in ``[0, 1]``; build the strong view with ``StrongAugment(value_range=None)``
    in that case.
    """

    def __init__(
        self,
        keys: KeysCollection,
        max_value: float = 255.0,
        mean: Sequence[float] | None = None,
        std: Sequence[float] | None = None,
        allow_missing_keys: bool = False,
    ) -> None:
        super().__init__(keys, allow_missing_keys)
        if (mean is None) != (std is None):
            raise ValueError("FundusNormalized: give both mean and std (per channel) or neither.")
        if max_value <= 0:
            raise ValueError(f"FundusNormalized(max_value={max_value}) must be positive.")
        if std is not None and any(float(s) <= 0 for s in std):
            raise ValueError(f"FundusNormalized(std={tuple(std)}) must be positive.")
        if mean is not None and len(mean) != len(std):
            raise ValueError(f"FundusNormalized: mean {tuple(mean)} and std {tuple(std)} differ in length.")
        self.max_value = float(max_value)
        self.mean = None if mean is None else [float(m) for m in mean]
        self.std = None if std is None else [float(s) for s in std]

    def __call__(self, data: Mapping[Hashable, torch.Tensor]) -> dict[Hashable, torch.Tensor]:
        d = dict(data)
        for key in self.key_iterator(d):
            img = d[key]
            out = img.float() / self.max_value if isinstance(img, torch.Tensor) else torch.as_tensor(img, dtype=torch.float32) / self.max_value
            if self.mean is not None:
                if out.shape[0] != len(self.mean):
                    raise ValueError(
                        f"FundusNormalized: '{key}' has {out.shape[0]} channels but mean/std give {len(self.mean)}; "
                        f"images must be channel-first (C, X, Y), RGB without alpha."
                    )
                shape = (-1,) + (1,) * (out.ndim - 1)
                m = torch.as_tensor(self.mean, dtype=out.dtype, device=out.device).reshape(shape)
                s = torch.as_tensor(self.std, dtype=out.dtype, device=out.device).reshape(shape)
                out = (out - m) / s
            d[key] = out
        return d
