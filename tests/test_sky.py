"""Sky subtraction in (wavelength, slit) space on a synthetic tilted, curved order."""

import numpy as np
import pytest

from soxspipe.commonutils.bsplines import refined_knots, uniform_knots
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


def test_refined_knots_nest_on_the_fine_grid():
    # 20 intervals of 0.5 over [0, 10]; every 4th knot (2.0 apart) except around intervals 7-8 (3.5-4.5)
    every = np.full(20, 4)
    every[7:9] = 1
    knots = refined_knots(0.0, 10.0, 0.5, every)
    assert np.allclose(knots[3:-3], [0, 2, 3.5, 4, 4.5, 6, 8, 10])
    assert np.all(knots[:4] == 0) and np.all(knots[-4:] == 10)
    assert np.allclose(refined_knots(0.0, 10.0, 0.5, np.ones(20, int)), uniform_knots(0.0, 10.0, 0.5))


def _smooth_and_lines(order):
    """Sky pixels (no cosmic ray) more than 5 pixels from every sky line of the synthetic order, and within 1.5."""
    lines = np.array([601.0, 602.3, 603.1, 604.6, 606.2, 607.0, 608.8, 609.5])
    distance = np.min(np.abs(order.wavelength[..., None] - lines), axis=-1) / order.dispersion
    sky_pixels = order.pixels & ~order.object_mask() & ~order.cosmics
    return sky_pixels & (distance > 5), sky_pixels & (distance < 1.5)


@pytest.mark.parametrize("seed", [7, 8])
def test_knots_refined_only_where_the_sky_has_structure(seed):
    """Knots 2 px apart, halved to 0.5 px where the residuals show structure, against 0.5 px everywhere.

    Where the sky is smooth (more than 5 px from a line) the model's error against the noiseless sky has
    about half the variance (measured 0.45-0.55 of the uniform knots', seeds 1-10: the knots within a few
    pixels of a line are refined too); at the lines it stays that of the dense knots (measured 1.01-1.10);
    the residuals stay noise, and the model's variance estimate follows its error in both regions
    (measured 0.8-1.3 where smooth, 0.8-1.6 at the lines).
    """
    order = _order(seed)
    uniform = _fit(order)
    refined = _fit(order, smooth_knot_spacing=2.0)
    assert 0.8 < refined.chi2[7] < 1.3
    smooth, near_lines = _smooth_and_lines(order)
    errors = [np.mean((r.sky - order.sky_true)[smooth] ** 2) for r in (uniform, refined)]
    assert errors[1] < 0.65 * errors[0], errors
    line_errors = [np.mean((r.sky - order.sky_true)[near_lines] ** 2) for r in (uniform, refined)]
    assert line_errors[1] < 1.3 * line_errors[0], line_errors
    under = order.object_mask()
    assert abs(np.median(refined.sky[under] / order.sky_true[under] - 1)) < 0.005
    for where in (smooth, near_lines):
        error = (refined.sky - order.sky_true)[where]
        assert 0.5 < np.mean(error ** 2) / np.mean(refined.variance[where]) < 2.0
