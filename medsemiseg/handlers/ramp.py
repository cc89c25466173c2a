"""Ramp-up of the unsupervised loss weight, as an ignite/MONAI event handler.

Pseudo-labels from an untrained network are noise; mean-teacher style methods therefore often raise the weight of
the unlabelled term from 0 to its final value over the first iterations (Laine & Aila's sigmoid ramp-up
``exp(-5 (1 - t)^2)``). ClassMix's own default is no ramp-up (weight 1 from the start), so the methods' default is
off (``rampup_iters=0``); this handler is added only when a method is asked for a ramp.

The handler sets an attribute of the method (``unsup_scale``) at ``ITERATION_STARTED`` from the engine's
iteration counter, so it holds no state of its own and a resumed run picks up the right value.
"""

from __future__ import annotations

import math

from ignite.engine import Engine, Events

__all__ = ["RampUp", "ramp_value"]


def ramp_value(iteration: int, rampup_iters: int, shape: str = "sigmoid", start_iter: int = 0) -> float:
    """Fraction in ``[0, 1]`` reached at (0-based) ``iteration``.

    ``shape``: ``"sigmoid"`` (``exp(-5 (1-t)^2)``), ``"linear"`` (``t``) or ``"step"`` (0 until the end, then 1).
    Before ``start_iter`` the value is 0; with ``rampup_iters <= 0`` it is 1 from ``start_iter`` on.
    """
    if iteration < start_iter:
        return 0.0
    if rampup_iters <= 0:
        return 1.0
    t = min(max((iteration - start_iter) / float(rampup_iters), 0.0), 1.0)
    if shape == "sigmoid":
        return float(math.exp(-5.0 * (1.0 - t) ** 2))
    if shape == "linear":
        return t
    if shape == "step":
        return 1.0 if t >= 1.0 else 0.0
    raise ValueError(f"ramp shape must be 'sigmoid', 'linear' or 'step', got {shape!r}.")


class RampUp:
    """Set ``setattr(target, attr, final_value * ramp_value(iteration))`` before every iteration.

    Args:
        target: object to update (a method; its unsupervised term is multiplied by ``target.<attr>``).
        rampup_iters: iterations over which the value goes from 0 to ``final_value``.
        final_value: value after the ramp (the method's weight is usually folded in elsewhere, so 1.0).
        attr: attribute name (default ``"unsup_scale"``).
        shape: ``"sigmoid"`` | ``"linear"`` | ``"step"``.
        start_iter: iterations with value 0 before the ramp starts.
    """

    def __init__(
        self,
        target: object,
        rampup_iters: int,
        final_value: float = 1.0,
        attr: str = "unsup_scale",
        shape: str = "sigmoid",
        start_iter: int = 0,
    ) -> None:
        ramp_value(0, 1, shape)  # validate the shape now, not at the first iteration
        self.target = target
        self.rampup_iters = int(rampup_iters)
        self.final_value = float(final_value)
        self.attr = attr
        self.shape = shape
        self.start_iter = int(start_iter)

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, Events.ITERATION_STARTED):
            engine.add_event_handler(Events.ITERATION_STARTED, self)

    def __call__(self, engine: Engine) -> None:
        value = self.final_value * ramp_value(engine.state.iteration - 1, self.rampup_iters, self.shape, self.start_iter)
        setattr(self.target, self.attr, value)
