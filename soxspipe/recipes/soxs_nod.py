"""soxs_nod: the frames of one nodding OB (science, flux or telluric standard) to spectra.

The shared science steps (:mod:`._science_recipe_`) do the detrending, the
object, the extraction, the merging, the 2D image and the products. Nodding
supplies the sky:

- the frames are A (``ESO SEQ CUMOFF Y`` > 0) or B (< 0), each A paired with
  the B nearest in time (:func:`~soxspipe.commonutils.nodding.pair_nod_frames`;
  a frame left without a partner is left out, an OB without a pair is an error);
  they share one exposure time;
- every pair gives ``A - B`` and ``B - A``: the sky cancels to first order, the
  object is where the offsets say (``nod-slit-direction``), and both of its
  images (positive and negative) are located along the slit;
- the sky left (the sky changes between the exposures) is fitted on ``A - B``
  after Kelson (2003), both object images masked (``residual-sky-illumination-degree``);
- with fewer than ``cosmic-stack-min`` frames, cosmic rays are found by
  L.A.Cosmic on the difference, its residual sky removed, with the sign kept:
  the positive rays of ``A - B`` are A's, those of ``B - A`` B's, the band of
  the negative object image not searched (more frames: their spectra and 2D
  images are clipped across the frames);
- the sky under the object (the ``SKY`` column, the sky-model product) is
  the sky itself, not only what was left: the sky of ``A + B`` (both images
  masked) is fitted as in stare, and A's is ``(sky(A + B) + residual) / 2``;
- the noise: ``A - B`` has A's own variance plus B's, modelled (its sky
  model and its read noise: see :class:`_difference_recipe_`); the
  calibrations' errors, shared by A and B, cancel, and so does the error of
  the residual sky model from the sum of ``A - B`` and ``B - A``.

Each difference frame's positive image is extracted; the spectra are combined
bin by bin (``combine-sigma``: a value that disagrees with the others is
rejected), and the 2D images are shifted along the slit so that the positive
images coincide and combined (:func:`~soxspipe.commonutils.nodding.combine_rectified`).
The combination is the frames' sum: the counts over the paired frames' total
exposure time.

:class:`_difference_recipe_` holds what nodding and offset mode share: the
cosmic rays and the residual sky of a difference frame, the combination of
several frames' spectra and 2D images, and the exposure time of the frames
whose object is extracted.

Products: ``<P>_ORDERS_<ARM>``, ``<P>_MERGED_<ARM>``, ``<P>_SPEC_<ARM>`` (Phase 3),
``<P>_2D_<ARM>``, ``<P>_SPEC2D_<ARM>`` (orders merged, flux-calibrated, with a WCS),
``<P>_SKY_MODEL_<ARM>``, ``<P>_SKY_SUB_<ARM>`` (those of the first ``A - B``)
with ``<P>`` = ``SCI``, ``STD_FLUX`` or ``STD_TELL`` after the frames' kind,
and the quicklook PDF.
"""

import logging
from dataclasses import replace
from pathlib import Path

import numpy as np

from ..commonutils.cosmics import cosmic_ray_mask
from ..commonutils.nodding import clipped_weighted_mean, combine_rectified, header_floats, linear_combination, \
    nod_differences, pair_nod_frames
from ..commonutils.science_extract import QUAL_BITS, OrderSpectrum
from ..commonutils.science_objects import Detection, ObjectLocation
from ._science_recipe_ import DetrendedFrame, Extraction, SkyFreeFrame, _science_recipe_

log = logging.getLogger(__name__)


class _difference_recipe_(_science_recipe_):
    """What the recipes that extract from difference frames (nod, offset) share.

    A subclass's :meth:`check_science_frames` records in ``self.extracted_frames``
    the raw frames whose object it extracts (their exposure time is the
    products'); its :meth:`remove_sky` forms the differences ``P - N`` (N: the
    frame, or the frames scaled and added, whose sky is removed), fits what is
    left of the sky with :meth:`residual_sky`, finds the cosmic rays with
    :meth:`difference_cosmics` and returns the frames :meth:`sky_free_frame` makes.

    The noise of a difference frame is that of P plus that of N: P's own variance
    (from its counts) plus that of a smooth model of N (its sky, its read noise),
    none of it drawn from the noisy counts of the difference, whose fluctuations
    it would share. The sky variance of the sky-free frame is the residual sky
    model's, whose error is common to the pixels of a wavelength bin, and its read
    noise P's and N's: the optimal extraction's model of the variance (Horne 1986).
    """

    #: the raw frames (FrameInfo) whose object is extracted; set by check_science_frames
    extracted_frames = None

    def cosmics_per_frame(self):
        """Never on the single frames: L.A.Cosmic runs on the differences (:meth:`difference_cosmics`)."""
        return False

    def total_exptime(self):
        """Exposure time (s) the products' counts are over: the sum of the frames whose object is extracted."""
        frames = self.raw_frames if self.extracted_frames is None else self.extracted_frames
        return float(sum(f.exptime or 0.0 for f in frames))

    # -- one difference frame -------------------------------------------------------------

    def shared_variance(self, frames, coefficients, calibration):
        """What to add to ``sum(c_i^2 variance_i)`` to get the variance of ``sum(c_i frame_i)``.

        The detrended frames share the errors of their calibrations (the master bias,
        the master dark, the master flat), which each frame's variance counts as its own:
        in a difference they cancel, in a sum they add up.

        Parameters
        ----------
        frames : sequence of DetrendedFrame
        coefficients : sequence of float
            ``c_i``.
        calibration : ScienceCalibration

        Returns
        -------
        numpy.ndarray
            float32; negative where the shared errors cancel.
        """
        c = np.asarray(coefficients, dtype=float)
        flat = calibration.flat
        usable = np.isfinite(flat.data) & (flat.data > 0)
        response = np.where(usable, flat.data, 1.0).astype(np.float32)
        additive = np.zeros(response.shape, np.float32)
        # an additive error e common to all the frames (scaled by s_i in frame i) enters sum(c_i frame_i)
        # as sum(c_i s_i) e, and the frames' variances count it sum((c_i s_i)^2) times
        if calibration.bias is not None and calibration.bias.uncertainty is not None:
            additive += np.float32(c.sum() ** 2 - (c ** 2).sum()) * calibration.bias.uncertainty.array ** 2
        if calibration.dark is not None:
            scaled = c * np.array([self._dark_scale(calibration.dark, f.raw[0]) for f in frames])
            additive += np.float32(scaled.sum() ** 2 - (scaled ** 2).sum()) * self.dark_model(calibration.dark)[1]
        out = additive / response ** 2
        if flat.uncertainty is not None:
            # a response error r scales every frame: (sum(c_i x_i) r)^2, counted as sum((c_i x_i r)^2)
            combined = sum(np.float32(k) * f.data for k, f in zip(c, frames))
            own = sum(np.float32(k * k) * f.data ** 2 for k, f in zip(c, frames))
            out += (combined ** 2 - own) * (flat.uncertainty.array / response) ** 2
        return np.where(usable, out, 0.0).astype(np.float32)

    def combination(self, frames, coefficients, calibration):
        """``sum(c_i frame_i)`` of detrended frames, with its variance (the calibrations' errors counted right).

        Returns
        -------
        soxspipe.commonutils.nodding.DifferenceFrame
        """
        out = linear_combination([f.data for f in frames], [f.variance for f in frames], coefficients,
                                 [f.bad for f in frames])
        out.variance += self.shared_variance(frames, coefficients, calibration)
        np.maximum(out.variance, np.float32(1e-6), out=out.variance)
        return out

    def sky_free_frame(self, positive, difference, residual, removed, removed_variance, *, removed_read_noise, bad,
                       cosmics, expected, label, paired=False):
        """The :class:`SkyFreeFrame` of a difference ``P - N``.

        N's noise is the pixels' own, like P's: it joins P's variance. The sky variance is
        that of the residual sky model, whose error is shared by the pixels of a wavelength
        bin (the extraction counts it so); the read noise is P's and N's. For a nod pair
        (``paired``) the residual's error enters ``A - B`` and ``B - A`` with opposite signs
        and cancels from their sum, the spectrum combined: it is counted with the pixels'
        own noise, not as shared, which would make the combined errors ~15 % too large.

        Parameters
        ----------
        positive : DetrendedFrame
            P.
        difference : numpy.ndarray
            ``P - N``.
        residual : soxspipe.commonutils.sky.SkyModel
            The sky left in it (:meth:`residual_sky`; its ``sky`` with the sign of this difference).
        removed, removed_variance : numpy.ndarray
            A smooth model of the sky of N and of N's variance (with the calibrations' shared part).
        removed_read_noise : float
            N's read noise (counts).
        paired : bool
            Whether the frame is one of a nod pair's two differences.
        bad, cosmics : numpy.ndarray of bool
        expected : float or None
            Slit position of the object.
        label : str
        """
        shared = np.maximum(residual.variance, 0.0).astype(np.float32)
        variance = np.maximum(positive.variance + removed_variance, 0.0).astype(np.float32)
        if paired:
            variance, shared = variance + shared, np.zeros_like(shared)
        return SkyFreeFrame(difference - residual.sky, variance, removed + residual.sky, shared, bad, cosmics,
                            float(np.hypot(positive.read_noise, removed_read_noise)), expected=expected,
                            chi2=residual.chi2, label=label)

    def difference_cosmics(self, flux, mask, background, read_noise, positive_band, negative_band):
        """Cosmic rays of a difference ``P - N`` (its residual sky removed), with the sign kept.

        Parameters
        ----------
        flux : numpy.ndarray
            The difference, its residual sky removed (sky lines that changed between the
            exposures would be as sharp as rays).
        mask : numpy.ndarray of bool
            Its bad pixels.
        background : numpy.ndarray
            A smooth model of the Poisson part of the difference's variance (the sky of P plus
            that of N, each counted once): L.A.Cosmic's noise model.
        read_noise : float
            Noise (counts) of a pixel of the difference without light.
        positive_band, negative_band : numpy.ndarray of bool
            The object's positive and negative images: each is left out of the search for the
            rays of the other sign (where its edges are as steep as a ray's).

        Returns
        -------
        positive, negative : numpy.ndarray of bool
            The rays of P and those of N; none when ``cosmic-stack-min`` frames or more are
            extracted (their spectra and 2D images are clipped across the frames instead).
        """
        p = self.params
        if len(self.extracted_frames) >= p["cosmic-stack-min"]:
            empty = np.zeros(flux.shape, bool)
            return empty, empty
        options = dict(read_noise=read_noise, background=background, sigma=p["cosmic-sigma"],
                       sigma_fraction=p["cosmic-sigma-fraction"], contrast=p["cosmic-contrast"],
                       iterations=p["cosmic-iterations"])
        # a ray of the other sign is a hole as sharp as a ray, whose rim L.A.Cosmic would flag: the holes are
        # filled up to cosmic-sigma times the noise
        floor = -np.float32(p["cosmic-sigma"]) * np.sqrt(np.maximum(background, 0) + np.float32(read_noise ** 2))
        # L.A.Cosmic takes its noise from the counts it is given: the difference plus its background
        positive = cosmic_ray_mask(np.maximum(flux, floor) + background, mask=mask | negative_band, **options)
        negative = cosmic_ray_mask(np.maximum(-flux, floor) + background, mask=mask | positive_band, **options)
        log.info("cosmic rays in the difference: %d pixels (+), %d pixels (-)", int(positive.sum()),
                 int(negative.sum()))
        return positive, negative

    def residual_sky(self, difference, calibration, images):
        """The sky left in a difference frame, fitted after Kelson (2003) with the object's images masked.

        The residual is ``I(s) (S_P - S_N)``: its slit illumination is not constrained where
        the two skies are nearly equal, hence the ``residual-sky-illumination-degree`` setting.
        Cosmic rays on the sky pixels are rejected by the fit.

        Returns
        -------
        soxspipe.commonutils.sky.SkyModel
        """
        frame = DetrendedFrame([], difference.flux, difference.variance, difference.mask,
                               np.zeros(difference.mask.shape, bool), 0.0, 0.0)
        residual = self.kelson_sky(frame, calibration, images,
                                   illumination_degree=self.params["residual-sky-illumination-degree"])
        log.info("residual sky fitted: reduced chi^2 %s",
                 ", ".join(f"{o}: {c:.2f}" for o, c in sorted(residual.chi2.items())))
        return residual

    # -- combination ------------------------------------------------------------------------

    def combine_extractions(self, extractions):
        """The spectra of every difference frame as one: their sum, a value that disagrees rejected.

        Each frame's spectrum carries one frame's counts; the combination is their mean
        over the frames kept in each bin, times the number of frames (equal weights: weights
        from the variances would favour the frames whose object is fainter).
        """
        self._positions = [e.location.joint.slit for e in extractions]
        if len(extractions) == 1:
            return extractions[0]
        p = self.params
        combined = [combine_order_spectra([e.spectra[k] for e in extractions], sigma=p["combine-sigma"])
                    for k in range(len(extractions[0].spectra))]
        spectra = [c[0] for c in combined]
        rejected = sum(c[1] for c in combined)
        location = combined_location([e.location for e in extractions])
        traced = {o: any(e.traced.get(o, False) for e in extractions) for o in extractions[0].traced}
        log.info("%d spectra combined; %d values rejected as outliers", len(extractions), rejected)
        self.qc.add("COMB NREJ", rejected, "", "spectrum values rejected across the combined frames")
        return Extraction(location, spectra, traced)

    def combine_rectified(self, rectified, frames):
        """The 2D images shifted along the slit onto the first one's object and combined (their sum)."""
        if len(rectified) == 1:
            return rectified[0]
        p = self.params
        n = len(rectified)
        out = {}
        for order in rectified[0]:
            combined = combine_rectified([r[order] for r in rectified], self._positions,
                                         min_coverage=p["rectify-min-coverage"], sigma=p["combine-sigma"])
            out[order] = replace(combined, flux=combined.flux * np.float32(n),
                                 variance=combined.variance * np.float32(n * n))
        return out


def combine_order_spectra(spectra, *, sigma=5.0, max_iterations=3):
    """The spectra of one order from several frames, as their sum (mean of the values kept times their number).

    Parameters
    ----------
    spectra : sequence of OrderSpectrum
        One per frame, on identical wavelength bins, each with one frame's counts.
    sigma : float or None
        A value further than ``sigma`` of its errors from the median of the bin's values is
        rejected (from 3 values up; see :func:`~soxspipe.commonutils.nodding.clipped_weighted_mean`).
    max_iterations : int
        Rejection passes.

    Returns
    -------
    spectrum : OrderSpectrum
        ``FLUX``/``ERR`` (optimal) and ``FLUX_BOX``/``ERR_BOX`` and ``SKY`` of the values kept;
        ``QUAL``: ``no_data`` where no value is kept, ``incomplete`` where every value kept is,
        ``object_not_found`` where every frame's is. The bins incomplete in some frames only
        are combined from the complete ones.
    n_rejected : int
        Values rejected as outliers.
    """
    first = spectra[0]
    for s in spectra[1:]:
        if s.edges.shape != first.edges.shape or not np.allclose(s.edges, first.edges, rtol=0, atol=1e-9):
            raise ValueError(f"order {first.order}: the spectra to combine are not on the same wavelength bins")
    n = len(spectra)
    qual = np.array([s.qual for s in spectra])
    flux, flux_box = np.array([s.flux for s in spectra]), np.array([s.flux_box for s in spectra])
    variance, variance_box = np.array([s.error for s in spectra]) ** 2, np.array([s.error_box for s in spectra]) ** 2
    usable = (qual & QUAL_BITS["no_data"]) == 0
    complete = usable & ((qual & QUAL_BITS["incomplete"]) == 0)
    valid = np.where(complete.any(axis=0), complete, usable)
    equal = np.ones(flux.shape)
    mean, mean_variance, kept = clipped_weighted_mean(flux, variance, weights=equal, valid=valid, sigma=sigma,
                                                      max_iterations=max_iterations)
    box, box_variance, _ = clipped_weighted_mean(flux_box, variance_box, weights=equal, valid=kept, sigma=None)
    sky, _, _ = clipped_weighted_mean(np.array([s.sky for s in spectra]), np.ones(flux.shape), weights=equal,
                                      valid=kept, sigma=None)
    none = ~kept.any(axis=0)
    out_qual = np.where(none, QUAL_BITS["no_data"], 0)
    out_qual |= np.where(~none & ~(kept & complete).any(axis=0), QUAL_BITS["incomplete"], 0)
    out_qual |= np.bitwise_and.reduce(qual & QUAL_BITS["object_not_found"], axis=0)
    return (OrderSpectrum(first.order, first.edges, n * mean, n * np.sqrt(mean_variance), n * box,
                          n * np.sqrt(box_variance), n * sky, out_qual.astype(np.int32)), int((valid & ~kept).sum()))


def combined_location(locations):
    """The object of several frames combined: at the first frame's position, found where any frame found it."""

    def joined(detections):
        return Detection(detections[0].slit, float(np.median([d.fwhm for d in detections])),
                         float(np.sqrt(np.sum([d.significance ** 2 for d in detections]))),
                         any(d.found for d in detections))

    orders = {o: joined([loc.orders[o] for loc in locations]) for o in locations[0].orders}
    return ObjectLocation(joined([loc.joint for loc in locations]), orders)


class soxs_nod(_difference_recipe_):
    """Reduce a nodding OB: A - B and B - A, residual sky, each positive image extracted, combined."""

    name = "nod"
    techniques = ("ECHELLE,SLIT,NODDING",)
    same_exptime = True

    def check_science_frames(self):
        """The base checks, then the A/B pairs (before any frame is detrended).

        Raises
        ------
        DataError
            No A or no B frame, a frame without its nod offset.
        """
        super().check_science_frames()
        labels = [Path(f.path).name for f in self.raw_frames]
        headers = [self.raw_header(f) for f in self.raw_frames]
        self.pairing = pair_nod_frames(header_floats(headers, "nod_cumoff_y", labels=labels),
                                       header_floats(headers, "mjd_obs", labels=labels), labels=labels)
        self.extracted_frames = [self.raw_frames[i] for i in self.pairing.pairs.ravel()]

    def remove_sky(self, frames, calibration):
        p = self.params
        pairing = self.pairing
        self.qc.add("NOD NPAIRS", len(pairing.pairs), "", "A-B pairs")
        self.qc.add("NOD NUNPAIRED", int(pairing.unpaired.size), "", "frames left without a partner")
        differences = nod_differences(pairing, [f.data for f in frames], [f.variance for f in frames],
                                      [f.bad for f in frames], origin=p["nod-slit-origin"],
                                      direction=p["nod-slit-direction"], both=False)
        out = []
        for k, d in enumerate(differences, 1):
            a, b = frames[d.positive], frames[d.negative]
            shared = self.shared_variance([a, b], [1.0, -1.0], calibration)
            d.variance += shared
            # both images, where the offsets put them; each found within the search radius of it
            pos = self.locate(d.flux, d.mask, calibration, d.positive_slit)
            pos_band = self.object_mask(pos, calibration)
            neg = self.locate(-d.flux, d.mask | pos_band, calibration, d.negative_slit)
            neg_band = self.object_mask(neg, calibration)
            images = pos_band | neg_band
            # the sky itself, of A + B (both images masked): A's is (sky(A + B) + residual) / 2, B's the other half
            both = self.combination([a, b], [1.0, 1.0], calibration)
            sky_sum = self.kelson_sky(DetrendedFrame([], both.flux, both.variance, both.mask,
                                                     np.zeros(d.mask.shape, bool), 0.0, 0.0), calibration, images).sky
            residual = self.residual_sky(d, calibration, images)
            free = d.flux - residual.sky
            rays_a, rays_b = self.difference_cosmics(free, d.mask, sky_sum, float(np.hypot(a.read_noise, b.read_noise)),
                                                     pos_band, neg_band)
            a.cosmics |= rays_a
            b.cosmics |= rays_b
            rays = rays_a | rays_b
            sky_a, sky_b = 0.5 * (sky_sum + residual.sky), 0.5 * (sky_sum - residual.sky)
            # the variance of the frame taken away: its sky and read noise, and its object's light on its image
            variance_b = sky_b + b.read_noise ** 2 + shared + np.where(neg_band, np.maximum(-free, 0), 0)
            variance_a = sky_a + a.read_noise ** 2 + shared + np.where(pos_band, np.maximum(free, 0), 0)
            bad = d.mask | residual.rejected
            out.append(self.sky_free_frame(a, d.flux, residual, sky_b, variance_b, removed_read_noise=b.read_noise,
                                           paired=True, bad=bad, cosmics=rays, expected=pos.joint.slit,
                                           label=f"A-B {k}"))
            out.append(self.sky_free_frame(b, -d.flux, replace(residual, sky=-residual.sky), sky_a, variance_a,
                                           removed_read_noise=a.read_noise, paired=True, bad=bad, cosmics=rays,
                                           expected=neg.joint.slit, label=f"B-A {k}"))
        return out
