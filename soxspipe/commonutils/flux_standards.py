"""The bundled flux standards: finding a star by name or position, and its catalogue flux.

``flux_standards.fits`` holds one flux column (erg/s/cm^2/Angstrom) per star on a
common wavelength grid (nm); ``flux_standards.yaml`` gives each star's aliases and
J2000 position, and the absorption lines of hot stars that a response fit masks.
Names match after normalisation (case, spaces, underscores, dots and hyphens
ignored, the sign of a Durchmusterung zone kept), so ``'LTT 3218'``, ``'ltt-3218'``
and ``'CD-32 5613'`` all find ``LTT3218``.
"""

import logging
import re
from functools import lru_cache

import numpy as np
from astropy.coordinates import SkyCoord
from astropy.table import Table
from scipy.ndimage import gaussian_filter1d

from ..static_calibrations import load_yaml
from ..static_calibrations import path as static_path
from .errors import DataError

log = logging.getLogger(__name__)

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))
# Durchmusterung names keep the sign of their declination zone: BD+28 and BD-28 are different stars
_ZONE_SIGN = re.compile(r"^(BD|CD|CPD|SD)([+-])")


def normalise_name(name):
    """Canonical form of a star's name: upper case, without spaces, underscores, dots or hyphens.

    The sign after a Durchmusterung prefix (BD, CD, CPD, SD) is kept.
    """
    text = str(name).strip().upper()
    match = _ZONE_SIGN.match(text.replace(" ", ""))
    prefix = ""
    if match:
        prefix = match.group(1) + ("M" if match.group(2) == "-" else "P")
        text = text.replace(" ", "")[match.end():]
    return prefix + re.sub(r"[^A-Z0-9]", "", text)


@lru_cache(maxsize=None)
def _catalogue():
    t = Table.read(static_path("flux_standards.fits"))
    wave = np.asarray(t["WAVE"], dtype=float)
    return wave, {name: np.asarray(t[name], dtype=float) for name in t.colnames if name != "WAVE"}


@lru_cache(maxsize=None)
def _names():
    """Normalised name or alias -> catalogue column."""
    stars = load_yaml("flux_standards.yaml")["stars"]
    names = {}
    for column in _catalogue()[1]:
        names[normalise_name(column)] = column
        for alias in (stars.get(column) or {}).get("aliases", []):
            names[normalise_name(alias)] = column
    return names


def standard_names():
    """Names of the flux standards in the bundled table."""
    return list(_catalogue()[1])


@lru_cache(maxsize=None)
def _positions():
    stars = load_yaml("flux_standards.yaml")["stars"]
    names = [n for n in standard_names() if n in stars]
    coords = SkyCoord([stars[n]["ra"] for n in names], [stars[n]["dec"] for n in names],
                      unit=("hourangle", "deg"), frame="icrs")
    return names, coords


def find_standard(name=None, ra=None, dec=None, *, radius_arcsec=60.0):
    """The bundled flux standard called ``name``, or else the one nearest to ``(ra, dec)``.

    Parameters
    ----------
    name : str, optional
        The target's name (e.g. the ``OBJECT`` keyword); aliases and spelling variants match.
    ra, dec : float, optional
        The pointing (deg, J2000), used when the name matches no standard.
    radius_arcsec : float
        Largest distance at which a position matches a standard.

    Returns
    -------
    str
        The star's column name in ``flux_standards.fits``.

    Raises
    ------
    DataError
        Neither the name nor the position matches a bundled standard.
    """
    if name is not None:
        column = _names().get(normalise_name(name))
        if column is not None:
            return column
    where = ""
    if ra is not None and dec is not None:
        names, coords = _positions()
        target = SkyCoord(float(ra), float(dec), unit="deg", frame="icrs")
        separation = target.separation(coords).arcsec
        nearest = int(np.argmin(separation))
        if separation[nearest] <= radius_arcsec:
            log.info("flux standard %r identified by position as %s (%.1f arcsec away)",
                     name, names[nearest], separation[nearest])
            return names[nearest]
        where = (f" nor within {radius_arcsec:g} arcsec of RA {float(ra):.5f}, Dec {float(dec):.5f} "
                 f"(nearest: {names[nearest]}, {separation[nearest] / 3600.0:.2f} deg away)")
    raise DataError(f"flux standard '{name}' is not in the bundled flux_standards table{where}; "
                    f"known standards: {', '.join(standard_names())}. Observe one of them, or set "
                    "the OBJECT keyword to its name (aliases in flux_standards.yaml)")


@lru_cache(maxsize=16)
def _smoothed(column, resolution):
    """The catalogue on a uniform log-wavelength grid, convolved to ``resolution`` (None: as tabulated)."""
    wave, flux = _catalogue()
    if resolution is None:
        return wave, flux[column]
    # ten samples per sigma of the line-spread function
    step = 1.0 / (float(resolution) * _FWHM_PER_SIGMA * 10.0)
    log_grid = np.arange(np.log(wave[0]), np.log(wave[-1]), step)
    grid = np.exp(log_grid)
    sampled = np.interp(grid, wave, flux[column])
    return grid, gaussian_filter1d(sampled, 10.0, mode="nearest")


def catalogue_flux(name, wavelength, *, resolution=None):
    """Catalogue flux of a bundled standard at ``wavelength``.

    Parameters
    ----------
    name : str
        The star (any name :func:`find_standard` accepts).
    wavelength : array_like
        Wavelengths (nm, air).
    resolution : float, optional
        Resolving power ``lambda / FWHM`` of the spectrum it is compared with: the catalogue is
        first convolved with that Gaussian line-spread function.

    Returns
    -------
    numpy.ndarray
        Flux density (erg / s / cm^2 / Angstrom); NaN outside the catalogue's range.
    """
    column = find_standard(name)
    grid, flux = _smoothed(column, None if resolution is None else float(resolution))
    return np.interp(np.asarray(wavelength, dtype=float), grid, flux, left=np.nan, right=np.nan)


@lru_cache(maxsize=None)
def absorption_lines():
    """Air wavelengths (nm) of the hot-star absorption lines listed in ``flux_standards.yaml``, sorted."""
    groups = load_yaml("flux_standards.yaml")["absorption_lines"]
    return np.sort(np.concatenate([np.asarray(v, dtype=float) for v in groups.values()]))


def line_mask(wavelength, half_width_kms, lines=None):
    """True where ``wavelength`` lies within ``half_width_kms`` (as a Doppler width) of a stellar line.

    Parameters
    ----------
    wavelength : array_like
        Wavelengths (nm).
    half_width_kms : float
        Half-width of each masked window, in km/s.
    lines : array_like, optional
        Line wavelengths (nm); default :func:`absorption_lines`.
    """
    wl = np.asarray(wavelength, dtype=float)
    lines = absorption_lines() if lines is None else np.sort(np.asarray(lines, dtype=float))
    padded = np.concatenate([[-np.inf], lines, [np.inf]])
    i = np.searchsorted(padded, wl)
    nearest = np.minimum(wl - padded[i - 1], padded[i] - wl)
    return nearest <= wl * (float(half_width_kms) / 299792.458)
