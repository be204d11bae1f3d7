"""Frame classification from headers, for every frame type of the raw-frame contract."""

import gzip

import numpy as np
import pytest
from astropy.io import fits

from rawframes import KINDS, kind_header, lzw_compress, raw_header, write_frame
from soxspipe.commonutils.classify import classify_header
from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.fitsio import read_header, read_image

EXPECTED = {
    "bias_vis": ("bias", "BIAS_VIS", "mbias"),
    "bias_acq": ("bias", "BIAS_ACQ", "mbias"),
    "dark_nir": ("dark", "DARK_NIR", "mdark"),
    "dark_acq": ("dark", "DARK_ACQ", "mdark"),
    "dark_vis": ("dark", "DARK_VIS", "mdark"),
    "pinhole_arc_vis": ("pinhole_arc", "LAMP,WAVE_VIS", "disp_solution"),
    "pinhole_arc_nir": ("pinhole_arc", "LAMP,WAVE_NIR", "disp_solution"),
    "pinhole_arc_nir_off": ("pinhole_arc", "LAMP,WAVE_NIR", "disp_solution"),
    "pinhole_flat_vis": ("pinhole_flat", "LAMP,ORDERDEF_VIS", "order_centres"),
    "slit_flat_vis_q": ("slit_flat", "LAMP,QFLAT_VIS", "mflat"),
    "slit_flat_vis_d": ("slit_flat", "LAMP,DFLAT_VIS", "mflat"),
    "slit_flat_nir": ("slit_flat", "LAMP,FLAT_NIR", "mflat"),
    "slit_flat_nir_off": ("slit_flat", "LAMP,FLAT_NIR", "mflat"),
    "multipinhole_arc_vis": ("multipinhole_arc", "LAMP,WAVE_VIS", "spat_solution"),
    "std_flux_vis": ("flux_standard", "STD,FLUX_VIS", "response"),
    "std_telluric_nir": ("telluric_standard", "STD,TELLURIC_NIR", "telluric"),
    "science_nod_nir": ("science", "OBJECT_NIR", "nod"),
    "science_offset_vis": ("science", "OBJECT,ASYNC_VIS", "offset"),
    "imaging_flat_acq": ("imaging_flat", "FLAT,SKY_ACQ", "mflat"),
    "imaging_science_acq": ("imaging_science", "OBJECT_ACQ", "image"),
}


@pytest.mark.parametrize("name", sorted(KINDS))
def test_every_frame_type(name):
    info = classify_header(kind_header(name), f"{name}.fits")
    assert (info.kind, info.tag, info.recipe) == EXPECTED[name]
    assert info.arm == KINDS[name][3]
    assert not info.is_product


def test_pinhole_flat_types_and_lamp_off():
    for dpr_type in ("LAMP,FLAT", "LAMP,ORDERDEF", "LAMP,QORDERDEF", "LAMP,DORDERDEF"):
        h = raw_header("NIR", "CALIB", dpr_type, "ECHELLE,PINHOLE")
        assert classify_header(h).kind == "pinhole_flat"
    on = classify_header(kind_header("slit_flat_nir"))
    off = classify_header(kind_header("slit_flat_nir_off"))
    assert on.lamps == ("QTH",) and not on.lamp_off
    assert off.lamps == () and off.lamp_off


def test_acquisition_frame_without_arm_or_exptime():
    h = raw_header("ACQ", "CALIB", "DARK", "IMAGE", exptime=60.0)
    del h["HIERARCH ESO SEQ ARM"], h["EXPTIME"]
    h["HIERARCH ESO DET3 CAM NAME"] = "ACQ"
    h["HIERARCH ESO DET3 EXPO TIME"] = 45.0
    info = classify_header(h)
    assert (info.arm, info.kind, info.exptime, info.tag) == ("ACQ", "dark", 45.0, "DARK_ACQ")


def test_binning_readout_slit_and_products():
    h = raw_header("VIS", "CALIB", "LAMP,FLAT", "ECHELLE,SLIT", binning=(2, 1),
                   extra={"HIERARCH ESO INS VISE NAME": "SLIT1.0", "HIERARCH ESO DET READ CURID": 2})
    info = classify_header(h)
    assert info.binning == (2, 1) and info.readout == "fast" and info.slit == "SLIT1.0"
    h["HIERARCH ESO PRO CATG"] = "MASTER_FLAT_VIS"
    product = classify_header(h)
    assert product.is_product and product.tag == "MASTER_FLAT_VIS" and product.kind == "product"


@pytest.mark.parametrize("remove,message", [
    ("HIERARCH ESO DPR TYPE", "no DPR"),
    ("HIERARCH ESO SEQ ARM", "no arm keyword"),
])
def test_unclassifiable_headers(remove, message):
    h = kind_header("bias_vis")
    del h[remove]
    with pytest.raises(DataError, match=message):
        classify_header(h, "x.fits")


def test_unknown_combination_and_wrong_arm():
    with pytest.raises(DataError, match="not a NIR frame type"):
        classify_header(raw_header("NIR", "CALIB", "BIAS", "IMAGE"), "x.fits")
    with pytest.raises(DataError, match="unknown arm"):
        classify_header(raw_header("UVB", "CALIB", "BIAS", "IMAGE"), "x.fits")


def test_compressed_files_are_read(tmp_path):
    header = kind_header("bias_acq")
    data = (np.arange(1024 * 1024, dtype=np.uint32) % 5000).astype(np.uint16).reshape(1024, 1024)
    plain = write_frame(tmp_path / "a.fits", header, data)
    raw_bytes = plain.read_bytes()
    (tmp_path / "a.fits.gz").write_bytes(gzip.compress(raw_bytes))
    (tmp_path / "a.fits.Z").write_bytes(lzw_compress(raw_bytes))
    fz = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header, compression_type="RICE_1")])
    fz.writeto(tmp_path / "a.fits.fz")
    for name in ("a.fits", "a.fits.gz", "a.fits.Z", "a.fits.fz"):
        image, h = read_image(tmp_path / name, dtype=None)
        assert np.array_equal(image, data), name
        info = classify_header(read_header(tmp_path / name), name)
        assert info.tag == "BIAS_ACQ", name


def test_unreadable_files(tmp_path):
    (tmp_path / "text.fits").write_text("not a FITS file at all\n" * 200)
    with pytest.raises(DataError, match="text.fits: not a readable FITS file"):
        read_header(tmp_path / "text.fits")
    full = write_frame(tmp_path / "full.fits", kind_header("bias_acq")).read_bytes()
    (tmp_path / "cut.fits").write_bytes(full[: len(full) // 3])
    with pytest.raises(DataError, match="cut.fits"):
        read_image(tmp_path / "cut.fits")
    with pytest.raises(DataError, match="file not found"):
        read_header(tmp_path / "missing.fits")
