"""soxs_spatial_solution: the full dispersion and spatial solution from a multi-pinhole arc.

Prepare the arc (bias-subtracted, or minus its lamp-off partner or a master
dark); predict every clean atlas line at each of the 9 pinholes from the bundled
multi-pinhole table, shifted onto the first-guess ``DISP_TAB`` (single pinhole);
find and centroid the line images with the disp_solution engine; measure the
images missing next to measured ones along the slit (where the prediction
extrapolates, e.g. over the half of NIR order 10 beyond the first guess's lines);
drop a line's pinhole set when too few of its images are measured; fit
``X(n, w, s)`` and ``Y(n, w, s)`` with sigma clipping; a second stage does it all
again from that solution. Products: ``DISP_TAB_<ARM>`` (the full
solution), ``DISP_TAB_LINES_<ARM>`` (every line image and its fate) and
``DISP_IMAGE_<ARM>`` (wavelength, slit position and order of every pixel).
"""

import logging
from dataclasses import dataclass

import numpy as np
from astropy.table import Table

from ..commonutils.arc_plots import line_frame_plot, residual_map_plot, resolving_power_plot
from ..commonutils.disp_image import invert_solution
from ..commonutils.dispersion import (SLIT_RANGE, DispersionSolution, SolutionError, extend_along_slit, fit_solution,
                                      pinhole_sets)
from ..commonutils.polynomials import FitError
from ..products import read_dispersion_solution, read_order_table
from ._base_recipe_ import Product
from .soxs_disp_solution import order_ranges, parse_degrees, soxs_disp_solution

log = logging.getLogger(__name__)


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
    solution_name = "spatial solution"

    def degrees(self):
        """Solution degrees ``(order, w, slit)`` from ``--poly`` or the settings."""
        given = self.options.get("--poly")
        return parse_degrees(given, 3) if given else tuple(self.params["degrees"])

    def first_guess(self, shape):
        """The multi-pinhole table's lines and the prior: the table's model shifted onto the first-guess DISP_TAB."""
        order, wavelength, model = self.predicted_model(shape)
        first = read_dispersion_solution(self.calibration_frames["DISP_TAB"].path)
        return order, wavelength, PinholePrior(first, model)

    def after_stage(self, image, variance, mask, lines, solution, settings):
        """Measure the images missing next to measured ones along the slit, then refit without the lines
        left with too few images.

        The table's pinhole offsets are off by pixels in places, and the solution of a
        stage extrapolates beyond its lines; along the slit, the images of one line
        predict the next (:func:`~soxspipe.commonutils.dispersion.extend_along_slit`).
        """
        extend_along_slit(image, variance, mask, lines, self.params["pinhole-positions"], settings)
        return self._pinhole_sets(lines, settings)

    def reduce(self):
        p = self.params
        fit = self.find_lines()
        image, solution, lines, axis = fit.image, fit.solution, fit.lines, fit.settings.dispersion_axis
        orders, ranges = order_ranges(self.arm)
        power = self._record_qc(solution, lines, fit.shift, axis, np.asarray(p["pinhole-positions"]))
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
                               image.shape, axis, slit_range=tuple(p["slit-range"]),
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

