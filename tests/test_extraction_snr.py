"""The optimal extraction of a faint object against the truth: bias, S/N against the optimum, honest errors.

Synthetic orders (``synthetic_orders``) of a faint object, sky- and read-noise limited, in many
noise realisations: the spectrum extracted is compared with the injected one bin by bin. The
optimum is the S/N of a perfect optimal extraction, ``sqrt(sum(object^2 / variance))`` over the
pixels of a bin, from the noiseless object and the true variance (object + sky + read noise^2).
"""

import numpy as np
import pytest

from soxspipe.commonutils.extraction import BoxcarExtraction, OptimalExtraction
from soxspipe.commonutils.sky import sky_model
from synthetic_orders import SyntheticOrder
from test_extraction import _block_sums, _optimal_snr

READ_NOISE = 4.0
#: the recipes' window (1.5 FWHM) for the synthetic object's 0.94 arcsec FWHM, optimal and boxcar alike
HALF_WIDTH = 1.4


def _realisations(amplitude, seeds, *, fitted_sky=False, half_width=HALF_WIDTH):
    """Per realisation: the optimal and boxcar spectra's deviations from the truth and the optimum, inner bins."""
    out = {key: [] for key in ("ratio", "deviation", "pull", "block_opt", "block_box", "order_mean")}
    for seed in seeds:
        order = SyntheticOrder(seed=seed, ny=800).add_sky().add_object(amplitude).add_noise(read_noise=READ_NOISE)
        if fitted_sky:
            model = sky_model(order.flux, order.variance, order.wavelength, order.slit, order.order_map,
                              object_mask=order.object_mask())
            sky, sky_variance = model.sky, model.variance
        else:
            sky, sky_variance = order.sky_true, None
        optimal = OptimalExtraction(order.trace, half_width, read_noise=READ_NOISE)(
            order.flux, order.variance, order.wavelength, order.slit, order.pixels, sky=sky, sky_variance=sky_variance)
        boxcar = BoxcarExtraction(order.trace, HALF_WIDTH, optimal.edges)(
            order.flux, order.variance, order.wavelength, order.slit, order.pixels, sky=sky, sky_variance=sky_variance)
        truth = order.object_density(optimal.wavelength)
        full = np.flatnonzero(optimal.n_pixels > 10)
        full = full[(full > full[0]) & (full < full[-1])]  # the boxcar shares pixels with the neighbouring bins
        best = _optimal_snr(order, optimal.edges)[full]
        out["ratio"].append(optimal.flux[full] / truth[full])
        out["order_mean"].append([np.mean(out["ratio"][-1])])
        out["deviation"].append((optimal.flux[full] - truth[full]) / truth[full] * best)
        out["pull"].append((optimal.flux[full] - truth[full]) / optimal.error[full])
        for spectrum, key in ((optimal, "block_opt"), (boxcar, "block_box")):
            out[key].append(_block_sums(spectrum.flux[full] - truth[full], 10) / _block_sums(truth[full], 10))
    return {key: np.concatenate(values) for key, values in out.items()}


@pytest.fixture(scope="module")
def faint():
    """S/N ~2 per bin (the optimum's median), the true sky removed: 24 realisations of 780 bins."""
    return _realisations(1500.0, range(100, 124))


def test_faint_object_is_not_biased():
    """extracted / injected, averaged over each order then over the orders, within 2 %, in a window of
    +-2 arcsec (5 sigma of the profile: wide wings of noise).

    The mean of one order scatters by 3 % (the normalisation of a profile fitted to the same noisy
    pixels carries the noise of its whole window, as a boxcar of that width does): the standard error
    of the mean of 24 is 0.6 %. Measured 0.990; a profile clipped at zero before its normalisation
    read 1.033 here.
    """
    means = _realisations(1500.0, range(300, 324), half_width=2.0)["order_mean"]
    assert abs(np.mean(means) - 1) < 0.02, (np.mean(means), np.std(means))


def test_faint_object_reaches_the_optimum(faint):
    """Measured S/N (the scatter of the deviations from the truth, in units of the optimum's noise) >= 95 %
    of the optimum, the errors within 10 % of that scatter, and the boxcar's scatter (on sums of 10 bins)
    above the optimal's. Measured: 1.01 of the optimum, scatter / ERR 1.00, boxcar / optimal scatter 1.34.
    """
    assert 1 / np.std(faint["deviation"]) >= 0.95
    assert abs(np.std(faint["pull"]) - 1) < 0.1, np.std(faint["pull"])
    assert np.std(faint["block_box"]) > 1.1 * np.std(faint["block_opt"])


def test_errors_count_the_sky_models_noise():
    """With a sky model fitted (Kelson) instead of the true sky, its noise, correlated between the pixels
    of a bin, is part of the errors: their scatter (``(FLUX - truth) / ERR``) within 10 % of 1. Measured
    0.97 (the sky model's errors as independent: 1.09; as common to the bin: 0.91); the S/N is then 0.92
    of the optimum from the truth, which has no sky noise.
    """
    result = _realisations(1500.0, range(200, 212), fitted_sky=True)
    assert abs(np.std(result["pull"]) - 1) < 0.1, np.std(result["pull"])
