"""Raw headers and files of the simulator, and the validator that checks them against the contract."""

import gzip
import re

import numpy as np
import pytest
from astropy.io import fits
from astropy.time import Time

from soxspipe.commonutils.classify import classify_header
from soxspipe.commonutils.fitsio import read_header, read_image
from soxspipe.simulator.detector import SimulatedDetector
from soxspipe.simulator.header import raw_header, write_raw
from soxspipe.simulator.validate import validate_paths, validate_raw

MJD = 60695.1


@pytest.fixture(scope="module")
def frames():
    """One raw image per (arm, binning), read out once."""
    out = {}
    for arm, binning in (("VIS", (1, 1)), ("VIS", (2, 1)), ("NIR", (1, 1)), ("ACQ", (1, 1))):
        det = SimulatedDetector(arm, binning=binning, seed=1)
        out[arm, binning] = det.read_out(np.full(det.science_shape, 100.0, np.float32), 10.0)
    return out


# name: arm, binning, DPR CATG/TYPE/TECH, header options, file suffix, expected kind
VALID = {
    "vis_bias": ("VIS", (1, 1), ("CALIB", "BIAS", "IMAGE"), {}, ".fits", "bias"),
    "vis_arc_gz": ("VIS", (1, 1), ("CALIB", "LAMP,WAVE", "ECHELLE,PINHOLE"),
                   {"slit": "PINHOLE", "lamps": ("ThAr",)}, ".fits.gz", "pinhole_arc"),
    "vis_qflat_2x1_fast_fz": ("VIS", (2, 1), ("CALIB", "LAMP,QFLAT", "ECHELLE,SLIT"),
                              {"slit": "SLIT1.0", "lamps": ("QTH",), "readout": "fast"}, ".fits.fz", "slit_flat"),
    "vis_science_nod": ("VIS", (2, 1), ("SCIENCE", "OBJECT", "ECHELLE,SLIT,NODDING"),
                        {"slit": "SLIT1.0", "extra": {"object": "SN2025abc", "ra": 150.1, "dec": -20.5,
                                                      "nod_cumoff_y": 2.5, "nod_throw": 5.0}}, ".fits", "science"),
    "nir_mph_arc_fz": ("NIR", (1, 1), ("CALIB", "LAMP,WAVE", "ECHELLE,MULTI-PINHOLE"),
                       {"slit": "MULTIPIN", "lamps": ("Ar", "Ne", "Hg", "Xe")}, ".fits.fz", "multipinhole_arc"),
    "nir_flat_lamp_off": ("NIR", (1, 1), ("CALIB", "LAMP,FLAT", "ECHELLE,SLIT"), {"slit": "SLIT5.0"},
                          ".fits.gz", "slit_flat"),
    "nir_dark": ("NIR", (1, 1), ("CALIB", "DARK", "IMAGE"), {}, ".fits", "dark"),
    "acq_flat": ("ACQ", (1, 1), ("CALIB", "FLAT,SKY", "IMAGE"), {"acq_filter": "r"}, ".fits", "imaging_flat"),
    "acq_science_quirks_fz": ("ACQ", (1, 1), ("SCIENCE", "OBJECT", "IMAGE"),
                              {"acq_filter": "V", "acq_quirks": True}, ".fits.fz", "imaging_science"),
}


def _write(tmp_path, frames, name, *, data=None, **changes):
    arm, binning, dpr, options, suffix, _ = VALID[name]
    options = {**options, **changes}
    header = raw_header(arm, *dpr, mjd=MJD, exptime=10.0, binning=binning, **options)
    path = tmp_path / f"{name}{suffix}"
    write_raw(path, frames[arm, binning] if data is None else data, header)
    return path


@pytest.mark.parametrize("name", list(VALID))
def test_simulated_files_are_valid_and_classify(tmp_path, frames, name):
    arm, binning, dpr, options, suffix, kind = VALID[name]
    path = _write(tmp_path, frames, name)
    assert validate_raw(path) == []
    info = classify_header(read_header(path), path)
    assert (info.arm, info.kind, info.binning, info.exptime) == (arm, kind, binning, 10.0)
    assert info.lamps == tuple(options.get("lamps", ()))
    # the image round-trips exactly, whatever the compression
    data, _ = read_image(path, dtype=frames[arm, binning].dtype)
    assert np.array_equal(data, frames[arm, binning])


def test_header_values():
    h = raw_header("VIS", "CALIB", "BIAS", "IMAGE", mjd=MJD, exptime=0.0, readout="fast")
    assert Time(h["DATE-OBS"], format="isot", scale="utc").mjd == pytest.approx(MJD, abs=1e-8)
    assert h["HIERARCH ESO DET OUT1 CONAD"] == 2.0 and h["HIERARCH ESO DET OUT1 GAIN"] == 0.5
    assert h["HIERARCH ESO DET OUT1 RON"] == 8.0 and h["HIERARCH ESO DET READ CURID"] == 2
    # calibrations point at the zenith by default: airmass 1, altitude 90
    assert h["HIERARCH ESO TEL AIRM START"] == 1.0 and h["HIERARCH ESO TEL ALT"] == pytest.approx(90.0, abs=1e-3)
    # a target 30 deg from the zenith along the meridian: airmass 1/cos(30 deg) = 1.1547
    ra, dec = h["RA"], h["DEC"] + 30.0
    h = raw_header("NIR", "SCIENCE", "OBJECT", "ECHELLE,SLIT,STARE", mjd=MJD, exptime=600.0, slit="SLIT1.0",
                   extra={"ra": ra, "dec": dec, "object": "X", "obs_id": 42, "lamp_qth": None})
    assert h["HIERARCH ESO TEL ALT"] == pytest.approx(60.0, abs=1e-3)
    assert h["HIERARCH ESO TEL AIRM START"] == pytest.approx(1.1547, abs=2e-3)
    assert h["HIERARCH ESO TEL AIRM END"] > h["HIERARCH ESO TEL AIRM START"] or h["HIERARCH ESO TEL AZ"] > 180
    assert h["OBJECT"] == "X" and h["HIERARCH ESO OBS ID"] == 42 and "HIERARCH ESO INS QTH NAME" not in h
    acq = raw_header("ACQ", "CALIB", "DARK", "IMAGE", mjd=MJD, exptime=5.0, acq_quirks=True)
    assert "EXPTIME" not in acq and "HIERARCH ESO SEQ ARM" not in acq
    assert acq["HIERARCH ESO DET3 CAM NAME"] == "ACQ" and acq["HIERARCH ESO DET3 EXPO TIME"] == 5.0
    with pytest.raises(ValueError, match="slit"):
        raw_header("VIS", "CALIB", "LAMP,FLAT", "ECHELLE,SLIT", mjd=MJD, exptime=1.0, slit="SLIT2.0")
    with pytest.raises(ValueError, match="lamp"):
        raw_header("VIS", "CALIB", "LAMP,FLAT", "ECHELLE,SLIT", mjd=MJD, exptime=1.0, lamps=("Sun",))


def test_fz_layout(tmp_path, frames):
    path = _write(tmp_path, frames, "nir_mph_arc_fz")
    with fits.open(path) as hdul:
        assert hdul[0].header["NAXIS"] == 0 and isinstance(hdul[1], fits.CompImageHDU)
        assert hdul[1].header["HIERARCH ESO DPR TECH"] == "ECHELLE,MULTI-PINHOLE"
        assert np.array_equal(hdul[1].data, frames["NIR", (1, 1)])


def _broken(tmp_path, frames, case):
    """Write one broken file; return its path."""
    vis = frames["VIS", (1, 1)]
    if case == "wrong shape":
        return _write(tmp_path, frames, "vis_bias", data=vis[:, :900])
    if case == "wrong dtype":
        return _write(tmp_path, frames, "vis_bias", data=vis.astype(np.float32))
    if case == "nir as integers":
        return _write(tmp_path, frames, "nir_dark", data=frames["NIR", (1, 1)].astype(np.int32))
    if case == "missing DPR keyword":
        return _write(tmp_path, frames, "vis_bias", extra={"dpr_type": None})
    if case == "unknown DPR combination":
        return _write(tmp_path, frames, "nir_dark", extra={"dpr_type": "BIAS"})
    if case == "product":
        return _write(tmp_path, frames, "vis_bias", extra={"pro_catg": "MASTER_BIAS_VIS"})
    if case == "truncated":
        path = _write(tmp_path, frames, "vis_bias")
        path.write_bytes(path.read_bytes()[: 2_000_000])
        return path
    if case == "not FITS":
        path = tmp_path / "notes.fits"
        path.write_text("SIMPLE but not really a FITS file\n")
        return path
    if case == "truncated gzip":
        path = _write(tmp_path, frames, "vis_arc_gz")
        path.write_bytes(gzip.compress(gzip.decompress(path.read_bytes())[:100_000]))
        return path
    if case == "arc without lamp":
        return _write(tmp_path, frames, "vis_arc_gz", lamps=())
    if case == "bias with lamp":
        return _write(tmp_path, frames, "vis_bias", lamps=("QTH",))
    if case == "flat with arc lamp":
        return _write(tmp_path, frames, "vis_qflat_2x1_fast_fz", lamps=("ThAr",))
    if case == "wrong slit for kind":
        return _write(tmp_path, frames, "nir_mph_arc_fz", slit="SLIT1.0")
    if case == "unknown slit":
        return _write(tmp_path, frames, "vis_science_nod", extra={"slit_vis": "SLIT9.9"})
    if case == "binning not of arm":
        return _write(tmp_path, frames, "nir_dark", extra={"binx": 2})
    if case == "gain not inverse of conad":
        return _write(tmp_path, frames, "vis_bias", extra={"gain_adu_per_e": 0.6})
    if case == "no arm":
        return _write(tmp_path, frames, "vis_bias", extra={"arm": None})
    if case == "date and mjd disagree":
        return _write(tmp_path, frames, "vis_bias", extra={"date_obs": "2025-01-20T03:24:00.000"})
    if case == "image in extension, not compressed":
        path = tmp_path / "ext.fits"
        header = raw_header("ACQ", "CALIB", "BIAS", "IMAGE", mjd=MJD, exptime=0.0)
        fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(frames["ACQ", (1, 1)], header)]).writeto(path)
        return path
    if case == "ACQ science without filter":
        return _write(tmp_path, frames, "acq_science_quirks_fz", acq_filter=None)
    raise KeyError(case)


BROKEN = {
    "wrong shape": "908 x 4096",
    "wrong dtype": "must be uint16",
    "nir as integers": "must be float32",
    "missing DPR keyword": "ESO DPR TYPE is missing",
    "unknown DPR combination": "CALIB/BIAS/IMAGE is not a NIR frame type",
    "product": "ESO PRO CATG is present",
    "truncated": "truncated",
    "not FITS": "not a readable FITS file",
    "truncated gzip": "truncated or corrupt|not a readable",
    "arc without lamp": "need a lamp keyword",
    "bias with lamp": "no lamp on, but the header has lamp keywords",
    "flat with arc lamp": "cannot have the ThAr lamp",
    "wrong slit for kind": "taken with slit MULTIPIN",
    "unknown slit": "not a slit position",
    "binning not of arm": "not one of the NIR binnings",
    "gain not inverse of conad": "not the inverse",
    "no arm": "no arm keyword",
    "date and mjd disagree": "differ by 3600",
    "image in extension, not compressed": "no image",
    "ACQ science without filter": "need the filter keyword",
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_files_are_rejected(tmp_path, frames, case):
    problems = validate_raw(_broken(tmp_path, frames, case))
    assert problems, f"{case} was accepted"
    assert any(re.search(BROKEN[case], p) for p in problems), problems


def test_validate_paths_counts_bad_files(tmp_path, frames, capsys):
    bad = _broken(tmp_path, frames, "wrong dtype").rename(tmp_path / "bad1.fits")
    good = [_write(tmp_path, frames, name) for name in ("vis_bias", "acq_flat")]
    _broken(tmp_path, frames, "not FITS")
    (tmp_path / "readme.txt").write_text("not a FITS name, so not looked at")
    assert validate_paths([tmp_path]) == 2
    out = capsys.readouterr().out.strip().splitlines()
    assert all(line.startswith(str(tmp_path)) for line in out)
    assert any(line.startswith(f"{bad}: ") and "uint16" in line for line in out)
    assert validate_paths(good, verbose=True) == 0
    assert capsys.readouterr().out.count(": OK") == 2
