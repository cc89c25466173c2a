"""Per-volume scores: the 2D predictions of a volume's slices stacked back into the volume and scored in 3D, the way
the medical semi-supervised literature reports them (SSL4MIS, UA-MT, BCP...: Dice and HD95 per class and volume).

Definitions (MONAI's metrics on the stacked ``(X, Y, Z)`` label maps, one class at a time, background left out):

* ``dice``, ``iou``: MONAI's ``compute_dice`` / ``compute_iou`` of the class in the whole volume;
* ``hd95``: MONAI's ``compute_hausdorff_distance(percentile=95)``, the larger of the two directed 95th-percentile
  distances between the class's surfaces; ``asd``: MONAI's ``compute_average_surface_distance(symmetric=True)``.
  Both in voxels (the unit of SSL4MIS's tables: medpy without a spacing), and with the volume's spacing in mm as
  ``hd95_mm`` / ``asd_mm`` when every volume's spacing is known (NIfTI / DICOM inputs; HDF5 carries none);
* a class absent from both the label and the prediction of a volume is left out for that volume (NaN); a class in
  only one of them scores Dice and IoU 0, and has no surface distance (NaN, counted as ``distance_undefined``);
* averaged the way the literature does: each class's mean over volumes (``per_class``), then the mean over the
  foreground classes (``mean``), NaN entries skipped.
"""

from __future__ import annotations

import json
import logging
import math
import os
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
import torch
from monai.metrics import (
    compute_average_surface_distance,
    compute_dice,
    compute_hausdorff_distance,
    compute_iou,
)
from monai.networks.utils import one_hot

from .overlap import EvaluationPass

logger = logging.getLogger(__name__)

__all__ = ["VOLUME_NOTE", "PerVolumeScores", "summarise_volumes", "volume_scores"]

VOLUME_NOTE = (
    "per volume: the slices' 2D predictions stacked back into each volume, scored per foreground class with MONAI's "
    "Dice, IoU, HD95 (95th percentile Hausdorff distance) and symmetric average surface distance (ASD), distances "
    "in voxels (and in mm as *_mm when every volume's spacing is known); a class absent from label and prediction "
    "is skipped for that volume, one present in only one of them scores Dice/IoU 0 and no distance. per_class: "
    "mean over volumes; mean: mean over foreground classes."
)
_DISTANCES = ("hd95", "asd")


def _label_map(x: Any) -> torch.Tensor:
    """``(1, X, Y)`` label map or ``(K, X, Y)`` scores / one-hot -> ``(X, Y)`` integer label map."""
    t = torch.as_tensor(x).detach().cpu()
    if t.ndim == 2:
        return t.round().long()
    return (t[0].round() if t.shape[0] == 1 else t.argmax(dim=0)).long()


def volume_scores(pred: Any, label: Any, num_classes: int, spacing: Sequence[float] | None = None) -> dict:
    """``{class index: {"dice", "iou", "hd95", "asd"[, "hd95_mm", "asd_mm"]}}`` of one volume, foreground classes.

    ``pred`` and ``label`` are integer ``(X, Y, Z)`` label maps; ``spacing`` the voxel size in mm (adds the ``_mm``
    distances). See the module docstring for the empty-class rule."""
    k = int(num_classes)
    p = one_hot(torch.as_tensor(pred).long()[None, None], k, dim=1)
    t = one_hot(torch.as_tensor(label).long()[None, None], k, dim=1)
    if p.shape != t.shape:
        raise ValueError(f"volume prediction {tuple(pred.shape)} and label {tuple(label.shape)} differ in shape.")
    dice = compute_dice(p, t, include_background=True, ignore_empty=False, num_classes=k)[0]
    iou = compute_iou(p, t, include_background=True, ignore_empty=False)[0]
    with warnings.catch_warnings():  # MONAI warns for every empty class; the rule below decides what they score
        warnings.simplefilter("ignore")
        distances = {"hd95": compute_hausdorff_distance(p, t, percentile=95)[0],
                     "asd": compute_average_surface_distance(p, t, symmetric=True)[0]}
        if spacing is not None:
            distances.update(
                hd95_mm=compute_hausdorff_distance(p, t, percentile=95, spacing=[float(s) for s in spacing])[0],
                asd_mm=compute_average_surface_distance(p, t, symmetric=True, spacing=[float(s) for s in spacing])[0],
            )
    out: dict[int, dict[str, float]] = {}
    for c in range(1, k):
        in_pred, in_label = bool(p[0, c].any()), bool(t[0, c].any())
        nan = float("nan")
        if not in_pred and not in_label:
            out[c] = {"dice": nan, "iou": nan, **{m: nan for m in distances}}
        elif not (in_pred and in_label):
            out[c] = {"dice": 0.0, "iou": 0.0, **{m: nan for m in distances}}
        else:
            out[c] = {"dice": float(dice[c]), "iou": float(iou[c]),
                      **{m: float(v[c - 1]) for m, v in distances.items()}}
    return out


def _nanmean(values: Sequence[float]) -> float:
    finite = [v for v in values if not math.isnan(v)]
    return sum(finite) / len(finite) if finite else float("nan")


def summarise_volumes(scores: Mapping[str, Mapping[int, Mapping[str, float]]], class_names: Sequence[str]) -> dict:
    """The report section of :func:`volume_scores` results (``{volume: scores}``): ``classes`` (foreground),
    ``num_volumes``, ``per_class`` (each metric's mean over volumes, ``volumes`` scored, ``distance_undefined``),
    ``mean`` (over foreground classes), ``volumes`` (every volume's own scores) and ``aggregation``."""
    names = [str(n) for n in class_names]
    metrics = [m for m in ("dice", "iou", "hd95", "asd", "hd95_mm", "asd_mm")
               if scores and all(m in s[c] for s in scores.values() for c in s)]
    per_class: dict[str, dict[str, float]] = {}
    for c, name in enumerate(names[1:], 1):
        rows = [s[c] for s in scores.values() if c in s]
        entry: dict[str, Any] = {m: _nanmean([r[m] for r in rows]) for m in metrics}
        entry["volumes"] = sum(not math.isnan(r["dice"]) for r in rows)
        entry["distance_undefined"] = sum(not math.isnan(r["dice"]) and math.isnan(r["hd95"]) for r in rows)
        per_class[name] = entry
    return {
        "classes": names[1:],
        "num_volumes": len(scores),
        "per_class": per_class,
        "mean": {m: _nanmean([per_class[n][m] for n in names[1:]]) for m in metrics},
        "volumes": {v: {names[c]: dict(r) for c, r in s.items()} for v, s in scores.items()},
        "aggregation": VOLUME_NOTE,
    }


class PerVolumeScores(EvaluationPass):
    """Score an evaluation per volume: collect each test item's prediction and label by its ``volume`` and ``slice``
    keys, stack a volume once all its slices are in, and score it (:func:`volume_scores`).

    The datalist (``datalist``, its ``test`` items and ``meta.volumes``, what ``prepare folder`` writes) says how
    many slices each volume has (a volume is scored, and its slices let go, as soon as they are in) and its spacing.
    At the end ``engine.state.per_volume`` holds :func:`summarise_volumes`' section, which
    :class:`~medsemiseg.metrics.MetricsReportHandler` writes as ``per_volume`` in ``metrics.json`` (attach this
    handler first: both run at ``COMPLETED``), and ``engine.state.metrics`` gains ``volume_mDice`` / ``volume_mIoU``
    / ``volume_mHD95`` / ``volume_mASD``. Items without ``volume`` are passed over; with none, nothing is added.
    """

    def __init__(self, num_classes: int, class_names: Sequence[str] | None = None,
                 datalist: str | os.PathLike | None = None, volume_key: str = "volume", slice_key: str = "slice",
                 pred_key: str = "pred", label_key: str = "label") -> None:
        self.num_classes = int(num_classes)
        self.class_names = ([str(c) for c in class_names] if class_names
                            else [f"class{i}" for i in range(self.num_classes)])
        self.datalist = None if datalist is None else str(datalist)
        self.volume_key, self.slice_key, self.pred_key, self.label_key = volume_key, slice_key, pred_key, label_key
        self._reset()

    def _reset(self, engine=None) -> None:
        self.expected, self.spacing = self._volumes_of_datalist()
        self._slices: dict[str, dict[int, tuple[torch.Tensor, torch.Tensor]]] = {}
        self.scores: dict[str, dict] = {}

    def _volumes_of_datalist(self) -> tuple[dict[str, int], dict[str, Any]]:
        if self.datalist is None:
            return {}, {}
        try:
            content = json.loads(open(self.datalist).read())
        except (OSError, ValueError):
            return {}, {}  # the evaluation's own datalist reading reports it
        counts: dict[str, int] = {}
        for it in content.get("test", []) if isinstance(content, dict) else []:
            if isinstance(it, dict) and self.volume_key in it:
                counts[str(it[self.volume_key])] = counts.get(str(it[self.volume_key]), 0) + 1
        meta = content.get("meta", {}) if isinstance(content, dict) else {}
        info = meta.get("volumes", {}) if isinstance(meta, dict) else {}
        return counts, {v: (i or {}).get("spacing") for v, i in info.items() if isinstance(i, dict)}

    def _update(self, engine) -> None:
        for b, o, label in self.items_with(engine, self.volume_key, self.label_key):
            name, k = str(_plain(b[self.volume_key])), int(_plain(b[self.slice_key]))
            self._slices.setdefault(name, {})[k] = (_label_map(o[self.pred_key]).to(torch.uint8),
                                                    _label_map(label).to(torch.uint8))
            if len(self._slices[name]) == self.expected.get(name, -1):
                self._score(name)

    def _score(self, name: str) -> None:
        slices = self._slices.pop(name)
        order = sorted(slices)
        shapes = {tuple(slices[k][0].shape) for k in order} | {tuple(slices[k][1].shape) for k in order}
        if len(shapes) > 1:
            logger.warning(f"volume {name}: its slices differ in size {sorted(shapes)}, so they stack into no volume; "
                           "left out of the per-volume scores.")
            return
        if self.expected.get(name, len(order)) != len(order):
            logger.warning(f"volume {name}: {len(order)} of its {self.expected[name]} slices were evaluated; scored "
                           "on those.")
        pred = torch.stack([slices[k][0] for k in order], dim=-1)
        label = torch.stack([slices[k][1] for k in order], dim=-1)
        self.scores[name] = volume_scores(pred, label, self.num_classes, self.spacing.get(name))

    def _complete(self, engine) -> None:
        for name in list(self._slices):
            self._score(name)
        if not self.scores:
            return
        section = summarise_volumes(self.scores, self.class_names)
        engine.state.per_volume = section
        mean = section["mean"]
        engine.state.metrics.update(volume_mDice=mean["dice"], volume_mIoU=mean["iou"], volume_mHD95=mean["hd95"],
                                    volume_mASD=mean["asd"])
        shown = ", ".join(f"{n} Dice {v['dice']:.4f} HD95 {v['hd95']:.2f}" for n, v in section["per_class"].items())
        logger.info(f"per volume ({section['num_volumes']} volumes): mean Dice {mean['dice']:.4f}, HD95 "
                    f"{mean['hd95']:.2f} voxels; {shown}")


def _plain(value: Any) -> Any:
    """A decollated item's field as a plain value (a 0-d tensor, a one-element list)."""
    if isinstance(value, torch.Tensor):
        return value.item() if value.numel() == 1 else value.tolist()
    if isinstance(value, np.ndarray):
        return value.item() if value.size == 1 else value.tolist()
    if isinstance(value, (list, tuple)) and len(value) == 1:
        return _plain(value[0])
    return value
