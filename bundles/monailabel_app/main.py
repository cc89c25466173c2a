"""A minimal MONAI Label app that serves this repository's bundles from local folders.

It is the ``monaibundle`` sample app reduced to what a local, zoo-free deployment needs:

- ``--conf models covid`` (comma-separated for several) serves ``model/covid/``, a copy of ``bundles/covid``
  (``cp -rL bundles/covid <app>/model/covid``) with a trained ``models/model.pt``. Unlike the sample app it never
  contacts the MONAI model zoo: a bundle folder that is missing is an error naming the folder and the copy command.
- Inference goes through :class:`lib.infers.BundleInferTask`, which reads the bundle's ``configs/inference.json``
  (``network_def``, ``preprocessing``, ``inferer``, ``postprocessing``) and ``configs/metadata.json`` (class names,
  2D input) as MONAI Label's own ``BundleInferTask`` does, but needs no ``torchvision`` (not installable with the
  CPU build of PyTorch here): the bundle's postprocessing already restores the original image size.
- No trainers: the semi-supervised training needs the unlabelled stream and runs with the bundle CLI
  (``python -m monai.bundle run training ...``); copy the new ``models/model.pt`` into the app to serve it.

Start it (the MONAI Label environment must be able to import ``medsemiseg``; see ``bundles/covid/docs/README.md``)::

    monailabel start_server --app bundles/monailabel_app --studies path/to/images --conf models covid
"""

from __future__ import annotations

import logging
from typing import Dict

import monailabel
from monailabel.interfaces.app import MONAILabelApp
from monailabel.interfaces.tasks.infer_v2 import InferTask
from monailabel.interfaces.tasks.strategy import Strategy
from monailabel.interfaces.tasks.train import TrainTask
from monailabel.tasks.activelearning.first import First
from monailabel.tasks.activelearning.random import Random

from lib.infers import BundleInferTask, local_bundles

logger = logging.getLogger(__name__)


class MyApp(MONAILabelApp):
    """Serves the bundles named by ``--conf models`` from ``<app>/model/<name>/``."""

    def __init__(self, app_dir: str, studies: str, conf: Dict[str, str]):
        self.models = local_bundles(app_dir, conf)
        super().__init__(
            app_dir=app_dir,
            studies=studies,
            conf=conf,
            name=f"medsemiseg bundles ({', '.join(self.models)})",
            description="Semi-supervised 2D segmentation bundles (medsemiseg), served from local bundle folders",
            version=monailabel.__version__,
        )

    def init_infers(self) -> Dict[str, InferTask]:
        infers: Dict[str, InferTask] = {}
        for name, path in self.models.items():
            task = BundleInferTask(path, self.conf)
            logger.info(f"+++ Adding Inferer:: {name} => {task}")
            infers[name] = task
        return infers

    def init_trainers(self) -> Dict[str, TrainTask]:
        return {}

    def init_strategies(self) -> Dict[str, Strategy]:
        return {"random": Random(), "first": First()}
