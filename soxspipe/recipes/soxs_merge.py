"""soxs_merge: the UV-VIS and NIR spectra of one OB as one Phase 3 spectrum.

The SOF gives the two per-arm SDP spectra of one OB (``<P>_SPEC_VIS`` and
``<P>_SPEC_NIR``, from stare, nod or offset) and, optionally, the OB's
acquisition-camera source catalogues (``SOURCE_CAT_ACQ_<filter>``, from
``soxs_image``; an ``IMAGE_ACQ_<filter>`` is accepted beside its catalogue):

1. **Checks**: one spectrum of each arm, of the same object and OB, flux-calibrated
   alike, with good bins, overlapping.
2. **Absolute flux** (:mod:`~soxspipe.commonutils.absolute_flux`): every arm that
   covers a catalogue's filter is scaled so that its synthetic AB magnitude
   matches the target's (the catalogue source nearest the target's RA/DEC, within
   ``target-max-separation``). A catalogue without a zero point, a filter no arm
   covers, or no source at the target leave the standard-star calibration, and the
   log and the header say why.
3. **Arm scaling**: the factor (slit losses, clouds: grey) of the arm that covers
   the filter is applied to the other arm too; when no arm could be scaled to the
   photometry, NIR is scaled onto UV-VIS by their flux ratio in ``scale-window``
   (800-850 nm).
4. **Merging** (:mod:`~soxspipe.commonutils.merge_arms`): both arms rebinned,
   conserving flux, onto bins of constant velocity width (``velocity-step``
   km/s), combined with inverse-variance weights in the overlap.

Product: ``<P>_SPEC_MERGED`` (the SDP 1D-spectrum layout of the arms' products,
keywords combined: exposures, times and provenance of both arms; the absolute-flux
photometry and each arm's factor and scale in the header and QC), and a one-page
quicklook PDF in ``<output>/qc/``.
"""

import logging
import re
from pathlib import Path

from astropy.table import Table

from .. import __version__
from ..commonutils.absolute_flux import absolute_flux_factor, photometry_problem, scale_spectrum, target_photometry
from ..commonutils.errors import DataError
from ..commonutils.fitsio import read_header
from ..commonutils.keywords import has_keyword, header_value, keyword
from ..commonutils.merge_arms import arm_ratio, merge_arms, overlap, usable_bins, velocity_edges
from ..commonutils.merge_plots import merged_quicklook_pdf
from ..commonutils.sdp_spectrum import build_sdp_spectrum, read_sdp_spectrum
from ._base_recipe_ import Product, _base_recipe_

log = logging.getLogger(__name__)

ARMS = ("VIS", "NIR")
SPECTRUM_TAG = re.compile(r"^(SCI|STD_FLUX|STD_TELL)_SPEC_(VIS|NIR)$")
ACQ_TAG = re.compile(r"^(SOURCE_CAT|IMAGE)_ACQ_(\w+)$")
#: primary keywords copied from the arms and how they combine: "min", "max", "sum", "first"
_COMBINED = {"mjd_obs": "min", "sdp_mjd_end": "max", "sdp_texptime": "sum", "exptime": "max", "sdp_lamnlin": "sum",
             "sdp_lamrms": "max", "sdp_spec_err": "max", "sdp_spec_sye": "max", "sdp_spec_res": "min",
             "sdp_ncombine": "sum"}
_COPIED = ("object", "ra", "dec", "sdp_prog_id", "sdp_obstech", "sdp_procsoft", "sdp_specsys", "sdp_ext_obj",
           "sdp_equinox", "sdp_radesys", "sdp_referenc", "sdp_prodlvl", "sdp_aperture", "sdp_contnorm", "fluxcal",
           "pro_barycorr", "pro_airmass", "pro_seeing", "pro_tellcorr")


class soxs_merge(_base_recipe_):
    """Merge the per-arm SDP spectra of one OB (see the module docstring)."""

    name = "merge"
    raw_kinds = ()

    def check_inputs(self, frames):
        """One SDP spectrum per arm, optional acquisition catalogues; nothing else.

        Raises
        ------
        DataError
            Another kind of file, a missing or doubled arm.
        """
        spectra, self.catalogues = {}, {}
        for f in frames:
            m, a = SPECTRUM_TAG.match(f.tag), ACQ_TAG.match(f.tag)
            if m:
                if m.group(2) in spectra:
                    raise DataError(f"{f.path}: a second {f.tag} in the SOF (first: {spectra[m.group(2)].path}); "
                                    "give one spectrum per arm")
                spectra[m.group(2)] = f
            elif a:
                if a.group(1) == "SOURCE_CAT":
                    self.catalogues[a.group(2)] = f
            else:
                raise DataError(f"{f.path}: a {f.tag} is not an input of {self.recipe_id}, which merges the "
                                "<P>_SPEC_VIS and <P>_SPEC_NIR of one OB (and takes its SOURCE_CAT_ACQ_<filter>)")
        missing = [arm for arm in ARMS if arm not in spectra]
        if missing:
            have = ", ".join(f"{f.tag} ({f.path})" for f in spectra.values()) or "none"
            raise DataError(f"{self.sof}: no {'/'.join(missing)} spectrum to merge (given: {have}); "
                            f"{self.recipe_id} needs the <P>_SPEC_VIS and <P>_SPEC_NIR of one OB")
        tags = {SPECTRUM_TAG.match(spectra[a].tag).group(1) for a in ARMS}
        if len(tags) > 1:
            raise DataError(f"{self.sof}: spectra of different kinds ({', '.join(sorted(tags))}); give one OB's")
        self.prefix = tags.pop()
        self.arm = "UVVISNIR"
        self.raw_frames = [spectra[a] for a in ARMS]

    def reduce(self):
        p = self.params
        spectra, headers = {}, {}
        for f in self.raw_frames:
            spectra[f.arm], headers[f.arm] = read_sdp_spectrum(f.path)
        self._check_pair(spectra, headers)
        factors, notes = self._absolute_flux(spectra, headers)
        self.qc.add("ABSFLUX ARMS", len(factors), "", "arms scaled to the acquisition photometry")
        window = tuple(p["scale-window"])
        if factors:  # slit losses and clouds are grey: an arm without the filter takes the other arm's factor
            source = next(iter(factors))
            for arm in ARMS:
                if arm not in factors:
                    factors[arm] = factors[source]
                    log.info("%s: the absolute-flux factor of %s (%.4f) applied: %s", arm, source,
                             factors[arm].factor, notes.pop(arm, ""))
        scaled = {arm: scale_spectrum(spectra[arm], factors[arm]) if arm in factors else spectra[arm] for arm in ARMS}
        if not factors:  # the standard-star calibrations of the arms, NIR scaled onto UV-VIS in the window
            ratio, n = arm_ratio(scaled["VIS"], scaled["NIR"], window)
            log.info("NIR scaled onto VIS by %.4f (%d bins of %g-%g nm)", ratio, n, *window)
            self.qc.add("SCALE NIR", round(ratio, 5), "", "NIR flux scaled onto VIS")
            scaled["NIR"] = scaled["NIR"].scaled(ratio, {("pro_merge_scale", (("arm", "NIR"),)): (
                round(ratio, 6), "scaled onto VIS")})
        lo = min(float(s.columns["WAVE"][0]) for s in spectra.values())
        hi = max(float(s.columns["WAVE"][-1]) for s in spectra.values())
        merged = merge_arms([scaled[a] for a in ARMS], velocity_edges(lo, hi, p["velocity-step"]))
        ratio_check, _ = arm_ratio(scaled["VIS"], scaled["NIR"], window)
        self.qc.add("ARM RATIO", round(ratio_check, 5), "", f"VIS/NIR flux in {window[0]:g}-{window[1]:g} nm")
        cards = self._merged_cards(scaled, headers, factors, notes)
        product = build_sdp_spectrum(merged.columns, scaled["VIS"].units, cards)
        products = [Product(f"{self.prefix}_SPEC_MERGED", product, pro_tech=str(cards["sdp_obstech"][0]))]
        self._quicklook = (merged, {**cards, **product.derived_cards()})
        return products

    # -- steps -------------------------------------------------------------------------

    def _check_pair(self, spectra, headers):
        vis, nir = (self.raw_frames[0].path, self.raw_frames[1].path)
        for name in ("object", "obs_id"):
            a, b = (header_value(headers[arm], name, None) for arm in ARMS)
            if a is not None and b is not None and str(a).strip() != str(b).strip():
                raise DataError(f"{vis} and {nir}: {keyword(name)} '{a}' and '{b}' differ: not the two arms of one "
                                "OB; give the spectra of one OB")
        for arm, f in zip(ARMS, self.raw_frames):
            if not usable_bins(spectra[arm]).any():
                raise DataError(f"{f.path}: the {arm} spectrum has no good bin: nothing to merge")
        if spectra["VIS"].calibrated != spectra["NIR"].calibrated:
            raise DataError(f"{vis} and {nir}: one is flux-calibrated and the other not; give both calibrated "
                            "(a RESPONSE of each arm) or neither")
        overlap(spectra["VIS"], spectra["NIR"])

    def _absolute_flux(self, spectra, headers):
        """Scale factors by arm from the acquisition catalogues, and why arms got none."""
        factors, notes = {}, {}
        if not self.catalogues:
            return factors, {arm: "no acquisition image in the SOF" for arm in ARMS}
        ra, dec = header_value(headers["VIS"], "ra", None), header_value(headers["VIS"], "dec", None)
        for arm in ARMS:
            s = spectra[arm]
            if not s.calibrated:
                notes[arm] = "spectrum not flux-calibrated"
                continue
            for filter_name, f in sorted(self.catalogues.items()):
                fluxcal = header_value(read_header(f.path), "fluxcal", "")
                why = photometry_problem(fluxcal, s.columns["WAVE"], filter_name)
                try:
                    if why is None:
                        if ra is None or dec is None:
                            raise DataError("the spectrum has no RA/DEC to find its target")
                        phot = target_photometry(Table.read(f.path), ra, dec, filter_name,
                                                 max_separation=self.params["target-max-separation"],
                                                 source=Path(f.path).name)
                        # the image's magnitude is above the atmosphere: the telluric-corrected flux where there is one
                        flux = s.columns["FLUX_TELL"] if "FLUX_TELL" in s.columns else s.columns["FLUX"]
                        factors[arm] = absolute_flux_factor(s.columns["WAVE"], flux, s.columns["QUAL"], phot)
                        self.qc.add(f"ABSFLUX FACTOR {arm}", round(factors[arm].factor, 5), "",
                                    f"{arm} scale to the {filter_name} photometry")
                        break
                except DataError as exc:
                    why = str(exc)
                notes.setdefault(arm, why)
                log.warning("%s: no absolute flux from %s: %s", arm, Path(f.path).name, why)
            if arm in factors:
                notes.pop(arm, None)
        return factors, notes

    def _merged_cards(self, scaled, headers, factors, notes):
        """The merged product's SDP keywords: the arms' combined, provenance of both, the absolute flux."""
        cards = {}
        for name, how in _COMBINED.items():
            values = [header_value(headers[a], name, None) for a in ARMS]
            values = [v for v in values if v is not None]
            if values:
                op = {"min": min, "max": max, "sum": sum}[how]
                cards[name] = (op(values), headers["VIS"].comments[keyword(name)])
        for name in _COPIED:
            if has_keyword(headers["VIS"], name):
                cards[name] = (header_value(headers["VIS"], name), headers["VIS"].comments[keyword(name)])
        start, end = cards["mjd_obs"][0], cards["sdp_mjd_end"][0]
        cards["sdp_telapse"] = ((end - start) * 86400.0, "[s] total elapsed time")
        cards["sdp_tmid"] = (0.5 * (start + end), "[d] MJD mid exposure")
        provs = [header_value(headers[a], "sdp_prov", n=n) for a in ARMS for n in range(1, 1000)
                 if has_keyword(headers[a], "sdp_prov", n=n)]
        for n, name in enumerate(provs, start=1):
            cards[("sdp_prov", (("n", n),))] = (name, "originating raw file")
        cards["sdp_ncombine"] = (len(provs), "raw science frames combined")
        obs = sorted({header_value(headers[a], "sdp_obid", n=1) for a in ARMS if has_keyword(headers[a], "sdp_obid", n=1)})
        for n, value in enumerate(obs, start=1):
            cards[("sdp_obid", (("n", n),))] = (value, "observation block ID")
        calibrated = scaled["VIS"].calibrated
        whole = calibrated and bool(factors)
        errors = [scaled[a].cards.get("sdp_fluxerr", (None,))[0] for a in factors]
        cards.update({"sdp_tot_flux": (whole, "scaled to the source's total flux" if whole else "slit losses kept"),
                      "sdp_fluxerr": ((max(errors) if errors else -2.0) if calibrated else -1.0,
                                      "[%] flux scale error"),
                      "sdp_dispelem": ("SOXS VIS,NIR", "dispersive elements"),
                      "sdp_m_epoch": (False, "one epoch"), "sdp_singlexp": (False, "several exposures"),
                      "sdp_title": (f"{cards.get('object', ('',))[0]} SOXS UV-VIS+NIR {self.raw_frames[0].mjd:.5f}",
                                    "dataset title"),
                      "pro_absflux": (whole, "scaled to the acquisition photometry" if whole
                                      else "standard-star calibration only"),
                      "pro_merge_vstep": (float(self.params["velocity-step"]), "[km/s] bin width of the grid")})
        for arm in ARMS:
            cards[("pro_merge_arm_file", (("arm", arm),))] = (Path(self.raw_frames[ARMS.index(arm)].path).name,
                                                           f"the {arm} spectrum")
        if factors:  # the photometry of the first arm scaled to it; the other arm's factor is in the QC
            first = scaled[next(iter(factors))].cards
            cards.update({k: v for k, v in first.items() if k.startswith("pro_absflux_")})
        if notes:
            cards["pro_absflux_note"] = ("; ".join(f"{a}: {n}" for a, n in notes.items())[:60],
                                         "why an arm has no absolute flux")
        return cards

    # -- products ----------------------------------------------------------------------

    def product_header(self, product):
        """The base header without the QC and recipe parameters the first arm's product carried."""
        header = super().product_header(product)
        own = header.__class__()
        self.qc.write_header(own)
        inherited = read_header(self.raw_frames[0].path)
        for key in list(inherited.keys()):
            if key in header and key not in own and key.startswith(keyword("qc", qc_name="").strip()):
                del header[key]
        for n in range(len(self.params) + 1, 1000):
            for name in ("pro_rec_param_name", "pro_rec_param_value"):
                if has_keyword(header, name, n=n):
                    del header[keyword(name, n=n)]
        for n in range(len(self.raw_frames) + 1, 1000):
            for name in ("pro_rec_raw_name", "pro_rec_raw_catg"):
                if has_keyword(header, name, n=n):
                    del header[keyword(name, n=n)]
        return header

    def write_products(self, products):
        """Write the products, then the quicklook PDF of the merged spectrum into ``<output>/qc/``."""
        paths = super().write_products(products)
        if self.plots_enabled:
            merged, cards = self._quicklook
            pdf = self.output_dir / "qc" / f"{paths[0].stem}_quicklook.pdf"
            try:
                merged_quicklook_pdf(merged, ARMS, title=f"{paths[0].name}: {cards.get('object', ('',))[0]}",
                                     summary=_summary(cards), path=pdf)
                log.info("quicklook: %s", pdf)
            except Exception as exc:  # a plot never costs the products
                log.warning("quicklook %s not drawn: %s", pdf.name, exc)
        return paths


def _summary(cards):
    def value(name, fmt="{}"):
        v = cards.get(name, (None,))[0]
        return "n/a" if v is None else fmt.format(v)

    from astropy.time import Time

    start = cards.get("mjd_obs", (None,))[0]
    return [("object", value("object")), ("date", Time(start, format="mjd").isot[:19] if start else "n/a"),
            ("airmass", value("pro_airmass", "{:.3f}")), ("seeing", value("pro_seeing", "{:.2f} arcsec")),
            ("exposure", value("exptime", "{:.0f} s per arm")), ("total exposure", value("sdp_texptime", "{:.0f} s")),
            ("flux calibration", value("fluxcal")), ("absolute flux", value("pro_absflux")),
            ("flux scale error", value("sdp_fluxerr", "{:.1f} %")), ("telluric corrected", value("pro_tellcorr")),
            ("S/N (median)", value("sdp_snr", "{:.1f}")), ("version", f"soxspipe/{__version__}")]
