"""A published results table, read from a CSV, shown next to the grid's own results.

The benchmark issue asks for our measured table *next to the paper's published one, copied as published*. The
numbers can only come from the paper itself, so they are not shipped: whoever holds the paper copies its table into
a CSV (one row per labelled fraction and method, IoU in percent exactly as printed) and names it in the grid YAML::

    published:
      file: published_covid.csv          # relative to the YAML's folder
      source: "Mano, Saito & Hotta (2026), Table 2"
      methods: {"Ours": supmix_sufd, "Supervised": supervised}   # paper name -> our method name (optional)

CSV columns: ``fraction`` (``1/8``, ``1/4``, ``1/2``, ``full``), ``method``, any of the YAML's class names (their
IoU), and ``miou``. A column may be missing (the paper may not print background IoU); a cell may be empty or ``-``.
``results.md`` then gets the published table verbatim (with its source) and a table of *our mean minus published*
mIoU and per-class IoU for every (fraction, method) both hold. Nothing is inferred: a published method we do not run
keeps its row in the published table and has no difference row.
"""

from __future__ import annotations

import csv
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

__all__ = ["PublishedTable", "parse_published_spec", "read_published", "published_markdown", "difference_markdown"]

_MISSING = {"", "-", "–", "—", "n/a", "na"}


@dataclass
class PublishedTable:
    """The rows of a published table, in the CSV's order, values in percent (``nan`` where not printed)."""

    source: str
    path: Path
    classes: list[str]                      # the class columns the CSV holds, in the grid's class order
    rows: list[dict[str, Any]] = field(default_factory=list)   # {"fraction", "method", "paper_method", <class>..., "miou"}


def parse_published_spec(raw: Any, yaml_dir: Path, err: Callable[[str], Exception]) -> dict[str, Any] | None:
    """Validate the YAML's ``published`` section (file resolved against the YAML's folder); ``None`` when absent."""
    if raw is None:
        return None
    if not isinstance(raw, dict) or "file" not in raw:
        raise err("'published' must be a mapping {file: table.csv, source: '<citation>', methods: {paper: ours}}")
    extra = set(raw) - {"file", "source", "methods"}
    if extra:
        raise err(f"'published' has unknown key(s) {sorted(extra)}; allowed: file, source, methods")
    path = Path(str(raw["file"]))
    if not path.is_absolute():
        path = yaml_dir / path
    if not path.is_file():
        raise err(f"'published: file' {path} does not exist (the path is relative to the YAML's folder)")
    source = raw.get("source")
    if not isinstance(source, str) or not source.strip():
        raise err("'published' needs 'source': the citation of the table (paper, table number), printed with it")
    methods = raw.get("methods") or {}
    if not isinstance(methods, dict) or not all(isinstance(k, str) and isinstance(v, str) for k, v in methods.items()):
        raise err("'published: methods' must map the paper's method names to ours, e.g. {Ours: supmix_sufd}")
    return {"file": path, "source": source.strip(), "methods": dict(methods)}


def _number(text: str, where: str) -> float:
    t = (text or "").strip()
    if t.lower() in _MISSING:
        return float("nan")
    try:
        return float(t.rstrip("%"))
    except ValueError:
        raise ValueError(f"{where}: {text!r} is not a number (write IoU in percent as published, or '-')") from None


def read_published(spec: Mapping[str, Any], classes: Sequence[str] | None, known_methods: Sequence[str]) -> PublishedTable:
    """Read and check the CSV a ``published`` section names.

    Class columns must be among ``classes`` (the grid's class names) so a typo cannot silently drop a column; method
    names go through ``spec["methods"]``; a row whose method is then not one of ours is kept (shown as published) but
    compared with nothing.
    """
    path = Path(spec["file"])
    with open(path, newline="", encoding="utf-8-sig") as fh:
        reader = csv.DictReader(fh)
        header = [h.strip() for h in (reader.fieldnames or [])]
        raw_rows = list(reader)
    where = str(path)
    for need in ("fraction", "method"):
        if need not in header:
            raise ValueError(f"{where}: needs a '{need}' column; columns are {header}")
    value_cols = [h for h in header if h not in ("fraction", "method")]
    if classes:
        unknown = [h for h in value_cols if h != "miou" and h not in classes]
        if unknown:
            raise ValueError(f"{where}: column(s) {unknown} are neither 'miou' nor a class of the grid {list(classes)}")
        present = [c for c in classes if c in value_cols]
    else:
        present = [h for h in value_cols if h != "miou"]
    if "miou" not in value_cols and not present:
        raise ValueError(f"{where}: no value columns; expected 'miou' and/or class names {list(classes or [])}")
    mapping = dict(spec.get("methods") or {})
    table = PublishedTable(source=str(spec["source"]), path=path, classes=present)
    seen: dict[tuple[str, str], int] = {}
    for i, r in enumerate(raw_rows, start=2):
        r = {(k or "").strip(): (v or "") for k, v in r.items()}
        if not any(v.strip() for v in r.values()):
            continue
        paper_method = r["method"].strip()
        method = mapping.get(paper_method, paper_method)
        key = (r["fraction"].strip(), method)
        if key in seen:
            raise ValueError(f"{where} line {i}: ({key[0]}, {paper_method}) repeats line {seen[key]}; "
                             "one row per labelled fraction and method")
        seen[key] = i
        row: dict[str, Any] = {"fraction": r["fraction"].strip(), "paper_method": paper_method,
                               "method": method if method in known_methods else None}
        for c in present + (["miou"] if "miou" in value_cols else []):
            row[c] = _number(r.get(c, ""), f"{where} line {i}, column {c}")
        if "miou" not in row:
            row["miou"] = float("nan")
        table.rows.append(row)
    if not table.rows:
        raise ValueError(f"{where}: no rows")
    return table


def _pct(v: float) -> str:
    return "–" if v is None or math.isnan(v) else f"{v:.2f}"


def published_markdown(table: PublishedTable, task: str) -> str:
    """The published table as printed (percent), one row per CSV row, with its source."""
    head = ["Labelled", "Method (paper)"] + [f"{c} IoU" for c in table.classes] + ["mIoU"]
    lines = [f"### {task}: published results — {table.source} (copied from `{table.path.name}`, IoU %)", "",
             "| " + " | ".join(head) + " |", "|" + "|".join(["---"] * 2 + ["---:"] * (len(table.classes) + 1)) + "|"]
    for r in table.rows:
        name = r["paper_method"] + (f" (= `{r['method']}`)" if r["method"] and r["method"] != r["paper_method"] else "")
        lines.append("| " + " | ".join([r["fraction"], name] + [_pct(r[c]) for c in table.classes]
                                       + [_pct(r["miou"])]) + " |")
    return "\n".join(lines) + "\n"


def difference_markdown(table: PublishedTable, summary: Sequence[Mapping[str, Any]], task: str) -> str | None:
    """Our mean minus the published value (points of IoU %) for every (fraction, method) in both; ``None`` if none.

    ``summary`` is :func:`medsemiseg.benchmark.results.summarize`'s output (fractions 0-1)."""
    ours = {(e["fraction"], e["method"]): e for e in summary}
    lines = []
    for r in table.rows:
        e = ours.get((r["fraction"], r["method"])) if r["method"] else None
        if e is None:
            continue
        cells = [r["fraction"], r["method"]]
        for c in table.classes:
            cells.append(_signed(100 * e.get(f"iou/{c}/mean", float("nan")) - r[c]))
        cells += [_signed(100 * e["miou/mean"] - r["miou"]), str(e["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    if not lines:
        return None
    head = ["Labelled", "Method"] + [f"{c} IoU" for c in table.classes] + ["mIoU", "n (ours)"]
    return "\n".join([f"### {task}: ours minus published (IoU points; positive: ours higher)", "",
                      "| " + " | ".join(head) + " |",
                      "|" + "|".join(["---"] * 2 + ["---:"] * (len(table.classes) + 2)) + "|"] + lines) + "\n"


def _signed(v: float) -> str:
    return "–" if math.isnan(v) else f"{v:+.2f}"
