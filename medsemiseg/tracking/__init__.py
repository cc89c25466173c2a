"""Experiment tracking with MLflow, through MONAI's own bundle tracking (``python -m monai.bundle run ... --tracking
mlflow``).

MONAI's tracking patches a bundle with stock ``MLFlowHandler`` s (``monai.bundle.utils.DEFAULT_MLFLOW_SETTINGS``):
one on ``train#handlers``, one on ``validate#handlers`` and one on the top-level ``handlers`` (the evaluator of
``evaluating`` / ``inferring``). Those log the training loss, the learning rate and scalar metrics. The bundles add
:class:`TrackedRun` next to them, which does nothing unless such a handler is attached to its engine, and then fills
the same MLflow run with what a medsemiseg run is (see docs/tracking.md):

- :class:`TrackedRun` -- parameters and tags of the run, every loss term the trainer reports, per-class metrics by
  class name, the test scores per volume, and the run's files (``run.json``, ``metrics.json``) as artifacts;
- :func:`scalar_metrics` -- ``engine.state.metrics`` as MLflow scalars (a per-class tensor split by class name);
- :func:`sqlite_uri`, :func:`run_name` -- the bundles' ``tracking_uri`` and ``run_name``;
- :mod:`medsemiseg.benchmark.tracking` -- one MLflow run per cell of a benchmark grid.

mlflow is optional (``pip install "medsemiseg[tracking]"``); nothing here imports it until a run is tracked.
"""

from __future__ import annotations

from .run import TrackedRun, datalist_params, flat_params, run_name, run_record, scalar_metrics, sqlite_uri

__all__ = ["TrackedRun", "scalar_metrics", "flat_params", "sqlite_uri", "run_name", "run_record", "datalist_params"]
