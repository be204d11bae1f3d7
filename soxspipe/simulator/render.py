"""Noise-free rendering: expected photo-electrons per pixel of the prepared frame.

:class:`Renderer` maps every pixel of each order's footprint once to its
(wavelength, slit position) and the area it covers in (nm x arcsec); continuum
sources are then evaluated directly per pixel, and point-like images (pinhole
arc lines) are added as pixel-integrated 2D Gaussians at their exact positions.
"""

import logging
from dataclasses import dataclass

import numpy as np
from scipy.special import erf

from ..commonutils.detectors import detector
from . import spectra
from .optics import SLIT_HALF_LENGTH

log = logging.getLogger(__name__)

# smoothing (Gaussian sigma, arcsec) of the slit ends: sharp, but not a step
SLIT_EDGE_SIGMA_ARCSEC = 0.12
_SQRT2 = np.sqrt(2.0)


def slit_profile(slit, half_length=SLIT_HALF_LENGTH, sigma=SLIT_EDGE_SIGMA_ARCSEC):
    """Illumination along the slit of a uniformly filled slit: a smoothed top-hat (1 inside, 0.5 at the ends)."""
    s = np.asarray(slit, float)
    return 0.5 * (erf((s + half_length) / (_SQRT2 * sigma)) - erf((s - half_length) / (_SQRT2 * sigma)))


def gaussian_profile(slit, centre, sigma):
    """Normalised (per arcsec) Gaussian profile along the slit, cut by the slit ends."""
    s = np.asarray(slit, float)
    g = np.exp(-0.5 * ((s - centre) / sigma) ** 2) / (sigma * np.sqrt(2 * np.pi))
    return g * slit_profile(s)


def line_spectrum(grid, wavelengths, fluxes, sigma):
    """Sum of Gaussian lines on a regular wavelength grid, in flux per nm.

    Parameters
    ----------
    grid : ndarray
        Regular, increasing wavelength grid (nm).
    wavelengths, fluxes : ndarray
        Line centres (nm) and integrated fluxes.
    sigma : float or ndarray
        Gaussian sigma(s) in nm.
    """
    out = np.zeros(grid.size)
    if len(wavelengths) == 0:
        return out
    step = grid[1] - grid[0]
    sigma = np.broadcast_to(np.asarray(sigma, float), np.shape(wavelengths))
    half = int(np.ceil(5 * sigma.max() / step)) + 1
    k = np.arange(-half, half + 1)
    i0 = np.rint((np.asarray(wavelengths) - grid[0]) / step).astype(int)
    idx = i0[:, None] + k[None, :]
    dw = grid[0] + idx * step - np.asarray(wavelengths)[:, None]
    norm = np.asarray(fluxes)[:, None] / (sigma[:, None] * np.sqrt(2 * np.pi))
    val = norm * np.exp(-0.5 * (dw / sigma[:, None]) ** 2)
    ok = (idx >= 0) & (idx < grid.size)
    out += np.bincount(idx[ok], weights=val[ok], minlength=grid.size)
    return out


@dataclass
class Spots:
    """Point-like images to render: one row per spot (1D arrays of equal length)."""

    order: np.ndarray
    wavelength: np.ndarray
    slit: np.ndarray
    x: np.ndarray
    y: np.ndarray
    flux: np.ndarray
    sigma_x: np.ndarray
    sigma_y: np.ndarray


class Renderer:
    """Renders sources through one arm's optical model at one binning.

    Parameters
    ----------
    model : OpticalModel
        The arm's model (with its flexure).
    binning : tuple
        ``(binx, biny)``.
    """

    def __init__(self, model, binning=(1, 1)):
        self.model = model
        self.arm = model.arm
        self.binning = tuple(binning)
        self.shape = model.prepared_shape(binning)
        self._fp = {}
        det = detector(self.arm)
        self.pixel_scale = det.pixel_scale_arcsec

    def footprint(self, order):
        """Cached pixel -> (wavelength, slit, area) map of ``order`` (see OpticalModel.footprint)."""
        if order not in self._fp:
            fp = self.model.footprint(order, self.binning)
            fp["flat_index"] = fp["iy"] * self.shape[1] + fp["ix"]
            self._fp[order] = fp
        return self._fp[order]

    def continuum(self, density, profile, orders=None):
        """Render a source that is smooth in wavelength.

        Parameters
        ----------
        density : callable
            ``density(order, wavelength)`` -> electrons per nm per arcsec of slit in the exposure,
            for a profile equal to 1 (slit-filling) or normalised per arcsec (point source).
        profile : callable
            ``profile(slit)`` -> illumination along the slit.
        orders : list of int, optional
            Orders to render (default all).

        Returns
        -------
        ndarray (float32)
            Expected electrons per pixel of the prepared frame.
        """
        flat = np.zeros(self.shape[0] * self.shape[1])
        for o in orders or self.model.orders:
            fp = self.footprint(o)
            val = density(o, fp["wavelength"]) * profile(fp["slit"]) * fp["area"]
            flat += np.bincount(fp["flat_index"], weights=val, minlength=flat.size)
        return flat.reshape(self.shape).astype(np.float32)

    def spots(self, spots):
        """Render pixel-integrated 2D Gaussians; returns the float32 image."""
        ny, nx = self.shape
        flat = np.zeros(ny * nx)
        if len(spots.x) == 0:
            return flat.reshape(self.shape).astype(np.float32)
        half = int(np.ceil(5 * max(spots.sigma_x.max(), spots.sigma_y.max()))) + 1
        k = np.arange(-half, half + 1)
        ix = np.rint(spots.x).astype(int)[:, None] + k[None, :]
        iy = np.rint(spots.y).astype(int)[:, None] + k[None, :]
        ex = _pixel_integral(ix, spots.x[:, None], spots.sigma_x[:, None])
        ey = _pixel_integral(iy, spots.y[:, None], spots.sigma_y[:, None])
        val = spots.flux[:, None, None] * ey[:, :, None] * ex[:, None, :]
        iy3 = np.broadcast_to(iy[:, :, None], val.shape)
        ix3 = np.broadcast_to(ix[:, None, :], val.shape)
        ok = (ix3 >= 0) & (ix3 < nx) & (iy3 >= 0) & (iy3 < ny)
        flat += np.bincount((iy3[ok] * nx + ix3[ok]), weights=val[ok], minlength=flat.size)
        return flat.reshape(self.shape).astype(np.float32)

    def make_spots(self, order, wavelength, slit, flux, slit_width_arcsec):
        """Positions and sizes of the images of point-like lines through a pinhole of the given width.

        The size along the dispersion follows the arm's resolving power for that width,
        across it the pinhole image convolved with the optics.
        """
        order = np.asarray(order)
        wavelength = np.asarray(wavelength, float)
        x, y = self.model.xy(order, wavelength, slit, self.binning)
        r = spectra.resolution(self.arm, slit_width_arcsec)
        disp = np.empty_like(wavelength)
        for o in np.unique(order):
            m = order == o
            disp[m] = self.model.dispersion(int(o), wavelength[m], self.binning)
        sigma_d = wavelength / r / 2.3548 / disp
        width = np.hypot(slit_width_arcsec, spectra.OPTICS_WIDTH_ARCSEC) / 2.3548
        axis = self.model.dispersion_axis()
        cross = 0 if axis == 1 else 1
        sigma_c = np.full_like(wavelength, width / self.pixel_scale / self.binning[cross])
        if axis == 1:  # VIS: dispersion along y
            sx, sy = sigma_c, sigma_d
        else:
            sx, sy = sigma_d, sigma_c
        return Spots(order, wavelength, np.broadcast_to(np.asarray(slit, float), wavelength.shape).copy(),
                     x, y, np.asarray(flux, float), sx, sy)

    def visible(self, spots, margin=2):
        """Boolean mask of spots whose centres fall inside the frame (with a margin)."""
        ny, nx = self.shape
        return ((spots.x > margin) & (spots.x < nx - 1 - margin)
                & (spots.y > margin) & (spots.y < ny - 1 - margin))


def _pixel_integral(i, centre, sigma):
    """Fraction of a unit 1D Gaussian falling in pixel ``i`` (pixel centres at integers)."""
    a = (i - 0.5 - centre) / (_SQRT2 * sigma)
    b = (i + 0.5 - centre) / (_SQRT2 * sigma)
    return 0.5 * (erf(b) - erf(a))


def fine_grid(model, order, binning=(1, 1), oversample=4):
    """Regular wavelength grid over an order, ``oversample`` points per pixel at its finest."""
    lo, hi = model.wl_range[order]
    wl = np.linspace(lo, hi, 64)
    step = float(np.min(model.dispersion(order, wl, binning))) / oversample
    return np.arange(lo, hi + step, step)


# -- scenes: the noise-free image of each kind of frame ----------------------------------
class SceneRenderer(Renderer):
    """A :class:`Renderer` that knows the instrument's calibration and sky scenes.

    Every method returns ``(image, lines)``: the float32 electron image of the
    prepared frame and an astropy-free dict of the rendered lines (or None).

    Parameters
    ----------
    model, binning : see :class:`Renderer`
    readout : str
        VIS read-out speed, which sets the saturation level that lamp exposures aim at.
    bright_lines : bool
        Let the brightest arc lines saturate (``extreme`` scenario).
    """

    def __init__(self, model, binning=(1, 1), readout="slow", bright_lines=False):
        super().__init__(model, binning)
        self.level = spectra.target_level_e(self.arm, readout)
        self.saturation_e = spectra.target_level_e(self.arm, readout, fraction=1.0)
        self.bright_lines = bright_lines
        self._lamp_scale = {}

    # lamps ----------------------------------------------------------------
    def _lamp_spectrum(self, lamp):
        return {"QTH": spectra.qth_lamp, "D2": spectra.d2_lamp}[lamp]

    def _lamp_norm(self, lamp):
        """Scale that brings the lamp's uniformly illuminated slit to the target level."""
        if lamp not in self._lamp_scale:
            f = self._lamp_spectrum(lamp)
            img = self.continuum(lambda o, wl: f(wl) * spectra.efficiency(self.arm, o, wl), slit_profile)
            # the D2 lamp is there for the bluest order: normalise it there
            ref_orders = [self.model.orders[int(np.argmin([self.model.wl_range[o][0] for o in self.model.orders]))]] \
                if lamp == "D2" else self.model.orders
            mask = np.zeros(self.shape, bool)
            for o in ref_orders:
                fp = self.footprint(o)
                mask[fp["iy"], fp["ix"]] = True
            self._lamp_scale[lamp] = self.level / np.percentile(img[mask & (img > 0)], 99)
        return self._lamp_scale[lamp]

    def lamp_flat(self, lamps, slit_width_arcsec=None):
        """Flat-field lamp(s) through the slit (``slit_width_arcsec`` set) or the single pinhole (None)."""
        if slit_width_arcsec is None:
            sigma = np.hypot(spectra.PINHOLE_DIAMETER_ARCSEC, spectra.OPTICS_WIDTH_ARCSEC) / 2.3548
            peak = 1.0 / (sigma * np.sqrt(2 * np.pi))

            def profile(s):
                return gaussian_profile(s, 0.0, sigma) / peak
        else:
            profile = slit_profile
        image = np.zeros(self.shape, np.float32)
        for lamp in lamps:
            f, k = self._lamp_spectrum(lamp), self._lamp_norm(lamp)
            image += self.continuum(lambda o, wl: k * f(wl) * spectra.efficiency(self.arm, o, wl), profile)
        return image, None

    def arc(self, slit_positions, slit_width_arcsec=spectra.PINHOLE_DIAMETER_ARCSEC):
        """Arc lamp lines through pinholes at ``slit_positions`` (arcsec): spots plus their truth."""
        lines = spectra.arc_lines(self.arm)
        rows = []
        for o in self.model.orders:
            lo, hi = self.model.wl_range[o]
            sel = (lines["wavelength"] > lo) & (lines["wavelength"] < hi)
            wl = np.asarray(lines["wavelength"][sel])
            amp = np.asarray(lines["amplitude"][sel]) * spectra.efficiency(self.arm, o, wl)
            ion = np.asarray(lines["ion"][sel])
            for i, s in enumerate(slit_positions):
                rows.append((np.full(wl.size, o), wl, np.full(wl.size, float(s)), np.full(wl.size, i), amp, ion))
        order, wl, slit, index, amp, ion = (np.concatenate(c) for c in zip(*rows))
        spots = self.make_spots(order, wl, slit, amp, slit_width_arcsec)
        vis = self.visible(spots, margin=-3)
        spots = Spots(*(getattr(spots, f)[vis] for f in Spots.__dataclass_fields__))
        index, ion = index[vis], ion[vis]
        # brightness: the 95th percentile of line peaks at 40 % of saturation
        peak_per_flux = 1.0 / (2 * np.pi * spots.sigma_x * spots.sigma_y)
        scale = self.level / np.percentile(spots.flux * peak_per_flux, 95)
        if self.bright_lines:
            flux = spots.flux * scale * 4.0
        else:
            flux = np.minimum(spots.flux * scale, 0.75 * self.saturation_e / peak_per_flux)
        spots.flux = flux
        # lines far below any noise are left out (and out of the truth)
        seen = flux * peak_per_flux >= 1.0
        spots = Spots(*(getattr(spots, f)[seen] for f in Spots.__dataclass_fields__))
        index, ion, peak_per_flux = index[seen], ion[seen], peak_per_flux[seen]
        truth = {"order": spots.order, "wavelength": spots.wavelength, "slit_position": spots.slit,
                 "slit_index": index, "ion": ion, "x": spots.x, "y": spots.y, "flux_e": spots.flux,
                 "peak_e": spots.flux * peak_per_flux, "sigma_x": spots.sigma_x, "sigma_y": spots.sigma_y}
        return self.spots(spots), truth

    # sky and targets ----------------------------------------------------------
    def sky(self, slit_width_arcsec, exptime):
        """Night-sky continuum plus emission lines filling the slit.

        Returns the image and the sky lines' truth (positions at slit centre, electrons).
        """
        lines = spectra.sky_lines(self.arm)
        r = spectra.resolution(self.arm, slit_width_arcsec)
        area = spectra.TELESCOPE_AREA_CM2 * slit_width_arcsec
        grids = {}
        for o in self.model.orders:
            g = fine_grid(self.model, o, self.binning)
            sel = (lines["wavelength"] > g[0]) & (lines["wavelength"] < g[-1])
            wl = np.asarray(lines["wavelength"][sel])
            spec = spectra.sky_continuum(g) + line_spectrum(g, wl, np.asarray(lines["flux"][sel]), wl / r / 2.3548)
            grids[o] = (g, spec * spectra.efficiency(self.arm, o, g) * area * exptime)

        def density(o, wl):
            g, spec = grids[o]
            return np.interp(wl, g, spec)

        image = self.continuum(density, slit_profile)
        order, wl = [], []
        for o in self.model.orders:
            lo, hi = self.model.wl_range[o]
            sel = (lines["wavelength"] > lo) & (lines["wavelength"] < hi)
            order.append(np.full(int(sel.sum()), o))
            wl.append(np.asarray(lines["wavelength"][sel]))
        order, wl = np.concatenate(order), np.concatenate(wl)
        x, y = self.model.xy(order, wl, 0.0, self.binning)
        eff = np.array([spectra.efficiency(self.arm, int(o), w) for o, w in zip(order, wl)])
        flux = np.interp(wl, lines["wavelength"], lines["flux"]) * eff * area * exptime
        truth = {"order": order, "wavelength": wl, "slit_position": np.zeros(wl.size), "x": x, "y": y,
                 "flux_e_per_arcsec": flux}
        return image, truth

    def point_source(self, photons, slit_position, seeing_fwhm, slit_width_arcsec):
        """A point source on the slit.

        Parameters
        ----------
        photons : callable
            ``photons(order, wavelength)`` -> photo-electrons per nm reaching the slit in the
            exposure (atmosphere and efficiency applied, slit losses not).
        slit_position : float
            Position of the trace along the slit (arcsec).
        seeing_fwhm : float
            Seeing FWHM (arcsec).
        slit_width_arcsec : float
        """
        sigma = seeing_fwhm / 2.3548
        through = slit_transmission(seeing_fwhm, slit_width_arcsec)
        image = self.continuum(lambda o, wl: photons(o, wl) * through,
                               lambda s: gaussian_profile(s, slit_position, sigma))
        return image, None


def slit_transmission(seeing_fwhm, slit_width_arcsec):
    """Fraction of a Gaussian seeing disc passing a slit of the given width."""
    sigma = seeing_fwhm / 2.3548
    return float(erf(slit_width_arcsec / 2 / (_SQRT2 * sigma)))
