"""Detrending pieces particular to science frames: the flat field and the inter-order mask.

Bias, dark and cosmic rays have their own modules (:mod:`.prepare`,
:mod:`.cosmics`) and the scattered light is modelled by :mod:`.scattered_light`
from the pixels that :func:`inter_order_mask` marks. No I/O.
"""

import logging

import numpy as np

from .order_edges import dispersion_major

log = logging.getLogger(__name__)


def flat_field(data, variance, mask, flat, flat_error=None, flat_mask=None):
    """Divide a frame by the master flat (the pixel-to-pixel response) and propagate the variance.

    Parameters
    ----------
    data, variance : numpy.ndarray
        The frame (counts) and its variance.
    mask : numpy.ndarray of bool
        Bad pixels of the frame.
    flat : numpy.ndarray
        The response (about 1; exactly 1 outside the orders).
    flat_error : numpy.ndarray, optional
        Its standard deviation.
    flat_mask : numpy.ndarray of bool, optional
        Pixels of no usable response.

    Returns
    -------
    data, variance, mask : numpy.ndarray
        float32 arrays; pixels of a non-positive or non-finite response are masked and set to 0.
    """
    flat = np.asarray(flat, dtype=np.float32)
    usable = np.isfinite(flat) & (flat > 0)
    safe = np.where(usable, flat, np.float32(1.0))
    out = (np.asarray(data, dtype=np.float32) / safe).astype(np.float32)
    out_variance = (np.asarray(variance, dtype=np.float32) / safe ** 2).astype(np.float32)
    if flat_error is not None:
        out_variance += (out * np.asarray(flat_error, dtype=np.float32) / safe) ** 2
    out_mask = np.asarray(mask, bool) | ~usable
    if flat_mask is not None:
        out_mask |= np.asarray(flat_mask, bool)
    out[~usable] = 0.0
    return out, out_variance, out_mask


def inter_order_mask(table, shape, dispersion_axis, *, margin=4.0):
    """Pixels that belong to no order: farther than ``margin`` pixels from every order's slit ends.

    Parameters
    ----------
    table : OrderTable
        An order table with edges (``table.has_edges``).
    shape : tuple
        The frame's numpy shape ``(ny, nx)``.
    dispersion_axis : str
        'x' or 'y'.
    margin : float
        Pixels beyond each edge still counted as the order's (the slit's image has soft ends).

    Returns
    -------
    numpy.ndarray of bool
        In the frame's own orientation.
    """
    nd, nc = dispersion_major(np.empty(shape, bool), dispersion_axis).shape
    d = np.arange(nd)
    c = np.arange(nc, dtype=np.float32)
    between = np.ones((nd, nc), bool)
    # the edges are followed over the whole frame, beyond where the flats traced them: that can only
    # leave out more pixels, never count an order's end as background
    for order in table.orders:
        lower, upper = table.edges(np.full(nd, order), d)
        between &= ~((c[None, :] >= (lower - margin)[:, None]) & (c[None, :] <= (upper + margin)[:, None]))
    return np.ascontiguousarray(dispersion_major(between, dispersion_axis))
