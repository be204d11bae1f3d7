"""soxs_mflat: the master flat.

One recipe for every arm; the arm's detector parameters choose the steps. An
arm without a dispersion axis (the acquisition camera) takes the imaging steps:

- sky (``FLAT,SKY``) or dome (``FLAT,LAMP``) flats of one filter are prepared
  with the ``MASTER_BIAS`` and, where given, the ``MASTER_DARK`` scaled to each
  exposure time;
- the illuminated circular field is found in each flat, and each flat is scaled
  to the set's mean level inside it (twilight flats fade from frame to frame);
- the flats are stacked with the shared sigma-clipped combine and normalised to
  1 at the field centre, so the master carries the vignetting and the
  pixel-to-pixel response; pixels outside the field and of low response are
  flagged in ``QUAL``;
- the product is ``MASTER_FLAT_ACQ_<filter>``.

An arm with a dispersion axis (VIS, NIR) takes the spectroscopic steps:

- the lamp-on slit flats are prepared (``MASTER_BIAS``) and have their lamp-off
  partners (combined) or the ``MASTER_DARK`` subtracted, and are grouped by lamp
  (VIS: QTH and D2);
- per lamp, each flat is scaled to the set's mean level in the orders' cores
  (from the ``ORDER_TAB`` centres) and the flats are stacked;
- each order's edges are measured on the stack of the lamp that serves it
  (settings ``lamp-orders``) in many cuts at once and fitted per order;
- per lamp, the scattered light between the orders is modelled and subtracted,
  and the flat is divided by its smooth lamp spectrum times slit-illumination
  profile; the orders are stitched from their lamps' flats, 1 outside them;
- the products are ``MASTER_FLAT_<ARM>`` (the pixel-to-pixel response, low
  sensitivity and dead pixels flagged) and ``ORDER_TAB_<ARM>`` (the centres of
  the given ``ORDER_TAB`` with both edges of every order).
"""

import logging

import numpy as np
from astropy.nddata import CCDData, StdDevUncertainty
from scipy import ndimage

from astropy.table import Table

from ..commonutils.arc_plots import trace_plot
from ..commonutils.detector_qc import robust_stats
from ..commonutils.detectors import detector
from ..commonutils.errors import DataError
from ..commonutils.flat_normalise import FlatModel, flat_model, response_map
from ..commonutils.imaging_flat import field_level, find_field, normalise_flat
from ..commonutils.order_edges import OrderTable, dispersion_major, fit_edges, measure_edges, order_map, slit_scale
from ..commonutils.polynomials import FitError
from ..commonutils.qc_plots import detector_frame_plot
from ..commonutils.scattered_light import scattered_light
from ..products import read_order_table
from ..static_calibrations import path as static_path
from ._base_recipe_ import Product, _base_recipe_

log = logging.getLogger(__name__)


class soxs_mflat(_base_recipe_):
    """Combine flats into a master flat: ``MASTER_FLAT_<ARM>`` + ``ORDER_TAB_<ARM>`` (VIS, NIR) or
    ``MASTER_FLAT_ACQ_<filter>`` (the acquisition camera)."""

    name = "mflat"
    raw_kinds = ("imaging_flat", "slit_flat")
    #: the DISP_TAB is accepted (the organiser gives it) but not used
    calibrations = {"MASTER_BIAS": "has_bias", "MASTER_DARK": False, "DISP_TAB": False, "ORDER_TAB": ["VIS", "NIR"]}
    same_filter = True

    def reduce(self):
        if detector(self.arm).dispersion_axis is None:
            return self.reduce_imaging()
        return self.reduce_spectroscopic()

    # -- imaging -------------------------------------------------------------------

    def reduce_imaging(self):
        """Master flat of an imaging camera: one filter, normalised over the illuminated circular field."""
        acq_filter = self.raw_frames[0].acq_filter
        if not acq_filter:
            raise DataError(f"{self.raw_frames[0].path}: an imaging flat without a filter keyword; cannot name the master flat")
        p = self.params
        bias, dark = self.calibration("MASTER_BIAS"), self.calibration("MASTER_DARK")
        frames = [self.detrend(f, bias, dark) for f in self.raw_frames]

        fields, levels = [], []
        for raw, ccd in zip(self.raw_frames, frames):
            try:
                fld = find_field(ccd.data, ccd.mask, threshold=p["field-threshold"])
            except DataError as exc:
                raise DataError(f"{raw.path}: {exc}; is it an exposed flat?") from None
            fields.append(fld)
            levels.append(field_level(ccd.data, fld, ccd.mask, inner_fraction=0.8))
        ref = fields[0]
        for raw, fld in zip(self.raw_frames, fields):
            if np.hypot(fld.x - ref.x, fld.y - ref.y) > p["field-tolerance"]:
                raise DataError(f"{raw.path}: its illuminated field is centred at ({fld.x:.0f}, {fld.y:.0f}) px, "
                                f"not at ({ref.x:.0f}, {ref.y:.0f}) as in {self.raw_frames[0].path}; remove it")
        levels = np.asarray(levels)
        if not np.all(levels > 0):
            raise DataError(f"{self.raw_frames[int(np.argmin(levels))].path}: a flat with no signal in its field")
        stacked = self.combine_at_common_level(frames, levels, acq_filter)

        fld = find_field(stacked.data, stacked.mask, threshold=p["field-threshold"])
        flat, err, mask, level = normalise_flat(stacked.data, stacked.uncertainty.array, stacked.mask, fld,
                                                centre_fraction=p["centre-fraction"], edge_margin=p["edge-margin"],
                                                low_response=p["low-response"])
        inside = fld.mask(flat.shape, margin=p["edge-margin"])
        low = inside & mask
        smooth = ndimage.uniform_filter(flat, 15)
        _, rms = robust_stats(flat - smooth, mask | ~fld.mask(flat.shape, margin=15.0))

        self.qc.add("FIELD FRAC", float(inside.mean()), "", "pixels inside field")
        self.qc.add("FIELD X", fld.x, "px", "field centre, 0-based")
        self.qc.add("FIELD Y", fld.y, "px", "field centre, 0-based")
        self.qc.add("FIELD RADIUS", fld.radius, "px", "field radius")
        self.qc.add("FLAT LEVEL RATIO", float(levels.min() / levels.max()), "", "faintest/brightest")
        self.qc.add("FLAT LEVEL", float(level), "e", "at the field centre")
        self.qc.add("LOWRESP FRAC", float(low.sum() / max(inside.sum(), 1)), "", "field pixels flagged")
        self.qc.add("FLAT RMS", rms, "", "pixel-to-pixel rms")

        master = CCDData(flat, unit="", mask=mask, uncertainty=StdDevUncertainty(err), meta=stacked.meta)
        catg = f"MASTER_FLAT_{self.arm}_{acq_filter}"
        plot = ("master", lambda path: detector_frame_plot(flat, mask=mask, title=f"{catg} ({len(frames)} flats)",
                                                           path=path, unit="relative"))
        return [Product(catg, master, pro_type="REDUCED", pro_tech="IMAGE", plots=[plot])]

    # -- spectroscopic -------------------------------------------------------------

    def reduce_spectroscopic(self):
        """Master flat and order edges of a spectroscopic arm from slit flats and the ``ORDER_TAB``."""
        p = self.params
        det = detector(self.arm)
        axis = det.dispersion_axis
        traces = read_order_table(self.calibration_frames["ORDER_TAB"].path)
        if traces.dispersion_axis != axis:
            raise DataError(f"{self.calibration_frames['ORDER_TAB'].path}: an order table with the dispersion along "
                            f"{traces.dispersion_axis}, but {self.arm} disperses along {axis}; give the {self.arm} ORDER_TAB")
        sets = self.slit_flat_sets()
        orders = np.asarray(traces.orders)
        choice = lamp_choice(orders, list(sets), p["lamp-orders"])
        shape = next(iter(sets.values()))[0].shape
        nd, nc = dispersion_major(np.empty(shape, bool), axis).shape
        if abs(traces.d_high - (nd - 1)) > 0.5:
            raise DataError(f"{self.calibration_frames['ORDER_TAB'].path}: the order table spans {traces.d_high + 1:.0f} "
                            f"px along the dispersion but the flats {nd}; is it of another binning?")
        scale = self.slit_scale(orders)
        half = 0.5 * det.slit_length_arcsec * scale
        grid = np.arange(nd)
        centres = traces.centre(orders[:, None], grid[None, :])
        valid = (grid[None, :] >= traces.extent[:, :1]) & (grid[None, :] <= traces.extent[:, 1:])
        valid &= (centres >= 0) & (centres <= nc - 1)
        core, _ = order_map((nd, nc), orders, centres - 0.3 * half[:, None], centres + 0.3 * half[:, None], valid)

        stacks = {lamp: self.level_stack(frames, core > 0, axis, lamp) for lamp, frames in sets.items()}

        lower, upper, resid = self.measure_order_edges(stacks, choice, orders, centres, valid, half)
        table = OrderTable.with_edges(traces, [lower[o] for o in orders], [upper[o] for o in orders])
        low_edge, high_edge = table.edges(orders[:, None], grid[None, :])
        labels, u = order_map((nd, nc), orders, low_edge, high_edge, valid)
        wide, _ = order_map((nd, nc), orders, low_edge - p["scatter-margin"], high_edge + p["scatter-margin"], valid)

        flat, error, fm, bad, scatter = self.stitched_flat(stacks, choice, orders, labels, u, wide == 0)
        inside = fm.inside
        response, response_error, qual, low = response_map(flat, error, fm, mask=bad, low_response=p["low-response"])

        with np.errstate(all="ignore"):
            lengths = np.array([np.nanmedian((high_edge[k] - low_edge[k])[valid[k]]) for k in range(orders.size)]) / scale
        good = inside & ~qual
        _, resp_rms = robust_stats(response[good] - 1.0, None) if good.any() else (0.0, float("nan"))
        self.qc.add("ORDERS", int(orders.size), "", "orders with edges")
        self.qc.add("FLAT INNER MEAN", float(flat[good].mean()), "e", "mean flat level inside the orders")
        self.qc.add("FLAT INNER SUM", float(flat[good].sum()), "e", "summed flat inside the orders")
        self.qc.add("EDGE RES RMS", float(np.sqrt(np.mean(resid ** 2))), "px", "RMS of edge-fit residuals")
        self.qc.add("EDGE RES MAX", float(np.abs(resid).max()), "px", "largest edge-fit residual")
        self.qc.add("LOWSENS NPIX", int(low.sum()), "", "low-sensitivity pixels in the orders")
        self.qc.add("FLAT RMS", float(resp_rms), "", "pixel-to-pixel rms inside the orders")
        for o, length in zip(orders, lengths):
            self.qc.add(f"SLIT LENGTH O{o}", float(length), "arcsec", f"slit length in order {o}")
        log.info("edges of %d orders: fit residual rms %.3f px; slit %.2f..%.2f arcsec; %d low-sensitivity pixels",
                 orders.size, float(np.sqrt(np.mean(resid ** 2))), float(np.nanmin(lengths)), float(np.nanmax(lengths)),
                 int(low.sum()))

        def native(array):
            """Back to the frame's own orientation (the transpose is its own inverse)."""
            return np.ascontiguousarray(dispersion_major(array, axis))

        first = next(iter(stacks.values()))
        master = CCDData(native(response), unit="", mask=native(qual),
                         uncertainty=StdDevUncertainty(native(response_error)), meta=first.meta)
        flat_catg, order_catg = f"MASTER_FLAT_{self.arm}", f"ORDER_TAB_{self.arm}"
        curves = {}
        for k, o in enumerate(orders):
            d = grid[valid[k]]
            curves[f"{o}-"] = (d, low_edge[k, d])
            curves[f"{o}+"] = (d, high_edge[k, d])
        shown = native(np.where(labels > 0, flat, 0.0))
        edge_plot = ("edges", lambda path: trace_plot(shown, curves, axis, title=f"{order_catg}: order edges",
                                                      path=path))
        plots = [edge_plot]
        for lamp, background in scatter.items():
            image = native(background)
            plots.append((f"scattered_{lamp}", lambda path, image=image, lamp=lamp: detector_frame_plot(
                image, title=f"{flat_catg}: scattered light ({lamp} flats)", path=path)))
        return [Product(flat_catg, master, pro_type="REDUCED", pro_tech="ECHELLE,SLIT", plots=plots),
                Product(order_catg, Table(table.to_columns()), pro_type="REDUCED", pro_tech="ECHELLE,SLIT")]

    def stitched_flat(self, stacks, choice, orders, labels, u, between):
        """Per lamp: subtract the scattered light and model the flat of its orders; stitch the orders.

        Returns dispersion-major arrays: the flat (e), its error, the :class:`FlatModel`, the
        pixels without a value in the orders, and the scattered-light model of each lamp.
        """
        p = self.params
        axis = detector(self.arm).dispersion_axis
        flat = np.zeros(labels.shape, np.float32)
        error = np.zeros(labels.shape, np.float32)
        model = np.zeros(labels.shape, np.float32)
        inside = np.zeros(labels.shape, bool)
        bad = np.zeros(labels.shape, bool)
        scatter = {}
        for lamp, stack in stacks.items():
            mine = [o for o in orders if choice[o] == lamp]
            if not mine:
                continue
            data = dispersion_major(stack.data, axis)
            smask = dispersion_major(stack.mask, axis)
            scatter[lamp] = scattered_light(data, between, box=p["scatter-box"], smooth=p["scatter-smooth"], bad=smask)
            clean = data - scatter[lamp]
            sel = np.isin(labels, mine)
            fm = flat_model(clean, np.where(sel, labels, 0), u, mask=smask, window=p["spectrum-window"],
                            u_bin=p["profile-bin"], blocks=p["profile-blocks"], min_profile=p["edge-fraction"])
            flat = np.where(sel, clean, flat)
            error = np.where(sel, dispersion_major(stack.uncertainty.array, axis), error)
            model = np.where(sel, fm.model, model)
            inside |= fm.inside
            bad |= smask & sel
        return flat, error, FlatModel(model, inside), bad, scatter

    def measure_order_edges(self, stacks, choice, orders, centres, valid, half):
        """Measure and fit both edges of every order on the stack of the lamp that serves it.

        Returns
        -------
        lower, upper : dict
            Order -> Legendre coefficients of its edge (``d`` normalised over the frame).
        residuals : numpy.ndarray
            The edge fits' residuals of every order (px).
        """
        p = self.params
        axis = detector(self.arm).dispersion_axis
        nd = centres.shape[1]
        lower, upper, residuals = {}, {}, []
        for lamp, stack in stacks.items():
            mine = [o for o in orders if choice[o] == lamp]
            if not mine:
                continue
            cuts = []
            for k, o in enumerate(orders):
                if o in mine:
                    d = np.arange(nd)[valid[k]][::p["edge-cut-step"]]
                    cuts.append((np.full(d.size, o), d, centres[k, d], np.full(d.size, half[k])))
            cut_o, cut_d, cut_c, cut_h = (np.concatenate(a) for a in zip(*cuts))
            samples = measure_edges(stack.data, cut_d, cut_c, dispersion_axis=axis, half_length=cut_h,
                                    fraction=p["edge-fraction"], average=p["edge-cut-average"], mask=stack.mask)
            try:
                fit = fit_edges(cut_o, samples, mine, degree=p["edge-degree"], nd=nd, sigma=p["edge-clip-sigma"],
                                max_iterations=p["edge-clip-iterations"], min_cuts=p["edge-min-cuts"])
            except FitError as exc:
                raise DataError(f"{self.sof}: the {lamp} slit flats do not show the order edges where the ORDER_TAB "
                                f"puts the orders: {exc}") from None
            for k, o in enumerate(mine):
                lower[o], upper[o] = fit.lower[k], fit.upper[k]
            residuals.append(fit.residuals)
        return lower, upper, np.concatenate(residuals)

    def slit_flat_sets(self):
        """The background-removed lamp-on slit flats, grouped by lamp: ``{lamp: [CCDData, ...]}``.

        Each lamp-on frame is prepared (with the ``MASTER_BIAS`` where given) and has
        the combined lamp-off frames subtracted, or else the ``MASTER_DARK`` scaled to
        its exposure time.

        Raises
        ------
        DataError
            A lamp with fewer flats than ``frames-min``; no background on an arm that needs one.
        """
        on = [f for f in self.raw_frames if not f.lamp_off]
        off = [f for f in self.raw_frames if f.lamp_off]
        groups = {}
        for f in on:
            groups.setdefault("+".join(f.lamps) or "LAMP", []).append(f)
        minimum = self.params["frames-min"]
        if not groups:
            raise DataError(f"{self.sof}: only lamp-off frames; {self.recipe_id} needs at least {minimum} lamp-on slit flats")
        for lamp, frames in groups.items():
            if len(frames) < minimum:
                raise DataError(f"{self.sof}: {len(frames)} {lamp} slit flat(s); {self.recipe_id} needs at least "
                                f"{minimum} per lamp ({frames[0].path})")
        bias, dark = self.calibration("MASTER_BIAS"), self.calibration("MASTER_DARK")
        if not off and dark is None and detector(self.arm).lamp_off_pairs:
            raise DataError(f"{self.sof}: {self.recipe_id} on {self.arm} slit flats needs their lamp-off partners or a "
                            f"MASTER_DARK_{self.arm} in the SOF")
        background = self._stack([self.prepare(f, master_bias=bias) for f in off]) if off else None
        sets = {}
        for lamp, frames in groups.items():
            out = []
            for f in frames:
                ccd = self.detrend(f, bias, None if off else dark)
                if background is not None:
                    error = np.sqrt(ccd.uncertainty.array ** 2 + background.uncertainty.array ** 2)
                    ccd = CCDData(ccd.data - background.data, unit=ccd.unit, meta=ccd.meta,
                                  mask=ccd.mask | background.mask, uncertainty=StdDevUncertainty(error, unit=ccd.unit))
                out.append(ccd)
            sets[lamp] = out
        log.info("slit flats: %s%s", ", ".join(f"{len(v)} {k}" for k, v in sets.items()),
                 f"; {len(off)} lamp-off frames subtracted" if off else "")
        return sets

    def level_stack(self, frames, core, axis, lamp):
        """Scale each flat to the set's mean level inside the orders' cores and stack them."""
        levels = []
        for ccd in frames:
            data = dispersion_major(ccd.data, axis)
            mask = dispersion_major(ccd.mask, axis)
            sel = core & ~mask
            levels.append(float(np.median(data[sel][::7])) if sel.any() else 0.0)
        levels = np.asarray(levels)
        if not np.all(levels > 0):
            raise DataError(f"{self.sof}: a {lamp} slit flat with no signal inside the orders; is the lamp on?")
        return self.combine_at_common_level(frames, levels, lamp)

    def combine_at_common_level(self, frames, levels, what):
        """Scale each flat to the mean of ``levels`` (lamps and twilight fade) and stack them."""
        target = float(np.mean(levels))
        scaled = []
        for ccd, level in zip(frames, levels):
            k = np.float32(target / level)
            scaled.append(CCDData(ccd.data * k, unit=ccd.unit, mask=ccd.mask, meta=ccd.meta,
                                  uncertainty=StdDevUncertainty(ccd.uncertainty.array * k, unit=ccd.unit)))
        log.info("%d %s flats scaled to a common level of %.0f e (levels %.0f..%.0f)", len(frames), what, target,
                 np.min(levels), np.max(levels))
        return self.combine(scaled)

    def slit_scale(self, orders):
        """Cross-dispersion pixels per arcsec of slit of each order, from the settings' multi-pinhole table."""
        det = detector(self.arm)
        binning = self.raw_frames[0].binning
        tables = self.params["slit-scale-table"]
        tag = f"{binning[0]}x{binning[1]}"
        cross_bin = binning[0] if det.dispersion_axis == "y" else binning[1]
        name, factor = (tables[tag], 1.0) if tag in tables else (tables["1x1"], float(cross_bin))
        t = Table.read(static_path(name))
        column = "detector_x" if det.dispersion_axis == "y" else "detector_y"
        scale = slit_scale(t["order"], t["wavelength"], t["slit_position"], np.asarray(t[column]) / factor, orders)
        if not np.all(np.isfinite(scale)):
            raise DataError(f"{name}: the slit-scale table lacks order(s) "
                            f"{[int(o) for o, s in zip(orders, scale) if not np.isfinite(s)]}")
        return scale


def lamp_choice(orders, lamps, lamp_orders):
    """The lamp whose flat serves each order: ``{order: lamp}``.

    An order listed under a lamp in ``lamp_orders`` (e.g. ``{"D2": [2]}``) takes that
    lamp's flat when it is given; every other order takes the first lamp given that
    lists no orders (e.g. QTH), or else the first lamp given.
    """
    free = [lamp for lamp in lamps if not lamp_orders.get(lamp)]
    fallback = free[0] if free else lamps[0]
    out = {}
    for o in orders:
        wanted = [lamp for lamp, listed in lamp_orders.items() if int(o) in [int(x) for x in (listed or [])]]
        named = [lamp for lamp in wanted if lamp in lamps]
        out[o] = named[0] if named else fallback
        if wanted and not named:
            log.warning("order %d: no %s flats given; its flat comes from the %s flats", int(o), wanted[0], fallback)
    return out
