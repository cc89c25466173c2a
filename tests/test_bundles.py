"""The MONAI bundles ``bundles/covid`` and ``bundles/chase``: layout, MONAI tooling, and every workflow.

Everything runs with tiny overrides (64x64 images, one or two iterations) on the built-in synthetic data sets,
which one session fixture generates once. The user's exact command, ``python -m monai.bundle run training
--config_file bundles/covid/train.json`` (run from the repository root), is run as a subprocess with only size
overrides added; the other workflows run in-process through MONAI's ``ConfigWorkflow`` (what the CLI builds).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

import medsemiseg.bundle.inputs as bundle_inputs
from medsemiseg.bundle.checkpoints import check_trained_on
from medsemiseg.bundle.cli import check_cli_overrides, find_bundle_root
from medsemiseg.bundle.datalists import effective_fraction, resolve_datalist
from medsemiseg.bundle.inputs import inference_items
from medsemiseg.bundle.settings import (
    BundleConfigError,
    as_bool,
    check_device,
    check_image_size,
    eval_at_network_size,
)
from medsemiseg.bundle.writer import PredictionWriter
from medsemiseg.checkpoint_io import checkpoint_files

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
TASKS = ("covid", "chase")
METHODS = ("supervised", "classmix", "fixmatch", "unimatch", "supmix", "sufd", "supmix_sufd")

#: keys in which the two bundles' configs may differ; everything else must be identical (shared structure)
TASK_KEYS = {"task", "default_classes", "in_channels", "image_size", "patch_size", "intensity", "write_png"}

#: the settings that make one training run take seconds
TINY = {"image_size": [64, 64], "batch_size": 2, "unlabeled_batch_size": 2, "max_epochs": 1, "epoch_length": 2}


@pytest.fixture(scope="session")
def cache_dir(tmp_path_factory) -> str:
    """One synthetic data cache for the whole session (both tasks generated on first use)."""
    return str(tmp_path_factory.mktemp("bundle_cache"))


def workflow(task: str, run_id: str, **overrides):
    """An initialised ``ConfigWorkflow`` of a bundle, as ``python -m monai.bundle run <run_id>`` builds it."""
    from monai.bundle import ConfigWorkflow

    root = BUNDLES / task
    wf = ConfigWorkflow(
        config_file=str(root / "configs" / "train.json"),
        meta_file=str(root / "configs" / "metadata.json"),
        logging_file=False,
        run_id=run_id,
        workflow_type=None,
        bundle_root=str(root),
        **overrides,
    )
    wf.initialize()
    return wf


def save_random_model(task: str, ckpt_dir: Path, image_size=(64, 64)) -> None:
    """A ``model.pt`` of the bundle's network with its initial weights (inference needs *a* checkpoint)."""
    wf = workflow(task, "inferring", image_size=list(image_size))
    net = wf.parser.get_parsed_content("network_def")
    ckpt_dir.mkdir(parents=True, exist_ok=True)
    torch.save(net.state_dict(), ckpt_dir / "model.pt")


def cli(*args: str, timeout: int = 600) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="2", PYTHONWARNINGS="ignore")
    proc = subprocess.run(
        [sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env, capture_output=True, text=True,
        timeout=timeout,
    )
    assert proc.returncode == 0, f"monai.bundle {args[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


def overrides_cli(d: dict) -> list[str]:
    out: list[str] = []
    for k, v in d.items():
        out += [f"--{k}", json.dumps(v) if isinstance(v, (list, dict)) else str(v)]
    return out


# ------------------------------------------------------------------------------------------------ layout


@pytest.mark.parametrize("task", TASKS)
def test_bundle_layout_follows_the_monai_specification(task):
    root = BUNDLES / task
    for rel in ("configs/metadata.json", "configs/train.json", "configs/evaluate.json", "configs/inference.json",
                "configs/logging.conf", "docs/README.md", "LICENSE"):
        assert (root / rel).is_file(), f"{root / rel} missing"
    assert (root / "models").is_dir()
    # the short names the user types resolve to the real configs (links, no copied content)
    for name in ("train.json", "evaluate.json", "inference.json", "metadata.json", "logging.conf"):
        assert (root / name).is_symlink(), f"{root / name} should be a link into configs/"
        assert (root / name).resolve().parent == (root / "configs").resolve()
    assert (root / "train.json").resolve() == (root / "configs" / "inference.json").resolve()


@pytest.mark.parametrize("task", ["covid", "chase"])
@pytest.mark.integration
def test_bundles_have_monai_train_and_infer_properties(task, tmp_path, cache_dir):
    """MONAI's own bundle check (``ConfigWorkflow(workflow_type=...).check_properties()``, what tools that drive a
    bundle by its properties rely on) finds every required and optional property where MONAI looks for it."""
    from monai.bundle import ConfigWorkflow

    root = BUNDLES / task
    save_random_model(task, tmp_path / "models")
    for workflow_type, run_id in (("train", "training"), ("infer", "inferring")):
        wf = ConfigWorkflow(
            config_file=str(root / "configs" / ("train.json" if workflow_type == "train" else "inference.json")),
            meta_file=str(root / "configs" / "metadata.json"), logging_file=False, workflow_type=workflow_type,
            run_id=run_id, bundle_root=str(root), output_dir=str(tmp_path), cache_dir=cache_dir, **TINY,
        )
        wf.initialize()
        assert wf.check_properties() == [], workflow_type
        if workflow_type == "train":
            attached = wf.parser.get_parsed_content("train#trainer#train_handlers")
            assert attached[0] is wf.parser.get_parsed_content("train#checkpointer")  # first, as before
            assert attached[1:] == list(wf.train_handlers)
            assert not (tmp_path / "models" / "run.json").exists()  # building a trainer records no run
            assert wf.max_epochs == 1 and wf.trainer.state.max_epochs == 1
        else:
            assert wf.evaluator is wf.parser.get_parsed_content("infer#evaluator")
            assert wf.dataset is wf.parser.get_parsed_content("infer#dataset")
        wf.finalize()


def _bundle_builder():
    import importlib.util

    spec = importlib.util.spec_from_file_location("build_bundles", REPO / "scripts" / "build_bundles.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_bundle_configs_are_the_shared_template_with_their_task_keys():
    """Each bundle's train.json is what scripts/build_bundles.py writes from bundles/workflow.template.json and the
    bundle's own task keys: the shared workflow exists once."""
    build = _bundle_builder()
    template = json.loads(build.TEMPLATE.read_text())
    assert set(build.task_keys(template)) == TASK_KEYS
    assert {p.parent.parent.name for p in build.bundle_configs()} == set(TASKS)
    stale = {str(p.relative_to(REPO)): build.shared_keys_changed(p) for p in build.out_of_date()}
    assert not stale, (f"out of date (differing shared keys): {stale}; edit bundles/workflow.template.json (or a "
                       "bundle's task keys in its train.json) and run `python scripts/build_bundles.py`")


def test_bundle_builder_names_a_shared_key_edited_in_one_bundle(tmp_path, monkeypatch):
    build = _bundle_builder()
    shutil.copy(build.TEMPLATE, tmp_path / build.TEMPLATE.name)
    for task in TASKS:
        shutil.copytree(BUNDLES / task / "configs", tmp_path / task / "configs")
    monkeypatch.setattr(build, "BUNDLES", tmp_path)
    monkeypatch.setattr(build, "REPO", tmp_path)
    monkeypatch.setattr(build, "TEMPLATE", tmp_path / build.TEMPLATE.name)
    assert build.out_of_date() == {}
    covid = tmp_path / "covid" / "configs" / "train.json"
    config = json.loads(covid.read_text())
    config["learning_rate"], config["image_size"] = 0.01, [96, 96]  # a shared key and a task key
    covid.write_text(json.dumps(config, indent=4))
    assert set(build.out_of_date()) == {covid} and build.shared_keys_changed(covid) == ["learning_rate"]
    assert build.main(["--check"]) == 1
    assert build.main([]) == 0 and build.out_of_date() == {}
    rebuilt = json.loads(covid.read_text())
    assert rebuilt["learning_rate"] == 0.001 and rebuilt["image_size"] == [96, 96]  # the template's, the bundle's own


@pytest.mark.parametrize("task", TASKS)
def test_metadata_describes_the_configured_network(task):
    meta = json.loads((BUNDLES / task / "configs/metadata.json").read_text())
    cfg = json.loads((BUNDLES / task / "configs/train.json").read_text())
    for key in ("version", "changelog", "monai_version", "pytorch_version", "numpy_version", "required_packages_version",
                "name", "task", "description", "authors", "copyright", "network_data_format"):
        assert meta.get(key) not in (None, ""), f"metadata.json lacks {key}"
    assert meta["version"] in meta["changelog"]
    image = meta["network_data_format"]["inputs"]["image"]
    pred = meta["network_data_format"]["outputs"]["pred"]
    assert image["num_channels"] == cfg["in_channels"]
    network_input = cfg["patch_size"] or cfg["image_size"]  # what the network sees: a patch, or the resized slice
    assert image["spatial_shape"] == network_input == pred["spatial_shape"] and len(image["spatial_shape"]) == 2
    assert image["is_patch_data"] == (cfg["patch_size"] is not None)
    classes = cfg["default_classes"]
    assert pred["num_channels"] == len(classes)
    assert [pred["channel_def"][str(i)] for i in range(len(classes))] == classes


@pytest.mark.parametrize("task", TASKS)
def test_config_exposes_the_monai_and_user_keys(task):
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(BUNDLES / task / "configs/train.json"))
    for key in ("bundle_root", "device", "network_def", "network", "train#trainer", "train#trainer#max_epochs",
                "train#dataset#data", "train#handlers", "validate#dataset#data", "validate#evaluator", "val_interval",
                "inferer", "preprocessing", "postprocessing", "output_dir", "dataset_dir", "method", "method_options",
                "labeled_fraction", "network_name", "max_epochs", "epoch_length", "batch_size",
                "unlabeled_batch_size", "train_sampling", "amp", "seed", "resume", "training", "evaluating", "inferring"):
        assert key in parser, f"{task} config lacks {key!r}"
    assert parser["method"] == "supmix_sufd"  # the paper's method is the default


def test_find_bundle_root_from_every_way_of_naming_the_config(tmp_path, monkeypatch, caplog):
    covid = str(BUNDLES / "covid")
    monkeypatch.chdir(REPO)
    assert find_bundle_root("covid", argv=["x", "run", "--config_file", "bundles/covid/train.json"]) == covid
    assert find_bundle_root("covid", argv=["x", "--config_file=bundles/covid/configs/train.json"]) == covid
    assert find_bundle_root("covid", argv=["x", "--config_file", "['bundles/chase/configs/train.json','b.json']"]) == str(
        BUNDLES / "chase"
    )
    monkeypatch.chdir(BUNDLES / "chase")  # model-zoo style: from inside the bundle
    assert find_bundle_root("chase", argv=["x", "--config_file", "configs/train.json"]) == str(BUNDLES / "chase")
    monkeypatch.chdir(tmp_path)  # no config on the command line: the checkout's bundle, said out loud
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        assert find_bundle_root("covid", argv=["python"]) == covid
    assert f"using {covid}" in caplog.text and "bundle_root" in caplog.text
    with pytest.raises(BundleConfigError, match="--bundle_root"):
        find_bundle_root("nosuchbundle", argv=["python"])


def test_dataset_dir_errors_name_the_setting_and_the_fix(tmp_path):
    with pytest.raises(BundleConfigError, match="dataset_dir=.*does not exist"):
        resolve_datalist(tmp_path / "missing", "covid", tmp_path)
    with pytest.raises(BundleConfigError, match=r"medsemiseg.prepare folder .* --out \S+_prepared"):
        resolve_datalist(tmp_path, "covid", tmp_path)  # a folder without a datalist: raw data


def _prepared_pictures(tmp_path: Path, n: int = 8, **kw) -> Path:
    from PIL import Image

    from medsemiseg.data.prepare import prepare_folder

    src = tmp_path / "raw"
    (src / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(n):
        lab = np.zeros((24, 20), np.uint8)
        lab[4 + i % 5 : 12 + i % 5, 5:15] = 1
        Image.fromarray((rng.random((24, 20)) * 60 + 150 * lab).astype(np.uint8)).save(src / f"case{i}.png")
        Image.fromarray(lab * 255).save(src / "labels" / f"case{i}.png")
    kw = {"num_classes": 2, "val_fraction": 0.25, "test_fraction": 0.25, "progress": False, **kw}
    prepare_folder(src, tmp_path / "prep", **kw)
    return tmp_path / "prep"


def test_datalist_choice_is_logged_and_a_prepared_fraction_not_used_is_warned(tmp_path, caplog):
    prep = _prepared_pictures(tmp_path, labeled_fraction="1/2")
    with caplog.at_level("INFO", logger="medsemiseg.bundle"):
        path = resolve_datalist(prep, "chase", tmp_path / "cache", "1/4", 0)
    assert Path(path).name == "datalist_1-4_seed0.json"
    text = caplog.text
    assert "prepared with labelled fraction 1/2" in text and "--labeled_fraction 1/2" in text
    assert f"datalist {path}: 1 labeled, 3 unlabeled, 2 validation, 2 test" in text
    caplog.clear()
    with caplog.at_level("INFO", logger="medsemiseg.bundle"):
        resolve_datalist(prep, "chase", tmp_path / "cache", "1/2", 0)
    assert "prepared with" not in caplog.text  # the prepared fraction itself: nothing to warn about
    caplog.clear()
    with caplog.at_level("INFO", logger="medsemiseg.bundle"):
        path = resolve_datalist(prep, "chase", tmp_path / "cache", "full", 0)
    assert f"datalist {path}: 4 labeled, 0 unlabeled, 2 validation, 2 test (all listed labelled images, seed 0)" in \
        caplog.text  # not "labeled_fraction full", easily read as the fully supervised cell of a grid


def test_datalist_classes_must_match_the_bundle(tmp_path, caplog):
    prep = _prepared_pictures(tmp_path, class_names=["background", "tumour"])
    with pytest.raises(BundleConfigError, match=r"declares 2 classes \['background', 'tumour'\].*--classes"):
        resolve_datalist(prep, "covid", tmp_path, "1/8", 0, ["background", "ground-glass", "consolidation", "effusion"])
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        resolve_datalist(prep, "chase", tmp_path, "1/8", 0, ["background", "vessel"])
    assert "names its classes ['background', 'tumour']" in caplog.text


# ------------------------------------------------------------------------------------------ MONAI tooling


@pytest.mark.integration
def test_verify_net_in_out_and_torchscript_export(tmp_path):
    cfg, meta = "bundles/covid/configs/train.json", "bundles/covid/configs/metadata.json"
    proc = cli("verify_net_in_out", "network_def", "--meta_file", meta, "--config_file", cfg, "--device", "cpu")
    assert "verified with no error" in proc.stdout + proc.stderr
    from monai.bundle import verify_net_in_out

    verify_net_in_out("network_def", meta_file="bundles/chase/configs/metadata.json",
                      config_file=str(REPO / "bundles/chase/configs/train.json"), device="cpu")

    save_random_model("covid", tmp_path)
    net = workflow("covid", "inferring").parser.get_parsed_content("network_def")
    net.load_state_dict(torch.load(tmp_path / "model.pt"))
    net.eval()
    x = torch.rand(1, 1, 128, 128)
    # MONAI's default export scripts the network; tracing (--use_trace) works too
    for name, extra in (("model.ts", []), ("model_traced.ts", ["--use_trace", "True"])):
        ts = tmp_path / name
        cli("ckpt_export", "network_def", "--filepath", str(ts), "--ckpt_file", str(tmp_path / "model.pt"),
            "--meta_file", meta, "--config_file", "bundles/covid/configs/inference.json", *extra)
        exported = torch.jit.load(str(ts))
        with torch.no_grad():
            assert torch.allclose(exported(x), net(x), atol=1e-4), name
    # a scripted network also takes other input sizes (a traced one is only checked at the traced size)
    y = torch.rand(1, 1, 96, 80)
    with torch.no_grad():
        assert torch.allclose(torch.jit.load(str(tmp_path / "model.ts"))(y), net(y), atol=1e-4)


# ------------------------------------------------------------------------------------ the user's workflows


@pytest.fixture(scope="module")
def covid_run(tmp_path_factory, cache_dir) -> Path:
    """The user's exact training command (plus size overrides), run once from the repository root."""
    out = tmp_path_factory.mktemp("covid_run")
    ov = {**TINY, "output_dir": str(out), "cache_dir": cache_dir}
    cli("run", "training", "--config_file", "bundles/covid/train.json", *overrides_cli(ov))
    return out


@pytest.mark.integration
def test_training_writes_checkpoints_logs_and_a_validation_miou(covid_run):
    models = covid_run / "models"
    assert (models / "model.pt").is_file(), "best-by-validation-mIoU checkpoint missing"
    latest = str(checkpoint_files(models)[0])
    assert latest.endswith("checkpoint_epoch=1.pt")
    state = torch.load(latest, weights_only=True)
    # full training state: network, optimiser, scheduler, trainer counters, EMA teacher, discriminator + its optimiser
    assert {"model", "optimizer", "lr_scheduler", "trainer", "teacher", "sufd"} <= set(state)
    assert state["trainer"]["iteration"] == TINY["epoch_length"]  # one epoch done
    assert any(p.name.startswith("events.out.tfevents") for p in (covid_run / "logs").iterdir())


@pytest.mark.integration
def test_evaluation_writes_the_per_class_report(covid_run, cache_dir, caplog):
    wf = workflow("covid", "evaluating", **TINY, output_dir=str(covid_run), cache_dir=cache_dir)
    with caplog.at_level("INFO", logger="medsemiseg.progress"):
        wf.run()
    report = json.loads((covid_run / "eval" / "metrics.json").read_text())
    classes = ["background", "ground-glass", "consolidation", "pleural effusion"]
    # progress of the test split (medsemiseg.handlers.ProgressLogger), ending at its size
    n_test = len(wf.parser.get_parsed_content("evaluate#dataset"))
    progress = [r.getMessage() for r in caplog.records if r.name == "medsemiseg.progress"]
    assert progress and progress[-1] == f"evaluating: {n_test}/{n_test} images", progress
    assert list(report["per_class"]) == classes
    assert {"iou", "dice"} <= set(report["per_class"]["background"])
    assert 0.0 <= report["mIoU"] <= 1.0
    # the pooled (whole-test-set) IoU / Dice that the report's "aggregation" text and the benchmark tables describe
    assert all({"iou_pooled", "dice_pooled"} <= set(v) for v in report["per_class"].values())
    assert 0.0 <= report["mIoU_pooled"] <= 1.0 and 0.0 <= report["mDice_pooled"] <= 1.0
    # which data set the numbers are on, and what the model was trained on
    assert report["datalist"] == wf.parser.get_parsed_content("datalist")
    run = json.loads((covid_run / "models" / "run.json").read_text())
    assert run["method"] == "supmix_sufd" and run["datalist"] == report["datalist"]
    wf.finalize()


@pytest.mark.integration
def test_evaluation_scores_the_written_predictions_against_the_stored_labels(tmp_path, covid_run, cache_dir):
    """Default ``eval_resolution: original``: the score is that of the label maps ``inferring`` writes (resized back
    to each slice's size) against the labels as stored, not of network-size predictions against shrunk labels."""
    from medsemiseg.metrics import compute_segmentation_report

    classes = ["background", "ground-glass", "consolidation", "pleural effusion"]
    scores = {}
    for res in ("original", "network"):
        out = tmp_path / res
        wf = workflow("covid", "evaluating", **TINY, output_dir=str(covid_run), cache_dir=cache_dir,
                      eval_resolution=res, eval_dir=str(out))
        wf.run()
        scores[res] = json.loads((out / "metrics.json").read_text())
        wf.finalize()
    pred_dir = tmp_path / "preds"
    wf = workflow("covid", "inferring", **TINY, output_dir=str(covid_run), cache_dir=cache_dir, prediction_dir=str(pred_dir))
    wf.run()
    datalist = Path(resolve_datalist(None, "covid", cache_dir, "1/8", 0))
    preds, labels = [], []
    for d in json.loads(datalist.read_text())["test"]:
        name = Path(d["image"]).name[: -len(".nii.gz")]
        preds.append(torch.as_tensor(np.asarray(nib.load(pred_dir / f"{name}_seg.nii.gz").dataobj)).long())
        labels.append(torch.as_tensor(np.asarray(nib.load(datalist.parent / d["label"]).dataobj)).long())
    assert preds[0].shape == labels[0].shape == (128, 128)  # the phantoms' own size; the network ran at 64 x 64
    expected = compute_segmentation_report(preds, labels, classes)
    assert scores["original"]["mIoU"] == pytest.approx(expected["mIoU"], abs=1e-6)
    for c in classes:
        a, b = scores["original"]["per_class"][c]["iou"], expected["per_class"][c]["iou"]
        assert (np.isnan(a) and np.isnan(b)) or a == pytest.approx(b, abs=1e-6), c
    with pytest.raises(BundleConfigError, match="eval_resolution must be"):
        eval_at_network_size("full")


@pytest.mark.integration
def test_inference_on_the_test_split_writes_label_maps_named_after_inputs(covid_run, cache_dir, caplog):
    wf = workflow("covid", "inferring", **TINY, output_dir=str(covid_run), cache_dir=cache_dir)
    with caplog.at_level("INFO", logger="medsemiseg.progress"):
        wf.run()
    datalist = resolve_datalist(None, "covid", cache_dir, "1/8", 0)
    test_images = [Path(d["image"]) for d in json.loads(Path(datalist).read_text())["test"]]
    progress = [r.getMessage() for r in caplog.records if r.name == "medsemiseg.progress"]
    assert progress[-1] == f"inferring: {len(test_images)}/{len(test_images)} inputs", progress
    for img in test_images:
        name = img.name[: -len(".nii.gz")]
        out = covid_run / "outputs" / f"{name}_seg.nii.gz"
        assert out.is_file(), f"no prediction for {img.name}"
        pred, src = nib.load(out), nib.load(Path(datalist).parent / img)
        assert pred.shape == src.shape[:2] and np.allclose(pred.affine, src.affine)
        assert set(np.unique(np.asarray(pred.dataobj))) <= {0, 1, 2, 3}


@pytest.mark.integration
def test_resume_continues_from_the_latest_checkpoint(tmp_path, cache_dir):
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supmix_sufd", "val_interval": 5}
    # an earlier, longer run's state in the same folder: the new run replaces it, so --resume cannot pick it up later
    (tmp_path / "models").mkdir()
    torch.save({"stale": torch.zeros(1)}, tmp_path / "models" / "checkpoint_epoch=7.pt")
    wf = workflow("covid", "training", **ov)
    wf.run()
    assert not (tmp_path / "models" / "checkpoint_epoch=7.pt").exists()
    first = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    wf = workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": True})
    checkpointer = wf.parser.get_parsed_content("train#checkpointer")
    trainer = wf.parser.get_parsed_content("train#trainer")
    teacher = wf.parser.get_parsed_content("train#method").checkpoint_objects()["teacher"]
    wf.run()
    assert checkpointer.loaded_from.endswith("checkpoint_epoch=1.pt")
    assert trainer.state.epoch == 2 and trainer.state.iteration == 2 * TINY["epoch_length"]
    assert teacher.num_updates == first["teacher"]["num_updates"] + TINY["epoch_length"]
    # n_saved (2) training states in the folder, as documented: the stale epoch-7 file went, the first run's stays
    assert sorted(p.name for p in (tmp_path / "models").glob("checkpoint*.pt")) == [
        "checkpoint_epoch=1.pt", "checkpoint_epoch=2.pt"]


@pytest.mark.parametrize("method", METHODS)
@pytest.mark.integration
def test_every_method_trains_through_the_bundle_by_override(method, tmp_path, cache_dir):
    from medsemiseg.methods import create_method

    wf = workflow("covid", "training", **TINY, method=method, output_dir=str(tmp_path), cache_dir=cache_dir,
                  val_interval=5)
    trainer = wf.parser.get_parsed_content("train#trainer")
    built = wf.parser.get_parsed_content("train#method")
    expected = type(create_method(method, wf.parser.get_parsed_content("network_def"), 4))
    assert type(built) is expected
    wf.run()
    assert trainer.state.iteration == TINY["epoch_length"]
    assert np.isfinite(float(trainer.state.output[0]["loss"]))
    assert (trainer.unlabeled_data_loader is None) == (method == "supervised")


@pytest.mark.integration
def test_training_with_worker_processes(tmp_path, cache_dir):
    """The paper grids load data in worker processes (``num_workers: 4``): the bundle trains that way, and every
    dataset pickles, which worker processes started by *spawn* (macOS, Windows) need."""
    import pickle

    wf = workflow("covid", "training", **TINY, num_workers=2, output_dir=str(tmp_path), cache_dir=cache_dir,
                  val_interval=1)
    for key in ("train#dataset", "train#unlabeled_dataset", "validate#dataset"):
        ds = wf.parser.get_parsed_content(key)
        assert len(pickle.loads(pickle.dumps(ds))) == len(ds)
    assert wf.parser.get_parsed_content("train#dataloader").num_workers == 2
    wf.run()
    trainer = wf.parser.get_parsed_content("train#trainer")
    assert trainer.state.iteration == TINY["epoch_length"]
    assert (tmp_path / "models" / "model.pt").is_file()


@pytest.mark.parametrize("sampling", ["epoch", "pass"])
@pytest.mark.integration
def test_training_streams_draw_full_batches_unless_told_otherwise(sampling, tmp_path, cache_dir):
    """With ``train_sampling: epoch`` (the default) one pass of each training loader is one epoch of full batches;
    ``pass`` is the earlier one-pass-at-a-time order, whose last labelled batch is partial."""
    import math

    wf = workflow("covid", "training", **{**TINY, "batch_size": 3, "epoch_length": 7}, train_sampling=sampling,
                  output_dir=str(tmp_path), cache_dir=cache_dir)
    labelled = wf.parser.get_parsed_content("train#dataloader")
    unlabelled = wf.parser.get_parsed_content("train#unlabeled_dataloader")
    n_l, n_u = len(labelled.dataset), len(unlabelled.dataset)
    assert n_l % 3 and n_l < 7 * 3 < n_u * 3  # the synthetic 1/8 split: a partial last batch under "pass"
    sizes = [int(b["image"].shape[0]) for b in labelled]
    if sampling == "epoch":
        assert sizes == [3] * 7 and len(unlabelled) == 7
    else:
        assert len(sizes) == math.ceil(n_l / 3) and sizes[-1] == n_l % 3 and len(unlabelled) == n_u // 2


@pytest.mark.integration
def test_loader_throughput_script_reports_the_streams_as_the_trainer_draws_them(cache_dir, capsys):
    """scripts/loader_throughput.py (docs/notes/2026-11-26-h100-leases.md quotes it): batch sizes and loader starts
    per stream."""
    import importlib.util

    spec = importlib.util.spec_from_file_location("loader_throughput", REPO / "scripts" / "loader_throughput.py")
    script = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(script)
    args = ["--image-size", "32", "--batch-size", "3", "--unlabeled-batch-size", "3", "--num-workers", "0",
            "--epoch-length", "7", "--steps", "10", "--warmup", "2", "--set", f"cache_dir={cache_dir}"]
    assert script.main(args + ["--set", "train_sampling=epoch"]) == 0
    out = capsys.readouterr().out
    assert "train_sampling=epoch" in out and "0 of 10 batches smaller than the batch size" in out
    assert script.main(args + ["--set", "train_sampling=pass"]) == 0
    out = capsys.readouterr().out
    labelled = next(line for line in out.splitlines() if line.strip().startswith("labelled:"))
    assert "0 of 10 batches smaller" not in labelled  # the old order's partial labelled batches


@pytest.mark.integration
def test_network_override_deeplabv3plus(tmp_path, cache_dir):
    from medsemiseg.networks import DeepLabV3Plus

    wf = workflow("chase", "training", **{**TINY, "epoch_length": 1}, method="supervised",
                  network_name="deeplabv3plus", output_dir=str(tmp_path), cache_dir=cache_dir, val_interval=5)
    assert isinstance(wf.parser.get_parsed_content("network_def"), DeepLabV3Plus)
    wf.run()
    assert (tmp_path / "models" / "checkpoint_epoch=1.pt").is_file()


@pytest.mark.integration
def test_inference_inputs_from_a_prepared_pool_folder_are_its_test_split(cache_dir):
    """Training accepts the synthetic cache folder (``pool.json`` + per-fraction datalists); inference must too."""
    datalist = Path(resolve_datalist(None, "covid", cache_dir, "1/8", 0))
    folder = datalist.parent
    assert (folder / "pool.json").is_file()
    items = inference_items(str(folder), "covid", cache_dir)
    test = json.loads(datalist.read_text())["test"]
    assert sorted(it["name"] for it in items) == sorted(Path(d["image"]).name[: -len(".nii.gz")] for d in test)


@pytest.mark.integration
def test_fundus_inference_writes_nifti_and_upright_png(tmp_path, cache_dir):
    from PIL import Image

    save_random_model("chase", tmp_path / "models")
    datalist = resolve_datalist(None, "chase", cache_dir, "1/8", 0)
    photo = Path(datalist).parent / json.loads(Path(datalist).read_text())["test"][0]["image"]
    wf = workflow("chase", "inferring", image_size=[64, 64], output_dir=str(tmp_path), cache_dir=cache_dir,
                  dataset_dir=str(photo))
    wf.run()
    stem = photo.name.rsplit(".", 1)[0]
    png = np.asarray(Image.open(tmp_path / "outputs" / f"{stem}_seg.png"))
    rgb = np.asarray(Image.open(photo))
    assert png.shape == rgb.shape[:2]  # rows x columns, like the photograph
    assert set(np.unique(png)) <= {0, 255}
    nii = nib.load(tmp_path / "outputs" / f"{stem}_seg.nii.gz")
    assert nii.shape == (rgb.shape[1], rgb.shape[0])  # MONAI (X, Y)
    assert np.array_equal(np.asarray(nii.dataobj).T * 255, png)


@pytest.mark.integration
def test_inference_runs_slice_wise_on_a_dicom_series_and_a_3d_nifti(tmp_path, cache_dir):
    save_random_model("covid", tmp_path / "models")
    raw = Path(resolve_datalist(None, "covid", cache_dir, "1/8", 0)).parent / "raw"
    series = next(p for p in (raw / "dicom").iterdir() if p.is_dir())
    inputs = tmp_path / "inputs"
    inputs.mkdir()
    (inputs / series.name).symlink_to(series, target_is_directory=True)
    (inputs / "val_im.nii.gz").symlink_to(raw / "val_im.nii.gz")
    wf = workflow("covid", "inferring", image_size=[64, 64], output_dir=str(tmp_path), cache_dir=cache_dir,
                  dataset_dir=str(inputs))
    writer = wf.parser.get_parsed_content("infer#handlers")[1]
    wf.run()
    from medsemiseg.data.io import read_image

    for name, src in ((series.name, series), ("val_im", raw / "val_im.nii.gz")):
        out = tmp_path / "outputs" / f"{name}_seg.nii.gz"
        assert str(out) in writer.written
        vol = read_image(src)
        assert nib.load(out).shape == tuple(vol.shape[1:]), name
        assert np.allclose(nib.load(out).affine, np.asarray(vol.affine), atol=1e-3)


@pytest.mark.integration
def test_resume_keeps_the_best_model_record(tmp_path, cache_dir, caplog):
    """A resumed run compares with the best validation metric of the run so far, not with nothing: here the
    recorded best is made unbeatable, so epoch 2's validation must leave model.pt alone."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "val_interval": 1}
    workflow("covid", "training", **ov).run()
    models = tmp_path / "models"
    ckpt = models / "checkpoint_epoch=1.pt"
    state = torch.load(ckpt, weights_only=True)
    assert state["best_metric"]["best_metric_epoch"] == 1
    (score, name), = state["best_metric"]["key_metric_checkpoint"]["_saved"]  # the saver's record of model.pt
    assert score == pytest.approx(state["best_metric"]["best_metric"])
    best_before = (models / "model.pt").read_bytes()
    state["best_metric"]["best_metric"] = 2.0
    state["best_metric"]["key_metric_checkpoint"]["_saved"] = [(2.0, name)]
    torch.save(state, ckpt)

    wf = workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": True})
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    wf.run()
    assert evaluator.state.best_metric == 2.0 and evaluator.state.best_metric_epoch == 1
    assert (models / "model.pt").read_bytes() == best_before

    # a checkpoint written before the record existed still resumes; the record restarts (and says so)
    state = torch.load(models / "checkpoint_epoch=2.pt", weights_only=True)
    del state["best_metric"]
    torch.save(state, models / "checkpoint_epoch=2.pt")
    with caplog.at_level("WARNING"):
        workflow("covid", "training", **{**ov, "max_epochs": 3, "resume": True}).run()
    assert "holds no best-metric record" in caplog.text
    assert (models / "checkpoint_epoch=3.pt").is_file()


@pytest.mark.integration
def test_full_label_upper_bound_without_unlabelled_images(tmp_path, cache_dir):
    """CHASE_DB1 has no extra unlabelled images: at labeled_fraction 'full' the unlabelled split is empty.
    ``supervised`` (the upper bound) must train; a semi-supervised method must say why it cannot."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "labeled_fraction": "full", "val_interval": 5}
    wf = workflow("chase", "training", **ov, method="supervised")
    assert len(wf.parser.get_parsed_content("train#unlabeled_dataset")) == 0
    wf.run()
    assert checkpoint_files(tmp_path / "models")
    with pytest.raises(Exception) as err:  # MONAI wraps it in "Failed to evaluate ConfigExpression"
        workflow("chase", "training", **ov, method="fixmatch").parser.get_parsed_content("train#trainer")
    chain = [err.value]
    while chain[-1].__cause__ is not None or chain[-1].__context__ is not None:
        chain.append(chain[-1].__cause__ or chain[-1].__context__)
    assert any(isinstance(e, BundleConfigError) and "'unlabeled' split is empty" in str(e) for e in chain)


# ------------------------------------------------------------------- inference inputs and outputs (audit fixes)


def _pydicom_file(rel: str) -> Path:
    from pydicom.data import get_testdata_file

    name = Path(rel).name
    found = get_testdata_file(name) if "/" not in rel else None
    if found is None:
        found = str(Path(get_testdata_file("CT_small.dcm")).parent / rel)
    if not Path(found).exists():
        pytest.skip(f"{rel} not installed (pydicom-data)")
    return Path(found)


def _tiny_nifti(path: Path, value: float = 0.0) -> Path:
    nib.save(nib.Nifti1Image(np.full((8, 6), value, np.float32), np.eye(4)), str(path))
    return path


def _tiny_png(path: Path, rgb: bool = False) -> Path:
    from PIL import Image

    Image.fromarray(np.zeros((6, 8, 3) if rgb else (6, 8), np.uint8)).save(path)
    return path


def _write_fake_predictions(writer, items) -> None:
    for it in items:
        writer._write_item({**it, "pred": torch.zeros((1, *[int(s) for s in it["spatial_shape"]]))})


def test_inference_output_names_never_collide_and_the_log_names_each_source(tmp_path, caplog):
    import shutil

    inputs = tmp_path / "coll"
    shutil.copytree(_pydicom_file("dicomdirtests/98892001/CT5N"), inputs / "a")  # series folder "a"
    _tiny_nifti(inputs / "a.nii")
    _tiny_nifti(inputs / "a.nii.gz")
    _tiny_png(inputs / "a.png")
    _tiny_nifti(inputs / "a_1.nii.gz")  # a real input whose name a naive "_1" suffix would take
    items = inference_items(str(inputs), "covid", tmp_path)
    by_source = {it["source"]: it["name"] for it in items}
    assert len(by_source) == 5 and len(set(by_source.values())) == 5
    assert by_source[str(inputs / "a_1.nii.gz")] == "a_1"  # the real a_1 keeps its name
    assert by_source[str(inputs / "a")] == "a"
    writer = PredictionWriter(tmp_path / "out")
    with caplog.at_level("INFO", logger="medsemiseg.bundle"):
        _write_fake_predictions(writer, items)
    assert len(writer.written) == 5 and len(set(writer.written)) == 5
    assert len(list((tmp_path / "out").glob("*_seg.nii.gz"))) == 5
    for source, name in by_source.items():
        out = tmp_path / "out" / f"{name}_seg.nii.gz"
        assert writer.sources[str(out)] == source
        assert f"wrote {out} (from {source})" in caplog.text


def test_inference_folder_with_loose_dicom_files_groups_them_by_series(tmp_path):
    import shutil

    folder = tmp_path / "mixed"
    folder.mkdir()
    for rel in ("CT_small.dcm", "MR_small.dcm"):  # unrelated single files: each its own 2D input
        shutil.copy(_pydicom_file(rel), folder / rel)
    for f in _pydicom_file("dicomdirtests/98892001/CT5N").iterdir():  # one 5-slice series, loose at the top
        shutil.copy(f, folder / f.name)
    _tiny_png(folder / "other_scan.png")
    shutil.copytree(_pydicom_file("dicomdirtests/77654033/CT2"), folder / "sub")  # a series sub-folder
    (folder / "notes.txt").write_text("skipped")
    items = inference_items(str(folder), "covid", tmp_path)
    counts: dict[str, int] = {}
    for it in items:
        counts[it["name"]] = it["num_slices"]
    assert counts == {"CT_small": 1, "MR_small": 1, "mixed": 5, "other_scan": 1, "sub": 4}
    # three unrelated single DICOM files (three SeriesInstanceUIDs): three inputs, no "mixes 3 series" refusal
    singles = tmp_path / "singles"
    singles.mkdir()
    for rel in ("CT_small.dcm", "MR_small.dcm", "dicomdirtests/77654033/CR1/6154"):
        shutil.copy(_pydicom_file(rel), singles / Path(rel).name)
    names = sorted(it["name"] for it in inference_items(str(singles), "covid", tmp_path))
    assert names == ["6154", "CT_small", "MR_small"]
    # a folder holding exactly one series and nothing else is one input, as before
    pure = tmp_path / "pure"
    shutil.copytree(_pydicom_file("dicomdirtests/98892001/CT5N"), pure)
    assert bundle_inputs._inputs_in_folder(pure) == [pure]
    items = inference_items(str(pure), "covid", tmp_path)
    assert {it["name"] for it in items} == {"pure"} and len(items) == 5


def test_inference_holds_one_volume_at_a_time_and_reads_each_input_at_most_twice(tmp_path, monkeypatch):
    from medsemiseg.data.io import read_image
    from medsemiseg.data.slices import LazySlice, LoadSliced, iter_slices

    folder = tmp_path / "studies"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for i, z in enumerate((3, 5, 4)):
        affine = np.diag([0.7, 0.7, 2.5, 1.0])
        affine[:3, 3] = (i, -i, 10 * i)
        nib.save(nib.Nifti1Image(rng.normal(size=(6, 7, z)).astype(np.float32), affine), str(folder / f"ct{i}.nii.gz"))
    reads: list[str] = []
    real_read = bundle_inputs._read_input

    def counting_read(src, task, in_channels):
        reads.append(Path(str(src)).name)
        return real_read(src, task, in_channels)

    monkeypatch.setattr(bundle_inputs, "_read_input", counting_read)
    items = inference_items(str(folder), "covid", tmp_path)
    assert len(items) == 12 and sorted(reads) == ["ct0.nii.gz", "ct1.nii.gz", "ct2.nii.gz"]  # listed: each read once
    assert all(isinstance(it["image"], LazySlice) for it in items)  # ... and no slice kept in the items
    first = items[0]["source"]
    assert LazySlice._last is not None and LazySlice._last[0] == first  # only the first input's volume is kept
    reads.clear()
    load = LoadSliced("image")
    for it in items:  # the data loader's order: input by input
        got = load(dict(it))["image"]
        want = list(iter_slices(read_image(it["source"])))[it["slice"]]
        assert torch.equal(got.as_tensor(), want.as_tensor())
        np.testing.assert_allclose(np.asarray(got.affine), np.asarray(want.affine))
        assert LazySlice._last[0] == it["source"]  # one volume in memory: the current input's
    assert sorted(reads) == sorted({Path(it["source"]).name for it in items} - {Path(first).name})  # not the first
    writer = PredictionWriter(tmp_path / "out")
    writer._check_complete(None)
    assert LazySlice._last is None  # the end of the run lets the last volume go


def test_inference_on_unevenly_spaced_series_warns_and_keeps_the_mean_step(tmp_path, caplog):
    ct2 = _pydicom_file("dicomdirtests/77654033/CT2")  # z = -99.48, 103.02, 104.27, 105.52
    items = inference_items(str(ct2), "covid", tmp_path)
    assert len(items) == 4
    writer = PredictionWriter(tmp_path / "out")
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        _write_fake_predictions(writer, items)
    out = nib.load(tmp_path / "out" / "CT2_seg.nii.gz")
    assert out.shape == (16, 16, 4)
    assert out.affine[2, 2] == pytest.approx((105.52 + 99.48) / 3, abs=1e-2)  # the mean step
    assert "unevenly spaced" in caplog.text and "mean step" in caplog.text and "CT2_seg.nii.gz" in caplog.text
    # per slice the item carries the slice's true position (what a 2D writer would use)
    np.testing.assert_allclose([float(np.asarray(it["image"].load().affine)[2, 3]) for it in items],
                               [-99.48, 103.02, 104.27, 105.52], atol=1e-3)


def test_inference_on_a_dicom_without_orientation_writes_a_diagonal_affine(tmp_path):
    cr = _pydicom_file("dicomdirtests/77654033/CR1/6154")  # CR: no ImageOrientationPatient, ImagerPixelSpacing 0.1
    items = inference_items(str(cr), "covid", tmp_path)
    writer = PredictionWriter(tmp_path / "out")
    _write_fake_predictions(writer, items)
    np.testing.assert_allclose(nib.load(tmp_path / "out" / "6154_seg.nii.gz").affine, np.diag([0.1, 0.1, 1, 1]))


@pytest.mark.integration
def test_inference_channel_mismatch_names_the_file_and_the_fix(tmp_path):
    from medsemiseg.data.io import DataReadError

    rgb = _tiny_png(tmp_path / "photo.png", rgb=True)
    with pytest.raises(DataReadError, match=r"photo.png: .*3 channels.*expects 1.*chase") as err:
        inference_items(str(rgb), "covid", tmp_path, in_channels=1)
    assert "grey" in str(err.value)
    ct = _pydicom_file("CT_small.dcm")
    with pytest.raises(DataReadError, match=r"CT_small.dcm: .*1 channel.*expects 3.*covid"):
        inference_items(str(ct), "chase", tmp_path, in_channels=3)
    grey = _tiny_png(tmp_path / "grey.png")  # a grey picture for the RGB network: repeated to 3 channels
    (item,) = inference_items(str(grey), "chase", tmp_path, in_channels=3)
    assert tuple(item["image"].shape) == (3, 8, 6) and bool(torch.all(item["image"] == item["image"][:1]))
    # the bundles pass their network's in_channels: the whole chase workflow runs on the grey picture
    save_random_model("chase", tmp_path / "models")
    wf = workflow("chase", "inferring", image_size=[64, 64], output_dir=str(tmp_path), dataset_dir=str(grey))
    wf.run()
    assert (tmp_path / "outputs" / "grey_seg.png").is_file()
    with pytest.raises(Exception) as err:
        workflow("covid", "inferring", image_size=[64, 64], output_dir=str(tmp_path),
                 dataset_dir=str(rgb)).parser.get_parsed_content("infer#dataset")
    assert "expects 1" in _error_chain_text(err.value)


def _error_chain_text(e: BaseException) -> str:
    seen = [e]
    while seen[-1].__cause__ is not None or seen[-1].__context__ is not None:
        seen.append(seen[-1].__cause__ or seen[-1].__context__)
    return "\n".join(str(x) for x in seen)


@pytest.mark.integration
def test_missing_model_says_to_train_first_or_pass_ckpt_path(tmp_path):
    grey = _tiny_png(tmp_path / "grey.png")
    wf = workflow("covid", "inferring", image_size=[64, 64], output_dir=str(tmp_path), dataset_dir=str(grey))
    with pytest.raises(Exception) as err:
        wf.run()
    text = _error_chain_text(err.value)
    assert str(tmp_path / "models" / "model.pt") in text
    assert "python -m monai.bundle run training --config_file" in text and "covid" in text
    assert "--ckpt_path" in text and f"--output_dir {tmp_path}" in text
    with pytest.raises(Exception) as err:  # evaluating loads the same checkpoint through its own handler
        workflow("chase", "evaluating", output_dir=str(tmp_path)).parser.get_parsed_content("evaluate#handlers#0")
    assert "run training --config_file" in _error_chain_text(err.value) and "chase" in _error_chain_text(err.value)


def test_inference_warns_on_non_ct_dicom_and_refuses_rtdose(tmp_path, caplog):
    from medsemiseg.data.io import DataReadError

    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        inference_items(str(_pydicom_file("CT_small.dcm")), "covid", tmp_path)
        assert not caplog.records
        inference_items(str(_pydicom_file("MR_small.dcm")), "covid", tmp_path)
    assert "MR_small.dcm" in caplog.text and "modality MR" in caplog.text and "CT" in caplog.text
    with pytest.raises(DataReadError, match="rtdose.dcm: .*RTDOSE.*not an image"):
        inference_items(str(_pydicom_file("rtdose.dcm")), "covid", tmp_path)


# ------------------------------------------------------------------------------------------ settings robustness


def _messages(exc: BaseException) -> list[str]:
    """Every message of an exception chain (MONAI's config parser wraps ours in its own errors)."""
    out: list[str] = []
    while exc is not None:
        out.append(str(exc))
        exc = exc.__cause__ or exc.__context__
    return out


@pytest.mark.parametrize("text, value", [("false", False), ("False", False), ("0", False), ("no", False),
                                         ("true", True), ("True", True), ("1", True), (True, True), (0, False)])
def test_switches_accept_command_line_spellings(text, value):
    assert as_bool(text, "amp") is value


@pytest.mark.integration
def test_switch_given_as_false_string_is_false_in_the_bundle(cache_dir, tmp_path):
    """MONAI's CLI keeps `--amp false` as the string 'false', which is truthy: the bundle must read it as False."""
    wf = workflow("covid", "training", **TINY, amp="false", cache_dir=cache_dir, output_dir=str(tmp_path))
    assert wf.parser.get_parsed_content("train#trainer").amp is False
    wf = workflow("chase", "inferring", **TINY, write_png="false", cache_dir=cache_dir)
    assert wf.parser.get_parsed_content("infer#handlers#1").png is False
    with pytest.raises(BundleConfigError, match=r"amp must be true or false, got 'maybe'"):
        as_bool("maybe", "amp")


def test_cuda_device_on_a_machine_without_one_names_the_setting(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(BundleConfigError, match=r"device 'cuda:0' asks for a CUDA GPU.*--device cpu"):
        check_device("cuda:0")
    assert check_device("cpu") == torch.device("cpu")


def _lrs_during(wf) -> list[float]:
    from ignite.engine import Events

    trainer = wf.parser.get_parsed_content("train#trainer")
    opt = wf.parser.get_parsed_content("train#optimizer")
    seen: list[float] = []
    trainer.add_event_handler(Events.ITERATION_STARTED, lambda e: seen.append(opt.param_groups[0]["lr"]))
    return seen


@pytest.mark.integration
def test_resume_extending_a_finished_run_trains_at_a_real_learning_rate(tmp_path, cache_dir):
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "epoch_length": 3}
    workflow("covid", "training", **ov).run()
    wf = workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": "true"})
    seen = _lrs_during(wf)
    wf.run()
    # the checkpoint's schedule ended at 3 iterations with lr 0; this run's is 6 long: lr = 1e-3 * (1 - t/6) ** 0.9
    assert seen == pytest.approx([1e-3 * (1 - t / 6) ** 0.9 for t in (3, 4, 5)], rel=1e-6)


@pytest.mark.integration
def test_resume_with_another_method_or_network_is_refused_naming_the_difference(tmp_path, cache_dir):
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supmix_sufd", "val_interval": 5}
    workflow("covid", "training", **ov).run()
    for change, text in (({"method": "supervised"}, "method: checkpoint 'supmix_sufd', this run 'supervised'"),
                         ({"network_name": "deeplabv3plus"}, "network_name: checkpoint 'unet', this run 'deeplabv3plus'")):
        wf = workflow("covid", "training", **{**ov, **change, "max_epochs": 2, "resume": True})
        with pytest.raises(Exception) as info:
            wf.parser.get_parsed_content("train#trainer")
        chain = _messages(info.value)
        assert any(text in m and "another --output_dir" in m for m in chain), chain


@pytest.mark.integration
def test_resume_with_another_train_sampling_warns(tmp_path, cache_dir, caplog):
    """Resuming with other loaders than the checkpoint's is allowed (weights and optimiser do not depend on them) but
    said; a checkpoint from before ``train_sampling`` existed counts as ``pass``, which it drew with."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "val_interval": 5,
          "train_sampling": "pass"}
    workflow("covid", "training", **ov).run()
    with caplog.at_level("WARNING"):
        workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": True}).run()
    assert "train_sampling" not in caplog.text  # the same sampling: nothing to say
    ckpt = tmp_path / "models" / "checkpoint_epoch=2.pt"
    state = torch.load(ckpt, weights_only=True)
    record_key = next(k for k, v in state.items() if isinstance(v, dict) and "epoch_length" in v)
    del state[record_key]["train_sampling"]  # as written before the key existed
    torch.save(state, ckpt)
    caplog.clear()
    with caplog.at_level("WARNING"):
        workflow("covid", "training", **{**ov, "train_sampling": "epoch", "max_epochs": 3, "resume": True}).run()
    assert "was trained with train_sampling 'pass'; this run draws its batches with 'epoch'" in caplog.text
    assert "--train_sampling pass" in caplog.text


@pytest.mark.integration
def test_validation_runs_after_the_last_epoch_so_model_pt_exists(tmp_path, cache_dir):
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "max_epochs": 2,
          "val_interval": 5}
    wf = workflow("covid", "training", **ov)
    evaluator = wf.parser.get_parsed_content("validate#evaluator")
    wf.run()
    assert evaluator.state.epoch == 2  # validated once, after the last epoch (MONAI's handler: never)
    assert (tmp_path / "models" / "model.pt").is_file()
    with pytest.raises(Exception) as info:
        workflow("covid", "training", **{**ov, "val_interval": 0}).parser.get_parsed_content("train#trainer")
    chain = _messages(info.value)
    assert any("val_interval 0: must be a whole number >= 1" in m for m in chain), chain  # check_settings


@pytest.mark.integration
def test_two_trainings_in_one_output_dir_are_refused(tmp_path, cache_dir):
    import socket

    models = tmp_path / "models"
    models.mkdir()
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        (models / ".training.lock").write_text(json.dumps({"host": socket.gethostname(), "pid": other.pid}))
        wf = workflow("covid", "training", **TINY, output_dir=str(tmp_path), cache_dir=cache_dir, method="supervised")
        with pytest.raises(Exception) as info:
            wf.parser.get_parsed_content("train#trainer")
        chain = _messages(info.value)
        assert any(f"another training (pid {other.pid} on host" in m and "--output_dir" in m for m in chain), chain
    finally:
        other.kill()
        other.wait()
    # the holder is gone: its lock is taken over, and the finished run removes its own
    wf = workflow("covid", "training", **TINY, output_dir=str(tmp_path), cache_dir=cache_dir, method="supervised")
    wf.run()
    assert not (models / ".training.lock").exists()


@pytest.mark.integration
def test_resume_keeps_n_saved_states_across_runs(tmp_path, cache_dir):
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised",
          "train#checkpointer#n_saved": 3, "max_epochs": 2}
    workflow("covid", "training", **ov).run()
    workflow("covid", "training", **{**ov, "max_epochs": 4, "resume": True}).run()
    names = sorted(p.name for p in (tmp_path / "models").glob("checkpoint*.pt"))
    assert names == ["checkpoint_epoch=2.pt", "checkpoint_epoch=3.pt", "checkpoint_epoch=4.pt"]


def test_covid_inference_on_a_picture_warns_it_is_not_hounsfield_units(tmp_path, caplog):
    _tiny_png(tmp_path / "slice.png")
    _tiny_nifti(tmp_path / "ct.nii.gz")
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        inference_items(str(tmp_path / "slice.png"), "covid", tmp_path)
    assert "slice.png" in caplog.text and "not Hounsfield units" in caplog.text and "DICOM or NIfTI" in caplog.text
    caplog.clear()
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        inference_items(str(tmp_path / "ct.nii.gz"), "covid", tmp_path)
        inference_items(str(tmp_path / "slice.png"), "chase", tmp_path)
    assert "Hounsfield" not in caplog.text


@pytest.mark.integration
def test_fundus_evaluation_inside_the_field_of_view(tmp_path, cache_dir):
    """``eval_fov true``: IoU counts only pixels inside each photograph's field of view (derived from the image),
    checked against a by-hand count on the label maps ``inferring`` writes."""
    from medsemiseg.data.io import read_image, read_mask
    from medsemiseg.transforms.fov import fundus_fov

    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised"}
    workflow("chase", "training", **ov).run()
    reports = {}
    for fov in (False, True):
        wf = workflow("chase", "evaluating", **ov, eval_fov=fov, eval_dir=str(tmp_path / f"eval_{fov}"))
        wf.run()
        reports[fov] = json.loads((tmp_path / f"eval_{fov}" / "metrics.json").read_text())
        wf.finalize()
    workflow("chase", "inferring", **ov).run()
    datalist = Path(resolve_datalist(None, "chase", cache_dir, "1/8", 0))
    per_class: dict[int, list[float]] = {0: [], 1: []}
    whole: dict[int, list[float]] = {0: [], 1: []}
    for d in json.loads(datalist.read_text())["test"]:
        image = read_image(datalist.parent / d["image"])
        fov = fundus_fov(image)
        assert 0.3 < fov.mean() < 0.95  # a disc inside black corners
        label = read_mask(datalist.parent / d["label"], num_classes=2)[0].numpy()
        name = Path(d["image"]).name.rsplit(".", 1)[0]
        pred = np.asarray(nib.load(tmp_path / "outputs" / f"{name}_seg.nii.gz").dataobj)
        for c in (0, 1):
            for where, out in ((fov, per_class), (np.ones_like(fov), whole)):
                union = (((pred == c) | (label == c)) & where).sum()
                if union:
                    out[c].append((((pred == c) & (label == c)) & where).sum() / union)
    for c, name in ((0, "background"), (1, "vessel")):
        assert reports[True]["per_class"][name]["iou"] == pytest.approx(np.mean(per_class[c]), abs=1e-5)
        assert reports[False]["per_class"][name]["iou"] == pytest.approx(np.mean(whole[c]), abs=1e-5)


# ------------------------------------------------------------------------------- settings checked up front


def _bundle_argv(*overrides: str) -> list[str]:
    import monai.bundle

    main = str(Path(monai.bundle.__file__).parent / "__main__.py")
    return [main, "run", "training", "--config_file", "bundles/covid/train.json", *overrides]


@pytest.mark.integration
def test_a_misspelt_override_stops_the_run_naming_the_closest_key(monkeypatch):
    # MONAI adds an unknown --key to the config and runs on: --labelled_fraction 1/4 trained at the default 1/8
    monkeypatch.chdir(REPO)
    check = check_cli_overrides
    check(_bundle_argv("--max_epochs", "1", "--intensity#window_center", "-600", "--train#checkpointer#n_saved", "3",
                       "--labeled_fraction=1/4", "--meta_file", "bundles/covid/configs/metadata.json"))
    with pytest.raises(BundleConfigError, match=r"--labelled_fraction: .*did you mean --labeled_fraction"):
        check(_bundle_argv("--max_epochs", "1", "--labelled_fraction", "1/4"))
    with pytest.raises(BundleConfigError, match=r"--max_epoch: .*did you mean --max_epochs"):
        check(_bundle_argv("--max_epoch=1"))
    with pytest.raises(BundleConfigError, match=r"--intensty#window_center: .*did you mean --intensity[ ?]"):
        check(_bundle_argv("--intensty#window_center", "-600"))
    # a new argument of a component is its constructor's to check (CTWindowd(window_centre=...) is a TypeError)
    check(_bundle_argv("--intensity#window_centre", "-600"))
    check(["pytest", "--labelled_fraction", "1/4"])  # not MONAI's bundle CLI (MONAI Label, tests): nothing to check
    # and through the real command line: it stops before anything is built
    env = dict(os.environ, PYTHONWARNINGS="ignore")
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", "run", "training", "--config_file",
                           "bundles/covid/train.json", "--max_epoch", "1"], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=300)
    assert proc.returncode != 0 and "did you mean --max_epochs" in proc.stderr.strip().splitlines()[-1]


@pytest.mark.parametrize("value", [100, [100], [64, 0], [64.5, 64], "64", [True, 64]])
def test_image_size_must_be_two_whole_numbers(value):
    with pytest.raises(BundleConfigError, match=r"image_size=.*--image_size \"\["):
        check_image_size(value)
    assert check_image_size((64, 96)) == [64, 96]


def test_default_fraction_is_the_prepared_one_and_channels_must_fit(tmp_path, caplog):
    # a user who prepared with --labeled-fraction full used to train at the bundle's 1/8 unless they repeated it
    prep = _prepared_pictures(tmp_path, labeled_fraction="full")
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        path = resolve_datalist(prep, "chase", tmp_path / "cache", None, 0)
    dl = json.loads(Path(path).read_text())
    assert len(dl["labeled"]) == 4 and not dl["unlabeled"] and "prepared with" not in caplog.text
    assert dl["meta"]["labeled_fraction"] == "full"  # was "1", which reads back as a count of one image
    assert effective_fraction(None, None) == "1/8" and effective_fraction(prep, "1/4") == "1/4"
    # grey pictures given to the RGB bundle: refused up front, naming the bundle to use (was a crash mid-training)
    with pytest.raises(BundleConfigError, match=r"grey \(CT\) images \(meta.in_channels 1\).*bundles/covid"):
        resolve_datalist(prep, "chase", tmp_path / "cache", None, 0, in_channels=3)


@pytest.mark.integration
def test_supervised_training_builds_no_unlabelled_dataset(cache_dir):
    wf = workflow("covid", "training", **TINY, method="supervised", cache_dir=cache_dir)
    assert len(wf.parser.get_parsed_content("train#unlabeled_dataset")) == 0
    wf = workflow("covid", "training", **TINY, method="fixmatch", cache_dir=cache_dir)
    assert len(wf.parser.get_parsed_content("train#unlabeled_dataset")) > 0


def test_evaluating_or_inferring_other_data_than_the_model_was_trained_on_is_warned(tmp_path, caplog):
    models = tmp_path / "models"
    models.mkdir()
    (models / "run.json").write_text(json.dumps({"method": "supmix_sufd", "dataset_dir": str(tmp_path / "my_ct")}))
    ckpt = models / "model.pt"
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        check_trained_on(ckpt, None, "evaluating")  # forgot --dataset_dir: the synthetic phantoms
    assert "trained on " + str(tmp_path / "my_ct") in caplog.text and "built-in synthetic" in caplog.text
    assert f"--dataset_dir {tmp_path / 'my_ct'}" in caplog.text
    for args in ((str(tmp_path / "my_ct"), "evaluating"), (str(tmp_path / "new_scan.nii.gz"), "inferring")):
        caplog.clear()
        with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
            check_trained_on(ckpt, *args)
        assert caplog.text == ""
    check_trained_on(tmp_path / "elsewhere" / "model.pt", None)  # no run.json: nothing to compare


def test_inference_folder_skips_files_named_like_masks(tmp_path, caplog):
    # a raw CHASE_DB1 folder: the annotation PNGs next to the photographs used to be segmented too
    for name in ("Image_01L.jpg", "Image_01R.jpg"):
        _tiny_png(tmp_path / name.replace(".jpg", ".png"), rgb=True)
    for name in ("Image_01L_1stHO.png", "Image_01L_2ndHO.png", "Image_01R_1stHO.png", "case_mask.nii.gz"):
        _tiny_png(tmp_path / name) if name.endswith(".png") else _tiny_nifti(tmp_path / name)
    with caplog.at_level("WARNING", logger="medsemiseg.bundle"):
        inputs = bundle_inputs._inputs_in_folder(tmp_path)
    assert [p.name for p in inputs] == ["Image_01L.png", "Image_01R.png"]
    assert "skipped 4 file(s) named like label masks" in caplog.text


@pytest.mark.parametrize("method, sampling", [("supervised", "pass"), ("supmix_sufd", "pass"),
                                              ("supmix_sufd", "epoch")])
@pytest.mark.integration
def test_resume_after_a_kill_reproduces_the_uninterrupted_run(method, sampling, tmp_path, cache_dir):
    """A run stopped after its epoch-1 checkpoint and resumed ends bit-identical to the uninterrupted run: the
    checkpoint holds the RNGs, the random transforms' states and where the labelled / unlabelled passes stand.
    With ``train_sampling: pass``, epoch_length 3 with batches of 2 ends epochs mid-pass for both streams (the
    unlabelled pass is longer than an epoch); with ``epoch`` (the default) a pass is an epoch. Each workflow is built
    afresh and its ``training`` list calls ``set_determinism`` again, as a new process does; a fresh process state
    is forced in between too."""
    import random

    ov = {**TINY, "cache_dir": cache_dir, "method": method, "epoch_length": 3, "val_interval": 1,
          "train_sampling": sampling}
    workflow("covid", "training", **{**ov, "output_dir": str(tmp_path / "U"), "max_epochs": 3}).run()
    killed = workflow("covid", "training", **{**ov, "output_dir": str(tmp_path / "I"), "max_epochs": 3})
    from ignite.engine import Events

    # stopped once epoch 1 is saved (same max_epochs, hence the same learning-rate schedule, as the killed run)
    killed.parser.get_parsed_content("train#trainer").add_event_handler(Events.EPOCH_COMPLETED, lambda e: e.terminate())
    killed.run()
    assert sorted(p.name for p in (tmp_path / "I" / "models").glob("checkpoint*.pt")) == ["checkpoint_epoch=1.pt"]
    torch.manual_seed(123), np.random.seed(123), random.seed(123)  # whatever the killed process left behind
    wf = workflow("covid", "training", **{**ov, "output_dir": str(tmp_path / "I"), "max_epochs": 3, "resume": True})
    if method != "supervised":
        trainer = wf.parser.get_parsed_content("train#trainer")
        passes_span_epochs = len(trainer.unlabeled_data_loader) > ov["epoch_length"]
        assert passes_span_epochs == (sampling == "pass")
    wf.run()
    a = torch.load(tmp_path / "U" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    b = torch.load(tmp_path / "I" / "models" / "checkpoint_epoch=3.pt", weights_only=True)
    keys = ["model"] + (["teacher"] if "teacher" in a else [])
    for key in keys:
        for name, t in a[key].items():
            if isinstance(t, torch.Tensor):
                assert torch.equal(t, b[key][name]), f"{key}.{name} differs after resuming"
    assert torch.equal(a["rng"]["torch"], b["rng"]["torch"])


@pytest.mark.integration
def test_resume_from_a_checkpoint_without_random_state_warns_and_continues(tmp_path, cache_dir, caplog):
    """Checkpoints written before the random-state record still resume (its streams restart, with a warning)."""
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supmix_sufd", "val_interval": 5}
    workflow("covid", "training", **ov).run()
    ckpt = tmp_path / "models" / "checkpoint_epoch=1.pt"
    state = torch.load(ckpt, weights_only=True)
    assert {"torch", "numpy", "python", "objects", "streams"} <= set(state["rng"])
    assert state["rng"]["objects"]  # the weak augmentation's random transforms
    del state["rng"]
    torch.save(state, ckpt)
    with caplog.at_level("WARNING"):
        workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": True}).run()
    assert "holds no random-state record" in caplog.text
    assert (tmp_path / "models" / "checkpoint_epoch=2.pt").is_file()


def _enabled_cpu_grad_scaler(monkeypatch) -> None:
    """MONAI's ``Trainer.run()`` builds ``torch.cuda.amp.GradScaler()``, which a machine without CUDA disables; an
    enabled CPU ``GradScaler`` in its place lets the AMP checkpoint path run here (the trainer itself still trains in
    float32 on CPU)."""
    monkeypatch.setattr(torch.cuda.amp, "GradScaler", lambda *a, **k: torch.amp.GradScaler("cpu"))


@pytest.mark.integration
def test_amp_checkpoint_holds_the_grad_scaler_and_resume_restores_its_loss_scale(tmp_path, cache_dir, monkeypatch,
                                                                                  caplog):
    """With amp the GradScaler's loss scale is training state: a resumed run that restarted at 2**16 would overflow
    and skip optimiser steps the uninterrupted run took. Runs without amp save no such entry."""
    import warnings

    from ignite.engine import Events

    _enabled_cpu_grad_scaler(monkeypatch)
    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supervised", "val_interval": 5,
          "amp": True}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # amp on CPU: the trainer and evaluator say they run in float32
        wf = workflow("covid", "training", **ov)
        trainer = wf.parser.get_parsed_content("train#trainer")

        @trainer.on(Events.EPOCH_COMPLETED)  # before the checkpoint saver (attached when the run starts)
        def _as_after_overflows(engine) -> None:
            engine.scaler.scale(torch.ones(()))  # the scaler's lazy initialisation, as a first backward does
            engine.scaler.update(new_scale=128.0)

        wf.run()
        ckpt = tmp_path / "models" / "checkpoint_epoch=1.pt"
        state = torch.load(ckpt, weights_only=True)
        assert state["scaler"]["scale"] == 128.0

        wf = workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": True})
        resumed = wf.parser.get_parsed_content("train#trainer")
        scales = []
        resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: scales.append(e.scaler.get_scale()))
        wf.run()
        assert scales == [128.0]

        # a checkpoint without the entry (an older version, or a run without amp) resumes with the scale afresh
        state = torch.load(tmp_path / "models" / "checkpoint_epoch=2.pt", weights_only=True)
        del state["scaler"]
        torch.save(state, tmp_path / "models" / "checkpoint_epoch=2.pt")
        with caplog.at_level("WARNING"):
            workflow("covid", "training", **{**ov, "max_epochs": 3, "resume": True}).run()
        assert "holds no AMP GradScaler state" in caplog.text

    plain = {**ov, "amp": False, "output_dir": str(tmp_path / "plain")}
    workflow("covid", "training", **plain).run()
    assert "scaler" not in torch.load(tmp_path / "plain" / "models" / "checkpoint_epoch=1.pt", weights_only=True)


@pytest.mark.gpu
@pytest.mark.integration
def test_amp_on_cuda_resume_restores_the_loss_scale(tmp_path, cache_dir):
    from ignite.engine import Events

    ov = {**TINY, "output_dir": str(tmp_path), "cache_dir": cache_dir, "method": "supmix_sufd", "val_interval": 5,
          "amp": True, "device": "cuda:0", "epoch_length": 3}
    wf = workflow("covid", "training", **ov)
    trainer = wf.parser.get_parsed_content("train#trainer")
    saved = []
    trainer.add_event_handler(Events.EPOCH_COMPLETED, lambda e: saved.append(e.scaler.get_scale()))
    wf.run()
    state = torch.load(tmp_path / "models" / "checkpoint_epoch=1.pt", weights_only=True)
    assert state["scaler"]["scale"] == saved[-1]
    wf = workflow("covid", "training", **{**ov, "max_epochs": 2, "resume": True})
    resumed = wf.parser.get_parsed_content("train#trainer")
    scales = []
    resumed.add_event_handler(Events.EPOCH_STARTED, lambda e: scales.append(e.scaler.get_scale()))
    wf.run()
    assert scales == [saved[-1]]
