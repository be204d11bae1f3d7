"""The science recipes' shared machinery: ``soxs_stare``, ``soxs_nod`` and ``soxs_offset`` subclass it.

A science recipe reduces the frames of one OB of one arm (``science``,
``flux_standard`` or ``telluric_standard`` frames: the product prefix ``SCI``,
``STD_FLUX`` or ``STD_TELL`` follows from the frames' kind) with a
``MASTER_BIAS`` (VIS) or ``MASTER_DARK``, ``MASTER_FLAT``, ``ORDER_TAB`` (with
the order edges, from ``mflat``), ``DISP_TAB`` (the full solution, from
``spat_solution``) and optionally ``DISP_IMAGE`` (else the per-pixel maps are
computed from the ``DISP_TAB`` as ``spat_solution`` would).

:meth:`_science_recipe_.reduce` runs, for every recipe:

1. **Detrending** (:meth:`~_science_recipe_.detrended_frames`), frame by frame:
   prepared with the ``MASTER_BIAS``; the ``MASTER_DARK`` subtracted (one of
   another exposure time only with the ``dark-scaling`` setting); cosmic rays
   flagged with L.A.Cosmic (:mod:`~soxspipe.commonutils.cosmics`) when
   :meth:`~_science_recipe_.cosmics_per_frame` says so (by default when fewer than
   ``cosmic-stack-min`` frames will be stacked: more are clipped across frames);
   the scattered light, modelled between the orders of the ``ORDER_TAB``,
   subtracted; divided by the ``MASTER_FLAT``; bad pixels of the frame and the
   calibrations flagged.
2. **Sky removal**: the subclass's hook, below.
3. **Object and spectra**, for every sky-free frame: the object found along the
   slit in all orders together and in each (:mod:`~soxspipe.commonutils.science_objects`),
   traced, and extracted (optimal and boxcar, :mod:`~soxspipe.commonutils.science_extract`);
   an object that is not found is extracted where it is expected (else at the
   slit centre) and flagged (QC ``OBJ FOUND`` = 0, ``QUAL``).
4. **Combination** of the frames' spectra and 2D images (hooks, below; a single
   frame is taken as it is).
5. **Merging** onto one grid per arm (``merge-step``), **rectification** of every
   order onto a (wavelength, slit) grid, the products, QC and the quicklook PDF.

The hook
--------
A subclass sets ``name`` (its command and settings section) and ``techniques``
(the ``DPR TECH`` values it reduces) and supplies how the sky is removed::

    def remove_sky(self, frames, calibration):
        '''frames: the detrended frames (list of DetrendedFrame, in the SOF's order, with
        their FrameInfo in .raw); calibration: ScienceCalibration (the maps in
        .maps and .orders). Return a list of SkyFreeFrame, one per image to extract.'''

A :class:`SkyFreeFrame` carries the sky-free counts, their variance (without
the sky model's), the sky model removed and its variance, bad pixels and cosmic
rays, the effective read noise, the slit position where the (positive) object
is expected (None: the brightest object along the slit), and the reduced chi^2
of the sky residuals per order. Stare stacks its frames and fits the sky in
(wavelength, slit) space (Kelson 2003); nodding returns the A-B and B-A
differences with the object expected at each one's positive offset; offset
returns the object frames minus their sky frames, residual sky fitted as in stare.
:meth:`~_science_recipe_.stack` (clipped mean, scaled to the sum),
:meth:`~_science_recipe_.kelson_sky`, :meth:`~_science_recipe_.locate` and
:meth:`~_science_recipe_.object_mask` are there for them. The optimal
extraction models every pixel's variance as sky + object + read noise^2 from
``sky`` and ``read_noise``. For a difference P - N of two frames, ``variance``
holds the noise of both frames, ``sky_variance`` only that of the residual sky
model, and ``read_noise`` both frames' read noise in quadrature (sqrt 2 x).
A recipe that finds its cosmic rays on the differences (nodding: on A-B and on
B-A, the sign kept) returns False from ``cosmics_per_frame`` and calls
:func:`~soxspipe.commonutils.cosmics.cosmic_ray_mask` itself.

Optional hooks: :meth:`~_science_recipe_.cosmics_per_frame` (whether L.A.Cosmic
runs on the single frames), :meth:`~_science_recipe_.combine_extractions` (the
spectra of several sky-free frames into one :class:`Extraction`, identical
wavelength bins per order), :meth:`~_science_recipe_.combine_rectified` (their
rectified orders, identical grids) and :meth:`~_science_recipe_.total_exptime`.
"""

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty
from scipy import ndimage

from .. import __version__
from ..commonutils import sdp_spectrum as sdp
from ..commonutils.cosmics import cosmic_ray_mask
from ..commonutils.detectors import detector
from ..commonutils.disp_image import invert_solution
from ..commonutils.errors import DataError
from ..commonutils.extraction import wavelength_edges
from ..commonutils.fitsio import read_header
from ..commonutils.keywords import header_value, set_value
from ..commonutils.prepare import gain_and_read_noise
from ..commonutils.resample import linear_edges, pixel_step, rectify_order
from ..commonutils.scattered_light import scattered_light
from ..commonutils.science_detrend import flat_field, inter_order_mask
from ..commonutils.science_extract import QUAL_BITS, extract_order, merge_spectra
from ..commonutils.science_objects import locate_object, object_trace, order_box
from ..commonutils.science_products import SURFACE_UNIT, merged_table, orders_table, stack_rectified
from ..commonutils.settings import qc_ranges, recipe_settings
from ..commonutils.sky import SkyModel, sky_model
from ..commonutils.spectrum2d import build_spectrum2d
from ..commonutils.spectrum_plots import orders_plot, quicklook_pdf
from ..commonutils.science_fluxcal import apply_response, calibrate_merged_table, slit_width
from ..commonutils.science_telluric import apply_telluric, correction_settings
from ..products import read_disp_image, read_dispersion_solution, read_order_table, read_response, read_telluric
from ._base_recipe_ import Product, _base_recipe_
from .soxs_disp_solution import order_ranges
from .soxs_spatial_solution import order_edges

log = logging.getLogger(__name__)

#: product-category prefix of each frame kind
PREFIXES = {"science": "SCI", "flux_standard": "STD_FLUX", "telluric_standard": "STD_TELL"}


@dataclass
class ScienceCalibration:
    """What the science recipes take from their calibrations (frames in their native orientation).

    Attributes
    ----------
    bias, dark, flat : CCDData or None
    order_table : OrderTable
    maps : DispersionImage
        Wavelength (nm), slit position (arcsec) and order of every pixel.
    orders : numpy.ndarray of int16
        The order map restricted to the usable slit (``slit-end-margin`` from the ends): 0 elsewhere.
    between : numpy.ndarray of bool
        The pixels between the orders (scattered light).
    boxes : dict
        Order -> the ``(rows, columns)`` slices of the block of the frame that holds it.
    """

    bias: CCDData
    dark: CCDData
    flat: CCDData
    order_table: object
    maps: object
    orders: np.ndarray
    between: np.ndarray
    boxes: dict = field(default_factory=dict)

    def __post_init__(self):
        if not self.boxes:
            self.boxes = {o: order_box(self.orders, o) for o in self.order_numbers}

    @property
    def order_numbers(self):
        """The orders on the frame, in increasing number."""
        return [int(o) for o in np.unique(self.orders[self.orders > 0])]


@dataclass
class DetrendedFrame:
    """One frame detrended, or several stacked (counts in electrons over ``exptime``).

    Attributes
    ----------
    raw : list of FrameInfo
        The raw frame(s) it is made of.
    data, variance : numpy.ndarray
        float32 counts and their variance.
    bad : numpy.ndarray of bool
        Bad pixels (detector, calibrations, saturation, no surviving value in a stack).
    cosmics : numpy.ndarray of bool
        Pixels flagged as cosmic rays by L.A.Cosmic (not in ``bad``).
    read_noise : float
        Noise (counts) of a pixel without light: read noise and calibrations' noise.
    exptime : float
        Total exposure time (s).
    """

    raw: list
    data: np.ndarray
    variance: np.ndarray
    bad: np.ndarray
    cosmics: np.ndarray
    read_noise: float
    exptime: float


@dataclass
class SkyFreeFrame:
    """What :meth:`_science_recipe_.remove_sky` returns for every image to extract.

    Attributes
    ----------
    data, variance : numpy.ndarray
        Sky-free counts and their variance (without the sky model's).
    sky, sky_variance : numpy.ndarray
        The sky model removed (counts whose Poisson noise is in ``data``) and its variance.
    bad, cosmics : numpy.ndarray of bool
        Pixels not to use; cosmic rays flagged by L.A.Cosmic (left to the optimal
        extraction's own rejection inside the object's window).
    read_noise : float
        Noise (counts) of a pixel without light.
    expected : float or None
        Slit position (arcsec) of the (positive) object; None: the brightest object.
    chi2 : dict
        Order -> reduced chi^2 of the sky residuals.
    label : str
        Names the frame in the log (e.g. 'A-B 1').
    """

    data: np.ndarray
    variance: np.ndarray
    sky: np.ndarray
    sky_variance: np.ndarray
    bad: np.ndarray
    cosmics: np.ndarray
    read_noise: float
    expected: float = None
    chi2: dict = field(default_factory=dict)
    label: str = ""


@dataclass
class Extraction:
    """The object in one sky-free frame (or several combined).

    Attributes
    ----------
    location : ObjectLocation
    spectra : list of OrderSpectrum
        One per order, in increasing order number.
    traced : dict
        Order -> whether a trace was fitted (False: held at one position).
    rejected : numpy.ndarray of bool, optional
        Pixels the optimal extraction rejected (None: none recorded).
    """

    location: object
    spectra: list
    traced: dict = field(default_factory=dict)
    rejected: np.ndarray = field(default=None, repr=False)


class _science_recipe_(_base_recipe_):
    """Base of the science recipes (see the module docstring)."""

    raw_kinds = tuple(PREFIXES)
    calibrations = {"MASTER_BIAS": "has_bias", "MASTER_DARK": False, "MASTER_FLAT": True, "DISP_TAB": True,
                    "DISP_IMAGE": False, "ORDER_TAB": True, "RESPONSE": False, "TELLURIC": False}
    #: ``DPR TECH`` values of the frames the recipe reduces
    techniques = ()

    # -- hooks ---------------------------------------------------------------------

    def remove_sky(self, frames, calibration):
        """Return the sky-free frames to extract (list of :class:`SkyFreeFrame`). Subclasses implement it."""
        raise NotImplementedError

    def cosmics_per_frame(self):
        """Whether L.A.Cosmic runs on every single frame: when fewer than ``cosmic-stack-min`` are stacked."""
        return len(self.raw_frames) < self.params["cosmic-stack-min"]

    def combine_extractions(self, extractions):
        """The spectra of several sky-free frames as one :class:`Extraction`; one frame is taken as it is."""
        if len(extractions) != 1:
            raise NotImplementedError(f"{self.recipe_id} cannot combine the spectra of {len(extractions)} frames")
        return extractions[0]

    def combine_rectified(self, rectified, frames):
        """The rectified orders of several sky-free frames (list of ``{order: RectifiedOrder}``) as one."""
        if len(rectified) != 1:
            raise NotImplementedError(f"{self.recipe_id} cannot combine the 2D images of {len(rectified)} frames")
        return rectified[0]

    def total_exptime(self):
        """Exposure time (s) the products' counts are over: the sum of the raw frames'."""
        return float(sum(f.exptime or 0.0 for f in self.raw_frames))

    # -- the recipe ------------------------------------------------------------------

    def reduce(self):
        """The shared steps around the subclass's :meth:`remove_sky` (see the module docstring)."""
        self.check_science_frames()
        calibration = self.science_calibration()
        frames = self.detrended_frames(calibration)
        sky_free = self.remove_sky(frames, calibration)
        extractions = [self.extract(frame, calibration) for frame in sky_free]
        extraction = self.combine_extractions(extractions)
        merged = merge_spectra(extraction.spectra, self.params["merge-step"], found=extraction.location.found)
        rectified = self.combine_rectified([self.rectify(f, e, calibration) for f, e in zip(sky_free, extractions)],
                                           sky_free)
        self.record_qc(extraction, sky_free, merged, frames)
        return self.science_products(extraction, merged, rectified, sky_free[0], extractions[0])

    def check_science_frames(self):
        """One frame kind and one technique the recipe reduces.

        Raises
        ------
        DataError
        """
        kinds = {f.kind for f in self.raw_frames}
        if len(kinds) > 1:
            raise DataError(f"{self.sof}: frames of kinds {', '.join(sorted(kinds))} in one SOF; "
                            f"give the frames of one OB")
        for f in self.raw_frames:
            if self.techniques and f.tech not in self.techniques:
                mode = f.tech.rsplit(",", 1)[-1].lower()
                raise DataError(f"{f.path}: a {f.tech} frame is not reduced by {self.recipe_id} "
                                f"({', '.join(self.techniques)}); reduce it with its own recipe ({mode})")
        self.prefix = PREFIXES[self.raw_frames[0].kind]

    # -- calibrations ----------------------------------------------------------------

    def science_calibration(self):
        """Read and check the calibrations: a :class:`ScienceCalibration`.

        Raises
        ------
        DataError
            An order table without edges, a first-guess DISP_TAB, calibrations of another frame size.
        """
        det = detector(self.arm)
        p = self.params
        x0, x1, y0, y1 = det.science_region(self.raw_frames[0].binning)
        shape = (y1 - y0, x1 - x0)
        order_tab = self.calibration_frames["ORDER_TAB"].path
        table = read_order_table(order_tab)
        if not table.has_edges:
            raise DataError(f"{order_tab}: an ORDER_TAB without the order edges; give the ORDER_TAB_{self.arm} "
                            f"made by soxs_mflat")
        flat = self.calibration("MASTER_FLAT")
        self._check_shape(flat.data.shape, shape, "MASTER_FLAT")
        maps = self.pixel_maps(table, shape)
        half = 0.5 * det.slit_length_arcsec - p["slit-end-margin"]
        with np.errstate(invalid="ignore"):
            orders = np.where(np.abs(maps.slit) <= half, maps.order, 0).astype(np.int16)
        between = inter_order_mask(table, shape, det.dispersion_axis, margin=p["scatter-margin"])
        return ScienceCalibration(self.calibration("MASTER_BIAS"), self.calibration("MASTER_DARK"), flat, table,
                                  maps, orders, between)

    def pixel_maps(self, table, shape):
        """The DISP_IMAGE's maps, or the DISP_TAB inverted with the ``spat_solution`` settings."""
        disp_image = self.calibration_frames.get("DISP_IMAGE")
        if disp_image is not None:
            maps = read_disp_image(disp_image.path)
            self._check_shape(maps.order.shape, shape, "DISP_IMAGE")
            return maps
        disp_tab = self.calibration_frames["DISP_TAB"].path
        solution = read_dispersion_solution(disp_tab)
        if solution.degrees[2] == 0:
            raise DataError(f"{disp_tab}: a first-guess DISP_TAB (no slit dependence); give the DISP_TAB_{self.arm} "
                            f"made by soxs_spat_solution, or its DISP_IMAGE_{self.arm}")
        q = recipe_settings(self.settings, "spat_solution", self.arm)
        orders, ranges = order_ranges(self.arm)
        log.info("no DISP_IMAGE: mapping the pixels from the DISP_TAB")
        return invert_solution(solution, orders, [(a - q["image-margin"] * (b - a), b + q["image-margin"] * (b - a))
                                                  for a, b in ranges], shape, detector(self.arm).dispersion_axis,
                               slit_range=tuple(q["slit-range"]), n_slit=q["image-slit-samples"],
                               samples_per_pixel=q["image-samples-per-pixel"], edges=order_edges(table))

    def _check_shape(self, found, expected, tag):
        if tuple(found) != tuple(expected):
            raise DataError(f"{self.calibration_frames[tag].path}: the {tag} is {found[1]} x {found[0]} px but the "
                            f"frames {expected[1]} x {expected[0]}; give a {tag}_{self.arm} of the frames' binning")

    # -- detrending ------------------------------------------------------------------

    def detrended_frames(self, calibration):
        """Every raw frame detrended: a list of :class:`DetrendedFrame` (see the module docstring)."""
        per_frame = self.cosmics_per_frame()
        out = [self.detrend_science(raw, calibration, cosmics=per_frame) for raw in self.raw_frames]
        log.info("%d frame(s) detrended%s", len(out),
                 f"; {sum(int(f.cosmics.sum()) for f in out)} pixels flagged as cosmic rays" if per_frame else "")
        return out

    def detrend_science(self, raw, calibration, *, cosmics=True):
        """One raw frame detrended (a :class:`DetrendedFrame`)."""
        p = self.params
        det = detector(self.arm)
        ccd = self.prepare(raw, master_bias=calibration.bias)
        data, variance, bad = ccd.data, ccd.uncertainty.array ** 2, ccd.mask.copy()
        header = self.raw_header(raw)
        _, read_noise = gain_and_read_noise(header, det, raw.readout)
        noise = read_noise ** 2
        if calibration.bias is not None and calibration.bias.uncertainty is not None:
            noise += float(np.median(calibration.bias.uncertainty.array) ** 2)
        dark = calibration.dark
        if dark is not None:
            scale = np.float32(self._dark_scale(dark, raw))
            level, dark_variance = self.dark_model(dark)
            data = data - scale * level
            variance = variance + scale ** 2 * dark_variance
            noise += float(np.median(scale ** 2 * dark_variance))
            bad |= dark.mask
        elif det.lamp_off_pairs:
            log.warning("%s: no MASTER_DARK: the dark current is left to the sky subtraction, hot pixels to the "
                        "rejection", raw.path)
        found = np.zeros(data.shape, bool)
        if cosmics:
            found = cosmic_ray_mask(data, read_noise=read_noise, mask=bad, sigma=p["cosmic-sigma"],
                                    sigma_fraction=p["cosmic-sigma-fraction"], contrast=p["cosmic-contrast"],
                                    iterations=p["cosmic-iterations"])
        try:
            background = scattered_light(data, calibration.between, box=p["scatter-box"], smooth=p["scatter-smooth"],
                                         bad=bad | found)
        except ValueError as exc:
            raise DataError(f"{raw.path}: no scattered-light model ({exc}); "
                            f"does the ORDER_TAB match the frame?") from None
        flat = calibration.flat
        data, variance, bad = flat_field(data - background, variance, bad, flat.data,
                                         None if flat.uncertainty is None else flat.uncertainty.array, flat.mask)
        return DetrendedFrame([raw], data, variance, bad, found, float(np.sqrt(noise)), float(raw.exptime or 0.0))

    def dark_model(self, dark):
        """The dark to subtract and its variance: the MASTER_DARK as it is, or smoothed (``dark-smooth``).

        A master dark of a few frames is noisier per pixel than the dark signal of a
        science frame: its smooth level (the mean over ``dark-smooth`` x ``dark-smooth``
        pixels, its flagged hot pixels left out) is subtracted instead, and its hot
        pixels stay flagged.
        """
        cached = getattr(self, "_dark_model", None)
        if cached is not None and cached[0] is dark:
            return cached[1]
        size = int(self.params["dark-smooth"])
        data = dark.data.astype(np.float32)
        variance = dark.uncertainty.array.astype(np.float32) ** 2
        if size > 1:
            good = (~dark.mask).astype(np.float32)
            weight = ndimage.uniform_filter(good, size, mode="nearest")
            with np.errstate(invalid="ignore", divide="ignore"):
                data = np.where(weight > 0, ndimage.uniform_filter(data * good, size, mode="nearest") / weight, 0.0)
                variance = np.where(weight > 0, ndimage.uniform_filter(variance * good, size, mode="nearest")
                                    / (weight * size * size * weight), variance)
            data, variance = data.astype(np.float32), variance.astype(np.float32)
        self._dark_model = (dark, (data, variance))
        return data, variance

    def _dark_scale(self, dark, raw):
        """The factor taking the MASTER_DARK to the frame's exposure time (1 when they match).

        Raises
        ------
        DataError
            Other exposure times without the ``dark-scaling`` setting.
        """
        dark_time = float(header_value(dark.meta, "exptime", 0.0) or 0.0)
        frame_time = float(raw.exptime or 0.0)
        if dark_time <= 0 or abs(dark_time - frame_time) < 1e-3:
            return 1.0
        if not self.params["dark-scaling"]:
            raise DataError(f"{self.calibration_frames['MASTER_DARK'].path}: a MASTER_DARK of {dark_time:g} s for "
                            f"frames of {frame_time:g} s; give a dark of {frame_time:g} s, or allow scaling it "
                            f"(settings {self.name}: dark-scaling: true)")
        log.warning("the MASTER_DARK of %g s is scaled to the frame's %g s", dark_time, frame_time)
        return frame_time / dark_time

    def stack(self, frames):
        """Detrended frames of one kind as one: their sum (clipped mean times their number).

        Returns
        -------
        DetrendedFrame
        """
        if len(frames) == 1:
            return frames[0]
        ccds = [CCDData(f.data, unit="electron", uncertainty=StdDevUncertainty(np.sqrt(f.variance)),
                        mask=f.bad | f.cosmics) for f in frames]
        combined = self.combine(ccds)
        n = np.float32(len(frames))
        return DetrendedFrame([r for f in frames for r in f.raw], combined.data * n,
                              (combined.uncertainty.array * n) ** 2, combined.mask, np.zeros(combined.shape, bool),
                              float(np.sqrt(sum(f.read_noise ** 2 for f in frames))),
                              float(sum(f.exptime for f in frames)))

    # -- sky -------------------------------------------------------------------------

    def object_mask(self, location, calibration):
        """Pixels near the object (``object-mask-fwhm`` FWHM of it), left out of a sky fit."""
        slit = calibration.maps.slit
        half = self.params["object-mask-fwhm"] * location.joint.fwhm
        with np.errstate(invalid="ignore"):
            return np.abs(slit - location.joint.slit) <= half

    def kelson_sky(self, frame, calibration, object_mask, *, illumination_degree=None):
        """The sky of a detrended frame in (wavelength, slit) space after Kelson (2003).

        ``illumination_degree`` (default: the ``sky-illumination-degree`` setting) is the degree of the
        slit illumination polynomial.

        Returns
        -------
        SkyModel
        """
        p = self.params
        if illumination_degree is None:
            illumination_degree = p["sky-illumination-degree"]
        maps = calibration.maps
        bad = frame.bad | frame.cosmics
        result = SkyModel(np.zeros(frame.data.shape, np.float32), np.zeros(frame.data.shape, np.float32),
                          np.zeros(frame.data.shape, bool))
        # order by order on the block of the frame that holds it: the same fit, without the other orders' pixels
        for order, box in calibration.boxes.items():
            pixels = calibration.orders[box] == order
            one = sky_model(frame.data[box], frame.variance[box], maps.wavelength[box], maps.slit[box],
                            np.where(pixels, order, 0), object_mask=object_mask[box], bad=bad[box],
                            knot_spacing=p["sky-knot-spacing"], smooth_knot_spacing=p["sky-smooth-knot-spacing"],
                            structure_sigma=p["sky-structure-sigma"], illumination_degree=illumination_degree,
                            sigma=p["sky-sigma"], max_iterations=p["sky-iterations"])
            result.sky[box] = np.where(pixels, one.sky, result.sky[box])
            result.variance[box] = np.where(pixels, one.variance, result.variance[box])
            result.rejected[box] |= one.rejected
            result.chi2.update(one.chi2)
            result.n_sky.update(one.n_sky)
        return result

    def header_mean(self, *names):
        """Mean of the keywords ``names`` (logical names) over the raw frames' headers, or None where none has them."""
        values = [float(v) for f in self.raw_frames for v in (header_value(self.raw_header(f), k, None) for k in names)
                  if v is not None]
        return float(np.mean(values)) if values else None

    def seeing(self):
        """Mean seeing FWHM (arcsec) of the raw frames' headers, or None."""
        return self.header_mean("seeing_start", "seeing_end")

    # -- object and spectra -----------------------------------------------------------

    def locate(self, data, bad, calibration, expected=None):
        """The object along the slit (an :class:`~soxspipe.commonutils.science_objects.ObjectLocation`)."""
        p = self.params
        maps = calibration.maps
        return locate_object(data, maps.wavelength, maps.slit, calibration.orders, bad=bad, expected=expected,
                             search_radius=p["object-search-radius"] if expected is not None else None,
                             min_significance=p["object-min-significance"], fallback_fwhm=self.seeing() or 1.0,
                             max_fwhm=p["object-max-fwhm"])

    def extract(self, frame, calibration):
        """Find, trace and extract the object in every order of a sky-free frame: an :class:`Extraction`."""
        p = self.params
        maps = calibration.maps
        location = self.locate(frame.data, frame.bad, calibration, frame.expected)
        spectra, traced = [], {}
        rejected = np.zeros(frame.data.shape, bool)
        for order in calibration.order_numbers:
            box = calibration.boxes[order]
            pixels = calibration.orders[box] == order
            data, wave, slit, bad = frame.data[box], maps.wavelength[box], maps.slit[box], frame.bad[box]
            detection = location.orders[order]
            trace, traced[order] = object_trace(data, wave, slit, pixels, detection, bad=bad,
                                                degree=p["trace-degree"], n_bins=p["trace-bins"],
                                                min_significance=p["trace-min-significance"])
            spectrum = extract_order(order, data, frame.variance[box], wave, slit, pixels, sky=frame.sky[box],
                                     sky_variance=frame.sky_variance[box], trace=trace,
                                     optimal_half_width=p["optimal-half-width-fwhm"] * detection.fwhm,
                                     boxcar_half_width=p["boxcar-half-width-fwhm"] * detection.fwhm, bad=bad,
                                     flagged=frame.cosmics[box], read_noise=frame.read_noise, found=location.found,
                                     profile_degree=p["profile-degree"], sigma=p["extraction-sigma"])
            rejected[box] |= spectrum.rejected
            spectra.append(spectrum)
            ok = ((spectrum.qual & (QUAL_BITS["no_data"] | QUAL_BITS["incomplete"])) == 0) & np.isfinite(spectrum.snr)
            log.info("%sorder %d: object at %+.2f arcsec (%s), median S/N %.1f in %d bins",
                     f"{frame.label}: " if frame.label else "", order, float(trace(spectrum.wavelength).mean()),
                     "traced" if traced[order] else "held", float(np.median(spectrum.snr[ok])) if ok.any() else 0.0,
                     spectrum.flux.size)
        return Extraction(location, spectra, traced, rejected)

    def rectify(self, frame, extraction, calibration):
        """Every order of a sky-free frame drizzled onto its (wavelength, slit) grid: ``{order: RectifiedOrder}``."""
        p = self.params
        maps = calibration.maps
        inside = self.object_mask(extraction.location, calibration)
        # inside the object's window the optimal extraction judged the pixels, not L.A.Cosmic
        bad = frame.bad | (frame.cosmics & ~inside)
        if extraction.rejected is not None:
            bad |= extraction.rejected
        variance = frame.variance + frame.sky_variance
        slit_edges = self.rectify_slit_edges(calibration)
        out = {}
        for order in calibration.order_numbers:
            box = calibration.boxes[order]
            pixels = calibration.orders[box] == order
            wave = maps.wavelength[box]
            out[order] = rectify_order(frame.data[box], variance[box], wave, maps.slit[box], pixels,
                                       wave_edges=wavelength_edges(wave, pixels), slit_edges=slit_edges, bad=bad[box],
                                       subsample=p["rectify-subsample"])
        return out

    def rectify_slit_edges(self, calibration):
        """The slit grid of the 2D product: the usable slit by the frame's slit step (the same for every frame)."""
        half = 0.5 * detector(self.arm).slit_length_arcsec - self.params["slit-end-margin"]
        step = float(np.median([pixel_step(calibration.maps.slit[box], calibration.orders[box] == o)
                                for o, box in calibration.boxes.items()]))
        n = int(np.floor(2 * half / step))
        return linear_edges(-0.5 * n * step, 0.5 * n * step, step)

    # -- QC and products ---------------------------------------------------------------

    def record_qc(self, extraction, sky_free, merged, frames):
        """QC: the object (found, position, FWHM), S/N per order, sky residuals per order, cosmic rays."""
        qc = self.qc
        joint = extraction.location.joint
        qc.add("NFRAMES", len(self.raw_frames), "", "raw frames reduced")
        qc.add("OBJ FOUND", int(joint.found), "", "1: object detected, 0: extracted blind")
        qc.add("OBJ POS", round(joint.slit, 4), "arcsec", "object position along the slit")
        qc.add("OBJ FWHM", round(joint.fwhm, 4), "arcsec", "object FWHM along the slit")
        qc.add("OBJ SIGNIF", round(joint.significance, 2), "", "object peak / profile noise")
        qc.add("OBJ NORDERS", sum(d.found for d in extraction.location.orders.values()), "",
               "orders the object was detected in")
        good = []
        usable = QUAL_BITS["no_data"] | QUAL_BITS["incomplete"]
        for s in extraction.spectra:
            ok = ((s.qual & usable) == 0) & np.isfinite(s.snr)
            good.append(s.snr[ok])
            qc.add(f"SNR O{s.order}", round(float(np.median(s.snr[ok])), 3) if ok.any() else 0.0, "",
                   f"median S/N of order {s.order}")
        all_good = np.concatenate(good)
        qc.add("SNR MEDIAN", round(float(np.median(all_good)), 3) if all_good.size else 0.0, "", "median S/N per bin")
        chi2 = {}
        for frame in sky_free:
            for order, value in frame.chi2.items():
                chi2.setdefault(order, []).append(value)
        for order in sorted(chi2):
            qc.add(f"SKY CHI2 O{order}", round(float(np.median(chi2[order])), 4), "", f"sky residuals, order {order}")
        if chi2:
            qc.add("SKY CHI2", round(float(np.median([np.median(v) for v in chi2.values()])), 4), "",
                   "sky residuals: reduced chi^2")
        qc.add("NCOSMIC", int(sum(int(f.cosmics.sum()) for f in frames)), "", "pixels flagged by L.A.Cosmic")
        qc.add("MERGED COVERAGE", round(float(np.mean(merged.n_orders > 0)), 4), "", "merged bins with data")

    def observation_cards(self):
        """Header cards of the observation reduced: total exposure time, mean airmass and seeing, frame kind."""
        airmass = self.header_mean("airmass_start", "airmass_end")
        cards = {"exptime": (self.total_exptime(), "[s] total of the combined exposures"),
                 "pro_kind": (self.raw_frames[0].kind, "frame kind reduced"),
                 "pro_ncombined": (len(self.raw_frames), "raw frames combined")}
        if airmass is not None:
            cards["pro_airmass"] = (round(airmass, 4), "mean airmass of the exposures")
        seeing = self.seeing()
        if seeing is not None:
            cards["pro_seeing"] = (round(seeing, 3), "[arcsec] mean seeing of the exposures")
        return cards

    def science_products(self, extraction, merged, rectified, sky_frame, first_extraction):
        """The products of the contract (layouts in :mod:`soxspipe.commonutils.science_products`).

        The sky model and the sky-subtracted frame are those of ``sky_frame`` (the first
        sky-free frame), whose bad pixels include the ones ``first_extraction`` rejected.
        """
        p = self.params
        arm, prefix = self.arm, self.prefix
        tech = self.raw_frames[0].tech
        cards = self.observation_cards()
        flux, error, qual, self._layout_cards = stack_rectified(rectified, min_coverage=p["rectify-min-coverage"])
        image = CCDData(flux, unit=SURFACE_UNIT, uncertainty=StdDevUncertainty(error), mask=qual.astype(bool))
        bad = sky_frame.bad | sky_frame.cosmics
        if first_extraction.rejected is not None:
            bad = bad | first_extraction.rejected
        sky = CCDData(sky_frame.sky.astype(np.float32), unit="electron", mask=bad,
                      uncertainty=StdDevUncertainty(np.sqrt(sky_frame.sky_variance).astype(np.float32)))
        sky_sub = CCDData(sky_frame.data.astype(np.float32), unit="electron", mask=bad,
                          uncertainty=StdDevUncertainty(np.sqrt(sky_frame.variance
                                                                + sky_frame.sky_variance).astype(np.float32)))
        target = self._object_name()
        self._quicklook = (merged, extraction.spectra, f"{prefix}_MERGED_{arm}: {target}")
        plot = ("orders", lambda path: orders_plot(extraction.spectra, title=f"{prefix}_ORDERS_{arm}: {target}",
                                                   path=path))
        orders, merged_spectrum = orders_table(extraction.spectra), merged_table(merged)
        response = self.calibration_frames.get("RESPONSE")
        response_curve = None
        if response is not None:  # FLUX_CAL/ERR_CAL beside the counts
            if "pro_airmass" not in cards:
                raise DataError(f"{self.raw_frames[0].path}: no airmass in the header, needed to flux-calibrate "
                                f"with {response.path}; remove the RESPONSE from the SOF")
            response_curve = read_response(response.path)
            calibrated = apply_response(orders, merged_spectrum, response_curve,
                                        exptime=cards["exptime"][0], airmass=cards["pro_airmass"][0],
                                        frame=self.raw_frames[0],
                                        max_age_days=recipe_settings(self.settings, "response", arm)["max-age-days"])
            orders, merged_spectrum = calibrated.orders, calibrated.merged
            cards.update(calibrated.cards)
        # the 2D spectrum on the merged grid, calibrated with the same response (it has no telluric correction)
        spectrum2d = build_spectrum2d(rectified, merged.edges, min_cell_coverage=p["rectify-min-coverage"],
                                      response=response_curve, exptime=cards["exptime"][0],
                                      airmass=cards.get("pro_airmass", (None,))[0])
        spectrum2d_cards = dict(cards)
        telluric = self.calibration_frames.get("TELLURIC")
        if telluric is not None:  # FLUX_TELL/ERR_TELL beside them; QUAL flags where the sky is too opaque
            corrected = apply_telluric(orders, merged_spectrum, read_telluric(telluric.path),
                                       airmass=cards.get("pro_airmass", (None,))[0], frame=self.raw_frames[0],
                                       **correction_settings(recipe_settings(self.settings, "telluric", arm)))
            orders, merged_spectrum = corrected.orders, corrected.merged
            cards.update(corrected.cards)
            self.qc.ranges.update(qc_ranges(self.settings, "telluric", arm))
            for item in corrected.qc:
                self.qc.add(*item)
        return [Product(f"{prefix}_ORDERS_{arm}", orders, pro_tech=tech, header_cards=dict(cards), plots=[plot]),
                Product(f"{prefix}_MERGED_{arm}", merged_spectrum, pro_tech=tech, header_cards=dict(cards)),
                Product(f"{prefix}_2D_{arm}", image, pro_tech=tech, header_cards=dict(cards)),
                Product(f"{prefix}_SPEC2D_{arm}", spectrum2d, pro_tech=tech, header_cards=spectrum2d_cards),
                Product(f"{prefix}_SKY_MODEL_{arm}", sky, pro_tech=tech, header_cards=dict(cards)),
                Product(f"{prefix}_SKY_SUB_{arm}", sky_sub, pro_tech=tech, header_cards=dict(cards)),
                self.phase3_product(orders, merged_spectrum, tech, cards, response_curve)]

    def phase3_product(self, orders, merged, tech, cards, response=None):
        """The merged spectrum as an ESO SDP 1D spectrum, ``<P>_SPEC_<ARM>`` (:mod:`~soxspipe.commonutils.sdp_spectrum`).

        ``FLUX`` is ``FLUX_CAL`` where a RESPONSE calibrated the tables (the sky, ``BGFLUX``, is calibrated
        the same way), else the counts (``FLUXCAL = 'UNCALIBRATED'``); ``FLUX_TELL`` where the tables carry a
        telluric correction. The wavelength keywords come from the DISP_TAB's QC, the observation's from
        every raw frame's header. ``response`` is the one that calibrated the tables.
        """
        sky = None
        if "FLUX_CAL" in merged.colnames:  # the sky through the same response, as the standard wants BGFLUX
            as_sky = [t.copy() for t in (merged, orders)]
            for t in as_sky:
                t.remove_columns(["FLUX_CAL", "ERR_CAL"])
                t["FLUX"] = t["SKY"]
            sky = calibrate_merged_table(*as_sky, response, exptime=cards["exptime"][0],
                                         airmass=cards["pro_airmass"][0])["FLUX_CAL"]
        columns, units = sdp.spectrum_columns(merged, sky_calibrated=sky)
        disp = self.calibration_frames["DISP_TAB"].path
        disp_header = read_header(disp)
        qc = {name: header_value(disp_header, "qc", None, qc_name=name)
              for name in ("LINES TOTAL", "LINES USED FRAC", "XRES RMS", "YRES RMS", "XRES MEDIAN", "YRES MEDIAN",
                           "RESOLVING POWER")}
        axis = detector(self.arm).dispersion_axis
        numbers, ranges = order_ranges(self.arm)
        nm_per_pixel = float(np.nanmedian(read_dispersion_solution(disp).dispersion(
            numbers, np.array([0.5 * (a + b) for a, b in ranges]), axis)))
        raw = [(Path(f.path).name, self.raw_header(f)) for f in self.raw_frames]
        observation = sdp.observation_cards(raw, exptime=self.total_exptime())
        ra, dec = observation.get("ra", (None,))[0], observation.get("dec", (None,))[0]
        barycorr = None if ra is None or dec is None else sdp.barycentric_correction(ra, dec,
                                                                                  observation["sdp_tmid"][0])
        target = self._object_name()
        product = sdp.product_cards(arm=self.arm, obstech=tech, slit_width=slit_width(self.raw_frames[0].slit),
                                    procsoft=f"soxspipe/{__version__}", calibrated=sky is not None,
                                    telluric="FLUX_TELL" in columns, barycorr=barycorr,
                                    title=f"{target} SOXS {self.arm} {raw[0][0]}")
        spectrum = sdp.build_sdp_spectrum(columns, units, {**observation, **product,
                                                          **sdp.wavelength_cards({k: v for k, v in qc.items()
                                                                                  if v is not None},
                                                                                 nm_per_pixel=nm_per_pixel,
                                                                                 dispersion_axis=axis)})
        return Product(f"{self.prefix}_SPEC_{self.arm}", spectrum, pro_tech=tech, header_cards=dict(cards))

    def _object_name(self):
        header = self.raw_header(self.raw_frames[0])
        return str(header_value(header, "object", "") or "").strip() or "unnamed target"

    def product_header(self, product):
        """The base header, plus the 2D layout's keywords on the 2D product."""
        header = super().product_header(product)
        if product.pro_catg.startswith(f"{self.prefix}_2D_"):
            for name, value, comment, fields in self._layout_cards:
                set_value(header, name, value, comment, **fields)
        return header

    def write_products(self, products):
        """Write the products, then the quicklook PDF of the merged spectrum into ``<output>/qc/``."""
        with warnings.catch_warnings():
            # the tables' flux unit is the text 'electron/nm' on purpose: FITS has no electron
            warnings.simplefilter("ignore", u.UnitsWarning)
            paths = super().write_products(products)
        if self.plots_enabled:
            merged_path = next(p for p in paths if f"_MERGED_{self.arm}_" in p.name)
            pdf = self.output_dir / "qc" / f"{merged_path.stem}_quicklook.pdf"
            merged, spectra, title = self._quicklook
            try:
                quicklook_pdf(merged, spectra, title=title, path=pdf)
                log.info("quicklook: %s", pdf)
            except Exception as exc:  # a plot never costs the products
                log.warning("quicklook %s not drawn: %s", pdf.name, exc)
        return paths
