"""Checks of the settings a user types on the command line, before anything is built.

MONAI's command line hands ``--learning_rate abc`` on as a string, ``--amp false`` as the (true) string ``'false'``
and ``--seed 1.5`` as a float; each check here turns such a value into the type the run needs or stops the run with
a :class:`BundleConfigError` naming the key, the value and what it takes.
"""

from __future__ import annotations

import math
from typing import Any

import torch

__all__ = [
    "BundleConfigError",
    "NUMERIC_SETTINGS",
    "as_bool",
    "check_device",
    "check_image_size",
    "check_settings",
    "eval_at_network_size",
    "is_empty",
]


class BundleConfigError(ValueError):
    """A bundle setting is wrong; the message names the key, the value and the fix."""


def is_empty(value: Any) -> bool:
    """True for a setting left empty: ``None``, or ``""`` / ``"none"`` / ``"null"`` typed on the command line."""
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def check_image_size(image_size: Any) -> list[int]:
    """``image_size`` as ``[height, width]`` of positive whole numbers, or an error that shows the form to use."""
    ok = (
        isinstance(image_size, (list, tuple))
        and len(image_size) == 2
        and all(isinstance(v, int) and not isinstance(v, bool) and v >= 8 for v in image_size)
    )
    if not ok:
        raise BundleConfigError(
            f"image_size={image_size!r}: must be two whole numbers >= 8, height and width, as a list in quotes "
            f"on the command line, e.g. --image_size \"[{_first_int(image_size)}, {_first_int(image_size)}]\"."
        )
    return [int(v) for v in image_size]


#: the numeric settings :func:`check_settings` knows: (whole number?, smallest value, smallest allowed?, example)
NUMERIC_SETTINGS: dict[str, tuple[bool, float, bool, str]] = {
    "seed": (True, 0, True, "0"),
    "max_epochs": (True, 1, True, "5"),
    "epoch_length": (True, 1, True, "12"),
    "val_interval": (True, 1, True, "1"),
    "batch_size": (True, 1, True, "4"),
    "unlabeled_batch_size": (True, 1, True, "4"),
    "num_workers": (True, 0, True, "0"),
    "learning_rate": (False, 0, False, "0.001"),
}


def check_settings(**values: Any) -> None:
    """Stop a run whose numeric setting (``learning_rate=@learning_rate, seed=@seed, ...``) has the wrong kind or
    range, naming the key, the value and what it must be.

    MONAI's command line passes ``--learning_rate abc`` on as the string ``'abc'`` and ``--unlabeled_batch_size 0``
    as 0, which would fail far from the setting, in the optimiser, ``set_determinism`` or the data loader, naming no
    key. The bundles call this from their ``initialize`` step with every key of :data:`NUMERIC_SETTINGS`."""
    for key, value in values.items():
        whole, low, low_ok, example = NUMERIC_SETTINGS[key]
        number = isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)
        ok = number and (isinstance(value, int) if whole else True) and (value >= low if low_ok else value > low)
        if not ok:
            kind = "a whole number" if whole else "a number"
            bound = f"{'>=' if low_ok else '>'} {low:g}"
            raise BundleConfigError(f"--{key} {value!r}: must be {kind} {bound}, e.g. --{key} {example}.")


def _first_int(value: Any) -> int:
    try:
        v = int(value[0] if isinstance(value, (list, tuple)) and value else value)
        return v if v >= 8 else 128
    except (TypeError, ValueError):
        return 128


_TRUE = ("1", "true", "yes", "on")
_FALSE = ("0", "false", "no", "off", "", "none", "null")


def as_bool(value: Any, key: str = "value") -> bool:
    """A bundle switch (``amp``, ``resume``, ``write_png``) as a real bool.

    MONAI's command line keeps ``--amp false`` as the *string* ``'false'``, which Python treats as true: the
    bundles pass every switch through this, so ``true/false``, ``True/False``, ``1/0`` and ``yes/no`` all work and
    anything else is an error naming the key."""
    if isinstance(value, bool):
        return value
    if isinstance(value, (int, float)) and value in (0, 1):
        return bool(value)
    if value is None:
        return False
    if isinstance(value, str) and value.strip().lower() in _TRUE + _FALSE:
        return value.strip().lower() in _TRUE
    raise BundleConfigError(f"{key} must be true or false, got {value!r} (e.g. --{key} true).")


def eval_at_network_size(eval_resolution: Any) -> bool:
    """``evaluating``'s scoring grid: ``"original"`` (default) scores the prediction resized back to each test
    slice's own size against its label as stored, as ``inferring`` writes it; ``"network"`` scores at
    ``image_size`` against labels resized there by nearest neighbour (how validation during training scores, and how
    the synthetic quick grids in docs/notes/2026-11-25-synthetic-grids.md were measured)."""
    value = str(eval_resolution).strip().lower()
    if value not in ("original", "network"):
        raise BundleConfigError(f"eval_resolution must be 'original' or 'network', got {eval_resolution!r}.")
    return value == "network"


def check_device(device: Any) -> torch.device:
    """The ``device`` setting as a ``torch.device`` this machine has, else an error naming ``--device``."""
    try:
        dev = device if isinstance(device, torch.device) else torch.device(str(device))
    except (RuntimeError, TypeError) as e:
        raise BundleConfigError(f"device {device!r} is not a torch device ({e}); e.g. --device cpu or --device cuda:0.") from e
    if dev.type == "cuda":
        if not torch.cuda.is_available():
            build = f"torch {torch.__version__}, " + ("built with CUDA " + str(torch.version.cuda) if torch.version.cuda
                                                     else "a CPU-only build")
            raise BundleConfigError(
                f"device {str(dev)!r} asks for a CUDA GPU, but torch sees none here ({build}): pass --device cpu, "
                "or run on a machine with a GPU and a CUDA build of PyTorch."
            )
        if dev.index is not None and dev.index >= torch.cuda.device_count():
            raise BundleConfigError(
                f"device {str(dev)!r}: this machine has {torch.cuda.device_count()} CUDA device(s), numbered from 0; "
                "pass e.g. --device cuda:0."
            )
    return dev


