"""A training's progress as a small JSON file, rewritten every epoch: what MONAI Label serves as ``train_stats``.

MONAI Label shows a training's progress from its train task's ``stats()`` (``GET /info/``, ``train_stats``), and
3D Slicer's MONAI Label module draws its progress bar from ``epoch``, ``total_epochs``, ``best_metric`` and
``total_time``. The bundles attach :class:`TrainStatsWriter` to the trainer; with a path (the bundles'
``train_stats_file``, which the MONAI Label app sets) it writes those keys after every epoch (after that epoch's
validation) and when the training ends; without one it does nothing.
"""

from __future__ import annotations

import datetime
import json
import os
import time
from pathlib import Path
from typing import Any

from ignite.engine import Events

from medsemiseg.atomic_io import atomic_write_text

__all__ = ["TrainStatsWriter"]


class TrainStatsWriter:
    """Write ``{"epoch", "total_epochs", "best_metric", "best_metric_epoch", "key_metric", "total_time",
    "start_ts", "status"}`` to ``path`` (atomically) at every epoch end and at completion.

    Args:
        path: the JSON file; ``None`` or ``""``: write nothing.
        metric_engine: the validator whose ``best_metric`` is reported (the trainer's own when ``None``).
    """

    def __init__(self, path: str | os.PathLike | None, metric_engine: Any = None) -> None:
        self.path = Path(str(path)) if path not in (None, "") else None
        self.metric_engine = metric_engine
        self._start = time.time()

    def attach(self, engine: Any) -> None:
        if self.path is None:
            return
        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.EPOCH_COMPLETED, self._write, "running")
        engine.add_event_handler(Events.COMPLETED, self._write, "finished")

    def _started(self, engine: Any) -> None:
        self._start = time.time()
        self._write(engine, "running")

    def stats(self, engine: Any, status: str) -> dict[str, Any]:
        """What is written: the keys MONAI Label's own trainers write, from ``engine`` and the metric engine."""
        source = self.metric_engine.state if self.metric_engine is not None else engine.state
        best = getattr(source, "best_metric", None)
        seconds = time.time() - self._start
        return {
            "epoch": int(engine.state.epoch),
            "total_epochs": int(engine.state.max_epochs or 0),
            "best_metric": None if best is None or best == -1 else float(best),
            "best_metric_epoch": int(getattr(source, "best_metric_epoch", -1) or -1),
            "key_metric": getattr(source, "key_metric_name", None),
            "total_time": str(datetime.timedelta(seconds=int(seconds))),
            "total_seconds": round(seconds, 1),
            "start_ts": int(self._start),
            "status": status,
        }

    def _write(self, engine: Any, status: str) -> None:
        assert self.path is not None
        self.path.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(self.path, json.dumps(self.stats(engine, status), indent=2) + "\n")
