"""SupMix inside UniMatch (``unimatch_supmix``) and the mean-teacher family's pseudo-label source, on hand-built
batches: pasted pixels carry their ground truth in both strong views, pseudo-labels come from the named source, no
gradient reaches them, and the feature-perturbation stream sees the pasted image."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
import torch

from medsemiseg.methods import ClassMix, SupMix, UniMatchSupMix, create_method
from medsemiseg.methods import unimatch_supmix as ums
from medsemiseg.methods.unimatch_supmix import pasted_strong_view
from medsemiseg.networks import UNet

K = 3
SIZE = 16
pytestmark = pytest.mark.usefixtures("one_thread")  # conftest.py: tiny networks, one thread


def _net(seed: int = 0) -> UNet:
    torch.manual_seed(seed)
    return UNet(in_channels=1, out_channels=K, features=(4, 4, 8, 8, 16, 4))


def _batch(n: int = 3) -> tuple[dict, dict]:
    """Labelled images whose class-1 square has intensity 1.1 (elsewhere 0.1 + 0.1 * label), unlabelled images at a
    constant 5.0 with a little noise, so a pasted pixel is told from an unlabelled one by its value."""
    labels = torch.zeros(n, 1, SIZE, SIZE)
    for i in range(n):
        labels[i, 0, 2 + i: 8 + i, 3:9] = 1
        labels[i, 0, 10:14, 2 + 2 * i: 7 + 2 * i] = 2
    images = 0.1 + 0.1 * labels + 0.9 * (labels == 1)
    unl = 5.0 + 0.01 * torch.rand(n, 1, SIZE, SIZE)
    return {"image": images, "label": labels}, {"image": unl}


def _engine(net: torch.nn.Module) -> SimpleNamespace:
    return SimpleNamespace(network=net, loss_function=None, state=SimpleNamespace(iteration=1))


def _method(net=None, **options) -> UniMatchSupMix:
    options.setdefault("strong_augment", torch.nn.Identity())
    options.setdefault("labeled_pairing", "cycle")  # unlabelled image b receives labelled image b
    return UniMatchSupMix(K, **options)


def _capture_losses(monkeypatch) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """Record ``(prediction, target, valid mask)`` of every unsupervised term, in call order (s1, s2, fp)."""
    calls: list = []
    real = ums.unsupervised_loss

    def spy(kind, pred, target, valid):
        calls.append((pred, target, valid))
        return real(kind, pred, target, valid)

    monkeypatch.setattr(ums, "unsupervised_loss", spy)
    return calls


def test_registered_with_its_sufd_variant_and_floor():
    net = _net()
    m = create_method("unimatch_supmix", net, K)
    assert isinstance(m, UniMatchSupMix) and m.supmix_classes == [1] and m.unsup_loss == "dice"
    assert isinstance(create_method("supmix+unimatch", net, K), UniMatchSupMix)
    wrapped = create_method("unimatch_supmix_sufd", net, K, supmix_mode="all", adv_weight=0.01)
    assert isinstance(wrapped.base, UniMatchSupMix) and wrapped.base.supmix_mode == "all"
    with pytest.raises(ValueError, match=r"UniMatchSupMix\(supmix_classes=\[5\]\).*0\.\.2"):
        UniMatchSupMix(K, supmix_classes=[5])
    with pytest.raises(ValueError, match=r"UniMatchSupMix\(supmix_mode='some'\)"):
        UniMatchSupMix(K, supmix_mode="some")


@pytest.mark.parametrize("cutmix_p", [0.0, 1.0])
def test_pasted_pixels_carry_their_ground_truth_in_both_strong_views(monkeypatch, cutmix_p):
    net = _net()
    labeled, unlabeled = _batch()
    calls = _capture_losses(monkeypatch)
    method = _method(supmix_mode="all", cutmix_p=cutmix_p, conf_threshold=1.0)
    out = method(_engine(net), labeled, unlabeled)
    assert len(calls) == 3 and float(out["paste_ratio"]) > 0
    y_l = labeled["label"][:, 0].long()
    # the views draw their own CutMix boxes; with p = 1 every image gets one, inside which the pixels come from the
    # previous image of the batch (the partner), pasted ground truth included
    for pred, target, valid in calls[:2]:
        fg = y_l > 0
        if cutmix_p == 0:
            expect_pasted, expect_label = fg, y_l
            assert torch.equal(target[fg], y_l[fg])
        else:
            box_pasted = valid & ~fg & torch.roll(fg, 1, 0)  # a partner's pasted pixel inside the box
            assert box_pasted.any(), "the CutMix box moved no pasted pixel: the test says nothing"
        # conf_threshold 1.0: only pasted pixels count, and each carries the ground truth of the image it came from
        src_label = torch.where(valid & ~fg, torch.roll(y_l, 1, 0), y_l)
        assert valid.any() and torch.equal(target[valid], src_label[valid])
        assert bool((target[valid] > 0).all())
    fp_target, fp_valid = calls[2][1], calls[2][2]
    assert torch.equal(fp_valid, y_l > 0) and torch.equal(fp_target[fp_valid], y_l[fp_valid])


def test_strong_view_image_and_target_follow_the_paste_and_the_box():
    labeled, unlabeled = _batch()
    method = _method(supmix_mode="fixed", supmix_classes=[1], cutmix_p=1.0)
    x_u = unlabeled["image"]
    plabel = torch.zeros(3, SIZE, SIZE, dtype=torch.long)
    conf = torch.full((3, SIZE, SIZE), 0.5)
    torch.manual_seed(3)
    v = pasted_strong_view(method, x_u, plabel, conf, labeled)
    y_l, x_l = labeled["label"][:, 0].long(), labeled["image"][:, 0]
    assert torch.equal(v["pasted_mask"], y_l == 1)
    pasted = v["mask"]
    # a pasted pixel shows the labelled image's value and its class-1 label with confidence 1, wherever CutMix put it
    assert pasted.any()
    assert torch.allclose(v["image"][:, 0][pasted], torch.tensor(1.1)) and torch.all(v["target"][pasted] == 1)
    assert torch.all(v["conf"][pasted] == 1.0)
    # everything not pasted keeps the unlabelled value, pseudo-label and confidence
    assert torch.all(v["image"][:, 0][~pasted] >= 5.0) and torch.all(v["target"][~pasted] == 0)
    assert torch.all(v["conf"][~pasted] == 0.5)
    assert torch.equal(v["pasted"][:, 0][y_l == 1], x_l[y_l == 1])


def test_pseudo_labels_come_from_the_student_weak_view_without_gradient(monkeypatch):
    net = _net()
    labeled, unlabeled = _batch()
    calls = _capture_losses(monkeypatch)
    weak_outputs: list[torch.Tensor] = []
    real_decode = net.decode

    def decode(feats, size):  # decoder calls: labelled, weak, perturbed stream (the strong views use forward)
        logits = real_decode(feats, size)
        weak_outputs.append(logits)
        return logits

    monkeypatch.setattr(net, "decode", decode)
    method = _method(supmix_mode="all", cutmix_p=0.0, conf_threshold=0.0)
    net.train()
    with torch.no_grad():
        expected = net(unlabeled["image"]).argmax(1)  # train mode, as the step's weak pass
    weak_outputs.clear()
    method(_engine(net), labeled, unlabeled)
    assert len(weak_outputs) == 3 and weak_outputs[0].requires_grad and weak_outputs[2].requires_grad
    assert not weak_outputs[1].requires_grad  # the weak pass builds no graph
    fg = labeled["label"][:, 0] > 0
    for _, target, _ in calls:
        assert not target.requires_grad and not target.dtype.is_floating_point
        assert torch.equal(target[~fg], expected[~fg])


def test_the_feature_perturbation_stream_sees_the_pasted_image(monkeypatch):
    net = _net()
    labeled, unlabeled = _batch()
    seen: list[torch.Tensor] = []
    real_encode = net.encode
    monkeypatch.setattr(net, "encode", lambda x: (seen.append(x.detach().clone()), real_encode(x))[1])
    method = _method(supmix_mode="fixed", supmix_classes=[2], cutmix_p=0.0)
    out = method(_engine(net), labeled, unlabeled)
    # encoder inputs: labelled, weak (unpasted), the perturbed stream's input, the two strong views together
    assert [x.shape[0] for x in seen] == [3, 3, 3, 6]
    x_u, x_fp = unlabeled["image"], seen[2]
    assert torch.equal(seen[1], x_u)
    m = (labeled["label"] == 2)
    assert m.any() and torch.equal(x_fp[m], labeled["image"][m]) and torch.equal(x_fp[~m], x_u[~m])
    assert torch.isfinite(out["loss_fp"]) and out["loss_fp"].requires_grad


def test_unimatch_supmix_trains_under_sufd_with_the_weak_features():
    net = _net()
    labeled, unlabeled = _batch()
    m = create_method("unimatch_supmix_sufd", net, K, strong_augment=torch.nn.Identity())
    out = m(_engine(net), labeled, unlabeled)
    assert out["feat_u"].shape[0] == 3 and torch.isfinite(out["loss"]) and "loss_adv" in out
    out["loss"].backward()
    assert any(p.grad is not None and p.grad.abs().sum() > 0 for p in net.parameters())


# -- the mean-teacher family's pseudo-label source ------------------------------------------------------------------
def _shift_student(net: torch.nn.Module) -> None:
    """Make the student's weights differ from the teacher copied at construction."""
    with torch.no_grad():
        for p in net.parameters():
            p.add_(0.3 * torch.randn_like(p))


@pytest.mark.parametrize("cls", [ClassMix, SupMix])
def test_pseudo_labels_come_from_the_named_source(cls):
    labeled, unlabeled = _batch()
    x_u = unlabeled["image"] * torch.linspace(0.1, 1.0, SIZE)  # some structure to predict
    targets = {}
    for source in ("teacher", "teacher_train_bn", "student"):
        net = _net(1)
        method = cls(net, K, strong_augment=torch.nn.Identity(), pseudo_label_source=source)
        _shift_student(net)
        net.train()
        conf, plabel = method._pseudo_label(_engine(net), x_u, {}, None)
        assert not conf.requires_grad and not plabel.requires_grad
        if source == "student":
            assert method.ema is None and "teacher" not in method.checkpoint_objects()
            assert not any(getattr(h, "teacher", None) is not None for h in method.handlers)
            with torch.no_grad():
                expect = net(x_u)
        else:
            teacher = method.teacher
            assert "teacher" in method.checkpoint_objects()
            teacher.train(source == "teacher_train_bn")
            with torch.no_grad():
                expect = teacher(x_u)
            teacher.eval()
            assert not method.teacher.training  # left in eval mode after a train-mode prediction
        assert torch.equal(plabel, expect.argmax(1)), source
        targets[source] = plabel
    # the student's weights differ from the teacher's, so its targets differ
    assert not torch.equal(targets["student"], targets["teacher"])
    assert not torch.equal(targets["teacher_train_bn"], targets["teacher"])


def test_student_source_lets_sufd_train_through_the_weak_pass(monkeypatch):
    net = _net()
    labeled, unlabeled = _batch()
    calls: list[int] = []
    real_encode = net.encode
    monkeypatch.setattr(net, "encode", lambda x: (calls.append(x.shape[0]), real_encode(x))[1])
    m = create_method("supmix_sufd", net, K, strong_augment=torch.nn.Identity(), pseudo_label_source="student")
    out = m(_engine(net), labeled, unlabeled)
    # labelled, weak (with autograd, its features go to SUFD), strong: no extra encoder pass for SUFD's features
    assert calls == [3, 3, 3]
    assert out["feat_u"].shape[0] == 3 and torch.isfinite(out["loss"])
    with pytest.raises(ValueError, match=r"pseudo_label_source='ema'.*'teacher', 'teacher_train_bn', 'student'"):
        create_method("supmix", net, K, pseudo_label_source="ema")
