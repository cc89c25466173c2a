"""The benchmark: the paper's comparison table, re-measured.

``python -m medsemiseg.benchmark configs/benchmark_covid_quick.yaml`` runs every method x labelled fraction x seed
as a MONAI bundle training (one subprocess per cell, resumable), then writes ``results.csv``, the paper-form
Markdown table and plots (:mod:`.config`, :mod:`.cells`, :mod:`.grid`, :mod:`.results`, :mod:`.plots`,
:mod:`.report`).
``python -m medsemiseg.benchmark.cost`` measures seconds per iteration, peak memory and FLOPs of every method next
to its FLOP floor (:mod:`.cost`). ``python -m medsemiseg.benchmark.projection`` projects a grid's time from its
finished cells and those step times (:mod:`.projection`). See ``docs/benchmarks.md``.

Every file these write (the cells' markers, tables, figures, analysis and cost reports, the README's table) is
written whole or not at all, through :mod:`medsemiseg.atomic_io` (a temporary file in the same folder, renamed over
the target): a killed or full-disk run leaves the previous file in place, and a full disk names the file. The cells'
``train.log`` files are appended to as the trainings run and are the exception.
"""

from .config import BenchmarkConfig, Cell, ConfigError, FractionSpec, enumerate_cells, load_config
from .grid import CellResult, run_grid
from .report import make_report
from .results import collect_rows, markdown_table, summarize

__all__ = [
    "BenchmarkConfig", "Cell", "CellResult", "ConfigError", "FractionSpec", "enumerate_cells", "load_config",
    "run_grid", "make_report", "collect_rows", "markdown_table", "summarize",
]
