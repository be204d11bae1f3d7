"""soxs_image: calibrated acquisition-camera images.

Science frames of one filter and one observation block are:

1. detrended (``MASTER_BIAS``, ``MASTER_DARK`` scaled to the exposure time where
   given, ``MASTER_FLAT_ACQ_<filter>``), cleaned of cosmic rays (astroscrappy),
   registered on their stars and stacked;
2. searched for sources (photutils segmentation, windowed centroids); the FWHM
   is measured on the brightest unflagged isolated stars;
3. matched to the reference catalogue (``REF_CAT``, a FITS or ECSV table with
   ``ra``, ``dec`` and magnitudes) from the nominal pointing, and given a TAN WCS
   fitted with outliers clipped;
4. measured in apertures with a local sky annulus and, in the filters the
   catalogue calibrates (g r i z), given a zero point against the catalogue with
   the filter's extinction at the frame's airmass. Other filters (u, y, V) get
   astrometry only: ``FLUXCAL = 'UNCALIBRATED'`` and QC ``PHOTCAL = 0``.

Products: ``IMAGE_ACQ_<filter>`` (``FLUX``/``QUAL``/``ERRS`` in electrons, with
the WCS) and ``SOURCE_CAT_ACQ_<filter>`` (ra, dec, x, y, mag, mag_err, flags and
the matched catalogue star), with QC and a quicklook PNG.
"""

import logging

import astroscrappy
import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import Table
from scipy import ndimage

from ..commonutils.astrometry import match_offset, nearest_pairs, nominal_wcs, solve_wcs
from ..commonutils.detectors import detector
from ..commonutils.errors import DataError
from ..commonutils.imaging_plots import astrometry_quicklook
from ..commonutils.keywords import header_value
from ..commonutils.photometry import aperture_correction, aperture_fluxes, fit_zero_point, limiting_magnitude
from ..commonutils.sources import detect, isolated, measure_fwhm
from ._base_recipe_ import Product, _base_recipe_

log = logging.getLogger(__name__)

#: source flags (bits) of the source catalogue
FLAG_PIXELS = 1  # touches a saturated, bad or cosmic-ray pixel, or the field's edge
FLAG_CROWDED = 2  # a neighbour within the isolation radius
FLAG_APERTURE = 4  # masked pixels in the aperture
FLAG_ZP_REJECTED = 8  # matched, but clipped from the zero point


def read_reference_catalogue(path):
    """Read a reference catalogue (FITS or ECSV table): columns ``ra``, ``dec`` (deg) and magnitudes.

    The ``ra``, ``dec`` and ``id`` column names are matched without regard to case;
    magnitude columns are named by their filter (``g``, ``r``, ``V``...).

    Raises
    ------
    DataError
        Unreadable, or without ra/dec.
    """
    try:
        table = Table.read(path, format="ascii.ecsv") if str(path).lower().endswith(".ecsv") else Table.read(path)
    except Exception as exc:  # astropy raises many kinds for a bad file
        raise DataError(f"{path}: the reference catalogue cannot be read as a FITS or ECSV table ({exc})") from None
    names = {c.lower(): c for c in table.colnames}
    if "ra" not in names or "dec" not in names:
        raise DataError(f"{path}: the reference catalogue has no ra/dec columns (it has {', '.join(table.colnames)})")
    for lower in ("ra", "dec", "id"):
        if lower in names and names[lower] != lower:
            table.rename_column(names[lower], lower)
    if len(table) == 0:
        raise DataError(f"{path}: the reference catalogue is empty")
    return table


class soxs_image(_base_recipe_):
    """Reduce acquisition-camera science frames of one filter into ``IMAGE_ACQ_<filter>`` and its source catalogue."""

    name = "image"
    raw_kinds = ("imaging_science",)
    calibrations = {"MASTER_BIAS": "has_bias", "MASTER_DARK": False, "MASTER_FLAT": True}
    static_inputs = {"REF_CAT": True}
    same_filter = True

    def reduce(self):
        p = self.params
        acq_filter = str(self.raw_frames[0].acq_filter or "").strip()
        if not acq_filter:
            raise DataError(f"{self.raw_frames[0].path}: no filter keyword; cannot calibrate the image")
        obs = {f.obs_id for f in self.raw_frames}
        if len(obs) > 1:
            raise DataError(f"{self.sof}: frames of {len(obs)} observation blocks ({', '.join(map(str, sorted(obs)))}); "
                            f"give the frames of one OB per SOF")
        catalogue = read_reference_catalogue(self.static_paths["REF_CAT"])
        image, exptime = self._detrended_stack(p)
        det = detector(self.arm)
        header = image.meta

        # -- sources
        flags_mask = image.mask
        bad = image.mask & ~self._cosmics
        fwhm_guess = p["fwhm-guess-arcsec"] / det.pixel_scale_arcsec
        sources, sky, sky_sigma = detect(image.data, bad, fwhm=fwhm_guess, nsigma=p["detect-sigma"],
                                         npixels=p["detect-npixels"], flag_mask=flags_mask)
        if len(sources) < p["min-sources"]:
            raise DataError(f"{self.raw_frames[0].path}: only {len(sources)} sources detected (at least "
                            f"{p['min-sources']} needed): a blank or clouded frame, or a wrong flat/bias")
        lone = isolated(sources.x, sources.y, p["isolation-fwhm"] * fwhm_guess)
        fwhm_stars = np.nonzero(lone & ~sources.flagged)[0][: p["fwhm-stars"]]
        fwhm_each = measure_fwhm(image.data - np.float32(sky), sources.x[fwhm_stars], sources.y[fwhm_stars])
        fwhm = float(np.nanmedian(fwhm_each)) if np.isfinite(fwhm_each).any() else float("nan")
        if not np.isfinite(fwhm):
            raise DataError(f"{self.raw_frames[0].path}: none of the {len(sources)} sources detected is an isolated "
                            f"unsaturated star to measure the FWHM on: a blank or clouded frame, or a wrong flat/bias")
        log.info("FWHM %.2f px (%.2f arcsec) from %d stars", fwhm, fwhm * det.pixel_scale_arcsec, int(np.isfinite(fwhm_each).sum()))

        # -- astrometry
        ra0, dec0 = header_value(header, "ra", None), header_value(header, "dec", None)
        if ra0 is None or dec0 is None:
            raise DataError(f"{self.raw_frames[0].path}: no nominal pointing (RA/DEC) in the header; cannot solve the astrometry")
        guess = nominal_wcs(ra0, dec0, det.pixel_scale_arcsec, image.shape)
        rank_band = acq_filter if acq_filter in catalogue.colnames else next(
            (b for b in ("r", "g", "i", "z", "v", "y", "u") if b in catalogue.colnames), None)
        rank = np.asarray(catalogue[rank_band], float) if rank_band else np.zeros(len(catalogue))
        rank = np.where(np.isfinite(rank), rank, 99.0)
        xy = np.column_stack([sources.x, sources.y])
        try:
            solution = solve_wcs(
                xy, catalogue["ra"], catalogue["dec"], rank, guess, image.shape,
                max_offset_arcsec=p["max-offset-arcsec"], max_rotation_deg=p["max-rotation-deg"],
                rotation_step_deg=p["rotation-step-deg"], bin_px=p["vote-bin-px"], n_pattern=p["pattern-stars"],
                match_radius_px=tuple(p["match-radius-px"]), clip_sigma=p["astrometry-clip-sigma"],
                iterations=p["astrometry-iterations"], min_matches=p["min-matches"],
                max_rms_arcsec=p["max-rms-arcsec"])
        except DataError as exc:
            raise type(exc)(f"{self.raw_frames[0].path}: astrometry failed: {exc}") from None
        wcs = solution.wcs
        ra, dec = wcs.all_pix2world(sources.x, sources.y, 0)
        cat_index = self._match_all(wcs, sources, catalogue, radius_arcsec=p["match-radius-px"][1] * det.pixel_scale_arcsec)

        # -- photometry
        radius = p["aperture-fwhm"] * fwhm
        annulus = tuple(a * fwhm for a in p["annulus-fwhm"])
        phot = aperture_fluxes(image.data, image.uncertainty.array, bad, sources.x, sources.y, radius, annulus)
        lone = isolated(sources.x, sources.y, p["isolation-fwhm"] * fwhm)
        flags = np.where(sources.flagged, FLAG_PIXELS, 0) | np.where(lone, 0, FLAG_CROWDED) | np.where(
            phot.masked_fraction > 1e-3, FLAG_APERTURE, 0)
        snr = phot.flux / np.where(phot.flux_err > 0, phot.flux_err, np.inf)
        bright = np.nonzero((flags == 0) & (snr > 3 * p["zp-min-snr"]))[0][: p["fwhm-stars"]]
        big = aperture_fluxes(image.data, image.uncertainty.array, bad, sources.x[bright], sources.y[bright],
                              p["total-aperture-fwhm"] * fwhm, annulus)
        apcor, apcor_err = aperture_correction(phot.flux[bright], big.flux)
        rate = phot.flux * apcor / exptime
        rate_err = phot.flux_err * apcor / exptime
        with np.errstate(divide="ignore", invalid="ignore"):
            inst_mag = np.where(rate > 0, -2.5 * np.log10(rate), np.nan)
            mag_err = np.where(rate > 0, 1.0857 * rate_err / rate, np.nan)

        airmass = self._airmass(header)
        cards = {}
        zp_frame = None
        reason = self._calibration_problem(acq_filter, catalogue, p)
        if reason is None:
            matched = cat_index >= 0
            use = matched & (flags == 0) & (snr > p["zp-min-snr"])
            cat_mag = np.full(len(sources), np.nan)
            cat_mag[matched] = np.asarray(catalogue[acq_filter], float)[cat_index[matched]]
            try:
                zp = fit_zero_point(np.where(use, rate, np.nan), rate_err, np.where(use, cat_mag, np.nan),
                                    clip_sigma=p["zp-clip-sigma"], min_stars=p["zp-min-stars"])
            except DataError as exc:
                log.warning("%s", exc)
                reason = "too few stars for a zero point"
            else:
                zp_frame = zp.value
                flags |= np.where(use & ~zp.used, FLAG_ZP_REJECTED, 0)
                k = p["extinction"][acq_filter]
                zp_error = float(np.hypot(zp.error, 1.0857 * apcor_err / apcor if np.isfinite(apcor_err) else 0.0))
                self.qc.add("ZP", zp.value + k * airmass, "mag", "zero point, airmass 0")
                self.qc.add("ZP ERR", zp_error, "mag", "zero point error")
                self.qc.add("ZP FRAME", zp.value, "mag", "zero point, this airmass")
                self.qc.add("ZP NSTARS", zp.n_used, "", "stars in the ZP")
                self.qc.add("ZP SCATTER", zp.scatter, "mag", "stars' ZP scatter")
                cards["photzp"] = (round(zp.value + 2.5 * np.log10(exptime), 5), "mag = PHOTZP - 2.5log10(FLUX sum [e])")
                cards["fluxcal"] = ("ABSOLUTE", f"zero point from REF_CAT {acq_filter}")
        self.qc.add("PHOTCAL", 0 if zp_frame is None else 1, "", "1 ZP measured, 0 none")
        if zp_frame is None:
            log.warning("no photometric calibration of the %s image: %s", acq_filter, reason)
            cards["fluxcal"] = ("UNCALIBRATED", reason[:46])
            mag = inst_mag
        else:
            mag = inst_mag + zp_frame
            self.qc.add("LIMMAG", limiting_magnitude(zp_frame, sky_sigma, radius, exptime=exptime, aperture_corr=apcor),
                        "mag", "5-sigma point source")

        self.qc.add("NFRAMES", len(self.raw_frames), "", "frames stacked")
        self.qc.add("NSOURCES", len(sources), "", "sources detected")
        self.qc.add("ASTROM RMS", solution.rms_arcsec, "arcsec", "WCS residual rms")
        self.qc.add("ASTROM NMATCH", solution.n_matched, "", "stars in the WCS fit")
        self.qc.add("ASTROM ROTATION", solution.rotation_deg, "deg", "north from +y")
        self.qc.add("ASTROM OFFSET RA", solution.offset_arcsec[0], "arcsec", "east of nominal")
        self.qc.add("ASTROM OFFSET DEC", solution.offset_arcsec[1], "arcsec", "north of nominal")
        self.qc.add("PIXSCALE", solution.scale_arcsec, "arcsec", "fitted plate scale")
        self.qc.add("FWHM", fwhm * solution.scale_arcsec, "arcsec", "median, isolated stars")
        self.qc.add("APCOR", apcor, "", "to total flux")
        self.qc.add("SKY", sky / exptime, "e/s/px", "sky level")

        image.wcs = wcs
        table = Table({"ra": ra, "dec": dec, "x": sources.x, "y": sources.y, "mag": mag, "mag_err": mag_err,
                       "flux": rate, "flux_err": rate_err, "flags": flags.astype(np.int16),
                       "cat_id": np.where(cat_index >= 0, np.asarray(self._catalogue_ids(catalogue))[np.maximum(cat_index, 0)], -1),
                       "cat_ra": np.where(cat_index >= 0, np.asarray(catalogue["ra"], float)[np.maximum(cat_index, 0)], np.nan),
                       "cat_dec": np.where(cat_index >= 0, np.asarray(catalogue["dec"], float)[np.maximum(cat_index, 0)], np.nan)})
        table["ra"].unit = table["dec"].unit = table["cat_ra"].unit = table["cat_dec"].unit = "deg"
        table["x"].unit = table["y"].unit = "pix"
        table["mag"].unit = table["mag_err"].unit = "mag"

        catg = f"IMAGE_{self.arm}_{acq_filter}"
        title = f"{catg}: {solution.n_matched} stars, rms {solution.rms_arcsec:.3f} arcsec"
        plot = ("quicklook", lambda path: astrometry_quicklook(
            image.data, image.mask, x=sources.x, y=sources.y, matched=solution.source_index,
            residuals=solution.residuals, title=title, path=path))
        return [Product(catg, image, pro_type="REDUCED", pro_tech="IMAGE", header_cards=cards, plots=[plot]),
                Product(f"SOURCE_CAT_{self.arm}_{acq_filter}", table, pro_type="REDUCED", pro_tech="IMAGE",
                        header_cards=dict(cards))]

    # -- steps ---------------------------------------------------------------------

    def _detrended_stack(self, p):
        """Detrend, flat-field and clean each frame; register and stack several. Returns (CCDData, exptime)."""
        bias, dark, flat = (self.calibration(c) for c in ("MASTER_BIAS", "MASTER_DARK", "MASTER_FLAT"))
        frames, cosmics = [], []
        for raw in self.raw_frames:
            ccd = self.detrend(raw, bias, dark)
            if flat.data.shape != ccd.data.shape:
                raise DataError(f"{self.calibration_frames['MASTER_FLAT'].path}: the master flat is "
                                f"{flat.data.shape[::-1]} px, the frame {ccd.data.shape[::-1]}; use a flat of the same binning")
            norm = np.where(flat.mask, np.float32(1), flat.data.astype(np.float32))
            data = ccd.data / norm
            error = ccd.uncertainty.array / norm
            mask = ccd.mask | flat.mask
            ron = float(detector(self.arm).read_noise(raw.readout))
            cr, clean = astroscrappy.detect_cosmics(data, inmask=mask, gain=1.0, readnoise=ron, sigclip=p["cosmic-sigma"],
                                                    objlim=p["cosmic-objlim"], niter=p["cosmic-iterations"])
            log.info("%s: %d cosmic-ray pixels", raw.path, int(cr.sum()))
            frames.append(CCDData(clean.astype(np.float32), unit=ccd.unit, mask=mask | cr, meta=ccd.meta,
                                  uncertainty=StdDevUncertainty(error.astype(np.float32), unit=ccd.unit)))
            cosmics.append(cr)
        exptime = float(np.mean([f.exptime or 0.0 for f in self.raw_frames]))
        if not exptime > 0:
            raise DataError(f"{self.raw_frames[0].path}: no exposure time; cannot calibrate the image")
        if len(frames) == 1:
            self._cosmics = cosmics[0]
            return frames[0], exptime
        frames = self._register(frames, p)
        self._cosmics = np.zeros(frames[0].data.shape, bool)
        return self.combine(frames), exptime

    def _register(self, frames, p):
        """Shift frames onto the first by the median offset of their common stars (bilinear resampling)."""
        det = detector(self.arm)
        fwhm = p["fwhm-guess-arcsec"] / det.pixel_scale_arcsec
        positions = []
        for f in frames:
            src, _, _ = detect(f.data, f.mask, fwhm=fwhm, nsigma=2 * p["detect-sigma"], npixels=p["detect-npixels"])
            positions.append(np.column_stack([src.x, src.y])[:100])
        out = [frames[0]]
        for f, xy in zip(frames[1:], positions[1:]):
            dx, dy, n = match_offset(positions[0], xy, max_offset=p["max-offset-arcsec"] / det.pixel_scale_arcsec)
            log.info("registered a frame by (%.2f, %.2f) px on %d stars", dx, dy, n)
            shift = (dy, dx)
            data = ndimage.shift(f.data, shift, order=1, mode="constant", cval=0.0)
            error = ndimage.shift(f.uncertainty.array, shift, order=1, mode="constant", cval=0.0)
            mask = ndimage.shift(f.mask.astype(np.float32), shift, order=1, mode="constant", cval=1.0) > 0
            out.append(CCDData(data, unit=f.unit, mask=mask, meta=f.meta,
                               uncertainty=StdDevUncertainty(error, unit=f.unit)))
        return out

    @staticmethod
    def _match_all(wcs, sources, catalogue, radius_arcsec):
        """Index of the catalogue star within ``radius_arcsec`` of each source (-1: none), one to one."""
        cx, cy = wcs.all_world2pix(np.asarray(catalogue["ra"], float), np.asarray(catalogue["dec"], float), 0)
        scale = float(np.sqrt(abs(np.linalg.det(wcs.pixel_scale_matrix)))) * 3600.0
        src, cat, _ = nearest_pairs(np.column_stack([sources.x, sources.y]), np.column_stack([cx, cy]),
                                     radius_arcsec / scale)
        index = np.full(len(sources), -1)
        index[src] = cat
        return index

    @staticmethod
    def _catalogue_ids(catalogue):
        return catalogue["id"] if "id" in catalogue.colnames else np.arange(len(catalogue))

    @staticmethod
    def _calibration_problem(acq_filter, catalogue, p):
        """Why the frame cannot get a zero point (None when it can)."""
        if acq_filter not in p["calibrated-filters"]:
            return f"filter {acq_filter} not calibrated: astrometry only"
        if acq_filter not in catalogue.colnames:
            return f"REF_CAT has no {acq_filter} magnitudes: astrometry only"
        if acq_filter not in p["extinction"]:
            return f"no extinction for {acq_filter}: astrometry only"
        return None

    @staticmethod
    def _airmass(header):
        values = [header_value(header, k, None) for k in ("airmass_start", "airmass_end")]
        values = [float(v) for v in values if v is not None]
        return float(np.mean(values)) if values else 1.0
