"""The recipe lifecycle, written once.

Every recipe subclasses :class:`_base_recipe_` and supplies only what makes it
different: the frame kinds it reduces, the calibrations it takes, and a
:meth:`~_base_recipe_.reduce` method returning its :class:`Product` items. The
base class reads and classifies the SOF, checks the inputs (counts, kinds, one
arm, one binning and read-out mode, matching calibrations), prepares frames,
runs the recipe, and writes the products with their ``ESO PRO`` keywords,
provenance and QC, plus a QC table and a log file beside them.
"""

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.time import Time

from .. import __version__
from ..commonutils.classify import frame_exptime
from ..commonutils.detectors import detector
from ..commonutils.errors import DataError, ProductExistsError
from ..commonutils.fitsio import read_header, read_image
from ..commonutils.combine import sigma_clipped_stack
from ..commonutils.keywords import header_value, set_value
from ..commonutils.prepare import prepare_frame
from ..commonutils.product_io import (publish, write_hdulist_product, write_image_product, write_maps_product,
                                      write_table_product)
from ..commonutils.qc import QCRecorder
from ..commonutils.qc_plots import PlotWorker, draw_plots
from ..commonutils.settings import default_settings, qc_ranges, recipe_settings
from ..commonutils.sof import read_sof_inputs
from ..products import read_image_product

log = logging.getLogger(__name__)

#: Header keywords that describe a data array and so do not belong in a header-only primary HDU.
_STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "BUNIT",
               "XTENSION", "PCOUNT", "GCOUNT", "ZIMAGE", "ZBITPIX", "ZNAXIS", "ZNAXIS1", "ZNAXIS2",
               "ZTILE1", "ZTILE2", "ZCMPTYPE", "ZQUANTIZ", "ZTENSION", "ZSIMPLE", "ZEXTEND", "CHECKSUM",
               "DATASUM", "ZHECKSUM", "ZDATASUM", "EXTNAME")


@dataclass
class Product:
    """One product of a recipe run: an image (``CCDData``), a table, or named maps, and how to label it.

    ``data`` as a ``dict`` of ``{extension name: 2D array}`` writes one image extension per map.
    """

    pro_catg: str
    data: object
    pro_type: str = "REDUCED"
    pro_tech: str = "IMAGE"
    header_cards: dict = field(default_factory=dict)
    #: QC plots as ``(suffix, draw)`` pairs; ``draw(path)`` writes the PNG (from data in memory, while
    #: the products are being written)
    plots: list = field(default_factory=list)


class _base_recipe_:
    """Base of every soxspipe recipe.

    Parameters
    ----------
    sof : str, Path or list
        A SOF file, a folder of FITS files, or a list of FITS paths.
    output_dir : str or Path, optional
        Where products are written (default: the current folder).
    settings : dict, optional
        Complete settings (defaults merged with user overrides); default: the bundled defaults.
    overwrite : bool
        Replace existing products.
    options : dict, optional
        Recipe-specific command-line options (see :data:`soxspipe.recipes.RECIPES`).
    """

    #: command-line name of the recipe and settings section
    name = ""
    #: frame kinds the recipe reduces
    raw_kinds = ()
    #: product-category prefixes of calibrations the recipe takes -> required?
    #: A value may be the string "has_bias" (required where the arm has a bias) or a
    #: list of the arms that require it. A calibration's tag is ``<prefix>_<ARM>``, or
    #: ``<prefix>_<ARM>_<filter>`` for one made for a filter, which must then be the raw frames' filter.
    calibrations = {}
    #: SOF tags of inputs that are not FITS frames (e.g. ``REF_CAT``, a reference catalogue) -> required?
    static_inputs = {}
    #: must every raw frame have the same exposure time?
    same_exptime = False
    #: must every raw frame have the same (acquisition-camera) filter?
    same_filter = False
    #: start a :class:`~soxspipe.commonutils.qc_plots.PlotWorker` with the run, so that matplotlib is
    #: imported while the frames are reduced; for recipes whose plots are picklable (``PlotCall``)
    plot_worker = False

    def __init__(self, sof, *, output_dir=None, settings=None, overwrite=False, options=None):
        self.sof = sof
        #: recipe-specific command-line options (e.g. ``{"--poly": "3,5"}``), None where not given
        self.options = dict(options or {})
        self.output_dir = Path(output_dir or ".")
        self.settings = settings if settings is not None else default_settings()
        self.overwrite = overwrite
        self.recipe_id = f"soxs_{self.name}"
        self.raw_frames = []
        self._raw_headers = {}
        self.calibration_frames = {}
        #: paths of the static (non-FITS) inputs by SOF tag
        self.static_paths = {}
        self.arm = None
        self.params = {}
        self.qc = QCRecorder()
        self._plot_waits = []
        self._plot_worker = None

    # -- lifecycle ---------------------------------------------------------------

    def run(self):
        """Run the recipe end to end; return the paths of the products written."""
        start = time.perf_counter()
        frames, self.static_paths = read_sof_inputs(self.sof, tuple(self.static_inputs))
        self.check_inputs(frames)
        self.params = recipe_settings(self.settings, self.name, self.arm)
        self.prepare_params = recipe_settings(self.settings, "prepare", self.arm)
        self.qc = QCRecorder(qc_ranges(self.settings, self.name, self.arm))
        handler = self._attach_log_file()
        if self.plot_worker and self.plots_enabled:
            self._plot_worker = PlotWorker.start()
        try:
            log.info("%s: %d raw frame(s) of the %s arm", self.recipe_id, len(self.raw_frames), self.arm)
            products = self.reduce()
            paths = self.write_products(products)
            log.info("%s finished in %.1f s", self.recipe_id, time.perf_counter() - start)
        finally:
            self.wait_for_plots()
            if self._plot_worker is not None:
                self._plot_worker.close()
                self._plot_worker = None
            logging.getLogger("soxspipe").removeHandler(handler)
            handler.close()
        return paths

    def reduce(self):
        """Recipe-specific work: return a list of :class:`Product`. Subclasses implement it."""
        raise NotImplementedError

    # -- input checks ------------------------------------------------------------

    def check_inputs(self, frames):
        """Split ``frames`` into raw frames and calibrations and check them.

        Raises
        ------
        DataError
            Wrong kinds, two arms, mixed binning/read-out/exposure time, too few
            frames, a missing or mismatched calibration.
        """
        raws = [f for f in frames if not f.is_product]
        cals = [f for f in frames if f.is_product]
        if not raws:
            raise DataError(f"{self.sof}: no raw frames for {self.recipe_id}; it reduces {', '.join(self.raw_kinds)} frames")
        first = raws[0]
        for f in frames:
            if f.arm != first.arm:
                raise DataError(f"{f.path}: a {f.arm} frame in a SOF of {first.arm} frames ({first.path}); give one arm per SOF")
        self.arm = first.arm
        for f in raws:
            if f.kind not in self.raw_kinds:
                raise DataError(f"{f.path}: a {f.kind} frame ({f.tag}) is not an input of {self.recipe_id}, which takes {', '.join(self.raw_kinds)} frames; remove it from the SOF")
        for f in frames:
            if f.binning != first.binning:
                raise DataError(f"{f.path}: binned {f.binning[0]}x{f.binning[1]} but {first.path} is binned {first.binning[0]}x{first.binning[1]}; use one binning per SOF")
            if f.readout != first.readout:
                raise DataError(f"{f.path}: read out {f.readout} but {first.path} {first.readout}; use one read-out mode per SOF")
        if self.same_exptime:
            for f in raws:
                if f.exptime != first.exptime:
                    raise DataError(f"{f.path}: exposure time {f.exptime} s differs from {first.exptime} s of {first.path}; use one exposure time per SOF")
        if self.same_filter:
            for f in raws:
                if f.acq_filter != first.acq_filter:
                    raise DataError(f"{f.path}: filter {f.acq_filter} differs from {first.acq_filter} of {first.path}; use one filter per SOF")
        for tag, required in self.static_inputs.items():
            if required and tag not in self.static_paths:
                raise DataError(f"{self.sof}: {self.recipe_id} needs a {tag} in the SOF (a line '<path> {tag}')")
        minimum = recipe_settings(self.settings, self.name, self.arm).get("frames-min", 1)
        if len(raws) < minimum:
            raise DataError(f"{self.sof}: {self.recipe_id} needs at least {minimum} raw frames, the SOF gives {len(raws)}")
        self.raw_frames = raws
        self._check_calibrations(cals)

    def _check_calibrations(self, cals):
        det = detector(self.arm)
        found = {}
        raw_filter = self.raw_frames[0].acq_filter if self.raw_frames else None
        for f in cals:
            prefix = next((p for p in self.calibrations if f.tag == f"{p}_{self.arm}"), None)
            if prefix is None:
                prefix = next((p for p in self.calibrations if f.tag.startswith(f"{p}_{self.arm}_")), None)
                if prefix is not None and f.tag != f"{prefix}_{self.arm}_{raw_filter}":
                    raise DataError(f"{f.path}: a {f.tag} is for filter {f.tag[len(prefix) + len(self.arm) + 2:]} "
                                    f"but the raw frames are of filter {raw_filter}; give the {prefix}_{self.arm}_{raw_filter}")
            if prefix is None:
                raise DataError(f"{f.path}: a {f.tag} is not a calibration {self.recipe_id} takes; remove it from the SOF")
            if prefix in found:
                raise DataError(f"{f.path}: a second {f.tag} in the SOF (first: {found[prefix].path}); give one")
            found[prefix] = f
        for prefix, required in self.calibrations.items():
            if required == "has_bias":
                needed = det.has_bias
            elif isinstance(required, (list, tuple)):
                needed = self.arm in required
            else:
                needed = bool(required)
            if needed and prefix not in found:
                suffix = f"_{raw_filter}" if self.same_filter and raw_filter else ""
                raise DataError(f"{self.sof}: {self.recipe_id} on {self.arm} frames needs a {prefix}_{self.arm}{suffix} in the SOF")
        self.calibration_frames = found

    # -- helpers for recipes -----------------------------------------------------

    def prepare(self, frame, **kwargs):
        """Read one raw frame and return it prepared (``CCDData`` in electrons)."""
        raw, header = read_image(frame.path, dtype=None)
        return prepare_frame(
            raw,
            header,
            path=frame.path,
            overscan_smooth_rows=self.prepare_params["overscan-smooth-rows"],
            saturation_fraction=self.prepare_params["saturation-fraction"],
            **kwargs,
        )

    def combine(self, frames):
        """Stack prepared frames with the shared sigma-clipped combine; return a ``CCDData``.

        Clipping limits and iterations come from the recipe's settings; the mask
        holds the pixels with no surviving value.
        """
        result = sigma_clipped_stack(
            [f.data for f in frames],
            errors=[f.uncertainty.array for f in frames],
            masks=[f.mask for f in frames],
            lower_sigma=self.params["clipping-lower-sigma"],
            upper_sigma=self.params["clipping-upper-sigma"],
            max_iterations=self.params["clipping-iterations"],
            fill_value=0.0,
        )
        log.info("combined %d frames; %d values clipped", len(frames), result.n_clipped)
        return CCDData(
            result.data,
            unit=frames[0].unit,
            uncertainty=StdDevUncertainty(result.uncertainty, unit=frames[0].unit, copy=False),
            mask=result.mask,
            meta=frames[0].meta,
        )

    def lamp_frame(self):
        """Return the lamp frame prepared and with its background removed, as ``CCDData`` in electrons.

        The lamp-on raw frames are prepared (with the ``MASTER_BIAS`` where the SOF
        has one) and combined if several; then, in order of preference, the lamp-off
        partners (prepared and combined the same way) or the ``MASTER_DARK`` (scaled
        to the lamp's exposure time) are subtracted, uncertainties added in quadrature
        and masks merged. An arm with lamp-off pairs and neither is an error.

        Raises
        ------
        DataError
            No lamp-on frame, or no way to remove the background on an arm that needs one.
        """
        on = [f for f in self.raw_frames if not f.lamp_off]
        off = [f for f in self.raw_frames if f.lamp_off]
        if not on:
            raise DataError(f"{self.sof}: only lamp-off frames; {self.recipe_id} needs a lamp-on frame")
        bias = self.calibration("MASTER_BIAS")
        lamp = self._stack([self.prepare(f, master_bias=bias) for f in on])
        if off:
            background, what = self._stack([self.prepare(f, master_bias=bias) for f in off]), "lamp-off frame(s)"
        else:
            background, what = self.calibration("MASTER_DARK"), "MASTER_DARK"
            if background is not None:
                dark_time = float(header_value(background.meta, "exptime", 0.0) or 0.0)
                lamp_time = float(on[0].exptime or 0.0)
                if dark_time > 0 and lamp_time > 0 and dark_time != lamp_time:
                    log.warning("the MASTER_DARK is of %g s, the lamp frame of %g s: scaling the dark", dark_time, lamp_time)
                    scale = np.float32(lamp_time / dark_time)
                    background = CCDData(background.data * scale, unit=background.unit, mask=background.mask,
                                         uncertainty=StdDevUncertainty(background.uncertainty.array * scale))
        if background is None:
            if detector(self.arm).lamp_off_pairs:
                raise DataError(f"{self.sof}: {self.recipe_id} on {self.arm} frames needs the lamp-off partner of the "
                                f"lamp frame or a MASTER_DARK_{self.arm} in the SOF")
            return lamp
        log.info("subtracting the %s from the lamp frame", what)
        data = lamp.data - background.data.astype(np.float32)
        error = np.sqrt(lamp.uncertainty.array ** 2 + np.asarray(background.uncertainty.array, np.float32) ** 2)
        mask = lamp.mask | (background.mask if background.mask is not None else False)
        return CCDData(data, unit=lamp.unit, uncertainty=StdDevUncertainty(error, unit=lamp.unit), mask=mask,
                       meta=lamp.meta)

    def _stack(self, frames):
        """One prepared frame as is, several combined with :meth:`combine`."""
        return frames[0] if len(frames) == 1 else self.combine(frames)

    def detrend(self, frame, master_bias=None, master_dark=None):
        """Prepare one raw frame with ``master_bias`` and subtract ``master_dark`` scaled to its exposure time.

        Either calibration may be None. Uncertainties add in quadrature and masks merge.
        """
        ccd = self.prepare(frame, master_bias=master_bias)
        if master_dark is None:
            return ccd
        dark_time = frame_exptime(master_dark.meta) or 0.0
        scale = np.float32((frame.exptime or 0.0) / dark_time) if dark_time > 0 else np.float32(1.0)
        data = ccd.data - master_dark.data.astype(np.float32) * scale
        error = np.sqrt(ccd.uncertainty.array ** 2 + (np.asarray(master_dark.uncertainty.array, np.float32) * scale) ** 2)
        mask = ccd.mask | (master_dark.mask if master_dark.mask is not None else False)
        return CCDData(data, unit=ccd.unit, uncertainty=StdDevUncertainty(error, unit=ccd.unit), mask=mask, meta=ccd.meta)

    def raw_header(self, frame):
        """The header of a raw frame (a ``FrameInfo``), read once per run: treat it as read-only."""
        if frame.path not in self._raw_headers:
            self._raw_headers[frame.path] = read_header(frame.path)
        return self._raw_headers[frame.path]

    def record_temperature(self):
        """Record the detector temperature of the first raw frame as QC, where the header has it."""
        name = detector(self.arm).extra.get("temperature_keyword")
        if name:
            value = header_value(self.raw_header(self.raw_frames[0]), name, None)
            if value is not None:
                self.qc.add("DET TEMP", float(value), "", "detector temperature")

    def calibration(self, prefix):
        """Return the calibration product with tag ``<prefix>_<ARM>`` (or ``<prefix>_<ARM>_<filter>``) as ``CCDData``, or None."""
        frame = self.calibration_frames.get(prefix)
        return read_image_product(frame.path) if frame else None

    # -- products ----------------------------------------------------------------

    def product_path(self, product):
        """The file name of a product: category, binning, read-out mode and the first raw frame's start time."""
        first = self.raw_frames[0]
        stamp = Time(first.mjd, format="mjd").strftime("%Y%m%dT%H%M%S") if first.mjd is not None else "UNDATED"
        binning = f"{first.binning[0]}x{first.binning[1]}"
        mode = "" if first.readout == "default" else f"_{first.readout.upper()}"
        return self.output_dir / f"{product.pro_catg}_{binning}{mode}_{stamp}.fits"

    def product_header(self, product):
        """The primary header of a product: the first raw frame's keywords, PRO, provenance and QC."""
        header = fits.Header()
        for card in self.raw_header(self.raw_frames[0]).copy().cards:
            if card.keyword not in _STRUCTURAL:
                header.append(card, end=True)
        set_value(header, "pro_catg", product.pro_catg, "product category")
        set_value(header, "pro_type", product.pro_type, "product type")
        set_value(header, "pro_tech", product.pro_tech, "observation technique")
        set_value(header, "pro_rec_id", self.recipe_id, "pipeline recipe")
        set_value(header, "pro_rec_pipe_id", f"soxspipe/{__version__}", "pipeline version")
        for n, f in enumerate(self.raw_frames, start=1):
            set_value(header, "pro_rec_raw_name", Path(f.path).name, n=n)
            set_value(header, "pro_rec_raw_catg", f.tag, n=n)
        cals = [(Path(f.path).name, f.tag) for f in self.calibration_frames.values()]
        cals += [(Path(path).name, tag) for tag, path in self.static_paths.items()]
        for n, (name, tag) in enumerate(cals, start=1):
            set_value(header, "pro_rec_cal_name", name, n=n)
            set_value(header, "pro_rec_cal_catg", tag, n=n)
        for n, (key, value) in enumerate(sorted(self.params.items()), start=1):
            set_value(header, "pro_rec_param_name", key, n=n)
            set_value(header, "pro_rec_param_value", str(value), n=n)
        for key, value in product.header_cards.items():
            if isinstance(value, tuple):  # (value, comment)
                set_value(header, key, *value)
            else:
                set_value(header, key, value)
        if isinstance(product.data, CCDData) and product.data.wcs is not None:
            header.update(product.data.wcs.to_header(relax=True))
        self.qc.write_header(header)
        return header

    def write_products(self, products):
        """Write every product, its QC table and its plots; return the product paths.

        All product paths are checked before anything is written, so a run that
        would overwrite an existing product (without ``-x``) writes nothing.
        """
        paths = [self.product_path(p) for p in products]
        if not self.overwrite:
            for path in paths:
                if path.exists():
                    raise ProductExistsError(f"{path}: product exists; use -x to overwrite it")
        for product in products:
            self.start_plots(product)
        written = []
        try:
            for product, path in zip(products, paths):
                header = self.product_header(product)
                if isinstance(product.data, CCDData):
                    write_image_product(path, product.data, header, overwrite=self.overwrite)
                elif isinstance(product.data, dict):
                    write_maps_product(path, product.data, header, overwrite=self.overwrite)
                elif hasattr(product.data, "to_hdulist"):  # a layout of its own (e.g. an SDP spectrum)
                    write_hdulist_product(path, product.data.to_hdulist(header), overwrite=self.overwrite)
                else:
                    write_table_product(path, product.data, header, overwrite=self.overwrite)
                qc_path = path.with_name(path.stem + "_QC.ecsv")
                publish(lambda tmp: self.qc.table().write(tmp, format="ascii.ecsv"), qc_path, overwrite=True)
                status = "FAIL: " + ", ".join(v.name for v in self.qc.failed) if self.qc.failed else "PASS"
                log.info("wrote %s (QC %s)", path, status)
                written.append(path)
        finally:
            self.wait_for_plots()
        return written

    def start_plots(self, product):
        """Start drawing ``product``'s QC plots, in the background where the platform allows.

        A recipe may call it as soon as the plotted data are final, so that the drawing
        overlaps its remaining work; the plots are not drawn twice.
        """
        if not self.plots_enabled or not product.plots:
            return
        stem = self.product_path(product).stem
        self._plot_waits.append(draw_plots([(draw, self.output_dir / "qc" / f"{stem}_{suffix}.png")
                                            for suffix, draw in product.plots], worker=self._plot_worker))
        product.plots = []

    def wait_for_plots(self):
        """Wait for every plot started by :meth:`start_plots`."""
        while self._plot_waits:
            self._plot_waits.pop()()

    @property
    def plots_enabled(self):
        """Whether QC plots are written (settings ``general.plots``)."""
        return bool(self.settings.get("general", {}).get("plots", True))

    def _attach_log_file(self):
        """Log this run into ``<recipe>.log`` beside the products (created at the first record)."""
        self.output_dir.mkdir(parents=True, exist_ok=True)
        stamp = time.strftime("%Y%m%dT%H%M%S")
        handler = logging.FileHandler(self.output_dir / f"{self.recipe_id}_{self.arm}_{stamp}.log", delay=True)
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        handler.setLevel(logging.DEBUG)
        root = logging.getLogger("soxspipe")
        root.addHandler(handler)
        return handler
