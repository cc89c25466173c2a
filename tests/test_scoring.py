"""``eval/metrics.json`` says where it scored: region (FOV masks or all pixels), resolution and reference observer."""

from __future__ import annotations

import json

import pytest
import torch

from medsemiseg.metrics import MetricsReportHandler, scoring_record


def _datalist(tmp_path, meta, test):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"meta": meta, "test": test}))
    return path


def test_drive_is_scored_inside_its_fov_masks_against_the_first_observer(tmp_path):
    items = [{"image": f"i{k}.png", "label": f"l{k}.png", "fov": f"f{k}.png", "second_observer": f"s{k}.png"}
             for k in range(3)]
    rec = scoring_record(_datalist(tmp_path, {"task": "drive"}, items), "auto", "original", [192, 192])
    assert rec["region"] == "field of view"
    assert rec["fov"] == {"mode": "auto", "fov_masks": 3, "fov_derived": 0, "all_pixels": 0, "test_items": 3}
    assert rec["resolution"] == "original" and rec["image_size"] == [192, 192]
    assert rec["reference"].startswith("1st_manual") and rec["second_observer_items"] == 3
    assert scoring_record(_datalist(tmp_path, {"task": "drive"}, items), False, "network")["region"] == "all pixels"


def test_chase_without_masks_scores_all_pixels_unless_derived(tmp_path):
    items = [{"image": "a.png", "label": "b.png"}] * 2
    path = _datalist(tmp_path, {"task": "chase", "observer": "2ndHO"}, items)
    auto = scoring_record(path, "auto", "network", [128, 128])
    assert auto["region"] == "all pixels" and auto["fov"]["all_pixels"] == 2 and auto["reference"] == "2ndHO"
    derived = scoring_record(path, "true", "network")
    assert derived["region"] == "field of view" and derived["fov"]["fov_derived"] == 2


def test_a_data_set_with_one_annotation_names_its_label(tmp_path):
    rec = scoring_record(_datalist(tmp_path, {"task": "covid"}, [{"image": "a", "label": "b"}]), "auto", "original")
    assert rec["reference"] == "label" and rec["second_observer_items"] == 0
    with pytest.raises(ValueError, match="eval_fov"):
        scoring_record(None, "maybe", "original")


def test_metrics_report_records_the_scoring_section(tmp_path):
    class State:
        metrics = {"test_per_class_iou": torch.tensor([0.9, 0.5]), "test_mIoU": 0.7}
        epoch, iteration = 1, 1

    class Engine:
        state = State()

    scoring = {"region": "all pixels", "resolution": "original", "reference": "label"}
    handler = MetricsReportHandler(["background", "vessel"], tmp_path, iou_metric="test_per_class_iou",
                                   dice_metric=None, filename="metrics", scoring=scoring)
    handler(Engine())
    assert json.loads((tmp_path / "metrics.json").read_text())["scoring"] == scoring
