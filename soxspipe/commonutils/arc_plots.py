"""QC plots of the dispersion and order-centre recipes, written as PNG files (Agg canvas, no pyplot)."""

import numpy as np
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure

from .product_io import publish


def _frame_axes(image, title):
    fig = Figure(figsize=(7, 9), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    finite = image[np.isfinite(image)][::97]
    lo, hi = np.percentile(finite, [5, 99.5]) if finite.size else (0, 1)
    ax.imshow(image, origin="lower", cmap="gray", vmin=lo, vmax=hi, aspect="auto", interpolation="nearest")
    ax.set_xlabel("x [px]")
    ax.set_ylabel("y [px]")
    ax.set_title(title)
    return fig, ax


def line_frame_plot(image, lines, *, title, path):
    """The arc frame with the predicted (open circles) and the used (crosses) line positions."""
    fig, ax = _frame_axes(image, title)
    ax.plot(lines.x_predicted, lines.y_predicted, "o", mfc="none", mec="C0", ms=4, label="predicted")
    used = lines.used
    ax.plot(lines.x[used], lines.y[used], "+", color="C3", ms=5, label="used")
    ax.plot(lines.x[~used & lines.detected], lines.y[~used & lines.detected], "x", color="C1", ms=4, label="clipped")
    ax.legend(loc="upper right", fontsize=8)
    return publish(lambda tmp: fig.savefig(tmp, format="png"), path, overwrite=True)


def _residual_panels(lines, title, path, *, figsize, grid, draw):
    """One panel per axis (x, y) of the used lines' residuals (measured - fitted).

    ``draw(ax, name, residuals, used)`` fills a panel and returns its colour scale and label.
    """
    fig = Figure(figsize=figsize, dpi=100)
    FigureCanvasAgg(fig)
    used = lines.used
    for k, name in enumerate(("x", "y")):
        ax = fig.add_subplot(*grid, k + 1)
        points, label = draw(ax, name, (getattr(lines, name) - getattr(lines, f"{name}_fit"))[used], used)
        fig.colorbar(points, ax=ax, label=label)
    fig.suptitle(title)
    return publish(lambda tmp: fig.savefig(tmp, format="png"), path, overwrite=True)


def residual_plot(lines, *, title, path):
    """Residuals (measured - fitted) in x and y against wavelength, coloured by order."""
    def draw(ax, name, res, used):
        points = ax.scatter(lines.wavelength[used], res, c=lines.order[used], s=6, cmap="viridis")
        ax.axhline(0, color="k", lw=0.5)
        ax.set_ylabel(f"{name} residual [px]")
        if name == "y":
            ax.set_xlabel("wavelength [nm]")
        return points, "order"
    return _residual_panels(lines, title, path, figsize=(8, 6), grid=(2, 1), draw=draw)


def trace_plot(image, traces, dispersion_axis, *, title, path):
    """The flat with each order's fitted centre trace; ``traces`` maps order -> (d, c) arrays."""
    fig, ax = _frame_axes(image, title)
    for order, (d, c) in traces.items():
        x, y = (c, d) if dispersion_axis == "y" else (d, c)
        ax.plot(x, y, "-", lw=0.7, color="C3")
        ax.annotate(str(order), (x[len(x) // 2], y[len(y) // 2]), color="C1", fontsize=7)
    return publish(lambda tmp: fig.savefig(tmp, format="png"), path, overwrite=True)


def residual_map_plot(lines, *, title, path):
    """Residuals (measured - fitted) in x and y of the used line images, coloured, at their detector positions."""
    def draw(ax, name, res, used):
        limit = max(float(np.percentile(np.abs(res), 98)), 1e-3) if res.size else 1.0
        points = ax.scatter(lines.x[used], lines.y[used], c=res, s=4, cmap="coolwarm", vmin=-limit, vmax=limit)
        ax.set_xlabel("x [px]")
        ax.set_ylabel("y [px]")
        ax.set_title(f"{name} residual")
        return points, f"{name} residual [px]"
    return _residual_panels(lines, title, path, figsize=(11, 6), grid=(1, 2), draw=draw)


def resolving_power_plot(wavelength, power, order, *, title, path):
    """Resolving power of each line image against wavelength, coloured by order."""
    fig = Figure(figsize=(8, 5), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(111)
    points = ax.scatter(wavelength, power, c=order, s=4, cmap="viridis")
    ax.set_xlabel("wavelength [nm]")
    ax.set_ylabel("resolving power")
    ax.set_title(title)
    fig.colorbar(points, ax=ax, label="order")
    return publish(lambda tmp: fig.savefig(tmp, format="png"), path, overwrite=True)
