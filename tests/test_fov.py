"""Field of view of fundus photographs and the FOV-restricted scoring it feeds."""

from __future__ import annotations

import numpy as np
import torch

from medsemiseg.metrics import compute_segmentation_report
from medsemiseg.transforms.fov import FundusFOVd, IgnoreOutsideFOVd, fundus_fov


def _disc(size: int = 40) -> np.ndarray:
    xx, yy = np.mgrid[:size, :size]
    disc = (xx - size / 2) ** 2 + (yy - size / 2) ** 2 < (size / 2 - 3) ** 2
    img = np.zeros((3, size, size), np.float32)
    img[:, disc] = 120.0
    img[:, 18:22, 10:30] = 5.0  # a dark vessel inside the disc: still inside the field of view
    return img


def test_fov_is_the_bright_disc_with_its_holes_filled():
    img = _disc()
    fov = fundus_fov(img)
    assert fov[20, 20] and fov[19, 12]  # inside, including the dark vessel
    assert not fov[0, 0] and not fov[39, 39]  # black corners


def test_pixels_outside_the_fov_count_for_no_class():
    img = _disc()
    label = torch.zeros(1, 40, 40, dtype=torch.long)
    label[0, 18:22, 10:30] = 1
    pred = label.clone()
    pred[0, :3, :3] = 1  # a wrong vessel in the black corner
    d = FundusFOVd(num_classes=2)({"image": torch.as_tensor(img), "label": label})
    assert int(d["label"][0, 0, 0]) == 2 and int(d["label"][0, 20, 20]) == 1
    out = IgnoreOutsideFOVd(num_classes=2)({"pred": pred, "label": d["label"]})
    inside = compute_segmentation_report([out["pred"]], [out["label"]], ["background", "vessel"])
    whole = compute_segmentation_report([pred], [label], ["background", "vessel"])
    assert inside["per_class"]["vessel"]["iou"] == 1.0  # the corner error is outside the field of view
    assert whole["per_class"]["vessel"]["iou"] < 1.0
    off = IgnoreOutsideFOVd(num_classes=2, enabled=False)({"pred": pred, "label": label})
    assert off["pred"] is pred
