"""Flux-conserving resampling: 1D rebinning, order merging, 2D rectification, and the pixel geometry they need.

Spectra are piecewise-constant flux densities on bins given by their edges.
:func:`rebin` integrates that density over the new bins exactly (the overlap of
every old and new bin), so the total flux is conserved and the variances are
propagated with the squared overlaps (the covariance between neighbouring new
bins is not kept). :func:`merge_orders` puts every order on one grid and takes
the inverse-variance weighted mean where orders overlap.

:func:`rectify_order` resamples an order's pixels onto a (wavelength, slit)
grid by sub-pixel drizzling: each pixel is cut into ``n x n`` sub-pixels whose
(wavelength, slit) come from the local gradients of the maps, and each
sub-pixel drops its share of the pixel's counts into the output cell that
contains it. The counts are conserved exactly; the fraction of every cell that
the sub-pixels covered is returned with them, so that a surface density is
``flux / (coverage * cell area)``. No I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .polynomials import fit_clipped

log = logging.getLogger(__name__)


def pixel_step(values, pixels):
    """Median change of a map (wavelength, slit) from one pixel to the next, along its steepest direction.

    Parameters
    ----------
    values : numpy.ndarray
        2D map (e.g. the wavelength of every pixel).
    pixels : numpy.ndarray of bool
        The pixels (one order) over which the median is taken.

    Returns
    -------
    float
    """
    gy, gx = np.gradient(np.asarray(values, dtype=float))
    step = np.hypot(gx, gy)[pixels]
    return float(np.median(step[np.isfinite(step)]))


def _map_gradients(wavelength, slit):
    wy, wx = np.gradient(np.asarray(wavelength, dtype=float))
    sy, sx = np.gradient(np.asarray(slit, dtype=float))
    return wx, wy, sx, sy


def pixel_area(wavelength, slit, pixels, *, degree=2):
    """Area of every pixel of an order in (wavelength, slit) space: ``|d(lambda, s) / d(x, y)|``.

    The Jacobian from the maps' finite differences is wrong on the order's
    border (where the neighbour belongs to another order or to nothing), so a
    clipped polynomial in wavelength is fitted to it and evaluated instead.

    Parameters
    ----------
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec).
    pixels : numpy.ndarray of bool
        The pixels of one order.
    degree : int
        Degree of the polynomial in wavelength.

    Returns
    -------
    numpy.ndarray
        Area (nm arcsec) of the pixels ``pixels`` (in their ``numpy.nonzero`` order), float64.
    """
    wx, wy, sx, sy = _map_gradients(wavelength, slit)
    jacobian = np.abs(wy * sx - wx * sy)[pixels]
    wave = np.asarray(wavelength, dtype=float)[pixels]
    finite = np.isfinite(jacobian) & np.isfinite(wave)
    # the floor keeps an exactly linear map (a constant area) from clipping its rounding noise
    fit = fit_clipped([wave], jacobian, [degree], used=finite, sigma=3.0,
                      min_sigma=1e-6 * float(np.median(jacobian[finite])))
    return fit.polynomials[0](wave)


def linear_edges(low, high, step):
    """Bin edges from ``low`` to (at least) ``high`` by ``step``."""
    n = max(int(np.ceil((high - low) / step - 1e-9)), 1)
    return low + step * np.arange(n + 1)


def rebin(edges, flux, error, new_edges):
    """Resample a piecewise-constant flux density onto new bins, conserving the flux.

    Parameters
    ----------
    edges : array_like
        ``(n + 1,)`` increasing edges of the input bins.
    flux, error : array_like
        ``(..., n)`` flux density and its standard deviation per input bin (non-finite values are treated as
        gaps); leading axes (e.g. the slit rows of a 2D spectrum) are rebinned independently on the same bins.
    new_edges : array_like
        ``(m + 1,)`` increasing edges of the output bins.

    Returns
    -------
    flux, error, coverage : numpy.ndarray
        ``(..., m)``: the mean density over the part of each new bin covered by valid input bins,
        its standard deviation, and the covered fraction of each new bin (0 to 1); where
        nothing is covered the flux and error are NaN.
    """
    edges = np.asarray(edges, dtype=float)
    new_edges = np.asarray(new_edges, dtype=float)
    flux = np.asarray(flux, dtype=float)
    error = np.asarray(error, dtype=float)
    lead = flux.shape[:-1]
    flux = flux.reshape(-1, flux.shape[-1])
    error = error.reshape(flux.shape)
    valid = np.isfinite(flux) & np.isfinite(error)
    # the overlap of an old and a new bin is one interval of the merged edges
    cuts = np.unique(np.concatenate([edges, new_edges]))
    lengths = np.diff(cuts)
    middles = 0.5 * (cuts[1:] + cuts[:-1])
    old = np.searchsorted(edges, middles) - 1
    new = np.searchsorted(new_edges, middles) - 1
    inside = (old >= 0) & (old < flux.shape[1]) & (new >= 0) & (new < new_edges.size - 1)
    old, new, lengths = old[inside], new[inside], lengths[inside]
    m = new_edges.size - 1
    # one bincount for all rows: row r's new bin j is cell r * m + j
    ok = valid[:, old]
    rows = np.broadcast_to(np.arange(flux.shape[0])[:, None], ok.shape)[ok]
    cell = rows * m + np.broadcast_to(new, ok.shape)[ok]
    length = np.broadcast_to(lengths, ok.shape)[ok]
    columns = np.broadcast_to(old, ok.shape)[ok]
    size = flux.shape[0] * m
    covered = np.bincount(cell, length, minlength=size)
    integral = np.bincount(cell, length * flux[rows, columns], minlength=size)
    variance = np.bincount(cell, (length * error[rows, columns]) ** 2, minlength=size)
    with np.errstate(invalid="ignore", divide="ignore"):
        out_flux = np.where(covered > 0, integral / covered, np.nan)
        out_error = np.where(covered > 0, np.sqrt(variance) / covered, np.nan)
    shape = lead + (m,)
    return (out_flux.reshape(shape), out_error.reshape(shape),
            (covered.reshape(-1, m) / np.diff(new_edges)).reshape(shape))


@dataclass
class MergedSpectrum:
    """Result of :func:`merge_orders`.

    Attributes
    ----------
    edges : numpy.ndarray
        ``(m + 1,)`` bin edges (nm).
    flux : numpy.ndarray
        ``(..., m)`` flux density (NaN where no order contributes).
    error : numpy.ndarray
        ``(..., m)`` its standard deviation.
    n_orders : numpy.ndarray
        ``(..., m)`` number of orders combined in each bin.
    """

    edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    n_orders: np.ndarray

    @property
    def wavelength(self):
        """Bin centres."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def merge_orders(spectra, new_edges, *, min_coverage=0.999, weight_errors=None):
    """Merge orders onto one wavelength grid, with inverse-variance weights where they overlap.

    Parameters
    ----------
    spectra : sequence of tuple
        One ``(edges, flux, error)`` per order, each as accepted by :func:`rebin` (the flux of every
        order with the same leading axes, e.g. the same slit rows: each row is merged on its own).
    new_edges : array_like
        Edges of the common grid.
    min_coverage : float
        An order contributes to a bin only if it covers at least this fraction of it
        (a bin cut by an order's end would otherwise carry a partial, noisier value).
    weight_errors : sequence of array_like, optional
        One per order, shaped as its ``error``: the standard deviations the weights are taken
        from instead of ``error``. Weights from variances estimated from the data themselves
        favour the values that fell low and bias the mean low (by 3 % in the order overlaps of a
        faint galaxy's 2D spectrum); weights from a smooth, nearly noise-free estimate do not. The
        errors of the merged values are then propagated from ``error`` with these weights.

    Returns
    -------
    MergedSpectrum
    """
    new_edges = np.asarray(new_edges, dtype=float)
    m = new_edges.size - 1
    total = weighted = variance = n_orders = None
    for k, (edges, flux, error) in enumerate(spectra):
        edges = np.asarray(edges, dtype=float)
        if total is None:
            shape = np.shape(flux)[:-1] + (m,)
            total, weighted, variance = (np.zeros(shape) for _ in range(3))
            n_orders = np.zeros(shape, int)
        # only the bins the order reaches: the rest of the grid gets nothing from it
        lo = max(int(np.searchsorted(new_edges, edges[0], side="right")) - 1, 0)
        hi = min(int(np.searchsorted(new_edges, edges[-1], side="left")), m)
        if hi <= lo:
            continue
        values, sigma, coverage = rebin(edges, flux, error, new_edges[lo:hi + 1])
        weight_sigma = sigma if weight_errors is None else rebin(edges, flux, weight_errors[k], new_edges[lo:hi + 1])[1]
        usable = (coverage >= min_coverage) & np.isfinite(values) & (sigma > 0) & (weight_sigma > 0)
        weight = np.where(usable, 1.0 / np.where(usable, weight_sigma, 1.0) ** 2, 0.0)
        total[..., lo:hi] += weight
        weighted[..., lo:hi] += weight * np.where(usable, values, 0.0)
        if weight_errors is not None:
            variance[..., lo:hi] += (weight * np.where(usable, sigma, 0.0)) ** 2
        n_orders[..., lo:hi] += usable
    if total is None:  # no orders
        total, weighted, variance, n_orders = np.zeros(m), np.zeros(m), np.zeros(m), np.zeros(m, int)
    with np.errstate(invalid="ignore", divide="ignore"):
        merged = np.where(total > 0, weighted / total, np.nan)
        merged_error = np.where(total > 0, 1.0 / np.sqrt(total) if weight_errors is None else np.sqrt(variance) / total,
                                np.nan)
    return MergedSpectrum(new_edges, merged, merged_error, n_orders)


@dataclass
class RectifiedOrder:
    """Result of :func:`rectify_order`; images are ``(n_slit, n_wavelength)``.

    Attributes
    ----------
    wave_edges : numpy.ndarray
        The grid's wavelength edges (nm).
    slit_edges : numpy.ndarray
        The grid's slit edges (arcsec).
    flux : numpy.ndarray
        Counts dropped in each cell (float32).
    variance : numpy.ndarray
        Their variance (float32).
    coverage : numpy.ndarray
        Area of the sub-pixels dropped in each cell over the cell's area (float32): 0 where
        nothing fell, about 1 inside the order (it departs from 1 by the sampling: a cell
        catches whole sub-pixels).
    """

    wave_edges: np.ndarray
    slit_edges: np.ndarray
    flux: np.ndarray
    variance: np.ndarray
    coverage: np.ndarray

    @property
    def density(self):
        """Surface density, counts per nm per arcsec (NaN in uncovered cells)."""
        area = np.outer(np.diff(self.slit_edges), np.diff(self.wave_edges)) * self.coverage
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(self.coverage > 0, self.flux / area, np.nan)


def _tame(gradient):
    """Gradients off the order's median (at its border they see the next order, or nothing) set to the median."""
    median = np.nanmedian(gradient)
    spread = max(5 * np.nanmedian(np.abs(gradient - median)), 0.2 * abs(median))
    return np.where(np.isfinite(gradient) & (np.abs(gradient - median) <= spread), gradient, median)


def rectify_order(flux, variance, wavelength, slit, pixels, *, wave_edges, slit_edges, bad=None, subsample=4):
    """Drizzle an order's pixels onto a regular (wavelength, slit) grid.

    Parameters
    ----------
    flux, variance : numpy.ndarray
        2D frame and its variance (counts).
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec) of the pixel centres.
    pixels : numpy.ndarray of bool
        The pixels of the order.
    wave_edges, slit_edges : array_like
        Edges of the output grid.
    bad : numpy.ndarray of bool, optional
        Pixels left out.
    subsample : int
        Each pixel is cut into ``subsample x subsample`` sub-pixels.

    Returns
    -------
    RectifiedOrder
    """
    wave_edges = np.asarray(wave_edges, dtype=float)
    slit_edges = np.asarray(slit_edges, dtype=float)
    use = pixels & np.isfinite(flux) & np.isfinite(variance) & np.isfinite(wavelength) & np.isfinite(slit)
    if bad is not None:
        use &= ~bad
    ys, xs = np.nonzero(use)
    wx, wy, sx, sy = (_tame(g[ys, xs]) for g in _map_gradients(wavelength, slit))
    offsets = (np.arange(subsample) + 0.5) / subsample - 0.5
    dx, dy = (a.ravel() for a in np.meshgrid(offsets, offsets))
    wave = wavelength[ys, xs][:, None] + wx[:, None] * dx + wy[:, None] * dy
    pos = slit[ys, xs][:, None] + sx[:, None] * dx + sy[:, None] * dy
    n_w, n_s = wave_edges.size - 1, slit_edges.size - 1
    iw = np.searchsorted(wave_edges, wave, side="right") - 1
    js = np.searchsorted(slit_edges, pos, side="right") - 1
    inside = (iw >= 0) & (iw < n_w) & (js >= 0) & (js < n_s)
    cell = np.where(inside, js * n_w + iw, -1)
    share = 1.0 / subsample ** 2
    pix = np.broadcast_to(np.arange(ys.size)[:, None], cell.shape)
    counts = flux[ys, xs].astype(float)
    out = np.bincount(cell[inside], share * counts[pix[inside]], minlength=n_s * n_w)
    # a pixel's sub-pixels in one cell carry correlated noise: sum their shares before squaring
    pairs, per_pair = np.unique(cell[inside].astype(np.int64) * ys.size + pix[inside], return_counts=True)
    pair_cell, pair_pix = pairs // ys.size, pairs % ys.size
    var = np.bincount(pair_cell, (per_pair * share) ** 2 * variance[ys, xs][pair_pix], minlength=n_s * n_w)
    area = np.abs(wy * sx - wx * sy) * share
    covered = np.bincount(cell[inside], np.broadcast_to(area[:, None], cell.shape)[inside], minlength=n_s * n_w)
    cell_area = np.outer(np.diff(slit_edges), np.diff(wave_edges)).ravel()
    shape = (n_s, n_w)
    return RectifiedOrder(wave_edges, slit_edges, out.reshape(shape).astype(np.float32),
                          var.reshape(shape).astype(np.float32),
                          (covered / cell_area).reshape(shape).astype(np.float32))
