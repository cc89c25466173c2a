"""A cheap warning when an inference input looks unlike the data the model was trained on.

A segmentation network answers every input: a photograph of a person given to the fundus bundle came back 39 %
"vessel", without a word. This module compares a few statistics of each input with the range the training images
had, and warns when one lies clearly outside it. It is a plausibility check, not a guarantee: an input inside every
range can still be unlike the training data.

The rule (also in docs/bundles.md, "Inputs unlike the training data"):

- the statistics, taken after the bundle's preprocessing (intensity normalisation, resize), so on the scale the
  network sees: each channel's mean and standard deviation over the image, and the foreground share (the share of
  pixels not labelled background: the label map's during training, the prediction's at inference);
- the training side (:func:`input_reference`, called when the trainer is built and recorded in ``models/run.json``
  as ``input_reference``): each statistic's lowest and highest value over up to 200 training images (the labelled
  ones, which also give the foreground share, and the unlabelled ones), taken evenly through the datalist;
- the inference side (:class:`InputDistributionCheck`): an input (a 3D one averaged over its slices) is flagged when
  a statistic lies outside ``[low - margin, high + margin]`` with ``margin = 0.5 * (high - low) + 0.05``: half the
  training spread again on each side, plus 0.05 on the normalised scale (5 points of foreground share) so a
  training set of near-identical images does not flag every small difference.

A model trained before this record existed has no ``input_reference`` in its ``run.json``: nothing is checked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

__all__ = ["MARGIN_FLOOR", "REFERENCE_IMAGES", "UNLABELLED_OUTSIDE_WARN", "InputDistributionCheck",
           "flagged_statistics", "image_statistics", "input_reference", "unlabelled_check"]

logger = logging.getLogger("medsemiseg.distribution")

#: at most this many training images are read for the reference
REFERENCE_IMAGES = 200
#: the part of the margin that does not scale with the training spread (normalised intensity; foreground share)
MARGIN_FLOOR = 0.05


def image_statistics(image: torch.Tensor, labels: torch.Tensor | None = None) -> dict[str, float]:
    """``{"mean_c": ..., "std_c": ... for each channel c, "foreground": share of labels > 0}`` of a ``(C, X, Y)``
    image as the network sees it (and of its ``(1, X, Y)`` label map, when given)."""
    img = torch.as_tensor(image).detach().float().cpu()
    img = img.reshape(img.shape[0], -1)
    out = {f"mean_{c}": float(img[c].mean()) for c in range(img.shape[0])}
    out.update({f"std_{c}": float(img[c].std(unbiased=False)) for c in range(img.shape[0])})
    if labels is not None:
        out["foreground"] = float((torch.as_tensor(labels).detach().cpu() > 0).float().mean())
    return out


def _evenly(items: Sequence[Any], n: int) -> list[Any]:
    """``n`` items taken evenly through ``items`` (all of them when there are fewer): deterministic, no RNG drawn."""
    if n <= 0 or not items:
        return []
    if len(items) <= n:
        return list(items)
    step = len(items) / n
    return [items[int(i * step)] for i in range(n)]


def input_reference(datalist: str | os.PathLike, transform: Any, limit: int = REFERENCE_IMAGES) -> dict:
    """The training side of the check: ``{"images": n, "<statistic>": [low, high], ...}`` over up to ``limit``
    training images of ``datalist`` (half labelled, the rest unlabelled, taken evenly), each read through
    ``transform`` (the bundle's deterministic ``preprocessing``: it draws no random numbers, so the training run
    is unchanged). The bundles record it in ``run.json`` (``input_reference``), with ``unlabelled_check``
    (:func:`unlabelled_check`): how many of the unlabelled images read lie outside the labelled images' range."""
    from medsemiseg.data.datalist import load_split

    labelled = load_split(datalist, "labeled", allow_empty=True)
    unlabelled = load_split(datalist, "unlabeled", allow_empty=True)
    chosen = _evenly(labelled, max(limit // 2, limit - len(unlabelled)))
    n_labelled = len(chosen)
    chosen += _evenly(unlabelled, limit - len(chosen))
    ranges: dict[str, list[float]] = {}
    per_image = []
    for item in chosen:
        data = transform(dict(item))
        stats = image_statistics(data["image"], data.get("label") if "label" in item else None)
        per_image.append(stats)
        for key, value in stats.items():
            low, high = ranges.get(key, (value, value))
            ranges[key] = [min(low, value), max(high, value)]
    logger.info(f"input reference: intensity and foreground ranges of {len(chosen)} training images, recorded in "
                "run.json for the out-of-distribution warning at inference")
    out: dict[str, Any] = {"images": len(chosen),
                           **{k: [round(lo, 6), round(hi, 6)] for k, (lo, hi) in sorted(ranges.items())}}
    check = unlabelled_check(per_image[:n_labelled], per_image[n_labelled:], str(datalist))
    if check is not None:
        out["unlabelled_check"] = check
    return out


#: share of the unlabelled images read that may lie outside the labelled range before training warns
UNLABELLED_OUTSIDE_WARN = 0.25


def unlabelled_check(labelled: Sequence[Mapping[str, float]], unlabelled: Sequence[Mapping[str, float]],
                     where: str = "the datalist") -> dict | None:
    """Do the unlabelled images look like the labelled ones? Semi-supervised methods assume they do.

    Each unlabelled image's intensity statistics are judged against the labelled images' range with the same
    margin as an inference input (:func:`flagged_statistics`). Returns ``{"labelled": n, "unlabelled": m,
    "outside": k, "labelled_mean": {...}, "unlabelled_mean": {...}}`` (``None`` with fewer than 2 labelled or 10
    unlabelled images) and warns when ``k / m`` reaches :data:`UNLABELLED_OUTSIDE_WARN`: on COVID-SemiSeg, whose
    1600 extra slices come from other collections with another display window, about half of them are outside.
    """
    if len(labelled) < 2 or len(unlabelled) < 10:
        return None
    keys = [k for k in labelled[0] if k != "foreground"]
    reference = {k: [min(s[k] for s in labelled), max(s[k] for s in labelled)] for k in keys}
    outside = sum(bool(flagged_statistics({k: s[k] for k in keys}, reference)) for s in unlabelled)
    means = {name: {k: round(sum(s[k] for s in group) / len(group), 4) for k in keys}
             for name, group in (("labelled_mean", labelled), ("unlabelled_mean", unlabelled))}
    result = {"labelled": len(labelled), "unlabelled": len(unlabelled), "outside": outside, **means}
    if outside / len(unlabelled) >= UNLABELLED_OUTSIDE_WARN:
        differ = "; ".join(f"{_describe(k)}: labelled {means['labelled_mean'][k]:.3f}, unlabelled "
                           f"{means['unlabelled_mean'][k]:.3f}" for k in keys)
        logger.warning(
            f"{outside} of {len(unlabelled)} unlabelled images read from {where} lie outside the labelled images' "
            f"intensity range (averages on the network's scale: {differ}). Semi-supervised methods learn from them "
            "as if they were like the labelled images; if they come from another scanner, display window or "
            "orientation, normalise them alike or leave them out (docs/results.md, COVID-SemiSeg)."
        )
    return result


def flagged_statistics(stats: Mapping[str, float], reference: Mapping[str, Any]) -> list[str]:
    """The statistics of ``stats`` outside the reference range widened by its margin, each as a short phrase."""
    out = []
    for key, value in stats.items():
        bounds = reference.get(key)
        if not isinstance(bounds, (list, tuple)) or len(bounds) != 2:
            continue
        low, high = float(bounds[0]), float(bounds[1])
        margin = 0.5 * (high - low) + MARGIN_FLOOR
        if not low - margin <= value <= high + margin:
            out.append(f"{_describe(key)} {value:.3f} (training {low:.3f} to {high:.3f})")
    return out


def _describe(key: str) -> str:
    if key == "foreground":
        return "predicted foreground share"
    kind, _, channel = key.partition("_")
    return f"channel {channel} {'mean' if kind == 'mean' else 'standard deviation'}"


class InputDistributionCheck:
    """Warn, once per inference input, when the input looks unlike the model's training data (module docstring).

    Attach to the ``inferring`` evaluator (``val_handlers``). It reads ``input_reference`` from the ``run.json``
    next to ``ckpt_path`` when the run starts; per item it takes :func:`image_statistics` of ``image`` (as
    preprocessed) and of ``pred`` (the label map after ``postprocessing``), averages them over the slices of one
    input (``name``; ``slice`` / ``num_slices`` say when its last slice arrived) and warns with the statistics
    outside the range and the fix. ``flagged`` lists the inputs warned about.

    Args:
        ckpt_path: the model the run loads; its folder holds the ``run.json`` the training wrote.
        image_key / pred_key: keys of the preprocessed image and of the label map in the engine output.
    """

    def __init__(self, ckpt_path: str | os.PathLike, image_key: str = "image", pred_key: str = "pred") -> None:
        self.run_file = Path(str(ckpt_path)).expanduser().parent / "run.json"
        self.image_key = image_key
        self.pred_key = pred_key
        self.reference: dict | None = None
        self.flagged: list[str] = []
        self._sums: dict[str, dict[str, float]] = {}
        self._counts: dict[str, int] = {}

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.STARTED, self._load_reference)
        engine.add_event_handler(Events.ITERATION_COMPLETED, self)

    def _load_reference(self, _engine: Any = None) -> None:
        self.flagged, self._sums, self._counts = [], {}, {}
        from medsemiseg.runrecord import read_run_record

        record = read_run_record(self.run_file) or {}  # a damaged record stops the run naming it
        reference = record.get("input_reference")
        self.reference = reference if isinstance(reference, Mapping) and reference.get("images") else None
        if self.reference is None:
            logger.debug(f"{self.run_file}: no input_reference recorded; inputs are not compared with training data")

    def __call__(self, engine: Any) -> None:
        if self.reference is None:
            return
        batch, output = engine.state.batch, engine.state.output
        if not isinstance(output, (list, tuple)):
            return  # not decollated: nothing per item
        for b, o in zip(batch, output):
            self._add({**b, **o})

    def _add(self, item: Mapping) -> None:
        from medsemiseg.data.slices import item_value

        name = str(item_value(item.get("name", item.get("source", "?"))))
        stats = image_statistics(item[self.image_key], item.get(self.pred_key))
        sums = self._sums.setdefault(name, {})
        for key, value in stats.items():
            sums[key] = sums.get(key, 0.0) + value
        self._counts[name] = self._counts.get(name, 0) + 1
        k, n = int(item_value(item.get("slice", -1))), int(item_value(item.get("num_slices", 1)))
        if k < 0 or self._counts[name] >= n:
            count = self._counts.pop(name)
            mean = {key: value / count for key, value in self._sums.pop(name).items()}
            self._judge(str(item_value(item.get("source", name))), mean)

    def _judge(self, source: str, stats: Mapping[str, float]) -> None:
        reference = self.reference or {}
        image = flagged_statistics({k: v for k, v in stats.items() if k != "foreground"}, reference)
        prediction = flagged_statistics({k: v for k, v in stats.items() if k == "foreground"}, reference)
        if not image and not prediction:
            return
        self.flagged.append(source)
        where = f"ranges of {reference.get('images')} training images recorded in {self.run_file}"
        if image:
            logger.warning(
                f"{source} looks unlike the images the model was trained on: {'; '.join(image + prediction)} "
                f"({where}). Its segmentation may be meaningless: check that it is the kind of image this bundle is "
                "for, or train on data like it."
            )
        else:
            logger.warning(
                f"{source}: the prediction is unlike the training masks: {prediction[0]} ({where}). Either the input "
                "differs from the training data in a way its intensities do not show, or the model has not learnt "
                "the task (too short a training); check the label map before using it."
            )
