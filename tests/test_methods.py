"""Every method trains through the real SemiSupervisedTrainer; method-specific behaviour; SUFD's gradient paths."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
from ignite.engine import Events
from monai.data import DataLoader, Dataset

from medsemiseg.engines import SemiSupervisedTrainer
from medsemiseg.losses import masked_cross_entropy, masked_dice_loss
from medsemiseg.methods import (
    SUFD,
    ClassMix,
    FixMatch,
    SupMix,
    UniMatch,
    canonical_method_name,
    create_method,
    method_names,
)
from medsemiseg.networks import UNet
from medsemiseg.transforms.views import StrongAugment

K = 4
SIZE = 32
EXPECTED_TERMS = {
    "supervised": {"loss_sup"},
    "classmix": {"loss_sup", "loss_unsup", "mask_ratio"},
    "fixmatch": {"loss_sup", "loss_unsup", "mask_ratio"},
    "unimatch": {"loss_sup", "loss_s1", "loss_s2", "loss_fp", "mask_ratio"},
    "supmix": {"loss_sup", "loss_unsup", "mask_ratio", "paste_ratio"},
    "sufd": {"loss_sup", "loss_unsup", "loss_adv", "loss_d", "d_acc"},
    "supmix_sufd": {"loss_sup", "loss_unsup", "paste_ratio", "loss_adv", "loss_d", "d_acc"},
    "unimatch_supmix": {"loss_sup", "loss_s1", "loss_s2", "loss_fp", "mask_ratio", "paste_ratio"},
}


pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny networks, one thread


def _net() -> UNet:
    return UNet(in_channels=1, out_channels=K, features=(4, 4, 8, 8, 16, 4))


def _label(i: int) -> torch.Tensor:
    y = torch.zeros(1, SIZE, SIZE)
    y[0, 3 + i : 13 + i, 4:14] = 1
    y[0, 16:24, 16:28] = 2
    y[0, 26:30, 2 + i : 10 + i] = 3
    return y


def _data(n_l: int = 2, n_u: int = 4):
    lab = [{"image": 0.2 + 0.2 * _label(i) + 0.05 * torch.rand(1, SIZE, SIZE), "label": _label(i)} for i in range(n_l)]
    unl = [{"image": 0.2 + 0.2 * _label(i + 1) + 0.05 * torch.rand(1, SIZE, SIZE)} for i in range(n_u)]
    return lab, unl


def _batch(n_l: int = 2, n_u: int = 3):
    lab, unl = _data(n_l, n_u)
    labeled = {"image": torch.stack([d["image"] for d in lab]), "label": torch.stack([d["label"] for d in lab])}
    unlabeled = {"image": torch.stack([d["image"] for d in unl])}
    return labeled, unlabeled


def _engine(net: torch.nn.Module, iteration: int = 1) -> SimpleNamespace:
    return SimpleNamespace(network=net, loss_function=None, state=SimpleNamespace(iteration=iteration))


def _make(name: str, net: torch.nn.Module, **options):
    if name != "supervised":
        options.setdefault("strong_augment", StrongAugment(seed=0))
    return create_method(name, net, K, **options)


@pytest.mark.parametrize("name", method_names())
def test_method_trains_through_the_trainer(name):
    lab, unl = _data()
    net = _net()
    before = [p.detach().clone() for p in net.parameters()]
    method = _make(name, net)
    seen: list[dict] = []
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(lab), batch_size=2, shuffle=True),
        network=net, optimizer=torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9), method=method,
        unlabeled_data_loader=None if name == "supervised" else DataLoader(Dataset(unl), batch_size=2, shuffle=True),
        epoch_length=3,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: seen.append(dict(e.state.output[0])))
    trainer.run()
    assert len(seen) == 3
    for out in seen:
        assert EXPECTED_TERMS[name] <= set(out), set(out)
        for key, value in out.items():
            if key.startswith("loss"):
                assert torch.isfinite(torch.as_tensor(value)), (key, value)
    changed = [not torch.equal(a, b) for a, b in zip(before, net.parameters())]
    assert sum(changed) > len(changed) // 2


@pytest.mark.parametrize("name", ["classmix", "fixmatch", "unimatch", "supmix"])
def test_unsupervised_terms_reach_the_network(name):
    """With threshold 0 every pseudo-label counts: the unlabelled terms alone must give the student a gradient."""
    net = _net()
    labeled, unlabeled = _batch()
    method = _make(name, net, conf_threshold=0.0)
    out = method(_engine(net), labeled, unlabeled)
    terms = ["loss_s1", "loss_s2", "loss_fp"] if name == "unimatch" else ["loss_unsup"]
    for term in terms:
        assert float(out[term]) > 0, term
        grads = torch.autograd.grad(out[term], list(net.parameters()), retain_graph=True, allow_unused=True)
        assert any(g is not None and g.abs().sum() > 0 for g in grads), term
    assert float(out["mask_ratio"]) == 1.0


def test_totals_follow_the_reference_weights():
    net = _net()
    labeled, unlabeled = _batch()
    out = _make("unimatch", net)(_engine(net), labeled, unlabeled)
    expect = (out["loss_sup"] + 0.25 * out["loss_s1"] + 0.25 * out["loss_s2"] + 0.5 * out["loss_fp"]) / 2
    assert torch.allclose(out["loss"], expect)
    out = _make("fixmatch", net)(_engine(net), labeled, unlabeled)
    assert torch.allclose(out["loss"], (out["loss_sup"] + out["loss_unsup"]) / 2)
    out = _make("classmix", net, unsup_weight=0.5)(_engine(net), labeled, unlabeled)
    assert torch.allclose(out["loss"], out["loss_sup"] + 0.5 * out["loss_unsup"])


def test_classmix_teacher_is_ema_and_not_trained_by_backprop():
    lab, unl = _data()
    net = _net()
    method = _make("classmix", net)
    assert isinstance(method, ClassMix)
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(lab), batch_size=2), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), method=method,
        unlabeled_data_loader=DataLoader(Dataset(unl), batch_size=2), epoch_length=3,
    )
    trainer.run()
    assert method.ema.num_updates == 3
    assert all(p.grad is None for p in method.teacher.parameters())
    # after step 0 the teacher equals the student; later updates keep it between the two weight sets
    assert any(not torch.equal(a, b) for a, b in zip(method.teacher.parameters(), net.parameters()))


def test_supmix_class_selection_modes():
    net = _net()
    labeled, unlabeled = _batch()
    ident = torch.nn.Identity()
    fixed = SupMix(net, K, supmix_mode="fixed", supmix_classes=[1], strong_augment=ident)
    out = fixed(_engine(net), labeled, unlabeled)
    area1 = float((labeled["label"] == 1).float().mean())
    assert float(out["paste_ratio"]) == pytest.approx(area1, rel=1e-5)  # all labelled images have the same area
    everything = SupMix(net, K, supmix_mode="all", strong_augment=ident)
    fg = float((labeled["label"] > 0).float().mean())
    assert float(everything(_engine(net), labeled, unlabeled)["paste_ratio"]) == pytest.approx(fg, rel=1e-5)
    half = SupMix(net, K, supmix_mode="random_half", strong_augment=ident)
    assert 0 < float(half(_engine(net), labeled, unlabeled)["paste_ratio"]) < fg
    absent = SupMix(net, 5, supmix_mode="fixed", supmix_classes=[4], strong_augment=ident)
    net5 = UNet(in_channels=1, out_channels=5, features=(4, 4, 8, 8, 16, 4))
    assert float(absent(_engine(net5), labeled, unlabeled)["paste_ratio"]) == 0.0
    with_cm = SupMix(net, K, with_classmix=True, strong_augment=ident)
    assert torch.isfinite(with_cm(_engine(net), labeled, unlabeled)["loss"])
    with pytest.raises(ValueError, match="supmix_mode"):
        SupMix(net, K, supmix_mode="some")
    with pytest.raises(ValueError, match="outside"):
        SupMix(net, K, supmix_classes=[7])


def test_supmix_pasted_pixels_are_always_trained_on():
    """Pasted pixels carry ground truth with confidence 1, so even the highest threshold (1.0, which the untrained
    teacher's softmax never reaches) keeps them. (Thresholds above 1 are refused since options are validated.)"""
    net = _net()
    labeled, unlabeled = _batch()
    method = SupMix(net, K, supmix_mode="all", conf_threshold=1.0, strong_augment=torch.nn.Identity())
    out = method(_engine(net), labeled, unlabeled)
    assert float(out["mask_ratio"]) == pytest.approx(float(out["paste_ratio"]))
    assert float(out["loss_unsup"]) > 0


def test_sufd_adversarial_term_reaches_the_segmentation_network_but_not_the_discriminator():
    net = _net()
    labeled, unlabeled = _batch()
    method = _make("supmix_sufd", net, adv_weight=1.0)
    assert isinstance(method, SUFD) and isinstance(method.base, SupMix)
    out = method(_engine(net, iteration=1), labeled, unlabeled)
    enc = list(net.down_4.parameters())
    grads = torch.autograd.grad(out["loss_adv"], enc, retain_graph=True)
    assert all(g.abs().sum() > 0 for g in grads)
    out["loss"].backward()
    assert all(p.grad is None for p in method.discriminator.parameters())  # D is frozen in the seg backward
    assert all(p.requires_grad for p in method.discriminator.parameters())  # ... and unfrozen afterwards
    assert out["feat_l"].shape[1] == net.feature_channels and not out["feat_u"].requires_grad


def test_sufd_discriminator_step_leaves_the_segmentation_network_bit_identical():
    net = _net()
    labeled, unlabeled = _batch()
    method = _make("sufd", net)
    out = method(_engine(net), labeled, unlabeled)
    seg_before = {k: v.clone() for k, v in net.state_dict().items()}
    d_before = [p.detach().clone() for p in method.discriminator.parameters()]
    method.discriminator_step.step(out["feat_l"], out["feat_u"])
    for k, v in net.state_dict().items():
        assert torch.equal(v, seg_before[k]), k
    assert any(not torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))
    assert all(p.grad is None for p in net.parameters())


def test_sufd_warmup_and_seg_optimiser_never_touch_the_discriminator():
    lab, unl = _data()
    net = _net()
    method = _make("supmix_sufd", net, warmup_iters=2, adv_weight=0.01)
    method.discriminator_step.start_iter = 10**6  # isolate the segmentation step
    d_before = [p.detach().clone() for p in method.discriminator.parameters()]
    adv: list[float] = []
    trainer = SemiSupervisedTrainer(
        device="cpu", max_epochs=1, train_data_loader=DataLoader(Dataset(lab), batch_size=2), network=net,
        optimizer=torch.optim.SGD(net.parameters(), lr=0.1), method=method,
        unlabeled_data_loader=DataLoader(Dataset(unl), batch_size=2), epoch_length=3,
    )
    trainer.add_event_handler(Events.ITERATION_COMPLETED, lambda e: adv.append(float(e.state.output[0]["loss_adv"])))
    trainer.run()
    assert adv[0] == 0.0 and adv[1] == 0.0 and adv[2] > 0.0
    assert all(torch.equal(a, b) for a, b in zip(d_before, method.discriminator.parameters()))


def test_sufd_on_prediction_maps_and_other_bases():
    net = _net()
    labeled, unlabeled = _batch()
    m = _make("sufd", net, feature_source="prediction")
    assert m.discriminator.in_channels == K
    out = m(_engine(net), labeled, unlabeled)
    assert out["feat_u"].shape[1] == K
    for name in ("fixmatch_sufd", "unimatch+sufd"):
        out = _make(name, net)(_engine(net), labeled, unlabeled)
        assert torch.isfinite(out["loss"]) and "loss_adv" in out
    m = _make("sufd", net, feature_index=2)
    assert m.discriminator.in_channels == net.encoder_channels[2]


def test_create_method_names_and_errors():
    net = _net()
    assert canonical_method_name("SupMix+SUFD") == "supmix_sufd"
    assert isinstance(_make("unimatch", net), UniMatch)
    assert isinstance(_make("fixmatch", net), FixMatch)
    with pytest.raises(ValueError, match="supervised, classmix, fixmatch, unimatch, supmix, sufd, supmix_sufd"):
        create_method("meanteacher", net, K)
    with pytest.raises(TypeError, match="conf_treshold"):
        create_method("fixmatch", net, K, conf_treshold=0.9)
    with pytest.raises(TypeError, match="SUFD options"):
        create_method("supmix", net, K, adv_weight=0.1)
    with pytest.raises(ValueError, match="num_classes"):
        create_method("supervised", net, 1)


def test_masked_losses():
    logits = torch.zeros(2, 3, 4, 4)
    logits[:, 1] = 5.0
    target = torch.ones(2, 4, 4, dtype=torch.long)
    ce_all = masked_cross_entropy(logits, target)
    mask = torch.zeros(2, 4, 4, dtype=torch.bool)
    mask[0] = True
    assert masked_cross_entropy(logits, target, mask) == pytest.approx(float(ce_all) / 2, rel=1e-5)
    assert masked_cross_entropy(logits, target, mask, normalize="valid") == pytest.approx(float(ce_all), rel=1e-4)
    assert float(masked_cross_entropy(logits, target, torch.zeros_like(mask))) == 0.0
    # Dice: perfect prediction on valid pixels -> near 0, ignored pixels do not count
    wrong = target.clone()
    wrong[1] = 2
    perfect = masked_dice_loss(logits * 10, target, None, include_background=False)
    assert float(masked_dice_loss(logits * 10, wrong, mask, include_background=False)) == pytest.approx(float(perfect), abs=1e-4)
    assert float(masked_dice_loss(logits * 10, wrong, None, include_background=False)) > 0.3
    assert float(masked_dice_loss(logits, target, torch.zeros_like(mask))) == pytest.approx(0.0, abs=1e-6)
    with pytest.raises(ValueError, match="integer map"):
        masked_cross_entropy(logits, target[:, None])


def test_compare_methods_script_smoke(capsys):
    import importlib.util
    from pathlib import Path

    path = Path(__file__).resolve().parents[1] / "scripts" / "compare_methods.py"
    spec = importlib.util.spec_from_file_location("compare_methods", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    args = ["--iterations", "2", "--methods", "supervised,supmix_sufd", "--size", "32", "--n-labeled", "4",
            "--n-unlabeled", "4", "--n-test", "2", "--batch-labeled", "2", "--batch-unlabeled", "2"]
    threads = torch.get_num_threads()
    try:
        assert module.main(args) == 0
    finally:
        torch.set_num_threads(threads)
        from monai.utils import set_determinism

        set_determinism(seed=None)
    out = capsys.readouterr().out
    assert "| supervised |" in out and "| supmix_sufd |" in out and "x sup" in out
    # --method-options reaches the method (an unknown option is create_method's error, not silently dropped)
    with pytest.raises(TypeError, match="no_such_option"):
        module.main(args[:2] + ["--methods", "supervised", "--method-options", '{"supervised": {"no_such_option": 1}}']
                    + args[4:])


@pytest.mark.parametrize("cls", [FixMatch, UniMatch])
def test_labeled_logits_ignore_the_unlabeled_batch_unless_joint_forward(cls):
    """Default: separate labelled / weak forwards, so the labelled prediction (BatchNorm batch statistics) does not
    depend on which unlabelled images share the iteration; ``joint_forward=True`` (the references) makes it depend."""
    labeled, unlabeled = _batch(2, 3)
    other = {"image": unlabeled["image"].flip(-1) * 2.0}
    for joint in (False, True):
        net = _net().train()
        method = cls(K, strong_augment=StrongAugment(seed=0), joint_forward=joint)
        preds = []
        for unl in (unlabeled, other):
            torch.manual_seed(0)
            preds.append(method(_engine(net), labeled, unl)["pred"].detach())
        assert torch.equal(preds[0], preds[1]) != joint


def test_fixmatch_weak_pass_builds_no_graph_unless_sufd_needs_its_features(monkeypatch):
    """The separate weak forward only makes (detached) pseudo-labels, so it keeps no autograd graph; loss and
    gradients are those of a weak pass with a graph. SUFD on FixMatch asks for the weak view's features and gets them
    with autograd (its adversarial term trains through them)."""
    import contextlib

    labeled, unlabeled = _batch(2, 3)
    init = _net().state_dict()

    def step(name):
        net = _net().train()
        net.load_state_dict(init)
        first_conv = next(m for m in net.modules() if isinstance(m, torch.nn.Conv2d))
        seen = []
        first_conv.register_forward_pre_hook(lambda mod, args: seen.append(torch.is_grad_enabled()))
        torch.manual_seed(0)
        out = _make(name, net)(_engine(net), labeled, unlabeled)
        out["loss"].backward()
        return seen, out, [p.grad.clone() for p in net.parameters()]

    seen, out, grads = step("fixmatch")
    assert seen == [True, False, True]  # labelled, weak (no graph), strong
    seen_sufd, out_sufd, _ = step("fixmatch_sufd")
    assert seen_sufd[:2] == [True, True] and torch.isfinite(out_sufd["loss_adv"])
    import medsemiseg.methods.fixmatch as fixmatch_module

    class _WeakPassWithGraph:  # the old code path: torch as fixmatch.py sees it, minus the grad switch
        def __getattr__(self, name):
            return getattr(torch, name)

        @staticmethod
        def set_grad_enabled(mode):
            return contextlib.nullcontext()

    monkeypatch.setattr(fixmatch_module, "torch", _WeakPassWithGraph())
    seen_old, out_old, grads_old = step("fixmatch")
    assert seen_old == [True, True, True]
    assert torch.equal(out["loss"], out_old["loss"])
    assert all(torch.equal(a, b) for a, b in zip(grads, grads_old))


def test_requires_unlabeled_follows_the_method_class_without_building_it():
    from medsemiseg.methods import requires_unlabeled

    assert not requires_unlabeled("supervised")
    assert all(requires_unlabeled(m) for m in method_names() if m != "supervised")
    assert requires_unlabeled("SupMix+SUFD") and requires_unlabeled("unimatch_sufd")
    with pytest.raises(ValueError, match="unknown method"):
        requires_unlabeled("meanteacher")


@pytest.mark.parametrize("name", ["classmix", "fixmatch", "unimatch"])
def test_mixing_methods_refuse_an_unlabeled_batch_of_one(name):
    """Image i's mix partner is image i-1: in a batch of one it is itself, and the mixing would silently do nothing."""
    net = _net()
    labeled, unlabeled = _batch(n_u=1)
    with pytest.raises(ValueError, match="unlabeled_batch_size to 2 or more"):
        _make(name, net)(_engine(net), labeled, unlabeled)
    # SupMix pastes from the labelled batch and needs no unlabelled partner
    assert torch.isfinite(_make("supmix", net)(_engine(net), labeled, unlabeled)["loss"])


def test_dicece_settings_documented_as_unimatch_medical_supervised_loss():
    """docs/methods.md: UniMatch's medical `(CE + DiceLoss)/2` is MONAI DiceCELoss with these settings (its DiceLoss
    squares, sums over the batch, smooths by 1e-5, averages all classes) -- the same Dice as `masked_dice_loss`."""
    from monai.losses import DiceCELoss

    torch.manual_seed(0)
    logits = torch.randn(3, K, 8, 8)
    target = torch.randint(0, K, (3, 1, 8, 8))
    reference = 0.5 * (torch.nn.functional.cross_entropy(logits, target[:, 0]) + masked_dice_loss(logits, target[:, 0], None))
    exact = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5, squared_pred=True, batch=True)
    assert float(exact(logits, target)) == pytest.approx(float(reference), rel=1e-5)
    halved = DiceCELoss(to_onehot_y=True, softmax=True, lambda_dice=0.5, lambda_ce=0.5)
    assert abs(float(halved(logits, target)) - float(reference)) > 1e-3  # the weights alone are not the reference


# (method, option, value, error type, what the message must say besides the method, the option and the value)
BAD_OPTIONS = [
    ("classmix", "conf_threshold", 1.5, ValueError, r"\[0, 1\]"),
    ("supmix", "conf_threshold", -0.1, ValueError, r"\[0, 1\]"),
    ("fixmatch", "conf_threshold", "high", TypeError, r"\[0, 1\]"),
    ("unimatch", "conf_threshold", float("nan"), ValueError, r"\[0, 1\]"),
    ("fixmatch", "cutmix_p", 2, ValueError, r"\[0, 1\]"),
    ("unimatch", "fp_dropout", 1.2, ValueError, r"\[0, 1\]"),
    ("unimatch", "loss_weights", (0.25, -0.25, 0.5), ValueError, ">= 0"),
    ("classmix", "unsup_weight", -1, ValueError, ">= 0"),
    ("classmix", "unsup_weight", float("inf"), ValueError, ">= 0"),
    ("supmix", "ema_alpha", 1.01, ValueError, r"\[0, 1\]"),
    ("classmix", "rampup_iters", -5, ValueError, ">= 0"),
    ("supmix", "rampup_iters", 2.5, TypeError, ">= 0"),
    ("fixmatch", "unsup_loss", "mse", ValueError, "'ce', 'dice', 'ce\\+dice'"),
    ("fixmatch", "joint_forward", "false", TypeError, "True or False"),
    ("supmix", "with_classmix", "no", TypeError, "True or False"),
    ("supmix", "supmix_classes", [1, 7], ValueError, "0..3"),
    ("supmix", "supmix_classes", ["ggo"], TypeError, "class id"),
    ("supmix", "labeled_pairing", "sorted", ValueError, "'random', 'cycle'"),
    ("supmix_sufd", "adv_weight", -1, ValueError, ">= 0"),
    ("sufd", "warmup_iters", -1, ValueError, ">= 0"),
    ("supmix_sufd", "d_lr", 0.0, ValueError, "> 0"),
    ("sufd", "d_betas", (0.9, 1.0), ValueError, r"\[0, 1\)"),
    ("sufd", "feature_index", 9, ValueError, "-5..4"),
    ("supmix_sufd", "feature_source", "logits", ValueError, "'encoder', 'prediction'"),
    ("supmix_sufd", "conf_threshold", 1.5, ValueError, r"\[0, 1\]"),
    ("supervised", "sup_loss", "dice", TypeError, "callable"),
]


@pytest.mark.parametrize("name, option, value, exc, valid", BAD_OPTIONS, ids=[f"{b[0]}-{b[1]}={b[2]!r}" for b in BAD_OPTIONS])
def test_bad_method_options_are_refused_naming_method_option_value_and_range(name, option, value, exc, valid):
    # conf_threshold=1.5 used to be accepted (no pseudo-label is ever used), adv_weight=-1 silently switched SUFD
    # off, conf_threshold='high' failed with "could not convert string to float" naming no option
    net = _net()
    with pytest.raises(exc) as err:
        _make(name, net, **{option: value})
    msg = str(err.value)
    assert msg.startswith(f"create_method({name!r})"), msg
    assert f"{option}=" in msg and repr(value) in msg and re.search(valid, msg), msg


def test_bad_options_given_to_the_classes_directly_name_the_class():
    net = _net()
    with pytest.raises(ValueError, match=r"SupMix\(conf_threshold=1.5\).*\[0, 1\]"):
        SupMix(net, K, conf_threshold=1.5)
    with pytest.raises(ValueError, match=r"UniMatch\(cutmix_p=-1\)"):
        UniMatch(K, cutmix_p=-1)
    base = ClassMix(net, K, strong_augment=StrongAugment(seed=0))
    with pytest.raises(ValueError, match=r"SUFD\(adv_weight=-1\).*>= 0"):
        SUFD(base, torch.nn.Conv2d(16, 1, 1), adv_weight=-1)
    # valid edge values are accepted as they are
    m = create_method("supmix_sufd", net, K, conf_threshold=1, adv_weight=0, warmup_iters=3.0, with_classmix=1)
    assert m.base.conf_threshold == 1.0 and m.adv_weight == 0.0 and m.warmup_iters == 3 and m.base.with_classmix is True


@pytest.mark.parametrize("name, base, base_option", [("supmix_sufd", "SupMix", "supmix_mode"),
                                                     ("sufd", "ClassMix", "ema_alpha"),
                                                     ("unimatch_sufd", "UniMatch", "fp_dropout")])
def test_unknown_option_of_a_sufd_variant_lists_base_and_sufd_options(name, base, base_option):
    net = _net()
    with pytest.raises(TypeError) as err:
        create_method(name, net, K, conf_treshold=0.9)
    msg = str(err.value)
    assert msg.startswith(f"create_method({name!r}): unknown option(s) ['conf_treshold']"), msg
    assert base_option in msg and base in msg
    for sufd_option in ("adv_weight", "warmup_iters", "feature_index", "feature_source", "d_lr", "d_betas",
                        "discriminator_kwargs"):
        assert sufd_option in msg, (sufd_option, msg)
