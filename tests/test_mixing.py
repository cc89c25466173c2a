"""Mixing ops: CutMix boxes, ClassMix masks, SupMix class choice and paste."""

from __future__ import annotations

import pytest
import torch

from medsemiseg.transforms.mixing import (
    classes_present,
    classmix_mask,
    cutmix_box_mask,
    mix,
    select_supmix_classes,
    supmix_paste,
)


def _gen(seed):
    g = torch.Generator()
    g.manual_seed(seed)
    return g


def _random_labels(b, k, size=(20, 16), seed=0):
    """Label maps made of blocks so that every image holds several classes, some absent."""
    g = _gen(seed)
    coarse = torch.randint(0, k, (b, size[0] // 4, size[1] // 4), generator=g)
    return coarse.repeat_interleave(4, 1).repeat_interleave(4, 2)


# ----------------------------------------------------------------------------- cutmix


def test_cutmix_boxes_are_rectangles_with_area_in_range():
    sx, sy = 64, 48
    m = cutmix_box_mask(400, (sx, sy), p=1.0, generator=_gen(1))
    assert m.shape == (400, sx, sy) and m.dtype == torch.bool
    area = m.flatten(1).sum(1).float() / (sx * sy)
    # floor() of each side may shave up to one row and one column off the sampled area
    slack = (sx + sy) / (sx * sy)
    assert (area >= 0.02 - slack).all() and (area <= 0.4 + 1e-6).all()
    for i in range(0, 400, 37):  # each mask is exactly one axis-aligned box
        xs = m[i].any(1).nonzero()[:, 0]
        ys = m[i].any(0).nonzero()[:, 0]
        assert m[i].sum() == len(xs) * len(ys)
        assert m[i][xs.min() : xs.max() + 1, ys.min() : ys.max() + 1].all()
        ratio = len(ys) / len(xs)
        assert 0.3 * 0.5 < ratio < (1 / 0.3) * 2  # floor() distorts tiny boxes a little


def test_cutmix_probability_respected():
    m = cutmix_box_mask(2000, (32, 32), p=0.5, generator=_gen(2))
    frac = m.flatten(1).any(1).float().mean().item()
    assert abs(frac - 0.5) < 0.05
    assert not cutmix_box_mask(50, (32, 32), p=0.0).any()
    assert cutmix_box_mask(50, (32, 32), p=1.0).flatten(1).any(1).all()


def test_cutmix_seeded():
    a = cutmix_box_mask(5, (40, 40), p=1.0, generator=_gen(3))
    b = cutmix_box_mask(5, (40, 40), p=1.0, generator=_gen(3))
    c = cutmix_box_mask(5, (40, 40), p=1.0, generator=_gen(4))
    assert torch.equal(a, b)
    assert not torch.equal(a, c)


def test_cutmix_bad_arguments():
    with pytest.raises(ValueError, match="spatial_size"):
        cutmix_box_mask(2, (32, 32, 32))
    with pytest.raises(ValueError, match="probability"):
        cutmix_box_mask(2, (32, 32), p=1.5)


# ----------------------------------------------------------------------------- classmix


@pytest.mark.parametrize("b", [1, 2, 5])
@pytest.mark.parametrize("k", [2, 3, 6])
def test_classmix_picks_floor_half_of_present_classes(b, k):
    labels = _random_labels(b, k, seed=b * 10 + k)
    labels[0] = 0  # one image with a single class: floor(1/2) = 0 classes, empty mask
    m = classmix_mask(labels, k, generator=_gen(k))
    assert m.shape == labels.shape and m.dtype == torch.bool
    for i in range(b):
        present = labels[i].unique()
        picked = labels[i][m[i]].unique()
        assert len(picked) == len(present) // 2
        # a class is either entirely in the mask or entirely out of it
        for c in present:
            sel = m[i][labels[i] == c]
            assert sel.all() or not sel.any()
    assert not m[0].any()


def test_classmix_accepts_channel_dim_and_ignore_index():
    labels = torch.tensor([[[0, 1, 2, 3], [3, 2, 255, 0]]])  # (1, 2, 4)
    m = classmix_mask(labels[:, None], 4, generator=_gen(0), ignore_index=255)
    assert m.shape == (1, 2, 4)
    assert not m[0, 1, 2]
    assert len(labels[0][m[0]].unique()) == 2


def test_classmix_seeded_and_random():
    labels = _random_labels(4, 6, size=(32, 32))
    a = classmix_mask(labels, 6, generator=_gen(5))
    assert torch.equal(a, classmix_mask(labels, 6, generator=_gen(5)))
    assert any(not torch.equal(a, classmix_mask(labels, 6, generator=_gen(s))) for s in range(6, 12))


def test_classes_present():
    labels = torch.tensor([[[0, 0], [2, 2]], [[1, 1], [1, 9]]])
    p = classes_present(labels, 3)
    assert p.tolist() == [[True, False, True], [False, True, False]]


# ----------------------------------------------------------------------------- supmix


def test_select_supmix_classes_modes():
    labels = torch.zeros(3, 8, 8, dtype=torch.long)
    labels[0, :2] = 1
    labels[0, 2:4] = 2
    labels[1, :4] = 3
    # image 2 is background only
    fixed = select_supmix_classes(labels, 4, mode="fixed", classes=[1, 3])
    assert fixed.tolist() == [[False, True, False, False], [False, False, False, True], [False] * 4]
    allc = select_supmix_classes(labels, 4, mode="all")
    assert allc.tolist() == [[False, True, True, False], [False, False, False, True], [False] * 4]
    with_bg = select_supmix_classes(labels, 4, mode="all", include_background=True)
    assert with_bg[:, 0].all()
    half = select_supmix_classes(labels, 4, mode="random_half", generator=_gen(0))
    assert half.sum(1).tolist() == [1, 1, 0]  # ceil(2/2), ceil(1/2), nothing present
    assert (half <= allc).all()


def test_select_supmix_classes_errors():
    labels = torch.zeros(1, 4, 4, dtype=torch.long)
    with pytest.raises(ValueError, match="needs classes"):
        select_supmix_classes(labels, 3, mode="fixed")
    with pytest.raises(ValueError, match="outside 0..2"):
        select_supmix_classes(labels, 3, mode="fixed", classes=[5])
    with pytest.raises(ValueError, match="'fixed', 'all' or 'random_half'"):
        select_supmix_classes(labels, 3, mode="sometimes")


def test_select_supmix_random_half_seeded():
    labels = _random_labels(5, 6, size=(32, 32), seed=3)
    a = select_supmix_classes(labels, 6, mode="random_half", generator=_gen(1))
    assert torch.equal(a, select_supmix_classes(labels, 6, mode="random_half", generator=_gen(1)))
    assert any(
        not torch.equal(a, select_supmix_classes(labels, 6, mode="random_half", generator=_gen(s))) for s in range(2, 8)
    )
    n = select_supmix_classes(labels, 6, mode="all").sum(1)
    assert a.sum(1).tolist() == ((n + 1) // 2).tolist()


@pytest.mark.parametrize("b", [1, 2, 3, 5])
@pytest.mark.parametrize("k", [2, 4, 6])
@pytest.mark.parametrize("channel_dim", [False, True])
def test_supmix_paste_invariants(b, k, channel_dim):
    g = _gen(100 + b * k)
    size = (20, 16)
    u_img = torch.rand(b, 3, *size, generator=g)
    l_img = torch.rand(b, 3, *size, generator=g) + 10.0  # distinguishable from the unlabelled pixels
    p_u = torch.randint(0, k, (b, *size), generator=g)
    c_u = torch.rand(b, *size, generator=g) * 0.9
    y_l = _random_labels(b, k, size, seed=b + k)
    chosen = select_supmix_classes(y_l, k, mode="random_half", generator=g)
    if channel_dim:
        p_in, c_in, y_in = p_u[:, None], c_u[:, None], y_l[:, None]
    else:
        p_in, c_in, y_in = p_u, c_u, y_l
    img, tgt, conf, m = supmix_paste(u_img, p_in, c_in, l_img, y_in, chosen)
    assert img.shape == u_img.shape and tgt.shape == p_in.shape and conf.shape == c_in.shape
    assert m.shape == (b, *size) and m.dtype == torch.bool
    if channel_dim:
        tgt, conf = tgt[:, 0], conf[:, 0]
    # mask = exactly the pixels of the chosen GT classes
    expected = torch.stack([torch.isin(y_l[i], chosen[i].nonzero()[:, 0]) for i in range(b)])
    assert torch.equal(m, expected)
    mc = m[:, None].expand_as(img)
    assert torch.equal(img[mc], l_img[mc])  # pasted pixels are the labelled source pixels
    assert torch.equal(img[~mc], u_img[~mc])  # every other pixel unchanged
    assert torch.equal(tgt[m], y_l[m])  # pasted pixels carry the GT label
    assert torch.equal(tgt[~m], p_u[~m])
    assert (conf[m] == 1).all()
    assert torch.equal(conf[~m], c_u[~m])
    assert tgt.dtype == p_u.dtype and conf.dtype == c_u.dtype
    # inputs not modified in place
    assert (u_img < 1).all() and (c_u <= 0.9).all()


def test_supmix_paste_fixed_class_and_known_values():
    u = torch.zeros(1, 1, 2, 3)
    l_img = torch.arange(6.0).reshape(1, 1, 2, 3)
    y_l = torch.tensor([[[0, 1, 2], [1, 0, 2]]])
    p_u = torch.full((1, 2, 3), 2)
    c_u = torch.full((1, 2, 3), 0.5)
    chosen = select_supmix_classes(y_l, 3, mode="fixed", classes=[1])
    img, tgt, conf, m = supmix_paste(u, p_u, c_u, l_img, y_l, chosen)
    assert m.tolist() == [[[False, True, False], [True, False, False]]]
    assert img[0, 0].tolist() == [[0.0, 1.0, 0.0], [3.0, 0.0, 0.0]]
    assert tgt.tolist() == [[[2, 1, 2], [1, 2, 2]]]
    assert conf.tolist() == [[[0.5, 1.0, 0.5], [1.0, 0.5, 0.5]]]


def test_supmix_paste_cycles_smaller_labelled_batch():
    u = torch.zeros(3, 1, 4, 4)
    l_img = torch.stack([torch.full((1, 4, 4), 1.0), torch.full((1, 4, 4), 2.0)])
    y_l = torch.ones(2, 4, 4, dtype=torch.long)
    chosen = torch.tensor([[False, True], [False, True]])
    img, _, _, m = supmix_paste(u, torch.zeros(3, 4, 4, dtype=torch.long), torch.zeros(3, 4, 4), l_img, y_l, chosen)
    assert m.all()
    assert img[:, 0, 0, 0].tolist() == [1.0, 2.0, 1.0]


def test_supmix_paste_shape_errors():
    u = torch.zeros(2, 1, 8, 8)
    with pytest.raises(ValueError, match="pseudo_label"):
        supmix_paste(u, torch.zeros(2, 4, 4), torch.zeros(2, 8, 8), u, torch.zeros(2, 8, 8), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="crop/resize"):
        supmix_paste(u, torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), torch.zeros(2, 1, 6, 6), torch.zeros(2, 6, 6), torch.zeros(2, 2, dtype=torch.bool))
    with pytest.raises(ValueError, match="chosen"):
        supmix_paste(u, torch.zeros(2, 8, 8), torch.zeros(2, 8, 8), u, torch.zeros(2, 8, 8), torch.zeros(2, dtype=torch.bool))


# ----------------------------------------------------------------------------- mix


def test_mix_broadcasts_over_channels():
    t = torch.zeros(2, 3, 4, 4)
    s = torch.ones(2, 3, 4, 4)
    m = torch.zeros(2, 4, 4, dtype=torch.bool)
    m[0, :2] = True
    out = mix(t, s, m)
    assert out[0, :, :2].eq(1).all() and out[0, :, 2:].eq(0).all() and out[1].eq(0).all()
    lab = mix(torch.zeros(2, 4, 4, dtype=torch.long), torch.full((2, 4, 4), 3), m)
    assert torch.equal(lab == 3, m)
    assert torch.equal(mix(t, s, m[:, None]), out)
    with pytest.raises(ValueError, match="same shape"):
        mix(t, s[:, :1], m)


def test_mix_with_cutmix_box_keeps_outside():
    g = _gen(7)
    a, b = torch.rand(4, 2, 16, 16, generator=g), torch.rand(4, 2, 16, 16, generator=g)
    m = cutmix_box_mask(4, (16, 16), p=1.0, generator=g)
    out = mix(a, b, m)
    mc = m[:, None].expand_as(a)
    assert torch.equal(out[mc], b[mc]) and torch.equal(out[~mc], a[~mc])


# ----------------------------------------------------------------------------- devices


def _devices():
    devs = ["meta"]
    if torch.cuda.is_available():
        devs.append("cuda")
    return devs


@pytest.mark.parametrize("device", _devices())
def test_ops_stay_on_device(device):
    b, k, size = 3, 4, (16, 16)
    y = _random_labels(b, k, size).to(device) if device != "meta" else torch.empty(b, *size, dtype=torch.long, device=device)
    m = cutmix_box_mask(b, size, p=1.0, device=device)
    assert m.device.type == device and m.shape == (b, *size)
    m2 = cutmix_box_mask(b, size, p=1.0, device=device, generator=_gen(0))  # CPU generator, data elsewhere
    assert m2.device.type == device
    cm = classmix_mask(y, k, generator=_gen(0))
    assert cm.device.type == device and cm.shape == (b, *size)
    chosen = select_supmix_classes(y, k, mode="random_half")
    chosen_fixed = select_supmix_classes(y, k, mode="fixed", classes=[1])
    assert chosen.device.type == device and chosen_fixed.device.type == device
    img = torch.zeros(b, 1, *size, device=device)
    out = supmix_paste(img, y, torch.zeros(b, *size, device=device), img, y, chosen)
    assert all(t.device.type == device for t in out)
    assert mix(img, img, m).device.type == device


@pytest.mark.gpu
def test_cuda_matches_cpu_for_same_generator():
    g = _gen(9)
    cpu = cutmix_box_mask(6, (32, 32), p=1.0, generator=g)
    g = _gen(9)
    gpu = cutmix_box_mask(6, (32, 32), p=1.0, device="cuda", generator=g)
    assert torch.equal(cpu, gpu.cpu())
    y = _random_labels(4, 5, (32, 32))
    assert torch.equal(classmix_mask(y, 5, generator=_gen(1)), classmix_mask(y.cuda(), 5, generator=_gen(1)).cpu())

