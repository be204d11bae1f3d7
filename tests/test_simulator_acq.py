"""The acquisition camera's simulated night against its truth: stars, WCS, vignetting, zero points, catalogue."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from soxspipe.commonutils.fitsio import read_header, read_image
from soxspipe.simulator.acq import simulate_acq_night
from soxspipe.simulator.validate import validate_raw


@pytest.fixture(scope="module")
def night(tmp_path_factory):
    out = tmp_path_factory.mktemp("acq_night")
    rows = simulate_acq_night(out / "raw", out / "truth", night="2025-01-20", seed=4, size="small")
    truth = json.loads((out / "truth" / "acq.json").read_text())
    bias = np.median([read_image(out / "raw" / r["file"])[0] for r in rows if r["kind"] == "bias"], axis=0)
    return {"dir": out, "rows": rows, "truth": truth, "bias": bias,
            "stars": Table.read(out / "truth" / "acq_stars.ecsv")}


def _frames(night, kind):
    return [r for r in night["rows"] if r["kind"] == kind]


def test_frames_sets_and_contract(night):
    rows = night["rows"]
    counts = {k: len(_frames(night, k)) for k in ("bias", "dark", "imaging_flat", "imaging_science")}
    assert counts == {"bias": 3, "dark": 3, "imaging_flat": 6, "imaging_science": 2}
    assert {r["tag"] for r in rows} == {"BIAS_ACQ", "DARK_ACQ", "FLAT,SKY_ACQ", "OBJECT_ACQ"}
    assert {r["filter"] for r in _frames(night, "imaging_flat")} == {"g", "r"}
    names = [r["file"] for r in rows]
    assert any(n.endswith(".fits.gz") for n in names) and any(n.endswith(".fits.fz") for n in names)
    for name in names:
        assert validate_raw(night["dir"] / "raw" / name) == [], name
    # some frames carry the camera's own keywords in place of the arm and exposure time
    headers = [read_header(night["dir"] / "raw" / n) for n in names]
    quirky = [h for h in headers if "HIERARCH ESO SEQ ARM" not in h]
    assert quirky and all("EXPTIME" not in h and h["HIERARCH ESO DET3 CAM NAME"] == "ACQ" for h in quirky)


def _windowed_centroid(image, x, y, sigma, half=12, iterations=15):
    """Gaussian-windowed centroid (as SExtractor's XWIN) around (x, y); background removed beforehand."""
    ix, iy = int(round(x)), int(round(y))
    cut = image[iy - half:iy + half + 1, ix - half:ix + half + 1]
    yy, xx = np.mgrid[iy - half:iy + half + 1, ix - half:ix + half + 1]
    cx, cy = float(ix), float(iy)
    for _ in range(iterations):
        w = cut * np.exp(-((xx - cx) ** 2 + (yy - cy) ** 2) / (2 * sigma**2))
        cx, cy = (w * xx).sum() / w.sum(), (w * yy).sum() / w.sum()
    return cx, cy


def _good_stars(night, name, min_electrons):
    """Bright, unsaturated, isolated stars well inside the field of one science frame."""
    stars = night["stars"][night["stars"]["file"] == name]
    x, y = np.asarray(stars["x"]), np.asarray(stars["y"])
    sep = np.hypot(x[:, None] - x[None, :], y[:, None] - y[None, :])
    np.fill_diagonal(sep, np.inf)
    keep = (np.asarray(stars["in_field"]) & (stars["electrons"] > min_electrons) & (stars["electrons"] < 2e6)
            & (sep.min(axis=1) > 25) & (x > 30) & (x < 994) & (y > 30) & (y < 994))
    return stars[keep]


def test_stars_at_true_wcs_positions(night):
    offsets = []
    for row in _frames(night, "imaging_science"):
        name = row["file"]
        frame_truth = night["truth"]["frames"][name]
        image, header = read_image(night["dir"] / "raw" / name, dtype=np.float64)
        image -= night["bias"]
        image -= np.median(image[400:600, 400:600])
        stars = _good_stars(night, name, 1.5e4)
        assert len(stars) >= 8
        sigma = frame_truth["fwhm_px"] / 2.3548
        measured = np.array([_windowed_centroid(image, s["x"], s["y"], sigma) for s in stars])
        offsets.append(measured - np.c_[stars["x"], stars["y"]])
        # the star list is the true WCS applied to the catalogue positions
        wcs = WCS(fits.Header(frame_truth["wcs"]))
        x, y = wcs.world_to_pixel_values(np.asarray(stars["ra"]), np.asarray(stars["dec"]))
        assert np.allclose(x, stars["x"], atol=1e-6) and np.allclose(y, stars["y"], atol=1e-6)
        # the raw header has only the nominal pointing, a few arcsec away from the truth
        assert "CRVAL1" not in header and "CTYPE1" not in header
        assert [header["RA"], header["DEC"]] == frame_truth["nominal_pointing"]
        d_ra = (wcs.wcs.crval[0] - header["RA"]) * 3600 * np.cos(np.radians(header["DEC"]))
        d_dec = (wcs.wcs.crval[1] - header["DEC"]) * 3600
        assert np.allclose([d_ra, d_dec], frame_truth["pointing_offset_arcsec"], atol=1e-3)
        assert 0 < np.hypot(d_ra, d_dec) < 20
    offsets = np.concatenate(offsets)
    assert np.median(np.abs(offsets), axis=0).max() < 0.1, np.median(np.abs(offsets), axis=0)
    assert np.abs(np.median(offsets, axis=0)).max() < 0.05


def test_zero_points(night):
    for row in _frames(night, "imaging_science"):
        name = row["file"]
        frame_truth = night["truth"]["frames"][name]
        image, _ = read_image(night["dir"] / "raw" / name, dtype=np.float64)
        image -= night["bias"]
        stars = _good_stars(night, name, 3e4)
        yy, xx = np.indices(image.shape)
        zps = []
        for s in stars:
            r = np.hypot(xx - s["x"], yy - s["y"])
            sky = np.median(image[(r > 22) & (r < 30)])
            flux = (image[r < 20] - sky).sum() * 1.0  # ACQ gain is 1 e/ADU
            zps.append(s["mag"] + 2.5 * np.log10(flux / s["illumination"] / row["exptime"]))
        assert abs(np.median(zps) - frame_truth["zero_point"]) < 0.03, (np.median(zps), frame_truth["zero_point"])


def test_sky_flat_vignetting(night):
    field = night["truth"]["field"]
    assert field["radius_px"] == pytest.approx(3.5 * 30 / 0.205, abs=0.01)
    illumination = fits.getdata(night["dir"] / "truth" / night["truth"]["illumination_file"])
    yy, xx = np.indices(illumination.shape)
    r = np.hypot(xx - field["centre_px"][0], yy - field["centre_px"][1])
    radius = field["radius_px"]
    for row in _frames(night, "imaging_flat"):
        flat = read_image(night["dir"] / "raw" / row["file"], dtype=np.float64)[0] - night["bias"]
        centre = np.median(flat[r < 100])
        assert centre > 10000
        # the corners outside the circle are dark
        assert abs(np.median(flat[r > radius + 15])) < 2
        # inside, the illumination falls off as the truth says
        ring = (r > radius - 40) & (r < radius - 20)
        assert np.median(flat[ring]) / centre == pytest.approx(
            np.median(illumination[ring]) / np.median(illumination[r < 100]), abs=0.003)
        assert np.median(illumination[ring]) < 0.98


def test_reference_catalogue(night):
    raw_copy = Table.read(night["dir"] / "raw" / "refcat.ecsv")
    truth_copy = Table.read(night["dir"] / "truth" / "refcat.ecsv")
    assert raw_copy.colnames == ["id", "ra", "dec", "u", "g", "r", "i", "z", "y", "V"]
    assert len(raw_copy) == len(truth_copy) == 200
    assert np.array_equal(raw_copy["ra"], truth_copy["ra"])
    # it covers the field and beyond: every rendered star is in it, and more
    stars = night["stars"]
    assert set(stars["id"]) < set(raw_copy["id"])
    first = stars[stars["file"] == stars["file"][0]]
    assert len(raw_copy) > len(first) > 40
    by_id = {i: k for k, i in enumerate(raw_copy["id"])}
    k = [by_id[i] for i in first["id"]]
    assert np.allclose(raw_copy["ra"][k], first["ra"]) and np.allclose(raw_copy["dec"][k], first["dec"])


def test_same_seed_same_night(night, tmp_path):
    rows = simulate_acq_night(tmp_path / "raw", tmp_path / "truth", night="2025-01-20", seed=4, size="small")
    assert [r["file"] for r in rows] == [r["file"] for r in night["rows"]]
    name = _frames(night, "imaging_science")[-1]["file"]
    assert np.array_equal(read_image(tmp_path / "raw" / name)[0], read_image(night["dir"] / "raw" / name)[0])
