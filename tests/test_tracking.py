"""Experiment tracking with MLflow (``--tracking mlflow``, docs/tracking.md): what :mod:`medsemiseg.tracking` logs,
read back with the MLflow client from a store in a temporary folder."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch
from ignite.engine import Engine, Events

from medsemiseg.tracking import TrackedRun, datalist_params, flat_params, scalar_metrics, sqlite_uri
from medsemiseg.tracking.run import _fail_if_running

REPO = Path(__file__).resolve().parents[1]
BUNDLES = REPO / "bundles"
TINY = {"image_size": [64, 64], "batch_size": 2, "unlabeled_batch_size": 2, "max_epochs": 2, "epoch_length": 2}

pytestmark = pytest.mark.usefixtures("one_thread")


def _mlflow():
    return pytest.importorskip("mlflow", reason="mlflow is in the [test] extra: pip install -e '.[test]'")


def _runs(output_dir: Path) -> dict[str, object]:
    """``{workflow tag: run}`` of every run in the store under ``output_dir``."""
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri(output_dir))
    experiments = [e.experiment_id for e in client.search_experiments()]
    return client, {r.data.tags.get("workflow"): r for r in client.search_runs(experiments)}


# ------------------------------------------------------------------------------------------------ unit


def test_scalar_metrics_split_per_class_tensors_by_class_name():
    metrics = {"val_mIoU": torch.tensor(0.5), "val_per_class_iou": torch.tensor([0.9, 0.1, float("nan")]),
               "n": 3, "other": torch.tensor([1.0, 2.0]), "text": "skip"}
    out = scalar_metrics(metrics, ["background", "ground glass", "a+b"])
    assert out["val_mIoU"] == pytest.approx(0.5) and out["n"] == 3.0
    assert out["val_per_class_iou/background"] == pytest.approx(0.9)
    assert out["val_per_class_iou/ground glass"] == pytest.approx(0.1)
    assert "val_per_class_iou/a_b" in out  # a character MLflow refuses in a name becomes "_"
    assert out["other/0"] == 1.0 and out["other/1"] == 2.0  # not one value per class: by index
    assert "text" not in out


def test_flat_params_flatten_mappings_and_write_json_values():
    out = flat_params({"method": "fixmatch", "method_options": {"threshold": 0.95}, "classes": ["a", "b"],
                       "patch_size": None, "amp": False, "long": "x" * 7000})
    assert out == {"method": "fixmatch", "method_options.threshold": "0.95", "classes": '["a", "b"]',
                   "patch_size": "null", "amp": "false", "long": "x" * 6000}


def test_store_goes_under_output_dir_and_never_into_the_bundle_folder(tmp_path, monkeypatch):
    assert sqlite_uri(tmp_path / "run") == "sqlite:///" + (tmp_path / "run" / "mlruns.db").as_posix()
    monkeypatch.chdir(tmp_path)
    bundle = BUNDLES / "covid"
    assert sqlite_uri(bundle, bundle_root=bundle) == "sqlite:///" + (tmp_path / "mlruns.db").as_posix()


def test_datalist_params_read_the_split_in_effect(tmp_path):
    path = tmp_path / "datalist.json"
    path.write_text(json.dumps({"meta": {"labeled_fraction": "1/8", "seed": 2, "counts": {"labeled": 4},
                                         "source": "/data/x"}}))
    assert datalist_params(path) == {"labeled_fraction": "1/8", "split_seed": 2,
                                     "data": {"source": "/data/x", "counts": {"labeled": 4}, "synthetic": False}}
    assert datalist_params(tmp_path / "missing.json") == {}


def test_untracked_engine_runs_without_mlflow_handler():
    engine = Engine(lambda e, b: {"loss": torch.tensor(1.0)})
    tracked = TrackedRun(params={"method": "x"}, class_names=["a"])
    tracked.attach(engine)
    engine.run([0, 1], max_epochs=1)
    assert tracked.run_id is None


def test_tracked_engine_logs_loss_terms_per_class_metrics_params_and_artifacts(tmp_path):
    _mlflow()
    from monai.handlers import MLFlowHandler

    artifact = tmp_path / "run.json"
    artifact.write_text("{}")
    engine = Engine(lambda e, b: {"loss": torch.tensor(2.0), "loss_sup": torch.tensor(1.5), "mask_ratio": 0.25,
                                  "pred": torch.zeros(2)})

    @engine.on(Events.EPOCH_COMPLETED)
    def _metrics(e):
        e.state.metrics = {"val_mIoU": 0.5, "val_per_class_iou": torch.tensor([0.75, 0.25])}

    @engine.on(Events.COMPLETED)
    def _volumes(e):  # what PerVolumeScores adds when the engine completes, before TrackedRun's turn
        e.state.metrics["volume_mDice"] = 0.4
        e.state.per_volume = {"per_class": {"lesion": {"dice": 0.5, "hd95": float("nan"), "volumes": 2}}}

    tracked = TrackedRun(params={"method": "supmix", "method_options": {"alpha": 1}}, tags={"set": "covid"},
                         class_names=["background", "lesion"], artifacts=[str(artifact)])
    tracked.attach(engine)
    # what --tracking mlflow appends after the bundle's own handlers (monai.bundle.utils.DEFAULT_MLFLOW_SETTINGS)
    MLFlowHandler(tracking_uri=sqlite_uri(tmp_path), run_name="r", tag_name="train_loss",
                  close_on_complete=True).attach(engine)
    engine.run([0, 1], max_epochs=1)

    client, runs = _runs(tmp_path)
    (run,) = runs.values()
    assert run.info.run_id == tracked.run_id and run.info.status == "FINISHED"
    assert run.data.params["method"] == "supmix" and run.data.params["method_options.alpha"] == "1"
    assert run.data.tags["set"] == "covid"
    m = run.data.metrics
    assert m["train_loss"] == 2.0 and m["train_loss_sup"] == 1.5 and m["train_mask_ratio"] == 0.25
    assert m["val_per_class_iou/background"] == 0.75 and m["val_per_class_iou/lesion"] == 0.25
    assert m["volume_mDice"] == 0.4 and m["test_volume_dice/lesion"] == 0.5
    assert "test_volume_hd95/lesion" not in m and "test_volume_volumes/lesion" not in m  # NaN and counts left out
    assert [a.path for a in client.list_artifacts(run.info.run_id)] == ["run.json"]


def test_a_run_left_running_is_marked_failed(tmp_path):
    mlflow = _mlflow()
    client = mlflow.MlflowClient(tracking_uri=sqlite_uri(tmp_path))
    run = client.create_run(client.create_experiment("e", artifact_location=(tmp_path / "mlruns").as_uri()))
    _fail_if_running(client, run.info.run_id)
    assert client.get_run(run.info.run_id).info.status == "FAILED"


# ------------------------------------------------------------------------------------------------ bundles


def _bundle_cli(*args: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONWARNINGS="ignore",
               PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]))
    env.pop("MLFLOW_TRACKING_URI", None)
    proc = subprocess.run([sys.executable, "-m", "monai.bundle", *args], cwd=REPO, env=env, capture_output=True,
                          text=True, timeout=900)
    assert proc.returncode == 0, f"monai.bundle {args[:2]} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    return proc


@pytest.mark.integration
def test_bundle_cli_training_and_evaluation_are_tracked(tmp_path):
    """``python -m monai.bundle run training|evaluating ... --tracking mlflow``, as the README says, with MONAI's
    default tracking settings: one run each, read back with the MLflow client."""
    _mlflow()
    out, cache = tmp_path / "out", tmp_path / "cache"
    common = ["--tracking", "mlflow", "--output_dir", str(out), "--cache_dir", str(cache)]
    for key, value in TINY.items():
        common += [f"--{key}", json.dumps(value)]
    _bundle_cli("run", "training", "--config_file", "bundles/covid/train.json", *common, "--method", "fixmatch")
    _bundle_cli("run", "evaluating", "--config_file", "bundles/covid/evaluate.json", *common)

    assert (out / "mlruns.db").is_file() and not list((BUNDLES / "covid").glob("mlruns*"))
    client, runs = _runs(out)
    assert set(runs) == {"training", "evaluating"}
    train, evaluate = runs["training"], runs["evaluating"]
    assert train.info.status == evaluate.info.status == "FINISHED"
    p = train.data.params
    assert (p["method"], p["network"], p["seed"], p["max_epochs"], p["task"]) == ("fixmatch", "unet", "0", "2", "covid")
    assert json.loads(p["classes"]) == ["background", "ground-glass", "consolidation", "pleural effusion"]
    assert p["labeled_fraction"] == "1/8" and p["data.synthetic"] == "true"
    m = train.data.metrics
    assert {"train_loss", "train_loss_sup", "train_loss_unsup", "train_mask_ratio", "lr_group_0"} <= set(m)
    assert {"val_mIoU", "val_mDice", "val_per_class_iou/ground-glass", "val_per_class_iou/pleural effusion"} <= set(m)
    history = client.get_metric_history(train.info.run_id, "val_mIoU")
    assert sorted(h.step for h in history) == [1, 2]  # one value per epoch, at the trainer's epoch
    artifacts = {a.path for a in client.list_artifacts(train.info.run_id)}
    assert "run.json" in artifacts and any(a.startswith("config_") and a.endswith(".json") for a in artifacts)

    assert evaluate.data.params["trained.method"] == "fixmatch"
    em = evaluate.data.metrics
    assert {"test_mIoU", "test_mDice", "test_per_class_iou/consolidation", "test_per_class_dice/ground-glass"} <= set(em)
    report = json.loads((out / "eval" / "metrics.json").read_text())
    assert em["test_per_class_iou/ground-glass"] == pytest.approx(report["per_class"]["ground-glass"]["iou"])
    artifacts = {a.path for a in client.list_artifacts(evaluate.info.run_id)}
    assert {"metrics.json", "metrics.csv", "run.json"} <= artifacts


@pytest.mark.integration
def test_chase_bundle_training_evaluation_and_inference_are_tracked(tmp_path):
    """The same with MONAI's ``ConfigWorkflow(tracking="mlflow")`` in-process, on the fundus bundle, inference too."""
    _mlflow()
    from monai.bundle import ConfigWorkflow

    root = BUNDLES / "chase"
    settings = {**TINY, "max_epochs": 1, "output_dir": str(tmp_path), "cache_dir": str(tmp_path / "cache"),
                "patch_size": [32, 32], "method": "supervised", "tracking_tags": {"grid": "test"}}
    for run_id in ("training", "evaluating", "inferring"):
        wf = ConfigWorkflow(config_file=str(root / "configs" / "train.json"),
                            meta_file=str(root / "configs" / "metadata.json"), logging_file=False, run_id=run_id,
                            workflow_type=None, bundle_root=str(root), tracking="mlflow", **settings)
        wf.initialize()
        wf.run()
        wf.finalize()
    client, runs = _runs(tmp_path)
    assert set(runs) == {"training", "evaluating", "inferring"}
    assert all(r.info.status == "FINISHED" and r.data.tags["grid"] == "test" for r in runs.values())
    assert "val_per_class_iou/vessel" in runs["training"].data.metrics
    assert "test_per_class_iou/vessel" in runs["evaluating"].data.metrics
    assert any(a.path.startswith("config_") for a in client.list_artifacts(runs["inferring"].info.run_id))


# ------------------------------------------------------------------------------------------------ benchmark grid

#: stands in for ``python -m monai.bundle run WORKFLOW --config_file F --key value ...``: a metrics.json per cell
FAKE_BUNDLE = '''
import json, sys
from pathlib import Path
workflow, args = sys.argv[1], sys.argv[2:]
ov = {args[i][2:]: args[i + 1] for i in range(0, len(args), 2)}
out = Path(ov["output_dir"])
(out / "eval").mkdir(parents=True, exist_ok=True)
if workflow == "evaluating":
    v = 0.5 + 0.1 * int(ov["seed"]) + (0.05 if ov["method"] == "fixmatch" else 0.0)
    per_class = {"background": {"iou": 0.9, "dice": 0.95}, "vessel": {"iou": v, "dice": 2 * v / (1 + v)}}
    (out / "eval" / "metrics.json").write_text(json.dumps({"per_class": per_class, "mIoU": (0.9 + v) / 2}))
'''


@pytest.mark.integration
def test_benchmark_grid_logs_each_cell_as_a_tagged_mlflow_run(tmp_path, capsys):
    mlflow = _mlflow()
    import yaml

    from medsemiseg.benchmark.__main__ import main as benchmark_main

    (tmp_path / "bundle").mkdir()
    for name in ("train.json", "evaluate.json"):
        (tmp_path / "bundle" / name).write_text("{}")
    (tmp_path / "fake_bundle.py").write_text(FAKE_BUNDLE)
    grid = {"task": "chase", "bundle": str(tmp_path / "bundle"), "classes": ["background", "vessel"],
            "methods": ["supervised", "fixmatch"], "fractions": ["1/8"], "seeds": [0, 1],
            "output_dir": str(tmp_path / "runs"), "metrics_file": "eval/metrics.json",
            "launcher": ["{python}", str(tmp_path / "fake_bundle.py")]}
    (tmp_path / "grid.yaml").write_text(yaml.safe_dump(grid))
    args = [str(tmp_path / "grid.yaml"), "--no-progress", "--no-report", "--tracking", "mlflow"]
    assert benchmark_main(args) == 0

    client = mlflow.MlflowClient(tracking_uri=sqlite_uri(tmp_path / "runs"))
    exp = client.get_experiment_by_name("medsemiseg-benchmark")
    runs = client.search_runs([exp.experiment_id])
    cells = {(r.data.tags["set"], r.data.tags["method"], r.data.tags["fraction"], r.data.tags["seed"]): r
             for r in runs}
    assert set(cells) == {("chase", m, "1/8", s) for m in ("supervised", "fixmatch") for s in ("0", "1")}
    run = cells[("chase", "fixmatch", "1/8", "1")]
    assert run.info.run_name == "chase/fixmatch/1/8/seed1"
    assert run.data.metrics["IoU/vessel"] == pytest.approx(0.65) and run.info.status == "FINISHED"
    assert run.data.params["method"] == "fixmatch" and "fixmatch" in run.data.params["train_command"]
    assert {"done.json", "metrics.json"} <= {a.path for a in client.list_artifacts(run.info.run_id)}
    # a second pass over the finished grid logs nothing again
    assert benchmark_main([*args, "--report-only"]) == 0
    assert len(client.search_runs([exp.experiment_id])) == 4
    assert "0 more cell(s) logged to MLflow" in capsys.readouterr().out
