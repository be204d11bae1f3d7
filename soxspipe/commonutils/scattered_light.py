"""Scattered light: a smooth 2D model of the light between the orders.

Reusable by any recipe (flats, science frames): give a frame and a mask of the
pixels that belong to no order (with a margin), and get back the smooth
background to subtract. A low-degree 2D polynomial is first fitted to the
inter-order pixels (linear least squares, sigma-clipped); what it leaves is
reduced to robust medians in boxes, boxes with too few pixels are filled from
their neighbours (normalised convolution), the grid is smoothed with a Gaussian
and a bicubic spline through the box centres gives the value at every pixel.
No I/O.
"""

import logging

import bottleneck as bn
import numpy as np
from scipy import ndimage
from numpy.polynomial import legendre
from scipy.interpolate import RectBivariateSpline

from .polynomials import fit_clipped, normalise

log = logging.getLogger(__name__)


def scattered_light(image, background_mask, *, box=32, smooth=1.5, min_fraction=0.1, bad=None, degree=2,
                    max_samples=200000):
    """Model the smooth background of a frame from the pixels marked as background.

    Parameters
    ----------
    image : numpy.ndarray
        2D frame.
    background_mask : numpy.ndarray of bool
        True where a pixel sees only the scattered light (between the orders).
    box : int or (int, int)
        Box size (rows, columns) over which the background pixels are reduced to a median.
    smooth : float
        Gaussian sigma, in boxes, of the smoothing of the box grid.
    min_fraction : float
        A box with a smaller fraction of background pixels takes its value from its neighbours.
    bad : numpy.ndarray of bool, optional
        Pixels not to use at all (masked, cosmic rays).
    degree : int
        Degree (in y and in x) of the polynomial fitted first; the boxes model what it leaves.
    max_samples : int
        The polynomial is fitted to at most this many background pixels (an even stride).

    Returns
    -------
    numpy.ndarray
        The float32 background model, the frame's shape.

    Raises
    ------
    ValueError
        No box has enough background pixels.
    """
    ny, nx = image.shape
    by, bx = (box, box) if np.isscalar(box) else box
    gy, gx = -(-ny // by), -(-nx // bx)
    use = np.asarray(background_mask, bool)
    if bad is not None:
        use = use & ~bad
    yy, xx = np.nonzero(use)
    if yy.size < (degree + 1) ** 2:
        raise ValueError("no box holds enough inter-order pixels to model the scattered light")
    stride = max(1, yy.size // max_samples)
    yy, xx = yy[::stride], xx[::stride]
    fit = fit_clipped([yy, xx], image[yy, xx], (degree, degree), lows=(0, 0), highs=(ny - 1, nx - 1), sigma=3.0,
                      max_iterations=5)
    poly = fit.polynomials[0]
    # the polynomial evaluated on the grid as the outer product of its two 1D bases
    vy = legendre.legvander(normalise(np.arange(ny), 0, ny - 1), degree)
    vx = legendre.legvander(normalise(np.arange(nx), 0, nx - 1), degree)
    trend = (vy @ poly.coeffs.reshape(degree + 1, degree + 1) @ vx.T).astype(np.float32)
    padded = np.full((gy * by, gx * bx), np.nan, np.float32)
    padded[:ny, :nx] = np.where(use, image - trend, np.nan)
    blocks = padded.reshape(gy, by, gx, bx).transpose(0, 2, 1, 3).reshape(gy, gx, by * bx)
    counts = np.isfinite(blocks).sum(axis=2)
    full = np.zeros((gy * by, gx * bx), bool)
    full[:ny, :nx] = True
    area = full.reshape(gy, by, gx, bx).sum(axis=(1, 3))
    good = counts >= np.maximum(min_fraction * area, 3)
    if not good.any():
        raise ValueError("no box holds enough inter-order pixels to model the scattered light")
    with np.errstate(all="ignore"):
        grid = np.where(good, bn.nanmedian(blocks, axis=2), 0.0)
    weight = good.astype(float)
    # normalised convolution: fills the empty boxes and smooths the others in one step
    sigma = max(float(smooth), 0.5)
    num = ndimage.gaussian_filter(grid * weight, sigma, mode="nearest")
    den = ndimage.gaussian_filter(weight, sigma, mode="nearest")
    filled = np.where(den > 1e-3, num / np.maximum(den, 1e-12), np.nan)
    if not np.all(np.isfinite(filled)):
        # boxes far from any background: nearest filled value
        idx = ndimage.distance_transform_edt(~np.isfinite(filled), return_distances=False, return_indices=True)
        filled = filled[tuple(idx)]
    yc = (np.arange(gy) + 0.5) * by - 0.5
    xc = (np.arange(gx) + 0.5) * bx - 0.5
    ky, kx = min(3, gy - 1), min(3, gx - 1)
    if ky < 1 or kx < 1:
        model = np.full((ny, nx), np.float32(np.mean(filled)))
    else:
        spline = RectBivariateSpline(yc, xc, filled, bbox=[-0.5, gy * by, -0.5, gx * bx], kx=ky, ky=kx, s=0)
        model = spline(np.arange(ny, dtype=float), np.arange(nx, dtype=float)).astype(np.float32)
    model += trend
    log.debug("scattered light: %d x %d boxes (%d empty); model %.1f..%.1f", gy, gx, int((~good).sum()),
              float(model.min()), float(model.max()))
    return model
