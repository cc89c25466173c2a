"""The benchmark: the paper's comparison table, re-measured.

``python -m medsemiseg.benchmark configs/benchmark_covid_quick.yaml`` runs every method x labelled fraction x seed
as a MONAI bundle training (one subprocess per cell, resumable), then writes ``results.csv``, the paper-form
Markdown table and plots (:mod:`.config`, :mod:`.cells`, :mod:`.grid`, :mod:`.results`, :mod:`.plots`,
:mod:`.report`).
``python -m medsemiseg.benchmark.cost`` measures seconds per iteration, peak memory and FLOPs of every method next
to its FLOP floor (:mod:`.cost`). ``python -m medsemiseg.benchmark.projection`` projects a grid's time from its
finished cells and those step times (:mod:`.projection`). See ``docs/benchmarks.md``.
"""

from .config import BenchmarkConfig, Cell, ConfigError, FractionSpec, enumerate_cells, load_config
from .grid import CellResult, run_grid
from .report import make_report
from .results import collect_rows, markdown_table, summarize

__all__ = [
    "BenchmarkConfig", "Cell", "CellResult", "ConfigError", "FractionSpec", "enumerate_cells", "load_config",
    "run_grid", "make_report", "collect_rows", "markdown_table", "summarize",
]
