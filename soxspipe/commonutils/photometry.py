"""Aperture photometry and the photometric zero point of an imaging frame.

Fluxes are summed in circular apertures with photutils, the sky taken as the
sigma-clipped median of a local annulus. An aperture correction measured on
bright isolated stars (small aperture to a large one) brings them to total
fluxes. The zero point is ``m_cat + 2.5 log10(flux / exptime)`` averaged over the
matched catalogue stars with outliers clipped; with the filter's extinction it
is also given above the atmosphere. No I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np
from astropy.stats import SigmaClip
from photutils.aperture import ApertureStats, CircularAnnulus, CircularAperture, aperture_photometry

from .errors import DataError

log = logging.getLogger(__name__)


@dataclass
class ApertureFluxes:
    """Sky-subtracted aperture fluxes, their errors, the local sky per pixel and the masked-pixel fraction."""

    flux: np.ndarray
    flux_err: np.ndarray
    sky: np.ndarray
    masked_fraction: np.ndarray


@dataclass
class ZeroPoint:
    """A zero point (mag of 1 e/s), its error, the stars used (boolean over the input) and their scatter."""

    value: float
    error: float
    used: np.ndarray
    scatter: float

    @property
    def n_used(self):
        """Number of stars in the final average."""
        return int(self.used.sum())


def aperture_fluxes(image, error, mask, x, y, radius, annulus):
    """Aperture photometry with a local sky annulus.

    Parameters
    ----------
    image, error : numpy.ndarray
        The image and its 1-sigma uncertainty (same unit).
    mask : numpy.ndarray of bool
        Unusable pixels: left out of the sums and of the sky.
    x, y : array_like
        Aperture centres (0-based px).
    radius : float
        Aperture radius (px).
    annulus : (float, float)
        Inner and outer radius of the sky annulus (px).

    Returns
    -------
    ApertureFluxes
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size == 0:
        z = np.zeros(0)
        return ApertureFluxes(z, z, z, z)
    xy = np.column_stack([x, y])
    aperture = CircularAperture(xy, r=radius)
    ring = CircularAnnulus(xy, r_in=annulus[0], r_out=annulus[1])
    sky = np.asarray(ApertureStats(image, ring, mask=mask, sigma_clip=SigmaClip(sigma=3.0, maxiters=5)).median, float)
    table = aperture_photometry(image, aperture, error=error, mask=mask)
    unmasked = np.asarray(aperture_photometry(np.ones(image.shape, np.float32), aperture, mask=mask)["aperture_sum"], float)
    area = np.pi * radius**2
    sky = np.where(np.isfinite(sky), sky, 0.0)
    flux = np.asarray(table["aperture_sum"], float) - sky * unmasked
    flux_err = np.asarray(table["aperture_sum_err"], float)
    return ApertureFluxes(flux, flux_err, sky, 1.0 - unmasked / area)


def aperture_correction(small, large):
    """Median ratio of the fluxes of bright stars in a large and a small aperture, and its error.

    Parameters
    ----------
    small, large : numpy.ndarray
        Fluxes of the same (bright, isolated, unflagged) stars in the two apertures.

    Returns
    -------
    float, float
        The correction factor (>= 1 for a larger aperture) and its standard error;
        ``(1, nan)`` without usable stars.
    """
    small, large = np.asarray(small, float), np.asarray(large, float)
    ok = (small > 0) & np.isfinite(large)
    if ok.sum() == 0:
        return 1.0, float("nan")
    ratio = large[ok] / small[ok]
    med = float(np.median(ratio))
    err = 1.2533 * 1.4826 * float(np.median(np.abs(ratio - med))) / np.sqrt(ratio.size) if ratio.size > 1 else float("nan")
    return med, err


def fit_zero_point(rate, rate_err, catalogue_mag, *, clip_sigma=3.0, iterations=5, min_stars=3, floor_mag=0.01):
    """Zero point ``m = zp - 2.5 log10(rate)`` from stars of known magnitude, robust against outliers.

    Parameters
    ----------
    rate, rate_err : numpy.ndarray
        Total fluxes per second (e.g. electrons/s) and their errors.
    catalogue_mag : numpy.ndarray
        The stars' catalogue magnitudes in the frame's filter (NaN where unknown).
    clip_sigma, iterations :
        Clipping of outliers (variables, blends, wrong matches) around the weighted mean,
        in robust sigmas of the individual zero points.
    min_stars : int
        Fewer usable stars is an error.
    floor_mag : float
        Added in quadrature to each star's error (catalogue and flat-field errors).

    Returns
    -------
    ZeroPoint

    Raises
    ------
    DataError
        Fewer than ``min_stars`` stars with positive flux and a catalogue magnitude.
    """
    rate, rate_err, mag = (np.asarray(v, float) for v in (rate, rate_err, catalogue_mag))
    ok = (rate > 0) & np.isfinite(mag) & np.isfinite(rate_err)
    if ok.sum() < min_stars:
        raise DataError(f"only {int(ok.sum())} stars with a catalogue magnitude and a positive flux "
                        f"(need {min_stars}) for the zero point")
    with np.errstate(divide="ignore", invalid="ignore"):
        zp = mag + 2.5 * np.log10(rate)
        sig = np.hypot(1.0857 * rate_err / rate, floor_mag)
    used = ok.copy()
    value = float(np.median(zp[used]))
    for _ in range(iterations):
        w = 1.0 / sig[used] ** 2
        value = float(np.sum(w * zp[used]) / np.sum(w))
        dev = zp - value
        scatter = 1.4826 * float(np.median(np.abs(dev[used])))
        limit = clip_sigma * np.maximum(np.hypot(scatter, sig), 1e-4)
        new = ok & (np.abs(dev) <= limit)
        if new.sum() < min_stars or np.array_equal(new, used):
            break
        used = new
    w = 1.0 / sig[used] ** 2
    value = float(np.sum(w * zp[used]) / np.sum(w))
    scatter = float(np.std(zp[used], ddof=1)) if used.sum() > 1 else float("nan")
    # the formal error, or the scatter's where the stars scatter more than their errors say
    error = max(float(1.0 / np.sqrt(np.sum(w))), scatter / np.sqrt(used.sum()) if np.isfinite(scatter) else 0.0)
    log.info("zero point %.3f +- %.3f from %d stars (scatter %.3f)", value, error, int(used.sum()), scatter)
    return ZeroPoint(value, error, used, scatter)


def limiting_magnitude(zero_point, sky_sigma, radius, *, exptime, aperture_corr=1.0, nsigma=5.0):
    """Magnitude of a point source detected at ``nsigma`` in the aperture of ``radius`` px on the sky noise.

    ``sky_sigma`` is the per-pixel sky noise (same unit as the fluxes, over ``exptime``);
    ``zero_point`` is for 1 unit per second.
    """
    noise = sky_sigma * np.sqrt(np.pi * radius**2)
    return float(zero_point - 2.5 * np.log10(nsigma * noise * aperture_corr / exptime))
