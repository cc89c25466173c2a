"""The MONAI Label app's support code, without MONAI Label (:mod:`medsemiseg.labelapp`).

- training requests are data: values MONAI would evaluate (``$``, ``@``, ``%``) and unlisted keys are refused, at
  any depth, before anything runs;
- ``python -m medsemiseg.labelapp install`` copies what serving and training need, replaces an earlier copy whole,
  and refuses a missing or damaged model naming the file;
- ``prepare folder`` reads MONAI Label's datastore layout (``labels/final/``; ``labels/original/`` is ignored);
- training from a datastore-like folder serves the best validated model on success and leaves the served one
  untouched on failure, with the bundle's error line in the exception.

The MONAI Label round trip over HTTP is ``tests/test_monailabel.py``.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

from medsemiseg.labelapp.install import InstallError, install_bundle, main as install_main
from medsemiseg.labelapp.params import RequestError, check_train_request, train_defaults
from medsemiseg.labelapp.train import (
    TrainingError,
    bundle_classes,
    train_from_datastore,
    train_stats,
    training_command,
)

REPO = Path(__file__).resolve().parents[1]
COVID = REPO / "bundles" / "covid"


# ------------------------------------------------------------------------------------------------- requests


@pytest.mark.parametrize(
    "request_, where",
    [
        ({"max_epochs": "$__import__('os').system('touch x')"}, "max_epochs="),
        ({"method": "@network_def"}, "method="),
        ({"device": "%configs/train.json#device"}, "device="),
        ({"method_options": {"adv_weight": "  $1+1"}}, "method_options#adv_weight="),
        ({"method_options": {"d_betas": [0.5, "$0.9"]}}, "method_options#d_betas#1="),
        ({"model": "$covid"}, "model="),  # MONAI Label's own keys are data too
        ({"dataset_dir": "$'/etc'"}, "dataset_dir="),  # refused as code before it is refused as unlisted
    ],
)
def test_a_value_monai_would_evaluate_is_refused_naming_its_key(request_, where):
    with pytest.raises(RequestError, match="refused -- a value starting with") as e:
        check_train_request(request_)
    assert str(e.value).startswith(where)


@pytest.mark.parametrize(
    "request_, message",
    [
        ({"dataset_dir": "/etc"}, "request key(s) dataset_dir: not accepted"),
        ({"network_def": "unet", "output_dir": "/tmp"}, "network_def, output_dir: not accepted"),
        ({"method_options": {"a-b": 1}}, "request key 'method_options#a-b': refused"),
        ({"max_epochs": 0}, "max_epochs=0: must be a whole number >= 1"),
        ({"max_epochs": True}, "max_epochs=True: must be a whole number"),
        ({"learning_rate": "fast"}, "learning_rate='fast': must be a number > 0"),
        ({"method": "meanteacher"}, "unknown method 'meanteacher'"),
        ({"train_sampling": "random"}, "must be one of epoch, pass"),
        ({"device": "tpu"}, "must be cpu, cuda or cuda:N"),
        ({"val_split": 1.5}, "val_split=1.5: a share must lie between 0 and 1"),
        ({"val_split": 0}, "val_split=0: at least one labelled study validates"),
        ({"method_options": "{not json"}, "must be a JSON object"),
    ],
)
def test_unlisted_keys_and_bad_values_are_refused(request_, message):
    with pytest.raises(RequestError) as e:
        check_train_request(request_)
    assert message in str(e.value)


def test_a_request_becomes_typed_bundle_overrides_and_app_settings():
    overrides, app = check_train_request(
        {"model": "covid", "gpus": "all", "local_rank": 0, "max_epochs": "3", "learning_rate": "0.01",
         "method": "SupMix+SUFD", "amp": "false", "method_options": '{"adv_weight": 0.01}', "val_split": "2"}
    )
    assert overrides == {"max_epochs": 3, "learning_rate": 0.01, "method": "supmix_sufd", "amp": False,
                         "method_options": {"adv_weight": 0.01}}
    assert app == {"val_split": 2, "pretrained": True, "multi_gpu": False, "tracking": "none", "gpus": "all"}
    assert check_train_request({})[1]["val_split"] == 0.2
    assert check_train_request({"val_split": 1.0})[1]["val_split"] == 1  # JSON has one number type: a count
    app = check_train_request({"pretrained": "false", "multi_gpu": True, "gpus": "0, 2", "tracking": "MLflow"})[1]
    assert (app["pretrained"], app["multi_gpu"], app["gpus"], app["tracking"]) == (False, True, [0, 2], "mlflow")
    for bad in ({"gpus": "0,x"}, {"tracking": "wandb"}, {"pretrained": "maybe"}, {"gpus": "$0"}):
        with pytest.raises(RequestError):
            check_train_request(bad)


def test_train_defaults_are_the_bundles_plain_values():
    defaults = train_defaults(COVID / "configs" / "train.json")
    config = json.loads((COVID / "configs" / "train.json").read_text())
    assert defaults["max_epochs"] == config["max_epochs"] and defaults["method"] == config["method"]
    assert "device" not in defaults  # an expression in the config: not a default a viewer can show
    assert defaults["val_split"] == 0.2
    check_train_request(defaults)  # what a viewer sends back unchanged is accepted


# -------------------------------------------------------------------------------------------------- install


def _app(tmp_path: Path) -> Path:
    app = tmp_path / "app"
    app.mkdir()
    shutil.copy(REPO / "bundles" / "monailabel_app" / "main.py", app / "main.py")
    return app


def _bundle_with_model(tmp_path: Path) -> Path:
    """bundles/covid with the files a used bundle holds (cache, logs, checkpoints, a dated model) and weights."""
    bundle = tmp_path / "covid"
    shutil.copytree(COVID, bundle, symlinks=True, ignore=shutil.ignore_patterns("cache", "logs", "eval", "outputs",
                                                                                  "*.pt", "*.ts", "run.json"))
    for junk in ("cache/covid/x.nii.gz", "logs/events.out", "eval/metrics.json", "outputs/a_seg.nii.gz",
                 "models/checkpoint_epoch=3.pt", "models/model.20260101-000000.pt"):
        (bundle / junk).parent.mkdir(parents=True, exist_ok=True)
        (bundle / junk).write_bytes(b"x")
    torch.save({"w": torch.zeros(2)}, bundle / "models" / "model.pt")
    (bundle / "models" / "run.json").write_text('{"method": "supmix_sufd"}')
    return bundle


def _files(folder: Path) -> set[str]:
    return {str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()}


def test_install_copies_what_serving_and_training_need_and_replaces_an_earlier_copy(tmp_path):
    bundle, app = _bundle_with_model(tmp_path), _app(tmp_path)
    dest = install_bundle(bundle, app)
    assert dest == app / "model" / "covid"
    assert _files(dest) == {"LICENSE", "docs/README.md", "docs/data_license.txt", "models/model.pt", "models/run.json", "configs/train.json",
                            "configs/inference.json", "configs/evaluate.json", "configs/metadata.json",
                            "configs/logging.conf", "configs/multi_gpu_train.json"}
    assert not any(p.is_symlink() for p in dest.rglob("*"))  # links resolved: the copy stands alone
    assert (dest / "configs" / "inference.json").read_text() == (COVID / "configs" / "train.json").read_text()

    # a second install (new weights) replaces the first whole: no model/covid/covid, nothing of the old copy left
    (dest / "stale.txt").write_text("from the first install")
    torch.save({"w": torch.ones(2)}, bundle / "models" / "model.pt")
    assert install_main(["install", str(bundle), "--app", str(app)]) == 0
    assert not (dest / "covid").exists() and not (dest / "stale.txt").exists()
    assert torch.equal(torch.load(dest / "models" / "model.pt")["w"], torch.ones(2))
    assert sorted(p.name for p in (app / "model").iterdir()) == ["covid"]  # no staging folder left behind


def test_install_refuses_a_missing_or_damaged_model_and_keeps_the_served_copy(tmp_path, capsys):
    bundle, app = _bundle_with_model(tmp_path), _app(tmp_path)
    dest = install_bundle(bundle, app, name="ct")
    served = hashlib.sha256((dest / "models" / "model.pt").read_bytes()).hexdigest()

    (bundle / "models" / "model.pt").unlink()
    assert install_main(["install", str(bundle), "--app", str(app), "--name", "ct"]) == 2
    last = capsys.readouterr().err.strip().splitlines()[-1]
    assert last.startswith(f"error: {bundle / 'models' / 'model.pt'}: no trained model") and "--untrained" in last

    (bundle / "models" / "model.pt").write_bytes(b"")  # an interrupted write
    with pytest.raises(InstallError, match="empty"):
        install_bundle(bundle, app, name="ct")
    assert hashlib.sha256((dest / "models" / "model.pt").read_bytes()).hexdigest() == served

    with pytest.raises(InstallError, match="not a bundle folder"):
        install_bundle(tmp_path, app)
    with pytest.raises(InstallError, match="no MONAI Label app there"):
        install_bundle(bundle, tmp_path)

    untrained = install_bundle(bundle, app, name="fresh", untrained=True)
    assert (untrained / "configs" / "train.json").is_file() and not (untrained / "models" / "model.pt").exists()


# ---------------------------------------------------------------------------------------- datastore layout


def _slice(path: Path, seed: int, label: bool = False) -> None:
    """A 48 x 48 CT-like slice (HU) or its label map (a disc of class 1 or 2), as a 2D NIfTI."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:48, :48]
    disc = (yy - 24 - seed % 5) ** 2 + (xx - 20 - seed % 7) ** 2 < 60 + 10 * (seed % 3)
    if label:
        arr = (disc * (1 + seed % 2)).astype(np.uint8)
    else:
        arr = (-800 + 700 * disc + rng.normal(0, 30, (48, 48))).astype(np.float32)
    nib.save(nib.Nifti1Image(arr, np.diag([0.7, 0.7, 5.0, 1.0])), str(path))


def _datastore(root: Path, labelled: int, unlabelled: int) -> Path:
    """MONAI Label's local datastore layout: studies at the top, final labels in labels/final/, the model's
    predictions in labels/original/, its index file datastore_v2.json."""
    (root / "labels" / "final").mkdir(parents=True)
    (root / "labels" / "original").mkdir()
    for i in range(labelled + unlabelled):
        _slice(root / f"study{i}.nii.gz", i)
        if i < labelled:
            _slice(root / "labels" / "final" / f"study{i}.nii.gz", i, label=True)
        _slice(root / "labels" / "original" / f"study{i}.nii.gz", i + 1, label=True)
    (root / "datastore_v2.json").write_text("{}")
    return root


def test_prepare_folder_reads_the_monailabel_datastore_layout(tmp_path):
    from medsemiseg.data.prepare import prepare_folder

    store = _datastore(tmp_path / "studies", labelled=3, unlabelled=2)
    datalist = json.loads(Path(prepare_folder(store, tmp_path / "prepared", labeled_fraction="full",
                                              val_fraction=1, progress=False)).read_text())
    counts = datalist["meta"]["counts"]
    assert (counts["labeled"], counts["unlabeled"], counts["validation"], counts["test"]) == (2, 2, 1, 0)
    labelled = {Path(it["image"]).name for it in datalist["labeled"] + datalist["validation"]}
    assert labelled == {"study0.nii.gz", "study1.nii.gz", "study2.nii.gz"}  # only the final labels count

    (store / "labels" / "final" / "study0.nii.gz").unlink()
    (store / "labels" / "final" / "study1.nii.gz").unlink()
    (store / "labels" / "final" / "study2.nii.gz").unlink()
    from medsemiseg.data.io import DataReadError

    with pytest.raises(DataReadError, match="labels/final"):  # predictions in labels/original/ are no masks
        prepare_folder(store, tmp_path / "prepared2", progress=False)


# ------------------------------------------------------------------------------------ X x Y x 1 studies


def test_a_study_stored_as_x_y_1_gets_a_label_map_of_that_shape(tmp_path):
    """What SimpleITK writes for one slice is X x Y x 1; the bundle's inferring (and the app, which shares
    stored_shape) write its label map in that shape, on its grid; a 2D study and a volume keep theirs."""
    from medsemiseg.bundle.writer import PredictionWriter, stored_shape

    affine = np.diag([0.7, 0.7, 5.0, 1.0])
    nib.save(nib.Nifti1Image(np.zeros((48, 40, 1), np.float32), affine), str(tmp_path / "flat.nii.gz"))
    nib.save(nib.Nifti1Image(np.zeros((48, 40), np.float32), affine), str(tmp_path / "plain.nii.gz"))
    writer = PredictionWriter(tmp_path / "out", num_classes=4)
    pred = torch.zeros(1, 48, 40)
    pred[0, 10:20, 5:9] = 2
    for name in ("flat", "plain"):
        writer._write_item({"pred": pred, "name": name, "affine": torch.as_tensor(affine), "spatial_shape": [48, 40],
                            "source": str(tmp_path / f"{name}.nii.gz")})
    flat = nib.load(tmp_path / "out" / "flat_seg.nii.gz")
    assert flat.shape == (48, 40, 1) and np.allclose(flat.affine, affine)
    assert np.array_equal(np.asarray(flat.dataobj)[..., 0], pred[0].numpy())
    assert nib.load(tmp_path / "out" / "plain_seg.nii.gz").shape == (48, 40)
    assert stored_shape(tmp_path / "flat.nii.gz", (48, 40, 7)) == (48, 40, 7)  # other pixels: unchanged
    assert stored_shape(tmp_path / "missing.nii.gz", (48, 40)) == (48, 40)
    assert stored_shape(None, (48, 40)) == (48, 40)


# ----------------------------------------------------------------------------------------------- training


def _served(tmp_path: Path) -> Path:
    bundle = install_bundle(_bundle_with_model(tmp_path), _app(tmp_path))
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config(str(bundle / "configs" / "inference.json"))
    parser["bundle_root"] = str(bundle)
    torch.save(parser.get_parsed_content("network_def").state_dict(), bundle / "models" / "model.pt")
    return bundle


def _studies(store: Path) -> tuple[dict, dict]:
    final = store / "labels" / "final"
    images = sorted(store.glob("*.nii.gz"))
    labelled = {p.name[:-7]: (p, final / p.name) for p in images if (final / p.name).exists()}
    unlabelled = {p.name[:-7]: p for p in images if not (final / p.name).exists()}
    return labelled, unlabelled


TINY = {"max_epochs": 1, "epoch_length": 2, "batch_size": 2, "unlabeled_batch_size": 2, "device": "cpu",
        "val_split": 1, "method": "supmix_sufd"}


@pytest.mark.integration
def test_training_from_the_datastore_serves_the_best_validated_model(tmp_path):
    bundle = _served(tmp_path)
    before = (bundle / "models" / "model.pt").read_bytes()
    store = _datastore(tmp_path / "studies", labelled=3, unlabelled=3)
    from PIL import Image  # a photograph for the chase bundle in the same datastore: not a covid study

    Image.fromarray(np.full((40, 50, 3), 128, np.uint8)).save(store / "photo.png")
    labelled, unlabelled = _studies(store)
    unlabelled["photo"] = store / "photo.png"
    lines: list[str] = []
    result = train_from_datastore(bundle, labelled, unlabelled, tmp_path / "runs", TINY, log=lines.append)

    run = Path(result["run"])
    assert (result["labelled"], result["validation"], result["unlabelled"]) == (2, 1, 3)
    assert result["summary"].startswith("reached epoch 1 of 1") and "best val_mIoU" in result["summary"]
    served = (bundle / "models" / "model.pt").read_bytes()
    assert served != before and served == (run / "models" / "model.pt").read_bytes()
    assert (bundle / "models" / "run.json").read_bytes() == (run / "models" / "run.json").read_bytes()
    args = json.loads((run / "args.json").read_text())
    assert args["labeled_fraction"] == "full" and args["max_epochs"] == 1 and "val_split" not in args
    counts = json.loads((run / "data" / "datalist.json").read_text())["meta"]["counts"]
    assert (counts["labeled"], counts["unlabeled"], counts["validation"]) == (2, 3, 1)
    assert (run / "studies" / "labels" / "final" / "study0.nii.gz").exists()  # MONAI Label's layout, as prepared
    assert json.loads((run / "data" / "datalist.json").read_text())["meta"]["classes"] == bundle_classes(bundle)
    assert any("caching unlabelled training set" in line for line in lines)  # the bundle's log passed through
    assert "caching unlabelled training set" in (run / "train.log").read_text()  # and kept in the run folder
    assert any(line.startswith("left out 1 study whose images are not 1-channel") and "photo (3 channels)" in line
               for line in lines)
    assert not list((run / "studies").glob("photo*"))
    # pretrained (the default): the run started from a copy of the model served before it
    assert Path(args["pretrained_ckpt"]) == run / "pretrained.pt" and (run / "pretrained.pt").read_bytes() == before
    assert any(line.startswith("starting from the served model") for line in lines)
    # the progress MONAI Label serves as train_stats, with the keys 3D Slicer reads
    stats = train_stats(tmp_path / "runs")
    assert (stats["epoch"], stats["total_epochs"], stats["status"]) == (1, 1, "finished")
    assert 0 <= stats["best_metric"] <= 1 and stats["total_time"].count(":") == 2


@pytest.mark.integration
def test_a_failed_training_keeps_the_served_model_and_names_the_error(tmp_path):
    bundle = _served(tmp_path)
    before = (bundle / "models" / "model.pt").read_bytes()
    labelled, unlabelled = _studies(_datastore(tmp_path / "studies", labelled=2, unlabelled=2))
    with pytest.raises(TrainingError) as e:
        train_from_datastore(bundle, labelled, unlabelled, tmp_path / "runs",
                             {**TINY, "method_options": {"no_such_option": 1}}, log=lambda line: None)
    assert "training covid failed (exit status 1)" in str(e.value) and "no_such_option" in str(e.value)
    assert "The served model is unchanged" in str(e.value)
    assert (bundle / "models" / "model.pt").read_bytes() == before


def test_a_refused_request_or_too_few_labels_runs_nothing(tmp_path):
    bundle = tmp_path / "model" / "covid"  # never read: the request is refused first
    labelled, unlabelled = _studies(_datastore(tmp_path / "studies", labelled=2, unlabelled=1))
    with pytest.raises(RequestError):
        train_from_datastore(bundle, labelled, unlabelled, tmp_path / "runs", {"seed": "$0"})
    with pytest.raises(TrainingError, match="1 study has a final label; training needs at least 2"):
        train_from_datastore(bundle, dict(list(labelled.items())[:1]), unlabelled, tmp_path / "runs", {})
    with pytest.raises(TrainingError, match="val_split 2 holds out 2 of the 2 studies"):
        train_from_datastore(bundle, labelled, unlabelled, tmp_path / "runs", {"val_split": 2})
    assert not (tmp_path / "runs").exists()


def test_training_command_single_process_torchrun_and_tracking(tmp_path):
    bundle, args = tmp_path / "covid", tmp_path / "run" / "args.json"
    cmd, env = training_command(bundle, args, "py")
    assert cmd == ["py", "-m", "monai.bundle", "run", "training", "--config_file",
                   str(bundle / "configs" / "train.json"), "--args_file", str(args)] and env == {}
    cmd, env = training_command(bundle, args, "py", multi_gpu=True, gpus=[1, 3], tracking=True)
    assert cmd[:6] == ["py", "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2", "-m"]
    assert "multi_gpu_train.json" in cmd[cmd.index("--config_file") + 1] and cmd[-2:] == ["--tracking", "mlflow"]
    assert env == {"CUDA_VISIBLE_DEVICES": "1,3"}
    cmd, _ = training_command(bundle, args, "py", multi_gpu=True, gpus=[0])  # one GPU: one process
    assert "torch.distributed.run" not in cmd


def test_train_stats_of_a_training_that_ended_unfinished_say_stopped(tmp_path):
    from medsemiseg.labelapp.train import TRAIN_STATS

    assert train_stats(tmp_path) == {} and train_stats(tmp_path, running=False) == {}
    (tmp_path / TRAIN_STATS).write_text(json.dumps({"epoch": 2, "total_epochs": 5, "status": "running"}))
    assert train_stats(tmp_path)["status"] == "running"  # unknown whether it still runs: as written
    assert train_stats(tmp_path, running=True)["status"] == "running"
    assert train_stats(tmp_path, running=False) == {"epoch": 2, "total_epochs": 5, "status": "stopped"}
    (tmp_path / TRAIN_STATS).write_text(json.dumps({"epoch": 5, "total_epochs": 5, "status": "finished"}))
    assert train_stats(tmp_path, running=False)["status"] == "finished"


@pytest.mark.skipif(not hasattr(__import__("os"), "killpg"), reason="process groups are POSIX")
def test_the_training_log_is_kept_in_the_run_folder_and_its_error_line_is_the_reason(tmp_path):
    """Every line of the bundle's output goes to ``log`` and to ``<run>/train.log`` (where the error message sends
    the user); a failed run's reason is its last ``error:`` line."""
    from medsemiseg.labelapp.train import TRAIN_LOG, TrainingError, _run_bundle

    (tmp_path / "args.json").write_text("{}")
    cmd = ["sh", "-c", "echo 'Epoch: 1/1, Iter: 1/2 -- loss: 1.5'; echo 'error: no data'; echo done; exit 3"]
    lines: list[str] = []
    with pytest.raises(TrainingError) as e:
        _run_bundle(tmp_path / "covid", tmp_path / "args.json", "py", lines.append, cmd=cmd)
    assert "failed (exit status 3): no data" in str(e.value) and str(tmp_path) in str(e.value)
    saved = (tmp_path / TRAIN_LOG).read_text().splitlines()
    assert saved == ["Epoch: 1/1, Iter: 1/2 -- loss: 1.5", "error: no data", "done"] == lines[1:]
    assert lines[0].startswith("training: sh -c")


STOPPABLE = """
import sys
from pathlib import Path
from medsemiseg.labelapp.train import TrainingError, _run_bundle
run = Path(sys.argv[1])
# a training that starts a process of its own (as torchrun and data loader workers do), then runs on
cmd = ["sh", "-c", "sleep 120 & echo $! > " + str(run / "grandchild.pid") + "; echo $$ > " + str(run / "child.pid") + "; wait"]
try:
    _run_bundle(run / "covid", run / "args.json", sys.executable, print, cmd=cmd)
except TrainingError as e:
    print("STOPPED:", e)
"""


def _alive(pid: int) -> bool:
    import os

    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return Path(f"/proc/{pid}/stat").read_text().split(")")[-1].split()[0] != "Z" if Path("/proc").is_dir() else True


@pytest.mark.skipif(not hasattr(__import__("os"), "killpg"), reason="process groups are POSIX")
def test_sigterm_stops_the_whole_training_process_tree(tmp_path):
    """What MONAI Label's DELETE /train sends the training task: the bundle's training and every process it started
    end, and the task ends on an error that says the served model is unchanged."""
    import os
    import signal
    import subprocess
    import sys
    import time

    (tmp_path / "args.json").write_text("{}")
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(Path(__file__).resolve().parents[1]),
                                                       os.environ.get("PYTHONPATH", "")]))
    proc = subprocess.Popen([sys.executable, "-c", STOPPABLE, str(tmp_path)], stdout=subprocess.PIPE, text=True,
                            env=env)
    deadline = time.time() + 120
    while not ((tmp_path / "child.pid").is_file() and (tmp_path / "grandchild.pid").is_file()):
        assert time.time() < deadline and proc.poll() is None, "the stand-in training did not start"
        time.sleep(0.2)
    time.sleep(0.5)
    child = int((tmp_path / "child.pid").read_text())
    grandchild = int((tmp_path / "grandchild.pid").read_text())
    assert _alive(child) and _alive(grandchild)
    proc.send_signal(signal.SIGTERM)
    out, _ = proc.communicate(timeout=60)
    assert "STOPPED: training covid stopped (SIGTERM); the served model is unchanged" in out
    for _ in range(50):
        if not _alive(child) and not _alive(grandchild):
            break
        time.sleep(0.1)
    assert not _alive(child) and not _alive(grandchild)
