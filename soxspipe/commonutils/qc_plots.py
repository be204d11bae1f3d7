"""Quality-control plots of frames, written as PNG files.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas,
never through pyplot, so that nothing leaks into global state. matplotlib is
imported only when a figure is made: a recipe run pays for it only where it draws.
"""

import logging
import multiprocessing
import os
import threading

import bottleneck as bn
import numpy as np
from .detector_qc import nan_filled, robust_stats
from .product_io import publish

log = logging.getLogger(__name__)

def new_figure(**kwargs):
    """A :class:`matplotlib.figure.Figure` (keyword arguments as its own) attached to an Agg canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(**kwargs)
    FigureCanvasAgg(fig)
    return fig


def draw_plots(plots):
    """Start drawing QC plots, ``[(draw, path)]`` where ``draw(path)`` writes one PNG; return a function that waits.

    In a single-threaded process on a platform that forks, the plots are drawn by a
    forked child, so that drawing (and importing matplotlib) overlaps whatever the
    caller does next, typically writing the products. Elsewhere they are drawn at once.
    A plot that fails is logged as a warning: plots never fail a run.
    """
    def draw_all():
        failed = 0
        for draw, path in plots:
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                draw(path)
            except Exception as exc:  # a broken plot must not cost the products
                log.warning("QC plot %s not drawn: %s", path.name, exc)
                failed += 1
        return failed

    forkable = "fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
    if not plots or not forkable:
        draw_all()
        return lambda: None
    child = multiprocessing.get_context("fork").Process(target=lambda: os._exit(1 if draw_all() else 0), daemon=True)
    child.start()

    def wait():
        child.join()
        if child.exitcode:
            log.warning("%d QC plot(s) could not be drawn; see the messages above", len(plots))
    return wait


_MAX_DISPLAY = 800
"""Largest number of displayed pixels along either axis; bigger images are block-averaged."""

_MAX_HIST_VALUES = 1 << 20

_PROFILE_SAMPLE = 512


def detector_frame_plot(image, *, mask=None, title, path, unit="e-"):
    """Write a PNG summarising a detector frame: image, collapsed profiles, histogram.

    The image is shown with a 1-99 percentile stretch (block-averaged for
    display when larger than ``_MAX_DISPLAY`` pixels along an axis), with its
    median column profile (collapsed along y) below and its median row profile
    (collapsed along x) beside it, and a histogram of the good pixels within
    8 robust sigmas of the median.

    Parameters
    ----------
    image : array_like
        2D frame ``(ny, nx)``, x along the second axis.
    mask : array_like of bool, optional
        Bad pixels: blank in the image, ignored by the profiles and histogram.
    title : str
        Figure title.
    path : str or pathlib.Path
        Output PNG file, replaced if it exists; written under a temporary name
        and renamed into place.
    unit : str
        Unit of the pixel values, for the labels.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    work = nan_filled(image, mask)
    ny, nx = work.shape

    display, factor = _block_average(work, _MAX_DISPLAY)
    stride = max(1, work.size // _MAX_HIST_VALUES)
    sample = work.ravel()[::stride]
    sample = sample[~np.isnan(sample)]
    median, sigma = robust_stats(sample)
    if sample.size:
        vmin, vmax = np.percentile(sample, [1.0, 99.0])
    else:
        vmin, vmax = 0.0, 1.0
    if vmax <= vmin:
        vmin, vmax = vmin - 0.5, vmin + 0.5

    # a fixed layout: constrained layout would cost more than drawing the figure
    fig = new_figure(figsize=(9, 8), dpi=100)
    grid = fig.add_gridspec(2, 2, width_ratios=(3, 1), height_ratios=(3, 1), left=0.17, right=0.9,
                            bottom=0.08, top=0.92, wspace=0.08, hspace=0.2)
    ax_img = fig.add_subplot(grid[0, 0])
    ax_row = fig.add_subplot(grid[0, 1], sharey=ax_img)
    ax_col = fig.add_subplot(grid[1, 0], sharex=ax_img)
    ax_hist = fig.add_subplot(grid[1, 1])

    shown = ax_img.imshow(
        display,
        origin="lower",
        aspect="auto",
        cmap="gray",
        vmin=vmin,
        vmax=vmax,
        interpolation="nearest",
        extent=(-0.5, display.shape[1] * factor - 0.5, -0.5, display.shape[0] * factor - 0.5),
    )
    fig.colorbar(shown, ax=ax_img, location="left", label=unit, shrink=0.8, pad=0.12)
    ax_img.set_title(f"{nx} x {ny} px" + (f", shown binned {factor} x {factor}" if factor > 1 else ""), fontsize=9)
    ax_img.tick_params(labelbottom=False)

    with np.errstate(all="ignore"):
        # medians of up to _PROFILE_SAMPLE rows (columns) are as good as all of them on a plot
        column_profile = bn.nanmedian(work[:: max(1, ny // _PROFILE_SAMPLE)], axis=0)
        row_profile = bn.nanmedian(work[:, :: max(1, nx // _PROFILE_SAMPLE)], axis=1)
    ax_col.plot(np.arange(nx), column_profile, lw=0.6, color="C0")
    ax_col.set_xlim(-0.5, nx - 0.5)
    ax_col.set_xlabel("x [px]")
    ax_col.set_ylabel(f"median along y [{unit}]")
    ax_col.ticklabel_format(axis="y", useOffset=False)
    ax_row.plot(row_profile, np.arange(ny), lw=0.6, color="C0")
    ax_row.set_xlabel(f"median along x [{unit}]")
    ax_row.set_ylim(-0.5, ny - 0.5)
    ax_row.ticklabel_format(axis="x", useOffset=False)
    ax_row.tick_params(axis="x", labelrotation=90)
    ax_row.tick_params(axis="y", labelleft=False)

    if sample.size and sigma > 0:
        lo, hi = median - 8 * sigma, median + 8 * sigma
        ax_hist.hist(sample[(sample >= lo) & (sample <= hi)], bins=100, range=(lo, hi), histtype="stepfilled", color="C0")
        ax_hist.set_yscale("log")
    ax_hist.set_xlabel(f"{unit}: median {median:.5g}, sigma {sigma:.3g}", fontsize=8)
    ax_hist.set_ylabel("pixels" + (f" (1 in {stride})" if stride > 1 else ""))
    ax_hist.yaxis.set_label_position("right")
    ax_hist.yaxis.tick_right()

    fig.suptitle(title)
    path = publish(lambda tmp: fig.savefig(tmp, format="png"), path, overwrite=True)
    log.debug("wrote %s", path)
    return path


def _block_average(image, max_size):
    """Return ``image`` NaN-averaged in square blocks so that no axis exceeds ``max_size``, and the block size."""
    factor = int(np.ceil(max(image.shape) / max_size))
    if factor <= 1:
        return image, 1
    ny, nx = (s // factor for s in image.shape)
    blocks = image[: ny * factor, : nx * factor].reshape(ny, factor, nx, factor)
    with np.errstate(all="ignore"):
        return bn.nanmean(bn.nanmean(blocks, axis=3), axis=1), factor
