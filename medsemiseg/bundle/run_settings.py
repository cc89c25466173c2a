"""The settings a training state only makes sense with: :class:`RunRecord`, saved in every checkpoint and compared on
``--resume`` (the model's settings must match; the data settings may change only with ``--allow_changed_data``).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .settings import BundleConfigError

__all__ = ["RunRecord"]

logger = logging.getLogger("medsemiseg.bundle.resume")  # its messages read as resume's, where they belong


class RunRecord:
    """The settings a training state only makes sense with, saved in each checkpoint and checked on resume.

    A state only continues the training it was saved from: resumed with another method, network, class list or
    input channels it would finish without a word or fail on hundreds of missing ``state_dict`` keys, so any of these
    differences is an error that names it and the fix. A different ``epoch_length`` is a warning (ignite restores
    the checkpoint's), as is a different ``train_sampling`` (a record without one comes from loaders that drew one
    pass at a time). The settings that change what the model sees (:data:`DATA`: data set, datalist and its content,
    split sizes, labelled fraction, image and patch size, intensity) are compared by :meth:`check_data`, which
    refuses a change unless asked to continue on the new data.
    """

    MUST_MATCH = ("method", "network_name", "network_kwargs", "classes", "in_channels")
    #: the settings that change what the model sees, with the words a message uses for them (:meth:`data_changes`)
    DATA = {
        "dataset_dir": "dataset_dir",
        "datalist": "datalist",
        "datalist_sha256": "datalist content (sha256)",
        "labeled_fraction": "labelled fraction (datalist meta)",
        "data_sizes": "split sizes",
        "image_size": "image_size",
        "patch_size": "patch_size",
        "intensity_kind": "intensity_kind",
    }

    def __init__(self, info: Mapping[str, Any]) -> None:
        self.info = {k: _plain(v) for k, v in dict(info).items()}
        self.info.update(_datalist_facts(self.info.get("datalist")))
        if "method" in self.info:
            from medsemiseg.methods import canonical_method_name

            try:
                self.info["method"] = canonical_method_name(str(self.info["method"]))
            except ValueError:
                pass  # create_method reports an unknown name with its own message

    def state_dict(self) -> dict:
        return dict(self.info)

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Nothing to restore: the run's own settings stand (they were compared in :meth:`check_against`)."""

    def data_changes(self, stored: Mapping[str, Any]) -> dict[str, tuple[Any, Any]]:
        """``{key: (checkpoint's value, this run's)}`` for each setting of :data:`DATA` that differs (keys that one
        of the two records lacks -- a checkpoint of an older version -- are not compared). Paths compare resolved;
        the datalist by its content when both records have its digest (a moved bundle is the same data), by its
        path otherwise."""
        both = lambda k: k in stored and k in self.info  # noqa: E731
        diffs: dict[str, tuple[Any, Any]] = {}
        for key in self.DATA:
            if not both(key):
                continue
            a, b = _plain(stored[key]), self.info[key]
            if key in ("dataset_dir", "datalist"):
                if key == "datalist" and both("datalist_sha256"):
                    continue  # compared by content below
                same = _same_path(a, b)
            else:
                same = a == b
            if not same:
                diffs[key] = (a, b)
        return diffs

    def check_data(self, stored: Mapping[str, Any], path: str, allow_changed_data: bool = False,
                   epoch: int | None = None) -> None:
        """Refuse to resume ``stored``'s training on other data (:meth:`data_changes`) unless
        ``allow_changed_data``; then the change is logged and recorded (``data_changes`` in the record, hence in
        ``run.json`` and the next checkpoints: the epoch it happened at, the settings before and after). Earlier
        recorded changes are carried over either way."""
        history = list(stored.get("data_changes") or [])
        diffs = self.data_changes(stored)
        if diffs and not allow_changed_data:
            what = "; ".join(f"{self.DATA[k]}: checkpoint {_shown(k, a)}, this run {_shown(k, b)}"
                             for k, (a, b) in diffs.items())
            back = " ".join(f"--{k} {_cli_value(diffs[k][0])}" for k in ("dataset_dir", "labeled_fraction",
                                                                          "image_size", "patch_size", "intensity_kind")
                            if k in diffs)
            raise BundleConfigError(
                f"resume: {path} was trained on other data than this run uses ({what}): continuing would mix two "
                "data sets in one training and its record. Resume with the checkpoint's data settings"
                + (f" ({back})" if back else "")
                + ", or pass --allow_changed_data true to continue on this data (run.json then records both), or "
                "train into another --output_dir."
            )
        if diffs:
            history.append({
                "epoch": epoch,
                "before": {k: a for k, (a, _b) in diffs.items()},
                "after": {k: b for k, (_a, b) in diffs.items()},
            })
            logger.warning(
                f"resume: --allow_changed_data true: continuing {path} (epoch {epoch}) on other data ("
                + "; ".join(f"{self.DATA[k]} {_shown(k, a)} -> {_shown(k, b)}" for k, (a, b) in diffs.items())
                + "); recorded in run.json under data_changes."
            )
        if history:
            self.info["data_changes"] = history

    def check_against(self, stored: Mapping[str, Any], path: str) -> None:
        diffs = [(k, stored[k], self.info[k]) for k in self.MUST_MATCH
                 if k in stored and k in self.info and _plain(stored[k]) != self.info[k]]
        if diffs:
            what = "; ".join(f"{k}: checkpoint {a!r}, this run {b!r}" for k, a, b in diffs)
            raise BundleConfigError(
                f"resume: {path} was written with other settings ({what}). Resume with the checkpoint's settings, "
                "or train the new ones into another --output_dir (or replace that run: --overwrite true, without "
                "--resume)."
            )
        for key in ("epoch_length",):
            if key in stored and key in self.info and _plain(stored[key]) != self.info[key]:
                logger.warning(
                    f"resume: {path} was trained with {key} {stored[key]}; the resumed run keeps it (ignite restores "
                    f"the trainer's counters), not this run's {self.info[key]}."
                )
        if "train_sampling" in self.info and stored:
            # a record written before train_sampling existed comes from loaders that drew one pass at a time
            before = stored.get("train_sampling", "pass")
            if before != self.info["train_sampling"]:
                logger.warning(
                    f"resume: {path} was trained with train_sampling {before!r}; this run draws its batches with "
                    f"{self.info['train_sampling']!r} from here on (pass --train_sampling {before} to continue as "
                    "it was)."
                )


def _plain(v: Any) -> Any:
    """JSON-like copy (tuples as lists, numbers as Python numbers) so saved and current settings compare equal."""
    if isinstance(v, Mapping):
        return {str(k): _plain(x) for k, x in v.items()}
    if isinstance(v, (list, tuple)):
        return [_plain(x) for x in v]
    if isinstance(v, torch.Tensor):
        return v.tolist()
    if isinstance(v, np.generic):
        return v.item()
    return v


def _datalist_facts(datalist: Any) -> dict[str, Any]:
    """What a datalist file says about the data a run sees: its content digest, split sizes and the labelled
    fraction its ``meta`` declares (``{}`` when there is no such file or it cannot be read: the datalist's own check
    reports that)."""
    import hashlib

    from medsemiseg.data.datalist import meta_and_sizes

    if datalist is None or not isinstance(datalist, (str, os.PathLike)) or not Path(str(datalist)).is_file():
        return {}
    try:
        digest = hashlib.sha256(Path(str(datalist)).read_bytes()).hexdigest()
        meta, sizes = meta_and_sizes(datalist)
    except Exception:  # noqa: BLE001 - unreadable datalists are reported by resolve_datalist / load_split
        return {}
    facts: dict[str, Any] = {"datalist_sha256": digest, "data_sizes": dict(sorted(sizes.items()))}
    if meta.get("labeled_fraction") is not None:
        facts["labeled_fraction"] = _plain(meta["labeled_fraction"])
    return facts


def _same_path(a: Any, b: Any) -> bool:
    from .settings import is_empty

    if is_empty(a) or is_empty(b):
        return is_empty(a) and is_empty(b)
    return Path(str(a)).expanduser().resolve() == Path(str(b)).expanduser().resolve()


def _shown(key: str, v: Any) -> str:
    """A recorded value as a message shows it (a digest by its first 12 digits)."""
    return f"{v[:12]}..." if key == "datalist_sha256" and isinstance(v, str) else repr(v)


def _cli_value(v: Any) -> str:
    if v is None:
        return "null"
    return f'"{json.dumps(v)}"' if isinstance(v, (list, dict)) else str(v)
