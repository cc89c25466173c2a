"""One closing line for each bundle workflow: how long it took, its score, and where its outputs went.

ignite ends a run on "Engine run finished", which says neither where the model, the checkpoint and the logs are nor
the best validation score; ``evaluating`` and ``inferring`` likewise. :class:`RunSummary` is attached like MONAI's
handlers (``train#handlers``, ``evaluate#handlers``, ``infer#handlers``), logs at ``COMPLETED`` and drops ignite's
"Engine run finished" of that engine, so the summary is the command's last line::

    training: reached epoch 5 of 5 in 3 min 12 s; best val_mIoU 0.4123 at epoch 4; model bundles/covid/models/model.pt;
    checkpoint bundles/covid/models/checkpoint_epoch=5.pt; run record bundles/covid/models/run.json; TensorBoard
    logs bundles/covid/logs

When the evaluated slices come from volumes (``engine.state.per_volume``, left by
:class:`~medsemiseg.metrics.PerVolumeScores` attached before it), ``evaluating``'s line gives the per-volume mean
Dice first, the 2D score after it.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = ["RunSummary", "duration_text"]


def duration_text(seconds: float) -> str:
    """``"12 s"``, ``"3 min 12 s"``, ``"1 h 02 min"``."""
    s = int(round(seconds))
    if s < 60:
        return f"{max(seconds, 0):.0f} s" if seconds >= 1 else f"{max(seconds, 0):.1f} s"
    if s < 3600:
        return f"{s // 60} min {s % 60:02d} s"
    return f"{s // 3600} h {(s % 3600) // 60:02d} min"


def _shown(path: str | os.PathLike) -> str:
    """A path relative to the working folder when it lies below it (what the user typed), else absolute."""
    p = Path(str(path)).absolute()
    try:
        return str(p.relative_to(Path.cwd()))
    except ValueError:
        return str(p)


def _drop_run_finished(record: logging.LogRecord) -> bool:
    """A ``logging`` filter: ignite's closing "Engine run finished" line of an engine that has a :class:`RunSummary`."""
    return not str(record.msg).startswith("Engine run finished")


class RunSummary:
    """Log one line when the engine completes: ``"<label>: <what ran> in <time>; <score>; <outputs>"``; the time is
    the engine's run (data caching and start-up before it are not counted).

    Args:
        label: the workflow (``"training"``, ``"evaluating"``, ``"inferring"``), the start of the line.
        outputs: what the run wrote, ``{description: path}`` (``"model": ".../model.pt"``); a folder given as
            ``"checkpoint"`` is replaced by its newest ``checkpoint_epoch=K.pt``; paths that do not exist are left
            out (a run whose validation never ran has no ``model.pt``).
        metric_engine: the engine whose key metric is reported: a trainer's validator (its best value and epoch,
            ``best=True``) or the evaluator itself (``None``: the engine this is attached to; its final value).
        best: report ``best_metric`` / ``best_metric_epoch`` of ``metric_engine`` (training) instead of its last
            key metric value (evaluating).
        writer: a :class:`~medsemiseg.bundle.writer.PredictionWriter`: the number of label maps it wrote and of
            inputs they come from (inferring).
        name: the ``logging`` logger.
    """

    def __init__(
        self,
        label: str,
        outputs: Mapping[str, Any] | None = None,
        metric_engine: Any = None,
        best: bool = False,
        writer: Any = None,
        name: str = "medsemiseg.summary",
    ) -> None:
        self.label = str(label)
        self.outputs = dict(outputs or {})
        self.metric_engine = metric_engine
        self.best = bool(best)
        self.writer = writer
        self.logger = logging.getLogger(name)
        self.line: str | None = None
        self._start: float | None = None

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._started)
        engine.add_event_handler(Events.COMPLETED, self)
        # ignite logs "Engine run finished. Time taken: ..." after the COMPLETED handlers: the summary line, which
        # says the time too, would not be the last one
        logger = getattr(engine, "logger", None)
        if isinstance(logger, logging.Logger) and _drop_run_finished not in logger.filters:
            logger.addFilter(_drop_run_finished)

    def _started(self, _engine: Any) -> None:
        self._start = time.perf_counter()

    def _score(self, engine: Any) -> str | None:
        source = self.metric_engine if self.metric_engine is not None else engine
        state = getattr(source, "state", None)
        key = getattr(state, "key_metric_name", None)
        if state is None or not key:
            return None
        if self.best:
            value, epoch = getattr(state, "best_metric", -1), getattr(state, "best_metric_epoch", -1)
            if value is None or epoch is None or int(epoch) < 0:
                return f"no {key} yet (no validation ran)"
            return f"best {key} {float(value):.4f} at epoch {int(epoch)}"
        value = (getattr(state, "metrics", None) or {}).get(key)
        try:
            score = f"{key} {float(value):.4f}"
        except (TypeError, ValueError):
            score = None
        volumes = getattr(state, "per_volume", None)  # PerVolumeScores' section: the score papers report comes first
        mean = volumes.get("mean", {}) if isinstance(volumes, Mapping) else {}
        if "dice" not in mean:
            return score
        per_volume = (f"per-volume mean Dice {float(mean['dice']):.4f} over {volumes.get('num_volumes', '?')} "
                      "volume(s), foreground classes")
        return per_volume + (f"; 2D {score} (per slice, background included)" if score else "")

    def _written(self) -> str | None:
        if self.writer is None:
            return None
        files = [f for f in getattr(self.writer, "written", []) if str(f).endswith(".nii.gz")]
        inputs = set(getattr(self.writer, "sources", {}).get(f, f) for f in files)
        folder = getattr(self.writer, "output_dir", None)
        where = f" in {_shown(folder)}" if folder is not None else ""
        return f"{len(files)} label map(s) of {len(inputs)} input(s){where}"

    def _output_paths(self) -> list[str]:
        from medsemiseg.checkpoint_io import checkpoint_files

        shown = []
        for what, path in self.outputs.items():
            if path is None:
                continue
            p = Path(str(path))
            if what == "checkpoint" and p.is_dir():
                newest = checkpoint_files(p)
                p = newest[0] if newest else p / "(none)"
            if p.exists():
                shown.append(f"{what} {_shown(p)}")
        return shown

    def __call__(self, engine: Any) -> None:
        took = duration_text(time.perf_counter() - self._start if self._start is not None else 0.0)
        state = engine.state
        if self.label == "training":
            done = f"reached epoch {int(state.epoch)} of {int(state.max_epochs)} in {took}"
        else:
            n = len(getattr(getattr(engine, "data_loader", None), "dataset", ()) or ())
            done = f"{n} 2D image(s) in {took}"  # a 3D input counts its slices
        parts = [done] + [p for p in (self._score(engine), self._written()) if p] + self._output_paths()
        self.line = f"{self.label}: " + "; ".join(parts)
        self.logger.info(self.line)
