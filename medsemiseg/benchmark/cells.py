"""A grid cell's state on disk: the marker files, whether a cell is done, stale or to run, and what is missing.

A cell's folder holds markers written *only after* the step they certify succeeded (:mod:`.grid` writes them):
``started.json`` (before each training attempt: the command, and per attempt its seconds), ``trained.json`` (the
training exited 0), ``done.json`` (the evaluation exited 0 and its metrics parsed; it holds the metrics, so the
results table is built from ``done.json`` files alone) and ``failed.json``. A cell whose recorded training command
(in any of them) differs from the one the YAML now gives is *stale*: resuming it would continue from a checkpoint made
with the old settings; so is a finished cell whose recorded evaluation command differs. Markers written before a field
existed lack it; a missing record counts as "unknown", never as stale.
"""

from __future__ import annotations

import json
import shlex
import sys
from pathlib import Path
from typing import Callable, Iterable, Sequence

from .config import BenchmarkConfig, Cell, ConfigError, enumerate_cells

__all__ = [
    "DONE",
    "FAILED",
    "STARTED",
    "TRAINED",
    "cell_status",
    "command_diff",
    "grid_status",
    "iter_done",
    "not_in_table",
    "portable_command",
    "read_marker",
    "stale_changes",
    "stale_error",
]

DONE = "done.json"
TRAINED = "trained.json"
FAILED = "failed.json"
STARTED = "started.json"


def read_marker(path: Path) -> dict | None:
    """A marker's content, or ``None`` when it is missing or unreadable."""
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def command_diff(old: Sequence[str], new: Sequence[str]) -> list[str]:
    """What differs between a recorded and the current command, one ``--key old -> new`` line per argument."""

    def split(cmd: Sequence[str]) -> tuple[list[str], dict[str, str]]:
        cmd = list(cmd)
        i = next((k for k, a in enumerate(cmd) if a.startswith("--")), len(cmd))
        head, rest = cmd[:i], cmd[i:]
        args: dict[str, str] = {}
        k = 0
        while k < len(rest):
            key = rest[k]
            if k + 1 < len(rest) and not rest[k + 1].startswith("--"):
                args[key], k = rest[k + 1], k + 2
            else:
                args[key], k = "", k + 1
        return head, args

    (h_old, a_old), (h_new, a_new) = split(old), split(new)
    out = []
    if h_old != h_new:
        out.append(f"command {shlex.join(h_old)!r} -> {shlex.join(h_new)!r}")
    for key in list(a_old) + [k for k in a_new if k not in a_old]:
        if key not in a_new:
            out.append(f"{key} {a_old[key]} -> (not set)")
        elif key not in a_old:
            out.append(f"{key} (not set) -> {a_new[key]}")
        elif a_old[key] != a_new[key]:
            out.append(f"{key} {a_old[key]} -> {a_new[key]}")
    if not out and list(old) != list(new):
        out.append("the same arguments in another order")
    return out


def stale_changes(cfg: BenchmarkConfig, cell: Cell) -> tuple[str, list[str]] | None:
    """``("training" | "evaluation", differing arguments)`` when a command recorded in the cell's folder differs
    from the one the YAML now gives; ``None`` when nothing recorded differs (or nothing is recorded)."""
    d = cell.directory
    if not d.is_dir():
        return None
    train_now = portable_command(cfg.train_command(cell))
    done = read_marker(d / DONE)
    recorded = [m.get("train_command") for m in (done, read_marker(d / TRAINED), read_marker(d / STARTED)) if m]
    failed = read_marker(d / FAILED)
    if failed and failed.get("step") == "training":
        recorded.append(failed.get("command"))
    for old in recorded:
        if old is not None and old != train_now:
            return "training", command_diff(old, train_now)
    if done is not None and done.get("eval_command") is not None:
        eval_now = portable_command(cfg.eval_command(cell))
        if done["eval_command"] != eval_now:
            return "evaluation", command_diff(done["eval_command"], eval_now)
    return None


def cell_status(cfg: BenchmarkConfig, cell: Cell) -> str:
    """``"done"``, ``"stale"`` (a recorded command differs from the YAML's: see :func:`stale_changes`),
    ``"trained"`` (evaluation pending), ``"failed"``, ``"partial"`` (started, no marker) or ``"todo"``."""
    d = cell.directory
    if stale_changes(cfg, cell) is not None:
        return "stale"
    done = read_marker(d / DONE)
    if done is not None:
        return "done"
    if (d / TRAINED).is_file():
        return "trained"
    if (d / FAILED).is_file():
        return "failed"
    if d.is_dir() and any(d.iterdir()):
        return "partial"
    return "todo"


def portable_command(cmd: Sequence[str]) -> list[str]:
    """A command as recorded in markers: the interpreter path replaced by ``python`` so a cell stays *done* when
    the same grid is resumed from another virtual environment."""
    return ["python" if a == sys.executable else a for a in cmd]


def stale_error(cfg: BenchmarkConfig, cells: Sequence[Cell] | None = None, what: str = "") -> ConfigError | None:
    """The error naming the stale cells among ``cells`` (default: the whole grid) and what changed, or ``None``."""
    stale = []
    for c in enumerate_cells(cfg) if cells is None else cells:
        ch = stale_changes(cfg, c)
        if ch is not None:
            stale.append((c, ch))
    if not stale:
        return None
    lines = []
    for c, (step, diff) in stale[:5]:
        lines.append(f"  {c.key} [{step} command]: " + ("; ".join(diff[:6]) + (" ..." if len(diff) > 6 else "")))
    if len(stale) > 5:
        lines.append(f"  ... and {len(stale) - 5} more")
    return ConfigError(
        f"{len(stale)} cell(s) in {cfg.output_dir} were run (or started) with a different command than "
        f"{cfg.source} now gives (recorded -> now):\n" + "\n".join(lines) + "\n"
        + (what + "\n" if what else "")
        + "Use another output_dir (--output-dir), or pass --rerun-stale to move those cells aside (renamed *.stale-N) "
        "and run them again (an evaluation-only change re-evaluates the trained model and keeps the old done.json "
        "as done.stale-N.json)."
    )


def grid_status(cfg: BenchmarkConfig) -> dict[str, list[Cell]]:
    """``{status: [cells]}`` over the whole grid (statuses of :func:`cell_status`), in run order."""
    out: dict[str, list[Cell]] = {}
    for c in enumerate_cells(cfg):
        out.setdefault(cell_status(cfg, c), []).append(c)
    return out


def not_in_table(cfg: BenchmarkConfig, limit: int = 8) -> list[str]:
    """One line per kind of cell missing from the table (failed with the failing step, stale, started, not run)."""
    st = grid_status(cfg)
    lines = []

    def names(cells: list[Cell], note: Callable[[Cell], str] = lambda c: "") -> str:
        shown = ", ".join(c.key + note(c) for c in cells[:limit])
        return shown + (f", ... and {len(cells) - limit} more" if len(cells) > limit else "")

    def why(c: Cell) -> str:
        f = read_marker(c.directory / FAILED) or {}
        return f" ({f.get('step', '?')}, exit {f.get('returncode', '?')})"

    for status, text, note in (("failed", "failed", why), ("stale", "stale (run with another command)", None),
                               ("trained", "trained, evaluation pending", None),
                               ("partial", "started, unfinished", None), ("todo", "not run yet", None)):
        if st.get(status):
            cells = st[status]
            lines.append(f"{text}: {len(cells)} cell(s): " + (names(cells, note) if note else names(cells)))
    return lines


def iter_done(cfg: BenchmarkConfig) -> Iterable[tuple[Cell, dict]]:
    """Yield ``(cell, done.json content)`` for every finished, non-stale cell of the grid."""
    for c in enumerate_cells(cfg):
        if cell_status(cfg, c) == "done":
            yield c, read_marker(c.directory / DONE) or {}
