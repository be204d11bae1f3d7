"""Quicklook plot of a calibrated image: matched stars circled, astrometric residuals as vectors.

Built on :class:`matplotlib.figure.Figure` with the Agg canvas (no pyplot) and
written under a temporary name, as the other QC plots are.
"""

import numpy as np
from .product_io import publish
from .qc_plots import new_figure


def astrometry_quicklook(image, mask, *, x, y, matched, residuals, title, path, vector_scale=None):
    """Write a PNG of ``image`` with sources marked and the astrometric residuals drawn as arrows.

    Parameters
    ----------
    image : numpy.ndarray
        The image; masked pixels are blank.
    mask : numpy.ndarray of bool
        Bad pixels.
    x, y : array
        Positions (0-based px) of all detected sources (small dots).
    matched : array of int
        Indices into ``x``/``y`` of the stars used in the astrometric fit (circled).
    residuals : (n, 2) array
        Their (east, north) residuals in arcsec, drawn as arrows from each star.
    title : str
    path : str or Path
    vector_scale : float, optional
        Pixels of arrow per arcsec of residual (default: the largest residual is 60 px long).

    Returns
    -------
    pathlib.Path
    """
    shown = np.where(mask, np.nan, image).astype(np.float32)
    good = shown[np.isfinite(shown)]
    lo, hi = np.percentile(good[:: max(1, good.size // 200_000)], [5, 99.5]) if good.size else (0, 1)
    res = np.asarray(residuals, float).reshape(-1, 2)
    if vector_scale is None:
        biggest = float(np.max(np.hypot(res[:, 0], res[:, 1]))) if len(res) else 0.0
        vector_scale = 60.0 / biggest if biggest > 0 else 1.0
    fig = new_figure(figsize=(8, 8.4))
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(shown, origin="lower", cmap="gray_r", vmin=lo, vmax=hi, interpolation="nearest")
    ax.plot(x, y, ".", ms=2, color="tab:blue", label=f"{len(x)} sources")
    mx, my = np.asarray(x)[matched], np.asarray(y)[matched]
    ax.scatter(mx, my, s=80, facecolors="none", edgecolors="tab:red", linewidths=0.8,
               label=f"{len(mx)} matched stars")
    # residuals are (east, north); with east to the left on the sky, approximate the pixel directions
    ax.quiver(mx, my, -res[:, 0] * vector_scale, res[:, 1] * vector_scale, angles="xy", scale_units="xy", scale=1,
              color="tab:orange", width=0.003)
    key = 0.1 if vector_scale * 0.1 >= 20 else 1.0
    ax.quiver([0.05 * image.shape[1]], [0.04 * image.shape[0]], [key * vector_scale], [0], angles="xy",
              scale_units="xy", scale=1, color="tab:orange", width=0.003)
    ax.text(0.05 * image.shape[1], 0.06 * image.shape[0], f"{key:g} arcsec residual", color="tab:orange", fontsize=8)
    ax.set_xlim(0, image.shape[1])
    ax.set_ylim(0, image.shape[0])
    ax.set_xlabel("x (px)")
    ax.set_ylabel("y (px)")
    ax.set_title(title, fontsize=10)
    ax.legend(loc="upper right", fontsize=8)
    return publish(lambda tmp: fig.savefig(tmp, format="png", dpi=90), path, overwrite=True)
