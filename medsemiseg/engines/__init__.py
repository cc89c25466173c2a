"""Training engines: :class:`SemiSupervisedTrainer`, a MONAI ``SupervisedTrainer`` with an unlabelled stream.

:func:`from_engine_scalars` is an ``output_transform`` for stock ``StatsHandler``/``TensorBoardStatsHandler`` that
logs every scalar term a method reports (``loss``, ``loss_sup``, ``loss_unsup``, ``mask_ratio``, ``loss_d``...),
whether or not the trainer decollated its output.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from .trainer import NonFiniteLossError, SemiSupervisedTrainer

__all__ = ["SemiSupervisedTrainer", "NonFiniteLossError", "from_engine_scalars"]

_SKIP = ("image", "label", "pred")


def from_engine_scalars(output: Any, keys: Sequence[str] | None = None) -> dict[str, float]:
    """``{name: float}`` of the scalar entries of ``engine.state.output`` (first item when decollated).

    Use as ``StatsHandler(output_transform=medsemiseg.engines.from_engine_scalars, name=...)`` or, in a bundle,
    ``"output_transform": "$medsemiseg.engines.from_engine_scalars"``. ``keys`` restricts the names.
    """
    item = output[0] if isinstance(output, (list, tuple)) and output else output
    if not isinstance(item, dict):
        return {}
    out: dict[str, float] = {}
    for k, v in item.items():
        if k in _SKIP or (keys is not None and k not in keys):
            continue
        if isinstance(v, torch.Tensor) and v.numel() == 1:
            out[k] = float(v.detach())
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
    return out
