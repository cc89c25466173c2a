"""The task registry (medsemiseg.tasks) is what each bundle's configs say, and the layers that need task facts
(inference input checks, the cost benchmark, the built-in data sets) read it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from medsemiseg.tasks import TASKS, get_task, task_for_channels

REPO = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("name", sorted(TASKS))
def test_each_task_is_what_its_bundle_configs_say(name):
    task = get_task(name)
    train = json.loads((REPO / "bundles" / name / "configs" / "train.json").read_text())
    meta = json.loads((REPO / "bundles" / name / "configs" / "metadata.json").read_text())
    assert train["task"] == name and train["in_channels"] == task.in_channels
    assert tuple(train["default_classes"]) == task.classes
    fmt = meta["network_data_format"]
    assert fmt["inputs"]["image"]["num_channels"] == task.in_channels
    assert fmt["outputs"]["pred"]["num_channels"] == task.num_classes
    assert tuple(fmt["outputs"]["pred"]["channel_def"].values()) == task.classes
    if task.modalities:
        assert fmt["inputs"]["image"]["modality"] in task.modalities


def test_every_bundle_has_a_task_and_the_layers_read_the_registry():
    from medsemiseg.benchmark.cost import TASKS as COST_TASKS
    from medsemiseg.bundle.inputs import BUNDLE_FOR_CHANNELS, EXPECTED_MODALITIES
    from medsemiseg.data.builtin import SYNTHETIC_TASKS

    bundles = {p.parent.parent.name for p in (REPO / "bundles").glob("*/configs/metadata.json")}
    assert bundles == set(TASKS)
    assert COST_TASKS == {"covid": (1, 4), "chase": (3, 2)}
    assert BUNDLE_FOR_CHANNELS == {1: ("covid", "grey CT images"), 3: ("chase", "RGB fundus photographs")}
    assert EXPECTED_MODALITIES == {"covid": ("CT",)} and SYNTHETIC_TASKS == ("covid", "chase")
    assert task_for_channels(3).name == "chase" and task_for_channels(2) is None
    with pytest.raises(ValueError, match="unknown task 'acdc'; choose one of covid, chase"):
        get_task("acdc")
