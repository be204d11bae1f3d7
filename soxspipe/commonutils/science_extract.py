"""The spectrum of the object in every order of a sky-free frame, and the orders merged.

:func:`extract_order` runs the optimal extraction (Horne 1986, with rejection
of outlying pixels) and the boxcar extraction of one order on the same
wavelength bins; the boxcar leaves out the pixels the optimal extraction
rejected, so that a cosmic ray on the trace spoils neither, and measures the
sky under its aperture. (The optimal extraction gives each pixel to the bin
that holds its centre, the boxcar shares it between the bins it overlaps: the
boxcar's sky keeps the sky lines where they are to a few hundredths of a
pixel, where whole pixels would move them by up to a few tenths.) Each bin gets
a quality flag (:data:`QUAL_BITS`). :func:`merge_spectra` resamples the orders onto
one wavelength grid and averages them with inverse-variance weights where they
overlap; the sky is merged with the same weights. No I/O.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

from .extraction import BinnedSpectrum, BoxcarExtraction, OptimalExtraction, wavelength_edges
from .resample import linear_edges, merge_orders, pixel_step

log = logging.getLogger(__name__)

#: Bits of the ``QUAL`` column of the extracted spectra (0: good).
QUAL_BITS = {
    "no_data": 1,  # no usable pixel: FLUX and ERR are NaN
    "object_not_found": 2,  # the object was not detected (in any order): extracted where it was expected
    "incomplete": 4,  # under half the order's typical pixels (masked or rejected pixels, the order's ends)
}


@dataclass
class OrderSpectrum(BinnedSpectrum):
    """The extracted spectrum of one order: optimal and boxcar on the same bins, counts per nm.

    Attributes
    ----------
    order : int
    edges : numpy.ndarray
        ``(n + 1,)`` wavelength bin edges (nm).
    flux, error : numpy.ndarray
        Optimal extraction and its standard deviation.
    flux_box, error_box : numpy.ndarray
        Boxcar extraction and its standard deviation.
    sky : numpy.ndarray
        Sky under the boxcar aperture (its pixels shared between the bins by overlap, as the boxcar's).
    qual : numpy.ndarray of int
        :data:`QUAL_BITS` per bin.
    rejected : numpy.ndarray of bool
        The frame's pixels the optimal extraction rejected.
    object_model : numpy.ndarray
        The object's counts the optimal extraction models in every pixel (0 outside its window).
    """

    order: int
    edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    flux_box: np.ndarray
    error_box: np.ndarray
    sky: np.ndarray
    qual: np.ndarray
    rejected: np.ndarray = field(default=None, repr=False)
    object_model: np.ndarray = field(default=None, repr=False)


def extract_order(order, flux, variance, wavelength, slit, pixels, *, sky, sky_variance, trace, optimal_half_width,
                  boxcar_half_width, bad=None, flagged=None, read_noise=None, found=True, profile_degree=2,
                  profile_spacing=None, sigma=5.0):
    """Optimal and boxcar extraction of one order of a sky-free frame.

    Parameters
    ----------
    order : int
    flux, variance : numpy.ndarray
        2D frame (counts, the sky already removed) and its variance.
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec).
    pixels : numpy.ndarray of bool
        The order's pixels.
    sky, sky_variance : numpy.ndarray
        The sky model that was removed (counts) and its variance: the optimal
        extraction's noise model needs it.
    trace : callable
        Slit position of the object against wavelength.
    optimal_half_width, boxcar_half_width : float
        Half widths (arcsec) of the optimal window and the boxcar aperture.
    bad : numpy.ndarray of bool, optional
    flagged : numpy.ndarray of bool, optional
        Pixels flagged as cosmic rays beforehand (L.A.Cosmic): inside the optimal window its own
        rejection judges them (L.A.Cosmic can mistake sharp spectral features for rays), beyond it
        the boxcar leaves them out.
    read_noise : float, optional
        Read noise of the frame (counts); given, the optimal extraction takes its variances from the model.
    found : bool
        Whether the object was detected (else every bin is flagged ``object_not_found``).
    profile_degree : int
        Degree in wavelength of the spatial profile.
    profile_spacing : float, optional
        Knot spacing (arcsec) of the spatial profile along the slit (default: one pixel).
    sigma : float
        Rejection threshold of the optimal extraction.

    Returns
    -------
    OrderSpectrum
    """
    # the bins follow the whole order, so that they do not depend on where the object is
    edges = wavelength_edges(wavelength, pixels)
    # only the pixels near the object: the extractions model each pixel's area in (wavelength, slit)
    # from the pixels they are given, and the optimal flux scales with it where the object is
    margin = 2.0 * pixel_step(slit, pixels)
    with np.errstate(invalid="ignore"):
        near = pixels & (np.abs(slit - trace(wavelength)) <= max(optimal_half_width, boxcar_half_width) + margin)
    # the extractions subtract the sky they are given from the frame: it is given back to them, so that
    # the optimal extraction's noise model sees it and the boxcar measures it under its aperture
    with_sky = np.where(pixels, np.asarray(flux) + sky, flux)
    optimal = OptimalExtraction(trace, optimal_half_width, edges, read_noise=read_noise,
                                profile_degree=profile_degree, profile_spacing=profile_spacing, sigma=sigma)
    opt = optimal(with_sky, variance, wavelength, slit, near, sky=sky, sky_variance=sky_variance, bad=bad)
    rejected = opt.rejected if bad is None else (opt.rejected | bad)
    if flagged is not None:
        with np.errstate(invalid="ignore"):
            rejected = rejected | (flagged & ~(np.abs(slit - trace(wavelength)) <= optimal_half_width))
    box = BoxcarExtraction(trace, boxcar_half_width, edges)(with_sky, variance, wavelength, slit, near, sky=sky,
                                                            sky_variance=sky_variance, bad=rejected)
    qual = np.where(np.isfinite(opt.flux) & np.isfinite(opt.error), 0, QUAL_BITS["no_data"])
    typical = np.median(opt.n_pixels[opt.n_pixels > 0]) if np.any(opt.n_pixels > 0) else 0
    qual |= np.where(opt.n_pixels < 0.5 * typical, QUAL_BITS["incomplete"], 0)
    if not found:
        qual |= QUAL_BITS["object_not_found"]
    return OrderSpectrum(int(order), edges, opt.flux, opt.error, box.flux, box.error, box.sky, qual.astype(np.int32),
                         opt.rejected, opt.model)


@dataclass
class MergedScience:
    """Result of :func:`merge_spectra`: the orders on one grid.

    Attributes
    ----------
    edges : numpy.ndarray
    flux, error, sky : numpy.ndarray
        Counts per nm (NaN where no order contributes).
    n_orders : numpy.ndarray of int
    qual : numpy.ndarray of int
        :data:`QUAL_BITS`: ``no_data`` where no order contributes, ``object_not_found`` everywhere
        when the object was not detected at all.
    """

    edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    sky: np.ndarray
    n_orders: np.ndarray
    qual: np.ndarray

    @property
    def wavelength(self):
        """Bin centres (nm)."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])


def merge_spectra(spectra, step, *, found=True, min_coverage=0.999):
    """Merge the orders onto one grid of ``step`` nm with inverse-variance weights.

    Bins flagged ``no_data`` or ``incomplete`` are left out of the merge.

    Parameters
    ----------
    spectra : sequence of OrderSpectrum
    step : float
        Bin width of the merged spectrum (nm).
    found : bool
        Whether the object was detected at all (else every bin is flagged ``object_not_found``).
    min_coverage : float
        See :func:`~.resample.merge_orders`.

    Returns
    -------
    MergedScience
    """
    low = min(float(s.edges[0]) for s in spectra)
    high = max(float(s.edges[-1]) for s in spectra)
    edges = linear_edges(low, high, step)
    usable = [(s.qual & (QUAL_BITS["no_data"] | QUAL_BITS["incomplete"])) == 0 for s in spectra]
    flux = merge_orders([(s.edges, np.where(u, s.flux, np.nan), s.error) for s, u in zip(spectra, usable)], edges,
                        min_coverage=min_coverage)
    # the same errors give the same weights: the sky under the object, merged as the object is
    sky = merge_orders([(s.edges, np.where(u, s.sky, np.nan), s.error) for s, u in zip(spectra, usable)], edges,
                       min_coverage=min_coverage)
    qual = np.where(flux.n_orders > 0, 0, QUAL_BITS["no_data"]).astype(np.int32)
    if not found:
        qual |= QUAL_BITS["object_not_found"]
    return MergedScience(edges, flux.flux, flux.error, sky.flux, flux.n_orders.astype(np.int32), qual)
