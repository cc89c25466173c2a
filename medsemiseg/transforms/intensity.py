"""Intensity normalisation dictionary transforms: CT windowing and fundus scaling.

These are the only places where raw intensities become network inputs, so every bundle (train, evaluate,
inference) normalises the same way.

CT slices arrive in Hounsfield units (HU). :class:`CTWindowd` maps a window ``[center - width/2, center +
width/2]`` linearly to ``[0, 1]`` and clips outside it. The default window, centre -500 HU and width 1500 HU
(-1250 ... 250 HU), is chosen for COVID-19 lung lesions: it keeps aerated lung (about -900 HU), ground-glass
opacities (about -700 ... -300 HU), consolidation (about -100 ... 50 HU) and pleural effusion (about 0 ... 30 HU)
all inside the window, so none of the four classes is clipped, while air and bone saturate. It is the usual lung
window (centre -600, width 1500) shifted by 100 HU toward soft tissue so that effusion and consolidation are not
squeezed against the top of the range.

Fundus photographs arrive as RGB 0-255. :class:`FundusNormalized` divides by 255 (``[0, 1]``, the range the strong
view expects) and optionally standardises each channel with a given mean and std.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping, Sequence

import numpy as np
import torch
from monai.config import KeysCollection
from monai.transforms import MapTransform, ScaleIntensityRange

__all__ = ["CTWindowd", "FundusNormalized", "LUNG_WINDOW"]

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
