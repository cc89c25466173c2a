"""Model-zoo conventions of the bundles' metadata: data licence, MONAI Label named as a supported app, and
``eval_metrics`` that are the numbers of the committed real-data grids, with the command that wrote them."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
#: bundle -> the real-data grid its eval_metrics come from
GRIDS = {"covid": "covidsemiseg", "chase": "drive"}


def _meta(task: str) -> dict:
    return json.loads((REPO / "bundles" / task / "configs" / "metadata.json").read_text())


def _miou_table(grid: str) -> dict[tuple[str, str], float]:
    """``{(fraction, method): mIoU}`` of the first table of ``docs/results/real/<grid>/results.md`` (in [0, 1])."""
    text = (REPO / "docs" / "results" / "real" / grid / "results.md").read_text()
    table = text.split("\n### ")[0]
    header = next(line for line in table.splitlines() if line.startswith("| Labelled"))
    col = [c.strip() for c in header.strip("|").split("|")].index("mIoU")
    out = {}
    for line in table.splitlines():
        cells = [c.strip() for c in line.strip("|").split("|")]
        if len(cells) > col and re.match(r"^(\d+/\d+|full)$", cells[0]):
            out[(cells[0], cells[1])] = float(cells[col].strip("*").split("±")[0]) / 100
    return out


@pytest.mark.parametrize("task", sorted(GRIDS))
def test_bundle_ships_a_data_licence_naming_its_data_sets(task):
    text = (REPO / "bundles" / task / "docs" / "data_license.txt").read_text()
    names = {"covid": ["MedSeg", "COVID-SemiSeg"], "chase": ["CHASE_DB1", "DRIVE"]}[task]
    assert all(n in text for n in names)


@pytest.mark.parametrize("task", sorted(GRIDS))
def test_monai_label_is_a_supported_app(task):
    apps = _meta(task)["supported_apps"]
    assert "monai-label" in apps and re.match(r"^\d+\.\d+", apps["monai-label"])
    assert (REPO / "bundles" / "monailabel_app" / "main.py").is_file()


@pytest.mark.parametrize("task", sorted(GRIDS))
def test_eval_metrics_are_the_committed_real_grid_results(task):
    grid = GRIDS[task]
    metrics = _meta(task)["eval_metrics"]
    table = _miou_table(grid)
    checked = 0
    for key, value in metrics.items():
        found = re.match(rf"^{grid}_(1-8|full)_([a-z_]+?)_mIoU$", key)
        if found:
            fraction = found.group(1).replace("-", "/")
            assert value == pytest.approx(table[(fraction, found.group(2))], abs=5e-5), key
            checked += 1
    assert checked >= 2
    source = metrics["source"]
    config = re.search(r"python -m medsemiseg\.benchmark (configs/\S+\.yaml)", source).group(1)
    assert (REPO / config).is_file() and f"docs/results/real/{grid}/results.md" in source


def test_covid_metadata_states_the_channels_of_a_data_set_with_other_classes():
    meta = _meta("covid")
    assert meta["network_data_format"]["outputs"]["pred"]["num_channels"] == 4  # the default classes
    assert "COVID-SemiSeg: 3 channels" in meta["pred_classes"]
