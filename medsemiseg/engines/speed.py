"""How the training step runs on the hardware: ``torch.compile``, CUDA graphs, channels-last and the AMP dtype.

The engine's side of the bundles' ``compile``, ``compile_mode``, ``channels_last`` and ``amp_dtype`` settings
(:mod:`medsemiseg.bundle.speed` reads them):

- :func:`~medsemiseg.bundle.speed.training_network` returns what the trainer and the method call: the network
  itself when nothing is asked (eager, the default), else a :class:`CompiledNetwork` around it. The network given stays the one that is
  checkpointed, validated, given to the optimiser and (in several processes) wrapped in DDP, so ``state_dict`` keys,
  ``model.pt``, resume and multi-GPU training are those of an eager run;
- :func:`amp_dtype` reads the trainer's ``amp_dtype``: ``float16`` (autocast + ``GradScaler``, the default)
  or ``bfloat16`` (autocast without a scaler: bfloat16 has float32's exponent range, so gradients do not underflow).

``compile_mode`` ``"auto"`` is ``"reduce-overhead"`` on CUDA (CUDA graphs: a fixed-shape step replayed with one
launch instead of one per kernel) and torch's ``"default"`` elsewhere (on a CPU ``reduce-overhead`` would only add
its bookkeeping: CUDA graphs skip CPU tensors).
"""

from __future__ import annotations

import copy
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

__all__ = ["AMP_DTYPES", "COMPILE_MODES", "CPU_OPTIONS", "CompiledNetwork", "amp_dtype", "unwrap"]

#: ``amp_dtype`` spellings -> autocast dtype
AMP_DTYPES = {"float16": torch.float16, "fp16": torch.float16, "half": torch.float16,
              "bfloat16": torch.bfloat16, "bf16": torch.bfloat16}

#: ``compile_mode`` values: torch.compile's modes, and ``auto`` (see the module docstring)
COMPILE_MODES = ("auto", "default", "reduce-overhead", "max-autotune", "max-autotune-no-cudagraphs")


#: Inductor options on the CPU: no layout optimisation. With it (torch 2.13), Inductor gives the gradient that
#: reaches MONAI ``UpCat``'s replicate padding channels-last strides, the eager ``replication_pad2d_backward`` it
#: falls back to answers in that layout while its meta kernel promised a contiguous one, and the first backward
#: stops with ``AssertionError: expected size 32==32, stride 1==4096`` (this package's UNet, any image size).
CPU_OPTIONS = {"layout_optimization": False}


def amp_dtype(value: Any) -> torch.dtype:
    """The trainer's ``amp_dtype`` argument as a torch dtype: ``float16`` (``None``) or ``bfloat16``, by dtype or
    name; a ``ValueError`` naming the argument otherwise."""
    if value is None:
        return torch.float16
    if isinstance(value, torch.dtype) and value in AMP_DTYPES.values():
        return value
    name = str(value).strip().lower().removeprefix("torch.")
    if name not in AMP_DTYPES:
        raise ValueError(f"SemiSupervisedTrainer(amp_dtype={value!r}): must be torch.float16 or torch.bfloat16.")
    return AMP_DTYPES[name]


def unwrap(network: nn.Module) -> nn.Module:
    """The network a :class:`CompiledNetwork` wraps (``network`` itself otherwise)."""
    return network.network if isinstance(network, CompiledNetwork) else network


class CompiledNetwork(nn.Module):
    """The training view of a network: its ``forward``, ``encode`` and ``decode`` compiled with ``torch.compile``.

    The methods call ``network(x)``, ``network.encode(x)`` and ``network.decode(feats, size)``; each of those that
    the network has is compiled on its own (bound to the network, so the compiled code reads the network's own
    parameters and buffers and follows its ``train()`` / ``eval()`` mode). The wrapper holds no state of its own:

    - ``state_dict`` / ``load_state_dict`` are the network's (no prefix), so a checkpoint of either loads into an
      eager network;
    - ``parameters()`` / ``buffers()`` are the network's, in its order (the EMA teacher averages them pairwise);
    - a deep copy (the EMA teacher) is a ``CompiledNetwork`` of a deep copy of the network, compiled alike;
    - other attributes (``feature_channels``, ``encoder_channels``, ``sync_buffers`` of a DDP network) are the
      network's.

    Args:
        network: the network (plain, or :class:`medsemiseg.distributed.DistributedNetwork`), on its device.
        compile: compile the calls (``False``: only ``channels_last`` applies, the calls run eagerly).
        mode: ``torch.compile``'s mode (``"reduce-overhead"``: CUDA graphs); ``None`` is torch's default.
        channels_last: convert the network's 4-d parameters and buffers to ``torch.channels_last`` now and every
            4-d input of ``forward`` / ``encode`` before the call (NHWC convolutions: faster on CUDA tensor cores;
            the results are the same up to floating-point summation order).
        dynamic: ``torch.compile``'s ``dynamic`` (``None``: static shapes until a second shape is seen).
        options: Inductor options (``torch.compile(options=...)``); with a ``mode`` they are merged into that mode's
            own options (torch takes one or the other).
    """

    _CALLS = ("forward", "encode", "decode")

    def __init__(self, network: nn.Module, compile: bool = True, mode: str | None = None,
                 channels_last: bool = False, dynamic: bool | None = None, options: dict | None = None) -> None:
        super().__init__()
        if isinstance(network, CompiledNetwork):
            raise TypeError("CompiledNetwork(network=...): the network is compiled already; pass the eager network.")
        self.network = network
        self.options = {"compile": bool(compile), "mode": mode, "channels_last": bool(channels_last),
                        "dynamic": dynamic, "options": dict(options) if options else None}
        if channels_last:
            network.to(memory_format=torch.channels_last)
        how: dict[str, Any] = {"mode": mode}
        if options:
            from torch._inductor import list_mode_options

            how = {"options": {**(list_mode_options(mode) if mode else {}), **options}}
        calls = {}
        for name in self._CALLS:
            fn = getattr(network, name, None)
            if callable(fn):
                calls[name] = torch.compile(fn, dynamic=dynamic, **how) if compile else fn
        # a plain dict (not a module attribute): the calls are the network's own, not sub-modules of this one
        self.__dict__["_calls"] = calls

    def _call(self, name: str, *args: Any, **kwargs: Any) -> Any:
        fn = self.__dict__["_calls"].get(name)
        if fn is None:
            raise AttributeError(f"{type(self.network).__name__} has no {name}(); CompiledNetwork cannot call it.")
        return fn(*args, **kwargs)

    def _nhwc(self, x: Any) -> Any:
        if self.options["channels_last"] and isinstance(x, torch.Tensor) and x.dim() == 4:
            return x.contiguous(memory_format=torch.channels_last)
        return x

    def forward(self, x: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        return self._call("forward", self._nhwc(x), *args, **kwargs)

    def encode(self, x: torch.Tensor) -> Any:
        return self._call("encode", self._nhwc(x))

    def decode(self, feats: Sequence[torch.Tensor], spatial_size: Sequence[int] | None = None) -> torch.Tensor:
        return self._call("decode", feats, spatial_size)

    def begin_step(self) -> None:
        """Called by the trainer before each iteration: with CUDA graphs, the outputs of the previous iteration's
        replays may be overwritten from here on (``torch.compiler.cudagraph_mark_step_begin``)."""
        if self.options["compile"] and self.options["mode"] in ("reduce-overhead", "max-autotune"):
            torch.compiler.cudagraph_mark_step_begin()

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            inner = self.__dict__.get("_modules", {}).get("network")
            if inner is None or name.startswith("_"):
                raise
            return getattr(inner, name)

    def state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.network.state_dict(*args, **kwargs)

    def load_state_dict(self, *args: Any, **kwargs: Any) -> Any:
        return self.network.load_state_dict(*args, **kwargs)

    def __deepcopy__(self, memo: dict) -> CompiledNetwork:
        # the channels-last conversion is done (and deep-copied); compiling the copy binds its calls to the copy
        return CompiledNetwork(copy.deepcopy(self.network, memo), compile=self.options["compile"],
                               mode=self.options["mode"], channels_last=False, dynamic=self.options["dynamic"],
                               options=self.options["options"])


