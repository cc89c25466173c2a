"""Split arithmetic: fractions, counts, determinism, nesting, group-aware hold-out, CHASE protocols."""

from fractions import Fraction

import pytest

from medsemiseg.data.splits import (
    carve_heldout,
    chase_protocol_split,
    fraction_tag,
    fraction_text,
    num_labeled,
    parse_fraction,
    resolve_count,
    split_labeled,
)


@pytest.mark.parametrize(
    "value, expected",
    [("1/8", Fraction(1, 8)), ("0.25", Fraction(1, 4)), (0.5, Fraction(1, 2)), (Fraction(1, 4), Fraction(1, 4)),
     ("all", Fraction(1)), ("12", 12), (3, 3), (" 1/2 ", Fraction(1, 2))],
)
def test_parse_fraction(value, expected):
    assert parse_fraction(value) == expected
    assert type(parse_fraction(value)) is type(expected)


@pytest.mark.parametrize("bad", ["0", "3/2", "-0.1", "half", 0, True, "1/0"])
def test_parse_fraction_rejects(bad):
    with pytest.raises(ValueError):
        parse_fraction(bad)


def test_tags_and_text():
    assert [fraction_tag(v) for v in ("1/8", "0.25", "all", 12)] == ["1-8", "1-4", "all", "n12"]
    assert [fraction_text(v) for v in ("0.125", 5, "1.0")] == ["1/8", "5", "full"]


def test_num_labeled_rounds_half_up_and_keeps_one():
    assert num_labeled(72, "1/8") == 9
    assert num_labeled(29, "1/8") == 4  # 3.625
    assert num_labeled(20, "1/8") == 3  # 2.5 -> 3
    assert num_labeled(4, "1/8") == 1  # never zero labelled
    assert num_labeled(10, 7) == 7
    with pytest.raises(ValueError, match="exceeds"):
        num_labeled(5, 6)


def test_split_labeled_deterministic_disjoint_and_nested():
    items = [f"s{i:03d}" for i in range(50)]
    l8, u8 = split_labeled(items, "1/8", seed=3)
    assert split_labeled(items, "1/8", seed=3) == (l8, u8)
    assert len(l8) == 6 and sorted(l8 + u8) == items and not set(l8) & set(u8)
    l4, _ = split_labeled(items, "1/4", seed=3)
    l2, _ = split_labeled(items, "1/2", seed=3)
    assert set(l8) <= set(l4) <= set(l2)
    assert split_labeled(items, "1/8", seed=4)[0] != l8
    assert l8 == sorted(l8)  # input order kept


def test_carve_heldout_keeps_groups_whole():
    items = list(range(20))
    groups = [i // 4 for i in items]  # five volumes of four slices
    kept, carved = carve_heldout(items, 6, seed=0, groups=groups)
    assert len(carved) in (4, 8) and len(carved) % 4 == 0
    assert not {groups[i] for i in kept} & {groups[i] for i in carved}
    assert carve_heldout(items, 6, seed=0, groups=groups) == (kept, carved)
    assert carve_heldout(items, 0) == (items, [])
    k2, c2 = carve_heldout(items, 5, seed=1)
    assert len(c2) == 5 and sorted(k2 + c2) == items
    with pytest.raises(ValueError):
        carve_heldout(items, 20)


def test_resolve_count():
    assert resolve_count(0.1, 32) == 3 and resolve_count(0.2, 40) == 8 and resolve_count(5, 40) == 5
    assert resolve_count(0, 40) == 0
    with pytest.raises(ValueError):
        resolve_count(2.5, 40)


def test_chase_protocols():
    names = [f"Image_{i:02d}{e}.jpg" for i in range(1, 15) for e in "LR"]
    train, test = chase_protocol_split(names[::-1], "20/8")
    assert train == names[:20] and test[0] == "Image_11L.jpg" and test[-1] == "Image_14R.jpg"
    train, test = chase_protocol_split(names, "8/20")  # the same 8 images in the opposite role (DATA.md)
    assert train == names[20:] and test == names[:20] and train[0] == "Image_11L.jpg"
    assert [len(x) for x in chase_protocol_split(names[:14], "8/20")] == [4, 10]
    assert [len(x) for x in chase_protocol_split(names[:14], "20/8")] == [10, 4]
    with pytest.raises(ValueError, match="protocol"):
        chase_protocol_split(names, "14/14")
