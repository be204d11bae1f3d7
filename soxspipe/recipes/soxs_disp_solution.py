"""soxs_disp_solution: the first-guess dispersion solution from a single-pinhole arc.

Prepare the arc (bias-subtracted, or minus its lamp-off partner or a master
dark), predict the lamp's clean lines with a first-guess solution fitted to the
bundled predicted single-pinhole table, find the global shift of the frame,
measure every line's centroid, reject blends, saturated lines and lines on bad
pixels, and fit ``X(n, w)`` and ``Y(n, w)`` (``w`` the wavelength, or order x
wavelength for an echelle) with sigma clipping. Products: ``DISP_TAB_<ARM>``
(the coefficients) and ``DISP_TAB_LINES_<ARM>`` (every predicted line and its fate).
"""

import logging
from dataclasses import dataclass, fields

import numpy as np
from astropy.table import Table

from ..commonutils.detectors import detector
from ..commonutils.dispersion import (DispersionSolution, LineMeasurements, SolutionError, SolveSettings, fit_solution,
                                      pinhole_sets, select_candidates, solve_dispersion)
from ..commonutils.lines import Shift
from ..commonutils.errors import DataError, UsageError
from ..commonutils.arc_plots import line_frame_plot, residual_plot
from ..static_calibrations import path as static_path
from ._base_recipe_ import Product, _base_recipe_

log = logging.getLogger(__name__)


def parse_degrees(text, n, option="--poly"):
    """Parse ``"a,b"`` into a tuple of ``n`` non-negative integers."""
    try:
        values = tuple(int(v) for v in str(text).split(","))
    except ValueError:
        values = ()
    if len(values) != n or min(values) < 0:
        raise UsageError(f"{option} takes {n} comma-separated non-negative degrees, not '{text}'")
    return values


def read_predicted_table(name, binning, shape, slit_index=None, margin=60):
    """Order, wavelength, slit position (arcsec) and (x, y) of the rows of a bundled predicted line table.

    ``slit_index`` keeps the rows of that pinhole only (default: all). Positions are divided
    by the binning unless the table is made for it; rows predicted further than ``margin``
    pixels off the frame (of numpy ``shape``) are dropped: ray-traced tables are not smooth
    far off the detector.
    """
    table = Table.read(static_path(name))
    cols = {c.lower(): c for c in table.colnames}
    keep = np.ones(len(table), bool)
    if slit_index is not None:
        keep &= np.asarray(table[cols["slit_index"]]) == slit_index
    if "delete" in cols:
        keep &= np.asarray(table[cols["delete"]]) == 0
    table = table[keep]
    binning = tuple(binning)
    scale = (1, 1) if name.endswith(f"_{binning[0]}x{binning[1]}.fits") or binning == (1, 1) else binning
    x = np.asarray(table[cols["detector_x"]], float) / scale[0]
    y = np.asarray(table[cols["detector_y"]], float) / scale[1]
    near = (x > -margin) & (x < shape[1] + margin) & (y > -margin) & (y < shape[0] + margin)
    return (np.asarray(table[cols["order"]], int)[near], np.asarray(table[cols["wavelength"]], float)[near],
            np.asarray(table[cols["slit_position"]], float)[near], x[near], y[near])


def read_line_list(name, lamps, lamp_elements, orders, wl_ranges):
    """Atlas lines of the lamps that are on, repeated in every order whose range holds them."""
    table = Table.read(static_path(name))
    ion = np.char.strip(np.asarray(table["ion"]).astype(str))
    element = np.char.rstrip(ion, "I")
    allowed = set()
    for lamp in lamps:
        allowed.update(lamp_elements.get(lamp, []))
    keep = np.ones(len(table), bool) if "*" in allowed else np.isin(element, sorted(allowed))
    wl = np.asarray(table["wave"], float)
    amp = np.asarray(table["amplitude"], float)
    keep &= np.isfinite(wl) & np.isfinite(amp) & (amp > 0)
    # an atlas may list one wavelength twice (two ions or sources): one line, both amplitudes
    wl, inverse = np.unique(np.round(wl[keep], 5), return_inverse=True)
    amp = np.bincount(inverse.ravel(), weights=amp[keep], minlength=wl.size)
    parts = [(np.full(int(m.sum()), o), wl[m], amp[m])
             for o, (lo, hi) in zip(orders, wl_ranges) for m in [(wl > lo) & (wl < hi)]]
    return tuple(np.concatenate(p) for p in zip(*parts))


def covered(table_order, table_wavelength, order, wavelength):
    """Lines inside the wavelength range the predicted table covers in their order: the prior holds there."""
    inside = np.zeros(len(order), bool)
    for o in np.unique(order):
        w = table_wavelength[table_order == o]
        if w.size:
            m = order == o
            inside[m] = (wavelength[m] >= w.min()) & (wavelength[m] <= w.max())
    return inside


def order_ranges(arm, margin=0.0):
    """Orders and their (min, max) wavelengths from the bundled spectral-format table."""
    fmt = Table.read(static_path(f"SOXS_SPECTRAL_FORMAT_TAB_{arm}.fits"))
    lo, hi = np.asarray(fmt["WLMINFUL"], float), np.asarray(fmt["WLMAXFUL"], float)
    pad = margin * (hi - lo)
    return np.asarray(fmt["ORDER"], int), list(zip(lo - pad, hi + pad))


@dataclass
class ArcFit:
    """What :meth:`soxs_disp_solution.find_lines` found on the lamp frame."""

    #: the prepared, background-subtracted lamp frame (e-)
    image: np.ndarray
    settings: SolveSettings
    solution: DispersionSolution
    lines: LineMeasurements
    #: the frame's global shift against the first guess
    shift: Shift


class soxs_disp_solution(_base_recipe_):
    """Fit the first-guess dispersion solution of a single-pinhole arc: ``DISP_TAB_<ARM>``."""

    name = "disp_solution"
    raw_kinds = ("pinhole_arc",)
    calibrations = {"MASTER_BIAS": "has_bias", "MASTER_DARK": False}
    #: what the recipe fits, for its error messages
    solution_name = "dispersion solution"

    def degrees(self):
        """Solution degrees ``(order, w, slit)`` from ``--poly`` or the settings."""
        given = self.options.get("--poly")
        degrees = parse_degrees(given, 2) if given else tuple(self.params["degrees"])
        return tuple(degrees) + (0,)

    def solve_settings(self, det):
        """The :class:`~soxspipe.commonutils.dispersion.SolveSettings` from the recipe's settings."""
        p = self.params
        names = {f.name for f in fields(SolveSettings)}
        values = {k.replace("-", "_"): v for k, v in p.items() if k.replace("-", "_") in names}
        values.update(
            degrees=self.degrees(), dispersion_axis=det.dispersion_axis, half_width=tuple(p["half-width"]),
            first_passes=tuple((r, (n, w, 0)) for r, n, w in p["first-passes"]),
            weight_sigma=tuple(p["centroid-window"]) if p["centroid-window"] else None,
            core_ratio=p["core-width-ratio"], clip_sigma=p["fit-clip-sigma"], clip_iterations=p["fit-clip-iterations"],
            saturation=p["saturation-fraction"] * det.saturation_adu * det.gain(self.raw_frames[0].readout))
        return SolveSettings(**values)

    def predicted_model(self, shape):
        """The bundled predicted table's lines (order, wavelength) and the solution fitted to them."""
        p = self.params
        binning = tuple(self.raw_frames[0].binning)
        tables = p["predicted-table"]
        name = tables.get(f"{binning[0]}x{binning[1]}", tables["1x1"])
        order, wavelength, slit, x, y = read_predicted_table(name, binning, shape, p.get("predicted-slit-index"))
        known = np.isin(order, order_ranges(self.arm)[0])
        degrees = tuple(p["predicted-degrees"])
        model, _ = fit_solution(order[known], wavelength[known], slit[known], x[known], y[known],
                                degrees + (0,) * (3 - len(degrees)), wave_variable=p["wave-variable"], sigma=3.0,
                                max_iterations=5)
        return order[known], wavelength[known], model

    def first_guess(self, shape):
        """The lines (order, wavelength) the prior is made from, and the prior predicting the lines."""
        return self.predicted_model(shape)

    def find_lines(self):
        """Prepare the lamp frame, find the lamp's clean lines on it and fit the solution: an :class:`ArcFit`.

        The candidates are the atlas lines of the lamps that are on, at each pinhole
        (setting ``pinhole-positions``, else the slit centre only), predicted on the frame by
        the first guess and not blended; a multi-pinhole line needs ``min-pinholes`` such images.
        Each of the ``stages`` (default 1) measures them from the solution of the last, then
        :meth:`after_stage` may measure more and refit.
        """
        p = self.params
        det = detector(self.arm)
        frame = self.lamp_frame()
        image, variance, mask = frame.data, frame.uncertainty.array ** 2, frame.mask
        settings = self.solve_settings(det)
        axis = det.dispersion_axis
        table_order, table_wavelength, prior = self.first_guess(image.shape)
        orders, ranges = order_ranges(self.arm)
        lamps = sorted({lamp for f in self.raw_frames for lamp in f.lamps})
        order, wavelength, amplitude = read_line_list(p["line-list"], lamps, p["lamp-elements"], orders, ranges)
        positions = p.get("pinhole-positions")
        slit = None
        if positions is not None:
            n_pin = len(positions)
            order, wavelength, amplitude = (np.repeat(a, n_pin) for a in (order, wavelength, amplitude))
            slit = np.tile(np.asarray(positions, float), wavelength.size // n_pin)
        pick = select_candidates(order, wavelength, amplitude, prior, shape=image.shape, dispersion_axis=axis,
                                 line_sigma=p["line-sigma"], half_width=settings.half_width[0 if axis == "x" else 1],
                                 max_bias=p["blend-max-bias"], slit=0.0 if slit is None else slit)
        if slit is not None:
            # a line is measured at every pinhole where it is clean and on the frame, or not at all
            pick = pick[pinhole_sets(order[pick], wavelength[pick], np.ones(pick.size, bool), p["min-pinholes"])]
            slit = slit[pick]
        order, wavelength = order[pick], wavelength[pick]
        log.info("%d images of %d clean lines of %s (lamps %s) predicted on the frame", pick.size,
                 np.unique(np.c_[order, wavelength], axis=0).shape[0], p["line-list"], ", ".join(lamps))
        trusted = covered(table_order, table_wavelength, order, wavelength)
        try:
            for stage in range(p.get("stages", 1)):
                solution, lines, stage_shift = solve_dispersion(image, variance, mask, order, wavelength, prior,
                                                                settings, trusted=trusted, slit=slit)
                shift = stage_shift if stage == 0 else shift
                log.info("stage %d: %d of %d line images used", stage + 1, int(lines.used.sum()), pick.size)
                # each further stage starts from the solution of the last
                prior, trusted = self.after_stage(image, variance, mask, lines, solution, settings), None
        except SolutionError as exc:
            raise DataError(f"{self.raw_frames[0].path}: no {self.solution_name}: {exc}") from None
        return ArcFit(image, settings, prior, lines, shift)

    def after_stage(self, image, variance, mask, lines, solution, settings):
        """The solution a stage ends with (here: the stage's own)."""
        return solution

    def reduce(self):
        p = self.params
        fit = self.find_lines()
        image, solution, lines = fit.image, fit.solution, fit.lines
        self._record_qc(solution, lines, fit.shift, fit.settings.dispersion_axis)
        catg = f"DISP_TAB_{self.arm}"
        table = Table(solution.to_columns())
        line_table = Table(lines.columns())
        plots = [("lines", lambda path: line_frame_plot(image, lines, title=f"{catg} lines", path=path)),
                 ("residuals", lambda path: residual_plot(lines, title=f"{catg} residuals", path=path))]
        degrees = fit.settings.degrees
        cards = {"disp_deg_order": degrees[0], "disp_deg_wave": degrees[1], "disp_deg_slit": degrees[2],
                 "disp_wave_variable": p["wave-variable"]}
        return [Product(catg, table, pro_type="REDUCED", pro_tech="ECHELLE,PINHOLE", header_cards=cards, plots=plots),
                Product(f"DISP_TAB_LINES_{self.arm}", line_table, pro_type="REDUCED", pro_tech="ECHELLE,PINHOLE")]

    def _record_qc(self, solution, lines, shift, axis):
        used = lines.used
        qc = self.qc
        qc.add("LINES TOTAL", int(lines.order.size), "", "clean lines predicted")
        qc.add("LINES DETECTED", int(lines.detected.sum()), "", "lines found and measured")
        qc.add("LINES CLIPPED", int((lines.reason == "clipped").sum()), "", "lines clipped by the fit")
        qc.add("LINES USED FRAC", float(used.mean()), "", "predicted lines used")
        qc.add("LINES SATURATED FRAC", float((lines.reason == "saturated").mean()), "", "lines saturated")
        qc.add("SHIFT X", shift.dx, "px", "x shift vs prediction")
        qc.add("SHIFT Y", shift.dy, "px", "y shift vs prediction")
        for name, res in (("X", lines.x - lines.x_fit), ("Y", lines.y - lines.y_fit)):
            qc.add(f"{name}RES MEDIAN", float(np.median(res[used])), "px", f"median {name.lower()} residual")
            qc.add(f"{name}RES RMS", float(np.sqrt(np.mean(res[used] ** 2))), "px", f"{name.lower()} residual RMS")
        # widths from each line's core: faint neighbours in the wings do not widen them
        fwhm_x, fwhm_y = 2.3548 * lines.core_sigma_x[used], 2.3548 * lines.core_sigma_y[used]
        qc.add("FWHM X", float(np.nanmedian(fwhm_x)), "px", "pinhole image FWHM in x")
        qc.add("FWHM Y", float(np.nanmedian(fwhm_y)), "px", "pinhole image FWHM in y")
        fwhm_d = fwhm_y if axis == "y" else fwhm_x
        with np.errstate(divide="ignore", invalid="ignore"):
            dispersion = solution.dispersion(lines.order[used], lines.wavelength[used], axis)
            power = lines.wavelength[used] / (fwhm_d * dispersion)
        qc.add("RESOLVING POWER", float(np.nanmedian(power)), "", "median lambda/FWHM")
