"""The dispersion core on a small synthetic arc: shift, matching, centroids, clipped fit, bad input."""

import numpy as np
import pytest

from soxspipe.commonutils.dispersion import (DispersionSolution, SolutionError, SolveSettings, fit_solution,
                                             solve_dispersion)
from test_lines import spots


def true_xy(order, wavelength):
    """Three tilted orders along y: x = 40 + 60 (n - 1) + 0.02 y, y quadratic in wavelength."""
    y = 20 + 3.6 * (wavelength - 500) + 2e-3 * (wavelength - 550) ** 2 * order
    return 40 + 60 * (order - 1) + 0.02 * y, y


@pytest.fixture(scope="module")
def arc():
    rng = np.random.default_rng(7)
    order = np.repeat([1, 2, 3], 30)
    wavelength = np.concatenate([np.sort(500 + rng.permutation(np.arange(3, 98, 3.0))[:30] + rng.uniform(-0.3, 0.3, 30))
                                 for _ in range(3)])
    x, y = true_xy(order, wavelength)
    shift = (3.3, -2.2)
    image = spots((400, 200), x + shift[0], y + shift[1], np.full(x.size, 2e4), 1.0, 0.8) + 10.0
    variance = image + 25.0
    image = image + rng.normal(0, np.sqrt(variance))
    prior, _ = fit_solution(order, wavelength, 0.0, x, y, (2, 2, 0), wave_variable="wavelength", sigma=5,
                            max_iterations=1)
    return order, wavelength, x + shift[0], y + shift[1], image - 10.0, variance, prior


def settings(**kw):
    values = dict(degrees=(2, 2, 0), wave_variable="wavelength", dispersion_axis="y", first_passes=((6.0, (2, 1, 0)),),
                  max_shift=10.0, min_lines_per_order=5, segment_length=1000.0)
    values.update(kw)
    return SolveSettings(**values)


def test_solution_found_through_a_shift(arc):
    order, wavelength, x, y, image, variance, prior = arc
    solution, lines, shift = solve_dispersion(image, variance, np.zeros(image.shape, bool), order, wavelength, prior,
                                              settings())
    assert (shift.dx, shift.dy) == pytest.approx((3.3, -2.2), abs=0.2)
    assert lines.used.mean() > 0.95
    fx, fy = solution.xy(order, wavelength)
    # noise-limited: a line of 2e4 e is centred to ~0.007 px; the fit of 90 lines is better still
    assert np.abs(fx - x).max() < 0.02 and np.abs(fy - y).max() < 0.02
    # the coefficients survive the table round trip
    again = DispersionSolution.from_columns(solution.to_columns())
    assert np.allclose(again.xy(order, wavelength), (fx, fy))


def test_blank_frame_and_too_few_lines_fail(arc):
    order, wavelength, x, y, image, variance, prior = arc
    rng = np.random.default_rng(1)
    blank = rng.normal(0, 5, image.shape)
    with pytest.raises(SolutionError, match="match the frame's peaks|no line stands"):
        solve_dispersion(blank, np.full(image.shape, 25.0), np.zeros(image.shape, bool), order, wavelength, prior,
                         settings())
    with pytest.raises(SolutionError, match="too few good lines for the fit: .* points for 123 coefficients"):
        solve_dispersion(image, variance, np.zeros(image.shape, bool), order, wavelength, prior,
                         settings(degrees=(2, 40, 0)))
