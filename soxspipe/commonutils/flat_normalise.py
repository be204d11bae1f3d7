"""Normalising a slit flat: the smooth lamp spectrum times the slit-illumination profile.

Numerical core of ``mflat``, with no I/O, on dispersion-major frames (axis 0
along the dispersion; see :func:`~soxspipe.commonutils.order_edges.dispersion_major`)
and the per-pixel order map of :func:`~soxspipe.commonutils.order_edges.order_map`.

Per order, the lamp spectrum ``L(d)`` is the clipped mean of the slit's central
part in every row, smoothed along the dispersion (Savitzky-Golay); the slit
illumination ``P(u, d)`` is the clipped mean of ``flat / L`` in fine bins of the
fractional slit position ``u`` and a few blocks along the dispersion,
interpolated bilinearly. ``flat / (L P)`` is the pixel-to-pixel response.
Every step is a ``bincount`` over all pixels of an order at once.
"""

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage
from scipy.signal import savgol_filter

log = logging.getLogger(__name__)


def _clipped_mean(index, values, n, sigma=4.0):
    """Mean of ``values`` per ``index`` (``0..n-1``), one pass of clipping at ``sigma`` robust sigmas per bin."""
    count = np.bincount(index, minlength=n).astype(float)
    with np.errstate(all="ignore"):
        mean = np.bincount(index, values, minlength=n) / count
        dev = values - mean[index]
        mad = np.bincount(index, np.abs(dev), minlength=n) / count
    keep = np.abs(dev) <= sigma * 1.2533 * np.maximum(mad[index], 1e-12)
    count = np.bincount(index[keep], minlength=n).astype(float)
    with np.errstate(all="ignore"):
        mean = np.bincount(index[keep], values[keep], minlength=n) / count
    return mean, count


@dataclass
class FlatModel:
    """The smooth model of a flat and its parts (dispersion-major arrays)."""

    #: lamp spectrum x slit illumination, 0 outside the orders
    model: np.ndarray
    #: the pixels the model covers (inside an order's edges, model above ``min_profile``)
    inside: np.ndarray


def flat_model(flat, labels, u, *, mask=None, window=21, u_bin=0.01, blocks=8, centre=(0.2, 0.8),
               min_profile=0.5):
    """Model a slit flat as a smooth lamp spectrum times a slit-illumination profile, per order.

    Parameters
    ----------
    flat : numpy.ndarray
        Dispersion-major flat (background removed).
    labels, u : numpy.ndarray
        Order number (0: none) and fractional slit position of every pixel (see ``order_map``).
    mask : numpy.ndarray of bool, optional
        Bad pixels, left out of every mean.
    window : int
        Savitzky-Golay window (px, odd) smoothing the lamp spectrum along the dispersion.
    u_bin : float
        Width of the slit-profile bins in ``u``.
    blocks : int
        Blocks along the dispersion over which the slit profile may change.
    centre : tuple
        The range of ``u`` whose mean is the lamp spectrum.
    min_profile : float
        Pixels whose profile is below this (relative to the slit's centre) are left out:
        the slit ends, where a fraction of a pixel's edge error changes its model much.

    Returns
    -------
    FlatModel
    """
    nd, nc = flat.shape
    model = np.zeros(flat.shape, np.float32)
    inside = np.zeros(flat.shape, bool)
    good_pixel = np.isfinite(flat) if mask is None else np.isfinite(flat) & ~mask
    n_u = int(np.ceil(1.0 / u_bin))
    rows_all, cols_all = np.nonzero(labels)
    order_all = labels[rows_all, cols_all]
    for o in np.unique(order_all):
        sel = order_all == o
        rows, cols = rows_all[sel], cols_all[sel]
        values = flat[rows, cols].astype(float)
        uu = u[rows, cols].astype(float)
        ok = good_pixel[rows, cols]
        # lamp spectrum: clipped mean of the slit's centre per row, smoothed along the dispersion
        core = ok & (uu >= centre[0]) & (uu <= centre[1])
        lamp, count = _clipped_mean(rows[core], values[core], nd)
        have = count > 0
        if have.sum() < 3:
            continue
        lamp = np.interp(np.arange(nd), np.nonzero(have)[0], lamp[have])
        first, last = np.nonzero(have)[0][[0, -1]]
        span = last - first + 1
        w = min(window | 1, span - (1 - span % 2))
        if w >= 5:
            lamp[first:last + 1] = savgol_filter(lamp[first:last + 1], w, 2, mode="interp")
        lamp_px = lamp[rows]
        with np.errstate(all="ignore"):
            ratio = values / lamp_px
        # slit profile: clipped mean of flat / lamp in (block, u) bins, interpolated bilinearly
        ub = np.clip((uu / u_bin).astype(int), 0, n_u - 1)
        block_len = span / blocks
        bb = np.clip(((rows - first) / block_len).astype(int), 0, blocks - 1)
        use = ok & np.isfinite(ratio) & (lamp_px > 0)
        prof, cnt = _clipped_mean((bb * n_u + ub)[use], ratio[use], blocks * n_u)
        prof = prof.reshape(blocks, n_u)
        empty = ~(cnt.reshape(blocks, n_u) > 0)
        if empty.all():
            continue
        if empty.any():
            idx = ndimage.distance_transform_edt(empty, return_distances=False, return_indices=True)
            prof = prof[tuple(idx)]
        fb = np.clip((rows - first + 0.5) / block_len - 0.5, 0, blocks - 1)
        fu = np.clip(uu / u_bin - 0.5, 0, n_u - 1)
        p = ndimage.map_coordinates(prof, [fb, fu], order=1, mode="nearest")
        central = np.median(prof[:, int(centre[0] * n_u):int(np.ceil(centre[1] * n_u))])
        covered = (p >= min_profile * central) & (lamp_px > 0)
        model[rows[covered], cols[covered]] = (lamp_px * p)[covered]
        inside[rows[covered], cols[covered]] = True
    return FlatModel(model, inside)


def response_map(flat, error, flat_model_, *, mask=None, low_response=0.5):
    """The pixel-to-pixel response ``flat / model`` inside the orders, exactly 1 outside.

    Parameters
    ----------
    flat, error : numpy.ndarray
        The flat and its uncertainty.
    flat_model_ : FlatModel
    mask : numpy.ndarray of bool, optional
        Pixels already bad (no value in the stack).
    low_response : float
        Pixels inside the orders with a lower response are flagged.

    Returns
    -------
    response, response_error : numpy.ndarray (float32)
    bad : numpy.ndarray of bool
        Flagged pixels: already bad inside the orders, non-finite, or of low response.
    low : numpy.ndarray of bool
        The low-response pixels alone.
    """
    inside = flat_model_.inside
    with np.errstate(all="ignore"):
        response = np.where(inside, flat / flat_model_.model, 1.0).astype(np.float32)
        response_error = np.where(inside, error / flat_model_.model, 0.0).astype(np.float32)
    finite = np.isfinite(response)
    response[~finite] = 1.0
    low = inside & finite & (response < low_response)
    bad = low | (inside & ~finite)
    if mask is not None:
        bad |= mask
    return response, response_error, bad, low
