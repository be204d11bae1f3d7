"""Order edges: where the slit's image ends on either side of each order, and per-pixel order maps.

Numerical core of ``mflat``, with no I/O. The cross-dispersion profile of a
slit flat is a plateau with steep ends; in many cuts at once (gathered with one
fancy-indexing step, as the order-centre traces are) each end is found where the
profile crosses a set fraction of the way from the inter-order level to the
plateau, interpolated between the two pixels straddling it. Each order's lower
and upper edges are then fitted as Legendre series in the dispersion pixel,
with sigma clipping.

Frames are handled in *dispersion-major* orientation (axis 0 along the
dispersion, axis 1 across it): :func:`dispersion_major` gives that view of a
frame of either arm.
"""

import logging
from dataclasses import dataclass

import bottleneck as bn
import numpy as np
from numpy.polynomial import legendre

from .polynomials import FitError, fit_clipped
from .traces import OrderTraces, cut_indices

log = logging.getLogger(__name__)


def dispersion_major(array, dispersion_axis):
    """View of a 2D frame with the dispersion along axis 0 (VIS: itself, NIR: its transpose)."""
    return array if dispersion_axis == "y" else array.T


@dataclass
class EdgeSamples:
    """Edges measured in many cuts (one value per cut; NaN where none was found)."""

    d: np.ndarray
    lower: np.ndarray
    upper: np.ndarray
    #: plateau level of the cut (mean per pixel of the rows averaged)
    plateau: np.ndarray


def measure_edges(image, d, centre, *, dispersion_axis, half_length, fraction=0.5, average=2, mask=None,
                  search=1.4):
    """Measure the lower and upper slit edges in many cuts across orders.

    Parameters
    ----------
    image : numpy.ndarray
        The flat (any background need not be removed: each side takes its own floor).
    d : array_like of int
        Dispersion pixel of each cut.
    centre : array_like
        Cross-dispersion position of the order centre at each cut.
    dispersion_axis : str
        'y' or 'x'.
    half_length : array_like or float
        Expected half-length of the slit's image (px), per cut or for all.
    fraction : float
        The edge is where the profile crosses ``floor + fraction (plateau - floor)``.
    average : int
        Each cut is the median of ``2 average + 1`` pixels along the dispersion
        (a lone bad pixel does not move the edge).
    mask : numpy.ndarray of bool, optional
        Pixels left out of the median.
    search : float
        The profile is searched out to ``search * half_length`` from the centre.

    Returns
    -------
    EdgeSamples
    """
    d = np.asarray(d, dtype=int)
    centre = np.asarray(centre, dtype=float)
    half_length = np.broadcast_to(np.asarray(half_length, dtype=float), d.shape)
    reach = int(np.ceil(search * half_length.max())) + 1
    rows, cols, _ = cut_indices(d, centre, dispersion_axis=dispersion_axis, half_width=reach, average=average,
                                shape=image.shape)
    values = image[rows, cols].astype(np.float32)
    if mask is not None:
        values[mask[rows, cols]] = np.nan
    profile = bn.nanmedian(values, axis=1)  # (n_cuts, 2 reach + 1)
    offsets = np.arange(-reach, reach + 1)
    inner = np.abs(offsets)[None, :] <= 0.4 * half_length[:, None]
    plateau = bn.nanmedian(np.where(inner, profile, np.nan), axis=1)
    base = np.rint(centre)
    out = []
    for side in (-1, 1):
        # walk out from the centre: column k is offset side * k
        p = profile[:, reach::side][:, :reach + 1]
        beyond = np.arange(reach + 1)[None, :] <= search * half_length[:, None]
        p = np.where(beyond, p, np.nan)
        floor = bn.nanmin(p, axis=1)
        level = floor + fraction * (plateau - floor)
        below = p < level[:, None]
        k = np.argmax(below, axis=1)
        ok = below.any(axis=1) & (k >= 1) & (plateau > floor)
        k = np.maximum(k, 1)
        hi, lo = np.take_along_axis(p, (k - 1)[:, None], 1)[:, 0], np.take_along_axis(p, k[:, None], 1)[:, 0]
        with np.errstate(all="ignore"):
            step = (k - 1) + (hi - level) / (hi - lo)
        ok &= np.isfinite(step)
        out.append(np.where(ok, base + side * step, np.nan))
    return EdgeSamples(d.astype(float), out[0], out[1], plateau)


@dataclass
class EdgeFit:
    """Per-order edge fits (Legendre coefficients in ``d`` normalised over ``[0, nd - 1]``)."""

    lower: list
    upper: list
    #: residuals (measured - fit) of the used cuts of every order, lower and upper together
    residuals: np.ndarray
    #: per order: RMS of its residuals (px)
    rms: np.ndarray
    n_used: np.ndarray


def fit_edges(order, samples, orders, *, degree, nd, sigma=3.5, max_iterations=5, min_cuts=10):
    """Fit each order's lower and upper edge along the dispersion.

    Parameters
    ----------
    order : array_like of int
        Order of each cut of ``samples``.
    samples : EdgeSamples
    orders : sequence of int
        Orders to fit, in the order of the result.
    degree : int
        Legendre degree in the dispersion pixel.
    nd : int
        Frame length along the dispersion: ``d`` is normalised over ``[0, nd - 1]``.
    sigma, max_iterations : float, int
        Sigma clipping of the fit.
    min_cuts : int
        An order with fewer measured cuts on either edge cannot be fitted.

    Returns
    -------
    EdgeFit

    Raises
    ------
    FitError
        An order with too few measured cuts.
    """
    order = np.asarray(order)
    lower, upper, residuals, rms, n_used = [], [], [], [], []
    for o in orders:
        m = order == o
        coeffs, res = [], []
        for values in (samples.lower[m], samples.upper[m]):
            good = np.isfinite(values)
            if good.sum() < max(min_cuts, degree + 1):
                raise FitError(f"order {o}: {int(good.sum())} cuts found its edge ({min_cuts} needed)")
            fit = fit_clipped([samples.d[m]], values, (degree,), lows=(0.0,), highs=(nd - 1.0,), sigma=sigma,
                              max_iterations=max_iterations, min_sigma=0.01, used=good)
            coeffs.append(fit.polynomials[0].coeffs)
            res.append(fit.residuals[fit.used, 0])
        lower.append(coeffs[0])
        upper.append(coeffs[1])
        r = np.concatenate(res)
        residuals.append(r)
        rms.append(float(np.sqrt(np.mean(r ** 2))))
        n_used.append(r.size)
    return EdgeFit(lower, upper, np.concatenate(residuals), np.array(rms), np.array(n_used))


@dataclass
class OrderTable(OrderTraces):
    """An order table: the centre traces and, once measured, both slit edges of every order.

    ``lower_coeffs``/``upper_coeffs`` are Legendre series in ``d`` normalised like the
    centres; None in an order table made from a pinhole flat only.
    """

    lower_coeffs: list = None
    upper_coeffs: list = None

    @property
    def has_edges(self):
        """Whether the table holds the order edges."""
        return self.lower_coeffs is not None

    def _evaluate(self, coeffs, order, d):
        order, d = np.broadcast_arrays(np.asarray(order), np.asarray(d, dtype=float))
        unknown = ~np.isin(order, self.orders)
        if unknown.any():
            raise KeyError(f"order(s) {sorted(set(order[unknown].tolist()))} not in the order table")
        out = np.full(d.shape, np.nan)
        u = (2.0 * d - (self.d_high + self.d_low)) / (self.d_high - self.d_low)
        for k, o in enumerate(self.orders):
            m = order == o
            out[m] = legendre.legval(u[m], coeffs[k])
        return out

    def edges(self, order, d):
        """``(lower, upper)``: cross-dispersion pixels of the slit's ends in ``order`` at dispersion pixel(s) ``d``.

        ``lower`` is the smaller coordinate, whichever end of the slit it is.

        Raises
        ------
        ValueError
            The table holds no edges (it comes from ``order_centres``, not ``mflat``).
        """
        if not self.has_edges:
            raise ValueError("this order table holds the order centres only; the edges come from soxs_mflat")
        return self._evaluate(self.lower_coeffs, order, d), self._evaluate(self.upper_coeffs, order, d)

    def to_columns(self):
        """Table columns: those of :class:`OrderTraces` plus ``lower_coeffs``/``upper_coeffs`` where known."""
        cols = super().to_columns()
        if self.has_edges:
            cols["lower_coeffs"] = _padded(self.lower_coeffs)
            cols["upper_coeffs"] = _padded(self.upper_coeffs)
        return cols

    @classmethod
    def from_columns(cls, cols):
        """Rebuild from :meth:`to_columns` (the edge columns are optional)."""
        base = OrderTraces.from_columns(cols)
        table = cls(**{k: getattr(base, k) for k in OrderTraces.__dataclass_fields__})
        if "lower_coeffs" in cols and "upper_coeffs" in cols:
            table.lower_coeffs = [np.asarray(c, float) for c in np.asarray(cols["lower_coeffs"])]
            table.upper_coeffs = [np.asarray(c, float) for c in np.asarray(cols["upper_coeffs"])]
        return table

    @classmethod
    def with_edges(cls, traces, lower, upper):
        """An :class:`OrderTable` from centre ``traces`` and per-order edge coefficients."""
        return cls(**{k: getattr(traces, k) for k in OrderTraces.__dataclass_fields__},
                   lower_coeffs=[np.asarray(c, float) for c in lower],
                   upper_coeffs=[np.asarray(c, float) for c in upper])


def _padded(coeffs):
    """Coefficient lists of possibly different lengths as one zero-padded 2D array (zeros add nothing)."""
    n = max(len(c) for c in coeffs)
    return np.array([np.pad(np.asarray(c, float), (0, n - len(c))) for c in coeffs])


def order_map(shape, orders, lower, upper, valid):
    """Label every pixel of a dispersion-major frame with its order and its fractional slit position.

    Parameters
    ----------
    shape : tuple
        ``(nd, nc)``: the dispersion-major frame's shape.
    orders : sequence of int
    lower, upper : numpy.ndarray
        ``(n_orders, nd)``: the ends (cross-dispersion px) of each order at every dispersion pixel.
    valid : numpy.ndarray of bool
        ``(n_orders, nd)``: where each order lies on the frame.

    Returns
    -------
    labels : numpy.ndarray of int16
        The order number of each pixel, 0 where none.
    u : numpy.ndarray of float32
        ``(c - lower) / (upper - lower)``: 0 at the lower end, 1 at the upper (NaN where no order).
    """
    nd, nc = shape
    labels = np.zeros(shape, np.int16)
    u = np.full(shape, np.nan, np.float32)
    c = np.arange(nc, dtype=np.float32)
    for k, o in enumerate(orders):
        rows = np.nonzero(valid[k])[0]
        if rows.size == 0:
            continue
        lo, hi = lower[k, rows].astype(np.float32), upper[k, rows].astype(np.float32)
        c0 = max(int(np.floor(np.nanmin(lo))), 0)
        c1 = min(int(np.ceil(np.nanmax(hi))) + 1, nc)
        if c1 <= c0:
            continue
        frac = (c[None, c0:c1] - lo[:, None]) / (hi - lo)[:, None]
        inside = (frac >= 0) & (frac <= 1)
        block_l = labels[rows, c0:c1]
        block_u = u[rows, c0:c1]
        labels[rows, c0:c1] = np.where(inside, np.int16(o), block_l)
        u[rows, c0:c1] = np.where(inside, frac, block_u)
    return labels, u


def slit_scale(order, wavelength, slit, cross, orders):
    """Cross-dispersion pixels per arcsec of slit, per order, from a multi-pinhole line table.

    Parameters
    ----------
    order, wavelength, slit, cross : array_like
        Per predicted line image: its order, wavelength, slit position (arcsec) and
        cross-dispersion position (px).
    orders : sequence of int

    Returns
    -------
    numpy.ndarray
        Per order, the median over its lines of ``|cross(s_max) - cross(s_min)| / (s_max - s_min)``
        between the extreme pinholes (NaN for an order without both).
    """
    order, wavelength, slit, cross = (np.asarray(a) for a in (order, wavelength, slit, cross))
    out = np.full(len(orders), np.nan)
    for k, o in enumerate(orders):
        m = order == o
        if not m.any():
            continue
        s_lo, s_hi = slit[m].min(), slit[m].max()
        lo, hi = m & (slit == s_lo), m & (slit == s_hi)
        _, i, j = np.intersect1d(wavelength[lo], wavelength[hi], return_indices=True)
        if s_hi > s_lo and i.size:
            out[k] = float(np.median(np.abs(cross[hi][j] - cross[lo][i]))) / (s_hi - s_lo)
    return out
