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

- given the night's spectroscopic OBs, acquisition images open each of them
  (same OB id, their own template ``SOXS_spec_acq``, DPR ``SCIENCE/OBJECT/IMAGE``
  as the contract types imaging science): the target itself, rendered from its
  injected spectrum, sits on the slit position, taken to be the image centre
  (``CRPIX`` of the true WCS, whose ``CRVAL`` is the target), among field stars
  that the reference catalogue holds. The target is not in the catalogue. Each
  exposure is the longest (up to 60 s) that keeps the target's peak below 70 %
  of the full well.

Truth files (in the truth folder): ``acq.json`` (field circle, zero points,
extinction, sky, per star-field frame (``frames``) the true WCS, airmass, seeing
and zero point, and the same per acquisition image (``acquisitions``) with the
target's position, AB magnitude and electrons), ``acq_stars.ecsv`` (each star of
each of these frames with its true pixel position), ``acq_targets.ecsv`` (one row
per acquisition image: the target's true position, AB magnitude through the
frame's filter and electrons), ``acq_illumination.fits`` (the vignetting map, 1
at the field centre), ``refcat.ecsv`` and the detector truth
(``detector_ACQ_1x1_default.json`` with its response and bad-pixel maps).

AB magnitudes of the targets are synthetic photometry of their injected
top-of-atmosphere spectra through the bundled filter curves
(:mod:`soxspipe.commonutils.synthetic_photometry`).

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
from .header import raw_header, sky_position, write_raw, zenith_pointing
from .night import ACQ_MAX_EXPTIME, ACQ_OVERHEAD, ACQ_TPL_ID, acquisition_filters, night_mjd
from .spectra import ab_magnitudes, source_flux

log = logging.getLogger(__name__)

ARM = "ACQ"
REFCAT = "refcat.ecsv"
STARS = "acq_stars.ecsv"
TARGETS_FILE = "acq_targets.ecsv"
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
_OVERHEAD = ACQ_OVERHEAD  # s between exposures
_ARM_DELAY = 2.7  # s: ACQ frames never start on the same millisecond as a spectrograph frame
_STARS_PER_FIELD = 200
# acquisition fields are richer (low galactic latitude): the short exposures of bright
# standards still show enough catalogue stars for the astrometry and the zero point
_ACQ_STARS_PER_FIELD = 400
# no catalogue star within this distance of an acquisition target (arcsec)
_TARGET_CLEARANCE_ARCSEC = 10.0
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


def _separation_arcsec(ra, dec, ra0, dec0):
    """Angular distance (arcsec) of (ra, dec) from (ra0, dec0), all in degrees."""
    ra, dec, ra0, dec0 = (np.radians(v) for v in (ra, dec, ra0, dec0))
    cos_d = np.sin(dec) * np.sin(dec0) + np.cos(dec) * np.cos(dec0) * np.cos(ra - ra0)
    return np.degrees(np.arccos(np.clip(cos_d, -1.0, 1.0))) * 3600.0


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


def moffat_peak_fraction(fwhm_px, beta=MOFFAT_BETA):
    """Fraction of a Moffat source's flux in its central pixel (the profile's peak value)."""
    alpha = fwhm_px / (2.0 * np.sqrt(2 ** (1.0 / beta) - 1.0))
    return (beta - 1) / (np.pi * alpha**2)


def acquisition_exptime(magnitude, acq_filter, airmass, fwhm_px, full_well_e, fill=0.7):
    """Longest acquisition exposure (s) that keeps a source's peak below ``fill`` of the full well.

    At most :data:`~soxspipe.simulator.night.ACQ_MAX_EXPTIME`, rounded down to 0.1 s
    (at least 0.1 s).
    """
    peak_rate = 10 ** (-0.4 * (magnitude - zero_point(acq_filter, airmass))) * moffat_peak_fraction(fwhm_px)
    t = np.floor(fill * full_well_e / peak_rate * 10.0) / 10.0
    return float(min(ACQ_MAX_EXPTIME, max(0.1, t)))


# --------------------------------------------------------------------------- the night
class _AcqNight:
    """Plans, renders and writes the camera's frames of one night."""

    def __init__(self, raw_dir, truth_dir, night, seed, scenario, size, rng, filters=None, rotation_deg=None,
                 pointing_offset_arcsec=None, science_frames=None, blocks=None, acq_filters=None):
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
        self.blocks = list(blocks or [])
        self.acq_filters = tuple(acq_filters) if acq_filters else acquisition_filters(size)
        # the acquisition fields draw from their own generator: the rest of the night stays as it was
        self.acq_rng = np.random.default_rng([seed, 2, 9])
        self.names = set()
        self.frame_truth = {}
        self.acquisition_truth = {}
        self.star_rows = []
        self.target_rows = []
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
            start = self.base + 0.40 + 0.035 * k  # before the spectroscopic OBs
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
        self.field_catalogues = catalogue
        acquisitions = self._plan_acquisitions(first_id=1 + sum(len(c) for c in catalogue))
        self.catalogue = vstack(self.field_catalogues)

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
        return planned + acquisitions

    def _plan_acquisitions(self, first_id):
        """Acquisition images at the start of each spectroscopic OB; adds their fields' catalogues."""
        frames = []
        full_well = self.spec.saturation_adu * self.spec.gain("default")
        for block in self.blocks:
            head = block.exposures[0].header
            ra, dec = float(head["ra"]), float(head["dec"])
            cat = synthetic_catalogue(ra, dec, _ACQ_STARS_PER_FIELD, _CATALOGUE_RADIUS_ARCMIN, self.acq_rng,
                                      first_id=first_id)
            first_id += _ACQ_STARS_PER_FIELD
            distance = _separation_arcsec(np.asarray(cat["ra"]), np.asarray(cat["dec"]), ra, dec)
            self.field_catalogues.append(cat[distance > _TARGET_CLEARANCE_ARCSEC])
            mags = ab_magnitudes(source_flux(block.scene), self.acq_filters)
            seeing = float(block.seeing)
            group, mjd = [], block.start_mjd + _ARM_DELAY / 86400.0
            for f in self.acq_filters:
                airmass = sky_position(ra, dec, mjd)[3]
                t = acquisition_exptime(mags[f], f, airmass, seeing / self.true_scale, full_well)
                group.append(_Frame("imaging_science", ("SCIENCE", "OBJECT", "IMAGE"), t, mjd=mjd, acq_filter=f,
                                    obs_id=block.obs_id,
                                    scene={"type": "acquisition", "catalogue": len(self.field_catalogues) - 1,
                                           "target": block.target, "mag": mags[f], "seeing": seeing,
                                           "ab_magnitudes": mags},
                                    header={"object": block.target, "obs_targ_name": block.target, "ra": ra,
                                            "dec": dec, "obs_id": block.obs_id, "obs_name": block.name,
                                            "tpl_id": ACQ_TPL_ID, "seeing_start": round(seeing, 3),
                                            "seeing_end": round(seeing, 3)}))
                mjd += (t + _OVERHEAD) / 86400.0
            tpl_start = Time(group[0].mjd, format="mjd", scale="utc").isot[:19]
            for i, fr in enumerate(group):
                fr.header.update({"tpl_start": tpl_start, "tpl_nexp": len(group), "tpl_expno": i + 1})
            frames += group
        return frames

    def _seeing(self, frame):
        """Seeing FWHM (arcsec) in the frame's filter, scaling as wavelength^-0.2."""
        return self.seeing * (FILTERS[frame.acq_filter][3] / 500.0) ** -0.2

    # -- rendering -----------------------------------------------------------------------
    def electrons(self, frame, header):
        """Noise-free electrons of ``frame``, its truth entry and its star list (None where there is none)."""
        kind = frame.scene.get("type")
        if kind == "flat":
            return self.illumination * np.float32(frame.scene["level"]), None, None
        if kind not in ("stars", "acquisition"):
            return None, None, None
        f = frame.acq_filter
        airmass = 0.5 * (header_value(header, "airmass_start") + header_value(header, "airmass_end"))
        zp = zero_point(f, airmass)
        ra0, dec0 = frame.header["ra"], frame.header["dec"]
        if kind == "stars":
            seeing = header_value(header, "seeing_start")
            offset = self.rng.normal(0, _POINTING_RMS_ARCSEC, 2)
            if self.pointing_offset is not None:
                offset = self.pointing_offset
        else:  # the target sits on the slit, at the image centre
            seeing, offset = frame.scene["seeing"], np.zeros(2)
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
        src_x, src_y, src_e = x, y, stars_e
        if kind == "acquisition":
            tx, ty = (float(v) for v in wcs.world_to_pixel_values(ra0, dec0))
            target_e = 10 ** (-0.4 * (frame.scene["mag"] - zp)) * frame.exptime
            src_x, src_y, src_e = np.append(x, tx), np.append(y, ty), np.append(stars_e, target_e)
        image = moffat_image(self.shape, src_x, src_y, src_e, fwhm_px)
        image += np.float32(sky_rate * frame.exptime)
        image *= self.illumination
        on_chip = (x >= -0.5) & (x < self.shape[1] - 0.5) & (y >= -0.5) & (y < self.shape[0] - 0.5)
        cx, cy = self.field["centre_px"]
        in_field = np.hypot(x - cx, y - cy) < self.field["radius_px"] - 3
        truth = {"filter": f, "field": frame.scene.get("field", frame.scene.get("target")),
                 "airmass": round(float(airmass), 5),
                 "seeing_arcsec": seeing, "fwhm_px": round(float(fwhm_px), 4), "zero_point": round(float(zp), 5),
                 "sky_e_per_s_per_px": round(float(sky_rate), 5),
                 "nominal_pointing": [ra0, dec0],
                 "pointing_offset_arcsec": [round(float(o), 4) for o in offset],
                 "wcs": {k: (v if isinstance(v, str) else float(v)) for k, v in wcs.to_header().items()
                         if k in ("CTYPE1", "CTYPE2", "CRVAL1", "CRVAL2", "CRPIX1", "CRPIX2")}}
        truth["wcs"].update({f"CD{i}_{j}": float(wcs.wcs.cd[i - 1, j - 1]) for i in (1, 2) for j in (1, 2)})
        if kind == "acquisition":
            truth.update({"obs_id": frame.obs_id, "target": frame.scene["target"], "exptime": frame.exptime,
                          "target_x": round(tx, 4), "target_y": round(ty, 4), "target_mag": frame.scene["mag"],
                          "target_electrons": round(float(target_e), 3),
                          "target_illumination": float(self.illumination[int(round(ty)), int(round(tx))]),
                          "ab_magnitudes": frame.scene["ab_magnitudes"]})
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
        acquisition = frame.scene.get("type") == "acquisition"
        if truth is not None:
            (self.acquisition_truth if acquisition else self.frame_truth)[name] = truth
            self.star_rows.append({"file": np.full(len(stars["id"]), name), **stars})
        if acquisition:
            self.target_rows.append({"file": name, "obs_id": frame.obs_id, "target": truth["target"],
                                     "filter": truth["filter"], "exptime": frame.exptime, "mjd_obs": frame.mjd, "airmass": truth["airmass"],
                                     "seeing_arcsec": truth["seeing_arcsec"], "zero_point": truth["zero_point"],
                                     "ra": frame.header["ra"], "dec": frame.header["dec"], "x": truth["target_x"],
                                     "y": truth["target_y"], "ab_mag": truth["target_mag"],
                                     "electrons": truth["target_electrons"],
                                     "illumination": truth["target_illumination"]})
        row = {"file": name, "arm": ARM, "kind": frame.kind, "dpr_catg": frame.dpr[0], "dpr_type": frame.dpr[1],
               "dpr_tech": frame.dpr[2], "tag": f"{frame.dpr[1]}_{ARM}", "exptime": float(frame.exptime),
               "obs_id": int(frame.obs_id), "binning": "1x1", "readout": self.det.mode, "slit": "", "lamps": "",
               "mjd_obs": float(frame.mjd), "filter": frame.acq_filter or ""}
        if acquisition:
            row["target"] = truth["target"]
        return row

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
        if self.target_rows:
            targets = Table({k: [r[k] for r in self.target_rows] for k in self.target_rows[0]})
            targets.meta.update({"coordinates": "0-based pixels, x along NAXIS1",
                                 "ab_mag": "AB magnitude of the injected top-of-atmosphere spectrum through the "
                                           "bundled filter curve",
                                 "electrons": "total electrons of the target at the field centre (illumination 1)",
                                 "slit_position": "the image centre, where the true WCS puts the target"})
            targets.write(self.truth_dir / TARGETS_FILE, format="ascii.ecsv", overwrite=True)
        info = {"seed": self.seed, "scenario": self.scenario, "night": self.night,
                "field": self.field, "illumination_file": ILLUMINATION, "reference_catalogue": REFCAT,
                "stars_file": STARS, "pixel_scale_arcsec": self.true_scale, "rotation_deg": self.rotation,
                "moffat_beta": MOFFAT_BETA,
                "zero_points_above_atmosphere": {f: v[0] for f, v in FILTERS.items()},
                "extinction_mag_per_airmass": {f: v[1] for f, v in FILTERS.items()},
                "sky_mag_per_arcsec2": {f: v[2] for f, v in FILTERS.items()},
                "zero_point_definition": "m = zero_point - 2.5 log10(electrons / exptime) at the field centre",
                "frames": self.frame_truth, "acquisitions": self.acquisition_truth,
                "acquisition_targets_file": TARGETS_FILE if self.target_rows else None}
        (self.truth_dir / TRUTH_JSON).write_text(json.dumps(info, indent=1))


def simulate_acq_night(raw_dir, truth_dir, *, night, seed=0, scenario="nominal", size="full", rng=None,
                       filters=None, rotation_deg=None, pointing_offset_arcsec=None, science_frames=None,
                       blocks=None, acq_filters=None):
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
    blocks : sequence of ObservingBlock, optional
        The night's spectroscopic OBs (:func:`soxspipe.simulator.night.plan_blocks`):
        each opens with acquisition images of its target (default: none).
    acq_filters : sequence of str, optional
        Filters of those acquisition images, one frame each (default: r for a small
        night, g r i z for a full one).

    Returns
    -------
    list of dict
        One manifest row per raw file: ``file, arm, kind, dpr_catg, dpr_type, dpr_tech,
        tag, exptime, obs_id, binning, readout, slit, lamps, mjd_obs, filter`` (and
        ``target`` for acquisition images).
    """
    sim = _AcqNight(raw_dir, truth_dir, night, seed, scenario, size, rng, filters, rotation_deg,
                    pointing_offset_arcsec, science_frames, blocks, acq_filters)
    rows = [sim.write(frame) for frame in sim.plan()]
    sim.write_truth()
    log.info("simulated %d acquisition-camera frames into %s", len(rows), raw_dir)
    return rows
