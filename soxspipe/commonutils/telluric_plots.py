"""The QC plot of a telluric transmission: the standard's spectrum and continuum, and the transmission.

Built on the Agg canvas through :func:`.qc_plots.new_figure`, never through pyplot.
"""

import numpy as np

from .extinction import telluric_bands
from .product_io import publish
from .qc_plots import new_figure


def telluric_plot(table, spectrum, *, threshold, title, path):
    """Write a PNG of the standard's spectrum with its fitted continuum (top) and the transmission (bottom).

    The transmission's water (``TRANS_H2O``) and dry-gas (``TRANS_O2``) parts are drawn in their
    own colours, the points interpolated across the standard's lines faint, the bands shaded
    and the threshold below which science fluxes are flagged dashed.

    Parameters
    ----------
    table : astropy.table.Table
        The ``TELLURIC_<ARM>`` table (:func:`~.science_telluric.transmission_table`).
    spectrum : tuple
        ``(wavelength, flux, continuum)`` of the standard.
    threshold : float
    title : str
    path : str or Path
    """
    fig = new_figure(figsize=(11.0, 7.0), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    wave, flux, continuum = (np.asarray(v, dtype=float) for v in spectrum)
    top.plot(wave, flux, lw=0.4, color="0.3", label="standard")
    top.plot(wave, continuum, lw=1.0, color="C3", label="continuum")
    top.set_ylabel("flux")
    top.set_title(title)
    top.legend(loc="upper right", fontsize=8)
    w = np.asarray(table["WAVE"], dtype=float)
    interpolated = np.asarray(table["QUAL"]) != 0
    for column, colour, label in (("TRANS_H2O", "C0", "H2O"), ("TRANS_O2", "C2", "O2, CO2")):
        t = np.asarray(table[column], dtype=float)
        part = t < 1.0
        bottom.plot(w, np.where(part, t, np.nan), lw=0.5, color=colour, alpha=0.35)
        bottom.plot(w, np.where(part & ~interpolated, t, np.nan), lw=0.6, color=colour, label=label)
    for band in telluric_bands():
        if band["high"] > w[0] and band["low"] < w[-1]:
            for ax in (top, bottom):
                ax.axvspan(band["low"], band["high"], color="0.92", zorder=0)
    bottom.axhline(threshold, ls="--", lw=0.8, color="k", label=f"flagged below {threshold:g}")
    bottom.set_ylim(-0.05, 1.1)
    bottom.set_ylabel("transmission")
    bottom.set_xlabel("wavelength (nm, air)")
    bottom.legend(loc="lower left", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    publish(lambda tmp: fig.savefig(tmp, format="png", dpi=110), path, overwrite=True)
