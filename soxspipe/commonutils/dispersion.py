"""The dispersion solution: (order, wavelength, slit) -> detector (x, y), and fitting it to an arc.

:class:`DispersionSolution` holds two :class:`~.polynomials.Polynomial` in
``(order, w, slit)`` where ``w`` is the wavelength or, for an echelle, the
product order x wavelength (positions follow the grating equation, so they are
smooth functions of m lambda and need lower degrees across orders).

:func:`select_candidates` picks the lines of a lamp atlas worth measuring
(predicted on the frame, no comparable neighbour nearby) and
:func:`solve_dispersion` finds them on a frame and fits the solution: global
shift, nearest-peak matching, vectorised centroids, rejection, clipped fits,
repeated with tighter windows as the prediction improves. With several pinholes,
:func:`extend_along_slit` then measures the images the solution could not
predict, from the images of the same lines along the slit. No I/O here.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy.spatial import cKDTree
from scipy.special import erf

from .lines import (brightest_peaks, centroids, find_peaks, global_shift, match_fraction, match_nearest,
                    reject_lines)
from .polynomials import FitError, Polynomial, fit_clipped

log = logging.getLogger(__name__)

#: names of the dispersion variable ``w``
WAVE_VARIABLES = ("wavelength", "order*wavelength")

#: slit normalisation range (arcsec): the 12 arcsec slit
SLIT_RANGE = (-6.0, 6.0)


class SolutionError(ValueError):
    """The frame does not support a dispersion solution (no lines, no shift, too few lines)."""


@dataclass
class DispersionSolution:
    """Detector position as a function of order, wavelength (nm) and slit position (arcsec).

    Attributes
    ----------
    x, y : Polynomial
        Legendre series in ``(order, w, slit)``.
    wave_variable : str
        'wavelength' or 'order*wavelength': what ``w`` is.
    """

    x: Polynomial
    y: Polynomial
    wave_variable: str = "wavelength"

    def variables(self, order, wavelength, slit=0.0):
        """The polynomial variables ``(order, w, slit)`` as broadcast float arrays."""
        order, wavelength, slit = np.broadcast_arrays(np.asarray(order, float), np.asarray(wavelength, float),
                                                      np.asarray(slit, float))
        w = order * wavelength if self.wave_variable == "order*wavelength" else wavelength
        return order, w, slit

    def xy(self, order, wavelength, slit=0.0):
        """Return ``(x, y)`` prepared-frame pixels (0-based) of arrays of order, wavelength (nm), slit (arcsec)."""
        v = self.variables(order, wavelength, slit)
        return self.x(*v), self.y(*v)

    def dispersion(self, order, wavelength, axis, step=1e-3):
        """The absolute dispersion ``d wavelength / d pixel`` (nm per pixel) along ``axis`` ('x' or 'y').

        Evaluated at the slit centre.
        """
        x1, y1 = self.xy(order, np.asarray(wavelength) - step)
        x2, y2 = self.xy(order, np.asarray(wavelength) + step)
        dpix = (x2 - x1) if axis == "x" else (y2 - y1)
        with np.errstate(divide="ignore"):
            return np.abs(2 * step / dpix)

    @property
    def degrees(self):
        """Degrees ``(order, w, slit)``."""
        return self.x.degrees

    def to_columns(self):
        """One row per coefficient and axis: dict of equal-length arrays (see :meth:`from_columns`)."""
        rows = {k: [] for k in ("axis", "order_exp", "wave_exp", "slit_exp", "coeff", "order_low", "order_high",
                                "wave_low", "wave_high", "slit_low", "slit_high", "wave_variable")}
        for name, poly in (("x", self.x), ("y", self.y)):
            for exps, c in zip(poly.terms(), poly.coeffs):
                rows["axis"].append(name)
                for key, e in zip(("order_exp", "wave_exp", "slit_exp"), exps):
                    rows[key].append(int(e))
                rows["coeff"].append(float(c))
                for key, lo, hi in zip(("order", "wave", "slit"), poly.lows, poly.highs):
                    rows[f"{key}_low"].append(lo)
                    rows[f"{key}_high"].append(hi)
                rows["wave_variable"].append(self.wave_variable)
        return {k: np.asarray(v) for k, v in rows.items()}

    @classmethod
    def from_columns(cls, cols):
        """Rebuild a solution from :meth:`to_columns` (any mapping of column name -> array)."""
        axis = np.char.strip(np.asarray(cols["axis"]).astype(str))
        polys = {}
        for name in ("x", "y"):
            m = axis == name
            exps = np.c_[np.asarray(cols["order_exp"])[m], np.asarray(cols["wave_exp"])[m],
                         np.asarray(cols["slit_exp"])[m]].astype(int)
            degrees = tuple(int(v) for v in exps.max(axis=0))
            lows = tuple(float(np.asarray(cols[f"{k}_low"])[m][0]) for k in ("order", "wave", "slit"))
            highs = tuple(float(np.asarray(cols[f"{k}_high"])[m][0]) for k in ("order", "wave", "slit"))
            shape = tuple(d + 1 for d in degrees)
            coeffs = np.zeros(shape)
            coeffs[tuple(exps.T)] = np.asarray(cols["coeff"], float)[m]
            polys[name] = Polynomial(degrees, lows, highs, coeffs.ravel())
        variable = str(np.asarray(cols["wave_variable"]).astype(str)[0]).strip()
        return cls(polys["x"], polys["y"], variable)


def fit_solution(order, wavelength, slit, x, y, degrees, *, wave_variable, sigma, max_iterations, used=None,
                 ranges=None, min_sigma=0.01):
    """Fit a :class:`DispersionSolution` to measured positions with sigma clipping.

    Parameters
    ----------
    order, wavelength, slit, x, y : array_like
        One value per line.
    degrees : tuple of int
        ``(order, w, slit)`` degrees.
    wave_variable : str
        See :data:`WAVE_VARIABLES`.
    sigma, max_iterations, min_sigma : float, int, float
        Clipping (see :func:`~.polynomials.fit_clipped`).
    used : array_like of bool, optional
        Lines allowed in the fit.
    ranges : tuple, optional
        ``(lows, highs)`` normalisation ranges (default: the data's, slit over :data:`SLIT_RANGE`).

    Returns
    -------
    solution : DispersionSolution
    fit : ClippedFit
    """
    if wave_variable not in WAVE_VARIABLES:
        raise ValueError(f"wave variable must be one of {WAVE_VARIABLES}, not {wave_variable!r}")
    order = np.asarray(order, float)
    w = order * np.asarray(wavelength, float) if wave_variable == "order*wavelength" else np.asarray(wavelength, float)
    slit = np.broadcast_to(np.asarray(slit, float), order.shape)
    if ranges is None:
        ranges = ((order.min(), w.min(), SLIT_RANGE[0]), (order.max(), w.max(), SLIT_RANGE[1]))
    fit = fit_clipped([order, w, slit], np.c_[x, y], degrees, lows=ranges[0], highs=ranges[1], sigma=sigma,
                      max_iterations=max_iterations, min_sigma=min_sigma, used=used)
    return DispersionSolution(fit.polynomials[0], fit.polynomials[1], wave_variable), fit


def select_candidates(order, wavelength, amplitude, solution, *, shape, dispersion_axis, line_sigma, half_width,
                      max_bias, margin=5.0, slit=0.0):
    """Pick the atlas lines worth measuring: predicted on the frame and not blended.

    A line is blended when its atlas neighbours in the same order would pull its
    centroid by more than ``max_bias`` pixels along the dispersion: each neighbour
    at ``delta`` pixels with amplitude ratio ``r`` adds ``r * delta * f(delta)``,
    where ``f`` is the fraction of the neighbour's Gaussian image (``line_sigma``)
    falling inside the measuring box of ``half_width`` pixels.

    Parameters
    ----------
    order, wavelength, amplitude : array_like
        Every atlas line of the lamps that are on, in every order it falls in.
    solution : DispersionSolution
        A first-guess solution predicting positions.
    shape : tuple
        Frame shape ``(ny, nx)``.
    dispersion_axis : str
        'x' or 'y'.
    line_sigma : float
        Gaussian sigma of a line image along the dispersion (pixels).
    half_width : int
        Half-width of the centroid box along the dispersion (pixels).
    max_bias : float
        Largest acceptable centroid pull (pixels).
    margin : float
        Predicted positions closer than this to the frame's edge are dropped.
    slit : float or array_like
        Slit position (arcsec) of each line's image (several pinholes: neighbours are
        looked for among the images of the same pinhole).

    Returns
    -------
    numpy.ndarray of int
        Indices of the clean lines predicted on the frame.
    """
    order = np.asarray(order)
    amplitude = np.asarray(amplitude, float)
    slit = np.broadcast_to(np.asarray(slit, float), order.shape)
    x, y = solution.xy(order, wavelength, slit)
    ny, nx = shape
    on = (x > margin) & (x < nx - 1 - margin) & (y > margin) & (y < ny - 1 - margin)
    d = np.where(on, y if dispersion_axis == "y" else x, -1e9)
    # orders (and pinholes) sit 1e6 apart on the other axes: neighbours are looked for within one image set only
    tree = cKDTree(np.c_[d, order * 1e6, slit * 1e6])
    pairs = tree.query_pairs(half_width + 4.0 * line_sigma, output_type="ndarray")
    pull = np.zeros(order.size)
    if len(pairs):
        i, j = pairs[:, 0], pairs[:, 1]
        delta = d[j] - d[i]
        edge = (half_width + 0.5) * np.sqrt(0.5) / line_sigma
        inside = 0.5 * (erf(edge - delta * np.sqrt(0.5) / line_sigma) + erf(edge + delta * np.sqrt(0.5) / line_sigma))
        np.add.at(pull, i, amplitude[j] / amplitude[i] * delta * inside)
        np.add.at(pull, j, -amplitude[i] / amplitude[j] * delta * inside)
    return np.nonzero(on & (np.abs(pull) <= max_bias))[0]


def pinhole_sets(order, wavelength, found, minimum):
    """Line images whose line (order, wavelength) has at least ``minimum`` images ``found``."""
    key = np.unique(np.c_[order, np.round(wavelength, 5)], axis=0, return_inverse=True)[1].ravel()
    counts = np.bincount(key, weights=np.asarray(found, float))
    return counts[key] >= minimum


@dataclass
class LineMeasurements:
    """Every candidate line: prediction, measurement, verdict (arrays of one value per line)."""

    order: np.ndarray
    wavelength: np.ndarray
    x_predicted: np.ndarray
    y_predicted: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    snr: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray
    #: '' for a line used in the fit, else why not
    reason: np.ndarray
    x_fit: np.ndarray = field(default=None)
    y_fit: np.ndarray = field(default=None)
    #: Gaussian sigmas from the three pixels around each peak (see :func:`~.lines.centroids`)
    core_sigma_x: np.ndarray = field(default=None)
    core_sigma_y: np.ndarray = field(default=None)
    #: slit position (arcsec) of each line image
    slit: np.ndarray = field(default=None)

    @property
    def used(self):
        """Lines used in the final fit."""
        return self.reason == ""

    @property
    def detected(self):
        """Lines found and measured (used or clipped)."""
        return np.isin(self.reason, ["", "clipped"])

    def columns(self):
        """Dict of the table columns."""
        cols = {k: getattr(self, k) for k in ("order", "wavelength", "x_predicted", "y_predicted", "x", "y",
                                                "x_fit", "y_fit", "flux", "snr", "sigma_x", "sigma_y",
                                                "core_sigma_x", "core_sigma_y")}
        if self.slit is not None:
            cols["slit"] = self.slit
        cols["x_residual"] = self.x - self.x_fit
        cols["y_residual"] = self.y - self.y_fit
        cols["detected"] = self.detected
        cols["used"] = self.used
        # 'used', or why not ('clipped', 'blend', 'not found', 'saturated', 'bad pixel', 'faint', ...)
        cols["status"] = np.where(self.used, "used", self.reason)
        return cols


@dataclass
class SolveSettings:
    """Tunable numbers of :func:`solve_dispersion` (see ``disp_solution`` in ``default_settings.yaml``)."""

    degrees: tuple
    wave_variable: str
    #: 'x' or 'y': the axis along which wavelength runs
    dispersion_axis: str = "y"
    #: refinements look for lines only where the fit's leverage (prediction variance over residual
    #: variance) is below this: where it interpolates or extrapolates a little
    max_leverage: float = 10.0
    peak_sigma: float = 5.0
    max_shift: float = 15.0
    shift_tolerance: float = 2.0
    min_shift_fraction: float = 0.15
    #: correction passes: (matching radius in px, (order, w, slit) degrees) each
    first_passes: tuple = ((6.0, (1, 2, 0)),)
    radius: float = 2.0
    refinements: int = 5
    half_width: tuple = (4, 4)
    #: refinements may not move a line further than this (px) from the corrected prediction
    anchor_tolerance: float = 6.0
    #: a second-moment width above this factor times the core width makes a blend (None: no test)
    core_ratio: float = None
    #: Gaussian window (px) of the centroids, None for plain centroids
    weight_sigma: tuple = None
    min_snr: float = 20.0
    width_ratio: float = 1.25
    background_fraction: float = 0.1
    saturation: float = np.inf
    clip_sigma: float = 3.5
    clip_iterations: int = 10
    min_lines_per_order: int = 3
    min_used_fraction: float = 0.3
    #: stretches (px along the dispersion) of an order that may take their own shift
    segment_length: float = 1024.0
    #: search window (px) of a stretch's own shift, and the fraction of its lines it must match
    local_max_shift: float = 6.0
    local_min_fraction: float = 0.3
    #: the global shift uses this many of the brightest peaks per predicted line
    shift_peaks_per_line: float = 3.0
    fit_min_sigma: float = 0.05
    #: passes of :func:`extend_along_slit` (0: none), how far (px along the dispersion) its reference
    #: lines may be, and how closely (px) the steps predicting an image must agree
    slit_passes: int = 0
    slit_max_gap: float = 300.0
    slit_tolerance: float = 1.0


_MEASURED = ("x", "y", "flux", "snr", "sigma_x", "sigma_y", "core_sigma_x", "core_sigma_y")


def _measure(image, variance, mask, x0, y0, order, w, peaks, radius, s, kept=None, known=None):
    """The nearest peak within ``radius`` of each prediction, its centroid and its verdict.

    ``kept`` marks images measured before, whose ``x0, y0`` are their centroids and whose
    measurements ``known`` (a dict of arrays) are kept as they are: they are not measured
    again, but a new image sharing a peak with one of them, or off the trend of their
    widths, is a blend.
    """
    index = match_nearest(x0, y0, peaks[0], peaks[1], radius)
    kept = np.zeros(x0.size, bool) if kept is None else np.asarray(kept, bool)
    found = index >= 0
    new = found & ~kept
    n = x0.size
    reason = np.where(found | kept, "", "not found").astype(object)
    out = {k: np.where(kept, known[k], np.nan) if kept.any() else np.full(n, np.nan) for k in _MEASURED}
    if new.any():
        c = centroids(image, peaks[0][index[new]], peaks[1][index[new]], half_width=s.half_width,
                      variance=variance, mask=mask, weight_sigma=s.weight_sigma)
        # the global width test is loose: widths change along the orders; the local one below is tight
        verdict = reject_lines(c, saturation=s.saturation, min_snr=s.min_snr, width_ratio=2 * s.width_ratio,
                               background_fraction=s.background_fraction, core_ratio=s.core_ratio)
        # candidates sharing one peak are unresolved from each other
        shared = np.bincount(index[found], minlength=peaks[0].size)[index[new]] > 1
        verdict = np.where((verdict == "") & shared, "blend", verdict)
        # a centroid that wandered out of the matching window belongs to another line
        far = np.hypot(c.x - x0[new], c.y - y0[new]) > radius + 1.0
        verdict = np.where((verdict == "") & far, "blend", verdict)
        reason[new] = verdict
        with np.errstate(all="ignore"):
            for k, v in (("x", c.x), ("y", c.y), ("flux", c.flux), ("snr", c.flux / c.flux_error),
                         ("sigma_x", c.sigma_x), ("sigma_y", c.sigma_y), ("core_sigma_x", c.core_sigma_x),
                         ("core_sigma_y", c.core_sigma_y)):
                out[k][new] = v
        with np.errstate(all="ignore"):
            # line images change size along an order, so a blend shows against its neighbours' widths,
            # one-sided: where most lines carry faint neighbours, the narrow ones are the clean ones
            widths = np.log(np.c_[out["sigma_x"], out["sigma_y"]])
            odd = _off_trend(order, w, widths, reason == "", np.log(s.width_ratio), one_sided=True)
            reason[odd & ~kept] = "blend"
    return out, reason.astype(str)


def _off_trend(order, w, values, good, limit, one_sided=False):
    """Lines whose ``values`` (columns) depart by more than ``limit`` from a smooth fit along the orders.

    The fit is a clipped low-degree polynomial in (order, w); ``one_sided`` flags
    only values above the trend.
    """
    odd = np.zeros(order.size, bool)
    values = np.asarray(values, float).reshape(order.size, -1)
    use = good & np.all(np.isfinite(values), axis=1)
    degrees = _degrees_for((3, 2, 0), order[use])
    try:
        fit = fit_clipped([order, w, np.zeros(order.size)], np.where(use[:, None], values, 0.0), degrees,
                          sigma=3.0, max_iterations=5, used=use)
    except FitError:
        return odd
    model = np.stack([p(order, w, 0.0) for p in fit.polynomials], axis=1)
    excess = values - model if one_sided else np.abs(values - model)
    return good & np.any(excess > limit, axis=1)


def solve_dispersion(image, variance, mask, order, wavelength, prior, settings, trusted=None, slit=None):
    """Find candidate lines on an arc frame and fit the dispersion solution.

    Parameters
    ----------
    image, variance : numpy.ndarray
        Background-subtracted arc frame and its variance.
    mask : numpy.ndarray of bool
        Bad and saturated pixels.
    order, wavelength : array_like
        Candidate lines (see :func:`select_candidates`).
    prior : DispersionSolution
        First-guess solution (from the predicted line table).
    settings : SolveSettings
    trusted : array_like of bool, optional
        Candidates whose prior prediction is trusted (e.g. inside the wavelength range
        the predicted table covers): only they are looked for by the first passes; the
        others are reached as the solution grows (default: all trusted).
    slit : array_like, optional
        Slit position (arcsec) of each candidate: the images of several pinholes fit
        one solution in ``(order, w, slit)`` (default: all at the slit centre).

    Returns
    -------
    solution : DispersionSolution
    lines : LineMeasurements
    shift : Shift
        The global shift of the frame against the prior.

    Raises
    ------
    SolutionError
        No lines on the frame, no consistent shift inside the search window, an order
        with too few lines, fewer lines than coefficients.
    """
    s = settings
    order = np.asarray(order)
    wavelength = np.asarray(wavelength, float)
    if order.size == 0:
        raise SolutionError("no candidate lines predicted on the frame")
    slit_given = slit is not None
    slit = np.broadcast_to(np.asarray(0.0 if slit is None else slit, float), order.shape)
    noise = np.sqrt(np.maximum(variance, 1e-6))
    # masked pixels may be peaks: a saturated line is then found, and rejected, as itself, not as a neighbour
    peaks = find_peaks(image, noise, nsigma=s.peak_sigma)
    if peaks[0].size == 0:
        raise SolutionError(f"no line stands {s.peak_sigma:g} sigma above the noise: a blank frame or the wrong lamp?")
    x_prior, y_prior = prior.xy(order, wavelength, slit)
    # the shift follows the bright lines, saturated ones included; the faint forest only adds chance pairs
    bright = brightest_peaks(image, *peaks, s.shift_peaks_per_line * order.size)
    shift = global_shift(x_prior, y_prior, *bright, max_shift=s.max_shift, tolerance=s.shift_tolerance)
    log.info("global shift dx %+.2f dy %+.2f px (%.0f %% of %d lines matched)", shift.dx, shift.dy,
             100 * shift.matched_fraction, order.size)
    if shift.matched_fraction < s.min_shift_fraction:
        raise SolutionError(f"only {100 * shift.matched_fraction:.0f} % of the predicted lines match the frame's peaks "
                            f"at any shift within +-{s.max_shift:g} px: the wrong lamp, a blank frame, or a shift "
                            "beyond the search window")
    if max(abs(shift.dx), abs(shift.dy)) > s.max_shift - s.shift_tolerance:
        raise SolutionError(f"the best shift ({shift.dx:+.1f}, {shift.dy:+.1f}) px lies at the edge of the "
                            f"+-{s.max_shift:g} px search window: the frame is shifted further than the window allows")
    x0, y0 = x_prior + shift.dx, y_prior + shift.dy
    x0, y0 = _segment_shifts(order, x0, y0, bright, s)
    ranges = ((order.min(), _w(order, wavelength, s).min(), SLIT_RANGE[0]),
              (order.max(), _w(order, wavelength, s).max(), SLIT_RANGE[1]))
    solution = None
    # correction passes: smooth corrections to the prior, in a wide window; then the solution itself,
    # refined in a tight window as its predictions improve
    passes = [(float(r), tuple(d), True) for r, d in s.first_passes]
    passes += [(s.radius, tuple(s.degrees), False)] * (s.refinements + 1)
    reach = np.ones(order.size, bool) if trusted is None else np.asarray(trusted, bool).copy()
    previous = None
    for step, (radius, degrees, correction) in enumerate(passes):
        meas, reason = _measure(image, variance, mask, x0, y0, order, _w(order, wavelength, s), peaks, radius, s)
        reason = np.where(reach, reason, "not found")
        if correction:
            # a saturated line or one touching a bad pixel is placed well enough for a correction
            reason = np.where(np.isin(reason, ["saturated", "bad pixel"]), "", reason)
        else:
            # the refinements grow the solution from line to line; tied to the corrected prediction,
            # they cannot drift along a dense arc from one misidentified line to the next
            off = np.hypot(meas["x"] - anchor[0], meas["y"] - anchor[1]) > s.anchor_tolerance
            reason = np.where((reason == "") & off, "off prediction", reason)
        good = reason == ""
        if not correction and previous is not None and np.array_equal(good, previous):
            break  # converged: the same lines as in the last pass, whose fit stands
        previous = good if not correction else None
        degrees = _degrees_for(degrees, order[good])
        base_x, base_y = (x_prior, y_prior) if correction else (0.0, 0.0)
        try:
            solution, fit = fit_solution(order, wavelength, slit, meas["x"] - base_x, meas["y"] - base_y, degrees,
                                         wave_variable=s.wave_variable, sigma=s.clip_sigma,
                                         max_iterations=s.clip_iterations, used=good, ranges=ranges,
                                         min_sigma=s.fit_min_sigma)
        except FitError as exc:
            raise SolutionError(f"too few good lines for the fit: {exc}") from None
        x0, y0 = solution.xy(order, wavelength, slit)
        x0, y0 = x0 + base_x, y0 + base_y
        if correction:
            anchor = (x0, y0)
        if not correction:
            # the next pass looks only where this fit predicts well: not far beyond its lines (a
            # low-degree correction predicts with a small variance where it is still wrong: not it)
            reach = fit.leverage <= s.max_leverage
        log.debug("pass %d: radius %.1f px, degrees %s, %d lines measured, %d used", step, radius, degrees,
                  int(good.sum()), int(fit.used.sum()))
    reason = np.where(good & ~fit.used, "clipped", reason)
    lines = LineMeasurements(order, wavelength, x_prior, y_prior, meas["x"], meas["y"], meas["flux"], meas["snr"],
                             meas["sigma_x"], meas["sigma_y"], reason, x0, y0, meas["core_sigma_x"],
                             meas["core_sigma_y"], slit.copy() if slit_given else None)
    _check_orders(lines, s.min_lines_per_order)
    # saturated lines and lines on bad pixels say nothing about the solution: they are not counted
    measurable = ~np.isin(lines.reason, ["saturated", "bad pixel", "off frame"])
    fraction = lines.used.sum() / max(measurable.sum(), 1)
    if fraction < s.min_used_fraction:
        raise SolutionError(f"only {100 * fraction:.0f} % of the {int(measurable.sum())} measurable predicted lines "
                            f"fit one solution (at least {100 * s.min_used_fraction:.0f} % needed; "
                            f"{int((~measurable).sum())} more saturated, on bad pixels or off the frame): lines "
                            "misidentified or blended, the solution would not be reliable")
    return solution, lines, shift


def extend_along_slit(image, variance, mask, lines, positions, settings):
    """Measure the missing pinhole images of partly measured lines, outward along the slit.

    Beyond the lines a solution was fitted to (the end of an order whose lines were not
    found yet), its predictions at the outer pinholes can be pixels off, although the
    images of one line lie on the image of the slit, which is nearly straight and changes
    shape slowly along an order. So an image missing next to a measured one, on the side
    away from the slit centre, is predicted from that image plus the step between the same
    two pinholes in the nearest lines of the order measured at both (their median, where
    at least two agree within ``slit_tolerance`` px, no further than ``slit_max_gap`` px
    along the dispersion), or the line's own last step extended; where both exist they must
    agree. The predicted images are measured as in :func:`solve_dispersion` (nearest peak
    within ``radius``, centroid, rejection), pass after pass (``slit_passes`` at most)
    while passes add images: each reaches one pinhole further and, through the
    reference lines, further along the order.

    Parameters
    ----------
    image, variance, mask : numpy.ndarray
        As for :func:`solve_dispersion`.
    lines : LineMeasurements
        Images of lines at several pinholes (``lines.slit`` set), e.g. from
        :func:`solve_dispersion`; the images found get their measurement and reason ''
        (in place).
    positions : array_like
        Slit positions (arcsec) of the pinholes.
    settings : SolveSettings

    Returns
    -------
    int
        Number of images added.
    """
    s = settings
    if lines.order.size == 0:
        return 0
    positions = np.asarray(positions, float)
    # one row per line, one column per pinhole: index of its image in ``lines`` (-1: none)
    key = np.unique(np.c_[lines.order, np.round(lines.wavelength, 5)], axis=0, return_inverse=True)[1].ravel()
    grid = np.full((key.max() + 1, positions.size), -1)
    grid[key, np.argmin(np.abs(lines.slit[:, None] - positions[None]), axis=1)] = np.arange(key.size)
    exists, index = grid >= 0, np.maximum(grid, 0)
    line_order = np.zeros(grid.shape[0])
    line_order[key] = lines.order
    centre = int(np.argmin(np.abs(positions)))
    peaks = find_peaks(image, np.sqrt(np.maximum(variance, 1e-6)), nsigma=s.peak_sigma)
    w = _w(lines.order, lines.wavelength, s)
    added = 0
    for _ in range(s.slit_passes):
        x, y = np.where(exists, lines.x[index], np.nan), np.where(exists, lines.y[index], np.nan)
        measured = exists & (lines.reason == "")[index]
        # images not found, or found but rejected against a prediction that may have been wrong
        missing = exists & np.isin(lines.reason, ["not found", "off prediction"])[index]
        px, py = _slit_predictions(x, y, measured, missing, line_order, positions, centre, s)
        predicted = np.isfinite(px)
        if not predicted.any():
            break
        x0, y0 = lines.x.copy(), lines.y.copy()
        x0[grid[predicted]], y0[grid[predicted]] = px[predicted], py[predicted]
        take = np.zeros(lines.order.size, bool)
        take[grid[predicted]] = True
        kept = (lines.reason == "")
        take |= kept
        meas, reason = _measure(image, variance, mask, x0[take], y0[take], lines.order[take], w[take], peaks, s.radius,
                                s, kept=kept[take], known={k: getattr(lines, k)[take] for k in _MEASURED})
        found = ~kept[take] & (reason == "")
        if not found.any():
            break
        got = np.flatnonzero(take)[found]
        for k in _MEASURED:
            getattr(lines, k)[got] = meas[k][found]
        lines.reason[got] = ""
        added += got.size
    log.info("%d more line images measured along the slit", added)
    return added


def _slit_predictions(x, y, measured, missing, line_order, positions, centre, s):
    """Predicted ``(x, y)`` (lines x pinholes, NaN where none) of missing images next to measured ones."""
    px, py = np.full(x.shape, np.nan), np.full(x.shape, np.nan)
    d = y if s.dispersion_axis == "y" else x
    for k in range(positions.size):
        if k == centre:
            continue
        inward = 1 if k < centre else -1
        k1, k2 = k + inward, k + 2 * inward
        want = missing[:, k] & measured[:, k1]
        if not want.any():
            continue
        sx, sy = _reference_steps(x, y, d, measured, line_order, want, k, k1, s)
        if k2 != k1 and 0 <= k2 < positions.size:
            # the line's own last step, scaled to the next pinhole
            scale = (positions[k] - positions[k1]) / (positions[k1] - positions[k2])
            ex, ey = (x[:, k1] - x[:, k2]) * scale, (y[:, k1] - y[:, k2]) * scale
            own = want & measured[:, k2]
            both = own & np.isfinite(sx)
            disagree = both & ((np.abs(ex - sx) > s.slit_tolerance) | (np.abs(ey - sy) > s.slit_tolerance))
            only_own = own & ~np.isfinite(sx)
            sx = np.where(disagree, np.nan, np.where(only_own, ex, sx))
            sy = np.where(disagree, np.nan, np.where(only_own, ey, sy))
        go = want & np.isfinite(sx)
        px[go, k], py[go, k] = x[go, k1] + sx[go], y[go, k1] + sy[go]
    return px, py


def _reference_steps(x, y, d, measured, line_order, want, k, k1, s):
    """Step (x, y) from pinhole ``k1`` to ``k`` of the lines ``want``, from the nearest lines measured at both.

    The up to four lines of the same order nearest along the dispersion (within
    ``slit_max_gap`` px) vote; their median counts where at least two agree within
    ``slit_tolerance`` px. NaN where there are no such lines.
    """
    sx, sy = np.full(want.size, np.nan), np.full(want.size, np.nan)
    ref = np.flatnonzero(measured[:, k] & measured[:, k1])
    asked = np.flatnonzero(want)
    if ref.size == 0:
        return sx, sy
    # orders sit 1e7 px apart on one sorted axis
    ref_key = line_order[ref] * 1e7 + d[ref, k1]
    ref, ref_key = ref[np.argsort(ref_key)], np.sort(ref_key)
    key = line_order[asked] * 1e7 + d[asked, k1]
    near = np.clip(np.searchsorted(ref_key, key)[None] + np.arange(-2, 2)[:, None], 0, ref.size - 1)
    valid = np.abs(ref_key[near] - key[None]) <= s.slit_max_gap
    valid[1:] &= near[1:] != near[:-1]  # clipping at the ends repeats a line: count it once
    steps_x = np.where(valid, x[ref[near], k] - x[ref[near], k1], np.nan)
    steps_y = np.where(valid, y[ref[near], k] - y[ref[near], k1], np.nan)
    voted = valid.any(axis=0)
    mx = np.full(asked.size, np.nan)
    my = np.full(asked.size, np.nan)
    mx[voted] = np.nanmedian(steps_x[:, voted], axis=0)
    my[voted] = np.nanmedian(steps_y[:, voted], axis=0)
    with np.errstate(invalid="ignore"):
        agree = ((np.abs(steps_x - mx) <= s.slit_tolerance) & (np.abs(steps_y - my) <= s.slit_tolerance)).sum(axis=0)
    good = agree >= 2
    sx[asked[good]], sy[asked[good]] = mx[good], my[good]
    return sx, sy


def _segment_shifts(order, x0, y0, peaks, s):
    """Shift each stretch of each order on its own where that matches more of its lines.

    The predicted table may be off by different amounts along an order (the
    bundled NIR table by up to ~25 px between the ends of order 10). Each order is
    cut into stretches of ``segment_length`` pixels along the dispersion; a stretch
    takes its own best shift within ``local_max_shift`` when that matches at
    least ``local_min_fraction`` of its lines and more than the global shift does.
    """
    x0, y0 = x0.copy(), y0.copy()
    d = y0 if s.dispersion_axis == "y" else x0
    for o in np.unique(order):
        in_order = order == o
        start = d[in_order].min()
        stretch = np.floor((d - start) / s.segment_length).astype(int)
        for k in np.unique(stretch[in_order]):
            m = in_order & (stretch == k)
            at_global = match_fraction(x0[m], y0[m], *peaks, s.shift_tolerance)
            local = global_shift(x0[m], y0[m], *peaks, max_shift=s.local_max_shift, tolerance=s.shift_tolerance)
            if local.matched_fraction >= max(s.local_min_fraction, at_global) and m.sum() >= 3:
                x0[m] += local.dx
                y0[m] += local.dy
                if max(abs(local.dx), abs(local.dy)) > s.shift_tolerance:
                    log.info("order %s, lines %d-%d px along it: shifted by (%+.1f, %+.1f) px on their own "
                             "(%.0f %% matched, %.0f %% at the global shift)", o, int(start + k * s.segment_length),
                             int(start + (k + 1) * s.segment_length), local.dx, local.dy,
                             100 * local.matched_fraction, 100 * at_global)
    return x0, y0


def _w(order, wavelength, s):
    return order * wavelength if s.wave_variable == "order*wavelength" else wavelength


def _degrees_for(degrees, orders):
    """Cap the order degree at the number of distinct orders minus one."""
    n_orders = np.unique(orders).size
    return (min(int(degrees[0]), max(n_orders - 1, 0)),) + tuple(int(d) for d in degrees[1:])


def _check_orders(lines, minimum):
    """Every order with candidates must have ``minimum`` used lines."""
    for o in np.unique(lines.order):
        m = lines.order == o
        n = int((lines.used & m).sum())
        if n < minimum:
            reasons, counts = np.unique(lines.reason[m & ~lines.used], return_counts=True)
            why = ", ".join(f"{c} {r}" for r, c in sorted(zip(reasons, counts), key=lambda rc: -rc[1]))
            raise SolutionError(f"order {o}: {n} usable lines of {int(m.sum())} predicted (at least {minimum} "
                                f"needed; {why}): is the order missing from the frame, or its lines saturated?")
