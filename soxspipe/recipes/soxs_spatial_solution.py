"""soxs_spatial_solution: the full dispersion and spatial solution from a multi-pinhole arc.

Prepare the arc (bias-subtracted, or minus its lamp-off partner or a master
dark); predict every clean atlas line at each of the 9 pinholes from the bundled
multi-pinhole table, shifted onto the first-guess ``DISP_TAB`` (single pinhole);
find and centroid the line images with the disp_solution engine; drop a line's
pinhole set when too few of its images are measured; fit ``X(n, w, s)`` and
``Y(n, w, s)`` with sigma clipping. Products: ``DISP_TAB_<ARM>`` (the full
solution), ``DISP_TAB_LINES_<ARM>`` (every line image and its fate) and
``DISP_IMAGE_<ARM>`` (wavelength, slit position and order of every pixel).
"""

import logging
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..commonutils.arc_plots import line_frame_plot, residual_map_plot, resolving_power_plot
from ..commonutils.detectors import detector
from ..commonutils.disp_image import invert_solution
from ..commonutils.dispersion import (SLIT_RANGE, DispersionSolution, SolutionError, fit_solution, select_candidates,
                                      solve_dispersion)
from ..commonutils.errors import DataError
from ..commonutils.polynomials import FitError
from ..products import read_dispersion_solution, read_order_table
from ..static_calibrations import path as static_path
from ._base_recipe_ import Product
from .soxs_disp_solution import covered, order_ranges, parse_degrees, read_line_list, soxs_disp_solution

log = logging.getLogger(__name__)


def read_pinhole_table(name, binning, shape, margin=60):
    """Order, wavelength, slit position (arcsec) and (x, y) of every row of a bundled multi-pinhole table.

    Positions are divided by the binning unless the table is made for it; rows
    predicted further than ``margin`` pixels off the frame (numpy ``shape``) are dropped.
    """
    table = Table.read(static_path(name))
    cols = {c.lower(): c for c in table.colnames}
    if "delete" in cols:
        table = table[np.asarray(table[cols["delete"]]) == 0]
    scale = (1, 1) if name.endswith(f"_{binning[0]}x{binning[1]}.fits") or tuple(binning) == (1, 1) else binning
    x = np.asarray(table[cols["detector_x"]], float) / scale[0]
    y = np.asarray(table[cols["detector_y"]], float) / scale[1]
    near = (x > -margin) & (x < shape[1] + margin) & (y > -margin) & (y < shape[0] + margin)
    return (np.asarray(table[cols["order"]], int)[near], np.asarray(table[cols["wavelength"]], float)[near],
            np.asarray(table[cols["slit_position"]], float)[near], x[near], y[near])


@dataclass
class PinholePrior:
    """First-guess positions of line images at any slit position.

    The first-guess solution places the slit centre; the predicted multi-pinhole
    table's model adds the offset of each slit position from the centre.
    """

    first_guess: DispersionSolution
    table: DispersionSolution

    def xy(self, order, wavelength, slit=0.0):
        """``(x, y)`` of arrays of order, wavelength (nm) and slit position (arcsec)."""
        x0, y0 = self.first_guess.xy(order, wavelength, 0.0)
        xt, yt = self.table.xy(order, wavelength, slit)
        xc, yc = self.table.xy(order, wavelength, 0.0)
        return x0 + xt - xc, y0 + yt - yc


def pinhole_sets(order, wavelength, found, minimum):
    """Line images whose line (order, wavelength) has at least ``minimum`` images ``found``."""
    key = np.unique(np.c_[order, np.round(wavelength, 5)], axis=0, return_inverse=True)[1].ravel()
    counts = np.bincount(key, weights=found.astype(float))
    return counts[key] >= minimum


def order_edges(table):
    """``edges(order, d)`` of an ORDER_TAB with edges; orders the table lacks are unbounded."""
    def edges(order, d):
        if order[0] in table.orders:
            return table.edges(order, d)
        return np.full(np.shape(d), -np.inf), np.full(np.shape(d), np.inf)
    return edges


class soxs_spatial_solution(soxs_disp_solution):
    """Fit the full dispersion and spatial solution of a multi-pinhole arc: ``DISP_TAB_<ARM>``, ``DISP_IMAGE_<ARM>``."""

    name = "spat_solution"
    raw_kinds = ("multipinhole_arc",)
    calibrations = {"MASTER_BIAS": "has_bias", "MASTER_DARK": False, "DISP_TAB": True, "ORDER_TAB": False,
                    "MASTER_FLAT": False}

    def degrees(self):
        """Solution degrees ``(order, w, slit)`` from ``--poly`` or the settings."""
        given = self.options.get("--poly")
        return parse_degrees(given, 3) if given else tuple(self.params["degrees"])

    def first_guess(self, shape):
        """The multi-pinhole table's lines and the prior: the table's model shifted onto the first-guess DISP_TAB."""
        p = self.params
        binning = tuple(self.raw_frames[0].binning)
        tables = p["predicted-table"]
        table = tables.get(f"{binning[0]}x{binning[1]}", tables["1x1"])
        order, wavelength, slit, x, y = read_pinhole_table(table, binning, shape)
        known = np.isin(order, order_ranges(self.arm)[0])
        model, _ = fit_solution(order[known], wavelength[known], slit[known], x[known], y[known],
                                tuple(p["predicted-degrees"]), wave_variable=p["wave-variable"], sigma=3.0,
                                max_iterations=5)
        first = read_dispersion_solution(self.calibration_frames["DISP_TAB"].path)
        return order[known], wavelength[known], PinholePrior(first, model)

    def reduce(self):
        p = self.params
        det = detector(self.arm)
        raw = self.raw_frames[0]
        frame = self.lamp_frame()
        image, variance, mask = frame.data, frame.uncertainty.array ** 2, frame.mask
        settings = self.solve_settings(det)

        po, pw, prior = self.first_guess(image.shape)
        orders, ranges = order_ranges(self.arm)
        lamps = sorted({lamp for f in self.raw_frames for lamp in f.lamps})
        lo, lw, la = read_line_list(p["line-list"], lamps, p["lamp-elements"], orders, ranges)
        positions = np.asarray(p["pinhole-positions"], float)
        n_pin = positions.size
        lo, lw, la = (np.repeat(a, n_pin) for a in (lo, lw, la))
        ls = np.tile(positions, lw.size // n_pin)
        pick = select_candidates(lo, lw, la, prior, shape=image.shape, dispersion_axis=det.dispersion_axis,
                                 line_sigma=p["line-sigma"],
                                 half_width=settings.half_width[0 if det.dispersion_axis == "x" else 1],
                                 max_bias=p["blend-max-bias"], slit=ls)
        # a line is measured at every pinhole where it is clean and on the frame, or not at all
        pick = pick[pinhole_sets(lo[pick], lw[pick], np.ones(pick.size, bool), p["min-pinholes"])]
        log.info("%d images of %d clean lines of %s (lamps %s) predicted on the frame", pick.size,
                 np.unique(np.c_[lo[pick], lw[pick]], axis=0).shape[0], p["line-list"], ", ".join(lamps))
        trusted = covered(po, pw, lo[pick], lw[pick])
        try:
            # the table's pinhole offsets are off by pixels in places: each further stage starts from
            # the solution of the last, fitted to the images found near the slit centre there
            for stage in range(p["stages"]):
                solution, lines, stage_shift = solve_dispersion(image, variance, mask, lo[pick], lw[pick], prior,
                                                                settings, trusted=trusted, slit=ls[pick])
                shift = stage_shift if stage == 0 else shift
                log.info("stage %d: %d of %d line images used", stage + 1, int(lines.used.sum()), pick.size)
                prior, trusted = solution, None
            solution = self._pinhole_sets(lines, settings)
        except SolutionError as exc:
            raise DataError(f"{raw.path}: no spatial solution: {exc}") from None

        power = self._record_qc(solution, lines, shift, det.dispersion_axis, positions)
        order_table = self.calibration_frames.get("ORDER_TAB")
        edges = None
        if order_table is not None:
            table = read_order_table(order_table.path)
            if table.has_edges:
                edges = order_edges(table)
            else:
                log.info("the ORDER_TAB holds no order edges: the orders are bounded by the solution's slit ends")
        maps = invert_solution(solution, orders, [(a - p["image-margin"] * (b - a), b + p["image-margin"] * (b - a))
                                                  for a, b in ranges],
                               image.shape, det.dispersion_axis, slit_range=tuple(p["slit-range"]),
                               n_slit=p["image-slit-samples"], samples_per_pixel=p["image-samples-per-pixel"],
                               edges=edges)
        self.qc.add("PIXELS IN ORDERS", int((maps.order > 0).sum()), "", "pixels mapped in DISP_IMAGE")

        catg = f"DISP_TAB_{self.arm}"
        plots = [("lines", lambda path: line_frame_plot(image, lines, title=f"{catg} lines", path=path)),
                 ("residuals", lambda path: residual_map_plot(lines, title=f"{catg} residuals", path=path)),
                 ("resolution", lambda path: resolving_power_plot(*power, title=f"{catg} resolving power",
                                                                  path=path))]
        degrees = solution.degrees
        cards = {"disp_deg_order": degrees[0], "disp_deg_wave": degrees[1], "disp_deg_slit": degrees[2],
                 "disp_wave_variable": p["wave-variable"]}
        tech = "ECHELLE,MULTI-PINHOLE"
        return [Product(catg, Table(solution.to_columns()), pro_type="REDUCED", pro_tech=tech, header_cards=cards,
                        plots=plots),
                Product(f"DISP_TAB_LINES_{self.arm}", Table(lines.columns()), pro_type="REDUCED", pro_tech=tech),
                Product(f"DISP_IMAGE_{self.arm}", {"WAVELENGTH": maps.wavelength, "SLIT": maps.slit,
                                                   "ORDER": maps.order}, pro_type="REDUCED", pro_tech=tech)]

    def _pinhole_sets(self, lines, settings):
        """Drop the lines with too few measured pinhole images, refit, and return the solution."""
        p = self.params
        enough = pinhole_sets(lines.order, lines.wavelength, lines.used, p["min-pinholes"])
        lines.reason = np.where(lines.used & ~enough, "few pinholes", lines.reason)
        good = lines.reason == ""
        if not good.any():
            raise SolutionError(f"no line has {p['min-pinholes']} of its pinhole images measured")
        w = lines.order * lines.wavelength if settings.wave_variable == "order*wavelength" else lines.wavelength
        ranges = ((lines.order.min(), w.min(), SLIT_RANGE[0]), (lines.order.max(), w.max(), SLIT_RANGE[1]))
        try:
            solution, fit = fit_solution(lines.order, lines.wavelength, lines.slit, lines.x, lines.y,
                                         settings.degrees, wave_variable=settings.wave_variable,
                                         sigma=settings.clip_sigma, max_iterations=settings.clip_iterations,
                                         used=good, ranges=ranges, min_sigma=settings.fit_min_sigma)
        except FitError as exc:
            raise SolutionError(f"too few good lines for the fit: {exc}") from None
        lines.reason = np.where(good & ~fit.used, "clipped", lines.reason)
        lines.x_fit, lines.y_fit = solution.xy(lines.order, lines.wavelength, lines.slit)
        return solution

    def _record_qc(self, solution, lines, shift, axis, positions):
        """Record the QC; return (wavelength, resolving power, order) of the used line images for the plot."""
        super()._record_qc(solution, lines, shift, axis)
        used = lines.used
        qc = self.qc
        for name, res in (("X", lines.x - lines.x_fit), ("Y", lines.y - lines.y_fit)):
            qc.add(f"{name}RES SD", float(np.std(res[used])), "px", f"{name.lower()} residual standard deviation")
        counts = [int((used & np.isclose(lines.slit, s)).sum()) for s in positions]
        for k, n in enumerate(counts):
            qc.add(f"PINHOLE{k} LINES", n, "", f"line images used at pinhole {k} ({positions[k]:+.2f} arcsec)")
        qc.add("PINHOLE LINES MIN", int(min(counts)), "", "fewest line images used at one pinhole")
        core = lines.core_sigma_y if axis == "y" else lines.core_sigma_x
        with np.errstate(divide="ignore", invalid="ignore"):
            dispersion = solution.dispersion(lines.order, lines.wavelength, axis)
            power = lines.wavelength / (2.3548 * core * dispersion)
        ok = used & np.isfinite(power)
        for o in np.unique(lines.order):
            m = ok & (lines.order == o)
            if m.any():
                qc.add(f"ORDER{int(o)} FWHM", float(np.median(2.3548 * core[m])), "px",
                       f"order {int(o)} line FWHM along the dispersion")
                qc.add(f"ORDER{int(o)} RES POWER", float(np.median(power[m])), "",
                       f"order {int(o)} median lambda/FWHM")
        return lines.wavelength[ok], power[ok], lines.order[ok]

