"""Sky subtraction in (wavelength, slit) space, after Kelson (2003).

The orders are tilted and curved on the detector, so the sky pixels at all slit
positions sample the sky spectrum at wavelengths offset by fractions of a pixel:
together they sample the line profiles far more finely than one pixel row. Per
order, the sky is modelled as ``S(lambda) * I(s)``: a cubic B-spline in
wavelength with knots closer than a pixel's dispersion, fitted to all the sky
pixels at once, times a low-degree Legendre polynomial in slit position (the
slit illumination, normalised to a mean of 1). The two are fitted in turn, and
pixels deviating by more than ``sigma`` standard deviations (cosmic rays,
residual object light) are rejected between iterations. The model is evaluated
at every pixel's own wavelength and slit position, with no resampling. No I/O.

Dense knots follow the sky lines, but where the sky is smooth they only add noise,
and that noise is shared by all the pixels along the slit at one wavelength, so it
adds coherently over an object's aperture. Optionally (``smooth_knot_spacing``) the
knots are refined only where the sky has structure: they start several pixels apart
and are halved, down to the dense spacing, where the residuals of the fit summed
over a few dense knot intervals are significant, until none are.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from .bsplines import basis, refined_knots, solve_weighted, uniform_knots
from .polynomials import design_matrix, solve_least_squares
from .resample import pixel_step

log = logging.getLogger(__name__)


@dataclass
class SkyModel:
    """Result of :func:`sky_model`.

    Attributes
    ----------
    sky : numpy.ndarray
        Sky model (counts per pixel, float32); 0 outside the orders modelled.
    variance : numpy.ndarray
        Variance of the model (float32): a sky pixel's variance times the mean leverage of the fit.
    rejected : numpy.ndarray of bool
        Sky pixels rejected by the clipping.
    chi2 : dict
        Reduced chi^2 of the kept sky pixels, per order.
    n_sky : dict
        Number of sky pixels kept, per order.
    """

    sky: np.ndarray
    variance: np.ndarray
    rejected: np.ndarray
    chi2: dict = field(default_factory=dict)
    n_sky: dict = field(default_factory=dict)


def _illumination_matrix(slit, degree, low, high):
    return design_matrix([slit], [degree], [low], [high])


def _isolated(chi, sorting, sky_pixels, window):
    """``chi`` minus its running median over the ``window`` sky pixels nearest in wavelength.

    A cosmic ray stands out of its neighbours in wavelength (at other slit
    positions); a line core that the spline misses is shared by them, so it is not
    rejected, which would leave the spline unconstrained there and the misfit for good.
    """
    values = chi[sky_pixels][sorting]
    local = np.empty_like(values)
    local[sorting] = ndimage.median_filter(values, size=window, mode="mirror")
    out = np.zeros_like(chi)
    out[sky_pixels] = chi[sky_pixels] - local
    return out


def _fit(spline, flux, slit_matrix, kept, illumination, illumination_degree):
    """One fit of ``S(lambda) * I(s)``: the spline, then the illumination, then the spline again."""
    # (d - I S)^2 = I^2 (d / I - S)^2: the spline fitted to d / I with weights I^2
    coeffs = solve_weighted(spline, flux / illumination, kept * illumination ** 2)
    spectrum = spline @ coeffs
    if illumination_degree > 0:
        illum_coeffs = solve_least_squares(slit_matrix[kept] * spectrum[kept, None], flux[kept])
        illumination = slit_matrix @ illum_coeffs
        illumination /= illumination[kept].mean()
        coeffs = solve_weighted(spline, flux / illumination, kept * illumination ** 2)
        spectrum = spline @ coeffs
    return spectrum * illumination, illumination


def _structure(residual, variance, interval, n_intervals, widths=(1, 3, 5)):
    """Per interval of the fine knot grid, the significance of the residuals of a fit there.

    The residuals of the kept sky pixels are summed per interval and over runs of ``widths``
    neighbouring intervals (a sky line's misfit spans a few), in units of their standard deviation;
    an interval gets the largest absolute value of the runs that hold it.
    """
    sums = np.bincount(interval, residual, minlength=n_intervals)
    noise = np.bincount(interval, variance, minlength=n_intervals)
    significance = np.zeros(n_intervals)
    for width in widths:
        kernel = np.ones(width)
        with np.errstate(invalid="ignore", divide="ignore"):
            run = np.abs(np.convolve(sums, kernel, mode="same")) / np.sqrt(np.convolve(noise, kernel, mode="same"))
        significance = np.maximum(significance, ndimage.maximum_filter1d(np.nan_to_num(run), width))
    return significance


def _leverage(wavelength, knots, kept, weights):
    """Per pixel, the approximate leverage of the spline fit: ~1 coefficient per knot interval.

    A pixel's leverage is one over the (weighted) number of kept sky pixels in its knot interval,
    averaged with the neighbouring intervals (a cubic B-spline spans four), scaled so that the
    leverages of the kept pixels add up to the number of coefficients.
    """
    inner = np.unique(knots)
    interval = np.clip(np.searchsorted(inner, wavelength, side="right") - 1, 0, inner.size - 2)
    counts = np.bincount(interval[kept], weights[kept], minlength=inner.size - 1)
    counts = np.convolve(counts, np.ones(3) / 3, mode="same")
    per_pixel = 1.0 / np.maximum(counts[interval], 1.0)
    n_coeffs = knots.size - 4
    total = float(np.sum(per_pixel[kept] * weights[kept]))
    return per_pixel * (n_coeffs / total if total > 0 else 1.0)


def fit_order_sky(flux, variance, wavelength, slit, *, sky_pixels, knot_spacing, smooth_knot_spacing=None,
                  structure_sigma=2.5, illumination_degree=2, sigma=5.0, max_iterations=6, window=9):
    """Fit ``S(lambda) * I(s)`` to the sky pixels of one order (1D arrays of its pixels).

    Parameters
    ----------
    flux, variance, wavelength, slit : numpy.ndarray
        ``(n,)`` counts, variance, wavelength (nm) and slit position (arcsec) of the order's pixels.
    sky_pixels : numpy.ndarray of bool
        ``(n,)`` pixels that see only sky (object masked, bad pixels excluded).
    knot_spacing : float
        Knot spacing of the B-spline in wavelength (nm) where the sky has structure (sky lines).
    smooth_knot_spacing : float, optional
        Knot spacing (nm) where the sky is smooth; None: ``knot_spacing`` everywhere.
    structure_sigma : float
        The sky has structure where the residuals of the smoother fit, summed over one, three or
        five fine knot intervals, exceed this many standard deviations.
    illumination_degree : int
        Degree of the slit illumination polynomial (0: flat).
    sigma : float
        Rejection threshold, in standard deviations given by ``variance``.
    max_iterations : int
        Maximum number of fit-and-reject iterations.
    window : int
        A pixel is rejected when its deviation differs by more than ``sigma`` from the median
        deviation of the ``window`` sky pixels nearest in wavelength.

    Returns
    -------
    model, model_variance, kept, chi2 : numpy.ndarray, numpy.ndarray, numpy.ndarray, float
        The model at every pixel, its variance, the sky pixels kept and their reduced chi^2.
        The model's variance is that of a sky pixel (counts taken as electrons: the model plus
        the read noise the sky pixels show) times the leverage of the fit there (about one over
        the number of sky pixels per knot interval).

    Notes
    -----
    The spline is fitted without the pixel variances as weights: variances
    estimated from the noisy counts would favour the pixels that fluctuate low
    and bias the sky low. They serve only to reject outliers, to find the
    structure and for the chi^2.

    Knots closer than a pixel's dispersion follow the sky lines, but where the sky is
    smooth they only add noise: the model's error at one wavelength is shared by all
    the pixels along the slit there, so it adds coherently over an object's aperture.
    With ``smooth_knot_spacing``, the order is first fitted with knots ``knot_spacing``
    apart (for the rejection), then with knots ``smooth_knot_spacing`` apart refined to
    ``knot_spacing`` wherever the residuals show structure, until no more is found.
    """
    # the end knots sit an average interval's worth of sky pixels inside the ends, so that a
    # cosmic ray at the very end of the order cannot pull an unconstrained last interval onto itself
    sky_waves = np.sort(wavelength[sky_pixels])
    per_interval = sky_waves.size * knot_spacing / max(float(sky_waves[-1] - sky_waves[0]), knot_spacing)
    margin = min(int(np.ceil(per_interval)), sky_waves.size // 4)
    low_end, high_end = float(sky_waves[margin]), float(sky_waves[-margin - 1])
    knots = uniform_knots(low_end, high_end, knot_spacing)
    spline = basis(wavelength, knots)
    low, high = float(slit[sky_pixels].min()), float(slit[sky_pixels].max())
    slit_matrix = _illumination_matrix(slit, illumination_degree, low, high)
    illumination = np.ones(flux.size)
    kept = sky_pixels.copy()
    sorting = np.argsort(wavelength[sky_pixels], kind="stable")

    def fit_and_reject(spline, kept, illumination):
        for iteration in range(max_iterations):
            model, illumination = _fit(spline, flux, slit_matrix, kept, illumination, illumination_degree)
            chi = (flux - model) / np.sqrt(variance)
            new = sky_pixels & (np.abs(_isolated(chi, sorting, sky_pixels, window)) <= sigma)
            if np.array_equal(new, kept):
                break
            kept = new
        return model, illumination, kept, chi, iteration + 1

    model, illumination, kept, chi, iterations = fit_and_reject(spline, kept, illumination)
    if smooth_knot_spacing is not None and smooth_knot_spacing > knot_spacing:
        grid = knots[3:-3]
        interval = np.clip(np.searchsorted(grid, wavelength, side="right") - 1, 0, grid.size - 2)
        # the spacing (in fine intervals) halved where the residuals show structure, down to the fine one
        every = np.full(grid.size - 1, 2 ** int(np.floor(np.log2(smooth_knot_spacing / knot_spacing))))
        while True:
            knots = refined_knots(low_end, high_end, knot_spacing, every)
            spline = basis(wavelength, knots)
            model, illumination = _fit(spline, flux, slit_matrix, kept, illumination, illumination_degree)
            significance = np.where(every > 1, _structure((flux - model)[kept], variance[kept], interval[kept],
                                                          every.size), 0.0)
            found = significance > structure_sigma
            if not np.any(found):
                break
            every[found] //= 2
        model, illumination, kept, chi, more = fit_and_reject(spline, kept, illumination)
        iterations += more
    n_params = spline.shape[1] + illumination_degree
    n_kept = int(kept.sum())
    chi2 = float(np.sum(chi[kept] ** 2) / max(n_kept - n_params, 1))
    # the noise of a sky pixel (counts in electrons): the model's Poisson part plus the read noise (and
    # dark) that the sky pixels show; not the pixel's own variance, which under an object includes its light
    floor = float(np.median(variance[kept] - model[kept]))
    leverage = _leverage(wavelength, knots, kept, illumination ** 2)
    model_variance = (np.clip(model, 0, None) + max(floor, 0.0)) * leverage
    log.debug("sky: %d pixels kept of %d, %d coefficients, reduced chi2 %.3f after %d iterations",
              n_kept, int(sky_pixels.sum()), n_params, chi2, iterations)
    return model, model_variance, kept, chi2


def sky_model(flux, variance, wavelength, slit, order_map, *, object_mask=None, bad=None, knot_spacing=0.5,
              smooth_knot_spacing=None, structure_sigma=2.5, illumination_degree=2,
              sigma=5.0, max_iterations=6):
    """Model the sky of every order of a frame.

    Parameters
    ----------
    flux, variance : numpy.ndarray
        2D frame and its variance (counts).
    wavelength, slit : numpy.ndarray
        2D maps: the wavelength (nm) and slit position (arcsec) of every pixel.
    order_map : numpy.ndarray of int
        Order number of every pixel; 0 or negative: no order.
    object_mask : numpy.ndarray of bool, optional
        Pixels that see an object (left out of the fit, but modelled).
    bad : numpy.ndarray of bool, optional
        Bad pixels (left out of the fit, but modelled).
    knot_spacing : float
        Knot spacing of the sky spline where the sky has structure (sky lines), in units of the
        order's dispersion per pixel.
    smooth_knot_spacing : float or None
        Knot spacing where the sky is smooth, in the same units; None: ``knot_spacing`` everywhere.
    structure_sigma : float
        Significance of the residuals (of a fit with the smooth spacing) that calls for the dense knots.
    illumination_degree : int
        Degree of the slit illumination polynomial.
    sigma : float
        Rejection threshold in standard deviations.
    max_iterations : int
        Maximum number of fit-and-reject iterations per order.

    Returns
    -------
    SkyModel
    """
    flux = np.asarray(flux)
    valid = np.isfinite(flux) & np.isfinite(variance) & (variance > 0)
    valid &= np.isfinite(wavelength) & np.isfinite(slit)
    if bad is not None:
        valid &= ~bad
    sky_ok = valid if object_mask is None else valid & ~object_mask
    sky = np.zeros(flux.shape, np.float32)
    sky_variance = np.zeros(flux.shape, np.float32)
    rejected = np.zeros(flux.shape, bool)
    result = SkyModel(sky, sky_variance, rejected)
    for order in np.unique(order_map[order_map > 0]):
        pixels = (order_map == order) & np.isfinite(wavelength) & np.isfinite(slit)
        if not np.any(sky_ok & pixels):
            log.warning("order %d: no sky pixel, no sky model", order)
            continue
        step = pixel_step(wavelength, pixels)
        model, model_var, kept, chi2 = fit_order_sky(
            np.where(valid, flux, 0.0)[pixels].astype(float), np.where(valid, variance, np.inf)[pixels].astype(float),
            wavelength[pixels].astype(float), slit[pixels].astype(float), sky_pixels=sky_ok[pixels],
            knot_spacing=knot_spacing * step,
            smooth_knot_spacing=None if smooth_knot_spacing is None else smooth_knot_spacing * step,
            structure_sigma=structure_sigma, illumination_degree=illumination_degree, sigma=sigma,
            max_iterations=max_iterations)
        sky[pixels] = model
        sky_variance[pixels] = np.where(np.isfinite(model_var), model_var, 0.0)
        rejected[pixels] = sky_ok[pixels] & ~kept
        result.chi2[int(order)] = chi2
        result.n_sky[int(order)] = int(kept.sum())
    return result
