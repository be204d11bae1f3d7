"""The layout of the science products: the extracted and merged tables and the rectified 2D image.

- :func:`orders_table`: ``<P>_ORDERS_<ARM>``, one row per order and wavelength bin.
- :func:`merged_table`: ``<P>_MERGED_<ARM>``, one row per bin of the arm's grid.
- :func:`stack_rectified` / :func:`unstack_rectified`: ``<P>_2D_<ARM>``, the orders resampled
  on (wavelength, slit) grids and stacked in one image. Every order is a block of
  ``NSLIT`` rows (slit positions, the same grid for all orders, from ``SSTART`` by
  ``SSTEP`` arcsec: the first row's lower edge) in the order of the table, its
  columns its own wavelength grid from ``WSTART{n}`` by ``WSTEP{n}`` nm (the first
  column's lower edge) over ``NWAVE{n}`` columns; the image is as wide as the
  longest order and the columns beyond an order's grid are flagged. Values are
  surface densities, counts per nm per arcsec. The layout is written as
  ``ESO PRO RECT ...`` keywords (``keywords.yaml``: ``rect_*``).

Flux densities are counts (electrons) per nm over the whole exposure time; a
``QUAL`` value of 0 is good (bits in :data:`~.science_extract.QUAL_BITS`). No I/O.
"""

from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.table import Table

from .keywords import header_value

#: unit of the flux densities of the extracted and merged spectra. FITS knows no electron: the tables carry
#: it as the text 'electron/nm' (``products.read_extracted_orders`` and ``read_merged_spectrum`` make it a unit)
FLUX_UNIT = u.UnrecognizedUnit("electron/nm")
#: unit of the rectified 2D image (its BUNIT)
SURFACE_UNIT = "electron / (nm arcsec)"


def orders_table(spectra):
    """The per-order extracted spectra as one table (columns of the science-product contract).

    Parameters
    ----------
    spectra : sequence of OrderSpectrum

    Returns
    -------
    astropy.table.Table
    """
    def column(get, dtype=float):
        return np.concatenate([np.asarray(get(s), dtype) for s in spectra])

    table = Table()
    table["ORDER"] = column(lambda s: np.full(s.flux.size, s.order), np.int32)
    table["WAVE"] = column(lambda s: s.wavelength) * u.nm
    table["WAVE_LO"] = column(lambda s: s.edges[:-1]) * u.nm
    table["WAVE_HI"] = column(lambda s: s.edges[1:]) * u.nm
    for name, get in (("FLUX", lambda s: s.flux), ("ERR", lambda s: s.error), ("FLUX_BOX", lambda s: s.flux_box),
                      ("ERR_BOX", lambda s: s.error_box), ("SKY", lambda s: s.sky)):
        table[name] = column(get)
        table[name].unit = FLUX_UNIT
    table["SNR"] = column(lambda s: s.snr)
    table["QUAL"] = column(lambda s: s.qual, np.int32)
    return table


def merged_table(merged):
    """The merged spectrum (a :class:`~.science_extract.MergedScience`) as a table."""
    table = Table()
    table["WAVE"] = merged.wavelength * u.nm
    table["WAVE_LO"] = merged.edges[:-1] * u.nm
    table["WAVE_HI"] = merged.edges[1:] * u.nm
    for name, values in (("FLUX", merged.flux), ("ERR", merged.error), ("SKY", merged.sky)):
        table[name] = values
        table[name].unit = FLUX_UNIT
    table["QUAL"] = np.asarray(merged.qual, np.int32)
    table["N_ORDERS"] = np.asarray(merged.n_orders, np.int32)
    return table


@dataclass
class RectifiedLayout:
    """One order of the rectified 2D image.

    Attributes
    ----------
    order : int
    wave_edges, slit_edges : numpy.ndarray
        The grid's edges (nm, arcsec).
    flux, error : numpy.ndarray
        ``(n_slit, n_wave)`` surface density (counts per nm per arcsec) and its standard deviation.
    qual : numpy.ndarray
        Non-zero where a cell holds no (or too little) data.
    """

    order: int
    wave_edges: np.ndarray
    slit_edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    qual: np.ndarray


def check_slit_grids(rectified):
    """Refuse rectified orders (order -> RectifiedOrder) that are not all on the first one's slit grid."""
    orders = list(rectified)
    first = rectified[orders[0]]
    for order in orders[1:]:
        if not np.allclose(rectified[order].slit_edges, first.slit_edges):
            raise ValueError(f"order {order} is rectified on another slit grid than order {orders[0]}")


def surface_density(order, *, min_coverage=0.5):
    """One rectified order's cells as surface density (counts per nm per arcsec) and its error.

    Cells covered less than ``min_coverage`` (fraction of their area) are NaN.
    """
    cell = np.outer(np.diff(order.slit_edges), np.diff(order.wave_edges))
    good = order.coverage >= min_coverage
    with np.errstate(invalid="ignore", divide="ignore"):
        density = np.where(good, order.flux / (order.coverage * cell), np.nan)
        sigma = np.where(good, np.sqrt(order.variance) / (order.coverage * cell), np.nan)
    return density, sigma


def stack_rectified(rectified, *, min_coverage=0.5):
    """Stack rectified orders into one image.

    Parameters
    ----------
    rectified : dict
        Order -> :class:`~.resample.RectifiedOrder`, all on the same slit grid.
    min_coverage : float
        Cells covered less than this (fraction of their area) are flagged.

    Returns
    -------
    flux, error, qual : numpy.ndarray
        ``(n_orders * n_slit, max n_wave)`` float32, float32, uint8.
    cards : list of tuple
        ``(logical keyword, value, comment, template fields)`` of the layout, for the product header.
    """
    orders = list(rectified)
    first = rectified[orders[0]]
    n_slit = first.slit_edges.size - 1
    width = max(r.wave_edges.size - 1 for r in rectified.values())
    shape = (n_slit * len(orders), width)
    flux = np.full(shape, np.nan, np.float32)
    error = np.full(shape, np.nan, np.float32)
    qual = np.ones(shape, np.uint8)
    cards = [("rect_nslit", n_slit, "slit rows per order", {}),
             ("rect_slit_start", float(first.slit_edges[0]), "[arcsec] lower edge of the first row", {}),
             ("rect_slit_step", float(np.diff(first.slit_edges).mean()), "[arcsec] row height", {}),
             ("rect_norders", len(orders), "orders stacked", {})]
    check_slit_grids(rectified)
    for k, order in enumerate(orders):
        r = rectified[order]
        density, sigma = surface_density(r, min_coverage=min_coverage)
        good = np.isfinite(density)
        n_wave = r.wave_edges.size - 1
        rows = slice(k * n_slit, (k + 1) * n_slit)
        flux[rows, :n_wave] = density
        error[rows, :n_wave] = sigma
        qual[rows, :n_wave] = ~good
        n = {"n": k + 1}
        cards += [("rect_order", int(order), "order of this block", n),
                  ("rect_row", k * n_slit, "first row of the block, 0-based", n),
                  ("rect_wave_start", float(r.wave_edges[0]), "[nm] lower edge of the first column", n),
                  ("rect_wave_step", float(np.diff(r.wave_edges).mean()), "[nm] column width", n),
                  ("rect_nwave", n_wave, "columns of this order", n)]
    return flux, error, qual, cards


def unstack_rectified(flux, error, qual, header):
    """The orders of a rectified 2D image (see the module's layout).

    Parameters
    ----------
    flux, error, qual : numpy.ndarray
        The image's extensions.
    header : astropy.io.fits.Header or dict
        Its primary header.

    Returns
    -------
    dict
        Order -> :class:`RectifiedLayout`.
    """
    n_slit = int(header_value(header, "rect_nslit"))
    s0, ds = float(header_value(header, "rect_slit_start")), float(header_value(header, "rect_slit_step"))
    slit_edges = s0 + ds * np.arange(n_slit + 1)
    out = {}
    for n in range(1, int(header_value(header, "rect_norders")) + 1):
        order = int(header_value(header, "rect_order", n=n))
        row = int(header_value(header, "rect_row", n=n))
        n_wave = int(header_value(header, "rect_nwave", n=n))
        w0, dw = float(header_value(header, "rect_wave_start", n=n)), float(header_value(header, "rect_wave_step", n=n))
        block = (slice(row, row + n_slit), slice(0, n_wave))
        out[order] = RectifiedLayout(order, w0 + dw * np.arange(n_wave + 1), slit_edges, np.asarray(flux)[block],
                                     np.asarray(error)[block], np.asarray(qual)[block])
    return out
