"""soxs_order_centres: order-centre traces from a single-pinhole flat.

Prepare the flat (bias-subtracted, or minus its lamp-off partner or a master
dark), predict each order's centre trace with the ``DISP_TAB`` solution, measure
the centre in many cuts across the orders at once, and fit one polynomial of the
cross-dispersion position in (order, dispersion pixel) with sigma clipping.
Product: ``ORDER_TAB_<ARM>``, one row per order with its trace coefficients and
its extent along the dispersion.
"""

import logging

import numpy as np
from astropy.table import Table

from ..commonutils.arc_plots import trace_plot
from ..commonutils.detectors import detector
from ..commonutils.errors import DataError
from ..commonutils.polynomials import FitError, fit_clipped, restrict
from ..commonutils.traces import OrderTraces, trace_centres
from ..products import read_dispersion_solution
from ._base_recipe_ import Product, _base_recipe_
from .soxs_disp_solution import order_ranges, parse_degrees

log = logging.getLogger(__name__)


def predicted_cuts(solution, orders, ranges, shape, dispersion_axis, step):
    """Cut positions along each order's predicted centre: arrays ``order, d, c``."""
    nd = shape[0] if dispersion_axis == "y" else shape[1]
    nc = shape[1] if dispersion_axis == "y" else shape[0]
    out = []
    for o, (lo, hi) in zip(orders, ranges):
        wl = np.linspace(lo, hi, 4000)
        x, y = solution.xy(np.full(wl.size, o), wl, 0.0)
        d, c = (y, x) if dispersion_axis == "y" else (x, y)
        idx = np.argsort(d)
        d, c = d[idx], c[idx]
        start, stop = max(int(np.ceil(d[0])), 0), min(int(np.floor(d[-1])), nd - 1)
        grid = np.arange(start, stop + 1, step)
        cg = np.interp(grid, d, c)
        keep = (cg >= 0) & (cg <= nc - 1)
        out.append((np.full(int(keep.sum()), o), grid[keep], cg[keep]))
    return tuple(np.concatenate(p) for p in zip(*out))


class soxs_order_centres(_base_recipe_):
    """Trace the order centres of a single-pinhole flat: ``ORDER_TAB_<ARM>``."""

    name = "order_centres"
    raw_kinds = ("pinhole_flat",)
    calibrations = {"DISP_TAB": True, "MASTER_BIAS": "has_bias", "MASTER_DARK": False}

    def reduce(self):
        p = self.params
        axis = detector(self.arm).dispersion_axis
        given = self.options.get("--poly")
        degrees = parse_degrees(given, 2) if given else tuple(p["degrees"])
        frame = self.lamp_frame()
        image, variance, mask = frame.data, frame.uncertainty.array ** 2, frame.mask
        solution = read_dispersion_solution(self.calibration_frames["DISP_TAB"].path)
        orders, ranges = order_ranges(self.arm, p["wavelength-margin"])
        order, d, c = predicted_cuts(solution, orders, ranges, image.shape, axis, p["cut-step"])
        s = trace_centres(image, d, c, dispersion_axis=axis, half_width=p["half-width"], average=p["cut-average"],
                          ring=p["ring"], variance=variance, mask=mask)
        with np.errstate(all="ignore"):
            good = (np.isfinite(s.centre) & ~s.off_frame & (s.n_masked == 0)
                    & (s.flux >= p["min-snr"] * s.flux_error))
        for o in orders:
            n = int((good & (order == o)).sum())
            if n < p["min-cuts-per-order"]:
                raise DataError(f"{self.raw_frames[0].path}: order {o} is missing from the flat: {n} good cuts "
                                f"(at least {p['min-cuts-per-order']} needed) where the DISP_TAB puts it")
        nd = image.shape[0] if axis == "y" else image.shape[1]
        n_orders = np.unique(order[good]).size
        degrees = (min(degrees[0], n_orders - 1), degrees[1])
        try:
            fit = fit_clipped([order, d], s.centre, degrees, lows=(orders.min(), 0), highs=(orders.max(), nd - 1),
                              sigma=p["fit-clip-sigma"], max_iterations=p["fit-clip-iterations"], min_sigma=0.005,
                              used=good)
        except FitError as exc:
            raise DataError(f"{self.raw_frames[0].path}: the traces cannot be fitted: {exc}") from None
        poly = fit.polynomials[0]
        coeffs = [restrict(poly, 0, o).coeffs for o in orders]
        extent = np.array([[d[fit.used & (order == o)].min(), d[fit.used & (order == o)].max()] for o in orders])
        traces = OrderTraces(orders, coeffs, 0.0, float(nd - 1), extent, axis)

        residual = fit.residuals[fit.used, 0]
        self.qc.add("ORDERS FOUND", int(n_orders), "", "orders traced")
        self.qc.add("TRACE SAMPLES", int(fit.used.sum()), "", "cuts used in the fit")
        self.qc.add("TRACE CLIPPED", int(fit.n_clipped - (~good).sum()), "", "cuts clipped from the fit")
        self.qc.add("TRACE RES RMS", float(np.sqrt(np.mean(residual ** 2))), "px", "RMS of trace residuals")

        catg = f"ORDER_TAB_{self.arm}"
        curves = {}
        for k, o in enumerate(orders):
            dd = np.linspace(extent[k, 0], extent[k, 1], 200)
            curves[int(o)] = (dd, traces.centre(o, dd))
        plot = ("traces", lambda path: trace_plot(image, curves, axis, title=catg, path=path))
        cards = {"order_deg_order": degrees[0], "order_deg_disp": degrees[1]}
        return [Product(catg, Table(traces.to_columns()), pro_type="REDUCED", pro_tech="ECHELLE,PINHOLE",
                        header_cards=cards, plots=[plot])]
