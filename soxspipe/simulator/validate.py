"""Check a FITS file against the SOXS raw-frame contract.

:func:`validate_raw` lists every way a file departs from the contract: layout
(where the image is, dtype, BITPIX/BZERO, shape for the arm and binning),
required keywords and their types, arm, DPR combination, lamps and slit for the
frame kind, and that it is not a product. :func:`validate_paths` runs it over
files and folders and prints one line per problem (``soxspipe validate``).
"""

import logging
import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from ..commonutils.classify import LAMP_KINDS, frame_arm, frame_lamps, match_kind
from ..commonutils.detectors import detector
from ..commonutils.errors import DataError
from ..commonutils.fitsio import is_fits_name
from ..commonutils.keywords import has_keyword, header_value, keyword
from .header import SLIT_KEYWORDS, SLITS

log = logging.getLogger(__name__)

_STR, _REAL, _INT = "text", "number", "integer"
#: Keywords every raw frame carries (logical name -> type); exposure time is checked on its own.
REQUIRED = {
    "instrument": _STR, "telescope": _STR, "dpr_catg": _STR, "dpr_type": _STR, "dpr_tech": _STR,
    "mjd_obs": _REAL, "date_obs": _STR, "object": _STR, "ra": _REAL, "dec": _REAL,
    "obs_id": _INT, "tpl_start": _STR,
}
#: Keywords checked for their type when present.
OPTIONAL = {
    "obs_name": _STR, "obs_targ_name": _STR, "tpl_id": _STR, "tpl_nexp": _INT, "tpl_expno": _INT,
    "binx": _INT, "biny": _INT, "conad": _REAL, "gain_adu_per_e": _REAL, "ron": _REAL,
    "read_speed_id": _INT, "read_speed_name": _STR, "acq_filter": _STR, "acq_cam_name": _STR,
    "nod_cumoff_y": _REAL, "nod_throw": _REAL, "jitter_width": _REAL, "fixoff_ra": _REAL, "fixoff_dec": _REAL,
    "airmass_start": _REAL, "airmass_end": _REAL, "seeing_start": _REAL, "seeing_end": _REAL,
    "parang_start": _REAL, "parang_end": _REAL, "tel_alt": _REAL, "tel_az": _REAL,
    "temp_vis": _REAL, "temp_nir": _REAL, "temp_common": _REAL, "exptime": _REAL, "acq_exptime": _REAL,
}
#: Slit-wheel position each spectroscopic kind is taken with (``SLIT`` = any of the slits).
KIND_SLITS = {"pinhole_arc": "PINHOLE", "pinhole_flat": "PINHOLE", "multipinhole_arc": "MULTIPIN",
              "slit_flat": "SLIT", "flux_standard": "SLIT", "telluric_standard": "SLIT", "science": "SLIT"}
#: Lamps that make arcs and flats (names as in ``frame_types.yaml``).
ARC_LAMPS = ("ThAr", "Ar", "Ne", "Hg", "Xe")
FLAT_LAMPS = ("QTH", "D2")
#: DPR TYPEs that name their flat lamp.
TYPE_LAMP = {"LAMP,QFLAT": "QTH", "LAMP,QORDERDEF": "QTH", "LAMP,DFLAT": "D2", "LAMP,DORDERDEF": "D2"}
_MJD_TOLERANCE_S = 1.0


def _type_ok(value, kind):
    if isinstance(value, bool):
        return False
    if kind == _STR:
        return isinstance(value, str) and value.strip() != ""
    if kind == _INT:
        return isinstance(value, (int, np.integer))
    return isinstance(value, (int, float, np.integer, np.floating)) and np.isfinite(value)


class _Unreadable(Exception):
    """The file cannot be read as a FITS image; the message says why."""


def _open_image(path):
    """Return ``(hdu index, header, data)`` of the frame's image, or raise :class:`_Unreadable`."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        try:
            hdul = fits.open(path, memmap=False)
        except Exception as exc:
            raise _Unreadable(f"not a readable FITS file ({exc.__class__.__name__}: {exc})") from None
        with hdul:
            try:
                hdus = list(hdul)
            except Exception as exc:
                raise _Unreadable(f"the HDUs cannot be read ({exc}); the file is truncated or corrupt") from None
            if hdus[0].header.get("NAXIS", 0) != 0:
                index = 0
            elif len(hdus) > 1 and isinstance(hdus[1], fits.CompImageHDU):
                index = 1
            else:
                raise _Unreadable("no image: the primary HDU is empty and extension 1 is not a tile-compressed image")
            try:
                # touch the data of every HDU: a truncated file fails here
                data = [np.array(hdu.data) if hdu.data is not None else None for hdu in hdus][index]
            except Exception as exc:
                raise _Unreadable(f"the image data cannot be read ({exc}); the file is truncated or corrupt") from None
            return index, hdus[index].header.copy(), data


def _layout_problems(index, header, data, det, binning, path):
    problems = []
    if index == 1 and not str(path).endswith(".fz"):
        problems.append("the image is in a tile-compressed extension but the file is not named .fits.fz")
    if data is None or header.get("NAXIS") != 2 or data.ndim != 2:
        return problems + [f"the image must be 2D (NAXIS = 2), found NAXIS = {header.get('NAXIS')}"]
    want = np.dtype(det.raw_dtype)
    if (data.dtype.kind, data.dtype.itemsize) != (want.kind, want.itemsize):  # FITS data are big-endian
        problems.append(f"{det.arm} raw data must be {want}, found {data.dtype.name}")
    bitpix, bzero = header.get("BITPIX"), header.get("BZERO", 0)
    want_bitpix, want_bzero = (16, 32768) if want == np.uint16 else (-32, 0)
    if (bitpix, bzero) != (want_bitpix, want_bzero):
        problems.append(f"{det.arm} raw frames have BITPIX {want_bitpix}, BZERO {want_bzero}; "
                        f"found BITPIX {bitpix}, BZERO {bzero}")
    want_shape = det.raw_shape(binning)
    if data.shape != want_shape:
        problems.append(f"{det.arm} raw frames at {binning[0]}x{binning[1]} binning are "
                        f"{want_shape[1]} x {want_shape[0]} (NAXIS1 x NAXIS2), found {data.shape[1]} x {data.shape[0]}")
    return problems


def _keyword_problems(header, arm):
    problems = []
    for name, kind in REQUIRED.items():
        if not has_keyword(header, name):
            problems.append(f"required keyword {keyword(name)} is missing")
        elif not _type_ok(header_value(header, name), kind):
            problems.append(f"{keyword(name)} = {header_value(header, name)!r} is not a valid {kind}")
    for name, kind in OPTIONAL.items():
        if has_keyword(header, name) and not _type_ok(header_value(header, name), kind):
            problems.append(f"{keyword(name)} = {header_value(header, name)!r} is not a valid {kind}")
    if not (has_keyword(header, "exptime") or (arm == "ACQ" and has_keyword(header, "acq_exptime"))):
        problems.append(f"required keyword {keyword('exptime')} is missing")
    for name, wanted in (("instrument", "SOXS"), ("telescope", "ESO-NTT")):
        value = header_value(header, name, None)
        if isinstance(value, str) and value.strip() != wanted:
            problems.append(f"{keyword(name)} = {value!r}, expected '{wanted}'")
    for name in ("exptime", "acq_exptime"):
        value = header_value(header, name, 0.0)
        if _type_ok(value, _REAL) and value < 0:
            problems.append(f"{keyword(name)} = {value} is negative")
    ra, dec = header_value(header, "ra", 0.0), header_value(header, "dec", 0.0)
    if _type_ok(ra, _REAL) and not 0 <= ra < 360 or _type_ok(dec, _REAL) and not -90 <= dec <= 90:
        problems.append(f"pointing RA = {ra}, DEC = {dec} is not in degrees")
    mjd, date = header_value(header, "mjd_obs", None), header_value(header, "date_obs", None)
    if _type_ok(mjd, _REAL) and _type_ok(date, _STR):
        try:
            offset = abs(Time(date.strip(), format="isot", scale="utc").mjd - mjd) * 86400.0
            if offset > _MJD_TOLERANCE_S:
                problems.append(f"{keyword('date_obs')} = {date} and {keyword('mjd_obs')} = {mjd} differ by {offset:.1f} s")
        except ValueError:
            problems.append(f"{keyword('date_obs')} = {date!r} is not an ISO date (YYYY-MM-DDThh:mm:ss.sss)")
    conad, gain = header_value(header, "conad", None), header_value(header, "gain_adu_per_e", None)
    for name, value in (("conad", conad), ("gain_adu_per_e", gain), ("ron", header_value(header, "ron", None))):
        if _type_ok(value, _REAL) and value <= 0:
            problems.append(f"{keyword(name)} = {value} must be positive")
    if _type_ok(conad, _REAL) and _type_ok(gain, _REAL) and conad > 0 and abs(conad * gain - 1) > 0.01:
        problems.append(f"{keyword('gain_adu_per_e')} = {gain} (ADU/e) is not the inverse of "
                        f"{keyword('conad')} = {conad} (e/ADU)")
    nexp, expno = header_value(header, "tpl_nexp", None), header_value(header, "tpl_expno", None)
    if _type_ok(nexp, _INT) and _type_ok(expno, _INT) and not 1 <= expno <= nexp:
        problems.append(f"{keyword('tpl_expno')} = {expno} is not between 1 and {keyword('tpl_nexp')} = {nexp}")
    return problems


def _kind_problems(header, arm, det, kind):
    problems = []
    dpr_type = str(header_value(header, "dpr_type")).strip().upper()
    lamps = frame_lamps(header)
    if kind in LAMP_KINDS:
        allowed = ARC_LAMPS if kind.endswith("arc") else FLAT_LAMPS
        wrong = [name for name in lamps if name not in allowed]
        if wrong:
            problems.append(f"{kind} frames cannot have the {', '.join(wrong)} lamp on")
        if not lamps and not det.lamp_off_pairs:
            problems.append(f"{arm} {kind} frames need a lamp keyword (a lamp on); none is present")
        if dpr_type in TYPE_LAMP and lamps and TYPE_LAMP[dpr_type] not in lamps:
            problems.append(f"DPR TYPE {dpr_type} is taken with the {TYPE_LAMP[dpr_type]} lamp, which is not on")
    elif lamps:
        problems.append(f"{kind} frames have no lamp on, but the header has lamp keywords ({', '.join(lamps)})")

    slit_name = SLIT_KEYWORDS.get(arm)
    slit = header_value(header, slit_name, None) if slit_name else None
    if slit is not None and str(slit).strip() not in SLITS:
        problems.append(f"{keyword(slit_name)} = {slit!r} is not a slit position ({', '.join(SLITS)})")
    elif kind in KIND_SLITS:
        wanted = KIND_SLITS[kind]
        if slit is None:
            problems.append(f"{kind} frames need the slit keyword {keyword(slit_name)}")
        elif not str(slit).strip().startswith(wanted):
            problems.append(f"{kind} frames are taken with slit {wanted}*, the header says {slit!r}")

    if det.extra.get("filters"):
        flt = header_value(header, "acq_filter", None)
        if flt is not None and str(flt).strip() not in det.extra["filters"]:
            problems.append(f"{keyword('acq_filter')} = {flt!r} is not a filter of the camera "
                            f"({', '.join(det.extra['filters'])})")
        if flt is None and kind in ("imaging_flat", "imaging_science"):
            problems.append(f"{kind} frames need the filter keyword {keyword('acq_filter')}")
    return problems


def validate_raw(path):
    """Check one file against the raw-frame contract.

    Parameters
    ----------
    path : str or Path
        A ``.fits``, ``.fits.gz``, ``.fits.Z`` or ``.fits.fz`` file.

    Returns
    -------
    list of str
        One message per problem; empty when the file is a valid SOXS raw frame.
    """
    path = Path(path)
    if not path.is_file():
        return ["file not found"]
    try:
        index, header, data = _open_image(path)
    except _Unreadable as exc:
        return [str(exc)]
    problems = []
    if has_keyword(header, "pro_catg"):
        problems.append(f"{keyword('pro_catg')} is present: this is a pipeline product, not a raw frame")
    try:
        arm = frame_arm(header)
    except DataError as exc:
        return problems + [str(exc).lstrip(": ")]
    cam = header_value(header, "acq_cam_name", None)
    if cam is not None and has_keyword(header, "arm") and (str(cam).strip().upper() == "ACQ") != (arm == "ACQ"):
        problems.append(f"{keyword('arm')} = {arm} contradicts {keyword('acq_cam_name')} = {cam}")
    det = detector(arm)
    problems += _keyword_problems(header, arm)

    binning = (header_value(header, "binx", 1), header_value(header, "biny", 1))
    if not all(_type_ok(b, _INT) for b in binning) or tuple(binning) not in det.binnings:
        problems.append(f"binning {binning[0]}x{binning[1]} is not one of the {arm} binnings "
                        f"{', '.join(f'{x}x{y}' for x, y in det.binnings)}")
        binning = (1, 1)
    speed = header_value(header, "read_speed_id", None)
    if speed is not None:
        try:
            det.readout_mode(speed)
        except ValueError as exc:
            problems.append(str(exc))
    problems += _layout_problems(index, header, data, det, tuple(binning), path)

    dpr = [header_value(header, name, None) for name in ("dpr_catg", "dpr_type", "dpr_tech")]
    if all(isinstance(v, str) for v in dpr):
        catg, dpr_type, tech = (v.strip().upper() for v in dpr)
        kind, _ = match_kind(arm, catg, dpr_type, tech)
        if kind is None:
            problems.append(f"DPR CATG/TYPE/TECH = {catg}/{dpr_type}/{tech} is not a {arm} frame type "
                            "(frame_types.yaml)")
        else:
            problems += _kind_problems(header, arm, det, kind)
    return problems


def validate_paths(paths, verbose=False):
    """Validate files (folders are searched for FITS files) and print one line per problem.

    Parameters
    ----------
    paths : iterable of str or Path
        Files or folders.
    verbose : bool
        Also print a line for every valid file.

    Returns
    -------
    int
        The number of files with problems.
    """
    files = []
    for p in map(Path, paths):
        if p.is_dir():
            files += sorted(f for f in p.rglob("*") if f.is_file() and is_fits_name(f))
        else:
            files.append(p)
    bad = 0
    for f in files:
        problems = validate_raw(f)
        bad += bool(problems)
        for problem in problems:
            print(f"{f}: {problem}")
        if verbose and not problems:
            print(f"{f}: OK")
    log.info("validated %d file(s), %d with problems", len(files), bad)
    return bad
