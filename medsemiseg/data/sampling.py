"""In which order the training streams draw their items (the bundles' ``train_sampling`` key).

With few labelled images a loader that makes one pass at a time runs out every step or two: 9 labelled slices in
batches of 8 give a batch of 8, then a batch of 1, and a new pass (with num_workers > 0, its first batch is made
from scratch, so the GPU waits; measured with ``scripts/loader_throughput.py``, docs/benchmarks.md). The reference
implementations avoid both: UniMatch repeats the labelled list to the unlabelled set's length, SSL4MIS draws
labelled and unlabelled indices from one endless batch sampler.

``"epoch"`` (the default) does what UniMatch does without caching an image twice: each pass of a loader is one
epoch of ``epoch_length`` full batches, drawn from back-to-back shuffled permutations of the set (every item once
per permutation, a permutation may span two batches). ``"pass"`` draws one shuffled pass over the set at a time,
the labelled set's last batch partial; the quick grids use it, as their committed tables were measured with it.
"""

from __future__ import annotations

import math
from typing import Sized

from torch.utils.data import RandomSampler

__all__ = ["TRAIN_SAMPLING", "train_sampler", "train_shuffle"]

TRAIN_SAMPLING = ("epoch", "pass")


def _check(mode: str) -> str:
    if mode not in TRAIN_SAMPLING:
        raise ValueError(f"train_sampling must be one of {list(TRAIN_SAMPLING)}, not {mode!r}")
    return mode


def train_sampler(dataset: Sized, batch_size: int, epoch_length: int | None, mode: str = "epoch"):
    """The sampler of a training loader: with ``mode="epoch"`` a :class:`~torch.utils.data.RandomSampler` of
    ``epoch_length x batch_size`` items (without replacement within each permutation of the set; ``epoch_length``
    None: enough whole batches to cover the set once); ``None`` with ``mode="pass"`` or an empty set (the loader's
    ``shuffle`` then decides, :func:`train_shuffle`)."""
    if _check(mode) == "pass" or len(dataset) == 0:
        return None
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    batches = math.ceil(len(dataset) / batch_size) if epoch_length is None else int(epoch_length)
    if batches < 1:
        raise ValueError(f"epoch_length must be at least 1, got {epoch_length}")
    return RandomSampler(dataset, replacement=False, num_samples=batches * batch_size)


def train_shuffle(dataset: Sized, mode: str = "epoch") -> bool:
    """The loader's ``shuffle``: only without a sampler (``mode="pass"``) and with something to shuffle."""
    return _check(mode) == "pass" and len(dataset) > 0
