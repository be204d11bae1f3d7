"""Synthetic AB photometry through the bundled filter curves, against exact and hand-computed values."""

import numpy as np
import pytest

from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.synthetic_photometry import (AB_FNU, C_ANGSTROM_S, FILTER_FILES, FilterCurve, ab_magnitude,
                                                       ab_to_flambda, filter_curve)

WL = np.arange(300.0, 1200.0, 0.05)


@pytest.mark.parametrize("band", list(FILTER_FILES))
def test_flat_fnu_spectrum_gives_its_ab_magnitude(band):
    # several spectra at once: the leading axis is kept
    mags = np.array([12.0, 18.3, 23.7])
    flux = ab_to_flambda(mags[:, None], WL[None, :])
    np.testing.assert_allclose(ab_magnitude(WL, flux, band), mags, atol=1e-9)
    # a coarse grid of a flat f_nu spectrum is still exact: f_lambda ~ lambda^-2 is smooth
    coarse = np.arange(300.0, 1200.0, 7.0)
    assert ab_magnitude(coarse, ab_to_flambda(18.3, coarse), band) == pytest.approx(18.3, abs=2e-4)


def test_box_filter_and_constant_flambda_by_hand():
    """f_lambda = 1e-16 erg/s/cm^2/A through T = 1 on 500-600 nm (photon counting).

    numerator  = ∫ f T lambda dlambda = 1e-16 * (6000^2 - 5000^2) / 2 A^2 = 5.5e-10
    denominator = 3631e-23 * c ∫ T dlambda / lambda = 3631e-23 * 2.99792458e18 * ln(1.2) = 0.0198465477
    m = -2.5 log10(5.5e-10 / 0.0198465477) = 18.8933057
    """
    box = FilterCurve("box", np.array([500.0, 600.0]), np.array([1.0, 1.0]))
    wl = np.arange(450.0, 650.0, 0.01)
    assert ab_magnitude(wl, np.full(wl.size, 1e-16), box) == pytest.approx(18.8933057, abs=1e-6)
    # pivot wavelength sqrt(∫ T lambda / ∫ T / lambda) = sqrt(55000 / ln 1.2) nm
    assert box.pivot_wavelength == pytest.approx(549.2402, abs=1e-4)


def test_a_narrow_line_between_the_curves_samples_counts():
    """A 0.05 nm wide line at 545 nm, between the 10 nm samples of the V curve, adds its photons:
    m = m_cont - 2.5 log10(1 + L / C), L = F_line T(545) lambda, C = F_AB(m_cont) c ∫ T dlambda / lambda."""
    v = filter_curve("V")
    continuum = ab_to_flambda(18.0, WL)
    line_total = 3e-14  # erg/s/cm^2, ~10 % of the continuum through V
    sigma_a = 0.5  # Angstrom
    line = line_total / (sigma_a * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((WL - 545.0) * 10.0 / sigma_a) ** 2)
    t545 = np.interp(545.0, v.wavelength, v.throughput)
    big_l = line_total * t545 * 5450.0
    t = np.interp(WL, v.wavelength, v.throughput)  # the curve is linear between its samples
    big_c = AB_FNU * 10 ** (-0.4 * 18.0) * C_ANGSTROM_S * np.trapezoid(t / WL, WL)
    expected = 18.0 - 2.5 * np.log10(1.0 + big_l / big_c)
    assert expected < 17.95  # the line matters
    assert ab_magnitude(WL, continuum + line, "V") == pytest.approx(expected, abs=2e-4)


def test_curves_are_read_in_nm():
    v, r = filter_curve("V"), filter_curve("r")
    assert v.wavelength[0] == pytest.approx(470.0) and v.wavelength[-1] == pytest.approx(700.0)  # file in Angstrom
    assert v.band == pytest.approx((480.0, 680.0))
    lo, hi = r.band  # LSST r: about 540-700 nm at 1 % of the peak
    assert 530 < lo < 545 and 695 < hi < 710
    assert filter_curve("r") is r  # cached, and read-only
    with pytest.raises(ValueError):
        r.throughput[0] = 1.0
    pivots = [filter_curve(b).pivot_wavelength for b in "ugrizy"]
    assert np.all(np.diff(pivots) > 50)


def test_spectrum_must_cover_the_filter():
    wl = np.arange(560.0, 900.0, 0.1)  # misses the blue side of r
    with pytest.raises(DataError, match=r"misses .* % of filter r's response \(536-704 nm"):
        ab_magnitude(wl, ab_to_flambda(18.0, wl), "r")
    nir = np.arange(1500.0, 2000.0, 0.1)
    with pytest.raises(DataError, match="does not overlap filter y"):
        ab_magnitude(nir, ab_to_flambda(18.0, nir), "y")
    # the VIS arm's range holds r and i; what it misses of them is far below the tolerance
    vis = np.arange(347.0, 853.0, 0.1)
    for band in "ri":
        assert ab_magnitude(vis, ab_to_flambda(18.0, vis), band) == pytest.approx(18.0, abs=1e-3)
    # a larger tolerance takes the covered part alone
    assert ab_magnitude(wl, ab_to_flambda(18.0, wl), "r", max_missing=0.5) == pytest.approx(18.0, abs=1e-6)


def test_bad_inputs():
    with pytest.raises(DataError, match="no throughput curve for filter 'H'"):
        filter_curve("H")
    with pytest.raises(DataError, match="must increase"):
        ab_magnitude(WL[::-1], ab_to_flambda(18.0, WL[::-1]), "r")
    with pytest.raises(DataError, match="same last length"):
        ab_magnitude(WL, np.ones(10), "r")
    # no positive flux: no magnitude
    assert np.isnan(ab_magnitude(WL, np.zeros(WL.size), "g"))
