"""``python -m medsemiseg.benchmark.paired BASE.yaml VARIANT.yaml --label L``: a variant grid (changed method options
or data) paired seed by seed with its base grid -- each variant method against supervised and against the base
grid's same method (:mod:`.pairing` computes the differences; it is a separate module so that the package, which
imports it for every report, does not import this command's module before ``python -m`` runs it).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from medsemiseg.atomic_io import atomic_write_text

from .pairing import (BASELINE, REFERENCE_METHODS, label_gap, paired_differences, paired_markdown,
                      plot_paired_differences, t_interval)

__all__ = ["compare_grids", "label_gap", "main", "paired_differences", "paired_markdown", "plot_paired_differences",
           "t_interval", "variant_rows"]


def variant_rows(base_rows: Sequence[dict[str, Any]], variant_rows_: Sequence[dict[str, Any]], label: str
                 ) -> list[dict[str, Any]]:
    """The base grid's rows plus a variant grid's, each variant method renamed ``<method> (<label>)``, so that
    :func:`paired_differences` pairs a variant with supervised and with its fixed twin on the same seeds."""
    renamed = [{**r, "method": f"{r['method']} ({label})"} for r in variant_rows_ if r["method"] != BASELINE]
    return list(base_rows) + renamed


def compare_grids(base, variant, label: str) -> str:
    """``results.md``-style paired sections of a variant grid against its base grid (same task, fractions, seeds):
    each variant method against supervised, then against the base grid's same method, then (when the variant grid
    has SupMix + SUFD or UniMatch and other methods) each other variant method against the variant's SupMix + SUFD
    and against its UniMatch."""
    from .results import class_names, collect_rows

    rows_b = collect_rows(base)
    rows = variant_rows(rows_b, collect_rows(variant), label)
    classes = class_names(rows_b, base.classes)
    fractions = [f.label for f in base.fractions]
    variants = list(dict.fromkeys(r["method"] for r in rows if r["method"].endswith(f" ({label})")))
    first = [c for c in classes if c != "background"]
    parts = [paired_markdown(paired_differences(rows, classes, variants, fractions, base.table_metric),
                             classes, f"{variant.task}, {label}", minority_first=first)]
    for v in variants:
        fixed = v[: -len(f" ({label})")]
        entries = paired_differences(rows, classes, [v], fractions, base.table_metric, baseline=fixed)
        parts.append(paired_markdown(entries, classes, f"{variant.task}, {label}", minority_first=first,
                                     baseline=fixed))
    for reference in (f"{m} ({label})" for m in REFERENCE_METHODS):
        if reference in variants and len(variants) > 1:  # within the variant grid: each method against the paper's
            others = [v for v in variants if v != reference]  # method and against UniMatch
            entries = paired_differences(rows, classes, others, fractions, base.table_metric, baseline=reference)
            parts.append(paired_markdown(entries, classes, f"{variant.task}, {label}", minority_first=first,
                                         baseline=reference))
    return "\n".join(parts)


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m medsemiseg.benchmark.paired BASE.yaml VARIANT.yaml --label adaptive``: print (and write next to
    the variant's results) the variant's paired differences to supervised and to its fixed twin."""
    import argparse

    from .config import load_config

    p = argparse.ArgumentParser(prog="python -m medsemiseg.benchmark.paired", description=main.__doc__)
    p.add_argument("base", help="the grid the variant changes (its supervised cells are the baseline)")
    p.add_argument("variant", help="a grid of the same task, fractions and seeds with changed method options")
    p.add_argument("--label", required=True, help="what the variant changes, e.g. adaptive (names its rows)")
    a = p.parse_args(argv)
    base, variant = load_config(a.base), load_config(a.variant)
    md = compare_grids(base, variant, a.label)
    out = variant.task_dir / f"paired_vs_{Path(a.base).stem}.md"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, md)
    print(md)
    print(f"-> {out}")
    return 0


if __name__ == "__main__":  # pragma: no cover
    raise SystemExit(main())
