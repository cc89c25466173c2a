"""The bundles on prepared public data sets (DRIVE-, COVID-SemiSeg- and SSL4MIS-shaped folders made small here): what
each set declares is taken without an override, fundus photographs are trained on patches and scored at their own size
inside their field of view, with the second observer's row, and HDF5 test volumes are scored per volume."""

from __future__ import annotations

import json

import nibabel as nib
import numpy as np
import pytest

from medsemiseg.data.prepare import main as prepare_main
from medsemiseg.data.prepare import prepare_covid_semiseg, prepare_drive

from layouts import make_covid_semiseg, make_drive, make_ssl4mis
from test_bundles import TINY, workflow

pytestmark = pytest.mark.integration  # every test here trains or evaluates a bundle end to end


@pytest.fixture(scope="module")
def covidss(tmp_path_factory):
    root = tmp_path_factory.mktemp("covidss")
    prepare_covid_semiseg(make_covid_semiseg(root / "Dataset", n_train=12), root / "prepared", progress=False)
    return root / "prepared"


@pytest.fixture(scope="module")
def drive(tmp_path_factory):
    root = tmp_path_factory.mktemp("drive")
    src = make_drive(root / "DRIVE", n_train=6, n_test=2, size=(48, 40))
    prepare_drive(src, root / "prepared", val_fraction=1, labeled_fraction="1/4", progress=False)
    return root / "prepared", src


def test_covid_bundle_takes_the_classes_and_intensity_the_set_declares(covidss, tmp_path, caplog):
    ov = {**TINY, "output_dir": str(tmp_path), "dataset_dir": str(covidss), "method": "supmix_sufd"}
    with caplog.at_level("INFO", logger="medsemiseg.data.declared"):
        wf = workflow("covid", "training", **ov)
        assert wf.parser.get_parsed_content("classes") == ["background", "ground-glass", "consolidation"]
        assert wf.parser.get_parsed_content("num_classes") == 3
        assert wf.parser.get_parsed_content("intensity").kind == "uint8"
    assert "declared by" in caplog.text and "uint8" in caplog.text  # said at start
    wf.run()
    wf.finalize()
    assert json.loads((tmp_path / "models" / "run.json").read_text())["intensity_kind"] == "uint8"
    ev = workflow("covid", "evaluating", **ov)
    ev.run()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert report["classes"] == ["background", "ground-glass", "consolidation"]
    assert "second_observer" not in report
    # inference on a loose picture takes the model's classes and intensity from its run.json
    picture = sorted((covidss / "images").glob("test_*.jpg"))[0]
    with caplog.at_level("INFO", logger="medsemiseg.data.declared"):
        inf = workflow("covid", "inferring", **{**ov, "dataset_dir": str(picture)})
        assert inf.parser.get_parsed_content("num_classes") == 3
        assert inf.parser.get_parsed_content("intensity").kind == "uint8"
    assert "as the model was trained" in caplog.text


def test_covid_bundle_trains_on_ssl4mis_hdf5_slices_and_scores_the_test_volumes(tmp_path, caplog):
    """The issue's protocol end to end: SSL4MIS's HDF5 layout with its split lists, prepared into exactly those
    splits, trained by the covid bundle given only the prepared folder and the class names, evaluated per volume."""
    src = make_ssl4mis(tmp_path / "ACDC")
    slices = (src / "train_slices.list").read_text().splitlines()
    (tmp_path / "labeled.list").write_text("\n".join(slices[:8]) + "\n")
    (tmp_path / "unlabeled.list").write_text("\n".join(slices[8:]) + "\n")
    assert prepare_main(["folder", str(src / "data"), "--out", str(tmp_path / "prepared"), "--no-progress",
                         "--labeled-list", str(tmp_path / "labeled.list"), "--unlabeled-list",
                         str(tmp_path / "unlabeled.list"), "--val-list", str(src / "val.list"),
                         "--test-list", str(src / "test.list"), "--group-by", r"patient\d+"]) == 0
    classes = ["background", "RV", "Myo", "LV"]
    ov = {**TINY, "output_dir": str(tmp_path / "run"), "dataset_dir": str(tmp_path / "prepared"), "classes": classes}
    with caplog.at_level("INFO", logger="medsemiseg.data.declared"):
        wf = workflow("covid", "training", **ov)
        assert wf.parser.get_parsed_content("intensity").kind == "percentile"  # declared by the prepared folder
    wf.run()
    wf.finalize()
    ev = workflow("covid", "evaluating", **ov)
    ev.run()
    report = json.loads((tmp_path / "run" / "eval" / "metrics.json").read_text())
    assert report["classes"] == classes and 0 <= report["mIoU"] <= 1  # the 2D scores, as before
    volumes = report["per_volume"]
    assert volumes["num_volumes"] == 2 and set(volumes["volumes"]) == {"patient007_frame01", "patient008_frame01"}
    for name in classes[1:]:
        row = volumes["per_class"][name]
        assert 0 <= row["dice"] <= 1 and 0 <= row["iou"] <= row["dice"]
        assert row["volumes"] == 2 and (row["hd95"] >= 0 or row["distance_undefined"] > 0)
    assert volumes["mean"]["dice"] == pytest.approx(np.nanmean([volumes["per_class"][c]["dice"] for c in classes[1:]]))
    assert report["metrics"]["volume_mDice"] == pytest.approx(volumes["mean"]["dice"])
    # an HDF5 volume is an inference input too: its label map comes back as one volume in MONAI's (X, Y, Z) order
    inf = workflow("covid", "inferring", **{**ov, "dataset_dir": str(src / "data" / "patient007_frame01.h5")})
    inf.run()
    seg = nib.load(tmp_path / "run" / "outputs" / "patient007_frame01_seg.nii.gz")
    assert seg.shape == (20, 24, 4) and set(np.unique(seg.get_fdata())) <= {0, 1, 2, 3}


def test_chase_bundle_on_drive_patches_sliding_window_fov_and_second_observer(drive, tmp_path):
    prepared, src = drive
    ov = {**TINY, "output_dir": str(tmp_path), "dataset_dir": str(prepared), "method": "supmix_sufd",
          "patch_size": [32, 32]}
    wf = workflow("chase", "training", **ov)
    assert type(wf.parser.get_parsed_content("inferer")).__name__ == "SlidingWindowInferer"
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape[-2:]) == (32, 32)  # patches, not resized photographs
    wf.run()
    wf.finalize()
    ev = workflow("chase", "evaluating", **ov)
    ev.run()
    report = json.loads((tmp_path / "eval" / "metrics.json").read_text())
    assert set(report["second_observer"]["per_class"]) == {"background", "vessel"}
    assert 0 < report["second_observer"]["per_class"]["vessel"]["iou"] < 1
    # scored inside the FOV masks: the same evaluation over every pixel differs
    ev_all = workflow("chase", "evaluating", **ov, eval_fov=False, eval_dir=str(tmp_path / "eval_all"))
    ev_all.run()
    everywhere = json.loads((tmp_path / "eval_all" / "metrics.json").read_text())
    def ious(r):
        return [r["per_class"][c]["iou"] for c in ("background", "vessel")]

    assert ious(everywhere) != ious(report)
    # inference on a photograph of the public layout writes a label map of its own size
    photo = src / "test" / "images" / "01_test.tif"
    workflow("chase", "inferring", **{**ov, "dataset_dir": str(photo)}).run()
    out = np.asarray(nib.load(tmp_path / "outputs" / "01_test_seg.nii.gz").dataobj)
    assert out.shape == (48, 40)


def test_patch_size_null_from_the_command_line_trains_whole_images(tmp_path):
    """MONAI's CLI drops an override that parses to None (``--patch_size None``), so the bundles read the string
    ``null`` as null, and the benchmark grid writes a YAML ``null`` so."""
    from medsemiseg.benchmark.config import _override_args

    assert _override_args({"patch_size": None}) == ["--patch_size", "null"]
    wf = workflow("chase", "training", **{**TINY, "output_dir": str(tmp_path), "patch_size": "null"})
    assert wf.parser.get_parsed_content("training_patch") is None
    assert type(wf.parser.get_parsed_content("inferer")).__name__ == "SimpleInferer"
    batch = next(iter(wf.parser.get_parsed_content("train#dataloader")))
    assert tuple(batch["image"].shape[-2:]) == tuple(TINY["image_size"])
