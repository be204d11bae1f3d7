"""Atmospheric extinction at La Silla (mag / airmass), extended redwards of the bundled curve.

The bundled curve ``extinction_lasilla.fits`` (3100-9000 Angstrom, in 0.01 mag steps)
is linearly interpolated inside its range. Redwards of its last point ``lambda_e``
the continuum extinction is the sum of Rayleigh scattering and aerosol scattering,

    k(lambda) = a (lambda_e / lambda)^4 + b (lambda_e / lambda)^alpha,

with the aerosol Angstrom exponent ``alpha`` (1.3 by default, the classical value for
continental aerosols). Molecular absorption bands are left out: they are the
telluric correction's job. ``a + b`` is the table's last value, so the curve is
continuous; ``a`` (with ``0 <= a <= a + b``) is the least-squares fit of the law to
the table's red end, whose values are too coarsely rounded to give a slope of their
own. The slope is continuous too: over the table's last interval a cubic Hermite
segment joins the slope of the interval before it to the slope of the law.

The molecular bands themselves are listed in ``telluric_bands.yaml``
(:func:`telluric_bands`, :func:`band_mask`): response fits mask them and the
telluric correction removes them.
"""

import logging
from functools import lru_cache

import numpy as np
from astropy.table import Table

from ..static_calibrations import load_yaml
from ..static_calibrations import path as static_path

log = logging.getLogger(__name__)

#: dry, well-mixed absorbers, whose bands scale with the airmass alone
DRY_SPECIES = ("O2", "CO2")
#: aerosol Angstrom exponent of the red extension
AEROSOL_EXPONENT = 1.3
#: the law is fitted to the table's points within this distance (nm) of its red end
FIT_WINDOW_NM = 300.0


@lru_cache(maxsize=None)
def _table():
    t = Table.read(static_path("extinction_lasilla.fits"))
    wave = np.asarray(t["WAVE"], dtype=float) / 10.0  # Angstrom -> nm
    k = np.asarray(t["MAG_AIRMASS"], dtype=float)
    order = np.argsort(wave)
    return wave[order], k[order]


def red_law(alpha=AEROSOL_EXPONENT, window=FIT_WINDOW_NM):
    """Amplitudes of the Rayleigh + aerosol law that continues the bundled curve.

    Parameters
    ----------
    alpha : float
        Aerosol Angstrom exponent.
    window : float
        The law is fitted to the tabulated points within ``window`` nm of the table's end.

    Returns
    -------
    end, rayleigh, aerosol : float
        The table's last wavelength (nm) and the amplitudes ``a`` and ``b`` (mag/airmass at
        ``end``) of the Rayleigh and aerosol terms; ``a + b`` is the table's last value.
    """
    wave, k = _table()
    end, k_end = wave[-1], k[-1]
    use = wave >= end - window
    x = end / wave[use]
    # k = a x^4 + (k_end - a) x^alpha: one linear parameter
    design = x ** 4 - x ** alpha
    target = k[use] - k_end * x ** alpha
    denominator = float(np.dot(design, design))
    a = float(np.dot(design, target)) / denominator if denominator > 0 else 0.0
    a = min(max(a, 0.0), k_end)
    return float(end), a, float(k_end - a)


def extinction(wavelength, alpha=AEROSOL_EXPONENT):
    """Atmospheric extinction at La Silla in mag per airmass.

    Parameters
    ----------
    wavelength : array_like
        Wavelengths (nm, air); any shape.
    alpha : float
        Aerosol Angstrom exponent of the extension beyond the bundled curve.

    Returns
    -------
    numpy.ndarray
        Extinction (mag / airmass), same shape as ``wavelength``; bluewards of the table
        the first value is held.
    """
    wl = np.asarray(wavelength, dtype=float)
    wave, k = _table()
    end, a, b = red_law(alpha)
    out = np.interp(wl, wave, k)
    red = wl > end
    x = end / wl[red]
    out[red] = a * x ** 4 + b * x ** alpha
    # Hermite segment over the last tabulated interval: value and slope continuous at both ends
    w0, k0 = wave[-2], k[-2]
    slope0 = (k[-2] - k[-3]) / (wave[-2] - wave[-3])
    slope1 = -(4.0 * a + alpha * b) / end
    h = end - w0
    seg = (wl > w0) & ~red
    t = (wl[seg] - w0) / h
    h00, h10 = 2 * t ** 3 - 3 * t ** 2 + 1, t ** 3 - 2 * t ** 2 + t
    h01, h11 = -2 * t ** 3 + 3 * t ** 2, t ** 3 - t ** 2
    out[seg] = h00 * k0 + h10 * h * slope0 + h01 * k[-1] + h11 * h * slope1
    return out


def transmission(wavelength, airmass, alpha=AEROSOL_EXPONENT):
    """Fraction of the light that the continuum extinction lets through at ``airmass``: ``10^(-0.4 k X)``."""
    return 10.0 ** (-0.4 * extinction(wavelength, alpha) * float(airmass))


@lru_cache(maxsize=None)
def telluric_bands():
    """The bundled telluric bands: Table ``name, species, low, high`` (nm, air), ``envelope``, sorted by ``low``.

    ``envelope`` marks the weak bands that a response fit climbs over instead of masking.
    """
    rows = load_yaml("telluric_bands.yaml")["bands"]
    t = Table({k: [r[k] for r in rows] for k in ("name", "species", "low", "high")})
    t["envelope"] = [bool(r.get("envelope", False)) for r in rows]
    t.sort("low")
    return t


def band_mask(wavelength, species=None, envelope=None):
    """True where ``wavelength`` (nm) lies in a telluric band.

    Parameters
    ----------
    wavelength : array_like
    species : str or sequence of str, optional
        Only the bands of these molecules.
    envelope : bool, optional
        Only the bands fitted to their upper envelope (True) or only the others (False).
    """
    wl = np.asarray(wavelength, dtype=float)
    out = np.zeros(wl.shape, dtype=bool)
    for row in telluric_bands():
        if species is not None and row["species"] not in np.atleast_1d(species):
            continue
        if envelope is not None and bool(row["envelope"]) != bool(envelope):
            continue
        out |= (wl >= row["low"]) & (wl <= row["high"])
    return out
