"""MONAI's ``StatsHandler`` with readable per-class (tensor) metrics.

MONAI's epoch line prints a scalar metric as ``name: 0.1234 `` (``key_var_format``, trailing space) but a tensor
metric as ``name: tensor([...])`` with no separator, so the bundles' evaluation line read
``test_per_class_dice: tensor([0.9739, 0.0000])test_per_class_dice_pooled: ...``. :class:`MetricsStatsHandler`
keeps the scalar line as MONAI writes it (``Epoch[1] Metrics -- test_mDice: 0.2435 test_mIoU: 0.2374``) and gives
every per-class metric its own line with the class names
(``Epoch[1] test_per_class_iou -- background: 0.9495 ground-glass: 0.0000 ...``).

A one-off evaluation has no "best" metric: with ``best_metric_log=False`` (the bundles' ``evaluate``) it leaves out
MONAI's ``Key metric: ... best value ... at epoch: 1`` line and the evaluator's own ``Got new best metric of ...``
line (logged by MONAI's ``Workflow`` for its key metric), which for a single pass only repeat the score.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import torch
from ignite.engine import Events
from monai.handlers import StatsHandler
from monai.utils import flatten_dict, is_scalar

__all__ = ["MetricsStatsHandler"]

_BEST_METRIC_PREFIX = "Got new best metric of "


class _DropBestMetricLine(logging.Filter):
    """Drops MONAI's ``Got new best metric of ...`` record while ``active``."""

    def __init__(self) -> None:
        super().__init__()
        self.active = False

    def filter(self, record: logging.LogRecord) -> bool:
        return not (self.active and str(record.msg).startswith(_BEST_METRIC_PREFIX))


class MetricsStatsHandler(StatsHandler):
    """``StatsHandler`` whose epoch log prints tensor metrics one per line, with class names.

    Args:
        class_names: names in class-index order; a 1-D metric with one value per class is printed as
            ``name: value`` pairs. ``None`` (or a metric of another length): the values as a list.
        best_metric_log: log the key metric's best value (MONAI's ``Key metric: ...`` line and the engine's
            ``Got new best metric of ...``). ``True`` for validation during training, where "best" means the best
            epoch so far; ``False`` for a single evaluation pass.
        kwargs: as MONAI's ``StatsHandler`` (``name``, ``iteration_log``, ``key_var_format``, ...).
    """

    def __init__(self, class_names: Sequence[str] | None = None, best_metric_log: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.best_metric_log = bool(best_metric_log)
        self._filter: _DropBestMetricLine | None = None

    def attach(self, engine: Any) -> None:
        super().attach(engine)
        if not self.best_metric_log and self._filter is None:
            # MONAI's Workflow logs "Got new best metric" from an EPOCH_COMPLETED handler it registers before any
            # val_handler. The logger is shared by every engine of the class (a validation evaluator too), so the
            # filter only drops that message, and only from this engine's EPOCH_STARTED to its EPOCH_COMPLETED
            self._filter = _DropBestMetricLine()
            engine.logger.addFilter(self._filter)
            engine.add_event_handler(Events.EPOCH_STARTED, self._filter_on)
            engine.add_event_handler(Events.EPOCH_COMPLETED, self._filter_off)

    def _filter_on(self, _engine: Any = None) -> None:
        if self._filter is not None:
            self._filter.active = True

    def _filter_off(self, _engine: Any = None) -> None:
        if self._filter is not None:
            self._filter.active = False

    def exception_raised(self, _engine: Any, e: Exception) -> None:
        self._filter_off()
        super().exception_raised(_engine, e)

    def _format_values(self, value: Any) -> str:
        try:
            t = torch.as_tensor(value).detach().float()
        except (TypeError, ValueError, RuntimeError):
            return str(value)
        values = t.flatten().tolist()
        names = self.class_names
        if names is not None and t.ndim == 1 and len(values) == len(names):
            return "".join(self.key_var_format.format(n, v) for n, v in zip(names, values)).rstrip()
        return "[" + ", ".join(f"{v:.4f}" for v in values) + "]"

    def _default_epoch_print(self, engine: Any) -> None:
        current_epoch = self.global_epoch_transform(engine.state.epoch)
        metrics = flatten_dict(engine.state.metrics) or {}
        scalars = {k: v for k, v in metrics.items() if is_scalar(v)}
        if scalars:
            line = "".join(self.key_var_format.format(k, scalars[k]) for k in sorted(scalars))
            self.logger.info(f"Epoch[{current_epoch}] Metrics -- {line}".rstrip())
        for name in sorted(k for k in metrics if k not in scalars):
            self.logger.info(f"Epoch[{current_epoch}] {name} -- {self._format_values(metrics[name])}")

        if self.best_metric_log and getattr(engine.state, "key_metric_name", None) is not None:
            self.logger.info(
                f"Key metric: {engine.state.key_metric_name} best value: {engine.state.best_metric} "
                f"at epoch: {engine.state.best_metric_epoch}"
            )

        if self.state_attributes:
            self.logger.info("State values: " + "".join(f"{a}: {getattr(engine.state, a, None)} "
                                                        for a in self.state_attributes))
