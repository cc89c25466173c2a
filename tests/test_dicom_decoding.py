"""Compressed DICOM, as PACS export it, decoded by a default install through ``read_image``; a missing decoder named.

The files are pydicom's own test files (``pydicom`` and ``pydicom-data``, the test extra). Each compressed file is
compared with an uncompressed file of the same image where one exists: a lossless syntax must give the same
pixels, in the same units (HU for CT), as the uncompressed reference.
"""

from __future__ import annotations

import sys
from pathlib import Path

import numpy as np
import pytest

from medsemiseg.data.dicom import DICOM_DECODERS
from medsemiseg.data.io import DataReadError, read_image

pydicom = pytest.importorskip("pydicom")
from pydicom.data import get_testdata_file  # noqa: E402
from pydicom.pixels import get_decoder  # noqa: E402

REPO = Path(__file__).resolve().parents[1]


def _file(name: str) -> str:
    path = get_testdata_file(name)
    assert path is not None, f"{name}: not in pydicom / pydicom-data (pip install -e '.[test]')"
    return path


def _syntax(name: str) -> str:
    return str(pydicom.dcmread(_file(name), stop_before_pixels=True).file_meta.TransferSyntaxUID)


# (compressed file, its transfer syntax, the uncompressed reference)
LOSSLESS = [
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", "MR_small.dcm"),  # JPEG-LS lossless
    ("emri_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", "emri_small.dcm"),  # JPEG-LS, 10 frames
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90", "MR_small.dcm"),  # JPEG 2000 lossless
    ("693_J2KR.dcm", "1.2.840.10008.1.2.4.90", "693_UNCR.dcm"),  # JPEG 2000 lossless CT, in HU
    ("MR_small_RLE.dcm", "1.2.840.10008.1.2.5", "MR_small.dcm"),  # RLE
    ("emri_small_RLE.dcm", "1.2.840.10008.1.2.5", "emri_small.dcm"),  # RLE, 10 frames
    ("JPEG2000.dcm", "1.2.840.10008.1.2.4.91", "JPEG2000_UNC.dcm"),  # JPEG 2000 (its decoded reference)
]


@pytest.mark.parametrize("name, syntax, reference", LOSSLESS, ids=[c[0] for c in LOSSLESS])
def test_compressed_dicom_decodes_to_the_uncompressed_pixels(name, syntax, reference):
    assert _syntax(name) == syntax and not pydicom.uid.UID(_syntax(reference)).is_compressed
    img, ref = read_image(_file(name)), read_image(_file(reference))
    assert img.shape == ref.shape
    np.testing.assert_array_equal(img.numpy(), ref.numpy())
    np.testing.assert_allclose(np.asarray(img.affine), np.asarray(ref.affine))


def test_jpeg_lossless_and_12_bit_jpeg_decode_to_one_image():
    """NEMA's NM1 image as JPEG Lossless (process 14, the usual PACS syntax) and as 12-bit JPEG Extended (lossy,
    which Pillow and GDCM do not decode): no uncompressed copy ships, so each is checked against the other, within
    the lossy one's error."""
    assert _syntax("JPEG-LL.dcm") == "1.2.840.10008.1.2.4.70"
    assert _syntax("JPGExtended.dcm") == "1.2.840.10008.1.2.4.51"
    assert int(pydicom.dcmread(_file("JPGExtended.dcm"), stop_before_pixels=True).BitsStored) == 12
    lossless, lossy = read_image(_file("JPEG-LL.dcm")).numpy(), read_image(_file("JPGExtended.dcm")).numpy()
    assert lossless.shape == lossy.shape == (1, 256, 1024)
    assert lossless.max() - lossless.min() > 200  # a real image, not a constant
    # measured: mean |difference| 2.3 on a range of 278, correlation 0.987
    assert np.abs(lossless - lossy).mean() < 3 and np.corrcoef(lossless.ravel(), lossy.ravel())[0, 1] > 0.98
    header = pydicom.dcmread(_file("JPGLosslessP14SV1_1s_1f_8b.dcm"), stop_before_pixels=True)  # 8 bits
    grey8 = read_image(_file("JPGLosslessP14SV1_1s_1f_8b.dcm"))
    assert grey8.shape == (1, header.Columns, header.Rows) and float(grey8.max()) > float(grey8.min())


def test_rgb_jpeg_dicom_decodes_close_to_the_uncompressed_one():
    assert _syntax("SC_rgb_jpeg_dcmtk.dcm") == "1.2.840.10008.1.2.4.50"
    img, ref = read_image(_file("SC_rgb_jpeg_dcmtk.dcm")).numpy(), read_image(_file("SC_rgb.dcm")).numpy()
    assert img.shape == ref.shape == (3, 100, 100)
    assert np.abs(img - ref).max() <= 8  # baseline JPEG is lossy


def test_the_decoders_are_dependencies_of_a_default_install():
    """What ``pip install medsemiseg`` brings, not the test extra: every decoder package named in an error."""
    tomllib = pytest.importorskip("tomllib") if sys.version_info >= (3, 11) else pytest.skip("tomllib: Python 3.11")
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]
    required = {d.split(">")[0].split("=")[0].split("<")[0].split("[")[0].strip().lower()
                for d in project["dependencies"]}
    for packages in DICOM_DECODERS.values():
        assert set(packages) <= required, packages
    assert "pylibjpeg-rle" in required


@pytest.fixture
def no_decoder(monkeypatch):
    """Make pydicom's decoder for a transfer syntax have no usable plugin and ``packages`` not installed, as on a
    machine where medsemiseg was installed without its dependencies."""
    from importlib import metadata

    real_version = metadata.version

    def remove(syntax: str, packages: tuple[str, ...], keep: tuple[str, ...] = ()) -> None:
        decoder = get_decoder(syntax)
        monkeypatch.setattr(decoder, "_available", {k: v for k, v in decoder._available.items() if k in keep})

        def version(name):
            if name in packages:
                raise metadata.PackageNotFoundError(name)
            return real_version(name)

        monkeypatch.setattr(metadata, "version", version)

    return remove


@pytest.mark.parametrize("name, syntax, missing, not_named", [
    ("MR_small_jpeg_ls_lossless.dcm", "1.2.840.10008.1.2.4.80", ("pylibjpeg-libjpeg",), "pylibjpeg-openjpeg"),
    ("JPEG-LL.dcm", "1.2.840.10008.1.2.4.70", ("pylibjpeg", "pylibjpeg-libjpeg"), "pylibjpeg-openjpeg"),
    ("MR_small_jp2klossless.dcm", "1.2.840.10008.1.2.4.90", ("pylibjpeg-openjpeg",), "pylibjpeg-libjpeg"),
])
def test_a_missing_decoder_is_named_with_its_install_command(no_decoder, name, syntax, missing, not_named):
    no_decoder(syntax, missing)
    with pytest.raises(DataReadError) as info:
        read_image(_file(name))
    message = str(info.value)
    assert message.startswith(_file(name)) and "\n" not in message
    assert f"the decoder for it is not installed: {' and '.join(missing)}" in message
    assert message.endswith(f"pip install {' '.join(missing)} (or convert it to uncompressed DICOM (gdcmconv --raw "
                            "in.dcm out.dcm, or dcmtk's dcmdjpeg / dcmdrle)).")
    assert not_named not in message


def test_12_bit_jpeg_needs_libjpeg_even_with_pillow(no_decoder):
    """Pillow decodes 8-bit JPEG only: with it alone, a 12-bit JPEG's error names pylibjpeg-libjpeg."""
    no_decoder("1.2.840.10008.1.2.4.51", ("pylibjpeg-libjpeg",), keep=("pillow",))
    with pytest.raises(DataReadError, match=r"not installed: pylibjpeg-libjpeg, .* pip install pylibjpeg-libjpeg "):
        read_image(_file("JPGExtended.dcm"))


@pytest.mark.parametrize("name", ["JPEG-lossy.dcm", "JPEG2000-embedded-sequence-delimiter.dcm"])
def test_a_damaged_compressed_file_is_not_told_to_install_decoders(name):
    """``JPEG-lossy.dcm`` breaks the JPEG standard (``JPGExtended.dcm`` is its fixed copy) and the other one has
    bytes of its JPEG 2000 stream overwritten: with the decoders installed, the hint to install them would repeat
    forever. The error says the data are damaged."""
    with pytest.raises(DataReadError) as info:
        read_image(_file(name))
    message = str(info.value)
    assert "the installed decoders (" in message and "the compressed data are damaged" in message
    assert "pip install" not in message and "\n" not in message


def test_a_colour_dicom_for_the_ct_network_is_not_told_to_use_pil(tmp_path):
    """PIL cannot open DICOM: the fix for an RGB DICOM given to the covid (grey CT) bundle is its grey original; a
    colour *picture* keeps the PIL conversion."""
    import shutil

    from PIL import Image

    from medsemiseg.bundle.inputs import inference_items

    dicom = Path(shutil.copy(_file("SC_rgb.dcm"), tmp_path / "capture.dcm"))
    with pytest.raises(DataReadError) as info:
        inference_items(str(dicom), "covid", tmp_path, in_channels=1)
    message = str(info.value)
    assert message.startswith(str(dicom)) and "3 channels (RGB colour)" in message
    assert "PIL" not in message and "Image.open" not in message
    assert "grey original" in message and "Hounsfield" in message and "chase bundle" in message
    picture = tmp_path / "photo.png"
    Image.fromarray(np.zeros((8, 6, 3), np.uint8)).save(picture)
    with pytest.raises(DataReadError, match=r"PIL: Image.open\(path\).convert\('L'\)"):
        inference_items(str(picture), "covid", tmp_path, in_channels=1)
