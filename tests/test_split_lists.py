"""``prepare folder`` with the protocol medical SSL papers publish: HDF5 slices and volumes (SSL4MIS's layout, made
small here), fixed split lists, patient groups (``--group-by``) with a leakage check, the intensity a folder
declares, and the test volumes named for per-volume scoring."""

from __future__ import annotations

import json
import re
from pathlib import Path

import h5py
import nibabel as nib
import numpy as np
import pytest
from PIL import Image

from medsemiseg.data.io import DataReadError, read_image, read_mask
from medsemiseg.data.prepare import main as prepare_main
from medsemiseg.data.prepare import prepare_folder, resplit_prepared

from layouts import make_ssl4mis, ssl4mis_volume


def _names(items) -> list[str]:
    return [Path(it["image"]).name for it in items]


def _groups(items) -> set[str]:
    return {re.search(r"patient\d+", Path(it["image"]).name).group(0) for it in items}


@pytest.fixture(scope="module")
def ssl4mis(tmp_path_factory):
    root = make_ssl4mis(tmp_path_factory.mktemp("ssl4mis") / "ACDC")
    slices = (root / "train_slices.list").read_text().splitlines()
    (root / "labeled.list").write_text("\n".join(slices[:8]) + "\n")  # the first 8 slices: patients 1 and 2
    (root / "unlabeled.list").write_text("\n".join(slices[8:]) + "\n")
    return root


def test_hdf5_slices_and_volumes_are_read_in_monai_order_with_their_keys(tmp_path):
    image, label = ssl4mis_volume(1, 1)  # (Z, Y, X)
    with h5py.File(tmp_path / "v.h5", "w") as f:
        f["img"], f["seg/mask"] = image, label
    vol = read_image(tmp_path / "v.h5", hdf5_key="img")
    assert tuple(vol.shape) == (1, 20, 24, 4)  # (C, X, Y, Z)
    np.testing.assert_array_equal(vol[0].numpy(), image.transpose(2, 1, 0))
    mask = read_mask(tmp_path / "v.h5", 4, hdf5_key="seg/mask")
    np.testing.assert_array_equal(mask[0].numpy(), label.transpose(2, 1, 0))
    with h5py.File(tmp_path / "xyz.h5", "w") as f:  # nibabel's order, as SSL4MIS's left-atrium files hold it
        f["image"] = image.transpose(2, 1, 0)
    np.testing.assert_array_equal(read_image(tmp_path / "xyz.h5", hdf5_axes="xyz").numpy(), vol.numpy())
    with pytest.raises(DataReadError, match=r"v\.h5: holds no array 'image' \(it holds \['img', 'seg/mask'\]\); name "
                                            r"the key with --hdf5-image-key"):
        read_image(tmp_path / "v.h5")
    (tmp_path / "broken.h5").write_bytes(b"not hdf5")
    with pytest.raises(DataReadError, match=r"broken\.h5: cannot be opened as HDF5"):
        read_image(tmp_path / "broken.h5")


def test_ssl4mis_layout_prepares_into_exactly_the_listed_splits(ssl4mis, tmp_path, capsys):
    out = tmp_path / "prepared"
    code = prepare_main([
        "folder", str(ssl4mis / "data"), "--out", str(out), "--labeled-list", str(ssl4mis / "labeled.list"),
        "--unlabeled-list", str(ssl4mis / "unlabeled.list"), "--val-list", str(ssl4mis / "val.list"),
        "--test-list", str(ssl4mis / "test.list"), "--group-by", r"patient\d+",
        "--class-names", "background,RV,Myo,LV", "--no-progress"])
    assert code == 0
    err = capsys.readouterr()
    assert "8 labeled slices + 12 unlabeled slices (fraction full of the 2 training groups by --group-by" in err.out
    assert "5 input(s) named in no split list were left out" in err.err  # the training volumes in data/
    d = json.loads((out / "datalist.json").read_text())
    listed = (ssl4mis / "labeled.list").read_text().split()
    assert _names(d["labeled"]) == [f"{n}.nii.gz" for n in listed]  # exactly the listed slices, in list order
    assert _names(d["unlabeled"]) == [f"{n}.nii.gz" for n in (ssl4mis / "unlabeled.list").read_text().split()]
    assert _names(d["validation"]) == [f"patient006_frame01_{k:03d}.nii.gz" for k in range(4)]  # the volume, sliced
    assert [(it["volume"], it["slice"]) for it in d["test"]] == [
        (f"patient00{p}_frame01", k) for p in (7, 8) for k in range(4)]
    assert all("volume" not in it for it in d["labeled"] + d["validation"])
    meta = d["meta"]
    assert meta["intensity"] == "percentile" and meta["classes"] == ["background", "RV", "Myo", "LV"]
    assert meta["volumes"]["patient007_frame01"]["slices"] == 4 and meta["volumes"]["patient007_frame01"]["spacing"] \
        is None  # HDF5 carries no spacing: distances in voxels
    assert meta["group_by"] == r"patient\d+"
    assert set(meta["split_lists"]) == {"labeled", "unlabeled", "validation", "test"}
    assert meta["counts"]["train_groups"] == 2 and meta["labeled_fraction"] == "full"
    # the slices hold the HDF5 arrays, in MONAI's (X, Y) order
    image, label = ssl4mis_volume(7, 1)
    item = d["test"][2]
    np.testing.assert_allclose(nib.load(out / item["image"]).get_fdata(), image[2].T, rtol=1e-6)
    np.testing.assert_array_equal(nib.load(out / item["label"]).get_fdata(), label[2].T)
    first = d["labeled"][0]
    slice0 = h5py.File(ssl4mis / "data" / "slices" / f"{listed[0]}.h5")["image"][()]
    np.testing.assert_allclose(nib.load(out / first["image"]).get_fdata(), slice0.T, rtol=1e-6)


def test_the_mirrors_flat_layout_prepares_with_the_same_command_into_the_same_splits(ssl4mis, tmp_path, capsys):
    """docs/data.md's worked example, on what public mirrors ship (slices directly in data/, only the validation and
    test volumes) as on SSL4MIS's own layout (data/slices/ plus every patient's volume)."""
    mirror = make_ssl4mis(tmp_path / "downloaded" / "ACDC", mirror=True)
    assert not (mirror / "data" / "slices").exists() and len(list((mirror / "data").glob("*_slice_*.h5"))) == 20
    splits = {}
    for name, root in (("ssl4mis", ssl4mis), ("mirror", mirror)):
        out = tmp_path / f"prepared_{name}"
        assert prepare_main([
            "folder", str(root / "data"), "--out", str(out), "--labeled-list", str(ssl4mis / "labeled.list"),
            "--unlabeled-list", str(ssl4mis / "unlabeled.list"), "--val-list", str(root / "val.list"),
            "--test-list", str(root / "test.list"), "--group-by", r"patient\d+", "--no-progress"]) == 0
        d = json.loads((out / "datalist.json").read_text())
        splits[name] = {k: _names(d[k]) for k in ("labeled", "unlabeled", "validation", "test")}
        splits[name]["notes"] = capsys.readouterr().err
    assert "5 input(s) named in no split list were left out" in splits["ssl4mis"].pop("notes")  # training volumes
    assert "left out" not in splits["mirror"].pop("notes")  # the mirror has none
    assert splits["mirror"] == splits["ssl4mis"]


def test_group_by_picks_whole_patients_and_no_patient_is_in_two_splits(tmp_path):
    src = tmp_path / "slices"
    (src / "labels").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for p in range(1, 11):
        for k in range(3):  # three slices of one size per patient: one volume each
            name = f"patient{p:02d}_slice_{k}"
            Image.fromarray(rng.integers(0, 256, (16, 12), dtype=np.uint8)).save(src / f"{name}.png")
            Image.fromarray(rng.integers(0, 2, (16, 12), dtype=np.uint8)).save(src / "labels" / f"{name}.png")
    common = dict(val_fraction=0.25, test_fraction=0.2, progress=False)  # 6 slices each: 2 patients
    grouped = prepare_folder(src, tmp_path / "grouped", group_by=r"patient\d+", labeled_fraction=2, **common)
    d = json.loads(Path(grouped).read_text())
    splits = {k: _groups(d[k]) for k in ("labeled", "unlabeled", "validation", "test")}
    assert all(splits[a].isdisjoint(splits[b]) for a in splits for b in splits if a < b)  # the leakage check
    assert len(splits["labeled"]) == 2 and len(d["labeled"]) == 6  # a count of patients, each with its 3 slices
    assert len(splits["validation"]) == 2 and len(splits["test"]) == 2
    # reproducible by seed and nested: one labelled patient is inside two, for the same seed
    again = json.loads(resplit_prepared(tmp_path / "grouped", 2, seed=0).read_text())
    assert again["labeled"] == d["labeled"]
    one = json.loads(resplit_prepared(tmp_path / "grouped", 1, seed=0).read_text())
    assert _groups(one["labeled"]) < splits["labeled"]
    other_seed = json.loads(resplit_prepared(tmp_path / "grouped", 2, seed=3).read_text())
    assert _groups(other_seed["labeled"]) != splits["labeled"]
    # test slices of one patient form a volume, in the natural order of their names
    assert sorted({it["volume"] for it in d["test"]}) == sorted(splits["test"])
    assert [it["slice"] for it in d["test"] if it["volume"] == sorted(splits["test"])[0]] == [0, 1, 2]
    # without --group-by every picture is its own group: the same folder puts patients in two splits
    plain = json.loads(Path(prepare_folder(src, tmp_path / "plain", labeled_fraction=6, **common)).read_text())
    leaks = {k: _groups(plain[k]) for k in ("labeled", "unlabeled", "validation", "test")}
    assert any(not leaks[a].isdisjoint(leaks[b]) for a in leaks for b in leaks if a < b)


def test_split_lists_that_leak_or_misname_are_refused_naming_list_and_fix(ssl4mis, tmp_path):
    data, lists = ssl4mis / "data", tmp_path
    kw = dict(labeled_list=ssl4mis / "labeled.list", progress=False)
    (lists / "val_leaks.list").write_text("patient006_frame01\npatient002_frame01\n")  # patient 2 is labelled
    with pytest.raises(ValueError, match=r"group 'patient002' \(--group-by 'patient\\d\+'\) is in the training split "
                                         r".* and in the validation split .*Fix the split lists"):
        prepare_folder(data, tmp_path / "a", val_list=lists / "val_leaks.list", group_by=r"patient\d+", **kw)
    assert not (tmp_path / "a").exists()  # refused before anything was written
    (lists / "typo.list").write_text("patient006_frame01\n\npatient06_frame01\n")
    with pytest.raises(DataReadError, match=r"typo\.list: \(--val-list\) names 1 input\(s\) found nowhere under .*: "
                                            r"'patient06_frame01' \(line 3\)"):
        prepare_folder(data, tmp_path / "b", val_list=lists / "typo.list", **kw)
    (lists / "twice.list").write_text("patient001_frame01_slice_0\n")
    with pytest.raises(DataReadError, match=r"twice\.list: \(--test-list\) line 1: 'patient001_frame01_slice_0' .* is "
                                            r"named by .*labeled\.list line 1 too"):
        prepare_folder(data, tmp_path / "c", test_list=lists / "twice.list", **kw)
    with pytest.raises(ValueError, match=r"--val-list fixes the validation split and --val-fraction 0\.2 draws it at "
                                         r"random: give one of them"):
        prepare_folder(data, tmp_path / "d", val_list=ssl4mis / "val.list", val_fraction=0.2, **kw)
    with pytest.raises(DataReadError, match=r"patient001_frame01_slice_0\.h5: its name does not match --group-by "
                                            r"'case\\d\+'"):
        prepare_folder(data, tmp_path / "e", group_by=r"case\d+", **kw)
    (lists / "paths.list").write_text("slices/patient001_frame01_slice_0.h5 label/ignored\n")  # UniMatch-style line
    d = json.loads(Path(prepare_folder(data, tmp_path / "f", labeled_list=lists / "paths.list",
                                       val_list=ssl4mis / "val.list", progress=False)).read_text())
    assert _names(d["labeled"]) == ["patient001_frame01_slice_0.nii.gz"]


def test_folder_declares_the_intensity_its_images_hold(tmp_path):
    def prepared(name: str, write, **kw) -> dict:
        src = tmp_path / name
        (src / "labels").mkdir(parents=True)
        for k in range(2):
            write(src, k)
            nib.save(nib.Nifti1Image(np.ones((8, 8), np.uint8), np.eye(4)), src / "labels" / f"s{k}.nii.gz")
        return json.loads(Path(prepare_folder(src, tmp_path / f"{name}_out", labeled_fraction="full",
                                              val_fraction=0, progress=False, **kw)).read_text())["meta"]

    def ct(src, k):
        nib.save(nib.Nifti1Image(np.full((8, 8), -1000.0 + k, np.float32), np.eye(4)), src / f"s{k}.nii.gz")

    def mr(src, k):
        nib.save(nib.Nifti1Image(np.linspace(0, 1700.5, 64, dtype=np.float32).reshape(8, 8), np.eye(4)),
                 src / f"s{k}.nii.gz")

    def byte(src, k):
        nib.save(nib.Nifti1Image(np.arange(64, dtype=np.uint8).reshape(8, 8), np.eye(4)), src / f"s{k}.nii.gz")

    assert prepared("ct", ct)["intensity"] == "hu"
    assert prepared("mr", mr)["intensity"] == "percentile"
    assert prepared("byte", byte)["intensity"] == "uint8"
    assert prepared("declared", mr, intensity="uint8")["intensity"] == "uint8"


def test_3d_nifti_test_volumes_keep_their_spacing_for_distances_in_mm(tmp_path):
    src = tmp_path / "vols"
    (src / "labels").mkdir(parents=True)
    for v in range(3):
        image, label = ssl4mis_volume(v, 1)
        affine = np.diag([1.5, 1.5, 5.0, 1.0])
        nib.save(nib.Nifti1Image(image.transpose(2, 1, 0) * 400 - 1000, affine), src / f"case{v}.nii.gz")
        nib.save(nib.Nifti1Image(label.transpose(2, 1, 0), affine), src / "labels" / f"case{v}.nii.gz")
    d = json.loads(Path(prepare_folder(src, tmp_path / "out", test_fraction=1, val_fraction=0,
                                       labeled_fraction="full", progress=False)).read_text())
    (volume, info), = d["meta"]["volumes"].items()
    assert info == {"slices": 4, "source": str(src / f"{volume}.nii.gz"), "spacing": [1.5, 1.5, 5.0]}
    assert [it["slice"] for it in d["test"]] == [0, 1, 2, 3] and d["meta"]["intensity"] == "hu"


def test_volume_by_names_each_scan_of_a_patient_and_orders_slices_naturally(tmp_path):
    src = tmp_path / "cine"
    (src / "labels").mkdir(parents=True)
    for p in range(1, 4):
        for frame in (1, 2):
            for k in range(11):
                name = f"patient{p}_frame0{frame}_slice_{k}"
                Image.fromarray(np.full((8, 6), 10 * k, np.uint8)).save(src / f"{name}.png")
                Image.fromarray(np.eye(8, 6, dtype=np.uint8)).save(src / "labels" / f"{name}.png")
    d = json.loads(Path(prepare_folder(src, tmp_path / "out", group_by=r"patient\d+", volume_by=r"patient\d+_frame\d+",
                                       test_fraction=22, val_fraction=0, labeled_fraction="full",
                                       progress=False)).read_text())
    (patient,) = _groups(d["test"])  # one patient held out, both of its scans
    assert sorted(d["meta"]["volumes"]) == [f"{patient}_frame01", f"{patient}_frame02"]
    frame1 = sorted((it for it in d["test"] if it["volume"] == f"{patient}_frame01"), key=lambda it: it["slice"])
    assert [Path(it["image"]).name for it in frame1[9:]] == [f"{patient}_frame01_slice_9.png",
                                                             f"{patient}_frame01_slice_10.png"]
    assert d["meta"]["volume_by"] == r"patient\d+_frame\d+"


def test_volume_by_where_every_test_item_is_a_volume_already_is_said(ssl4mis, tmp_path, capsys):
    args = ["folder", str(ssl4mis / "data"), "--labeled-list", str(ssl4mis / "labeled.list"),
            "--test-list", str(ssl4mis / "test.list"), "--group-by", r"patient\d+", "--no-progress"]
    assert prepare_main([*args, "--out", str(tmp_path / "a"), "--volume-by", r"patient\d+_frame\d+"]) == 0
    assert "--volume-by 'patient\\d+_frame\\d+' names no volume: every test item is a slice of a 3D input" in \
        capsys.readouterr().err  # the test.list volumes are HDF5 volumes
    assert prepare_main([*args, "--out", str(tmp_path / "b")]) == 0
    assert "names no volume" not in capsys.readouterr().err
