"""Paired differences to supervised (same fraction and seed), their t intervals and the share of the label gap."""

from __future__ import annotations

import math

import pytest

from medsemiseg.benchmark.paired import label_gap, paired_differences, paired_markdown, t_interval


def _rows():
    rows = []
    for s, (sup, semi) in enumerate([(0.50, 0.53), (0.40, 0.42), (0.45, 0.49)]):  # seeds differ more than methods
        rows.append({"method": "supervised", "fraction": "1/8", "seed": s, "miou": sup, "iou/vessel": sup - 0.4})
        rows.append({"method": "supmix", "fraction": "1/8", "seed": s, "miou": semi, "iou/vessel": semi - 0.4})
        rows.append({"method": "supervised", "fraction": "full", "seed": s, "miou": 0.60, "iou/vessel": 0.2})
    rows.append({"method": "fixmatch", "fraction": "1/8", "seed": 0, "miou": 0.40, "iou/vessel": 0.0})
    return rows


def test_t_interval_matches_the_textbook_values():
    mu, lo, hi, n = t_interval([3.0, 2.0, 4.0])
    assert (mu, n) == (3.0, 3)
    assert hi - mu == pytest.approx(4.302653 * 1.0 / math.sqrt(3), rel=1e-5)  # t(0.975, 2) * sd / sqrt(n)
    assert math.isnan(t_interval([1.0])[1]) and t_interval([])[3] == 0


def test_paired_differences_pair_seeds_and_report_the_share_of_the_label_gap():
    rows = _rows()
    assert label_gap(rows, "1/8") == pytest.approx(0.60 - 0.45)
    entries = paired_differences(rows, ["vessel"], ["supervised", "supmix", "fixmatch"], ["1/8", "full"])
    supmix = next(e for e in entries if e["method"] == "supmix")
    assert supmix["mIoU"]["diffs"] == pytest.approx([3.0, 2.0, 4.0])
    assert supmix["mIoU"]["mean"] == pytest.approx(3.0) and supmix["mIoU"]["low"] > 0  # consistent: excludes 0
    assert supmix["gap_share"] == pytest.approx(3.0 / 15.0)
    # an unpaired mean comparison would see a 3-point gain inside a 5-point seed spread; pairing removes the spread
    fixmatch = next(e for e in entries if e["method"] == "fixmatch")
    assert fixmatch["n"] == 1 and fixmatch["mIoU"]["diffs"] == pytest.approx([-10.0])
    md = paired_markdown(entries, ["vessel"], "drive", minority_first=["vessel"])
    assert "| 1/8 | supmix | +3.00 | +2.00 | +4.00 | +3.00 [" in md and "] * |" in md and "+20 %" in md
    assert "1/8: 15.00" in md


def test_a_variant_is_paired_with_supervised_and_with_its_fixed_twin():
    from medsemiseg.benchmark.paired import variant_rows

    base = _rows()
    variant = [{**r, "miou": r["miou"] + 0.01} for r in base if r["method"] == "supmix"]
    rows = variant_rows(base, variant, "adaptive")
    vs_fixed = paired_differences(rows, ["vessel"], ["supmix (adaptive)"], ["1/8", "full"], baseline="supmix")
    assert vs_fixed[0]["mIoU"]["diffs"] == pytest.approx([1.0, 1.0, 1.0])
    vs_sup = paired_differences(rows, ["vessel"], ["supmix (adaptive)"], ["1/8", "full"])
    assert vs_sup[0]["mIoU"]["diffs"] == pytest.approx([4.0, 3.0, 5.0])
    md = paired_markdown(vs_fixed, ["vessel"], "drive", baseline="supmix")
    assert "paired difference to supmix" in md and "| supmix (adaptive) | +1.00 |" in md


def test_compare_grids_pairs_the_variants_methods_with_the_variants_supmix_sufd(monkeypatch):
    from types import SimpleNamespace

    from medsemiseg.benchmark import results
    from medsemiseg.benchmark.paired import compare_grids

    base_rows = [r for r in _rows() if r["method"] == "supervised"]
    variant = []
    for s, (paper, fix) in enumerate([(0.50, 0.52), (0.45, 0.46), (0.47, 0.50)]):
        variant.append({"method": "supmix_sufd", "fraction": "1/8", "seed": s, "miou": paper, "iou/vessel": 0.1})
        variant.append({"method": "fixmatch", "fraction": "1/8", "seed": s, "miou": fix, "iou/vessel": 0.1})
    grids = {"base": base_rows, "variant": variant}
    monkeypatch.setattr(results, "collect_rows", lambda cfg: grids[cfg.name])
    cfg = dict(classes=["vessel"], fractions=[SimpleNamespace(label="1/8"), SimpleNamespace(label="full")],
               table_metric="iou", task="drive")
    md = compare_grids(SimpleNamespace(name="base", **cfg), SimpleNamespace(name="variant", **cfg), "pool")
    section = md[md.index("paired difference to supmix_sufd (pool)"):]
    assert "| 1/8 | fixmatch (pool) | +2.00 | +1.00 | +3.00 | +2.00 [" in section
