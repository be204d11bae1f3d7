"""The 2D spectrum of an arm: one (slit, wavelength) image on the merged spectrum's grid, with a WCS.

:func:`build_spectrum2d` takes the orders rectified by the science recipe (each on its
own wavelength grid, one slit grid for all) and puts them on the wavelength bins of
the arm's merged 1D spectrum, as the 1D spectra are merged:

1. every order's cells become surface densities (counts per nm per arcsec), cells
   covered less than ``min_cell_coverage`` left out, as in the ``<P>_2D_<ARM>``
   image (:func:`~.science_products.stack_rectified`);
2. with a response, every order is flux calibrated on its own grid, with the
   response of that order (:func:`~.science_fluxcal.order_response` and
   :func:`~.response.flux_calibrate`, as the 1D tables are), before merging;
3. every slit row of every order is rebinned flux-conservingly onto the merged
   grid and the orders are averaged with inverse-variance weights
   (:func:`~.resample.merge_orders`: all rows at once, an order contributing to a
   cell only if it covers all of it). An order's variance at a wavelength is the
   median over the slit of its cells' variances, the same for every row: a cell's
   own variance, estimated from its noisy counts, would favour the cells that fell
   low (3 % low in the order overlaps of a faint galaxy). The errors are propagated
   from the cells' own.

Values are erg/s/cm^2/Angstrom/arcsec above the atmosphere when calibrated, else
electrons per nm per arcsec over the whole exposure. ``QUAL`` is 1 (``no_data``)
where no order covers a cell entirely: nothing there, or only part of it (an
order's end, the slit's end, pixels left out); ``FLUX`` and ``ERRS`` are NaN there.

:meth:`Spectrum2D.to_hdulist` writes the product: an empty primary HDU with the
product header, then the images ``FLUX``, ``QUAL`` and ``ERRS``, each with the
same WCS (axis 1: air wavelength, axis 2: slit position in arcsec) and ESO's
cross references between them. No other I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.wcs import WCS

from .keywords import set_value
from .resample import merge_orders
from .response import flux_calibrate
from .science_extract import QUAL_BITS
from .science_fluxcal import order_response
from .science_products import SURFACE_UNIT, check_slit_grids, surface_density
from .sdp_spectrum import FLUX_UNIT

log = logging.getLogger(__name__)

#: BUNIT of the flux-calibrated image: the SDP spectra's flux unit per arcsec
CALIBRATED_UNIT = f"{FLUX_UNIT}.arcsec**(-1)"
#: BUNIT of the image in counts (that of the ``<P>_2D_<ARM>`` image)
COUNTS_UNIT = SURFACE_UNIT
#: the image extensions: role -> (EXTNAME, ESO HDUCLAS2, what it holds)
EXTENSIONS = {"data": ("FLUX", "DATA", "science data"),
              "quality": ("QUAL", "QUALITY", "quality flags, 0: good"),
              "error": ("ERRS", "ERROR", "standard deviation of FLUX")}
#: the cross reference to each role's extension
_REFERENCES = {"data": "scidata", "error": "errdata", "quality": "qualdata"}
#: relative departure from a constant step above which a grid is not linear
_LINEAR_TOLERANCE = 1e-6


@dataclass
class Spectrum2D:
    """An arm's 2D spectrum on one (slit, wavelength) grid.

    Attributes
    ----------
    wave_edges : numpy.ndarray
        ``(n_wave + 1,)`` wavelength bin edges (nm, air): the merged 1D spectrum's.
    slit_edges : numpy.ndarray
        ``(n_slit + 1,)`` slit bin edges (arcsec).
    flux, error : numpy.ndarray
        ``(n_slit, n_wave)`` float32 surface density and its standard deviation (NaN without data).
    qual : numpy.ndarray
        ``(n_slit, n_wave)`` uint8, bits of :data:`~.science_extract.QUAL_BITS` (0: good).
    n_orders : numpy.ndarray
        ``(n_slit, n_wave)`` number of orders averaged in each cell.
    calibrated : bool
        Whether the values are flux calibrated.
    """

    wave_edges: np.ndarray
    slit_edges: np.ndarray
    flux: np.ndarray
    error: np.ndarray
    qual: np.ndarray
    n_orders: np.ndarray
    calibrated: bool = False

    @property
    def wavelength(self):
        """Wavelength bin centres (nm)."""
        return 0.5 * (self.wave_edges[1:] + self.wave_edges[:-1])

    @property
    def slit(self):
        """Slit bin centres (arcsec)."""
        return 0.5 * (self.slit_edges[1:] + self.slit_edges[:-1])

    @property
    def unit(self):
        """The images' BUNIT."""
        return CALIBRATED_UNIT if self.calibrated else COUNTS_UNIT

    def wcs(self):
        """The images' WCS: axis 1 air wavelength (``AWAV``, linear or ``AWAV-LOG``), axis 2 slit (arcsec).

        Raises
        ------
        ValueError
            A grid that is neither linear nor (wavelength only) logarithmic: no FITS WCS
            describes it with one reference value and step.
        """
        wcs = WCS(naxis=2)
        kind, wave_value, wave_step = _axis(self.wave_edges, "wavelength", allow_log=True)
        _, slit_value, slit_step = _axis(self.slit_edges, "slit")
        wcs.wcs.ctype = ["AWAV-LOG" if kind == "log" else "AWAV", "LINEAR"]
        wcs.wcs.cunit = ["nm", "arcsec"]
        wcs.wcs.cname = ["air wavelength", "slit position"]
        wcs.wcs.crpix = [1.0, 1.0]
        wcs.wcs.crval = [wave_value, slit_value]
        wcs.wcs.cdelt = [wave_step, slit_step]
        return wcs

    def wcs_header(self):
        """The WCS cards of the images: :meth:`wcs` as astropy writes it, the wavelength axis in nm.

        WCSLIB writes a spectral axis in SI units (m); the product's wavelengths are in nm, so
        the axis's unit, reference value and step are given back in nm (the same coordinates).
        """
        wcs = self.wcs()
        wcs.wcs.set()
        header = wcs.to_header()
        axis = wcs.wcs.spec
        scale = u.Unit(wcs.wcs.cunit[axis]).to(u.nm)
        n = axis + 1
        set_value(header, "wcs_cunit", "nm", "unit of the reference value and step", n=n)
        set_value(header, "wcs_crval", float(wcs.wcs.crval[axis]) * scale, "[nm] value at the reference pixel", n=n)
        set_value(header, "wcs_cdelt", float(wcs.wcs.cdelt[axis]) * scale, "[nm] step at the reference pixel", n=n)
        return header

    def to_hdulist(self, header=None):
        """The product file: an empty primary HDU with ``header``, then ``FLUX``, ``QUAL`` and ``ERRS``.

        Parameters
        ----------
        header : astropy.io.fits.Header, optional
            The recipe's product header (PRO keywords, provenance, QC); ``FLUXCAL`` is set in it.

        Returns
        -------
        astropy.io.fits.HDUList
        """
        primary = fits.Header()
        for card in (header or fits.Header()).cards:
            primary.append(card, end=True)
        set_value(primary, "fluxcal", "ABSOLUTE" if self.calibrated else "UNCALIBRATED", "type of flux calibration")
        wcs_cards = self.wcs_header()
        hdus = [fits.PrimaryHDU(header=primary)]
        arrays = {"data": self.flux, "quality": self.qual, "error": self.error}
        for role, (name, hduclas2, content) in EXTENSIONS.items():
            hdu = fits.ImageHDU(data=arrays[role], header=wcs_cards.copy(), name=name)
            ext = hdu.header
            if role != "quality":
                set_value(ext, "bunit", self.unit, "flux calibrated" if self.calibrated else "not flux calibrated")
            set_value(ext, "hduclass", "ESO", "class name (ESO format)")
            set_value(ext, "hdudoc", "DICD", "document with the class description")
            set_value(ext, "hduvers", "DICD version 6", "version of the class description")
            set_value(ext, "hduclas1", "IMAGE", "image data")
            set_value(ext, "hduclas2", hduclas2, content)
            if role == "error":
                set_value(ext, "hduclas3", "RMSE", "errors as standard deviations")
            for other, reference in _REFERENCES.items():
                if other != role:
                    set_value(ext, reference, EXTENSIONS[other][0], f"extension of the {EXTENSIONS[other][2]}")
            hdus.append(hdu)
        return fits.HDUList(hdus)


def _axis(edges, name, *, allow_log=False):
    """``(kind, first centre, step)`` of the bins of ``edges``: ``kind`` 'linear' or 'log' (FITS ``-LOG``).

    For a logarithmic grid the step is the FITS one, ``centre[0] * d ln(centre)``.
    """
    edges = np.asarray(edges, dtype=float)
    centres = 0.5 * (edges[1:] + edges[:-1])
    if centres.size < 2:
        return "linear", float(centres[0]), float(edges[1] - edges[0])
    step = (centres[-1] - centres[0]) / (centres.size - 1)
    if np.all(np.abs(np.diff(centres) - step) <= _LINEAR_TOLERANCE * abs(step)):
        return "linear", float(centres[0]), float(step)
    if allow_log and centres[0] > 0:
        log_step = (np.log(centres[-1]) - np.log(centres[0])) / (centres.size - 1)
        if np.all(np.abs(np.diff(np.log(centres)) - log_step) <= _LINEAR_TOLERANCE * abs(log_step)):
            return "log", float(centres[0]), float(centres[0] * log_step)
    raise ValueError(f"the {name} grid ({centres[0]:.6g} to {centres[-1]:.6g}, steps {np.diff(centres).min():.6g} "
                     f"to {np.diff(centres).max():.6g}) is neither linear{' nor logarithmic' if allow_log else ''}: "
                     "no FITS WCS of one step describes it")


def _column_error(error):
    """Every cell's error replaced by the median over its column (slit rows) in quadrature: the weights' error.

    A cell's variance comes from its own noisy counts; weights from it would favour the cells that
    fell low and bias the merged image low in the order overlaps (3 % on a faint galaxy). The
    column's median is nearly free of that noise, and gives every slit row the same mix of orders.
    """
    error = np.asarray(error, dtype=float)
    out = np.full(error.shape[-1], np.nan)
    some = np.isfinite(error).any(axis=0)
    out[some] = np.sqrt(np.nanmedian(error[:, some] ** 2, axis=0))
    return np.broadcast_to(out, error.shape)


def build_spectrum2d(rectified, wave_edges, *, min_cell_coverage=0.5, min_coverage=0.999, response=None,
                     exptime=None, airmass=None):
    """Merge the rectified orders of an arm into one (slit, wavelength) image, flux calibrated with ``response``.

    Parameters
    ----------
    rectified : dict
        Order -> :class:`~.resample.RectifiedOrder` (counts over the exposure), all on one slit grid.
    wave_edges : array_like
        Edges (nm) of the common wavelength grid: those of the merged 1D spectrum.
    min_cell_coverage : float
        Rectified cells covered by pixels less than this (fraction of their area) are left out.
    min_coverage : float
        An order contributes to a cell only if its cells cover at least this fraction of it
        (:func:`~.resample.merge_orders`).
    response : soxspipe.commonutils.response.Response, optional
        Flux-calibrate with it (checked against the science by the caller); then ``exptime`` (s)
        and ``airmass`` are needed.

    Returns
    -------
    Spectrum2D

    Raises
    ------
    DataError
        The response misses one of the orders.
    ValueError
        No orders, orders on different slit grids, or a response without an exposure time and airmass.
    """
    if not rectified:
        raise ValueError("no rectified orders to merge")
    if response is not None and not (exptime and exptime > 0 and airmass is not None):
        raise ValueError(f"flux calibration needs an exposure time and an airmass (got {exptime}, {airmass})")
    check_slit_grids(rectified)
    orders = list(rectified)
    first = rectified[orders[0]]
    # surface density and its error, as in the <P>_2D_ image
    densities = {o: surface_density(rectified[o], min_coverage=min_cell_coverage) for o in orders}
    if response is not None:
        centres = {o: 0.5 * (rectified[o].wave_edges[1:] + rectified[o].wave_edges[:-1]) for o in orders}
        value, value_error = order_response(response, np.concatenate([np.full(centres[o].size, o) for o in orders]),
                                            np.concatenate([centres[o] for o in orders]))
        start = 0
        for order in orders:
            n = centres[order].size
            flux, error = densities[order]
            densities[order] = flux_calibrate(centres[order], flux, error, exptime=exptime, airmass=airmass,
                                              response=value[start:start + n],
                                              response_error=value_error[start:start + n])
            start += n
    merged = merge_orders([(rectified[o].wave_edges, *densities[o]) for o in orders], wave_edges,
                          min_coverage=min_coverage, weight_errors=[_column_error(densities[o][1]) for o in orders])
    qual = np.where(merged.n_orders > 0, 0, QUAL_BITS["no_data"]).astype(np.uint8)
    log.info("2D spectrum: %d orders onto %d x %d cells (%.1f%% without data), %s", len(orders), *qual.shape,
             100.0 * float(np.mean(qual > 0)), "flux calibrated" if response is not None else "counts")
    return Spectrum2D(np.asarray(wave_edges, dtype=float), np.asarray(first.slit_edges, dtype=float),
                      merged.flux.astype(np.float32), merged.error.astype(np.float32), qual,
                      merged.n_orders.astype(np.int16), calibrated=response is not None)
