"""Progress of an evaluation or inference pass: "evaluating: k/N images" at a tenth of the way, and the last one.

MONAI's ``StatsHandler`` logs every iteration of a trainer, but the bundles' ``evaluate`` and ``infer`` evaluators
log nothing per iteration (their ``StatsHandler`` only prints the metrics at the end), so a large test set ran
silently between "Restored ... model.pt" and the metrics. :class:`ProgressLogger` is attached like MONAI's handlers
(``val_handlers`` in a bundle config) and logs through the standard ``logging`` tree, so the bundle's
``logging.conf`` formats it like the rest of the run.
"""

from __future__ import annotations

import logging
from typing import Any

from ignite.engine import Events

__all__ = ["ProgressLogger"]


def _batch_size(batch: Any) -> int:
    """Images in ``engine.state.batch``: a decollated list (MONAI's default) or a collated dict / tensor."""
    if isinstance(batch, (list, tuple)):
        return len(batch)
    if isinstance(batch, dict):
        for value in batch.values():
            shape = getattr(value, "shape", None)
            if shape is not None and len(shape) > 0:
                return int(shape[0])
    shape = getattr(batch, "shape", None)
    return int(shape[0]) if shape is not None and len(shape) > 0 else 1


class ProgressLogger:
    """Log ``"<label>: k/N images"`` while an engine (an evaluator) runs its epoch.

    Logs after every ``every`` iterations and after the last one of the epoch; by default ``every`` is
    ``max(1, N // parts)`` with ``N`` the engine's ``epoch_length`` (the data loader's length for an evaluator), so
    about ``parts`` lines per pass whatever the data set size. ``k`` and ``N`` count images: the images seen so far
    (batch sizes summed) out of the data loader's data set when the epoch covers the loader exactly once; otherwise
    (an ``epoch_length`` that is not the loader's length) the line counts iterations instead
    (``"k/N iterations"``). Inference items (:func:`medsemiseg.bundle.inputs.inference_items`: ``name``, ``slice``,
    ``num_slices``) are counted as inputs, not slices: four inputs of 13 slices in all log ``"inferring: k/4
    inputs"``, an input counted once its last slice is done, about ``parts`` lines per pass.

    Args:
        label: what the pass is, the start of each line (``"evaluating"``, ``"inferring"``).
        parts: about how many lines per pass (``every = max(1, N // parts)``); used when ``every`` is ``None``.
        every: log every this many iterations (and the last one); ``None``: from ``parts``.
        name: the ``logging`` logger to use; ``None``: the engine's own logger (``engine.logger``).
    """

    def __init__(self, label: str = "evaluating", parts: int = 10, every: int | None = None,
                 name: str | None = "medsemiseg.progress") -> None:
        if int(parts) < 1:
            raise ValueError(f"ProgressLogger(parts={parts!r}): must be >= 1.")
        if every is not None and int(every) < 1:
            raise ValueError(f"ProgressLogger(every={every!r}): must be >= 1 or None.")
        self.label = str(label)
        self.parts = int(parts)
        self.every = None if every is None else int(every)
        self.name = name
        self.logger = logging.getLogger(name) if name is not None else None
        self._images = 0
        self._total_images: int | None = None
        self._total_inputs: int | None = None
        self._inputs = 0
        self._logged_inputs = 0

    def attach(self, engine: Any) -> None:
        if self.logger is None:
            self.logger = engine.logger
        if not engine.has_event_handler(self.epoch_started, Events.EPOCH_STARTED):
            engine.add_event_handler(Events.EPOCH_STARTED, self.epoch_started)
        if not engine.has_event_handler(self, Events.ITERATION_COMPLETED):
            engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def interval(self, epoch_length: int | None) -> int:
        """Iterations between two lines for an epoch of ``epoch_length`` iterations."""
        if self.every is not None:
            return self.every
        return max(1, int(epoch_length) // self.parts) if epoch_length else 10

    def epoch_started(self, engine: Any) -> None:
        self._images = 0
        self._total_images = None
        self._total_inputs, self._inputs, self._logged_inputs = None, 0, 0
        n = engine.state.epoch_length
        loader = getattr(engine.state, "dataloader", None) or getattr(engine, "data_loader", None)
        data = getattr(getattr(loader, "dataset", None), "data", None)
        if isinstance(data, list) and data and all(isinstance(d, dict) and "num_slices" in d and "name" in d
                                                   for d in data):
            self._total_inputs = len({str(d["name"]) for d in data})
        try:
            if n is not None and n == len(loader):
                batch_size = getattr(loader, "batch_size", None)
                if getattr(loader, "drop_last", False) and batch_size:
                    self._total_images = n * int(batch_size)
                else:
                    self._total_images = len(loader.dataset)
        except (TypeError, AttributeError):  # no len() or no .dataset: an iterable data set or loader
            self._total_images = None

    def __call__(self, engine: Any) -> None:
        n = engine.state.epoch_length
        k = engine.state.iteration
        if n:
            k = (k - 1) % n + 1
        self._images += _batch_size(engine.state.batch)
        if self._total_inputs is not None:
            self._count_inputs(engine)
            return
        if k % self.interval(n) != 0 and k != n:
            return
        if self._total_images is not None:
            self.logger.info(f"{self.label}: {min(self._images, self._total_images)}/{self._total_images} images")
        elif n:
            self.logger.info(f"{self.label}: {k}/{n} iterations")
        else:
            self.logger.info(f"{self.label}: {self._images} images")

    def _count_inputs(self, engine: Any) -> None:
        """Inputs whose last slice is in this batch are done; log at about every ``parts``-th of them and the last."""
        batch = engine.state.batch
        items = batch if isinstance(batch, (list, tuple)) else []
        for item in items:
            k, n = _item_int(item, "slice", -1), _item_int(item, "num_slices", 1)
            if k < 0 or k == n - 1:
                self._inputs += 1
        total = self._total_inputs or 0
        every = max(1, total // self.parts)
        new = self._inputs - self._logged_inputs
        if new > 0 and (new >= every or self._inputs >= total):
            self._logged_inputs = self._inputs
            self.logger.info(f"{self.label}: {min(self._inputs, total)}/{total} inputs")


def _item_int(item: Any, key: str, default: int) -> int:
    value = item.get(key, default) if isinstance(item, dict) else default
    try:
        return int(value.item() if hasattr(value, "item") else value)
    except (TypeError, ValueError):
        return default
