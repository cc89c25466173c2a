"""Readers: generated round trips, the real sample files shipped in pydicom / pydicom-data / nibabel / skimage,
and one clear error (naming the file) per bad input."""

from __future__ import annotations

import os
from pathlib import Path

import nibabel as nib
import numpy as np
import pytest
import torch
from PIL import Image

from medsemiseg.data.io import DataReadError, detect_format, read_image, read_mask
from medsemiseg.data.slices import LoadSliced, iter_slices

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402

NIB_DATA = Path(nib.__file__).parent / "tests" / "data"


def _testfile(name: str) -> str:
    path = get_testdata_file(name)
    if path is None:
        pytest.skip(f"{name} not installed (pydicom-data)")
    return path


def write_ct_dicom(path, pixels_rc: np.ndarray, *, z: float, instance: int, series_uid="1.2.3.4",
                   slope=1.0, intercept=-1024.0, spacing=(0.5, 0.7)):
    """A minimal CT slice; ``pixels_rc`` is (rows, cols) of stored values."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = CTImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = CTImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "CT"
    ds.SeriesInstanceUID = series_uid
    ds.InstanceNumber = instance
    ds.ImagePositionPatient = [-10.0, -20.0, z]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [spacing[0], spacing[1]]  # row spacing (along Y), column spacing (along X)
    ds.SliceThickness = 2.5
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels_rc.shape
    ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 16, 15, 1
    ds.RescaleSlope, ds.RescaleIntercept = slope, intercept
    ds.PixelData = np.ascontiguousarray(pixels_rc.astype("<i2")).tobytes()
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


# ------------------------------------------------------------------------------------------------ round trips


def test_nifti_2d_round_trip_keeps_values_and_spacing(tmp_path):
    arr = np.random.default_rng(0).normal(size=(6, 5)).astype(np.float32)  # (X, Y)
    for shape in [(6, 5), (6, 5, 1)]:
        p = tmp_path / f"img{len(shape)}.nii.gz"
        nib.save(nib.Nifti1Image(arr.reshape(shape), np.diag([0.7, 0.8, 3.0, 1.0])), str(p))
        img = read_image(p)
        assert img.shape == (1, 6, 5) and img.dtype == torch.float32
        np.testing.assert_allclose(img[0].numpy(), arr)
        np.testing.assert_allclose(img.meta["spacing"], [0.7, 0.8])
        assert img.meta["filename_or_obj"] == str(p)


def test_nifti_3d_stack_and_slice_affines(tmp_path):
    vol = np.arange(4 * 3 * 5, dtype=np.float32).reshape(4, 3, 5)
    affine = np.diag([0.5, 0.6, 2.0, 1.0])
    affine[:3, 3] = [1, 2, 3]
    p = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(vol, affine), str(p))
    img = read_image(p)
    assert img.shape == (1, 4, 3, 5)
    np.testing.assert_allclose(img.meta["spacing"], [0.5, 0.6, 2.0])
    slices = list(iter_slices(p))
    assert len(slices) == 5 and all(s.shape == (1, 4, 3) for s in slices)
    np.testing.assert_array_equal(slices[3][0].numpy(), vol[:, :, 3])
    assert slices[3].meta["slice_index"] == 3
    np.testing.assert_allclose(np.asarray(slices[3].affine)[:3, 3], [1, 2, 3 + 3 * 2.0])


def test_png_grey_and_rgb_are_channel_first_x_y(tmp_path):
    pic = np.random.default_rng(1).integers(0, 255, size=(7, 9), dtype=np.uint8)  # rows=7 (Y), cols=9 (X)
    Image.fromarray(pic).save(tmp_path / "g.png")
    img = read_image(tmp_path / "g.png")
    assert img.shape == (1, 9, 7)
    np.testing.assert_array_equal(img[0].numpy().T, pic)  # upright display is a[0].T
    rgb = np.random.default_rng(2).integers(0, 255, size=(7, 9, 3), dtype=np.uint8)
    Image.fromarray(rgb).save(tmp_path / "c.png")
    img = read_image(tmp_path / "c.png")
    assert img.shape == (3, 9, 7)
    np.testing.assert_array_equal(img.numpy().transpose(2, 1, 0), rgb)


def test_gif_tif_and_rgba(tmp_path):
    pal = Image.fromarray(np.array([[0, 1], [2, 1]], dtype=np.uint8), mode="P")
    pal.putpalette([0, 0, 0, 255, 0, 0, 0, 255, 0] + [0] * (256 * 3 - 9))
    pal.save(tmp_path / "p.gif")
    img = read_image(tmp_path / "p.gif")
    assert img.shape == (3, 2, 2) and img[0, 1, 0] == 255  # pixel (x=1, y=0) is red
    m = read_mask(tmp_path / "p.gif", 3)  # a palette mask keeps its indices
    np.testing.assert_array_equal(m[0].numpy().T, [[0, 1], [2, 1]])
    t16 = (np.arange(12, dtype=np.uint16).reshape(3, 4) * 1000)
    Image.fromarray(t16).save(tmp_path / "t.tif")
    np.testing.assert_array_equal(read_image(tmp_path / "t.tif")[0].numpy().T, t16)
    Image.fromarray(np.zeros((3, 4, 4), np.uint8), mode="RGBA").save(tmp_path / "a.png")
    assert read_image(tmp_path / "a.png").shape == (3, 4, 3)


# ------------------------------------------------------------------------------------------------------ masks


def test_mask_0_255_becomes_0_1_and_rgb_uses_channel_0(tmp_path):
    m = np.zeros((5, 6), np.uint8)
    m[1:3, 2:4] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    out = read_mask(tmp_path / "m.png", 2)
    assert out.shape == (1, 6, 5) and out.dtype == torch.int64
    np.testing.assert_array_equal(out[0].numpy().T, m // 255)
    rgb = np.stack([m, np.zeros_like(m), np.full_like(m, 7)], -1)
    Image.fromarray(rgb).save(tmp_path / "rgb.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "rgb.png", 2)[0].numpy().T, m // 255)


def test_mask_threshold_for_damaged_binary_masks(tmp_path):
    m = np.array([[0, 10, 127], [128, 200, 255]], np.uint8)
    Image.fromarray(m).save(tmp_path / "m.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "m.png", 2, threshold=128)[0].numpy().T, m >= 128)


def test_mask_values_outside_classes_name_file_and_values(tmp_path):
    p = tmp_path / "bad_mask.nii.gz"
    nib.save(nib.Nifti1Image(np.array([[0, 1], [5, 7]], np.uint8), np.eye(4)), str(p))
    with pytest.raises(DataReadError) as e:
        read_mask(p, 4)
    msg = str(e.value)
    assert str(p) in msg and "[5, 7]" in msg and "0..3" in msg
    assert read_mask(p, 8).max() == 7


def test_mask_non_integer_values_are_an_error(tmp_path):
    p = tmp_path / "soft.nii.gz"
    nib.save(nib.Nifti1Image(np.array([[0, 0.5], [1, 1]], np.float32), np.eye(4)), str(p))
    with pytest.raises(DataReadError, match="soft.nii.gz.*non-integer"):
        read_mask(p, 2)


# ------------------------------------------------------------------------------------------------------ DICOM


def test_ct_small_dicom_in_hounsfield_units():
    path = _testfile("CT_small.dcm")
    img = read_image(path)
    ds = pydicom.dcmread(path)
    expected = ds.pixel_array.astype(np.float32) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    assert img.shape == (1, 128, 128) and img.dtype == torch.float32
    np.testing.assert_array_equal(img[0].numpy().T, expected)  # rows = Y
    assert float(img.min()) == -896.0 and float(img.max()) == 1167.0
    np.testing.assert_allclose(img.meta["spacing"], [0.661468, 0.661468], rtol=1e-5)


def test_compressed_dicoms_decode():
    """The decoders are dependencies (tests/test_dicom_decoding.py compares every compressed syntax with its
    uncompressed copy, and checks the error that names a missing decoder)."""
    img = read_image(_testfile("693_J2KI.dcm"))  # JPEG 2000 (lossy) CT
    assert img.shape == (1, 512, 512)
    assert float(img.min()) < -500 and float(img.max()) > 500  # HU, not raw stored values
    img = read_image(_testfile("bad_sequence.dcm"))  # JPEG Lossless, the PACS default
    assert img.shape == (1, 512, 512) and float(img.max()) > float(img.min())


def test_truncated_and_corrupt_dicom_give_one_clear_error(tmp_path):
    path = _testfile("MR_truncated.dcm")
    with pytest.raises(DataReadError, match="MR_truncated.dcm: cannot decode"):
        read_image(path)
    junk = tmp_path / "junk.dcm"
    junk.write_bytes(os.urandom(300))
    with pytest.raises(DataReadError, match="junk.dcm: not a readable DICOM"):
        read_image(junk)


def test_pydicom_data_ct_multiframe_and_seg():
    img = read_image(_testfile("693_UNCR.dcm"))
    assert img.shape == (1, 512, 512) and float(img.min()) == -3024.0
    mf = read_image(_testfile("emri_small.dcm"))
    ds = pydicom.dcmread(_testfile("emri_small.dcm"))
    assert mf.shape == (1, 64, 64, 10)
    np.testing.assert_array_equal(mf[0, :, :, 3].numpy().T, ds.pixel_array[3])
    with pytest.raises(DataReadError, match="liver_1frame.dcm: is a DICOM SEG"):
        read_image(_testfile("liver_1frame.dcm"))


def test_dicom_series_sorted_by_position_not_name_or_number(tmp_path):
    series = tmp_path / "series"
    series.mkdir()
    zs = [10.0, -5.0, 2.5, 5.0]  # file order and InstanceNumber deliberately not the spatial order
    for i, z in enumerate(zs):
        write_ct_dicom(series / f"a{i}.dcm", np.full((3, 4), 1024 + int(z * 10)), z=z, instance=len(zs) - i)
    (series / "notes.txt").write_text("not dicom")
    vol = read_image(series)
    assert vol.shape == (1, 4, 3, 4)
    np.testing.assert_array_equal(vol[0, 0, 0].numpy(), [-50, 25, 50, 100])  # HU = z*10, sorted by z
    np.testing.assert_allclose(vol.meta["spacing"], [0.7, 0.5, 5.0])
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 2], [0, 0, 5.0])
    assert len(vol.meta["series_files"]) == 4


def test_dicom_series_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(DataReadError, match="empty: folder holds no DICOM"):
        read_image(empty)
    mixed = tmp_path / "mixed"
    mixed.mkdir()
    write_ct_dicom(mixed / "a.dcm", np.zeros((3, 4)), z=0, instance=1, series_uid="1.2.3")
    write_ct_dicom(mixed / "b.dcm", np.zeros((3, 4)), z=1, instance=2, series_uid="1.2.4")
    with pytest.raises(DataReadError, match="mixed: folder mixes 2 DICOM series"):
        read_image(mixed)
    sizes = tmp_path / "sizes"
    sizes.mkdir()
    write_ct_dicom(sizes / "a.dcm", np.zeros((3, 4)), z=0, instance=1)
    write_ct_dicom(sizes / "b.dcm", np.zeros((4, 4)), z=1, instance=2)
    with pytest.raises(DataReadError, match="b.dcm: slice size"):
        read_image(sizes)


# ------------------------------------------------------------------------------------------ other real files


def test_nibabel_sample_files():
    img = read_image(NIB_DATA / "anatomical.nii")  # big-endian int16 on disk
    assert img.shape == (1, 33, 41, 25) and img.dtype == torch.float32
    np.testing.assert_allclose(img[0].numpy(), np.asarray(nib.load(NIB_DATA / "anatomical.nii").dataobj))
    with pytest.raises(DataReadError, match="example4d.nii.gz: NIfTI of shape \\(128, 96, 24, 2\\)"):
        read_image(NIB_DATA / "example4d.nii.gz")


def test_skimage_retina_jpg():
    skimage = pytest.importorskip("skimage")
    img = read_image(Path(skimage.__file__).parent / "data" / "retina.jpg")
    assert img.shape == (3, 1411, 1411) and 0 <= float(img.min()) and float(img.max()) <= 255


def test_unknown_extension_and_missing_file(tmp_path):
    p = tmp_path / "scan.xyz"
    p.write_text("hello")
    with pytest.raises(DataReadError, match="scan.xyz: unknown file type '.xyz'"):
        read_image(p)
    with pytest.raises(DataReadError, match="nothere.png: no such file"):
        detect_format(tmp_path / "nothere.png")


# ------------------------------------------------------------------------------------------------- LoadSliced


def test_load_sliced_image_label_and_errors(tmp_path):
    Image.fromarray(np.zeros((5, 6, 3), np.uint8)).save(tmp_path / "i.png")
    m = np.zeros((5, 6), np.uint8)
    m[0, 0] = 255
    Image.fromarray(m).save(tmp_path / "m.png")
    Image.fromarray(np.zeros((4, 6), np.uint8)).save(tmp_path / "small.png")
    t = LoadSliced(["image", "label"], label_keys="label", num_classes=2, allow_missing_keys=True)
    d = t({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "m.png")})
    assert d["image"].shape == (3, 6, 5) and d["label"].shape == (1, 6, 5) and int(d["label"].sum()) == 1
    assert t({"image": str(tmp_path / "i.png")})["image"].shape == (3, 6, 5)  # unlabelled item
    with pytest.raises(DataReadError, match="small.png: size \\(6, 4\\)"):
        t({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "small.png")})
    bad = m.copy()
    bad[1, 1] = 3
    Image.fromarray(bad).save(tmp_path / "bad.png")
    with pytest.raises(DataReadError, match="bad.png: label values \\[3, 255\\]"):
        t({"image": str(tmp_path / "i.png"), "label": str(tmp_path / "bad.png")})


def test_load_sliced_3d_input_needs_slice_index(tmp_path):
    p = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.random.rand(4, 3, 5).astype(np.float32), np.eye(4)), str(p))
    with pytest.raises(DataReadError, match="vol.nii.gz: is a stack of 5 slices"):
        LoadSliced("image")({"image": str(p)})
    out = LoadSliced("image", slice_index=2)({"image": str(p)})["image"]
    assert out.shape == (1, 4, 3) and out.meta["slice_index"] == 2
    slices = list(iter_slices(p))
    again = LoadSliced("image")({"image": slices[1]})["image"]  # iter_slices output passes through
    assert torch.equal(again, slices[1])


def test_reads_do_not_log_monai_reader_probe_notices(tmp_path, caplog):
    """MONAI's ``LoadImage`` builds its NvImgCodec DICOM reader on every call, which logs "nvImageCodec is not
    available" where that GPU decoder is absent: our reads (and ``prepare``, which reads every file) keep it out of
    the log, and only there."""
    from monai.data.nvimgcodec_pydicom_plugin import is_nvimgcodec_available
    from monai.transforms import LoadImage

    nib.save(nib.Nifti1Image(np.zeros((8, 6), np.float32), np.eye(4)), str(tmp_path / "a.nii.gz"))
    Image.fromarray(np.zeros((6, 8), np.uint8)).save(tmp_path / "m.png")
    caplog.set_level("WARNING")
    read_image(tmp_path / "a.nii.gz")
    read_mask(tmp_path / "m.png")
    assert not [r for r in caplog.records if "nvImageCodec" in r.getMessage()]
    if not is_nvimgcodec_available():  # outside our reads MONAI's notice still shows: the filter is scoped
        LoadImage(image_only=True)
        assert [r for r in caplog.records if "nvImageCodec" in r.getMessage()]


# ------------------------------------------------------------------------------- DICOM geometry (audit fixes)


def _series_dir(d: Path, zs, *, series_uid="1.2.3.4") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for i, z in enumerate(zs):
        write_ct_dicom(d / f"s{i}.dcm", np.full((3, 4), 1024 + int(z * 10)), z=z, instance=i + 1, series_uid=series_uid)
    return d


def test_dicom_series_duplicate_slice_is_an_error_naming_both_files(tmp_path):
    import shutil

    copy = _series_dir(tmp_path / "copy", [0.0, 2.5, 5.0])
    shutil.copy(copy / "s1.dcm", copy / "s1_copy.dcm")  # the same slice twice (same SOPInstanceUID)
    with pytest.raises(DataReadError, match="copy: .*s1.dcm.*s1_copy.dcm|copy: .*s1_copy.dcm.*s1.dcm") as err:
        read_image(copy)
    assert "duplicate" in str(err.value)
    same_z = _series_dir(tmp_path / "samez", [0.0, 2.5, 5.0])
    write_ct_dicom(same_z / "extra.dcm", np.zeros((3, 4)), z=2.5, instance=9)  # new UID, same position
    with pytest.raises(DataReadError, match="samez: .*(s1.dcm.*extra.dcm|extra.dcm.*s1.dcm)"):
        read_image(same_z)


def test_dicom_series_uneven_spacing_keeps_each_slice_position(tmp_path):
    zs = [0.0, 2.5, 5.0, 10.0]  # a gap: the mean step (10/3) places slices 1 and 2 wrongly
    vol = read_image(_series_dir(tmp_path / "uneven", zs))
    np.testing.assert_allclose(np.asarray(vol.affine)[:3, 2], [0, 0, 10.0 / 3], atol=1e-6)  # volume: mean step
    pos = np.asarray(vol.meta["slice_positions"])
    assert pos.shape == (4, 3)
    np.testing.assert_allclose(pos[:, 2], zs, atol=1e-6)
    np.testing.assert_allclose(pos[:, :2], [[10.0, 20.0]] * 4, atol=1e-6)  # LPS (-10, -20) -> RAS
    assert vol.meta["slice_spacing_deviation"] == pytest.approx(5.0 / 3, abs=1e-4)
    for k, s in enumerate(iter_slices(vol)):  # every 2D slice (what prepare writes) at its true position
        np.testing.assert_allclose(np.asarray(s.affine)[:3, 3], pos[k], atol=1e-6)
        assert "slice_positions" not in s.meta
    even = read_image(_series_dir(tmp_path / "even", [0.0, 2.5, 5.0]))
    assert even.meta["slice_spacing_deviation"] == pytest.approx(0.0, abs=1e-6)
    # pydicom's real CT2: z = -99.48, 103.02, 104.27, 105.52
    ct2 = read_image(os.path.join(os.path.dirname(_testfile("CT_small.dcm")), "dicomdirtests", "77654033", "CT2"))
    np.testing.assert_allclose(np.asarray(ct2.meta["slice_positions"])[:, 2], [-99.48, 103.02, 104.27, 105.52],
                               atol=1e-3)
    np.testing.assert_allclose([float(np.asarray(s.affine)[2, 3]) for s in iter_slices(ct2)],
                               [-99.48, 103.02, 104.27, 105.52], atol=1e-3)


def test_dicom_without_orientation_gets_a_diagonal_affine(tmp_path):
    """CR / DX / US images have no ImageOrientationPatient: MONAI's PydicomReader falls back to the identity in
    (row, column) order and then swaps i/j, giving [[0,1],[1,0]]; the array is (X = columns, Y = rows)."""
    p = write_ct_dicom(tmp_path / "dx.dcm", np.arange(12).reshape(3, 4), z=0, instance=1, spacing=(0.5, 0.7))
    ds = pydicom.dcmread(str(p))
    del ds.ImageOrientationPatient, ds.ImagePositionPatient
    ds.save_as(str(p))
    img = read_image(p)
    assert img.shape == (1, 4, 3)
    np.testing.assert_allclose(np.asarray(img.affine), np.diag([0.7, 0.5, 1.0, 1.0]))  # X = column spacing
    np.testing.assert_allclose(img.meta["spacing"], [0.7, 0.5])
    cr = read_image(os.path.join(os.path.dirname(_testfile("CT_small.dcm")), "dicomdirtests", "77654033", "CR1",
                                 "6154"))  # ImagerPixelSpacing 0.1, no PixelSpacing
    np.testing.assert_allclose(np.asarray(cr.affine), np.diag([0.1, 0.1, 1.0, 1.0]))
    np.testing.assert_allclose(cr.meta["spacing"], [0.1, 0.1])
    us = _testfile("OBXXXX1A.dcm")  # ultrasound, no spacing at all
    img = read_image(us)
    assert img.shape[1:] == (800, 600)
    np.testing.assert_allclose(np.asarray(img.affine), np.eye(4))


def test_read_dicom_series_from_a_file_list_equals_the_folder_read(tmp_path):
    from medsemiseg.data.dicom import group_dicom_series, read_dicom_series

    folder = _series_dir(tmp_path / "ser", [5.0, 0.0, 2.5])
    whole = read_image(folder)
    files = sorted(folder.iterdir())
    part = read_dicom_series(files[::-1])
    assert torch.equal(part, whole)
    np.testing.assert_allclose(np.asarray(part.affine), np.asarray(whole.affine))
    assert part.meta["series_files"] == whole.meta["series_files"]
    write_ct_dicom(folder / "z_other.dcm", np.zeros((3, 4)), z=7.5, instance=1, series_uid="9.9.9")  # another series
    groups = group_dicom_series(sorted((tmp_path / "ser").iterdir()))
    assert sorted(len(g) for g in groups) == [1, 3]


def test_thresholded_palette_mask_is_read_by_its_palette_colour_other_encodings_unchanged(tmp_path):
    """CHASE_DB1 masks (channel 0 >= 128): a palette PNG storing vessel as index 1 coloured white is vessel,
    not all background; every other encoding gives the same label map as before."""
    m = np.zeros((6, 7), bool)
    m[1:5, 2] = True
    m[3, 1:6] = True
    pal = Image.fromarray(m.astype(np.uint8), "L").convert("P")
    pal.putpalette([0, 0, 0, 255, 255, 255] + [0] * 762)
    pal.save(tmp_path / "p.png")
    assert Image.open(tmp_path / "p.png").mode == "P"
    got = read_mask(tmp_path / "p.png", 2, threshold=128, channel=0, dtype=torch.uint8)
    np.testing.assert_array_equal(got[0].numpy().T, m.astype(np.uint8))
    red = Image.fromarray(m.astype(np.uint8), "L").convert("P")  # vessel coloured red: channel 0 is 255
    red.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    red.save(tmp_path / "r.png")
    np.testing.assert_array_equal(read_mask(tmp_path / "r.png", 2, threshold=128)[0].numpy().T, m)
    assert read_mask(tmp_path / "p.png", 2)[0].numpy().T.tolist() == m.astype(int).tolist()  # no threshold: indices
    full = np.full(m.shape, 255, np.uint8)
    encs = {
        "L": Image.fromarray((m * 255).astype(np.uint8), "L"),
        "RGB": Image.fromarray(np.stack([m * 255] * 3, -1).astype(np.uint8)),
        "1": Image.fromarray(m).convert("1"),
        "LA": Image.fromarray(np.stack([m * 255, full], -1).astype(np.uint8), "LA"),
        "RGBA": Image.fromarray(np.stack([m * 255] * 3 + [full], -1).astype(np.uint8), "RGBA"),
        "I16": Image.fromarray((m * 65535).astype(np.uint16)),
    }
    for name, im in encs.items():
        im.save(tmp_path / f"{name}.png")
        out = read_mask(tmp_path / f"{name}.png", 2, threshold=128, channel=0, dtype=torch.uint8)
        np.testing.assert_array_equal(out[0].numpy().T, m.astype(np.uint8), err_msg=name)
