"""Data layer: readers (:mod:`.io`, :mod:`.dicom`), slices and the bundles' loading transform (:mod:`.slices`),
datalists (:mod:`.datalist`), splits (:mod:`.splits`), preparation (:mod:`.prepare`), built-in data
(:mod:`.builtin`) and synthetic phantoms (:mod:`.synthetic`).  No training logic lives here.

Names are imported lazily (PEP 562): ``python -m medsemiseg.data.synthetic`` or ``from medsemiseg.data.splits
import ...`` must not pay for importing MONAI and torch.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "DataReadError": "io",
    "LazySlice": "slices",
    "LoadSliced": "slices",
    "ProgressCacheDataset": "caching",
    "check_label_values": "io",
    "detect_format": "io",
    "iter_slices": "slices",
    "read_image": "io",
    "read_mask": "io",
    "carve_heldout": "splits",
    "chase_protocol_split": "splits",
    "num_labeled": "splits",
    "parse_fraction": "splits",
    "split_labeled": "splits",
    "build_datalist": "prepare",
    "prepare_chase": "prepare",
    "prepare_covid": "prepare",
    "prepare_folder": "prepare",
    "resplit_prepared": "prepare",
    "ensure_synthetic_datalist": "builtin",
    "train_sampler": "sampling",
    "train_shuffle": "sampling",
    "DistributedTrainSampler": "sampling",
    "distributed_train_sampler": "sampling",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__():
    return sorted(set(globals()) | set(_EXPORTS))
