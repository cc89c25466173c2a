"""The engine's arguments as the bundles' flags, in the messages ``python -m monai.bundle run`` shows.

The engine (:mod:`medsemiseg.engines`) speaks of its own arguments: its errors and log lines name
:class:`~medsemiseg.engines.SemiSupervisedTrainer`'s arguments as a Python user passes them (``epoch_length=0``,
``unlabeled_data_loader.batch_size``, ``amp=False``). A user of the bundles sets them through the bundle's keys
instead; :data:`ENGINE_TO_BUNDLE` says which key sets which argument, and :func:`rewrite` shows an engine message
with the flags (``--epoch_length 0``, ``--unlabeled_batch_size``, ``--amp false``). :func:`.cli.install_failure_report`
installs it under the bundle CLI, for the failure's last line and for the engine's logged messages.
"""

from __future__ import annotations

import re

__all__ = ["ENGINE_MODULES", "ENGINE_TO_BUNDLE", "as_flags", "rewrite"]

#: how the engine's messages name an argument -> the bundle key (``bundles/workflow.template.json``) that sets it
ENGINE_TO_BUNDLE: dict[str, str] = {
    "max_epochs": "max_epochs",
    "epoch_length": "epoch_length",
    "train_data_loader.batch_size": "batch_size",
    "unlabeled_data_loader.batch_size": "unlabeled_batch_size",
    "the optimizer's lr": "learning_rate",
    "amp": "amp",
    "amp_dtype": "amp_dtype",
    "ValidationEveryAndLastHandler.interval": "val_interval",
}

#: the modules (and loggers) whose messages speak of the engine's arguments
ENGINE_MODULES = ("medsemiseg.engines", "medsemiseg.handlers.validation", "medsemiseg.validation")

#: a Python literal as the bundle CLI spells it
_LITERALS = {"True": "true", "False": "false", "None": "null"}

# a name stands alone (not part of a longer name or of a flag), optionally with "=value"; a value ends at a space,
# one of ,;:() or a sentence's full stop
_NAME = "|".join(re.escape(k) for k in sorted(ENGINE_TO_BUNDLE, key=len, reverse=True))
_PATTERN = re.compile(
    rf"(?<![\w.'-])(?P<name>{_NAME})(?![\w]|\.\w)"
    r"(?:=(?P<value>'[^']*'|\"[^\"]*\"|[^\s,;:()]+?(?=$|[\s,;:()]|\.(?:\s|$))))?"
)


def _flag(match: re.Match) -> str:
    flag = "--" + ENGINE_TO_BUNDLE[match["name"]]
    value = match["value"]
    if value is None:
        return flag
    if len(value) >= 2 and value[0] == value[-1] and value[0] in "'\"":
        value = value[1:-1]
    return f"{flag} {_LITERALS.get(value, value)}"


def as_flags(message: str) -> str:
    """``message`` with every engine argument of :data:`ENGINE_TO_BUNDLE` written as its bundle flag:
    ``name=value`` as ``--key value`` (``True`` / ``False`` / ``None`` as ``true`` / ``false`` / ``null``), a name
    alone as ``--key``."""
    return _PATTERN.sub(_flag, message)


def rewrite(message: str, origin: str) -> str:
    """:func:`as_flags` of a message from one of :data:`ENGINE_MODULES` (``origin``: the module that raised it, or the
    logger that logged it); any other message unchanged (the bundle layer's own already names the flags)."""
    if any(origin == m or origin.startswith(m + ".") for m in ENGINE_MODULES):
        return as_flags(message)
    return message
