"""``supervised``: labelled images only — the lower bound, and the full-label upper bound when every image is labelled.

The loss is the supervised term alone (MONAI ``DiceCELoss`` by default). An unlabelled batch, if the trainer draws
one, is ignored; the trainer needs no unlabelled loader for this method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import Method, label_map, student_forward

__all__ = ["Supervised"]


class Supervised(Method):
    """Supervised-only training step.

    Args:
        num_classes: classes including background.
        sup_loss: see :class:`~medsemiseg.methods.base.Method`.
    """

    requires_unlabeled = False

    def __init__(self, num_classes: int, sup_loss: Callable | None = None) -> None:
        super().__init__(num_classes, sup_loss)

    def __call__(self, engine: Any, labeled: dict, unlabeled: dict | None = None) -> dict:
        x, y = labeled["image"], labeled["label"]
        label_map(y)  # validates the label layout with a clear error
        pred, _ = student_forward(engine.network, x)
        loss_sup = self.supervised_loss(engine, pred, y)
        return {"loss": loss_sup, "pred": pred, "loss_sup": loss_sup}
