"""MONAI Label round trip: both bundles installed in the app, served, queried and trained over HTTP.

What a user does (docs/bundles.md, 'MONAI Label'): install the bundles into ``bundles/monailabel_app`` with
``python -m medsemiseg.labelapp install``, start ``python -m monailabel.main start_server --app ... --studies ...
--conf models covid,chase`` with the MONAI Label environment's Python (not activated, no ``PYTHONPATH``: the app
finds ``medsemiseg`` in the repository holding it), label studies, train, and ask for label maps. This test does
exactly that on 127.0.0.1 with a free port, with the app in a temporary copy of the repository layout:

- installing: ``install`` puts each bundle in ``<app>/model/<name>``; one installed ``--untrained`` answers
  ``/infer`` with 409 until it is trained;
- inference: a CT slice's label map is the very one the bundle's own ``run inferring`` writes with the same weights;
  a grey picture gets a PNG, an X x Y x 1 NIfTI study a label of that shape, a DICOM study (``.dcm``) a NIfTI label
  with the slice's geometry, the fundus bundle an RGB photograph's vessel map; a colour picture for the CT model,
  an unknown study id or model are refused with their reason (422, 404);
- training: two studies are labelled through ``PUT /datastore/label``, the others stay unlabelled; a request
  carrying a value MONAI would evaluate (``$...``) or an unlisted key is refused at once (422) and nothing runs;
  a training that fails ends in ERROR with its reason in ``GET /train/`` and the served model unchanged; eight
  SupMix + SUFD iterations from scratch on CPU reach DONE, ``model.pt`` changes, and ``/infer`` then answers with the
  new weights; while they run, ``train_stats`` in ``GET /info/`` (what 3D Slicer's progress reads) moves from epoch
  to epoch;
- fine-tuning and stopping: the same training with ``pretrained`` at its default starts from a copy of the served
  model, and its first iteration's losses (``<run>/train.log``) are below the from-scratch run's (same seed, same
  settings: the training is deterministic, so the comparison is the same on every run); ``DELETE /train/`` then
  stops it: every process of the training task ends, the task is STOPPED and the served model is byte-identical.

The server is always stopped (its whole process group), and every wait is bounded.

MONAI Label is heavy (about 3.7 GB, 6.5 minutes to install) and its dependencies clash with this package's
environment (it needs ``pydicom<3`` for ``pydicom-seg``; its PyPI ``torchvision`` does not load with the CPU build
of PyTorch), so it lives in its own virtual environment. Point ``MEDSEMISEG_MONAILABEL_PYTHON`` at that
environment's Python (or install ``monailabel`` in the current one); otherwise the test is skipped. Set-up, as in
docs/bundles.md::

    python3 -m venv .mlvenv
    .mlvenv/bin/pip install -c constraints-cpu.txt monailabel "pydicom<3" "pynetdicom<3" "dicomweb-client[gcp]<0.60"
    .mlvenv/bin/pip uninstall -y torchvision
    MEDSEMISEG_MONAILABEL_PYTHON=.mlvenv/bin/python python -m pytest tests/test_monailabel.py -m monailabel
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
# bounds against a hang, not timings: on a 2-core machine under a load of 6, importing MONAI Label took over
# 2 minutes and a training task 3 to 5 minutes from its request to its first iteration
STARTUP_TIMEOUT_S = 600
REQUEST_TIMEOUT_S = 180
TRAIN_TIMEOUT_S = 900

pytestmark = pytest.mark.monailabel


def _monailabel_python() -> str | None:
    """The interpreter of an environment where MONAI Label imports, or ``None``."""
    candidates = [os.environ.get("MEDSEMISEG_MONAILABEL_PYTHON"), sys.executable]
    for py in candidates:
        if not py or not Path(py).exists():
            continue
        py = os.path.abspath(py)  # the server runs in another folder; abspath keeps the venv's symlink unresolved
        probe = subprocess.run(
            [py, "-c", "import monailabel.interfaces.app, monailabel.tasks.infer.basic_infer"],
            capture_output=True, text=True, timeout=STARTUP_TIMEOUT_S,
        )
        if probe.returncode == 0:
            return py
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _call(url: str, method: str = "GET", body: bytes | None = None, headers: dict | None = None,
          timeout: float = REQUEST_TIMEOUT_S) -> bytes:
    req = urllib.request.Request(url, data=body if body is not None else (b"" if method != "GET" else None),
                                 method=method, headers=headers or {})
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


def _post_json(url: str, params: dict) -> bytes:
    return _call(url, "POST", json.dumps(params).encode(), {"Content-Type": "application/json"})


def _refused(url: str, params: dict | None = None, method: str = "POST") -> tuple[int, str]:
    """(HTTP status, detail) of a request that must fail."""
    with pytest.raises(urllib.error.HTTPError) as e:
        if params is None:
            _call(url, method)
        else:
            _post_json(url, params)
    return e.value.code, json.loads(e.value.read())["detail"]


def _put_label(base: str, image_id: str, label: Path) -> None:
    """``PUT /datastore/label?image=<id>&tag=final`` with the label file (multipart, as viewers send it)."""
    boundary = uuid.uuid4().hex
    head = (f"--{boundary}\r\nContent-Disposition: form-data; name=\"label\"; filename=\"{label.name}\"\r\n"
            "Content-Type: application/octet-stream\r\n\r\n")
    body = head.encode() + label.read_bytes() + f"\r\n--{boundary}--\r\n".encode()
    _call(f"{base}/datastore/label?image={image_id}&tag=final", "PUT", body,
          {"Content-Type": f"multipart/form-data; boundary={boundary}"})


def _nifti(body: bytes) -> nib.Nifti1Image:
    return nib.Nifti1Image.from_bytes(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _first_losses(run: Path) -> dict[str, float]:
    """The losses the bundle logged for its first training iteration (``Epoch: 1/N, Iter: 1/M -- loss: ...``), from
    the run's ``train.log``."""
    for line in (run / "train.log").read_text().splitlines():
        found = re.search(r"Epoch: 1/\d+, Iter: 1/\d+ -- (.*)", line)
        if found:
            return {k: float(v) for k, v in re.findall(r"(\S+): (\S+)", found.group(1))}
    raise AssertionError(f"no first iteration in {run / 'train.log'}")


def _new_run(runs: Path, known: set[Path], logged: str = "") -> Path:
    """The run folder in ``runs`` that is not in ``known``, once its ``train.log`` holds ``logged`` (bounded)."""
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        for run in set(runs.glob("*/")) - known:
            log = run / "train.log"
            if log.is_file() and logged in log.read_text():
                return run
        time.sleep(0.5)
    raise AssertionError(f"no new run in {runs} logged {logged!r} within {TRAIN_TIMEOUT_S} s")


def _children() -> dict[int, list[int]]:
    """``{parent pid: child pids}`` of every process on this machine (Linux ``/proc``)."""
    tree: dict[int, list[int]] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            ppid = int(stat.read_text().rsplit(")", 1)[1].split()[1])
        except (OSError, IndexError, ValueError):
            continue  # gone meanwhile
        tree.setdefault(ppid, []).append(int(stat.parent.name))
    return tree


def _descendants(pid: int) -> set[int]:
    tree, found, todo = _children(), set(), [pid]
    while todo:
        for child in tree.get(todo.pop(), []):
            if child not in found:
                found.add(child)
                todo.append(child)
    return found


def _alive(pid: int) -> bool:
    """Whether ``pid`` runs (a zombie, dead but not yet reaped, does not)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return False


def _command(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


def _wait_for_training(base: str) -> dict:
    deadline = time.monotonic() + TRAIN_TIMEOUT_S
    while time.monotonic() < deadline:
        task = json.loads(_call(f"{base}/train/", timeout=30))
        if task["status"] not in ("SUBMITTED", "RUNNING"):
            return task
        time.sleep(3)
    raise AssertionError(f"training did not finish within {TRAIN_TIMEOUT_S} s: {task}")


@pytest.fixture(scope="module")
def ml_python() -> str:
    py = _monailabel_python()
    if py is None:
        pytest.skip(
            "MONAI Label is not installed: set MEDSEMISEG_MONAILABEL_PYTHON to the Python of a MONAI Label venv "
            "(see the module docstring / docs/bundles.md)"
        )
    return py


def _initial_weights(bundle: str, cache: Path, path: Path) -> None:
    """A trained-weights stand-in: the network's initial weights, as the bundle's model.pt."""
    from monai.bundle import ConfigWorkflow

    torch.manual_seed(1)
    wf = ConfigWorkflow(
        config_file=str(REPO / f"bundles/{bundle}/configs/train.json"), workflow_type=None, run_id="inferring",
        meta_file=str(REPO / f"bundles/{bundle}/configs/metadata.json"), logging_file=False,
        bundle_root=str(REPO / f"bundles/{bundle}"), cache_dir=str(cache),
    )
    wf.initialize()
    torch.save(wf.parser.get_parsed_content("network_def").state_dict(), path)


def _own_inference(weights: Path, image: Path, out: Path, cache: Path) -> np.ndarray:
    """The covid bundle's own ``run inferring`` of ``image`` with ``weights``."""
    from monai.bundle import ConfigWorkflow

    (out / "models").mkdir(parents=True)
    shutil.copy(weights, out / "models" / "model.pt")
    wf = ConfigWorkflow(
        config_file=str(REPO / "bundles/covid/configs/train.json"), workflow_type=None, run_id="inferring",
        meta_file=str(REPO / "bundles/covid/configs/metadata.json"), logging_file=False,
        bundle_root=str(REPO / "bundles/covid"), cache_dir=str(cache), output_dir=str(out), dataset_dir=str(image),
    )
    wf.initialize()
    wf.run()
    return np.asarray(nib.load(out / "outputs" / f"{image.name[:-len('.nii.gz')]}_seg.nii.gz").dataobj)


def test_bundles_served_and_trained_by_monailabel(ml_python, tmp_path):
    from PIL import Image
    from pydicom.data import get_testdata_file

    from medsemiseg.data.builtin import ensure_synthetic_datalist
    from medsemiseg.data.io import read_image

    cache = tmp_path / "cache"
    for bundle in ("covid", "chase"):
        _initial_weights(bundle, cache, tmp_path / f"{bundle}_initial.pt")

    # the app inside a copy of the repository layout (medsemiseg linked in), bundles installed with the command
    repo = tmp_path / "repo"
    app = repo / "bundles" / "monailabel_app"
    shutil.copytree(REPO / "bundles" / "monailabel_app", app,
                    ignore=shutil.ignore_patterns("__pycache__", "model", "runs", "logs", "bin"))
    (repo / "medsemiseg").symlink_to(REPO / "medsemiseg", target_is_directory=True)
    for bundle in ("covid", "chase"):
        subprocess.run([sys.executable, "-m", "medsemiseg.labelapp", "install", str(REPO / "bundles" / bundle),
                        "--app", str(app), "--model", str(tmp_path / f"{bundle}_initial.pt")],
                       check=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    subprocess.run([sys.executable, "-m", "medsemiseg.labelapp", "install", str(REPO / "bundles" / "covid"),
                    "--app", str(app), "--name", "fresh", "--untrained"],  # to be trained from the datastore first
                   check=True, cwd=tmp_path, capture_output=True, text=True, timeout=120)
    served = app / "model" / "covid" / "models" / "model.pt"

    # studies: CT slices of the synthetic set (test, labelled, unlabelled), a picture, a colour photograph, an
    # X x Y x 1 NIfTI, a DICOM slice
    datalist = Path(ensure_synthetic_datalist("covid", cache, "1/8", 0))
    split = json.loads(datalist.read_text())
    studies = tmp_path / "studies"
    studies.mkdir()
    image = datalist.parent / split["test"][0]["image"]
    shutil.copy(image, studies / image.name)
    image_id = image.name[: -len(".nii.gz")]
    to_label = [(datalist.parent / it["image"], datalist.parent / it["label"]) for it in split["labeled"][:2]]
    for img, _ in to_label:
        shutil.copy(img, studies / img.name)
    for it in split["unlabeled"][:3]:
        shutil.copy(datalist.parent / it["image"], studies / Path(it["image"]).name)
    slice_hu = np.asarray(nib.load(image).dataobj)
    grey = np.clip((slice_hu.T + 1000) / 8, 0, 255).astype(np.uint8)
    Image.fromarray(grey).save(studies / "picture.png")
    Image.fromarray(np.stack([grey, grey // 2, grey // 3], -1)).save(studies / "colour.png")
    flat = nib.load(datalist.parent / split["test"][1]["image"])
    nib.save(nib.Nifti1Image(np.asarray(flat.dataobj)[..., None], flat.affine), str(studies / "flat.nii.gz"))
    shutil.copy(get_testdata_file("CT_small.dcm"), studies / "ct_small.dcm")

    port = _free_port()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", "").split(os.pathsep) if "venv" not in p)
    env["OMP_NUM_THREADS"] = "1"  # one torch thread: the test machine may have 2 cores, others busy
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [ml_python, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
         "--conf", "models", "covid,chase,fresh", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    marker = tmp_path / "request_code_ran"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        info = None
        while time.monotonic() < deadline and server.poll() is None:
            try:
                info = json.loads(_call(f"{base}/info/", timeout=5))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(2)
        log.flush()
        assert info is not None, f"server did not come up:\n{(tmp_path / 'server.log').read_text()[-4000:]}"
        assert info["models"]["covid"]["labels"] == {"ground-glass": 1, "consolidation": 2, "pleural effusion": 3}
        assert info["models"]["chase"]["labels"] == {"vessel": 1}
        assert {m: info["models"][m]["dimension"] for m in ("covid", "chase")} == {"covid": 2, "chase": 2}
        assert set(info["trainers"]) == {"covid", "chase", "fresh"}
        assert info["trainers"]["covid"]["config"]["method"] == "supmix_sufd"
        assert info["datastore"]["total"] == 10  # the .dcm study is listed

        # ---- inference
        body = _call(f"{base}/infer/covid?image={image_id}&output=image", "POST")
        picture = _call(f"{base}/infer/covid?image=picture&output=image", "POST")
        vessels = _call(f"{base}/infer/chase?image=colour&output=image", "POST")
        flat_label = _nifti(_call(f"{base}/infer/covid?image=flat&output=image", "POST"))
        dicom_label = _nifti(_call(f"{base}/infer/covid?image=ct_small&output=image", "POST"))
        code, detail = _refused(f"{base}/infer/covid?image=colour&output=image")
        assert code == 422 and "channels" in detail  # 3 channels: the CT network takes 1
        code, detail = _refused(f"{base}/infer/covid?image=no_such_study&output=image")
        assert code == 404 and "'no_such_study'" in detail and "datastore" in detail
        code, detail = _refused(f"{base}/infer/liver?image={image_id}&output=image")
        assert code == 404 and "'liver'" in detail and "covid, chase, fresh" in detail
        code, detail = _refused(f"{base}/infer/fresh?image={image_id}&output=image")
        assert code == 409 and "no trained weights yet" in detail and "POST /train/fresh" in detail

        # ---- training requests that are refused before anything runs
        code, detail = _refused(f"{base}/train/covid", {"max_epochs": f"$open({str(marker)!r}, 'w').close() or 1"})
        assert code == 422 and detail.startswith("training request refused: max_epochs=") and "refused" in detail
        code, detail = _refused(f"{base}/train/covid", {"method_options": {"adv_weight": "@learning_rate"}})
        assert code == 422 and "method_options#adv_weight" in detail
        code, detail = _refused(f"{base}/train/covid", {"dataset_dir": "/"})
        assert code == 422 and "dataset_dir: not accepted" in detail
        code, detail = _refused(f"{base}/train/liver", {})
        assert code == 404 and "this app trains covid, chase, fresh" in detail
        assert not marker.exists() and not (app / "runs").exists()
        code, _ = _refused(f"{base}/train/", method="GET")
        assert code == 404  # "No Train Tasks Found": nothing was submitted

        # ---- label two studies; a training that fails keeps the served model and says why
        for img, label in to_label:
            _put_label(base, img.name[: -len(".nii.gz")], label)
        stats = json.loads(_call(f"{base}/datastore/?output=stats"))
        assert stats["label_tags"] == {"final": 2}
        initial = _sha(served)
        # from scratch ("pretrained": false; MONAI Label's default continues from the served model), so that the
        # label map the served model gives surely changes (checked against the bundle's own inference)
        tiny = {"max_epochs": 4, "epoch_length": 2, "batch_size": 2, "unlabeled_batch_size": 2, "device": "cpu",
                "method": "supmix_sufd", "val_split": 1, "pretrained": False}
        _post_json(f"{base}/train/covid", {**tiny, "method_options": {"no_such_option": 1}})
        task = _wait_for_training(base)
        assert task["status"] == "ERROR", task
        assert "no_such_option" in task["details"][-1] and "served model is unchanged" in task["details"][-1]
        assert _sha(served) == initial

        # ---- a few SupMix + SUFD iterations: DONE, a new model.pt, /infer with the new weights; while it runs,
        # train_stats (what 3D Slicer's progress reads) moves from epoch to epoch
        runs = app / "runs" / "covid"
        known = set(runs.glob("*/"))
        _post_json(f"{base}/train/covid", tiny)
        progress: list[dict] = []
        deadline = time.monotonic() + TRAIN_TIMEOUT_S
        while time.monotonic() < deadline:
            stats = json.loads(_call(f"{base}/info/", timeout=30))["train_stats"]["covid"]
            if stats.get("status") == "running":
                progress.append(stats)
            if stats.get("status") == "finished" or json.loads(_call(f"{base}/train/", timeout=30))["status"] not in (
                    "SUBMITTED", "RUNNING"):
                break
            time.sleep(0.2)
        task = _wait_for_training(base)
        assert task["status"] == "DONE", "\n".join(task.get("details", []))
        seen = sorted({(p["epoch"], p["status"]) for p in progress})
        epochs = [epoch for epoch, _ in seen if epoch >= 1]
        assert len(epochs) >= 2 and set(epochs) <= {1, 2, 3, 4}, f"train_stats while training: {seen}"
        assert all(p["total_epochs"] == 4 and p["total_time"].count(":") == 2 for p in progress)
        assert all(0 <= p["best_metric"] <= 1 for p in progress if p["epoch"] >= 1)  # validated every epoch
        [scratch_run] = set(runs.glob("*/")) - known
        assert _sha(served) != initial
        trained = tmp_path / "trained.pt"
        shutil.copy(served, trained)
        after = _call(f"{base}/infer/covid?image={image_id}&output=image", "POST")
        train_stats = json.loads(_call(f"{base}/info/"))["train_stats"]["covid"]
        assert (train_stats["labelled"], train_stats["validation"]) == (1, 1)
        assert train_stats["unlabelled"] == 7  # 3 + the test slice, picture, flat and DICOM studies; not colour
        assert (train_stats["epoch"], train_stats["total_epochs"], train_stats["status"]) == (4, 4, "finished")

        # ---- fine-tuning (MONAI Label's default, "pretrained" left out) starts from the served model: the same
        # training (same seed, same first batch) starts with a lower loss than the run from scratch did; then
        # DELETE /train stops it: its whole process tree ends and the served model stays as it was
        known = set(runs.glob("*/"))
        before = _descendants(server.pid)
        _post_json(f"{base}/train/covid", {**{k: v for k, v in tiny.items() if k != "pretrained"}, "max_epochs": 200})
        tuned_run = _new_run(runs, known, logged=", Iter: 1/")  # the bundle is training
        tree = _descendants(server.pid) - before  # MONAI Label's task process, the bundle's training, ...
        assert (tuned_run / "pretrained.pt").read_bytes() == trained.read_bytes()  # its starting point
        scratch, tuned = _first_losses(scratch_run), _first_losses(tuned_run)
        assert tuned["loss"] < scratch["loss"] and tuned["loss_sup"] < scratch["loss_sup"], (tuned, scratch)
        assert any("monai.bundle run training" in _command(pid) for pid in tree), [_command(p) for p in tree]
        task = json.loads(_call(f"{base}/train/", "DELETE"))
        assert task["status"] == "STOPPED", task
        deadline = time.monotonic() + 60
        while any(_alive(pid) for pid in tree) and time.monotonic() < deadline:
            time.sleep(0.5)
        assert not [_command(pid) for pid in tree if _alive(pid)], "processes left after DELETE /train"
        assert json.loads(_call(f"{base}/train/"))["status"] == "STOPPED"
        assert json.loads(_call(f"{base}/info/"))["train_stats"]["covid"]["status"] == "stopped"
        assert _sha(served) == _sha(trained)
    finally:
        try:
            os.killpg(server.pid, signal.SIGTERM)
            server.wait(timeout=30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            try:
                os.killpg(server.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            server.wait(timeout=30)
        log.close()

    # inference results: shape, classes, geometry, class-index type
    label = np.asarray(_nifti(body).dataobj)
    src = nib.load(image)
    assert label.shape == src.shape, f"label map {label.shape} vs study {src.shape}"
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
    assert np.allclose(_nifti(body).affine, src.affine, atol=1e-4), (_nifti(body).affine, src.affine)
    assert np.issubdtype(label.dtype, np.integer), label.dtype
    assert picture[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.asarray(Image.open(io.BytesIO(picture))).shape == grey.shape  # rows x columns of the picture
    assert vessels[:8] == b"\x89PNG\r\n\x1a\n"
    vessel_map = np.asarray(Image.open(io.BytesIO(vessels)))
    assert vessel_map.shape == grey.shape and set(np.unique(vessel_map).tolist()) <= {0, 1}
    assert flat_label.shape == flat.shape + (1,)  # the study's X x Y x 1, not X x Y
    assert np.allclose(flat_label.affine, flat.affine, atol=1e-4)
    dicom = read_image(studies / "ct_small.dcm")
    assert dicom_label.shape == tuple(dicom.shape[1:])
    assert np.allclose(dicom_label.affine, np.asarray(dicom.affine), atol=1e-3)  # the slice's position and spacing

    # the same weights through the bundle's own inference give the same label maps, before and after training
    own_before = _own_inference(tmp_path / "covid_initial.pt", image, tmp_path / "own_before", cache)
    own_after = _own_inference(trained, image, tmp_path / "own_after", cache)
    own_flat = _own_inference(tmp_path / "covid_initial.pt", studies / "flat.nii.gz", tmp_path / "own_flat", cache)
    assert np.array_equal(own_before, label)
    assert np.array_equal(own_flat, np.asarray(flat_label.dataobj))  # both X x Y x 1
    assert not np.array_equal(own_before, own_after), "training changed no pixel of this slice: pick another slice"
    assert np.array_equal(own_after, np.asarray(_nifti(after).dataobj))
