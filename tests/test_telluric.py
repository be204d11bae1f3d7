"""Telluric correction against the simulator's truth.

A flux standard (LTT 3218 at airmass 1.1, simulated as in test_flux_calibration) serves as
the telluric standard; the science target, an emission-line galaxy, is observed at
airmass 1.5. Both are flux-calibrated with the standard's response and merged; the
standard's transmission, scaled and shifted, then corrects the science spectrum.
"""

import logging
from functools import lru_cache

import numpy as np
import pytest
from scipy.ndimage import gaussian_filter1d

from soxspipe.commonutils import extinction as ext
from soxspipe.commonutils import flux_standards as fs
from soxspipe.commonutils import response as resp
from soxspipe.commonutils import telluric as tel
from soxspipe.commonutils.resample import linear_edges, merge_orders
from soxspipe.commonutils.settings import default_settings, recipe_settings
from soxspipe.simulator import spectra
from test_flux_calibration import (SAMPLES, STANDARD, STD_AIRMASS, STD_EXPTIME, observe, reduced_standard,
                                   standard_toa)

SCI_AIRMASS, SCI_EXPTIME = 1.5, 1800.0
MERGED_STEP = {"VIS": 0.04, "NIR": 0.06}


def science_toa(wave):
    return spectra.science_target(wave, 16.0)


def pixel_edges(wave):
    middle = 0.5 * (wave[1:] + wave[:-1])
    return np.concatenate([[2 * wave[0] - middle[0]], middle, [2 * wave[-1] - middle[-1]]])


def calibrated_merged(arm, observed, response, airmass, exptime):
    """Flux-calibrate every order (2 % trimmed at each end) and merge them."""
    parts = []
    for order, o in observed.items():
        flux, error = resp.calibrate_orders(response, np.full(o["wave"].size, order), o["wave"], o["counts"],
                                            o["error"], exptime=exptime, airmass=airmass)
        n = o["wave"].size
        keep = slice(int(0.02 * n), n - int(0.02 * n))
        parts.append((pixel_edges(o["wave"][keep]), flux[keep], error[keep]))
    low = min(o["wave"][0] for o in observed.values())
    high = max(o["wave"][-1] for o in observed.values())
    merged = merge_orders(parts, linear_edges(low, high, MERGED_STEP[arm]))
    good = np.isfinite(merged.flux)
    return merged.wavelength[good], merged.flux[good], merged.error[good]


def at_resolution(arm, wave, values_of):
    """``values_of(fine grid)`` convolved to the arm's resolution and sampled at ``wave``."""
    resolution = spectra.resolution(arm, 1.0)
    fine = np.exp(np.arange(np.log(wave[0]) - 20 / resolution, np.log(wave[-1]) + 20 / resolution,
                            1.0 / (resolution * 2.3548 * SAMPLES)))
    return np.interp(wave, fine, gaussian_filter1d(values_of(fine), SAMPLES, mode="nearest"))


def settings():
    return recipe_settings(default_settings(), "telluric", "VIS")


@lru_cache(maxsize=None)
def corrected(arm, with_model=True):
    observed_std, response = reduced_standard(arm)
    w_std, f_std, e_std = calibrated_merged(arm, observed_std, response, STD_AIRMASS, STD_EXPTIME)
    model = fs.catalogue_flux(STANDARD, w_std, resolution=spectra.resolution(arm, 1.0)) if with_model else None
    transmission = tel.measure_transmission(w_std, f_std, e_std, airmass=STD_AIRMASS, model=model,
                                            **tel.transmission_options(settings()))
    observed_sci = observe(arm, science_toa, SCI_AIRMASS, SCI_EXPTIME, seed=31)
    wave, flux, error = calibrated_merged(arm, observed_sci, response, SCI_AIRMASS, SCI_EXPTIME)
    result = tel.telluric_correct(wave, flux, error, transmission, airmass=SCI_AIRMASS,
                                  **tel.correction_options(settings()))
    return wave, flux, result


BANDS = {"VIS": {"O2 A": (756.0, 772.0)}, "NIR": {"H2O 0.94um": (870.0, 1000.0), "H2O 1.13um": (1070.0, 1200.0)}}


@pytest.mark.parametrize("arm,with_model", [("VIS", True), ("NIR", True), ("VIS", False)])
def test_telluric_correction_recovers_the_science_spectrum(arm, with_model):
    """Standard at airmass 1.1, science at 1.5: 5 nm bins where the transmission exceeds 0.5 within 5 %.

    Measured (median corrected / injected per bin): O2 A 0.997-1.010 (0.998-1.012 without
    the catalogue spectrum, the star's lines masked instead), 0.94 um 0.978-1.027, 1.13 um
    0.979-1.006; uncorrected the same bins are 0.69-1.00 of the truth. Over three other noise
    realisations every bin stayed within 3.2 %.
    """
    wave, flux, result = corrected(arm, with_model)
    truth = at_resolution(arm, wave, science_toa)
    transmission = at_resolution(arm, wave, lambda w: spectra.telluric(w, SCI_AIRMASS))
    for name, (low, high) in BANDS[arm].items():
        in_band = (wave > low) & (wave < high) & (transmission > 0.5)
        index = np.floor((wave[in_band] - low) / 5.0).astype(int)
        ratio = result.flux[in_band] / truth[in_band]
        raw = flux[in_band] / truth[in_band]
        medians = np.array([np.median(ratio[index == i]) for i in np.unique(index) if (index == i).sum() >= 20])
        raw_medians = np.array([np.median(raw[index == i]) for i in np.unique(index) if (index == i).sum() >= 20])
        print(arm, name, len(medians), medians.min().round(3), medians.max().round(3),
              raw_medians.min().round(3), raw_medians.max().round(3))
        assert len(medians) >= 3
        assert np.all(np.abs(medians - 1) < 0.05), (name, medians)
        # the uncorrected spectrum is far off: the test can fail
        assert raw_medians.min() < 0.9
    assert not result.airmass_flag
    assert abs(result.shift) < 0.2


@pytest.mark.skipif(not hasattr(spectra, "hot_star"), reason="the simulator has no hot telluric standard")
@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_telluric_correction_from_a_hot_star_without_catalogue(arm):
    """A B-type telluric standard (the simulator's hot star, V = 9, 300 s): its continuum is a
    smooth fit with its hydrogen and helium lines masked.

    Where the transmission is interpolated across one of the star's lines (flagged in QUAL) the
    correction is unreliable and left out; elsewhere 5 nm bins with transmission above 0.5 are
    within 5 %, but 7 % in the 0.94 um band, whose deep centre leaves few such pixels per bin.
    Measured: O2 A 1.004-1.015, 0.94 um 0.982-1.060 (1.060 in the 935-940 nm bin, 23 pixels),
    1.13 um 0.968-1.005; the flagged stretches (e.g. Pa-epsilon at 954.6 nm) are up to 68 % off.
    """
    _, response = reduced_standard(arm)
    exptime = 300.0
    observed_std = observe(arm, lambda w: spectra.hot_star(w, 9.0), STD_AIRMASS, exptime, seed=61)
    w_std, f_std, e_std = calibrated_merged(arm, observed_std, response, STD_AIRMASS, exptime)
    transmission = tel.measure_transmission(w_std, f_std, e_std, airmass=STD_AIRMASS,
                                            **tel.transmission_options(settings()))
    observed_sci = observe(arm, science_toa, SCI_AIRMASS, SCI_EXPTIME, seed=31)
    wave, flux, error = calibrated_merged(arm, observed_sci, response, SCI_AIRMASS, SCI_EXPTIME)
    result = tel.telluric_correct(wave, flux, error, transmission, airmass=SCI_AIRMASS,
                                  **tel.correction_options(settings()))
    truth = at_resolution(arm, wave, science_toa)
    sci_transmission = at_resolution(arm, wave, lambda w: spectra.telluric(w, SCI_AIRMASS))
    reliable = (result.qual & tel.QUAL_TRANSMISSION_INTERPOLATED) == 0
    assert not reliable.all()
    for name, (low, high) in BANDS[arm].items():
        in_band = (wave > low) & (wave < high) & (sci_transmission > 0.5) & reliable
        index = np.floor((wave[in_band] - low) / 5.0).astype(int)
        ratio = result.flux[in_band] / truth[in_band]
        medians = np.array([np.median(ratio[index == i]) for i in np.unique(index) if (index == i).sum() >= 20])
        print(arm, name, len(medians), medians.min().round(3), medians.max().round(3))
        assert len(medians) >= 3
        assert np.all(np.abs(medians - 1) < (0.07 if name == "H2O 0.94um" else 0.05)), (name, medians)


@pytest.mark.parametrize("arm,order", [("VIS", 4), ("NIR", 18)])
@pytest.mark.parametrize("injected", [0.3, 0.0])
def test_cross_correlation_recovers_a_subpixel_shift(arm, order, injected):
    """A bright telluric standard (900 s) and science target (AB 14): the shift within 0.05 px.

    Measured here: 0.294 and -0.006 px (VIS order 4, O2 A and B bands), 0.300 and 0.011 px (NIR
    order 18, 1.13 um band); over 6 noise realisations the errors stay within 0.016 and 0.011 px. Less favourable: NIR order 20 (0.94 um band)
    within 0.065 px, and orders 22-23, where the galaxy's H-alpha (853 nm at z = 0.3) sits
    between two bands, up to 0.46 px.
    """
    _, response = reduced_standard(arm)
    exptime = 900.0
    o = observe(arm, standard_toa, STD_AIRMASS, exptime, seed=51, orders=[order])[order]
    flux, error = resp.calibrate_orders(response, np.full(o["wave"].size, order), o["wave"], o["counts"], o["error"],
                                        exptime=exptime, airmass=STD_AIRMASS)
    model = fs.catalogue_flux(STANDARD, o["wave"], resolution=spectra.resolution(arm, 1.0))
    transmission = tel.measure_transmission(o["wave"], flux, error, airmass=STD_AIRMASS, model=model,
                                            **tel.transmission_options(settings()))
    science = observe(arm, lambda w: spectra.science_target(w, 14.0), SCI_AIRMASS, SCI_EXPTIME, seed=151,
                      orders=[order], telluric_shift_px=injected)[order]
    scaled, _ = tel.scale_transmission(transmission, science["wave"], SCI_AIRMASS)
    shift = tel.measure_shift(science["counts"], scaled, max_shift=5.0)
    print(arm, order, injected, round(shift, 4))
    assert shift == pytest.approx(injected, abs=0.05)
    # and with the flux unit of a calibrated spectrum
    calibrated = science["counts"] * 1e-19
    assert tel.measure_shift(calibrated, scaled) == pytest.approx(shift, abs=1e-6)


def test_scaling_per_species_hand_computed():
    wave = np.array([600.0, 762.0, 935.0, 1268.0])  # outside, O2 A, H2O, O2
    transmission = tel.Transmission(wave, np.array([1.0, 0.5, 0.5, 0.8]), np.array([0.0, 0.01, 0.01, 0.01]),
                                    np.ones(4), 1.2, np.zeros(4, bool))
    values, errors = tel.scale_transmission(transmission, wave, 1.8, water_scale=2.0)
    assert values == pytest.approx([1.0, 0.5 ** 1.5, 0.5 ** 3.0, 0.8 ** 1.5], rel=1e-12)
    assert errors[1] == pytest.approx(1.5 * 0.5 ** 0.5 * 0.01, rel=1e-12)
    assert errors[2] == pytest.approx(3.0 * 0.5 ** 2.0 * 0.01, rel=1e-12)


def test_low_transmission_is_flagged_not_amplified():
    flux, error, qual = tel.correct([10.0, 10.0, 10.0], [1.0, 1.0, 1.0], [0.5, 0.1, np.nan], [0.01, 0.01, 0.01],
                                    qual=[0, 2, 0], threshold=0.2)
    assert flux.tolist() == [20.0, 10.0, 10.0]
    assert error[0] == pytest.approx(np.hypot(2.0, 20.0 * 0.01 / 0.5))
    assert error[1:].tolist() == [1.0, 1.0]
    assert qual.tolist() == [0, 2 | tel.QUAL_LOW_TRANSMISSION, tel.QUAL_LOW_TRANSMISSION]
    _, _, result = corrected("VIS")
    # the O2 A band's core (transmission < 0.2 at airmass 1.5) is flagged
    assert np.any(result.qual & tel.QUAL_LOW_TRANSMISSION)
    low = result.transmission < 0.2
    assert np.all(result.qual[low] & tel.QUAL_LOW_TRANSMISSION)


def test_airmass_apart_is_flagged(caplog):
    wave = np.linspace(755.0, 775.0, 400)
    t = spectra.telluric(wave, 1.1)
    transmission = tel.Transmission(wave, t, np.full(wave.size, 0.01), np.ones(wave.size), 1.1,
                                    np.zeros(wave.size, bool))
    science = 1e-16 * spectra.telluric(wave, 1.7)
    with caplog.at_level(logging.WARNING, logger="soxspipe.commonutils.telluric"):
        result = tel.telluric_correct(wave, science, science * 0.01, transmission, airmass=1.7)
    assert result.airmass_flag
    assert "differs from the science airmass" in caplog.text
    assert not tel.telluric_correct(wave, science, science * 0.01, transmission, airmass=1.55).airmass_flag


def test_band_list():
    bands = tel.band_mask
    assert bands([762.0, 935.0, 600.0]).tolist() == [True, True, False]
    assert ext.band_mask([762.0, 935.0], species="H2O").tolist() == [False, True]
    names = list(ext.telluric_bands()["name"])
    assert "O2 A" in names and "H2O 1.13um" in names
