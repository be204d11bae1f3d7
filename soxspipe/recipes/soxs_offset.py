"""soxs_offset: the frames of one offset OB (science, flux or telluric standard) to spectra.

The shared science steps (:mod:`._science_recipe_`) do the detrending, the
object, the extraction, the merging, the 2D image and the products. Offset
mode supplies the sky:

- the frames are object frames (on the target) or sky frames (offset from it
  by more than ``offset-min-offset`` in ``ESO SEQ FIXOFF RA/DEC``); an OB
  without a sky frame is an error, and its object frames share one exposure time;
- every object frame has the sky frame nearest in time subtracted, or the two
  that bracket it interpolated to its time (``offset-sky-frames``), scaled by
  the ratio of the exposure times
  (:func:`~soxspipe.commonutils.offset_sky.choose_sky_frames`);
- the object is found in the difference, the sky left (the sky changes between
  the exposures) is fitted after Kelson (2003) with the object masked, as in
  stare, and with fewer than ``cosmic-stack-min`` object frames the cosmic
  rays are found by L.A.Cosmic with the sign kept (the positive rays are the
  object frame's, the negative ones the sky frames');
- the sky under the object (the ``SKY`` column, the sky-model product) is the
  sky itself: the sky frames' sky, fitted as in stare, plus the residual;
- the noise: the object frame's own variance plus the sky frames', modelled
  (their sky model and their read noise: see :class:`~.soxs_nod._difference_recipe_`).

Several object frames' spectra and 2D images are combined as nodding's are
(:class:`~.soxs_nod._difference_recipe_`): the counts over the object frames'
total exposure time.

Products: ``<P>_ORDERS_<ARM>``, ``<P>_MERGED_<ARM>``, ``<P>_SPEC_<ARM>`` (Phase 3),
``<P>_2D_<ARM>``, ``<P>_SPEC2D_<ARM>`` (orders merged, flux-calibrated, with a WCS),
``<P>_SKY_MODEL_<ARM>``, ``<P>_SKY_SUB_<ARM>`` (those of the first object
frame) with ``<P>`` = ``SCI``, ``STD_FLUX`` or ``STD_TELL`` after the frames'
kind, and the quicklook PDF.
"""

import logging
from pathlib import Path

import numpy as np

from ..commonutils.errors import DataError
from ..commonutils.nodding import header_floats
from ..commonutils.offset_sky import choose_sky_frames, split_offset_frames, subtract_sky_frames
from ._science_recipe_ import DetrendedFrame
from .soxs_nod import _difference_recipe_

log = logging.getLogger(__name__)


class soxs_offset(_difference_recipe_):
    """Reduce an offset OB: object minus sky frame(s), residual sky, extracted, combined."""

    name = "offset"
    techniques = ("ECHELLE,SLIT,OFFSET",)

    def check_science_frames(self):
        """The base checks, then the object and sky frames and the sky of each object frame.

        Raises
        ------
        DataError
            No sky frame, no object frame, object frames of several exposure times.
        """
        super().check_science_frames()
        p = self.params
        frames = self.raw_frames
        labels = [Path(f.path).name for f in frames]
        headers = [self.raw_header(f) for f in frames]
        self.objects, self.skies = split_offset_frames(header_floats(headers, "fixoff_ra", labels=labels),
                                                       header_floats(headers, "fixoff_dec", labels=labels),
                                                       min_offset=p["offset-min-offset"], labels=labels)
        times = sorted({frames[i].exptime for i in self.objects})
        if len(times) > 1:
            raise DataError(f"{self.sof}: object frames of {' and '.join(f'{t:g}' for t in times)} s in one offset "
                            "OB; their spectra are added: give object frames of one exposure time")
        starts = header_floats(headers, "mjd_obs", labels=labels)
        self.choices = choose_sky_frames(starts[self.objects], [frames[i].exptime for i in self.objects],
                                         starts[self.skies], [frames[i].exptime for i in self.skies],
                                         n_sky=p["offset-sky-frames"])
        self.extracted_frames = [frames[i] for i in self.objects]

    def remove_sky(self, frames, calibration):
        objects, skies, choices = self.objects, self.skies, self.choices
        labels = [Path(f.raw[0].path).name for f in frames]
        self.qc.add("OFFSET NOBJ", int(objects.size), "", "object frames")
        self.qc.add("OFFSET NSKY", int(skies.size), "", "sky frames")
        sky_frames = [frames[i] for i in skies]
        out = []
        for k, (i, choice) in enumerate(zip(objects, choices), 1):
            target, used = frames[i], [sky_frames[j] for j in choice.sky]
            log.info("offset: %s minus %s", labels[i], " and ".join(
                f"{c:.3f} x {labels[skies[j]]}" for j, c in zip(choice.sky, choice.coefficients)))
            d = subtract_sky_frames(target.data, target.variance, [f.data for f in sky_frames],
                                    [f.variance for f in sky_frames], choice, mask=target.bad,
                                    sky_masks=[f.bad for f in sky_frames])
            shared = self.shared_variance([target] + used, [1.0] + [-c for c in choice.coefficients], calibration)
            d.variance += shared
            # the sky removed, as the sky frames show it (no object to mask), fitted as in stare
            removed = self.combination(used, choice.coefficients, calibration)
            sky = self.kelson_sky(DetrendedFrame([], removed.flux, removed.variance, removed.mask,
                                                 np.zeros(d.mask.shape, bool), 0.0, 0.0), calibration,
                                  np.zeros(d.mask.shape, bool)).sky
            location = self.locate(d.flux, d.mask, calibration)
            band = self.object_mask(location, calibration)
            # sky frame i holds w_i / c_i times the sky removed: the sky frames' Poisson variance,
            # sum(c_i^2 x that), is sum(w_i c_i) times it
            poisson = np.float32(np.dot(choice.weights, choice.coefficients))
            sky_read_noise = float(sum((c * f.read_noise) ** 2 for c, f in zip(choice.coefficients, used)))
            residual = self.residual_sky(d, calibration, band)
            rays_object, rays_sky = self.difference_cosmics(d.flux - residual.sky, d.mask, sky * (1 + poisson),
                                                            float(np.sqrt(target.read_noise ** 2 + sky_read_noise)),
                                                            band, np.zeros(d.mask.shape, bool))
            target.cosmics |= rays_object
            for f in used:
                f.cosmics |= rays_sky
            rays = rays_object | rays_sky
            out.append(self.sky_free_frame(target, d.flux, residual, sky, sky * poisson + sky_read_noise + shared,
                                           removed_read_noise=float(np.sqrt(sky_read_noise)),
                                           bad=d.mask | residual.rejected, cosmics=rays,
                                           expected=location.joint.slit if location.found else None,
                                           label=f"object {k} - sky"))
        return out
