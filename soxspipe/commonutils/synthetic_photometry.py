"""Synthetic photometry: AB magnitudes of spectra through the acquisition camera's filters.

The filter curves are the bundled total throughputs (``static_calibrations/filters``):
LSST u g r i z y and Johnson/Bessell V. The magnitude is the photon-counting AB
magnitude

    m = -2.5 log10( ∫ f_λ T λ dλ / ∫ f_λ^AB T λ dλ ),   f_λ^AB = 3631 Jy c / λ²,

which a flat f_ν spectrum of AB magnitude m reproduces exactly in any filter.
No I/O beyond reading the bundled curves.
"""

import logging
from dataclasses import dataclass
from functools import lru_cache

import numpy as np
from astropy.table import Table

from ..static_calibrations import path as static_path
from .errors import DataError

log = logging.getLogger(__name__)

#: filter name (as in the acquisition camera's filter keyword) -> bundled throughput file
FILTER_FILES = {
    "u": "lsst2023-u.ecsv", "g": "lsst2023-g.ecsv", "r": "lsst2023-r.ecsv", "i": "lsst2023-i.ecsv",
    "z": "lsst2023-z.ecsv", "y": "lsst2023-y.ecsv", "V": "bessell-V.ecsv",
}
#: AB zero point: 3631 Jy in erg/s/cm^2/Hz, and c in Angstrom/s
AB_FNU = 3631e-23
C_ANGSTROM_S = 2.99792458e18
_NM_PER_UNIT = {"nm": 1.0, "Angstrom": 0.1, "AA": 0.1, "um": 1000.0, "micron": 1000.0}


@dataclass(frozen=True)
class FilterCurve:
    """A filter's total throughput: ``wavelength`` (nm, increasing) and ``throughput`` (0-1)."""

    name: str
    wavelength: np.ndarray
    throughput: np.ndarray

    @property
    def support(self):
        """(first, last) wavelength in nm outside which the throughput (linear between samples) is zero."""
        nonzero = np.nonzero(self.throughput > 0)[0]
        first, last = max(nonzero[0] - 1, 0), min(nonzero[-1] + 1, self.wavelength.size - 1)
        return float(self.wavelength[first]), float(self.wavelength[last])

    @property
    def band(self):
        """(first, last) wavelength in nm where the throughput reaches 1 % of its peak."""
        above = np.nonzero(self.throughput >= 0.01 * self.throughput.max())[0]
        return float(self.wavelength[above[0]]), float(self.wavelength[above[-1]])

    @property
    def pivot_wavelength(self):
        """Pivot wavelength (nm) of a photon-counting passband: f_ν = f_λ λ_p² / c holds for the band averages."""
        w = _refined(self.wavelength)
        t = np.interp(w, self.wavelength, self.throughput)
        return float(np.sqrt(np.trapezoid(t * w, w) / np.trapezoid(t / w, w)))


def _refined(wavelength, step=0.05):
    """The samples of a curve with points added so that no interval exceeds ``step`` nm."""
    n = np.maximum(np.ceil(np.diff(wavelength) / step).astype(int), 1)
    pieces = [np.linspace(a, b, k, endpoint=False) for a, b, k in zip(wavelength[:-1], wavelength[1:], n)]
    return np.concatenate(pieces + [wavelength[-1:]])


@lru_cache(maxsize=None)
def filter_curve(name):
    """Return the bundled throughput curve of filter ``name``.

    Parameters
    ----------
    name : str
        'u', 'g', 'r', 'i', 'z', 'y' (LSST) or 'V' (Johnson/Bessell).

    Returns
    -------
    FilterCurve
        Read-only arrays; wavelengths in nm.

    Raises
    ------
    DataError
        No curve of that name is bundled.
    """
    if name not in FILTER_FILES:
        raise DataError(f"no throughput curve for filter '{name}' (bundled: {', '.join(FILTER_FILES)})")
    table = Table.read(static_path(f"filters/{FILTER_FILES[name]}"), format="ascii.ecsv")
    unit = str(table["wavelength"].unit or "nm")
    wavelength = np.asarray(table["wavelength"], float) * _NM_PER_UNIT[unit]
    throughput = np.clip(np.asarray(table["response"], float), 0.0, None)
    order = np.argsort(wavelength)
    wavelength, throughput = wavelength[order], throughput[order]
    wavelength.setflags(write=False)
    throughput.setflags(write=False)
    return FilterCurve(name, wavelength, throughput)


def _as_curve(curve_or_name):
    return curve_or_name if isinstance(curve_or_name, FilterCurve) else filter_curve(curve_or_name)


def _response(curve, start, stop):
    """∫ T dλ/λ over [start, stop] on the curve's own samples (T linear between them)."""
    fw, ft = curve.wavelength, curve.throughput
    inside = (fw > start) & (fw < stop)
    w = np.concatenate([[start], fw[inside], [stop]])
    t = np.concatenate([[np.interp(start, fw, ft)], ft[inside], [np.interp(stop, fw, ft)]])
    return np.trapezoid(t / w, w)


def _interp_last_axis(x_new, x, y):
    """Linear interpolation of ``y`` (..., n) sampled at increasing ``x`` (n,) onto ``x_new`` inside [x0, x-1]."""
    i = np.clip(np.searchsorted(x, x_new, side="right") - 1, 0, x.size - 2)
    w = (x_new - x[i]) / (x[i + 1] - x[i])
    return y[..., i] * (1.0 - w) + y[..., i + 1] * w


def ab_magnitude(wavelength_nm, flux_erg_s_cm2_A, filter, *, max_missing=1e-3):
    """Photon-counting AB magnitude of a spectrum through a filter.

    Parameters
    ----------
    wavelength_nm : array (n,)
        Increasing wavelengths in nm (the filter curves' wavelengths are in air or
        vacuum as published; the difference, < 0.3 nm, is far below their structure).
    flux_erg_s_cm2_A : array (..., n)
        F_λ in erg/s/cm^2/Angstrom; leading axes are several spectra on the same grid.
    filter : str or FilterCurve
        A filter name (see :func:`filter_curve`) or a curve.
    max_missing : float
        Largest fraction of the filter's photon response (∫ T dλ/λ) allowed outside the
        spectrum; the magnitude is then taken over the covered part alone.

    Returns
    -------
    float or ndarray
        The magnitude (an array for several spectra); NaN where the integrated flux is
        not positive or a flux inside the band is not finite.

    Raises
    ------
    DataError
        The wavelengths are not increasing, or the spectrum misses more of the filter
        than ``max_missing`` allows.
    """
    curve = _as_curve(filter)
    wl = np.asarray(wavelength_nm, float)
    flux = np.asarray(flux_erg_s_cm2_A, float)
    if wl.ndim != 1 or wl.size < 2 or flux.shape[-1:] != wl.shape:
        raise DataError(f"ab_magnitude needs a 1D wavelength array and flux of the same last length, "
                        f"got {wl.shape} and {flux.shape}")
    if np.any(np.diff(wl) <= 0):
        raise DataError("ab_magnitude: the wavelengths must increase strictly")
    lo, hi = curve.support
    start, stop = max(lo, wl[0]), min(hi, wl[-1])
    fw, ft = curve.wavelength, curve.throughput
    band = "{:.0f}-{:.0f} nm".format(*curve.band)
    if stop <= start:
        raise DataError(f"the spectrum ({wl[0]:.1f}-{wl[-1]:.1f} nm) does not overlap filter {curve.name} ({band})")
    missing = 1.0 - _response(curve, start, stop) / _response(curve, lo, hi)
    if missing > max_missing:
        raise DataError(f"the spectrum ({wl[0]:.1f}-{wl[-1]:.1f} nm) misses {100 * missing:.2f} % of filter "
                        f"{curve.name}'s response ({band}; at most {100 * max_missing:g} % allowed)")
    # both the spectrum's and the filter's samples inside the common range: narrow lines and
    # sharp filter edges are both kept
    grid = np.union1d(wl[(wl >= start) & (wl <= stop)], fw[(fw >= start) & (fw <= stop)])
    grid = np.union1d(grid, [start, stop])
    t = np.interp(grid, fw, ft)
    f = _interp_last_axis(grid, wl, flux)
    # 100: Angstrom per nm, twice (lambda and d lambda)
    photons = 100.0 * np.trapezoid(f * t * grid, grid, axis=-1)
    reference = AB_FNU * C_ANGSTROM_S * np.trapezoid(t / grid, grid)
    with np.errstate(divide="ignore", invalid="ignore"):
        mag = np.where(photons > 0, -2.5 * np.log10(photons / reference), np.nan)
    return float(mag) if mag.ndim == 0 else mag


def ab_to_flambda(magnitude, wavelength_nm):
    """F_λ (erg/s/cm^2/Angstrom) of a flat-f_ν spectrum of AB magnitude ``magnitude`` at ``wavelength_nm``."""
    wl_a = np.asarray(wavelength_nm, float) * 10.0
    return AB_FNU * 10 ** (-0.4 * np.asarray(magnitude, float)) * C_ANGSTROM_S / wl_a**2
