"""The acquisition camera's night: bias, darks, twilight sky flats and star fields.

:func:`simulate_acq_night` writes the raw frames of the SOXS acquisition camera
for one night and the truth about them:

- sky flats per filter carry the vignetting of the circular 3.5 arcmin field
  (a slow radial fall-off inside the circle, dark outside);
- star fields are drawn from a seeded synthetic catalogue around a pointing and
  rendered with a Moffat PSF through a true TAN WCS that is offset (a few arcsec)
  and rotated from the nominal pointing; the raw header carries only the nominal
  ``RA``/``DEC``, so the pipeline must solve the astrometry. A reference
  catalogue of the stars in and around the fields (``refcat.ecsv``, like a
  Refcat2 extract) is written into the truth folder and, as the pipeline's
  input, next to the raw frames.

Truth files (in the truth folder): ``acq.json`` (field circle, zero points,
extinction, sky, and per science frame the true WCS, airmass, seeing and zero
point), ``acq_stars.ecsv`` (each star of each science frame with its true
pixel position), ``acq_illumination.fits`` (the vignetting map, 1 at the field
centre), ``refcat.ecsv`` and the detector truth (``detector_ACQ_1x1_default.json``
with its response and bad-pixel maps).

Zero points are the magnitude of a star that gives 1 electron per second at
the field centre (illumination 1): ``m = zp - 2.5 log10(electrons / exptime)``.
Pixel positions are 0-based, x along NAXIS1; WCS dicts use FITS conventions
(``CRPIX`` 1-based).
"""

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table, vstack
from astropy.time import Time
from astropy.wcs import WCS

from ..commonutils.detectors import detector
from ..commonutils.keywords import header_value
from .detector import SimulatedDetector
from .header import raw_header, write_raw, zenith_pointing
from .night import night_mjd

log = logging.getLogger(__name__)

ARM = "ACQ"
REFCAT = "refcat.ecsv"
STARS = "acq_stars.ecsv"
TRUTH_JSON = "acq.json"
ILLUMINATION = "acq_illumination.fits"

#: Per filter: zero point (mag for 1 e/s above the atmosphere), extinction (mag/airmass),
#: dark-sky brightness (mag/arcsec^2), effective wavelength (nm) and science exposure time (s).
FILTERS = {
    "u": (24.6, 0.45, 22.0, 367.0, 120.0),
    "g": (26.2, 0.19, 21.8, 482.0, 60.0),
    "r": (26.3, 0.10, 20.8, 622.0, 60.0),
    "i": (26.0, 0.06, 20.2, 755.0, 60.0),
    "z": (25.5, 0.05, 19.2, 869.0, 60.0),
    "y": (24.6, 0.05, 18.2, 971.0, 90.0),
    "V": (26.0, 0.14, 21.5, 551.0, 60.0),
}
SMALL_FILTERS = ("g", "r")
MOFFAT_BETA = 3.5
_STAMP_HALF = 20  # PSF stamps are (2 * 20 + 1)^2 px
_OVERSAMPLE = 3
_OVERHEAD = 5.0  # s between exposures
_ARM_DELAY = 2.7  # s: ACQ frames never start on the same millisecond as a spectrograph frame
_STARS_PER_FIELD = 200
_CATALOGUE_RADIUS_ARCMIN = 3.0
_POINTING_RMS_ARCSEC = 4.0
_FIELDS = {"small": 1, "full": 2}
_FRAMES = {"small": {"bias": 3, "dark": 3, "flat": 3, "science": 1},
           "full": {"bias": 10, "dark": 5, "flat": 5, "science": 1}}


@dataclass
class _Frame:
    """One planned exposure of the camera."""

    kind: str
    dpr: tuple
    exptime: float
    mjd: float = 0.0
    acq_filter: str = None
    obs_id: int = 0
    scene: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)
    compression: str = None


# --------------------------------------------------------------------------- scene pieces
def vignetting(shape, centre, radius, falloff=0.03, edge=2.0):
    """Illumination of the circular field: ``1 - falloff (r/R)^2`` inside, 0 outside.

    Parameters
    ----------
    shape : tuple
        ``(ny, nx)`` of the frame.
    centre : tuple
        ``(x, y)`` of the field centre, 0-based pixels.
    radius : float
        Field radius in pixels.
    falloff : float
        Fractional loss at the field edge.
    edge : float
        Width (px) of the logistic transition at the edge.
    """
    y, x = np.indices(shape, dtype=np.float32)
    r = np.hypot(x - np.float32(centre[0]), y - np.float32(centre[1]))
    inside = 1.0 / (1.0 + np.exp(np.clip((r - radius) / edge, -50, 50)))
    return ((1.0 - falloff * np.minimum(r / radius, 1.0) ** 2) * inside).astype(np.float32)


def synthetic_catalogue(ra, dec, n, radius_arcmin, rng, first_id=1):
    """Stars uniformly spread within ``radius_arcmin`` of (ra, dec), with magnitudes per filter.

    r magnitudes follow ``N(<m) ~ 10^(0.25 m)`` between 13.5 and 21.5; the other bands
    follow from a g-r colour drawn per star.

    Returns
    -------
    astropy.table.Table
        ``id, ra, dec`` and one magnitude column per filter.
    """
    rho = np.radians(radius_arcmin / 60.0) * np.sqrt(rng.uniform(0, 1, n))
    theta = rng.uniform(0, 2 * np.pi, n)
    xi, eta = rho * np.sin(theta), rho * np.cos(theta)
    ra_s, dec_s = _deproject(np.radians(ra), np.radians(dec), xi, eta)
    lo, hi = 10 ** (0.25 * 13.5), 10 ** (0.25 * 21.5)
    r = np.log10(rng.uniform(lo, hi, n)) / 0.25
    c = rng.uniform(0.1, 1.4, n)  # g - r
    g = r + c
    i = r - 0.35 * c - 0.02
    z = i - 0.2 * c - 0.01
    mags = {"u": g + 0.8 + 1.5 * (c - 0.3), "g": g, "r": r, "i": i, "z": z, "y": z - 0.1 * c, "V": r + 0.5 * c - 0.03}
    t = Table({"id": np.arange(first_id, first_id + n), "ra": np.degrees(ra_s) % 360.0, "dec": np.degrees(dec_s)})
    for f in FILTERS:
        t[f] = np.round(mags[f], 4)
    return t


def _deproject(ra0, dec0, xi, eta):
    """Gnomonic (TAN) standard coordinates (rad) around (ra0, dec0) -> ra, dec (rad)."""
    denom = np.cos(dec0) - eta * np.sin(dec0)
    ra = ra0 + np.arctan2(xi, denom)
    dec = np.arctan2(np.sin(dec0) + eta * np.cos(dec0), np.hypot(xi, denom))
    return ra, dec


def true_wcs(ra, dec, rotation_deg, scale_arcsec, crpix):
    """A TAN WCS, north up and east left when ``rotation_deg`` is 0; ``crpix`` 1-based."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [ra, dec]
    w.wcs.crpix = list(crpix)
    c, s = np.cos(np.radians(rotation_deg)), np.sin(np.radians(rotation_deg))
    w.wcs.cd = scale_arcsec / 3600.0 * np.array([[-c, s], [s, c]])
    return w


def moffat_image(shape, x, y, flux, fwhm_px, beta=MOFFAT_BETA):
    """Image of point sources with a Moffat PSF, integrated over pixels by 3x3 sub-sampling.

    Parameters
    ----------
    shape : tuple
        ``(ny, nx)``.
    x, y : array
        0-based pixel positions.
    flux : array
        Total flux of each source (any unit); the PSF is normalised over the plane.
    fwhm_px : float
    """
    ny, nx = shape
    x, y, flux = (np.asarray(v, float) for v in (x, y, flux))
    h = _STAMP_HALF
    near = (x > -h) & (x < nx + h) & (y > -h) & (y < ny + h)
    x, y, flux = x[near], y[near], flux[near]
    image = np.zeros(ny * nx)
    if x.size == 0:
        return image.reshape(shape).astype(np.float32)
    alpha = fwhm_px / (2.0 * np.sqrt(2 ** (1.0 / beta) - 1.0))
    ix, iy = np.rint(x).astype(int), np.rint(y).astype(int)
    d = np.arange(-h, h + 1)
    sub = (np.arange(_OVERSAMPLE) + 0.5) / _OVERSAMPLE - 0.5
    # offsets of sub-pixel centres from the source, per star: (n, S, s) along each axis
    dx = (ix - x)[:, None, None] + d[None, :, None] + sub[None, None, :]
    dy = (iy - y)[:, None, None] + d[None, :, None] + sub[None, None, :]
    r2 = dy[:, :, None, :, None] ** 2 + dx[:, None, :, None, :] ** 2  # (n, Sy, Sx, s, s)
    psf = (beta - 1) / (np.pi * alpha**2) * (1 + r2 / alpha**2) ** -beta
    stamp = psf.mean(axis=(3, 4)) * flux[:, None, None]
    px = ix[:, None, None] + d[None, None, :]
    py = iy[:, None, None] + d[None, :, None]
    px, py = np.broadcast_to(px, stamp.shape), np.broadcast_to(py, stamp.shape)
    ok = (px >= 0) & (px < nx) & (py >= 0) & (py < ny)
    image += np.bincount((py[ok] * nx + px[ok]), weights=stamp[ok], minlength=ny * nx)
    return image.reshape(shape).astype(np.float32)


def zero_point(acq_filter, airmass):
    """Zero point (mag for 1 e/s at the field centre) of ``acq_filter`` through ``airmass``."""
    zp0, k = FILTERS[acq_filter][:2]
    return zp0 - k * airmass


# --------------------------------------------------------------------------- the night
class _AcqNight:
    """Plans, renders and writes the camera's frames of one night."""

    def __init__(self, raw_dir, truth_dir, night, seed, scenario, size, rng, filters=None, rotation_deg=None,
                 pointing_offset_arcsec=None, science_frames=None):
        if size not in _FRAMES:
            raise ValueError(f"unknown size '{size}': use 'small' or 'full'")
        self.raw_dir, self.truth_dir = Path(raw_dir), Path(truth_dir)
        self.raw_dir.mkdir(parents=True, exist_ok=True)
        self.truth_dir.mkdir(parents=True, exist_ok=True)
        self.base = night_mjd(night)
        self.night, self.seed, self.scenario, self.size = night, seed, scenario, size
        self.rng = np.random.default_rng([seed, 2]) if rng is None else rng
        self.det = SimulatedDetector(ARM, seed=seed, scenario=scenario)
        self.spec = detector(ARM)
        self.shape = self.det.science_shape
        self.scale = self.spec.pixel_scale_arcsec
        radius = self.spec.extra["field_diameter_arcmin"] * 30.0 / self.scale
        centre = ((self.shape[1] - 1) / 2 + self.rng.normal(0, 3), (self.shape[0] - 1) / 2 + self.rng.normal(0, 3))
        self.field = {"centre_px": [round(float(c), 3) for c in centre], "radius_px": round(float(radius), 3),
                      "falloff": 0.03, "edge_px": 2.0}
        self.illumination = vignetting(self.shape, centre, radius, self.field["falloff"], self.field["edge_px"])
        self.rotation = float(self.rng.uniform(-0.5, 0.5))
        if rotation_deg is not None:
            self.rotation = float(rotation_deg)
        self.pointing_offset = None if pointing_offset_arcsec is None else np.asarray(pointing_offset_arcsec, float)
        self.science_frames = science_frames
        self.true_scale = float(self.scale * (1 + self.rng.normal(0, 1e-3)))
        self.seeing = float(self.rng.uniform(0.7, 1.2))
        self.filters = tuple(filters) if filters else tuple(FILTERS) if size == "full" else SMALL_FILTERS
        self.names = set()
        self.frame_truth = {}
        self.star_rows = []
        self.count = 0

    # -- planning ------------------------------------------------------------------------
    def plan(self):
        n = dict(_FRAMES[self.size])
        if self.science_frames:
            n["science"] = self.science_frames
        sets = [([_Frame("bias", ("CALIB", "BIAS", "IMAGE"), 0.0) for _ in range(n["bias"])],
                 "Bias", "SOXS_img_cal_Bias", self.base + 0.06)]
        science_times = sorted({FILTERS[f][4] for f in self.filters})
        mjd_dark = self.base + 0.08
        for t in science_times:
            sets.append(([_Frame("dark", ("CALIB", "DARK", "IMAGE"), t) for _ in range(n["dark"])],
                         f"Dark {t:.0f}s", "SOXS_img_cal_Dark", mjd_dark))
            mjd_dark += (n["dark"] * (t + _OVERHEAD) + 120.0) / 86400.0
        mjd_flat = self.base + 0.33  # evening twilight
        for f in self.filters:
            frames = [_Frame("imaging_flat", ("CALIB", "FLAT,SKY", "IMAGE"), round(2.0 * 1.4**k, 1), acq_filter=f,
                             scene={"type": "flat", "level": float(self.rng.uniform(15000, 30000))})
                      for k in range(n["flat"])]
            sets.append((frames, f"Sky flats {f}", "SOXS_img_cal_SkyFlat", mjd_flat))
            mjd_flat += (sum(fr.exptime + _OVERHEAD for fr in frames) + 30.0) / 86400.0
        catalogue = []
        for k in range(_FIELDS[self.size]):
            start = self.base + 0.45 + 0.05 * k
            ra, dec = zenith_pointing(start)
            ra, dec = round((ra + self.rng.uniform(-10, 10)) % 360, 5), round(dec + self.rng.uniform(-10, 10), 5)
            name = f"ACQ-FIELD-{k + 1}"
            catalogue.append(synthetic_catalogue(ra, dec, _STARS_PER_FIELD, _CATALOGUE_RADIUS_ARCMIN, self.rng,
                                                 first_id=1 + k * _STARS_PER_FIELD))
            frames = [_Frame("imaging_science", ("SCIENCE", "OBJECT", "IMAGE"), FILTERS[f][4], acq_filter=f,
                             scene={"type": "stars", "field": name, "catalogue": k},
                             header={"object": name, "obs_targ_name": name, "ra": ra, "dec": dec})
                      for f in self.filters for _ in range(n["science"])]
            sets.append((frames, f"Imaging {name}", "SOXS_img_obs_Exposures", start))
        self.catalogue = vstack(catalogue)
        self.field_catalogues = catalogue

        obs_id = 3000
        planned = []
        for frames, obs_name, tpl_id, start in sets:
            mjd = start + _ARM_DELAY / 86400.0
            for i, fr in enumerate(frames):
                fr.mjd = mjd
                mjd += (fr.exptime + _OVERHEAD) / 86400.0
                fr.obs_id = obs_id
                fr.header.update({"obs_id": obs_id, "obs_name": obs_name, "tpl_id": tpl_id,
                                  "tpl_start": Time(frames[0].mjd, format="mjd", scale="utc").isot[:19],
                                  "tpl_nexp": len(frames), "tpl_expno": i + 1})
                if fr.acq_filter:
                    fr.header["seeing_start"] = fr.header["seeing_end"] = round(self._seeing(fr), 3)
            obs_id += 1
            planned += frames
        planned[0].compression = "gz"
        next(fr for fr in planned if fr.kind == "imaging_science").compression = "fz"
        return planned

    def _seeing(self, frame):
        """Seeing FWHM (arcsec) in the frame's filter, scaling as wavelength^-0.2."""
        return self.seeing * (FILTERS[frame.acq_filter][3] / 500.0) ** -0.2

    # -- rendering -----------------------------------------------------------------------
    def electrons(self, frame, header):
        """Noise-free electrons of ``frame``, its truth entry and its star list (None where there is none)."""
        kind = frame.scene.get("type")
        if kind == "flat":
            return self.illumination * np.float32(frame.scene["level"]), None, None
        if kind != "stars":
            return None, None, None
        f = frame.acq_filter
        airmass = 0.5 * (header_value(header, "airmass_start") + header_value(header, "airmass_end"))
        zp = zero_point(f, airmass)
        seeing = header_value(header, "seeing_start")
        ra0, dec0 = frame.header["ra"], frame.header["dec"]
        offset = self.rng.normal(0, _POINTING_RMS_ARCSEC, 2)
        if self.pointing_offset is not None:
            offset = self.pointing_offset
        true_ra = ra0 + offset[0] / 3600.0 / np.cos(np.radians(dec0))
        true_dec = dec0 + offset[1] / 3600.0
        crpix = ((self.shape[1] + 1) / 2.0, (self.shape[0] + 1) / 2.0)
        wcs = true_wcs(true_ra, true_dec, self.rotation, self.true_scale, crpix)
        cat = self.field_catalogues[frame.scene["catalogue"]]
        x, y = wcs.world_to_pixel_values(np.asarray(cat["ra"]), np.asarray(cat["dec"]))
        rate = 10 ** (-0.4 * (np.asarray(cat[f]) - zp))
        stars_e = rate * frame.exptime
        fwhm_px = seeing / self.true_scale
        sky_rate = 10 ** (-0.4 * (FILTERS[f][2] - zp)) * self.true_scale**2
        image = moffat_image(self.shape, x, y, stars_e, fwhm_px)
        image += np.float32(sky_rate * frame.exptime)
        image *= self.illumination
        on_chip = (x >= -0.5) & (x < self.shape[1] - 0.5) & (y >= -0.5) & (y < self.shape[0] - 0.5)
        cx, cy = self.field["centre_px"]
        in_field = np.hypot(x - cx, y - cy) < self.field["radius_px"] - 3
        truth = {"filter": f, "field": frame.scene["field"], "airmass": round(float(airmass), 5),
                 "seeing_arcsec": seeing, "fwhm_px": round(float(fwhm_px), 4), "zero_point": round(float(zp), 5),
                 "sky_e_per_s_per_px": round(float(sky_rate), 5),
                 "nominal_pointing": [ra0, dec0],
                 "pointing_offset_arcsec": [round(float(o), 4) for o in offset],
                 "wcs": {k: (v if isinstance(v, str) else float(v)) for k, v in wcs.to_header().items()
                         if k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2")}}
        truth["wcs"].update({f"CD{i}_{j}": float(wcs.wcs.cd[i - 1, j - 1]) for i in (1, 2) for j in (1, 2)})
        sel = on_chip
        stars = {"id": np.asarray(cat["id"])[sel], "ra": np.asarray(cat["ra"])[sel],
                 "dec": np.asarray(cat["dec"])[sel], "x": x[sel], "y": y[sel],
                 "mag": np.asarray(cat[f])[sel], "electrons": stars_e[sel], "in_field": in_field[sel],
                 "illumination": self.illumination[np.rint(y[sel]).astype(int), np.rint(x[sel]).astype(int)]}
        return image, truth, stars

    # -- writing -------------------------------------------------------------------------
    def _name(self, mjd, compression):
        t = Time(mjd, format="mjd", scale="utc")
        while True:
            stem = f"SOXS.{t.isot[:23]}"
            candidates = [self.raw_dir / (stem + s) for s in (".fits", ".fits.gz", ".fits.fz")]
            if stem not in self.names and not any(c.exists() for c in candidates):
                self.names.add(stem)
                return stem + ".fits" + {None: "", "gz": ".gz", "fz": ".fz"}[compression]
            t = t + 0.001 / 86400.0

    def write(self, frame):
        header = raw_header(ARM, *frame.dpr, mjd=frame.mjd, exptime=frame.exptime, acq_filter=frame.acq_filter,
                            extra=frame.header, acq_quirks=self.count % 2 == 1)
        electrons, truth, stars = self.electrons(frame, header)
        raw = self.det.read_out(electrons, frame.exptime, rng=self.rng)
        self.count += 1
        name = self._name(frame.mjd, frame.compression)
        write_raw(self.raw_dir / name, raw, header, frame.compression)
        if truth is not None:
            self.frame_truth[name] = truth
            self.star_rows.append({"file": np.full(len(stars["id"]), name), **stars})
        return {"file": name, "arm": ARM, "kind": frame.kind, "dpr_catg": frame.dpr[0], "dpr_type": frame.dpr[1],
                "dpr_tech": frame.dpr[2], "tag": f"{frame.dpr[1]}_{ARM}", "exptime": float(frame.exptime),
                "obs_id": int(frame.obs_id), "binning": "1x1", "readout": self.det.mode, "slit": "", "lamps": "",
                "mjd_obs": float(frame.mjd), "filter": frame.acq_filter or ""}

    def write_truth(self):
        self.det.write_truth(self.truth_dir)
        fits.PrimaryHDU(self.illumination).writeto(self.truth_dir / ILLUMINATION, overwrite=True)
        meta = {"description": "synthetic reference catalogue (AB magnitudes) of the stars in and around the "
                               "acquisition-camera fields, in the manner of an ATLAS Refcat2 extract",
                "epoch": 2000.0}
        for folder in (self.truth_dir, self.raw_dir):
            cat = self.catalogue.copy()
            cat.meta.update(meta)
            cat.write(folder / REFCAT, format="ascii.ecsv", overwrite=True)
        if self.star_rows:
            cols = {k: np.concatenate([r[k] for r in self.star_rows]) for k in self.star_rows[0]}
            stars = Table(cols)
            stars.meta.update({"coordinates": "0-based pixels, x along NAXIS1",
                               "electrons": "total electrons of the star at the field centre (illumination 1)"})
            stars.write(self.truth_dir / STARS, format="ascii.ecsv", overwrite=True)
        info = {"seed": self.seed, "scenario": self.scenario, "night": self.night,
                "field": self.field, "illumination_file": ILLUMINATION, "reference_catalogue": REFCAT,
                "stars_file": STARS, "pixel_scale_arcsec": self.true_scale, "rotation_deg": self.rotation,
                "moffat_beta": MOFFAT_BETA,
                "zero_points_above_atmosphere": {f: v[0] for f, v in FILTERS.items()},
                "extinction_mag_per_airmass": {f: v[1] for f, v in FILTERS.items()},
                "sky_mag_per_arcsec2": {f: v[2] for f, v in FILTERS.items()},
                "zero_point_definition": "m = zero_point - 2.5 log10(electrons / exptime) at the field centre",
                "frames": self.frame_truth}
        (self.truth_dir / TRUTH_JSON).write_text(json.dumps(info, indent=1))


def simulate_acq_night(raw_dir, truth_dir, *, night, seed=0, scenario="nominal", size="full", rng=None,
                       filters=None, rotation_deg=None, pointing_offset_arcsec=None, science_frames=None):
    """Simulate a night of the acquisition camera.

    Parameters
    ----------
    raw_dir, truth_dir : str or Path
        Where the raw frames (and a copy of the reference catalogue) and the truth go.
    night : str
        'YYYY-MM-DD', the date on which the night starts.
    seed : int
        Seeds the detector and, without ``rng``, everything else.
    scenario : str
        'nominal' or 'extreme' (the detector's heavy cosmic rays and bad columns).
    size : str
        'full': 10 biases, 5 darks per science exposure time, 5 sky flats per filter
        in all 7 filters, 2 star fields in every filter; 'small': 3 biases, 3 darks,
        3 sky flats in g and r, one star field in g and r.
    rng : numpy.random.Generator, optional
        Source of the scene and frame noise (default: seeded from ``seed``).
    filters : sequence of str, optional
        The filters of the sky flats and star fields (default: set by ``size``).
    rotation_deg : float, optional
        Rotation of the true WCS (default: drawn within +-0.5 deg).
    pointing_offset_arcsec : (float, float), optional
        Offset of the true pointing from the nominal one, (east, north) in arcsec
        (default: drawn per frame, 4 arcsec rms on each axis).
    science_frames : int, optional
        Science exposures per filter and field (default: set by ``size``).

    Returns
    -------
    list of dict
        One manifest row per raw file: ``file, arm, kind, dpr_catg, dpr_type, dpr_tech,
        tag, exptime, obs_id, binning, readout, slit, lamps, mjd_obs, filter``.
    """
    sim = _AcqNight(raw_dir, truth_dir, night, seed, scenario, size, rng, filters, rotation_deg,
                    pointing_offset_arcsec, science_frames)
    rows = [sim.write(frame) for frame in sim.plan()]
    sim.write_truth()
    log.info("simulated %d acquisition-camera frames into %s", len(rows), raw_dir)
    return rows
