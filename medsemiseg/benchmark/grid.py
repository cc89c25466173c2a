"""The benchmark grid: configuration, cell enumeration and the resumable runner.

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
import difflib
import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from medsemiseg import runlock

from .published import parse_published_spec, read_published

__all__ = [
    "BenchmarkConfig",
    "Cell",
    "CellResult",
    "FractionSpec",
    "load_config",
    "enumerate_cells",
    "cell_status",
    "stale_changes",
    "stale_error",
    "command_diff",
    "grid_status",
    "not_in_table",
    "grid_lock",
    "run_cell",
    "run_grid",
    "parse_metrics",
    "fraction_slug",
]

DONE = "done.json"
TRAINED = "trained.json"
FAILED = "failed.json"
STARTED = "started.json"
LOCK = "runner.lock"


def known_methods() -> list[str]:
    """The method names a grid may use: every registered method (:mod:`medsemiseg.methods.registry`), listed ones
    first; a misspelt one stops the grid before any cell runs."""
    from medsemiseg.methods import registry

    return list(registry.specs())


class ConfigError(ValueError):
    """A benchmark YAML is malformed; the message names the file, the key and the fix."""


@dataclasses.dataclass(frozen=True)
class FractionSpec:
    """One labelled-fraction column of the table.

    ``label`` is what the table prints (``"1/8"``, ``"full"``); ``value`` is what the bundle receives as
    ``--labeled_fraction`` (the same string unless the upper bound needs a different spelling); ``methods``
    restricts the column to some methods (the full-label upper bound is trained by ``supervised`` only: there is no
    unlabelled data left for a semi-supervised method to use).
    """

    label: str
    value: str
    methods: tuple[str, ...] | None = None


@dataclasses.dataclass(frozen=True)
class Cell:
    """One training run of the grid, and where it lives on disk."""

    task: str
    method: str
    fraction: FractionSpec
    seed: int
    directory: Path

    @property
    def key(self) -> str:
        return f"{self.task}/{self.method}/{self.fraction.label}/seed{self.seed}"


@dataclasses.dataclass
class CellResult:
    """What a finished (or failed) cell reports to the progress display."""

    cell: Cell
    status: str  # "done", "skipped", "failed"
    miou: float | None = None
    elapsed_s: float = 0.0
    message: str = ""


@dataclasses.dataclass
class BenchmarkConfig:
    """A parsed benchmark YAML (see ``configs/benchmark_*.yaml`` and ``docs/benchmarks.md`` for every key)."""

    source: Path
    task: str
    bundle: Path
    methods: list[str]
    fractions: list[FractionSpec]
    seeds: list[int]
    output_dir: Path
    classes: list[str] | None = None
    overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    method_overrides: dict[str, dict[str, Any]] = dataclasses.field(default_factory=dict)
    train_workflow: str = "training"
    train_config: list[str] = dataclasses.field(default_factory=lambda: ["train.json"])
    eval_workflow: str = "evaluating"
    eval_config: list[str] = dataclasses.field(default_factory=lambda: ["evaluate.json"])
    eval_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    eval_pass_training_overrides: bool = True
    predict_workflow: str | None = None
    predict_config: list[str] = dataclasses.field(default_factory=lambda: ["inference.json"])
    predict_overrides: dict[str, Any] = dataclasses.field(default_factory=dict)
    predict_fractions: list[str] | None = None
    predict_seeds: list[int] | None = None
    cell_overrides_rules: list[dict[str, Any]] = dataclasses.field(default_factory=list)
    metrics_file: str = "eval/metrics.json"
    launcher: list[str] = dataclasses.field(default_factory=lambda: ["{python}", "-m", "monai.bundle", "run"])
    cell_timeout_s: float | None = None
    env: dict[str, str] = dataclasses.field(default_factory=dict)
    plots: dict[str, Any] = dataclasses.field(default_factory=dict)
    table_metric: str = "iou"
    description: str = ""
    published: dict[str, Any] | None = None   # the paper's table to show beside ours (``published.py``)

    # ---- paths -------------------------------------------------------------------------------------------------
    def bundle_file(self, name: str) -> Path:
        p = Path(name)
        return p if p.is_absolute() else self.bundle / p

    def cell_dir(self, method: str, fraction: FractionSpec, seed: int) -> Path:
        return self.output_dir / self.task / method / fraction_slug(fraction.label) / f"seed{seed}"

    @property
    def task_dir(self) -> Path:
        return self.output_dir / self.task

    # ---- commands ----------------------------------------------------------------------------------------------
    def _launcher(self) -> list[str]:
        return [a.replace("{python}", sys.executable) for a in self.launcher]

    def cell_overrides(self, cell: Cell) -> dict[str, Any]:
        """The training overrides of one cell: common ones, then the method's own, then the cell's identity."""
        ov: dict[str, Any] = dict(self.overrides)
        ov.update(self.method_overrides.get(cell.method, {}))
        for rule in self.cell_overrides_rules:
            if _rule_matches(rule, cell):
                ov.update(rule["overrides"])
        ov.update(
            {
                "method": cell.method,
                "labeled_fraction": cell.fraction.value,
                "seed": cell.seed,
                "output_dir": str(cell.directory),
            }
        )
        return ov

    def train_command(self, cell: Cell) -> list[str]:
        cmd = self._launcher() + [self.train_workflow, "--config_file", _config_arg(self, self.train_config)]
        return cmd + _override_args(self.cell_overrides(cell))

    def eval_command(self, cell: Cell) -> list[str]:
        cmd = self._launcher() + [self.eval_workflow, "--config_file", _config_arg(self, self.eval_config)]
        ov: dict[str, Any] = self.cell_overrides(cell) if self.eval_pass_training_overrides else {
            "output_dir": str(cell.directory)
        }
        ov.update(self.eval_overrides)
        return cmd + _override_args(ov)

    def wants_prediction(self, cell: Cell) -> bool:
        """Whether this cell also saves test predictions (for the prediction panel): only the ``predict`` section's
        fractions and seeds, so the grid does not pay for predictions nobody plots."""
        if not self.predict_workflow:
            return False
        if self.predict_fractions is not None and cell.fraction.label not in self.predict_fractions:
            return False
        return self.predict_seeds is None or cell.seed in self.predict_seeds

    def predict_command(self, cell: Cell) -> list[str]:
        cmd = self._launcher() + [str(self.predict_workflow), "--config_file", _config_arg(self, self.predict_config)]
        ov = self.cell_overrides(cell)
        ov.update(self.predict_overrides)
        return cmd + _override_args(ov)


def _rule_matches(rule: dict[str, Any], cell: Cell) -> bool:
    return all(
        rule.get(key) is None or value in rule[key]
        for key, value in (("methods", cell.method), ("fractions", cell.fraction.label), ("seeds", cell.seed))
    )


def _config_arg(cfg: BenchmarkConfig, files: list[str]) -> str:
    """``--config_file`` takes one path or a list written as ``"['a.json','b.json']"`` (MONAI bundle CLI)."""
    paths = [str(cfg.bundle_file(f)) for f in files]
    return paths[0] if len(paths) == 1 else "[" + ",".join(repr(p) for p in paths) + "]"


def _override_args(ov: dict[str, Any]) -> list[str]:
    args: list[str] = []
    for k, v in ov.items():
        if isinstance(v, bool):
            v = str(v)  # fire parses "True"/"False"
        elif isinstance(v, (list, dict)):
            v = json.dumps(v)
        args += [f"--{k}", str(v)]
    return args


def fraction_slug(label: str) -> str:
    """A folder name for a fraction label: ``"1/8" -> "1-8"``, ``"full" -> "full"``."""
    slug = re.sub(r"[^A-Za-z0-9._-]+", "-", str(label)).strip("-")
    if not slug:
        raise ConfigError(f"labelled fraction {label!r} gives an empty folder name; use e.g. '1/8' or 'full'")
    return slug


# ---------------------------------------------------------------------------------------------------------------
# YAML loading
# ---------------------------------------------------------------------------------------------------------------

_ALLOWED_KEYS = {
    "task", "bundle", "methods", "fractions", "upper_bound", "seeds", "output_dir", "classes", "overrides",
    "method_overrides", "train", "evaluate", "metrics_file", "launcher", "cell_timeout_s", "env", "plots",
    "description", "table_metric", "predict", "cell_overrides", "extends", "published",
}


def _read_raw(path: Path, seen: tuple[Path, ...] = ()) -> dict:
    """The YAML mapping of ``path``; with ``extends: base.yaml`` (relative to ``path``'s folder) the base's keys
    come first and this file's top-level keys replace them (a shallow merge), so a variant grid names only what
    differs."""
    if not path.is_file():
        raise ConfigError(f"benchmark config {path} does not exist; pass e.g. configs/benchmark_covid_quick.yaml")
    if path.resolve() in seen:
        raise ConfigError(f"{path}: 'extends' loops back to itself ({' -> '.join(str(p) for p in seen)})")
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as e:
        raise ConfigError(f"{path}: not valid YAML ({e})") from e
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: the top level must be a mapping of keys (task, bundle, methods, ...)")
    base = raw.pop("extends", None)
    if base is None:
        return raw
    if not isinstance(base, str):
        raise ConfigError(f"{path}: 'extends' must be the path of another benchmark YAML")
    return {**_read_raw(path.parent / base, seen + (path.resolve(),)), **raw}


def load_config(path: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> BenchmarkConfig:
    """Read and validate one benchmark YAML.

    Relative ``bundle`` and ``output_dir`` paths are taken relative to the current directory (the repository root
    in every documented command), so the same YAML works from a fresh clone. ``output_dir`` overrides the YAML's.
    """
    path = Path(path)
    raw = _read_raw(path)

    def err(msg: str) -> ConfigError:
        return ConfigError(f"{path}: {msg}")

    unknown = set(raw) - _ALLOWED_KEYS
    if unknown:
        raise err(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(_ALLOWED_KEYS)}")
    for key in ("task", "bundle", "methods", "fractions"):
        if key not in raw:
            raise err(f"missing required key '{key}'")

    methods = raw["methods"]
    if not isinstance(methods, list) or not methods or not all(isinstance(m, str) for m in methods):
        raise err("'methods' must be a non-empty list of method names, e.g. [supervised, classmix, supmix_sufd]")
    known = known_methods()
    bad = [m for m in methods if m not in known]
    if bad:
        raise err(f"unknown method(s) {bad}; known: {known}")
    if len(set(methods)) != len(methods):
        raise err("'methods' lists a method twice")

    fractions = [_parse_fraction(f, err) for f in _as_list(raw["fractions"], "fractions", err)]
    if "upper_bound" in raw and raw["upper_bound"] is not None:
        ub = raw["upper_bound"]
        if not isinstance(ub, dict):
            raise err("'upper_bound' must be a mapping like {label: full, value: '1', methods: [supervised]}")
        fractions.append(_parse_fraction({"methods": ["supervised"], "label": "full", **ub}, err))
    labels = [f.label for f in fractions]
    if len(set(labels)) != len(labels):
        raise err(f"labelled fractions repeat: {labels}")
    slugs = [fraction_slug(f.label) for f in fractions]
    if len(set(slugs)) != len(slugs):
        raise err(f"labelled fractions {labels} map to the same folder names {slugs}")
    for f in fractions:
        try:
            from medsemiseg.data.splits import parse_fraction

            parse_fraction(f.value)
        except ValueError as e:
            raise err(f"labelled fraction {f.label!r}: {e}") from None
        if f.methods is not None:
            missing = [m for m in f.methods if m not in known]
            if missing:
                raise err(f"fraction {f.label!r} names unknown method(s) {missing}")

    seeds = raw.get("seeds", [0])
    if isinstance(seeds, int):
        seeds = [seeds]
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise err("'seeds' must be a non-negative integer or a list of them, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise err(f"'seeds' lists a seed twice: {seeds} (the same cell would run twice and count as two seeds)")

    overrides = raw.get("overrides") or {}
    if not isinstance(overrides, dict):
        raise err("'overrides' must be a mapping of bundle config keys to values")
    reserved = {"method", "labeled_fraction", "seed", "output_dir"} & set(overrides)
    if reserved:
        raise err(f"'overrides' may not set {sorted(reserved)}: the grid sets them per cell")
    method_overrides = raw.get("method_overrides") or {}
    if not isinstance(method_overrides, dict) or not all(isinstance(v, dict) for v in method_overrides.values()):
        raise err("'method_overrides' must map a method name to a mapping of overrides")
    for m in method_overrides:
        if m not in known:
            raise err(f"'method_overrides' names unknown method {m!r}")

    rules = raw.get("cell_overrides") or []
    if not isinstance(rules, list) or not all(isinstance(r, dict) and isinstance(r.get("overrides"), dict) for r in rules):
        raise err("'cell_overrides' must be a list of {methods?, fractions?, seeds?, overrides: {...}}")
    for r in rules:
        extra = set(r) - {"methods", "fractions", "seeds", "overrides"}
        if extra:
            raise err(f"'cell_overrides' entry has unknown key(s) {sorted(extra)}")
        if {"method", "labeled_fraction", "seed", "output_dir"} & set(r["overrides"]):
            raise err("'cell_overrides' may not set method, labeled_fraction, seed or output_dir")
        if r.get("fractions") is not None:
            r["fractions"] = [str(f) for f in r["fractions"]]
    train = raw.get("train") or {}
    evaluate = raw.get("evaluate") or {}
    predict = raw.get("predict") or {}
    for name, sect in (("train", train), ("evaluate", evaluate), ("predict", predict)):
        if not isinstance(sect, dict):
            raise err(f"'{name}' must be a mapping with 'workflow' and 'config_file'")

    def files(sect: dict, default: str) -> list[str]:
        v = sect.get("config_file", default)
        return [v] if isinstance(v, str) else list(v)

    classes = raw.get("classes")
    if classes is not None and (not isinstance(classes, list) or not all(isinstance(c, str) for c in classes)):
        raise err("'classes' must be a list of class names in label order, e.g. [background, vessel]")

    launcher = raw.get("launcher", ["{python}", "-m", "monai.bundle", "run"])
    if isinstance(launcher, str):
        launcher = shlex.split(launcher)

    out_raw = output_dir if output_dir is not None else raw.get("output_dir", f"runs/benchmark/{raw['task']}")
    if not isinstance(out_raw, (str, os.PathLike)) or not str(out_raw).strip():
        raise err("'output_dir' must be a folder path, e.g. runs/benchmark_quick (an empty one would write into "
                  "the current folder)")
    out = Path(out_raw)
    timeout = raw.get("cell_timeout_s")
    if timeout is not None and (isinstance(timeout, bool) or not isinstance(timeout, (int, float)) or timeout <= 0):
        raise err(f"'cell_timeout_s' must be a positive number of seconds (or absent for no limit), got {timeout!r}")
    cfg = BenchmarkConfig(
        source=path,
        task=str(raw["task"]),
        bundle=Path(raw["bundle"]),
        methods=list(methods),
        fractions=fractions,
        seeds=list(seeds),
        output_dir=out,
        classes=classes,
        overrides=dict(overrides),
        method_overrides={k: dict(v) for k, v in method_overrides.items()},
        train_workflow=str(train.get("workflow", "training")),
        train_config=files(train, "train.json"),
        eval_workflow=str(evaluate.get("workflow", "evaluating")),
        eval_config=files(evaluate, "evaluate.json"),
        eval_overrides=dict(evaluate.get("overrides") or {}),
        eval_pass_training_overrides=bool(evaluate.get("pass_training_overrides", True)),
        predict_workflow=str(predict["workflow"]) if predict.get("workflow") else None,
        predict_config=files(predict, "inference.json"),
        predict_overrides=dict(predict.get("overrides") or {}),
        predict_fractions=[str(f) for f in predict["fractions"]] if predict.get("fractions") else None,
        predict_seeds=[int(x) for x in predict["seeds"]] if predict.get("seeds") is not None else None,
        cell_overrides_rules=list(rules),
        metrics_file=str(raw.get("metrics_file", "eval/metrics.json")),
        launcher=[str(a) for a in launcher],
        cell_timeout_s=raw.get("cell_timeout_s"),
        env={str(k): str(v) for k, v in (raw.get("env") or {}).items()},
        plots=dict(raw.get("plots") or {}),
        table_metric=str(raw.get("table_metric", "iou")),
        description=str(raw.get("description", "")),
        published=parse_published_spec(raw.get("published"), path.parent, err),
    )
    if cfg.table_metric not in ("iou", "iou_pooled"):
        raise err(f"'table_metric' must be 'iou' (per-image mean) or 'iou_pooled', got {cfg.table_metric!r}")
    if not cfg.bundle.is_dir():
        raise err(f"bundle folder {cfg.bundle} does not exist (run from the repository root, or fix 'bundle')")
    plot_frac = cfg.plots.get("fraction")
    if plot_frac is not None and str(plot_frac) not in [f.label for f in cfg.fractions]:
        raise err(f"'plots: fraction' {plot_frac!r} is not one of the grid's fractions "
                  f"{[f.label for f in cfg.fractions]}")
    _check_override_keys(cfg, err)
    if cfg.published is not None:  # a malformed table should stop the grid before hours of training, not after
        for paper, ours in cfg.published["methods"].items():
            if ours not in known:
                close = difflib.get_close_matches(ours, known, n=1)
                raise err(f"'published: methods' maps {paper!r} to {ours!r}, which is not one of our methods "
                          f"{known}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        try:
            read_published(cfg.published, cfg.classes, known)
        except ValueError as e:
            raise err(f"'published': {e}") from e
    return cfg


def _config_keys(cfg: BenchmarkConfig, files: Sequence[str]) -> set[str] | None:
    """The top-level keys of a bundle's config files (JSON or YAML), or ``None`` when none can be read (or they are
    empty): then the override keys are not checked."""
    keys: set[str] = set()
    for name in files:
        path = cfg.bundle_file(name)
        try:
            text = path.read_text()
            data = json.loads(text) if path.suffix == ".json" else yaml.safe_load(text)
        except (OSError, ValueError, yaml.YAMLError):
            return None
        if isinstance(data, dict):
            keys |= {str(k) for k in data}
    return keys or None


def _check_override_keys(cfg: BenchmarkConfig, err: Callable[[str], ConfigError]) -> None:
    """Every override key (its first segment for a nested ``a#b`` / ``a::b`` path) must be a key of the bundle's
    config files, so a misspelt ``max_epoch`` stops the grid instead of being passed through and ignored."""
    train_keys = _config_keys(cfg, cfg.train_config)
    sections: list[tuple[str, Iterable[str], set[str] | None, list[str]]] = [
        ("overrides", cfg.overrides, train_keys, cfg.train_config)]
    sections += [(f"method_overrides: {m}", ov, train_keys, cfg.train_config) for m, ov in cfg.method_overrides.items()]
    sections += [(f"cell_overrides[{i}]", r["overrides"], train_keys, cfg.train_config)
                 for i, r in enumerate(cfg.cell_overrides_rules)]
    eval_keys = (_config_keys(cfg, cfg.eval_config) or set()) | (train_keys or set())
    sections.append(("evaluate: overrides", cfg.eval_overrides, eval_keys or None, cfg.eval_config))
    if cfg.predict_workflow:
        pred_keys = (_config_keys(cfg, cfg.predict_config) or set()) | (train_keys or set())
        sections.append(("predict: overrides", cfg.predict_overrides, pred_keys or None, cfg.predict_config))
    for where, ov, keys, files in sections:
        if keys is None:
            continue
        for key in ov:
            first = re.split(r"#|::", str(key))[0]
            if first not in keys:
                close = difflib.get_close_matches(first, sorted(keys), n=3)
                hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else ""
                raise err(f"'{where}' key {key!r} is not a key of the bundle config {files} "
                          f"(the bundle would ignore it){hint}")


def _as_list(v: Any, key: str, err: Callable[[str], ConfigError]) -> list:
    if not isinstance(v, list) or not v:
        raise err(f"'{key}' must be a non-empty list")
    return v


def _parse_fraction(v: Any, err: Callable[[str], ConfigError]) -> FractionSpec:
    if isinstance(v, (str, int)):
        return FractionSpec(label=str(v), value=str(v))
    if isinstance(v, dict) and "label" in v:
        methods = v.get("methods")
        if methods is not None and (not isinstance(methods, list) or not methods):
            raise err(f"fraction {v['label']!r}: 'methods' must be a non-empty list")
        return FractionSpec(
            label=str(v["label"]),
            value=str(v.get("value", v["label"])),
            methods=tuple(methods) if methods is not None else None,
        )
    raise err(f"a labelled fraction must be a string like '1/8' or a mapping {{label, value, methods}}, got {v!r}")


# ---------------------------------------------------------------------------------------------------------------
# cells
# ---------------------------------------------------------------------------------------------------------------

def enumerate_cells(cfg: BenchmarkConfig) -> list[Cell]:
    """Every cell of the grid, in the order they run: fraction-major (the small fractions, the paper's point,
    finish first), then method in YAML order, then seed."""
    cells = []
    for fraction in cfg.fractions:
        for method in cfg.methods:
            if fraction.methods is not None and method not in fraction.methods:
                continue
            for seed in cfg.seeds:
                cells.append(Cell(cfg.task, method, fraction, seed, cfg.cell_dir(method, fraction, seed)))
    if not cells:
        raise ConfigError(f"{cfg.source}: the grid is empty (no method is allowed at any fraction)")
    return cells


def _read_json(path: Path) -> dict | None:
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
    train_now = _portable(cfg.train_command(cell))
    done = _read_json(d / DONE)
    recorded = [m.get("train_command") for m in (done, _read_json(d / TRAINED), _read_json(d / STARTED)) if m]
    failed = _read_json(d / FAILED)
    if failed and failed.get("step") == "training":
        recorded.append(failed.get("command"))
    for old in recorded:
        if old is not None and old != train_now:
            return "training", command_diff(old, train_now)
    if done is not None and done.get("eval_command") is not None:
        eval_now = _portable(cfg.eval_command(cell))
        if done["eval_command"] != eval_now:
            return "evaluation", command_diff(done["eval_command"], eval_now)
    return None


def cell_status(cfg: BenchmarkConfig, cell: Cell) -> str:
    """``"done"``, ``"stale"`` (a recorded command differs from the YAML's: see :func:`stale_changes`),
    ``"trained"`` (evaluation pending), ``"failed"``, ``"partial"`` (started, no marker) or ``"todo"``."""
    d = cell.directory
    if stale_changes(cfg, cell) is not None:
        return "stale"
    done = _read_json(d / DONE)
    if done is not None:
        return "done"
    if (d / TRAINED).is_file():
        return "trained"
    if (d / FAILED).is_file():
        return "failed"
    if d.is_dir() and any(d.iterdir()):
        return "partial"
    return "todo"


def _portable(cmd: Sequence[str]) -> list[str]:
    """A command as recorded in markers: the interpreter path replaced by ``python`` so a cell stays *done* when
    the same grid is resumed from another virtual environment."""
    return ["python" if a == sys.executable else a for a in cmd]


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
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(data, indent=2))
    os.replace(tmp, path)  # atomic: a killed runner never leaves a half-written marker


def run_cell(cfg: BenchmarkConfig, cell: Cell) -> CellResult:
    """Train (unless ``trained.json`` says it already did) and evaluate one cell; write ``done.json`` or
    ``failed.json``. Never raises for a failure inside the cell's subprocesses."""
    d = cell.directory
    d.mkdir(parents=True, exist_ok=True)
    (d / FAILED).unlink(missing_ok=True)
    env = {**os.environ, **cfg.env}
    start = time.time()
    train_cmd = cfg.train_command(cell)
    prior = _read_json(d / TRAINED)
    if prior is None or prior.get("train_command") != _portable(train_cmd):
        attempts = _start_attempt(d, _portable(train_cmd))
        outcome = "interrupted"  # Ctrl-C / SIGTERM: the finally below still records this attempt's seconds
        try:
            rc, tail = _run_logged(train_cmd, d / "train.log", env, cfg.cell_timeout_s)
            outcome = "trained" if rc == 0 else f"failed (exit {rc})"
        finally:
            attempts = _end_attempt(d, _portable(train_cmd), attempts, outcome)
        if rc != 0:
            return _fail(cell, "training", rc, tail, time.time() - start, train_cmd)
        _write_json(d / TRAINED, {"train_command": _portable(train_cmd), "train_s": _attempts_s(attempts),
                                  "train_attempts": len(attempts)})
    trained = _read_json(d / TRAINED) or {}
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
            "train_command": _portable(train_cmd),
            "eval_command": _portable(eval_cmd),
            "metrics_file": cfg.metrics_file,
            "finished_at": _dt.datetime.now().isoformat(timespec="seconds"),
            "git_commit": _git_commit(),
        },
    )
    return CellResult(cell, "done", metrics["miou"], time.time() - start)


def _start_attempt(d: Path, train_cmd: list[str]) -> list[dict]:
    """Record in ``started.json``, before training starts, the command and a new attempt; earlier attempts of the
    same command (an interrupted or failed run) are kept so their seconds count in the cell's ``train_s``."""
    started = _read_json(d / STARTED) or {}
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
            "command": _portable(cmd),
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
        f = _read_json(c.directory / FAILED) or {}
        return f" ({f.get('step', '?')}, exit {f.get('returncode', '?')})"

    for status, text, note in (("failed", "failed", why), ("stale", "stale (run with another command)", None),
                               ("trained", "trained, evaluation pending", None),
                               ("partial", "started, unfinished", None), ("todo", "not run yet", None)):
        if st.get(status):
            cells = st[status]
            lines.append(f"{text}: {len(cells)} cell(s): " + (names(cells, note) if note else names(cells)))
    return lines


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
            done = _read_json(c.directory / DONE) or {}
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
            log(f"  would run {c.key} [{statuses[c.key]}]: {shlex.join(_portable(cfg.train_command(c)))}")
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


def iter_done(cfg: BenchmarkConfig) -> Iterable[tuple[Cell, dict]]:
    """Yield ``(cell, done.json content)`` for every finished, non-stale cell of the grid."""
    for c in enumerate_cells(cfg):
        if cell_status(cfg, c) == "done":
            yield c, _read_json(c.directory / DONE) or {}
