"""Validation every N epochs *and* after the last one.

MONAI's ``ValidationHandler(interval=N)`` validates at epochs N, 2N, ...: with ``val_interval`` larger than
``max_epochs`` a run would never validate (so ``models/model.pt``, written by the validation's best-model saver, would
never appear and ``evaluating`` would have nothing to load), and with ``max_epochs`` not a multiple of it the final
weights would never be scored. This subclass adds the last epoch; for every shipped configuration (``max_epochs`` a
multiple of ``val_interval``) it validates at exactly the same epochs as MONAI's.
"""

from __future__ import annotations

from typing import Any

from ignite.engine import Events
from monai.handlers import ValidationHandler

__all__ = ["ValidationEveryAndLastHandler"]


class ValidationEveryAndLastHandler(ValidationHandler):
    """``ValidationHandler`` that also validates after the final epoch (epoch level only).

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
            raise ValueError(f"val_interval must be a whole number of epochs >= 1, got {interval!r} (e.g. --val_interval 1).")
        super().__init__(interval=n, validator=validator, epoch_level=epoch_level, exec_at_start=exec_at_start)

    def attach(self, engine: Any) -> None:
        if not self.epoch_level:
            return super().attach(engine)

        def due(eng: Any, epoch: int) -> bool:
            return epoch % self.interval == 0 or epoch == eng.state.max_epochs

        engine.add_event_handler(Events.EPOCH_COMPLETED(event_filter=due), self)
        if self.exec_at_start:
            engine.add_event_handler(Events.STARTED, self)
