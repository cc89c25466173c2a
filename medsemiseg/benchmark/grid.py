"""The benchmark grid's resumable runner: each cell as bundle subprocesses, its markers, the runner lock.

A *cell* is one training run: ``(task, method, labelled fraction, seed)``. Each cell is one subprocess —
``python -m monai.bundle run training`` with command-line overrides, then ``... run evaluating`` — writing into
``<output_dir>/<task>/<method>/<fraction>/seed<k>/``. Running cells as subprocesses keeps them independent: a crash,
an out-of-memory kill or a NaN loss in one cell is recorded in that cell's ``failed.json`` and the grid goes on.

Resumability rests on two marker files written *only after* the step they certify succeeded:

- ``trained.json`` after the training subprocess exited 0 (an evaluation failure then re-runs only the evaluation);
- ``done.json`` after the evaluation exited 0 and its metrics file parsed (and, for the cells the ``predict``
  section names, after the bundle's inference workflow saved test predictions for the figure); it holds the metrics,
  so the results table is built from ``done.json`` files alone.

``started.json`` is written *before* each training attempt: the training command and, per attempt, its start
and (once it ends, or is interrupted) its seconds; the cell's ``train_s`` is the sum over its attempts (one
killed before it could record them counts up to its last line in ``train.log``).

A cell with ``done.json`` is never re-run. A cell without it is run again with the same command into the same folder,
so a bundle that resumes from the checkpoint in its output folder picks up where it stopped. A cell whose recorded
training command (in ``done.json``, ``trained.json``, ``started.json`` or a training ``failed.json``) differs from
the one the YAML now gives — finished, trained, interrupted or failed alike — is *stale*: resuming it would continue
from a checkpoint made with the old settings. So is a finished cell whose recorded *evaluation* command differs.
The runner refuses to mix stale cells into the table, names what changed (``--batch_size 4 -> 2``) and says how to
proceed (new ``output_dir``, or ``--rerun-stale``: a training change moves the old cell aside, ``*.stale-N``, and
runs it again; an evaluation-only change keeps the trained model, renames ``done.json`` to ``done.stale-N.json`` and
re-evaluates). Markers written before a field existed lack it; a missing record counts as "unknown", never as stale.
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as _dt
import json
import os
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

from medsemiseg import runlock
from medsemiseg.atomic_io import atomic_write_text

from .cells import DONE, FAILED, STARTED, TRAINED, cell_status, portable_command, read_marker, stale_changes, stale_error
from .config import BenchmarkConfig, Cell, ConfigError, enumerate_cells

__all__ = [
    "CellResult",
    "LOCK",
    "grid_lock",
    "parse_metrics",
    "run_cell",
    "run_grid",
]

LOCK = "runner.lock"


@dataclasses.dataclass
class CellResult:
    """What a finished (or failed) cell reports to the progress display."""

    cell: Cell
    status: str  # "done", "skipped", "failed"
    miou: float | None = None
    elapsed_s: float = 0.0
    message: str = ""


# ---------------------------------------------------------------------------------------------------------------
# metrics
# ---------------------------------------------------------------------------------------------------------------

def parse_metrics(data: dict, classes: Sequence[str] | None = None, source: str = "metrics") -> dict[str, Any]:
    """Normalise an evaluation metrics JSON into ``{"iou": {class: v}, "miou": v, "dice": {class: v} | None}``
    plus ``"iou_pooled"``/``"miou_pooled"`` when the file has pooled (whole-set confusion-matrix) IoU.

    Accepted forms (values in [0, 1]): ``{"iou": {name: v, ...}, "miou": v, "dice": {...}}``, the same with
    ``"per_class": {name: {"iou": v, "dice": v}}``, or ``"iou"`` as a list in class order (then ``classes`` or
    ``data["classes"]`` names them); ``medsemiseg.metrics.write_report``'s layout (``per_class`` with ``iou``,
    ``dice``, ``iou_pooled``; ``mIoU``, ``mIoU_pooled``). ``miou`` is the NaN-skipping mean of the per-class IoUs
    when absent.
    """
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a JSON object with per-class IoU, got {type(data).__name__}")
    names = list(classes) if classes else data.get("classes")
    iou: dict[str, float] | None = None
    dice: dict[str, float] | None = None
    if isinstance(data.get("per_class"), dict):
        pc = data["per_class"]
        iou = {k: float(v["iou"]) for k, v in pc.items() if isinstance(v, dict) and "iou" in v}
        dice = {k: float(v["dice"]) for k, v in pc.items() if isinstance(v, dict) and "dice" in v} or None
    for key in ("iou", "IoU", "per_class_iou"):
        if iou is None and key in data:
            iou = _named(data[key], names, source, key)
    for key in ("dice", "Dice", "per_class_dice"):
        if dice is None and key in data:
            dice = _named(data[key], names, source, key)
    if not iou:
        raise ValueError(f"{source}: no per-class IoU found (expected a key 'iou' or 'per_class'); keys: {sorted(data)}")
    miou = data.get("miou", data.get("mIoU", data.get("mean_iou")))
    miou = float(miou) if miou is not None else _nanmean(iou.values())
    out: dict[str, Any] = {"iou": iou, "miou": miou, "dice": dice}
    # pooled (confusion-matrix) IoU, as medsemiseg.metrics reports next to the per-image mean
    pooled = None
    if isinstance(data.get("per_class"), dict):
        pooled = {k: float(v["iou_pooled"]) for k, v in data["per_class"].items()
                  if isinstance(v, dict) and "iou_pooled" in v} or None
    if pooled is None and "iou_pooled" in data:
        pooled = _named(data["iou_pooled"], names, source, "iou_pooled")
    if pooled:
        mp = data.get("miou_pooled", data.get("mIoU_pooled"))
        out["iou_pooled"] = pooled
        out["miou_pooled"] = float(mp) if mp is not None else _nanmean(pooled.values())
    return out


def _nanmean(values: Iterable[float]) -> float:
    vals = [v for v in values if v == v]
    return sum(vals) / len(vals) if vals else float("nan")


def _named(v: Any, names: Sequence[str] | None, source: str, key: str) -> dict[str, float]:
    if isinstance(v, dict):
        return {str(k): float(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        if names is None or len(names) != len(v):
            names = [f"class{i}" for i in range(len(v))]
        return {n: float(x) for n, x in zip(names, v)}
    raise ValueError(f"{source}: '{key}' must be a mapping class -> value or a list in class order")


# ---------------------------------------------------------------------------------------------------------------
# running
# ---------------------------------------------------------------------------------------------------------------

def _git_commit() -> str | None:
    try:
        return subprocess.run(
            ["git", "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10, check=True
        ).stdout.strip()
    except Exception:
        return None


def _run_logged(cmd: list[str], log: Path, env: dict[str, str], timeout: float | None) -> tuple[int, str]:
    """Run ``cmd`` with stdout+stderr appended to ``log``; return (exit code, last lines of the log)."""
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "a") as fh:
        fh.write(f"\n$ {shlex.join(cmd)}\n")
        fh.flush()
        try:
            rc = subprocess.run(cmd, stdout=fh, stderr=subprocess.STDOUT, env=env, timeout=timeout).returncode
        except subprocess.TimeoutExpired:
            fh.write(f"\n[benchmark] killed after {timeout} s (cell_timeout_s)\n")
            rc = 124
    lines = log.read_text(errors="replace").splitlines()
    return rc, "\n".join(lines[-30:])


def _write_json(path: Path, data: dict) -> None:
    atomic_write_text(path, json.dumps(data, indent=2))  # a killed runner never leaves a half-written marker


def run_cell(cfg: BenchmarkConfig, cell: Cell) -> CellResult:
    """Train (unless ``trained.json`` says it already did) and evaluate one cell; write ``done.json`` or
    ``failed.json``. Never raises for a failure inside the cell's subprocesses."""
    d = cell.directory
    d.mkdir(parents=True, exist_ok=True)
    (d / FAILED).unlink(missing_ok=True)
    env = {**os.environ, **cfg.env}
    start = time.time()
    train_cmd = cfg.train_command(cell)
    prior = read_marker(d / TRAINED)
    if prior is None or prior.get("train_command") != portable_command(train_cmd):
        attempts = _start_attempt(d, portable_command(train_cmd))
        outcome = "interrupted"  # Ctrl-C / SIGTERM: the finally below still records this attempt's seconds
        try:
            rc, tail = _run_logged(train_cmd, d / "train.log", env, cfg.cell_timeout_s)
            outcome = "trained" if rc == 0 else f"failed (exit {rc})"
        finally:
            attempts = _end_attempt(d, portable_command(train_cmd), attempts, outcome)
        if rc != 0:
            return _fail(cell, "training", rc, tail, time.time() - start, train_cmd)
        _write_json(d / TRAINED, {"train_command": portable_command(train_cmd), "train_s": _attempts_s(attempts),
                                  "train_attempts": len(attempts)})
    trained = read_marker(d / TRAINED) or {}
    train_s = trained.get("train_s", time.time() - start)

    eval_start = time.time()
    eval_cmd = cfg.eval_command(cell)
    rc, tail = _run_logged(eval_cmd, d / "eval.log", env, cfg.cell_timeout_s)
    if rc != 0:
        return _fail(cell, "evaluation", rc, tail, time.time() - start, eval_cmd)
    mpath = d / cfg.metrics_file
    try:
        metrics = parse_metrics(json.loads(mpath.read_text()), cfg.classes, str(mpath))
    except (OSError, ValueError) as e:
        return _fail(cell, "evaluation", rc, f"metrics file unreadable: {e}", time.time() - start, eval_cmd)
    if cfg.wants_prediction(cell):
        pred_cmd = cfg.predict_command(cell)
        rc, tail = _run_logged(pred_cmd, d / "predict.log", env, cfg.cell_timeout_s)
        if rc != 0:
            return _fail(cell, "prediction", rc, tail, time.time() - start, pred_cmd)
    eval_s = time.time() - eval_start
    _write_json(
        d / DONE,
        {
            "task": cell.task,
            "method": cell.method,
            "fraction": cell.fraction.label,
            "labeled_fraction": cell.fraction.value,
            "seed": cell.seed,
            "metrics": metrics,
            "train_s": train_s,  # summed over the training attempts (started.json)
            "train_attempts": trained.get("train_attempts"),
            "eval_s": eval_s,
            "train_command": portable_command(train_cmd),
            "eval_command": portable_command(eval_cmd),
            "metrics_file": cfg.metrics_file,
            "finished_at": _dt.datetime.now().isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
        },
    )
    return CellResult(cell, "done", metrics["miou"], time.time() - start)


def _start_attempt(d: Path, train_cmd: list[str]) -> list[dict]:
    """Record in ``started.json``, before training starts, the command and a new attempt; earlier attempts of the
    same command (an interrupted or failed run) are kept so their seconds count in the cell's ``train_s``."""
    started = read_marker(d / STARTED) or {}
    attempts = list(started.get("attempts") or []) if started.get("train_command") == train_cmd else []
    for a in attempts:
        if a.get("train_s") is None:  # its runner was killed (SIGKILL, power loss) before recording its seconds
            a["train_s"] = _seconds_until_last_output(d / "train.log", a.get("started_at"))
            a["outcome"] = "killed (seconds up to its last line in train.log)"
    attempts.append({"started_at": _dt.datetime.now().isoformat(timespec="seconds"), "train_s": None,
                     "outcome": "running", "_t0": time.time()})
    _write_json(d / STARTED, {"train_command": train_cmd, "attempts": [_public(a) for a in attempts]})
    return attempts


def _public(a: dict) -> dict:
    return {k: v for k, v in a.items() if not k.startswith("_")}


def _end_attempt(d: Path, train_cmd: list[str], attempts: list[dict], outcome: str) -> list[dict]:
    last = attempts[-1]
    last["train_s"] = time.time() - last.pop("_t0")
    last["outcome"] = outcome
    _write_json(d / STARTED, {"train_command": train_cmd, "attempts": [_public(a) for a in attempts]})
    return attempts


def _seconds_until_last_output(log: Path, started_at: str | None) -> float | None:
    """Seconds from an attempt's start to the last write to its ``train.log`` (the training's own output goes
    there, so this is when the killed run was last seen alive); None when either is unknown."""
    try:
        t0 = _dt.datetime.fromisoformat(started_at).timestamp() if started_at else None
        t1 = log.stat().st_mtime
    except (OSError, ValueError, TypeError):
        return None
    return None if t0 is None else max(0.0, t1 - t0)


def _attempts_s(attempts: list[dict]) -> float:
    """Training seconds over all attempts (one killed without recording its seconds is counted up to its last
    output, see :func:`_start_attempt`; 0 only if even that is unknown)."""
    return float(sum(a.get("train_s") or 0.0 for a in attempts))


def _fail(cell: Cell, step: str, rc: int, tail: str, elapsed: float, cmd: list[str]) -> CellResult:
    _write_json(
        cell.directory / FAILED,
        {
            "step": step,
            "returncode": rc,
            "command": portable_command(cmd),
            "log_tail": tail,
            "failed_at": _dt.datetime.now().isoformat(timespec="seconds"),
        },
    )
    return CellResult(cell, "failed", None, elapsed, f"{step} failed (exit {rc}); see {cell.directory}/{FAILED}")


def _move_aside(d: Path) -> Path:
    k = 1
    while (target := d.with_name(f"{d.name}.stale-{k}")).exists():
        k += 1
    shutil.move(str(d), str(target))
    return target


def _move_done_aside(d: Path) -> Path:
    """An evaluation-only change: keep the trained cell, rename its ``done.json`` to ``done.stale-N.json``."""
    k = 1
    while (target := d / f"done.stale-{k}.json").exists():
        k += 1
    os.replace(d / DONE, target)
    return target


_HELD_LOCKS: dict[Path, int] = {}


@contextlib.contextmanager
def grid_lock(cfg: BenchmarkConfig):
    """Hold ``<output_dir>/<task>/runner.lock`` (host and pid inside, :mod:`medsemiseg.runlock`) while a runner works
    on the grid, so two runners never run the same cell at once. A lock left by a dead process on this host is taken
    over; one held by a live process (or by another host) raises :class:`ConfigError` naming it. Re-entrant within
    one process."""
    d = cfg.task_dir
    path = (d / LOCK).absolute()
    if path in _HELD_LOCKS:
        _HELD_LOCKS[path] += 1
        try:
            yield path
        finally:
            _HELD_LOCKS[path] -= 1
        return
    try:
        me = runlock.acquire(path)
    except runlock.LockHeld as held:
        other = held.holder
        raise ConfigError(
            f"{d} is in use by another benchmark runner (pid {other.get('pid')} on host {other.get('host')}, since "
            f"{other.get('since')}); wait for it to finish, or if that process is gone, delete {path}"
        ) from None
    _HELD_LOCKS[path] = 1
    try:
        yield path
    finally:
        _HELD_LOCKS.pop(path, None)
        runlock.release(path, me)


def run_grid(
    cfg: BenchmarkConfig,
    *,
    rerun_failed: bool = True,
    rerun_stale: bool = False,
    dry_run: bool = False,
    progress: bool = True,
    only: Callable[[Cell], bool] | None = None,
    log: Callable[[str], None] = print,
    runner: Callable[[BenchmarkConfig, Cell], CellResult] = run_cell,
) -> list[CellResult]:
    """Run every unfinished cell of ``cfg`` in order, with a tqdm bar over the cells to run (its ETA is the mean
    time of the cells finished so far times those left) and one line per finished cell with its mIoU and time.

    Raises :class:`ConfigError` before running anything when stale cells exist and ``rerun_stale`` is False.
    """
    cells = [c for c in enumerate_cells(cfg) if only is None or only(c)]
    statuses = {c.key: cell_status(cfg, c) for c in cells}
    if not rerun_stale:
        error = stale_error(cfg, [c for c in cells if statuses[c.key] == "stale"])
        if error is not None:
            raise error
    results: list[CellResult] = []
    todo: list[Cell] = []
    for c in cells:
        st = statuses[c.key]
        if st == "done":
            done = read_marker(c.directory / DONE) or {}
            results.append(CellResult(c, "skipped", (done.get("metrics") or {}).get("miou"), 0.0, "already done"))
        elif st == "failed" and not rerun_failed:
            results.append(CellResult(c, "failed", None, 0.0, "failed before; not retried (--no-rerun-failed)"))
        else:
            todo.append(c)
    log(
        f"[benchmark] {cfg.task}: {len(cells)} cells, {len(cells) - len(todo)} finished or skipped, "
        f"{len(todo)} to run -> {cfg.output_dir / cfg.task}"
    )
    if dry_run:
        for c in todo:
            log(f"  would run {c.key} [{statuses[c.key]}]: {shlex.join(portable_command(cfg.train_command(c)))}")
        return results
    bar = None
    if progress and todo:
        from tqdm.auto import tqdm

        bar = tqdm(total=len(todo), desc=f"{cfg.task} cells", unit="cell", file=sys.stderr, dynamic_ncols=True)
    for i, c in enumerate(todo, 1):
        if statuses[c.key] == "stale":
            change = stale_changes(cfg, c)
            if change is not None and change[0] == "evaluation":
                moved = _move_done_aside(c.directory)
                log(f"[benchmark] stale evaluation of {c.key}: {moved.name} kept, re-evaluating the trained model")
            else:
                moved = _move_aside(c.directory)
                log(f"[benchmark] stale cell {c.key} moved to {moved}")
        if bar is not None:
            bar.set_postfix_str(c.key)
        res = runner(cfg, c)
        results.append(res)
        if res.status == "done":
            line = f"[{i}/{len(todo)}] {c.key}: mIoU {100 * res.miou:.2f} %  ({_fmt_s(res.elapsed_s)})"
        else:
            line = f"[{i}/{len(todo)}] {c.key}: FAILED ({_fmt_s(res.elapsed_s)}) {res.message}"
        if bar is not None:
            bar.write(line)
            bar.update(1)
        else:
            log(line)
    if bar is not None:
        bar.close()
    return results


def _fmt_s(s: float) -> str:
    return f"{s:.0f} s" if s < 120 else f"{s / 60:.1f} min"
