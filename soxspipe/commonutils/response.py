"""Instrument response from a flux standard, end-to-end efficiency, and flux calibration.

The response converts detected electrons into flux above the atmosphere::

    R(lambda) = counts / exptime * 10^(0.4 k(lambda) X) / F_lambda

(counts in e-/nm, ``k`` the extinction in mag/airmass, ``X`` the airmass, ``F_lambda``
the standard's catalogue flux in erg/s/cm^2/Angstrom), so ``R`` is in
(e-/s/nm) / (erg/s/cm^2/Angstrom). It is fitted in ``ln R`` with cubic B-splines,
by weighted linear least squares with iterative clipping; telluric bands, the
star's own absorption lines and faint points are left out, and a penalty on the
differences of the coefficients bridges the gaps they leave while hardly touching
the fit where data constrain it. The clipping is asymmetric (weak telluric lines
outside the bands only absorb); the offset it gives the noise of the points it
keeps is taken out (:func:`fit_penalised`, ``unbiased``), so that the response
follows their mean, not the upper edge of their noise.

Two models, chosen per arm in the settings:

- ``orders``: an independent spline in wavelength per order (the UV-VIS
  quasi-orders, each from its own grating; or a merged spectrum, order 0);
- ``echelle``: ``ln R_m(lambda) = E(lambda) + B(x) + c_m`` with a smooth envelope
  ``E`` common to all orders, one blaze function ``B`` of the blaze phase
  ``x = m (lambda_c,m / lambda - 1)`` shared by every order ``m`` (``lambda_c,m`` its
  blaze wavelength, by default the middle of its range), and a small constant per
  order. Orders that lie wholly inside a telluric band, where a fit of their own has
  nothing to hold on to, take their response from the shape the other orders
  measure.

The result is a table sampled on the standard's wavelengths, one row per order and
wavelength: ``ORDER, WAVE, RESPONSE, ERROR, MASK`` (MASK: why the point did not
constrain the fit, 0 where it did), the layout of the ``RESPONSE_<ARM>`` product.
:class:`Response` evaluates it anywhere inside each order's fitted range. No I/O.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table
from scipy import sparse
from scipy.special import ndtr

from .bsplines import basis, uniform_knots
from .errors import DataError
from .extinction import band_mask, extinction
from .flux_standards import line_mask

log = logging.getLogger(__name__)

#: collecting area of the NTT used for the efficiency (cm^2)
TELESCOPE_AREA_CM2 = 89000.0
#: h c in erg nm
H_C_ERG_NM = 6.62607015e-27 * 2.99792458e17

# MASK bits of the response table: why a point did not constrain the fit
MASK_TELLURIC = 1
MASK_STELLAR_LINE = 2
MASK_CLIPPED = 4
MASK_FAINT = 8
#: in a weak telluric band (``envelope`` in telluric_bands.yaml): fitted, to the band's upper envelope
MASK_ENVELOPE = 16


@dataclass
class FitResult:
    """Result of :func:`fit_penalised`.

    Attributes
    ----------
    coefficients : numpy.ndarray
        ``(n_coefficients,)``.
    covariance : numpy.ndarray
        Their covariance, scaled by the reduced chi^2 of the kept points when above 1.
    kept : numpy.ndarray of bool
        Points used in the final fit.
    clipped : numpy.ndarray of bool
        Points rejected by the clipping.
    """

    coefficients: np.ndarray
    covariance: np.ndarray
    kept: np.ndarray
    clipped: np.ndarray

    def evaluate(self, design):
        """Model values and their standard deviations for the rows of ``design``."""
        design = sparse.csr_array(design)
        variance = np.empty(design.shape[0])
        # in chunks of rows: (rows x coefficients) dense blocks stay small
        for start in range(0, design.shape[0], 20000):
            part = design[start:start + 20000]
            variance[start:start + 20000] = ((part @ self.covariance) * part.toarray()).sum(axis=1)
        return design @ self.coefficients, np.sqrt(np.maximum(variance, 0.0))


def difference_penalty(n, order=2):
    """``D.T @ D`` for the ``(n - order, n)`` matrix ``D`` of ``order``-th differences.

    As a penalty on B-spline coefficients it bridges stretches without data: first
    differences with straight lines between the coefficients at the stretch's ends,
    second differences with a curve that also follows the slopes there (and extrapolates
    straight beyond the data).
    """
    if n <= order:
        return np.zeros((n, n))
    d = np.diff(np.eye(n), order, axis=0)
    return d.T @ d


def truncation_offset(low, high):
    """Where the mean of a unit normal truncated about its own value settles: ``d = E[x | d - low < x < d + high]``.

    A fit that keeps the points between ``low`` below and ``high`` above itself, and is their mean,
    settles ``d`` standard deviations above the mean of pure noise (0.52 for ``low=1, high=5``,
    0.19 for 1.5, 0.06 for 2; 0 when symmetric).

    Parameters
    ----------
    low, high : float
        Clipping thresholds below and above the fit (standard deviations).

    Returns
    -------
    float
        ``d``, found by fixed-point iteration from 0.
    """
    d = 0.0
    for _ in range(200):
        a, b = d - float(low), d + float(high)
        mass = max(float(ndtr(b) - ndtr(a)), 1e-300)
        new = float(np.exp(-0.5 * a * a) - np.exp(-0.5 * b * b)) / np.sqrt(2.0 * np.pi) / mass
        if abs(new - d) < 1e-12:
            break
        d = new
    return d


def fit_penalised(design, values, errors, penalty, *, use=None, clip_low=3.0, clip_high=3.0,
                  iterations=5, clip_scale="robust", ridge=1e-9, unbiased=False):
    """Weighted linear least squares with a quadratic penalty and iterative asymmetric clipping.

    Minimises ``sum(((values - design @ c) / errors) ** 2) + s * c @ penalty @ c`` where ``s`` is
    the mean diagonal of the data's normal matrix, so that ``penalty`` is relative to the
    weight of the data. Points whose normalised residual (residual over error) falls below
    ``-clip_low`` or above ``clip_high`` times a scale are rejected, and the fit repeated, until
    nothing changes or ``iterations`` are done. The scale is the robust spread of the normalised
    residuals (``clip_scale='robust'``), or that spread but at least 1 (``'errors'``: the points'
    own errors, unless the misfit exceeds them). With the points' errors and a small
    ``clip_low`` the fit climbs to the upper envelope of absorption lines that no mask covers
    (weak telluric lines); for pure noise it then settles about ``0.5`` sigma above the mean
    with ``clip_low=1``, ``0.06`` sigma with ``clip_low=2`` (:func:`truncation_offset`). With
    ``unbiased`` that offset is taken out: the kept points, lowered by it (times the clipping
    scale and their errors), are fitted once more, so that the fit follows the mean of the points
    that no absorption line pulls down rather than the upper edge of their noise.

    Parameters
    ----------
    design : scipy.sparse array or numpy.ndarray
        ``(n_points, n_coefficients)``.
    values, errors : numpy.ndarray
        ``(n_points,)``; a point with a non-finite value or a non-positive error is not used.
    penalty : numpy.ndarray
        ``(n_coefficients, n_coefficients)`` symmetric non-negative matrix.
    use : numpy.ndarray of bool, optional
        Points allowed into the fit.
    clip_low, clip_high : float
        Clipping thresholds below and above the fit, in units of the clipping scale.
    iterations : int
        Most fits done.
    clip_scale : {'robust', 'errors'}
        Scale of the clipping thresholds.
    ridge : float
        Relative ridge keeping coefficients that nothing constrains finite.
    unbiased : bool
        Remove the noise's offset that asymmetric clipping leaves (see above).

    Returns
    -------
    FitResult
    """
    design = sparse.csr_array(design)
    values = np.asarray(values, dtype=float)
    errors = np.asarray(errors, dtype=float)
    ok = np.isfinite(values) & np.isfinite(errors) & (errors > 0)
    if use is not None:
        ok &= use
    weights = np.where(ok, 1.0 / np.where(ok, errors, 1.0) ** 2, 0.0)
    safe_values = np.where(ok, values, 0.0)
    kept = ok.copy()
    n = design.shape[1]
    for iteration in range(max(int(iterations), 1)):
        w = np.where(kept, weights, 0.0)
        weighted = design.multiply(w[:, None]).tocsr()
        normal = np.asarray((design.T @ weighted).toarray())
        diagonal = np.diag(normal)
        scale = float(diagonal[diagonal > 0].mean()) if np.any(diagonal > 0) else 1.0
        normal = normal + scale * (np.asarray(penalty) + ridge * np.eye(n))
        rhs = weighted.T @ safe_values
        coefficients = np.linalg.solve(normal, rhs)
        residual = (values - design @ coefficients) * np.sqrt(weights)
        if kept.sum() < 3:
            break
        spread = max(1.4826 * np.median(np.abs(residual[kept] - np.median(residual[kept]))), 1e-12)
        if clip_scale == "errors":
            # the points' errors, unless the model's misfit is larger than the noise
            spread = max(spread, 1.0)
        new = ok & (residual >= -clip_low * spread) & (residual <= clip_high * spread)
        if np.array_equal(new, kept) or iteration == int(iterations) - 1:
            break
        kept = new
    if unbiased and kept.sum() >= 3 and clip_low != clip_high:
        offset = truncation_offset(clip_low, clip_high) * spread
        lowered = np.where(kept, safe_values - offset * np.where(ok, errors, 0.0), 0.0)
        coefficients = np.linalg.solve(normal, weighted.T @ lowered)
        residual = (values - design @ coefficients) * np.sqrt(weights) - offset
    covariance = np.linalg.inv(normal)
    n_kept = int(kept.sum())
    if n_kept > n:
        chi2 = float(np.sum(residual[kept] ** 2)) / (n_kept - n)
        covariance *= max(chi2, 1.0)
    return FitResult(coefficients, covariance, kept, ok & ~kept)


def _knots(values, spacing):
    lo, hi = float(np.min(values)), float(np.max(values))
    return uniform_knots(lo, hi if hi > lo else lo + spacing, spacing)


def _n_basis(knots):
    return len(knots) - 4


def blaze_phase(order, wavelength, centre):
    """Blaze phase ``x = m (lambda_c / lambda - 1)`` of order ``m`` (0 at its blaze wavelength ``lambda_c``)."""
    return np.asarray(order, float) * (np.asarray(centre, float) / np.asarray(wavelength, float) - 1.0)


class _Model:
    """Design matrix and penalty of one response model, reusable on new points."""

    def __init__(self, kind, orders, wavelength, *, knot_spacing, envelope_knot_spacing,
                 blaze_knot_spacing, centres, smoothing, penalty_order, constant_ridge):
        self.kind = kind
        self.orders = np.unique(orders)
        self.centres = centres
        if kind == "orders":
            self.knots = {o: _knots(wavelength[orders == o], knot_spacing) for o in self.orders}
            sizes = [_n_basis(self.knots[o]) for o in self.orders]
            self.offsets = dict(zip(self.orders, np.cumsum([0] + sizes[:-1])))
            self.n = int(sum(sizes))
            penalty = np.zeros((self.n, self.n))
            for o, size in zip(self.orders, sizes):
                s = self.offsets[o]
                penalty[s:s + size, s:s + size] = smoothing * difference_penalty(size, penalty_order)
        elif kind == "echelle":
            if any(o <= 0 for o in self.orders):
                raise ValueError("the echelle response model needs the orders' echelle numbers (> 0)")
            x = blaze_phase(orders, wavelength, self._centre(orders))
            self.envelope_knots = _knots(wavelength, envelope_knot_spacing)
            self.blaze_knots = _knots(x, blaze_knot_spacing)
            ne, nb = _n_basis(self.envelope_knots), _n_basis(self.blaze_knots)
            self.n = ne + nb + self.orders.size
            penalty = np.zeros((self.n, self.n))
            penalty[:ne, :ne] = smoothing * difference_penalty(ne, penalty_order)
            penalty[ne:ne + nb, ne:ne + nb] = smoothing * difference_penalty(nb, penalty_order)
            penalty[ne + nb:, ne + nb:] = constant_ridge * np.eye(self.orders.size)
        else:
            raise ValueError(f"unknown response model '{kind}' (use 'orders' or 'echelle')")
        self.penalty = penalty

    def _centre(self, orders):
        return np.array([self.centres[o] for o in orders]) if np.ndim(orders) else self.centres[orders]

    def design(self, orders, wavelength):
        orders = np.asarray(orders)
        wavelength = np.asarray(wavelength, dtype=float)
        if self.kind == "orders":
            blocks = [(np.zeros(0, int), np.zeros(0, int), np.zeros(0))]
            rows = np.arange(orders.size)
            for o in self.orders:
                sel = rows[orders == o]
                if sel.size:
                    b = basis(wavelength[sel], self.knots[o]).tocoo()
                    blocks.append((sel[b.row], b.col + self.offsets[o], b.data))
            r, c, v = (np.concatenate(p) for p in zip(*blocks))
            return sparse.csr_array((v, (r, c)), shape=(orders.size, self.n))
        x = blaze_phase(orders, wavelength, self._centre(orders))
        e = basis(wavelength, self.envelope_knots)
        b = basis(x, self.blaze_knots)
        index = np.searchsorted(self.orders, orders)
        c = sparse.csr_array((np.ones(orders.size), (np.arange(orders.size), index)),
                             shape=(orders.size, self.orders.size))
        return sparse.hstack([e, b, c]).tocsr()


@dataclass
class Response:
    """A response curve per order, sampled on wavelengths (the ``RESPONSE_<ARM>`` table).

    Attributes
    ----------
    table : astropy.table.Table
        ``ORDER`` (0 for a merged spectrum), ``WAVE`` (nm), ``RESPONSE``
        ((e-/s/nm) / (erg/s/cm^2/Angstrom)), ``ERROR``, ``MASK`` (bits: 1 telluric band,
        2 stellar line, 4 clipped, 8 faint; 0 where the point constrained the fit; 16 in a weak
        telluric band, fitted to its upper envelope).
    meta : dict
        What it came from (standard, airmass, exposure time, model).
    """

    table: Table
    meta: dict = field(default_factory=dict)

    def __post_init__(self):
        self.table = Table(self.table, copy=False)
        self.table.sort(["ORDER", "WAVE"])
        orders = np.asarray(self.table["ORDER"])
        starts = np.flatnonzero(np.r_[True, orders[1:] != orders[:-1]])
        ends = np.r_[starts[1:], orders.size]
        self._slices = {int(orders[s]): slice(s, e) for s, e in zip(starts, ends)}

    @property
    def orders(self):
        """The orders the response covers."""
        return sorted(self._slices)

    def order_table(self, order):
        """The rows of ``order`` (sorted by wavelength)."""
        return self.table[self._slice(order)]

    def wavelength_range(self, order):
        """``(min, max)`` wavelength (nm) of the response of ``order``."""
        wave = np.asarray(self.order_table(order)["WAVE"], dtype=float)
        return float(wave[0]), float(wave[-1])

    def _slice(self, order):
        try:
            return self._slices[int(order)]
        except KeyError:
            raise DataError(f"the response has no order {order} (it covers orders {self.orders}); "
                            "use a response of the same arm, measured with the same extraction") from None

    def evaluate(self, order, wavelength):
        """Response and its standard deviation in ``order`` at ``wavelength`` (nm).

        Raises
        ------
        DataError
            The response does not cover ``order`` or the wavelengths asked for.
        """
        rows = self.order_table(order)
        wave = np.asarray(rows["WAVE"], dtype=float)
        wl = np.asarray(wavelength, dtype=float)
        finite = wl[np.isfinite(wl)]
        tolerance = 1e-6 * wave[-1]
        if finite.size and (finite.min() < wave[0] - tolerance or finite.max() > wave[-1] + tolerance):
            raise DataError(f"the response of order {order} covers {wave[0]:.2f}-{wave[-1]:.2f} nm, not "
                            f"{finite.min():.2f}-{finite.max():.2f} nm; measure the response on a standard "
                            "extracted over the same wavelength range")
        value = np.interp(wl, wave, np.asarray(rows["RESPONSE"], dtype=float))
        error = np.interp(wl, wave, np.asarray(rows["ERROR"], dtype=float))
        return value, error

    def evaluate_rows(self, orders, wavelength, *, beyond="raise"):
        """Response and its standard deviation at every row of a spectrum of ``(order, wavelength)`` rows.

        Parameters
        ----------
        orders, wavelength : array_like
            Order (0 for a merged spectrum) and wavelength (nm) of every row.
        beyond : {"raise", "nan"}
            Rows beyond the wavelengths the response covers in their order: an error, or NaN.

        Returns
        -------
        value, error : numpy.ndarray
        n_beyond : int
            Rows set to NaN for lying beyond the response.

        Raises
        ------
        DataError
            The response does not cover one of the orders (or, with ``beyond="raise"``, a wavelength).
        """
        orders = np.asarray(orders, dtype=int)
        wavelength = np.asarray(wavelength, dtype=float)
        value = np.full(wavelength.shape, np.nan)
        error = np.full(wavelength.shape, np.nan)
        n_beyond = 0
        for order in np.unique(orders):
            rows = orders == order
            if beyond == "nan":
                lo, hi = self.wavelength_range(order)
                inside = rows & (wavelength >= lo) & (wavelength <= hi)
                n_beyond += int(rows.sum() - inside.sum())
                rows = inside
            value[rows], error[rows] = self.evaluate(order, wavelength[rows])
        return value, error, n_beyond

    def efficiency(self, order, wavelength, *, area_cm2=TELESCOPE_AREA_CM2):
        """End-to-end efficiency (detected photons over photons reaching the mirror) of ``order``."""
        value, error = self.evaluate(order, wavelength)
        factor = efficiency_factor(wavelength, area_cm2)
        return value * factor, error * factor


def efficiency_factor(wavelength, area_cm2=TELESCOPE_AREA_CM2):
    """Factor turning a response into an efficiency: ``h c / (lambda * 10 Angstrom/nm * area)``."""
    return H_C_ERG_NM / (np.asarray(wavelength, dtype=float) * 10.0 * float(area_cm2))


def raw_response(wavelength, counts, error, *, exptime, airmass, standard_flux, extinction_alpha=None):
    """Point-by-point response ``counts / exptime * 10^(0.4 k X) / F`` and its standard deviation.

    Parameters
    ----------
    wavelength, counts, error : numpy.ndarray
        The standard's extracted spectrum (nm; e-/nm over the exposure).
    exptime, airmass : float
        Exposure time (s) and mean airmass.
    standard_flux : numpy.ndarray
        The catalogue flux (erg/s/cm^2/Angstrom) at ``wavelength``, at the spectrum's resolution.
    """
    k = extinction(wavelength) if extinction_alpha is None else extinction(wavelength, extinction_alpha)
    factor = 10.0 ** (0.4 * k * float(airmass)) / (float(exptime) * np.asarray(standard_flux, dtype=float))
    return np.asarray(counts, dtype=float) * factor, np.asarray(error, dtype=float) * np.abs(factor)


def fit_response(orders, wavelength, counts, error, *, exptime, airmass, standard_flux, model="orders",
                 knot_spacing=5.0, envelope_knot_spacing=40.0, blaze_knot_spacing=0.05, centres=None,
                 line_half_width_kms=500.0, min_snr=5.0, smoothing=1e-3, penalty_order=1,
                 constant_ridge=1e-3, clip_low=2.0, clip_high=5.0, iterations=50, clip_scale="errors",
                 meta=None):
    """Fit the response of an extracted flux standard.

    Parameters
    ----------
    orders : array_like of int
        Order of every point (0 for a merged spectrum).
    wavelength, counts, error : array_like
        Wavelength (nm), counts (e-/nm over the exposure) and their standard deviation.
    exptime, airmass : float
        Exposure time (s) and mean airmass of the standard.
    standard_flux : array_like
        Catalogue flux (erg/s/cm^2/Angstrom) at ``wavelength``, at the spectrum's resolution.
    model : {'orders', 'echelle'}
        Response model (see the module's description).
    knot_spacing : float
        Knot spacing (nm) of the per-order splines (``orders``).
    envelope_knot_spacing, blaze_knot_spacing : float
        Knot spacings of the envelope (nm) and of the blaze function (blaze phase) (``echelle``).
    centres : dict, optional
        Blaze wavelength (nm) of each order (``echelle``); default (and for an order it lacks) the middle of
        the order's range.
    line_half_width_kms : float
        Half-width (km/s) of the window masked around each stellar absorption line.
    min_snr : float
        Points with a lower signal-to-noise ratio are not fitted.
    smoothing : float
        Weight of the difference penalty on the spline coefficients, relative to the data's.
    penalty_order : {1, 2}
        Order of the differences penalised (see :func:`difference_penalty`).
    constant_ridge : float
        Relative ridge on the per-order constants (``echelle``).
    clip_low, clip_high, clip_scale : float, float, str
        Clipping thresholds below and above the fit, and their scale (see :func:`fit_penalised`):
        telluric lines only absorb, so the clipping is asymmetric.
    iterations : int
        Most fits (clipping iterations).
    meta : dict, optional
        Stored in the result (standard, airmass, ...).

    Returns
    -------
    Response

    Raises
    ------
    DataError
        An order has no point to fit (``orders`` model) or nothing is left to fit.
    """
    orders = np.asarray(orders, dtype=int)
    wavelength = np.asarray(wavelength, dtype=float)
    value, value_error = raw_response(wavelength, counts, error, exptime=exptime, airmass=airmass,
                                      standard_flux=standard_flux)
    counts = np.asarray(counts, dtype=float)
    error = np.asarray(error, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = counts / error
        log_value = np.log(value)
        log_error = value_error / value
    finite = np.isfinite(wavelength) & np.isfinite(log_value) & np.isfinite(log_error) & (value > 0)
    mask = np.zeros(wavelength.size, dtype=np.int16)
    mask[band_mask(wavelength, envelope=False)] |= MASK_TELLURIC
    mask[band_mask(wavelength, envelope=True)] |= MASK_ENVELOPE
    mask[line_mask(wavelength, line_half_width_kms)] |= MASK_STELLAR_LINE
    mask[~finite | ~(snr >= min_snr)] |= MASK_FAINT
    use = (mask & ~MASK_ENVELOPE) == 0
    if not use.any():
        raise DataError("no point of the standard's spectrum is usable for a response (all faint, in "
                        "telluric bands or on stellar lines)")
    valid = np.isfinite(wavelength)
    centres = {**{int(o): 0.5 * (wavelength[valid & (orders == o)].min() + wavelength[valid & (orders == o)].max())
                  for o in np.unique(orders[valid])}, **(centres or {})}
    if model == "orders":
        empty = [int(o) for o in np.unique(orders[valid]) if not use[orders == o].any()]
        if empty:
            raise DataError(f"order(s) {empty} of the standard have no point usable for a response (all "
                            "faint, in telluric bands or on stellar lines); use a response model that "
                            "bridges orders ('echelle') or a standard with more signal")
    fitted = _Model(model, orders[valid], wavelength[valid], knot_spacing=knot_spacing,
                    envelope_knot_spacing=envelope_knot_spacing, blaze_knot_spacing=blaze_knot_spacing,
                    centres=centres, smoothing=smoothing, penalty_order=penalty_order,
                    constant_ridge=constant_ridge)
    design = fitted.design(orders[valid], wavelength[valid])
    result = fit_penalised(design, log_value[valid], log_error[valid], fitted.penalty, use=use[valid],
                           clip_low=clip_low, clip_high=clip_high, iterations=iterations,
                           clip_scale=clip_scale, unbiased=True)
    mask_valid = mask[valid]
    mask_valid[result.clipped] |= MASK_CLIPPED
    log_fit, log_fit_error = result.evaluate(design)
    response = np.exp(log_fit)
    n_used = int(result.kept.sum())
    log.info("response (%s model): %d of %d points fitted, %d clipped", model, n_used, valid.sum(),
             int(result.clipped.sum()))
    table = Table({"ORDER": orders[valid], "WAVE": wavelength[valid], "RESPONSE": response,
                   "ERROR": response * log_fit_error, "MASK": mask_valid})
    info = {"model": model, "exptime": float(exptime), "airmass": float(airmass), "n_fitted": n_used}
    info.update(meta or {})
    return Response(table, info)


def efficiency_qc(response, fractions=(0.25, 0.5, 0.75), *, area_cm2=TELESCOPE_AREA_CM2):
    """End-to-end efficiency at reference wavelengths of every order.

    Parameters
    ----------
    response : Response
    fractions : sequence of float
        Reference wavelengths as fractions of each order's range (0 blue end, 1 red end).

    Returns
    -------
    astropy.table.Table
        ``ORDER``, ``WAVE`` (nm), ``EFFICIENCY``, ``ERROR``, ``MASK`` (the response's MASK at
        the nearest sample, without the clipping bit: non-zero where the efficiency is
        interpolated over a telluric band, a stellar line or faint data, not measured).
    """
    out = {"ORDER": [], "WAVE": [], "EFFICIENCY": [], "ERROR": [], "MASK": []}
    for order in response.orders:
        lo, hi = response.wavelength_range(order)
        wave = lo + (hi - lo) * np.asarray(fractions, dtype=float)
        eff, err = response.efficiency(order, wave, area_cm2=area_cm2)
        rows = response.order_table(order)
        nearest = np.clip(np.searchsorted(np.asarray(rows["WAVE"], dtype=float), wave), 0, len(rows) - 1)
        out["ORDER"].extend([order] * wave.size)
        out["WAVE"].extend(wave)
        out["EFFICIENCY"].extend(eff)
        out["ERROR"].extend(err)
        out["MASK"].extend(np.asarray(rows["MASK"])[nearest] & ~MASK_CLIPPED)
    return Table(out)


def flux_calibrate(wavelength, counts, error, *, exptime, airmass, response, response_error=None,
                   extinction_alpha=None):
    """Counts per nm into flux above the atmosphere (erg/s/cm^2/Angstrom), with propagated errors.

    Parameters
    ----------
    wavelength, counts, error : array_like
        Wavelength (nm), counts (e-/nm over the exposure) and their standard deviation.
    exptime, airmass : float
        Exposure time (s) and mean airmass of the spectrum.
    response, response_error : array_like
        The response at ``wavelength`` and its standard deviation (optional).

    Returns
    -------
    flux, error : numpy.ndarray
    """
    k = extinction(wavelength) if extinction_alpha is None else extinction(wavelength, extinction_alpha)
    response = np.asarray(response, dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        factor = 10.0 ** (0.4 * k * float(airmass)) / (float(exptime) * response)
        flux = np.asarray(counts, dtype=float) * factor
        variance = (np.asarray(error, dtype=float) * factor) ** 2
        if response_error is not None:
            variance = variance + (flux * np.asarray(response_error, dtype=float) / response) ** 2
    return flux, np.sqrt(variance)


def calibrate_orders(response, orders, wavelength, counts, error, *, exptime, airmass):
    """Flux-calibrate an extracted spectrum (one row per order and wavelength) with ``response``.

    Parameters
    ----------
    response : Response
    orders : array_like of int
        Order of every point (0 for a merged spectrum).
    wavelength, counts, error : array_like
        As in :func:`flux_calibrate`.
    exptime, airmass : float

    Returns
    -------
    flux, error : numpy.ndarray
        erg/s/cm^2/Angstrom.

    Raises
    ------
    DataError
        The response does not cover one of the orders or wavelengths.
    """
    wavelength = np.asarray(wavelength, dtype=float)
    value, value_error, _ = response.evaluate_rows(orders, wavelength)
    return flux_calibrate(wavelength, counts, error, exptime=exptime, airmass=airmass, response=value,
                          response_error=value_error)


def response_options(params):
    """Keyword arguments of :func:`fit_response` from the resolved ``response`` settings of an arm.

    Parameters
    ----------
    params : dict
        ``recipe_settings(settings, "response", arm)``.
    """
    return {"model": params["model"], "knot_spacing": params["knot-spacing"],
            "envelope_knot_spacing": params["envelope-knot-spacing"],
            "blaze_knot_spacing": params["blaze-knot-spacing"],
            "line_half_width_kms": params["line-half-width-kms"], "min_snr": params["min-snr"],
            "smoothing": params["smoothing"], "penalty_order": params["penalty-order"],
            "clip_low": params["clip-low"], "clip_high": params["clip-high"],
            "iterations": params["clip-iterations"]}
