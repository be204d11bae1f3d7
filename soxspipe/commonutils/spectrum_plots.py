"""Plots of extracted spectra: the quicklook PDF of a merged spectrum and the per-order QC plot.

Figures are built on the Agg canvas through :func:`.qc_plots.new_figure`, never
through pyplot. Flux axes are limited to robust percentiles of the good bins,
so that a few noisy bins at the orders' ends do not flatten the spectrum.
"""

import logging

import numpy as np

from .product_io import publish
from .qc_plots import new_figure

log = logging.getLogger(__name__)


def _limits(values, low=1.0, high=99.0, pad=0.1):
    """Robust axis limits of the finite ``values``."""
    v = np.asarray(values, float)
    v = v[np.isfinite(v)]
    if v.size == 0:
        return 0.0, 1.0
    lo, hi = np.percentile(v, [low, high])
    span = (hi - lo) or max(abs(hi), 1.0)
    return float(lo - pad * span), float(hi + pad * span)


def quicklook_pdf(merged, spectra, *, title, path):
    """Write the quicklook of a merged spectrum as a one-page PDF.

    Panels: the merged flux with its 1-sigma band and the orders' own spectra
    underneath (faint), the signal-to-noise ratio, and the sky under the object.

    Parameters
    ----------
    merged : MergedScience
    spectra : sequence of OrderSpectrum
    title : str
    path : str or Path
    """
    fig = new_figure(figsize=(11.0, 8.0), layout="constrained")
    axes = fig.subplots(3, 1, sharex=True, gridspec_kw={"height_ratios": [3, 1, 1.3]})
    wave = merged.wavelength
    good = merged.qual == 0
    flux = np.where(good, merged.flux, np.nan)
    error = np.where(good, merged.error, np.nan)
    for s in spectra:
        axes[0].plot(s.wavelength, np.where(s.qual == 0, s.flux, np.nan), lw=0.3, alpha=0.35, rasterized=True)
    axes[0].fill_between(wave, flux - error, flux + error, color="0.7", lw=0, step="mid", rasterized=True)
    axes[0].plot(wave, flux, color="k", lw=0.4, drawstyle="steps-mid", rasterized=True)
    axes[0].set_ylim(*_limits(flux))
    axes[0].set_ylabel("flux (e-/nm)")
    axes[0].set_title(title)
    with np.errstate(invalid="ignore", divide="ignore"):
        snr = flux / error
    axes[1].plot(wave, snr, color="C0", lw=0.4, rasterized=True)
    axes[1].set_ylim(*_limits(snr, 0.5, 99.5))
    axes[1].set_ylabel("S/N per bin")
    axes[2].plot(wave, np.where(good, merged.sky, np.nan), color="C3", lw=0.4, rasterized=True)
    axes[2].set_ylim(*_limits(merged.sky, 0.5, 99.9))
    axes[2].set_ylabel("sky (e-/nm)")
    axes[2].set_xlabel("wavelength (nm, air)")
    for ax in axes:
        ax.grid(alpha=0.3)
    publish(lambda tmp: fig.savefig(tmp, format="pdf", dpi=150), path, overwrite=True)


def orders_plot(spectra, *, title, path):
    """Write a PNG of every order's optimal and boxcar spectra and their S/N."""
    fig = new_figure(figsize=(11.0, 7.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True, gridspec_kw={"height_ratios": [2, 1]})
    fluxes, ratios = [], []
    for k, s in enumerate(spectra):
        good = s.qual == 0
        top.plot(s.wavelength, np.where(good, s.flux, np.nan), lw=0.4, color=f"C{k % 10}")
        top.plot(s.wavelength, np.where(good, s.flux_box, np.nan), lw=0.3, color=f"C{k % 10}", alpha=0.4)
        bottom.plot(s.wavelength, np.where(good, s.snr, np.nan), lw=0.4, color=f"C{k % 10}")
        y = s.wavelength[good].mean() if good.any() else s.wavelength.mean()
        bottom.text(y, 0.02, str(s.order), transform=bottom.get_xaxis_transform(), ha="center", fontsize=7)
        fluxes.append(s.flux[good])
        ratios.append(s.snr[good])
    top.set_ylim(*_limits(np.concatenate(fluxes) if fluxes else []))
    bottom.set_ylim(*_limits(np.concatenate(ratios) if ratios else [], 0.5, 99.5))
    top.set_ylabel("flux (e-/nm): optimal, boxcar faint")
    bottom.set_ylabel("S/N (optimal)")
    bottom.set_xlabel("wavelength (nm, air)")
    top.set_title(title)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    publish(lambda tmp: fig.savefig(tmp, format="png", dpi=110), path, overwrite=True)
