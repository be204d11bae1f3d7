"""Source spectra for the simulator: lamps, sky, stars, atmosphere and instrument throughput.

Units: wavelengths in nm (air). Photon rates are photons / s / nm (per cm^2 of
telescope or per arcsec^2 of sky where stated). Everything is a plain function of
wavelength so that the renderer can evaluate it at the wavelength of each pixel.
"""

import logging
from functools import lru_cache

import numpy as np
from astropy.table import Table

from ..commonutils.detectors import detector
from ..commonutils.synthetic_photometry import FILTER_FILES, ab_magnitude
from ..static_calibrations import path as static_path
from .optics import spectral_format

log = logging.getLogger(__name__)

H_C_ERG_NM = 6.62607015e-27 * 2.99792458e17  # h c in erg nm
TELESCOPE_AREA_CM2 = 89000.0
# resolving power of a 1 arcsec slit, and the width (arcsec) of the instrument's own image
# of an infinitely narrow slit, which sets the resolution of narrow slits and pinholes
RESOLUTION_1ARCSEC = {"VIS": 5000.0, "NIR": 5500.0}
OPTICS_WIDTH_ARCSEC = 0.45
PINHOLE_DIAMETER_ARCSEC = 0.5

# arc lamps per arm, as lamp names of frame_types.yaml
ARC_LAMPS = {"VIS": ("ThAr",), "NIR": ("Ar", "Ne", "Hg", "Xe")}


def _col(t, name):
    return np.asarray(t[name], dtype=float)


def _decode(values):
    return np.array([v.decode() if isinstance(v, bytes) else str(v) for v in values])


def arm_range(arm):
    """Return the (min, max) wavelength in nm covered by the orders of ``arm``."""
    fmt = spectral_format(arm)
    return float(np.min(fmt["WLMINFUL"])), float(np.max(fmt["WLMAXFUL"]))


# -- lamps -------------------------------------------------------------------
@lru_cache(maxsize=None)
def arc_lines(arm):
    """Return the arc lines of ``arm``'s lamps: Table ``wavelength, ion, amplitude``.

    VIS uses the ThAr atlas, NIR the Ar/Ne/Hg/Xe pen-ray atlas. Lines without an
    amplitude are dropped. The NIR atlas gives most lines the same nominal
    amplitude; a fixed pseudo-random factor (log-normal, 0.5 dex) spreads them so
    that the arc has realistic contrast.
    """
    lo, hi = arm_range(arm)
    if arm == "VIS":
        t = Table.read(static_path("ThAr.fits"))
        wl, amp, ion = _col(t, "wave"), _col(t, "amplitude"), _decode(t["ion"])
    else:
        t = Table.read(static_path("ArHgNeXe.fits"))
        wl, amp, ion = _col(t, "wave"), _col(t, "amplitude"), _decode(t["ion"])
        element = np.char.rstrip(ion, "I")
        keep = np.isin(element, ARC_LAMPS["NIR"])
        wl, amp, ion = wl[keep], amp[keep], ion[keep]
        spread = np.random.default_rng(12345).normal(0.0, 0.5, wl.size)
        amp = amp * 10 ** spread
    keep = (wl > lo - 5) & (wl < hi + 5) & np.isfinite(amp) & (amp > 0)
    out = Table({"wavelength": wl[keep], "ion": ion[keep], "amplitude": amp[keep]})
    out.sort("wavelength")
    return out


def blackbody_photons(wl, temperature):
    """Photon spectral radiance of a black body, arbitrary normalisation (peak ~ 1)."""
    wl = np.asarray(wl, float)
    x = 1.4387769e7 / (wl * temperature)  # hc / (lambda k T) with lambda in nm
    b = wl ** -4 / np.expm1(x)
    peak_wl = 3.6697e6 / temperature  # photon-radiance peak (Wien for photons)
    xp = 1.4387769e7 / (peak_wl * temperature)
    return b / (peak_wl ** -4 / np.expm1(xp))


def qth_lamp(wl):
    """Relative photon spectrum of the quartz-tungsten-halogen flat lamp (3100 K)."""
    return blackbody_photons(wl, 3100.0)


def d2_lamp(wl):
    """Relative photon spectrum of the deuterium flat lamp: bright in the UV, fading to the red."""
    wl = np.asarray(wl, float)
    return (350.0 / wl) ** 5


# -- sky ---------------------------------------------------------------------
# one Rayleigh in photons / s / cm^2 / arcsec^2, and the strength given to the brightest OH line
RAYLEIGH_PHOTONS = 1e6 / (4 * np.pi) / 4.2545e10
OH_BRIGHTEST_RAYLEIGH = 5000.0


@lru_cache(maxsize=None)
def sky_lines(arm):
    """Return the night-sky emission lines of ``arm``: Table ``wavelength, flux``.

    ``flux`` is in photons / s / cm^2 / arcsec^2. Below 1000 nm the UVES sky
    atlas is used (1e-16 erg / s / cm^2 / arcsec^2; its 557.7 nm line is ~230 R).
    Above it the bundled ``skylines.fits`` gives relative strengths only: they are
    scaled so that the brightest OH line has :data:`OH_BRIGHTEST_RAYLEIGH`.
    """
    lo, hi = arm_range(arm)
    uves = Table.read(static_path("uves_skylines.fits"))
    wl_u, f_u = _col(uves, "WAVELENGTH") / 10.0, _col(uves, "FLUX")
    sky = Table.read(static_path("skylines.fits"))
    wl_s, f_s = _col(sky, "WAVELENGTH"), _col(sky, "FLUX")
    ph_u = f_u * 1e-16 * wl_u / H_C_ERG_NM
    ph_s = f_s * 1e-16 * wl_s / H_C_ERG_NM
    ir = (wl_s >= 1000.0) & np.isfinite(ph_s)
    ph_s = ph_s * OH_BRIGHTEST_RAYLEIGH * RAYLEIGH_PHOTONS / np.max(ph_s[ir])
    wl = np.concatenate([wl_u[wl_u < 1000.0], wl_s[ir]])
    f = np.concatenate([ph_u[wl_u < 1000.0], ph_s[ir]])
    keep = (wl > lo - 5) & (wl < hi + 5) & np.isfinite(f) & (f > 0)
    photons = f[keep]
    out = Table({"wavelength": wl[keep], "flux": photons})
    out.sort("wavelength")
    return out


def sky_continuum(wl):
    """Dark-sky continuum in photons / s / cm^2 / nm / arcsec^2.

    About V = 21.8 mag / arcsec^2 in the optical, rising into the near infrared.
    """
    wl = np.asarray(wl, float)
    fnu_ab = 3631e-23 * 10 ** (-0.4 * 21.8)  # erg/s/cm^2/Hz
    f_lambda = fnu_ab * 2.99792458e17 / wl ** 2  # erg/s/cm^2/nm
    return f_lambda * wl / H_C_ERG_NM * (1.0 + (wl / 1000.0) ** 4)


# -- stars and targets ------------------------------------------------------
STANDARD_ALIASES = {"CD-30 17706": "LTT7987", "CD-38 10980": "EG274",
                    "CD-32 5613": "LTT3218", "CPD-69 177": "EG21"}


@lru_cache(maxsize=None)
def _standards():
    return Table.read(static_path("flux_standards.fits"))


def standard_names():
    """Names of the flux standards in the bundled table."""
    return [c for c in _standards().colnames if c != "WAVE"]


def standard_star(name):
    """Return ``(wavelength nm, flux erg/s/cm^2/Angstrom)`` of a flux standard (aliases accepted)."""
    name = STANDARD_ALIASES.get(name, name)
    t = _standards()
    if name not in t.colnames:
        raise ValueError(f"no flux standard '{name}' (known: {', '.join(standard_names())})")
    return _col(t, "WAVE"), _col(t, name)


def science_target(wl, magnitude_ab=18.0, redshift=0.3):
    """Flux (erg/s/cm^2/Angstrom) of a synthetic emission-line galaxy.

    A flat-in-f_nu continuum of the given AB magnitude with Balmer, [O II], [O III]
    and Paschen emission lines (Gaussian, 0.3 nm rest-frame sigma) at ``redshift``.
    """
    wl = np.asarray(wl, float)
    fnu = 3631e-23 * 10 ** (-0.4 * magnitude_ab)
    cont = fnu * 2.99792458e18 / (wl * 10.0) ** 2
    lines = {372.7: 3.0, 434.0: 0.5, 486.1: 1.0, 495.9: 1.0, 500.7: 3.0, 656.3: 3.0,
             1093.8: 0.4, 1281.8: 0.6, 1875.1: 1.0}
    f = cont.copy()
    for rest, ew in lines.items():
        centre = rest * (1 + redshift)
        sigma = 0.3 * (1 + redshift)
        f += cont * ew * 10 / (sigma * np.sqrt(2 * np.pi)) * np.exp(-0.5 * ((wl - centre) / sigma) ** 2)
    return f


# hydrogen lines of the hot telluric standard (air, nm): depth at the centre and FWHM (nm)
HOT_STAR_LINES = [
    (397.01, 0.40, 2.5), (410.17, 0.45, 2.5), (434.05, 0.45, 2.5), (486.13, 0.45, 2.5), (656.28, 0.35, 2.0),
    (1004.94, 0.20, 2.5), (1093.81, 0.25, 3.0), (1281.81, 0.25, 3.5), (1681.2, 0.15, 3.0), (1736.2, 0.15, 3.0),
]


def _hot_star_shape(wl, temperature):
    """Black-body F_lambda (arbitrary scale) with the broad hydrogen lines of a B star."""
    wl = np.asarray(wl, float)
    f = wl ** -5 / np.expm1(1.4387769e7 / (wl * temperature))
    for centre, depth, fwhm in HOT_STAR_LINES:
        f = f * (1.0 - depth * np.exp(-0.5 * ((wl - centre) / (fwhm / 2.3548)) ** 2))
    return f


@lru_cache(maxsize=None)
def _hot_star_scale(v_mag, temperature):
    wl = np.arange(460.0, 720.0, 0.1)
    return 10 ** (-0.4 * (v_mag - ab_magnitude(wl, _hot_star_shape(wl, temperature), "V")))


def hot_star(wl, v_mag, temperature=15000.0):
    """Flux (erg/s/cm^2/Angstrom) of a hot (B-type) telluric standard.

    A black body of ``temperature`` with broad Balmer, Paschen and Brackett absorption
    lines (:data:`HOT_STAR_LINES`), scaled to the AB magnitude ``v_mag`` through the
    bundled Johnson V curve.
    """
    return _hot_star_shape(wl, temperature) * _hot_star_scale(float(v_mag), float(temperature))


def source_flux(scene):
    """Top-of-atmosphere flux of a scene's target: a callable wavelength (nm) -> erg/s/cm^2/Angstrom.

    ``scene['object']`` says what it is: 'standard' (the bundled flux table of
    ``scene['target']``), 'telluric' (:func:`hot_star` of V = ``scene['mag']`` and
    ``scene['temperature']``) or 'galaxy' (:func:`science_target` of AB magnitude
    ``scene['mag']``).
    """
    kind = scene["object"]
    if kind == "standard":
        wl_s, f_s = standard_star(scene["target"])
        return lambda wl: np.interp(wl, wl_s, f_s)
    if kind == "telluric":
        return lambda wl: hot_star(wl, scene["mag"], scene.get("temperature", 15000.0))
    if kind == "galaxy":
        return lambda wl: science_target(wl, scene.get("mag", 18.0))
    raise ValueError(f"unknown object kind {kind!r}: use 'standard', 'telluric' or 'galaxy'")


def ab_magnitudes(flux, filters=tuple(FILTER_FILES), step=0.02):
    """AB magnitudes of ``flux`` (a callable of wavelength in nm) through the bundled filter curves.

    The spectrum is sampled every ``step`` nm over 300-1200 nm, which holds every filter.
    Returns a dict filter -> magnitude (rounded to 1e-5 mag).
    """
    wl = np.arange(300.0, 1200.0, step)
    f = flux(wl)
    return {name: round(float(ab_magnitude(wl, f, name)), 5) for name in filters}


def photon_rate(wl, flux_erg):
    """Convert F_lambda (erg/s/cm^2/Angstrom) to photons / s / nm over the telescope area."""
    wl = np.asarray(wl, float)
    return np.asarray(flux_erg) * 10.0 * TELESCOPE_AREA_CM2 * wl / H_C_ERG_NM


# -- atmosphere ------------------------------------------------------------------
@lru_cache(maxsize=None)
def _extinction_table():
    t = Table.read(static_path("extinction_lasilla.fits"))
    return _col(t, "WAVE") / 10.0, _col(t, "MAG_AIRMASS")


def extinction(wl):
    """Atmospheric extinction (mag / airmass) at La Silla.

    The bundled curve ends at 900 nm; beyond it Rayleigh scattering (lambda^-4)
    is continued from the last tabulated value.
    """
    wl = np.asarray(wl, float)
    tw, tk = _extinction_table()
    k = np.interp(wl, tw, tk)
    red = wl > tw[-1]
    k[red] = tk[-1] * (tw[-1] / wl[red]) ** 4
    return k


# centre (nm), half-width (nm), optical depth at airmass 1 and absorber of the main bands:
# H2O (water vapour, scaled by the water-vapour scale) or O2 (O2 and the other well-mixed
# gases, CO2 at 2010 nm, which scale with airmass alone)
_TELLURIC_BANDS = [
    (628.0, 3.0, 0.05, "O2"), (687.0, 2.5, 0.5, "O2"), (720.0, 12.0, 0.25, "H2O"), (762.0, 3.0, 1.5, "O2"),
    (820.0, 12.0, 0.3, "H2O"), (935.0, 25.0, 1.0, "H2O"), (1130.0, 35.0, 1.2, "H2O"), (1268.0, 4.0, 0.4, "O2"),
    (1400.0, 60.0, 3.0, "H2O"), (1850.0, 90.0, 3.0, "H2O"), (2010.0, 10.0, 0.4, "O2"),
]


@lru_cache(maxsize=None)
def _telluric_comb():
    """Fine line structure inside the bands: a fixed random forest of narrow lines."""
    rng = np.random.default_rng(2024)
    grid = np.arange(600.0, 2100.0, 0.02)
    comb = np.zeros_like(grid)
    centres = rng.uniform(600.0, 2100.0, 6000)
    depth = rng.exponential(1.0, centres.size)
    idx = np.searchsorted(grid, centres)
    np.add.at(comb, np.clip(idx, 0, grid.size - 1), depth)
    kernel = np.exp(-0.5 * (np.arange(-15, 16) / 4.0) ** 2)
    comb = np.convolve(comb, kernel / kernel.sum(), mode="same")
    return grid, comb / comb.mean()


def _telluric_depths(wl, water_scale):
    """Optical depths at airmass 1 of the water and of the O2 bands, line structure included."""
    wl = np.asarray(wl, float)
    grid, comb = _telluric_comb()
    structure = np.interp(wl, grid, comb, left=1.0, right=1.0)
    tau = {"H2O": np.zeros_like(wl), "O2": np.zeros_like(wl)}
    for centre, width, depth, absorber in _TELLURIC_BANDS:
        scale = water_scale if absorber == "H2O" else 1.0
        tau[absorber] += depth * scale * np.exp(-0.5 * ((wl - centre) / width) ** 2)
    return tau["H2O"] * structure, tau["O2"] * structure


def telluric_parts(wl, airmass=1.0, water_scale=1.0):
    """Water-vapour and O2 transmissions (0-1) at ``airmass``; their product is :func:`telluric`.

    The O2 part holds O2 and the other well-mixed gases (CO2): it scales with airmass
    alone; the water part also with ``water_scale``. Each part at airmass X is its
    value at airmass 1 to the power X.
    """
    tau_h2o, tau_o2 = _telluric_depths(wl, water_scale)
    return np.exp(-airmass * tau_h2o), np.exp(-airmass * tau_o2)


def telluric(wl, airmass=1.0, water_scale=1.0):
    """Telluric transmission (0-1) of a simple band model at ``airmass``.

    Gaussian band envelopes (O2 A and B bands, H2O bands) filled with a fixed
    forest of narrow lines; ``water_scale`` scales the water bands.
    """
    tau_h2o, tau_o2 = _telluric_depths(wl, water_scale)
    return np.exp(-airmass * (tau_h2o + tau_o2))


# -- instrument ------------------------------------------------------------------
def efficiency(arm, order, wl):
    """Total efficiency (telescope + instrument + detector) in ``order`` at ``wl``.

    VIS: each quasi-order passes its useful range (WLMIN..WLMAX) with soft edges.
    NIR: a smooth envelope times the blaze of echelle order ``order``
    (sinc^2 centred on the middle of the order's full range).
    """
    wl = np.asarray(wl, float)
    fmt = spectral_format(arm)
    row = fmt[np.asarray(fmt["ORDER"]) == order][0]
    if "WLMIN" in fmt.colnames:
        lo, hi = float(row["WLMIN"]), float(row["WLMAX"])
        edge = 4.0
        window = 1.0 / (1.0 + np.exp(-(wl - lo) / edge)) / (1.0 + np.exp((wl - hi) / edge))
        envelope = 0.28 * np.exp(-0.5 * ((wl - 600.0) / 260.0) ** 2)
        return envelope * window
    centre = 0.5 * (float(row["WLMINFUL"]) + float(row["WLMAXFUL"]))
    envelope = 0.30 * np.exp(-0.5 * ((wl - 1300.0) / 700.0) ** 2)
    return envelope * np.sinc(order * (centre - wl) / wl) ** 2


def resolution(arm, slit_width_arcsec):
    """Resolving power of ``arm`` for a slit (or pinhole) of the given width in arcsec."""
    w0 = OPTICS_WIDTH_ARCSEC
    return RESOLUTION_1ARCSEC[arm] * np.sqrt(1.0 + w0 ** 2) / np.sqrt(slit_width_arcsec ** 2 + w0 ** 2)


def target_level_e(arm, readout="slow", fraction=0.4):
    """Electrons per pixel at ``fraction`` of the arm's saturation (for lamp exposure levels)."""
    det = detector(arm)
    mode = det.readout_mode(1 if readout == "slow" else 2) if det.read_speed_ids else "default"
    return fraction * det.saturation_adu * det.gain(mode)
