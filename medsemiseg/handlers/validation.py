"""Validation every N epochs *and* after the last one.

MONAI's ``ValidationHandler(interval=N)`` validates at epochs N, 2N, ...: with ``val_interval`` larger than
``max_epochs`` a run would never validate (so ``models/model.pt``, written by the validation's best-model saver, would
never appear and ``evaluating`` would have nothing to load), and with ``max_epochs`` not a multiple of it the final
weights would never be scored. This subclass adds the last epoch; for every shipped configuration (``max_epochs`` a
multiple of ``val_interval``) it validates at exactly the same epochs as MONAI's.

It also times each validation against the training since the previous one and warns once (logger
``medsemiseg.validation``) when validating took longer: a large validation split checked after a few iterations
(210 slices every 12 iterations) spends the run validating.
"""

from __future__ import annotations

import logging
import time
from typing import Any

from ignite.engine import Events
from monai.handlers import ValidationHandler

__all__ = ["ValidationEveryAndLastHandler"]

logger = logging.getLogger("medsemiseg.validation")
_clock = time.perf_counter  # module attribute, so that a test can drive the times


class ValidationEveryAndLastHandler(ValidationHandler):
    """``ValidationHandler`` that also validates after the final epoch (epoch level only), and warns once when a
    validation takes longer than the training iterations before it.

    Args:
        interval: validate every ``interval`` epochs (the bundles' ``val_interval``); an integer >= 1.
        validator, epoch_level, exec_at_start: as MONAI's ``ValidationHandler``.
    """

    def __init__(self, interval: Any, validator: Any = None, epoch_level: bool = True, exec_at_start: bool = False):
        try:
            n = int(interval)
        except (TypeError, ValueError):
            n = 0
        if n < 1 or (isinstance(interval, float) and interval != n):
            raise ValueError(
                f"ValidationEveryAndLastHandler.interval={interval!r} must be a whole number of epochs >= 1 "
                "(e.g. ValidationEveryAndLastHandler.interval=1)."
            )
        super().__init__(interval=n, validator=validator, epoch_level=epoch_level, exec_at_start=exec_at_start)
        self._trained_since: float | None = None
        self._iteration_since = 0
        self.warned = False

    def attach(self, engine: Any) -> None:
        if not self.epoch_level:
            return super().attach(engine)

        def due(eng: Any, epoch: int) -> bool:
            return epoch % self.interval == 0 or epoch == eng.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)
        engine.add_event_handler(Events.STARTED, self._mark)

    def _mark(self, engine: Any) -> None:
        self._trained_since, self._iteration_since = _clock(), int(engine.state.iteration)

    def __call__(self, engine: Any) -> None:
        start = _clock()
        trained = start - self._trained_since if self._trained_since is not None else None
        iterations = int(engine.state.iteration) - self._iteration_since
        super().__call__(engine)
        took = _clock() - start
        if not self.warned and trained is not None and iterations > 0 and took > trained:
            self.warned = True
            loader = getattr(self.validator, "data_loader", None)
            n = len(getattr(loader, "dataset", ()) or ())
            images = f" of {n} image(s)" if n else ""
            logger.warning(
                f"validation{images} took {took:.1f} s, longer than the {iterations} training iteration(s) before it "
                f"({trained:.1f} s): the run spends more time validating than training. Validate less often "
                f"(ValidationEveryAndLastHandler.interval, now every {self.interval} epoch(s)) or train more "
                "iterations per epoch (epoch_length), or validate on fewer images."
            )
        self._mark(engine)
