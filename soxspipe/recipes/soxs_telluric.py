"""soxs_telluric: the atmosphere's telluric transmission from a telluric (or flux) standard.

The SOF (one arm) holds either

- the raw frames of a telluric standard's OB (``STD,TELLURIC``, staring, nodding or
  offset; a flux standard's ``STD,FLUX`` frames serve as well) with the calibrations
  of a science recipe, best with a ``RESPONSE_<ARM>``: they are reduced on the way as
  the science recipe of their ``DPR TECH`` reduces them
  (:mod:`~soxspipe.recipes._standard_recipe_`), and the ``STD_TELL_*`` products are
  written as that recipe writes them; or
- a ``STD_TELL_MERGED_<ARM>`` product of such a reduction alone, or, failing a telluric
  standard, a flux standard's ``STD_FLUX_MERGED_<ARM>``.

The transmission, from the standard's merged spectrum (flux-calibrated where it is:
its continuum is then smooth; else its counts, with a warning):

1. the continuum is a smooth spline fitted outside the telluric bands
   (:func:`~soxspipe.commonutils.telluric.measure_transmission`): for a hot telluric
   standard with its hydrogen and helium lines masked (the transmission is
   interpolated across them and flagged), for a flux standard found in the bundled
   table as its catalogue spectrum times a smooth spline;
2. the spectrum over the continuum is the transmission at the standard's airmass,
   1 outside the bands.

Product ``TELLURIC_<ARM>``: a table ``WAVE`` (nm), ``TRANS``, ``TRANS_ERR``,
``TRANS_H2O``, ``TRANS_O2`` (the parts the science scales separately) and ``QUAL``
(:mod:`~soxspipe.commonutils.science_telluric`), on the standard's merged grid; its
header names the standard (``ESO PRO STD NAME``), its airmass (``ESO PRO AIRM MEAN``)
and its ``DPR TYPE`` (``ESO PRO TELL SOURCE``: ``STD,FLUX`` when a flux standard
served). QC: ``O2A DEPTH``, ``H2O940 EW``, ``H2O1130 EW`` (nm), where the arm covers
the band, and ``TELL INTERP``; a plot of the standard's continuum and the
transmission. The science recipes take it as an optional calibration and add the
telluric-corrected spectrum to their tables
(:func:`~soxspipe.commonutils.science_telluric.apply_telluric`).
"""

import logging

from ..commonutils.errors import DataError
from ..commonutils.fitsio import read_header
from ..commonutils.flux_standards import catalogue_flux, find_standard
from ..commonutils.keywords import header_value
from ..commonutils.science_telluric import band_qc, standard_spectrum, transmission_table
from ..commonutils.settings import recipe_settings
from ..commonutils.telluric import measure_transmission, transmission_options
from ..commonutils.telluric_plots import telluric_plot
from ..products import read_merged_spectrum
from ..static_calibrations import load_yaml
from ._base_recipe_ import Product
from ._standard_recipe_ import _standard_recipe_

log = logging.getLogger(__name__)

#: product categories (without the arm) of a standard's spectrum the transmission may be measured on
SPECTRA = ("STD_TELL_MERGED", "STD_FLUX_MERGED")
#: DPR TYPE of a flux standard: serves when no telluric standard was observed
FLUX_STANDARD = "STD,FLUX"


class soxs_telluric(_standard_recipe_):
    """The telluric transmission from a telluric standard's raw frames (reduced on the way) or its merged spectrum."""

    name = "telluric"
    raw_kinds = ("telluric_standard", "flux_standard")
    techniques = tuple(load_yaml("frame_types.yaml")["kinds"]["telluric_standard"]["tech"])
    calibrations = {k: v for k, v in _standard_recipe_.calibrations.items() if k != "TELLURIC"}
    spectra = SPECTRA
    standard = "telluric standard"
    dpr_type = "STD,TELLURIC"

    def reduce(self):
        """Reduce the raw frames (or read the product), measure the transmission, record its QC; the products."""
        if self.spectrum is not None:
            path = self.spectrum.path
            merged = read_merged_spectrum(path)
            source = str(header_value(merged.meta, "dpr_type", "") or "").strip() or (
                FLUX_STANDARD if self.spectrum.tag.startswith("STD_FLUX") else self.dpr_type)
            return [self.measure(merged, path, airmass=header_value(merged.meta, "pro_airmass", None),
                                 header=merged.meta, source=source, tech=self.spectrum.tech or
                                 header_value(merged.meta, "pro_tech", ""))]
        products = super().reduce()
        merged = next(p for p in products if p.pro_catg == f"{self.prefix}_MERGED_{self.arm}")
        first = self.raw_frames[0]
        return products + [self.measure(merged.data, first.path,
                                        airmass=merged.header_cards.get("pro_airmass", (None,))[0],
                                        header=read_header(first.path), source=first.type, tech=first.tech)]

    def measure(self, merged, path, *, airmass, header, source, tech):
        """The ``TELLURIC_<ARM>`` product of a standard's merged spectrum.

        Parameters
        ----------
        merged : astropy.table.Table
            The standard's ``<P>_MERGED_<ARM>`` table.
        path : str
            The file it comes from (for messages).
        airmass : float or None
            The standard's mean airmass.
        header : mapping
            Its header (``OBJECT``, ``RA``, ``DEC``).
        source : str
            Its ``DPR TYPE``.
        tech : str
            Its ``DPR TECH`` (the product's ``PRO TECH``).

        Raises
        ------
        DataError
            No airmass, or too little spectrum outside the bands.
        """
        p = self.params
        if airmass is None:
            raise DataError(f"{path}: no airmass of the standard; give a {SPECTRA[0]} product of soxspipe's science "
                            "recipes, or raw frames whose headers have it")
        name = str(header_value(header, "object", "") or "").strip() or "unnamed standard"
        wave, flux, error, calibrated = standard_spectrum(merged)
        if not calibrated:
            log.warning("%s: the standard's spectrum is not flux-calibrated: its continuum carries the instrument's "
                        "efficiency; give a RESPONSE_%s with the raw frames for a smoother one", path, self.arm)
        model = None
        if source == FLUX_STANDARD:
            log.warning("%s: no telluric standard; the flux standard %s serves", path, name)
            model = self._catalogue(name, header, wave)
        try:
            transmission = measure_transmission(wave, flux, error, airmass=float(airmass), model=model,
                                                **transmission_options(p))
        except DataError as exc:
            raise DataError(f"{path}: {exc}") from None
        table = transmission_table(transmission)
        qc = band_qc(transmission)
        for item in qc:
            self.qc.add(*item)
        cards = {"pro_std_name": (name, "telluric standard"),
                 "pro_airmass": (round(float(airmass), 4), "airmass of the standard"),
                 "pro_tell_source": (source, "a flux standard served" if source == FLUX_STANDARD
                                     else "DPR TYPE of the standard")}
        log.info("telluric transmission of %s (%s) at airmass %.3f: %s", name, source, float(airmass),
                 ", ".join(f"{n} {v:g}" for n, v, _, _ in qc))
        title = f"TELLURIC_{self.arm}: {name} ({source}), airmass {float(airmass):.3f}"
        spectrum = (wave, flux, transmission.continuum)
        return Product(f"TELLURIC_{self.arm}", table, pro_tech=tech, header_cards=cards,
                       plots=[("telluric", lambda out: telluric_plot(table, spectrum, threshold=p["min-transmission"],
                                                                      title=title, path=out))])

    def _catalogue(self, name, header, wave):
        """The flux standard's catalogue spectrum at ``wave`` (its lines then divide out), or None when not bundled."""
        response = recipe_settings(self.settings, "response", self.arm)
        try:
            star = find_standard(None if name == "unnamed standard" else name, header_value(header, "ra", None),
                                 header_value(header, "dec", None), radius_arcsec=response["match-radius-arcsec"])
        except DataError as exc:
            log.warning("%s; its lines are masked instead", exc)
            return None
        return catalogue_flux(star, wave, resolution=response["resolving-power"])
