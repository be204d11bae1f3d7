"""The simulated detectors: noise, bias, dark, saturation, layout and determinism against their truth."""

import json

import numpy as np
import pytest

from soxspipe.simulator.detector import SimulatedDetector

CASES = [("VIS", (1, 1), "slow"), ("VIS", (1, 1), "fast"), ("VIS", (2, 1), "slow"), ("NIR", (1, 1), "slow"),
         ("ACQ", (1, 1), "slow")]


def _science(det, frame):
    return frame[det.science_slice].astype(np.float64)


@pytest.mark.parametrize("arm, binning, readout", CASES)
def test_bias_noise_matches_stated_read_noise(arm, binning, readout):
    det = SimulatedDetector(arm, binning=binning, readout=readout, seed=11)
    diff = _science(det, det.read_out(None, 0.0)) - _science(det, det.read_out(None, 0.0))
    # the row-wise bias drift differs between frames; overscan correction removes it, so does this
    diff -= diff.mean(axis=1, keepdims=True)
    ncols = diff.shape[1]
    measured_e = diff.std() / np.sqrt(2) * np.sqrt(ncols / (ncols - 1)) * det.gain
    stated = det.truth()["read_noise_e"]
    assert abs(measured_e / stated - 1) < 0.03, (measured_e, stated)


def test_vis_bias_level_overscan_and_row_drift():
    det = SimulatedDetector("VIS", seed=5)
    truth = det.truth()
    assert 1000 < truth["bias_level_adu"] < 2000
    frame = det.read_out(None, 0.0).astype(np.float64)
    x0, x1 = det.det.overscan_region()
    p0, p1 = det.det.prescan_region()
    assert (x0, x1, p0, p1) == (858, 908, 0, 50)
    # the frame's level is the bias level plus this frame's row drift and the fixed column pattern
    expected = det.last_row_bias[:, None] + det.column_pattern[None, :]
    assert abs((frame - expected).mean()) < 0.02
    # the overscan tracks the row drift: per-row overscan means scatter only by the read noise
    over_rows = frame[:, x0:x1].mean(axis=1) - det.last_row_bias - det.column_pattern[x0:x1].mean()
    ron_adu = truth["read_noise_adu"]
    assert abs(over_rows.std() / (ron_adu / np.sqrt(x1 - x0)) - 1) < 0.1
    assert abs(over_rows.mean()) < 0.05


def test_light_gain_and_response():
    det = SimulatedDetector("VIS", seed=2)
    level = 20000.0
    frame = det.read_out(np.full(det.science_shape, level, np.float32), 1.0, cosmics=False)
    x0, x1 = det.det.overscan_region()
    overscan = frame[:, x0:x1].astype(np.float64).mean(axis=1, keepdims=True)
    electrons = (_science(det, frame) - overscan) * det.gain
    good = ~det.bad_pixel_mask
    flat = electrons[good] / det.response[good]
    assert abs(flat.mean() / level - 1) < 0.002
    # what stays is photon noise (plus read noise): the response is taken out exactly
    expected_sd = np.sqrt(level / det.response[good].mean() + det.read_noise**2)
    assert abs(flat.std() / expected_sd - 1) < 0.05
    assert abs(det.truth()["response_rms"] - 0.01) < 0.001
    # prescan and overscan see no light
    assert abs(frame[:, x0:x1].mean() - det.bias_level) < 10
    assert frame[:, :50].max() < det.bias_level + 60


@pytest.mark.parametrize("arm, exptime", [("NIR", 600.0), ("ACQ", 900.0)])
def test_hot_pixels_at_truth_positions(arm, exptime):
    det = SimulatedDetector(arm, seed=7)
    truth = det.truth()
    hx, hy = np.array(truth["hot_pixels"]["x"]), np.array(truth["hot_pixels"]["y"])
    rates = np.array(truth["hot_pixels"]["rate_e_per_s"])
    assert len(rates) > 50
    dark = _science(det, det.read_out(None, exptime, cosmics=False))
    dark -= np.median(dark)
    measured = dark[hy, hx] * det.gain / exptime
    assert abs(np.median(measured / rates) - 1) < 0.03
    noise = truth["read_noise_adu"]
    strong = rates * exptime > 20 * truth["read_noise_e"]
    assert (dark[hy, hx][strong] > 5 * noise).mean() > 0.99
    # away from the hot pixels practically nothing stands out
    mask = np.zeros(dark.shape, bool)
    mask[hy, hx] = True
    assert (dark[~mask] > 5 * noise).mean() < 1e-4


def test_saturation_clip():
    vis = SimulatedDetector("VIS")
    frame = vis.read_out(np.full(vis.science_shape, 1e6, np.float32), 1.0)
    good = ~vis.bad_pixel_mask
    assert (frame[vis.science_slice][good] == 65535).all()
    assert frame[:, 858:].max() < 3000
    nir = SimulatedDetector("NIR")
    frame = nir.read_out(np.full(nir.science_shape, 1e6, np.float32), 1.0)
    assert frame.max() == np.float32(45000)
    assert (frame[nir.science_slice][~nir.bad_pixel_mask] == np.float32(45000)).all()


@pytest.mark.parametrize("arm, binning, raw_shape, science_shape, dtype", [
    ("VIS", (1, 1), (4096, 908), (4096, 808), np.uint16),
    ("VIS", (2, 1), (4096, 454), (4096, 404), np.uint16),
    ("VIS", (2, 2), (2048, 454), (2048, 404), np.uint16),
    ("NIR", (1, 1), (2048, 2048), (2040, 2040), np.float32),
    ("ACQ", (1, 1), (1024, 1024), (1024, 1024), np.uint16),
])
def test_layout(arm, binning, raw_shape, science_shape, dtype):
    det = SimulatedDetector(arm, binning=binning)
    assert det.science_shape == science_shape
    assert det.response.shape == science_shape and det.response.dtype == np.float32
    frame = det.read_out(np.zeros(science_shape, np.float32), 10.0)
    assert frame.shape == raw_shape and frame.dtype == dtype
    with pytest.raises(ValueError, match="shape"):
        det.read_out(np.zeros((10, 10)), 1.0)


def test_nir_reference_pixels_see_no_light():
    det = SimulatedDetector("NIR", seed=3)
    frame = det.read_out(np.full(det.science_shape, 5000.0, np.float32), 100.0, cosmics=False)
    ref = np.concatenate([frame[:4].ravel(), frame[-4:].ravel(), frame[4:-4, :4].ravel(), frame[4:-4, -4:].ravel()])
    ron_adu = det.read_noise / det.gain
    assert abs(ref.mean()) < 0.2
    assert abs(ref.std() / ron_adu - 1) < 0.05
    assert frame[det.science_slice].mean() > 2000


def test_same_seed_same_detector_and_frames():
    a, b, c = (SimulatedDetector("ACQ", seed=s) for s in (3, 3, 4))
    assert a.truth() == b.truth()
    assert np.array_equal(a.read_out(None, 300.0), b.read_out(None, 300.0))
    assert a.truth()["hot_pixels"] != c.truth()["hot_pixels"]
    # the same CCD at another binning: the hot pixels bin onto the same places
    v1, v2 = SimulatedDetector("VIS", seed=3), SimulatedDetector("VIS", seed=3, binning=(2, 1))
    assert np.allclose(v2.hot_pixel_map.sum(), v1.hot_pixel_map.sum(), rtol=1e-5)
    assert set(np.array(v1.truth()["hot_pixels"]["x"]) // 2) == set(v2.truth()["hot_pixels"]["x"])


def test_cosmics_and_extreme_scenario():
    nominal = SimulatedDetector("VIS", seed=1)
    extreme = SimulatedDetector("VIS", seed=1, scenario="extreme")
    frame = nominal.read_out(None, 1800.0)
    # 0.02 hits/s/cm^2 on the 808 x 4096 science pixels of 15 um (7.45 cm^2) for 1800 s: 268 hits
    expected = 0.02 * (808 * 15e-4) * (4096 * 15e-4) * 1800
    assert abs(nominal.last_cosmic_hits - expected) < 4 * np.sqrt(expected)
    ys, xs = nominal.last_cosmic_pixels
    assert len(ys) > nominal.last_cosmic_hits
    science = frame[nominal.science_slice].astype(float) - nominal.last_row_bias[:, None]
    assert np.median(science[ys, xs]) > 50 * nominal.truth()["read_noise_adu"]
    extreme.read_out(None, 1800.0)
    assert abs(extreme.last_cosmic_hits - 5 * expected) < 4 * np.sqrt(5 * expected)
    t_nom, t_ext = nominal.truth(), extreme.truth()
    assert t_nom["bad_columns"] == [] and 4 <= len(t_ext["bad_columns"]) < 8
    assert t_ext["bad_pixels"]["count"] > 5 * t_nom["bad_pixels"]["count"]
    col = t_ext["bad_columns"][0]
    assert extreme.response[col["y0"]:col["y1"], col["x"]].max() < 0.25


def test_write_truth(tmp_path):
    from astropy.io import fits

    det = SimulatedDetector("NIR", seed=9)
    paths = det.write_truth(tmp_path)
    truth = json.loads(paths["json"].read_text())
    assert truth["gain_e_per_adu"] == 2.3 and truth["read_noise_e"] == 7.3
    assert truth["bias_level_adu"] == 0.0 and truth["dark_current_e_per_s"] == 0.005
    assert len(truth["hot_pixels"]["x"]) == np.count_nonzero(det.hot_pixel_map)
    response = fits.getdata(paths["response"])
    mask = fits.getdata(paths["bad_pixel_mask"])
    assert response.shape == mask.shape == (2040, 2040)
    assert mask.sum() == truth["bad_pixels"]["count"]
