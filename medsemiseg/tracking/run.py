"""What a tracked bundle run logs to MLflow besides MONAI's stock ``MLFlowHandler`` (see the package docstring)."""

from __future__ import annotations

import atexit
import json
import logging
import math
import os
import re
import time
from collections.abc import Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import Any

import torch
from ignite.engine import Events

__all__ = ["TrackedRun", "scalar_metrics", "flat_params", "sqlite_uri", "run_name", "run_record", "datalist_params"]

logger = logging.getLogger(__name__)

#: MLflow keeps at most this many characters of a parameter value
PARAM_VALUE_LIMIT = 6000
#: what MLflow accepts in a metric, parameter or tag name; anything else becomes "_"
_NAME_BAD = re.compile(r"[^A-Za-z0-9_\-. :/]")
#: keys of ``run.json`` that are not settings (a fingerprint of the inputs, the datalist's absolute path)
_RECORD_SKIP = ("input_reference",)
#: the executed config MONAI's tracking writes to ``output_dir`` (``config_<date>_<time>.json``)
_EXECUTED_CONFIG = re.compile(r"config_\d{8}_\d{6}\.json")


def sqlite_uri(output_dir: str | os.PathLike, bundle_root: str | os.PathLike | None = None) -> str:
    """The bundles' ``tracking_uri``: ``sqlite:///<output_dir>/mlruns.db`` (absolute). MONAI's ``MLFlowHandler``
    keeps the run artifacts in ``mlruns/`` next to the database, so the whole store lies under ``output_dir``.

    When ``output_dir`` is the bundle folder itself (the bundles' default), the store goes to the working folder
    instead (``./mlruns.db``, where MLflow and ``mlflow ui`` look by default): a bundle folder holds the bundle, not
    a growing experiment database."""
    folder = Path(output_dir).absolute()
    if bundle_root is not None and folder.resolve() == Path(bundle_root).absolute().resolve():
        folder = Path.cwd().absolute()
    return "sqlite:///" + (folder / "mlruns.db").as_posix()


def run_name(*parts: Any) -> str:
    """The bundles' ``run_name``: the parts, the start time and the process id (``covid-supmix_sufd-20261207-191500
    -4242``). Unique per process, so MONAI's handlers never pick up an older run left RUNNING by a crash (they reuse
    an unfinished run of the same name)."""
    stamp = time.strftime("%Y%m%d-%H%M%S")
    return "-".join([*(str(p) for p in parts if p not in (None, "")), stamp, str(os.getpid())])


def _name(key: Any) -> str:
    return _NAME_BAD.sub("_", str(key))


def _as_float(value: Any) -> float | None:
    if isinstance(value, bool):
        return float(value)
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return float(value.detach().float().cpu())
    try:
        import numpy as np

        if isinstance(value, np.ndarray) and value.size == 1:
            return float(value.reshape(()))
        if isinstance(value, np.generic):
            return float(value)
    except ImportError:  # pragma: no cover - numpy is a dependency
        pass
    return None


def scalar_metrics(metrics: Mapping[str, Any], class_names: Sequence[str] | None = None) -> dict[str, float]:
    """``engine.state.metrics`` as MLflow scalars: a scalar stays ``name``; a per-class vector (a 1-D tensor, array or
    list with one value per class) becomes ``name/<class name>`` for each class (``name/<index>`` when its length
    differs from ``class_names``); a nested mapping becomes ``name/<key>``. Values that are neither are left out."""
    out: dict[str, float] = {}
    names = None if class_names is None else [str(c) for c in class_names]
    for key, value in metrics.items():
        key = _name(key)
        if isinstance(value, Mapping):
            out.update({f"{key}/{k}": v for k, v in scalar_metrics(value, class_names).items()})
            continue
        single = _as_float(value)
        if single is not None:
            out[key] = single
            continue
        try:
            values = torch.as_tensor(value).detach().float().cpu()
        except (TypeError, ValueError, RuntimeError):
            continue
        if values.ndim != 1:
            continue
        labels = names if names is not None and len(names) == len(values) else [str(i) for i in range(len(values))]
        out.update({f"{key}/{_name(n)}": float(v) for n, v in zip(labels, values.tolist())})
    return out


def flat_params(params: Mapping[str, Any], prefix: str = "") -> dict[str, str]:
    """``params`` as MLflow parameters: nested mappings flattened to ``a.b`` keys, lists and ``None`` as JSON text,
    each value cut to MLflow's :data:`PARAM_VALUE_LIMIT` characters."""
    out: dict[str, str] = {}
    for key, value in params.items():
        name = _name(f"{prefix}{key}")
        if isinstance(value, Mapping) and value:
            out.update(flat_params(value, prefix=f"{name}."))
            continue
        if isinstance(value, (list, tuple, Mapping)) or value is None or isinstance(value, bool):
            text = json.dumps(value, default=str)
        else:
            text = str(value)
        out[name] = text[:PARAM_VALUE_LIMIT]
    return out


def run_record(ckpt_path: str | os.PathLike | None) -> dict[str, Any]:
    """The settings of the training run that wrote ``ckpt_path``: its ``run.json`` next to it (what
    :class:`~medsemiseg.bundle.resume.TrainCheckpointer` writes), without the input fingerprint; ``{}`` when there
    is none."""
    if not ckpt_path:
        return {}
    path = Path(ckpt_path).parent / "run.json"
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return {k: v for k, v in record.items() if k not in _RECORD_SKIP} if isinstance(record, Mapping) else {}


def datalist_params(datalist: str | os.PathLike | None) -> dict[str, Any]:
    """What a run trained or scored on, from its datalist's ``meta`` (what :mod:`medsemiseg.bundle.datalists`
    writes): ``labeled_fraction`` and ``split_seed`` in effect, and ``data`` (``source``, ``counts`` per split,
    ``synthetic``); ``{}`` for a datalist without ``meta``."""
    try:
        meta = json.loads(Path(str(datalist)).read_text()).get("meta") or {}
    except (OSError, ValueError, TypeError, AttributeError):
        return {}
    if not isinstance(meta, Mapping):
        return {}
    out: dict[str, Any] = {}
    if "labeled_fraction" in meta:
        out["labeled_fraction"] = meta["labeled_fraction"]
    if "seed" in meta:
        out["split_seed"] = meta["seed"]
    data = {"source": meta.get("source"), "counts": meta.get("counts"), "synthetic": "synthetic" in meta}
    out["data"] = {k: v for k, v in data.items() if v is not None}
    return out


def attached_mlflow_handler(engine: Any) -> Any:
    """The ``monai.handlers.MLFlowHandler`` attached to ``engine`` (what ``--tracking mlflow`` adds), or ``None``."""
    from monai.handlers import MLFlowHandler

    for event in (Events.STARTED, Events.COMPLETED):
        for entry in engine._event_handlers.get(event, []):
            func = entry[0]
            owner = getattr(func, "__self__", None) or getattr(getattr(func, "__wrapped__", None), "__self__", None)
            if isinstance(owner, MLFlowHandler):
                return owner
    return None


def _log_metrics(client: Any, run_id: str, metrics: Mapping[str, float], step: int) -> None:
    if not metrics:
        return
    from mlflow.entities import Metric

    now = int(time.time() * 1000)
    items = [Metric(k, float(v), now, int(step)) for k, v in metrics.items()]
    for i in range(0, len(items), 1000):  # MLflow's log_batch takes at most 1000 metrics
        client.log_batch(run_id=run_id, metrics=items[i:i + 1000], params=[], tags=[])


def _fail_if_running(client: Any, run_id: str) -> None:
    """At exit: a run still RUNNING was left by a failure (MONAI's handler closes it when the engine completes)."""
    try:
        if client.get_run(run_id).info.status == "RUNNING":
            client.set_terminated(run_id, "FAILED")
    except Exception:  # noqa: BLE001 - the store may be gone at exit; nothing left to mark
        pass


class TrackedRun:
    """Fill the MLflow run of MONAI's experiment tracking with what a medsemiseg run is.

    Attach it to a trainer, validator or evaluator next to where ``--tracking mlflow`` appends MONAI's
    ``MLFlowHandler`` (the bundles put one in ``train#handlers``, ``validate#handlers``, ``evaluate#handlers`` and
    ``infer#handlers``). When the engine starts and no ``MLFlowHandler`` is attached to it, it does nothing (mlflow
    need not be installed). Otherwise, in that handler's run:

    - at start: ``params`` as run parameters (:func:`flat_params`), ``tags`` as run tags; the run is marked FAILED
      if the process ends while it is still RUNNING (MONAI's handler leaves it RUNNING when the engine fails);
    - every iteration (a trainer): every scalar the trainer reports in ``engine.state.output`` -- ``loss`` under the
      handler's ``tag_name`` (``train_loss``), each other term and ratio as ``train_<name>`` -- and the learning
      rate(s), as MONAI does;
    - every epoch: ``engine.state.metrics`` through :func:`scalar_metrics` (a per-class IoU as
      ``val_per_class_iou/<class name>``) at the epoch the handler reports (the trainer's, for a validator);
    - at completion: the metrics added after the epoch ended (``volume_mDice`` ... of
      :class:`~medsemiseg.metrics.PerVolumeScores`), the per-volume scores by class (``test_volume_<metric>/<class>``)
      and the files of ``artifacts`` that exist (a folder with everything under it).

    Args:
        params: the run's settings, logged once as parameters; a parameter the run already has is not logged again.
        tags: MLflow tags (``{"medsemiseg.workflow": "training"}``); ``None`` values are left out.
        class_names: names in class-index order, for the per-class metrics.
        artifacts: files or folders logged as artifacts when the engine completes.
        volume_prefix: name prefix of the per-volume scores by class.
        config_dir: the folder MONAI's tracking writes the executed config to (the bundles' ``output_dir``). MONAI
            names it to its ``MLFlowHandler`` as ``<output_dir> + '/config_<date>_<time>.json'``, text that is a
            path only when ``output_dir`` is an expression (``--output_dir runs/x`` and ``@bundle_root`` are not), so
            the handler would log no config; this handler points it at ``<config_dir>/config_<date>_<time>.json``.
    """

    def __init__(self, params: Mapping[str, Any] | None = None, tags: Mapping[str, Any] | None = None,
                 class_names: Sequence[str] | None = None, artifacts: Sequence[str | os.PathLike] = (),
                 volume_prefix: str = "test_volume", config_dir: str | os.PathLike | None = None) -> None:
        self.params = dict(params or {})
        self.tags = {str(k): str(v) for k, v in (tags or {}).items() if v is not None}
        self.class_names = None if class_names is None else [str(c) for c in class_names]
        self.artifacts = [str(a) for a in artifacts if a]
        self.volume_prefix = volume_prefix
        self.config_dir = None if config_dir is None else str(config_dir)
        self.mlflow_handler: Any = None
        self._logged: set[str] = set()
        self._runs: set[str] = set()
        self._run_id: str | None = None

    def attach(self, engine: Any) -> None:
        if not engine.has_event_handler(self._started, Events.STARTED):
            engine.add_event_handler(Events.STARTED, self._started)
        if not engine.has_event_handler(self._completed, Events.COMPLETED):
            engine.add_event_handler(Events.COMPLETED, self._completed)

    @property
    def run_id(self) -> str | None:
        """The MLflow run of the engine's last start (``None`` when it was not tracked)."""
        return self._run_id

    def _started(self, engine: Any) -> None:
        handler = attached_mlflow_handler(engine)
        self.mlflow_handler = handler
        self._run_id = None
        if handler is None:
            return
        if handler.epoch_logger is None:
            handler.epoch_logger = partial(self._log_epoch, handler)
        if handler.iteration_logger is None:
            handler.iteration_logger = partial(self._log_iteration, handler)
        if self.config_dir is not None:
            handler.artifacts = tuple(self._config_path(a) for a in handler.artifacts)
        if handler.cur_run is None:
            handler.start(engine)  # MONAI's own start, which runs after this handler's: the run exists from here on
        run_id = self._run_id = handler.cur_run.info.run_id
        if run_id in self._runs:  # a validator starts every validation; its run is set up once
            return
        self._runs.add(run_id)
        atexit.register(_fail_if_running, handler.client, run_id)
        if not self.params and not self.tags:
            return
        from mlflow.entities import Param, RunTag

        existing = handler.client.get_run(run_id).data.params
        params = [Param(k, v) for k, v in flat_params(self.params).items() if k not in existing]
        tags = [RunTag(_name(k), v[:PARAM_VALUE_LIMIT]) for k, v in self.tags.items()]
        for i in range(0, max(len(params), 1), 100):  # MLflow's log_batch takes at most 100 parameters
            handler.client.log_batch(run_id=run_id, metrics=[], params=params[i:i + 100], tags=tags if i == 0 else [])

    def _config_path(self, artifact: Any) -> Any:
        """``artifact``, or the executed config in :attr:`config_dir` it names when it is no path."""
        if not isinstance(artifact, str) or os.path.exists(artifact):
            return artifact
        found = _EXECUTED_CONFIG.search(artifact)
        path = None if found is None else os.path.join(self.config_dir, found.group(0))
        return path if path is not None and os.path.isfile(path) else artifact

    def _log_epoch(self, handler: Any, engine: Any) -> None:
        values = scalar_metrics(engine.state.metrics or {}, self.class_names)
        if handler.state_attributes:
            values.update(scalar_metrics({a: getattr(engine.state, a, None) for a in handler.state_attributes}))
        self._logged.update(values)
        _log_metrics(handler.client, handler.cur_run.info.run_id, values,
                     handler.global_epoch_transform(engine.state.epoch))

    def _log_iteration(self, handler: Any, engine: Any) -> None:
        from medsemiseg.engines import from_engine_scalars

        values = {handler.tag_name if k == "loss" else f"train_{_name(k)}": v
                  for k, v in from_engine_scalars(engine.state.output).items()}
        optimizer = getattr(engine, "optimizer", None)
        if optimizer is not None:
            for name in handler.optimizer_param_names:
                values.update({f"{name}_group_{i}": float(group[name])
                               for i, group in enumerate(optimizer.param_groups) if name in group})
        _log_metrics(handler.client, handler.cur_run.info.run_id, values, engine.state.iteration)

    def _completed(self, engine: Any) -> None:
        handler = self.mlflow_handler
        if handler is None or handler.cur_run is None:
            return
        run_id = handler.cur_run.info.run_id
        step = handler.global_epoch_transform(engine.state.epoch)
        late = {k: v for k, v in scalar_metrics(engine.state.metrics or {}, self.class_names).items()
                if k not in self._logged}
        volumes = getattr(engine.state, "per_volume", None)
        if isinstance(volumes, Mapping):
            for cls, scores in (volumes.get("per_class") or {}).items():
                for metric, value in scores.items():
                    v = _as_float(value)
                    if v is not None and metric not in ("volumes", "distance_undefined") and not math.isnan(v):
                        late[f"{self.volume_prefix}_{_name(metric)}/{_name(cls)}"] = v
        _log_metrics(handler.client, run_id, late, step)
        for path in self.artifacts:
            if os.path.isfile(path):
                handler.client.log_artifact(run_id, path)
            elif os.path.isdir(path):
                handler.client.log_artifacts(run_id, path, artifact_path=Path(path).name)
