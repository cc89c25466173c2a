"""Tables and figures of one grid, rebuilt from its cell folders alone (nothing is re-run).

``make_report(cfg)`` writes into ``<output_dir>/<task>/``: ``results.csv`` (one line per finished cell),
``summary.csv`` and ``results.md`` (mean ± std over seeds, the paper's table form) and the PNG figures of
:mod:`medsemiseg.benchmark.plots`. Figures whose inputs are missing (no logged curves, no saved predictions) are
skipped with a line saying why, never faked.
"""

from __future__ import annotations

import fnmatch
import math
from pathlib import Path
from typing import Any

import numpy as np

from . import plots
from .cells import iter_done, stale_error
from .config import BenchmarkConfig, fraction_slug
from .pairing import paired_differences, plot_paired_differences
from .results import class_names, collect_rows, summarize, write_tables

__all__ = ["make_report", "learning_curves", "prediction_sets"]

#: learning-curve tags plotted when the YAML does not list them: glob patterns over the logged scalar names.
DEFAULT_CURVE_TAGS = ("*[Ii]o[Uu]*", "*[Dd]ice*", "*loss*", "*pseudo*", "*disc*")


def _smallest_fraction(cfg: BenchmarkConfig) -> str:
    vals = [(plots.fraction_value(f.label), f.label) for f in cfg.fractions]
    vals = [v for v in vals if not math.isnan(v[0])]
    return min(vals)[1] if vals else cfg.fractions[0].label


def learning_curves(cfg: BenchmarkConfig, fraction: str, seed: int | None = None) -> dict[str, dict[str, list]]:
    """``{method: {tag: [(step, value)]}}`` read from the TensorBoard event files of each method's *finished* cell
    (an unfinished or failed cell's curves would be drawn next to finished ones without a word)."""
    out: dict[str, dict[str, list]] = {}
    for cell, _ in iter_done(cfg):
        if cell.fraction.label != fraction or cell.method in out:
            continue
        if seed is not None and cell.seed != seed:
            continue
        curves = plots.load_scalar_curves(cell.directory)
        if curves:
            out[cell.method] = curves
    return out


def _spread(cfg: BenchmarkConfig) -> str:
    """What the figures' error bars are: a single-seed grid has none to show."""
    if len(cfg.seeds) == 1:
        return f"seed {cfg.seeds[0]}, one seed: no error bars"
    return f"mean ± sample std over {len(cfg.seeds)} seeds"


def _pick_tags(curves: dict[str, dict[str, list]], patterns: list[str], limit: int = 6) -> list[str]:
    tags = list(dict.fromkeys(t for c in curves.values() for t in c))
    picked: list[str] = []
    for pat in patterns:
        for t in tags:
            if (fnmatch.fnmatchcase(t, pat) or t == pat) and t not in picked:
                picked.append(t)
    return picked[:limit]


def prediction_sets(
    cfg: BenchmarkConfig, fraction: str, count: int, seed: int | None = None
) -> tuple[list[str], dict[str, Any]]:
    """The names of up to ``count`` test slices that every method's cell (``seed``'s, or the first finished seed's
    when None) saved a prediction for, and ``{method: cell directory}``. Predictions are looked for with ``plots.predictions.glob`` (relative to
    the cell folder); the images and ground truths with ``image_glob`` / ``label_glob`` under ``source_dir`` (the
    prepared data set folder), matched by name: ``tr_im_002_seg.nii.gz`` <-> ``images/tr_im_002.nii.gz``."""
    spec = cfg.plots.get("predictions") or {}
    pred_glob = spec.get("glob")
    if not pred_glob:
        return [], {}
    dirs: dict[str, Path] = {}
    for cell, _ in iter_done(cfg):
        if cell.fraction.label == fraction and cell.method not in dirs and (seed is None or cell.seed == seed):
            dirs[cell.method] = cell.directory
    common: set[str] | None = None
    for d in dirs.values():
        names = {_stem(p) for p in d.glob(pred_glob)}
        common = names if common is None else common & names
    return sorted(common or [])[:count], dirs


def _stem(p: Path) -> str:
    name = p.name
    for suffix in (".nii.gz", ".nii", ".png", ".npy", ".jpg"):
        if name.endswith(suffix):
            name = name[: -len(suffix)]
            break
    for tag in ("_pred", "_seg", "_trans", "_label", "_image", "_mask"):
        if name.endswith(tag):
            name = name[: -len(tag)]
    return name


def _load_array(path: Path) -> np.ndarray:
    if path.suffix == ".npy":
        return np.load(path)
    from monai.transforms import LoadImage

    from medsemiseg.data.io import quiet_nvimgcodec_notice

    with quiet_nvimgcodec_notice():
        return np.asarray(LoadImage(image_only=True, ensure_channel_first=True)(str(path)))


def _find(d: Path, pattern: str, name: str) -> Path | None:
    for p in sorted(d.glob(pattern)):
        if _stem(p) == name:
            return p
    return None


def make_report(cfg: BenchmarkConfig, log=print) -> dict[str, Path]:
    """Write tables and every figure that has data; return ``{name: path}`` of what was written.

    Raises :class:`~medsemiseg.benchmark.config.ConfigError` and writes nothing when the grid has stale cells: a
    table without them (or an empty one) must not replace the last good report."""
    error = stale_error(cfg, what="The report was not written (it would leave those cells out).")
    if error is not None:
        raise error
    written = write_tables(cfg)
    rows = collect_rows(cfg)
    if not rows:
        log(f"[benchmark] {cfg.task}: no finished cells yet; no plots")
        return written
    classes = class_names(rows, cfg.classes)
    summary = summarize(rows, classes, [f.label for f in cfg.fractions], cfg.methods, metric=cfg.table_metric)
    out = cfg.task_dir
    written["miou_vs_fraction"] = plots.plot_miou_vs_fraction(
        summary, cfg.methods, out / "miou_vs_fraction.png",
        title=f"{cfg.task}: mIoU vs labelled fraction ({_spread(cfg)})",
    )
    paired = paired_differences(rows, classes, cfg.methods, [f.label for f in cfg.fractions], cfg.table_metric)
    if paired:
        written["paired_differences"] = plot_paired_differences(
            paired, out / "paired_differences.png",
            title=f"{cfg.task}: mIoU minus supervised on the same labelled images (mean, 95 % t interval, seeds)",
        )
    frac = str(cfg.plots.get("fraction", _smallest_fraction(cfg)))
    slug = fraction_slug(frac)
    if any(e["fraction"] == frac for e in summary):
        written["per_class_iou"] = plots.plot_per_class_iou(
            summary, classes, cfg.methods, frac, out / f"per_class_iou_{slug}.png",
            title=f"{cfg.task}: per-class IoU at {frac} labelled ({_spread(cfg)})",
        )
    curves = learning_curves(cfg, frac, seed=cfg.seeds[0])
    tags = _pick_tags(curves, list(cfg.plots.get("curve_tags") or DEFAULT_CURVE_TAGS))
    if tags:
        written["learning_curves"] = plots.plot_learning_curves(
            curves, tags, out / f"learning_curves_{slug}.png",
            title=f"{cfg.task}: training curves at {frac} labelled, seed {cfg.seeds[0]}",
        )
    else:
        log(f"[benchmark] {cfg.task}: no TensorBoard scalars in the {frac} cells; learning curves skipped")
    spec = cfg.plots.get("predictions") or {}
    names, dirs = prediction_sets(cfg, frac, int(spec.get("count", 3)), seed=cfg.seeds[0])
    if names:
        src = Path(spec.get("source_dir", "")) if spec.get("source_dir") else None
        first = next(iter(dirs.values()))
        base = src if src is not None else first
        images, labels, titles = [], [], []
        preds: dict[str, list] = {m: [] for m in cfg.methods if m in dirs}
        for n in names:
            ip = _find(base, spec.get("image_glob", "**/*"), n) if spec.get("image_glob") else None
            lp = _find(base, spec.get("label_glob", "**/*"), n) if spec.get("label_glob") else None
            if ip is None or lp is None:
                continue
            images.append(_load_array(ip))
            labels.append(_load_array(lp))
            titles.append(n)
            for m in preds:
                preds[m].append(_load_array(_find(dirs[m], spec["glob"], n)))
        if images:
            written["predictions"] = plots.plot_prediction_panel(
                images, labels, preds, classes, out / f"predictions_{slug}.png", titles=titles,
                title=f"{cfg.task}: test predictions at {frac} labelled (seed {cfg.seeds[0]})",
            )
    if "predictions" not in written:
        log(f"[benchmark] {cfg.task}: no saved predictions found for the {frac} cells; prediction panel skipped")
    return written
