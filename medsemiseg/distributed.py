"""Training in several processes (``torchrun``): which process this is, the few collectives the training pieces
need, and the segmentation network wrapped in ``DistributedDataParallel``.

Without an initialised process group of two or more processes (a plain ``python -m monai.bundle run``, a test, a
notebook) every helper is the single-process case: rank 0 of 1, a reduction returns its input unchanged, a
broadcast does nothing. The pieces that call them (the discriminator step, the class statistics, the random-state
record) therefore have one code path for both.

:class:`DistributedNetwork` is ``DistributedDataParallel`` around a network of the package contract
(``encode`` / ``decode`` / ``forward``): the methods call ``network.encode(x)``, ``network.decode(feats, size)`` and
``network(x)`` several times per iteration, and each of those goes through DDP's ``forward``, so the one backward of
the iteration averages every gradient over the processes. Its ``state_dict`` is the wrapped network's (no
``module.`` prefix), so checkpoints and ``model.pt`` load into a single-process network unchanged.
"""

from __future__ import annotations

import copy
import inspect
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

__all__ = ["is_distributed", "rank", "world_size", "is_main", "all_reduce_sum", "all_reduce_mean_", "broadcast_",
           "all_gather_object", "DistributedNetwork"]


def is_distributed() -> bool:
    """Whether this process is one of two or more in an initialised process group."""
    return dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1


def rank() -> int:
    """This process's rank (0 without a process group)."""
    return dist.get_rank() if dist.is_available() and dist.is_initialized() else 0


def world_size() -> int:
    """The number of processes (1 without a process group)."""
    return dist.get_world_size() if dist.is_available() and dist.is_initialized() else 1


def is_main() -> bool:
    """Whether this is the process that writes (rank 0, or the only process)."""
    return rank() == 0


def all_reduce_sum(tensor: torch.Tensor) -> torch.Tensor:
    """The sum of ``tensor`` over the processes (a new tensor; ``tensor`` itself without a process group)."""
    if not is_distributed():
        return tensor
    out = tensor.clone()
    dist.all_reduce(out, op=dist.ReduceOp.SUM)
    return out


def _flat_in_place(tensors: Iterable[torch.Tensor], collective: Callable[[torch.Tensor], Any]) -> None:
    """Run ``collective`` on the tensors as one flat buffer per device and dtype, and copy the result back."""
    groups: dict[tuple, list[torch.Tensor]] = {}
    for t in tensors:
        groups.setdefault((t.device, t.dtype), []).append(t)
    for group in groups.values():
        flat = torch.cat([t.detach().reshape(-1) for t in group])
        collective(flat)
        offset = 0
        for t in group:
            t.detach().copy_(flat[offset:offset + t.numel()].view_as(t))
            offset += t.numel()


def all_reduce_mean_(tensors: Iterable[torch.Tensor]) -> None:
    """Replace every tensor (in place) by its mean over the processes: one flat all-reduce per device and dtype."""
    if is_distributed():
        n = world_size()
        _flat_in_place(tensors, lambda flat: (dist.all_reduce(flat, op=dist.ReduceOp.SUM), flat.div_(n)))


def broadcast_(tensors: Iterable[torch.Tensor], src: int = 0) -> None:
    """Overwrite every tensor (in place) with process ``src``'s."""
    if is_distributed():
        _flat_in_place(tensors, lambda flat: dist.broadcast(flat, src=src))


def all_gather_object(obj: Any) -> list[Any]:
    """Every process's ``obj`` (picklable), in rank order; ``[obj]`` without a process group."""
    if not is_distributed():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out


#: DDP's switch for not broadcasting rank 0's buffers before every pass: ``forward_sync_buffers`` in the PyTorch
#: versions that deprecate ``broadcast_buffers``
_NO_BUFFER_SYNC_AT_EACH_PASS = ({"forward_sync_buffers": False}
                                if "forward_sync_buffers" in inspect.signature(DistributedDataParallel).parameters
                                else {"broadcast_buffers": False})


class _Calls(nn.Module):
    """What DDP wraps: the network, whose ``forward(*args, _call=name)`` calls ``network.<name>`` (``forward``,
    ``encode`` or ``decode``), so that each of those passes goes through DDP. Its state is the network's own.
    With ``compile`` (:func:`medsemiseg.bundle.speed.training_network`) the calls go to the network's compiled
    view inside DDP (``_compiled``, held outside the module tree), as PyTorch advises: compile the module DDP wraps."""

    def __init__(self, network: nn.Module) -> None:
        super().__init__()
        self.network = network

    def forward(self, *args: Any, _call: str = "forward", **kwargs: Any) -> Any:
        compiled = self.__dict__.get("_compiled")
        return getattr(self.network if compiled is None else compiled, _call)(*args, **kwargs)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.network.load_state_dict(*args, **kwargs)


class DistributedNetwork(DistributedDataParallel):
    """``DistributedDataParallel`` around a network with ``encode`` / ``decode`` / ``forward``.

    - Every pass with autograd on goes through DDP, so the iteration's backward averages the gradients over the
      processes; passes without autograd (validation, the features SUFD reads without gradient) call the network
      directly and involve no other process.
    - ``state_dict`` / ``load_state_dict`` are the network's (checkpoints are those of a single-process run), a
      deep copy is a copy of the network (the EMA teacher), and other public attributes (``feature_channels``,
      ``encoder_channels``) are the network's.
    - Buffers are not broadcast at each pass; :meth:`sync_buffers`, which the trainer calls after every optimiser
      step, averages the floating-point ones (BatchNorm's running statistics) over the processes instead, so every
      process holds the same model after every step.

    Args:
        network: the network, already on this process's device.
        device_ids: ``[device]`` on CUDA, ``None`` on CPU.
        sync_batchnorm: convert BatchNorm layers to ``SyncBatchNorm`` first (batch statistics over all processes'
            batches; CUDA only).
        find_unused_parameters: DDP's option, for a method that leaves some parameters without gradient.
    """

    def __init__(self, network: nn.Module, device_ids: Sequence[Any] | None = None, sync_batchnorm: bool = False,
                 find_unused_parameters: bool = False) -> None:
        if sync_batchnorm:
            network = nn.SyncBatchNorm.convert_sync_batchnorm(network)
        super().__init__(_Calls(network), device_ids=device_ids, find_unused_parameters=find_unused_parameters,
                         **_NO_BUFFER_SYNC_AT_EACH_PASS)
        broadcast_(self.network.buffers())  # rank 0's buffers everywhere, as DDP does for the parameters

    @property
    def network(self) -> nn.Module:
        """The wrapped network."""
        return self.module.network

    def forward(self, *args: Any, **kwargs: Any) -> Any:
        if not torch.is_grad_enabled():
            return self.network(*args, **kwargs)
        return super().forward(*args, **kwargs)

    def encode(self, x: torch.Tensor) -> Any:
        if not torch.is_grad_enabled():
            return self.network.encode(x)
        return super().forward(x, _call="encode")

    def decode(self, feats: Sequence[torch.Tensor], spatial_size: Sequence[int] | None = None) -> torch.Tensor:
        if not torch.is_grad_enabled():
            return self.network.decode(feats, spatial_size)
        return super().forward(feats, spatial_size, _call="decode")

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            calls = self.__dict__.get("_modules", {}).get("module")
            if calls is None or name.startswith("_"):
                raise
            return getattr(calls.network, name)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.network.load_state_dict(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> nn.Module:
        return copy.deepcopy(self.network, memo)

    @torch.no_grad()
    def sync_buffers(self) -> None:
        """Average the network's floating-point buffers over the processes (integer ones, such as BatchNorm's
        ``num_batches_tracked``, are equal on every process already)."""
        all_reduce_mean_(b for b in self.network.buffers() if b.is_floating_point())
