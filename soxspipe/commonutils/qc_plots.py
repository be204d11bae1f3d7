"""Quality-control plots of frames, written as PNG files.

Figures are built with :class:`matplotlib.figure.Figure` on the Agg canvas,
never through pyplot, so that nothing leaks into global state. matplotlib is
imported only when a figure is made: a recipe run pays for it only where it draws,
and a :class:`PlotWorker` pays for it in a second process, while the recipe works.
"""

import gc
import logging
import mmap
import multiprocessing
import os
import pickle
import signal
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


def _draw_all(plots):
    """Draw ``[(draw, path)]``; return the number of plots that failed (each logged as a warning)."""
    failed = 0
    for draw, path in plots:
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            draw(path)
        except Exception as exc:  # a broken plot must not cost the products
            log.warning("QC plot %s not drawn: %s", path.name, exc)
            failed += 1
    return failed


def _can_fork():
    """True on a platform that forks, in a single-threaded process (forking a threaded one is unsafe)
    that may have children (a daemonic process may not)."""
    return ("fork" in multiprocessing.get_all_start_methods() and threading.active_count() == 1
            and not multiprocessing.current_process().daemon)


def draw_plots(plots, worker=None):
    """Start drawing QC plots, ``[(draw, path)]`` where ``draw(path)`` writes one PNG; return a function that waits.

    With a running :class:`PlotWorker` that can take them (picklable ``draw``), the
    worker draws them. Otherwise, in a single-threaded process on a platform that
    forks, the plots are drawn by a forked child, so that drawing (and importing
    matplotlib) overlaps whatever the caller does next, typically writing the
    products. Elsewhere they are drawn at once. A plot that fails is logged as a
    warning: plots never fail a run.
    """
    if plots and worker is not None:
        wait = worker.submit(plots)
        if wait is not None:
            return wait
    if not plots or not _can_fork():
        _draw_all(plots)
        return lambda: None
    child = multiprocessing.get_context("fork").Process(target=lambda: os._exit(1 if _draw_all(plots) else 0), daemon=True)
    child.start()

    def wait():
        child.join()
        if child.exitcode:
            log.warning("%d QC plot(s) could not be drawn; see the messages above", len(plots))
    return wait


class PlotCall:
    """A picklable ``draw(path)``: calls ``function(*args, path=path, **kwargs)``.

    ``function`` must be a module-level function (e.g. :func:`detector_frame_plot`),
    so that a :class:`PlotWorker` can receive the plot.
    """

    def __init__(self, function, *args, **kwargs):
        self.function, self.args, self.kwargs = function, args, kwargs

    def __call__(self, path):
        return self.function(*self.args, path=path, **self.kwargs)


class PlotWorker:
    """A forked child that imports matplotlib at once, then draws the plots it is sent.

    Started at the beginning of a recipe run, it imports matplotlib (about half a
    second) while the recipe reads and combines its frames, which a child forked
    only once the plotted data exist cannot do. Plots reach it pickled, through an
    anonymous shared memory map (a pipe would stall the sender while the worker is
    still importing); only a control message goes through a pipe.

    Use :meth:`start`, which returns None where the platform cannot fork;
    :meth:`submit` plots; :meth:`close` when done.
    """

    #: address space reserved for pickled plots; only the pages written take memory
    CAPACITY = 1 << 30

    def __init__(self):
        context = multiprocessing.get_context("fork")
        flags = mmap.MAP_SHARED | getattr(mmap, "MAP_NORESERVE", 0)
        self._buffer = mmap.mmap(-1, self.CAPACITY, flags=flags)
        self._used = 0
        self._jobs = 0
        self._results = {}
        job_reader, self._job_writer = context.Pipe(duplex=False)
        self._result_reader, result_writer = context.Pipe(duplex=False)
        self._process = context.Process(target=_serve_plots, args=(self._buffer, job_reader, result_writer),
                                        daemon=True)
        self._process.start()
        job_reader.close()
        result_writer.close()

    @classmethod
    def start(cls):
        """Start a worker; None where the process cannot fork or map the memory (:func:`draw_plots` then draws)."""
        if not _can_fork():
            return None
        try:
            return cls()
        except (OSError, ValueError) as exc:
            log.debug("no QC plot worker (%s): plots will be drawn when they are ready", exc)
            return None

    def submit(self, plots):
        """Send ``[(draw, path)]`` to the worker; return a function that waits for them.

        Returns None, sending nothing, when the plots cannot be pickled (e.g. a
        ``draw`` that is a closure: use :class:`PlotCall`) or do not fit.
        """
        plots = list(plots)
        try:
            data = pickle.dumps(plots, protocol=pickle.HIGHEST_PROTOCOL)
        except Exception:
            return None
        if self._used + len(data) > self.CAPACITY or not self._process.is_alive():
            return None
        offset, self._used = self._used, self._used + len(data)
        self._buffer[offset:self._used] = data
        job, self._jobs = self._jobs, self._jobs + 1
        self._job_writer.send((job, offset, len(data)))
        return lambda: self._wait(job, len(plots))

    def _wait(self, job, n_plots):
        while job not in self._results:
            try:
                done, failed = self._result_reader.recv()
            except (EOFError, OSError):
                log.warning("the QC plot worker stopped: %d QC plot(s) may be missing", n_plots)
                return
            self._results[done] = failed
        failed = self._results.pop(job)
        if failed:
            log.warning("%d of %d QC plot(s) could not be drawn; see the messages above", failed, n_plots)

    def close(self):
        """Stop the worker (call it after waiting for the plots submitted) and free its memory."""
        self._process.terminate()
        self._process.join()
        self._job_writer.close()
        self._result_reader.close()
        self._buffer.close()


def _serve_plots(buffer, jobs, results):
    """Body of a :class:`PlotWorker`: import matplotlib, then draw each job until the pipe closes."""
    # Ctrl-C is the parent's to handle: it waits for the plots under way, then stops the worker
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    # What the worker inherits and what importing matplotlib makes lives as long as the worker: the
    # garbage collector need not walk it (nor copy the recipe's pages) while importing, nor later.
    gc.disable()
    new_figure()
    gc.freeze()
    gc.enable()
    while True:
        try:
            job, offset, length = jobs.recv()
        except (EOFError, OSError):
            break
        plots = pickle.loads(buffer[offset:offset + length])
        results.send((job, _draw_all(plots)))


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
    # zlib level 3 rather than PIL's default 6: about half the encoding time, files within ~10 % in size
    path = publish(lambda tmp: fig.savefig(tmp, format="png", pil_kwargs={"compress_level": 3}), path, overwrite=True)
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
