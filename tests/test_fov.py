"""Field of view of fundus photographs and the FOV-restricted scoring it feeds."""

from __future__ import annotations

import numpy as np
import pytest
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


def test_the_data_sets_own_fov_mask_and_a_second_observer_scored_the_same_way():
    """DRIVE-style items carry their own FOV (``fov``) and a second observer's mask: ``eval_fov auto`` scores both
    inside that mask, and :class:`SecondObserverAgreement` scores the observer against the label as a model is."""
    from ignite.engine import Engine

    from medsemiseg.metrics import MetricsReportHandler, SecondObserverAgreement

    label = torch.zeros(1, 10, 10, dtype=torch.long)
    label[0, 4:6, :] = 1  # a horizontal vessel, 20 pixels
    fov = torch.zeros(1, 10, 10, dtype=torch.long)
    fov[0, :, :5] = 1  # the left half is the field of view
    observer = label.clone()
    observer[0, 6, :] = 1  # the observer draws the vessel one row wider: 5 extra pixels inside, 5 outside
    observer[0, 0, 9] = 1  # and a speck outside the FOV
    item = {"image": torch.zeros(3, 10, 10), "label": label, "second_observer": observer, "fov": fov}
    d = FundusFOVd(keys=["label", "second_observer"], num_classes=2, mode="auto")(item)
    assert int(d["label"][0, 0, 9]) == 2 and int(d["second_observer"][0, 0, 9]) == 2 and int(d["label"][0, 4, 0]) == 1
    # auto without the item's own mask: nothing is marked (CT, CHASE_DB1); false: never
    assert FundusFOVd(num_classes=2, mode="auto")({"image": item["image"], "label": label})["label"] is label
    assert FundusFOVd(num_classes=2, mode="false")(item)["label"] is label
    out = IgnoreOutsideFOVd(keys=["pred", "label", "second_observer"], num_classes=2, enabled="auto")(
        {**d, "pred": label.clone()})

    def step(engine, batch):
        return [{"label": out["label"], "pred": out["pred"]}]

    engine = Engine(step)
    SecondObserverAgreement(num_classes=2).attach(engine)
    engine.run([[{"second_observer": out["second_observer"]}]], max_epochs=1)
    iou = engine.state.metrics["second_observer_per_class_iou"]
    assert float(iou[1]) == pytest.approx(10 / 15)  # inside the FOV: 10 shared vessel pixels, 5 extra
    assert float(iou[0]) == pytest.approx(35 / 40)
    engine.state.metrics["iou"] = torch.tensor([1.0, 1.0])
    handler = MetricsReportHandler(["background", "vessel"], "unused", iou_metric="iou", dice_metric=None)
    row = handler.report(engine)["second_observer"]
    assert row["per_class"]["vessel"]["iou"] == pytest.approx(10 / 15) and row["mIoU"] == pytest.approx(
        (10 / 15 + 35 / 40) / 2)
