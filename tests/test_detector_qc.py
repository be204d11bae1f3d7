"""Tests of the detector QC measurements and the detector frame plot."""

import numpy as np
import pytest

from soxspipe.commonutils.combine import sigma_clipped_stack
from soxspipe.commonutils.detector_qc import (
    fixed_pattern_noise,
    hot_pixels,
    out_of_range_pixels,
    read_noise_from_pair,
    robust_stats,
    structure_slopes,
)
from soxspipe.commonutils.qc_plots import detector_frame_plot


def test_robust_stats_by_hand():
    values = np.array([1.0, 2.0, 3.0, 4.0, 100.0])
    # |deviations| from 3: 2, 1, 0, 1, 97 -> MAD 1
    assert robust_stats(values, clip=None) == pytest.approx((3.0, 1.4826))
    # within 5 x 1.4826 of 3: 1..4, std (ddof=1) sqrt(5/3)
    assert robust_stats(values) == pytest.approx((3.0, np.sqrt(5 / 3)))
    mask = np.array([False, False, False, True, True])
    assert robust_stats(values, mask) == pytest.approx((2.0, 1.0))
    assert robust_stats(np.array([np.nan, 5.0, 7.0, np.inf, 9.0]), clip=None) == pytest.approx((7.0, 2 * 1.4826))
    assert np.isnan(robust_stats(np.full(3, np.nan))[0])


def test_read_noise_from_pair_recovers_sigma():
    rng = np.random.default_rng(5)
    shape = (300, 400)
    sigma = 3.0
    pattern = 2.0 * np.sin(np.arange(shape[1]) / 7.0) + rng.normal(0, 5.0, shape)  # fixed: cancels
    a = 1000.0 + pattern + rng.normal(0, sigma, shape)
    b = 1000.0 + pattern + rng.normal(0, sigma, shape)
    hits = rng.integers(0, a.size, 200)
    a.flat[hits] += rng.uniform(50, 5000, hits.size)  # cosmic rays
    bad = np.zeros(shape, bool)
    bad[:, 17] = True
    a[:, 17] += 300.0  # a bad column, masked
    # 120k pixels: the clipped std is good to ~0.2 %
    assert read_noise_from_pair(a, b, mask=bad) == pytest.approx(sigma, rel=0.02)
    with pytest.raises(ValueError):
        read_noise_from_pair(a, b[:, :-1])


def test_structure_slopes_recover_injected_gradient():
    rng = np.random.default_rng(8)
    ny, nx = 300, 200
    y, x = np.mgrid[:ny, :nx]
    image = 500.0 + 0.01 * x - 0.02 * y + rng.normal(0, 2.0, (ny, nx))
    mask = np.zeros(image.shape, bool)
    image[:, 50] += 1000.0  # a hot column, masked
    mask[:, 50] = True
    image[:, 120] -= 400.0  # a dead column, not masked: the clipped fit ignores it
    image[40] += 250.0  # a bright row, not masked
    structx, structy = structure_slopes(image, mask)
    # slope errors: ~2.5e-4 along x, ~1.2e-4 along y (median profiles of 2-sigma noise)
    assert structx == pytest.approx(0.01, abs=1e-3)
    assert structy == pytest.approx(-0.02, abs=6e-4)
    flat_x, flat_y = structure_slopes(rng.normal(0, 2.0, (ny, nx)))
    assert abs(flat_x) < 1e-3 and abs(flat_y) < 6e-4


def test_fixed_pattern_noise_white_and_with_pattern():
    rng = np.random.default_rng(13)
    ny, nx = 256, 256
    sigma = 3.0
    white = rng.normal(100.0, sigma, (ny, nx))
    n = white.size
    # max of ~n/2 exponential pair powers over the total: 2 (ln(n/2) + Euler gamma) / n
    expected_white = 2 * (np.log(n / 2) + 0.5772) / n
    fpn_white = fixed_pattern_noise(white)
    assert fpn_white == pytest.approx(expected_white, rel=0.4)

    y, x = np.mgrid[:ny, :nx]
    amplitude = sigma  # pattern variance A^2/2 over total sigma^2 + A^2/2 = 1/3
    patterned = white + amplitude * np.sin(2 * np.pi * (x / 8.0 + y / 32.0))
    assert fixed_pattern_noise(patterned) == pytest.approx(1 / 3, rel=0.03)
    assert fixed_pattern_noise(amplitude * np.sin(2 * np.pi * x / 16.0)) == pytest.approx(1.0, rel=1e-6)

    # a masked bright block is replaced by the median: back to the white-noise level
    blotched = white.copy()
    blotched[100:140, 60:90] += 500.0
    block = np.zeros(white.shape, bool)
    block[100:140, 60:90] = True
    assert fixed_pattern_noise(blotched) > 100 * expected_white
    assert fixed_pattern_noise(blotched, block) < 2 * expected_white


def realistic_master_dark(rng, shape=(512, 512), n_frames=5, exptime=300.0):
    """A stack of NIR-like darks (pedestal, dark current, read noise, cosmics, hot pixels)."""
    read_noise, pedestal, dark_rate = 7.3, 40.0, 0.005
    hot = rng.random(shape) < 0.005
    rate = np.full(shape, dark_rate)
    rate[hot] = 10 ** rng.uniform(-1, 1, hot.sum())  # 0.1-10 e/s: 30-3000 e in 300 s
    frames = rng.poisson(rate * exptime, (n_frames, *shape)) + pedestal
    frames = frames + rng.normal(0, read_noise, frames.shape)
    cosmics = rng.random(frames.shape) < 3e-4
    frames[cosmics] += rng.uniform(100, 3000, cosmics.sum())
    errors = np.sqrt(read_noise**2 + np.clip(frames - pedestal, 0, None))
    master = sigma_clipped_stack(frames, errors=errors).data
    return master, hot


def test_hot_pixels_recovered_on_realistic_dark():
    rng = np.random.default_rng(21)
    master, truth = realistic_master_dark(rng)
    found = hot_pixels(master, exptime=300.0)
    recovered = (found & truth).sum() / truth.sum()
    false_positives = (found & ~truth).sum() / truth.size
    assert recovered >= 0.95
    assert false_positives < 1e-3


def test_hot_pixel_thresholds_by_hand():
    rng = np.random.default_rng(2)
    dark = 10.0 + rng.normal(0, 0.01, (100, 100))
    dark[5, 5] += 1.0  # 100 sigma, but 0.01 e/s over 100 s: below min_rate
    dark[6, 6] += 10.0  # 0.1 e/s
    found = hot_pixels(dark, exptime=100.0, nsigma=5.0, min_rate=0.05)
    assert np.flatnonzero(found).tolist() == [6 * 100 + 6]
    found = hot_pixels(dark, exptime=100.0, nsigma=5.0, min_rate=0.0)
    assert np.flatnonzero(found).tolist() == [5 * 100 + 5, 6 * 100 + 6]
    with pytest.raises(ValueError):
        hot_pixels(dark, exptime=0.0)


def test_out_of_range_pixels():
    rng = np.random.default_rng(34)
    bias = 200.0 + rng.normal(0, 1.0, (256, 256))
    deviant = rng.choice(bias.size, 300, replace=False)
    bias.flat[deviant] += rng.choice([-1, 1], 300) * rng.uniform(8, 100, 300)
    found = out_of_range_pixels(bias, nsigma=5.0)
    assert set(np.flatnonzero(found)) == set(deviant)
    # a masked, offset half is left out of the level and sigma, and still reported
    mask = np.zeros(bias.shape, bool)
    mask[:128] = True
    bias[:128] += 50.0
    found = out_of_range_pixels(bias, nsigma=5.0, mask=mask)
    assert found[:128].mean() > 0.99  # all but deviants pushed back near the level
    assert set(np.flatnonzero(found[128:]) + 128 * 256) == {i for i in deviant if i >= 128 * 256}


def test_detector_frame_plot_writes_png(tmp_path):
    rng = np.random.default_rng(3)
    image = rng.normal(1000.0, 3.0, (4096, 808)).astype(np.float32)
    image += np.linspace(0, 20, 808, dtype=np.float32)
    mask = np.zeros(image.shape, bool)
    mask[:, 500] = True
    path = detector_frame_plot(image, mask=mask, title="VIS master bias", path=tmp_path / "bias.png")
    assert path == tmp_path / "bias.png"
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 20_000
    assert [p.name for p in tmp_path.iterdir()] == ["bias.png"]


@pytest.mark.parametrize("busy", [False, True])
def test_draw_plots_in_background_or_inline(tmp_path, busy):
    """Plots are drawn (forked when single-threaded, inline otherwise) and a failing one costs nothing else."""
    import threading

    from soxspipe.commonutils.qc_plots import draw_plots

    def good(path):
        path.write_bytes(b"png")

    def broken(path):
        raise ValueError("no data")

    stop = threading.Event()
    helper = threading.Thread(target=stop.wait)
    if busy:
        helper.start()
    try:
        wait = draw_plots([(broken, tmp_path / "qc" / "a.png"), (good, tmp_path / "qc" / "b.png")])
        if busy:  # drawn at once
            assert (tmp_path / "qc" / "b.png").read_bytes() == b"png"
        wait()
    finally:
        stop.set()
    assert (tmp_path / "qc" / "b.png").read_bytes() == b"png"
    assert not (tmp_path / "qc" / "a.png").exists()
