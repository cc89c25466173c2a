"""DICOM SEG masks: the real SEG shipped in pydicom, SEGs the tests write for generated series, the class rules,
one clear error per bad input, and ``prepare folder`` / ``prepare covid`` taking a SEG as the mask."""

from __future__ import annotations

import json
import warnings

import nibabel as nib
import numpy as np
import pytest
import torch

from medsemiseg.data import synthetic
from medsemiseg.data.dicom_seg import read_seg
from medsemiseg.data.io import DataReadError, read_image, read_mask
from medsemiseg.data.prepare import main as prepare_main
from medsemiseg.data.prepare import prepare_covid

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from test_io import write_ct_dicom  # noqa: E402  (tests/ is on sys.path under pytest)

LIVER_UID = "1.2.392.200103.20080913.113635.2.2009.6.22.21.43.10.23433.1"
LIVER_POS = [-235.2, -226.8, -128.69]


def _pack_bits(flat: np.ndarray) -> bytes:
    try:
        from pydicom.pixels import pack_bits
    except ImportError:  # pydicom 2
        from pydicom.pixel_data_handlers.numpy_handler import pack_bits
    return pack_bits(flat.astype(np.uint8))


def write_seg(path, frames, *, rows, cols, segments, fractional=False, with_uid=True, with_position=True,
              orientation=(1, 0, 0, 0, 1, 0)):
    """A DICOM SEG; ``frames`` are ``(segment number, source header or None, mask (rows, cols))``."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.sequence import Sequence as Seq
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.66.4"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.preamble = b"\0" * 128
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Modality = "SEG"
    ds.SeriesInstanceUID = generate_uid()
    ds.Rows, ds.Columns = rows, cols
    ds.NumberOfFrames = len(frames)
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.PixelRepresentation = 0
    ds.SegmentationType = "FRACTIONAL" if fractional else "BINARY"
    segs = []
    for number, label in segments.items():
        s = Dataset()
        s.SegmentNumber = number
        s.SegmentLabel = label
        segs.append(s)
    ds.SegmentSequence = Seq(segs)
    plane = Dataset()
    plane.ImageOrientationPatient = list(orientation)
    shared = Dataset()
    shared.PlaneOrientationSequence = Seq([plane])
    ds.SharedFunctionalGroupsSequence = Seq([shared])
    items = []
    for number, src, _ in frames:
        item = Dataset()
        ident = Dataset()
        ident.ReferencedSegmentNumber = number
        item.SegmentIdentificationSequence = Seq([ident])
        if src is not None and with_uid:
            ref = Dataset()
            ref.ReferencedSOPClassUID = src.SOPClassUID
            ref.ReferencedSOPInstanceUID = src.SOPInstanceUID
            deriv = Dataset()
            deriv.SourceImageSequence = Seq([ref])
            item.DerivationImageSequence = Seq([deriv])
        if src is not None and with_position:
            pos = Dataset()
            pos.ImagePositionPatient = list(src.ImagePositionPatient)
            item.PlanePositionSequence = Seq([pos])
        items.append(item)
    ds.PerFrameFunctionalGroupsSequence = Seq(items)
    stack = np.stack([np.asarray(m) for _, _, m in frames]) if frames else np.zeros((0, rows, cols))
    if fractional:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 8, 8, 7
        ds.MaximumFractionalValue = 255
        ds.SegmentationFractionalType = "PROBABILITY"
        ds.PixelData = stack.astype(np.uint8).tobytes()
    else:
        ds.BitsAllocated, ds.BitsStored, ds.HighBit = 1, 1, 0
        ds.PixelData = _pack_bits(stack.astype(bool).ravel())
    pydicom.dcmwrite(str(path), ds, enforce_file_format=True)
    return path


def _series(folder, label_zxy: np.ndarray, zs=(10.0, -5.0, 2.5, 5.0)):
    """A CT series whose file order is not the spatial order; returns headers sorted by z and the label volume
    ``(X, Y, Z)`` in that order (``label_zxy[k]`` is the label of the k-th file, (X, Y))."""
    folder.mkdir(parents=True)
    headers = []
    for i, z in enumerate(zs):
        x, y = label_zxy[i].shape
        f = write_ct_dicom(folder / f"im{i}.dcm", np.full((y, x), 1000 + i), z=z, instance=i + 1)
        headers.append((z, pydicom.dcmread(str(f), stop_before_pixels=True), label_zxy[i]))
    headers.sort(key=lambda t: t[0])
    return [h for _, h, _ in headers], np.stack([lab for _, _, lab in headers], axis=-1)


def _frames_for(label_xyz: np.ndarray, headers, classes: dict[int, int]):
    """One frame per (segment, slice) where the segment is present; ``classes``: segment number -> label value."""
    frames = []
    for k, h in enumerate(headers):
        for number, value in classes.items():
            m = label_xyz[..., k] == value
            if m.any():
                frames.append((number, h, m.T))
    return frames[::-1]  # frame order deliberately not slice order


def _label_volume(rng, n=4, x=8, y=6):
    lab = np.zeros((n, x, y), dtype=np.uint8)
    lab[0, 1:4, 2:5] = 1
    lab[1, 5:8, 0:3] = 2
    lab[1, 0:2, 0:2] = 1
    lab[3, 2:6, 1:5] = 2
    return lab


# ----------------------------------------------------------------------------------------- the real SEG file


def test_real_seg_from_pydicom_decodes():
    path = get_testdata_file("liver_1frame.dcm")
    ds = pydicom.dcmread(path)
    with pytest.warns(UserWarning, match="3 per-frame functional groups for 1 frames"):
        seg = read_seg(path)
    assert seg.segments == {1: "Liver"} and (seg.rows, seg.columns) == (512, 512) and len(seg.frames) == 1
    fr = seg.frames[0]
    assert fr.segment == 1 and fr.source_uid == LIVER_UID
    np.testing.assert_allclose(fr.position, LIVER_POS)
    np.testing.assert_array_equal(fr.mask, ds.pixel_array.astype(bool))
    assert int(fr.mask.sum()) == 36233
    with pytest.warns(UserWarning):
        big = read_seg(get_testdata_file("liver_expb_1frame.dcm"))  # the same SEG, big-endian
    np.testing.assert_array_equal(big.frames[0].mask, fr.mask)


def _ct_for_liver(path, uid=LIVER_UID, pos=LIVER_POS):
    write_ct_dicom(path, np.zeros((512, 512)), z=0.0, instance=1)
    ds = pydicom.dcmread(str(path))
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID = uid
    ds.ImagePositionPatient = pos
    ds.save_as(str(path))
    return path


@pytest.mark.parametrize("match_by", ["uid", "position"])
def test_real_seg_onto_its_ct_slice(tmp_path, match_by):
    seg_path = get_testdata_file("liver_1frame.dcm")
    ct = _ct_for_liver(tmp_path / "ct.dcm", uid=LIVER_UID if match_by == "uid" else "1.2.3.999")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        lab = read_mask(seg_path, 2, reference=read_image(ct), dtype=torch.uint8)
    assert lab.shape == (1, 512, 512) and lab.dtype == torch.uint8
    np.testing.assert_array_equal(lab[0].numpy().T, pydicom.dcmread(seg_path).pixel_array)
    assert lab.meta["segment_classes"] == {"Liver": 1}


def test_real_seg_on_another_slice_is_an_error(tmp_path):
    ct = _ct_for_liver(tmp_path / "ct.dcm", uid="1.2.3.999", pos=[-235.2, -226.8, -100.0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(DataReadError, match="liver_1frame.dcm: 1 non-empty DICOM SEG frame.*another series"):
            read_mask(get_testdata_file("liver_1frame.dcm"), reference=read_image(ct))


# ---------------------------------------------------------------------------------------- generated series


@pytest.mark.parametrize("with_uid,with_position", [(True, True), (True, False), (False, True)])
def test_series_seg_round_trip(tmp_path, with_uid, with_position):
    rng = np.random.default_rng(0)
    headers, expected = _series(tmp_path / "series", _label_volume(rng))
    seg = write_seg(tmp_path / "seg.dcm", _frames_for(expected, headers, {1: 1, 2: 2}), rows=6, cols=8,
                    segments={1: "Lesion", 2: "Effusion"}, with_uid=with_uid, with_position=with_position)
    vol = read_image(tmp_path / "series")
    lab = read_mask(seg, 3, reference=vol, dtype=torch.uint8)
    assert lab.shape == vol.shape == (1, 8, 6, 4)
    np.testing.assert_array_equal(lab[0].numpy(), expected)
    np.testing.assert_allclose(np.asarray(lab.affine), np.asarray(vol.affine))


def test_fractional_seg_is_thresholded_at_half(tmp_path):
    headers, expected = _series(tmp_path / "series", _label_volume(None)[:1] * 0 + 0, zs=(0.0,))
    prob = np.zeros((6, 8), dtype=np.uint8)
    prob[1, 1], prob[2, 2], prob[3, 3] = 127, 128, 255
    seg = write_seg(tmp_path / "seg.dcm", [(1, headers[0], prob)], rows=6, cols=8, segments={1: "x"}, fractional=True)
    lab = read_mask(seg, 2, reference=read_image(tmp_path / "series"))
    assert lab.shape == (1, 8, 6, 1)
    assert set(zip(*np.nonzero(lab[0, ..., 0].numpy().T))) == {(2, 2), (3, 3)}


def test_segments_get_classes_by_name_or_map(tmp_path):
    headers, expected = _series(tmp_path / "series", _label_volume(None))
    # segment numbers deliberately differ from the classes the names say
    frames = _frames_for(expected, headers, {2: 1, 1: 2})
    seg = write_seg(tmp_path / "seg.dcm", frames, rows=6, cols=8, segments={1: "Consolidation", 2: "Ground glass"})
    vol = read_image(tmp_path / "series")
    by_number = read_mask(seg, reference=vol)
    np.testing.assert_array_equal(by_number[0].numpy(), np.choose(expected, [0, 2, 1]))
    covid = ["background", "ground-glass", "consolidation", "pleural effusion"]
    by_name = read_mask(seg, 4, reference=vol, class_names=covid)
    np.testing.assert_array_equal(by_name[0].numpy(), expected)
    assert by_name.meta["segment_classes"] == {"Consolidation": 2, "Ground glass": 1}
    only_ggo = read_mask(seg, reference=vol, segment_map={"ground_glass": 1})
    np.testing.assert_array_equal(only_ggo[0].numpy(), (expected == 1).astype(np.int64))
    with pytest.raises(DataReadError, match=r"seg.dcm: some segment labels match.*\['Ground glass'\]"):
        read_mask(seg, reference=vol, class_names=["background", "consolidation"])
    with pytest.raises(DataReadError, match="segment_map names segment 'tumour'; the SEG has 1 'Consolidation'"):
        read_mask(seg, reference=vol, segment_map={"tumour": 1})


def test_seg_errors_name_the_file_and_the_fix(tmp_path):
    headers, expected = _series(tmp_path / "series", _label_volume(None))
    vol = read_image(tmp_path / "series")
    seg = write_seg(tmp_path / "seg.dcm", _frames_for(expected, headers, {1: 1}), rows=6, cols=8, segments={1: "a"})
    with pytest.raises(DataReadError, match="seg.dcm: is a DICOM SEG object; it is read against the image"):
        read_mask(seg)
    with pytest.raises(DataReadError, match="seg.dcm: is a DICOM SEG object .a segmentation., not an image"):
        read_image(seg)
    overlap = [(1, headers[0], np.ones((6, 8), bool)), (2, headers[0], np.eye(6, 8, dtype=bool))]
    bad = write_seg(tmp_path / "overlap.dcm", overlap, rows=6, cols=8, segments={1: "lung", 2: "lesion"})
    with pytest.raises(DataReadError, match="overlap.dcm: segments 'lung' .1. and 'lesion' .2. overlap on 6 pixels"):
        read_mask(bad, reference=vol)
    only_lesion = read_mask(bad, reference=vol, segment_map={"lesion": 1})  # the documented way out
    assert int(only_lesion.sum()) == 6
    small = write_seg(tmp_path / "small.dcm", [(1, headers[0], np.ones((5, 8), bool))], rows=5, cols=8,
                      segments={1: "a"})
    with pytest.raises(DataReadError, match="small.dcm: DICOM SEG frames are 5 rows x 8 columns but the image is 6 x 8"):
        read_mask(small, reference=vol)
    tilted = write_seg(tmp_path / "tilted.dcm", [(1, headers[0], np.ones((6, 8), bool))], rows=6, cols=8,
                       segments={1: "a"}, orientation=(0, 1, 0, 0, 0, -1))
    with pytest.raises(DataReadError, match="tilted.dcm: DICOM SEG frame 1 has orientation"):
        read_mask(tilted, reference=vol)
    nifti = tmp_path / "vol.nii.gz"
    nib.save(nib.Nifti1Image(np.zeros((8, 6, 4), np.float32), np.eye(4)), str(nifti))
    with pytest.raises(DataReadError, match="seg.dcm: DICOM SEG masks are supported for single-slice DICOM"):
        read_mask(seg, reference=read_image(nifti))
    (tmp_path / "series" / "seg.dcm").write_bytes(seg.read_bytes())
    with pytest.raises(DataReadError, match="series: series folder holds a DICOM SEG object .seg.dcm.; move it"):
        read_image(tmp_path / "series")


# ------------------------------------------------------------------------------------------------- prepare


def test_prepare_folder_takes_a_seg_as_the_series_mask(tmp_path, capsys):
    src = tmp_path / "src"
    headers, expected = _series(src / "case03", _label_volume(None))
    (src / "labels").mkdir()
    write_seg(src / "labels" / "case03.dcm", _frames_for(expected, headers, {1: 1, 2: 2}), rows=6, cols=8,
              segments={1: "Tumour", 2: "Oedema"})
    out = tmp_path / "out"
    rc = prepare_main(["folder", str(src), "--out", str(out), "--class-names", "background,tumour,oedema",
                       "--val-fraction", "0", "--labeled-fraction", "1/2", "--no-progress"])
    assert rc == 0, capsys.readouterr().err
    dl = json.loads((out / "datalist.json").read_text())
    assert dl["meta"]["dicom_seg_classes"] == {str(src / "labels" / "case03.dcm"): {"Tumour": 1, "Oedema": 2}}
    items = sorted(dl["labeled"] + dl["unlabeled"], key=lambda it: it["image"])
    assert [it["image"] for it in items] == [f"images/case03_{k:03d}.nii.gz" for k in range(4)]
    for it in dl["labeled"]:
        k = int(it["image"][-10:-7])
        np.testing.assert_array_equal(np.asarray(nib.load(str(out / it["label"])).dataobj), expected[..., k])
    # a segment map leaves a segment out, and a bad map is one clear CLI error
    rc = prepare_main(["folder", str(src), "--out", str(out), "--segment-map", "Oedema=1", "--val-fraction", "0",
                       "--labeled-fraction", "1/2", "--no-progress"])
    assert rc == 0
    assert json.loads((out / "datalist.json").read_text())["meta"]["classes"] == ["background", "class1"]
    with pytest.raises(SystemExit):
        prepare_main(["folder", str(src), "--out", str(out), "--segment-map", "Oedema"])


def test_prepare_covid_seg_mask_equals_the_nifti_mask(tmp_path):
    w = synthetic.generate_covid(tmp_path / "raw", n_slices=8, size=32, n_unlabeled_volumes=0, dicom_series=True,
                                 dicom_slices=5, n_val_slices=0)
    vol = read_image(w["dicom_series"])
    label = np.asarray(nib.load(str(w["dicom_mask"])).dataobj).astype(np.uint8)  # (X, Y, Z), z increasing
    headers = [pydicom.dcmread(f, stop_before_pixels=True) for f in vol.meta["series_files"]]
    names = {1: "Ground-glass opacity", 2: "Consolidation", 3: "Pleural effusion"}
    seg = write_seg(tmp_path / "series_01_seg.dcm", _frames_for(label, headers, {1: 1, 2: 2, 3: 3}),
                    rows=label.shape[1], cols=label.shape[0], segments=names)
    with pytest.raises(DataReadError, match="some segment labels match"):  # 'Ground-glass opacity' is not a class
        prepare_covid(w["dicom_series"], seg, tmp_path / "bad", progress=False)
    kw = dict(labeled_fraction="1/2", progress=False, test_fraction=0.2, val_fraction=0)
    a = json.loads(prepare_covid(w["dicom_series"], w["dicom_mask"], tmp_path / "a", **kw).read_text())
    b = json.loads(prepare_covid(w["dicom_series"], seg, tmp_path / "b", segment_map={"Ground-glass opacity": 1,
                                 "Consolidation": 2, "Pleural effusion": 3}, **kw).read_text())
    assert a["labeled"] == b["labeled"] and a["test"] == b["test"]
    for it in a["labeled"] + a["test"]:
        np.testing.assert_array_equal(np.asarray(nib.load(str(tmp_path / "a" / it["label"])).dataobj),
                                      np.asarray(nib.load(str(tmp_path / "b" / it["label"])).dataobj))
