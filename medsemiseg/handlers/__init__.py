"""MONAI/ignite event handlers: the pieces of the methods that live across iterations, and the bundles' logging.

- :class:`EMATeacher`: mean teacher, EMA of the student after every optimiser step (ClassMix, SupMix);
- :class:`DiscriminatorStep`: the SUFD discriminator's own optimiser step on detached features;
- :class:`RampUp`: ramp-up of the unsupervised loss weight;
- :class:`ValidationEveryAndLastHandler`: MONAI's ``ValidationHandler`` that also validates after the last epoch;
- :class:`ProgressLogger`: "evaluating: k/N images" while an evaluator runs (the bundles' ``evaluate`` / ``infer``);
- :class:`MetricsStatsHandler`: MONAI's ``StatsHandler`` printing per-class (tensor) metrics one per line, by class;
- :class:`RunSummary`: the closing line of a bundle workflow (time, score, where its outputs went);
- :class:`InputDistributionCheck`: a warning when an inference input looks unlike the training data;
- :class:`TrainStatsWriter`: a training's progress as JSON every epoch (MONAI Label's ``train_stats``).

All have ``attach(engine)``; the stateful ones have ``state_dict``/``load_state_dict`` for ``CheckpointSaver``.
"""

from __future__ import annotations

from .discriminator import DiscriminatorStep, add_to_output, discriminator_loss
from .distribution import InputDistributionCheck
from .ema import EMATeacher
from .progress import ProgressLogger
from .ramp import RampUp, ramp_value
from .stats import MetricsStatsHandler
from .summary import RunSummary
from .train_stats import TrainStatsWriter
from .validation import ValidationEveryAndLastHandler

__all__ = ["EMATeacher", "DiscriminatorStep", "discriminator_loss", "add_to_output", "RampUp", "ramp_value",
           "ValidationEveryAndLastHandler", "ProgressLogger", "MetricsStatsHandler", "RunSummary",
           "InputDistributionCheck", "TrainStatsWriter"]
