"""Inverting a dispersion solution: detector pixel -> (order, wavelength, slit position).

The solution maps ``(order, wavelength, slit) -> (x, y)``. Per order it is
evaluated on a fine grid of wavelengths at a few dozen slit positions; along
each slit position the wavelength and the cross-dispersion pixel are
interpolated onto every integer dispersion pixel; then, along each detector
line of constant dispersion pixel, wavelength and slit position are
interpolated linearly between the slit positions onto the pixels. Both steps
are vectorised 1D interpolations of a smooth, monotonic map: no per-pixel search.
"""

import logging
from dataclasses import dataclass

import numpy as np

log = logging.getLogger(__name__)


@dataclass
class DispersionImage:
    """Per-pixel maps of a frame: wavelength (nm), slit position (arcsec) and order (0 outside the orders)."""

    wavelength: np.ndarray
    slit: np.ndarray
    order: np.ndarray


def _crossing_rows(cross, c):
    """Index ``k`` with ``cross[k] <= c < cross[k + 1]``, per pixel.

    ``cross`` (n_s, n_d) increases along its first axis; ``c`` (n_d, w) are pixel
    coordinates; -1 or n_s - 1 outside.
    """
    return (cross[:, :, None] <= c[None]).sum(axis=0) - 1


def _longest_run(flags):
    """The slice of the longest run of True in a 1D boolean array (empty slice if none)."""
    flags = np.r_[False, np.asarray(flags, bool), False]
    edges = np.flatnonzero(np.diff(flags.astype(int)))
    if edges.size == 0:
        return slice(0, 0)
    starts, stops = edges[::2], edges[1::2]
    k = int(np.argmax(stops - starts))
    return slice(int(starts[k]), int(stops[k]))


def invert_solution(solution, orders, wl_ranges, shape, dispersion_axis, slit_range=(-6.0, 6.0), n_slit=25,
                    samples_per_pixel=2.0, edges=None):
    """Wavelength, slit position and order of every pixel inside the orders.

    Parameters
    ----------
    solution : DispersionSolution
        ``.xy(order, wavelength, slit)``.
    orders : sequence of int
    wl_ranges : sequence of (float, float)
        Wavelength range (nm) of each order to map (a little beyond the detector is fine).
    shape : tuple
        Frame shape ``(ny, nx)``.
    dispersion_axis : str
        'x' or 'y'.
    slit_range : tuple of float
        Slit positions (arcsec) of the slit's ends: pixels between them belong to the order.
    n_slit : int
        Slit positions at which the solution is evaluated.
    samples_per_pixel : float
        Wavelength samples per dispersion pixel.
    edges : callable, optional
        ``edges(order, d) -> (lower, upper)`` cross-dispersion pixels of the order's edges
        (e.g. :meth:`~.order_edges.OrderTable.edges`): pixels outside them are left out too.

    Returns
    -------
    DispersionImage
        float32 wavelength and slit maps (NaN outside the orders), int16 order map (0 outside).
    """
    ny, nx = shape
    nd, nc = (ny, nx) if dispersion_axis == "y" else (nx, ny)
    wave = np.full((nd, nc), np.nan, np.float32)
    slit_map = np.full((nd, nc), np.nan, np.float32)
    order_map = np.zeros((nd, nc), np.int16)
    s_grid = np.linspace(slit_range[0], slit_range[1], n_slit)
    for order, (lo, hi) in zip(orders, wl_ranges):
        # the number of wavelength samples: from the order's length on the detector
        ends = solution.xy(np.full(2, order), np.array([lo, hi]), 0.0)[1 if dispersion_axis == "y" else 0]
        length = abs(ends[1] - ends[0])
        n_wl = int(np.clip(samples_per_pixel * length, 16, 8 * max(nd, nc)))
        wl = np.linspace(lo, hi, n_wl)
        x, y = solution.xy(np.full((n_slit, n_wl), order), wl[None, :], s_grid[:, None])
        d, c = (y, x) if dispersion_axis == "y" else (x, y)
        if np.median(np.diff(d, axis=1)) < 0:
            d, c, wl_row = d[:, ::-1], c[:, ::-1], wl[::-1]
        else:
            wl_row = wl
        keep = _longest_run(np.all(np.diff(d, axis=1) > 0, axis=0))
        if keep.stop - keep.start < 2:
            log.warning("order %s: the solution is not monotonic along the dispersion; order left out", order)
            continue
        if keep.stop - keep.start < n_wl - 1:
            log.warning("order %s: the solution folds along the dispersion beyond %.1f-%.1f nm (extrapolated too "
                        "far?): mapped there only", order, *sorted((wl_row[keep.start], wl_row[keep.stop])))
        span = slice(keep.start, keep.stop + 1)
        d, c, wl_row = d[:, span], c[:, span], wl_row[span]
        d_lo = max(int(np.ceil(d[:, 0].max())), 0)
        d_hi = min(int(np.floor(d[:, -1].min())), nd - 1)
        if d_hi < d_lo:
            continue
        pixels = np.arange(d_lo, d_hi + 1, dtype=float)
        wl_at = np.stack([np.interp(pixels, d[k], wl_row) for k in range(n_slit)])  # (n_slit, n_pix)
        c_at = np.stack([np.interp(pixels, d[k], c[k]) for k in range(n_slit)])
        s_col = s_grid
        if np.median(c_at[-1] - c_at[0]) < 0:
            wl_at, c_at, s_col = wl_at[::-1], c_at[::-1], s_grid[::-1]
        run = _longest_run(np.all(np.diff(c_at, axis=0) > 0, axis=0))
        if run.stop <= run.start:
            log.warning("order %s: the solution is not monotonic along the slit; order left out", order)
            continue
        if run.stop - run.start < pixels.size:
            log.warning("order %s: the solution folds along the slit outside dispersion pixels %d-%d "
                        "(extrapolated too far?): mapped there only", order, pixels[run.start], pixels[run.stop - 1])
            pixels, wl_at, c_at = pixels[run], wl_at[:, run], c_at[:, run]
        first = np.ceil(c_at[0]).astype(int)
        width = int(np.max(np.floor(c_at[-1]) - first)) + 1
        cc = first[:, None] + np.arange(width)[None, :]  # (n_pix, width) candidate cross pixels
        inside = (cc <= c_at[-1][:, None]) & (cc >= 0) & (cc < nc)
        if edges is not None:
            lower, upper = edges(np.full(pixels.size, order), pixels)
            inside &= (cc >= lower[:, None]) & (cc <= upper[:, None])
        k = np.clip(_crossing_rows(c_at, cc), 0, n_slit - 2)
        cols = np.arange(pixels.size)[:, None]
        c0, c1 = c_at[k, cols], c_at[k + 1, cols]
        t = (cc - c0) / (c1 - c0)
        w_pix = wl_at[k, cols] + t * (wl_at[k + 1, cols] - wl_at[k, cols])
        s_pix = s_col[k] + t * (s_col[k + 1] - s_col[k])
        rows = np.broadcast_to(pixels.astype(int)[:, None], cc.shape)[inside]
        cc = cc[inside]
        wave[rows, cc] = w_pix[inside]
        slit_map[rows, cc] = s_pix[inside]
        order_map[rows, cc] = order
    if dispersion_axis == "x":
        wave, slit_map, order_map = wave.T, slit_map.T, order_map.T
    return DispersionImage(np.ascontiguousarray(wave), np.ascontiguousarray(slit_map), np.ascontiguousarray(order_map))
