"""In which order the training streams draw their items (the bundles' ``train_sampling`` key).

With few labelled images a loader that makes one pass at a time runs out every step or two: 9 labelled slices in
batches of 8 give a batch of 8, then a batch of 1, and a new pass (with num_workers > 0, its first batch is made
from scratch, so the GPU waits; measured with ``scripts/loader_throughput.py``,
docs/notes/2026-11-26-h100-leases.md). The reference implementations avoid both: UniMatch repeats the labelled
list to the unlabelled set's length, SSL4MIS draws labelled and unlabelled indices from one endless batch sampler.

``"epoch"`` (the default) does what UniMatch does without caching an image twice: each pass of a loader is one
epoch of ``epoch_length`` full batches, drawn from back-to-back shuffled permutations of the set (every item once
per permutation, a permutation may span two batches). ``"pass"`` draws one shuffled pass over the set at a time,
the labelled set's last batch partial; the quick grids use it, as their committed tables were measured with it.

Under ``torchrun`` (the bundles' ``multi_gpu_train.json``) each of the N processes draws ``batch_size`` items per
iteration, so one iteration trains on a global batch of N x ``batch_size``, and :func:`distributed_train_sampler`
keeps each mode's meaning for that global batch: with ``"epoch"`` the processes share one stream of back-to-back
permutations of the set, ``epoch_length`` global batches long, and process ``r`` takes items ``r * batch_size`` to
``(r + 1) * batch_size - 1`` of each global batch (so a single process with batch N x ``batch_size`` and the same
seed draws the same global batches); with ``"pass"`` each pass is one shuffled pass over the set split across the
processes (PyTorch's ``DistributedSampler``, which repeats a few items so every process gets as many). Every process
draws the same order from ``seed`` and the pass number (``set_epoch``), not from its own random state.
"""

from __future__ import annotations

import math
from typing import Sized

import torch
from torch.utils.data import DistributedSampler, RandomSampler

__all__ = ["TRAIN_SAMPLING", "train_sampler", "train_shuffle", "DistributedTrainSampler", "distributed_train_sampler"]

TRAIN_SAMPLING = ("epoch", "pass")


def _check(mode: str) -> str:
    if mode not in TRAIN_SAMPLING:
        raise ValueError(f"train_sampling must be one of {list(TRAIN_SAMPLING)}, not {mode!r}")
    return mode


def _batches(n_items: int, batch_size: int, epoch_length: int | None, replicas: int = 1) -> tuple[int, int]:
    """``(batch_size, batches per pass)`` checked: ``epoch_length``, or enough whole batches of ``replicas x
    batch_size`` items to cover the set once."""
    batch_size = int(batch_size)
    if batch_size < 1:
        raise ValueError(f"batch size must be at least 1, got {batch_size}")
    batches = math.ceil(n_items / (batch_size * replicas)) if epoch_length is None else int(epoch_length)
    if batches < 1:
        raise ValueError(f"epoch_length must be at least 1, got {epoch_length}")
    return batch_size, batches


def train_sampler(dataset: Sized, batch_size: int, epoch_length: int | None, mode: str = "epoch"):
    """The sampler of a training loader: with ``mode="epoch"`` a :class:`~torch.utils.data.RandomSampler` of
    ``epoch_length x batch_size`` items (without replacement within each permutation of the set; ``epoch_length``
    None: enough whole batches to cover the set once); ``None`` with ``mode="pass"`` or an empty set (the loader's
    ``shuffle`` then decides, :func:`train_shuffle`)."""
    if _check(mode) == "pass" or len(dataset) == 0:
        return None
    batch_size, batches = _batches(len(dataset), batch_size, epoch_length)
    return RandomSampler(dataset, replacement=False, num_samples=batches * batch_size)


def train_shuffle(dataset: Sized, mode: str = "epoch") -> bool:
    """The loader's ``shuffle``: only without a sampler (``mode="pass"``) and with something to shuffle."""
    return _check(mode) == "pass" and len(dataset) > 0


class DistributedTrainSampler(DistributedSampler):
    """This process's share of the ``"epoch"`` stream of all processes together (the module docstring).

    Each pass is ``epoch_length`` global batches of ``num_replicas x batch_size`` items taken from back-to-back
    permutations of the set drawn from ``seed + epoch`` (:meth:`set_epoch`, as PyTorch's ``DistributedSampler``);
    this process yields its ``batch_size`` items of each, ``epoch_length x batch_size`` items in all.

    Args:
        dataset: the training set.
        batch_size: this process's batch size.
        epoch_length: global batches per pass; ``None``: enough to cover the set once.
        num_replicas, rank: the processes and this one (default: the initialised process group's).
        seed: the same on every process.
    """

    def __init__(self, dataset: Sized, batch_size: int, epoch_length: int | None, num_replicas: int | None = None,
                 rank: int | None = None, seed: int = 0) -> None:
        super().__init__(dataset, num_replicas=num_replicas, rank=rank, shuffle=True, seed=int(seed))
        self.batch_size, self.batches = _batches(len(dataset), batch_size, epoch_length, self.num_replicas)
        self.num_samples = self.batches * self.batch_size
        self.total_size = self.num_samples * self.num_replicas

    def __iter__(self):
        g = torch.Generator()
        g.manual_seed(self.seed + self.epoch)
        n = len(self.dataset)  # type: ignore[arg-type]
        order = torch.cat([torch.randperm(n, generator=g) for _ in range(math.ceil(self.total_size / n))])
        steps = order[: self.total_size].view(self.batches, self.num_replicas, self.batch_size)
        return iter(steps[:, self.rank].reshape(-1).tolist())

    def __len__(self) -> int:
        return self.num_samples


def distributed_train_sampler(dataset: Sized, batch_size: int, epoch_length: int | None, mode: str = "epoch",
                              seed: int = 0) -> DistributedSampler | None:
    """The sampler of a training loader in one of several processes (the loader's ``shuffle`` must be false):
    :class:`DistributedTrainSampler` with ``mode="epoch"``, PyTorch's shuffling ``DistributedSampler`` with
    ``mode="pass"``, ``None`` for an empty set."""
    if _check(mode) == "pass":
        return DistributedSampler(dataset, shuffle=True, seed=int(seed)) if len(dataset) else None
    return DistributedTrainSampler(dataset, batch_size, epoch_length, seed=seed) if len(dataset) else None
