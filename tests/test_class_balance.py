"""Class-aware pseudo-labelling on hand-built batches: adaptive SupMix's class choice and class-wise thresholds."""

from __future__ import annotations

import pytest
import torch

from medsemiseg.methods.class_balance import ClassBalance, ClassBalanceLogger, flexmatch_mapping


def _labels(shares: dict[int, float], n: int = 1000) -> torch.Tensor:
    """A (1, n) label row holding each class in the given share of its pixels."""
    out = torch.zeros(1, n, dtype=torch.long)
    start = 0
    for c, s in shares.items():
        k = int(round(s * n))
        out[0, start:start + k] = c
        start += k
    return out


def test_a_class_missing_from_the_confident_pseudo_labels_is_chosen_one_at_its_prior_is_not():
    b = ClassBalance(3, tau=0.95, momentum=0.0)  # momentum 0: the statistics are this batch's
    b.observe_labels(_labels({0: 0.7, 1: 0.2, 2: 0.1}))  # prior 0.7 / 0.2 / 0.1
    plabel = _labels({0: 0.78, 1: 0.22})  # the teacher never says class 2
    b.observe_pseudo_labels(plabel, torch.ones_like(plabel, dtype=torch.bool))
    assert b.share.tolist() == pytest.approx([0.78, 0.22, 0.0])
    present = torch.tensor([[True, True, True], [True, True, False]])
    chosen = b.choose(present)
    assert chosen.tolist() == [[False, False, True], [False, False, False]]  # class 2 where the image has it
    # class 1 now falls short (0.15 < 0.9 * 0.2) and class 2 reaches its prior: the choice follows
    plabel = _labels({0: 0.75, 1: 0.15, 2: 0.10})
    b.observe_pseudo_labels(plabel, torch.ones_like(plabel, dtype=torch.bool))
    assert b.short_classes().tolist() == [False, True, False]
    # only confident pixels count: class 2 predicted, but never confidently, is short again
    b.observe_pseudo_labels(plabel, plabel != 2)
    assert b.short_classes().tolist()[2] is True
    assert b.chosen_counts.tolist() == [0.0, 0.0, 1.0] and b.steps == 1


def test_classwise_thresholds_follow_each_classs_learning_status():
    b = ClassBalance(3, tau=0.95, momentum=0.0, floor=0.3)
    assert b.thresholds().tolist() == [0.95] * 3  # before any statistics: the global threshold
    b.observe_labels(_labels({0: 0.7, 1: 0.2, 2: 0.1}))
    # all of class 0's and class 1's expected pixels are confident, 60 % of class 2's
    plabel = _labels({0: 0.7, 1: 0.2, 2: 0.1})
    conf = torch.ones(plabel.shape)
    conf[0, 960:] = 0.2  # the last 40 of class 2's 100 pixels are unsure
    b.observe_pseudo_labels(plabel, conf >= 0.95, conf)
    thr = b.thresholds()
    assert thr[0] == pytest.approx(0.95) and thr[1] == pytest.approx(0.95)  # fully learned classes keep tau
    assert thr[2] == pytest.approx(0.95 * float(flexmatch_mapping(torch.tensor(0.6))))  # 0.95 * 0.6 / 1.4
    # a class the model hardly produces gets the floor, and its pixels pass at that confidence
    conf[0, 900:] = 0.6
    b.observe_pseudo_labels(plabel, conf >= 0.95, conf)
    assert float(b.thresholds()[2]) == pytest.approx(0.3)
    assert b.confident(torch.tensor([0.55, 0.55]), torch.tensor([2, 1])).tolist() == [True, False]
    # learning status counts confidence >= tau, not the class-wise thresholds (no feedback loop)
    b.observe_pseudo_labels(plabel, torch.ones_like(conf, dtype=torch.bool), conf)
    assert float(b.thresholds()[2]) == pytest.approx(0.3)
    # FlexMatch's warm-up: while most pixels are unsure, every class's threshold is low (here: the floor)
    conf[:] = 0.5
    b.observe_pseudo_labels(plabel, conf >= 0.95, conf)
    assert b.thresholds().tolist() == pytest.approx([0.3, 0.3, 0.3])
    conf[0, :500] = 0.99  # half the pixels (class 0's) sure: status 500/700 vs unused 0.5
    b.observe_pseudo_labels(plabel, conf >= 0.95, conf)
    assert float(b.thresholds()[0]) == pytest.approx(0.95)


def test_statistics_are_exponential_averages_bias_corrected_and_round_trip_a_checkpoint():
    b = ClassBalance(2, tau=0.9, momentum=0.5)
    b.observe_labels(_labels({0: 1.0}))
    assert b.prior.tolist() == pytest.approx([1.0, 0.0])  # the first batch counts fully
    b.observe_labels(_labels({0: 0.5, 1: 0.5}))
    assert b.prior.tolist() == pytest.approx([(0.25 + 0.5 * 0.5) / 0.75, 0.25 / 0.75])
    b2 = ClassBalance(2, tau=0.9, momentum=0.5)
    b2.load_state_dict(b.state_dict())
    assert b2.prior.tolist() == b.prior.tolist()
    for bad in ({"momentum": 1.0}, {"floor": 0.95}, {"tolerance": 0.0}):
        with pytest.raises(ValueError):
            ClassBalance(2, tau=0.9, **bad)


def test_the_epoch_log_puts_the_statistics_in_the_engine_metrics(caplog):
    from types import SimpleNamespace

    b = ClassBalance(2, tau=0.95, momentum=0.0)
    b.observe_labels(_labels({0: 0.9, 1: 0.1}))
    b.observe_pseudo_labels(_labels({0: 1.0}), torch.ones(1, 1000, dtype=torch.bool))
    b.choose(torch.tensor([[True, True]]))
    engine = SimpleNamespace(state=SimpleNamespace(metrics={}, epoch=3, epoch_length=5, iteration=14))
    log = ClassBalanceLogger(b, thresholds=True, adaptive=True)
    with caplog.at_level("INFO", logger="medsemiseg.methods.class_balance"):
        log._at_epoch_end(engine)  # not the epoch's last iteration: nothing yet
        assert engine.state.metrics == {}
        engine.state.iteration = 15
        log._at_epoch_end(engine)
    m = engine.state.metrics
    assert m["class/prior/1"] == pytest.approx(0.1) and m["class/pl_share/1"] == 0.0
    assert m["class/supmix_chosen/1"] == 1.0 and "class/threshold/0" in m
    assert "class balance, epoch 3" in caplog.text and b.steps == 0  # the epoch's choices restart


@pytest.mark.parametrize("name, options", [
    ("supmix", {"supmix_mode": "adaptive"}),
    ("supmix_sufd", {"supmix_mode": "adaptive", "threshold_mode": "classwise"}),
    ("classmix", {"threshold_mode": "classwise"}),
    ("fixmatch", {"threshold_mode": "classwise"}),
    ("unimatch", {"threshold_mode": "classwise"}),
])
def test_every_method_trains_a_step_with_the_class_aware_options(name, options):
    from ignite.engine import Engine

    from medsemiseg.methods import create_method
    from medsemiseg.networks import get_network

    torch.manual_seed(0)
    net = get_network("unet", 1, 3, features=[4, 4, 8, 8, 16, 4])
    method = create_method(name, net, 3, **options)
    assert "class_balance" in method.checkpoint_objects()
    labeled = {"image": torch.rand(2, 1, 32, 32), "label": torch.randint(0, 3, (2, 1, 32, 32))}
    unlabeled = {"image": torch.rand(2, 1, 32, 32)}
    engine = Engine(lambda e, b: None)
    engine.network = net
    engine.loss_function = None
    out = method(engine, labeled, unlabeled)
    assert torch.isfinite(out["loss"]) and out["loss"].requires_grad
    balance = method.class_balance if hasattr(method, "class_balance") and method.class_balance is not None \
        else method.base.class_balance
    assert not torch.isnan(balance.prior).any()  # the step fed the statistics
    with pytest.raises(ValueError, match="threshold_mode"):
        create_method(name, net, 3, **{**options, "threshold_mode": "per-class"})
