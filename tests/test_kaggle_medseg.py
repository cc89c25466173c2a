"""Kaggle's NumPy copy of MedSeg COVID-19 CT: arrays written in its layout from the CT phantoms, read back, and
``prepare covid`` giving the same slices from the .npy files as from the equivalent NIfTI stacks."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medsemiseg.data.io import DataReadError
from medsemiseg.data.kaggle_medseg import read_npy_images, read_npy_masks
from medsemiseg.data.prepare import main as prepare_main
from medsemiseg.data.prepare import prepare_covid
from medsemiseg.data.synthetic import ct_phantom_volume


def _kaggle_arrays(n=6, size=32, seed=0):
    """(images (N, rows, cols, 1), one-hot masks (N, rows, cols, 4), hu (X, Y, Z), expected label (X, Y, Z))."""
    hu, label, _ = ct_phantom_volume(n, size, seed=seed, effusion_fraction=0.01, effusion_slice_fraction=0.5)
    assert (label == 3).any()  # effusion present in the source: the Kaggle copy has no channel for it
    images = hu.transpose(2, 1, 0)[..., None].astype(np.float64)
    channel = np.choose(label, [3, 0, 1, 2])  # bg -> background, GGO -> 0, cons -> 1, effusion -> "lungs other"
    masks = np.eye(4, dtype=np.float32)[channel.transpose(2, 1, 0)]
    expected = np.where(label == 3, 0, label).astype(np.uint8)
    return images, masks, hu, expected


def test_read_npy_images_and_one_hot_masks(tmp_path):
    images, masks, hu, expected = _kaggle_arrays()
    np.save(tmp_path / "images_medseg.npy", images)
    np.save(tmp_path / "masks_medseg.npy", masks)
    img = read_npy_images(tmp_path / "images_medseg.npy")
    lab = read_npy_masks(tmp_path / "masks_medseg.npy")
    assert img.shape == lab.shape == (1, 32, 32, 6)
    np.testing.assert_array_equal(img[0].numpy(), hu)
    np.testing.assert_array_equal(lab[0].numpy(), expected)
    # integer label stacks (N, rows, cols) are read too
    np.save(tmp_path / "labels.npy", expected.transpose(2, 1, 0))
    np.testing.assert_array_equal(read_npy_masks(tmp_path / "labels.npy")[0].numpy(), expected)


def test_npy_errors_and_not_one_hot_warning(tmp_path):
    images, masks, _, expected = _kaggle_arrays(n=2)
    np.save(tmp_path / "three.npy", masks[..., :3])
    with pytest.raises(DataReadError, match="three.npy: mask of shape .* has 3 channels"):
        read_npy_masks(tmp_path / "three.npy")
    np.save(tmp_path / "flat.npy", images[0, :, :, 0])
    with pytest.raises(DataReadError, match="flat.npy: array of shape \\(32, 32\\); expected a stack"):
        read_npy_images(tmp_path / "flat.npy")
    np.save(tmp_path / "obj.npy", np.array([{"a": 1}], dtype=object))
    with pytest.raises(DataReadError, match="obj.npy: not a readable NumPy array"):
        read_npy_images(tmp_path / "obj.npy")
    nan = images.copy()
    nan[0, 0, 0, 0] = np.nan
    np.save(tmp_path / "nan.npy", nan)
    with pytest.raises(DataReadError, match="nan.npy: array holds NaN"):
        read_npy_images(tmp_path / "nan.npy")
    np.save(tmp_path / "big.npy", (expected + 3).transpose(2, 1, 0))
    with pytest.raises(DataReadError, match=r"big.npy: labels \[4, 5\] outside 0..3"):
        read_npy_masks(tmp_path / "big.npy")
    blurred = masks.copy()
    blurred[0, 0, 0] = [0.6, 0.0, 0.0, 0.7]  # two channels set
    blurred[0, 0, 1] = 0.0  # none set
    np.save(tmp_path / "blurred.npy", blurred)
    with pytest.warns(UserWarning, match="blurred.npy: 2 of 2048 pixels do not have exactly one channel set"):
        lab = read_npy_masks(tmp_path / "blurred.npy")
    assert int(lab[0, 0, 0, 0]) == 0 and int(lab[0, 1, 0, 0]) == 1  # argmax: background; ties: first (GGO)


def test_prepare_covid_from_kaggle_npy_equals_nifti(tmp_path, capsys):
    images, masks, hu, expected = _kaggle_arrays(n=10)
    k = tmp_path / "kaggle"
    k.mkdir()
    np.save(k / "images_medseg.npy", images)
    np.save(k / "masks_medseg.npy", masks)
    np.save(k / "test_images_medseg.npy", images[:3])
    nii = tmp_path / "nifti"
    nii.mkdir()
    nib.save(nib.Nifti1Image(hu, np.eye(4)), str(nii / "images_medseg.nii.gz"))
    nib.save(nib.Nifti1Image(expected, np.eye(4)), str(nii / "masks_medseg.nii.gz"))
    nib.save(nib.Nifti1Image(hu[..., :3], np.eye(4)), str(nii / "test_images_medseg.nii.gz"))
    rc = prepare_main(["covid", "--image", str(k / "images_medseg.npy"), "--mask", str(k / "masks_medseg.npy"),
                       "--unlabeled", str(k / "test_images_medseg.npy"), "--out", str(tmp_path / "a"),
                       "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    out = capsys.readouterr().out
    assert "covid: 1 labeled slice + 9 unlabeled slices (fraction 1/8 of the 7 training slices" in out  # 6 + 3 extra
    b = prepare_covid(nii / "images_medseg.nii.gz", nii / "masks_medseg.nii.gz", tmp_path / "b",
                      unlabeled=[nii / "test_images_medseg.nii.gz"], progress=False)
    da = json.loads((tmp_path / "a" / "datalist.json").read_text())
    db = json.loads(b.read_text())
    for split in ("labeled", "unlabeled", "validation", "test"):
        assert da[split] == db[split], split
        for it in da[split]:
            for key in ("image", "label"):
                if key in it:
                    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "a" / it[key])).dataobj),
                                                  np.asarray(nib.load(str(tmp_path / "b" / it[key])).dataobj))
    assert sum(1 for it in da["unlabeled"] if it["image"].startswith("images/test_images_medseg_")) == 3
