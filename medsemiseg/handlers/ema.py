"""Mean-teacher EMA of the student network, as an ignite/MONAI event handler.

ClassMix (``trainSSL.py``) and the paper's SupMix framework predict pseudo-labels with a *teacher* whose weights
are an exponential moving average of the student's, updated after every optimiser step with
``alpha = min(1 - 1 / (step + 1), alpha_max)`` (the "true average" warm-up: the teacher starts as an exact copy
and averages uniformly until ``1/(1-alpha_max)`` steps have passed).

The handler owns the teacher copy (eval mode, ``requires_grad=False``), updates it on ``ITERATION_COMPLETED``
(after the trainer's optimiser step) and has ``state_dict``/``load_state_dict`` so that a MONAI
``CheckpointSaver(save_dict={"teacher": ema, ...})`` saves it and ``CheckpointLoader`` resumes it.

Buffers: ClassMix averages parameters only and keeps its teacher in *train* mode (it normalises with each
unlabelled batch's statistics). Our teacher runs in eval mode, so its pseudo-labels do not depend on which images
share a batch; BatchNorm then uses running statistics, so floating-point buffers (BN running mean/var) are averaged
with the same ``alpha`` and integer buffers (``num_batches_tracked``) copied, as timm's ``ModelEmaV2`` does;
otherwise the teacher's BN statistics would stay at their initial values.
"""

from __future__ import annotations

import copy

import torch
from ignite.engine import Engine, Events

__all__ = ["EMATeacher"]


class EMATeacher:
    """Exponential-moving-average teacher of ``network``.

    Args:
        network: the student (the trainer's network). A deep copy is taken now; it follows the student to its
            device on the first update/forward if the student is moved later.
        alpha: the maximum EMA decay (ClassMix: 0.99).
        true_average_warmup: use ``min(1 - 1/(step+1), alpha)`` (ClassMix) instead of a constant ``alpha``.
        event: the ignite event after which to update (default ``ITERATION_COMPLETED``: after the optimiser step).
    """

    def __init__(
        self,
        network: torch.nn.Module,
        alpha: float = 0.99,
        true_average_warmup: bool = True,
        event: Events = Events.ITERATION_COMPLETED,
    ) -> None:
        if not 0.0 <= alpha <= 1.0:
            raise ValueError(f"EMATeacher(alpha=...) must be in [0, 1], got {alpha}.")
        self.student = network
        self.alpha = float(alpha)
        self.true_average_warmup = bool(true_average_warmup)
        self.event = event
        self.teacher = copy.deepcopy(network)
        self.teacher.eval()
        self.teacher.requires_grad_(False)
        self.num_updates = 0

    def attach(self, engine: Engine) -> None:
        if not engine.has_event_handler(self, self.event):
            engine.add_event_handler(self.event, self)

    def __call__(self, engine: Engine) -> None:
        self.update(engine.state.iteration - 1)

    def current_alpha(self, step: int) -> float:
        """The decay used for optimiser step ``step`` (0-based), as in ClassMix's ``update_ema_variables``."""
        if self.true_average_warmup:
            return min(1.0 - 1.0 / (step + 1), self.alpha)
        return self.alpha

    def _follow_device(self) -> None:
        sp = next(self.student.parameters(), None)
        tp = next(self.teacher.parameters(), None)
        if sp is not None and tp is not None and sp.device != tp.device:
            self.teacher.to(sp.device)

    @torch.no_grad()
    def update(self, step: int | None = None) -> None:
        """Move the teacher toward the student: ``t = a * t + (1 - a) * s``."""
        self._follow_device()
        a = self.current_alpha(self.num_updates if step is None else step)
        t_params = list(self.teacher.parameters())
        s_params = [p.detach() for p in self.student.parameters()]
        if len(t_params) != len(s_params):
            raise RuntimeError("EMATeacher: the student's parameter list changed since the teacher was copied.")
        if t_params:
            torch._foreach_mul_(t_params, a)
            torch._foreach_add_(t_params, s_params, alpha=1.0 - a)
        for tb, sb in zip(self.teacher.buffers(), self.student.buffers()):
            if tb.dtype.is_floating_point:
                tb.mul_(a).add_(sb.detach(), alpha=1.0 - a)
            else:
                tb.copy_(sb)
        self.num_updates += 1

    @torch.no_grad()
    def predict(self, x: torch.Tensor, train_mode: bool = False) -> torch.Tensor:
        """Teacher logits for ``x`` without grad: in eval mode (BatchNorm on the averaged running statistics), or with
        ``train_mode`` in train mode (BatchNorm on ``x``'s own statistics, as ClassMix's ``trainSSL.py`` keeps its
        teacher; the teacher is back in eval mode afterwards)."""
        self._follow_device()
        self.teacher.train(bool(train_mode))
        try:
            return self.teacher(x)
        finally:
            self.teacher.eval()

    def state_dict(self) -> dict:
        return {"teacher": self.teacher.state_dict(), "num_updates": self.num_updates}

    def load_state_dict(self, state: dict) -> None:
        if "teacher" not in state:
            raise KeyError(
                "EMATeacher.load_state_dict: the checkpoint entry has no 'teacher' key; was it saved from an "
                "EMATeacher (CheckpointSaver save_dict={'teacher': ema})?"
            )
        self.teacher.load_state_dict(state["teacher"])
        self.num_updates = int(state.get("num_updates", 0))
