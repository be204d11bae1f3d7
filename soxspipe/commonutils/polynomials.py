"""Multivariate Legendre polynomials in normalised coordinates, fitted by linear least squares.

A :class:`Polynomial` is a tensor-product Legendre series in any number of
variables. Each variable is mapped linearly from its stored range ``[low, high]``
onto ``[-1, 1]`` before the basis is evaluated, so the design matrix stays well
conditioned whatever the units (order numbers, nm, arcsec, pixels). The
normalisation is part of the polynomial and travels with its coefficients.

:func:`fit_clipped` fits one or several quantities sharing the same
variables (e.g. detector x and y as functions of order and wavelength) with
``numpy.linalg.lstsq`` and iterative sigma clipping: a point is rejected when
any of its residuals deviates by more than ``sigma`` robust standard deviations.
"""

import itertools
import logging
from dataclasses import dataclass, field

import numpy as np
from numpy.polynomial import legendre
from scipy.linalg import cho_factor, cho_solve, solve_triangular
from scipy.linalg.lapack import dpocon

log = logging.getLogger(__name__)


class FitError(ValueError):
    """A fit is impossible: too few points for its coefficients, or nothing left after clipping."""


def normalise(values, low, high):
    """Map ``values`` linearly from ``[low, high]`` onto ``[-1, 1]`` (a zero-width range maps to 0)."""
    values = np.asarray(values, dtype=float)
    if high == low:
        return np.zeros_like(values)
    return (2.0 * values - (high + low)) / (high - low)


def terms(degrees):
    """Exponent tuples of the tensor-product basis, in the order of the coefficient vector.

    Returns
    -------
    numpy.ndarray
        Integer array ``(n_coefficients, n_variables)``.
    """
    return np.array(list(itertools.product(*(range(d + 1) for d in degrees))), dtype=int).reshape(-1, len(degrees))


def design_matrix(variables, degrees, lows, highs):
    """Design matrix of the tensor-product Legendre basis.

    Parameters
    ----------
    variables : sequence of array_like
        One array per variable, broadcast against each other.
    degrees : sequence of int
        Highest degree per variable.
    lows, highs : sequence of float
        Normalisation range per variable.

    Returns
    -------
    numpy.ndarray
        ``(n_points, n_coefficients)``, columns ordered as :func:`terms`.
    """
    arrays = np.broadcast_arrays(*(np.asarray(v, dtype=float) for v in variables))
    vanders = [legendre.legvander(normalise(a.ravel(), lo, hi), d)
               for a, d, lo, hi in zip(arrays, degrees, lows, highs)]
    matrix = np.ones((arrays[0].size, 1))
    for v in vanders:
        matrix = (matrix[:, :, None] * v[:, None, :]).reshape(matrix.shape[0], -1)
    return matrix


@dataclass
class Polynomial:
    """A tensor-product Legendre series with its normalisation.

    Attributes
    ----------
    degrees : tuple of int
        Highest degree per variable.
    lows, highs : tuple of float
        The range of each variable mapped onto ``[-1, 1]``.
    coeffs : numpy.ndarray
        One coefficient per row of :func:`terms` ``(degrees)``.
    """

    degrees: tuple
    lows: tuple
    highs: tuple
    coeffs: np.ndarray

    @property
    def n_coefficients(self):
        """Number of coefficients."""
        return int(np.prod([d + 1 for d in self.degrees]))

    def terms(self):
        """Exponent tuples of the coefficients (see :func:`terms`)."""
        return terms(self.degrees)

    def __call__(self, *variables):
        """Evaluate at ``variables`` (arrays broadcast against each other); returns an array of their shape."""
        shape = np.broadcast_shapes(*(np.shape(v) for v in variables))
        matrix = design_matrix(variables, self.degrees, self.lows, self.highs)
        return (matrix @ self.coeffs).reshape(shape)


@dataclass
class ClippedFit:
    """Result of :func:`fit_clipped`.

    Attributes
    ----------
    polynomials : list of Polynomial
        One per fitted quantity.
    used : numpy.ndarray of bool
        Points kept by the clipping.
    residuals : numpy.ndarray
        ``values - fit`` for every point, ``(n_points, n_quantities)``.
    iterations : int
        Clipping iterations run.
    """

    polynomials: list
    used: np.ndarray
    residuals: np.ndarray
    iterations: int
    matrix: np.ndarray = field(default=None, repr=False)

    @property
    def leverage(self):
        """Every point's leverage against the final fit (see :func:`leverage`), computed when asked."""
        return leverage(self.matrix, self.used)

    @property
    def n_clipped(self):
        """Number of points rejected by the clipping."""
        return int((~self.used).sum())


def solve_least_squares(matrix, values, max_condition=1e10):
    """Least-squares coefficients of ``matrix @ c = values``.

    The normal equations, solved by Cholesky, cost a fraction of an SVD for the
    tall design matrices of a Legendre basis, whose columns are nearly orthogonal;
    a system whose normal matrix has a condition number above ``max_condition`` falls
    back on ``numpy.linalg.lstsq``.
    """
    coeffs = _cholesky_solve(matrix.T @ matrix, matrix.T @ values, max_condition)
    return np.linalg.lstsq(matrix, values, rcond=None)[0] if coeffs is None else coeffs


def _cholesky_solve(normal, rhs, max_condition):
    """Solve ``normal @ c = rhs`` by Cholesky; None where the condition number (LAPACK's estimate
    from the factor, far cheaper than an SVD) exceeds ``max_condition``."""
    try:
        factor = cho_factor(normal, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    rcond, info = dpocon(factor[0], np.abs(normal).sum(axis=0).max(), uplo="L" if factor[1] else "U")
    if info != 0 or not rcond > 1.0 / max_condition:
        return None
    return cho_solve(factor, rhs, check_finite=False)


def _normal_equations(matrix, values, keep, fitted=None, normal=None, rhs=None):
    """``A^T A`` and ``A^T v`` over the rows ``keep``; updated from those over the rows ``fitted`` when cheaper.

    Clipping changes few points from one iteration to the next: adding and removing
    their rows costs a fraction of summing all the rows again.
    """
    if fitted is not None:
        added, removed = keep & ~fitted, fitted & ~keep
        if added.sum() + removed.sum() < keep.sum() // 2:
            a, r = matrix[added], matrix[removed]
            return normal + a.T @ a - r.T @ r, rhs + a.T @ values[added] - r.T @ values[removed]
    rows = matrix[keep]
    return rows.T @ rows, rows.T @ values[keep]


def leverage(matrix, keep):
    """Leverage of every row of ``matrix`` against the fit to the rows ``keep``: ``a (A^T A)^-1 a^T``.

    For a fitted row it is the fraction of its own value the fit reproduces; for
    any row, ``sigma * sqrt(leverage)`` is the uncertainty of the fit's prediction
    there, which grows fast where the fit extrapolates.
    """
    fitted = matrix[keep]
    normal = fitted.T @ fitted
    try:
        # a (L L^T)^-1 a^T = |L^-1 a^T|^2: one triangular solve
        lower = cho_factor(normal, lower=True, check_finite=False)[0]
        return (solve_triangular(lower, matrix.T, lower=True, check_finite=False) ** 2).sum(axis=0)
    except np.linalg.LinAlgError:
        inverse_rows = np.linalg.lstsq(normal, matrix.T, rcond=None)[0].T
        return np.einsum("ij,ij->i", matrix, inverse_rows)


def robust_sigma(values):
    """Standard deviation estimated from the median absolute deviation."""
    values = np.asarray(values, dtype=float)
    if values.size == 0:
        return np.nan
    return 1.4826 * float(np.median(np.abs(values - np.median(values))))


def fit_clipped(variables, values, degrees, *, lows=None, highs=None, sigma=3.0, max_iterations=5,
                min_sigma=0.0, used=None):
    """Fit a Legendre polynomial to one or several quantities, with iterative sigma clipping.

    Parameters
    ----------
    variables : sequence of array_like
        One 1D array per variable, all of length ``n``.
    values : array_like
        ``(n,)`` or ``(n, k)``: the quantities to fit.
    degrees : sequence of int
        Highest degree per variable.
    lows, highs : sequence of float, optional
        Normalisation ranges (default: each variable's minimum and maximum).
    sigma : float
        Clipping threshold in robust standard deviations (per quantity).
    max_iterations : int
        Maximum number of fit-and-clip iterations.
    min_sigma : float
        Floor of the robust standard deviation, so that a nearly perfect fit does
        not clip points at noise level.
    used : array_like of bool, optional
        Points allowed in the fit (default all).

    Returns
    -------
    ClippedFit

    Raises
    ------
    FitError
        Fewer usable points than coefficients.
    """
    variables = [np.asarray(v, dtype=float).ravel() for v in variables]
    values = np.asarray(values, dtype=float)
    values = values.reshape(values.shape[0], -1)
    lows = tuple(float(np.min(v)) if v.size else 0.0 for v in variables) if lows is None else tuple(map(float, lows))
    highs = tuple(float(np.max(v)) if v.size else 0.0 for v in variables) if highs is None else tuple(map(float, highs))
    degrees = tuple(int(d) for d in degrees)
    matrix = design_matrix(variables, degrees, lows, highs)
    n_coeffs = matrix.shape[1]
    allowed = np.ones(values.shape[0], bool) if used is None else np.asarray(used, bool).copy()
    allowed &= np.all(np.isfinite(values), axis=1)
    keep = allowed.copy()
    iteration = 0
    normal = rhs = fitted = None
    while True:
        iteration += 1
        if keep.sum() < n_coeffs:
            raise FitError(f"{int(keep.sum())} points for {n_coeffs} coefficients (degrees {degrees})")
        normal, rhs = _normal_equations(matrix, values, keep, fitted, normal, rhs)
        fitted = keep
        coeffs = _cholesky_solve(normal, rhs, max_condition=1e10)
        if coeffs is None:
            coeffs = np.linalg.lstsq(matrix[keep], values[keep], rcond=None)[0]
        residuals = values - matrix @ coeffs
        if iteration >= max_iterations:
            break
        scale = np.array([max(robust_sigma(residuals[keep, k]), min_sigma) for k in range(values.shape[1])])
        # points clipped against an earlier, worse fit are readmitted when they agree with this one
        new = allowed & np.all(np.abs(np.where(allowed[:, None], residuals, 0.0)) <= sigma * scale, axis=1)
        if np.array_equal(new, keep):
            break
        keep = new
    polys = [Polynomial(degrees, lows, highs, coeffs[:, k].copy()) for k in range(values.shape[1])]
    return ClippedFit(polys, keep, residuals, iteration, matrix)


def restrict(poly, index, value):
    """Fix variable ``index`` of ``poly`` at ``value``; return the polynomial in the remaining variables.

    E.g. the per-order trace ``c(d)`` of a global fit ``c(order, d)``:
    ``restrict(global_fit, 0, order)``.
    """
    basis = legendre.legvander(normalise([value], poly.lows[index], poly.highs[index]), poly.degrees[index])[0]
    shape = tuple(d + 1 for d in poly.degrees)
    coeffs = np.tensordot(poly.coeffs.reshape(shape), basis, axes=([index], [0]))
    keep = [i for i in range(len(poly.degrees)) if i != index]
    return Polynomial(tuple(poly.degrees[i] for i in keep), tuple(poly.lows[i] for i in keep),
                      tuple(poly.highs[i] for i in keep), coeffs.ravel())
