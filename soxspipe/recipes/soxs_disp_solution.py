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
from dataclasses import fields

import numpy as np
from astropy.table import Table

from ..commonutils.detectors import detector
from ..commonutils.dispersion import SolutionError, SolveSettings, fit_solution, select_candidates, solve_dispersion
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


def read_predicted_table(name, slit_index, binning, shape, margin=60):
    """Order, wavelength and (x, y) of the single pinhole from a bundled predicted table, at ``binning``.

    Rows predicted further than ``margin`` pixels off the frame (of numpy ``shape``) are
    dropped: ray-traced tables are not smooth far off the detector.
    """
    table = Table.read(static_path(name))
    cols = {c.lower(): c for c in table.colnames}
    keep = np.asarray(table[cols["slit_index"]]) == slit_index
    if "delete" in cols:
        keep &= np.asarray(table[cols["delete"]]) == 0
    table = table[keep]
    scale = (1, 1) if name.endswith(f"_{binning[0]}x{binning[1]}.fits") or binning == (1, 1) else binning
    x = np.asarray(table[cols["detector_x"]], float) / scale[0]
    y = np.asarray(table[cols["detector_y"]], float) / scale[1]
    near = (x > -margin) & (x < shape[1] + margin) & (y > -margin) & (y < shape[0] + margin)
    return (np.asarray(table[cols["order"]], int)[near], np.asarray(table[cols["wavelength"]], float)[near],
            x[near], y[near])


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


class soxs_disp_solution(_base_recipe_):
    """Fit the first-guess dispersion solution of a single-pinhole arc: ``DISP_TAB_<ARM>``."""

    name = "disp_solution"
    raw_kinds = ("pinhole_arc",)
    calibrations = {"MASTER_BIAS": "has_bias", "MASTER_DARK": False}

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

    def first_guess(self, shape):
        """The predicted table's lines (order, wavelength) and the solution fitted to them."""
        p = self.params
        binning = tuple(self.raw_frames[0].binning)
        tables = p["predicted-table"]
        table = tables.get(f"{binning[0]}x{binning[1]}", tables["1x1"])
        order, wavelength, x, y = read_predicted_table(table, p["predicted-slit-index"], binning, shape)
        known = np.isin(order, order_ranges(self.arm)[0])
        prior, _ = fit_solution(order[known], wavelength[known], 0.0, x[known], y[known],
                                tuple(p["predicted-degrees"]) + (0,), wave_variable=p["wave-variable"], sigma=3.0,
                                max_iterations=5)
        return order[known], wavelength[known], prior

    def reduce(self):
        p = self.params
        det = detector(self.arm)
        first = self.raw_frames[0]
        frame = self.lamp_frame()
        image, variance, mask = frame.data, frame.uncertainty.array ** 2, frame.mask
        settings = self.solve_settings(det)

        po, pw, prior = self.first_guess(image.shape)
        orders, ranges = order_ranges(self.arm)
        lamps = sorted({lamp for f in self.raw_frames for lamp in f.lamps})
        lo, lw, la = read_line_list(p["line-list"], lamps, p["lamp-elements"], orders, ranges)
        pick = select_candidates(lo, lw, la, prior, shape=image.shape, dispersion_axis=det.dispersion_axis,
                                 line_sigma=p["line-sigma"],
                                 half_width=settings.half_width[0 if det.dispersion_axis == "x" else 1],
                                 max_bias=p["blend-max-bias"])
        log.info("%d clean lines of %s (lamps %s) predicted on the frame", pick.size, p["line-list"], ", ".join(lamps))
        try:
            solution, lines, shift = solve_dispersion(image, variance, mask, lo[pick], lw[pick], prior, settings,
                                                      trusted=covered(po, pw, lo[pick], lw[pick]))
        except SolutionError as exc:
            raise DataError(f"{first.path}: no dispersion solution: {exc}") from None

        self._record_qc(solution, lines, shift, det.dispersion_axis)
        catg = f"DISP_TAB_{self.arm}"
        table = Table(solution.to_columns())
        line_table = Table(lines.columns())
        plots = [("lines", lambda path: line_frame_plot(image, lines, title=f"{catg} lines", path=path)),
                 ("residuals", lambda path: residual_plot(lines, title=f"{catg} residuals", path=path))]
        degrees = settings.degrees
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
