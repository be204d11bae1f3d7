"""Cosmic rays on a single frame: L.A.Cosmic (van Dokkum 2001) through astroscrappy.

A frame that is not stacked with others of its kind has no second look at a
pixel, so its cosmic rays are found by their sharpness: the Laplacian of the
frame, in units of the local noise, stands out where a ray's edges are steeper
than any image the optics can form. For spectra the smooth part (the sky lines,
extended along the slit, and the object's continuum) may be given as
``background``: it is taken off before the search, which keeps a bright sky line
from being mistaken for a ray. Rays are flagged, never replaced: the pixels
join the frame's mask, and the sky fit and the extraction leave them out. No I/O.
"""

import logging

import astroscrappy
import numpy as np

log = logging.getLogger(__name__)


def cosmic_ray_mask(data, *, read_noise, mask=None, background=None, sigma=5.0, sigma_fraction=0.3,
                    contrast=5.0, iterations=1, saturation=None):
    """Flag the cosmic rays of one frame in electrons.

    Parameters
    ----------
    data : numpy.ndarray
        2D frame, counts in electrons (bias or dark removed).
    read_noise : float
        Read noise (electrons) of the frame.
    mask : numpy.ndarray of bool, optional
        Pixels already known to be bad; they are neither used nor flagged.
    background : numpy.ndarray, optional
        A smooth model of the frame (e.g. the sky) subtracted before the search.
    sigma : float
        Detection limit of a ray's Laplacian, in standard deviations of the noise.
    sigma_fraction : float
        Fraction of ``sigma`` down to which a ray's neighbours are flagged with it.
    contrast : float
        Minimum contrast between the Laplacian and the fine structure of the image: a star
        or a line profile, resolved by the optics, stays below it.
    iterations : int
        Detection passes (each finds the rays the last one's flagged pixels hid).
    saturation : float, optional
        Level (electrons) at which stars are saturated; default: never.

    Returns
    -------
    numpy.ndarray of bool
        True on the pixels hit by a ray (not including ``mask``).
    """
    data = np.asarray(data, dtype=np.float32)
    bad = np.zeros(data.shape, bool) if mask is None else np.asarray(mask, bool)
    clean = np.where(np.isfinite(data) & ~bad, data, 0.0).astype(np.float32)
    background = None if background is None else np.asarray(background, dtype=np.float32)
    flagged, _ = astroscrappy.detect_cosmics(
        clean, inmask=bad | ~np.isfinite(data), inbkg=background, sigclip=sigma, sigfrac=sigma_fraction,
        objlim=contrast, gain=1.0, readnoise=float(read_noise),
        satlevel=float(saturation) if saturation else float(np.finfo(np.float32).max), niter=int(iterations),
        sepmed=True, cleantype="meanmask")
    flagged = np.asarray(flagged, bool) & ~bad
    log.debug("cosmic rays: %d pixels flagged", int(flagged.sum()))
    return flagged
