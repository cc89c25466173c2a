"""One MLflow run per finished cell of a benchmark grid (``python -m medsemiseg.benchmark ... --tracking mlflow``).

A cell is one training and its evaluation (:mod:`medsemiseg.benchmark.grid`); when it is done its ``done.json`` holds
the scores. :func:`log_cell` turns that into an MLflow run named after the cell (``covid/supmix/1-8/seed0``) and
tagged ``set`` (the task), ``method``, ``fraction`` and ``seed``, with the per-class IoU and Dice by class name, the
mIoU, the times, the commands as parameters, and ``done.json``, ``metrics.json`` and ``run.json`` as artifacts. So
the MLflow UI compares a grid by filtering and grouping on the tags. A cell already logged with the same
``finished_at`` is not logged again, so logging a grid twice (or after ``--report-only``) adds only new cells.

The store is ``<grid output_dir>/mlruns.db`` unless ``tracking_uri`` says otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from medsemiseg.tracking.run import PARAM_VALUE_LIMIT, _name, flat_params, sqlite_uri

__all__ = ["GridTracker", "DEFAULT_EXPERIMENT"]

#: the MLflow experiment of the grids, unless ``--experiment-name`` says otherwise
DEFAULT_EXPERIMENT = "medsemiseg-benchmark"


def _metrics(done: Mapping[str, Any]) -> dict[str, float]:
    m = done.get("metrics") or {}
    out: dict[str, float] = {}
    for key, name in (("miou", "mIoU"), ("miou_pooled", "mIoU_pooled")):
        if isinstance(m.get(key), (int, float)):
            out[name] = float(m[key])
    for key, name in (("iou", "IoU"), ("dice", "Dice"), ("iou_pooled", "IoU_pooled")):
        for cls, v in (m.get(key) or {}).items():
            if isinstance(v, (int, float)):
                out[f"{name}/{_name(cls)}"] = float(v)
    for key in ("train_s", "eval_s"):
        if isinstance(done.get(key), (int, float)):
            out[key] = float(done[key])
    return out


class GridTracker:
    """Logs finished grid cells as MLflow runs (see the module docstring).

    Args:
        tracking_uri: the MLflow store; ``None``: ``sqlite:///<output_dir>/mlruns.db`` of the grid's config.
        experiment_name: the MLflow experiment the cells go to.
    """

    def __init__(self, tracking_uri: str | None = None, experiment_name: str = DEFAULT_EXPERIMENT) -> None:
        import mlflow

        self.tracking_uri = tracking_uri
        self.experiment_name = experiment_name
        self._mlflow = mlflow
        self._clients: dict[str, Any] = {}

    def _client(self, cfg: Any) -> tuple[Any, str]:
        uri = self.tracking_uri or sqlite_uri(cfg.output_dir)
        client = self._clients.get(uri)
        if client is None:
            client = self._clients[uri] = self._mlflow.MlflowClient(tracking_uri=uri)
        exp = client.get_experiment_by_name(self.experiment_name)
        if exp is None:
            location = None
            if uri.startswith("sqlite:///"):  # artifacts next to the database, as MONAI's MLFlowHandler keeps them
                location = (Path(uri[len("sqlite:///"):]).parent / "mlruns").absolute().as_uri()
            return client, client.create_experiment(self.experiment_name, artifact_location=location)
        return client, exp.experiment_id

    def log_cell(self, cfg: Any, cell: Any, done: Mapping[str, Any]) -> str | None:
        """Log one finished cell (its ``done.json`` content ``done``); the new run's id, or ``None`` when the cell
        is already in the store with the same ``finished_at``."""
        from mlflow.entities import Metric, Param, RunTag

        client, experiment_id = self._client(cfg)
        finished = str(done.get("finished_at", ""))
        found = client.search_runs(
            [experiment_id], filter_string=f"tags.cell = '{cell.key}' and tags.finished_at = '{finished}'")
        if found:
            return None
        tags = {"set": cell.task, "method": cell.method, "fraction": cell.fraction.label, "seed": str(cell.seed),
                "cell": cell.key, "finished_at": finished, "git_commit": str(done.get("git_commit") or ""),
                "grid": str(cfg.source)}
        run = client.create_run(experiment_id, run_name=cell.key, tags=tags)
        run_id = run.info.run_id
        params = flat_params({
            "set": cell.task, "method": cell.method, "fraction": cell.fraction.label,
            "labeled_fraction": done.get("labeled_fraction"), "seed": cell.seed,
            "train_command": " ".join(map(str, done.get("train_command") or [])),
            "eval_command": " ".join(map(str, done.get("eval_command") or [])),
        })
        stamp = int(Path(cell.directory, "done.json").stat().st_mtime * 1000) if Path(
            cell.directory, "done.json").is_file() else 0
        client.log_batch(run_id, metrics=[Metric(k, v, stamp, 0) for k, v in _metrics(done).items()],
                         params=[Param(k, v[:PARAM_VALUE_LIMIT]) for k, v in params.items()],
                         tags=[RunTag("mlflow.note.content", f"benchmark cell {cell.key} of {cfg.source}")])
        d = Path(cell.directory)
        for path in (d / "done.json", d / str(cfg.metrics_file), d / "models" / "run.json"):
            if path.is_file():
                client.log_artifact(run_id, str(path))
        client.set_terminated(run_id, "FINISHED")
        return run_id

    def log_grid(self, cfg: Any) -> int:
        """Log every finished cell of the grid not yet in the store; how many were logged."""
        from .cells import iter_done

        return sum(self.log_cell(cfg, cell, done) is not None for cell, done in iter_done(cfg))
