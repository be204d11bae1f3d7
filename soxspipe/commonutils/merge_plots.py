"""The one-page quicklook PDF of a merged UV-VIS + NIR spectrum.

Panels (curves as medians of blocks of bins, at most :data:`MAX_POINTS`): the merged flux with its 1-sigma band and each arm's own flux in its colour
(UV-VIS blue, NIR red), the telluric bands shaded; the S/N per bin; and a text
summary of the header (object, date, airmass, seeing, exposure, flux calibration).
Built on the Agg canvas (:func:`.qc_plots.new_figure`), never through pyplot.
"""

import numpy as np

from .extinction import telluric_bands
from .product_io import publish
from .qc_plots import new_figure
from .spectrum_plots import _limits

#: colour of each arm's flux
ARM_COLOURS = {"VIS": "tab:blue", "NIR": "tab:red"}
#: the curves are drawn with at most this many points (medians of blocks of bins): a page shows no more
MAX_POINTS = 3000


def _blocks(values, size):
    """Median of ``values`` in blocks of ``size`` bins (NaN where a block has no finite value)."""
    values = np.asarray(values, float)
    n = int(np.ceil(values.size / size)) * size
    padded = np.full(n, np.nan)
    padded[:values.size] = values
    blocks = padded.reshape(-1, size)
    out = np.full(blocks.shape[0], np.nan)
    finite = np.isfinite(blocks).any(axis=1)
    out[finite] = np.nanmedian(blocks[finite], axis=1)
    return out


def merged_quicklook_pdf(merged, arms, *, title, summary, path):
    """Write the quicklook of a merged spectrum as a one-page PDF.

    Parameters
    ----------
    merged : MergedArms
        From :func:`~.merge_arms.merge_arms`.
    arms : sequence of str
        The arm of each of ``merged.arm_flux``.
    title : str
    summary : sequence of (str, str)
        Header summary lines as (label, value).
    path : str or Path
    """
    fig = new_figure(figsize=(11.7, 8.3), layout="constrained")
    grid = fig.add_gridspec(3, 1, height_ratios=[3.2, 1.1, 0.9])
    ax_flux = fig.add_subplot(grid[0])
    ax_snr = fig.add_subplot(grid[1], sharex=ax_flux)
    ax_text = fig.add_subplot(grid[2])
    c = merged.columns
    size = max(1, int(np.ceil(c["WAVE"].size / MAX_POINTS)))
    good = c["QUAL"] == 0
    wave = _blocks(c["WAVE"], size)
    flux = _blocks(np.where(good, c["FLUX"], np.nan), size)
    # the error of a block's median, of the order of a bin's error over sqrt(bins)
    error = _blocks(np.where(good, c["ERR"], np.nan), size) / np.sqrt(size)
    snr = _blocks(np.where(good, c["SNR"], np.nan), size)
    ax_flux.fill_between(wave, flux - error, flux + error, color="0.75", lw=0, step="mid", label="1 sigma")
    for arm, arm_flux in zip(arms, merged.arm_flux):
        ax_flux.plot(wave, _blocks(arm_flux, size), lw=0.6, color=ARM_COLOURS.get(arm, "k"), alpha=0.8, label=arm)
    ax_flux.plot(wave, flux, color="k", lw=0.4, alpha=0.6, label="merged")
    lo, hi = _limits(flux)
    ax_flux.set_ylim(min(lo, 0.0), hi)
    for row in telluric_bands():
        for ax in (ax_flux, ax_snr):
            ax.axvspan(row["low"], row["high"], color="gold", alpha=0.18, lw=0)
    ax_flux.set_xlim(float(c["WAVE"][0]), float(c["WAVE"][-1]))
    ax_flux.set_ylabel("flux (erg/s/cm2/A)")
    ax_flux.set_title(title)
    ax_flux.legend(loc="upper right", fontsize=8)
    ax_snr.plot(wave, snr, color="C2", lw=0.5)
    ax_snr.set_ylim(*_limits(snr, 0.5, 99.5))
    ax_snr.set_ylabel(f"S/N per {merged_step(merged):g} km/s bin")
    ax_snr.set_xlabel("wavelength (nm, air); shaded: telluric bands")
    for ax in (ax_flux, ax_snr):
        ax.grid(alpha=0.3)
    ax_text.axis("off")
    lines = [f"{label}: {value}" for label, value in summary]
    half = (len(lines) + 1) // 2
    for k, block in enumerate((lines[:half], lines[half:])):
        ax_text.text(0.01 + 0.5 * k, 0.95, "\n".join(block), va="top", ha="left", family="monospace", fontsize=9,
                     transform=ax_text.transAxes)
    publish(lambda tmp: fig.savefig(tmp, format="pdf", dpi=150), path, overwrite=True)


def merged_step(merged):
    """The velocity width (km/s) of the merged grid's bins."""
    from .merge_arms import C_KMS

    return round(float(np.median(np.diff(merged.edges) / merged.edges[:-1])) * C_KMS, 2)
