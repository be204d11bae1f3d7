"""Order-centre traces: the cross-dispersion centre of a continuum trace in many cuts at once.

Numerical core of ``order_centres`` (and of the order-edge work of ``mflat``),
with no I/O. Each cut is a short stretch of pixels across the order, summed over a
few pixels along the dispersion direction; all cuts are gathered with one
fancy-indexing step and measured together by a background-subtracted centroid,
re-centred a few times. No iterative fitter runs per cut.
"""

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class TraceSamples:
    """Measured centres of many cuts (arrays of one value per cut)."""

    #: dispersion coordinate of each cut (pixels)
    d: np.ndarray
    #: measured cross-dispersion centre (NaN where none)
    centre: np.ndarray
    #: background-subtracted flux in the measuring window, summed over the cut's rows
    flux: np.ndarray
    flux_error: np.ndarray
    #: second-moment width of the profile (pixels)
    sigma: np.ndarray
    #: masked pixels in the window
    n_masked: np.ndarray
    #: the window reaches past the frame's edge
    off_frame: np.ndarray


def cut_indices(d, c, *, dispersion_axis, half_width, average, shape):
    """Row and column indices of cuts: ``(n_cuts, 2 average + 1, 2 half_width + 1)``.

    Parameters
    ----------
    d : array_like of int
        Dispersion pixel at the middle of each cut.
    c : array_like
        Cross-dispersion position each cut is centred on (rounded).
    dispersion_axis : str
        'y' (dispersion along rows, VIS) or 'x' (along columns, NIR).
    half_width : int
        Half-width of the cut across the order.
    average : int
        The cut sums ``2 average + 1`` pixels along the dispersion.
    shape : tuple
        Frame shape ``(ny, nx)``.

    Returns
    -------
    rows, cols : numpy.ndarray
        Index arrays clipped to the frame.
    inside : numpy.ndarray of bool
        Cuts lying wholly inside the frame.
    """
    d = np.asarray(d, dtype=int)
    c = np.rint(np.asarray(c, dtype=float)).astype(int)
    along = d[:, None, None] + np.arange(-average, average + 1)[None, :, None]
    across = c[:, None, None] + np.arange(-half_width, half_width + 1)[None, None, :]
    along, across = np.broadcast_arrays(along, across)
    rows, cols = (along, across) if dispersion_axis == "y" else (across, along)
    inside = np.all((rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1]), axis=(1, 2))
    return np.clip(rows, 0, shape[0] - 1), np.clip(cols, 0, shape[1] - 1), inside


def trace_centres(image, d, c, *, dispersion_axis, half_width, average=2, ring=3, variance=None, mask=None,
                  iterations=3):
    """Measure the cross-dispersion centre of a trace in many cuts at once.

    Each cut is centred on the predicted position ``c``; its profile (summed along
    the dispersion) minus the median of ``ring`` pixels on both sides gives a
    flux-weighted centroid over ``2 half_width + 1`` pixels. The window is re-centred
    on the centroid ``iterations`` times, so a prediction a few pixels off still
    converges.

    Parameters
    ----------
    image : numpy.ndarray
        2D frame.
    d, c : array_like
        Dispersion pixel (integer) and predicted cross-dispersion centre of each cut.
    dispersion_axis : str
        'y' or 'x'.
    half_width : int
        Half-width of the measuring window (pixels).
    average : int
        Cuts sum ``2 average + 1`` pixels along the dispersion.
    ring : int
        Background pixels on each side of the window.
    variance, mask : numpy.ndarray, optional
        Per-pixel variance (for the flux error) and bad pixels.
    iterations : int

    Returns
    -------
    TraceSamples
    """
    d = np.asarray(d, dtype=int)
    centre = np.asarray(c, dtype=float).copy()
    outer = half_width + ring
    offsets = np.arange(-outer, outer + 1)
    window = np.abs(offsets) <= half_width
    good = np.ones(d.size, bool)
    for _ in range(max(1, iterations)):
        rows, cols, inside = cut_indices(d, centre, dispersion_axis=dispersion_axis, half_width=outer,
                                         average=average, shape=image.shape)
        profile = image[rows, cols].astype(float).sum(axis=1)
        bad = mask[rows, cols].any(axis=1) if mask is not None else np.zeros(profile.shape, bool)
        with np.errstate(all="ignore"):
            background = np.nanmedian(np.where(window[None] | bad, np.nan, profile), axis=1)
        background = np.where(np.isfinite(background), background, 0.0)
        signal = np.where(window[None], profile - background[:, None], 0.0)
        flux = signal.sum(axis=1)
        with np.errstate(all="ignore"):
            shift = (signal * offsets[None]).sum(axis=1) / flux
        good = np.isfinite(shift) & (flux > 0) & (np.abs(shift) <= half_width)
        centre = np.where(good, np.rint(centre) + np.where(good, shift, 0.0), centre)
    with np.errstate(all="ignore"):
        sigma = np.sqrt(np.maximum((signal * (offsets[None] - shift[:, None]) ** 2).sum(axis=1) / flux, 0))
    if variance is not None:
        flux_error = np.sqrt(np.where(window[None, None], variance[rows, cols], 0.0).sum(axis=(1, 2)))
    else:
        flux_error = np.full(d.size, np.nan)
    n_masked = (bad & window[None]).sum(axis=1)
    return TraceSamples(d.astype(float), np.where(good, centre, np.nan), flux, flux_error, sigma, n_masked, ~inside)


@dataclass
class OrderTraces:
    """Per-order centre traces ``c(d)``: Legendre series in the normalised dispersion pixel.

    Attributes
    ----------
    orders : numpy.ndarray of int
    coeffs : list of numpy.ndarray
        Legendre coefficients per order, in ``d`` normalised over ``[d_low, d_high]``.
    d_low, d_high : float
        The normalisation range of ``d``.
    extent : numpy.ndarray
        ``(n_orders, 2)``: first and last dispersion pixel where each order was traced.
    dispersion_axis : str
        'y' (VIS) or 'x' (NIR).
    """

    orders: np.ndarray
    coeffs: list
    d_low: float
    d_high: float
    extent: np.ndarray
    dispersion_axis: str

    def centre(self, order, d):
        """Cross-dispersion pixel of the centre of ``order`` (scalar or array) at dispersion pixel(s) ``d``."""
        from numpy.polynomial import legendre

        order, d = np.broadcast_arrays(np.asarray(order), np.asarray(d, dtype=float))
        out = np.full(d.shape, np.nan)
        u = (2.0 * d - (self.d_high + self.d_low)) / (self.d_high - self.d_low)
        for k, o in enumerate(self.orders):
            m = order == o
            out[m] = legendre.legval(u[m], self.coeffs[k])
        unknown = ~np.isin(order, self.orders)
        if unknown.any():
            raise KeyError(f"order(s) {sorted(set(order[unknown].tolist()))} not in the order table")
        return out

    def to_columns(self):
        """Table columns: one row per order."""
        return {"order": np.asarray(self.orders, int), "degree": np.array([len(c) - 1 for c in self.coeffs]),
                "coeffs": np.array(self.coeffs), "d_low": np.full(len(self.orders), self.d_low),
                "d_high": np.full(len(self.orders), self.d_high), "d_min": self.extent[:, 0],
                "d_max": self.extent[:, 1], "dispersion_axis": np.full(len(self.orders), self.dispersion_axis)}

    @classmethod
    def from_columns(cls, cols):
        """Rebuild from :meth:`to_columns` (any mapping of column name -> array)."""
        coeffs = [np.asarray(c, float) for c in np.asarray(cols["coeffs"])]
        return cls(np.asarray(cols["order"], int), coeffs, float(np.asarray(cols["d_low"])[0]),
                   float(np.asarray(cols["d_high"])[0]), np.c_[np.asarray(cols["d_min"]), np.asarray(cols["d_max"])],
                   str(np.asarray(cols["dispersion_axis"]).astype(str)[0]).strip())
