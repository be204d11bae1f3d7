"""The UV-VIS and NIR spectra of one OB on one grid: the core of ``soxs_merge``.

- :func:`velocity_edges`: a grid of constant velocity step (bins of constant
  ``d lambda / lambda``), the default of the merged product;
- :func:`arm_ratio`: the flux ratio of two arms where they overlap (a window,
  800-850 nm by default), to scale one onto the other when the absolute flux could
  not be measured for both;
- :func:`merge_arms`: every arm rebinned flux-conservingly
  (:func:`~.resample.rebin`) and combined with inverse-variance weights where
  they overlap. ``FLUX``, ``FLUX_TELL`` and ``BGFLUX`` are combined with the
  weights of ``FLUX``; the counts (``FLUX_REDUCED``) of two detectors do not add,
  so each bin keeps those of the arm of the larger weight.

Bins of an arm are used where they are good (``QUAL`` 0) and cover the new bin
entirely; a bin no arm covers gets ``QUAL`` 1 (no data) and NaN. No I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .resample import rebin
from .science_extract import QUAL_BITS

log = logging.getLogger(__name__)

C_KMS = 299792.458
#: an arm's bins must cover this much of a new bin to count in it
MIN_COVERAGE = 0.999
#: value columns combined with the flux weights, and the error columns that go with them
_WEIGHTED = (("FLUX_TELL", "ERR_TELL"), ("BGFLUX", None))


def velocity_edges(low, high, step_kms):
    """Edges of bins of constant velocity width ``step_kms`` (km/s) from ``low`` to at least ``high`` (nm)."""
    if not (step_kms > 0 and high > low > 0):
        raise DataError(f"no velocity grid from {low} to {high} nm by {step_kms} km/s")
    ratio = np.log1p(step_kms / C_KMS)
    n = int(np.ceil(np.log(high / low) / ratio))
    return low * np.exp(ratio * np.arange(n + 1))


def bin_edges(wavelength):
    """Edges of bins centred on ``wavelength`` (midpoints; the outer halves mirror the neighbours)."""
    w = np.asarray(wavelength, float)
    if w.size < 2:
        raise DataError("a spectrum of fewer than two bins cannot be rebinned")
    mid = 0.5 * (w[1:] + w[:-1])
    return np.concatenate([[w[0] - (mid[0] - w[0])], mid, [w[-1] + (w[-1] - mid[-1])]])


def usable_bins(spectrum, flux="FLUX", error="ERR"):
    """Bins of an SDP spectrum fit to combine: QUAL 0, finite flux, positive error."""
    c = spectrum.columns
    return (np.asarray(c["QUAL"]) == 0) & np.isfinite(c[flux]) & (np.asarray(c[error], float) > 0)


def overlap(a, b):
    """(low, high) wavelengths (nm) that two SDP spectra share; DataError when they do not overlap."""
    wa, wb = np.asarray(a.columns["WAVE"], float), np.asarray(b.columns["WAVE"], float)
    lo, hi = max(wa[0], wb[0]), min(wa[-1], wb[-1])
    if hi <= lo:
        raise DataError(f"the spectra do not overlap ({wa[0]:.1f}-{wa[-1]:.1f} nm and {wb[0]:.1f}-{wb[-1]:.1f} nm)")
    return float(lo), float(hi)


def _rebinned(spectrum, name, error, edges):
    """Column ``name`` (with its error column) of ``spectrum`` on ``edges``: (value, error, usable)."""
    c = spectrum.columns
    good = usable_bins(spectrum, name if name in ("FLUX", "FLUX_TELL") else "FLUX")
    values = np.where(good, np.asarray(c[name], float), np.nan)
    sigma = np.asarray(c[error], float) if error else np.ones(values.size)
    flux, err, coverage = rebin(bin_edges(c["WAVE"]), values, sigma, edges)
    return flux, err, (coverage >= MIN_COVERAGE) & np.isfinite(flux) & (err > 0)


def arm_ratio(reference, other, window, step_kms=50.0):
    """The flux ratio ``reference / other`` over the part of ``window`` (nm) that both cover well.

    Both are rebinned onto a common coarse grid (``step_kms``) in the window; the ratio of their sums
    over the bins good in both is returned with the number of such bins.

    Raises
    ------
    DataError
        No common good bin in the window.
    """
    lo, hi = overlap(reference, other)
    lo, hi = max(lo, window[0]), min(hi, window[1])
    if hi <= lo:
        raise DataError(f"the arms do not both cover the {window[0]:g}-{window[1]:g} nm window")
    edges = velocity_edges(lo, hi, step_kms)
    edges = edges[edges <= hi]
    if edges.size < 2:
        raise DataError(f"the {lo:.1f}-{hi:.1f} nm overlap is narrower than one {step_kms:g} km/s bin")
    f1, _, ok1 = _rebinned(reference, "FLUX", "ERR", edges)
    f2, _, ok2 = _rebinned(other, "FLUX", "ERR", edges)
    both = ok1 & ok2
    if not both.any() or not np.sum(f2[both]) > 0:
        raise DataError(f"no bin of {lo:.1f}-{hi:.1f} nm is good in both arms: cannot scale one onto the other")
    return float(np.sum(f1[both]) / np.sum(f2[both])), int(both.sum())


@dataclass
class MergedArms:
    """Result of :func:`merge_arms`.

    Attributes
    ----------
    edges : numpy.ndarray
        The grid's edges (nm).
    columns : dict
        The merged SDP columns (``WAVE`` ... ``ERR_REDUCED``), units as the inputs'.
    arm_flux : list of numpy.ndarray
        Each arm's ``FLUX`` on the grid (NaN where it does not contribute), for the quicklook.
    """

    edges: np.ndarray
    columns: dict
    arm_flux: list


def merge_arms(spectra, edges):
    """Combine SDP spectra (one per arm, the same flux units) on the grid ``edges``.

    Parameters
    ----------
    spectra : sequence of SdpSpectrum
    edges : array
        Bin edges (nm), e.g. :func:`velocity_edges`.

    Returns
    -------
    MergedArms
    """
    edges = np.asarray(edges, float)
    flux, error, usable = zip(*(_rebinned(s, "FLUX", "ERR", edges) for s in spectra))
    flux, error, usable = np.array(flux), np.array(error), np.array(usable)
    weight = np.where(usable, 1.0 / np.where(usable, error, 1.0) ** 2, 0.0)
    total = weight.sum(axis=0)
    has = total > 0
    safe = np.where(has, total, 1.0)

    def combine(values, errors=None):
        values = np.where(usable, values, 0.0)
        mean = np.where(has, (weight * values).sum(axis=0) / safe, np.nan)
        if errors is None:
            return mean, None
        errors = np.where(usable, errors, 0.0)
        return mean, np.where(has, np.sqrt((weight ** 2 * errors ** 2).sum(axis=0)) / safe, np.nan)

    columns = {"WAVE": 0.5 * (edges[1:] + edges[:-1])}
    columns["FLUX"] = np.where(has, (weight * np.where(usable, flux, 0.0)).sum(axis=0) / safe, np.nan)
    columns["ERR"] = np.where(has, 1.0 / np.sqrt(safe), np.nan)
    columns["QUAL"] = np.where(has, 0, QUAL_BITS["no_data"]).astype(np.int32)
    with np.errstate(invalid="ignore", divide="ignore"):
        columns["SNR"] = np.where(has, columns["FLUX"] / columns["ERR"], 0.0)
    for name, err_name in _WEIGHTED:
        if all(name in s.columns for s in spectra):
            pairs = [_rebinned(s, name, err_name, edges) for s in spectra]
            values = np.array([p[0] for p in pairs])
            columns[name], e = combine(values, np.array([p[1] for p in pairs]) if err_name else None)
            if err_name:
                columns[err_name] = e
    # counts of different detectors: the arm of the larger weight in each bin
    best = np.argmax(weight, axis=0)
    for name, err_name in (("FLUX_REDUCED", "ERR_REDUCED"),):
        pairs = [_rebinned(s, name, err_name, edges) for s in spectra]
        values, errors = np.array([p[0] for p in pairs]), np.array([p[1] for p in pairs])
        pick = np.arange(best.size)
        columns[name] = np.where(has, values[best, pick], np.nan)
        columns[err_name] = np.where(has, errors[best, pick], np.nan)
    order = ["WAVE", "FLUX", "ERR", "QUAL", "SNR", "FLUX_TELL", "ERR_TELL", "BGFLUX", "FLUX_REDUCED", "ERR_REDUCED"]
    columns = {k: columns[k] for k in order if k in columns}
    return MergedArms(edges, columns, [np.where(u, f, np.nan) for f, u in zip(flux, usable)])
