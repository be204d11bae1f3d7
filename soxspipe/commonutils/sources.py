"""Point sources in an image: detection, centroids, isolation and the seeing FWHM.

Detection thresholds a Gaussian-smoothed, sky-subtracted image and labels the
connected pixels with photutils' segmentation; each source's position is then
refined with a Gaussian-windowed centroid (as SExtractor's ``XWIN``), computed
for all sources at once on stamps. The FWHM comes from the area above half
maximum of the brightest isolated, unflagged stars. No I/O.
"""

import logging
import warnings
from dataclasses import dataclass

import numpy as np
from photutils.segmentation import SourceCatalog, detect_sources
from photutils.utils.exceptions import NoDetectionsWarning
from scipy import ndimage
from scipy.spatial import cKDTree

from .detector_qc import robust_stats

log = logging.getLogger(__name__)

FWHM_TO_SIGMA = 1.0 / (2.0 * np.sqrt(2.0 * np.log(2.0)))
#: squared FWHM of the Gaussian with a pixel's variance (1/12 px^2)
_PIXEL_FWHM2 = 8.0 * np.log(2.0) / 12.0


@dataclass
class Sources:
    """Detected sources, brightest first; positions 0-based, x along NAXIS1.

    ``flux`` is the sky-subtracted flux of the detection segment; ``peak`` its
    highest pixel above the sky; ``flagged`` marks a source touching a flagged
    pixel (saturated, bad, a cosmic ray) or the edge of the usable area.
    """

    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    peak: np.ndarray
    flagged: np.ndarray

    def __len__(self):
        return len(self.x)

    def take(self, index):
        """The subset of sources at ``index`` (boolean or integer)."""
        return Sources(*(np.asarray(getattr(self, n))[index] for n in ("x", "y", "flux", "peak", "flagged")))


def _stamps(image, x, y, half):
    """Stamps ``(n, 2 half + 1, 2 half + 1)`` centred on the nearest pixels, edges clamped; and their pixel grids."""
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    d = np.arange(-half, half + 1)
    px = np.clip(ix[:, None] + d, 0, image.shape[1] - 1)
    py = np.clip(iy[:, None] + d, 0, image.shape[0] - 1)
    stamps = image[py[:, :, None], px[:, None, :]]
    return stamps, px[:, None, :].astype(np.float64), py[:, :, None].astype(np.float64)


def windowed_centroid(image, x, y, sigma, *, half=None, iterations=10):
    """Gaussian-windowed centroids of the sources near ``(x, y)`` on a sky-subtracted image.

    Each iteration weights the stamp with a Gaussian of ``sigma`` (px) centred on the
    current estimate, which converges to the centre of a symmetric source with far
    less noise than an unweighted first moment.

    Parameters
    ----------
    image : numpy.ndarray
        Sky-subtracted image.
    x, y : array_like
        First guesses, 0-based pixels.
    sigma : float
        Window width (px), about the PSF's Gaussian sigma.
    half : int, optional
        Stamp half-size (default ``4 sigma``).
    iterations : int

    Returns
    -------
    x, y : numpy.ndarray
        Refined positions (a source whose window holds no positive flux keeps its guess).
    """
    x, y = np.asarray(x, float).copy(), np.asarray(y, float).copy()
    if x.size == 0:
        return x, y
    half = int(np.ceil(4 * sigma)) if half is None else int(half)
    stamps, px, py = _stamps(image, x, y, half)
    stamps = stamps.astype(np.float64)
    for _ in range(iterations):
        r2 = (px - x[:, None, None]) ** 2 + (py - y[:, None, None]) ** 2
        w = stamps * np.exp(-r2 / (2 * sigma**2))
        total = w.sum(axis=(1, 2))
        ok = total > 0
        nx = np.where(ok, (w * px).sum(axis=(1, 2)) / np.where(ok, total, 1), x)
        ny = np.where(ok, (w * py).sum(axis=(1, 2)) / np.where(ok, total, 1), y)
        # a window that wanders more than a stamp away is lost: keep the guess
        lost = np.hypot(nx - x, ny - y) > half
        x, y = np.where(lost, x, nx), np.where(lost, y, ny)
    return x, y


def detect(image, mask, *, fwhm, nsigma=5.0, npixels=5, flag_mask=None, sky=None):
    """Detect point sources.

    Parameters
    ----------
    image : numpy.ndarray
        The image (electrons), sky included unless ``sky`` is 0.
    mask : numpy.ndarray of bool
        Pixels not to use (outside the field, bad).
    fwhm : float
        Expected FWHM (px): sets the smoothing kernel and centroid window.
    nsigma : float
        Detection threshold in sigmas of the smoothed image's noise.
    npixels : int
        Minimum connected pixels above the threshold.
    flag_mask : numpy.ndarray of bool, optional
        Pixels that flag a source touching them (saturated, cosmic rays...). Default: ``mask``.
    sky : float, optional
        Sky level to subtract (default: the robust median of the unmasked pixels).

    Returns
    -------
    Sources
        Brightest first; empty when nothing is detected.
    sky, sky_sigma : float
        The sky level and the per-pixel sky noise (robust).
    """
    median, sky_sigma = robust_stats(image, mask)
    sky = median if sky is None else sky
    work = np.asarray(image, np.float32) - np.float32(sky)
    work[mask] = 0.0
    sigma = fwhm * FWHM_TO_SIGMA
    smoothed = ndimage.gaussian_filter(work, sigma, mode="constant")
    _, smooth_sigma = robust_stats(smoothed, mask)
    empty = Sources(*(np.zeros(0) for _ in range(4)), np.zeros(0, bool))
    if not np.isfinite(smooth_sigma) or smooth_sigma <= 0:
        return empty, sky, sky_sigma
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", NoDetectionsWarning)  # an empty result says it
        segm = detect_sources(smoothed, nsigma * smooth_sigma, npixels, mask=mask)  # positional: renamed in photutils 3
    if segm is None:
        return empty, sky, sky_sigma
    cat = SourceCatalog(work, segm, convolved_data=smoothed, mask=mask)
    # photutils 3 renamed the centroid attributes
    x0 = np.asarray(getattr(cat, "x_centroid", None) if hasattr(cat, "x_centroid") else cat.xcentroid, float)
    y0 = np.asarray(getattr(cat, "y_centroid", None) if hasattr(cat, "y_centroid") else cat.ycentroid, float)
    flux = np.asarray(cat.segment_flux, float)
    peak = np.asarray(cat.max_value, float)
    good = np.isfinite(x0) & np.isfinite(y0) & np.isfinite(flux) & (flux > 0)
    flags = mask if flag_mask is None else flag_mask
    touched = ndimage.maximum(np.asarray(flags, np.uint8), labels=segm.data, index=segm.labels) > 0
    # a segment that borders the unusable area is cut: flag it too
    grown = ndimage.binary_dilation(mask, iterations=2) & ~mask
    touched |= ndimage.maximum(grown.astype(np.uint8), labels=segm.data, index=segm.labels) > 0
    x, y = windowed_centroid(work, x0[good], y0[good], sigma)
    order = np.argsort(-flux[good])
    found = Sources(x[order], y[order], flux[good][order], peak[good][order], np.asarray(touched)[good][order])
    log.info("%d sources detected above %.1f sigma", len(found), nsigma)
    return found, sky, sky_sigma


def isolated(x, y, radius):
    """True for sources with no other source within ``radius`` pixels."""
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size < 2:
        return np.ones(x.size, bool)
    dist, _ = cKDTree(np.column_stack([x, y])).query(np.column_stack([x, y]), k=2)
    return dist[:, 1] > radius


def measure_fwhm(image, x, y, *, half=12):
    """FWHM (px) of stars from the area above half their peak: ``2 sqrt(area / pi)``, per star.

    The peak is the vertex of a paraboloid through the 3x3 pixels around the
    stamp's centre (the star's nearest pixel). Only pixels connected to the centre
    count, so neighbours do not inflate the area. The pixel's own width (a box of
    variance 1/12 px^2) is removed in quadrature.

    Parameters
    ----------
    image : numpy.ndarray
        Sky-subtracted image.
    x, y : array_like
        Star positions (bright, unsaturated, isolated stars).
    half : int
        Stamp half-size (px).

    Returns
    -------
    numpy.ndarray
        FWHM per star (NaN where it cannot be measured).
    """
    x, y = np.asarray(x, float), np.asarray(y, float)
    if x.size == 0:
        return np.zeros(0)
    stamps, _, _ = _stamps(image, x, y, half)
    stamps = stamps.astype(np.float64)
    c = half
    core = stamps[:, c - 1:c + 2, c - 1:c + 2]
    # paraboloid through the 3x3 core: peak = f0 - (fx^2 / (4 fxx) + fy^2 / (4 fyy))
    f0 = core[:, 1, 1]
    fx, fy = (core[:, 1, 2] - core[:, 1, 0]) / 2, (core[:, 2, 1] - core[:, 0, 1]) / 2
    fxx, fyy = core[:, 1, 2] + core[:, 1, 0] - 2 * f0, core[:, 2, 1] + core[:, 0, 1] - 2 * f0
    with np.errstate(divide="ignore", invalid="ignore"):
        peak = f0 - np.where(fxx < 0, fx**2 / (2 * fxx), 0) - np.where(fyy < 0, fy**2 / (2 * fyy), 0)
    peak = np.maximum(peak, f0)
    above = stamps > (peak / 2)[:, None, None]
    fwhm = np.full(x.size, np.nan)
    for k in range(x.size):  # a few tens of stars: label each small stamp
        labels, _ = ndimage.label(above[k])
        centre = labels[c, c]
        if centre and peak[k] > 0:
            fwhm[k] = 2 * np.sqrt((labels == centre).sum() / np.pi)
    return np.sqrt(np.maximum(fwhm**2 - _PIXEL_FWHM2, 0.0))
