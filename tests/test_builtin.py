"""Built-in synthetic data sets: generated + prepared once, cached, re-split without regenerating."""

from __future__ import annotations

import json

import pytest
import torch
from monai.data import load_decathlon_datalist

from medsemiseg.data.builtin import ensure_synthetic_datalist, synthetic_task_dir
from medsemiseg.data.slices import LoadSliced
from medsemiseg.data.splits import num_labeled

pytest.importorskip("medsemiseg.data.synthetic")

SMALL_COVID = dict(n_slices=16, size=64, n_unlabeled_volumes=1, unlabeled_slices=3, dicom_series=False)


def test_covid_generated_once_then_cached_and_resplit(tmp_path):
    path = ensure_synthetic_datalist("covid", tmp_path, "1/8", seed=0, **SMALL_COVID)
    task_dir = synthetic_task_dir("covid", tmp_path, **SMALL_COVID)
    assert path == task_dir / "datalist_1-8_seed0.json" and (task_dir / "raw" / "tr_im.nii.gz").exists()
    d = json.loads(path.read_text())
    c = d["meta"]["counts"]
    assert c["train"] + c["validation"] + c["test"] == 16 and c["extra_unlabeled"] == 3
    assert len(d["labeled"]) == num_labeled(c["train"], "1/8")
    assert str(task_dir.resolve()) in d["meta"]["source"]  # recorded source points at the final folder
    slices = sorted((task_dir / "images").iterdir())
    stamps = [p.stat().st_mtime_ns for p in slices]
    assert ensure_synthetic_datalist("covid", tmp_path, "1/8", seed=0, **SMALL_COVID) == path  # cached
    p2 = ensure_synthetic_datalist("covid", tmp_path, "1/2", seed=3, **SMALL_COVID)
    d2 = json.loads(p2.read_text())
    assert p2.name == "datalist_1-2_seed3.json" and len(d2["labeled"]) == num_labeled(c["train"], "1/2")
    assert d2["validation"] == d["validation"] and d2["test"] == d["test"]
    assert [p.stat().st_mtime_ns for p in sorted((task_dir / "images").iterdir())] == stamps  # no regeneration
    items = load_decathlon_datalist(str(p2), data_list_key="labeled")
    loaded = LoadSliced(["image", "label"], num_classes=4)(items[0])
    assert loaded["image"].shape == (1, 64, 64) and loaded["label"].dtype == torch.int64
    assert not list(tmp_path.glob(".*tmp*"))  # no temporary folder left behind


def test_chase_builtin_and_kwargs_get_their_own_folder(tmp_path):
    path = ensure_synthetic_datalist("chase", tmp_path, "1/4", n_images=8, size=(48, 50))
    d = json.loads(path.read_text())
    assert d["meta"]["task"] == "chase" and len(d["test"]) == 2 and d["validation"] == d["test"]
    assert len(d["labeled"]) == num_labeled(6, "1/4")
    other = ensure_synthetic_datalist("chase", tmp_path, "1/4", n_images=10, size=(48, 50))
    assert other.parent != path.parent and len(json.loads(other.read_text())["test"]) == 3


def test_refuses_foreign_folder_and_unknown_task(tmp_path):
    (tmp_path / "covid").mkdir()
    (tmp_path / "covid" / "something.txt").write_text("not ours")
    with pytest.raises(ValueError, match="not a built-in data set folder"):
        ensure_synthetic_datalist("covid", tmp_path)
    with pytest.raises(ValueError, match="unknown synthetic task"):
        ensure_synthetic_datalist("brain", tmp_path)
