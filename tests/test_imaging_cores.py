"""Numerical cores of the imaging recipes on small synthetic arrays with known answers."""

import numpy as np
import pytest
from astropy.wcs import WCS

from soxspipe.commonutils.astrometry import AstrometryError, match_offset, nominal_wcs, solve_wcs
from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.imaging_flat import Field, find_field, normalise_flat
from soxspipe.commonutils.photometry import aperture_correction, aperture_fluxes, fit_zero_point, limiting_magnitude
from soxspipe.commonutils.sources import detect, isolated, measure_fwhm, windowed_centroid

SCALE = 0.205


def gaussian_stars(shape, x, y, flux, fwhm):
    """Pixel-integrated (5x5 sub-sampled) circular Gaussians."""
    sigma = fwhm / 2.3548
    yy, xx = np.indices(shape, dtype=float)
    image = np.zeros(shape)
    sub = (np.arange(5) + 0.5) / 5 - 0.5
    for xi, yi, fi in zip(x, y, flux):
        for sx in sub:
            for sy in sub:
                image += fi / 25 * np.exp(-((xx + sx - xi) ** 2 + (yy + sy - yi) ** 2) / (2 * sigma**2)) / (2 * np.pi * sigma**2)
    return image


# -- imaging flat ----------------------------------------------------------------------

def test_field_found_and_flat_normalised_at_its_centre():
    shape, cx, cy, radius = (120, 140), 71.3, 58.6, 50.0
    yy, xx = np.indices(shape)
    r = np.hypot(xx - cx, yy - cy)
    illum = (1 - 0.05 * (r / radius) ** 2) * (r < radius)
    flat = (2000.0 * illum).astype(np.float32)
    flat[60, 70] *= 0.3  # a dead pixel at the centre
    field = find_field(flat)
    assert field.x == pytest.approx(cx, abs=0.1) and field.y == pytest.approx(cy, abs=0.1)
    assert field.radius == pytest.approx(radius, abs=0.5)
    norm, err, mask, level = normalise_flat(flat, np.sqrt(flat), np.zeros(shape, bool), field,
                                            centre_fraction=0.2, edge_margin=2.0, low_response=0.5)
    assert level == pytest.approx(2000.0 * (1 - 0.05 * 0.02), rel=2e-4)  # (r/R)^2 has median 0.02 within 0.2 R
    inside = r < radius - 2
    np.testing.assert_allclose(norm[inside & ~mask], (illum / (1 - 0.05 * 0.02))[inside & ~mask], rtol=2e-4)
    outside = ~field.mask(shape, margin=2.0)
    near_edge = np.abs(r - (radius - 2)) <= 0.3  # the found circle is within 0.1 px of the true one
    assert np.array_equal(outside[~near_edge], (r >= radius - 2)[~near_edge])
    expected = outside.copy()
    expected[60, 70] = True
    assert np.array_equal(mask, expected)
    assert (norm[mask] == 1).all() and (err[mask] == 0).all()


def test_blank_flat_is_an_error():
    with pytest.raises(DataError, match="not illuminated|no illuminated field"):
        find_field(np.zeros((50, 50), np.float32))


def test_field_mask_margin():
    m = Field(10.0, 10.0, 5.0).mask((21, 21), margin=1.0)
    assert m[10, 10] and m[10, 13] and not m[10, 14]


# -- sources ---------------------------------------------------------------------------

def test_windowed_centroid_recovers_subpixel_positions():
    rng = np.random.default_rng(1)
    x, y = rng.uniform(15, 85, 6), rng.uniform(15, 85, 6)
    image = gaussian_stars((100, 100), x, y, np.full(6, 5e4), 4.0)
    gx, gy = windowed_centroid(image, np.round(x) + 0.4, np.round(y) - 0.4, 4.0 / 2.3548)
    np.testing.assert_allclose(gx, x, atol=0.01)
    np.testing.assert_allclose(gy, y, atol=0.01)


def test_detection_flags_and_fwhm():
    rng = np.random.default_rng(2)
    shape = (160, 160)
    x = np.array([30.2, 80.7, 120.4, 40.9, 125.0])
    y = np.array([40.3, 90.1, 30.8, 130.2, 128.0])
    flux = np.array([4e4, 2e4, 1e4, 8e3, 3e4])
    image = gaussian_stars(shape, x, y, flux, 4.0) + 100.0 + rng.normal(0, 5, shape)
    mask = np.zeros(shape, bool)
    flag = mask.copy()
    flag[128, 125] = True  # the last star touches a flagged (saturated) pixel
    found, sky, noise = detect(image, mask, fwhm=4.0, nsigma=5.0, flag_mask=flag)
    assert len(found) == 5
    assert sky == pytest.approx(100.0, abs=1.0) and noise == pytest.approx(5.0, rel=0.05)
    order = np.argsort(-flux)
    np.testing.assert_allclose(found.x, x[order], atol=0.05)
    np.testing.assert_allclose(found.y, y[order], atol=0.05)
    assert found.flagged.tolist() == [False, True, False, False, False]
    fwhm = measure_fwhm(image - sky, found.x, found.y)
    assert np.median(fwhm) == pytest.approx(4.0, rel=0.05)
    assert isolated([0, 3, 50], [0, 0, 0], 5).tolist() == [False, False, True]


def test_nothing_detected_on_noise():
    rng = np.random.default_rng(3)
    found, _, _ = detect(rng.normal(10, 1, (80, 80)), np.zeros((80, 80), bool), fwhm=3.0, nsigma=8.0)
    assert len(found) == 0


# -- astrometry ------------------------------------------------------------------------

def _sky_field(rng, n=80, rotation=1.5, offset=(9.0, -5.0), shape=(600, 600)):
    """A catalogue, the nominal WCS and the detected positions through a rotated and shifted true WCS."""
    ra0, dec0 = 150.0, -30.0
    guess = nominal_wcs(ra0, dec0, SCALE, shape)
    true = WCS(naxis=2)
    true.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    true.wcs.crpix = guess.wcs.crpix
    true.wcs.crval = [ra0 + offset[0] / 3600 / np.cos(np.radians(dec0)), dec0 + offset[1] / 3600]
    c, s = np.cos(np.radians(rotation)), np.sin(np.radians(rotation))
    true.wcs.cd = SCALE / 3600 * np.array([[-c, s], [s, c]])
    # catalogue over a wider area than the frame; mags for ranking
    px, py = rng.uniform(-100, shape[1] + 100, 2 * n), rng.uniform(-100, shape[0] + 100, 2 * n)
    ra, dec = true.all_pix2world(px, py, 0)
    mag = rng.uniform(14, 21, 2 * n)
    on = (px >= 0) & (px < shape[1]) & (py >= 0) & (py < shape[0]) & (mag < 20)
    order = np.nonzero(on)[0][np.argsort(mag[on])]
    xy = np.column_stack([px[order], py[order]]) + rng.normal(0, 0.05, (order.size, 2))
    # a few spurious detections (cosmics, galaxies) that match nothing
    xy = np.vstack([xy, rng.uniform(0, shape[0], (5, 2))])
    return xy, ra, dec, mag, guess, true, shape


def test_wcs_solved_through_offset_and_rotation():
    rng = np.random.default_rng(4)
    xy, ra, dec, mag, guess, true, shape = _sky_field(rng)
    sol = solve_wcs(xy, ra, dec, mag, guess, shape, min_matches=8)
    assert sol.n_matched >= 0.9 * (len(xy) - 5)
    assert sol.rotation_deg == pytest.approx(1.5, abs=0.01)
    assert sol.offset_arcsec[0] == pytest.approx(9.0, abs=0.05) and sol.offset_arcsec[1] == pytest.approx(-5.0, abs=0.05)
    assert sol.scale_arcsec == pytest.approx(SCALE, rel=1e-4)
    assert sol.rms_arcsec == pytest.approx(0.05 * np.sqrt(2) * SCALE, rel=0.25)
    # the fitted WCS against the true one over the frame: far below the 0.05 px centroid noise
    gx, gy = np.meshgrid(np.linspace(0, shape[1], 7), np.linspace(0, shape[0], 7))
    ra_f, dec_f = sol.wcs.all_pix2world(gx.ravel(), gy.ravel(), 0)
    ra_t, dec_t = true.all_pix2world(gx.ravel(), gy.ravel(), 0)
    err = np.hypot((ra_f - ra_t) * np.cos(np.radians(dec_t)), dec_f - dec_t) * 3600
    assert err.max() < 0.01


def test_pointing_outside_the_search_is_an_error():
    rng = np.random.default_rng(5)
    xy, ra, dec, mag, guess, _, shape = _sky_field(rng, offset=(150.0, 0.0))
    with pytest.raises(AstrometryError, match="no significant match"):
        solve_wcs(xy, ra, dec, mag, guess, shape, max_offset_arcsec=30.0)


def test_catalogue_not_covering_the_field_is_an_error():
    rng = np.random.default_rng(6)
    xy, ra, dec, mag, guess, _, shape = _sky_field(rng)
    with pytest.raises(AstrometryError, match="does not cover this field"):
        solve_wcs(xy, ra + 1.0, dec, mag, guess, shape)
    with pytest.raises(AstrometryError, match="only 4 sources detected"):
        solve_wcs(xy[:4], ra, dec, mag, guess, shape)


def test_match_offset_between_frames():
    rng = np.random.default_rng(7)
    ref = rng.uniform(0, 500, (60, 2))
    moved = ref[5:] - [3.3, -7.6] + rng.normal(0, 0.05, (55, 2))
    dx, dy, n = match_offset(ref, moved, max_offset=30)
    assert (dx, dy) == (pytest.approx(3.3, abs=0.03), pytest.approx(-7.6, abs=0.03)) and n == 55
    with pytest.raises(AstrometryError):
        match_offset(ref, rng.uniform(0, 500, (60, 2)), max_offset=30, min_matches=10)


# -- photometry ------------------------------------------------------------------------

def test_aperture_fluxes_with_local_sky_and_correction():
    rng = np.random.default_rng(8)
    shape = (120, 120)
    x, y, flux = np.array([40.3, 80.6]), np.array([50.2, 70.9]), np.array([2e5, 5e4])
    image = gaussian_stars(shape, x, y, flux, 4.0) + 200.0 + rng.normal(0, 2, shape)
    mask = np.zeros(shape, bool)
    small = aperture_fluxes(image, np.full(shape, 2.0), mask, x, y, 4.0, (20.0, 28.0))
    big = aperture_fluxes(image, np.full(shape, 2.0), mask, x, y, 12.0, (20.0, 28.0))
    np.testing.assert_allclose(small.sky, 200.0, atol=0.2)
    np.testing.assert_allclose(big.flux, flux, rtol=0.005)
    # a Gaussian holds 1 - exp(-r^2 / 2 s^2) within r; pixel integration and the exact pixel
    # overlap of the aperture each add a box of variance 1/12 px^2
    fraction = 1 - np.exp(-16.0 / (2 * ((4.0 / 2.3548) ** 2 + 2 / 12)))
    np.testing.assert_allclose(small.flux / flux, fraction, atol=0.002)
    corr, corr_err = aperture_correction(small.flux, big.flux)
    assert corr == pytest.approx(1 / fraction, rel=0.003)
    assert small.masked_fraction == pytest.approx([0, 0], abs=1e-9)


def test_zero_point_robust_against_outliers():
    rng = np.random.default_rng(9)
    mag = rng.uniform(15, 19, 40)
    rate = 10 ** (-0.4 * (mag - 25.5)) * (1 + rng.normal(0, 0.01, 40))
    rate[:6] *= 1.5  # blends and variables
    zp = fit_zero_point(rate, rate * 0.01, mag, clip_sigma=3.0)
    assert zp.value == pytest.approx(25.5, abs=0.005)
    assert not zp.used[:6].any() and zp.n_used == 34
    assert zp.error == pytest.approx(0.0109 * 1.0857 / np.sqrt(34), rel=0.5)
    with pytest.raises(DataError, match="only 2 stars"):
        fit_zero_point(rate[:2], rate[:2] * 0.01, mag[:2])


def test_limiting_magnitude():
    # 5 sigma over a 10 px radius aperture with 10 e/px noise in 100 s: 5 * 10 * sqrt(pi * 100) e
    expected = 25.0 - 2.5 * np.log10(5 * 10 * np.sqrt(np.pi * 100) / 100)
    assert limiting_magnitude(25.0, 10.0, 10.0, exptime=100.0) == pytest.approx(expected, abs=1e-9)
