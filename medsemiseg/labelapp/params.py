"""The settings a MONAI Label training request (``POST /train/<model>``) may carry, checked as data.

A request's values become overrides of the bundle config, and MONAI's config parser evaluates a string that starts
with ``$`` as Python (``"$__import__('os').system(...)"`` runs), reads ``@key`` as a reference to another config
entry and ``%file#key`` as a macro. A request is data, never code, so :func:`check_train_request`

- refuses any string value, at any depth (also inside ``method_options``), that starts with ``$``, ``@`` or ``%``
  (leading spaces ignored), and any key that is not a plain name;
- accepts only the keys in :data:`TRAIN_KEYS` (plus the ones MONAI Label adds itself, :data:`MONAI_LABEL_KEYS`,
  which are not passed on), so a request cannot reach ``dataset_dir``, ``output_dir``, ``network_def`` or any other
  entry of the config;
- checks each value's type and range, so a bad value is refused when the request arrives, naming the key, instead
  of failing minutes later in the training process.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any, Callable, Mapping

__all__ = [
    "MONAI_LABEL_KEYS",
    "TRAIN_KEYS",
    "RequestError",
    "check_train_request",
    "train_defaults",
]

#: prefixes MONAI's ``ConfigParser`` does not read as plain text: expression, reference, macro
CODE_PREFIXES = ("$", "@", "%")

#: keys MONAI Label puts in every training request itself; accepted, checked as data, not passed to the bundle
MONAI_LABEL_KEYS = ("model", "gpus", "local_rank")


class RequestError(ValueError):
    """A training request that is refused before anything runs; the message names the key and the fix."""


def _int(minimum: int) -> Callable[[str, Any], int]:
    def check(key: str, value: Any) -> int:
        if isinstance(value, bool):
            raise RequestError(f"{key}={value!r}: must be a whole number >= {minimum}, e.g. {key}={max(minimum, 1)}.")
        if isinstance(value, str) and re.fullmatch(r"\s*\d+\s*", value):
            value = int(value)
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if not isinstance(value, int) or value < minimum:
            raise RequestError(f"{key}={value!r}: must be a whole number >= {minimum}, e.g. {key}={max(minimum, 1)}.")
        return value

    return check


def _positive_float(key: str, value: Any) -> float:
    try:
        number = float(value) if not isinstance(value, bool) else float("nan")
    except (TypeError, ValueError):
        number = float("nan")
    if not number > 0 or number == float("inf"):
        raise RequestError(f"{key}={value!r}: must be a number > 0, e.g. {key}=0.001.")
    return number


def _bool(key: str, value: Any) -> bool:
    if isinstance(value, bool):
        return value
    text = str(value).strip().lower()
    if text in ("true", "1", "yes"):
        return True
    if text in ("false", "0", "no"):
        return False
    raise RequestError(f"{key}={value!r}: must be true or false.")


def _choice(*choices: str) -> Callable[[str, Any], str]:
    def check(key: str, value: Any) -> str:
        if not isinstance(value, str) or value.strip().lower() not in choices:
            raise RequestError(f"{key}={value!r}: must be one of {', '.join(choices)}.")
        return value.strip().lower()

    return check


def _method(key: str, value: Any) -> str:
    from medsemiseg.methods import canonical_method_name

    if not isinstance(value, str):
        raise RequestError(f"{key}={value!r}: must be a method name, e.g. {key}=supmix_sufd.")
    try:
        return canonical_method_name(value)
    except ValueError as e:
        raise RequestError(f"{key}={value!r}: {e}") from None


def _options(key: str, value: Any) -> dict:
    if isinstance(value, str):  # a form field or a viewer's text box: JSON text
        try:
            value = json.loads(value) if value.strip() else {}
        except ValueError:
            raise RequestError(
                f"{key}={value!r}: must be a JSON object, e.g. {key}={{\"adv_weight\": 0.01}}."
            ) from None
    if not isinstance(value, dict):
        raise RequestError(f"{key}={value!r}: must be an object of method options, e.g. {{\"adv_weight\": 0.01}}.")
    for name, option in value.items():
        if not isinstance(option, (str, int, float, bool, list, type(None))):
            raise RequestError(
                f"{key}#{name}={option!r}: an option value must be a number, text, true/false or a list."
            )
    return value


def _device(key: str, value: Any) -> str:
    if not isinstance(value, str) or not re.fullmatch(r"cpu|cuda(:\d+)?", value.strip().lower()):
        raise RequestError(f"{key}={value!r}: must be cpu, cuda or cuda:N.")
    return value.strip().lower()


def _val_split(key: str, value: Any) -> float | int:
    """A share of the labelled studies in (0, 1), or a whole count >= 1 (at least one study validates)."""
    if isinstance(value, str):
        try:
            value = int(value) if value.strip().isdigit() else float(value)
        except ValueError:
            pass
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise RequestError(
            f"{key}={value!r}: give a share of the labelled studies below 1 (e.g. 0.2) or a count (e.g. 1)."
        )
    if isinstance(value, float) and value.is_integer() and value >= 1:
        value = int(value)
    if isinstance(value, float) and not 0 < value < 1:
        raise RequestError(f"{key}={value!r}: a share must lie between 0 and 1 (e.g. 0.2), or give a count (e.g. 1).")
    if isinstance(value, int) and value < 1:
        raise RequestError(f"{key}={value!r}: at least one labelled study validates; give a count >= 1 or a share.")
    return value


#: key -> (check, what it sets). All but ``val_split`` are the bundle's own keys (its README's settings table);
#: ``val_split`` is the app's: the labelled studies held out to choose the best model (default 0.2, at least 1).
TRAIN_KEYS: dict[str, tuple[Callable[[str, Any], Any], str]] = {
    "method": (_method, "semi-supervised method (supmix_sufd, supmix, sufd, classmix, fixmatch, unimatch, supervised)"),
    "method_options": (_options, "keyword options of the method, e.g. {\"adv_weight\": 0.01}"),
    "max_epochs": (_int(1), "epochs"),
    "epoch_length": (_int(1), "iterations per epoch"),
    "val_interval": (_int(1), "validate every N epochs (and after the last)"),
    "batch_size": (_int(1), "labelled images per iteration"),
    "unlabeled_batch_size": (_int(1), "unlabelled images per iteration"),
    "learning_rate": (_positive_float, "AdamW learning rate"),
    "seed": (_int(0), "training seed (and the validation hold-out's)"),
    "train_sampling": (_choice("epoch", "pass"), "epoch: full batches, pass: one shuffled pass at a time"),
    "amp": (_bool, "mixed precision (CUDA only)"),
    "device": (_device, "cpu, cuda or cuda:N (default: CUDA if available)"),
    "num_workers": (_int(0), "data loader workers"),
    "val_split": (_val_split, "labelled studies held out for validation: a share (0.2) or a count (1)"),
    "pretrained": (_bool, "start from the served model (default true, MONAI Label's default); false: from scratch"),
    "multi_gpu": (_bool, "train on the GPUs of gpus with torchrun and the bundle's configs/multi_gpu_train.json"),
    "tracking": (_choice("mlflow", "none"), "mlflow: track the run with MLflow in <runs>/mlruns.db (docs/tracking.md)"),
}

#: the app's own keys in :data:`TRAIN_KEYS` (not bundle overrides) and their defaults
APP_DEFAULTS = {"val_split": 0.2, "pretrained": True, "multi_gpu": False, "tracking": "none"}


def _gpus(key: str, value: Any) -> str | list[int]:
    """MONAI Label's ``gpus``: ``"all"`` (or empty) or GPU indices, ``"0,1"`` or ``[0, 1]``."""
    if value is None or (isinstance(value, str) and value.strip().lower() in ("", "all")):
        return "all"
    items = value.split(",") if isinstance(value, str) else value if isinstance(value, (list, tuple)) else [value]
    try:
        out = [_int(0)(key, v.strip() if isinstance(v, str) else v) for v in items]
    except RequestError:
        raise RequestError(f"{key}={value!r}: must be all or GPU indices, e.g. {key}=0,1.") from None
    return out


def _code_like(value: Any, path: str) -> str | None:
    """The path (``key#sub#0``) of the first string in ``value``, at any depth, that MONAI would not read as plain
    text, or ``None``; a mapping key that is not a plain name is refused here too."""
    if isinstance(value, str):
        return path if value.lstrip().startswith(CODE_PREFIXES) else None
    if isinstance(value, Mapping):
        for k, v in value.items():
            where = f"{path}#{k}" if path else str(k)
            if not isinstance(k, str) or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", k):
                raise RequestError(f"request key {where!r}: refused -- keys are plain names such as max_epochs.")
            found = _code_like(v, where)
            if found:
                return found
    if isinstance(value, (list, tuple)):
        for i, v in enumerate(value):
            found = _code_like(v, f"{path}#{i}")
            if found:
                return found
    return None


def check_train_request(request: Mapping[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(bundle overrides, app settings)`` of a training request, or a :class:`RequestError` naming the key.

    Every key and value is checked before anything runs (module docstring). MONAI Label's own keys
    (:data:`MONAI_LABEL_KEYS`) are accepted and not passed on (``gpus`` is kept in the app settings as ``"all"`` or
    a list of indices); ``val_split``, ``pretrained``, ``multi_gpu`` and ``tracking`` go to the app settings (defaults
    :data:`APP_DEFAULTS`); the other listed keys become bundle overrides, typed (``"5"`` -> ``5``)."""
    if not isinstance(request, Mapping):
        raise RequestError(f"a training request must be a JSON object of settings, not {type(request).__name__}.")
    bad = _code_like(dict(request), "")
    if bad:
        value: Any = request
        for part in bad.split("#"):
            value = value[int(part)] if isinstance(value, (list, tuple)) else value[part]
        raise RequestError(
            f"{bad}={value!r}: refused -- a value starting with $, @ or % would be evaluated by "
            "MONAI as code, a reference or a macro; a training request carries plain values only (e.g. "
            "max_epochs=5, method=supmix_sufd)."
        )
    unknown = sorted(k for k in request if k not in TRAIN_KEYS and k not in MONAI_LABEL_KEYS)
    if unknown:
        raise RequestError(
            f"request key(s) {', '.join(unknown)}: not accepted; a training request may set only "
            f"{', '.join(TRAIN_KEYS)} (docs/bundles.md, 'Training from the datastore')."
        )
    overrides: dict[str, Any] = {}
    app: dict[str, Any] = {**APP_DEFAULTS, "gpus": "all"}
    for key, value in request.items():
        if key == "gpus":
            app["gpus"] = _gpus(key, value)
        if key in MONAI_LABEL_KEYS:
            continue
        check = TRAIN_KEYS[key][0]
        (app if key in APP_DEFAULTS else overrides)[key] = check(key, value)
    return overrides, app


def train_defaults(config_file: str | Path) -> dict[str, Any]:
    """The listed keys with the bundle's defaults (plain values of its ``train.json``; a key whose default is an
    expression, such as ``device``, is left out), plus the app's :data:`APP_DEFAULTS`: what a viewer shows and
    sends back as a training request."""
    config = json.loads(Path(config_file).read_text())
    out: dict[str, Any] = {}
    for key in TRAIN_KEYS:
        value = config.get(key, APP_DEFAULTS.get(key))
        if value is None or _code_like(value, key):
            continue
        out[key] = value
    return out
