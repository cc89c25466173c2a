"""The SUFD discriminator's own optimisation step, as a MONAI/ignite event handler.

SUFD (Sup-Unsup Feature Discriminator, Mano et al.) trains a discriminator ``D`` to tell feature maps of labelled
images (target 1) from those of unlabelled images (target 0), while the segmentation network is trained (by the
``SUFD`` method's adversarial term) to make its unlabelled features look labelled. The two updates are kept apart:

- the segmentation optimiser holds only the network's parameters, and the adversarial forward runs with ``D``'s
  parameters frozen, so the seg backward computes no gradient for ``D``;
- this handler then steps ``D`` on **detached** features the method left in ``engine.state.method_output``
  (``"feat_l"``, ``"feat_u"``), so ``D``'s step never reaches the segmentation network. It clears ``D``'s gradients
  before its own backward.

It runs on MONAI's ``IterationEvents.MODEL_COMPLETED`` (after the segmentation optimiser step, before
``ITERATION_COMPLETED``) so that ``loss_d`` and ``d_acc`` are already in ``engine.state.output`` when stock
``StatsHandler``/``TensorBoardStatsHandler`` log the iteration.

``state_dict``/``load_state_dict`` cover ``D`` and its optimiser, so a ``CheckpointSaver(save_dict={"sufd": step})``
resumes both.

Under ``torchrun`` (several processes) ``D`` stays one model: when the run starts every process takes rank 0's
``D``, and each step averages ``D``'s gradients over the processes before the optimiser steps, so every process
makes the same update (:mod:`medsemiseg.distributed`; nothing changes in a single process).
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F
from ignite.engine import Engine, Events
from monai.engines.utils import IterationEvents

from medsemiseg.distributed import all_reduce_mean_, broadcast_

__all__ = ["DiscriminatorStep", "discriminator_loss", "add_to_output"]


def add_to_output(engine: Engine, key: str, value) -> None:
    """Add ``key: value`` to ``engine.state.output`` whether it is a dict or MONAI's decollated list of dicts."""
    out = engine.state.output
    if isinstance(out, dict):
        out[key] = value
    elif isinstance(out, (list, tuple)):
        for item in out:
            if isinstance(item, dict):
                item[key] = value


def discriminator_loss(
    discriminator: torch.nn.Module, feat_l: torch.Tensor, feat_u: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """``BCE(D(f_l), 1) + BCE(D(f_u), 0)`` and D's balanced accuracy, both 0-dim tensors.

    The accuracy (logit > 0 means "labelled") is the mean of the accuracies on the labelled and on the unlabelled
    patches, as the loss weighs the two sets equally: with unequal batches (3 labelled fundus photographs, 4
    unlabelled) a plain patch accuracy would reward calling everything "unlabelled", and 0.5 would not be chance.
    """
    logit_l = discriminator(feat_l)
    logit_u = discriminator(feat_u)
    loss = F.binary_cross_entropy_with_logits(logit_l, torch.ones_like(logit_l)) + F.binary_cross_entropy_with_logits(
        logit_u, torch.zeros_like(logit_u)
    )
    with torch.no_grad():
        acc = 0.5 * ((logit_l > 0).float().mean() + (logit_u <= 0).float().mean())
    return loss, acc


class DiscriminatorStep:
    """One Adam step of the SUFD discriminator per training iteration.

    Args:
        discriminator: ``FeatureDiscriminator`` (or any module mapping features to per-patch logits).
        optimizer: its optimiser; default ``Adam(lr, betas)`` over ``discriminator.parameters()``.
        lr: discriminator learning rate (default 1e-4, adversarial-segmentation practice).
        betas: Adam betas (default (0.9, 0.99)).
        feature_keys: keys of the detached labelled / unlabelled features in ``engine.state.method_output``.
        start_iter: iterations (1-based count) before which ``D`` is not trained.
    """

    def __init__(
        self,
        discriminator: torch.nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        lr: float = 1e-4,
        betas: Sequence[float] = (0.9, 0.99),
        feature_keys: Sequence[str] = ("feat_l", "feat_u"),
        start_iter: int = 0,
    ) -> None:
        self.discriminator = discriminator
        self.optimizer = (
            optimizer
            if optimizer is not None
            else torch.optim.Adam(discriminator.parameters(), lr=float(lr), betas=tuple(float(b) for b in betas))
        )
        if len(feature_keys) != 2:
            raise ValueError(f"DiscriminatorStep(feature_keys=...) needs two keys (labelled, unlabelled), got {feature_keys}.")
        self.feature_keys = tuple(feature_keys)
        self.start_iter = int(start_iter)
        self.last: dict[str, float] = {}

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, IterationEvents.MODEL_COMPLETED):
            engine.add_event_handler(IterationEvents.MODEL_COMPLETED, self)
            # after a resume's checkpoint loading (attached before the method's handlers), before the first step
            engine.add_event_handler(Events.STARTED, self.take_rank0_discriminator)

    def take_rank0_discriminator(self, _engine: Engine | None = None) -> None:
        """Every process's ``D`` becomes rank 0's (no-op in a single process)."""
        broadcast_([*self.discriminator.parameters(), *self.discriminator.buffers()])

    def _features(self, engine: Engine) -> tuple[torch.Tensor, torch.Tensor]:
        source = getattr(engine.state, "method_output", None)
        if not isinstance(source, dict):
            source = engine.state.output if isinstance(engine.state.output, dict) else {}
        missing = [k for k in self.feature_keys if k not in source]
        if missing:
            raise KeyError(
                f"DiscriminatorStep: features {missing} not found in engine.state.method_output; the training method "
                "must return them (use the SUFD method, medsemiseg.methods.SUFD, which does)."
            )
        return source[self.feature_keys[0]], source[self.feature_keys[1]]

    def step(self, feat_l: torch.Tensor, feat_u: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Train ``D`` once on (detached, float32) features; returns (loss, accuracy) before the step."""
        feat_l = feat_l.detach().float()
        feat_u = feat_u.detach().float()
        p = next(self.discriminator.parameters(), None)
        if p is not None and p.device != feat_l.device:
            self.discriminator.to(feat_l.device)
        self.discriminator.train()
        # no requires_grad_(True) here: the SUFD method's adversarial forward freezes D only inside a context that
        # restores each parameter's own flag, so forcing them on would only undo a layer a user froze on purpose
        self.optimizer.zero_grad(set_to_none=True)  # also drops anything the adversarial term may have left
        loss, acc = discriminator_loss(self.discriminator, feat_l, feat_u)
        loss.backward()
        all_reduce_mean_(p.grad for p in self.discriminator.parameters() if p.grad is not None)
        self.optimizer.step()
        return loss.detach(), acc

    def __call__(self, engine: Engine) -> None:
        if engine.state.iteration <= self.start_iter:
            return
        feat_l, feat_u = self._features(engine)
        loss, acc = self.step(feat_l, feat_u)
        self.last = {"loss_d": loss, "d_acc": acc}
        add_to_output(engine, "loss_d", loss)
        add_to_output(engine, "d_acc", acc)

    def state_dict(self) -> dict:
        return {"discriminator": self.discriminator.state_dict(), "optimizer": self.optimizer.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        for key in ("discriminator", "optimizer"):
            if key not in state:
                raise KeyError(
                    f"DiscriminatorStep.load_state_dict: checkpoint entry lacks {key!r}; was it saved from a "
                    "DiscriminatorStep (CheckpointSaver save_dict={'sufd': step})?"
                )
        self.discriminator.load_state_dict(state["discriminator"])
        self.optimizer.load_state_dict(state["optimizer"])
