"""``python -m medsemiseg.benchmark.readme_table [--write | --check] [--readme README.md]``: the README's results
table, copied from the real-data grids' ``results.md``.

The table has one row per method found in any of the grids (``GRIDS``) at ``FRACTION`` labelled, in the order the
grids list them, then the full-label supervised row; for each grid, the method's per-image mIoU (mean ± std over
seeds, as ``results.md`` prints it) and its paired difference to supervised (mean [95 % t interval]). A method a
grid lacks shows ``–`` there. Rerunning the script after a grid gains a method or a seed puts it in the table.

Without options the table is printed; ``--write`` replaces the block between ``<!-- results-table -->`` and
``<!-- /results-table -->`` in the README; ``--check`` exits with status 1 when that block differs from the table
(``tests/test_readme_table.py`` runs the same comparison).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

from medsemiseg.atomic_io import atomic_write_text

__all__ = ["BEGIN", "END", "FRACTION", "GRIDS", "grid_rows", "markdown_tables", "readme_block", "render",
           "replace_block"]

#: (column title, results.md relative to the repository root) of each grid the README reports
GRIDS: tuple[tuple[str, str], ...] = (
    ("DRIVE", "docs/results/real/drive/results.md"),
    ("COVID-SemiSeg", "docs/results/real/covidsemiseg/results.md"),
)
FRACTION = "1/8"
BASELINE = "supervised"
BEGIN = "<!-- results-table -->"
END = "<!-- /results-table -->"
_MIOU_TITLE = "per-image IoU averaged over test images"
_PAIRED_TITLE = f"paired difference to {BASELINE} ("
_MISSING = "–"


def markdown_tables(text: str) -> list[tuple[str, list[dict[str, str]]]]:
    """Every ``### heading`` of a ``results.md`` with the rows of the table under it.

    Args:
        text: the markdown text.

    Returns:
        ``(heading, rows)`` pairs in file order; each row maps the table's column titles to its cells, stripped of
        surrounding spaces and of ``**`` bold marks.
    """
    out: list[tuple[str, list[dict[str, str]]]] = []
    heading, header, rows = None, None, []
    for line in text.splitlines() + [""]:
        if line.startswith("### "):
            heading, header, rows = line[4:].strip(), None, []
            out.append((heading, rows))
        elif heading is not None and line.startswith("|"):
            cells = [c.strip().replace("**", "") for c in line.strip().strip("|").split("|")]
            if header is None:
                header = cells
            elif not all(set(c) <= set("-:") for c in cells):
                rows.append(dict(zip(header, cells)))
    return out


def grid_rows(path: Path, fraction: str = FRACTION) -> tuple[dict[str, tuple[str, str]], str | None]:
    """One grid's mIoU and paired difference to supervised per method at ``fraction``.

    Args:
        path: the grid's ``results.md``.
        fraction: the labelled fraction, as the tables' ``Labelled`` column writes it.

    Returns:
        ``({method: (mIoU, difference)}, full-label supervised mIoU or None)``; the baseline's difference is ``–``.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: ``path`` has no per-image mIoU table or no paired table against supervised.
    """
    if not path.is_file():
        raise FileNotFoundError(f"{path}: no such results.md; run the grid (docs/results.md gives its command) or "
                                "pass --root with the repository that holds docs/results/")
    tables = markdown_tables(path.read_text())
    miou = next((rows for h, rows in tables if _MIOU_TITLE in h), None)
    paired = next((rows for h, rows in tables if _PAIRED_TITLE in h), None)
    if miou is None or paired is None:
        raise ValueError(f"{path}: no '{_MIOU_TITLE}' table or no '{_PAIRED_TITLE}...' table; rebuild it with "
                         "python -m medsemiseg.benchmark CONFIG.yaml --report-only")
    diffs = {r["Method"]: r["mIoU diff"] for r in paired if r.get("Labelled") == fraction}
    rows = {r["Method"]: (r["mIoU"], diffs.get(r["Method"], _MISSING))
            for r in miou if r.get("Labelled") == fraction}
    full = next((r["mIoU"] for r in miou if r.get("Labelled") == "full" and r.get("Method") == BASELINE), None)
    return rows, full


def render(root: Path | str = ".", grids: tuple[tuple[str, str], ...] = GRIDS, fraction: str = FRACTION) -> str:
    """The README's results table (markdown, no trailing newline) from the grids under ``root``."""
    per_grid = [(title, *grid_rows(Path(root) / rel, fraction)) for title, rel in grids]
    methods: list[str] = []
    for _, rows, _ in per_grid:
        methods += [m for m in rows if m not in methods]
    head = ["Method"] + [f"{t} {s}" for t, _, _ in per_grid for s in ("mIoU", "Δ vs supervised [95 % CI]")]
    lines = ["| " + " | ".join(head) + " |", "|---" + "|---:" * (len(head) - 1) + "|"]
    for m in methods:
        cells = [c for _, rows, _ in per_grid for c in rows.get(m, (_MISSING, _MISSING))]
        lines.append(f"| {m} | " + " | ".join(cells) + " |")
    lines.append(f"| {BASELINE}, all labels | " + " | ".join(c for _, _, full in per_grid
                                                               for c in (full or _MISSING, _MISSING)) + " |")
    return "\n".join(lines)


def _block_span(readme: str, name: str) -> tuple[int, int]:
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise ValueError(f"{name}: no '{BEGIN}' ... '{END}' block; add the two markers where the table goes")
    return start + len(BEGIN), end


def readme_block(readme: str, name: str = "README.md") -> str:
    """The text between the README's results-table markers, without surrounding blank lines."""
    a, b = _block_span(readme, name)
    return readme[a:b].strip("\n")


def replace_block(readme: str, table: str, name: str = "README.md") -> str:
    """``readme`` with the text between its results-table markers replaced by ``table``."""
    a, b = _block_span(readme, name)
    return readme[:a] + "\n" + table + "\n" + readme[b:]


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medsemiseg.benchmark.readme_table", description=__doc__.split("\n")[0])
    p.add_argument("--root", default=".", help="repository root holding docs/results/ (default: .)")
    p.add_argument("--readme", default=None, help="the README to write or check (default: <root>/README.md)")
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--write", action="store_true", help="replace the README's table block")
    mode.add_argument("--check", action="store_true", help="exit 1 when the README's table block differs")
    args = p.parse_args(argv)
    try:
        table = render(args.root)
        if not (args.write or args.check):
            print(table)
            return 0
        readme = Path(args.readme or Path(args.root) / "README.md")
        text = readme.read_text()
        if args.check:
            if readme_block(text, str(readme)) != table:
                print(f"error: {readme}'s results table differs from the grids' results.md; "
                      "rewrite it with python -m medsemiseg.benchmark.readme_table --write", file=sys.stderr)
                return 1
            return 0
        atomic_write_text(readme, replace_block(text, table, str(readme)))
        print(f"readme_table: wrote the results table into {readme}")
        return 0
    except (OSError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
