"""Per-class IoU and Dice as MONAI metrics and ignite handlers (``key_val_metric`` / ``additional_metrics`` of the
bundles' evaluators), and the second observer's agreement with the ground truth (definitions:
:mod:`medsemiseg.metrics`)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from typing import Any

import torch
from monai.handlers import IgniteMetricHandler, from_engine
from monai.metrics import DiceMetric, MeanIoU
from monai.metrics.confusion_matrix import get_confusion_matrix
from monai.networks.utils import one_hot

logger = logging.getLogger(__name__)

AGGREGATION_NOTE = (
    "iou/dice: per-image per-class values (MONAI MeanIoU/DiceMetric, include_background=True) averaged over "
    "images; an image where a class is absent from both prediction and label is skipped for that class. "
    "mIoU/mDice: mean over all classes including background (classes never seen are skipped). "
    "iou_pooled/dice_pooled: intersection and union summed over the whole set before dividing."
)


def _to_onehot(x: torch.Tensor, num_classes: int, name: str) -> torch.Tensor:
    """``(B, K, ...)`` scores / one-hot or ``(B, 1, ...)`` label map -> binary one-hot ``(B, K, ...)`` float."""
    if x.ndim < 3:
        raise ValueError(f"{name} must be batch-first with a channel dimension (B, C, X, Y), got {tuple(x.shape)}.")
    if x.shape[1] == num_classes and num_classes > 1:
        # an integer one-hot map (never logits or scores, which are float) may hold all-zero pixels: those are
        # ignored (outside a field of view, medsemiseg.transforms.fov), not counted as background by an argmax
        if not torch.is_floating_point(x) and ((x == 0) | (x == 1)).all() and bool((x.sum(dim=1) <= 1).all()):
            return x.float()
        idx = x.argmax(dim=1, keepdim=True)
    elif x.shape[1] == 1:
        idx = x.round().long() if torch.is_floating_point(x) else x.long()
        if idx.numel() and (idx.min() < 0 or idx.max() >= num_classes):
            raise ValueError(
                f"{name} holds label values outside 0..{num_classes - 1} (min {int(idx.min())}, max {int(idx.max())}); "
                f"check num_classes and the label files."
            )
    else:
        raise ValueError(
            f"{name} has {x.shape[1]} channels; expected {num_classes} (scores or one-hot) or 1 (label map)."
        )
    return one_hot(idx, num_classes, dim=1)


def _nan_where_both_empty(values: torch.Tensor, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
    spatial = tuple(range(2, y.ndim))
    both_empty = (y.sum(dim=spatial) == 0) & (y_pred.sum(dim=spatial) == 0)
    return torch.where(both_empty, torch.full_like(values, float("nan")), values)


class _PerClassMixin:
    """Shared input conversion and aggregation of the per-class metrics."""

    num_classes: int
    aggregation: str
    output: str

    def _check_options(self, num_classes: int, aggregation: str, output: str) -> None:
        if int(num_classes) < 2:
            raise ValueError(f"num_classes={num_classes}: need at least 2 (background + one class).")
        if aggregation not in ("image", "dataset"):
            raise ValueError(f"aggregation={aggregation!r}: use 'image' (mean over images) or 'dataset' (pooled).")
        if output not in ("per_class", "mean"):
            raise ValueError(f"output={output!r}: use 'per_class' (a (K,) tensor) or 'mean' (a float).")

    def _score_from_counts(self, tp: torch.Tensor, fp: torch.Tensor, fn: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def _compute_per_class(self, y_pred: torch.Tensor, y: torch.Tensor, monai_fn: Callable) -> torch.Tensor:
        p = _to_onehot(y_pred, self.num_classes, "y_pred")
        t = _to_onehot(y, self.num_classes, "y")
        if p.shape != t.shape:
            raise ValueError(f"prediction {tuple(p.shape)} and label {tuple(t.shape)} differ in shape.")
        if self.aggregation == "dataset":
            cm = get_confusion_matrix(p, t, include_background=True)  # (B, K, 4): tp, fp, tn, fn
            return cm[..., [0, 1, 3]]
        return _nan_where_both_empty(monai_fn(p, t), p, t)

    def _aggregate_per_class(self, buffer: torch.Tensor) -> torch.Tensor:
        if self.aggregation == "dataset":
            tp, fp, fn = buffer.sum(dim=0).unbind(-1)
            per_class = self._score_from_counts(tp, fp, fn)
        else:
            per_class = torch.nanmean(buffer.float(), dim=0)
        if self.output == "mean":
            return torch.nanmean(per_class)
        return per_class


class PerClassIoUMetric(_PerClassMixin, MeanIoU):
    """MONAI ``MeanIoU`` returning per-class IoU, with this module's empty-class rule (see module docstring).

    Args:
        num_classes: classes including background.
        aggregation: ``"image"`` (per-image IoU averaged over images) or ``"dataset"`` (pooled counts).
        output: ``"per_class"``: ``aggregate()`` returns a ``(K,)`` tensor (NaN for a class never seen);
            ``"mean"``: the mIoU, mean over classes including background.
    """

    def __init__(self, num_classes: int, aggregation: str = "image", output: str = "per_class") -> None:
        self._check_options(num_classes, aggregation, output)
        super().__init__(include_background=True, reduction="none", ignore_empty=False)
        self.num_classes, self.aggregation, self.output = int(num_classes), aggregation, output

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._compute_per_class(y_pred, y, super()._compute_tensor)

    def _score_from_counts(self, tp, fp, fn):
        union = tp + fp + fn
        return torch.where(union > 0, tp / union.clamp_min(1), torch.full_like(tp, float("nan")))

    def aggregate(self, reduction: Any = None) -> torch.Tensor:  # type: ignore[override]
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor):
            raise ValueError("PerClassIoUMetric.aggregate: no data accumulated yet.")
        return self._aggregate_per_class(buffer)


class PerClassDiceMetric(_PerClassMixin, DiceMetric):
    """MONAI ``DiceMetric`` returning per-class Dice, with this module's empty-class rule.

    Same arguments as :class:`PerClassIoUMetric`.
    """

    def __init__(self, num_classes: int, aggregation: str = "image", output: str = "per_class") -> None:
        self._check_options(num_classes, aggregation, output)
        super().__init__(include_background=True, reduction="none", ignore_empty=False, num_classes=int(num_classes))
        self.num_classes, self.aggregation, self.output = int(num_classes), aggregation, output

    def _compute_tensor(self, y_pred: torch.Tensor, y: torch.Tensor) -> torch.Tensor:  # type: ignore[override]
        return self._compute_per_class(y_pred, y, super()._compute_tensor)

    def _score_from_counts(self, tp, fp, fn):
        denom = 2 * tp + fp + fn
        return torch.where(denom > 0, 2 * tp / denom.clamp_min(1), torch.full_like(tp, float("nan")))

    def aggregate(self, reduction: Any = None) -> torch.Tensor:  # type: ignore[override]
        buffer = self.get_buffer()
        if not isinstance(buffer, torch.Tensor):
            raise ValueError("PerClassDiceMetric.aggregate: no data accumulated yet.")
        return self._aggregate_per_class(buffer)


# ---------------------------------------------------------------------------------------------------------------
# ignite handlers (usable in a SupervisedEvaluator's key_val_metric / additional_metrics)
# ---------------------------------------------------------------------------------------------------------------

_DEFAULT_OT = from_engine(["pred", "label"])


class _OverlapMetricHandler(IgniteMetricHandler):
    """One constructor for the four handlers below: they differ only in the metric and its reduction."""

    metric_cls: type = PerClassIoUMetric
    output: str = "per_class"

    def __init__(
        self,
        num_classes: int,
        aggregation: str = "image",
        output_transform: Callable = _DEFAULT_OT,
        save_details: bool = True,
    ) -> None:
        super().__init__(
            metric_fn=self.metric_cls(num_classes, aggregation=aggregation, output=self.output),
            output_transform=output_transform,
            save_details=save_details,
        )


class PerClassIoU(_OverlapMetricHandler):
    """Per-class IoU handler: ``engine.state.metrics[name]`` is a ``(num_classes,)`` CPU tensor.

    Reads ``pred`` (logits, one-hot or label map) and ``label`` from the evaluator output by default. For an
    evaluator's ``additional_metrics``; use :class:`MIoU` as ``key_val_metric``.
    """

    metric_cls, output = PerClassIoUMetric, "per_class"


class PerClassDice(_OverlapMetricHandler):
    """Per-class Dice handler: ``engine.state.metrics[name]`` is a ``(num_classes,)`` CPU tensor."""

    metric_cls, output = PerClassDiceMetric, "per_class"


class MIoU(_OverlapMetricHandler):
    """mIoU (mean over classes, background included) as a float: the ``key_val_metric`` for best checkpoints."""

    metric_cls, output = PerClassIoUMetric, "mean"


class MDice(_OverlapMetricHandler):
    """mDice (mean over classes, background included) as a float."""

    metric_cls, output = PerClassDiceMetric, "mean"


class EvaluationPass:
    """A handler that follows one evaluation pass: ``_reset`` when it starts, ``_update`` after every iteration,
    ``_complete`` when it ends; :meth:`items_with` gives the iteration's items that hold a key."""

    def attach(self, engine) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._reset)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self._update)
        engine.add_event_handler(Events.COMPLETED, self._complete)

    def _reset(self, engine=None) -> None:
        raise NotImplementedError

    def _update(self, engine) -> None:
        raise NotImplementedError

    def _complete(self, engine) -> None:
        raise NotImplementedError

    @staticmethod
    def items_with(engine, key: str, label_key: str = "label"):
        """``(batch item, output item, label)`` of each item of the iteration whose batch item holds ``key``; the
        label from the output (after the evaluator's postprocessing), else from the batch."""
        batch, output = engine.state.batch, engine.state.output
        if isinstance(batch, Mapping):  # not decollated: one dict of batched values
            batch, output = [batch], [output]
        for b, o in zip(batch, output):
            if isinstance(b, Mapping) and key in b:
                yield b, o, (o[label_key] if label_key in o else b[label_key])


class SecondObserverAgreement(EvaluationPass):
    """Score a second annotator's masks against the ground truth exactly as the model's predictions are scored.

    DRIVE's test photographs carry a second observer's vessel masks (``prepare drive``: the item key
    ``second_observer``). Their agreement with the first observer is the human level a method can be held to. This
    handler reads each evaluated item's ``second_observer`` (from ``engine.state.batch``, after the evaluator's
    postprocessing has put it in the same form as the label: resized back, one-hot, zero outside the field of view)
    and its ``label`` (from ``engine.state.output``), and at the end puts per-class IoU / Dice, per image and
    pooled, in ``engine.state.metrics`` as ``<prefix>_per_class_iou`` / ``_dice`` / ``_iou_pooled`` /
    ``_dice_pooled`` (nothing when no item had the key), for :class:`MetricsReportHandler`'s ``second_observer``
    row. Attach it before that handler (both run at ``COMPLETED``).
    """

    def __init__(self, num_classes: int, key: str = "second_observer", label_key: str = "label",
                 prefix: str = "second_observer") -> None:
        self.key, self.label_key, self.prefix = key, label_key, prefix
        self.num_classes = int(num_classes)
        self._metrics: dict[str, Any] = {}
        self.seen = 0

    def _reset(self, engine=None) -> None:
        k = self.num_classes
        self._metrics = {
            "iou": PerClassIoUMetric(k), "dice": PerClassDiceMetric(k),
            "iou_pooled": PerClassIoUMetric(k, aggregation="dataset"),
            "dice_pooled": PerClassDiceMetric(k, aggregation="dataset"),
        }
        self.seen = 0

    def _update(self, engine) -> None:
        for b, _, label in self.items_with(engine, self.key, self.label_key):
            observer = torch.as_tensor(b[self.key])[None]
            label = torch.as_tensor(label)[None]
            for m in self._metrics.values():
                m(y_pred=observer.cpu(), y=label.cpu())
            self.seen += 1

    def _complete(self, engine) -> None:
        if not self.seen:
            return
        for name, m in self._metrics.items():
            engine.state.metrics[f"{self.prefix}_per_class_{name}"] = m.aggregate()
        logger.info(f"second observer scored against the ground truth on {self.seen} image(s)")


mIoU = MIoU  # the paper's spelling
mDice = MDice
