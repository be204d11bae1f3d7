"""Raw-frame headers and files as SOXS writes them (the raw-frame contract).

:func:`raw_header` builds the header of one exposure with every keyword of the
contract that applies to the frame; :func:`write_raw` writes image and header
as a plain, gzip-compressed or tile-compressed (fpack-style) FITS file.
Keywords are set by logical name (``keywords.yaml``); none is spelled out here.
"""

import gzip
import io
import logging
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.time import Time

from ..commonutils.detectors import detector
from ..commonutils.keywords import keyword, set_value
from ..static_calibrations import load_yaml

log = logging.getLogger(__name__)

#: Slit-wheel positions a raw header may carry (both arms).
SLITS = ("SLIT0.5", "SLIT1.0", "SLIT1.5", "SLIT5.0", "PINHOLE", "MULTIPIN", "BLANK")
#: Logical slit keyword per spectrograph arm.
SLIT_KEYWORDS = {"VIS": "slit_vis", "NIR": "slit_nir"}
#: Nominal readings of the temperature sensors (logical keyword -> value).
TEMPERATURES = {"temp_vis": -110.0, "temp_nir": 40.0, "temp_common": 12.0}
#: La Silla (NTT): east longitude and latitude in degrees.
SITE_LON, SITE_LAT = -70.7317, -29.2567

COMPRESSIONS = (None, "gz", "fz")


def _local_sidereal_deg(mjd):
    """Local sidereal time at the NTT in degrees (GMST series, ample for headers)."""
    return (280.46061837 + 360.98564736629 * (mjd - 51544.5) + SITE_LON) % 360.0


def sky_position(ra, dec, mjd):
    """Altitude, azimuth (from north through east), parallactic angle (deg) and airmass.

    Parameters
    ----------
    ra, dec : float
        J2000 pointing in degrees (precession is ignored).
    mjd : float
        Time of the observation.
    """
    ha = np.radians(_local_sidereal_deg(mjd) - ra)
    phi, d = np.radians(SITE_LAT), np.radians(dec)
    sin_alt = np.sin(phi) * np.sin(d) + np.cos(phi) * np.cos(d) * np.cos(ha)
    alt = np.degrees(np.arcsin(sin_alt))
    az = np.degrees(np.arctan2(-np.sin(ha) * np.cos(d), np.sin(d) * np.cos(phi) - np.cos(d) * np.cos(ha) * np.sin(phi)))
    parang = np.degrees(np.arctan2(np.sin(ha), np.tan(phi) * np.cos(d) - np.sin(d) * np.cos(ha)))
    # Kasten & Young (1989) airmass, finite down to the horizon
    airmass = max(1.0, 1.0 / (sin_alt + 0.50572 * (max(alt, 0.0) + 6.07995) ** -1.6364))
    return float(alt), float(az % 360.0), float(parang), float(airmass)


def zenith_pointing(mjd):
    """RA and Dec (deg) of the zenith at ``mjd``: where calibrations point by default."""
    return _local_sidereal_deg(mjd), SITE_LAT


def _iso(mjd):
    return Time(mjd, format="mjd", scale="utc").isot[:23]


def raw_header(arm, dpr_catg, dpr_type, dpr_tech, *, mjd, exptime, binning=(1, 1), readout="slow",
               slit=None, lamps=(), acq_filter=None, extra=None, acq_quirks=False):
    """Return the raw header of one SOXS exposure.

    Parameters
    ----------
    arm : str
        'VIS', 'NIR' or 'ACQ'.
    dpr_catg, dpr_type, dpr_tech : str
        The frame's DPR keywords (see ``frame_types.yaml``).
    mjd : float
        Exposure start (``MJD-OBS``; ``DATE-OBS`` is derived from it).
    exptime : float
        Exposure time in seconds.
    binning : tuple of int
        ``(binx, biny)``.
    readout : str
        VIS read-out speed, 'slow' or 'fast' (ignored by the other arms).
    slit : str, optional
        Slit-wheel position, one of :data:`SLITS` (VIS and NIR).
    lamps : sequence of str
        Lamps that are on, by name from ``frame_types.yaml`` (``QTH``, ``ThAr``, ...).
    acq_filter : str, optional
        Acquisition-camera filter.
    extra : dict, optional
        Logical keyword name -> value, added or overriding the defaults; a value
        of None removes the keyword. ``ra``/``dec``/``seeing_start`` given here
        also drive the computed altitude, airmass and parallactic angle.
    acq_quirks : bool
        For ACQ frames, leave out ``arm`` and ``exptime`` as the camera may do;
        ``acq_cam_name`` and ``acq_exptime`` then say them.

    Returns
    -------
    astropy.io.fits.Header
    """
    det = detector(arm)
    extra = dict(extra or {})
    mode = readout if readout in det.gain_e_per_adu else "default"
    if det.read_speed_ids and mode == "default":
        raise ValueError(f"unknown {arm} read-out '{readout}'")
    if slit is not None and slit not in SLITS:
        raise ValueError(f"unknown slit '{slit}': use one of {', '.join(SLITS)}")
    lamp_keys = load_yaml("frame_types.yaml")["lamps"]
    unknown = [name for name in lamps if name not in lamp_keys]
    if unknown:
        raise ValueError(f"unknown lamp(s) {unknown}: use {', '.join(lamp_keys)}")

    zenith = zenith_pointing(mjd)
    ra, dec, seeing = (float(zenith[0] if extra.get("ra") is None else extra["ra"]),
                       float(zenith[1] if extra.get("dec") is None else extra["dec"]),
                       float(extra.get("seeing_start") or 1.0))
    alt, az, parang, airmass = sky_position(ra, dec, mjd)
    _, _, parang_end, airmass_end = sky_position(ra, dec, mjd + exptime / 86400.0)
    date_obs = _iso(mjd)
    obj = str(extra.get("object", dpr_type))

    values = {
        "instrument": "SOXS",
        "telescope": "ESO-NTT",
        "arm": arm,
        "dpr_catg": dpr_catg,
        "dpr_type": dpr_type,
        "dpr_tech": dpr_tech,
        "mjd_obs": float(mjd),
        "date_obs": date_obs,
        "exptime": float(exptime),
        "object": obj,
        "ra": round(ra, 6),
        "dec": round(dec, 6),
        "obs_id": 1,
        "obs_name": "SOXS_" + ("science" if dpr_catg == "SCIENCE" else "calibration"),
        "obs_targ_name": obj,
        "tpl_id": f"SOXS_{arm.lower()}_{dpr_type.lower().replace(',', '_')}",
        "tpl_start": date_obs[:19],
        "tpl_nexp": 1,
        "tpl_expno": 1,
        "binx": int(binning[0]),
        "biny": int(binning[1]),
        "conad": det.gain(mode),
        "gain_adu_per_e": round(1.0 / det.gain(mode), 6),
        "ron": det.read_noise(mode),
        "airmass_start": round(airmass, 4),
        "airmass_end": round(airmass_end, 4),
        "seeing_start": seeing,
        "seeing_end": seeing,
        "parang_start": round(parang, 3),
        "parang_end": round(parang_end, 3),
        "tel_alt": round(alt, 4),
        "tel_az": round(az, 4),
        "temp_common": TEMPERATURES["temp_common"],
    }
    temp_key = det.extra.get("temperature_keyword")
    if temp_key in TEMPERATURES:
        values[temp_key] = TEMPERATURES[temp_key]
    if det.read_speed_ids:
        values["read_speed_id"] = {name: sid for sid, name in det.read_speed_ids.items()}[mode]
        values["read_speed_name"] = mode.upper()
    if slit is not None and arm in SLIT_KEYWORDS:
        values[SLIT_KEYWORDS[arm]] = slit
    for name in lamps:
        values[lamp_keys[name]] = name
    if acq_filter is not None:
        values["acq_filter"] = acq_filter
    if "field_diameter_arcmin" in det.extra:  # the acquisition camera names itself and its exposure time
        values["acq_cam_name"] = arm
        values["acq_exptime"] = float(exptime)
        if acq_quirks:
            del values["arm"], values["exptime"]
    values.update(extra)

    header = fits.Header()
    for name, value in values.items():
        if value is not None:
            set_value(header, name, value)
    return header


def _compression(path, compression):
    if compression is None:
        name = str(path)
        return "fz" if name.endswith(".fz") else "gz" if name.endswith(".gz") else None
    if compression not in COMPRESSIONS:
        raise ValueError(f"unknown compression '{compression}': use None, 'gz' or 'fz'")
    return compression


def write_raw(path, data, header, compression=None):
    """Write a raw frame as the contract lays it out.

    Parameters
    ----------
    path : str or Path
        Output file; with ``compression=None`` a name ending in ``.gz`` or
        ``.fz`` chooses the compression.
    data : numpy.ndarray
        The raw image (uint16 is written as BITPIX 16 with BZERO 32768).
    header : astropy.io.fits.Header
        The frame's header (see :func:`raw_header`).
    compression : {None, 'gz', 'fz'}
        None: plain FITS, image in the primary HDU. 'gz': the same, gzipped.
        'fz': tile-compressed as fpack writes it (empty primary HDU, image and
        whole header in extension 1), lossless (Rice for integers, GZIP_2
        without quantisation for floats).

    Returns
    -------
    Path
    """
    path = Path(path)
    kind = _compression(path, compression)
    if kind == "fz":
        lossless = {"compression_type": "RICE_1"} if data.dtype.kind in "iu" else {
            "compression_type": "GZIP_2", "quantize_level": 0.0}
        hdul = fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(data, header=header, **lossless)])
    else:
        hdul = fits.HDUList([fits.PrimaryHDU(data, header=header)])
    if kind == "gz":
        buffer = io.BytesIO()
        hdul.writeto(buffer)
        with gzip.open(path, "wb", compresslevel=1) as f:
            f.write(buffer.getvalue())
    else:
        hdul.writeto(path, overwrite=True)
    log.debug("wrote raw frame %s (%s)", path, header.get(keyword("dpr_type"), "?"))
    return path
