"""Aggregation of finished cells into ``results.csv`` and the paper-style Markdown table.

The table follows the paper's form: for each labelled fraction, one row per method, one column per class IoU and a
final mIoU column, in percent. Here every entry is ``mean ± std`` over the seeds that finished (sample standard
deviation, ``n-1``; a single seed prints the mean alone and the ``n`` column says so). The best mIoU of each
fraction is printed in bold, the way papers mark the winner — among methods with the same number of seeds only,
so a one-seed lucky run cannot "win" against a three-seed mean.
"""

from __future__ import annotations

import csv
import io
import math
from pathlib import Path
from typing import Any, Iterable, Sequence

from medsemiseg.atomic_io import atomic_write_text

from .cells import iter_done, not_in_table
from .config import BenchmarkConfig, known_methods
from .pairing import BASELINE, REFERENCE_METHODS, paired_differences, paired_markdown
from .published import difference_markdown, published_markdown, read_published

__all__ = ["collect_rows", "class_names", "summarize", "markdown_table", "write_csv", "write_summary_csv",
           "write_tables", "mean_std"]


def collect_rows(cfg: BenchmarkConfig) -> list[dict[str, Any]]:
    """One flat row per finished cell: identity, timings, per-class IoU / Dice (0–1) and mIoU."""
    rows = []
    for cell, done in iter_done(cfg):
        m = done.get("metrics") or {}
        row: dict[str, Any] = {
            "task": cell.task,
            "method": cell.method,
            "fraction": cell.fraction.label,
            "seed": cell.seed,
            "miou": m.get("miou"),
            "miou_pooled": m.get("miou_pooled"),
            "train_s": done.get("train_s"),
            "eval_s": done.get("eval_s"),
            "directory": str(cell.directory),
        }
        for name, v in (m.get("iou") or {}).items():
            row[f"iou/{name}"] = v
        for name, v in (m.get("dice") or {}).items():
            row[f"dice/{name}"] = v
        for name, v in (m.get("iou_pooled") or {}).items():
            row[f"iou_pooled/{name}"] = v
        rows.append(row)
    return rows


def class_names(rows: Sequence[dict[str, Any]], declared: Sequence[str] | None = None) -> list[str]:
    """Class names in label order: the YAML's ``classes`` when given, else the order met in the rows."""
    if declared:
        return list(declared)
    names: list[str] = []
    for r in rows:
        for k in r:
            if k.startswith("iou/") and k[4:] not in names:
                names.append(k[4:])
    return names


def mean_std(values: Iterable[float]) -> tuple[float, float, int]:
    """Mean, sample standard deviation (0 for one value) and count of the non-missing values."""
    vals = [float(v) for v in values if v is not None and not (isinstance(v, float) and math.isnan(v))]
    if not vals:
        return float("nan"), float("nan"), 0
    mu = sum(vals) / len(vals)
    sd = math.sqrt(sum((v - mu) ** 2 for v in vals) / (len(vals) - 1)) if len(vals) > 1 else 0.0
    return mu, sd, len(vals)


def summarize(
    rows: Sequence[dict[str, Any]], classes: Sequence[str], fractions: Sequence[str], methods: Sequence[str],
    metric: str = "iou",
) -> list[dict[str, Any]]:
    """Mean and std over seeds of every class IoU and the mIoU, per (fraction, method), in table order.

    ``metric="iou"`` uses the per-image IoU (``medsemiseg.metrics``' headline), ``"iou_pooled"`` the whole-set
    confusion-matrix IoU; the summary keys are ``iou/<class>/mean`` etc. either way.
    """
    if metric not in ("iou", "iou_pooled"):
        raise ValueError(f"metric must be 'iou' or 'iou_pooled', got {metric!r}")
    miou_key = "miou" if metric == "iou" else "miou_pooled"
    out = []
    for f in fractions:
        for m in methods:
            sel = [r for r in rows if r["fraction"] == f and r["method"] == m]
            if not sel:
                continue
            entry: dict[str, Any] = {"task": sel[0]["task"], "fraction": f, "method": m}
            for c in classes:
                mu, sd, _ = mean_std(r.get(f"{metric}/{c}") for r in sel)
                entry[f"iou/{c}/mean"], entry[f"iou/{c}/std"] = mu, sd
            mu, sd, n = mean_std(r.get(miou_key) for r in sel)
            entry["miou/mean"], entry["miou/std"], entry["n"] = mu, sd, n
            entry["seeds"] = sorted(r["seed"] for r in sel)
            entry["metric"] = metric
            out.append(entry)
    return out


def _fmt(mu: float, sd: float, n: int, bold: bool = False) -> str:
    if math.isnan(mu):
        return "–"
    s = f"{100 * mu:.2f}" if n <= 1 else f"{100 * mu:.2f} ± {100 * sd:.2f}"
    return f"**{s}**" if bold else s


def markdown_table(summary: Sequence[dict[str, Any]], classes: Sequence[str], title: str | None = None) -> str:
    """The paper-form table: rows grouped by labelled fraction, columns = class IoUs, mIoU, seeds (percent)."""
    header = ["Labelled", "Method"] + [f"{c} IoU" for c in classes] + ["mIoU", "n"]
    lines = []
    if title:
        lines += [title, ""]
    lines += ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(classes) + 2)) + "|"]
    fractions = list(dict.fromkeys(e["fraction"] for e in summary))
    for f in fractions:
        group = [e for e in summary if e["fraction"] == f]
        best: dict[int, float] = {}
        for e in group:
            if not math.isnan(e["miou/mean"]):
                best[e["n"]] = max(best.get(e["n"], -1.0), e["miou/mean"])
        contested = len(group) > 1
        for e in group:
            cells = [f, e["method"]]
            cells += [_fmt(e[f"iou/{c}/mean"], e[f"iou/{c}/std"], e["n"]) for c in classes]
            is_best = contested and e["miou/mean"] == best.get(e["n"])
            cells += [_fmt(e["miou/mean"], e["miou/std"], e["n"], bold=is_best), str(e["n"])]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def write_csv(rows: Sequence[dict[str, Any]], path: Path) -> Path:
    """Every finished cell, one line each (``results.csv``)."""
    fields: list[str] = []
    for r in rows:
        for k in r:
            if k not in fields:
                fields.append(k)
    path.parent.mkdir(parents=True, exist_ok=True)
    fh = io.StringIO(newline="")
    w = csv.DictWriter(fh, fieldnames=fields)
    w.writeheader()
    for r in rows:
        w.writerow(r)
    return atomic_write_text(path, fh.getvalue())


def write_summary_csv(summary: Sequence[dict[str, Any]], path: Path) -> Path:
    rows = [{k: (";".join(map(str, v)) if isinstance(v, list) else v) for k, v in e.items()} for e in summary]
    return write_csv(rows, path)


METRIC_TEXT = {
    "iou": "per-image IoU averaged over test images",
    "iou_pooled": "pooled IoU (intersection and union summed over the test set)",
}


def write_tables(cfg: BenchmarkConfig) -> dict[str, Path]:
    """Write ``results.csv``, ``summary.csv`` and ``results.md`` into ``<output_dir>/<task>/``; return their paths.

    ``results.md`` holds the table in the YAML's ``table_metric`` first and, when the cells also report it, the
    other IoU aggregation second (they differ where small classes are absent from many slices); with a
    ``published`` section, then the published table and our difference from it (in ``table_metric``)."""
    rows = collect_rows(cfg)
    classes = class_names(rows, cfg.classes)
    fractions = [f.label for f in cfg.fractions]
    summary = summarize(rows, classes, fractions, cfg.methods, metric=cfg.table_metric)
    out = cfg.task_dir
    out.mkdir(parents=True, exist_ok=True)
    paths = {"results_csv": write_csv(rows, out / "results.csv"),
             "summary_csv": write_summary_csv(summary, out / "summary.csv")}
    parts = []
    metrics = [cfg.table_metric] + [m for m in METRIC_TEXT if m != cfg.table_metric]
    for metric in metrics:
        summ = summary if metric == cfg.table_metric else summarize(rows, classes, fractions, cfg.methods, metric)
        if metric != cfg.table_metric and not any(r.get(f"{metric}/{c}") is not None for r in rows for c in classes):
            continue
        title = f"### {cfg.task}: IoU per class and mIoU (%), {METRIC_TEXT[metric]}; mean ± sample std (n − 1) over seeds"
        parts.append(markdown_table(summ, classes, title) if summ else f"{title}\n\n(no finished cells yet)\n")
        if metric == cfg.table_metric:
            missing = not_in_table(cfg)
            if missing:  # failed, stale or unfinished cells never vanish silently from the table
                parts.append("Not in the table:\n\n" + "\n".join(f"- {line}" for line in missing) + "\n")
            if BASELINE in cfg.methods:
                paired = paired_differences(rows, classes, cfg.methods, fractions, metric)
                foreground_first = [c for c in classes if c != "background"]
                parts.append(paired_markdown(paired, classes, cfg.task, minority_first=foreground_first))
                # does each method beat the paper's method, and the strongest baseline, seed by seed?
                for reference in (m for m in REFERENCE_METHODS if m in cfg.methods):
                    others = [m for m in cfg.methods if m != BASELINE]
                    against = paired_differences(rows, classes, others, fractions, metric, baseline=reference)
                    if against:
                        parts.append(paired_markdown(against, classes, cfg.task, minority_first=foreground_first,
                                                     baseline=reference))
    if cfg.published is not None:
        table = read_published(cfg.published, classes, known_methods())
        parts.append(published_markdown(table, cfg.task))
        diff = difference_markdown(table, summary, cfg.task)
        parts.append(diff if diff else f"### {cfg.task}: ours minus published\n\n(no (fraction, method) in both yet)\n")
    md = "\n".join(parts)
    atomic_write_text(out / "results.md", md)
    paths["results_md"] = out / "results.md"
    return paths
