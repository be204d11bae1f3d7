"""Flux calibration of the science tables with a ``RESPONSE_<ARM>``, and the slit losses of a point source.

:func:`apply_response` adds ``FLUX_CAL`` and ``ERR_CAL`` (erg/s/cm^2/Angstrom above
the atmosphere) beside ``FLUX`` and ``ERR`` (counts per nm over the exposure) in
both science tables, never replacing them:

- per order (``<P>_ORDERS_<ARM>``): ``FLUX / (exptime R_m(lambda)) * 10^(0.4 k(lambda) X)``
  with the response ``R_m`` of the row's order, the La Silla extinction ``k`` and the
  science airmass ``X`` (:func:`~.response.flux_calibrate`); the response's own error
  is propagated into ``ERR_CAL``;
- merged (``<P>_MERGED_<ARM>``): the calibrated orders merged onto the merged
  table's grid as the counts were, but weighted by their calibrated errors: the
  counts' own weights would favour an order's faint end, where the efficiency is
  low and the response least certain, over the other order's peak.

The response is checked first (:func:`check_response`): the science's arm, slit
and binning, and not older than allowed. A response whose standard's slit losses
were divided out (``slit-loss-correction``, the default of ``soxs_response``) is the
instrument's own: the flux-calibrated spectra then keep their own slit losses, which
:func:`slit_transmission` estimates for a point source from its FWHM along the slit.
No I/O.
"""

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table
from scipy.special import erf

from .errors import DataError
from .resample import merge_orders
from .response import flux_calibrate
from .science_extract import QUAL_BITS

log = logging.getLogger(__name__)

#: unit of ``FLUX_CAL`` and ``ERR_CAL``
FLUX_CAL_UNIT = u.erg / (u.s * u.cm ** 2 * u.AA)
_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
_SLIT_WIDTH = re.compile(r"(\d+(?:\.\d*)?)")


def slit_width(slit_name):
    """Width (arcsec) of a slit from its name (``'SLIT1.0'`` -> 1.0).

    Raises
    ------
    DataError
        The name holds no width (a pinhole, a blank, no slit).
    """
    match = _SLIT_WIDTH.search(str(slit_name or ""))
    if not match or not str(slit_name).strip().upper().startswith("SLIT"):
        raise DataError(f"slit '{slit_name}' has no width: a flux standard is observed through a slit (SLITx.y)")
    return float(match.group(1))


def slit_transmission(fwhm_arcsec, width_arcsec):
    """Fraction of a point source's light through the slit: a Gaussian seeing disc of FWHM ``fwhm_arcsec``, centred.

    Only the profile across the slit matters: ``erf(w / (2 sqrt(2) sigma))``.
    """
    sigma = float(fwhm_arcsec) / _FWHM_PER_SIGMA
    if not sigma > 0:
        raise DataError(f"no slit transmission for an object FWHM of {fwhm_arcsec} arcsec")
    return float(erf(float(width_arcsec) / (2.0 * np.sqrt(2.0) * sigma)))


def check_response(response, frame, *, max_age_days=None):
    """Refuse a response that does not suit the science frames.

    Parameters
    ----------
    response : soxspipe.commonutils.response.Response
        With ``meta`` keys ``arm``, ``slit``, ``binning``, ``mjd`` and ``path``
        (:func:`soxspipe.products.read_response` sets them).
    frame : FrameInfo
        A science frame (its ``arm``, ``slit``, ``binning``, ``mjd``).
    max_age_days : float, optional
        Largest time (days) between the standard's observation and the science's.

    Raises
    ------
    DataError
        Another arm, slit or binning, or a response older than ``max_age_days``.
    """
    meta = response.meta
    name = meta.get("path", "the RESPONSE")
    for what, mine in (("arm", frame.arm), ("slit", frame.slit), ("binning", frame.binning)):
        theirs = meta.get(what)
        if theirs is not None and mine is not None and _normal(theirs) != _normal(mine):
            raise DataError(f"{name}: a response measured with {what} {_show(theirs)} for frames of {what} "
                            f"{_show(mine)} ({frame.path}); give a RESPONSE_{frame.arm} of a standard observed "
                            f"with the science's {what}")
    if max_age_days is not None and meta.get("mjd") is not None and frame.mjd is not None:
        age = abs(float(frame.mjd) - float(meta["mjd"]))
        if age > float(max_age_days):
            raise DataError(f"{name}: the response's standard was observed {age:.1f} days from the science "
                            f"({frame.path}), more than the {float(max_age_days):g} days allowed; give a more "
                            "recent RESPONSE or allow it (settings response: max-age-days)")


def _normal(value):
    return tuple(int(v) for v in value) if isinstance(value, (tuple, list)) else str(value).strip()


def _show(value):
    return f"{value[0]}x{value[1]}" if isinstance(value, (tuple, list)) else str(value).strip()


def order_response(response, orders, wavelength):
    """The response and its error at every row of an extracted-orders table.

    Rows beyond the wavelengths the response covers in their order get NaN.

    Raises
    ------
    DataError
        The response does not cover one of the orders at all.
    """
    orders = np.asarray(orders, dtype=int)
    wavelength = np.asarray(wavelength, dtype=float)
    missing = sorted(set(np.unique(orders).tolist()) - set(response.orders))
    if missing:
        raise DataError(f"{response.meta.get('path', 'the RESPONSE')}: no response for order(s) {missing} (it covers "
                        f"orders {response.orders}); give a RESPONSE of the same arm, from a standard extracted in "
                        "every order")
    value, error, outside = response.evaluate_rows(orders, wavelength, beyond="nan")
    if outside:
        log.warning("%d bins lie beyond the wavelengths the response covers in their order: not flux calibrated",
                    outside)
    return value, error


def calibrate_orders_table(orders, response, *, exptime, airmass):
    """A copy of an extracted-orders table with ``FLUX_CAL`` and ``ERR_CAL`` (erg/s/cm^2/Angstrom).

    Parameters
    ----------
    orders : astropy.table.Table
        ``ORDER``, ``WAVE`` (nm), ``FLUX``, ``ERR`` (counts per nm over the exposure).
    response : soxspipe.commonutils.response.Response
    exptime, airmass : float
        Total exposure time (s) and mean airmass of the science.
    """
    value, error = order_response(response, orders["ORDER"], orders["WAVE"])
    out = Table(orders, copy=True)
    _add_calibrated(out, value, error, exptime, airmass)
    return out


def calibrate_merged_table(merged, orders, response, *, exptime, airmass):
    """A copy of a merged-spectrum table with ``FLUX_CAL`` and ``ERR_CAL``: the orders calibrated, then merged.

    The calibrated orders are merged onto the merged table's grid as the counts were (the bins
    neither empty nor incomplete, the same coverage rule), with the weights of their calibrated
    errors: where orders overlap, an order's end, whose low efficiency makes its flux uncertain,
    counts for little.

    Parameters
    ----------
    merged : astropy.table.Table
        ``WAVE``, ``WAVE_LO``, ``WAVE_HI`` (nm), ``FLUX``, ``ERR``.
    orders : astropy.table.Table
        The extracted orders it was merged from (``ORDER``, ``WAVE``, ``WAVE_LO``, ``WAVE_HI``, ``FLUX``,
        ``ERR``, ``QUAL``), or those already calibrated (:func:`calibrate_orders_table`).
    response : soxspipe.commonutils.response.Response
    exptime, airmass : float
    """
    if "FLUX_CAL" not in orders.colnames:
        orders = calibrate_orders_table(orders, response, exptime=exptime, airmass=airmass)
    order = np.asarray(orders["ORDER"], dtype=int)
    lo, hi = (np.asarray(orders[c], dtype=float) for c in ("WAVE_LO", "WAVE_HI"))
    flux, error = (np.asarray(orders[c], dtype=float) for c in ("FLUX_CAL", "ERR_CAL"))
    usable = ((np.asarray(orders["QUAL"]) & (QUAL_BITS["no_data"] | QUAL_BITS["incomplete"])) == 0)
    spectra = []
    for o in np.unique(order):
        rows = np.flatnonzero(order == o)
        rows = rows[np.argsort(lo[rows])]
        spectra.append((np.r_[lo[rows], hi[rows[-1]]], np.where(usable[rows], flux[rows], np.nan), error[rows]))
    grid = np.r_[np.asarray(merged["WAVE_LO"], dtype=float), float(merged["WAVE_HI"][-1])]
    calibrated = merge_orders(spectra, grid)
    out = Table(merged, copy=True)
    _insert_calibrated(out, calibrated.flux, calibrated.error)
    return out


def _add_calibrated(table, response, response_error, exptime, airmass):
    flux, error = flux_calibrate(np.asarray(table["WAVE"], dtype=float), np.asarray(table["FLUX"], dtype=float),
                                 np.asarray(table["ERR"], dtype=float), exptime=exptime, airmass=airmass,
                                 response=response, response_error=response_error)
    _insert_calibrated(table, flux, error)


def _insert_calibrated(table, flux, error):
    # a table calibrated before is calibrated anew
    table.remove_columns([c for c in ("FLUX_CAL", "ERR_CAL") if c in table.colnames])
    position = table.colnames.index("ERR") + 1
    table.add_column(flux * FLUX_CAL_UNIT, name="FLUX_CAL", index=position)
    table.add_column(error * FLUX_CAL_UNIT, name="ERR_CAL", index=position + 1)


@dataclass
class FluxCalibrated:
    """Result of :func:`apply_response`.

    Attributes
    ----------
    orders, merged : astropy.table.Table
        The science tables with ``FLUX_CAL`` and ``ERR_CAL`` after ``ERR``.
    cards : dict
        Logical keyword -> ``(value, comment)`` for the products' headers: the response
        file, its standard and the standard's airmass.
    """

    orders: Table
    merged: Table
    cards: dict = field(default_factory=dict)


def apply_response(orders, merged, response, *, exptime, airmass, frame=None, max_age_days=None):
    """Flux-calibrate the per-order and merged science tables with a response.

    Parameters
    ----------
    orders, merged : astropy.table.Table
        The ``<P>_ORDERS_<ARM>`` and ``<P>_MERGED_<ARM>`` tables (columns of the science-product
        contract); ``merged`` may be None.
    response : soxspipe.commonutils.response.Response
        From :func:`soxspipe.products.read_response` (or :func:`~.response.fit_response`).
    exptime, airmass : float
        Total exposure time (s) the counts are over, and the mean airmass of the science.
    frame : FrameInfo, optional
        A science frame: the response is checked against its arm, slit, binning and date.
    max_age_days : float, optional
        Largest time (days) between the standard and the science (settings ``response``:
        ``max-age-days``).

    Returns
    -------
    FluxCalibrated

    Raises
    ------
    DataError
        The response is of another arm, slit or binning, too old, or misses an order.
    """
    if not (exptime and exptime > 0):
        raise DataError(f"no flux calibration for an exposure time of {exptime} s")
    if frame is not None:
        check_response(response, frame, max_age_days=max_age_days)
    calibrated_orders = calibrate_orders_table(orders, response, exptime=exptime, airmass=airmass)
    calibrated_merged = None if merged is None else calibrate_merged_table(merged, calibrated_orders, response,
                                                                           exptime=exptime, airmass=airmass)
    meta = response.meta
    cards = {"pro_fluxcal_resp": (Path(str(meta.get("path", ""))).name, "RESPONSE used for FLUX_CAL")}
    if meta.get("standard"):
        cards["pro_fluxcal_std"] = (str(meta["standard"]), "flux standard of the response")
    if meta.get("airmass") is not None:
        cards["pro_fluxcal_std_airm"] = (round(float(meta["airmass"]), 4), "airmass of the flux standard")
    log.info("flux calibrated with %s (standard %s at airmass %s): exposure %g s, airmass %.3f",
             cards["pro_fluxcal_resp"][0] or "a response", meta.get("standard"), meta.get("airmass"), exptime,
             airmass)
    return FluxCalibrated(calibrated_orders, calibrated_merged, cards)
