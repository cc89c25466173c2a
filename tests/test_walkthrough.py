"""The walk-through notebook runs top to bottom (tiny settings) and matches its generator script.

Executes the code cells in one namespace, the ``parameters`` cell first and then overridden, without Jupyter (no
nbclient dependency); matplotlib draws to the Agg backend.
"""
from __future__ import annotations

import json
import runpy
from pathlib import Path

import matplotlib
import pytest

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "walkthrough.ipynb"


def test_notebook_is_the_generator_output():
    build = runpy.run_path(str(REPO / "scripts" / "build_walkthrough.py"))["build"]
    assert json.loads(NOTEBOOK.read_text()) == build(), "run `python scripts/build_walkthrough.py` after editing it"


@pytest.mark.integration
def test_walkthrough_runs_end_to_end(tmp_path, monkeypatch):
    matplotlib.use("Agg")
    monkeypatch.chdir(REPO / "notebooks")
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    assert "parameters" in cells[0]["metadata"].get("tags", [])
    ns: dict = {"__name__": "__main__"}
    exec("".join(cells[0]["source"]), ns)
    ns.update(MAX_EPOCHS=1, EPOCH_LENGTH=2, IMAGE_SIZE=[32, 32], RUN_DIR=str(tmp_path / "run"))
    for cell in cells[1:]:
        exec(compile("".join(cell["source"]), "walkthrough", "exec"), ns)
    for method in ns["METHODS"]:
        out = tmp_path / "run" / method
        metrics = json.loads((out / "eval" / "metrics.json").read_text())
        assert set(metrics["per_class"]) == set(ns["classes"])
        assert (out / "models" / "model.pt").is_file()
        assert len(list((out / "outputs").glob("*_seg.nii.gz"))) >= 3


def test_walkthrough_defaults_to_one_torch_thread():
    """As shipped the notebook pins torch to one thread: on a loaded 2-core machine torch's own thread count took
    16 minutes instead of about 1.5 (threads spin-wait on busy cores)."""
    cells = [c for c in json.loads(NOTEBOOK.read_text())["cells"] if c["cell_type"] == "code"]
    ns: dict = {}
    exec("".join(cells[0]["source"]), ns)
    assert ns["TORCH_THREADS"] == 1
    assert "torch.set_num_threads(TORCH_THREADS)" in "".join(cells[1]["source"])
