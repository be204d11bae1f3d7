"""Line finding: global shift, vectorised centroids and rejection on small synthetic frames."""

import numpy as np
import pytest
from scipy.special import erf

from soxspipe.commonutils.lines import centroids, find_peaks, global_shift, reject_lines


def spots(shape, x, y, flux, sx, sy):
    """Pixel-integrated Gaussian spots."""
    yy, xx = np.arange(shape[0]), np.arange(shape[1])
    img = np.zeros(shape)
    for x0, y0, f in zip(x, y, flux):
        ex = 0.5 * (erf((xx + 0.5 - x0) / (np.sqrt(2) * sx)) - erf((xx - 0.5 - x0) / (np.sqrt(2) * sx)))
        ey = 0.5 * (erf((yy + 0.5 - y0) / (np.sqrt(2) * sy)) - erf((yy - 0.5 - y0) / (np.sqrt(2) * sy)))
        img += f * ey[:, None] * ex[None, :]
    return img


def test_centroids_are_unbiased_for_undersampled_spots():
    rng = np.random.default_rng(3)
    x, y = rng.uniform(10, 190, 40), rng.uniform(10, 190, 40)
    keep = np.hypot(x[:, None] - x, y[:, None] - y) + np.eye(40) * 99 > 12
    x, y = x[keep.all(axis=1)], y[keep.all(axis=1)]
    img = spots((200, 200), x, y, np.full(x.size, 1e5), 1.0, 0.65)
    c = centroids(img, np.rint(x), np.rint(y), half_width=(4, 4))
    assert np.abs(c.x - x).max() < 0.005 and np.abs(c.y - y).max() < 0.005
    assert np.median(c.sigma_y) == pytest.approx(np.sqrt(0.65 ** 2 + 1 / 12), abs=0.01)


def test_global_shift_is_found_and_rejection_reasons():
    rng = np.random.default_rng(4)
    x, y = rng.uniform(0, 500, 300), rng.uniform(0, 500, 300)
    shift = global_shift(x, y, x[:250] + 7.3, y[:250] - 4.1, max_shift=15)
    assert (shift.dx, shift.dy) == pytest.approx((7.3, -4.1), abs=0.01)
    assert shift.matched_fraction == pytest.approx(250 / 300, abs=0.01)  # plus a chance pair or two
    x, y = [15, 40, 15, 45, 30, 30.0], [15, 15, 45, 45, 30, 33.5]
    img = spots((60, 60), x, y, [1e4] * 6, 1.0, 1.0)
    mask = np.zeros(img.shape, bool)
    mask[15, 41] = True
    xp, yp = find_peaks(img, 1.0)
    assert len(xp) == 6
    c = centroids(img, x[:5], y[:5], half_width=(4, 4), variance=img + 1, mask=mask)
    reasons = reject_lines(c, saturation=1e9, min_snr=10, width_ratio=1.2, background_fraction=0.1)
    assert reasons.tolist() == ["", "bad pixel", "", "", "blend"]


def test_windowed_centroids_are_unbiased_and_resist_a_faint_neighbour():
    rng = np.random.default_rng(5)
    x, y = 20 + 40 * np.arange(10) + rng.uniform(-0.5, 0.5, 10), 30 + rng.uniform(-0.5, 0.5, 10)
    img = spots((60, 420), x, y, np.full(10, 1e5), 1.0, 0.7)
    w = centroids(img, np.rint(x), np.rint(y), half_width=(4, 4), weight_sigma=(2.0, 1.5))
    assert np.abs(w.x - x).max() < 0.002 and np.abs(w.y - y).max() < 0.002
    # a neighbour with 5 % of the flux 3.5 px away along y
    img2 = img + spots((60, 420), x, y + 3.5, np.full(10, 5e3), 1.0, 0.7)
    plain = centroids(img2, np.rint(x), np.rint(y), half_width=(4, 4))
    windowed = centroids(img2, np.rint(x), np.rint(y), half_width=(4, 4), weight_sigma=(2.0, 1.5))
    assert np.abs(windowed.y - y).max() < 0.5 * np.abs(plain.y - y).min()
