"""Class-aware pseudo-labelling: per-class confidence thresholds and the classes adaptive SupMix pastes.

Both answer one observation: on small real data sets a rare class (consolidation in COVID-19 CT, thin vessels in
fundus photographs) is under-represented among the confident pseudo-labels, because one global threshold (0.95)
admits far more pixels of the classes the network already knows. :class:`ClassBalance` keeps, per class,

- ``prior``: its share of the labelled ground-truth pixels (running mean over the labelled batches),
- ``share``: its share of the *confident* pseudo-labelled pixels of the unlabelled batches,
- ``learned``: the share of all unlabelled pixels confidently pseudo-labelled as it,

each an exponential moving average (momentum ``momentum``, bias-corrected like Adam's moments, so the first
batches count fully), and derives from them:

**Class-wise thresholds** (``threshold_mode="classwise"``), after FlexMatch's curriculum pseudo-labelling (Zhang et
al., "FlexMatch: Boosting Semi-Supervised Learning with Curriculum Pseudo Labeling", NeurIPS 2021): a class's
*learning status* is ``r_c = learned_c / prior_c`` (capped at 1), the share of its expected pixels the model labels
confidently (confidence >= ``tau``, as FlexMatch counts); normalised as FlexMatch's threshold warm-up does,
``beta_c = r_c / max(max_k r_k, unused)`` with ``unused`` the share of unlabelled pixels no class reaches ``tau`` on,
and mapped with FlexMatch's convex function ``M(x) = x / (2 - x)`` to ``T_c = max(floor, tau * M(beta_c))``. Early
in training (almost every pixel unsure) every threshold is low; later the best-learned class keeps ``tau`` and a
class the model hardly produces gets a lower threshold, so its pseudo-labels enter the loss. One deviation from
FlexMatch, which counts predictions per image of a class-balanced set: here pixels are counted and divided by the
class prior, since segmentation classes are far from balanced (background is 80-95 % of a slice); without it the
background would always look best learned and every other class would get a threshold near 0. ``floor`` (0.5 by
default) keeps the threshold from falling to nothing.

**Adaptive SupMix** (``supmix_mode="adaptive"``, the paper's future work: classes chosen from class priors instead
of by hand): SupMix pastes, from each labelled image, the foreground classes whose confident pseudo-label share
falls short of their prior, ``share_c < tolerance * prior_c`` (``tolerance`` 0.9). A class missing from the
confident pseudo-labels is pasted; a class at its prior is not; when no class falls short nothing is pasted and
the step is the mean teacher's plain pseudo-labelling.

:class:`ClassBalanceLogger` (an ignite handler the methods attach) puts the priors, shares, thresholds and how often
SupMix chose each class into ``engine.state.metrics`` at every epoch's end, so the bundles' ``StatsHandler`` logs
them and ``TensorBoardStatsHandler`` writes them, and logs one line about them.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import torch

from medsemiseg.distributed import all_reduce_sum

__all__ = ["ClassBalance", "ClassBalanceLogger", "THRESHOLD_MODES", "flexmatch_mapping"]

logger = logging.getLogger(__name__)

THRESHOLD_MODES = ("fixed", "classwise")


def flexmatch_mapping(beta: torch.Tensor) -> torch.Tensor:
    """FlexMatch's convex mapping ``M(x) = x / (2 - x)`` of a normalised learning status in ``[0, 1]``."""
    return beta / (2.0 - beta)


class ClassBalance:
    """Running class statistics of one training run; see the module docstring.

    Args:
        num_classes: classes including background (class 0).
        tau: the method's global confidence threshold (the highest class-wise threshold).
        momentum: EMA momentum of the statistics (0.99: about the last hundred iterations).
        floor: lowest class-wise threshold.
        tolerance: adaptive SupMix pastes classes with ``share < tolerance * prior``.
    """

    def __init__(self, num_classes: int, tau: float, momentum: float = 0.99, floor: float = 0.5,
                 tolerance: float = 0.9) -> None:
        if not 0.0 <= momentum < 1.0:
            raise ValueError(f"ClassBalance(momentum={momentum}): must be in [0, 1).")
        if not 0.0 <= floor <= tau:
            raise ValueError(f"ClassBalance(floor={floor}): must be in [0, tau={tau}].")
        if not 0.0 < tolerance <= 1.0:
            raise ValueError(f"ClassBalance(tolerance={tolerance}): must be in (0, 1].")
        self.num_classes, self.tau = int(num_classes), float(tau)
        self.momentum, self.floor, self.tolerance = float(momentum), float(floor), float(tolerance)
        k = self.num_classes
        self._sums = {name: torch.zeros(k, dtype=torch.float64) for name in ("prior", "share", "learned")}
        self._weights = {name: 0.0 for name in self._sums}  # bias correction: sum of the EMA weights so far
        self.chosen_counts = torch.zeros(k, dtype=torch.float64)  # adaptive SupMix, this epoch
        self.steps = 0  # adaptive SupMix choices this epoch

    # -- statistics -----------------------------------------------------------------------------------
    def _update(self, name: str, value: torch.Tensor) -> None:
        m = self.momentum
        self._sums[name] = m * self._sums[name] + (1 - m) * value.detach().to("cpu", torch.float64)
        self._weights[name] = m * self._weights[name] + (1 - m)

    def _get(self, name: str) -> torch.Tensor:
        w = self._weights[name]
        return self._sums[name] / w if w > 0 else torch.full((self.num_classes,), float("nan"), dtype=torch.float64)

    @property
    def prior(self) -> torch.Tensor:
        return self._get("prior")

    @property
    def share(self) -> torch.Tensor:
        return self._get("share")

    @property
    def learned(self) -> torch.Tensor:
        return self._get("learned")

    def _counts(self, labels: torch.Tensor, where: torch.Tensor | None = None) -> torch.Tensor:
        lab = labels.long().reshape(-1)
        if where is not None:
            lab = lab[where.reshape(-1)]
        return torch.bincount(lab.clamp(0, self.num_classes - 1), minlength=self.num_classes).to(torch.float64)

    def observe_labels(self, labels: torch.Tensor) -> None:
        """A labelled batch's ground truth ``(B, [1,] X, Y)``: updates the class prior (counted over every
        process's batch under ``torchrun``, so every process keeps the same statistics)."""
        counts = all_reduce_sum(self._counts(labels))
        if counts.sum() > 0:
            self._update("prior", counts / counts.sum())

    def observe_pseudo_labels(self, plabel: torch.Tensor, confident: torch.Tensor, conf: torch.Tensor | None = None
                              ) -> None:
        """An unlabelled batch's pseudo-labels, which of them the method trains on (``confident``: ``share``) and
        their confidence (``learned`` counts ``conf >= tau``, as FlexMatch; without ``conf``, ``confident``);
        counted over every process's batch under ``torchrun``."""
        counts = self._counts(plabel, confident)
        learned = counts if conf is None else self._counts(plabel, conf >= self.tau)
        total = torch.full((1,), float(plabel.numel()), dtype=counts.dtype, device=counts.device)
        k = self.num_classes
        counts, learned, total = all_reduce_sum(torch.cat([counts, learned, total])).split([k, k, 1])
        total = float(total)
        if total > 0:
            self._update("learned", learned / total)
        if counts.sum() > 0:
            self._update("share", counts / counts.sum())

    # -- what they decide -------------------------------------------------------------------------------
    def thresholds(self) -> torch.Tensor:
        """Class-wise thresholds ``(K,)`` (FlexMatch with the prior normalisation of the module docstring); ``tau``
        for every class before any statistics exist."""
        prior, learned = self.prior, self.learned
        if torch.isnan(prior).any() or torch.isnan(learned).any():
            return torch.full((self.num_classes,), self.tau, dtype=torch.float64)
        status = torch.where(prior > 0, (learned / prior.clamp_min(1e-12)).clamp(max=1.0), torch.ones_like(prior))
        unused = max(0.0, 1.0 - float(learned.sum()))
        scale = max(float(status.max()), unused)
        beta = status / scale if scale > 0 else torch.ones_like(status)
        return (self.tau * flexmatch_mapping(beta)).clamp(min=self.floor)

    def confident(self, conf: torch.Tensor, plabel: torch.Tensor) -> torch.Tensor:
        """Pixels whose confidence reaches their pseudo-label's class-wise threshold."""
        thr = self.thresholds().to(device=conf.device, dtype=conf.dtype)
        return conf >= thr[plabel.long().clamp(0, self.num_classes - 1)]

    def short_classes(self) -> torch.Tensor:
        """Bool ``(K,)``: foreground classes whose confident pseudo-label share is below ``tolerance`` x their prior
        (every foreground class the labelled data has, before any pseudo-label statistics exist)."""
        prior, share = self.prior, self.share
        if torch.isnan(prior).any():
            return torch.zeros(self.num_classes, dtype=torch.bool)
        share = torch.where(torch.isnan(share), torch.zeros_like(share), share)
        short = (prior > 0) & (share < self.tolerance * prior)
        short[0] = False  # background is never pasted
        return short

    def choose(self, present: torch.Tensor) -> torch.Tensor:
        """Adaptive SupMix's classes for a batch, Bool ``(B, K)``: :meth:`short_classes` that each labelled image
        holds (``present``, Bool ``(B, K)``); counted for the epoch's log."""
        short = self.short_classes().to(present.device)
        self.chosen_counts += short.to("cpu", torch.float64)
        self.steps += 1
        return present & short[None]

    # -- checkpoints ------------------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        return {"sums": {k: v.clone() for k, v in self._sums.items()}, "weights": dict(self._weights),
                "chosen_counts": self.chosen_counts.clone(), "steps": self.steps}

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        self._sums = {k: torch.as_tensor(v, dtype=torch.float64).clone() for k, v in state["sums"].items()}
        self._weights = {k: float(v) for k, v in state["weights"].items()}
        self.chosen_counts = torch.as_tensor(state["chosen_counts"], dtype=torch.float64).clone()
        self.steps = int(state["steps"])


class ClassBalanceLogger:
    """At each epoch's last iteration: the class statistics and thresholds into ``engine.state.metrics``
    (``class/prior/<k>``, ``class/pl_share/<k>``, ``class/threshold/<k>``, ``class/supmix_chosen/<k>``: the share of
    the epoch's iterations adaptive SupMix pasted class ``k``) and one log line; the epoch's choice counts restart.

    The last iteration rather than ``EPOCH_COMPLETED``: the method's handlers are attached after the bundle's, and
    the bundle's ``StatsHandler`` / ``TensorBoardStatsHandler`` write ``engine.state.metrics`` at ``EPOCH_COMPLETED``,
    so this epoch's values must be there before it."""

    def __init__(self, balance: ClassBalance, thresholds: bool, adaptive: bool) -> None:
        self.balance, self.log_thresholds, self.log_choices = balance, bool(thresholds), bool(adaptive)

    def attach(self, engine: Any) -> None:
        from ignite.engine import Events

        engine.add_event_handler(Events.ITERATION_COMPLETED, self._at_epoch_end)

    def _at_epoch_end(self, engine: Any) -> None:
        length = engine.state.epoch_length
        if length and engine.state.iteration % length == 0:
            self(engine)

    def __call__(self, engine: Any) -> None:
        b = self.balance
        values: dict[str, torch.Tensor] = {"prior": b.prior, "pl_share": b.share}
        if self.log_thresholds:
            values["threshold"] = b.thresholds()
        if self.log_choices:
            values["supmix_chosen"] = b.chosen_counts / max(b.steps, 1)
        for name, vec in values.items():
            for k, v in enumerate(vec.tolist()):
                engine.state.metrics[f"class/{name}/{k}"] = float(v)

        def fmt(vec: torch.Tensor) -> str:
            return "[" + ", ".join("nan" if v != v else f"{v:.3f}" for v in vec.tolist()) + "]"

        line = "; ".join(f"{name} {fmt(vec)}" for name, vec in values.items())
        logger.info(f"class balance, epoch {int(engine.state.epoch)} (per class 0..{b.num_classes - 1}): {line}")
        b.chosen_counts.zero_()
        b.steps = 0
