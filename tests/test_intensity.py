"""CT windowing and fundus normalisation dictionary transforms."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from monai.data import MetaTensor
from monai.transforms import Compose

from medsemiseg.transforms import LUNG_WINDOW, CTWindowd, FundusNormalized


def test_ct_window_maps_hu_to_unit_range():
    hu = torch.tensor([[[-2000.0, -1250.0, -500.0, 250.0, 3000.0]]])  # (1, 1, 5)
    label = torch.tensor([[[0, 1, 2, 3, 0]]])
    out = CTWindowd("image")({"image": hu, "label": label})
    torch.testing.assert_close(out["image"], torch.tensor([[[0.0, 0.0, 0.5, 1.0, 1.0]]]))
    assert out["image"].dtype == torch.float32
    assert out["label"] is label  # labels untouched


def test_ct_window_defaults_keep_all_lesion_classes_distinct():
    c, w = LUNG_WINDOW
    t = CTWindowd("image")
    assert (t.window_center, t.window_width) == (c, w)
    # lung, ground-glass, consolidation, effusion (typical HU) must all lie strictly inside (0, 1)
    hu = torch.tensor([[[-900.0, -500.0, 0.0, 20.0]]])
    v = t({"image": hu})["image"].flatten()
    assert ((v > 0) & (v < 1)).all() and (v.diff() > 0).all()


def test_ct_window_custom_and_metatensor():
    img = MetaTensor(torch.full((1, 4, 4), 40.0), meta={"filename_or_obj": "x.nii.gz"})
    out = CTWindowd(["image"], window_center=40, window_width=400)({"image": img})["image"]
    assert isinstance(out, MetaTensor) and out.meta["filename_or_obj"] == "x.nii.gz"
    torch.testing.assert_close(out.as_tensor(), torch.full((1, 4, 4), 0.5))
    with pytest.raises(ValueError, match="window_width"):
        CTWindowd("image", window_width=0)
    with pytest.raises(KeyError):
        CTWindowd("image")({"label": img})
    assert "image" not in CTWindowd("image", allow_missing_keys=True)({"label": img})


def test_fundus_normalize():
    rgb = torch.tensor([0.0, 255.0, 51.0]).reshape(3, 1, 1).repeat(1, 2, 2).to(torch.uint8)
    out = FundusNormalized("image")({"image": rgb})["image"]
    torch.testing.assert_close(out[:, 0, 0], torch.tensor([0.0, 1.0, 0.2]))
    std = FundusNormalized("image", mean=(0.5, 0.5, 0.2), std=(0.5, 0.25, 1.0))({"image": rgb})["image"]
    torch.testing.assert_close(std[:, 0, 0], torch.tensor([-1.0, 2.0, 0.0]))
    out_np = FundusNormalized("image")({"image": np.full((3, 2, 2), 255, np.uint8)})["image"]
    assert torch.allclose(out_np, torch.ones(3, 2, 2))


def test_fundus_normalize_errors():
    with pytest.raises(ValueError, match="both mean and std"):
        FundusNormalized("image", mean=(0.5, 0.5, 0.5))
    with pytest.raises(ValueError, match="4 channels"):
        FundusNormalized("image", mean=(0.5,) * 3, std=(0.5,) * 3)({"image": torch.zeros(4, 2, 2)})


def test_in_compose():
    t = Compose([CTWindowd("image"), FundusNormalized("rgb")])
    out = t({"image": torch.zeros(1, 2, 2), "rgb": torch.full((3, 2, 2), 255.0)})
    assert out["image"].max() <= 1 and torch.allclose(out["rgb"], torch.ones(3, 2, 2))


def test_ct_intensity_by_kind_and_a_warning_when_the_data_contradict_it(caplog):
    from medsemiseg.transforms import CTIntensityd

    hu = MetaTensor(torch.tensor([[[-1000.0, -500.0], [250.0, 1000.0]]]), meta={"filename_or_obj": "ct.nii.gz"})
    byte = MetaTensor(torch.tensor([[[0.0, 51.0], [127.5, 255.0]]]), meta={"filename_or_obj": "slice.jpg"})
    with caplog.at_level("WARNING", logger="medsemiseg.transforms.intensity"):
        out = CTIntensityd("image", kind="uint8")({"image": byte})["image"]
        assert torch.allclose(out, torch.tensor([[[0.0, 0.2], [0.5, 1.0]]]))
        assert CTIntensityd("image", kind=None).kind == "hu"
        ref = CTWindowd("image")({"image": hu})["image"]
        assert torch.equal(CTIntensityd("image", kind="hu")({"image": hu})["image"], ref)
    assert caplog.text == ""  # each kind over its own kind of data: silent
    t = CTIntensityd("image", kind="hu")
    with caplog.at_level("WARNING", logger="medsemiseg.transforms.intensity"):
        t({"image": byte})
        t({"image": byte})
    assert caplog.text.count("slice.jpg") == 1 and "--intensity_kind uint8" in caplog.text  # once per transform
    caplog.clear()
    with caplog.at_level("WARNING", logger="medsemiseg.transforms.intensity"):
        CTIntensityd("image", kind="uint8")({"image": hu})
    assert "ct.nii.gz" in caplog.text and "--intensity_kind hu" in caplog.text
    with pytest.raises(ValueError, match="'hu'.*'uint8'"):
        CTIntensityd("image", kind="HUx")


def test_grey_intensity_percentile_kind_stretches_any_scale_and_the_hu_warning_names_it(caplog):
    from medsemiseg.transforms import CTIntensityd, GreyIntensityd

    assert CTIntensityd is GreyIntensityd  # the earlier name of the same transform, for configs that use it
    # an MR-like image on an arbitrary scale, 0..1000 in 1001 steps: the 0.5 / 99.5 percentiles are 5 and 995
    mr = MetaTensor(torch.arange(1001.0).reshape(1, 7, 143), meta={"filename_or_obj": "mr.h5"})
    out = GreyIntensityd("image", kind="percentile")({"image": mr})["image"]
    assert out.min() == 0 and out.max() == 1  # clipped outside the percentile range
    assert float(out[0, 0, 5]) == pytest.approx(0.0) and float(out[0, 3, 71]) == pytest.approx(0.5, abs=1e-6)
    assert float(out[0, 0, 100]) == pytest.approx(95 / 990, abs=1e-6)
    narrow = GreyIntensityd("image", kind="percentile", percentiles=(0, 100))({"image": mr})["image"]
    assert float(narrow[0, 0, 100]) == pytest.approx(0.1, abs=1e-6)
    with pytest.raises(ValueError, match="percentiles"):
        GreyIntensityd("image", kind="percentile", percentiles=(99, 1))
    # values normalised to 0-1 under the HU window: the warning says which kind fits them
    unit = MetaTensor(torch.rand(1, 4, 4), meta={"filename_or_obj": "slice_0.h5"})
    with caplog.at_level("WARNING", logger="medsemiseg.transforms.intensity"):
        GreyIntensityd("image", kind="hu")({"image": unit})
    assert "slice_0.h5" in caplog.text and "--intensity_kind percentile" in caplog.text
