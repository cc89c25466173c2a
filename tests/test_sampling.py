"""The training streams' order (``train_sampling``): full batches from back-to-back permutations, or the old passes."""

import collections

import pytest
import torch
from torch.utils.data import DataLoader

from medsemiseg.data.sampling import train_sampler, train_shuffle


def _batches(n_items: int, batch_size: int, epoch_length, mode: str, passes: int = 1, seed: int = 0):
    data = list(range(n_items))
    loader = DataLoader(data, batch_size=batch_size, sampler=train_sampler(data, batch_size, epoch_length, mode),
                        shuffle=train_shuffle(data, mode), drop_last=False)
    torch.manual_seed(seed)
    return [b.tolist() for _ in range(passes) for b in loader]


def test_epoch_sampling_gives_full_batches_and_every_item_equally_often():
    # 9 labelled slices in batches of 8 (the paper grid at 1/8): one pass of the loader is one epoch of 9 batches,
    # all full, 72 draws = 8 whole permutations of the 9 items
    batches = _batches(9, 8, 9, "epoch")
    assert len(batches) == 9 and all(len(b) == 8 for b in batches)
    counts = collections.Counter(i for b in batches for i in b)
    assert sorted(counts) == list(range(9)) and set(counts.values()) == {8}
    # within each permutation of the set no item repeats
    flat = [i for b in batches for i in b]
    assert all(sorted(flat[k:k + 9]) == list(range(9)) for k in range(0, 72, 9))
    # reshuffled: two passes differ
    two = _batches(9, 8, 9, "epoch", passes=2)
    assert two[:9] != two[9:]


def test_pass_sampling_is_the_earlier_behaviour():
    batches = _batches(9, 8, 9, "pass")
    assert [len(b) for b in batches] == [8, 1]  # what the labelled stream used to yield: a batch of one
    assert sorted(i for b in batches for i in b) == list(range(9))


def test_epoch_sampling_without_epoch_length_covers_the_set_once_in_whole_batches():
    batches = _batches(10, 4, None, "epoch")
    assert [len(b) for b in batches] == [4, 4, 4]
    assert set(i for b in batches for i in b) == set(range(10))


def test_empty_set_and_bad_values():
    assert train_sampler([], 4, 10, "epoch") is None and train_shuffle([], "epoch") is False
    assert train_shuffle([], "pass") is False and train_shuffle([1], "pass") is True
    with pytest.raises(ValueError, match="train_sampling must be one of"):
        train_sampler([1, 2], 2, 3, "passes")
    with pytest.raises(ValueError, match="train_sampling must be one of"):
        train_shuffle([1, 2], "Epoch")
    with pytest.raises(ValueError, match="epoch_length"):
        train_sampler([1, 2], 2, 0, "epoch")
