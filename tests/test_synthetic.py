"""Tests of the synthetic phantom generators (medsemiseg.data.synthetic).

They check the properties other parts rely on: the real file layouts and names, shapes / dtypes, the (X, Y)
orientation (effusion posterior = large Y), HU per class, class and vessel frequencies, the DICOM series
(HU reconstruction, shuffled file names, MONAI's PydicomReader agreeing with the NIfTI), determinism and the CLI.
Sizes are kept small; each generated set is built once per module.
"""

from __future__ import annotations

import numpy as np
import pytest

nib = pytest.importorskip("nibabel")
pydicom = pytest.importorskip("pydicom")
from PIL import Image  # noqa: E402

from medsemiseg.data import synthetic as syn  # noqa: E402

COVID_KW = dict(n_slices=24, size=96, n_unlabeled_volumes=2, unlabeled_slices=4, n_val_slices=3, dicom_slices=6,
                seed=3)
CHASE_KW = dict(n_images=6, size=(96, 100), seed=1)


def _load(path):
    return np.asarray(nib.load(str(path)).dataobj)


@pytest.fixture(scope="module")
def covid(tmp_path_factory):
    out = tmp_path_factory.mktemp("covid")
    return syn.generate_covid(out, **COVID_KW)


@pytest.fixture(scope="module")
def chase(tmp_path_factory):
    out = tmp_path_factory.mktemp("chase")
    return syn.generate_chase(out, **CHASE_KW)


# ------------------------------------------------------------------------------------------------ CT phantom


def test_covid_layout_shapes_dtypes(covid):
    root = covid["root"]
    expected = {"tr_im.nii.gz", "tr_mask.nii.gz", "tr_lungmasks_updated.nii.gz", "val_im.nii.gz",
                "unlabeled/rp_im_1.nii.gz", "unlabeled/rp_im_2.nii.gz", "dicom/series_01_mask.nii.gz"}
    written = {str(p.relative_to(root)) for p in root.rglob("*.nii.gz")}
    assert written == expected
    n, s = COVID_KW["n_slices"], COVID_KW["size"]
    im, mask = nib.load(str(covid["tr_im"])), nib.load(str(covid["tr_mask"]))
    assert im.shape == mask.shape == (s, s, n)
    assert im.get_data_dtype() == np.float32 and mask.get_data_dtype() == np.uint8
    assert set(np.unique(_load(covid["tr_mask"]))) <= {0, 1, 2, 3}
    assert nib.load(str(covid["val_im"])).shape == (s, s, COVID_KW["n_val_slices"])
    assert nib.load(str(covid["rp_im_1"])).shape == (s, s, COVID_KW["unlabeled_slices"])
    # diagonal affine carrying the pixel spacing and slice thickness
    aff = im.affine
    assert np.allclose(aff[:3, :3], np.diag(np.diag(aff[:3, :3])))
    assert np.allclose(np.abs(np.diag(aff)[:3]), [380.0 / s, 380.0 / s, 5.0])
    hu = _load(covid["tr_im"])
    assert np.all(hu == np.round(hu)) and hu.min() >= -1024 and hu.max() <= 3071


def test_covid_hu_per_class(covid):
    hu, lab, lungs = _load(covid["tr_im"]), _load(covid["tr_mask"]), _load(covid["tr_lungmasks_updated"])
    healthy_lung = np.median(hu[(lungs > 0) & (lab == 0)])
    ggo, cons, eff = (np.median(hu[lab == c]) for c in (1, 2, 3))
    assert -900 <= healthy_lung <= -780, healthy_lung
    assert -660 <= ggo <= -540, ggo
    assert -30 <= cons <= 70, cons  # core 0..50 HU; partial-volume edges pull the median down
    assert -20 <= eff <= 45, eff
    # outside the body is air
    assert np.median(hu[:3, :3, :]) < -950
    # ground-glass is hazy: its intensity range overlaps the lung and is far below consolidation
    assert np.percentile(hu[lab == 1], 5) < -700 and np.percentile(hu[lab == 1], 95) < -300


def test_covid_class_frequencies(covid):
    lab = _load(covid["tr_mask"])
    frac = [(lab == c).mean() for c in range(4)]
    # defaults: 4.5 % ground-glass, 1.5 % consolidation, 0.4 % effusion of all pixels (met exactly unless capped)
    assert 0.035 <= frac[1] <= 0.05, frac
    assert 0.011 <= frac[2] <= 0.017, frac
    assert 0.003 <= frac[3] <= 0.0045, frac
    assert frac[1] > frac[2] > frac[3] > 0
    with_eff = (lab == 3).any(axis=(0, 1))
    assert 0 < with_eff.sum() <= 0.4 * lab.shape[2]  # effusion only in some slices
    # slices vary: lesion load differs, some slices are lesion-free
    load = (lab > 0).sum(axis=(0, 1))
    assert load.std() > 0.3 * load.mean()


def test_covid_frequencies_are_parameters():
    hu, lab, _ = syn.ct_phantom_volume(12, 64, seed=1, ggo_fraction=0.01, consolidation_fraction=0.02,
                                       effusion_fraction=0.0, lesion_free_fraction=0.25)
    frac = [(lab == c).mean() for c in range(4)]
    assert frac[3] == 0
    assert frac[2] > frac[1]
    assert abs(frac[1] - 0.01) < 0.002 and abs(frac[2] - 0.02) < 0.003
    assert ((lab > 0).sum(axis=(0, 1)) == 0).sum() == 3  # a quarter of the slices are lesion-free


def test_covid_effusion_is_posterior(covid):
    """The dependent effusion sits at large Y (bottom when shown upright as data[:, :, k].T)."""
    lab, lungs = _load(covid["tr_mask"]), _load(covid["tr_lungmasks_updated"])
    size = lab.shape[1]
    y = np.arange(size)[None, :]
    n_checked = 0
    for k in range(lab.shape[2]):
        eff = lab[:, :, k] == 3
        if not eff.any():
            continue
        lung_y = np.broadcast_to(y, eff.shape)[(lungs[:, :, k] > 0) | eff].mean()
        eff_y = np.broadcast_to(y, eff.shape)[eff].mean()
        assert eff_y > lung_y + 0.1 * size / 4, (k, eff_y, lung_y)
        assert eff_y > size / 2
        n_checked += 1
    assert n_checked >= 1
    # and the anatomy agrees: the spine (bone, >250 HU) is posterior, near the table side
    hu = _load(covid["tr_im"])
    bone_y = np.broadcast_to(y, hu.shape[:2])[(hu[:, :, 0] > 250) & (np.abs(np.arange(size) - size / 2)[:, None]
                                                                       < size * 0.03)]
    assert np.median(bone_y) > size / 2


def test_covid_dicom_series(covid):
    folder = covid["dicom_series"]
    files = sorted(folder.glob("*.dcm"))
    assert len(files) == COVID_KW["dicom_slices"]
    dss = [pydicom.dcmread(f) for f in files]
    z_by_name = [float(ds.ImagePositionPatient[2]) for ds in dss]
    assert z_by_name != sorted(z_by_name), "file names must not be in slice order"
    order = np.argsort(z_by_name)
    dss = [dss[i] for i in order]
    assert [int(ds.InstanceNumber) for ds in dss] == list(range(1, len(dss) + 1))
    for ds in dss:
        assert ds.SOPClassUID == "1.2.840.10008.5.1.4.1.1.2" and ds.Modality == "CT"
        assert ds.file_meta.TransferSyntaxUID == pydicom.uid.ExplicitVRLittleEndian
        assert ds.pixel_array.dtype == np.int16 and ds.PixelRepresentation == 1
        assert float(ds.SliceThickness) == 5.0 and len(ds.PixelSpacing) == 2
    assert len({ds.SeriesInstanceUID for ds in dss}) == 1 and len({ds.SOPInstanceUID for ds in dss}) == len(dss)
    # HU = stored * slope + intercept; rows run along Y, so the (X, Y) volume is the transpose
    vol = np.stack([(ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)).T for ds in dss], -1)
    ref_hu, ref_lab, _ = syn.ct_phantom_volume(COVID_KW["dicom_slices"], COVID_KW["size"], seed=COVID_KW["seed"],
                                               stream="dicom", contiguous=True)
    np.testing.assert_array_equal(vol, ref_hu)
    mask = _load(covid["dicom_mask"])
    np.testing.assert_array_equal(mask, ref_lab)
    assert np.median(vol[mask == 1]) > np.median(vol[(mask == 0) & (vol < -700)])


def test_covid_dicom_matches_monai_reader(covid):
    """MONAI's PydicomReader (swap_ij=True) returns the same (X, Y, Z) HU array and affine as the NIfTI mask."""
    monai_data = pytest.importorskip("monai.data")
    reader = monai_data.PydicomReader()
    arr, meta = reader.get_data(reader.read(str(covid["dicom_series"])))
    ref_hu, _, _ = syn.ct_phantom_volume(COVID_KW["dicom_slices"], COVID_KW["size"], seed=COVID_KW["seed"],
                                         stream="dicom", contiguous=True)
    np.testing.assert_allclose(arr, ref_hu)
    mask = nib.load(str(covid["dicom_mask"]))
    assert arr.shape == mask.shape
    np.testing.assert_allclose(np.asarray(meta["affine"]), mask.affine, atol=1e-3)


def test_covid_determinism(tmp_path, covid):
    small = dict(n_slices=4, size=48, n_unlabeled_volumes=1, unlabeled_slices=2, n_val_slices=1, dicom_slices=3,
                 seed=11)
    a = syn.generate_covid(tmp_path / "a", **small)
    b = syn.generate_covid(tmp_path / "b", **small)
    for key in ("tr_im", "tr_mask", "tr_lungmasks_updated", "val_im", "rp_im_1", "dicom_mask"):
        np.testing.assert_array_equal(_load(a[key]), _load(b[key]))
        assert a[key].read_bytes() == b[key].read_bytes()
    # the module fixture, regenerated in memory from the same seed, is identical too
    hu, lab, _ = syn.ct_phantom_volume(COVID_KW["n_slices"], COVID_KW["size"], seed=COVID_KW["seed"])
    np.testing.assert_array_equal(_load(covid["tr_im"]), hu)
    np.testing.assert_array_equal(_load(covid["tr_mask"]), lab)
    for f in sorted(a["dicom_series"].iterdir()):
        assert f.read_bytes() == (b["dicom_series"] / f.name).read_bytes()
    c = syn.generate_covid(tmp_path / "c", **dict(small, seed=COVID_KW["seed"] + 1, dicom_series=False))
    assert not np.array_equal(_load(a["tr_im"]), _load(c["tr_im"]))
    assert "dicom_series" not in c and not (tmp_path / "c" / "dicom").exists()


def test_covid_bad_arguments(tmp_path):
    with pytest.raises(ValueError, match="size"):
        syn.generate_covid(tmp_path, size=8)
    with pytest.raises(ValueError, match="ggo_fraction"):
        syn.ct_phantom_volume(2, 64, ggo_fraction=0.9)
    with pytest.raises(ValueError, match="n_slices"):
        syn.ct_phantom_volume(0, 64)


# ------------------------------------------------------------------------------------------------ fundus phantom


def _mask(path):
    m = np.asarray(Image.open(path))
    return (m[..., 0] if m.ndim == 3 else m).astype(np.uint8) * (255 if m.dtype == bool else 1)


def test_chase_names():
    assert syn.chase_names(4) == ["Image_01L", "Image_01R", "Image_02L", "Image_02R"]
    names = syn.chase_names(30)
    assert names[27] == "Image_14R" and names[28:] == ["Image_15L", "Image_15R"]
    with pytest.raises(ValueError, match="even"):
        syn.chase_names(3)


def test_chase_layout_and_encodings(chase):
    root = chase["root"]
    names = syn.chase_names(CHASE_KW["n_images"])
    expected = {f"{n}{suffix}" for n in names for suffix in (".jpg", "_1stHO.png", "_2ndHO.png")}
    assert {p.name for p in root.iterdir()} == expected
    h, w = CHASE_KW["size"]
    modes = set()
    for img_p, m1_p, m2_p in zip(chase["images"], chase["masks_1stHO"], chase["masks_2ndHO"]):
        img = Image.open(img_p)
        assert img.format == "JPEG" and img.mode == "RGB" and img.size == (w, h)
        for mp in (m1_p, m2_p):
            im = Image.open(mp)
            assert im.format == "PNG" and im.size == (w, h)
            modes.add(im.mode)
            assert set(np.unique(_mask(mp))) <= {0, 255}
    assert {"RGB", "L"} <= modes  # not uniformly encoded, like CHASE_DB1


def test_chase_vessel_fraction_and_observers(chase):
    for m1_p, m2_p in zip(chase["masks_1stHO"], chase["masks_2ndHO"]):
        m1, m2 = _mask(m1_p) > 127, _mask(m2_p) > 127
        assert 0.08 <= m1.mean() <= 0.12, m1.mean()
        assert 0.07 <= m2.mean() <= 0.14, m2.mean()
        dice = 2 * (m1 & m2).sum() / (m1.sum() + m2.sum())
        assert 0.7 < dice < 0.98, dice  # a slightly different second observer


def test_chase_vessels_are_dark_thin_and_connected():
    rgb, m1, _ = syn.fundus_phantom((192, 200), seed=0, index=0)
    green = rgb[..., 1].astype(float)
    # vessels are darker than the background around them (green channel carries the contrast)
    ring = ndi_dilate(m1, 3) & ~m1
    assert green[m1].mean() < green[ring].mean() - 8
    # widths from 1 px up to several px: trunks (>= 3 px) survive an erosion, most pixels are thin vessels
    from scipy import ndimage as ndi

    assert ndi.binary_erosion(m1).sum() > 0.08 * m1.sum()
    assert (m1 & ~ndi.binary_opening(m1)).sum() > 0.3 * m1.sum()
    # trees, not speckle: a handful of connected components hold nearly all vessel pixels
    lab, n = ndi.label(m1, structure=np.ones((3, 3)))
    sizes = np.sort(np.bincount(lab.ravel())[1:])[::-1]
    assert sizes[:5].sum() > 0.9 * m1.sum()
    # illumination is uneven inside the field of view, black outside it
    h, w = green.shape
    assert rgb[:4, :4].max() < 30
    fov = ~ndi_dilate(~(green > 25), 4)
    quads = [green[:h // 2, :w // 2], green[:h // 2, w // 2:], green[h // 2:, :w // 2], green[h // 2:, w // 2:]]
    fq = [fov[:h // 2, :w // 2], fov[:h // 2, w // 2:], fov[h // 2:, :w // 2], fov[h // 2:, w // 2:]]
    means = [q[f].mean() for q, f in zip(quads, fq)]
    assert max(means) - min(means) > 4


def ndi_dilate(mask, it):
    from scipy import ndimage as ndi

    return ndi.binary_dilation(mask, iterations=it)


def test_chase_determinism(tmp_path):
    a = syn.generate_chase(tmp_path / "a", n_images=2, size=(64, 66), seed=5, mask_modes=("1",))
    b = syn.generate_chase(tmp_path / "b", n_images=2, size=(64, 66), seed=5, mask_modes=("1",))
    for key in ("images", "masks_1stHO", "masks_2ndHO"):
        for pa, pb in zip(a[key], b[key]):
            assert pa.read_bytes() == pb.read_bytes()
    assert Image.open(a["masks_1stHO"][0]).mode == "1"
    c = syn.generate_chase(tmp_path / "c", n_images=2, size=(64, 66), seed=6)
    assert a["images"][0].read_bytes() != c["images"][0].read_bytes()
    with pytest.raises(ValueError, match="even"):
        syn.generate_chase(tmp_path / "d", n_images=3)
    with pytest.raises(ValueError, match="mask_modes"):
        syn.generate_chase(tmp_path / "d", n_images=2, mask_modes=("P",))


# ------------------------------------------------------------------------------------------------ CLI


def test_cli(tmp_path, capsys):
    out = tmp_path / "ct"
    assert syn.main(["--task", "covid", "--out", str(out), "--n", "3", "--size", "48", "--unlabeled-volumes", "0",
                     "--no-dicom"]) == 0
    printed = capsys.readouterr().out
    assert "tr_im.nii.gz" in printed and "(48, 48, 3)" in printed
    assert nib.load(str(out / "tr_im.nii.gz")).shape == (48, 48, 3)
    with pytest.raises(SystemExit):  # refuses a non-empty folder
        syn.main(["--task", "covid", "--out", str(out), "--n", "3", "--size", "48"])
    assert "not empty" in capsys.readouterr().err
    assert syn.main(["--task", "covid", "--out", str(out), "--n", "2", "--size", "48", "--unlabeled-volumes", "0",
                     "--no-dicom", "--overwrite"]) == 0
    assert nib.load(str(out / "tr_im.nii.gz")).shape == (48, 48, 2)

    out = tmp_path / "fundus"
    assert syn.main(["--task", "chase", "--out", str(out), "--n", "2", "--size", "64"]) == 0
    assert "Image_01R.jpg" in capsys.readouterr().out
    assert Image.open(out / "Image_01L.jpg").size == (67, 64)  # W x H keeps CHASE's 999:960 aspect
    with pytest.raises(SystemExit):
        syn.main(["--task", "chase", "--out", str(tmp_path / "x"), "--n", "3"])
    assert "even" in capsys.readouterr().err
