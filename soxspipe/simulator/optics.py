"""The simulator's optical model: (order, wavelength, slit position) -> (x, y) per arm.

The model is fitted to the predicted pinhole tables bundled in
``static_calibrations`` (ray-traced positions of arc lines at the 9 pinholes of
the multi-pinhole mask). Per order, detector x and y are 2D Legendre series in
the normalised wavelength (over the order's full range) and the normalised slit
position (over the 12 arcsec slit). Flexure is a rigid shift plus a rotation
about the centre of the prepared frame, applied after the polynomials.

Coordinates are 0-based positions in the prepared (trimmed) frame; at a binning
``(bx, by)`` they are the 1x1 positions divided by ``(bx, by)``, as in the
bundled ``_2x1`` tables.
"""

import logging
from dataclasses import dataclass, field

import numpy as np
from astropy.table import Table, vstack
from numpy.polynomial import legendre as L

from ..commonutils.detectors import detector
from ..static_calibrations import path as static_path

log = logging.getLogger(__name__)

SLIT_HALF_LENGTH = 6.0
# Wavelength margin (fraction of the order's full range) kept around WLMINFUL..WLMAXFUL
# both for fitting the tables and for rendering (orders run slightly past their nominal ends).
_WL_MARGIN = 0.03

# Tables the model is fitted to, and polynomial degrees (wavelength, slit) per arm.
_SOURCES = {
    "VIS": {"tables": ["SOXS_MPH_TAB_VIS_ThAr_1x1.fits"], "degree": (5, 2)},
    # the per-lamp NIR tables disagree with each other by pixels; Ar is the densest and smoothest
    "NIR": {"tables": ["Ar.fits"], "degree": (6, 4)},
}

# Multi-pinhole slit positions (arcsec) per arm, pinhole index 4 at the centre.
PINHOLE_POSITIONS = {
    "VIS": np.linspace(-5.5, 5.5, 9),
    "NIR": np.linspace(-5.74545, 5.74545, 9),
}


def spectral_format(arm):
    """Return the bundled spectral-format table of ``arm`` (one row per order)."""
    return Table.read(static_path(f"SOXS_SPECTRAL_FORMAT_TAB_{arm}.fits"))


def pinhole_table(arm):
    """Return the predicted pinhole positions the model of ``arm`` is fitted to.

    Columns ``order, wavelength, slit_position, detector_x, detector_y`` (1x1).
    """
    parts = []
    for name in _SOURCES[arm]["tables"]:
        t = Table.read(static_path(name))
        if "delete" in t.colnames:
            t = t[t["delete"] == 0]
        parts.append(t[["order", "wavelength", "slit_position", "detector_x", "detector_y"]])
    t = vstack(parts)
    # the NIR tables extrapolate far off the detector, where they are not smooth
    det = detector(arm)
    nx = det.science_x[1] - det.science_x[0]
    ny = det.science_y[1] - det.science_y[0]
    pad = 60
    orders = np.asarray(spectral_format(arm)["ORDER"], dtype=int)
    t = t[np.isin(t["order"], orders) & (t["detector_x"] > -pad) & (t["detector_x"] < nx + pad)
          & (t["detector_y"] > -pad) & (t["detector_y"] < ny + pad)]
    t["order"] = np.asarray(t["order"], dtype=int)
    for c in ("wavelength", "slit_position", "detector_x", "detector_y"):
        t[c] = np.asarray(t[c], dtype=float)
    return t


@dataclass
class Flexure:
    """Rigid flexure of the spectral format: shift (px) and rotation (deg) about ``centre`` (1x1 px)."""

    dx: float = 0.0
    dy: float = 0.0
    rotation_deg: float = 0.0
    centre: tuple = (0.0, 0.0)

    def apply(self, x, y):
        """Return flexed ``(x, y)`` (1x1 prepared-frame pixels)."""
        if self.dx == 0 and self.dy == 0 and self.rotation_deg == 0:
            return x, y
        a = np.deg2rad(self.rotation_deg)
        ca, sa = np.cos(a), np.sin(a)
        xc, yc = x - self.centre[0], y - self.centre[1]
        return (self.centre[0] + ca * xc - sa * yc + self.dx,
                self.centre[1] + sa * xc + ca * yc + self.dy)

    def matrix(self):
        """Return the 2x2 rotation matrix (for Jacobians)."""
        a = np.deg2rad(self.rotation_deg)
        return np.array([[np.cos(a), -np.sin(a)], [np.sin(a), np.cos(a)]])


@dataclass
class OpticalModel:
    """Continuous optical model of one arm.

    Attributes
    ----------
    arm : str
    orders : list of int
        Orders in the order of the spectral-format table.
    wl_range : dict
        order -> (wlmin, wlmax) in nm: the normalisation range of the wavelength
        polynomial, which is also the range rendered on the detector.
    coeffs : dict
        order -> (cx, cy), 2D Legendre coefficient arrays of shape (deg_wl + 1, deg_slit + 1).
    flexure : Flexure
    """

    arm: str
    orders: list
    wl_range: dict
    coeffs: dict
    flexure: Flexure = field(default_factory=Flexure)

    # -- construction -------------------------------------------------------
    @classmethod
    def from_static(cls, arm, degree=None):
        """Fit the model of ``arm`` to the bundled predicted pinhole tables."""
        deg = degree or _SOURCES[arm]["degree"]
        fmt = spectral_format(arm)
        tab = pinhole_table(arm)
        orders, wl_range, coeffs = [], {}, {}
        for row in fmt:
            o = int(row["ORDER"])
            lo, hi = float(row["WLMINFUL"]), float(row["WLMAXFUL"])
            pad = _WL_MARGIN * (hi - lo)
            lo, hi = lo - pad, hi + pad
            sel = tab[(tab["order"] == o) & (tab["wavelength"] >= lo) & (tab["wavelength"] <= hi)]
            if len(sel) < (deg[0] + 1) * (deg[1] + 1) * 2:
                raise ValueError(f"{arm} order {o}: only {len(sel)} table rows to fit")
            orders.append(o)
            wl_range[o] = (lo, hi)
            coeffs[o] = _fit_order(sel, lo, hi, deg)
        det = detector(arm)
        nx = det.science_x[1] - det.science_x[0]
        ny = det.science_y[1] - det.science_y[0]
        flex = Flexure(centre=((nx - 1) / 2.0, (ny - 1) / 2.0))
        return cls(arm=arm, orders=orders, wl_range=wl_range, coeffs=coeffs, flexure=flex)

    def with_flexure(self, dx=0.0, dy=0.0, rotation_deg=0.0):
        """Return a copy of the model with the given flexure (replacing any previous one)."""
        flex = Flexure(dx=float(dx), dy=float(dy), rotation_deg=float(rotation_deg),
                       centre=self.flexure.centre)
        return OpticalModel(self.arm, list(self.orders), dict(self.wl_range), dict(self.coeffs), flex)

    # -- evaluation ---------------------------------------------------------
    def xy(self, order, wavelength, slit, binning=(1, 1)):
        """Return prepared-frame ``(x, y)`` of ``wavelength`` (nm) at ``slit`` (arcsec) in ``order``.

        Arrays broadcast against each other; ``order`` may be a scalar or an array.
        """
        wavelength, slit = np.broadcast_arrays(np.asarray(wavelength, float), np.asarray(slit, float))
        order = np.broadcast_to(np.asarray(order), wavelength.shape)
        x = np.full(wavelength.shape, np.nan)
        y = np.full(wavelength.shape, np.nan)
        for o in np.unique(order):
            m = order == o
            xo, yo = self._xy_raw(int(o), wavelength[m], slit[m])
            x[m], y[m] = xo, yo
        x, y = self.flexure.apply(x, y)
        return x / binning[0], y / binning[1]

    def _xy_raw(self, order, wavelength, slit):
        lo, hi = self.wl_range[order]
        cx, cy = self.coeffs[order]
        u = _norm(wavelength, lo, hi)
        v = np.asarray(slit) / SLIT_HALF_LENGTH
        return L.legval2d(u, v, cx), L.legval2d(u, v, cy)

    def _xy_and_jacobian(self, order, u, v):
        """Flexed 1x1 (x, y) and the derivatives d(x, y)/d(u, v) at normalised coordinates."""
        cx, cy = self.coeffs[order]
        x, y = L.legval2d(u, v, cx), L.legval2d(u, v, cy)
        xu, yu = L.legval2d(u, v, L.legder(cx, axis=0)), L.legval2d(u, v, L.legder(cy, axis=0))
        xv, yv = L.legval2d(u, v, L.legder(cx, axis=1)), L.legval2d(u, v, L.legder(cy, axis=1))
        x, y = self.flexure.apply(x, y)
        r = self.flexure.matrix()
        xu, yu = r[0, 0] * xu + r[0, 1] * yu, r[1, 0] * xu + r[1, 1] * yu
        xv, yv = r[0, 0] * xv + r[0, 1] * yv, r[1, 0] * xv + r[1, 1] * yv
        return x, y, xu, yu, xv, yv

    def dispersion_axis(self):
        """Return 0 when wavelength runs along x (NIR), 1 when along y (VIS)."""
        return 1 if detector(self.arm).dispersion_axis == "y" else 0

    def trace(self, order, slit, binning=(1, 1), n=4000):
        """Return ``(d, c, wavelength)`` of a constant-slit trace sampled finely along the order.

        ``d`` is the dispersion coordinate, ``c`` the cross-dispersion one (binned pixels),
        sorted by increasing ``d``.
        """
        lo, hi = self.wl_range[order]
        wl = np.linspace(lo, hi, n)
        x, y = self.xy(order, wl, slit, binning)
        d, c = (y, x) if self.dispersion_axis() == 1 else (x, y)
        idx = np.argsort(d)
        return d[idx], c[idx], wl[idx]

    def order_geometry(self, order, binning=(1, 1), slit_half=SLIT_HALF_LENGTH):
        """Return the order's centre and edges per integer dispersion pixel on the detector.

        Returns
        -------
        dict
            ``d`` (integer dispersion pixels), ``centre``, ``lower``, ``upper`` (cross-dispersion
            positions of slit 0, -slit_half and +slit_half) and ``wavelength`` (at slit 0).
        """
        shape = self.prepared_shape(binning)
        nd = shape[0] if self.dispersion_axis() == 1 else shape[1]
        cols = {}
        for name, s in (("centre", 0.0), ("lower", -slit_half), ("upper", slit_half)):
            d, c, wl = self.trace(order, s, binning)
            cols[name] = (d, c, wl)
        dmin = max(cols[k][0][0] for k in cols)
        dmax = min(cols[k][0][-1] for k in cols)
        d = np.arange(max(0, int(np.ceil(dmin))), min(nd - 1, int(np.floor(dmax))) + 1)
        out = {"d": d}
        for name, (dd, cc, wl) in cols.items():
            out[name] = np.interp(d, dd, cc)
            if name == "centre":
                out["wavelength"] = np.interp(d, dd, wl)
        return out

    def prepared_shape(self, binning=(1, 1)):
        """Numpy shape ``(ny, nx)`` of the prepared frame at ``binning``."""
        x0, x1, y0, y1 = detector(self.arm).science_region(binning)
        return (y1 - y0, x1 - x0)

    def footprint(self, order, binning=(1, 1), slit_half=SLIT_HALF_LENGTH + 1.0, iterations=5):
        """Map every pixel of an order's footprint to its (wavelength, slit).

        Parameters
        ----------
        order : int
        binning : tuple
        slit_half : float
            Pixels whose slit position lies within +-slit_half arcsec are returned.

        Returns
        -------
        dict
            ``iy, ix`` (pixel indices in the prepared frame), ``wavelength`` (nm),
            ``slit`` (arcsec) and ``area`` = |d(wavelength, slit)/d(x, y)| in nm arcsec per pixel.
        """
        disp = self.dispersion_axis()
        shape = self.prepared_shape(binning)
        geo = self.order_geometry(order, binning, slit_half)
        d = geo["d"]
        lo_c = np.minimum(geo["lower"], geo["upper"])
        hi_c = np.maximum(geo["lower"], geo["upper"])
        width = int(np.ceil(np.max(hi_c - lo_c))) + 3
        start = np.floor(lo_c).astype(int) - 1
        c = start[:, None] + np.arange(width)[None, :]
        dd = np.broadcast_to(d[:, None], c.shape).astype(float)
        # first guess: wavelength of the trace centre, slit linear across the edges
        lo, hi = self.wl_range[order]
        u = np.broadcast_to(_norm(geo["wavelength"], lo, hi)[:, None], c.shape).copy()
        sign = np.sign(geo["upper"] - geo["lower"])[:, None]
        v = sign * (2 * (c - lo_c[:, None]) / (hi_c - lo_c)[:, None] - 1) * slit_half / SLIT_HALF_LENGTH
        xt, yt = (c * binning[0], dd * binning[1]) if disp == 1 else (dd * binning[0], c * binning[1])
        for _ in range(iterations):
            x, y, xu, yu, xv, yv = self._xy_and_jacobian(order, u, v)
            ex, ey = xt - x, yt - y
            det = xu * yv - xv * yu
            u = u + (yv * ex - xv * ey) / det
            v = v + (-yu * ex + xu * ey) / det
        x, y, xu, yu, xv, yv = self._xy_and_jacobian(order, u, v)
        resid = np.hypot(xt - x, yt - y)
        det = np.abs(xu * yv - xv * yu) / (binning[0] * binning[1])
        wl = lo + (u + 1) * (hi - lo) / 2
        slit = v * SLIT_HALF_LENGTH
        area = (hi - lo) / 2 * SLIT_HALF_LENGTH / det
        ny, nx = shape
        ix, iy = (c, dd.astype(int)) if disp == 1 else (dd.astype(int), c)
        ok = ((np.abs(slit) <= slit_half) & (resid < 1e-3) & (ix >= 0) & (ix < nx)
              & (iy >= 0) & (iy < ny) & (u >= -1) & (u <= 1))
        return {"iy": iy[ok], "ix": ix[ok], "wavelength": wl[ok], "slit": slit[ok], "area": area[ok]}

    def dispersion(self, order, wavelength, binning=(1, 1)):
        """Return |d wavelength / d pixel| (nm per binned pixel) along the dispersion axis at slit 0."""
        h = 1e-3
        x1, y1 = self.xy(order, np.asarray(wavelength) - h, 0.0, binning)
        x2, y2 = self.xy(order, np.asarray(wavelength) + h, 0.0, binning)
        dpix = (y2 - y1) if self.dispersion_axis() == 1 else (x2 - x1)
        return np.abs(2 * h / dpix)

    # -- persistence --------------------------------------------------------
    def to_dict(self):
        """JSON-serialisable description of the model."""
        return {
            "arm": self.arm,
            "slit_half_length_arcsec": SLIT_HALF_LENGTH,
            "basis": "legendre2d(u, v); u = 2 (wl - wlmin) / (wlmax - wlmin) - 1, v = slit / 6",
            "orders": [
                {"order": o, "wlmin": self.wl_range[o][0], "wlmax": self.wl_range[o][1],
                 "cx": self.coeffs[o][0].tolist(), "cy": self.coeffs[o][1].tolist()}
                for o in self.orders
            ],
            "flexure": {"dx": self.flexure.dx, "dy": self.flexure.dy,
                        "rotation_deg": self.flexure.rotation_deg,
                        "centre": list(self.flexure.centre)},
        }

    @classmethod
    def from_dict(cls, d):
        """Rebuild a model written by :meth:`to_dict`."""
        orders, wl_range, coeffs = [], {}, {}
        for row in d["orders"]:
            o = int(row["order"])
            orders.append(o)
            wl_range[o] = (row["wlmin"], row["wlmax"])
            coeffs[o] = (np.array(row["cx"]), np.array(row["cy"]))
        f = d["flexure"]
        flex = Flexure(f["dx"], f["dy"], f["rotation_deg"], tuple(f["centre"]))
        return cls(d["arm"], orders, wl_range, coeffs, flex)

    def grid_table(self, binning=(1, 1), n_wavelength=41, n_slit=9):
        """Return an astropy Table of x, y on a regular (order, wavelength, slit) grid."""
        rows = []
        s = np.linspace(-SLIT_HALF_LENGTH, SLIT_HALF_LENGTH, n_slit)
        for o in self.orders:
            lo, hi = self.wl_range[o]
            wl, ss = np.meshgrid(np.linspace(lo, hi, n_wavelength), s, indexing="ij")
            x, y = self.xy(o, wl.ravel(), ss.ravel(), binning)
            rows.append(Table({"order": np.full(x.size, o), "wavelength": wl.ravel(),
                               "slit": ss.ravel(), "x": x, "y": y}))
        t = vstack(rows)
        t.meta.update({"arm": self.arm, "binning": list(binning), "units": "nm, arcsec, px"})
        return t


def _fit_order(sel, lo, hi, deg):
    """Fit one order; lower the slit degree until the mapping has no fold.

    Where a table is not smooth along the slit (NIR order 10 near its ends), a
    high slit degree makes the slit image fold onto the order; a fold shows up
    as a strongly varying Jacobian over the rendered (wavelength, slit) range.
    """
    u = _norm(sel["wavelength"], lo, hi)
    v = np.asarray(sel["slit_position"]) / SLIT_HALF_LENGTH
    gu, gv = np.meshgrid(np.linspace(-1, 1, 201), np.linspace(-7, 7, 29) / SLIT_HALF_LENGTH)
    for ds in range(deg[1], 0, -1):
        d = (deg[0], ds)
        a = L.legvander2d(u, v, d)
        cx = np.linalg.lstsq(a, sel["detector_x"], rcond=None)[0].reshape(d[0] + 1, d[1] + 1)
        cy = np.linalg.lstsq(a, sel["detector_y"], rcond=None)[0].reshape(d[0] + 1, d[1] + 1)
        jac = (L.legval2d(gu, gv, L.legder(cx, axis=0)) * L.legval2d(gu, gv, L.legder(cy, axis=1))
               - L.legval2d(gu, gv, L.legder(cx, axis=1)) * L.legval2d(gu, gv, L.legder(cy, axis=0)))
        if np.all(jac > 0) or np.all(jac < 0):
            if np.abs(jac).max() / np.abs(jac).min() < 2.0:
                return cx, cy
    return cx, cy


def _norm(wl, lo, hi):
    return 2.0 * (np.asarray(wl, float) - lo) / (hi - lo) - 1.0


_CACHE = {}


def static_model(arm):
    """Return the (cached) flexure-free optical model of ``arm`` fitted to the bundled tables."""
    if arm not in _CACHE:
        _CACHE[arm] = OpticalModel.from_static(arm)
    return _CACHE[arm]
