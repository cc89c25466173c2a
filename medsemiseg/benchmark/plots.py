"""Benchmark figures (PNG, matplotlib Agg backend, no display needed).

- ``miou_vs_fraction.png``: mIoU against labelled fraction, one line per method (mean ± std over seeds), the
  full-label upper bound as a dashed horizontal line;
- ``per_class_iou_<fraction>.png``: grouped bars of per-class IoU at the smallest fraction (1/8 in the paper),
  where the minority classes SupMix targets show;
- ``learning_curves_<fraction>.png``: scalars logged by each cell's training (TensorBoard event files), one panel per
  tag, one line per method;
- ``predictions_<fraction>.png``: the same test slices for every method, prediction overlaid on the image, next to
  the ground truth.

Every function takes plain data and a path and returns the path, so the figures can be re-made from
``results.csv`` and the cell folders without re-running anything.
"""

from __future__ import annotations

import math
from collections import defaultdict
from pathlib import Path
from typing import Any, Mapping, Sequence

import matplotlib

matplotlib.use("Agg")
import matplotlib.patches  # noqa: E402
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

from medsemiseg.atomic_io import atomic_write  # noqa: E402

__all__ = [
    "fraction_value",
    "plot_miou_vs_fraction",
    "plot_per_class_iou",
    "load_scalar_curves",
    "plot_learning_curves",
    "overlay",
    "plot_prediction_panel",
    "CLASS_COLOURS",
]

#: overlay colours per class index (background transparent); tab10 minus grey, readable on CT and fundus.
CLASS_COLOURS = np.array(
    [[0, 0, 0], [255, 215, 0], [220, 20, 60], [30, 144, 255], [50, 205, 50], [148, 0, 211], [255, 127, 14]],
    dtype=np.float32,
) / 255.0


def fraction_value(label: str) -> float:
    """``"1/8" -> 0.125``, ``"full" -> 1.0``, ``"0.25" -> 0.25``; NaN for a count such as ``"10"``."""
    s = str(label).strip().lower()
    if s in ("full", "all", "1", "1/1", "1.0"):
        return 1.0
    if "/" in s:
        a, b = s.split("/", 1)
        return float(a) / float(b)
    try:
        v = float(s)
    except ValueError:
        return float("nan")
    return v if 0 < v <= 1 else float("nan")


def _method_style(methods: Sequence[str]) -> dict[str, dict[str, Any]]:
    cmap = plt.get_cmap("tab10")
    markers = "os^Dv<>ph*"
    return {m: {"color": cmap(i % 10), "marker": markers[i % len(markers)]} for i, m in enumerate(methods)}


def plot_miou_vs_fraction(
    summary: Sequence[Mapping[str, Any]], methods: Sequence[str], path: Path, title: str = ""
) -> Path:
    """mIoU (%) vs labelled fraction (log2 axis), error bars = std over seeds; ``full`` rows become a dashed line."""
    style = _method_style(methods)
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    ticks: dict[float, str] = {}
    for m in methods:
        pts = [(fraction_value(e["fraction"]), e) for e in summary if e["method"] == m]
        partial = sorted([(x, e) for x, e in pts if not math.isnan(x) and x < 1.0], key=lambda t: t[0])
        for x, e in partial:
            ticks[x] = e["fraction"]
        if partial:
            xs = [x for x, _ in partial]
            ys = [100 * e["miou/mean"] for _, e in partial]
            es = [100 * e["miou/std"] for _, e in partial]
            ax.errorbar(xs, ys, yerr=es, label=m, capsize=3, lw=1.5, ms=5, **style[m])
        for x, e in pts:
            if x == 1.0:
                ax.axhline(100 * e["miou/mean"], ls="--", color=style[m]["color"], lw=1,
                           label=f"{m} ({e['fraction']} labels)")
    ax.set_xscale("log", base=2)
    if ticks:
        ax.set_xticks(list(ticks))
        ax.set_xticklabels(list(ticks.values()))
        ax.minorticks_off()
    ax.set_xlabel("labelled fraction")
    ax.set_ylabel("mIoU (%)")
    ax.grid(alpha=0.3)
    ax.set_title(title or "mIoU vs labelled fraction (mean ± std over seeds)", fontsize=10)
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def plot_per_class_iou(
    summary: Sequence[Mapping[str, Any]], classes: Sequence[str], methods: Sequence[str], fraction: str, path: Path,
    title: str = "",
) -> Path:
    """Grouped bars: x = class (and mIoU), one bar per method, error bar = std over seeds."""
    style = _method_style(methods)
    rows = {e["method"]: e for e in summary if e["fraction"] == fraction}
    present = [m for m in methods if m in rows]
    groups = list(classes) + ["mIoU"]
    width = 0.8 / max(len(present), 1)
    fig, ax = plt.subplots(figsize=(max(6.0, 1.3 * len(groups) + 2), 4.2))
    x = np.arange(len(groups))
    for i, m in enumerate(present):
        e = rows[m]
        mu = [100 * e[f"iou/{c}/mean"] for c in classes] + [100 * e["miou/mean"]]
        sd = [100 * e[f"iou/{c}/std"] for c in classes] + [100 * e["miou/std"]]
        ax.bar(x - 0.4 + width * (i + 0.5), mu, width, yerr=sd, capsize=2, label=m, color=style[m]["color"])
    ax.set_xticks(x)
    ax.set_xticklabels(groups, fontsize=9)
    ax.set_ylabel("IoU (%)")
    ax.set_ylim(0, 100)
    ax.grid(axis="y", alpha=0.3)
    ax.set_title(title or f"per-class IoU at {fraction} labelled", fontsize=10)
    ax.legend(fontsize=7, ncol=min(4, max(len(present), 1)))
    return _save(fig, path)


def load_scalar_curves(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """Every scalar logged under ``directory`` in TensorBoard event files: ``{tag: [(step, value), ...]}``
    (MONAI's ``TensorBoardStatsHandler`` writes these). Empty when there are none."""
    files = sorted(Path(directory).rglob("events.out.tfevents.*"))
    if not files:
        return {}
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = defaultdict(dict)
    for f in files:
        acc = EventAccumulator(str(f), size_guidance={"scalars": 0})
        acc.Reload()
        for tag in acc.Tags().get("scalars", []):
            for ev in acc.Scalars(tag):
                curves[tag][int(ev.step)] = float(ev.value)  # a resumed run overwrites the repeated steps
    return {t: sorted(v.items()) for t, v in curves.items()}


def plot_learning_curves(
    curves: Mapping[str, Mapping[str, Sequence[tuple[int, float]]]], tags: Sequence[str], path: Path, title: str = "",
) -> Path:
    """``curves[method][tag] = [(step, value)]``: one panel per tag, one line per method."""
    methods = list(curves)
    style = _method_style(methods)
    tags = [t for t in tags if any(t in curves[m] for m in methods)]
    if not tags:
        raise ValueError("no logged scalar matches the requested learning-curve tags")
    ncol = min(len(tags), 3)
    nrow = math.ceil(len(tags) / ncol)
    fig, axes = plt.subplots(nrow, ncol, figsize=(4.6 * ncol, 3.4 * nrow), squeeze=False)
    for ax, tag in zip(axes.flat, tags):
        for m in methods:
            pts = curves[m].get(tag)
            if pts:
                xs, ys = zip(*pts)
                ax.plot(xs, ys, label=m, color=style[m]["color"], lw=1.2,
                        marker=style[m]["marker"] if len(xs) <= 20 else None, ms=3)
        ax.set_title(tag, fontsize=9)
        ax.set_xlabel("iteration / epoch (as logged)", fontsize=8)
        ax.grid(alpha=0.3)
    for ax in list(axes.flat)[len(tags):]:
        ax.axis("off")
    axes.flat[0].legend(fontsize=7)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)


def _display(a: np.ndarray) -> np.ndarray:
    """MONAI ``(C, X, Y)`` / ``(X, Y)`` array -> upright ``(rows, cols[, 3])`` for imshow (docs/architecture.md)."""
    a = np.asarray(a)
    if a.ndim == 3:
        a = a[0].T if a.shape[0] == 1 else np.moveaxis(a, 0, -1).transpose(1, 0, 2)
    elif a.ndim == 2:
        a = a.T
    else:
        raise ValueError(f"expected a 2D slice (C, X, Y) or (X, Y), got shape {a.shape}")
    return a


def overlay(image: np.ndarray, label: np.ndarray | None, alpha: float = 0.45) -> np.ndarray:
    """Upright RGB picture of ``image`` (min-max scaled) with ``label``'s non-zero classes blended in colour."""
    img = _display(image).astype(np.float32)
    lo, hi = np.percentile(img, [1, 99]) if img.size else (0.0, 1.0)
    img = np.clip((img - lo) / max(hi - lo, 1e-6), 0, 1)
    rgb = img if img.ndim == 3 else np.repeat(img[..., None], 3, axis=-1)
    if label is None:
        return rgb
    lab = _display(label).astype(np.int64)
    if lab.ndim == 3:
        lab = lab[..., 0]
    if lab.shape != rgb.shape[:2]:
        raise ValueError(f"label shape {lab.shape} does not match image shape {rgb.shape[:2]}")
    colours = CLASS_COLOURS[np.clip(lab, 0, len(CLASS_COLOURS) - 1)]
    m = (lab > 0)[..., None]
    return np.where(m, (1 - alpha) * rgb + alpha * colours, rgb)


def plot_prediction_panel(
    images: Sequence[np.ndarray],
    labels: Sequence[np.ndarray],
    predictions: Mapping[str, Sequence[np.ndarray]],
    classes: Sequence[str],
    path: Path,
    titles: Sequence[str] | None = None,
    title: str = "",
) -> Path:
    """Rows = slices; columns = image, ground truth, then each method's prediction, all overlaid on the image."""
    n = len(images)
    if n == 0 or len(labels) != n or any(len(p) != n for p in predictions.values()):
        raise ValueError("images, labels and every method's predictions must list the same slices")
    cols = ["image", "ground truth"] + list(predictions)
    fig, axes = plt.subplots(n, len(cols), figsize=(2.2 * len(cols), 2.3 * n + 0.6), squeeze=False)
    for r in range(n):
        pics = [overlay(images[r], None), overlay(images[r], labels[r])]
        pics += [overlay(images[r], predictions[m][r]) for m in predictions]
        for c, pic in enumerate(pics):
            ax = axes[r, c]
            ax.imshow(pic, interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if r == 0:
                ax.set_title(cols[c], fontsize=8)
        if titles:
            axes[r, 0].set_ylabel(titles[r], fontsize=7)
    handles = [
        matplotlib.patches.Patch(color=CLASS_COLOURS[i % len(CLASS_COLOURS)], label=name)
        for i, name in enumerate(classes) if i > 0
    ]
    fig.legend(handles=handles, loc="lower center", ncol=max(len(handles), 1), fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=10)
    fig.tight_layout(rect=(0, 0.04, 1, 0.97))
    return _save(fig, path, tight=False)


def _save(fig, path: Path, tight: bool = True) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    if tight:
        fig.tight_layout()
    try:  # into a temporary file beside path, renamed over it once complete (medsemiseg.atomic_io)
        atomic_write(path, lambda f: fig.savefig(f, dpi=110, format=path.suffix.lstrip(".").lower() or None))
    finally:
        plt.close(fig)
    return path
