"""soxs_stare: the frames of one staring OB (science, flux or telluric standard) to spectra.

The shared science steps (:mod:`._science_recipe_`) do the detrending, the
object, the extraction, the merging, the 2D image and the products. Stare
supplies the sky:

- the detrended frames are stacked first (one frame as it is; several: their
  clipped mean, scaled to their sum, which also clips the cosmic rays when
  there are ``cosmic-stack-min`` of them or more);
- the object is found on the stack, with the median along wavelength of each
  slit position as its background, and masked (``object-mask-fwhm``);
- the sky is fitted in (wavelength, slit) space after Kelson (2003), order by
  order, to the remaining pixels at all slit positions (a B-spline in
  wavelength times a slit-illumination polynomial, outliers rejected) and
  evaluated at every pixel's own wavelength and slit position;
- then (``sky-object-refit``) the object is extracted once, its model (flux
  times profile) subtracted, and the sky fitted again to every pixel of the
  slit: the pixels under a faint object measure the sky too, which halves the
  noise the sky model adds to the object's spectrum (the pixels under a bright
  one, weighted by their own variance, count for little).

Products: ``<P>_ORDERS_<ARM>``, ``<P>_MERGED_<ARM>``, ``<P>_SPEC_<ARM>`` (Phase 3),
``<P>_2D_<ARM>``, ``<P>_SPEC2D_<ARM>`` (orders merged, flux-calibrated, with a WCS),
``<P>_SKY_MODEL_<ARM>``, ``<P>_SKY_SUB_<ARM>`` with ``<P>`` = ``SCI``,
``STD_FLUX`` or ``STD_TELL`` after the frames' kind, and the quicklook PDF.
"""

import logging
from dataclasses import replace

import numpy as np

from ._science_recipe_ import SkyFreeFrame, _science_recipe_

log = logging.getLogger(__name__)


class soxs_stare(_science_recipe_):
    """Reduce a staring OB: the sky fitted in (wavelength, slit) space and removed; spectra, 2D, sky."""

    name = "stare"
    techniques = ("ECHELLE,SLIT,STARE",)

    def remove_sky(self, frames, calibration):
        stacked = self.stack(frames)
        rough = self.locate(stacked.data, stacked.bad | stacked.cosmics, calibration)
        mask = self.object_mask(rough, calibration)
        sky = self.kelson_sky(stacked, calibration, mask)
        log.info("sky fitted: reduced chi^2 %s", ", ".join(f"{o}: {c:.2f}" for o, c in sorted(sky.chi2.items())))
        sky_free = self._sky_free(stacked, sky, mask)
        if self.params["sky-object-refit"]:
            extraction = self.extract(sky_free, calibration)
            objects = np.zeros(stacked.data.shape, np.float32)
            for spectrum in extraction.spectra:
                objects[calibration.boxes[spectrum.order]] += spectrum.object_model
            without_object = replace(stacked, data=stacked.data - objects, bad=stacked.bad | extraction.rejected)
            sky = self.kelson_sky(without_object, calibration, np.zeros_like(mask))
            log.info("sky fitted again, the object modelled: reduced chi^2 %s",
                     ", ".join(f"{o}: {c:.2f}" for o, c in sorted(sky.chi2.items())))
            sky_free = self._sky_free(stacked, sky, mask)
        return [sky_free]

    @staticmethod
    def _sky_free(stacked, sky, mask):
        # the sky fit's rejections inside the object's window are the object's business (its extraction's)
        return SkyFreeFrame(stacked.data - sky.sky, stacked.variance, sky.sky, sky.variance,
                            stacked.bad | (sky.rejected & ~mask), stacked.cosmics, stacked.read_noise,
                            chi2=sky.chi2)
