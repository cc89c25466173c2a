"""Labelled / unlabelled / validation / test splits, deterministic by seed.

Two separate seeds on purpose:

- the *held-out* split (validation and test carved from the labelled pool) uses ``val_seed`` and is made once
  when a data set is prepared, so every labelled fraction and every training seed is scored on the same images;
- the *labelled subset* of the training images uses ``seed``; it is a prefix of one seeded permutation, so for a
  given seed the 1/8 labelled set is inside the 1/4 set, which is inside the 1/2 set (runs differ only by how much
  extra labelled data they get). Given the items' groups (``prepare folder --group-by``: the patient of each
  slice), the permutation is of the groups and the fraction or count is one of groups: whole patients are
  labelled, as the medical SSL literature counts them ("3 labelled cases").

Held-out carving is by *group* (the source volume / patient of a slice) so slices of one volume never straddle
training and validation/test.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Hashable, Sequence
from fractions import Fraction
from typing import Any, TypeVar, Union

import numpy as np

__all__ = [
    "LabeledFraction",
    "carve_heldout",
    "chase_protocol_split",
    "fraction_tag",
    "fraction_text",
    "num_labeled",
    "parse_fraction",
    "resolve_count",
    "split_labeled",
]

T = TypeVar("T")
LabeledFraction = Union[Fraction, int]


def parse_fraction(value: Any) -> LabeledFraction:
    """``"1/8"``, ``"0.25"``, ``0.5``, ``Fraction(1, 4)``, ``"all"`` -> a ``Fraction`` in (0, 1]; ``"12"``/``12`` -> count 12.

    An integer (or integer string) is a *count* of labelled images; anything with ``/`` or ``.`` is a fraction.
    """
    if isinstance(value, bool):
        raise ValueError(f"labeled fraction {value!r}: give 1/8, 1/4, 1/2, a decimal fraction, or a count N.")
    if isinstance(value, Fraction):
        frac = value
    elif isinstance(value, int):
        if value < 1:
            raise ValueError(f"labeled count {value} must be >= 1.")
        return value
    elif isinstance(value, float):
        frac = Fraction(value).limit_denominator(1000)
    else:
        text = str(value).strip().lower()
        if text in ("all", "full"):
            return Fraction(1)
        if re.fullmatch(r"\d+", text):
            return parse_fraction(int(text))
        try:
            frac = Fraction(text).limit_denominator(1000)
        except (ValueError, ZeroDivisionError):
            raise ValueError(
                f"labeled fraction {value!r} not understood: give 1/8, 1/4, 1/2, a decimal like 0.25, or a count N."
            ) from None
    if not 0 < frac <= 1:
        raise ValueError(f"labeled fraction {value!r} must be in (0, 1]; for a count give a whole number.")
    return frac


def fraction_tag(value: Any) -> str:
    """File-name-safe tag: ``1/8`` -> ``"1-8"``, count 12 -> ``"n12"``, 1 -> ``"all"``."""
    v = parse_fraction(value)
    if isinstance(v, int):
        return f"n{v}"
    return "all" if v == 1 else f"{v.numerator}-{v.denominator}"


def fraction_text(value: Any) -> str:
    """Canonical text for a datalist's meta: ``"1/8"``, ``"12"`` (a count) or ``"full"``.

    The whole pool is ``"full"``, not ``"1"``: read back, ``"1"`` is a count of one labelled image."""
    v = parse_fraction(value)
    return str(v) if isinstance(v, int) else f"{v.numerator}/{v.denominator}" if v != 1 else "full"


def num_labeled(n_train: int, fraction: Any) -> int:
    """How many of ``n_train`` training images are labelled: ``round(fraction * n)`` (halves up), at least 1.

    A count larger than ``n_train`` is an error rather than silently everything.
    """
    v = parse_fraction(fraction)
    if n_train <= 0:
        raise ValueError("no training images to split into labelled / unlabelled.")
    if isinstance(v, int):
        if v > n_train:
            raise ValueError(f"labeled count {v} exceeds the {n_train} training images available.")
        return v
    return max(1, min(n_train, math.floor(v * n_train + Fraction(1, 2))))


def resolve_count(spec: Any, n: int, *, name: str = "fraction") -> int:
    """``0 <= spec < 1`` -> ``round(spec * n)`` (halves up); a whole number >= 1 -> that count (``--val-fraction 5``).

    The float ``1.0`` is refused: read as a count it holds out one item, read as a share it holds out everything,
    and the user who wrote it may have meant either; the error names both spellings (a share below 1, e.g. ``0.1``,
    or the whole count ``1``)."""
    if isinstance(spec, float) and spec == 1.0:
        raise ValueError(
            f"{name} 1.0 is ambiguous: give a share of the items below 1 (e.g. {name} 0.1 for 10 %), or a whole "
            f"count without a decimal point (e.g. {name} 1 for one item). All items cannot be held out."
        )
    try:
        x = float(spec)
    except (TypeError, ValueError):
        raise ValueError(f"{name} {spec!r}: give a fraction in [0, 1) or a whole count.") from None
    if x < 0:
        raise ValueError(f"{name} {spec!r} must not be negative.")
    if x < 1:
        return int(math.floor(x * n + 0.5))
    if not x.is_integer():
        raise ValueError(f"{name} {spec!r}: a count must be a whole number.")
    return int(x)


def _permutation(n: int, seed: int) -> list[int]:
    return [int(i) for i in np.random.default_rng(int(seed)).permutation(n)]


def split_labeled(
    items: Sequence[T], fraction: Any, seed: int = 0, groups: Sequence[Hashable] | None = None
) -> tuple[list[T], list[T]]:
    """Split training ``items`` into (labelled, unlabelled), both kept in the input order.

    The labelled set is the first ``num_labeled`` entries of a permutation seeded by ``seed``, so smaller fractions
    are subsets of larger ones for the same seed, and the split depends only on (items order, fraction, seed).
    With ``groups`` (one per item) the permutation is of the groups in first-seen order and ``fraction`` counts
    groups: every item of a chosen group is labelled, no group is split.
    """
    groups = list(range(len(items))) if groups is None else list(groups)
    if len(groups) != len(items):
        raise ValueError(f"split_labeled: {len(groups)} groups for {len(items)} items.")
    order = list(dict.fromkeys(groups))
    k = num_labeled(len(order), fraction)
    chosen = {order[i] for i in _permutation(len(order), seed)[:k]}
    labeled = [it for it, g in zip(items, groups) if g in chosen]
    unlabeled = [it for it, g in zip(items, groups) if g not in chosen]
    return labeled, unlabeled


def carve_heldout(
    items: Sequence[T], count: int, seed: int = 0, groups: Sequence[Hashable] | None = None
) -> tuple[list[T], list[T]]:
    """Move about ``count`` items (whole groups at a time) out of ``items``: returns (kept, carved).

    Groups are visited in a seeded order and taken while the carved total stays at or below ``count`` (the first
    group is always taken when ``count > 0``), so the carve never splits a volume and never overshoots by more than
    needed.  Without ``groups`` every item is its own group.
    """
    n = len(items)
    if count <= 0:
        return list(items), []
    if count >= n:
        raise ValueError(f"cannot hold out {count} of {n} items and keep any for training.")
    groups = list(range(n)) if groups is None else list(groups)
    order: list[Hashable] = list(dict.fromkeys(groups))  # first-seen order, deterministic
    sizes = Counter(groups)  # (was groups.count per group: quadratic, 6 s a call at 20 000 slices)
    taken: set = set()
    total = 0
    for gi in _permutation(len(order), seed):
        g = order[gi]
        if total == 0 or total + sizes[g] <= count:
            taken.add(g)
            total += sizes[g]
        if total >= count:
            break
    if len(taken) == len(order):
        raise ValueError(f"holding out {count} items would take every group; nothing left to train on.")
    kept = [it for it, g in zip(items, groups) if g not in taken]
    carved = [it for it, g in zip(items, groups) if g in taken]
    return kept, carved


def chase_protocol_split(names: Sequence[str], protocol: str = "20/8") -> tuple[list[str], list[str]]:
    """CHASE_DB1 train / test by sorted name: ``"20/8"`` (first 20 train (01L-10R), last 8 test (11L-14R);
    mmsegmentation and most DL work) or ``"8/20"`` (older protocol, the same 8 images in the opposite role: the
    last 8 (11L-14R) train, the first 20 (01L-10R) test).

    With a number of images other than 28 (a subset, the synthetic phantom) the same proportion is used:
    ``round(20/28 * n)`` first images train for 20/8 (at least one on each side), and 8/20 swaps the two sides.
    """
    names = sorted(names)
    n = len(names)
    if protocol not in ("20/8", "8/20"):
        raise ValueError(f"CHASE protocol {protocol!r}: choose '20/8' (default) or '8/20'.")
    if n < 2:
        raise ValueError(f"CHASE split needs at least 2 images, found {n}.")
    n_first = 20
    if n != 28:
        n_first = min(n - 1, max(1, int(math.floor(n_first * n / 28 + 0.5))))
    first, last = names[:n_first], names[n_first:]
    return (first, last) if protocol == "20/8" else (last, first)
