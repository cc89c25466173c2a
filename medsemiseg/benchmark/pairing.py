"""Paired differences to the supervised baseline: what a semi-supervised method adds, seed by seed.

A grid cell's seed picks the labelled subset and the initialisation, and both move mIoU by more than methods differ
from each other on small data. Comparing means over seeds mixes that spread into every comparison; pairing each
method's cell with the supervised cell of the *same* fraction and seed (same labelled images) removes the part they
share. For each (fraction, method):

- ``diff_<seed>``: the method's IoU minus supervised's on that seed (mIoU and each class), in points;
- ``mean`` and a 95 % interval ``mean +- t(0.975, n-1) * sd / sqrt(n)`` over the n paired seeds (Student's t: with
  3 seeds the half-width is 2.48 standard errors, so only a consistent gain excludes 0);
- ``gap_share``: the mean difference over the label gap (full-label supervised minus supervised at this fraction,
  means over seeds), the share of what labelling every image would give that the unlabelled images recover.

:func:`paired_differences` computes them from ``results.csv``-style rows; :func:`paired_markdown` is the section
``results.md`` gets and :func:`plot_paired_differences` the figure. ``python -m medsemiseg.benchmark.paired`` (the
sibling module :mod:`.paired`) pairs a variant grid with its base grid.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import Any

__all__ = ["BASELINE", "PAPER_METHOD", "label_gap", "paired_differences", "paired_markdown", "plot_paired_differences",
           "t_interval", "REFERENCE_METHODS"]

BASELINE = "supervised"
PAPER_METHOD = "supmix_sufd"  # results.md pairs every other method with it too: does the paper's method beat each?
#: the methods results.md pairs every other method with, besides supervised, when the grid has them: the paper's
#: method and the strongest baseline of the real grids (does a method beat each, seed by seed?)
REFERENCE_METHODS = (PAPER_METHOD, "unimatch")


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float, float, int]:
    """``(mean, low, high, n)`` of a Student-t interval for the mean; one value gives no interval (NaN bounds)."""
    vals = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    n = len(vals)
    if n == 0:
        return float("nan"), float("nan"), float("nan"), 0
    mu = sum(vals) / n
    if n == 1:
        return mu, float("nan"), float("nan"), 1
    from scipy.stats import t

    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (n - 1))
    half = float(t.ppf(0.5 + level / 2, n - 1)) * sd / math.sqrt(n)
    return mu, mu - half, mu + half, n


def _value(row: dict[str, Any], key: str) -> float | None:
    v = row.get(key)
    if v is None or v == "":
        return None
    v = float(v)
    return None if math.isnan(v) else v


def _mean(rows: Sequence[dict[str, Any]], key: str) -> float:
    vals = [v for v in (_value(r, key) for r in rows) if v is not None]
    return sum(vals) / len(vals) if vals else float("nan")


def label_gap(rows: Sequence[dict[str, Any]], fraction: str, full: str = "full", key: str = "miou") -> float:
    """Full-label supervised minus supervised at ``fraction`` (means over their seeds), in the rows' units."""
    sup = [r for r in rows if r["method"] == BASELINE]
    return _mean([r for r in sup if r["fraction"] == full], key) - _mean([r for r in sup if r["fraction"] == fraction],
                                                                         key)


def paired_differences(
    rows: Sequence[dict[str, Any]], classes: Sequence[str], methods: Sequence[str], fractions: Sequence[str],
    metric: str = "iou", full: str = "full", baseline: str = BASELINE,
) -> list[dict[str, Any]]:
    """One entry per (fraction, method other than ``baseline``) with paired seeds: per-seed differences to
    ``baseline`` (supervised by default), their mean and 95 % interval for mIoU and every class, and the mean
    difference's share of the label gap (values in points, 0-100)."""
    miou_key = "miou" if metric == "iou" else "miou_pooled"
    keys = [("mIoU", miou_key)] + [(c, f"{metric}/{c}") for c in classes]
    out = []
    for f in fractions:
        if f == full:
            continue
        base = {r["seed"]: r for r in rows if r["method"] == baseline and r["fraction"] == f}
        gap = label_gap(rows, f, full, miou_key)
        for m in methods:
            if m == baseline:
                continue
            cells = {r["seed"]: r for r in rows if r["method"] == m and r["fraction"] == f}
            seeds = sorted(set(cells) & set(base))
            if not seeds:
                continue
            entry: dict[str, Any] = {"fraction": f, "method": m, "seeds": seeds, "n": len(seeds),
                                     "label_gap": 100 * gap}
            for name, key in keys:
                diffs = []
                for s in seeds:
                    a, b = _value(cells[s], key), _value(base[s], key)
                    diffs.append(float("nan") if a is None or b is None else 100 * (a - b))
                mu, lo, hi, n = t_interval(diffs)
                entry[name] = {"diffs": diffs, "mean": mu, "low": lo, "high": hi, "n": n}
            mean = entry["mIoU"]["mean"]
            entry["gap_share"] = mean / (100 * gap) if gap and not math.isnan(gap) and gap > 0 else float("nan")
            out.append(entry)
    return out


def _pts(v: float, signed: bool = True) -> str:
    return "–" if math.isnan(v) else (f"{v:+.2f}" if signed else f"{v:.2f}")


def _ci(d: dict[str, Any]) -> str:
    if d["n"] < 2 or math.isnan(d["low"]):
        return f"{_pts(d['mean'])} (n={d['n']})"
    mark = "" if d["low"] <= 0 <= d["high"] else " *"
    return f"{_pts(d['mean'])} [{_pts(d['low'])}, {_pts(d['high'])}]{mark}"


def paired_markdown(entries: Sequence[dict[str, Any]], classes: Sequence[str], task: str,
                    minority_first: Sequence[str] = (), baseline: str = BASELINE) -> str:
    """The ``results.md`` section: per method, mIoU difference to ``baseline`` per seed, mean [95 % interval], the
    share of the label gap, then each class's mean difference [interval] (``minority_first`` classes first)."""
    title = (f"### {task}: paired difference to {baseline} (same fraction and seed = same labelled images), "
             "points of IoU; mean [95 % t interval]; * = interval excludes 0")
    if not entries:
        return f"{title}\n\n(no method has a supervised cell of the same fraction and seed yet)\n"
    order = [c for c in minority_first if c in classes] + [c for c in classes if c not in minority_first]
    seeds = sorted({s for e in entries for s in e["seeds"]})
    header = (["Labelled", "Method"] + [f"seed {s}" for s in seeds] + ["mIoU diff", "share of label gap"]
              + [f"{c} diff" for c in order])
    lines = [title, "", "| " + " | ".join(header) + " |",
             "|" + "|".join(["---"] * 2 + ["---:"] * (len(header) - 2)) + "|"]
    for e in entries:
        per_seed = dict(zip(e["seeds"], e["mIoU"]["diffs"]))
        share = e["gap_share"]
        cells = [e["fraction"], e["method"]] + [_pts(per_seed.get(s, float("nan"))) for s in seeds]
        cells += [_ci(e["mIoU"]), "–" if math.isnan(share) else f"{100 * share:+.0f} %"]
        cells += [_ci(e[c]) for c in order]
        lines.append("| " + " | ".join(cells) + " |")
    gaps = {e["fraction"]: e["label_gap"] for e in entries}
    lines += ["", "Label gap (full-label supervised minus supervised, mIoU points, means over seeds): "
              + ", ".join(f"{f}: {_pts(g, signed=False)}" for f, g in gaps.items())]
    return "\n".join(lines) + "\n"


def plot_paired_differences(entries: Sequence[dict[str, Any]], path: Path, title: str = "") -> Path:
    """mIoU difference to supervised per method: each seed's difference as a dot, the mean with its 95 % interval
    as a bar, 0 as a line (one panel per fraction)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from .plots import _save

    fractions = list(dict.fromkeys(e["fraction"] for e in entries))
    fig, axes = plt.subplots(1, max(len(fractions), 1), figsize=(max(5.0, 4.2 * len(fractions)), 3.8), squeeze=False)
    for ax, f in zip(axes[0], fractions):
        group = [e for e in entries if e["fraction"] == f]
        for i, e in enumerate(group):
            d = e["mIoU"]
            ax.scatter([i] * len(d["diffs"]), d["diffs"], s=14, color="0.55", zorder=3)
            if d["n"] >= 2 and not math.isnan(d["low"]):
                ax.errorbar([i], [d["mean"]], yerr=[[d["mean"] - d["low"]], [d["high"] - d["mean"]]], fmt="o",
                            color="C0", capsize=4, zorder=4)
            else:
                ax.plot([i], [d["mean"]], "o", color="C0", zorder=4)
        ax.axhline(0, color="k", lw=0.8)
        ax.set_xticks(range(len(group)))
        ax.set_xticklabels([e["method"] for e in group], rotation=30, ha="right", fontsize=8)
        ax.set_ylabel("mIoU − supervised (points)")
        ax.set_title(f"{f} labelled", fontsize=9)
        ax.grid(axis="y", alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    return _save(fig, path)
