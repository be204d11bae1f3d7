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
  evaluated at every pixel's own wavelength and slit position.

Products: ``<P>_ORDERS_<ARM>``, ``<P>_MERGED_<ARM>``, ``<P>_2D_<ARM>``,
``<P>_SKY_MODEL_<ARM>``, ``<P>_SKY_SUB_<ARM>`` with ``<P>`` = ``SCI``,
``STD_FLUX`` or ``STD_TELL`` after the frames' kind, and the quicklook PDF.
"""

import logging

from ._science_recipe_ import SkyFreeFrame, _science_recipe_

log = logging.getLogger(__name__)


class soxs_stare(_science_recipe_):
    """Reduce a staring OB: the sky fitted in (wavelength, slit) space and removed; spectra, 2D, sky."""

    name = "stare"
    techniques = ("ECHELLE,SLIT,STARE",)

    def remove_sky(self, frames, calibration):
        stacked = self.stack(frames)
        rough = self.locate(stacked.data, stacked.bad | stacked.cosmics, calibration)
        sky = self.kelson_sky(stacked, calibration, self.object_mask(rough, calibration))
        log.info("sky fitted: reduced chi^2 %s", ", ".join(f"{o}: {c:.2f}" for o, c in sorted(sky.chi2.items())))
        return [SkyFreeFrame(stacked.data - sky.sky, stacked.variance, sky.sky, sky.variance,
                             stacked.bad | sky.rejected, stacked.cosmics, stacked.read_noise, chi2=sky.chi2)]
