"""How long will a benchmark grid take? Project it from the finished cells and the per-step cost of each method.

``python -m medsemiseg.benchmark.projection configs/benchmark_covid.yaml`` answers before a GPU is booked for days:

1. it reads every cell's schedule the way the bundle will (``max_epochs x epoch_length`` of the bundle's train
   config with the grid's overrides applied, through MONAI's ``ConfigParser``);
2. it measures each method's seconds per training step at the grid's own settings (network, image size, batch sizes,
   device, AMP, CPU threads) with :mod:`medsemiseg.benchmark.cost`, or reads such a report (``--cost``);
3. it takes the finished cells (``done.json``: training and evaluation seconds) and splits each one's training time
   into steps (iterations x the method's step time) and everything else (data loading, validation, start-up),
   per iteration: that *overhead per iteration* is what the cost benchmark cannot see;
4. a cell still to run is projected as ``iterations x (step time of its method + overhead per iteration) +
   evaluation seconds``, the overhead and evaluation time taken from finished cells of the same method, else of
   methods of the same kind (with or without unlabelled data: a semi-supervised cell also loads an unlabelled batch
   per step), else of any method. Where a method already has finished cells of the same schedule, their mean time
   is used as is.

Without any finished cell the projection counts training steps only and says it is a lower bound. The usual way
to a full-grid estimate is therefore: run one cell (``python -m medsemiseg.benchmark CONFIG --methods supmix_sufd
--fractions 1/8 --seeds 0``), then this command.

A whole cell of a paper-scale grid takes hours. ``--probe PROBE.yaml`` takes the overhead from a *probe* grid
instead: a YAML that ``extends`` the grid and stops its cells early (``configs/benchmark_covid_probe.yaml``: 10 of
the 200 epochs). Its finished cells stand for the grid's in overhead per iteration and evaluation time; when a
finished probe cell's ``train.log`` shows its epochs, the time outside them (imports, caching, the last save) is
counted once per cell rather than spread over its few iterations. Probe cells never count as finished cells of the
grid, and a probe whose cells train with other per-step settings (network, image size, batch sizes, device, AMP,
method options) is refused. A probe cell stopped before its end (a GPU lease ran
out) counts with the epochs its last run completed, read from its ``train.log``, and no evaluation time. A probe
cell recorded with another command than the probe YAML now gives is used, with a warning naming the difference;
``--probe-output-dir`` reads probe cells kept elsewhere (docs/results/gpu/...).

``--holdout`` checks the model on the grid's own cells: every method that has finished cells is projected from the
*other* methods' cells only and compared with what it measured (docs/benchmarks.md quotes that error).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import re
import statistics
import sys
from pathlib import Path
from typing import Any, Callable, Iterable

from medsemiseg.atomic_io import atomic_write_text
from medsemiseg.methods import requires_unlabeled

from .cells import DONE, iter_done, read_marker, stale_changes
from .config import BenchmarkConfig, Cell, ConfigError, enumerate_cells, load_config

__all__ = [
    "cell_schedule",
    "cost_settings_for_grid",
    "probe_cells",
    "epochs_from_log",
    "project_grid",
    "holdout_check",
    "projection_table",
    "main",
]


# ---------------------------------------------------------------------------------------------------------------
# what one cell runs
# ---------------------------------------------------------------------------------------------------------------

_SCHEDULE_KEYS = ("max_epochs", "epoch_length", "network_name", "network_kwargs", "image_size", "patch_size",
                  "batch_size", "unlabeled_batch_size", "device", "amp", "method_options", "amp_dtype", "compile",
                  "compile_mode", "channels_last")
_OPTIONAL_KEYS = ("patch_size", "amp_dtype", "compile", "compile_mode", "channels_last")
# what one training step costs depends on these, not on how many steps there are
_STEP_KEYS = tuple(k for k in _SCHEDULE_KEYS if k not in ("max_epochs", "epoch_length"))


def _json(value: Any) -> str:
    """A setting as comparable text (lists and mappings in a stable order)."""
    return json.dumps(value, sort_keys=True, default=str)


def cell_schedule(cfg: BenchmarkConfig, cell: Cell) -> dict[str, Any]:
    """The settings the bundle will train ``cell`` with: its train config(s) with the cell's overrides, resolved by
    MONAI's ``ConfigParser`` as ``monai.bundle run`` does (so the bundle's defaults fill what the YAML leaves out).
    ``iterations`` is ``max_epochs x epoch_length``."""
    from monai.bundle import ConfigParser

    parser = ConfigParser()
    parser.read_config([str(cfg.bundle_file(f)) for f in cfg.train_config])
    parser.update(cfg.cell_overrides(cell))
    out: dict[str, Any] = {}
    for key in _SCHEDULE_KEYS:
        if key in _OPTIONAL_KEYS and key not in parser:
            out[key] = None  # a bundle from before the key (whole images only)
            continue
        if key not in parser:
            raise ConfigError(f"{cfg.source}: the bundle's train config has no {key!r}; cannot project its cells")
        out[key] = parser.get_parsed_content(key, instantiate=False)
    out["device"] = str(out["device"])
    out["iterations"] = int(out["max_epochs"]) * int(out["epoch_length"])
    return out


def cost_settings_for_grid(cfg: BenchmarkConfig, iters: int = 20, warmup: int = 3):
    """The :class:`~medsemiseg.benchmark.cost.CostSettings` that measure step times at the grid's own settings.

    Raises :class:`ConfigError` when the grid's cells do not share network, image size, batch sizes, device, AMP and
    its dtype, ``compile`` / ``compile_mode`` and ``channels_last`` (one cost run could not stand for all of them)
    or when the image is not square.
    """
    from medsemiseg.bundle.settings import as_bool as _as_bool

    from .cost import TASKS, CostSettings

    task = cfg.task if cfg.task in TASKS else cfg.bundle.name  # a real-data grid's task names its data set
    if task not in TASKS:
        raise ConfigError(f"{cfg.source}: the cost benchmark knows the tasks {sorted(TASKS)}, not {cfg.task!r}")
    shared = ("network_name", "network_kwargs", "image_size", "patch_size", "batch_size", "unlabeled_batch_size",
              "device", "amp", "amp_dtype", "compile", "compile_mode", "channels_last")
    seen: dict[str, Any] = {}
    method_options: dict[str, dict] = {}
    first: dict[str, Any] | None = None
    for cell in enumerate_cells(cfg):
        sch = cell_schedule(cfg, cell)
        first = first or sch
        for k in shared:
            v = _json(sch[k])
            if seen.setdefault(k, v) != v:
                raise ConfigError(
                    f"{cfg.source}: cells differ in {k!r} ({seen[k]} vs {v} at {cell.key}), so one cost run cannot "
                    "stand for all of them; measure step times yourself (python -m medsemiseg.benchmark.cost ... "
                    "--json F) and pass the report with --cost F"
                )
        method_options.setdefault(cell.method, dict(sch["method_options"] or {}))
    size = first["patch_size"] or first["image_size"]  # what the network sees in a training step
    size = [size, size] if isinstance(size, int) else list(size)
    if len(size) != 2 or size[0] != size[1]:
        raise ConfigError(f"{cfg.source}: the cost benchmark measures square images; the network input is {size}")
    threads = cfg.env.get("OMP_NUM_THREADS")
    device = first["device"]
    return CostSettings(
        task=task,
        network=str(first["network_name"]),
        network_kwargs=dict(first["network_kwargs"] or {}),
        image_size=int(size[0]),
        batch_size=int(first["batch_size"]),
        unlabeled_batch_size=int(first["unlabeled_batch_size"]),
        iters=int(iters),
        warmup=int(warmup),
        device="cuda" if device.startswith("cuda") else device,
        # as the bundle reads it: a grid may spell the switch as the CLI does ("false"), which bool() reads as true
        amp=_as_bool(first["amp"], "amp"),
        threads=int(threads) if threads else None,
        method_options=method_options,
        amp_dtype=str(first["amp_dtype"] or "float16"),
        compile=_as_bool(first["compile"], "compile"),
        compile_mode=str(first["compile_mode"] or "auto"),
        channels_last=_as_bool(first["channels_last"], "channels_last"),
    )


# ---------------------------------------------------------------------------------------------------------------
# the projection
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class _Finished:
    method: str
    iterations: int
    train_s: float
    eval_s: float | None  # None: an unfinished probe cell, not evaluated
    overhead_per_iter: float  # (train_s - iterations x step time) / iterations; probe: from its epochs (fixed_s)
    probe: bool = False  # a cell of a probe grid (--probe): stands for the grid's cells, is not one of them
    changed: list[str] = dataclasses.field(default_factory=list)  # probe: how its recorded command differs from now
    # probe: seconds of train_s outside its epochs (imports, caching, the last save), paid once per cell, not per
    # iteration: spread over a probe's 2000 iterations they would be counted 20 times in a 40 000-iteration cell
    fixed_s: float = 0.0


def _cell_seconds(done: dict) -> float:
    """A finished cell's wall time as ``done.json`` records it: training plus evaluation (and prediction)."""
    return float(done.get("train_s", 0.0)) + float(done.get("eval_s", 0.0))


def _finished_cells(cfg: BenchmarkConfig, step_s: dict[str, float],
                    done: Iterable[tuple[Cell, dict]]) -> list[_Finished]:
    out = []
    for cell, d in done:
        if cell.method not in step_s or "train_s" not in d:
            continue
        n = cell_schedule(cfg, cell)["iterations"]
        train_s, eval_s = float(d["train_s"]), float(d.get("eval_s", 0.0))
        out.append(_Finished(cell.method, n, train_s, eval_s, (train_s - n * step_s[cell.method]) / n))
    return out


_EPOCH_DONE = re.compile(r"Epoch\[(\d+)\] Complete\. Time taken: (\d+):(\d\d):(\d\d(?:\.\d+)?)")


def epochs_from_log(text: str) -> list[float]:
    """Seconds of each epoch the *last* training run in a cell's ``train.log`` completed (ignite's ``Epoch[k]
    Complete. Time taken: H:MM:SS.fff`` lines after the last ``$ command`` line the grid writes per attempt). The
    trainer's epochs only: the validation evaluator logs the same line for its own one-pass run, and its time is
    already inside the trainer's epoch (ignite counts the EPOCH_COMPLETED handlers in the epoch's time)."""
    last = text.rsplit("\n$ ", 1)[-1]
    return [int(h) * 3600 + int(m) * 60 + float(sec) for line in last.splitlines() if "Evaluator" not in line
            for _, h, m, sec in _EPOCH_DONE.findall(line)]


def _cell_epochs(cell: Cell) -> list[float]:
    """:func:`epochs_from_log` of the cell's ``train.log`` ([] without one)."""
    log = cell.directory / "train.log"
    return epochs_from_log(log.read_text(errors="replace")) if log.is_file() else []


def _unfinished_probe(probe: BenchmarkConfig, cell: Cell, step_s: float) -> _Finished | None:
    """A probe cell stopped before it finished (a lease ran out): its completed epochs of its last run, from
    ``train.log``; no evaluation time. None without a completed epoch."""
    epochs = _cell_epochs(cell)
    if not epochs:
        return None
    n = len(epochs) * int(cell_schedule(probe, cell)["epoch_length"])
    return _Finished(cell.method, n, sum(epochs), None, sum(epochs) / n - step_s, probe=True)


def _split_start_up(probe: BenchmarkConfig, cell: Cell, f: _Finished, step_s: float) -> _Finished:
    """A finished probe cell's training time split into its epochs (per iteration) and the rest (``fixed_s``, once
    per cell), when its ``train.log`` shows one run that completed every epoch; else ``f`` unchanged."""
    epochs = _cell_epochs(cell)
    if not epochs or len(epochs) * int(cell_schedule(probe, cell)["epoch_length"]) != f.iterations \
            or sum(epochs) > f.train_s:
        return f
    return dataclasses.replace(f, overhead_per_iter=sum(epochs) / f.iterations - step_s,
                               fixed_s=f.train_s - sum(epochs))


def probe_cells(cfg: BenchmarkConfig, probe: BenchmarkConfig, step_s: dict[str, float]) -> list[_Finished]:
    """The cells of ``probe`` (a grid that stops ``cfg``'s cells early) as references for ``cfg``'s cells, each with
    its own iterations: the finished ones (``done.json``), and those stopped before the end with at least one
    completed epoch (:func:`epochs_from_log`; no evaluation time). Raises :class:`ConfigError` when a probe cell trains
    with other per-step settings than ``cfg``'s cell of the same method (fraction and seed if ``cfg`` has that
    cell): its overhead per iteration would not stand for theirs."""
    targets = {c.key.removeprefix(cfg.task + "/"): c for c in enumerate_cells(cfg)}
    by_method: dict[str, Cell] = {}
    for c in targets.values():
        by_method.setdefault(c.method, c)

    def check(cell: Cell) -> None:
        target = targets.get(cell.key.removeprefix(probe.task + "/")) or by_method.get(cell.method)
        if target is None:
            raise ConfigError(f"probe {probe.source}: its cell {cell.key} has no method of {cfg.source}")
        have, want = cell_schedule(probe, cell), cell_schedule(cfg, target)
        differ = [k for k in _STEP_KEYS if _json(have[k]) != _json(want[k])]
        if differ:
            raise ConfigError(
                f"probe {probe.source}: cell {cell.key} trains with other per-step settings than {cfg.source} "
                f"({', '.join(f'{k}: {have[k]!r} vs {want[k]!r}' for k in differ)}); a probe may change only "
                "max_epochs / epoch_length")

    def changed(cell: Cell) -> list[str]:
        diff = stale_changes(probe, cell)  # the probe YAML (or a bundle default it names) changed since it ran
        return [d for d in diff[1] if not d.startswith("--output_dir ")] if diff else []

    # done.json read directly, not through iter_done: a probe kept in another folder (--probe-output-dir) records
    # another --output_dir and would count as stale; what else changed is reported (``changed``), not hidden
    done = [(c, d) for c in enumerate_cells(probe) if c.method in step_s
            for d in [read_marker(c.directory / DONE)] if d and "train_s" in d]
    out = []
    for cell, d in done:
        check(cell)
        (f,) = _finished_cells(probe, step_s, [(cell, d)])
        out.append(dataclasses.replace(_split_start_up(probe, cell, f, step_s[cell.method]), probe=True,
                                       changed=changed(cell)))
    finished_keys = {c.key for c, _ in done}
    for cell in enumerate_cells(probe):
        if cell.key in finished_keys or cell.method not in step_s:
            continue
        part = _unfinished_probe(probe, cell, step_s[cell.method])
        if part is not None:
            check(cell)
            out.append(dataclasses.replace(part, changed=changed(cell)))
    return out


def _names(cells: list[_Finished]) -> str:
    return ", ".join(sorted({f.method + (" (probe)" if f.probe else "") for f in cells}))


def _reference(method: str, finished: list[_Finished]) -> tuple[list[_Finished], str]:
    """The finished cells whose overhead stands for ``method``'s: its own, else its kind's, else all."""
    own = [f for f in finished if f.method == method]
    if own:
        return own, "its own cells" if not any(f.probe for f in own) else "overhead of " + _names(own)
    kind = [f for f in finished if requires_unlabeled(f.method) == requires_unlabeled(method)]
    if kind:
        return kind, "overhead of " + _names(kind)
    if finished:
        return finished, "overhead of " + _names(finished) + " (other kind)"
    return [], "training steps only (no finished cell: a lower bound)"


def _project_cell(method: str, n: int, step: float, finished: list[_Finished]) -> tuple[float, str]:
    refs, basis = _reference(method, finished)
    same = [f for f in refs if f.method == method and f.iterations == n and not f.probe]
    if same:
        cells = f"{len(same)} cell" + ("s" if len(same) > 1 else "")
        return statistics.fmean(f.train_s + f.eval_s for f in same), f"measured ({cells})"
    if not refs:
        return n * step, basis
    overhead = statistics.fmean(f.overhead_per_iter for f in refs)
    fixed = statistics.fmean(f.fixed_s for f in refs)
    evals = [f.eval_s for f in refs if f.eval_s is not None]
    if not evals:
        evals = [f.eval_s for f in finished if f.eval_s is not None]
    if not evals:
        basis += " (evaluation time not measured: not counted)"
    return n * (step + overhead) + fixed + (statistics.fmean(evals) if evals else 0.0), basis


def _step_times(cost_report: dict[str, Any], variant: str = "eager") -> dict[str, float]:
    """Each method's step time in ``variant`` (``"eager"`` or ``"compiled"``; a report of before the variants holds
    eager rows only)."""
    return {r["method"]: float(r["s_per_iter"]) for r in cost_report.get("results", [])
            if "error" not in r and r.get("variant", "eager") == variant}


def project_grid(cfg: BenchmarkConfig, cost_report: dict[str, Any], cells: Iterable[Cell] | None = None,
                 keep: Callable[[Cell], bool] | None = None, probe: BenchmarkConfig | None = None,
                 variant: str = "eager") -> dict[str, Any]:
    """Per-method rows (cells, finished, projected seconds per cell, basis, remaining seconds) and totals.

    ``cost_report`` is a :func:`medsemiseg.benchmark.cost.run_cost_benchmark` report measured at the grid's
    settings. Finished cells count with their measured time; the others are projected (module docstring).
    ``keep``: only the finished cells it accepts count as finished (a what-if: "projected from this one cell"),
    the rest are projected as if still to run, and their measured total is returned as ``measured_s`` to compare.
    ``probe``: a grid that stops ``cfg``'s cells early; its finished cells join the references (:func:`probe_cells`).
    ``variant``: the report's step times to project with, ``"eager"`` or ``"compiled"`` (``cost --compile both``).
    """
    step_s = _step_times(cost_report, variant)
    cells = list(enumerate_cells(cfg) if cells is None else cells)
    missing = sorted({c.method for c in cells} - set(step_s))
    if missing:
        how = " --compile both" if variant == "compiled" else ""
        raise ConfigError(f"the cost report has no {variant} step time for {missing} (not measured, or its "
                          "measurement failed: see the [cost] lines); measure them: python -m "
                          f"medsemiseg.benchmark.cost --methods ...{how}")
    all_done = list(iter_done(cfg))
    counted = [(c, d) for c, d in all_done if keep is None or keep(c)]
    finished = _finished_cells(cfg, step_s, counted)
    probes = probe_cells(cfg, probe, step_s) if probe is not None else []
    finished += probes
    done_keys = {c.key: d for c, d in counted}
    measured = {c.key: _cell_seconds(d) for c, d in all_done}
    rows: dict[str, dict[str, Any]] = {}
    for cell in cells:
        n = cell_schedule(cfg, cell)["iterations"]
        row = rows.setdefault(cell.method, {"method": cell.method, "step_s": step_s[cell.method], "cells": 0,
                                            "finished": 0, "finished_s": 0.0, "remaining_s": 0.0,
                                            "iterations": set(), "cell_s": [], "basis": ""})
        row["cells"] += 1
        row["iterations"].add(n)
        if cell.key in done_keys:
            row["finished"] += 1
            row["finished_s"] += _cell_seconds(done_keys[cell.key])
            continue
        est, basis = _project_cell(cell.method, n, step_s[cell.method], finished)
        row["cell_s"].append(est)
        row["remaining_s"] += est
        row["basis"] = basis
    for row in rows.values():
        row["iterations"] = sorted(row["iterations"])
        row["projected_cell_s"] = statistics.fmean(row["cell_s"]) if row["cell_s"] else None
        del row["cell_s"]
    finished_s = sum(r["finished_s"] for r in rows.values())
    remaining_s = sum(r["remaining_s"] for r in rows.values())
    return {
        "config": str(cfg.source),
        "variant": variant,
        "cost_settings": cost_report.get("settings"),
        "cost_machine": cost_report.get("machine"),
        "rows": list(rows.values()),
        "finished_cells": sum(r["finished"] for r in rows.values()),
        "cells": sum(r["cells"] for r in rows.values()),
        "finished_s": finished_s,
        "remaining_s": remaining_s,
        "total_s": finished_s + remaining_s,
        "lower_bound": not finished,
        "probe": str(probe.source) if probe is not None else None,
        "probe_cells": [{"method": f.method, "iterations": f.iterations, "train_s": f.train_s, "eval_s": f.eval_s,
                         "overhead_per_iter_s": f.overhead_per_iter, "fixed_s": f.fixed_s,
                         "changed_since": f.changed} for f in probes],
        "what_if": keep is not None,
        # what the grid's finished cells took, all of them (with ``keep``: to compare with the projection)
        "measured_cells": sum(1 for c in cells if c.key in measured),
        "measured_s": sum(measured.get(c.key, 0.0) for c in cells),
    }


def holdout_check(cfg: BenchmarkConfig, cost_report: dict[str, Any], variant: str = "eager") -> list[dict[str, Any]]:
    """For every method with finished cells: its mean measured cell time next to the projection from the *other*
    methods' finished cells only (same kind first), and the relative error."""
    step_s = _step_times(cost_report, variant)
    finished = _finished_cells(cfg, step_s, iter_done(cfg))
    out = []
    for method in sorted({f.method for f in finished}):
        own = [f for f in finished if f.method == method]
        others = [f for f in finished if f.method != method]
        if not others:
            continue
        measured = statistics.fmean(f.train_s + f.eval_s for f in own)
        projected = statistics.fmean(_project_cell(method, f.iterations, step_s[method], others)[0] for f in own)
        out.append({"method": method, "cells": len(own), "measured_s": measured, "projected_s": projected,
                    "error": projected / measured - 1.0, "basis": _reference(method, others)[1]})
    return out


def _fmt(s: float | None) -> str:
    if s is None:
        return "–"
    if s == 0:
        return "0 s"
    if s < 10:
        return f"{s:.1f} s"
    if s < 120:
        return f"{s:.0f} s"
    if s < 2 * 3600:
        return f"{s / 60:.1f} min"
    return f"{s / 3600:.1f} h"


def projection_table(proj: dict[str, Any], holdout: list[dict[str, Any]] | None = None) -> str:
    """Markdown: one row per method, then the totals (and the hold-out check when given)."""
    from .cost import _speed_note

    s = proj.get("cost_settings") or {}
    head = (f"{proj['config']}: step times from the cost benchmark at {s.get('network')} "
            f"{s.get('image_size')}×{s.get('image_size')}, batch {s.get('batch_size')} + "
            f"{s.get('unlabeled_batch_size')}, {s.get('device')}{_speed_note(s)}, {proj.get('variant', 'eager')} "
            f"({proj.get('cost_machine')})\n\n")
    lines = ["| method | s/step | iterations | cells | finished | projected per cell | basis | remaining |",
             "|---|---:|---:|---:|---:|---:|---|---:|"]
    for r in proj["rows"]:
        its = "/".join(str(i) for i in r["iterations"])
        lines.append(f"| {r['method']} | {r['step_s']:.3f} | {its} | {r['cells']} | {r['finished']} | "
                     f"{_fmt(r['projected_cell_s'])} | {r['basis'] or 'all finished'} | {_fmt(r['remaining_s'])} |")
    bound = " (a lower bound: no finished cell)" if proj["lower_bound"] else ""
    lines.append("")
    for f in proj.get("probe_cells") or []:
        how = (f"trained {f['iterations']} iterations in {_fmt(f['train_s'])}, evaluation {_fmt(f['eval_s'])}"
               if f["eval_s"] is not None else
               f"stopped early: {f['iterations']} iterations in {_fmt(f['train_s'])} (its completed epochs), "
               "not evaluated")
        start = f", plus {_fmt(f['fixed_s'])} once (start-up and the last save)" if f.get("fixed_s") else ""
        lines.append(f"Probe ({proj['probe']}): {f['method']} {how}; overhead "
                     f"{1000 * f['overhead_per_iter_s']:.1f} ms per iteration beyond the step time{start}.")
        if f.get("changed_since"):
            lines.append(f"WARNING: that probe cell ran with another command than the probe YAML now gives "
                         f"({'; '.join(f['changed_since'])}): its overhead is that command's.")
    lines.append(f"Finished: {proj['finished_cells']}/{proj['cells']} cells, {_fmt(proj['finished_s'])}. "
                 f"Remaining, projected: {_fmt(proj['remaining_s'])}{bound}. "
                 f"Whole grid: {_fmt(proj['total_s'])}.")
    if proj.get("what_if"):
        err = f" (projection {100 * (proj['total_s'] / proj['measured_s'] - 1):+.0f} %)" if proj["measured_s"] else ""
        lines.append(f"What-if (--finished-only): the grid's {proj['measured_cells']} finished cells measured "
                     f"{_fmt(proj['measured_s'])} in all{err}.")
    if holdout:
        lines += ["", "Hold-out check (each method projected from the other methods' finished cells only):", "",
                  "| method | cells | measured per cell | projected | error | basis |", "|---|---:|---:|---:|---:|---|"]
        for h in holdout:
            lines.append(f"| {h['method']} | {h['cells']} | {_fmt(h['measured_s'])} | {_fmt(h['projected_s'])} | "
                         f"{100 * h['error']:+.0f} % | {h['basis']} |")
    return head + "\n".join(lines) + "\n"


# ---------------------------------------------------------------------------------------------------------------
# CLI
# ---------------------------------------------------------------------------------------------------------------

def _load_or_measure(cfg: BenchmarkConfig, args: argparse.Namespace, log: Callable[[str], None]) -> dict[str, Any]:
    from .cost import run_cost_benchmark

    if args.cost:
        report = json.loads(Path(args.cost).read_text())
        try:
            want = dataclasses.asdict(cost_settings_for_grid(cfg, args.iters, args.warmup))
        except ConfigError as e:  # a grid of mixed settings: the user chose the report, nothing to compare with
            log(f"[projection] note: {e}")
            return report
        have = dict(report.get("settings", {}))
        if isinstance(have.get("device"), str):  # "cuda:0" and "cuda" are one device type, as want's is
            have["device"] = have["device"].split(":")[0]
        defaults = {"amp_dtype": "float16", "channels_last": False}  # a report of before these settings
        differ = [k for k in ("task", "network", "network_kwargs", "image_size", "batch_size",
                              "unlabeled_batch_size", "device", "amp", "amp_dtype", "channels_last")
                  if have.get(k, defaults.get(k)) != want[k]]
        if differ:
            log(f"[projection] WARNING: {args.cost} was measured with other settings than the grid's "
                f"({', '.join(f'{k}: {have.get(k)!r} vs {want[k]!r}' for k in differ)}); the projection inherits that")
        return report
    settings = cost_settings_for_grid(cfg, args.iters, args.warmup)
    if settings.device == "cuda":
        import torch

        if not torch.cuda.is_available():
            raise ConfigError(f"{cfg.source} trains on CUDA and torch sees no CUDA device here: run this on the "
                              "GPU machine the grid will use, or pass step times measured there with --cost")
    methods = ["supervised"] + [m for m in cfg.methods if m != "supervised"]
    variants = ("eager", "compiled") if args.compiled or settings.compile else ("eager",)
    report = run_cost_benchmark(methods, settings, log=log, variants=variants)
    out = cfg.task_dir / "cost.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out, json.dumps(report, indent=2))
    log(f"[projection] step times -> {out} (pass it as --cost next time)")
    return report


def _grid_compiles(cfg: BenchmarkConfig) -> bool:
    """Whether the grid's cells train compiled (the bundles' ``compile``; a grid of mixed settings: no)."""
    try:
        return cost_settings_for_grid(cfg).compile
    except ConfigError:
        return False


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m medsemiseg.benchmark.projection",
                                description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="benchmark YAML, e.g. configs/benchmark_covid.yaml")
    p.add_argument("--output-dir", help="the grid's output folder, if not the YAML's")
    p.add_argument("--cost", help="a cost report (JSON of python -m medsemiseg.benchmark.cost --json, or the "
                                  "cost.json this command wrote) instead of measuring step times again")
    p.add_argument("--iters", type=int, default=20, help="timed steps per method when measuring")
    p.add_argument("--warmup", type=int, default=3, help="untimed steps first when measuring")
    p.add_argument("--holdout", action="store_true",
                   help="also project each finished method from the other methods' cells and print the error")
    p.add_argument("--finished-only", nargs="+", metavar="CELL",
                   help="what-if: count only these finished cells (METHOD/FRACTION/seedK, e.g. supmix_sufd/1/8/seed0) "
                        "as finished, project the rest, and compare with what the finished ones measured")
    p.add_argument("--probe", metavar="PROBE_YAML",
                   help="a grid that extends CONFIG and stops its cells early (configs/benchmark_covid_probe.yaml): "
                        "its cells give the overhead per iteration and evaluation time (a cell stopped before its "
                        "end: the epochs its train.log completed, no evaluation time)")
    p.add_argument("--probe-output-dir", help="the probe grid's output folder, if not its YAML's")
    p.add_argument("--compiled", action="store_true",
                   help="project with the compiled step times (a cost report of --compile both or on; measuring: "
                        "eager and compiled); default: the grid's own compile setting")
    p.add_argument("--json", help="write the projection here")
    p.add_argument("--markdown", help="write the Markdown table here")
    a = p.parse_args(argv)
    if a.iters < 2:
        p.error("--iters must be at least 2")
    try:
        cfg = load_config(a.config, output_dir=a.output_dir)
        report = _load_or_measure(cfg, a, log=lambda m: print(m, file=sys.stderr))
        keep = None
        if a.finished_only:
            wanted = {k.strip("/").removeprefix(cfg.task + "/") for k in a.finished_only}
            known = {c.key.removeprefix(cfg.task + "/") for c in enumerate_cells(cfg)}
            if wanted - known:
                raise ConfigError(f"--finished-only: no cell {sorted(wanted - known)} in {a.config} "
                                  f"(cells look like {sorted(known)[0]})")
            keep = lambda c: c.key.removeprefix(cfg.task + "/") in wanted  # noqa: E731
        if a.probe_output_dir and not a.probe:
            raise ConfigError("--probe-output-dir needs --probe")
        probe = load_config(a.probe, output_dir=a.probe_output_dir) if a.probe else None
        variant = "compiled" if a.compiled or _grid_compiles(cfg) else "eager"
        proj = project_grid(cfg, report, keep=keep, probe=probe, variant=variant)
        holdout = holdout_check(cfg, report, variant) if a.holdout else None
    except (ConfigError, OSError, ValueError, KeyError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    table = projection_table(proj, holdout)
    print(table)
    if a.json:
        Path(a.json).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.json, json.dumps({**proj, "holdout": holdout}, indent=2))
    if a.markdown:
        Path(a.markdown).parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(a.markdown, table)
    return 0


if __name__ == "__main__":
    sys.exit(main())
