"""MONAI Label round trip: the covid bundle, copied into the app's ``model/`` folder, served and queried over HTTP.

What a user does (``bundles/covid/docs/README.md``): copy the bundle with its trained ``models/model.pt`` into
``bundles/monailabel_app/model/covid``, run ``monailabel start_server --app ... --studies ... --conf models covid``
and ask for a label map. This test does exactly that on 127.0.0.1 with a free port, posts an inference request for
a study (a 2D CT slice from the built-in synthetic data set), and checks that the returned label map has the
study's shape, only the bundle's classes, and is the very label map the bundle's own ``run inferring`` writes with
the same weights. The server is always stopped (its whole process group), and every wait is bounded.

MONAI Label is heavy (about 3.7 GB, 6 minutes to install) and its dependencies clash with this package's
environment (it needs ``pydicom<3`` for ``pydicom-seg``; its PyPI ``torchvision`` does not load with the CPU build
of PyTorch), so it lives in its own virtual environment. Point ``MEDSEMISEG_MONAILABEL_PYTHON`` at that
environment's Python (or install ``monailabel`` in the current one); otherwise the test is skipped. Set-up, as in
the bundle README::

    python3 -m venv .mlvenv
    .mlvenv/bin/pip install -c constraints-cpu.txt monailabel "pydicom<3" "pynetdicom<3" "dicomweb-client[gcp]<0.60"
    .mlvenv/bin/pip uninstall -y torchvision
    MEDSEMISEG_MONAILABEL_PYTHON=.mlvenv/bin/python python -m pytest tests/test_monailabel.py -m monailabel
"""

from __future__ import annotations

import gzip
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch

REPO = Path(__file__).resolve().parents[1]
STARTUP_TIMEOUT_S = 240
REQUEST_TIMEOUT_S = 180

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
            capture_output=True, text=True, timeout=120,
        )
        if probe.returncode == 0:
            return py
    return None


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _get(url: str, timeout: float) -> bytes:
    with urllib.request.urlopen(url, timeout=timeout) as r:
        return r.read()


def _post(url: str, timeout: float) -> bytes:
    req = urllib.request.Request(url, data=b"", method="POST")
    with urllib.request.urlopen(req, timeout=timeout) as r:
        return r.read()


@pytest.fixture(scope="module")
def ml_python() -> str:
    py = _monailabel_python()
    if py is None:
        pytest.skip(
            "MONAI Label is not installed: set MEDSEMISEG_MONAILABEL_PYTHON to the Python of a MONAI Label venv "
            "(see the module docstring / bundles/covid/docs/README.md)"
        )
    return py


def test_bundle_served_by_monailabel_returns_the_bundle_label_map(ml_python, tmp_path):
    from medsemiseg.bundle_utils import resolve_datalist
    from monai.bundle import ConfigWorkflow

    # a trained-weights stand-in: the network's initial weights, saved as the bundle's models/model.pt
    cache = tmp_path / "cache"
    wf_kwargs = dict(
        config_file=str(REPO / "bundles/covid/configs/train.json"),
        meta_file=str(REPO / "bundles/covid/configs/metadata.json"),
        logging_file=False, workflow_type=None, bundle_root=str(REPO / "bundles/covid"), cache_dir=str(cache),
    )
    torch.manual_seed(1)
    net = ConfigWorkflow(run_id="inferring", **wf_kwargs)
    net.initialize()
    state = net.parser.get_parsed_content("network_def").state_dict()

    # the app, with the bundle copied (links dereferenced) into model/covid
    app = tmp_path / "app"
    # (model/ left out: a user's own copy of a bundle there, as the README says to make, must not clash)
    shutil.copytree(REPO / "bundles/monailabel_app", app, ignore=shutil.ignore_patterns("__pycache__", "model"))
    bundle = app / "model" / "covid"
    shutil.copytree(REPO / "bundles/covid", bundle, symlinks=False,
                    ignore=shutil.ignore_patterns("cache", "eval", "logs", "outputs", "*.pt", "*.ts"))
    torch.save(state, bundle / "models" / "model.pt")

    datalist = Path(resolve_datalist(None, "covid", cache, "1/8", 0))
    image = datalist.parent / json.loads(datalist.read_text())["test"][0]["image"]
    studies = tmp_path / "studies"
    studies.mkdir()
    shutil.copy(image, studies / image.name)
    image_id = image.name[: -len(".nii.gz")]
    from PIL import Image  # a picture study too: its label map must come back as a (lossless) PNG, not HTTP 500

    slice_hu = np.asarray(nib.load(image).dataobj)
    Image.fromarray(np.clip((slice_hu.T + 1000) / 8, 0, 255).astype(np.uint8)).save(studies / "picture.png")
    rgb = np.clip((slice_hu.T + 1000) / 8, 0, 255).astype(np.uint8)
    Image.fromarray(np.stack([rgb] * 3, -1)).save(studies / "colour.png")  # 3 channels: the CT network takes 1

    port = _free_port()
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")]).rstrip(os.pathsep),
               OMP_NUM_THREADS="2")
    log = open(tmp_path / "server.log", "w")
    server = subprocess.Popen(
        [ml_python, "-m", "monailabel.main", "start_server", "--app", str(app), "--studies", str(studies),
         "--conf", "models", "covid", "--host", "127.0.0.1", "--port", str(port)],
        cwd=tmp_path, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + STARTUP_TIMEOUT_S
        info = None
        while time.monotonic() < deadline:
            if server.poll() is not None:
                break
            try:
                info = json.loads(_get(f"{base}/info/", timeout=5))
                break
            except (urllib.error.URLError, ConnectionError, TimeoutError, OSError):
                time.sleep(2)
        log.flush()
        assert info is not None, f"server did not come up:\n{(tmp_path / 'server.log').read_text()[-4000:]}"
        assert info["models"]["covid"]["labels"] == {"ground-glass": 1, "consolidation": 2, "pleural effusion": 3}
        assert info["models"]["covid"]["dimension"] == 2

        body = _post(f"{base}/infer/covid?image={image_id}&output=image", timeout=REQUEST_TIMEOUT_S)
        picture_body = _post(f"{base}/infer/covid?image=picture&output=image", timeout=REQUEST_TIMEOUT_S)
        with pytest.raises(urllib.error.HTTPError) as refused:  # a failure reaches the client with its message
            _post(f"{base}/infer/covid?image=colour&output=image", timeout=REQUEST_TIMEOUT_S)
        assert refused.value.code == 422
        assert "channels" in json.loads(refused.value.read())["detail"]
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

    served = nib.Nifti1Image.from_bytes(gzip.decompress(body) if body[:2] == b"\x1f\x8b" else body)
    label = np.asarray(served.dataobj)
    src = nib.load(image)
    assert label.shape == src.shape, f"label map {label.shape} vs study {src.shape}"
    assert set(np.unique(label).tolist()) <= {0, 1, 2, 3}
    # on the study's grid (MONAI Label's default ITK writer dropped a 2D affine) and as class indices
    assert np.allclose(served.affine, src.affine, atol=1e-4), (served.affine, src.affine)
    assert np.issubdtype(label.dtype, np.integer), label.dtype
    import io

    assert picture_body[:8] == b"\x89PNG\r\n\x1a\n"
    assert np.asarray(Image.open(io.BytesIO(picture_body))).shape == slice_hu.T.shape  # rows x columns of the picture

    # the same weights through the bundle's own inference give the same label map
    (tmp_path / "run" / "models").mkdir(parents=True)
    torch.save(state, tmp_path / "run" / "models" / "model.pt")
    wf = ConfigWorkflow(run_id="inferring", output_dir=str(tmp_path / "run"), dataset_dir=str(image), **wf_kwargs)
    wf.initialize()
    wf.run()
    own = np.asarray(nib.load(tmp_path / "run" / "outputs" / f"{image_id}_seg.nii.gz").dataobj)
    assert np.array_equal(own, label)
