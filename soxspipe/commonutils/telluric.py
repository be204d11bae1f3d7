"""Telluric correction from the spectrum of a telluric (or flux) standard.

1. :func:`measure_transmission`: the standard's spectrum divided by a smooth
   continuum gives the transmission of the atmosphere at its airmass. The
   continuum is a cubic B-spline in ``ln(flux)`` fitted outside the telluric bands
   (:func:`soxspipe.commonutils.extinction.telluric_bands`) and the star's absorption
   lines, bridging them; for a flux standard whose catalogue spectrum is given, the
   continuum is that spectrum times a smooth spline, so its lines divide out.
   Outside the bands the transmission is 1.
2. :func:`scale_transmission`: the absorption is scaled to the science airmass,
   ``T^(X_sci / X_std)``, with one exponent for the water bands and one for the dry,
   well mixed gases (O2, CO2).
3. :func:`measure_shift`: the sub-pixel shift between the transmission and the
   science spectrum's own telluric features, by cross-correlation refined with
   Gauss-Newton steps on the shifted transmission.
4. :func:`correct`: the science flux divided by the transmission; where the
   transmission is below a threshold the flux is left as it was and flagged in
   ``QUAL`` instead of amplified.

:func:`telluric_correct` chains 2-4 on one uniform pixel grid; :func:`transmission_at` gives
the scaled transmission moved by a shift in wavelength, for any set of wavelengths (the
science tables: :mod:`~soxspipe.commonutils.science_telluric`). Spectra are 1D (one order
or merged) numpy arrays; no I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np
from scipy.ndimage import gaussian_filter1d, map_coordinates

from .bsplines import basis, uniform_knots
from .errors import DataError
from .extinction import DRY_SPECIES, band_mask
from .flux_standards import line_mask
from .response import difference_penalty, fit_penalised

log = logging.getLogger(__name__)

#: QUAL bit set where the transmission is too low to correct
QUAL_LOW_TRANSMISSION = 64
#: QUAL bit set where the transmission was interpolated across a stellar line of the standard
QUAL_TRANSMISSION_INTERPOLATED = 128


@dataclass
class Transmission:
    """The atmosphere's transmission measured on a standard.

    Attributes
    ----------
    wavelength, transmission, error : numpy.ndarray
        Wavelength (nm), transmission (1 outside the telluric bands) and its standard deviation.
    continuum : numpy.ndarray
        The standard's fitted continuum (same unit as its flux).
    airmass : float
        The standard's airmass.
    unreliable : numpy.ndarray of bool
        Points inside a band where the transmission could not be measured (non-finite data, or a
        stellar line without a catalogue spectrum); their transmission is interpolated.
    """

    wavelength: np.ndarray
    transmission: np.ndarray
    error: np.ndarray
    continuum: np.ndarray
    airmass: float
    unreliable: np.ndarray


def _continuum_fit(wavelength, log_flux, log_error, use, *, knot_spacing, smoothing, penalty_order, clip_low,
                   clip_high, iterations, clip_scale):
    knots = uniform_knots(float(np.min(wavelength)), float(np.max(wavelength)), knot_spacing)
    design = basis(wavelength, knots)
    penalty = smoothing * difference_penalty(design.shape[1], penalty_order)
    fit = fit_penalised(design, log_flux, log_error, penalty, use=use, clip_low=clip_low,
                        clip_high=clip_high, iterations=iterations, clip_scale=clip_scale)
    return design @ fit.coefficients


def measure_transmission(wavelength, flux, error, *, airmass, model=None, knot_spacing=50.0,
                         line_half_width_kms=1000.0, smoothing=1e-2, penalty_order=2, clip_low=1.5,
                         clip_high=5.0, iterations=50, clip_scale="errors"):
    """Transmission of the atmosphere from a standard's spectrum.

    Parameters
    ----------
    wavelength, flux, error : array_like
        One order or a merged spectrum of the standard (nm; any flux unit in which the star's
        continuum is smooth: flux-calibrated, or counts of one order).
    airmass : float
        The standard's airmass.
    model : array_like, optional
        The star's catalogue flux at ``wavelength`` (same resolution): the continuum is then the
        model times a smooth spline, and the star's lines are not masked.
    knot_spacing : float
        Knot spacing (nm) of the continuum spline.
    line_half_width_kms : float
        Half-width (km/s) of the window masked around each stellar absorption line (no model).
    smoothing, penalty_order
        Weight (relative to the data's) and order of the difference penalty that bridges the
        masked stretches (see :func:`soxspipe.commonutils.response.difference_penalty`).
    clip_low, clip_high, iterations, clip_scale
        Clipping of the continuum fit (see :func:`soxspipe.commonutils.response.fit_penalised`): by
        default points more than 1.5 sigma (their own errors) below it are rejected, so that the
        continuum follows the upper envelope of the weak telluric lines outside the bands.

    Returns
    -------
    Transmission

    Raises
    ------
    DataError
        Too few points outside the bands and lines to fit the continuum.
    """
    wl = np.asarray(wavelength, dtype=float)
    flux = np.asarray(flux, dtype=float)
    error = np.asarray(error, dtype=float)
    shape = np.ones_like(flux) if model is None else np.asarray(model, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        ratio = flux / shape
        log_ratio = np.log(ratio)
        log_error = error / flux
    finite = np.isfinite(wl) & np.isfinite(flux) & np.isfinite(error) & np.isfinite(shape)
    good = finite & np.isfinite(log_ratio) & np.isfinite(log_error) & (ratio > 0)
    bands = band_mask(wl)
    lines = line_mask(wl, line_half_width_kms) if model is None else np.zeros(wl.shape, dtype=bool)
    use = good & ~bands & ~lines
    if use.sum() < 10:
        raise DataError(f"the telluric standard's spectrum has only {int(use.sum())} usable points outside the "
                        "telluric bands and stellar lines: too few to fit its continuum; use a spectrum "
                        "covering more than the bands")
    log_continuum = _continuum_fit(wl, np.where(good, log_ratio, 0.0), np.where(good, log_error, 1.0), use,
                                   knot_spacing=knot_spacing, smoothing=smoothing,
                                   penalty_order=penalty_order, clip_low=clip_low,
                                   clip_high=clip_high, iterations=iterations, clip_scale=clip_scale)
    continuum = shape * np.exp(log_continuum)
    with np.errstate(invalid="ignore", divide="ignore"):
        transmission = flux / continuum
        t_error = error / continuum
    # a saturated band core may leave zero or negative flux: still a (noisy) measurement
    unreliable = bands & (~finite | lines)
    measured = bands & ~unreliable
    if unreliable.any() and measured.any():
        transmission[unreliable] = np.interp(wl[unreliable], wl[measured], transmission[measured])
        t_error[unreliable] = np.interp(wl[unreliable], wl[measured], t_error[measured])
    transmission[~bands] = 1.0
    t_error[~bands] = 0.0
    return Transmission(wl, transmission, t_error, continuum, float(airmass), unreliable)


def scale_transmission(transmission, wavelength, airmass, *, water_scale=1.0):
    """The transmission scaled to another airmass, on the wavelengths ``wavelength``.

    ``T^(X / X_std)`` in the bands of the dry gases (O2, CO2) and ``T^(water_scale X / X_std)``
    in the water bands (``water_scale`` the ratio of the water columns beyond the airmass).

    Parameters
    ----------
    transmission : Transmission
    wavelength : array_like
        Wavelengths (nm) of the spectrum to correct (the transmission is interpolated on them).
    airmass : float
        The airmass to scale to.
    water_scale : float
        Extra factor on the water bands' exponent.

    Returns
    -------
    values, errors : numpy.ndarray
    """
    wl = np.asarray(wavelength, dtype=float)
    t = np.interp(wl, transmission.wavelength, transmission.transmission, left=1.0, right=1.0)
    e = np.interp(wl, transmission.wavelength, transmission.error, left=0.0, right=0.0)
    ratio = float(airmass) / transmission.airmass
    exponent = np.where(band_mask(wl, DRY_SPECIES), ratio, ratio * float(water_scale))
    t = np.clip(t, 1e-6, None)
    scaled = t ** exponent
    return scaled, np.abs(exponent * scaled / t) * e


def interpolated_mask(transmission, wavelength):
    """True at the wavelengths where ``transmission`` was interpolated across a stellar line (``unreliable``)."""
    return np.interp(np.asarray(wavelength, dtype=float), transmission.wavelength,
                     transmission.unreliable.astype(float), left=0.0, right=0.0) > 0


def transmission_at(transmission, wavelength, airmass, *, shift=0.0, water_scale=1.0):
    """The transmission scaled to ``airmass`` and moved by ``shift`` nm, at the wavelengths ``wavelength``.

    The wavelength form of a shift (for spectra whose pixels are not one uniform grid, such as
    the orders of an echelle spectrum one after the other): the value at ``lambda`` is the
    scaled transmission's at ``lambda - shift`` (:func:`scale_transmission`, linear interpolation).

    Returns
    -------
    values, errors : numpy.ndarray
    interpolated : numpy.ndarray of bool
        Where the transmission was interpolated across one of the standard's lines.
    """
    moved = np.asarray(wavelength, dtype=float) - float(shift)
    values, errors = scale_transmission(transmission, moved, airmass, water_scale=water_scale)
    return values, errors, interpolated_mask(transmission, moved)


def _highpass(values, width):
    """``values`` over their Gaussian smoothing, minus 1: the narrow features, whatever the flux unit.

    Linear rather than logarithmic, so that the noise of saturated line cores does not dominate.
    """
    smooth = gaussian_filter1d(values, width, mode="nearest")
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.where(smooth > 0, values / smooth - 1.0, 0.0)


def _dot(a, b):
    # not BLAS: for vectors of this size its threads cost far more than the sum (tens of ms on a busy machine)
    return float(np.sum(a * b))


def _shifted(values, shift):
    index = np.arange(values.size, dtype=float) - shift
    return map_coordinates(values, [index], order=3, mode="nearest")


def measure_shift(flux, transmission, *, use=None, max_shift=5.0, highpass_px=25.0, iterations=10):
    """Shift (pixels) that moves ``transmission`` onto the telluric features of ``flux``.

    Both are on the same pixel grid. Each is divided by its Gaussian smoothing (``highpass_px``)
    to keep only narrow features; these are cross-correlated over whole pixels within
    ``max_shift``, and the best shift is refined by Gauss-Newton steps fitting the flux's
    features with the cubic-spline-shifted transmission's (times a free amplitude).
    ``transmission`` shifted by the result (``T(i - shift)``) matches ``flux``.

    Parameters
    ----------
    flux : array_like
        The science spectrum.
    transmission : array_like
        The transmission on the same pixels.
    use : array_like of bool, optional
        Pixels compared (default: where the transmission departs from 1).
    max_shift : float
        Largest shift searched (pixels).
    highpass_px : float
        Scale (pixels) of the continuum removed before comparing.
    iterations : int
        Most Gauss-Newton steps.

    Returns
    -------
    float

    Raises
    ------
    ValueError
        Fewer than 10 pixels to compare.
    """
    flux = np.asarray(flux, dtype=float)
    transmission = np.asarray(transmission, dtype=float)
    finite = np.isfinite(flux) & np.isfinite(transmission) & (flux > 0)
    if use is None:
        use = transmission < 0.999
    use = np.asarray(use, dtype=bool) & finite
    if use.sum() < 10:
        raise ValueError("too few pixels with telluric absorption to measure a shift")
    filled = np.where(finite, flux, np.interp(np.arange(flux.size), np.flatnonzero(finite), flux[finite]))
    target = _highpass(filled, highpass_px)
    template = _highpass(np.where(np.isfinite(transmission), transmission, 1.0), highpass_px)
    n = int(np.ceil(max_shift))
    lags = np.arange(-n, n + 1)
    idx = np.flatnonzero(use)
    scores = []
    for lag in lags:
        src = np.clip(idx - lag, 0, flux.size - 1)
        scores.append(_dot(target[idx], template[src]))
    shift = float(lags[int(np.argmax(scores))])
    # least squares of target = a * template(i - shift): Gauss-Newton on (a, shift)
    for _ in range(iterations):
        moved = _shifted(template, shift)[idx]
        slope = -np.gradient(_shifted(template, shift))[idx]
        amplitude = _dot(target[idx], moved) / max(_dot(moved, moved), 1e-30)
        residual = target[idx] - amplitude * moved
        jacobian = amplitude * slope
        step = _dot(jacobian, residual) / max(_dot(jacobian, jacobian), 1e-30)
        shift = float(np.clip(shift + step, -max_shift, max_shift))
        if abs(step) < 1e-4:
            break
    return shift


@dataclass
class TelluricResult:
    """Result of :func:`telluric_correct`.

    Attributes
    ----------
    flux, error : numpy.ndarray
        The corrected spectrum.
    qual : numpy.ndarray
        Quality flags, with :data:`QUAL_LOW_TRANSMISSION` where the transmission was too low and
        :data:`QUAL_TRANSMISSION_INTERPOLATED` where it was interpolated across a stellar line.
    transmission : numpy.ndarray
        The transmission applied (scaled and shifted).
    shift : float
        Shift (pixels) applied to the transmission.
    airmass_flag : bool
        The standard's and the science airmasses differ by more than allowed.
    """

    flux: np.ndarray
    error: np.ndarray
    qual: np.ndarray
    transmission: np.ndarray
    shift: float
    airmass_flag: bool


def correct(flux, error, transmission, transmission_error=None, qual=None, *, threshold=0.2,
            qual_bit=QUAL_LOW_TRANSMISSION):
    """Divide a spectrum by the transmission, flagging instead of amplifying where it is below ``threshold``.

    Returns
    -------
    flux, error, qual : numpy.ndarray
        Where the transmission is below ``threshold`` (or not finite) the flux and error are left
        unchanged and ``qual_bit`` is set.
    """
    flux = np.asarray(flux, dtype=float)
    error = np.asarray(error, dtype=float)
    t = np.asarray(transmission, dtype=float)
    qual = np.zeros(flux.shape, dtype=np.int32) if qual is None else np.array(qual, dtype=np.int32)
    low = ~(t >= threshold)
    safe = np.where(low, 1.0, t)
    out = flux / safe
    variance = (error / safe) ** 2
    if transmission_error is not None:
        variance = variance + (out * np.where(low, 0.0, np.asarray(transmission_error, dtype=float)) / safe) ** 2
    qual[low] |= qual_bit
    return out, np.sqrt(variance), qual


def check_airmass(standard_airmass, science_airmass, max_difference=0.5):
    """True (and a warning) when the two airmasses differ by more than ``max_difference``."""
    difference = abs(float(science_airmass) - float(standard_airmass))
    if difference > max_difference:
        log.warning("the telluric standard's airmass %.2f differs from the science airmass %.2f by %.2f "
                    "(> %.2f): the scaled transmission is unreliable; observe a telluric standard closer "
                    "in airmass", standard_airmass, science_airmass, difference, max_difference)
        return True
    return False


def telluric_correct(wavelength, flux, error, transmission, *, airmass, qual=None, threshold=0.2,
                     max_shift=5.0, highpass_px=25.0, max_airmass_difference=0.5, water_scale=1.0,
                     shift=None):
    """Correct a science spectrum for telluric absorption with a standard's transmission.

    Parameters
    ----------
    wavelength, flux, error : array_like
        The science spectrum (one order or merged; any flux unit).
    transmission : Transmission
        Measured on the telluric standard (:func:`measure_transmission`).
    airmass : float
        The science airmass.
    qual : array_like of int, optional
        The spectrum's quality flags, kept and extended.
    threshold : float
        Transmission below which the flux is flagged, not corrected.
    max_shift, highpass_px : float
        Passed to :func:`measure_shift`.
    max_airmass_difference : float
        Larger differences between the two airmasses are flagged (``airmass_flag``).
    water_scale : float
        Passed to :func:`scale_transmission`.
    shift : float, optional
        Use this shift (pixels) instead of measuring it.

    Returns
    -------
    TelluricResult
    """
    wl = np.asarray(wavelength, dtype=float)
    flagged = check_airmass(transmission.airmass, airmass, max_airmass_difference)
    scaled, scaled_error = scale_transmission(transmission, wl, airmass, water_scale=water_scale)
    if shift is None:
        try:
            shift = measure_shift(flux, scaled, max_shift=max_shift, highpass_px=highpass_px)
        except ValueError:
            log.info("no telluric absorption to measure a shift on: none applied")
            shift = 0.0
    if shift:
        scaled = np.clip(_shifted(scaled, shift), 0.0, None)
        scaled_error = _shifted(scaled_error, shift)
    out, out_error, out_qual = correct(flux, error, scaled, scaled_error, qual, threshold=threshold)
    out_qual[interpolated_mask(transmission, wl)] |= QUAL_TRANSMISSION_INTERPOLATED
    log.info("telluric correction: shift %.3f px, airmass %.3f -> %.3f, %d pixels below transmission %.2f",
             shift, transmission.airmass, airmass, int(np.sum(scaled < threshold)), threshold)
    return TelluricResult(out, out_error, out_qual, scaled, float(shift), flagged)


def transmission_options(params):
    """Keyword arguments of :func:`measure_transmission` from the resolved ``telluric`` settings."""
    return {"knot_spacing": params["knot-spacing"], "smoothing": params["smoothing"],
            "penalty_order": params["penalty-order"], "clip_low": params["clip-low"],
            "clip_high": params["clip-high"], "iterations": params["clip-iterations"],
            "line_half_width_kms": params["line-half-width-kms"]}


def correction_options(params):
    """Keyword arguments of :func:`telluric_correct` from the resolved ``telluric`` settings."""
    return {"threshold": params["min-transmission"], "max_shift": params["max-shift-px"],
            "highpass_px": params["highpass-px"], "max_airmass_difference": params["max-airmass-difference"]}
