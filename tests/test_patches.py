"""Patch training and sliding-window inference: fundus photographs at their own resolution."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.inferers import SimpleInferer, SlidingWindowInferer
from monai.transforms import Compose

from medsemiseg.transforms.patches import RandPatchd, check_patch_size, whole_image_size
from medsemiseg.transforms.views import weak_transforms


def _item(with_label: bool = True) -> dict:
    image = torch.zeros(3, 96, 80)
    label = torch.zeros(1, 96, 80, dtype=torch.long)
    label[0, 70:74, 60:64] = 1  # one small vessel far from the centre
    return {"image": image, "label": label} if with_label else {"image": image}


@pytest.mark.parametrize("share", [1.0, 0.0])
def test_labelled_patches_are_centred_on_foreground_with_the_given_share(share):
    t = RandPatchd(["image", "label"], (16, 16), foreground_share=share)
    t.set_random_state(0)
    hits = 0
    for _ in range(40):
        out = t(_item())
        assert tuple(out["image"].shape) == (3, 16, 16) and tuple(out["label"].shape) == (1, 16, 16)
        hits += int(out["label"].sum() > 0)
    # every patch centred on the vessel holds it; centred on background (16 of 7680 pixels are vessel), ~never
    assert hits == 40 if share == 1.0 else hits <= 2


def test_unlabelled_items_get_a_uniform_patch_and_the_stream_is_seeded():
    a, b = RandPatchd(["image", "label"], (16, 16)), RandPatchd(["image", "label"], (16, 16))
    a.set_random_state(3)
    b.set_random_state(3)
    img = torch.arange(96 * 80, dtype=torch.float32).reshape(1, 96, 80).repeat(3, 1, 1)
    for _ in range(5):
        pa, pb = a({"image": img})["image"], b({"image": img})["image"]
        assert tuple(pa.shape) == (3, 16, 16) and torch.equal(pa, pb)


def test_weak_view_in_patch_mode_pads_small_images_and_crops_patches():
    t = Compose(weak_transforms(("image", "label"), (64, 64), mode="patch", foreground_share=0.5))
    t.set_random_state(0)
    small = {"image": torch.rand(3, 40, 100), "label": torch.ones(1, 40, 100, dtype=torch.long)}
    out = t(small)
    assert tuple(out["image"].shape) == (3, 64, 64) and tuple(out["label"].shape) == (1, 64, 64)
    assert tuple(t({"image": torch.rand(3, 100, 120)})["image"].shape) == (3, 64, 64)


def test_patch_size_setting():
    assert check_patch_size(None) is None and check_patch_size("null") is None
    assert check_patch_size([128, 96]) == [128, 96]
    for bad in ([128], [0, 64], "big", [12.5, 64]):
        with pytest.raises(ValueError, match=r"patch_size=.*--patch_size"):
            check_patch_size(bad)
    assert whole_image_size([192, 192], None) == [192, 192]
    assert whole_image_size([192, 192], [128, 128]) == [-1, -1]  # MONAI's Resized: keep each axis


def test_sliding_window_equals_whole_image_inference_when_the_image_fits_one_window():
    from medsemiseg.networks import get_network

    torch.manual_seed(0)
    net = get_network("unet", 3, 2, features=[8, 16, 32, 64, 128, 8]).eval()
    image = torch.rand(1, 3, 64, 64)
    with torch.no_grad():
        whole = SimpleInferer()(image, net)
        window = SlidingWindowInferer(roi_size=[64, 64], sw_batch_size=4, overlap=0.25, mode="gaussian")(image, net)
    assert torch.allclose(whole, window, atol=1e-5)
    # a larger image is covered by several windows: same size out, bounded windows per batch
    big = torch.rand(1, 3, 150, 130)
    with torch.no_grad():
        out = SlidingWindowInferer(roi_size=[64, 64], sw_batch_size=2, overlap=0.25, mode="gaussian")(big, net)
    assert tuple(out.shape) == (1, 2, 150, 130) and bool(torch.isfinite(out).all())
    assert np.isfinite(out.numpy()).all()
