"""``supervised``: labelled images only — the lower bound, and the full-label upper bound when every image is labelled.

The loss is the supervised term alone (MONAI ``DiceCELoss`` by default). An unlabelled batch, if the trainer draws
one, is ignored; the trainer needs no unlabelled loader for this method.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from .base import FeatureRequest, Method, features_output, label_map, student_forward
from .registry import FlopFloor, MethodSpec

__all__ = ["Supervised", "METHODS"]


class Supervised(Method):
    """Supervised-only training step.

    Args:
        num_classes: classes including background.
        sup_loss: see :class:`~medsemiseg.methods.base.Method`.
    """

    requires_unlabeled = False

    def __init__(self, num_classes: int, sup_loss: Callable | None = None) -> None:
        super().__init__(num_classes, sup_loss)

    def __call__(
        self, engine: Any, labeled: dict, unlabeled: dict | None = None, features: FeatureRequest | None = None
    ) -> dict:
        x, y = labeled["image"], labeled["label"]
        label_map(y)  # validates the label layout with a clear error
        pred, feats = student_forward(engine.network, x, need_features=features is not None)
        loss_sup = self.supervised_loss(engine, pred, y)
        return {"loss": loss_sup, "pred": pred, "loss_sup": loss_sup, **features_output(features, (feats, pred))}


METHODS = (
    MethodSpec(
        "supervised", Supervised, "labelled images only (the lower bound; the upper bound with every image labelled)",
        floor=FlopFloor(network={"l": 3}, text="1 fwd+bwd (labelled)"), order=0,
    ),
)
