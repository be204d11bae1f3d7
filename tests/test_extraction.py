"""Object finding, tracing, boxcar and optimal extraction on a synthetic tilted, curved order."""

import numpy as np
import pytest

from soxspipe.commonutils.extraction import (BoxcarExtraction, OptimalExtraction, find_object, grouped_median,
                                             trace_object)
from soxspipe.commonutils.sky import sky_model
from synthetic_orders import SyntheticOrder

READ_NOISE = 4.0


def _order(seed, amplitude, cosmics=30, **kw):
    order = SyntheticOrder(seed=seed, **kw).add_sky().add_object(amplitude).add_noise(read_noise=READ_NOISE)
    return order.add_cosmics(cosmics) if cosmics else order


def _sky(order):
    return sky_model(order.flux, order.variance, order.wavelength, order.slit, order.order_map,
                     object_mask=order.object_mask())


def _extract(extraction, order, sky, sky_variance=None):
    return extraction(order.flux, order.variance, order.wavelength, order.slit, order.pixels, sky=sky,
                      sky_variance=sky_variance)


def _optimal_snr(order, edges):
    """The S/N of a perfect optimal extraction, per bin: sqrt(sum(object^2 / variance)) from the truth."""
    index = np.searchsorted(edges, order.wavelength, side="right") - 1
    use = order.pixels & (index >= 0) & (index < edges.size - 1)
    return np.sqrt(np.bincount(index[use], (order.object_true ** 2 / order.true_variance)[use],
                               minlength=edges.size - 1))


def test_grouped_median_matches_numpy():
    rng = np.random.default_rng(3)
    groups = rng.integers(0, 7, 200)
    groups[groups == 4] = 5  # an empty group
    values = rng.normal(size=200)
    got = grouped_median(groups, values, 8)
    for g in range(8):
        expected = np.median(values[groups == g]) if np.any(groups == g) else np.nan
        np.testing.assert_allclose(got[g], expected, equal_nan=True)


def test_find_object_position_and_width():
    order = _order(1, 60000.0, object_drift=0.0)
    found = find_object(order.flux, order.wavelength, order.slit, order.pixels, sky=_sky(order).sky)
    assert abs(found.slit - order.object_slit) < 0.03
    assert abs(found.fwhm / (2.3548 * order.object_sigma) - 1) < 0.1


def test_find_object_without_sky_model():
    order = _order(2, 60000.0)
    found = find_object(order.flux, order.wavelength, order.slit, order.pixels)
    assert abs(found.slit - order.object_slit) < 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_trace_follows_the_drift(seed):
    order = _order(seed, 60000.0)
    sky = _sky(order)
    found = find_object(order.flux, order.wavelength, order.slit, order.pixels, sky=sky.sky)
    trace = trace_object(order.flux, order.wavelength, order.slit, order.pixels, position=found.slit,
                         half_width=1.5 * found.fwhm, sky=sky.sky, bad=sky.rejected)
    waves = np.linspace(*order.wave_range, 50)
    # 0.3 arcsec of drift followed to better than 0.05 arcsec (a fifth of a pixel) rms
    assert np.sqrt(np.mean((trace(waves) - order.trace(waves)) ** 2)) < 0.05


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_bright_object_flux_and_cosmics(seed):
    order = _order(seed, 60000.0)
    sky = _sky(order)
    spectrum = _extract(OptimalExtraction(order.trace, 2.0, read_noise=READ_NOISE), order, sky.sky, sky.variance)
    truth = order.object_density(spectrum.wavelength)
    full = spectrum.n_pixels > 10  # the partly filled bins at the order's ends are left out
    assert abs(np.median(spectrum.flux[full] / truth[full] - 1)) < 0.02
    # every cosmic ray within the extraction window is rejected, and nothing makes a bin deviate by 5 sigma
    window = order.pixels & (np.abs(order.slit - order.trace(order.wavelength)) <= 2.0)
    assert np.all(spectrum.rejected[order.cosmics & window])
    assert spectrum.rejected.sum() - (order.cosmics & window).sum() <= 5
    assert np.all(np.abs(spectrum.flux[full] - truth[full]) < 5 * spectrum.error[full])
    # the boxcar, with the same cosmics and no rejection, is hit by them
    boxcar = _extract(BoxcarExtraction(order.trace, 1.2), order, sky.sky, sky.variance)
    assert np.max(np.abs(boxcar.flux[full] - truth[full]) / boxcar.error[full]) > 10


def _block_sums(values, block):
    n = values.size // block * block
    return values[:n].reshape(-1, block).sum(axis=1)


def test_faint_object_optimal_signal_to_noise():
    """With the true sky, on 8 realisations of a faint object (S/N ~ 6 per bin)."""
    ratio_reported, deviation, block_opt, block_box = [], [], [], []
    for seed in range(11, 19):
        order = _order(seed, 6000.0, cosmics=0)
        optimal = _extract(OptimalExtraction(order.trace, 2.0, read_noise=READ_NOISE), order, order.sky_true)
        boxcar = _extract(BoxcarExtraction(order.trace, 1.2, optimal.edges), order, order.sky_true)
        truth = order.object_density(optimal.wavelength)
        full = np.flatnonzero(optimal.n_pixels > 10)
        full = full[(full > full[0]) & (full < full[-1])]  # the boxcar shares pixels with the neighbouring bins
        best = _optimal_snr(order, optimal.edges)[full]
        ratio_reported.append(optimal.snr[full] / best)
        deviation.append((optimal.flux[full] - truth[full]) / truth[full] * best)
        # the boxcar's bins share pixels, so its noise is compared with the optimal one on sums of 10 bins
        for spectrum, blocks in ((optimal, block_opt), (boxcar, block_box)):
            blocks.append(_block_sums(spectrum.flux[full] - truth[full], 10) / _block_sums(truth[full], 10))
    # the reported S/N reaches the optimum computed from the truth (whole pixels per bin, as the extraction)
    assert np.median(np.concatenate(ratio_reported)) > 0.95
    # and so does the measured one (sampling error of this estimate ~2 %)
    assert 1 / np.sqrt(np.mean(np.concatenate(deviation) ** 2)) > 0.9
    # the optimal extraction beats the boxcar by more than 10 % in S/N
    assert np.std(np.concatenate(block_box)) > 1.1 * np.std(np.concatenate(block_opt))
