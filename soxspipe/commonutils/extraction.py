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
  integral in every bin (its negative values included); then the optimal
  weights from a model of the variance, and the rejection of the worst outlier
  of each bin, iterated. The errors come from the variances given with the
  frame, the sky model's counted as correlated between the pixels of a bin.

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


def find_object(flux, wavelength, slit, pixels, *, sky=None, bad=None, slit_step=None, window=None):
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
    window : tuple of float, optional
        ``(low, high)`` slit range (arcsec) the peak is looked for in; the profile (and its
        background) still covers all the pixels.

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
    if sky is None:
        profile = profile - np.nanmedian(profile)
    profile = np.where(np.isfinite(profile), profile, 0.0)
    inside = np.ones(centres.size, bool) if window is None else (centres >= window[0]) & (centres <= window[1])
    if not inside.any():
        raise ValueError(f"no pixel within the slit range {window[0]:.2f} to {window[1]:.2f} arcsec")
    # the peak and its half-maximum crossings within the window only
    first, last = np.flatnonzero(inside)[[0, -1]]
    local, local_centres = profile[first:last + 1], centres[first:last + 1]
    n = local.size
    top = int(np.argmax(local))
    half = 0.5 * local[top]
    below_left = np.flatnonzero(local[:top] < half)
    below_right = np.flatnonzero(local[top:] < half) + top
    left = below_left[-1] if below_left.size else 0
    right = below_right[0] if below_right.size else n - 1

    def crossing(i, j):
        # linear interpolation of the half-maximum crossing between bins i and j
        if j < 0 or j >= n or local[j] == local[i]:
            return local_centres[i]
        return local_centres[i] + (half - local[i]) / (local[j] - local[i]) * (local_centres[j] - local_centres[i])

    x_left, x_right = crossing(left, left + 1), crossing(right - 1, right)
    return ObjectPosition(float(0.5 * (x_left + x_right)), float(x_right - x_left), float(local[top]),
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
    model : numpy.ndarray, optional
        The object's counts the extraction models in every pixel of the frame (flux times profile;
        0 outside its window).
    """

    edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    sky: np.ndarray
    n_pixels: np.ndarray
    n_rejected: np.ndarray = None
    rejected: np.ndarray = field(default=None, repr=False)
    model: np.ndarray = field(default=None, repr=False)



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
    sky_correlation : float
        Mean correlation of the sky model's errors between two pixels of a bin
        (see :class:`OptimalExtraction`).
    """

    trace: object
    half_width: float
    edges: np.ndarray = None
    sky_correlation: float = 0.5

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
        counts, variances, skies, used, sky_errors, sky_variances = (np.zeros(n_bins) for _ in range(6))
        sky_sigma = np.sqrt(np.clip(p.sky_variance, 0, None))
        for k in range(int(np.ceil(extent.max() / widths.min())) + 1):
            b = first + k
            ok = (b >= 0) & (b < n_bins)
            bc = np.clip(b, 0, n_bins - 1)
            overlap = np.clip(np.minimum(high, edges[bc + 1]) - np.maximum(low, edges[bc]), 0, None) / extent
            share = np.where(ok, overlap * in_aperture, 0.0)
            counts += np.bincount(bc, share * p.data, minlength=n_bins)
            variances += np.bincount(bc, share ** 2 * p.variance, minlength=n_bins)
            sky_errors += np.bincount(bc, share * sky_sigma, minlength=n_bins)
            sky_variances += np.bincount(bc, (share * sky_sigma) ** 2, minlength=n_bins)
            skies += np.bincount(bc, share * p.sky, minlength=n_bins)
            used += np.bincount(bc, share > 0, minlength=n_bins)
        empty = used == 0
        # the sky model's errors are correlated between the pixels of a bin (OptimalExtraction.sky_correlation)
        variances += self.sky_correlation * (sky_errors ** 2 - sky_variances)
        result, error, sky_density = counts / widths, np.sqrt(variances) / widths, skies / widths
        result[empty], error[empty], sky_density[empty] = np.nan, np.nan, np.nan
        return Spectrum1D(edges, result, error, sky_density, used.astype(int), np.zeros(n_bins, int))


@dataclass
class OptimalExtraction:
    """Optimal extraction (Horne 1986) on the unrectified frame.

    The spatial profile ``P(offset, lambda)`` is fitted to all the pixels of the
    order at once and normalised to unit integral over the window at every bin
    centre, its negative values included: noise in its wings then averages out
    of the normalisation instead of adding up (clipping them first would make
    the profile's integral too large, and a faint object's flux too high by
    several per cent at S/N ~2 per bin). The negative values get no weight: the
    estimate of a bin is ``sum(w d) / sum(w P)`` with ``w = max(P, 0) / V``,
    which is unbiased for any weights that do not follow the noise of the data.

    Hence the variance ``V`` of the weights is a model, never the noisy counts
    (which would favour the pixels that fluctuate low): with ``read_noise``
    given, ``V = sky + F P + read_noise^2 + sky variance`` with ``F`` the
    spectrum smoothed (:meth:`smoothing`), not the bin's own estimate, whose
    noise the weights would otherwise share. The errors are propagated from the
    variances given with the frame, the sky model's counted as correlated between
    the pixels of a bin (``sky_correlation``).

    Attributes
    ----------
    trace : callable
        Slit position (arcsec) of the object as a function of wavelength.
    half_width : float
        Half width (arcsec) of the window extracted; the profile is 0 outside it.
    edges : numpy.ndarray, optional
        Wavelength bin edges (default :func:`wavelength_edges`).
    read_noise : float, optional
        Read noise (counts): when given, the variances of the pixels are the model
        above; without it, the variances given (from the data).
    profile_spacing : float, optional
        Knot spacing (arcsec) of the profile's B-spline in slit offset (default: one pixel's slit step).
    profile_degree : int
        Degree of the profile's variation with wavelength.
    smooth : int
        Fewest bins of the running median that smooths the spectrum (the profile fit's scale, the variance model).
    smooth_snr : float
        S/N the smoothed spectrum should reach: a fainter spectrum is smoothed over more bins (:meth:`smoothing`).
    sigma : float
        Rejection threshold (standard deviations); the worst pixel of a bin above it goes per iteration.
    max_iterations : int
        Maximum rejection iterations per profile fit.
    passes : int
        Profile fits, each after the rejections of the previous one.
    sky_correlation : float
        Mean correlation of the sky model's errors between two pixels of one bin, for the
        errors. The sky model is one fit to the whole slit, so its error at one wavelength is
        shared by all the pixels there; those of a bin spread over a pixel of dispersion, two
        knot intervals of a Kelson sky: 0.5. Counted as independent (0), the errors of a
        sky-limited bin come out 8-12 % short; as common to the bin (1), 9 % long.
    """

    trace: object
    half_width: float
    edges: np.ndarray = None
    read_noise: float = None
    profile_spacing: float = None
    profile_degree: int = 2
    smooth: int = 9
    smooth_snr: float = 20.0
    sigma: float = 5.0
    max_iterations: int = 10
    passes: int = 2
    sky_correlation: float = 0.5

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
        smooth = self.smoothing(boxcar)
        scale = ndimage.median_filter(np.nan_to_num(boxcar.flux), size=smooth, mode="nearest")
        model = _ProfileModel(p, self.half_width, self.profile_spacing or pixel_step(slit, pixels),
                              self.profile_degree, edges)
        keep = np.ones(p.index.size, bool)
        # the variance of everything but the object's light
        background = None if self.read_noise is None else (np.clip(p.sky, 0, None) + self.read_noise ** 2
                                                           + p.sky_variance)
        # the first fit, before any rejection, weighs a cosmic ray by its own counts' variance
        variance_model = p.variance if background is None else np.maximum(p.variance, background)
        for _ in range(self.passes):
            profile = model.fit(p.data, scale, keep, variance_model)
            if background is not None:
                variance_model = background + np.clip(scale[p.index] * profile, 0, None)
            for iteration in range(self.max_iterations):
                estimate = _weighted_estimate(p, profile, keep, variance_model)
                # a bin brighter than the smooth spectrum (an emission line) is judged with its own light's noise,
                # and no pixel with less than the variance given with it
                judge = variance_model if background is None else np.maximum(
                    background + np.clip(np.maximum(estimate, scale)[p.index] * profile, 0, None), p.variance)
                chi = np.abs(p.data - estimate[p.index] * profile) / np.sqrt(judge)
                if iteration == 0:
                    # the pixels rejected against a poorer profile (the first, cosmic rays in it) come back
                    keep |= chi <= self.sigma
                chi = np.where(keep, chi, 0.0)
                candidates = _worst_per_bin(chi, p.index, p.n_bins)
                reject = candidates[chi[candidates] > self.sigma]
                if reject.size == 0:
                    break
                keep[reject] = False
            scale = ndimage.median_filter(estimate, size=smooth, mode="nearest")
        flux_out = _weighted_estimate(p, profile, keep, variance_model, empty=np.nan)
        sky_out = _weighted_estimate(p, profile, keep, variance_model, values=p.sky, empty=np.nan)
        error = _propagated_error(p, np.clip(profile, 0, None) / variance_model * keep, profile,
                                  self.sky_correlation)
        n_used = p.per_bin(keep.astype(float)).astype(int)
        n_rejected = p.per_bin((~keep).astype(float)).astype(int)
        rejected = np.zeros(flux.shape, bool)
        rejected[p.where] = ~keep
        model = np.zeros(flux.shape, np.float32)
        model[p.where] = np.nan_to_num(flux_out)[p.index] * profile
        return Spectrum1D(edges, flux_out, error, sky_out, n_used, n_rejected, rejected, model)

    def smoothing(self, spectrum):
        """Bins of the running median that smooths ``spectrum``: enough for ``smooth_snr``, at least ``smooth``.

        The smoothed spectrum scales the profile fit; a noisy one biases the profile (its noise is the
        regressor's, and the bin's own pixels are in it): +5 % on difference frames at S/N ~1 per bin.
        """
        n = spectrum.flux.size
        with np.errstate(invalid="ignore", divide="ignore"):
            snr = np.nanmedian(spectrum.flux / spectrum.error) if n else np.nan
        wanted = (self.smooth_snr / snr) ** 2 if snr > 0 else np.inf
        size = int(min(max(np.ceil(wanted), self.smooth), max(n // 2, 1)))
        return size | 1


class _ProfileModel:
    """The spatial profile of an object: a cubic B-spline in offset from the trace times a Legendre polynomial
    in wavelength, fitted in count space and normalised per bin."""

    def __init__(self, p, half_width, spacing, degree, edges):
        self.p = p
        knots = uniform_knots(-half_width, half_width, spacing)
        self.spline = basis(p.offset, knots)
        lows, highs = [edges[0]], [edges[-1]]
        self.legendre = design_matrix([p.wavelength], [degree], lows, highs)
        self.grid = np.linspace(-half_width, half_width, 8 * len(knots) + 1)
        self.grid_basis = basis(self.grid, knots).toarray()
        self.centre_legendre = design_matrix([0.5 * (edges[1:] + edges[:-1])], [degree], lows, highs)

    def fit(self, data, scale, keep, variance):
        """The profile at every pixel times its area: the fraction of its bin's flux density it receives.

        Fitted by weighted linear least squares, ``data ~ F(bin) * area * P(offset, lambda)``
        with ``F`` the smoothed spectrum ``scale``; normalised so that ``P`` integrates to 1
        over the window at every bin centre, its negative values included. Where that
        integral is not positive (no object), ``P`` is uniform over the window.
        """
        p, legendre = self.p, self.legendre
        amplitude = scale[p.index] * p.area
        rows = sparse.hstack([self.spline.multiply((amplitude * legendre[:, k])[:, None])
                              for k in range(legendre.shape[1])]).tocsr()
        coeffs = solve_weighted(rows, data, keep / variance).reshape(legendre.shape[1], -1).T
        norm = np.trapezoid(self.grid_basis @ coeffs @ self.centre_legendre.T, self.grid, axis=0)
        profile = np.asarray((self.spline @ coeffs * legendre).sum(axis=1)).ravel()
        # no profile where there is no object (a blind extraction of noise): a uniform one over the window
        uniform = 1.0 / (self.grid[-1] - self.grid[0])
        with np.errstate(invalid="ignore", divide="ignore"):
            return np.where(norm[p.index] > 0, profile / norm[p.index], uniform) * p.area


def _weighted_estimate(p, profile, keep, variance, *, values=None, empty=0.0):
    """Horne's estimate per bin over the pixels kept: ``sum(w x) / sum(w P)`` with ``w = max(P, 0) / V``.

    ``x`` is the data (or ``values``); ``empty`` where a bin has no weight.
    """
    weight = keep * np.clip(profile, 0, None) / variance
    denominator = p.per_bin(weight * profile)
    with np.errstate(invalid="ignore", divide="ignore"):
        estimate = p.per_bin(weight * (p.data if values is None else values)) / denominator
    estimate[~(denominator > 0) | ~np.isfinite(estimate)] = empty
    return estimate


def _propagated_error(p, weight, profile, correlation):
    """Standard deviation of ``sum(w d) / sum(w P)`` per bin from the variances given with the frame.

    The pixels' own noise is independent; the sky model's error is not: see
    :attr:`OptimalExtraction.sky_correlation`, the mean correlation ``rho`` of its
    errors between two pixels of a bin, which adds
    ``rho * ((sum(w sigma_sky))^2 - sum(w^2 sigma_sky^2))``.
    """
    sigma = np.sqrt(np.clip(p.sky_variance, 0, None))
    denominator = p.per_bin(weight * profile)
    with np.errstate(invalid="ignore", divide="ignore"):
        spread = p.per_bin(weight ** 2 * p.variance) + correlation * (p.per_bin(weight * sigma) ** 2
                                                                       - p.per_bin((weight * sigma) ** 2))
        error = np.sqrt(spread) / denominator
    return np.where(denominator > 0, error, np.nan)


def _worst_per_bin(values, index, n_bins):
    """Position of the largest of ``values`` in every non-empty bin."""
    ranked = np.lexsort((values, index))
    last = np.cumsum(np.bincount(index, minlength=n_bins)) - 1
    return ranked[np.unique(last[last >= 0])]
