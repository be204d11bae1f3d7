"""Phase 3 compliance of an ESO SDP 1D spectrum (the layout of :mod:`.sdp_spectrum`).

:func:`check_sdp_spectrum` lists what is wrong with a file: the structure (a primary
HDU without data, one single-row ``BINTABLE`` extension), every mandatory keyword of
the standard's 1D-spectrum chapter present, and the keywords consistent with the
data: ``WAVELMIN``/``WAVELMAX`` and ``TDMIN1``/``TDMAX1`` the ends of ``WAVE``,
``NELEM`` the arrays' length, ``SNR`` the median of the ``SNR`` column over the
good bins, ``SPEC_BIN`` the median bin, ``TELAPSE`` and ``TMID`` from ``MJD-OBS``
and ``MJD-END``, ``NCOMBINE`` the number of ``PROVi``, ``TEXPTIME`` the sum of the
exposures (when they are given), ``EXPTIME`` not above it; every column with a
``TUTYP``, a ``TUCD`` and a unit astropy reads in the FITS format, ``ERR`` and
``BGFLUX`` in ``FLUX``'s unit; the checksums.
"""

import logging
import re
import warnings

import numpy as np
from astropy import units as u
from astropy.io import fits

from .keywords import header_value, keyword
from .sdp_spectrum import EXTNAME, MANDATORY_EXTENSION, MANDATORY_PRIMARY, PRODCATG, VOCLASS, median_snr

log = logging.getLogger(__name__)

_PROV = re.compile(r"^PROV(\d+)$")


def _close(a, b, rtol=1e-6, atol=1e-9):
    return abs(float(a) - float(b)) <= atol + rtol * abs(float(b))


def check_sdp_spectrum(path, *, exposures=None):
    """Every way in which an SDP 1D-spectrum file breaks the Phase 3 standard.

    Parameters
    ----------
    path : str or Path
    exposures : sequence of float, optional
        The exposure times (s) of the raw frames it was made of: ``TEXPTIME`` must be their sum.

    Returns
    -------
    list of str
        One message per problem; empty when the file complies.
    """
    problems = []
    try:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            hdul = fits.open(path, memmap=False, checksum=True)
            hdul.verify("silentfix")
            data_ok = [hdu.data for hdu in hdul]  # reading the data verifies DATASUM
        problems += [f"checksum: {w.message}" for w in caught if "checksum" in str(w.message).lower()
                     or "datasum" in str(w.message).lower()]
    except OSError as exc:
        return [f"{path}: not a readable FITS file ({exc})"]
    with hdul:
        primary = hdul[0].header
        if primary.get("NAXIS", 0) != 0 or data_ok[0] is not None:
            problems.append("the primary HDU holds data (NAXIS must be 0)")
        if len(hdul) != 2:
            problems.append(f"{len(hdul) - 1} extensions: an SDP spectrum has exactly one")
        if EXTNAME not in hdul or not isinstance(hdul[EXTNAME], fits.BinTableHDU):
            return problems + [f"no BINTABLE extension {EXTNAME}"]
        table = hdul[EXTNAME]
        ext = table.header
        problems += _check_keywords(primary, ext)
        if table.data is None or len(table.data) != 1:
            return problems + ["the spectrum table must have exactly one row (NAXIS2 = 1)"]
        columns = {name: np.asarray(table.data[name][0]) for name in table.data.columns.names}
        units = {name: table.data.columns[name].unit or "" for name in columns}
        problems += _check_columns(columns, units, ext)
        problems += _check_consistency(primary, ext, columns, exposures)
    return problems


def _check_keywords(primary, ext):
    problems = []
    for name in MANDATORY_PRIMARY:
        if keyword(name) not in primary:
            problems.append(f"primary header: mandatory {keyword(name)} missing")
    for name in MANDATORY_EXTENSION:
        if keyword(name) not in ext:
            problems.append(f"extension header: mandatory {keyword(name)} missing")
    for kw in ("BUNIT", "CD1_1", "CD2_2"):
        if kw in primary:
            problems.append(f"primary header: {kw} is not allowed in an SDP spectrum")
    if str(header_value(primary, "sdp_prodcatg", "")).strip() != PRODCATG:
        problems.append(f"{keyword('sdp_prodcatg')} is not '{PRODCATG}'")
    if str(header_value(ext, "sdp_voclass", "")).strip() != VOCLASS:
        problems.append(f"{keyword('sdp_voclass')} is not '{VOCLASS}'")
    fluxcal = str(header_value(primary, "fluxcal", "")).strip()
    if fluxcal not in ("ABSOLUTE", "UNCALIBRATED"):
        problems.append(f"{keyword('fluxcal')} = '{fluxcal}' is neither ABSOLUTE nor UNCALIBRATED")
    fluxerr = header_value(primary, "sdp_fluxerr", None)
    if fluxcal == "UNCALIBRATED" and fluxerr is not None and fluxerr != -1:
        problems.append(f"{keyword('sdp_fluxerr')} must be -1 for an uncalibrated spectrum")
    if header_value(primary, "sdp_tot_flux", False) and fluxcal != "ABSOLUTE":
        problems.append(f"{keyword('sdp_tot_flux')} = T needs {keyword('fluxcal')} = 'ABSOLUTE'")
    if str(header_value(primary, "sdp_specsys", "")).strip() not in ("TOPOCENT", "BARYCENT", "HELIOCEN"):
        problems.append(f"{keyword('sdp_specsys')} is not a known reference frame")
    for name in ("object", "ra", "dec"):
        a, b = header_value(primary, name, None), header_value(ext, name, None)
        if a is not None and b is not None and a != b:
            problems.append(f"{keyword(name)} differs between the primary header ({a}) and the extension ({b})")
    for kw in ("CHECKSUM", "DATASUM"):
        if kw not in primary or kw not in ext:
            problems.append(f"{kw} missing")
    return problems


def _check_columns(columns, units, ext):
    problems = []
    names = list(columns)
    if not names or names[0] != "WAVE":
        problems.append("the first column must be WAVE")
    lengths = {n: v.size for n, v in columns.items()}
    if len(set(lengths.values())) > 1:
        problems.append(f"arrays of different lengths: {lengths}")
    for n, name in enumerate(names, start=1):
        for what in ("tutyp", "tucd"):
            if not str(header_value(ext, what, "", n=n)).strip():
                problems.append(f"column {name}: no {keyword(what, n=n)}")
        unit = units[name]
        if unit:
            try:
                u.Unit(unit, format="fits")
            except ValueError as exc:
                problems.append(f"column {name}: unit '{unit}' is not a valid FITS unit ({exc})")
        elif name not in ("QUAL", "SNR"):
            problems.append(f"column {name}: no unit")
    tutyps = [str(header_value(ext, "tutyp", "", n=n)).strip() for n in range(1, len(names) + 1)]
    if tutyps and tutyps[0].lower() != "spec:data.spectralaxis.value":
        problems.append("WAVE is not spec:Data.SpectralAxis.Value")
    if sum(t.lower() == "spec:data.fluxaxis.value" for t in tutyps) != 1:
        problems.append("exactly one column must be the default flux (spec:Data.FluxAxis.Value)")
    for name in ("ERR", "BGFLUX", "FLUX_TELL", "ERR_TELL"):
        if name in units and "FLUX" in units and units[name] != units["FLUX"]:
            problems.append(f"column {name} is in '{units[name]}', FLUX in '{units['FLUX']}'")
    if "QUAL" in columns and not np.issubdtype(columns["QUAL"].dtype, np.integer):
        problems.append("QUAL is not an integer column")
    wave = columns.get("WAVE")
    if wave is not None and wave.size:
        if not np.isfinite(wave).all() or (wave.size > 1 and np.any(np.diff(wave) <= 0)):
            problems.append("WAVE is not finite and strictly increasing")
        if "obs.atmos" not in str(header_value(ext, "tucd", "", n=1)):
            problems.append("TUCD1 does not say air wavelengths (em.wl;obs.atmos)")
    else:
        problems.append("WAVE is empty")
    return problems


def _check_consistency(primary, ext, columns, exposures):
    problems = []
    wave = columns.get("WAVE")
    if wave is None or wave.size == 0:
        return problems

    def same(name, expected, header=primary, rtol=1e-6, what=""):
        fields = {"n": 1} if name in ("tdmin", "tdmax") else {}
        value = header_value(header, name, None, **fields)
        if value is not None and not _close(value, expected, rtol=rtol):
            problems.append(f"{keyword(name, **fields)} = {value} but {what or 'the data give'} {expected:.8g}")

    same("sdp_wavelmin", wave[0], what="WAVE starts at")
    same("sdp_wavelmax", wave[-1], what="WAVE ends at")
    same("tdmin", wave[0], header=ext, what="WAVE starts at")
    same("tdmax", wave[-1], header=ext, what="WAVE ends at")
    same("sdp_nelem", wave.size, header=ext, what="the arrays hold")
    if wave.size > 1:
        same("sdp_spec_bin", float(np.median(np.diff(wave))), rtol=1e-4, what="the median bin is")
    if "SNR" in columns and "QUAL" in columns:
        same("sdp_snr", median_snr(columns["SNR"], columns["QUAL"]), rtol=1e-3, what="the median SNR column is")
    start, end = header_value(primary, "mjd_obs", None), header_value(primary, "sdp_mjd_end", None)
    if start is not None and end is not None:
        if end <= start:
            problems.append(f"{keyword('sdp_mjd_end')} is not after {keyword('mjd_obs')}")
        same("sdp_telapse", (end - start) * 86400.0, header=ext, rtol=1e-5, what="MJD-END - MJD-OBS is")
        same("sdp_tmid", 0.5 * (start + end), header=ext, rtol=1e-9, what="the mid-point of MJD-OBS/END is")
    texptime, exptime = header_value(primary, "sdp_texptime", None), header_value(primary, "exptime", None)
    if exposures is not None:
        same("sdp_texptime", float(np.sum(exposures)), rtol=1e-6, what="the exposures add up to")
    if texptime is not None and exptime is not None and exptime > texptime * (1 + 1e-9):
        problems.append(f"{keyword('exptime')} {exptime} exceeds {keyword('sdp_texptime')} {texptime}")
    provs = sorted(int(m.group(1)) for m in (_PROV.match(k) for k in primary.keys()) if m)
    if not provs or provs != list(range(1, len(provs) + 1)):
        problems.append("PROVi missing or not numbered 1..n")
    same("sdp_ncombine", len(provs), what="the PROVi keywords number")
    return problems
