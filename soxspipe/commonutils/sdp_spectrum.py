"""ESO Science Data Product (Phase 3) 1D spectra: build, scale, read.

The layout follows the SDP standard's 1D-spectrum chapter: a primary HDU without
data, and one binary-table extension ``SPECTRUM`` with a single row whose cells
hold the arrays (IVOA Spectrum data model v2.0, ``VOCLASS = 'SPECTRUM v2.0'``):

- ``WAVE``: wavelength, nm in air (``em.wl;obs.atmos``); ``TUTYP`` ``spec:Data.SpectralAxis.Value``
- ``FLUX``, ``ERR``: the flux-calibrated spectrum and its error; ``spec:Data.FluxAxis.Value``, ...``StatError``
- ``QUAL``: 0 good, bits of the pipeline otherwise; ``spec:Data.FluxAxis.Accuracy.QualityStatus``
- ``SNR``: ``FLUX_REDUCED / ERR_REDUCED``; ``eso:Data.FluxAxis.Accuracy.SNR``
- ``FLUX_TELL``, ``ERR_TELL``: the same, corrected for telluric absorption (only when the science was
  corrected); ``eso:Data.FluxAxis.Value``, ...``StatError``
- ``BGFLUX``: the sky under the object, in FLUX's units; ``eso:Data.BackgroundModel.Value``
- ``FLUX_REDUCED``, ``ERR_REDUCED``: counts per nm over the exposure; ``eso:Data.FluxAxis.Value``, ...``StatError``

``FLUX`` is the default flux of the data model; the telluric-corrected flux is an
additional flux array (``eso:`` namespace) so that the uncorrected spectrum stays the
one whose noise and calibration are documented. Without a response the spectrum is
``FLUXCAL = 'UNCALIBRATED'`` and ``FLUX`` holds the counts.

Keywords are filled from the data, through the keyword dictionary: the wavelength
range, bin, S/N and spectral resolution from the arrays and the wavelength solution's
QC (:func:`wavelength_cards`), exposure, time span and provenance from the raw
frames' headers (:func:`observation_cards`). Wavelengths stay topocentric
(``SPECSYS = 'TOPOCENT'``, the air wavelengths the arc lamps calibrate); the
barycentric correction is stated (``ESO PRO BARYCORR``, km/s) for users to apply
(:func:`barycentric_correction`).

No I/O beyond :func:`read_sdp_spectrum`.
"""

import datetime
import logging
from dataclasses import dataclass, field, replace

import numpy as np
from astropy import units as u
from astropy.io import fits

from .errors import DataError
from .keywords import header_value, keyword, set_value

log = logging.getLogger(__name__)

PRODCATG = "SCIENCE.SPECTRUM"
VOCLASS = "SPECTRUM v2.0"
VOPUB = "ESO/SAF"
EXTNAME = "SPECTRUM"
#: FITS unit of flux-calibrated columns, and of counts per nm (FITS knows no electron: counts are electrons)
FLUX_UNIT = "erg.s**(-1).cm**(-2).angstrom**(-1)"
COUNTS_UNIT = "ct.nm**(-1)"
#: column -> (TUTYP, TUCD, TCOMM); a ';stat.uncalib' is added to the flux UCDs of an uncalibrated spectrum
COLUMNS = {
    "WAVE": ("spec:Data.SpectralAxis.Value", "em.wl;obs.atmos", "air wavelength"),
    "FLUX": ("spec:Data.FluxAxis.Value", "phot.flux.density;em.wl", "flux density above the atmosphere"),
    "ERR": ("spec:Data.FluxAxis.Accuracy.StatError", "stat.error;phot.flux.density;em.wl", "error of FLUX"),
    "QUAL": ("spec:Data.FluxAxis.Accuracy.QualityStatus", "meta.code.qual", "0 good; bits: pipeline flags"),
    "SNR": ("eso:Data.FluxAxis.Accuracy.SNR", "stat.snr", "signal to noise per bin"),
    "FLUX_TELL": ("eso:Data.FluxAxis.Value", "phot.flux.density;em.wl",
                  "FLUX corrected for telluric absorption"),
    "ERR_TELL": ("eso:Data.FluxAxis.Accuracy.StatError", "stat.error;phot.flux.density;em.wl", "error of FLUX_TELL"),
    "BGFLUX": ("eso:Data.BackgroundModel.Value", "phot.flux.density;em.wl", "sky under the object"),
    "FLUX_REDUCED": ("eso:Data.FluxAxis.Value", "phot.flux.density;em.wl;stat.uncalib",
                     "extracted electrons per nm over the exposure"),
    "ERR_REDUCED": ("eso:Data.FluxAxis.Accuracy.StatError", "stat.error;phot.flux.density;em.wl;stat.uncalib",
                    "error of FLUX_REDUCED"),
}
#: the columns a flux scale (absolute flux, arm scaling) multiplies
SCALED = ("FLUX", "ERR", "FLUX_TELL", "ERR_TELL", "BGFLUX")
#: the primary-header keywords the SDP standard makes mandatory for a spectrum (logical names)
MANDATORY_PRIMARY = ("sdp_prodcatg", "sdp_origin", "telescope", "instrument", "object", "ra", "dec", "sdp_equinox",
                     "sdp_radesys", "exptime", "sdp_texptime", "mjd_obs", "sdp_mjd_end", "sdp_prog_id", "sdp_ncombine",
                     "sdp_obstech", "fluxcal", "sdp_procsoft", "sdp_referenc", "sdp_specsys", "sdp_ext_obj",
                     "sdp_contnorm", "sdp_tot_flux", "sdp_fluxerr", "sdp_wavelmin", "sdp_wavelmax", "sdp_spec_bin",
                     "sdp_snr", "sdp_spec_res", "sdp_lamnlin", "sdp_lamrms", "sdp_spec_err", "sdp_spec_sye")
#: ... and of the extension
MANDATORY_EXTENSION = ("sdp_voclass", "sdp_vopub", "sdp_title", "object", "ra", "dec", "sdp_aperture",
                       "sdp_telapse", "sdp_tmid", "sdp_nelem", "sdp_spec_val", "sdp_spec_bw")
#: keywords of the raw frames that describe an image and so have no place in an SDP header
_NOT_ALLOWED = ("BUNIT", "CD1_1", "CD1_2", "CD2_1", "CD2_2", "CRPIX1", "CRPIX2", "CRVAL1", "CRVAL2", "CTYPE1",
                "CTYPE2", "CUNIT1", "CUNIT2", "CDELT1", "CDELT2", "WCSAXES", "RADECSYS")
#: the NTT on La Silla (deg, deg, m), for the barycentric correction
SITE = (-70.7317, -29.2567, 2375.0)
#: derived keywords written to the extension only
_EXTENSION_ONLY = ("sdp_nelem", "sdp_spec_val", "sdp_spec_bw")


@dataclass
class SdpSpectrum:
    """A 1D spectrum in the SDP layout, in memory.

    Attributes
    ----------
    columns : dict
        Column name -> 1D array, in the file's order (``WAVE`` first).
    units : dict
        Column name -> FITS unit string ('' for none).
    cards : dict
        Logical keyword -> ``(value, comment)`` of the primary header (beyond the base header
        it is written over); template keywords keyed ``(name, ((field, value), ...))``.
    comments : list of str
        COMMENT cards of the primary header (e.g. that no telluric correction was applied).
    """

    columns: dict
    units: dict
    cards: dict = field(default_factory=dict)
    comments: list = field(default_factory=list)

    @property
    def calibrated(self):
        """Whether ``FLUX`` is flux-calibrated."""
        return self.units.get("FLUX") == FLUX_UNIT

    @property
    def has_telluric(self):
        return "FLUX_TELL" in self.columns

    def derived_cards(self):
        """The keywords that follow from the arrays: wavelength range, bin, S/N, centre and width."""
        wave = np.asarray(self.columns["WAVE"], float)
        if wave.size == 0:
            raise DataError("an SDP spectrum needs at least one wavelength bin")
        return {"sdp_wavelmin": (float(wave[0]), "[nm] minimum wavelength"),
                "sdp_wavelmax": (float(wave[-1]), "[nm] maximum wavelength"),
                "sdp_spec_bin": (float(np.median(np.diff(wave))) if wave.size > 1 else 0.0,
                                 "[nm] median wavelength bin"),
                "sdp_snr": (median_snr(self.columns["SNR"], self.columns["QUAL"]), "median S/N of the good bins"),
                "sdp_spec_val": (float(0.5 * (wave[0] + wave[-1])), "[nm] mean wavelength"),
                "sdp_spec_bw": (float(wave[-1] - wave[0]), "[nm] bandpass width"),
                "sdp_nelem": (int(wave.size), "length of the data arrays")}

    def scaled(self, factor, cards=None, comment=None):
        """A copy with the flux columns (:data:`SCALED`) times ``factor`` and ``cards`` added."""
        columns = {k: (np.asarray(v) * factor if k in SCALED else v) for k, v in self.columns.items()}
        return replace(self, columns=columns, cards={**self.cards, **(cards or {})},
                       comments=self.comments + ([comment] if comment else []))

    def to_hdulist(self, base_header=None):
        """The SDP file: primary header (``base_header`` + the SDP cards) and the ``SPECTRUM`` table.

        Parameters
        ----------
        base_header : astropy.io.fits.Header, optional
            The recipe's product header (PRO keywords, provenance, QC); its image keywords are dropped.
        """
        primary = fits.Header()
        for card in (base_header or fits.Header()).cards:
            if card.keyword not in _NOT_ALLOWED and not card.keyword.startswith(("NAXIS", "PROV", "OBID")):
                primary.append(card, end=True)
        derived = self.derived_cards()
        cards = {**self.cards, **{k: v for k, v in derived.items() if k not in _EXTENSION_ONLY}}
        cards["sdp_date"] = (datetime.datetime.now(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S"),
                             "file written")
        _set_cards(primary, cards)
        for line in self.comments:
            primary.add_comment(line)
        wave = np.asarray(self.columns["WAVE"], float)
        cols = []
        for name, values in self.columns.items():
            values = np.asarray(values)
            dtype = "J" if name == "QUAL" else ("D" if name == "WAVE" else "E")
            cols.append(fits.Column(name=name, format=f"{values.size}{dtype}", unit=self.units.get(name) or None,
                                    array=values.astype(np.int32 if dtype == "J" else
                                                        np.float64 if dtype == "D" else np.float32)[None, :]))
        table = _big_endian(fits.BinTableHDU.from_columns(cols, name=EXTNAME))
        ext = table.header
        for n, name in enumerate(self.columns, start=1):
            tutyp, tucd, tcomm = COLUMNS[name]
            if not self.calibrated and name in ("FLUX", "ERR", "FLUX_TELL", "ERR_TELL", "BGFLUX"):
                tucd += ";stat.uncalib"
            set_value(ext, "tutyp", tutyp, n=n)
            set_value(ext, "tucd", tucd, n=n)
            set_value(ext, "tcomm", tcomm, n=n)
        set_value(ext, "tdmin", float(wave[0]), "[nm] first wavelength", n=1)
        set_value(ext, "tdmax", float(wave[-1]), "[nm] last wavelength", n=1)
        ext_cards = {"sdp_voclass": (VOCLASS, "VO data model"), "sdp_vopub": (VOPUB, "VO publishing authority"),
                     "sdp_inherit": (True, "primary header keywords inherited")}
        for name in ("object", "ra", "dec", "sdp_title", "sdp_aperture", "sdp_telapse", "sdp_tmid"):
            if name in self.cards:
                ext_cards[name] = self.cards[name]
        ext_cards.update({k: derived[k] for k in _EXTENSION_ONLY})
        _set_cards(ext, ext_cards)
        return fits.HDUList([fits.PrimaryHDU(header=primary), table])


def _big_endian(table):
    """The same table HDU with its data stored big-endian, as FITS has it.

    astropy swaps the bytes of a native table while writing it element by element of every
    array cell, which for one row of 10^4-10^5-element cells costs most of a second.
    """
    data = np.asarray(table.data)
    swapped = fits.BinTableHDU(data=data.astype(data.dtype.newbyteorder(">")).view(fits.FITS_rec),
                               header=table.header, name=table.name)
    for card in table.header.cards:  # the units and names the new HDU does not take from the data
        if card.keyword not in swapped.header:
            swapped.header.append(card)
    return swapped


def _set_cards(header, cards):
    for name, value in cards.items():
        fields = {}
        if isinstance(name, tuple):
            name, fields = name
        value, comment = value if isinstance(value, tuple) else (value, None)
        if isinstance(value, (np.floating, np.integer, np.bool_)):
            value = value.item()
        if isinstance(value, float) and not np.isfinite(value):
            value = -1.0 if name == "sdp_fluxerr" else None
        if value is None:
            continue
        set_value(header, name, value, comment, **dict(fields))


def median_snr(snr, qual):
    """The spectrum's S/N: the median of ``snr`` over the good (QUAL 0), finite bins; 0 when there are none."""
    snr, qual = np.asarray(snr, float), np.asarray(qual)
    good = (qual == 0) & np.isfinite(snr)
    return float(np.median(snr[good])) if good.any() else 0.0


def spectrum_columns(merged, *, sky_calibrated=None):
    """The SDP columns of a merged science table (``<P>_MERGED_<ARM>``).

    Parameters
    ----------
    merged : astropy.table.Table
        ``WAVE`` (nm), ``FLUX``, ``ERR``, ``SKY`` (counts per nm), ``QUAL``; with a response also
        ``FLUX_CAL``, ``ERR_CAL``; with a telluric correction also ``FLUX_TELL``, ``ERR_TELL``.
    sky_calibrated : array, optional
        The sky flux-calibrated as ``FLUX_CAL`` is (the SDP standard wants ``BGFLUX`` in FLUX's units);
        needed when the table is flux-calibrated.

    Returns
    -------
    columns, units : dict
    """
    def col(name):
        return np.asarray(merged[name], float)

    reduced, reduced_err = col("FLUX"), col("ERR")
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = np.where(reduced_err > 0, reduced / reduced_err, 0.0)
    calibrated = "FLUX_CAL" in merged.colnames
    if calibrated and sky_calibrated is None:
        raise ValueError("a flux-calibrated table needs the sky calibrated the same way (sky_calibrated)")
    flux_unit = FLUX_UNIT if calibrated else COUNTS_UNIT
    columns = {"WAVE": col("WAVE"), "FLUX": col("FLUX_CAL") if calibrated else reduced,
               "ERR": col("ERR_CAL") if calibrated else reduced_err,
               "QUAL": np.asarray(merged["QUAL"], np.int32), "SNR": np.nan_to_num(snr)}
    if "FLUX_TELL" in merged.colnames:
        columns["FLUX_TELL"], columns["ERR_TELL"] = col("FLUX_TELL"), col("ERR_TELL")
    columns["BGFLUX"] = np.asarray(sky_calibrated, float) if calibrated else col("SKY")
    columns["FLUX_REDUCED"], columns["ERR_REDUCED"] = reduced, reduced_err
    units = {name: "" for name in columns}
    units.update({name: flux_unit for name in ("FLUX", "ERR", "FLUX_TELL", "ERR_TELL", "BGFLUX") if name in columns})
    units.update({"WAVE": "nm", "FLUX_REDUCED": COUNTS_UNIT, "ERR_REDUCED": COUNTS_UNIT})
    return columns, units


def observation_cards(raw, *, exptime=None):
    """SDP keywords of the observation from the raw frames' headers.

    Parameters
    ----------
    raw : sequence of (str, astropy.io.fits.Header)
        Every raw frame's file name and header.
    exptime : float, optional
        The exposure time the spectrum's counts are over (default: the sum of the frames').

    Returns
    -------
    dict
        ``EXPTIME``, ``TEXPTIME`` (sum of the exposures), ``MJD-OBS`` (first start), ``MJD-END`` (last end),
        ``TELAPSE``, ``TMID``, ``NCOMBINE``, ``PROV1..n``, ``OBID1..``, ``PROG_ID``, ``OBJECT``, ``RA``, ``DEC``.

    Raises
    ------
    DataError
        A frame without ``MJD-OBS``.
    """
    starts, ends, times = [], [], []
    for name, header in raw:
        mjd = header_value(header, "mjd_obs", None)
        if mjd is None:
            raise DataError(f"{name}: no {keyword('mjd_obs')}; the SDP product needs the observation times")
        t = float(header_value(header, "exptime", 0.0) or 0.0)
        starts.append(float(mjd))
        ends.append(float(mjd) + t / 86400.0)
        times.append(t)
    first = raw[0][1]
    start, end = min(starts), max(ends)
    cards = {"exptime": (float(sum(times) if exptime is None else exptime), "[s] integration time per bin"),
             "sdp_texptime": (float(sum(times)), "[s] total integration time of all exposures"),
             "mjd_obs": (start, "[d] start of observations"), "sdp_mjd_end": (end, "[d] end of observations"),
             "sdp_telapse": ((end - start) * 86400.0, "[s] total elapsed time"),
             "sdp_tmid": (0.5 * (start + end), "[d] MJD mid exposure"),
             "sdp_ncombine": (len(raw), "raw science frames combined"),
             "sdp_prog_id": (str(header_value(first, "prog_id", "") or "").strip() or "UNKNOWN", "ESO programme"),
             "object": (str(header_value(first, "object", "") or "").strip(), "target designation"),
             "sdp_m_epoch": (False, "not from several epochs"),
             "sdp_singlexp": (len(raw) == 1, "from a single exposure")}
    for key in ("ra", "dec"):
        value = header_value(first, key, None)
        if value is not None:
            cards[key] = (float(value), f"[deg] target {key.upper()} (J2000)")
    for n, (name, header) in enumerate(raw, start=1):
        cards[("sdp_prov", (("n", n),))] = (name, "originating raw file")
    obs_ids = sorted({int(v) for v in (header_value(h, "obs_id", None) for _, h in raw) if v is not None})
    for n, obs in enumerate(obs_ids, start=1):
        cards[("sdp_obid", (("n", n),))] = (obs, "observation block ID")
    return cards


def wavelength_cards(qc, *, nm_per_pixel, dispersion_axis):
    """``LAMNLIN``, ``LAMRMS``, ``SPEC_ERR``, ``SPEC_SYE`` and ``SPEC_RES`` from a DISP_TAB's QC.

    Parameters
    ----------
    qc : dict
        The DISP_TAB's QC values by name: ``LINES TOTAL``, ``LINES USED FRAC``, ``<A>RES RMS`` and
        ``<A>RES MEDIAN`` (pixels along axis A), ``RESOLVING POWER``.
    nm_per_pixel : float
        The median dispersion of the arm (nm per pixel along the dispersion).
    dispersion_axis : str
        'x' or 'y': the residuals along it are the wavelength residuals.

    Returns
    -------
    dict
        ``LAMRMS`` = the residual RMS along the dispersion in nm; ``SPEC_ERR`` = LAMRMS / sqrt(LAMNLIN), the
        statistical error of the wavelength scale; ``SPEC_SYE`` = the median residual (nm), its systematic
        offset; ``SPEC_RES`` = the median lambda / FWHM of the arc lines.

    Raises
    ------
    DataError
        The QC values are missing (a DISP_TAB from another pipeline version).
    """
    axis = dispersion_axis.upper()
    try:
        n_lines = int(round(float(qc["LINES TOTAL"]) * float(qc["LINES USED FRAC"])))
        rms = float(qc[f"{axis}RES RMS"]) * nm_per_pixel
        offset = abs(float(qc[f"{axis}RES MEDIAN"])) * nm_per_pixel
        power = float(qc["RESOLVING POWER"])
    except KeyError as exc:
        raise DataError(f"the DISP_TAB has no QC {exc}: it cannot give the SDP wavelength keywords") from None
    return {"sdp_lamnlin": (n_lines, "arc lines used in the wavelength solution"),
            "sdp_lamrms": (rms, "[nm] RMS of the wavelength solution"),
            "sdp_spec_err": (rms / np.sqrt(max(n_lines, 1)), "[nm] statistical error of the wavelengths"),
            "sdp_spec_sye": (offset, "[nm] systematic error of the wavelengths"),
            "sdp_spec_res": (power, "resolving power lambda/FWHM (arc lines)")}


def barycentric_correction(ra, dec, mjd):
    """The barycentric radial-velocity correction (km/s) towards (``ra``, ``dec``) at ``mjd`` (UTC) from La Silla.

    The Earth's barycentric velocity (astropy's built-in ephemeris) plus the site's rotation
    (mean sidereal time from UTC), projected on the target's direction: good to a few m/s, without
    the Earth-orientation tables a full transformation would read.
    """
    from astropy.coordinates import get_body_barycentric_posvel
    from astropy.time import Time

    time = Time(mjd, format="mjd", scale="utc")
    _, velocity = get_body_barycentric_posvel("earth", time)
    a, d = np.radians(ra), np.radians(dec)
    direction = np.array([np.cos(d) * np.cos(a), np.cos(d) * np.sin(a), np.sin(d)])
    orbital = float(np.dot(velocity.xyz.to_value(u.km / u.s), direction))
    lon, lat, height = SITE
    gmst = 280.46061837 + 360.98564736629 * (time.jd - 2451545.0)
    hour_angle = np.radians(gmst + lon) - a
    rotation = 7.292115e-5 * (6378.137 + height / 1000.0) * np.cos(np.radians(lat))  # km/s eastwards
    return orbital - rotation * np.cos(d) * np.sin(hour_angle)


def product_cards(*, arm, obstech, slit_width, procsoft, calibrated, telluric, barycorr=None, title=""):
    """The SDP keywords that describe the product rather than the observation.

    ``FLUXCAL`` 'ABSOLUTE' for a flux-calibrated spectrum; ``TOT_FLUX`` F and ``FLUXERR`` -2 (the
    slit losses of the standard-star calibration are not known) until :mod:`.absolute_flux` scales
    it to the acquisition image's photometry; ``FLUXERR`` -1 for an uncalibrated one.
    """
    cards = {"sdp_prodcatg": (PRODCATG, "data product category"), "sdp_origin": ("ESO", "European Southern Observatory"),
             "sdp_procsoft": (procsoft, "data reduction software"), "sdp_obstech": (obstech, "observation technique"),
             "fluxcal": ("ABSOLUTE" if calibrated else "UNCALIBRATED", "type of flux calibration"),
             "sdp_fluxerr": (-2.0 if calibrated else -1.0, "[%] flux scale error (-2: unknown, -1: uncalibrated)"),
             "sdp_tot_flux": (False, "slit losses not corrected"), "sdp_contnorm": (False, "not continuum-normalised"),
             "sdp_specsys": ("TOPOCENT", "wavelengths not barycentric-corrected"),
             "sdp_ext_obj": (False, "extracted as a point source"),
             "sdp_equinox": (2000.0, "standard FK5"), "sdp_radesys": ("FK5", "coordinate reference frame"),
             "sdp_referenc": ("", "bibliographic reference"), "sdp_prodlvl": (2, "science-grade product"),
             "sdp_dispelem": (f"SOXS {arm}", "dispersive element"),
             "sdp_aperture": (float(slit_width) / 3600.0, "[deg] slit width"),
             "sdp_title": (title, "dataset title"),
             "pro_tellcorr": (bool(telluric), "telluric correction applied" if telluric else "no telluric correction"),
             "pro_absflux": (False, "no acquisition-image photometry applied")}
    if barycorr is not None:
        cards["pro_barycorr"] = (round(barycorr, 4), "[km/s] barycentric correction, not applied")
    return cards


def build_sdp_spectrum(columns, units, cards):
    """An :class:`SdpSpectrum` with the comments its cards call for.

    Raises
    ------
    DataError
        No bins, wavelengths not increasing, or arrays of different lengths.
    """
    wave = np.asarray(columns["WAVE"], float)
    if wave.size == 0 or not np.isfinite(wave).all():
        raise DataError("the spectrum is empty or has non-finite wavelengths: no SDP product")
    if wave.size > 1 and np.any(np.diff(wave) <= 0):
        raise DataError("the spectrum's wavelengths do not increase: no SDP product")
    for name, values in columns.items():
        if np.asarray(values).shape != wave.shape:
            raise DataError(f"SDP column {name} has {np.asarray(values).size} values for {wave.size} wavelengths")
    comments = []
    if "FLUX_TELL" not in columns:
        comments.append("No telluric correction: no FLUX_TELL/ERR_TELL columns.")
    return SdpSpectrum(dict(columns), dict(units), dict(cards), comments)


def read_sdp_spectrum(path):
    """Read an SDP 1D-spectrum file into an :class:`SdpSpectrum` (cards by FITS keyword, plus the header).

    Returns
    -------
    spectrum : SdpSpectrum
        ``cards`` holds nothing; the primary header is returned beside it.
    header : astropy.io.fits.Header

    Raises
    ------
    DataError
        Not a file of the SDP layout.
    """
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            if EXTNAME not in hdul:
                raise DataError(f"{path}: no {EXTNAME} extension: not an SDP spectrum")
            data = hdul[EXTNAME].data
            ext = hdul[EXTNAME].header
            names = list(data.columns.names)
            columns = {n: np.asarray(data[n][0]) for n in names}
            units = {n: (data.columns[n].unit or "") for n in names}
    except OSError as exc:
        raise DataError(f"{path}: not a readable FITS file ({exc})") from None
    if str(header_value(header, "sdp_prodcatg", "")).strip() != PRODCATG or "WAVE" not in columns:
        raise DataError(f"{path}: not an SDP spectrum ({keyword('sdp_prodcatg')} is not {PRODCATG})")
    header.extend([c for c in ext.cards if c.keyword.startswith(("TUTYP", "TUCD"))], unique=True)
    return SdpSpectrum(columns, units), header
