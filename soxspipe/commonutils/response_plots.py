"""The QC plot of a response: the response per order and the end-to-end efficiency it implies.

Built on the Agg canvas through :func:`.qc_plots.new_figure`, never through pyplot.
"""

import logging

import numpy as np

from .product_io import publish
from .qc_plots import new_figure
from .response import efficiency_factor

log = logging.getLogger(__name__)


def response_plot(response, efficiency, *, title, path):
    """Write a PNG of the response (top) and the efficiency (bottom) of every order.

    Where the response was fitted the curves are solid; across telluric bands, stellar
    lines and faint or clipped data (``MASK`` non-zero) they are faint. The efficiency's
    reference points (the QC values) are marked: filled where measured, open where bridged.

    Parameters
    ----------
    response : soxspipe.commonutils.response.Response
    efficiency : astropy.table.Table
        :func:`~.response.efficiency_qc` of the response.
    title : str
    path : str or Path
    """
    fig = new_figure(figsize=(11.0, 7.5), layout="constrained")
    top, bottom = fig.subplots(2, 1, sharex=True)
    peak = 0.0
    for k, order in enumerate(response.orders):
        rows = response.order_table(order)
        wave = np.asarray(rows["WAVE"], dtype=float)
        value = np.asarray(rows["RESPONSE"], dtype=float)
        fitted = np.asarray(rows["MASK"]) == 0
        eff = value * efficiency_factor(wave)
        colour = f"C{k % 10}"
        for ax, y in ((top, value), (bottom, eff)):
            ax.plot(wave, y, lw=0.6, color=colour, alpha=0.3)
            ax.plot(wave, np.where(fitted, y, np.nan), lw=0.9, color=colour)
        bottom.text(np.median(wave), 0.02, str(order), transform=bottom.get_xaxis_transform(), ha="center",
                    fontsize=7)
        peak = max(peak, float(np.nanmax(eff)) if np.isfinite(eff).any() else 0.0)
    measured = np.asarray(efficiency["MASK"]) == 0
    wave, eff = np.asarray(efficiency["WAVE"], dtype=float), np.asarray(efficiency["EFFICIENCY"], dtype=float)
    bottom.plot(wave[measured], eff[measured], "o", ms=4, color="k", label="QC: measured")
    bottom.plot(wave[~measured], eff[~measured], "o", ms=4, mfc="none", color="k", label="QC: bridged")
    top.set_yscale("log")
    top.set_ylabel("response ((e-/s/nm) / (erg/s/cm2/A))")
    top.set_title(title)
    bottom.set_ylim(0.0, 1.15 * peak if peak > 0 else 1.0)
    bottom.set_ylabel("end-to-end efficiency")
    bottom.set_xlabel("wavelength (nm, air)")
    bottom.legend(loc="upper right", fontsize=8)
    for ax in (top, bottom):
        ax.grid(alpha=0.3)
    publish(lambda tmp: fig.savefig(tmp, format="png", dpi=110), path, overwrite=True)
