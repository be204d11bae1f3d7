"""The telluric transmission of a standard as a table, and the telluric correction of the science tables with it.

A ``TELLURIC_<ARM>`` product (``soxs_telluric``) is a table on the standard's merged
grid: ``WAVE`` (nm), ``TRANS`` and ``TRANS_ERR`` (1 and 0 outside the telluric bands),
``TRANS_H2O`` and ``TRANS_O2`` (the factors of ``TRANS`` in the water bands and in the
bands of the dry, well-mixed gases O2 and CO2: ``TRANS = TRANS_H2O * TRANS_O2``, each
scaled to another airmass with its own exponent) and ``QUAL``
(:data:`~.telluric.QUAL_TRANSMISSION_INTERPOLATED` where the transmission was
interpolated across one of the standard's lines).

:func:`apply_telluric` adds ``FLUX_TELL`` and ``ERR_TELL`` beside the other columns of
both science tables (the flux-calibrated ``FLUX_CAL``/``ERR_CAL`` corrected where the
table has them, else the counts ``FLUX``/``ERR``), never replacing them:

1. the transmission is checked against the science (arm, slit, binning) and its
   airmass against the science's (:func:`~.telluric.check_airmass`: a warning and the
   QC ``TELL AIRM FLAG`` beyond ``max-airmass-difference``);
2. it is scaled to the science airmass, ``T^(X_sci / X_std)`` per species;
3. the shift (nm) that moves it onto the science spectrum's own telluric lines is
   measured on the merged table by cross-correlation (:func:`~.telluric.measure_shift`,
   on the merged grid's pixels) and applied to both tables in wavelength;
4. the flux is divided by it, except where it is below ``min-transmission``: there the
   flux is left as it was and ``QUAL`` gets :data:`QUAL_LOW_TRANSMISSION` (64);
   :data:`QUAL_TRANSMISSION_INTERPOLATED` (128) marks the bins whose transmission was
   interpolated across a line of the standard. Both bits are set in the tables' ``QUAL``
   column, beside the extraction's (:data:`~.science_extract.QUAL_BITS`).

No I/O.
"""

import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.table import Table

from .errors import DataError
from .extinction import DRY_SPECIES, band_mask
from .science_extract import QUAL_BITS
from .telluric import (QUAL_LOW_TRANSMISSION, QUAL_TRANSMISSION_INTERPOLATED, Transmission, check_airmass, correct,
                       measure_shift, transmission_at)

log = logging.getLogger(__name__)

__all__ = ["QUAL_LOW_TRANSMISSION", "QUAL_TRANSMISSION_INTERPOLATED", "TelluricStandard", "TelluricCorrected",
           "standard_spectrum", "transmission_table", "telluric_from_table", "band_qc", "check_telluric",
           "apply_telluric", "correction_settings"]

#: QC bands of the transmission: name -> (low, high) nm (the O2 A band's depth, the water bands' equivalent widths)
QC_BANDS = {"O2A": (756.0, 772.0), "H2O940": (870.0, 1000.0), "H2O1130": (1070.0, 1200.0)}
_UNUSABLE = QUAL_BITS["no_data"] | QUAL_BITS["incomplete"]


@dataclass
class TelluricStandard:
    """A telluric transmission with what it was measured on (:func:`soxspipe.products.read_telluric`).

    Attributes
    ----------
    transmission : Transmission
        Wavelength, transmission, error, the standard's airmass and the interpolated points.
    meta : dict
        ``standard`` (its name), ``airmass``, ``source`` (its ``DPR TYPE``: ``STD,TELLURIC`` or
        ``STD,FLUX``), the standard's ``arm``, ``slit``, ``binning``, ``mjd``, the ``path``.
    """

    transmission: Transmission
    meta: dict = field(default_factory=dict)


def standard_spectrum(merged):
    """The usable bins of a standard's merged table: ``(wavelength, flux, error, calibrated)``.

    The flux-calibrated columns where the table has them (a smooth continuum: the instrument's
    efficiency divided out), else the counts; bins empty or incomplete are left out.
    """
    calibrated = "FLUX_CAL" in merged.colnames
    flux_name, error_name = ("FLUX_CAL", "ERR_CAL") if calibrated else ("FLUX", "ERR")
    wave = np.asarray(merged["WAVE"], dtype=float)
    flux = np.asarray(merged[flux_name], dtype=float)
    error = np.asarray(merged[error_name], dtype=float)
    use = ((np.asarray(merged["QUAL"]) & _UNUSABLE) == 0) & np.isfinite(flux) & np.isfinite(error)
    return wave[use], flux[use], error[use], calibrated


def transmission_table(transmission):
    """The ``TELLURIC_<ARM>`` table of a :class:`~.telluric.Transmission` (see the module docstring)."""
    wave = np.asarray(transmission.wavelength, dtype=float)
    trans = np.asarray(transmission.transmission, dtype=float)
    dry = band_mask(wave, DRY_SPECIES)
    table = Table()
    table["WAVE"] = wave * u.nm
    table["TRANS"] = trans
    table["TRANS_ERR"] = np.asarray(transmission.error, dtype=float)
    table["TRANS_H2O"] = np.where(dry, 1.0, trans)
    table["TRANS_O2"] = np.where(dry, trans, 1.0)
    table["QUAL"] = np.where(transmission.unreliable, QUAL_TRANSMISSION_INTERPOLATED, 0).astype(np.int16)
    return table


def telluric_from_table(table, meta):
    """A :class:`TelluricStandard` from a ``TELLURIC_<ARM>`` table and its metadata (``airmass`` required)."""
    wave = np.asarray(table["WAVE"], dtype=float)
    trans = np.asarray(table["TRANS"], dtype=float)
    unreliable = (np.asarray(table["QUAL"]) & QUAL_TRANSMISSION_INTERPOLATED) != 0
    transmission = Transmission(wave, trans, np.asarray(table["TRANS_ERR"], dtype=float), np.ones(wave.size),
                                float(meta["airmass"]), unreliable)
    return TelluricStandard(transmission, dict(meta))


def band_qc(transmission):
    """QC of a transmission: ``[(name, value, unit, comment)]`` for the bands of :data:`QC_BANDS` it covers.

    ``O2A DEPTH``: one minus the lowest transmission in the O2 A band (3-bin mean); ``H2O940 EW`` and
    ``H2O1130 EW``: equivalent width (nm) of the water bands, a proxy of the water column;
    ``TELL INTERP``: fraction of the bins in bands whose transmission was interpolated.
    """
    wave = np.asarray(transmission.wavelength, dtype=float)
    trans = np.asarray(transmission.transmission, dtype=float)
    out = []
    for name, (low, high) in QC_BANDS.items():
        inside = (wave >= low) & (wave <= high) & np.isfinite(trans)
        if inside.sum() < 10 or wave[inside][0] > low + 1.0 or wave[inside][-1] < high - 1.0:
            continue
        w, t = wave[inside], trans[inside]
        if name == "O2A":
            smooth = np.convolve(t, np.ones(3) / 3.0, mode="valid")
            out.append(("O2A DEPTH", round(float(1.0 - smooth.min()), 4), "",
                        f"1 - lowest transmission in {low:g}-{high:g} nm"))
        else:
            width = float(np.sum(0.5 * (1.0 - t[1:] + 1.0 - t[:-1]) * np.diff(w)))
            out.append((f"{name} EW", round(width, 4), "nm", f"equivalent width of {low:g}-{high:g} nm"))
    bands = band_mask(wave)
    out.append(("TELL INTERP", round(float(np.mean(transmission.unreliable[bands])) if bands.any() else 0.0, 4), "",
                "band bins interpolated across stellar lines"))
    return out


def check_telluric(telluric, frame):
    """Refuse a transmission measured with another arm, slit or binning than the science frame's.

    Raises
    ------
    DataError
        Naming the ``TELLURIC`` file and what differs.
    """
    meta = telluric.meta
    name = meta.get("path", "the TELLURIC")
    for what, mine in (("arm", frame.arm), ("slit", frame.slit), ("binning", frame.binning)):
        theirs = meta.get(what)
        if theirs is None or mine is None:
            continue
        a, b = (tuple(int(v) for v in x) if isinstance(x, (tuple, list)) else str(x).strip() for x in (theirs, mine))
        if a != b:
            show = (lambda v: f"{v[0]}x{v[1]}") if what == "binning" else str
            raise DataError(f"{name}: a telluric transmission measured with {what} {show(a)} for frames of {what} "
                            f"{show(b)} ({frame.path}); give a TELLURIC_{frame.arm} of a standard observed with the "
                            f"science's {what}")


@dataclass
class TelluricCorrected:
    """Result of :func:`apply_telluric`.

    Attributes
    ----------
    orders, merged : astropy.table.Table
        The science tables with ``FLUX_TELL`` and ``ERR_TELL`` and the telluric ``QUAL`` bits.
    cards : dict
        Logical keyword -> ``(value, comment)``: the TELLURIC file, its standard, the standard's
        and the science's airmass, the shift applied and the threshold.
    qc : list of tuple
        ``(name, value, unit, comment)``: ``TELL SHIFT`` (nm), ``TELL AIRM DIFF``, ``TELL AIRM FLAG``
        (1: further apart than allowed), ``TELL FLAGGED`` (fraction of the merged bins flagged).
    """

    orders: Table
    merged: Table
    cards: dict = field(default_factory=dict)
    qc: list = field(default_factory=list)


def _columns(table):
    return ("FLUX_CAL", "ERR_CAL") if "FLUX_CAL" in table.colnames else ("FLUX", "ERR")


def _correct_table(table, telluric, airmass, shift, threshold, water_scale):
    flux_name, error_name = _columns(table)
    wave = np.asarray(table["WAVE"], dtype=float)
    values, errors, interpolated = transmission_at(telluric.transmission, wave, airmass, shift=shift,
                                                   water_scale=water_scale)
    flux, error, qual = correct(np.asarray(table[flux_name], dtype=float), np.asarray(table[error_name], dtype=float),
                                values, errors, np.asarray(table["QUAL"]), threshold=threshold)
    qual[interpolated] |= QUAL_TRANSMISSION_INTERPOLATED
    out = Table(table, copy=True)
    out.remove_columns([c for c in ("FLUX_TELL", "ERR_TELL") if c in out.colnames])
    position = out.colnames.index(error_name) + 1
    unit = table[flux_name].unit
    out.add_column(flux if unit is None else flux * unit, name="FLUX_TELL", index=position)
    out.add_column(error if unit is None else error * unit, name="ERR_TELL", index=position + 1)
    out["QUAL"] = qual.astype(np.asarray(table["QUAL"]).dtype)
    return out


def _merged_shift(merged, telluric, airmass, *, max_shift, highpass_px, water_scale):
    """The shift (nm) moving the scaled transmission onto the merged science spectrum's telluric lines."""
    flux_name, _ = _columns(merged)
    wave = np.asarray(merged["WAVE"], dtype=float)
    flux = np.asarray(merged[flux_name], dtype=float)
    flux = np.where((np.asarray(merged["QUAL"]) & _UNUSABLE) == 0, flux, np.nan)
    scaled, _, _ = transmission_at(telluric.transmission, wave, airmass, water_scale=water_scale)
    try:
        pixels = measure_shift(flux, scaled, max_shift=max_shift, highpass_px=highpass_px)
    except ValueError:
        log.info("no telluric absorption in the science spectrum to measure a shift on: none applied")
        return 0.0
    return pixels * float(np.median(np.diff(wave)))


def apply_telluric(orders, merged, telluric, *, airmass, frame=None, threshold=0.2, max_shift=5.0, highpass_px=25.0,
                   max_airmass_difference=0.5, water_scale=1.0):
    """Correct the per-order and merged science tables for telluric absorption (see the module docstring).

    Parameters
    ----------
    orders, merged : astropy.table.Table
        The ``<P>_ORDERS_<ARM>`` and ``<P>_MERGED_<ARM>`` tables (flux-calibrated or not).
    telluric : TelluricStandard
        From :func:`soxspipe.products.read_telluric`.
    airmass : float
        Mean airmass of the science.
    frame : FrameInfo, optional
        A science frame: the transmission is checked against its arm, slit and binning.
    threshold : float
        Transmission below which the flux is flagged, not corrected.
    max_shift, highpass_px : float
        Cross-correlation: largest shift and scale of the continuum removed (merged-grid pixels).
    max_airmass_difference : float
        Larger differences between the standard's and the science's airmass are flagged.
    water_scale : float
        Extra factor on the water bands' exponent.

    Returns
    -------
    TelluricCorrected

    Raises
    ------
    DataError
        No science airmass, or a transmission of another arm, slit or binning.
    """
    path = telluric.meta.get("path", "the TELLURIC")
    if airmass is None:
        raise DataError(f"{getattr(frame, 'path', 'the science')}: no airmass in the header, needed to scale the "
                        f"telluric transmission of {path}; remove the TELLURIC from the SOF")
    if frame is not None:
        check_telluric(telluric, frame)
    std_airmass = telluric.transmission.airmass
    flagged = check_airmass(std_airmass, airmass, max_airmass_difference)
    shift = _merged_shift(merged, telluric, airmass, max_shift=max_shift, highpass_px=highpass_px,
                          water_scale=water_scale)
    corrected_merged = _correct_table(merged, telluric, airmass, shift, threshold, water_scale)
    corrected_orders = _correct_table(orders, telluric, airmass, shift, threshold, water_scale)
    standard = str(telluric.meta.get("standard") or "")
    cards = {"pro_tell_file": (Path(str(path)).name, "TELLURIC used for FLUX_TELL"),
             "pro_tell_std": (standard, "standard of the telluric transmission"),
             "pro_tell_std_airm": (round(float(std_airmass), 4), "airmass of the telluric standard"),
             "pro_tell_sci_airm": (float(airmass), "airmass the transmission is scaled to"),
             "pro_tell_shift": (float(shift), "[nm] shift applied to the transmission"),
             "pro_tell_min_trans": (float(threshold), "flagged in QUAL, not corrected, below")}
    if telluric.meta.get("source"):
        cards["pro_tell_source"] = (str(telluric.meta["source"]), "DPR TYPE of the telluric standard")
    low = (np.asarray(corrected_merged["QUAL"]) & QUAL_LOW_TRANSMISSION) != 0
    qc = [("TELL SHIFT", round(float(shift), 5), "nm", "shift of the telluric transmission"),
          ("TELL AIRM DIFF", round(abs(float(airmass) - float(std_airmass)), 4), "",
           "science minus telluric standard airmass"),
          ("TELL AIRM FLAG", int(flagged), "", f"1: airmasses more than {max_airmass_difference:g} apart"),
          ("TELL FLAGGED", round(float(np.mean(low)), 4), "", f"merged bins with transmission < {threshold:g}")]
    log.info("telluric correction with %s (%s at airmass %.3f): science airmass %.3f, shift %.4f nm, %.1f %% of "
             "the merged bins flagged", Path(str(path)).name, standard or "a standard", std_airmass, airmass, shift,
             100.0 * float(np.mean(low)))
    return TelluricCorrected(corrected_orders, corrected_merged, cards, qc)


def correction_settings(params):
    """Keyword arguments of :func:`apply_telluric` from the resolved ``telluric`` settings."""
    return {"threshold": params["min-transmission"], "max_shift": params["max-shift-px"],
            "highpass_px": params["highpass-px"], "max_airmass_difference": params["max-airmass-difference"],
            "water_scale": params.get("water-scale", 1.0)}
