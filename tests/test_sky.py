"""Sky subtraction in (wavelength, slit) space on a synthetic tilted, curved order."""

import numpy as np
import pytest

from soxspipe.commonutils.sky import sky_model
from synthetic_orders import SyntheticOrder


def _order(seed):
    return SyntheticOrder(seed=seed).add_sky().add_object(60000.0).add_noise(read_noise=4.0).add_cosmics(30)


def _fit(order, **kw):
    return sky_model(order.flux, order.variance, order.wavelength, order.slit, order.order_map,
                     object_mask=order.object_mask(), **kw)


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_sky_residuals_are_noise(seed):
    order = _order(seed)
    result = _fit(order)
    assert 0.8 < result.chi2[7] < 1.3
    sky_pixels = order.pixels & ~order.object_mask()
    # every cosmic ray on the sky is rejected, almost nothing else is
    assert np.all(result.rejected[order.cosmics & sky_pixels])
    assert (result.rejected & ~order.cosmics).sum() < 0.005 * sky_pixels.sum()
    # under the object too (interpolated across the masked slit range) the model is within 0.5 % of the truth
    under = order.object_mask()
    assert abs(np.median(result.sky[under] / order.sky_true[under] - 1)) < 0.005
    # the model's variance estimate is of the right size (within a factor 2 of the true error),
    # under the object too, whose light is not the sky's noise
    for where in (sky_pixels & ~order.cosmics, under):
        error = (result.sky - order.sky_true)[where]
        assert 0.5 < np.mean(error ** 2) / np.mean(result.variance[where]) < 2.0


def test_slit_illumination_is_needed():
    order = _order(4)
    assert _fit(order, illumination_degree=0).chi2[7] > 1.3
    assert _fit(order, illumination_degree=2).chi2[7] < 1.3


def test_knots_coarser_than_the_lines_fail():
    # knots two pixels apart cannot follow lines 2 pixels wide: the test bench can tell
    assert _fit(_order(5), knot_spacing=2.0).chi2[7] > 1.3


def test_orders_are_modelled_separately():
    order = _order(6)
    two = np.where(order.order_map > 0, np.where(order.wavelength < 605.0, 7, 8), 0)
    result = sky_model(order.flux, order.variance, order.wavelength, order.slit, two,
                       object_mask=order.object_mask())
    assert sorted(result.chi2) == [7, 8]
    assert all(0.8 < c < 1.3 for c in result.chi2.values())
    assert result.sky.dtype == np.float32 and np.all(result.sky[two == 0] == 0)
