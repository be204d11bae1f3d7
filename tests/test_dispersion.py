"""The dispersion core on a small synthetic arc: shift, matching, centroids, clipped fit, bad input."""

import numpy as np
import pytest

from soxspipe.commonutils.dispersion import (DispersionSolution, LineMeasurements, SolutionError, SolveSettings,
                                             extend_along_slit, fit_solution, solve_dispersion)
from soxspipe.commonutils.lines import centroids
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


def slit_images(wavelength, slit):
    """One order along y; the slit's image tilts more along the order (0.5 to 1.05 px per arcsec) and curves."""
    y = 20 + 2.4 * (wavelength - 500) + (0.5 + 0.01 * (wavelength - 500)) * slit
    return 70 + 7.0 * slit + 0.02 * (wavelength - 500) + 0.05 * slit ** 2, y


def test_missing_pinhole_images_are_found_along_the_slit():
    """Lines 500-525 nm measured at all 9 pinholes, 530-555 nm at the central 3 only (as beyond a solution's
    reach): the outer images are predicted from the measured ones and found; the 555 nm line has no images
    at |s| >= 3 arcsec on the frame, and they stay not found."""
    positions = np.arange(-4.0, 5.0)
    wavelength, slit = (a.ravel() for a in np.meshgrid(np.arange(500.0, 560.0, 5.0), positions, indexing="ij"))
    x, y = slit_images(wavelength, slit)
    on_frame = ~((wavelength == 555) & (np.abs(slit) >= 3))
    rng = np.random.default_rng(5)
    image = spots((320, 140), x[on_frame], y[on_frame], np.full(on_frame.sum(), 3e4), 1.0, 0.9)
    variance = image + 25.0
    image = image + rng.normal(0, np.sqrt(variance))
    s = SolveSettings(degrees=(0, 2, 0), wave_variable="wavelength", half_width=(3, 3), slit_passes=8)
    known = (wavelength < 530) | (np.abs(slit) <= 1)
    c = centroids(image, x[known], y[known], half_width=s.half_width, variance=variance)
    n = x.size
    values = {k: np.full(n, np.nan) for k in ("x", "y", "flux", "snr", "sigma_x", "sigma_y", "core_x", "core_y")}
    for k, v in (("x", c.x), ("y", c.y), ("flux", c.flux), ("snr", c.flux / c.flux_error), ("sigma_x", c.sigma_x),
                 ("sigma_y", c.sigma_y), ("core_x", c.core_sigma_x), ("core_y", c.core_sigma_y)):
        values[k][known] = v
    reason = np.where(known, "", "not found")
    before = values["x"].copy()
    lines = LineMeasurements(np.ones(n, int), wavelength, x, y, values["x"], values["y"], values["flux"],
                             values["snr"], values["sigma_x"], values["sigma_y"], reason.astype("<U16"),
                             core_sigma_x=values["core_x"], core_sigma_y=values["core_y"], slit=slit)
    added = extend_along_slit(image, variance, np.zeros(image.shape, bool), lines, positions, s)
    assert added == int((~known & on_frame).sum()) == 32
    assert np.array_equal(lines.used, on_frame)
    # noise-limited centroids (3e4 e: ~0.006 px each; measured: at most 0.022 px), the others unchanged
    assert np.abs(lines.x[on_frame] - x[on_frame]).max() < 0.03
    assert np.abs(lines.y[on_frame] - y[on_frame]).max() < 0.03
    assert np.array_equal(lines.x[known], before[known])
