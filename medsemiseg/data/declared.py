"""What a data set declares about itself, for the bundles: its classes and the kind of values its images hold.

``python -m medsemiseg.prepare`` records both in the datalist's ``meta`` (``classes``: names in label order;
``intensity``: ``"hu"`` for CT in Hounsfield units, ``"uint8"`` for 8-bit display values such as photographs or
COVID-SemiSeg's windowed JPG slices, ``"percentile"`` for grey values of any other scale: MR, ultrasound, HDF5
slices normalised already).  A bundle config reads them with :func:`declared_value`, so training on a
prepared folder needs no hand-written ``--classes`` or intensity override, and says at start what it took.

Where the value comes from, first match wins:

1. ``dataset_dir`` is a prepared folder or a datalist JSON whose ``meta`` has the key: that value;
2. ``dataset_dir`` is anything else (an inference input: a DICOM file, a folder of pictures...) and the trained
   model's record ``run.json`` (next to ``ckpt_path``) has it: the value the model was trained with;
3. otherwise ``default`` (the bundle's own, e.g. the built-in synthetic data set's classes).
"""

from __future__ import annotations

import functools
import json
import logging
from pathlib import Path
from typing import Any

__all__ = ["INTENSITY_KINDS", "declared_meta", "declared_value"]

logger = logging.getLogger(__name__)

#: the intensity kinds a data set can declare, and what the covid bundle's GreyIntensityd does with each
INTENSITY_KINDS = {
    "hu": "CT in Hounsfield units: the bundle's HU window",
    "uint8": "8-bit display values 0-255: scaled to 0-1, no HU window",
    "percentile": "grey values of any other scale: each image's 0.5-99.5 percentile range scaled to 0-1",
}

_META_FILES = ("datalist.json", "dataset.json")
_RUN_KEYS = {"intensity": "intensity_kind"}  # the name a key has in run.json when it differs


def _empty(value: Any) -> bool:
    return value is None or (isinstance(value, str) and value.strip().lower() in ("", "none", "null"))


def declared_meta(dataset_dir: Any) -> tuple[dict, Path | None]:
    """``(meta, the JSON it came from)`` of a prepared folder or a datalist JSON; ``({}, None)`` otherwise.

    Unreadable JSON gives ``({}, None)`` too: the bundle's own datalist check reports it, with its message."""
    if _empty(dataset_dir):
        return {}, None
    p = Path(str(dataset_dir)).expanduser()
    candidates = [p] if p.is_file() and p.suffix.lower() == ".json" else [p / n for n in _META_FILES] if p.is_dir() else []
    for c in candidates:
        if c.is_file():
            try:
                content = json.loads(c.read_text())
            except (OSError, ValueError):
                return {}, None
            meta = content.get("meta") if isinstance(content, dict) else None
            return (meta if isinstance(meta, dict) else {}), c
    return {}, None


def _run_record(ckpt_path: Any) -> tuple[dict, Path | None]:
    if _empty(ckpt_path):
        return {}, None
    from medsemiseg.runrecord import read_run_record, run_file_of

    run = run_file_of(ckpt_path)
    record = read_run_record(run)  # a damaged record stops the run naming it, rather than a silent default
    return (record, run) if record is not None else ({}, None)


@functools.lru_cache(maxsize=None)
def _say(key: str, value_text: str, source: str) -> None:
    """Log each choice once per process (a config may resolve the same key more than once)."""
    logger.info(f"{key} {value_text}: {source}")


def declared_value(dataset_dir: Any, key: str, default: Any = None, ckpt_path: Any = None) -> Any:
    """The value of ``key`` (``"classes"`` or ``"intensity"``) for this run; see the module docstring for the order.

    ``intensity`` values are checked against :data:`INTENSITY_KINDS`, so a typo in a hand-written datalist stops
    the run naming the file rather than silently choosing the HU window."""
    meta, source = declared_meta(dataset_dir)
    value, origin, where = None, None, None
    if source is not None and not _empty(meta.get(key)):
        value, origin, where = meta[key], f"declared by {source} (meta.{key})", f"{source} meta.{key}"
    elif source is None and not _empty(dataset_dir):
        record, run = _run_record(ckpt_path)
        run_key = _RUN_KEYS.get(key, key)
        if not _empty(record.get(run_key)):
            value, origin, where = record[run_key], f"as the model was trained ({run})", f"{run} {run_key}"
    if value is None:
        if default is not None:
            _say(key, repr(_plain(default)), "the bundle's default")
        return default
    if key == "intensity" and value not in INTENSITY_KINDS:
        raise ValueError(
            f"{where}: intensity {value!r} is not one of {sorted(INTENSITY_KINDS)}; fix it there ('hu': CT in "
            "Hounsfield units, 'uint8': 8-bit display values, 'percentile': any other grey values), or pass "
            "--intensity_kind hu|uint8|percentile."
        )
    shown = f"{value!r} ({INTENSITY_KINDS[value]})" if key == "intensity" else repr(_plain(value))
    _say(key, shown, origin)
    return list(value) if isinstance(value, (list, tuple)) else value


def _plain(value: Any) -> Any:
    return list(value) if isinstance(value, (list, tuple)) else value
