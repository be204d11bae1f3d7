"""The base of the recipes that measure a calibration on a standard star: ``soxs_response`` and ``soxs_telluric``.

The SOF (one arm) holds either

- the raw frames of a standard's OB (staring, nodding or offset) with the
  calibrations of a science recipe: they are reduced on the way as the science
  recipe of their ``DPR TECH`` reduces them (``frame_types.yaml``, science kind:
  ``soxs_stare``, ``soxs_nod`` or ``soxs_offset``). The recipe becomes an
  instance of a class deriving from both (:func:`with_sky_recipe`), so that that
  recipe's sky removal, combination and checks run, its parameters and QC ranges
  under the standard recipe's own; the standard's science products are written
  as that recipe writes them; or
- one reduced spectrum of a standard (a product whose category is in the
  subclass's ``spectra``), alone: it stands in for the raw frames (its name,
  binning and date name the products), and the products' headers keep none of
  its QC and provenance.

A subclass sets ``spectra`` (the accepted product categories without the arm),
``standard`` (what the standard is, for messages, e.g. ``"flux standard"``) and
``dpr_type``, and branches in its ``reduce`` on :attr:`spectrum` (None: raw frames,
reduced by ``super().reduce()``).
"""

import logging
import warnings
from functools import lru_cache

from astropy import units as u

from ..commonutils.errors import DataError
from ..commonutils.keywords import keyword
from ..commonutils.qc import QCRecorder
from ..commonutils.settings import qc_ranges, recipe_settings
from ..static_calibrations import load_yaml
from . import RECIPES, recipe_class
from ._base_recipe_ import _base_recipe_
from ._science_recipe_ import _science_recipe_

log = logging.getLogger(__name__)

#: cards of a science product that describe its own calibration, not a recipe's reading it
_INPUT_CARDS = ("pro_fluxcal_resp", "pro_fluxcal_std", "pro_fluxcal_std_airm")


def sky_recipe_name(tech):
    """The recipe whose sky removal reduces frames of ``DPR TECH`` ``tech`` (``frame_types.yaml``, science kind)."""
    return load_yaml("frame_types.yaml")["kinds"]["science"]["recipe"].get(tech)


class _standard_recipe_(_science_recipe_):
    """Base of the recipes measuring a calibration on a standard's raw frames or reduced spectrum (module docstring)."""

    #: product categories (without the arm) of a standard's reduced spectrum the recipe takes alone
    spectra = ()
    #: what the standard is, in messages ('flux standard')
    standard = "standard"
    #: the standard's DPR TYPE, in messages
    dpr_type = ""
    techniques = tuple(load_yaml("frame_types.yaml")["kinds"]["science"]["tech"])

    def __init__(self, sof, **kwargs):
        super().__init__(sof, **kwargs)
        #: the reduced spectrum the calibration is measured on (None: raw frames)
        self.spectrum = None
        #: the recipe class whose sky-removal hooks reduce the raw frames
        self.sky_recipe = None

    def check_inputs(self, frames):
        """Raw frames and calibrations as for a science recipe, or one reduced spectrum of ``spectra`` alone.

        Raises
        ------
        DataError
            Neither, both, two spectra, or a spectrum with other files.
        """
        spectra = [f for f in frames if f.is_product and any(f.tag == f"{s}_{f.arm}" for s in self.spectra)]
        raws = [f for f in frames if not f.is_product]
        names = " or ".join(self.spectra)
        if not spectra:
            if not raws:
                arm_names = " or ".join(f"{s}_<ARM>" for s in self.spectra)
                raise DataError(f"{self.sof}: no {self.standard.replace(' ', '-')} frames and no {arm_names} "
                                f"product; {self.recipe_id} takes the raw frames of a {self.dpr_type} OB with their "
                                f"calibrations, or the {names} product of its reduction")
            self.take_sky_recipe(raws)
            return super().check_inputs(frames)
        if len(spectra) > 1:
            raise DataError(f"{spectra[1].path}: a second {spectra[1].tag} in the SOF (first: {spectra[0].path}); "
                            "give one")
        others = [f for f in frames if f is not spectra[0]]
        if others:
            raise DataError(f"{others[0].path}: a {others[0].tag} beside the {spectra[0].tag} {spectra[0].path}; "
                            f"{self.recipe_id} takes either a {self.standard}'s raw frames with their calibrations "
                            f"or its {names} product alone")
        self.spectrum = spectra[0]
        self.arm = self.spectrum.arm
        self.raw_frames = [self.spectrum]
        self.calibration_frames = {}

    def take_sky_recipe(self, raws):
        """Become the recipe that also reduces like the science recipe of the raw frames' technique.

        The instance's class becomes one deriving from this recipe and that one
        (:func:`with_sky_recipe`): its sky removal, combination and other hooks reduce the
        frames, this recipe's own steps come first. Frames of several or unknown techniques
        are left to the science checks.

        Raises
        ------
        DataError
            No registered recipe reduces the technique.
        """
        techs = {f.tech for f in raws}
        if len(techs) != 1 or next(iter(techs)) not in self.techniques:
            return
        tech = next(iter(techs))
        mode = sky_recipe_name(tech)
        if mode not in RECIPES:
            raise DataError(f"{raws[0].path}: a {tech} {self.standard} needs the sky removal of soxs_{mode}, which "
                            f"this soxspipe does not have; reduce the standard with a recipe that exists and give "
                            f"its {self.spectra[0]}_{raws[0].arm} product instead")
        self.sky_recipe = recipe_class(mode)
        self.__class__ = with_sky_recipe(type(self), self.sky_recipe)
        log.info("%s %s: reduced as soxs_%s reduces it", tech, self.standard, mode)

    def check_science_frames(self):
        """One technique; the parameters and QC ranges of its recipe with this recipe's over them; its checks.

        Raises
        ------
        DataError
            Frames of several techniques, or what the science checks find.
        """
        techs = sorted({f.tech for f in self.raw_frames})
        if len(techs) > 1:
            raise DataError(f"{self.sof}: frames of techniques {', '.join(techs)} in one SOF; "
                            "give the frames of one OB")
        mode = self.sky_recipe.name if self.sky_recipe is not None else None
        if mode in self.settings:
            self.params = {**recipe_settings(self.settings, mode, self.arm),
                           **recipe_settings(self.settings, self.name, self.arm)}
            self.qc = QCRecorder({**qc_ranges(self.settings, mode, self.arm),
                                  **qc_ranges(self.settings, self.name, self.arm)})
        super().check_science_frames()

    def product_header(self, product):
        """From raw frames as a science recipe's; from a spectrum, without the input's own QC and provenance."""
        if self.spectrum is None:
            return super().product_header(product)
        header = _base_recipe_.product_header(self, product)
        own = {keyword("qc", qc_name=v.name) for v in self.qc.values} | {keyword("qc_status")}
        if self.qc.failed:
            own.add(keyword("qc_failed"))
        qc_prefix = keyword("qc", qc_name="")
        for key in [k for k in header.keys() if k.startswith(qc_prefix) and k not in own]:
            header.remove(key, remove_all=True)
        # the input's provenance beyond this recipe's own (one input, no calibration, its parameters)
        for stem, parts, kept in (("pro_rec_raw", ("name", "catg"), 1), ("pro_rec_cal", ("name", "catg"), 0),
                                  ("pro_rec_param", ("name", "value"), len(self.params))):
            n = kept + 1
            while keyword(f"{stem}_{parts[0]}", n=n) in header:
                for part in parts:
                    header.remove(keyword(f"{stem}_{part}", n=n), ignore_missing=True)
                n += 1
        for name in _INPUT_CARDS:
            if name not in product.header_cards:
                header.remove(keyword(name), ignore_missing=True)
        return header

    def write_products(self, products):
        """As a science recipe from raw frames; from a spectrum, this recipe's products alone."""
        if self.spectrum is None:
            return super().write_products(products)
        with warnings.catch_warnings():
            # units FITS does not know (the electron) are written as text on purpose
            warnings.simplefilter("ignore", u.UnitsWarning)
            return _base_recipe_.write_products(self, products)


@lru_cache(maxsize=None)
def with_sky_recipe(recipe, sky):
    """The standard recipe class ``recipe`` reducing raw frames as the science recipe class ``sky`` does.

    A class deriving from both; ``recipe`` comes first: its input checks, its ``reduce``
    (which runs the shared science steps through ``super()``) and its writing; ``sky``
    supplies the hooks (sky removal, combination of several frames, their exposure time,
    its own checks).
    """
    return type(f"{recipe.__name__}_{sky.name}", (recipe, sky), {"__doc__": recipe.__doc__,
                                                                  "__module__": recipe.__module__})
