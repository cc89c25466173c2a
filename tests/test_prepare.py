"""``python -m medsemiseg.prepare``: the issue's acceptance check, the three subcommands, splits, orientation,
output safety and one clear error per bad input."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from monai.data import load_decathlon_datalist
from PIL import Image

from medsemiseg.data.io import DataReadError, read_image, read_mask
from medsemiseg.data.prepare import main, prepare_chase, prepare_covid, prepare_folder, resplit_prepared
from medsemiseg.data.slices import LoadSliced
from medsemiseg.data.splits import num_labeled

ROOT = Path(__file__).resolve().parents[1]


def _stack(tmp_path, n=10, x=12, y=10, seed=0, spacing=(0.8, 0.9, 5.0)):
    rng = np.random.default_rng(seed)
    vol = rng.normal(-500, 300, size=(x, y, n)).astype(np.float32)
    lab = rng.integers(0, 4, size=(x, y, n)).astype(np.uint8)
    aff = np.diag([*spacing, 1.0])
    nib.save(nib.Nifti1Image(vol, aff), str(tmp_path / "tr_im.nii.gz"))
    nib.save(nib.Nifti1Image(lab, aff), str(tmp_path / "tr_mask.nii.gz"))
    return tmp_path / "tr_im.nii.gz", tmp_path / "tr_mask.nii.gz", vol, lab


def _all_entries(d):
    return {k: [e["image"] for e in d[k]] for k in ("labeled", "unlabeled", "validation", "test")}


@pytest.mark.integration
def test_acceptance_synthetic_cli_then_prepare_cli(tmp_path):
    """The issue's check, with the real command lines: labelled count matches the fraction asked."""
    pytest.importorskip("medsemiseg.data.synthetic")
    raw, out = tmp_path / "x", tmp_path / "p"
    env_py = [sys.executable, "-m"]
    subprocess.run([*env_py, "medsemiseg.data.synthetic", "--task", "covid", "--out", str(raw)], cwd=ROOT,
                   check=True, capture_output=True)
    res = subprocess.run([*env_py, "medsemiseg.prepare", "covid", "--image", str(raw / "tr_im.nii.gz"),
                          "--mask", str(raw / "tr_mask.nii.gz"), "--out", str(out), "--labeled-fraction", "1/4"],
                         cwd=ROOT, check=True, capture_output=True, text=True)
    d = json.loads((out / "datalist.json").read_text())
    n_slices = nib.load(str(raw / "tr_im.nii.gz")).shape[-1]
    c = d["meta"]["counts"]
    assert c["train"] + c["validation"] + c["test"] == n_slices
    assert len(d["labeled"]) == num_labeled(c["train"], "1/4") == round(c["train"] / 4 + 1e-9)
    assert len(d["labeled"]) + len(d["unlabeled"]) == c["train"]
    assert d["meta"]["labeled_fraction"] == "1/4" and d["meta"]["seed"] == 0
    assert res.stdout.count("\n") == 1 and f"{len(d['labeled'])} labeled" in res.stdout


def test_covid_slices_datalist_and_resplit(tmp_path):
    image, mask, vol, lab = _stack(tmp_path, n=40)
    out = tmp_path / "out"
    path = prepare_covid(image, mask, out, labeled_fraction="1/8", seed=1, progress=False)
    d = json.loads(path.read_text())
    meta = d["meta"]
    assert meta["task"] == "covid" and meta["classes"][3] == "pleural effusion" and meta["source"] == str(image)
    assert meta["counts"] == {"train": 29, "labeled": 4, "unlabeled": 25, "extra_unlabeled": 0,
                              "validation": 3, "test": 8}
    names = _all_entries(d)
    flat = sum(names.values(), [])
    assert len(flat) == len(set(flat)) == 40  # nothing shared between the four lists
    assert all("label" in e for k in ("labeled", "validation", "test") for e in d[k])
    assert all(set(e) == {"image"} for e in d["unlabeled"])
    # slices: 2D NIfTI, float32 HU and uint8 labels, spacing kept, same content as the stack
    item = d["labeled"][0]
    k = int(item["image"].split("_")[-1].split(".")[0])
    img_nii, lab_nii = nib.load(str(out / item["image"])), nib.load(str(out / item["label"]))
    assert img_nii.shape == (12, 10) and img_nii.get_data_dtype() == np.float32
    assert lab_nii.get_data_dtype() == np.uint8
    np.testing.assert_allclose(img_nii.header.get_zooms(), (0.8, 0.9))
    np.testing.assert_array_equal(np.asarray(img_nii.dataobj), vol[:, :, k])
    np.testing.assert_array_equal(np.asarray(lab_nii.dataobj), lab[:, :, k])
    np.testing.assert_allclose(img_nii.affine[2, 3], 5.0 * k)  # slice position kept
    # MONAI resolves the relative paths and LoadSliced reads the items
    items = load_decathlon_datalist(str(path), data_list_key="labeled")
    loaded = LoadSliced(["image", "label"], num_classes=4)(items[0])
    assert loaded["image"].shape == (1, 12, 10) and loaded["label"].dtype == torch.int64
    # another fraction: a superset of the 1/8 labelled slices, same validation / test, slices untouched
    p4 = resplit_prepared(out, "1/4", seed=1)
    d4 = json.loads(p4.read_text())
    assert p4.name == "datalist_1-4_seed1.json" and len(d4["labeled"]) == 7
    assert {e["image"] for e in d["labeled"]} <= {e["image"] for e in d4["labeled"]}
    assert d4["validation"] == d["validation"] and d4["test"] == d["test"]
    # another seed keeps validation / test (fixed by --val-seed at preparation)
    d_s2 = json.loads(resplit_prepared(out, "1/8", seed=2).read_text())
    assert d_s2["validation"] == d["validation"] and d_s2["labeled"] != d["labeled"]


def test_covid_unlabeled_volumes_and_dicom_series(tmp_path):
    synthetic = pytest.importorskip("medsemiseg.data.synthetic")
    w = synthetic.generate_covid(tmp_path / "raw", n_slices=10, size=64, n_unlabeled_volumes=2, unlabeled_slices=3,
                                 dicom_series=True, dicom_slices=6)
    out = tmp_path / "out"
    path = prepare_covid(w["dicom_series"], w["dicom_mask"], out, unlabeled=[w["unlabeled_dir"], w["val_im"]],
                         test_fraction=0, val_fraction=1, progress=False)
    d = json.loads(path.read_text())
    assert d["meta"]["counts"]["extra_unlabeled"] == 2 * 3 + 4
    assert len(d["validation"]) == 1 and len(d["test"]) == 0
    # slices of the (shuffled-name) series line up with the mask: the phantom's lungs are air where labels are 0
    series_vol = read_image(w["dicom_series"])
    for k in range(6):
        s = nib.load(str(out / f"images/series_01_{k:03d}.nii.gz"))
        np.testing.assert_array_equal(np.asarray(s.dataobj), series_vol[0, :, :, k].numpy())
        np.testing.assert_array_equal(
            np.asarray(nib.load(str(out / f"labels/series_01_{k:03d}.nii.gz")).dataobj),
            np.asarray(nib.load(str(w["dicom_mask"])).dataobj)[:, :, k],
        )


def test_covid_synthetic_slices_come_out_upright(tmp_path):
    """docs/architecture.md: shown upright (a[0].T) the dependent pleural effusion lies in the lower half."""
    synthetic = pytest.importorskip("medsemiseg.data.synthetic")
    w = synthetic.generate_covid(tmp_path / "raw", n_slices=24, size=64, n_unlabeled_volumes=0, dicom_series=False,
                                 effusion_slice_fraction=0.5)
    out = tmp_path / "out"
    prepare_covid(w["tr_im"], w["tr_mask"], out, progress=False)
    rows = []
    for f in sorted((out / "labels").glob("*.nii.gz")):
        upright = read_mask(f, 4)[0].numpy().T  # rows = Y
        if (upright == 3).any():
            rows.append(np.nonzero(upright == 3)[0].mean())
    assert rows and np.mean(rows) > 32


def test_covid_orientation_option_turns_image_and_mask_alike(tmp_path):
    vol = np.zeros((6, 4, 2), np.float32)
    vol[5, 0, :] = 100.0  # displayed upright: top-right corner (x=5, y=0)
    lab = (vol > 0).astype(np.uint8)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(tmp_path / "im.nii.gz"))
    nib.save(nib.Nifti1Image(lab, np.eye(4)), str(tmp_path / "m.nii.gz"))
    for orientation, op in [("rot90", np.rot90), ("flip-lr", np.fliplr), ("flip-ud", np.flipud),
                            ("transpose", np.transpose), ("rot270", lambda a: np.rot90(a, 3))]:
        out = tmp_path / orientation
        prepare_covid(tmp_path / "im.nii.gz", tmp_path / "m.nii.gz", out, test_fraction=0, val_fraction=0,
                      labeled_fraction="all", orientation=orientation, progress=False)
        img = read_image(out / "images/im_000.nii.gz")[0].numpy().T
        m = read_mask(out / "labels/im_000.nii.gz")[0].numpy().T
        np.testing.assert_array_equal(img, op(vol[:, :, 0].T))
        np.testing.assert_array_equal(m, op(lab[:, :, 0].T))


def test_covid_bad_inputs_one_clear_error(tmp_path, capsys):
    image, mask, vol, lab = _stack(tmp_path, n=6)
    nib.save(nib.Nifti1Image(lab[:, :8], np.eye(4)), str(tmp_path / "small_mask.nii.gz"))
    with pytest.raises(DataReadError, match="small_mask.nii.gz: mask size \\(12, 8, 6\\)"):
        prepare_covid(image, tmp_path / "small_mask.nii.gz", tmp_path / "o1", progress=False)
    lab5 = lab.copy()
    lab5[0, 0, 0] = 5
    nib.save(nib.Nifti1Image(lab5, np.eye(4)), str(tmp_path / "m5.nii.gz"))
    code = main(["covid", "--image", str(image), "--mask", str(tmp_path / "m5.nii.gz"), "--out", str(tmp_path / "o2")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "m5.nii.gz: label values [5]" in err
    code = main(["covid", "--image", str(image), "--mask", str(mask), "--out", str(tmp_path / "o3"),
                 "--labeled-fraction", "3/2"])
    assert code == 2 and "labeled fraction '3/2'" in capsys.readouterr().err


def test_output_folder_safety(tmp_path):
    image, mask, _, _ = _stack(tmp_path, n=10)
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(ValueError, match="not empty"):
        prepare_covid(image, mask, out, progress=False)
    prepare_covid(image, mask, out, overwrite=True, progress=False)
    assert (out / "mine.txt").read_text() == "user data"  # only our own outputs are ever replaced
    prepare_covid(image, mask, out, labeled_fraction="1/2", progress=False)  # same source: re-run allowed
    (tmp_path / "other").mkdir()
    other, other_mask, _, _ = _stack(tmp_path / "other", n=10, seed=1)
    with pytest.raises(ValueError, match="not an earlier 'covid' preparation"):
        prepare_covid(other, other_mask, out, progress=False)


def test_chase_protocols_masks_and_validation(tmp_path):
    synthetic = pytest.importorskip("medsemiseg.data.synthetic")
    synthetic.generate_chase(tmp_path / "raw", n_images=28, size=(48, 50))
    d = json.loads(prepare_chase(tmp_path / "raw", tmp_path / "a", progress=False).read_text())
    assert [e["image"] for e in d["test"]] == [f"images/Image_{i}{e}.jpg" for i in range(11, 15) for e in "LR"]
    assert d["validation"] == d["test"] and d["meta"]["validation_is_test"] is True
    assert len(d["labeled"]) == 3 and len(d["unlabeled"]) == 17  # 1/8 of 20
    for e in d["labeled"] + d["test"]:
        m = np.asarray(Image.open(tmp_path / "a" / e["label"]))
        assert m.shape == (48, 50) and set(np.unique(m)) <= {0, 1}
        assert (tmp_path / "a" / e["image"]).read_bytes() == (tmp_path / "raw" / Path(e["image"]).name).read_bytes()
    d = json.loads(prepare_chase(tmp_path / "raw", tmp_path / "b", protocol="8/20", val_fraction=2,
                                 labeled_fraction="1/2", progress=False).read_text())
    assert len(d["test"]) == 20 and len(d["validation"]) == 2 and d["meta"]["counts"]["train"] == 6
    val_children = {Path(e["image"]).name[6:8] for e in d["validation"]}
    train_children = {Path(e["image"]).name[6:8] for e in d["labeled"] + d["unlabeled"]}
    assert len(val_children) == 1 and not val_children & train_children  # both eyes of one child held out


def test_chase_missing_mask_and_empty_folder(tmp_path):
    synthetic = pytest.importorskip("medsemiseg.data.synthetic")
    synthetic.generate_chase(tmp_path / "raw", n_images=4, size=(48, 50))
    (tmp_path / "raw" / "Image_02L_1stHO.png").unlink()
    with pytest.raises(DataReadError, match="Image_02L.jpg: has no 1stHO mask"):
        prepare_chase(tmp_path / "raw", tmp_path / "a", progress=False)
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataReadError, match="empty: holds no CHASE_DB1 images"):
        prepare_chase(tmp_path / "empty", tmp_path / "b", progress=False)


def test_folder_matching_rules_and_volume_groups(tmp_path):
    src = tmp_path / "src"
    (src / "labels").mkdir(parents=True)
    (src / "unlabeled").mkdir()
    rng = np.random.default_rng(0)
    for i in range(6):  # a.png.. with labels/<name>.png, values 0..2
        Image.fromarray(rng.integers(0, 255, (8, 9), dtype=np.uint8)).save(src / f"p{i}.png")
        Image.fromarray(rng.integers(0, 3, (8, 9), dtype=np.uint8)).save(src / "labels" / f"p{i}.png")
    Image.fromarray(rng.integers(0, 255, (8, 9), dtype=np.uint8)).save(src / "q.png")
    Image.fromarray((rng.random((8, 9)) > 0.5).astype(np.uint8) * 255).save(src / "q_mask.png")
    Image.fromarray(rng.integers(0, 255, (8, 9), dtype=np.uint8)).save(src / "nomask.png")  # -> unlabelled
    Image.fromarray(rng.integers(0, 255, (8, 9), dtype=np.uint8)).save(src / "unlabeled" / "u.png")
    vol = rng.normal(size=(8, 9, 4)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src / "vol.nii.gz"))
    nib.save(nib.Nifti1Image((vol > 0).astype(np.uint8), np.eye(4)), str(src / "vol_label.nii.gz"))
    (src / "README.txt").write_text("ignored")
    out = tmp_path / "out"
    # 255 is not silently class 1 in one mask of a folder whose other masks use 1 and 2
    with pytest.raises(DataReadError, match=r"255 \(1\); e.g. \S+q_mask.png holds 0, 255"):
        prepare_folder(src, out, val_fraction=4, test_fraction=0, labeled_fraction="all", progress=False)
    Image.fromarray((np.asarray(Image.open(src / "q_mask.png")) // 255).astype(np.uint8)).save(src / "q_mask.png")
    d = json.loads(prepare_folder(src, out, val_fraction=4, test_fraction=0, labeled_fraction="all",
                                  progress=False).read_text())
    meta = d["meta"]
    assert meta["classes"] == ["background", "class1", "class2"] and meta["in_channels"] == 1
    assert meta["counts"]["train"] + meta["counts"]["validation"] == 6 + 1 + 4
    assert sorted(e["image"] for e in d["unlabeled"]) == ["images/nomask.png", "images/u.png"]
    assert any("README.txt" in s for s in meta["inputs"]["skipped"])
    val = {e["image"] for e in d["validation"]}
    vol_items = {f"images/vol_{k:03d}.nii.gz" for k in range(4)}
    assert vol_items <= val or not vol_items & val  # a volume's slices never straddle train / validation
    q = next(e for e in d["labeled"] + d["validation"] if e["image"] == "images/q.png")
    assert set(np.unique(np.asarray(Image.open(out / q["label"])))) == {0, 1}
    with pytest.raises(DataReadError, match="label values \\[2\\]"):
        prepare_folder(src, tmp_path / "out2", num_classes=2, progress=False)


def test_folder_empty_and_maskless(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DataReadError, match="empty: holds no images"):
        prepare_folder(tmp_path / "empty", tmp_path / "o", progress=False)
    (tmp_path / "nolabels").mkdir()
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "nolabels" / "a.png")
    with pytest.raises(DataReadError, match="no image has a mask"):
        prepare_folder(tmp_path / "nolabels", tmp_path / "o", progress=False)


# ------------------------------------------------------------------------------------ audit: folder robustness


def _pic(path, shape=(8, 9), seed=0, high=255):
    rng = np.random.default_rng(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(rng.integers(0, high, shape, dtype=np.uint8)).save(path)
    return path


def _pictures(src, n=6, shape=(8, 9)):
    for i in range(n):
        _pic(src / f"p{i}.png", shape, seed=i)
        _pic(src / "labels" / f"p{i}.png", shape, seed=100 + i, high=2)
    return src


def _anatomical(src, mask_affine=None, canonical=False):
    """nibabel's real anatomical.nii (LAS, 33x41x25) as the image, an asymmetric mask written like a user might."""
    from nibabel.testing import data_path

    src.mkdir(parents=True, exist_ok=True)
    img = nib.load(str(Path(data_path) / "anatomical.nii"))
    nib.save(img, str(src / "anat.nii"))
    m = np.zeros(img.shape, np.uint8)
    m[:5, :7, :] = 1  # a corner block: any mirroring moves it
    m[20:, 30:, 10:] = 2
    (src / "labels").mkdir(exist_ok=True)
    mimg = nib.Nifti1Image(m, img.affine if mask_affine is None else mask_affine)
    if canonical:
        mimg = nib.as_closest_canonical(mimg)
    nib.save(mimg, str(src / "labels" / "anat.nii.gz"))
    return img, m


def _prepared_labels(out, stem, n):
    return np.stack([np.asarray(nib.load(str(out / f"labels/{stem}_{k:03d}.nii.gz")).dataobj) for k in range(n)], -1)


def test_folder_mask_in_another_orientation_is_put_on_the_image_grid(tmp_path):
    img, m = _anatomical(tmp_path / "src", canonical=True)
    assert nib.aff2axcodes(nib.load(str(tmp_path / "src/labels/anat.nii.gz")).affine) != nib.aff2axcodes(img.affine)
    out = tmp_path / "out"
    with pytest.warns(UserWarning):  # one volume: no validation / test split
        prepare_folder(tmp_path / "src", out, val_fraction=0, labeled_fraction="all", progress=False)
    np.testing.assert_array_equal(_prepared_labels(out, "anat", 25), m)  # not mirrored
    lab0 = nib.load(str(out / "labels/anat_000.nii.gz"))
    np.testing.assert_allclose(lab0.affine, nib.load(str(out / "images/anat_000.nii.gz")).affine)


def test_folder_mask_with_other_geometry_is_refused_naming_both_orientations(tmp_path):
    from nibabel.testing import data_path

    aff = nib.load(str(Path(data_path) / "anatomical.nii")).affine.copy()
    aff[:3, 3] += [10.0, 0, 0]  # same axes, shifted 10 mm: a mask of another scan
    _anatomical(tmp_path / "src", mask_affine=aff)
    with pytest.raises(DataReadError, match=r"anat.nii.gz: .*anat.nii.*LAS.*LAS"):
        prepare_folder(tmp_path / "src", tmp_path / "out", val_fraction=0, progress=False)
    assert not (tmp_path / "out").exists()


def test_folder_mask_without_geometry_keeps_working_with_one_note(tmp_path):
    from pydicom.data import get_testdata_file

    _, m = _anatomical(tmp_path / "src", mask_affine=np.eye(4))  # numpy-style save: identity affine
    ct = read_image(get_testdata_file("CT_small.dcm"))
    (tmp_path / "src" / "ct.dcm").write_bytes(Path(get_testdata_file("CT_small.dcm")).read_bytes())
    ct_mask = (np.arange(128 * 128).reshape(128, 128) % 3 == 0).astype(np.uint8)
    Image.fromarray(ct_mask.T).save(tmp_path / "src" / "labels" / "ct.png")  # picture mask of a DICOM image
    assert tuple(ct.shape[1:]) == (128, 128)
    with pytest.warns(UserWarning, match=r"could not be checked.*2 mask") as rec:
        prepare_folder(tmp_path / "src", tmp_path / "out", val_fraction=0, labeled_fraction="all", progress=False)
    assert sum("could not be checked" in str(w.message) for w in rec) == 1  # once per run
    np.testing.assert_array_equal(_prepared_labels(tmp_path / "out", "anat", 25), m)
    np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "out/labels/ct.nii.gz")).dataobj), ct_mask)


def test_folder_two_images_sharing_one_mask_is_an_error(tmp_path):
    src = _pictures(tmp_path / "src")
    _pic(src / "a.png", seed=7)
    Image.fromarray(np.random.default_rng(8).integers(0, 255, (8, 9), dtype=np.uint8)).save(src / "a.jpg")
    _pic(src / "labels" / "a.png", seed=9, high=2)
    with pytest.raises(DataReadError, match=r"labels/a.png: .*a.jpg.*a.png.*rename"):
        prepare_folder(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()


def test_folder_corrupt_pictures_fail_naming_the_source(tmp_path):
    src = _pictures(tmp_path / "src")
    (src / "unlabeled").mkdir()
    good = (src / "p0.png").read_bytes()
    (src / "unlabeled" / "broken.png").write_bytes(good[: len(good) // 2])  # truncated download
    with pytest.raises(DataReadError, match=r"unlabeled/broken.png: "):
        prepare_folder(src, tmp_path / "out", progress=False)
    assert not (tmp_path / "out").exists()
    (src / "unlabeled" / "broken.png").unlink()
    (src / "unlabeled" / "junk.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    with pytest.raises(DataReadError, match=r"unlabeled/junk.jpg: "):
        prepare_folder(src, tmp_path / "out", progress=False)


def test_failed_prepare_leaves_no_partial_output_and_the_rerun_works(tmp_path):
    src = _pictures(tmp_path / "src")
    out = tmp_path / "out"
    code = main(["folder", str(src), "--out", str(out), "--labeled-fraction", "1/0", "--no-progress"])
    assert code == 2 and not out.exists()
    with pytest.raises(ValueError, match="--val-fraction"):  # 6 groups cannot give 6 for validation
        prepare_folder(src, out, val_fraction=6, progress=False)
    assert not out.exists()
    out.mkdir()
    (out / "mine.txt").write_text("user data")
    with pytest.raises(ValueError):
        prepare_folder(src, out, labeled_fraction="1/0", overwrite=True, progress=False)
    assert sorted(p.name for p in out.iterdir()) == ["mine.txt"]
    (out / "mine.txt").unlink()
    prepare_folder(src, out, labeled_fraction="1/2", test_fraction=1, progress=False)  # the corrected rerun
    before = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    (src / "unlabeled").mkdir()
    (src / "unlabeled" / "z.png").write_bytes(b"\x89PNG\r\n\x1a\n broken")  # fails after items were written
    with pytest.raises(DataReadError, match="z.png"):
        prepare_folder(src, out, labeled_fraction="1/2", test_fraction=1, progress=False)
    after = {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert after == before  # the earlier preparation is intact, nothing half-written next to it


def test_folder_splits_the_bundles_cannot_use_are_warned(tmp_path, capsys):
    src = _pictures(tmp_path / "src")
    with pytest.warns(UserWarning, match=r"0 validation.*--val-fraction"):
        prepare_folder(src, tmp_path / "a", test_fraction=0.34, progress=False)
    with pytest.warns(UserWarning, match=r"0 test.*--test-fraction"):
        prepare_folder(src, tmp_path / "b", val_fraction=1, progress=False)
    code = main(["folder", str(src), "--out", str(tmp_path / "c"), "--val-fraction", "1", "--no-progress"])
    err = capsys.readouterr().err
    assert code == 0 and "--test-fraction" in err and "evaluat" in err
    # one 3D volume with the default options: name the volume and the option to change
    vol_src = tmp_path / "vol"
    vol_src.mkdir()
    vol = np.random.default_rng(0).normal(size=(6, 5, 30)).astype(np.float32)
    nib.save(nib.Nifti1Image(vol, np.eye(4)), str(vol_src / "ct.nii.gz"))
    nib.save(nib.Nifti1Image((vol > 0).astype(np.uint8), np.eye(4)), str(vol_src / "ct_mask.nii.gz"))
    with pytest.raises(ValueError, match=r"(?s)--val-fraction.*ct.*--val-fraction 0"):
        prepare_folder(vol_src, tmp_path / "d", progress=False)
    assert not (tmp_path / "d").exists()


def test_folder_orphan_masks_are_warned_with_the_likely_image(tmp_path):
    src = _pictures(tmp_path / "src")
    _pic(src / "case7.png", seed=3)
    _pic(src / "labels" / "Case07.png", seed=4, high=2)
    _pic(src / "labels" / "zzz.png", seed=5, high=2)
    with pytest.warns(UserWarning, match=r"(?s)Case07.png.*case7.png") as rec:
        d = json.loads(prepare_folder(src, tmp_path / "out", test_fraction=1, progress=False).read_text())
    assert any("zzz.png" in str(w.message) for w in rec)
    assert "images/case7.png" in [e["image"] for e in d["unlabeled"]]


def test_covid_label_error_does_not_suggest_num_classes(tmp_path, capsys):
    image, _, _, lab = _stack(tmp_path, n=6)
    lab[0, 0, 0] = 4
    nib.save(nib.Nifti1Image(lab, np.diag([0.8, 0.9, 5.0, 1.0])), str(tmp_path / "m4.nii.gz"))
    code = main(["covid", "--image", str(image), "--mask", str(tmp_path / "m4.nii.gz"), "--out", str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "m4.nii.gz: label values [4]" in err and "--num-classes" not in err
    assert "prepare folder" in err and not (tmp_path / "o").exists()


def test_folder_transposed_2d_nifti_mask_with_its_affine_is_transposed_back(tmp_path):
    src = tmp_path / "src"
    (src / "labels").mkdir(parents=True)
    aff = np.array([[0.0, 0.8, 0, -5], [0.9, 0, 0, 3], [0, 0, 5, 7], [0, 0, 0, 1]])
    rng = np.random.default_rng(0)
    for i in range(3):
        m = rng.integers(0, 2, (12, 10)).astype(np.uint8)
        nib.save(nib.Nifti1Image(rng.normal(size=(12, 10)).astype(np.float32), aff), str(src / f"s{i}.nii.gz"))
        nib.save(nib.Nifti1Image(m.T.copy(), aff[:, [1, 0, 2, 3]]), str(src / "labels" / f"s{i}.nii.gz"))
        np.save(tmp_path / f"m{i}.npy", m)
    prepare_folder(src, tmp_path / "out", val_fraction=1, test_fraction=1, labeled_fraction="all", progress=False)
    for i in range(3):
        got = np.asarray(nib.load(str(tmp_path / f"out/labels/s{i}.nii.gz")).dataobj)
        np.testing.assert_array_equal(got, np.load(tmp_path / f"m{i}.npy"))


def test_chase_palette_masks_are_read_by_their_palette_colour(tmp_path):
    synthetic = pytest.importorskip("medsemiseg.data.synthetic")
    synthetic.generate_chase(tmp_path / "raw", n_images=4, size=(48, 50))
    src = tmp_path / "raw" / "Image_01L_1stHO.png"
    m = np.asarray(Image.open(src).convert("L")) >= 128
    assert m.any()
    pal = Image.fromarray(m.astype(np.uint8), "L").convert("P")  # indices 0/1, palette black / white
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.save(src)
    assert Image.open(src).mode == "P"
    prepare_chase(tmp_path / "raw", tmp_path / "a", progress=False)
    got = np.asarray(Image.open(tmp_path / "a" / "labels" / "Image_01L.png"))
    np.testing.assert_array_equal(got, m.astype(np.uint8))  # not all background


def test_chase_grey_pictures_are_refused_naming_the_file(tmp_path):
    synthetic = pytest.importorskip("medsemiseg.data.synthetic")
    synthetic.generate_chase(tmp_path / "raw", n_images=4, size=(48, 50))
    (tmp_path / "unl").mkdir()
    Image.fromarray(np.full((48, 50, 3), 90, np.uint8)).save(tmp_path / "unl" / "rgb.jpg")
    Image.fromarray(np.full((48, 50), 90, np.uint8)).save(tmp_path / "unl" / "grey.jpg")
    with pytest.raises(DataReadError, match=r"grey\.jpg: is grey \(1 channel\), but CHASE_DB1 images must be RGB"):
        prepare_chase(tmp_path / "raw", tmp_path / "a", unlabeled=[tmp_path / "unl"], progress=False)
    assert not (tmp_path / "a").exists()
    (tmp_path / "unl" / "grey.jpg").unlink()
    d = json.loads(prepare_chase(tmp_path / "raw", tmp_path / "b", unlabeled=[tmp_path / "unl"],
                                 progress=False).read_text())
    assert d["meta"]["counts"]["extra_unlabeled"] == 1
    Image.open(tmp_path / "raw" / "Image_02R.jpg").convert("L").save(tmp_path / "raw" / "Image_02R.jpg")
    with pytest.raises(DataReadError, match=r"Image_02R\.jpg: is grey .* must be RGB"):
        prepare_chase(tmp_path / "raw", tmp_path / "c", progress=False)


def test_covid_0_255_mask_is_an_error_not_ground_glass(tmp_path, capsys):
    image, _, _, lab = _stack(tmp_path, n=6)
    binary = ((lab > 0) * 255).astype(np.uint8)
    nib.save(nib.Nifti1Image(binary, np.diag([0.8, 0.9, 5.0, 1.0])), str(tmp_path / "m255.nii.gz"))
    code = main(["covid", "--image", str(image), "--mask", str(tmp_path / "m255.nii.gz"), "--out",
                 str(tmp_path / "o")])
    err = capsys.readouterr().err
    assert code == 2 and "m255.nii.gz: label values [255]" in err and "1 ground-glass" in err
    assert not (tmp_path / "o").exists()
    ones = (lab > 0).astype(np.uint8)  # a genuine 0/1 MedSeg mask (no 255) still works
    nib.save(nib.Nifti1Image(ones, np.diag([0.8, 0.9, 5.0, 1.0])), str(tmp_path / "m01.nii.gz"))
    prepare_covid(image, tmp_path / "m01.nii.gz", tmp_path / "o01", progress=False)


# ------------------------------------------------------------------ MedSeg set 2 (Radiopaedia): rp_im.zip / rp_msk.zip


def _rp_zips(tmp_path, keys=("1", "2", "3"), mask_keys=None, x=16, y=12, n=4, mask_fn=None):
    """rp_im.zip / rp_msk.zip as MedSeg ships them (``rp_im/1.nii.gz`` ...); label = f(image) so that image / label
    correspondence survives any orientation: 0 below -600 HU, then 1, 2, 3 by intensity band."""
    import zipfile

    rng = np.random.default_rng(1)
    raw = tmp_path / "rp_raw"
    (raw / "rp_im").mkdir(parents=True)
    (raw / "rp_msk").mkdir(parents=True)
    aff = np.diag([0.7, 0.7, 2.0, 1.0])
    for i, key in enumerate(keys):
        vol = rng.uniform(-1000, 200, size=(x, y, n)).astype(np.float32) + 1000 * (i + 1)  # volume-specific range
        lab = np.digitize(vol - 1000 * (i + 1), [-600, -300, 0]).astype(np.uint8)
        if mask_fn is not None:
            lab = mask_fn(key, lab)
        nib.save(nib.Nifti1Image(vol, aff), str(raw / "rp_im" / f"{key}.nii.gz"))
        if key in (keys if mask_keys is None else mask_keys):
            nib.save(nib.Nifti1Image(lab, aff), str(raw / "rp_msk" / f"{key}.nii.gz"))
    for name in ("rp_im", "rp_msk"):
        with zipfile.ZipFile(tmp_path / f"{name}.zip", "w") as zf:
            for f in sorted((raw / name).iterdir()):
                zf.write(f, f"{name}/{f.name}")
    return tmp_path / "rp_im.zip", tmp_path / "rp_msk.zip", raw


def _unzip_dirs():
    import tempfile

    return set(Path(tempfile.gettempdir()).glob("medsemiseg-unzip-*"))


def test_covid_radiopaedia_zips_labelled_grouped_per_volume(tmp_path, capsys):
    image, mask, _, _ = _stack(tmp_path, n=10)
    rp_im, rp_msk, raw = _rp_zips(tmp_path)
    before = _unzip_dirs()
    out = tmp_path / "out"
    rc = main(["covid", "--image", str(image), "--mask", str(mask), "--rp-image", str(rp_im), "--rp-mask",
               str(rp_msk), "--rp-orientation", "rot90", "--out", str(out), "--no-progress",
               "--test-fraction", "0.3", "--val-fraction", "0.2"])
    assert rc == 0, capsys.readouterr().err
    assert _unzip_dirs() == before  # the temporary extraction is gone
    d = json.loads((out / "datalist.json").read_text())
    assert d["meta"]["counts"]["train"] + d["meta"]["counts"]["validation"] + d["meta"]["counts"]["test"] == 10 + 12
    assert d["meta"]["rp_orientation"] == "rot90" and d["meta"]["orientation"] == "as-stored"
    assert d["meta"]["inputs"]["rp_volumes"][0] == [f"{rp_im.resolve()}:rp_im/1.nii.gz",
                                                    f"{rp_msk.resolve()}:rp_msk/1.nii.gz"]
    role = {}
    for split in ("labeled", "unlabeled", "validation", "test"):
        for e in d[split]:
            role[Path(e["image"]).name] = "train" if split in ("labeled", "unlabeled") else split
            if "label" in e:
                assert Path(e["label"]).name == Path(e["image"]).name
    for key in ("1", "2", "3"):
        names = [f"rp_im_{key}_{k:03d}.nii.gz" for k in range(4)]
        assert all(n in role for n in names), sorted(role)
        assert len({role[n] for n in names}) == 1  # a volume never straddles train / validation / test
        vol = np.asarray(nib.load(str(raw / "rp_im" / f"{key}.nii.gz")).dataobj)
        for k, n in enumerate(names):
            s_img = np.asarray(nib.load(str(out / "images" / n)).dataobj)
            s_lab = np.asarray(nib.load(str(out / "labels" / n)).dataobj)
            assert s_img.shape == s_lab.shape == (12, 16)  # rot90 of a 16 x 12 slice, image and mask alike
            np.testing.assert_array_equal(np.sort(s_img.ravel()), np.sort(vol[:, :, k].ravel()))
            np.testing.assert_array_equal(s_lab, np.digitize(s_img - 1000 * int(key), [-600, -300, 0]))
    # set 1 keeps its names and per-slice groups
    assert sum(n.startswith("tr_im_") for n in role) == 10


def test_covid_radiopaedia_absent_options_keep_set1_split(tmp_path):
    image, mask, _, _ = _stack(tmp_path, n=10)
    a = prepare_covid(image, mask, tmp_path / "a", progress=False)
    b = prepare_covid(image, mask, tmp_path / "b", progress=False, rp_image=None, rp_mask=None, rp_orientation=None)
    da, db = json.loads(a.read_text()), json.loads(b.read_text())
    assert _all_entries(da) == _all_entries(db)
    assert "rp_orientation" not in da["meta"] and "rp_image" not in da["meta"]["inputs"]


def test_covid_radiopaedia_errors_name_the_file(tmp_path):
    image, mask, _, _ = _stack(tmp_path, n=10)
    out = tmp_path / "out"
    before = _unzip_dirs()
    rp_im, rp_msk, _ = _rp_zips(tmp_path / "unpaired", mask_keys=("1", "2"))
    with pytest.raises(DataReadError, match=r"without a mask .*rp_im\.zip:rp_im/3\.nii\.gz"):
        prepare_covid(image, mask, out, rp_image=rp_im, rp_mask=rp_msk, progress=False)
    rp_im, rp_msk, _ = _rp_zips(tmp_path / "b255", mask_fn=lambda k, lab: (lab > 0).astype(np.uint8) * 255
                                if k == "2" else lab)
    with pytest.raises(DataReadError, match=r"rp_msk\.zip:rp_msk/2\.nii\.gz: label values \[255\]"):
        prepare_covid(image, mask, out, rp_image=rp_im, rp_mask=rp_msk, progress=False)
    rp_im, rp_msk, _ = _rp_zips(tmp_path / "b5", mask_fn=lambda k, lab: lab + 2 if k == "3" else lab)
    with pytest.raises(DataReadError, match=r"rp_msk\.zip:rp_msk/3\.nii\.gz: label values \[4, 5\]"):
        prepare_covid(image, mask, out, rp_image=rp_im, rp_mask=rp_msk, progress=False)
    rp_im, rp_msk, _ = _rp_zips(tmp_path / "shape", mask_fn=lambda k, lab: lab[:8] if k == "1" else lab)
    with pytest.raises(DataReadError, match=r"rp_msk\.zip:rp_msk/1\.nii\.gz: .*size"):
        prepare_covid(image, mask, out, rp_image=rp_im, rp_mask=rp_msk, progress=False)
    (tmp_path / "junk.zip").write_bytes(b"not a zip")
    with pytest.raises(DataReadError, match=r"junk\.zip: cannot be extracted"):
        prepare_covid(image, mask, out, unlabeled=[tmp_path / "junk.zip"], progress=False)
    assert not out.exists() and _unzip_dirs() == before
    rc = main(["covid", "--image", str(image), "--mask", str(mask), "--rp-mask", str(rp_msk), "--out", str(out)])
    assert rc == 2 and not out.exists()


def test_covid_radiopaedia_unlabelled_zip_and_folder(tmp_path):
    image, mask, _, _ = _stack(tmp_path, n=10)
    rp_im, rp_msk, raw = _rp_zips(tmp_path)
    d = json.loads(prepare_covid(image, mask, tmp_path / "zip", unlabeled=[rp_im], progress=False).read_text())
    extra = [e["image"] for e in d["unlabeled"] if "rp_im_" in e["image"]]
    assert len(extra) == 12 and "images/rp_im_1_000.nii.gz" in extra  # docs/data.md's name
    assert d["meta"]["inputs"]["unlabeled"][0] == f"{rp_im.resolve()}:rp_im/1.nii.gz"
    d2 = json.loads(prepare_covid(image, mask, tmp_path / "dir", unlabeled=[raw / "rp_im"],
                                  progress=False).read_text())
    assert _all_entries(d2) == _all_entries(d)
    # --rp-image alone: unlabelled, turned by --rp-orientation
    d3 = json.loads(prepare_covid(image, mask, tmp_path / "alone", rp_image=rp_im, rp_orientation="rot90",
                                  progress=False).read_text())
    assert _all_entries(d3) == _all_entries(d)
    assert nib.load(str(tmp_path / "alone/images/rp_im_2_003.nii.gz")).shape == (12, 16)
    with pytest.raises(ValueError, match=r"--unlabeled .*rp_im\.zip is also --rp-image"):
        prepare_covid(image, mask, tmp_path / "twice", unlabeled=[rp_im], rp_image=rp_im, rp_mask=rp_msk,
                      progress=False)


# ------------------------------------------------------------- folder: masks that are no clean label map, 0/255


def _blob(i, value=255, shape=(32, 30)):
    m = np.zeros(shape, np.uint8)
    m[4 + i : 20 + i, 6:24] = value
    return m


def _mask_folder(src, masks, ext=".png"):
    """``src/c<i>.png`` pictures with ``labels/c<i><ext>`` masks (a JPEG mask saved lossy, as a user might)."""
    (src / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i, m in enumerate(masks):
        Image.fromarray(rng.integers(0, 255, m.shape, dtype=np.uint8)).save(src / f"c{i}.png")
        Image.fromarray(m).save(src / "labels" / f"c{i}{ext}", **({"quality": 75} if ext == ".jpg" else {}))
    return src


def _stray_nifti_folder(src):
    """Three CT volumes with 0/1 masks, one of them with a single stray voxel of 7."""
    (src / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for i in range(3):
        vol = rng.normal(size=(10, 8, 3)).astype(np.float32)
        lab = (vol > 0).astype(np.uint8)
        if i == 1:
            lab[2, 3, 1] = 7
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src / f"ct{i}.nii.gz"))
        nib.save(nib.Nifti1Image(lab, np.eye(4)), str(src / "labels" / f"ct{i}.nii.gz"))
    return src


@pytest.mark.parametrize("kind", ["jpeg", "anti-aliased", "stray-voxel", "too-many"])
def test_folder_masks_that_are_no_label_map_are_one_clear_error(tmp_path, capsys, kind):
    """JPEG / anti-aliased masks or a stray voxel once became 256 (or 8) classes with exit 0: now exit 2 before
    anything is written, naming the values, the files holding them, an example file and the fix."""
    src = tmp_path / "src"
    if kind == "jpeg":
        _mask_folder(src, [_blob(i) for i in range(6)], ".jpg")
        example, values, fix = ".jpg", r"0 \(6\), .*, 254 \(\d\), 255 \(6\)", ["--mask-threshold", "128"]
    elif kind == "anti-aliased":
        aa = _blob(5)
        aa[4:20, 5] = aa[4:20, 24] = 128  # grey edge pixels
        _mask_folder(src, [_blob(i) for i in range(5)] + [aa])
        example, values, fix = "c5.png", r"0 \(6\), 128 \(1\), 255 \(6\)", ["--mask-threshold", "128"]
    elif kind == "stray-voxel":
        _stray_nifti_folder(src)
        example, values, fix = "ct1.nii.gz", r"0 \(3\), 1 \(3\), 7 \(1\)", ["--num-classes", "8"]
    else:  # 0..19, contiguous but more classes than a label map found by chance has
        _mask_folder(src, [np.arange(32 * 30).reshape(32, 30).astype(np.uint8) % 20 for _ in range(4)])
        example, values, fix = "c0.png", r"20 distinct values .*0 \(4\), 1 \(4\)", ["--num-classes", "20"]
    out = tmp_path / "out"
    args = ["folder", str(src), "--out", str(out), "--val-fraction", "1", "--no-progress"]
    assert main(args) == 2
    err = capsys.readouterr().err
    error = [ln for ln in err.splitlines() if ln.startswith("error:")]
    assert len(error) == 1, err
    assert re.search(rf"not label maps 0\.\.K-1: .*{values}.*e\.g\. \S*{example}", error[0]), error[0]
    assert "--mask-threshold 128" in error[0] and "--num-classes K" in error[0] and "PNG or NIfTI" in error[0]
    assert ("JPEG is lossy" in err) == (kind == "jpeg")  # a JPEG mask is also a warning of its own
    assert not out.exists()
    assert main(args + fix) == 0, capsys.readouterr().err  # the suggested option works
    d = json.loads((out / "datalist.json").read_text())
    n_classes = int(fix[1]) if fix[0] == "--num-classes" else 2
    assert d["meta"]["classes"] == ["background"] + [f"class{i}" for i in range(1, n_classes)]
    labels = d["labeled"] + d["validation"]
    got = set()
    for it in labels:  # what was written: labels 0..K-1 (JPEG thresholded to 0/1)
        arr = np.asarray(nib.load(str(out / it["label"])).dataobj) if it["label"].endswith(".nii.gz") else \
            np.asarray(Image.open(out / it["label"]))
        got |= set(np.unique(arr).tolist())
    assert got <= set(range(n_classes)) and 1 in got


def test_folder_0_255_is_decided_for_all_masks_together(tmp_path, capsys):
    # every mask 0/255 (or empty): 255 is class 1 in every one of them
    src = _mask_folder(tmp_path / "a", [_blob(i) for i in range(4)] + [np.zeros((32, 30), np.uint8)])
    d = json.loads(prepare_folder(src, tmp_path / "oa", val_fraction=1, labeled_fraction="all",
                                  progress=False).read_text())
    assert d["meta"]["classes"] == ["background", "class1"]
    for it in d["labeled"] + d["validation"]:
        assert set(np.unique(np.asarray(Image.open(tmp_path / "oa" / it["label"])))) <= {0, 1}
    # 0/1 masks next to 0/255 masks: refused, naming one of each, not converted file by file
    src = _mask_folder(tmp_path / "b", [_blob(i, 1) for i in range(3)] + [_blob(i) for i in range(3, 5)])
    args = ["folder", str(src), "--out", str(tmp_path / "ob"), "--val-fraction", "1", "--no-progress"]
    for extra in ([], ["--num-classes", "2"]):
        assert main(args + extra) == 2
        err = capsys.readouterr().err
        assert re.search(r"error: .*mix two binary encodings: 3 hold 0/1 \(e\.g\. \S+c0\.png\) and 2 hold 0/255 "
                         r"\(e\.g\. \S+c3\.png\).*--mask-threshold 1", err), err
        assert not (tmp_path / "ob").exists()
    assert main(args + ["--mask-threshold", "1"]) == 0
    d = json.loads((tmp_path / "ob" / "datalist.json").read_text())
    assert d["meta"]["classes"] == ["background", "class1"]


def test_folder_classes_declared_by_name_allow_a_class_no_mask_holds(tmp_path):
    src = _mask_folder(tmp_path / "src", [_blob(i, 2) for i in range(4)])  # 0/2: class 1 in no mask
    with pytest.raises(DataReadError, match=r"0 \(4\), 2 \(4\).*--num-classes K"):
        prepare_folder(src, tmp_path / "o", val_fraction=1, progress=False)
    d = json.loads(prepare_folder(src, tmp_path / "o", val_fraction=1, class_names=["bg", "a", "b"],
                                  progress=False).read_text())
    assert d["meta"]["classes"] == ["bg", "a", "b"]
    with pytest.raises(DataReadError, match=r"c0.png: label values \[2\] are outside the declared classes 0..1"):
        prepare_folder(src, tmp_path / "o2", val_fraction=1, class_names=["bg", "a"], progress=False)


def test_folder_16_bit_mask_values_are_not_wrapped_to_uint8(tmp_path):
    """A 16-bit PNG mask holding 256 once passed --num-classes 2 as a uint8 0 (and without it as class 0)."""
    masks = [_blob(i, 1) for i in range(4)]
    src = _mask_folder(tmp_path / "src", masks)
    Image.fromarray(masks[0].astype(np.uint16) * 256).save(src / "labels" / "c0.png")  # values 0 / 256
    assert np.asarray(Image.open(src / "labels" / "c0.png")).max() == 256
    with pytest.raises(DataReadError, match=r"c0.png: label values \[256\] are outside"):
        prepare_folder(src, tmp_path / "o", num_classes=2, val_fraction=1, progress=False)
    with pytest.raises(DataReadError, match=r"256 \(1\); e.g. \S+c0.png holds 0, 256"):
        prepare_folder(src, tmp_path / "o", val_fraction=1, progress=False)


# ----------------------------------------------------- folder: the default 1/8 must not hide the user's labels silently


def test_folder_default_fraction_says_how_many_of_your_labels_become_unlabelled(tmp_path, capsys):
    src = tmp_path / "src"
    (src / "labels").mkdir(parents=True)
    (src / "unlabeled").mkdir()
    rng = np.random.default_rng(0)
    for i in range(5):  # 5 labelled CT volumes of 10 slices, 3 unlabelled ones
        vol = rng.normal(size=(8, 6, 10)).astype(np.float32)
        nib.save(nib.Nifti1Image(vol, np.eye(4)), str(src / f"ct{i}.nii.gz"))
        nib.save(nib.Nifti1Image((vol > 0).astype(np.uint8), np.eye(4)), str(src / "labels" / f"ct{i}.nii.gz"))
    for i in range(3):
        nib.save(nib.Nifti1Image(rng.normal(size=(8, 6, 10)).astype(np.float32), np.eye(4)),
                 str(src / "unlabeled" / f"u{i}.nii.gz"))
    args = ["folder", str(src), "--out", str(tmp_path / "out"), "--no-progress"]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert (f"warning: {src}: 35 of your 40 labelled training slices are used as unlabelled (--labeled-fraction 1/8 "
            "simulates scarcity, the paper's protocol); pass --labeled-fraction full to train on every mask") in err
    assert out.startswith("folder: 5 labeled slices + 65 unlabeled slices (fraction 1/8 of the 40 training slices "
                          "with masks, seed 0), 10 validation, 0 test slices -> ")
    assert main(args + ["--labeled-fraction", "full"]) == 0
    out, err = capsys.readouterr()
    assert "used as unlabelled" not in err and out.startswith("folder: 40 labeled slices + 30 unlabeled slices")
    d = json.loads((tmp_path / "out" / "datalist.json").read_text())
    assert "used as unlabelled" not in " ".join(d["meta"]["warnings"])  # not carried into other fractions' lists
    # pictures are counted as images
    pics = _pictures(tmp_path / "pics", n=8)
    assert main(["folder", str(pics), "--out", str(tmp_path / "o2"), "--no-progress", "--val-fraction", "0"]) == 0
    out, err = capsys.readouterr()
    assert "7 of your 8 labelled training images are used as unlabelled" in err
    assert out.startswith("folder: 1 labeled image + 7 unlabeled images (fraction 1/8 of the 8 training images")


def test_mask_lookup_lists_each_folder_once(tmp_path, monkeypatch):
    # the lookup used to list and sort labels/ and the image folder once per image: quadratic (98 s at 2000 images)
    from pathlib import Path

    from PIL import Image

    from medsemiseg.data.prepare import find_mask

    (tmp_path / "labels").mkdir()
    for i in range(6):
        Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / f"c{i}.png")
        if i % 2 == 0:
            Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "labels" / f"c{i}.png")
    listed = []
    real_iterdir = Path.iterdir
    monkeypatch.setattr(Path, "iterdir", lambda self: listed.append(self.name) or real_iterdir(self))
    cache: dict = {}
    found = [find_mask(tmp_path / f"c{i}.png", tmp_path, cache) for i in range(6)]
    assert [f.name if f else None for f in found] == ["c0.png", None, "c2.png", None, "c4.png", None]
    assert sorted(listed) == sorted(["labels", tmp_path.name])  # labels/ once, the image folder once


def test_progress_prints_plain_lines_when_stderr_is_not_a_terminal(capsys):
    # tqdm disables itself off a terminal: a preparation logged to a file showed nothing until its summary
    from medsemiseg.data.prepare.core import _progress

    assert list(_progress(range(20), 20, "covid tr_im", True)) == list(range(20))
    lines = capsys.readouterr().err.splitlines()
    assert lines[0] == "[prepare] covid tr_im: 1/20" and lines[-1] == "[prepare] covid tr_im: 20/20"
    assert len(lines) == 11  # the first, every second (a tenth of 20), the last
    assert list(_progress(range(3), 3, "x", False)) == [0, 1, 2] and capsys.readouterr().err == ""
