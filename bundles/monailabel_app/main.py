"""A MONAI Label app that serves and trains this repository's bundles from local folders.

It is the ``monaibundle`` sample app reduced to what a local, zoo-free deployment needs, plus semi-supervised
training from the datastore (docs/bundles.md, 'MONAI Label'):

- ``--conf models covid,chase`` serves ``model/covid/`` and ``model/chase/``, copies of the bundles made by
  ``python -m medsemiseg.labelapp install bundles/covid`` (and ``bundles/chase``), which also replaces an earlier
  copy. It never contacts the MONAI model zoo: a bundle folder that is missing is an error naming the command.
- Inference (``POST /infer/<model>``) goes through :class:`lib.infers.BundleInferTask`, which reads the bundle's
  ``configs/inference.json`` and ``configs/metadata.json`` as MONAI Label's own ``BundleInferTask`` does but needs
  no ``torchvision`` (not installable next to the CPU build of PyTorch).
- Training (``POST /train/<model>``) goes through :class:`lib.trainers.DatastoreTrainTask`: the studies with a final
  label are the labelled set (``val_split`` of them validate), every other study is unlabelled, and the bundle's own
  training runs on them; on success the best validated model is served, on failure the old one stays and
  ``GET /train/`` shows the error. A request may set only the listed bundle keys, as plain values
  (:mod:`medsemiseg.labelapp.params`); it is checked when it arrives (HTTP 422) and again in the training process.
- The local datastore lists single-file DICOM studies (``*.dcm``, one 2D slice each) next to MONAI Label's own
  extensions; an unknown model, strategy or study id is answered with HTTP 404 naming it and what exists.
- ``medsemiseg`` is imported from the repository holding this app when the environment does not have it, so the
  start command needs neither an activated environment nor ``PYTHONPATH``.

Start it::

    .mlvenv/bin/python -m monailabel.main start_server --app bundles/monailabel_app --studies path/to/studies \\
        --conf models covid,chase
"""

from __future__ import annotations

import importlib.util
import logging
import os
import sys
from typing import Dict

if importlib.util.find_spec("medsemiseg") is None:  # the app inside the repository: use its medsemiseg
    _repo = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    if not os.path.isfile(os.path.join(_repo, "medsemiseg", "__init__.py")):
        raise ImportError(
            f"{os.path.abspath(__file__)}: medsemiseg is not importable; install it into this environment "
            "(pip install --no-deps -e <medsemiseg repository>) or set PYTHONPATH to the repository."
        )
    sys.path.insert(0, _repo)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (_repo, os.environ.get("PYTHONPATH", "")) if p)

import monailabel  # noqa: E402
from fastapi import HTTPException  # noqa: E402
from monailabel.config import settings  # noqa: E402
from monailabel.datastore.local import LocalDatastore  # noqa: E402
from monailabel.interfaces.app import MONAILabelApp  # noqa: E402
from monailabel.interfaces.datastore import Datastore  # noqa: E402
from monailabel.interfaces.tasks.infer_v2 import InferTask  # noqa: E402
from monailabel.interfaces.tasks.strategy import Strategy  # noqa: E402
from monailabel.interfaces.tasks.train import TrainTask  # noqa: E402
from monailabel.tasks.activelearning.first import First  # noqa: E402
from monailabel.tasks.activelearning.random import Random  # noqa: E402

from lib.infers import BundleInferTask, local_bundles  # noqa: E402
from lib.trainers import DatastoreTrainTask  # noqa: E402
from medsemiseg.labelapp.params import RequestError, check_train_request  # noqa: E402
from medsemiseg.labelapp.train import TrainingError  # noqa: E402

logger = logging.getLogger(__name__)

#: single-file DICOM studies, listed next to MONAI Label's default extensions
DICOM_EXTENSIONS = ["*.dcm"]


class MyApp(MONAILabelApp):
    """Serves and trains the bundles named by ``--conf models`` from ``<app>/model/<name>/``."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.models = local_bundles(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"medsemiseg bundles ({', '.join(self.models)})",
            description="Semi-supervised 2D segmentation bundles (medsemiseg), served and trained from local folders",
            version=monailabel.__version__,
        )

    def init_datastore(self) -> Datastore:
        if self.studies.startswith(("http://", "https://")):
            return super().init_datastore()  # DICOMweb / XNAT / DSA, as MONAI Label sets them up
        extensions = list(settings.MONAI_LABEL_DATASTORE_FILE_EXT)
        extensions += [e for e in DICOM_EXTENSIONS if e not in extensions]
        return LocalDatastore(
            self.studies,
            extensions=extensions,
            auto_reload=settings.MONAI_LABEL_DATASTORE_AUTO_RELOAD,
            read_only=settings.MONAI_LABEL_DATASTORE_READ_ONLY,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = BundleInferTask(path, self.conf)
            logger.info(f"+++ Adding Inferer:: {name} => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        runs = os.path.join(self.app_dir, "runs")
        return {name: DatastoreTrainTask(name, path, os.path.join(runs, name)) for name, path in self.models.items()}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}

    def on_init_complete(self):
        super().on_init_complete()
        _check_train_requests_on_arrival()

    # ------------------------------------------------------------------------------------------- requests

    def infer(self, request, datastore=None):
        """MONAI Label's inference, with an unknown model or study id answered by HTTP 404 naming it (MONAI Label
        answers 500, or reads the datastore folder itself as the study)."""
        model = request.get("model")
        if model not in self._infers:
            raise HTTPException(
                status_code=404, detail=f"no model {model!r}: this app serves {', '.join(self._infers)}."
            )
        image = request.get("image")
        if isinstance(image, str) and image and not os.path.exists(image):
            store = datastore if datastore else self.datastore()
            if image not in store.list_images():
                raise HTTPException(
                    status_code=404,
                    detail=f"no study {image!r} in the datastore {self.studies}: give the id of a study listed by "
                    "GET /datastore/?output=all, or add it first (PUT /datastore/image?image=<id> with the file).",
                )
        return super().infer(request, datastore)

    def next_sample(self, request):
        strategy = request.get("strategy") or "random"
        if strategy not in self._strategies:
            raise HTTPException(
                status_code=404,
                detail=f"no strategy {strategy!r}: this app offers {', '.join(self._strategies)}.",
            )
        return super().next_sample(request)

    def check_train_request(self, model: str, params) -> None:
        """Refuse a training request before it is queued: an unknown model (404), a setting that is not listed or
        not plain data (422); see :mod:`medsemiseg.labelapp.params`."""
        if model not in self._trainers:
            raise HTTPException(status_code=404, detail=f"no model {model!r} to train: this app trains "
                                                        f"{', '.join(self._trainers)}.")
        try:
            check_train_request({"model": model, **(params or {})})
        except RequestError as e:
            raise HTTPException(status_code=422, detail=f"training request refused: {e}") from None

    def train(self, request):
        """MONAI Label's training; a refused request or a failed training ends the training process with its
        one-line reason (what ``GET /train/`` shows last) instead of a traceback, or, in the server (``run_sync``),
        is answered with HTTP 422 / 500 and the reason."""
        try:
            return super().train(request)
        except (RequestError, TrainingError) as e:
            status = 422 if isinstance(e, RequestError) else 500
            if self._server_mode:
                raise HTTPException(status_code=status, detail=str(e)) from None
            logger.error(str(e))
            raise SystemExit(f"error: {e}") from None


def _check_train_requests_on_arrival() -> None:
    """Check ``POST /train/<model>`` requests when they arrive, not only in the training process MONAI Label starts
    for them: MONAI Label's endpoint answers "SUBMITTED" to any request and hands it to
    ``monailabel.endpoints.train.run_model``, which is wrapped here to call :meth:`MyApp.check_train_request`
    first (the endpoint looks the function up in its module on every request)."""
    from monailabel.endpoints import train as endpoint
    from monailabel.interfaces.utils.app import app_instance

    submit = endpoint.run_model
    if getattr(submit, "checks_requests", False):
        return

    def run_model(model, params=None, run_sync=False, enqueue=False):
        app_instance().check_train_request(model, params)  # the current app (POST /reload makes a new one)
        return submit(model, params, run_sync, enqueue)

    run_model.checks_requests = True  # type: ignore[attr-defined]
    endpoint.run_model = run_model
