"""``models/run.json``: the record of what a model was trained with, read by whoever relies on it.

The training writes it next to its models (:class:`~medsemiseg.bundle.resume.TrainCheckpointer`); ``evaluating``
and ``inferring`` take the intensity kind and classes from it when the data do not declare them
(:mod:`medsemiseg.data.declared`), compare the data they run on with the training's
(:func:`~medsemiseg.bundle.checkpoints.check_trained_on`) and the inputs with the training images
(:class:`~medsemiseg.handlers.InputDistributionCheck`). :func:`read_run_record` is how they all read it: a missing
file is ``None`` (a model from elsewhere, or from before the record existed), and a file that is there but not a
JSON object is a :class:`RunRecordError` naming it and the fix -- never silently treated as missing, which would
fall back to the HU window and drop the out-of-distribution check. It sits below the package's layers (the data,
handlers and bundle parts all read it) and imports none of them.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


__all__ = ["RUN_FILE", "RunRecordError", "read_run_record", "run_file_of"]

#: a training's record of its settings, next to its models
RUN_FILE = "run.json"


class RunRecordError(ValueError):
    """A ``run.json`` that exists but cannot be used; ``path`` and ``reason`` say which and why."""

    def __init__(self, path: Path, reason: str) -> None:
        self.path, self.reason = Path(path), reason
        super().__init__(
            f"{path} is {reason}: it records what the model next to it was trained with (intensity, classes, data "
            "set, the input ranges the out-of-distribution check compares with), and a guess would be silently "
            f"wrong. Restore it (the training writes it again when resumed: --resume true), or delete it to use the "
            "model without its record (then pass the --intensity_kind and --classes it was trained with)."
        )


def run_file_of(ckpt_path: str | os.PathLike) -> Path:
    """The ``run.json`` beside a model file."""
    return Path(str(ckpt_path)).expanduser().parent / RUN_FILE


def read_run_record(path: str | os.PathLike) -> dict[str, Any] | None:
    """The content of the run record at ``path``; ``None`` when there is no such file; :class:`RunRecordError`
    when it cannot be read, is not JSON, or is not a JSON object."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    except (OSError, UnicodeDecodeError) as e:
        raise RunRecordError(path, f"not readable ({getattr(e, 'strerror', None) or e})") from e
    try:
        record = json.loads(text)
    except ValueError as e:
        raise RunRecordError(path, f"not valid JSON ({e})") from e
    if not isinstance(record, dict):
        raise RunRecordError(path, f"not a JSON object (it holds a {type(record).__name__})")
    return record
