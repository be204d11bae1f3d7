"""Object finding, tracing and extraction on the unrectified frame, in (wavelength, slit) space.

All functions work on the pixels of one order, through the per-pixel wavelength
and slit maps; nothing is resampled before extraction. The output spectrum is a
flux density (counts per nm) on wavelength bins whose width follows the
order's dispersion; a pixel belongs to the bin that contains its centre.

- :func:`find_object`: the order collapsed along wavelength (a median per slit
  bin) gives the object's slit position and FWHM.
- :func:`trace_object`: centroids in wide wavelength bins, fitted by a clipped
  polynomial ``slit(lambda)``.
- :class:`BoxcarExtraction`: the counts in an aperture, each pixel shared
  between the wavelength bins and the aperture by overlap (a 1D drizzle), so
  that the varying number of pixels per bin leaves no sampling ripple.
- :class:`OptimalExtraction`: Horne (1986) with the spatial profile a
  smooth function of (offset from the trace, wavelength): a cubic B-spline in
  offset times a Legendre polynomial in wavelength, fitted by weighted linear
  least squares to all the pixels of the order at once and normalised to unit
  integral in every bin; then the optimal weights, the model variance and the
  rejection of the worst outlier of each bin, iterated.

No I/O.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage, sparse

from .bsplines import basis, solve_weighted, uniform_knots
from .polynomials import Polynomial, design_matrix, fit_clipped
from .resample import linear_edges, pixel_area, pixel_step

log = logging.getLogger(__name__)


def grouped_median(groups, values, n_groups):
    """Median of ``values`` in each group ``0 .. n_groups - 1`` (NaN for an empty group), without a loop."""
    groups = np.asarray(groups)
    values = np.asarray(values, dtype=float)
    order = np.lexsort((values, groups))
    counts = np.bincount(groups, minlength=n_groups)
    starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
    lower = values[order][np.clip(starts + (counts - 1) // 2, 0, max(values.size - 1, 0))]
    upper = values[order][np.clip(starts + counts // 2, 0, max(values.size - 1, 0))]
    return np.where(counts > 0, 0.5 * (lower + upper), np.nan)


@dataclass
class ObjectPosition:
    """Result of :func:`find_object`.

    Attributes
    ----------
    slit : float
        Slit position of the object (arcsec).
    fwhm : float
        Its full width at half maximum along the slit (arcsec).
    peak : float
        Peak of the collapsed profile (median counts per pixel above the background).
    profile_slit : numpy.ndarray
        Slit positions of the collapsed profile (arcsec).
    profile : numpy.ndarray
        The collapsed profile: median counts per slit bin.
    """

    slit: float
    fwhm: float
    peak: float
    profile_slit: np.ndarray = field(repr=False)
    profile: np.ndarray = field(repr=False)


def _valid(flux, pixels, bad, *maps):
    valid = pixels & np.isfinite(flux)
    for m in maps:
        valid &= np.isfinite(m)
    return valid if bad is None else valid & ~bad


def find_object(flux, wavelength, slit, pixels, *, sky=None, bad=None, slit_step=None):
    """Find the brightest object along the slit of one order.

    Parameters
    ----------
    flux : numpy.ndarray
        2D frame (counts).
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec).
    pixels : numpy.ndarray of bool
        The pixels of the order.
    sky : numpy.ndarray, optional
        Sky model to subtract; without it, the median of the collapsed profile is taken as background.
    bad : numpy.ndarray of bool, optional
        Pixels left out.
    slit_step : float, optional
        Width of the slit bins (default: the slit step of one pixel).

    Returns
    -------
    ObjectPosition
    """
    use = _valid(flux, pixels, bad, wavelength, slit)
    step = slit_step or pixel_step(slit, pixels)
    s = slit[use].astype(float)
    values = flux[use].astype(float) - (0.0 if sky is None else sky[use])
    index = np.round((s - s.min()) / step).astype(int)
    n = index.max() + 1
    profile = grouped_median(index, values, n)
    count = np.bincount(index, minlength=n)
    # the mean slit position of each bin's pixels, not the bin's nominal centre: pixels may sit on a grid
    centres = np.bincount(index, s, minlength=n) / np.maximum(count, 1)
    profile, centres = profile[count > 0], centres[count > 0]
    n = centres.size
    if sky is None:
        profile = profile - np.nanmedian(profile)
    profile = np.where(np.isfinite(profile), profile, 0.0)
    top = int(np.argmax(profile))
    half = 0.5 * profile[top]
    below_left = np.flatnonzero(profile[:top] < half)
    below_right = np.flatnonzero(profile[top:] < half) + top
    left = below_left[-1] if below_left.size else 0
    right = below_right[0] if below_right.size else n - 1

    def crossing(i, j):
        # linear interpolation of the half-maximum crossing between bins i and j
        if profile[j] == profile[i]:
            return centres[i]
        return centres[i] + (half - profile[i]) / (profile[j] - profile[i]) * (centres[j] - centres[i])

    x_left, x_right = crossing(left, left + 1), crossing(right - 1, right)
    return ObjectPosition(float(0.5 * (x_left + x_right)), float(x_right - x_left), float(profile[top]),
                          centres, profile)


@dataclass
class ObjectTrace:
    """Result of :func:`trace_object`.

    Attributes
    ----------
    polynomial : Polynomial
        Slit position (arcsec) as a function of wavelength (nm).
    wavelength : numpy.ndarray
        Wavelengths of the centroids it was fitted to.
    slit : numpy.ndarray
        Slit positions of those centroids.
    used : numpy.ndarray of bool
        Centroids kept by the clipping.
    """

    polynomial: Polynomial
    wavelength: np.ndarray
    slit: np.ndarray
    used: np.ndarray

    def __call__(self, wavelength):
        """Slit position of the object at ``wavelength``."""
        return self.polynomial(wavelength)


def trace_object(flux, wavelength, slit, pixels, *, position, half_width, sky=None, bad=None, n_bins=20, degree=2,
                 sigma=3.0, passes=2):
    """Trace an object along an order: its slit position as a polynomial in wavelength.

    Parameters
    ----------
    flux : numpy.ndarray
        2D frame (counts).
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec).
    pixels : numpy.ndarray of bool
        The pixels of the order.
    position : float
        First guess of the slit position (e.g. :attr:`ObjectPosition.slit`).
    half_width : float
        Half width (arcsec) of the window in which centroids are measured.
    sky : numpy.ndarray, optional
        Sky model to subtract.
    bad : numpy.ndarray of bool, optional
        Pixels left out.
    n_bins : int
        Number of wavelength bins along the order, one centroid each.
    degree : int
        Degree of the polynomial.
    sigma : float
        Clipping threshold of the fit.
    passes : int
        Each pass after the first centres the window on the previous trace.

    Returns
    -------
    ObjectTrace
    """
    use = _valid(flux, pixels, bad, wavelength, slit)
    w = wavelength[use].astype(float)
    s = slit[use].astype(float)
    d = flux[use].astype(float) - (0.0 if sky is None else sky[use])
    edges = np.linspace(w.min(), w.max() + 1e-9, n_bins + 1)
    index = np.clip(np.searchsorted(edges, w, side="right") - 1, 0, n_bins - 1)
    centre = np.full(w.size, float(position))
    for _ in range(passes):
        inside = np.abs(s - centre) <= half_width
        # negative counts (noise) would pull the centroid anywhere in the window
        weight = np.where(inside, np.clip(d, 0, None), 0.0)
        total = np.bincount(index, weight, minlength=n_bins)
        ok = total > 0
        centroid = np.bincount(index, weight * s, minlength=n_bins)[ok] / total[ok]
        wave = (np.bincount(index, weight * w, minlength=n_bins)[ok] / total[ok])
        fit = fit_clipped([wave], centroid, [min(degree, max(int(ok.sum()) - 1, 0))], sigma=sigma,
                          lows=[edges[0]], highs=[edges[-1]])
        centre = fit.polynomials[0](w)
    return ObjectTrace(fit.polynomials[0], wave, centroid, fit.used)


class BinnedSpectrum:
    """What every binned spectrum (``edges``, ``flux``, ``error`` attributes) offers: bin centres and S/N."""

    @property
    def wavelength(self):
        """Bin centres (nm)."""
        return 0.5 * (self.edges[1:] + self.edges[:-1])

    @property
    def snr(self):
        """Signal-to-noise ratio per bin."""
        with np.errstate(invalid="ignore", divide="ignore"):
            return self.flux / self.error


@dataclass
class Spectrum1D(BinnedSpectrum):
    """An extracted spectrum of one order.

    Attributes
    ----------
    edges : numpy.ndarray
        ``(n + 1,)`` wavelength bin edges (nm).
    flux : numpy.ndarray
        Flux density (counts per nm).
    error : numpy.ndarray
        Its standard deviation.
    sky : numpy.ndarray
        Sky under the object, with the same weights (counts per nm).
    n_pixels : numpy.ndarray
        Pixels used per bin.
    n_rejected : numpy.ndarray
        Pixels rejected per bin.
    rejected : numpy.ndarray of bool, optional
        The frame's pixels rejected by the extraction.
    """

    edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    sky: np.ndarray
    n_pixels: np.ndarray
    n_rejected: np.ndarray = None
    rejected: np.ndarray = field(default=None, repr=False)



def wavelength_edges(wavelength, pixels, *, oversample=1.0):
    """Wavelength bins for an order: its range, by its dispersion per pixel divided by ``oversample``."""
    w = wavelength[pixels]
    w = w[np.isfinite(w)]
    return linear_edges(float(w.min()), float(w.max()), pixel_step(wavelength, pixels) / oversample)


@dataclass
class _OrderPixels:
    """The pixels of one order that an extraction uses, as 1D arrays, with their bin."""

    data: np.ndarray
    variance: np.ndarray
    sky_variance: np.ndarray
    sky: np.ndarray
    wavelength: np.ndarray
    offset: np.ndarray
    area: np.ndarray
    index: np.ndarray
    n_bins: int
    where: tuple

    @classmethod
    def gather(cls, flux, variance, wavelength, slit, pixels, sky, sky_variance, trace, half_width, edges, bad,
               wave_margin=0.0):
        # pixels within wave_margin outside the edges are kept, with an index out of range
        use = _valid(flux, pixels, bad, wavelength, slit, variance)
        area = np.zeros(flux.shape)
        area[pixels] = pixel_area(wavelength, slit, pixels)
        offset = slit - trace(wavelength)
        index = np.searchsorted(edges, wavelength, side="right") - 1
        use &= (np.abs(offset) <= half_width)
        use &= (wavelength >= edges[0] - wave_margin) & (wavelength < edges[-1] + wave_margin)
        sky_var = np.zeros(int(use.sum())) if sky_variance is None else sky_variance[use].astype(float)
        return cls(flux[use].astype(float) - sky[use], variance[use].astype(float) + sky_var, sky_var,
                   sky[use].astype(float),
                   wavelength[use].astype(float), offset[use], area[use], index[use], edges.size - 1,
                   np.nonzero(use))

    def per_bin(self, values):
        return np.bincount(self.index, values, minlength=self.n_bins)


@dataclass
class BoxcarExtraction:
    """Boxcar extraction around a trace.

    Each pixel is taken as a rectangle in (wavelength, slit) of the order's slit
    step by ``area / slit step``, centred on its own wavelength and offset from
    the trace; its counts are shared between the wavelength bins and the
    aperture in proportion to the overlaps. A bin's flux density is the counts
    it collects over its width. The pixels of one bin never tile it exactly (the
    dispersion changes along the order, the lines are tilted), and sharing them
    by overlap, as a 1D drizzle, keeps that from showing as a sampling ripple.

    Attributes
    ----------
    trace : callable
        Slit position (arcsec) of the object as a function of wavelength (e.g. :class:`ObjectTrace`).
    half_width : float
        Half width of the aperture (arcsec).
    edges : numpy.ndarray, optional
        Wavelength bin edges (default :func:`wavelength_edges`).
    """

    trace: object
    half_width: float
    edges: np.ndarray = None

    def __call__(self, flux, variance, wavelength, slit, pixels, *, sky, sky_variance=None, bad=None):
        """Extract one order.

        Parameters
        ----------
        flux, variance : numpy.ndarray
            2D frame and its variance (counts).
        wavelength, slit : numpy.ndarray
            2D maps (nm, arcsec).
        pixels : numpy.ndarray of bool
            The pixels of the order.
        sky, sky_variance : numpy.ndarray
            Sky model (counts) and its variance.
        bad : numpy.ndarray of bool, optional
            Pixels left out.

        Returns
        -------
        Spectrum1D
        """
        edges = wavelength_edges(wavelength, pixels) if self.edges is None else np.asarray(self.edges, float)
        step = pixel_step(slit, pixels)
        widths = np.diff(edges)
        p = _OrderPixels.gather(flux, variance, wavelength, slit, pixels, sky, sky_variance, self.trace,
                                self.half_width + 0.5 * step, edges, bad, wave_margin=2 * widths.max())
        in_aperture = np.clip((np.minimum(p.offset + 0.5 * step, self.half_width)
                               - np.maximum(p.offset - 0.5 * step, -self.half_width)) / step, 0, 1)
        extent = p.area / step
        low, high = p.wavelength - 0.5 * extent, p.wavelength + 0.5 * extent
        first = np.searchsorted(edges, low, side="right") - 1
        n_bins = edges.size - 1
        counts, variances, skies, used = (np.zeros(n_bins) for _ in range(4))
        for k in range(int(np.ceil(extent.max() / widths.min())) + 1):
            b = first + k
            ok = (b >= 0) & (b < n_bins)
            bc = np.clip(b, 0, n_bins - 1)
            overlap = np.clip(np.minimum(high, edges[bc + 1]) - np.maximum(low, edges[bc]), 0, None) / extent
            share = np.where(ok, overlap * in_aperture, 0.0)
            counts += np.bincount(bc, share * p.data, minlength=n_bins)
            variances += np.bincount(bc, share ** 2 * p.variance, minlength=n_bins)
            skies += np.bincount(bc, share * p.sky, minlength=n_bins)
            used += np.bincount(bc, share > 0, minlength=n_bins)
        empty = used == 0
        result, error, sky_density = counts / widths, np.sqrt(variances) / widths, skies / widths
        result[empty], error[empty], sky_density[empty] = np.nan, np.nan, np.nan
        return Spectrum1D(edges, result, error, sky_density, used.astype(int), np.zeros(n_bins, int))


@dataclass
class OptimalExtraction:
    """Optimal extraction (Horne 1986) on the unrectified frame.

    Attributes
    ----------
    trace : callable
        Slit position (arcsec) of the object as a function of wavelength.
    half_width : float
        Half width (arcsec) of the window extracted; the profile is 0 outside it.
    edges : numpy.ndarray, optional
        Wavelength bin edges (default :func:`wavelength_edges`).
    read_noise : float, optional
        Read noise (counts): when given, the variance of every pixel is recomputed
        from the model (sky + object) after each iteration, as in Horne (1986),
        instead of taken from the noisy data, which would bias faint fluxes low.
    profile_spacing : float, optional
        Knot spacing (arcsec) of the profile's B-spline in slit offset (default: one pixel's slit step).
    profile_degree : int
        Degree of the profile's variation with wavelength.
    smooth : int
        Bins of the running median applied to the boxcar spectrum that scales the profile fit.
    sigma : float
        Rejection threshold (standard deviations); the worst pixel of a bin above it goes per iteration.
    max_iterations : int
        Maximum rejection iterations per profile fit.
    passes : int
        Profile fits, each after the rejections of the previous one.
    """

    trace: object
    half_width: float
    edges: np.ndarray = None
    read_noise: float = None
    profile_spacing: float = None
    profile_degree: int = 2
    smooth: int = 9
    sigma: float = 5.0
    max_iterations: int = 10
    passes: int = 2

    def __call__(self, flux, variance, wavelength, slit, pixels, *, sky, sky_variance=None, bad=None):
        """Extract one order; the arguments are those of :meth:`BoxcarExtraction.__call__`.

        Returns
        -------
        Spectrum1D
            With ``n_rejected`` and ``rejected``.
        """
        edges = wavelength_edges(wavelength, pixels) if self.edges is None else np.asarray(self.edges, float)
        boxcar = BoxcarExtraction(self.trace, self.half_width, edges)(
            flux, variance, wavelength, slit, pixels, sky=sky, sky_variance=sky_variance, bad=bad)
        p = _OrderPixels.gather(flux, variance, wavelength, slit, pixels, sky, sky_variance, self.trace,
                                self.half_width, edges, bad)
        scale = ndimage.median_filter(np.nan_to_num(boxcar.flux), size=self.smooth, mode="nearest")
        spacing = self.profile_spacing or pixel_step(slit, pixels)
        knots = uniform_knots(-self.half_width, self.half_width, spacing)
        spline = basis(p.offset, knots)
        lows, highs = [edges[0]], [edges[-1]]
        legendre = design_matrix([p.wavelength], [self.profile_degree], lows, highs)
        grid = np.linspace(-self.half_width, self.half_width, 8 * len(knots) + 1)
        grid_basis = basis(grid, knots).toarray()
        centres = 0.5 * (edges[1:] + edges[:-1])
        centre_legendre = design_matrix([centres], [self.profile_degree], lows, highs)
        keep = np.ones(p.index.size, bool)
        variance_model = p.variance
        for _ in range(self.passes):
            weight = _profile_weights(p, spline, legendre, scale, keep, variance_model,
                                      grid, grid_basis, centre_legendre)
            for _ in range(self.max_iterations):
                estimate = _weighted_estimate(p, weight, keep, variance_model)
                if self.read_noise is not None:
                    model = np.clip(p.sky + estimate[p.index] * weight, 0, None)
                    variance_model = model + self.read_noise ** 2 + p.sky_variance
                chi = np.where(keep, np.abs(p.data - estimate[p.index] * weight) / np.sqrt(variance_model), 0.0)
                candidates = _worst_per_bin(chi, p.index, p.n_bins)
                reject = candidates[chi[candidates] > self.sigma]
                if reject.size == 0:
                    break
                keep[reject] = False
            scale = ndimage.median_filter(estimate, size=self.smooth, mode="nearest")
        denominator = p.per_bin(keep * weight ** 2 / variance_model)
        with np.errstate(invalid="ignore", divide="ignore"):
            flux_out = p.per_bin(keep * weight * p.data / variance_model) / denominator
            error = 1.0 / np.sqrt(denominator)
            sky_out = p.per_bin(keep * weight * p.sky / variance_model) / denominator
        n_used = p.per_bin(keep.astype(float)).astype(int)
        n_rejected = p.per_bin((~keep).astype(float)).astype(int)
        rejected = np.zeros(flux.shape, bool)
        rejected[p.where] = ~keep
        empty = denominator <= 0
        flux_out[empty], error[empty], sky_out[empty] = np.nan, np.nan, np.nan
        return Spectrum1D(edges, flux_out, error, sky_out, n_used, n_rejected, rejected)


def _profile_weights(p, spline, legendre, scale, keep, variance, grid, grid_basis, centre_legendre):
    """The spatial profile times the pixel area, normalised to unit integral over the window in every bin.

    The profile is fitted in count space, ``data ~ F(bin) * area * P(offset, lambda)``
    with ``F`` the smoothed spectrum ``scale``, so that it is one weighted linear
    least squares over all the pixels; it is normalised on a fine offset grid at
    every bin centre, negative values set to 0.
    """
    amplitude = scale[p.index] * p.area
    rows = sparse.hstack([spline.multiply((amplitude * legendre[:, k])[:, None])
                          for k in range(legendre.shape[1])]).tocsr()
    coeffs = solve_weighted(rows, p.data, keep / variance).reshape(legendre.shape[1], -1).T
    norm = np.trapezoid(np.clip(grid_basis @ coeffs @ centre_legendre.T, 0, None), grid, axis=0)
    profile = np.clip(np.asarray((spline @ coeffs * legendre).sum(axis=1)).ravel(), 0, None)
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(norm[p.index] > 0, profile / norm[p.index], 0.0) * p.area


def _weighted_estimate(p, weight, keep, variance):
    """Horne's estimate per bin, ``sum(w d / V) / sum(w^2 / V)`` over the pixels kept (0 where none)."""
    denominator = p.per_bin(keep * weight ** 2 / variance)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = p.per_bin(keep * weight * p.data / variance) / denominator
    return np.where(np.isfinite(estimate), estimate, 0.0)


def _worst_per_bin(values, index, n_bins):
    """Position of the largest of ``values`` in every non-empty bin."""
    ranked = np.lexsort((values, index))
    last = np.cumsum(np.bincount(index, minlength=n_bins)) - 1
    return ranked[np.unique(last[last >= 0])]
