"""The bundles' TensorBoard writer, which creates its event file only when it first writes.

PyTorch's ``SummaryWriter`` creates ``logs/events.out.tfevents.*`` as soon as it is constructed, and a bundle config
constructs it with the validator, before the training takes its folder's lock
(:class:`~medsemiseg.bundle.resume.TrainCheckpointer`): a second training refused because another one holds the
folder left an event file in the first run's logs. :class:`DeferredSummaryWriter` is the same writer, same
arguments, whose file appears with its first event.
"""

from __future__ import annotations

from typing import Any

from torch.utils.tensorboard import SummaryWriter

__all__ = ["DeferredSummaryWriter"]


class DeferredSummaryWriter(SummaryWriter):
    """``torch.utils.tensorboard.SummaryWriter`` that opens its event file at its first write, not when built."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        self._deferred = True
        super().__init__(*args, **kwargs)
        self._deferred = False

    def _get_file_writer(self) -> Any:
        if getattr(self, "_deferred", False):
            return None  # SummaryWriter.__init__ asks for it; the first add_* call creates it
        return super()._get_file_writer()
