"""Legendre polynomials in normalised coordinates and the clipped least-squares fit."""

import numpy as np
import pytest

from soxspipe.commonutils.polynomials import FitError, design_matrix, fit_clipped, restrict, terms


def test_fit_recovers_a_known_polynomial_with_outliers():
    rng = np.random.default_rng(1)
    n = rng.integers(10, 25, 400).astype(float)
    w = rng.uniform(900.0, 2500.0, 400)
    truth = 3.0 + 0.5 * n - 2e-3 * w + 1e-6 * w * w + 0.01 * n * w / 1000
    values = truth + rng.normal(0, 0.01, n.size)
    values[:20] += 5.0
    fit = fit_clipped([n, w], values, (2, 2), sigma=4.0, max_iterations=10)
    clipped = set(np.nonzero(~fit.used)[0])
    assert set(range(20)) <= clipped and len(clipped) <= 23
    assert np.abs(fit.polynomials[0](n, w) - truth).max() < 0.01


def test_normalisation_keeps_the_design_well_conditioned():
    w = np.linspace(1000.0, 2500.0, 200)
    matrix = design_matrix([w], (6,), (1000.0,), (2500.0,))
    assert np.linalg.cond(matrix) < 20
    assert terms((1, 2)).tolist() == [[0, 0], [0, 1], [0, 2], [1, 0], [1, 1], [1, 2]]


def test_restrict_gives_the_slice_of_a_polynomial():
    rng = np.random.default_rng(2)
    n, d = rng.integers(1, 5, 300).astype(float), rng.uniform(0, 4095, 300)
    fit = fit_clipped([n, d], 100 * n + 1e-3 * d * n, (3, 2), max_iterations=1)
    piece = restrict(fit.polynomials[0], 0, 3.0)
    assert piece(np.array([0.0, 4095.0])) == pytest.approx([300.0, 300 + 4.095 * 3], abs=1e-8)


def test_too_few_points_is_an_error():
    with pytest.raises(FitError, match="3 points for 6 coefficients"):
        fit_clipped([np.arange(3.0), np.arange(3.0)], np.arange(3.0), (1, 2))


def test_leverage_sums_to_the_coefficients_and_grows_outside_the_data():
    from soxspipe.commonutils.polynomials import leverage

    x = np.linspace(0.0, 1.0, 50)
    fit = fit_clipped([x], np.sin(3 * x), (3,), lows=(0.0,), highs=(2.0,), max_iterations=1)
    assert fit.leverage.sum() == pytest.approx(4.0)  # trace of the hat matrix = number of coefficients
    matrix = design_matrix([np.array([0.5, 1.2, 1.6])], (3,), (0.0,), (2.0,))
    inside, near, far = leverage(np.vstack([design_matrix([x], (3,), (0.0,), (2.0,)), matrix]),
                                 np.r_[np.ones(50, bool), np.zeros(3, bool)])[50:]
    assert inside < 0.1 < near < far
