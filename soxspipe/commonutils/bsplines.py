"""Cubic B-spline bases with uniform or locally refined knots, and the weighted linear least squares on them.

The sky model (a function of wavelength) and the spatial profile of an object
(a function of slit position) are smooth functions sampled by many scattered
pixels; a B-spline basis turns their fit into a sparse, banded linear least
squares problem solved in one go for all the pixels of an order. No I/O.
"""

import logging

import numpy as np
from scipy import sparse
from scipy.interpolate import BSpline
from scipy.sparse.linalg import spsolve

log = logging.getLogger(__name__)


def uniform_knots(low, high, spacing, degree=3):
    """Full knot vector of a B-spline basis with interior knots evenly spaced over ``[low, high]``.

    Parameters
    ----------
    low, high : float
        The range the basis covers.
    spacing : float
        Largest allowed distance between knots (the spacing is shrunk to divide the range evenly).
    degree : int
        Spline degree.

    Returns
    -------
    numpy.ndarray
        Knots, the end knots repeated ``degree + 1`` times.
    """
    n_intervals = max(int(np.ceil((high - low) / spacing)), 1)
    inner = np.linspace(low, high, n_intervals + 1)
    return np.concatenate([np.full(degree, low), inner, np.full(degree, high)])


def refined_knots(low, high, fine, every, degree=3):
    """Full knot vector whose interior knots are picked from an evenly spaced grid, locally thinned.

    The grid is that of :func:`uniform_knots` with spacing ``fine``; its knot ``i`` is kept when ``i`` is
    a multiple of the ``every`` of either interval it bounds, and at the ends. With ``every`` 1 where
    the function has structure and ``n`` elsewhere, the knots are ``fine`` apart there and ``n``
    times that elsewhere.

    Parameters
    ----------
    low, high : float
        The range the basis covers.
    fine : float
        Largest spacing of the grid.
    every : numpy.ndarray of int
        ``(n_intervals,)`` per interval of the grid, the spacing wanted there, in grid intervals
        (powers of 2 nest: a halved spacing keeps the knots already there).
    degree : int
        Spline degree.

    Returns
    -------
    numpy.ndarray
        Knots, the end knots repeated ``degree + 1`` times.
    """
    grid = uniform_knots(low, high, fine, degree)[degree:-degree]
    every = np.maximum(np.asarray(every, dtype=int), 1)
    if every.size != grid.size - 1:
        raise ValueError(f"every: {every.size} values for {grid.size - 1} intervals")
    local = np.minimum(np.r_[every[:1], every], np.r_[every, every[-1:]])
    keep = np.arange(grid.size) % local == 0
    keep[[0, -1]] = True
    return np.concatenate([np.full(degree, low), grid[keep], np.full(degree, high)])


def basis(x, knots, degree=3):
    """Sparse design matrix of the B-spline basis at ``x`` (values outside the knots are clipped onto them).

    Returns
    -------
    scipy.sparse.csr_array
        ``(len(x), len(knots) - degree - 1)``.
    """
    x = np.clip(np.asarray(x, dtype=float).ravel(), knots[degree], knots[-degree - 1])
    return sparse.csr_array(BSpline.design_matrix(x, knots, degree))


def solve_weighted(matrix, values, weights, *, ridge=1e-9):
    """Coefficients minimising ``sum(weights * (values - matrix @ c) ** 2)``.

    A small ridge, relative to the mean diagonal of the normal matrix, keeps
    basis functions that no point constrains (knot intervals emptied by a mask)
    at zero instead of making the system singular.

    Parameters
    ----------
    matrix : scipy.sparse array or numpy.ndarray
        ``(n_points, n_coefficients)``.
    values, weights : numpy.ndarray
        ``(n_points,)``; a zero weight removes a point.
    ridge : float
        Relative regularisation.

    Returns
    -------
    numpy.ndarray
        ``(n_coefficients,)``.
    """
    matrix = sparse.csr_array(matrix)
    weighted = matrix.multiply(np.asarray(weights, dtype=float)[:, None]).tocsr()
    normal = (matrix.T @ weighted).tocsc()
    diagonal = normal.diagonal()
    scale = float(diagonal[diagonal > 0].mean()) if np.any(diagonal > 0) else 1.0
    normal = normal + sparse.identity(normal.shape[0], format="csc") * (ridge * scale)
    return np.asarray(spsolve(normal, weighted.T @ np.asarray(values, dtype=float)))
