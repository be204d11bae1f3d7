"""soxs_response: the instrument's response and end-to-end efficiency from a flux standard.

The SOF (one arm) holds either

- the raw frames of a flux standard's OB (``STD,FLUX``, staring, nodding or offset)
  with the calibrations of a science recipe: they are reduced on the way as the
  science recipe of their ``DPR TECH`` reduces them (``frame_types.yaml``:
  ``soxs_stare``, ``soxs_nod`` or ``soxs_offset``; the recipe becomes an instance
  of a class deriving from both, :mod:`~soxspipe.recipes._standard_recipe_`, so that that recipe's
  sky removal, combination and checks run), and the ``STD_FLUX_*`` products are
  written as that recipe writes them, their tables flux-calibrated with the
  response (``FLUX_CAL``, ``ERR_CAL``); or
- a ``STD_FLUX_ORDERS_<ARM>`` product of such a reduction, alone.

The response, from the extracted orders:

1. the star is looked up in the bundled ``flux_standards`` table by its ``OBJECT``
   (aliases and spelling variants), else as the standard nearest the pointing
   (within ``match-radius-arcsec``); its catalogue flux is convolved to
   ``resolving-power``;
2. with ``slit-loss-correction`` the standard's slit losses are divided out: the
   fraction of a Gaussian seeing disc of the object's measured FWHM along the slit
   (QC ``OBJ FWHM``: a Gaussian fitted to its profile,
   :func:`~soxspipe.commonutils.science_objects.gaussian_fwhm`) that the slit's width
   lets through. The response is then the
   telescope's and the instrument's alone, and so is the efficiency; the science
   spectra calibrated with it keep their own slit losses (the final products
   remove them with :func:`~soxspipe.commonutils.science_fluxcal.slit_transmission`);
3. the response ``counts / exptime * 10^(0.4 k X) / F`` is fitted per arm
   (:func:`~soxspipe.commonutils.response.fit_response`: the ``model``, knots and
   clipping of the settings; telluric bands and the star's lines masked; the
   ``echelle`` model's blaze phase about each order's blaze wavelength, the middle of
   its free spectral range in the bundled spectral format) on the orders' bins that
   are neither empty nor incomplete;
4. QC: the end-to-end efficiency (photons detected over photons reaching the
   89,000 cm^2 mirror) at ``qc-fractions`` of every order's range, ``EFF O<order>
   <k>`` (the comment gives the wavelength, and says when the point is bridged
   across a band or a line rather than measured), ``EFFICIENCY`` the median over
   the orders of the efficiency at their centres, ``SLIT TRANS`` and ``RESP
   FITTED`` (the fraction of the bins that constrained the fit).

Products: ``RESPONSE_<ARM>``, a table ``ORDER, WAVE, RESPONSE, ERROR, MASK`` on the
standard's bins (response in (e-/s/nm) / (erg/s/cm^2/Angstrom); ``MASK`` bits in
:mod:`~soxspipe.commonutils.response`) whose header names the standard
(``ESO PRO STD NAME``), its airmass, exposure time, the model and the slit
transmission divided out, with a plot of the response and the efficiency; from
raw frames also the ``STD_FLUX_*`` products.
"""

import logging

import numpy as np
from astropy import units as u

from ..commonutils.errors import DataError
from ..commonutils.fitsio import read_header
from ..commonutils.flux_standards import catalogue_flux, find_standard
from ..commonutils.keywords import header_value
from ..commonutils.response import efficiency_qc, fit_response, response_options
from ..commonutils.response_plots import response_plot
from ..commonutils.science_extract import QUAL_BITS
from ..commonutils.science_fluxcal import apply_response, slit_transmission, slit_width
from ..products import read_extracted_orders
from ..static_calibrations import load_yaml
from ._base_recipe_ import Product
from ._standard_recipe_ import _standard_recipe_
from .soxs_disp_solution import order_ranges

log = logging.getLogger(__name__)

#: product category (without the arm) of the extracted standard a response may be measured on
SPECTRUM = "STD_FLUX_ORDERS"
#: unit of the ``RESPONSE`` and ``ERROR`` columns (FITS has no electron: written as text)
RESPONSE_UNIT = u.UnrecognizedUnit("(electron/s/nm)/(erg/s/cm2/Angstrom)")


def blaze_wavelengths(arm):
    """Blaze wavelength of every order of ``arm``: the middle of its free spectral range.

    An echelle order's range (the bundled spectral format's ``WLMINFUL``-``WLMAXFUL``) is centred on
    its blaze; the middle of the range a standard happens to be extracted over need not be.

    Parameters
    ----------
    arm : str
        ``"VIS"`` or ``"NIR"``.

    Returns
    -------
    dict
        Order -> blaze wavelength (nm).
    """
    orders, ranges = order_ranges(arm)
    return {int(o): 0.5 * (lo + hi) for o, (lo, hi) in zip(orders, ranges)}


class soxs_response(_standard_recipe_):
    """The response and efficiency from a flux standard's raw frames (reduced on the way) or its extracted orders."""

    name = "response"
    raw_kinds = ("flux_standard",)
    techniques = tuple(load_yaml("frame_types.yaml")["kinds"]["flux_standard"]["tech"])
    calibrations = {k: v for k, v in _standard_recipe_.calibrations.items() if k not in ("RESPONSE", "TELLURIC")}
    spectra = (SPECTRUM,)
    standard = "flux standard"
    dpr_type = "STD,FLUX"

    # -- the recipe --------------------------------------------------------------------------

    def reduce(self):
        """Reduce the raw frames (or read the product), fit the response, record its QC; the products."""
        if self.spectrum is not None:
            path = self.spectrum.path
            orders = read_extracted_orders(path)
            meta = orders.meta
            fwhm = header_value(meta, "qc", None, qc_name="OBJ FWHM")
            response = self.measure(orders, path, exptime=header_value(meta, "exptime", None),
                                    airmass=header_value(meta, "pro_airmass", None), fwhm=fwhm, header=meta)
            tech = self.spectrum.tech or header_value(meta, "pro_tech", "")
            return [self.response_product(response, self.record_response_qc(response), tech)]
        products = super().reduce()
        by_catg = {p.pro_catg: p for p in products}
        orders = by_catg[f"{self.prefix}_ORDERS_{self.arm}"]
        merged = by_catg[f"{self.prefix}_MERGED_{self.arm}"]
        exptime = orders.header_cards["exptime"][0]
        airmass = orders.header_cards.get("pro_airmass", (None,))[0]
        fwhm = next((v.value for v in self.qc.values if v.name == "OBJ FWHM"), None)
        first = self.raw_frames[0]
        response = self.measure(orders.data, first.path, exptime=exptime, airmass=airmass, fwhm=fwhm,
                                header=read_header(first.path))
        product = self.response_product(response, self.record_response_qc(response), first.tech)
        # the standard's own tables, flux-calibrated with its response
        calibrated = apply_response(orders.data, merged.data, response, exptime=exptime, airmass=airmass)
        orders.data, merged.data = calibrated.orders, calibrated.merged
        for p in (orders, merged):
            p.header_cards.update(calibrated.cards)
        return products + [product]

    def measure(self, orders, path, *, exptime, airmass, fwhm, header):
        """Fit the response to a standard's extracted orders.

        Parameters
        ----------
        orders : astropy.table.Table
            The standard's ``STD_FLUX_ORDERS`` table.
        path : str
            The file the standard comes from (for messages).
        exptime, airmass : float
            Total exposure time (s) and mean airmass of the standard.
        fwhm : float or None
            Its FWHM along the slit (arcsec).
        header : mapping
            Its header (``OBJECT``, ``RA``, ``DEC``).

        Returns
        -------
        soxspipe.commonutils.response.Response
            With ``meta``: ``standard``, ``slit_transmission`` (divided out), the standard's ``arm``, ``slit``,
            ``binning`` and ``mjd``, and the fit's ``model``, ``exptime``, ``airmass``.
        """
        p = self.params
        if not exptime or airmass is None:
            raise DataError(f"{path}: no exposure time or airmass of the standard; give a {SPECTRUM} product of "
                            "soxspipe's science recipes")
        target = str(header_value(header, "object", "") or "").strip() or None
        try:
            star = find_standard(target, header_value(header, "ra", None), header_value(header, "dec", None),
                                 radius_arcsec=p["match-radius-arcsec"])
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        transmission = 1.0
        if p["slit-loss-correction"]:
            slit = self.raw_frames[0].slit
            if fwhm is None:
                raise DataError(f"{path}: the standard's FWHM along the slit is unknown (no QC OBJ FWHM), so its slit "
                                "losses cannot be estimated; give a product of soxspipe's science recipes or set "
                                "'response: slit-loss-correction: false'")
            try:
                transmission = slit_transmission(fwhm, slit_width(slit))
            except DataError as exc:
                raise DataError(f"{path}: {exc}") from None
        order = np.asarray(orders["ORDER"], dtype=int)
        wave = np.asarray(orders["WAVE"], dtype=float)
        usable = (np.asarray(orders["QUAL"]) & (QUAL_BITS["no_data"] | QUAL_BITS["incomplete"])) == 0
        counts = np.where(usable, np.asarray(orders["FLUX"], dtype=float), np.nan) / transmission
        error = np.asarray(orders["ERR"], dtype=float) / transmission
        flux = catalogue_flux(star, wave, resolution=p["resolving-power"])
        self._check_coverage(order, flux, star, path)
        meta = {"standard": star, "slit_transmission": transmission, "arm": self.arm,
                "slit": self.raw_frames[0].slit, "binning": self.raw_frames[0].binning, "mjd": self.raw_frames[0].mjd}
        response = fit_response(order, wave, counts, error, exptime=float(exptime), airmass=float(airmass),
                                standard_flux=flux, centres=blaze_wavelengths(self.arm), meta=meta,
                                **response_options(p))
        log.info("response of %s (%s): exposure %g s, airmass %.3f, slit transmission %.3f", star, target,
                 float(exptime), float(airmass), transmission)
        return response

    @staticmethod
    def _check_coverage(order, flux, star, path):
        """Every order of the standard's spectrum has catalogue fluxes (an order beyond the table is an error)."""
        uncovered = [int(o) for o in np.unique(order) if not np.isfinite(flux[order == o]).any()]
        if uncovered:
            raise DataError(f"{path}: the catalogue spectrum of {star} does not cover order(s) {uncovered}; "
                            "measure the response on a standard whose catalogue spectrum covers the arm")

    def record_response_qc(self, response):
        """QC of a response: efficiency at reference wavelengths of every order, its median at the orders' centres,
        the slit transmission divided out and the fraction of the bins fitted.

        Returns
        -------
        astropy.table.Table
            The efficiency at the reference wavelengths (:func:`~soxspipe.commonutils.response.efficiency_qc`).
        """
        qc = self.qc
        fractions = tuple(self.params["qc-fractions"])
        table = efficiency_qc(response, fractions)
        for i, row in enumerate(table):
            how = " (bridged)" if row["MASK"] else ""
            qc.add(f"EFF O{row['ORDER']} {i % len(fractions) + 1}", round(float(row["EFFICIENCY"]), 4), "",
                   f"efficiency at {row['WAVE']:.1f} nm{how}")
        centres = [response.efficiency(o, [np.mean(response.wavelength_range(o))])[0][0] for o in response.orders]
        qc.add("EFFICIENCY", round(float(np.median(centres)), 4), "", "median efficiency at the orders' centres")
        qc.add("SLIT TRANS", round(float(response.meta["slit_transmission"]), 4), "",
               "standard's slit transmission divided out")
        qc.add("RESP FITTED", round(float(np.mean(np.asarray(response.table["MASK"]) == 0)), 4), "",
               "fraction of the bins fitted")
        return table

    def response_product(self, response, efficiency, tech):
        """The ``RESPONSE_<ARM>`` product of ``response`` and its plot (its path is recorded in ``response.meta``)."""
        table = response.table.copy()
        table["WAVE"].unit = u.nm
        for column in ("RESPONSE", "ERROR"):
            table[column].unit = RESPONSE_UNIT
        table["MASK"] = np.asarray(table["MASK"], dtype=np.int16)
        meta = response.meta
        cards = {"pro_std_name": (meta["standard"], "flux standard (flux_standards table)"),
                 "pro_resp_model": (meta["model"], "response model"),
                 "exptime": (float(meta["exptime"]), "[s] exposure time of the standard"),
                 "pro_airmass": (round(float(meta["airmass"]), 4), "airmass of the standard"),
                 "pro_slit_trans": (round(float(meta["slit_transmission"]), 5), "slit transmission divided out")}
        title = f"RESPONSE_{self.arm}: {meta['standard']}"
        product = Product(f"RESPONSE_{self.arm}", table, pro_tech=tech, header_cards=cards,
                          plots=[("response", lambda path: response_plot(response, efficiency, title=title,
                                                                         path=path))])
        meta["path"] = str(self.product_path(product))
        return product
