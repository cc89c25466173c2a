"""Per-volume scores (:mod:`medsemiseg.metrics.volume`): checked by hand on tiny volumes, averaged the way the
literature does, collected slice by slice from an evaluator's decollated items, and written beside the 2D scores."""

from __future__ import annotations

import json
import math

import pytest
import torch
from ignite.engine import Engine, Events

from medsemiseg.metrics import MetricsReportHandler, PerVolumeScores, summarise_volumes, volume_scores

CLASSES = ["background", "RV", "Myo", "LV"]


def _volumes() -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """Two 6 x 6 x 3 volumes (X, Y, Z) whose scores are worked out by hand in the tests below."""
    label_a, pred_a = torch.zeros(6, 6, 3, dtype=torch.long), torch.zeros(6, 6, 3, dtype=torch.long)
    label_a[1, 1:4, :] = 1  # class 1: a one-voxel-thick plate at x = 1 (9 voxels)
    pred_a[1:3, 1:4, :] = 1  # predicted two voxels thick, x = 1 and 2 (18 voxels)
    label_a[4, 1:4, :] = pred_a[4, 1:4, :] = 2  # class 2 exact; class 3 in neither
    label_b, pred_b = torch.zeros_like(label_a), torch.zeros_like(label_a)
    label_b[0, 0, 0] = 1  # class 1 missed entirely
    label_b[3, 3, :] = pred_b[3, 3, :] = 2
    label_b[5, 5, 2] = pred_b[5, 5, 2] = 3
    return {"A": (pred_a, label_a), "B": (pred_b, label_b)}


def test_volume_scores_match_the_hand_computed_values():
    pred, label = _volumes()["A"]
    s = volume_scores(pred, label, 4)
    # class 1: overlap 9 of 9 + 18 voxels -> Dice 18 / 27, IoU 9 / 18; every voxel of both plates is on their surface
    # (one or two voxels thick): the prediction's 9 voxels at x = 2 lie 1 from the label, the rest 0, so the 95th
    # percentile distance is 1 from the prediction, 0 from the label -> HD95 1; ASD (9 x 1) / (18 + 9) = 1/3
    assert s[1]["dice"] == pytest.approx(2 / 3) and s[1]["iou"] == pytest.approx(0.5)
    assert s[1]["hd95"] == pytest.approx(1.0) and s[1]["asd"] == pytest.approx(1 / 3)
    assert (s[2]["dice"], s[2]["iou"], s[2]["hd95"], s[2]["asd"]) == (1.0, 1.0, 0.0, 0.0)
    assert all(math.isnan(v) for v in s[3].values())  # in neither label nor prediction: nothing to score
    assert 0 not in s  # background is not scored
    mm = volume_scores(pred, label, 4, spacing=(2.0, 1.0, 1.0))  # the one-voxel shift is along x: 2 mm
    assert mm[1]["hd95_mm"] == pytest.approx(2.0) and mm[1]["asd_mm"] == pytest.approx(2 / 3)
    assert mm[1]["hd95"] == pytest.approx(1.0)  # voxels stay voxels


def test_summary_averages_over_volumes_then_over_foreground_classes():
    scores = {name: volume_scores(p, t, 4) for name, (p, t) in _volumes().items()}
    assert scores["B"][1]["dice"] == 0.0 and math.isnan(scores["B"][1]["hd95"])  # missed: Dice 0, no distance
    section = summarise_volumes(scores, CLASSES)
    rv, myo, lv = (section["per_class"][c] for c in ("RV", "Myo", "LV"))
    assert rv["dice"] == pytest.approx((2 / 3 + 0) / 2) and rv["hd95"] == pytest.approx(1.0)
    assert (rv["volumes"], rv["distance_undefined"]) == (2, 1)
    assert (myo["dice"], myo["hd95"], myo["volumes"]) == (1.0, 0.0, 2)
    assert (lv["dice"], lv["volumes"]) == (1.0, 1)  # only B holds class 3
    assert section["mean"]["dice"] == pytest.approx((1 / 3 + 1 + 1) / 3)
    assert section["mean"]["hd95"] == pytest.approx((1 + 0 + 0) / 3)
    assert section["classes"] == ["RV", "Myo", "LV"] and section["num_volumes"] == 2
    assert section["volumes"]["A"]["RV"]["iou"] == pytest.approx(0.5)
    assert "hd95_mm" not in section["mean"]  # no spacing given


def _items() -> list[tuple[dict, dict]]:
    """The volumes' slices as an evaluator's decollated (batch item, output item) pairs, B's and A's interleaved
    and out of order, with a picture that belongs to no volume."""
    items = []
    for name, (pred, label) in _volumes().items():
        for k in range(3):
            items.append(({"volume": name, "slice": torch.tensor(k)},
                          {"pred": pred[None, :, :, k], "label": label[None, :, :, k]}))
    items.append(({}, {"pred": torch.zeros(1, 6, 6), "label": torch.zeros(1, 6, 6)}))
    return [items[i] for i in (5, 0, 4, 6, 2, 3, 1)]


def _engine(items: list[tuple[dict, dict]]) -> Engine:
    """An engine whose iteration ``i`` holds item ``i`` decollated, as a MONAI evaluator leaves it."""

    def step(engine, i):
        batch, output = items[i]
        engine.state.batch = [batch]
        return [output]

    return Engine(step)


def test_handler_stacks_each_volume_and_the_report_writes_it_beside_the_2d_scores(tmp_path):
    datalist = tmp_path / "datalist.json"
    datalist.write_text(json.dumps({"test": [{"image": "x", "volume": v, "slice": k} for v in "AB" for k in range(3)],
                                    "meta": {"volumes": {"A": {"spacing": [2.0, 1.0, 1.0]}, "B": {"spacing": None}}}}))
    handler = PerVolumeScores(4, CLASSES, datalist=datalist)
    report = MetricsReportHandler(CLASSES, tmp_path / "eval", iou_metric="iou", dice_metric=None, filename="metrics",
                                  engine_state=False)
    engine = _engine(_items())
    handler.attach(engine)
    scored_after: list[set] = []
    engine.add_event_handler(Events.ITERATION_COMPLETED, lambda e: scored_after.append(set(handler.scores)))
    engine.add_event_handler(Events.COMPLETED, lambda e: e.state.metrics.update(iou=torch.ones(4)))
    report.attach(engine)
    engine.run(range(7))
    # each volume is scored as soon as its slices are in (B's last at step 6, A's at step 7), its slices let go
    assert scored_after[4:] == [set(), {"B"}, {"A", "B"}] and not handler._slices
    section = engine.state.per_volume
    expected = summarise_volumes({n: volume_scores(p, t, 4) for n, (p, t) in _volumes().items()}, CLASSES)
    def without_volumes(d):
        return json.dumps({k: v for k, v in d.items() if k != "volumes"}, sort_keys=True)  # NaN written alike

    assert without_volumes(section) == without_volumes(expected)
    assert "hd95_mm" not in section["mean"]  # B's spacing is unknown: averages in mm only when every volume has one
    assert section["volumes"]["A"]["RV"]["hd95_mm"] == pytest.approx(2.0)  # A's own scores take its spacing
    assert engine.state.metrics["volume_mDice"] == pytest.approx(7 / 9)
    written = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert written["per_volume"]["per_class"]["RV"]["dice"] == pytest.approx(1 / 3)
    assert written["metrics"]["volume_mHD95"] == pytest.approx(1 / 3) and "mIoU" in written
    csv = (tmp_path / "eval" / "metrics.csv").read_text().splitlines()
    assert csv[-5] == "per volume,dice,iou,hd95,asd" and csv[-1].startswith("per volume: mean,0.77777")


def test_handler_adds_nothing_without_volumes_and_warns_about_slices_that_do_not_stack(caplog):
    engine = _engine([({}, {"pred": torch.zeros(1, 4, 4), "label": torch.zeros(1, 4, 4)})])
    PerVolumeScores(4, CLASSES).attach(engine)
    engine.run(range(1))
    assert not hasattr(engine.state, "per_volume") and "volume_mDice" not in engine.state.metrics
    engine = _engine([({"volume": "V", "slice": k}, {"pred": torch.zeros(1, 4, 4 + k),
                                                      "label": torch.zeros(1, 4, 4 + k)}) for k in range(2)])
    PerVolumeScores(4, CLASSES).attach(engine)
    with caplog.at_level("WARNING", logger="medsemiseg.metrics.volume"):
        engine.run(range(2))
    assert "volume V: its slices differ in size" in caplog.text
