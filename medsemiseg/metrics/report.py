"""The per-class report of an evaluation: per image and pooled IoU / Dice, written as JSON and CSV
(:class:`MetricsReportHandler`, what the bundles' ``evaluating`` writes to ``eval/metrics.json``)."""

from __future__ import annotations

import csv
import io
import json
import logging
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from medsemiseg.atomic_io import atomic_write_text

from .overlap import AGGREGATION_NOTE, PerClassDiceMetric, PerClassIoUMetric

logger = logging.getLogger(__name__)


def _as_list(v: Any, k: int, name: str) -> list[float] | None:
    if v is None:
        return None
    if isinstance(v, torch.Tensor):
        v = v.detach().cpu().reshape(-1).tolist()
    elif isinstance(v, Mapping):
        v = list(v.values())
    v = [float(x) for x in v]
    if len(v) != k:
        raise ValueError(f"{name} has {len(v)} values but there are {k} class names.")
    return v


def _nanmean(values: Sequence[float]) -> float:
    finite = [x for x in values if not math.isnan(x)]
    return sum(finite) / len(finite) if finite else float("nan")


def report_from_per_class(
    class_names: Sequence[str],
    iou: Any,
    dice: Any = None,
    iou_pooled: Any = None,
    dice_pooled: Any = None,
    extra: Mapping[str, Any] | None = None,
) -> dict:
    """Assemble a report dict from per-class values (tensors, lists or name->value mappings in class order).

    Layout: ``{"classes": [...], "per_class": {name: {"iou", "dice", "iou_pooled", "dice_pooled"}}, "mIoU",
    "mDice", "mIoU_pooled", "mDice_pooled", "aggregation", ...extra}`` (entries without values are omitted).
    """
    names = [str(n) for n in class_names]
    k = len(names)
    cols = {
        "iou": _as_list(iou, k, "iou"),
        "dice": _as_list(dice, k, "dice"),
        "iou_pooled": _as_list(iou_pooled, k, "iou_pooled"),
        "dice_pooled": _as_list(dice_pooled, k, "dice_pooled"),
    }
    cols = {c: v for c, v in cols.items() if v is not None}
    if "iou" not in cols:
        raise ValueError("report_from_per_class: per-class IoU is required.")
    report: dict[str, Any] = {
        "classes": names,
        "per_class": {n: {c: v[i] for c, v in cols.items()} for i, n in enumerate(names)},
    }
    means = {"iou": "mIoU", "dice": "mDice", "iou_pooled": "mIoU_pooled", "dice_pooled": "mDice_pooled"}
    for c, v in cols.items():
        report[means[c]] = _nanmean(v)
    report["aggregation"] = AGGREGATION_NOTE
    if extra:
        report.update(extra)
    return report


def _per_image_batches(preds: Any, labels: Any) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """Normalise the report inputs into a list of batch-first ``(pred, label)`` pairs with a channel dim."""
    if isinstance(preds, torch.Tensor) and isinstance(labels, torch.Tensor):
        p, t = preds, labels
        if p.ndim == 3:
            p = p[:, None]
        if t.ndim == 3:
            t = t[:, None]
        return [(p, t)]
    if isinstance(preds, torch.Tensor) or isinstance(labels, torch.Tensor):
        raise ValueError("compute_segmentation_report: give preds and labels both as batch tensors or both as lists.")
    if len(preds) != len(labels):
        raise ValueError(f"compute_segmentation_report: {len(preds)} predictions but {len(labels)} labels.")
    pairs = []
    for p, t in zip(preds, labels):
        p, t = torch.as_tensor(p), torch.as_tensor(t)
        p = p[None, None] if p.ndim == 2 else p[None]
        t = t[None, None] if t.ndim == 2 else t[None]
        pairs.append((p, t))
    return pairs


def compute_segmentation_report(
    preds: torch.Tensor | Sequence[torch.Tensor],
    labels: torch.Tensor | Sequence[torch.Tensor],
    class_names: Sequence[str],
) -> dict:
    """Per-class IoU/Dice (per-image mean and pooled), mIoU and mDice of a set of predictions.

    Args:
        preds: a batch tensor ``(N, X, Y)`` / ``(N, 1, X, Y)`` label maps or ``(N, K, X, Y)`` scores / one-hot;
            or a list of per-image channel-first tensors ``(X, Y)``, ``(1, X, Y)`` or ``(K, X, Y)`` (images may then
            differ in size).
        labels: same layouts as ``preds``.
        class_names: names in class-index order, background first; ``len(class_names)`` is the class count.

    Returns:
        the dict of :func:`report_from_per_class` plus ``num_images``.
    """
    k = len(class_names)
    metrics = {
        "iou": PerClassIoUMetric(k),
        "dice": PerClassDiceMetric(k),
        "iou_pooled": PerClassIoUMetric(k, aggregation="dataset"),
        "dice_pooled": PerClassDiceMetric(k, aggregation="dataset"),
    }
    n = 0
    for p, t in _per_image_batches(preds, labels):
        for m in metrics.values():
            m(p, t)
        n += p.shape[0]
    if n == 0:
        raise ValueError("compute_segmentation_report: no images given.")
    values = {name: m.aggregate() for name, m in metrics.items()}
    return report_from_per_class(class_names, **values, extra={"num_images": n})


def _json_value(v: Any) -> Any:
    if isinstance(v, torch.Tensor):
        return v.detach().cpu().tolist() if v.ndim else v.item()
    if isinstance(v, Mapping):
        return {str(k): _json_value(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_json_value(x) for x in v]
    if isinstance(v, Path):
        return str(v)
    return v


def _move_aside(path: Path) -> Path | None:
    """Rename an existing file to ``<stem>.<mtime stamp>[.n]<suffix>`` so that nothing is overwritten."""
    if not path.exists():
        return None
    stamp = time.strftime("%Y%m%d-%H%M%S", time.localtime(path.stat().st_mtime))
    target = path.with_name(f"{path.stem}.{stamp}{path.suffix}")
    i = 1
    while target.exists():
        target = path.with_name(f"{path.stem}.{stamp}.{i}{path.suffix}")
        i += 1
    os.replace(path, target)
    logger.warning(f"{path} existed: the previous report was kept as {target}")
    return target


def write_report(
    report: Mapping[str, Any],
    path_json: str | os.PathLike,
    path_csv: str | os.PathLike | None = None,
    overwrite: bool = False,
) -> dict[str, Path]:
    """Write a report as JSON (and optionally CSV: one row per class, then the mean row).

    An existing file is never overwritten silently: unless ``overwrite``, it is renamed to
    ``<name>.<timestamp><suffix>`` (with a warning) and the new report takes the given name, so the given path
    always holds the latest report and earlier ones are kept. Each file is written whole or not at all
    (:func:`medsemiseg.atomic_io.atomic_write_text`); a full disk is a :class:`~medsemiseg.atomic_io.DiskFullError`
    naming the file.

    Returns:
        ``{"json": path, "csv": path}`` of what was written.
    """
    written: dict[str, Path] = {}
    path_json = Path(path_json)
    path_json.parent.mkdir(parents=True, exist_ok=True)
    if not overwrite:
        _move_aside(path_json)
    atomic_write_text(path_json, json.dumps(_json_value(dict(report)), indent=2) + "\n")
    written["json"] = path_json
    if path_csv is not None:
        path_csv = Path(path_csv)
        path_csv.parent.mkdir(parents=True, exist_ok=True)
        if not overwrite:
            _move_aside(path_csv)
        per_class = report.get("per_class", {})
        cols = [c for c in ("iou", "dice", "iou_pooled", "dice_pooled") if any(c in v for v in per_class.values())]
        means = {"iou": "mIoU", "dice": "mDice", "iou_pooled": "mIoU_pooled", "dice_pooled": "mDice_pooled"}
        fh = io.StringIO(newline="")
        w = csv.writer(fh)
        w.writerow(["class", *cols])
        for name, v in per_class.items():
            w.writerow([name, *(v.get(c, "") for c in cols)])
        w.writerow(["mean", *(report.get(means[c], "") for c in cols)])
        observer = report.get("second_observer")
        if isinstance(observer, Mapping):  # the human agreement, scored the same way
            for name, v in observer.get("per_class", {}).items():
                w.writerow([f"second observer: {name}", *(v.get(c, "") for c in cols)])
            w.writerow(["second observer: mean", *(observer.get(means[c], "") for c in cols)])
        volumes = report.get("per_volume")
        if isinstance(volumes, Mapping):  # the 3D scores, each under its own column names
            vcols = list(volumes.get("mean", {}))
            w.writerow(["per volume", *vcols])
            for name, v in volumes.get("per_class", {}).items():
                w.writerow([f"per volume: {name}", *(v.get(c, "") for c in vcols)])
            w.writerow(["per volume: mean", *(volumes["mean"][c] for c in vcols)])
        atomic_write_text(path_csv, fh.getvalue())
        written["csv"] = path_csv
    return written


class MetricsReportHandler:
    """Write the per-class report of an evaluation run when the evaluator completes.

    Reads the per-class tensors the :class:`PerClassIoU` / :class:`PerClassDice` handlers put in
    ``engine.state.metrics`` (and pooled ones if attached under the given names), and writes
    ``<output_dir>/<filename>.json`` and ``.csv``. With ``filename=None`` the name is ``metrics_<timestamp>``, so
    every evaluation keeps its own report; with a fixed name an older report is moved aside, never overwritten
    silently (see :func:`write_report`). Scalar metrics of the engine (e.g. the key metric) go into the JSON under
    ``"metrics"``.

    Args:
        class_names: names in class-index order, background first.
        output_dir: folder for the reports (created).
        iou_metric: name of the per-class IoU metric in ``engine.state.metrics``.
        dice_metric: name of the per-class Dice metric (optional: skipped when absent).
        iou_pooled_metric / dice_pooled_metric: optional names of pooled per-class metrics.
        filename: report file name without extension; ``None`` for a timestamped name.
        write_csv: also write the CSV table.
        checkpoint: the weights that were evaluated (recorded as ``"checkpoint"``, with its modification time).
        datalist: the datalist whose split was scored (recorded as ``"datalist"``: which data set the numbers are on).
        second_observer: prefix of the per-class metrics :class:`SecondObserverAgreement` puts in
            ``engine.state.metrics``; when they are there, the report gains a ``"second_observer"`` section (the same
            layout as the report itself) and the CSV a row per class and a mean row for it.
        scoring: where the evaluation scored (:func:`medsemiseg.metrics.scoring.scoring_record`: region, resolution,
            reference observer), recorded as ``"scoring"``.

    When :class:`~medsemiseg.metrics.PerVolumeScores` left its section in ``engine.state.per_volume``, the report
    gains it as ``"per_volume"`` (Dice, IoU, HD95, ASD per foreground class over volumes), and the CSV a header
    row, a row per class and a mean row for it.
        engine_state: also record the engine's ``epoch`` / ``iteration`` / ``best_metric``. Meaningful for a
            validation run inside training; for a one-off evaluation they are the evaluator's own single pass (epoch
            1, its own score as "best"), which reads like training provenance, so the bundles' ``evaluate`` turns
            them off and records ``checkpoint`` instead.
    """

    def __init__(
        self,
        class_names: Sequence[str],
        output_dir: str | os.PathLike,
        iou_metric: str = "val_per_class_iou",
        dice_metric: str | None = "val_per_class_dice",
        iou_pooled_metric: str | None = None,
        dice_pooled_metric: str | None = None,
        filename: str | None = None,
        write_csv: bool = True,
        checkpoint: str | os.PathLike | None = None,
        engine_state: bool = True,
        datalist: str | os.PathLike | None = None,
        second_observer: str | None = "second_observer",
        scoring: Mapping[str, Any] | None = None,
    ) -> None:
        self.second_observer = second_observer
        self.scoring = None if scoring is None else dict(scoring)
        self.checkpoint = None if checkpoint is None else str(checkpoint)
        self.datalist = None if datalist is None else str(datalist)
        self.engine_state = bool(engine_state)
        self.class_names = [str(c) for c in class_names]
        self.output_dir = Path(output_dir)
        self.iou_metric = iou_metric
        self.dice_metric = dice_metric
        self.iou_pooled_metric = iou_pooled_metric
        self.dice_pooled_metric = dice_pooled_metric
        self.filename = filename
        self.write_csv = write_csv
        self.last_written: dict[str, Path] | None = None

    def attach(self, engine) -> None:
        from ignite.engine import Events

        if not engine.has_event_handler(self, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self)

    def _stem(self) -> str:
        if self.filename:
            return Path(self.filename).stem if Path(self.filename).suffix in (".json", ".csv") else self.filename
        stem = f"metrics_{time.strftime('%Y%m%d-%H%M%S')}"
        base, i = stem, 1
        while (self.output_dir / f"{stem}.json").exists():
            stem = f"{base}_{i}"
            i += 1
        return stem

    def report(self, engine) -> dict:
        """The report of the finished evaluation (:func:`report_from_per_class` layout), without writing it."""
        metrics = engine.state.metrics
        if self.iou_metric not in metrics:
            raise KeyError(
                f"MetricsReportHandler: engine.state.metrics has no {self.iou_metric!r} (has {sorted(metrics)}); "
                f"attach medsemiseg.metrics.PerClassIoU to the evaluator under that name (additional_metrics)."
            )

        def get(name):
            return metrics.get(name) if name else None

        scalars = {k: float(v) for k, v in metrics.items() if isinstance(v, (int, float))}
        extra: dict[str, Any] = {"metrics": scalars}
        if self.checkpoint is not None:
            extra["checkpoint"] = self.checkpoint
            if Path(self.checkpoint).is_file():
                mtime = Path(self.checkpoint).stat().st_mtime
                extra["checkpoint_modified"] = time.strftime("%Y-%m-%dT%H:%M:%S", time.localtime(mtime))
        if self.datalist is not None:
            extra["datalist"] = self.datalist
        if self.scoring is not None:
            extra["scoring"] = self.scoring
        if self.engine_state:
            extra.update(epoch=int(engine.state.epoch), iteration=int(engine.state.iteration))
            best = getattr(engine.state, "best_metric", None)
            if best is not None and best != -1:
                extra["best_metric"] = float(best)
                extra["best_metric_epoch"] = int(getattr(engine.state, "best_metric_epoch", -1))
        volumes = getattr(engine.state, "per_volume", None)  # PerVolumeScores' section
        if volumes:
            extra["per_volume"] = volumes
        observer = f"{self.second_observer}_per_class_iou" if self.second_observer else None
        if observer in metrics:
            pre = f"{self.second_observer}_per_class_"
            extra["second_observer"] = {
                k: v for k, v in report_from_per_class(
                    self.class_names, iou=metrics[pre + "iou"], dice=metrics.get(pre + "dice"),
                    iou_pooled=metrics.get(pre + "iou_pooled"), dice_pooled=metrics.get(pre + "dice_pooled"),
                ).items() if k not in ("classes", "aggregation")
            }
        return report_from_per_class(
            self.class_names,
            iou=metrics[self.iou_metric],
            dice=get(self.dice_metric),
            iou_pooled=get(self.iou_pooled_metric),
            dice_pooled=get(self.dice_pooled_metric),
            extra=extra,
        )

    def __call__(self, engine) -> None:
        report = self.report(engine)
        self.output_dir.mkdir(parents=True, exist_ok=True)
        stem = self._stem()
        self.last_written = write_report(
            report,
            self.output_dir / f"{stem}.json",
            self.output_dir / f"{stem}.csv" if self.write_csv else None,
        )
        logger.info(f"per-class report written to {self.last_written['json']}")
