"""Training task for a served medsemiseg bundle, from MONAI Label's datastore (``POST /train/<model>``).

Labelled = the studies with a final label, unlabelled = every other study; the work (request check, preparation,
the bundle's training in a child process, serving the best validated model) is
:func:`medsemiseg.labelapp.train.train_from_datastore`, which runs without MONAI Label and is tested on its own.
"""

from __future__ import annotations

import json
import logging
import os
from typing import Any, Dict

from monailabel.interfaces.datastore import Datastore, DefaultLabelTag
from monailabel.interfaces.tasks.train import TrainTask

from medsemiseg.atomic_io import atomic_write_text
from medsemiseg.labelapp.params import TRAIN_KEYS, train_defaults
from medsemiseg.labelapp.train import train_from_datastore, train_stats

logger = logging.getLogger(__name__)

LAST_RUN = "last_run.json"


def _say(line: str) -> None:
    """A progress line on stdout, at once: MONAI Label reads the training process's output line by line and shows
    the last lines in ``GET /train/``."""
    print(line, flush=True)


def _training_runs() -> bool | None:
    """Whether this server runs a training task now (MONAI Label's record of its background training process);
    ``None`` where MONAI Label keeps no such record (another version)."""
    try:
        from monailabel.utils.async_tasks.utils import background_processes
    except ImportError:
        return None
    return bool(background_processes.get("train"))


class DatastoreTrainTask(TrainTask):
    """Semi-supervised training of the bundle served from ``path`` on the datastore's studies."""

    def __init__(self, name: str, path: str, runs: str):
        self.name = name
        self.path = path
        self.runs = runs
        keys = ", ".join(TRAIN_KEYS)
        super().__init__(
            f"Semi-supervised training of '{name}' from the datastore: studies with a final label are labelled "
            f"(val_split of them validate), every other study is unlabelled; on success the best validated model is "
            f"served. Settings: {keys}."
        )

    def config(self) -> Dict[str, Any]:
        return train_defaults(os.path.join(self.path, "configs", "train.json"))

    def stats(self) -> Dict[str, Any]:
        """The running or last training's progress, rewritten by the bundle every epoch (``epoch``,
        ``total_epochs``, ``best_metric``, ``total_time``: what 3D Slicer's progress reads; ``status`` ``running``,
        ``finished``, or ``stopped`` for one that ended unfinished), with the last successful run's result (served
        model, run folder, split sizes, summary) next to them; ``{}`` before any training."""
        try:
            with open(os.path.join(self.runs, LAST_RUN)) as f:
                last = json.load(f)
        except (OSError, ValueError):
            last = {}
        return {**last, **train_stats(self.runs, running=_training_runs())}

    def __call__(self, request, datastore: Datastore):
        final = DefaultLabelTag.FINAL.value
        labelled = {
            i: (datastore.get_image_uri(i), datastore.get_label_uri(i, final)) for i in datastore.get_labeled_images()
        }
        unlabelled = {i: datastore.get_image_uri(i) for i in datastore.get_unlabeled_images()}
        result = train_from_datastore(self.path, labelled, unlabelled, self.runs, request, log=_say)
        atomic_write_text(os.path.join(self.runs, LAST_RUN), json.dumps(result, indent=2))
        return result
