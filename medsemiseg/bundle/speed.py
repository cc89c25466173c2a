"""The bundles' speed settings, read for the engine: ``compile``, ``compile_mode``, ``channels_last``, ``amp_dtype``.

:func:`training_network` is the bundles' ``train_network``: the network itself when nothing is asked (eager, the
default), else a :class:`~medsemiseg.engines.speed.CompiledNetwork` around it (compiled inside DDP under torchrun).
:func:`amp_kwargs` gives the trainers and evaluators their ``amp_kwargs``. A wrong value is a
:class:`~medsemiseg.bundle.settings.BundleConfigError` naming the key and the fix.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from medsemiseg.engines.speed import COMPILE_MODES, CPU_OPTIONS, CompiledNetwork
from medsemiseg.engines.speed import amp_dtype as engine_amp_dtype

__all__ = ["amp_dtype", "amp_kwargs", "compile_mode", "training_network"]


def amp_dtype(value: Any, key: str = "amp_dtype") -> torch.dtype:
    """``amp_dtype`` as a torch dtype: ``float16`` (default when empty) or ``bfloat16``
    (:func:`medsemiseg.engines.speed.amp_dtype` reads it); else an error naming ``key``."""
    from medsemiseg.bundle.settings import BundleConfigError, is_empty

    try:
        return engine_amp_dtype(None if is_empty(value) else value)
    except ValueError:
        raise BundleConfigError(f"{key} must be float16 or bfloat16, got {value!r} (e.g. --{key} bfloat16).") from None


def amp_kwargs(value: Any, key: str = "amp_dtype") -> dict:
    """The ``amp_kwargs`` of MONAI's trainers and evaluators for ``amp_dtype`` (``{"dtype": ...}``)."""
    return {"dtype": amp_dtype(value, key)}


def compile_mode(value: Any, device: Any, key: str = "compile_mode") -> str:
    """``compile_mode`` for ``device``: ``auto`` (or empty) is ``reduce-overhead`` on CUDA, ``default`` elsewhere."""
    from medsemiseg.bundle.settings import BundleConfigError, is_empty

    mode = "auto" if is_empty(value) else str(value).strip().lower()
    if mode not in COMPILE_MODES:
        raise BundleConfigError(f"{key} must be one of {', '.join(COMPILE_MODES)}, got {value!r} (e.g. --{key} auto).")
    if mode == "auto":
        return "reduce-overhead" if torch.device(device).type == "cuda" else "default"
    return mode


def training_network(network: nn.Module, device: Any = "cpu", compile: Any = False, mode: Any = None,
                     channels_last: Any = False) -> nn.Module:
    """What the trainer and the method call: ``network`` itself (eager, nothing asked), else a
    :class:`CompiledNetwork` around it; a :class:`~medsemiseg.distributed.DistributedNetwork` (``torchrun``) is
    returned itself, its DDP passes running a :class:`CompiledNetwork` of the network it wraps.

    Args:
        network: the network the bundle checkpoints and validates (plain or DDP-wrapped), already on ``device``.
        device: the training device (``compile_mode`` ``auto`` depends on it).
        compile: the bundle's ``compile`` switch (``true``/``false`` as typed on the command line).
        mode: the bundle's ``compile_mode`` (:data:`COMPILE_MODES`; empty: ``auto``).
        channels_last: the bundle's ``channels_last`` switch.
    """
    from medsemiseg.bundle.settings import as_bool

    compiled = as_bool(compile, "compile")
    nhwc = as_bool(channels_last, "channels_last")
    chosen = compile_mode(mode, device)  # checked even when compile is off, so a typo is found at once
    if not compiled and not nhwc:
        return network
    from medsemiseg.distributed import DistributedNetwork

    # static shapes (dynamic=False): every shape gets its own kernels, so a resumed run compiles the very kernels of the
    # uninterrupted one whichever shape it meets first (automatic dynamic shapes would recompile at the second shape
    # seen, and differently in the two runs), and CUDA graphs replay fixed shapes anyway
    def view(net: nn.Module) -> CompiledNetwork:
        return CompiledNetwork(net, compile=compiled, mode=None if chosen == "default" else chosen,
                               channels_last=nhwc, dynamic=False,
                               options=CPU_OPTIONS if torch.device(device).type == "cpu" else None)

    if isinstance(network, DistributedNetwork):
        # compiled inside DDP (PyTorch: "apply torch.compile to the inner module passed to the wrapper"): the DDP
        # network stays what the trainer calls, its passes with autograd run the compiled calls; passes without
        # autograd (SUFD's features without gradient) and the EMA teacher (a copy of the plain network) stay eager
        inner = view(network.network)
        network.module.__dict__["_compiled"] = inner
        network.__dict__["begin_step"] = inner.begin_step
        return network
    return view(network)
