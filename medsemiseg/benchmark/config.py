"""A benchmark grid's YAML: its schema, the parsed :class:`BenchmarkConfig`, and the grid's cells.

The keys a YAML may have are the fields of :class:`GridFile` (``docs/benchmarks.md``, "Grid YAML"); each field names
the function that checks its value, so one error names the file, the key and the fix before any cell runs. The
checks that span keys (fractions against the ``plots`` fraction, override keys against the bundle's config, the
published table against the grid's classes and methods) follow in :func:`load_config`.
"""

from __future__ import annotations

import dataclasses
import difflib
import json
import os
import re
import shlex
import sys
from pathlib import Path
from typing import Any, Callable, Iterable, Sequence

import yaml

from .published import parse_published_spec, read_published

__all__ = [
    "BenchmarkConfig",
    "Cell",
    "ConfigError",
    "FractionSpec",
    "GridFile",
    "enumerate_cells",
    "fraction_slug",
    "known_methods",
    "load_config",
]

#: the overrides the grid sets per cell, which no section of the YAML may set
CELL_KEYS = ("method", "labeled_fraction", "seed", "output_dir")


class ConfigError(ValueError):
    """A benchmark YAML is malformed; the message names the file, the key and the fix."""


def known_methods() -> list[str]:
    """The method names a grid may use: every registered method (:mod:`medsemiseg.methods.registry`), listed ones
    first; a misspelt one stops the grid before any cell runs."""
    from medsemiseg.methods import registry

    return list(registry.specs())


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


# ---------------------------------------------------------------------------------------------------------------
# the YAML schema
# ---------------------------------------------------------------------------------------------------------------

Err = Callable[[str], ConfigError]


def _text(key: str) -> Callable[[Any, Err], str]:
    def check(v: Any, err: Err) -> str:
        if not isinstance(v, (str, int, float)) or isinstance(v, bool) or not str(v).strip():
            raise err(f"'{key}' must be a non-empty string")
        return str(v)

    return check


def _mapping(key: str, what: str) -> Callable[[Any, Err], dict]:
    def check(v: Any, err: Err) -> dict:
        v = {} if v is None else v
        if not isinstance(v, dict):
            raise err(f"'{key}' must be {what}")
        return dict(v)

    return check


def _methods(v: Any, err: Err) -> list[str]:
    if not isinstance(v, list) or not v or not all(isinstance(m, str) for m in v):
        raise err("'methods' must be a non-empty list of method names, e.g. [supervised, classmix, supmix_sufd]")
    known = known_methods()
    bad = [m for m in v if m not in known]
    if bad:
        raise err(f"unknown method(s) {bad}; known: {known}")
    if len(set(v)) != len(v):
        raise err("'methods' lists a method twice")
    return list(v)


def _fraction(v: Any, err: Err) -> FractionSpec:
    if isinstance(v, (str, int)):
        return FractionSpec(label=str(v), value=str(v))
    if isinstance(v, dict) and "label" in v:
        methods = v.get("methods")
        if methods is not None and (not isinstance(methods, list) or not methods):
            raise err(f"fraction {v['label']!r}: 'methods' must be a non-empty list")
        return FractionSpec(label=str(v["label"]), value=str(v.get("value", v["label"])),
                            methods=tuple(methods) if methods is not None else None)
    raise err(f"a labelled fraction must be a string like '1/8' or a mapping {{label, value, methods}}, got {v!r}")


def _fractions(v: Any, err: Err) -> list[FractionSpec]:
    if not isinstance(v, list) or not v:
        raise err("'fractions' must be a non-empty list")
    return [_fraction(f, err) for f in v]


def _upper_bound(v: Any, err: Err) -> FractionSpec | None:
    if v is None:
        return None
    if not isinstance(v, dict):
        raise err("'upper_bound' must be a mapping like {label: full, value: '1', methods: [supervised]}")
    return _fraction({"methods": ["supervised"], "label": "full", **v}, err)


def _seeds(v: Any, err: Err) -> list[int]:
    seeds = [v] if isinstance(v, int) and not isinstance(v, bool) else v
    if not isinstance(seeds, list) or not seeds or not all(isinstance(s, int) and s >= 0 for s in seeds):
        raise err("'seeds' must be a non-negative integer or a list of them, e.g. [0, 1, 2]")
    if len(set(seeds)) != len(seeds):
        raise err(f"'seeds' lists a seed twice: {seeds} (the same cell would run twice and count as two seeds)")
    return list(seeds)


def _output_dir(v: Any, err: Err) -> Any:
    if v is not None and (not isinstance(v, (str, os.PathLike)) or not str(v).strip()):
        raise err("'output_dir' must be a folder path, e.g. runs/benchmark_quick (an empty one would write into "
                  "the current folder)")
    return v


def _classes(v: Any, err: Err) -> list[str] | None:
    if v is not None and (not isinstance(v, list) or not all(isinstance(c, str) for c in v)):
        raise err("'classes' must be a list of class names in label order, e.g. [background, vessel]")
    return v


def _overrides(v: Any, err: Err) -> dict:
    ov = _mapping("overrides", "a mapping of bundle config keys to values")(v, err)
    reserved = set(CELL_KEYS) & set(ov)
    if reserved:
        raise err(f"'overrides' may not set {sorted(reserved)}: the grid sets them per cell")
    return ov


def _method_overrides(v: Any, err: Err) -> dict[str, dict]:
    v = {} if v is None else v
    if not isinstance(v, dict) or not all(isinstance(x, dict) for x in v.values()):
        raise err("'method_overrides' must map a method name to a mapping of overrides")
    known = known_methods()
    for m in v:
        if m not in known:
            raise err(f"'method_overrides' names unknown method {m!r}")
    return {k: dict(x) for k, x in v.items()}


def _cell_rules(v: Any, err: Err) -> list[dict]:
    rules = [] if v is None else v
    if not isinstance(rules, list) or not all(isinstance(r, dict) and isinstance(r.get("overrides"), dict)
                                              for r in rules):
        raise err("'cell_overrides' must be a list of {methods?, fractions?, seeds?, overrides: {...}}")
    for r in rules:
        extra = set(r) - {"methods", "fractions", "seeds", "overrides"}
        if extra:
            raise err(f"'cell_overrides' entry has unknown key(s) {sorted(extra)}")
        if set(CELL_KEYS) & set(r["overrides"]):
            raise err("'cell_overrides' may not set method, labeled_fraction, seed or output_dir")
    return [{**r, "fractions": [str(f) for f in r["fractions"]]} if r.get("fractions") is not None else dict(r)
            for r in rules]


def _section(key: str) -> Callable[[Any, Err], dict]:
    return _mapping(key, "a mapping with 'workflow' and 'config_file'")


def _launcher(v: Any, err: Err) -> list[str]:
    return [str(a) for a in (shlex.split(v) if isinstance(v, str) else v)]


def _timeout(v: Any, err: Err) -> float | None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v <= 0):
        raise err(f"'cell_timeout_s' must be a positive number of seconds (or absent for no limit), got {v!r}")
    return v


def _env(v: Any, err: Err) -> dict[str, str]:
    return {str(k): str(x) for k, x in (v or {}).items()}


def _table_metric(v: Any, err: Err) -> str:
    if str(v) not in ("iou", "iou_pooled"):
        raise err(f"'table_metric' must be 'iou' (per-image mean) or 'iou_pooled', got {str(v)!r}")
    return str(v)


def _plain(v: Any, err: Err) -> Any:
    return v


def _key(check: Callable[[Any, Err], Any], default: Any = dataclasses.MISSING, doc: str = "") -> Any:
    """A YAML key: its check (``check(value, err) -> value``), its default (none: the key is required), what it is."""
    kwargs: dict[str, Any] = {"metadata": {"check": check, "doc": doc}}
    if isinstance(default, (list, dict)):
        kwargs["default_factory"] = lambda: type(default)(default)
    elif default is not dataclasses.MISSING:
        kwargs["default"] = default
    return dataclasses.field(**kwargs)


@dataclasses.dataclass
class GridFile:
    """The keys of a benchmark YAML, as written (``extends: base.yaml`` merged in first); every key is documented
    in ``docs/benchmarks.md``, "Grid YAML"."""

    task: str = _key(_text("task"), doc="the task name (output folder), e.g. covid")
    bundle: str = _key(_text("bundle"), doc="the bundle folder, relative to the current directory")
    methods: list[str] = _key(_methods, doc="registered method names")
    fractions: list[FractionSpec] = _key(_fractions, doc="labelled fractions: '1/8' or {label, value, methods}")
    upper_bound: FractionSpec | None = _key(_upper_bound, None, "the full-label column, supervised by default")
    seeds: list[int] = _key(_seeds, [0], "seeds")
    output_dir: Any = _key(_output_dir, None, "where the cells go (default runs/benchmark/<task>)")
    classes: list[str] | None = _key(_classes, None, "class names in label order")
    overrides: dict = _key(_overrides, {}, "bundle keys passed to every cell")
    method_overrides: dict = _key(_method_overrides, {}, "bundle keys per method")
    cell_overrides: list = _key(_cell_rules, [], "bundle keys for the cells a rule matches")
    train: dict = _key(_section("train"), {}, "training workflow and config files")
    evaluate: dict = _key(_section("evaluate"), {}, "evaluation workflow, config files and overrides")
    predict: dict = _key(_section("predict"), {}, "prediction workflow for the figure's cells")
    metrics_file: str = _key(_text("metrics_file"), "eval/metrics.json", "the evaluation's metrics, in the cell")
    launcher: list[str] = _key(_launcher, ["{python}", "-m", "monai.bundle", "run"], "the bundle command")
    cell_timeout_s: float | None = _key(_timeout, None, "seconds a cell's step may take")
    env: dict = _key(_env, {}, "environment variables of the cells")
    plots: dict = _key(_mapping("plots", "a mapping"), {}, "figures")
    table_metric: str = _key(_table_metric, "iou", "iou (per-image mean) or iou_pooled")
    description: str = _key(_plain, "", "one line about the grid")
    published: Any = _key(_plain, None, "a published table to compare with (published.py)")

    @classmethod
    def read(cls, raw: dict, err: Err) -> GridFile:
        """The checked keys of ``raw``: an unknown or missing key, or a bad value, is one error naming the key."""
        fields = {f.name: f for f in dataclasses.fields(cls)}
        unknown = set(raw) - set(fields)
        if unknown:
            raise err(f"unknown key(s) {sorted(unknown)}; allowed: {sorted(set(fields) | {'extends'})}")
        values = {}
        for name, f in fields.items():
            required = f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
            if name not in raw:
                if required:
                    raise err(f"missing required key '{name}'")
                continue
            values[name] = f.metadata["check"](raw[name], err)
        return cls(**values)


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


# ---------------------------------------------------------------------------------------------------------------
# the parsed grid
# ---------------------------------------------------------------------------------------------------------------

@dataclasses.dataclass
class BenchmarkConfig:
    """A parsed benchmark YAML: the grid's cells and the commands that run them."""

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
        ov.update({"method": cell.method, "labeled_fraction": cell.fraction.value, "seed": cell.seed,
                   "output_dir": str(cell.directory)})
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
        if v is None:
            v = "null"  # MONAI's CLI drops an override whose value parses to None ("None"); the bundles read "null"
        elif isinstance(v, bool):
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


def load_config(path: str | os.PathLike, output_dir: str | os.PathLike | None = None) -> BenchmarkConfig:
    """Read and check one benchmark YAML.

    Relative ``bundle`` and ``output_dir`` paths are taken relative to the current directory (the repository root
    in every documented command), so the same YAML works from a fresh clone. ``output_dir`` overrides the YAML's.
    """
    path = Path(path)

    def err(msg: str) -> ConfigError:
        return ConfigError(f"{path}: {msg}")

    y = GridFile.read(_read_raw(path), err)
    fractions = y.fractions + ([y.upper_bound] if y.upper_bound is not None else [])
    _check_fractions(fractions, err)

    def files(sect: dict, default: str) -> list[str]:
        v = sect.get("config_file", default)
        return [v] if isinstance(v, str) else list(v)

    out = output_dir if output_dir is not None else _output_dir(y.output_dir, err) or f"runs/benchmark/{y.task}"
    train, evaluate, predict = y.train, y.evaluate, y.predict
    cfg = BenchmarkConfig(
        source=path,
        task=y.task,
        bundle=Path(y.bundle),
        methods=y.methods,
        fractions=fractions,
        seeds=y.seeds,
        output_dir=Path(out),
        classes=y.classes,
        overrides=y.overrides,
        method_overrides=y.method_overrides,
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
        cell_overrides_rules=y.cell_overrides,
        metrics_file=y.metrics_file,
        launcher=y.launcher,
        cell_timeout_s=y.cell_timeout_s,
        env=y.env,
        plots=y.plots,
        table_metric=y.table_metric,
        description=str(y.description),
        published=parse_published_spec(y.published, path.parent, err),
    )
    if not cfg.bundle.is_dir():
        raise err(f"bundle folder {cfg.bundle} does not exist (run from the repository root, or fix 'bundle')")
    plot_frac = cfg.plots.get("fraction")
    if plot_frac is not None and str(plot_frac) not in [f.label for f in cfg.fractions]:
        raise err(f"'plots: fraction' {plot_frac!r} is not one of the grid's fractions "
                  f"{[f.label for f in cfg.fractions]}")
    _check_override_keys(cfg, err)
    _check_published(cfg, err)
    return cfg


def _check_fractions(fractions: list[FractionSpec], err: Err) -> None:
    """Labels and folder names unique; every value a labelled fraction; every named method known."""
    from medsemiseg.data.splits import parse_fraction

    labels = [f.label for f in fractions]
    if len(set(labels)) != len(labels):
        raise err(f"labelled fractions repeat: {labels}")
    slugs = [fraction_slug(f.label) for f in fractions]
    if len(set(slugs)) != len(slugs):
        raise err(f"labelled fractions {labels} map to the same folder names {slugs}")
    known = known_methods()
    for f in fractions:
        try:
            parse_fraction(f.value)
        except ValueError as e:
            raise err(f"labelled fraction {f.label!r}: {e}") from None
        missing = [m for m in f.methods or () if m not in known]
        if missing:
            raise err(f"fraction {f.label!r} names unknown method(s) {missing}")


def _check_published(cfg: BenchmarkConfig, err: Err) -> None:
    """A malformed published table stops the grid before hours of training, not after."""
    if cfg.published is None:
        return
    known = known_methods()
    for paper, ours in cfg.published["methods"].items():
        if ours not in known:
            close = difflib.get_close_matches(ours, known, n=1)
            raise err(f"'published: methods' maps {paper!r} to {ours!r}, which is not one of our methods "
                      f"{known}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    try:
        read_published(cfg.published, cfg.classes, known)
    except ValueError as e:
        raise err(f"'published': {e}") from e


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


def _check_override_keys(cfg: BenchmarkConfig, err: Err) -> None:
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
