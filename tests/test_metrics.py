"""Per-class IoU / Dice, mIoU, reports and the evaluator integration."""

from __future__ import annotations

import csv
import json
import math

import pytest
import torch
import torch.nn as nn
from monai.data import DataLoader
from monai.engines import SupervisedEvaluator
from monai.metrics import DiceMetric, MeanIoU
from monai.networks.utils import one_hot

from medsemiseg.metrics import (
    MDice,
    MetricsReportHandler,
    MIoU,
    PerClassDice,
    PerClassDiceMetric,
    PerClassIoU,
    PerClassIoUMetric,
    compute_segmentation_report,
    mIoU,
    write_report,
)

NAMES = ["background", "vessel", "other"]

# Two 2x2 images, three classes.
#   A: pred [[0,1],[1,1]] label [[0,0],[1,1]]  -> IoU bg 1/2, fg 2/3, class 2 absent from both (skipped)
#      Dice bg 2/3, fg 4/5
#   B: pred [[0,0],[0,2]] label all 0          -> IoU bg 3/4, fg absent from both (skipped), class 2 predicted
#      but absent from the label: 0.  Dice bg 6/7, class 2: 0
PRED = torch.tensor([[[0, 1], [1, 1]], [[0, 0], [0, 2]]])
LABEL = torch.tensor([[[0, 0], [1, 1]], [[0, 0], [0, 0]]])
IOU = [(0.5 + 0.75) / 2, 2 / 3, 0.0]
DICE = [(2 / 3 + 6 / 7) / 2, 0.8, 0.0]
# pooled over both images: bg inter 4 / union 6, fg 2 / 3, class 2: 0 / 1
IOU_POOLED = [4 / 6, 2 / 3, 0.0]
DICE_POOLED = [8 / 10, 4 / 5, 0.0]


def _close(a, b):
    return all(math.isclose(x, y, rel_tol=1e-5, abs_tol=1e-6) or (math.isnan(x) and math.isnan(y)) for x, y in zip(a, b))


def test_hand_computed_report():
    r = compute_segmentation_report(PRED, LABEL, NAMES)
    assert r["classes"] == NAMES and r["num_images"] == 2
    assert _close([r["per_class"][n]["iou"] for n in NAMES], IOU)
    assert _close([r["per_class"][n]["dice"] for n in NAMES], DICE)
    assert _close([r["per_class"][n]["iou_pooled"] for n in NAMES], IOU_POOLED)
    assert _close([r["per_class"][n]["dice_pooled"] for n in NAMES], DICE_POOLED)
    assert math.isclose(r["mIoU"], sum(IOU) / 3, rel_tol=1e-6)  # background included in the mean
    assert math.isclose(r["mDice"], sum(DICE) / 3, rel_tol=1e-6)
    assert math.isclose(r["mIoU_pooled"], sum(IOU_POOLED) / 3, rel_tol=1e-6)


def test_input_layouts_agree():
    ref = compute_segmentation_report(PRED, LABEL, NAMES)
    logits = one_hot(PRED[:, None], 3, dim=1) * 5.0 - 1.0  # (N, K, X, Y) scores
    for preds, labels in [
        (PRED[:, None], LABEL[:, None]),
        (logits, one_hot(LABEL[:, None], 3, dim=1)),
        (list(PRED), list(LABEL)),  # per-image (X, Y)
        ([p[None] for p in PRED], [t[None] for t in LABEL]),  # per-image (1, X, Y)
    ]:
        r = compute_segmentation_report(preds, labels, NAMES)
        assert r["mIoU"] == pytest.approx(ref["mIoU"]) and r["mIoU_pooled"] == pytest.approx(ref["mIoU_pooled"])


def test_empty_class_rule_vs_monai():
    """A class absent from prediction and label is skipped (NaN), a false positive scores 0.

    MONAI's ignore_empty=True gives NaN for both cases (hiding the false positive), ignore_empty=False gives 1 for
    the empty case (rewarding absent classes); ours differs from each exactly there.
    """
    p = one_hot(PRED[1:2, None], 3, dim=1)
    t = one_hot(LABEL[1:2, None], 3, dim=1)
    ours = PerClassIoUMetric(3)
    ours(p, t)
    v = ours.get_buffer()[0].tolist()
    assert v[0] == pytest.approx(0.75) and math.isnan(v[1]) and v[2] == 0.0
    monai_ignore = MeanIoU(include_background=True, reduction="none", ignore_empty=True)(p, t)[0].tolist()
    assert math.isnan(monai_ignore[1]) and math.isnan(monai_ignore[2])
    monai_keep = MeanIoU(include_background=True, reduction="none", ignore_empty=False)(p, t)[0].tolist()
    assert monai_keep[1] == 1.0 and monai_keep[2] == 0.0
    # on images where the class is present, ours equals MONAI exactly
    pa, ta = one_hot(PRED[:1, None], 3, dim=1), one_hot(LABEL[:1, None], 3, dim=1)
    d_ours = PerClassDiceMetric(3)
    d_ours(pa, ta)
    d_monai = DiceMetric(include_background=True, reduction="none", ignore_empty=True)(pa, ta)
    torch.testing.assert_close(d_ours.get_buffer()[0, :2], d_monai[0, :2])


def test_class_never_seen_is_nan_and_left_out_of_the_mean():
    pred = torch.zeros(2, 4, 4, dtype=torch.long)
    label = torch.zeros(2, 4, 4, dtype=torch.long)
    pred[:, :2] = 1
    label[:, :2] = 1
    r = compute_segmentation_report(pred, label, NAMES)
    assert math.isnan(r["per_class"]["other"]["iou"]) and math.isnan(r["per_class"]["other"]["iou_pooled"])
    assert r["mIoU"] == pytest.approx(1.0) and r["mDice"] == pytest.approx(1.0)


def test_bad_inputs():
    with pytest.raises(ValueError, match="outside 0..2"):
        compute_segmentation_report(PRED + 2, LABEL, NAMES)
    with pytest.raises(ValueError, match="channels"):
        compute_segmentation_report(torch.zeros(1, 5, 2, 2), LABEL[:1], NAMES)
    with pytest.raises(ValueError, match="both as batch tensors or both as lists"):
        compute_segmentation_report(PRED, list(LABEL), NAMES)
    with pytest.raises(ValueError, match="aggregation"):
        PerClassIoUMetric(3, aggregation="per_volume")


def test_write_report_json_csv_and_no_silent_overwrite(tmp_path):
    r = compute_segmentation_report(PRED, LABEL, NAMES)
    out = write_report(r, tmp_path / "m.json", tmp_path / "m.csv")
    loaded = json.loads(out["json"].read_text())
    assert loaded["per_class"]["vessel"]["iou"] == pytest.approx(2 / 3)
    assert loaded["mIoU"] == pytest.approx(r["mIoU"])
    rows = list(csv.reader(out["csv"].open()))
    assert rows[0] == ["class", "iou", "dice", "iou_pooled", "dice_pooled"]
    assert [row[0] for row in rows[1:]] == NAMES + ["mean"]
    assert float(rows[2][1]) == pytest.approx(2 / 3)
    # writing again keeps the earlier report under a timestamped name
    r2 = dict(r, mIoU=0.123)
    write_report(r2, tmp_path / "m.json", tmp_path / "m.csv")
    jsons = sorted(p.name for p in tmp_path.glob("m*.json"))
    assert len(jsons) == 2 and "m.json" in jsons
    assert json.loads((tmp_path / "m.json").read_text())["mIoU"] == pytest.approx(0.123)
    old = [p for p in tmp_path.glob("m.*.json")][0]
    assert json.loads(old.read_text())["mIoU"] == pytest.approx(r["mIoU"])
    assert len(list(tmp_path.glob("m*.csv"))) == 2
    write_report(r, tmp_path / "m.json", overwrite=True)
    assert len(list(tmp_path.glob("m*.json"))) == 2


class _Echo(nn.Module):
    """'Network' whose logits are the one-hot of the prediction stored in the image channel."""

    def forward(self, x):
        return one_hot(x[:, :1].round().long(), 3, dim=1) * 4.0


def _evaluator(tmp_path, handlers=(), batch_size=2):
    data = [{"image": p[None].float(), "label": t[None]} for p, t in zip(PRED, LABEL)]
    data.append({"image": torch.zeros(1, 2, 2), "label": torch.zeros(1, 2, 2, dtype=torch.long)})  # perfect bg-only
    loader = DataLoader(data, batch_size=batch_size, num_workers=0)
    return SupervisedEvaluator(
        device=torch.device("cpu"),
        val_data_loader=loader,
        network=_Echo(),
        key_val_metric={"val_mean_iou": MIoU(3)},
        additional_metrics={
            "val_per_class_iou": PerClassIoU(3),
            "val_per_class_dice": PerClassDice(3),
            "val_mean_dice": MDice(3),
            "val_per_class_iou_pooled": PerClassIoU(3, aggregation="dataset"),
        },
        val_handlers=list(handlers),
    )


@pytest.mark.parametrize("batch_size", [1, 2])
def test_supervised_evaluator_integration(tmp_path, batch_size):
    report_handler = MetricsReportHandler(NAMES, tmp_path / "eval", iou_pooled_metric="val_per_class_iou_pooled")
    ev = _evaluator(tmp_path, [report_handler], batch_size=batch_size)
    ev.run()
    m = ev.state.metrics
    # third image: background IoU 1, other classes absent from both -> skipped
    iou = [(0.5 + 0.75 + 1.0) / 3, 2 / 3, 0.0]
    assert isinstance(m["val_per_class_iou"], torch.Tensor) and m["val_per_class_iou"].shape == (3,)
    assert _close(m["val_per_class_iou"].tolist(), iou)
    assert isinstance(m["val_mean_iou"], float) and m["val_mean_iou"] == pytest.approx(sum(iou) / 3)
    assert ev.state.best_metric == pytest.approx(sum(iou) / 3)
    dice = [(2 / 3 + 6 / 7 + 1.0) / 3, 0.8, 0.0]
    assert _close(m["val_per_class_dice"].tolist(), dice)
    assert m["val_mean_dice"] == pytest.approx(sum(dice) / 3)
    # the report written at COMPLETED
    written = report_handler.last_written
    rep = json.loads(written["json"].read_text())
    assert written["json"].parent == tmp_path / "eval" and written["json"].name.startswith("metrics_")
    assert _close([rep["per_class"][n]["iou"] for n in NAMES], iou)
    assert _close([rep["per_class"][n]["iou_pooled"] for n in NAMES], [(4 + 4) / (6 + 4), 2 / 3, 0.0])
    assert rep["mIoU"] == pytest.approx(sum(iou) / 3)
    assert rep["metrics"]["val_mean_iou"] == pytest.approx(sum(iou) / 3)
    assert written["csv"].exists()
    # per-image details for other handlers (e.g. MetricsSaver)
    assert ev.state.metric_details["val_per_class_iou"].shape == (3, 3)


def test_report_handler_never_overwrites(tmp_path):
    h = MetricsReportHandler(NAMES, tmp_path, filename="metrics")
    ev = _evaluator(tmp_path, [h])
    ev.run()
    ev.run()
    assert (tmp_path / "metrics.json").exists()
    assert len(list(tmp_path.glob("metrics*.json"))) == 2
    # timestamped names when no filename is given: two runs, two files
    h2 = MetricsReportHandler(NAMES, tmp_path / "ts")
    ev2 = _evaluator(tmp_path, [h2])
    ev2.run()
    ev2.run()
    assert len(list((tmp_path / "ts").glob("metrics_*.json"))) == 2


def test_report_handler_missing_metric(tmp_path):
    h = MetricsReportHandler(NAMES, tmp_path, iou_metric="no_such_metric")
    ev = _evaluator(tmp_path, [h])
    with pytest.raises(KeyError, match="attach medsemiseg.metrics.PerClassIoU"):
        ev.run()


def test_miou_alias():
    assert mIoU is MIoU


def test_evaluation_report_records_the_checkpoint_not_the_evaluators_own_pass(tmp_path):
    ckpt = tmp_path / "model.pt"
    ckpt.write_bytes(b"weights")
    h = MetricsReportHandler(NAMES, tmp_path / "eval", filename="metrics", checkpoint=ckpt, engine_state=False)
    _evaluator(tmp_path, [h]).run()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["checkpoint"] == str(ckpt) and "checkpoint_modified" in report
    assert not {"epoch", "iteration", "best_metric", "best_metric_epoch"} & set(report)
    h = MetricsReportHandler(NAMES, tmp_path / "val", filename="metrics")  # validation inside training: kept
    _evaluator(tmp_path, [h]).run()
    assert {"epoch", "iteration"} <= set(json.loads((tmp_path / "val" / "metrics.json").read_text()))
