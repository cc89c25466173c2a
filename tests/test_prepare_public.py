"""``prepare drive`` and ``prepare covid-semiseg``: the public layouts made small here, the real folders when
``../shared/data`` is beside the repository, and one clear error per bad input with ``--out`` left as it was."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from medsemiseg.data.io import read_mask
from medsemiseg.data.prepare import main
from medsemiseg.data.prepare import prepare_covid_semiseg, prepare_drive

from layouts import make_covid_semiseg, make_drive, palette_png

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared" / "data"


def _datalist(path) -> dict:
    return json.loads(Path(path).read_text())


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ----------------------------------------------------------------------------------------------------- DRIVE


def test_drive_pool_test_fov_and_second_observer(tmp_path):
    src = make_drive(tmp_path / "DRIVE", n_train=10, n_test=3)
    path = prepare_drive(src, tmp_path / "out", labeled_fraction="1/4", val_fraction=2, progress=False)
    d = _datalist(path)
    c = d["meta"]["counts"]
    assert (c["train"], c["labeled"], c["unlabeled"], c["validation"], c["test"]) == (8, 2, 6, 2, 3)
    assert d["meta"]["classes"] == ["background", "vessel"]
    assert d["meta"]["intensity"] == "uint8" and d["meta"]["in_channels"] == 3
    for item in d["labeled"] + d["validation"] + d["test"]:
        assert set(item) >= {"image", "label", "fov"}
        fov = read_mask(tmp_path / "out" / item["fov"])
        assert fov.max() == 1 and 0 < float(fov.float().mean()) < 1
    assert all(set(i) == {"image"} for i in d["unlabeled"])
    assert all("second_observer" in i for i in d["test"])
    assert not any("second_observer" in i for i in d["labeled"] + d["validation"])
    # the test photographs are DRIVE's test/ folder, the pool its training/ folder
    assert sorted(Path(i["image"]).name for i in d["test"]) == ["01_test.tif", "02_test.tif", "03_test.tif"]
    assert all("_training" in i["image"] for i in d["labeled"] + d["unlabeled"] + d["validation"])
    # masks read by value >= 128 (0/255 GIFs and the palette GIFs of the second observer alike)
    item = d["test"][0]
    lab = read_mask(tmp_path / "out" / item["label"])
    ref = np.array(Image.open(src / "test" / "1st_manual" / "01_manual1.gif").convert("L")) >= 128
    assert np.array_equal(lab[0].numpy().T.astype(bool), ref)
    second = read_mask(tmp_path / "out" / item["second_observer"])
    assert 0 < int(second.sum()) and not np.array_equal(second[0].numpy().T.astype(bool), ref)


def test_drive_validation_on_test_with_val_fraction_zero(tmp_path):
    src = make_drive(tmp_path / "DRIVE", n_train=4, n_test=2)
    d = _datalist(prepare_drive(src, tmp_path / "out", val_fraction=0, progress=False))
    assert d["validation"] == d["test"] and d["meta"]["validation_is_test"] is True


@pytest.mark.parametrize("fault", ["manual", "fov"])
def test_drive_image_without_its_masks_is_one_error_naming_it(tmp_path, capsys, fault):
    src = make_drive(tmp_path / "DRIVE", n_train=3, n_test=2)
    out = tmp_path / "out"
    assert main(["drive", str(src), "--out", str(out), "--val-fraction", "1", "--no-progress"]) == 0
    before = _snapshot(out)
    gone = src / "training" / ("1st_manual/22_manual1.gif" if fault == "manual" else "mask/22_training_mask.gif")
    gone.unlink()
    assert main(["drive", str(src), "--out", str(out), "--val-fraction", "1", "--no-progress"]) == 2
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert "22_training.tif" in err and ("manual vessel mask" if fault == "manual" else "field-of-view mask") in err
    assert _snapshot(out) == before  # the earlier preparation is kept as it was


def test_drive_mask_outside_the_classes_and_wrong_layout(tmp_path, capsys):
    src = make_drive(tmp_path / "DRIVE", n_train=3, n_test=2)
    # a mask with a grey level that is neither vessel nor background after thresholding is still a valid 0/1 mask;
    # a FOV mask of another size is not
    Image.fromarray(np.zeros((10, 10), np.uint8)).save(src / "test" / "mask" / "02_test_mask.gif")
    assert main(["drive", str(src), "--out", str(tmp_path / "o1"), "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert "02_test_mask.gif" in err and "differs from its image" in err
    assert not (tmp_path / "o1").exists()
    shutil.rmtree(src / "test")
    assert main(["drive", str(src), "--out", str(tmp_path / "o2"), "--no-progress"]) == 2
    assert "test" in capsys.readouterr().err and not (tmp_path / "o2").exists()


# --------------------------------------------------------------------------------------------- COVID-SemiSeg


def test_covid_semiseg_splits_classes_and_intensity(tmp_path):
    src = make_covid_semiseg(tmp_path / "Dataset", n_train=10, n_test=4, n_unlabeled=6)
    d = _datalist(prepare_covid_semiseg(src, tmp_path / "out", labeled_fraction="1/4", progress=False))
    c = d["meta"]["counts"]
    assert (c["train"], c["labeled"], c["validation"], c["test"], c["extra_unlabeled"]) == (8, 2, 2, 4, 6)
    assert c["unlabeled"] == 6 + 6
    assert d["meta"]["classes"] == ["background", "ground-glass", "consolidation"]
    assert d["meta"]["intensity"] == "uint8" and d["meta"]["in_channels"] == 1
    names = [Path(i["image"]).name for i in d["test"]]
    assert names == [f"test_{k}.jpg" for k in range(4)]  # the two sets both number from 0: prefixed, not renumbered
    # palette indices are the classes, written as 0/1/2 PNGs of the image's size
    item = d["test"][1]
    lab = read_mask(tmp_path / "out" / item["label"], 3)
    ref = np.array(Image.open(src / "TestingSet" / "MultiClassInfection-Test" / "GT" / "1.png"))
    assert np.array_equal(lab[0].numpy().T, ref)


def test_covid_semiseg_without_the_extra_unlabelled_slices_keeps_every_other_split(tmp_path):
    src = make_covid_semiseg(tmp_path / "Dataset", n_train=10, n_test=4, n_unlabeled=6)
    full = _datalist(prepare_covid_semiseg(src, tmp_path / "full", labeled_fraction="1/4", progress=False))
    assert main(["covid-semiseg", str(src), "--out", str(tmp_path / "pool"), "--labeled-fraction", "1/4",
                         "--no-extra-unlabeled", "--no-progress"]) == 0
    pool = _datalist(tmp_path / "pool" / "datalist.json")
    assert pool["meta"]["counts"]["extra_unlabeled"] == 0 and pool["meta"]["extra_unlabeled"] is False
    assert pool["unlabeled"] == [u for u in full["unlabeled"] if "unlabeled_" not in u["image"]]
    assert len(pool["unlabeled"]) == 6
    for split in ("labeled", "validation", "test"):  # the same slices: variants pair with the full set's cells
        assert pool[split] == full[split]
    assert not list((tmp_path / "pool" / "images").glob("unlabeled_*"))


def test_covid_semiseg_bad_inputs_name_the_file_and_leave_out_alone(tmp_path, capsys):
    def fails(name: str, damage, *needles: str) -> None:
        """Prepare a good copy, damage the source, prepare again: one error naming the file; --out as it was."""
        src, out = make_covid_semiseg(tmp_path / name), tmp_path / f"out_{name}"
        assert main(["covid-semiseg", str(src), "--out", str(out), "--no-progress"]) == 0
        before = _snapshot(out)
        damage(src)
        assert main(["covid-semiseg", str(src), "--out", str(out), "--no-progress"]) == 2
        last = capsys.readouterr().err.strip().splitlines()[-1]
        for n in needles:
            assert n in last, last
        assert _snapshot(out) == before

    def value_3(src: Path) -> None:  # a mask value outside the three classes
        gt = src / "TrainingSet" / "MultiClassInfection-Train" / "GT" / "3.png"
        bad = np.array(Image.open(gt))
        bad[0, 0] = 3
        palette_png(bad, {0: (0, 0, 0), 1: (128, 0, 0), 2: (0, 128, 0), 3: (0, 0, 128)}).save(gt)

    def lose_mask(src: Path) -> None:  # Imgs / GT count mismatch
        (src / "TestingSet" / "MultiClassInfection-Test" / "GT" / "2.png").unlink()

    def empty_unlabelled(src: Path) -> None:
        for p in (src / "TrainingSet" / "LungInfection-Train" / "Pseudo-label" / "Imgs").iterdir():
            p.unlink()

    fails("a", value_3, "3.png", "outside the declared classes 0..2")
    fails("b", lose_mask, "images without a mask", ": 2.")
    fails("c", empty_unlabelled, "Pseudo-label/Imgs", "no unlabelled slices")


# ------------------------------------------------------------------------------------- the real folders, if here


@pytest.mark.skipif(not (SHARED / "DRIVE").is_dir(), reason=f"{SHARED / 'DRIVE'} is absent (a user's fresh clone)")
@pytest.mark.integration
def test_real_drive_counts_and_sizes(tmp_path):
    d = _datalist(prepare_drive(SHARED / "DRIVE", tmp_path / "drive", progress=False))
    c = d["meta"]["counts"]
    assert c["train"] + c["validation"] == 20 and c["test"] == 20 and (c["labeled"], c["validation"]) == (2, 4)
    assert all("second_observer" in i and "fov" in i for i in d["test"])
    img = Image.open(tmp_path / "drive" / d["test"][0]["image"])
    assert img.size == (565, 584) and img.mode == "RGB"


@pytest.mark.skipif(not (SHARED / "COVID-SemiSeg").is_dir(),
                    reason=f"{SHARED / 'COVID-SemiSeg'} is absent (a user's fresh clone)")
@pytest.mark.integration
def test_real_covid_semiseg_counts_and_classes(tmp_path):
    d = _datalist(prepare_covid_semiseg(SHARED / "COVID-SemiSeg" / "Dataset", tmp_path / "covidss", progress=False))
    c = d["meta"]["counts"]
    assert c["train"] + c["validation"] == 50 and c["test"] == 48 and c["extra_unlabeled"] == 1600
    assert d["meta"]["classes"] == ["background", "ground-glass", "consolidation"]
    values = set()
    for item in d["test"]:
        values |= set(np.unique(np.array(Image.open(tmp_path / "covidss" / item["label"]))).tolist())
    assert values == {0, 1, 2}
