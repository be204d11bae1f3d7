"""Nodding along the slit: A/B pairing, difference frames and the combination of the pairs.

In nodding mode the telescope moves the object between two positions along the
slit, A and B, in ABBA cycles, each exposure jittered by a random fraction of
an arcsec. ``ESO SEQ CUMOFF Y`` is the cumulative offset along the slit; its
sign says A (positive) or B (negative), its value where the object is.

- :func:`classify_nod_frames` and :func:`pair_nod_frames`: A/B by the sign of
  the offset, each A paired with the B nearest in time (closest pairs first);
  a frame left without a partner is reported and left out.
- :func:`linear_combination` and :func:`nod_differences`: ``A - B`` (and
  ``B - A``) frames, variances summed and bad pixels OR-ed; the sky cancels to
  first order. Each difference knows the slit position of its positive and
  negative object images, from the offsets.
- :func:`residual_sky`: the sky left in a difference frame (the sky changes
  between exposures), modelled after Kelson (2003) with both object images masked.
- :func:`combine_spectra`: the spectra extracted from the positive image of
  every difference frame, combined with inverse-variance weights after a robust
  rejection of values that disagree across frames (cosmic rays that survived).
- :func:`combine_rectified`: the (wavelength, slit) images of the difference
  frames shifted along the slit so that their positive images coincide
  (flux-conserving linear interpolation for the fraction of a bin), then
  combined the same way.

No I/O.
"""

import logging
from dataclasses import dataclass

import bottleneck as bn
import numpy as np

from .errors import DataError
from .extraction import Spectrum1D
from .keywords import header_value, keyword
from .resample import RectifiedOrder
from .sky import sky_model

log = logging.getLogger(__name__)


def frame_names(labels, n):
    """Names of ``n`` frames for messages: ``labels`` (e.g. file names) or "frame 1", "frame 2", ..."""
    return [f"frame {i + 1}" for i in range(n)] if labels is None else [str(s) for s in labels]


def header_floats(headers, name, *, labels=None):
    """The value of the logical keyword ``name`` in every header, as floats.

    Parameters
    ----------
    headers : sequence of astropy.io.fits.Header
        One header per frame.
    name : str
        Logical keyword name (see ``keywords.yaml``), e.g. ``"nod_cumoff_y"``.
    labels : sequence of str, optional
        Names of the frames (e.g. file names) for the error message.

    Returns
    -------
    numpy.ndarray

    Raises
    ------
    DataError
        When a header lacks the keyword or its value is not a number.
    """
    names = frame_names(labels, len(headers))
    values = []
    for header, label in zip(headers, names):
        try:
            values.append(float(header_value(header, name)))
        except (KeyError, TypeError, ValueError):
            raise DataError(f"{label}: no numerical '{keyword(name)}' in the header; this reduction needs it "
                            "in every frame") from None
    return np.array(values)


def classify_nod_frames(offsets, *, labels=None):
    """A or B for each frame, by the sign of its cumulative offset along the slit.

    Parameters
    ----------
    offsets : array_like
        ``ESO SEQ CUMOFF Y`` of every frame (arcsec); jittered values are fine.
    labels : sequence of str, optional
        Names of the frames for the error message.

    Returns
    -------
    numpy.ndarray of bool
        True for A (positive offset), False for B (negative).

    Raises
    ------
    DataError
        When an offset is zero or not finite (neither A nor B).
    """
    offsets = np.asarray(offsets, dtype=float)
    undecided = ~np.isfinite(offsets) | (offsets == 0)
    if np.any(undecided):
        names = frame_names(labels, offsets.size)
        which = ", ".join(names[i] for i in np.flatnonzero(undecided))
        raise DataError(f"{which}: the nod offset '{keyword('nod_cumoff_y')}' is 0 or missing, so the frame is "
                        "neither A nor B; remove it from the set of files")
    return offsets > 0


@dataclass
class NodPairing:
    """Result of :func:`pair_nod_frames`; indices refer to the frames as given.

    Attributes
    ----------
    pairs : numpy.ndarray
        ``(n_pairs, 2)`` int: the A frame and the B frame of each pair, in the time order of the A frames.
    unpaired : numpy.ndarray
        Frames left without a partner.
    offsets : numpy.ndarray
        The offsets of all the frames (arcsec).
    is_a : numpy.ndarray of bool
        A (True) or B (False) for every frame.
    """

    pairs: np.ndarray
    unpaired: np.ndarray
    offsets: np.ndarray
    is_a: np.ndarray

    @property
    def throws(self):
        """Offset of A minus offset of B for every pair (arcsec)."""
        return self.offsets[self.pairs[:, 0]] - self.offsets[self.pairs[:, 1]]


def pair_nod_frames(offsets, times, *, labels=None):
    """Pair every A frame with the B frame nearest in time.

    Candidate pairs are taken closest in time first (ties: the earlier pair
    first), each frame in one pair at most. ABBA cycles give A1-B1, A2-B2;
    AB and BA sequences and unequal numbers of A and B frames are handled, the
    frames left without a partner being reported and left out.

    Parameters
    ----------
    offsets : array_like
        Cumulative offset along the slit of every frame (arcsec; its sign says A or B).
    times : array_like
        Time of every frame (e.g. MJD-OBS; all in the same unit).
    labels : sequence of str, optional
        Names of the frames for messages.

    Returns
    -------
    NodPairing

    Raises
    ------
    DataError
        When there is no A frame or no B frame, or an offset is 0.
    """
    offsets = np.asarray(offsets, dtype=float)
    times = np.asarray(times, dtype=float)
    if times.shape != offsets.shape:
        raise ValueError(f"{offsets.size} offsets but {times.size} times")
    is_a = classify_nod_frames(offsets, labels=labels)
    a, b = np.flatnonzero(is_a), np.flatnonzero(~is_a)
    if a.size == 0 or b.size == 0:
        raise DataError(f"nodding needs at least one A frame ('{keyword('nod_cumoff_y')}' > 0) and one B frame "
                        f"(< 0) to pair; the set has {a.size} A and {b.size} B frames: add the missing position "
                        "or reduce the frames in stare mode")
    gap = np.abs(times[a][:, None] - times[b][None, :])
    start = np.minimum(times[a][:, None], times[b][None, :])
    free_a, free_b = np.ones(a.size, bool), np.ones(b.size, bool)
    pairs = []
    # a few frames: the n_a x n_b candidates are visited in Python, closest first
    for k in np.lexsort((start.ravel(), gap.ravel())):
        i, j = divmod(int(k), b.size)
        if free_a[i] and free_b[j]:
            free_a[i] = free_b[j] = False
            pairs.append((a[i], b[j]))
    pairs = np.array(sorted(pairs, key=lambda p: times[p[0]]), dtype=int).reshape(-1, 2)
    unpaired = np.sort(np.concatenate([a[free_a], b[free_b]]))
    if unpaired.size:
        names = frame_names(labels, offsets.size)
        log.warning("nodding: %s left out, no %s frame to pair with",
                    ", ".join(f"{names[i]} ({'A' if is_a[i] else 'B'})" for i in unpaired),
                    "B" if free_a.any() else "A")
    log.info("nodding: %d A-B pairs from %d A and %d B frames", len(pairs), a.size, b.size)
    return NodPairing(pairs, unpaired, offsets, is_a)


@dataclass
class DifferenceFrame:
    """A linear combination of frames (e.g. A - B, object - sky) with its variance and bad pixels.

    Attributes
    ----------
    flux : numpy.ndarray
        Counts (float32).
    variance : numpy.ndarray
        Their variance (float32).
    mask : numpy.ndarray of bool
        Bad pixels: bad in any frame combined.
    """

    flux: np.ndarray
    variance: np.ndarray
    mask: np.ndarray


@dataclass
class NodDifference(DifferenceFrame):
    """A nodding difference frame, ``positive - negative``.

    Attributes
    ----------
    positive, negative : int
        Index of the frame taken with a plus sign and of the one with a minus sign.
    positive_slit, negative_slit : float
        Slit position (arcsec) of the object in those frames: where the positive and
        the negative object images sit in the difference.
    """

    positive: int = -1
    negative: int = -1
    positive_slit: float = np.nan
    negative_slit: float = np.nan


def linear_combination(fluxes, variances, coefficients, masks=None):
    """``sum(c_i * frame_i)`` with variance ``sum(c_i^2 * variance_i)`` and the bad pixels of every frame used.

    Parameters
    ----------
    fluxes, variances : sequence of numpy.ndarray
        Frames (counts) and their variances, all of one shape.
    coefficients : sequence of float
        One per frame; frames with a coefficient of 0 are not used (their bad pixels neither).
    masks : sequence of numpy.ndarray of bool, optional
        Bad pixels of every frame (None entries allowed).

    Returns
    -------
    DifferenceFrame
    """
    coefficients = np.asarray(coefficients, dtype=float)
    if not (len(fluxes) == len(variances) == coefficients.size):
        raise ValueError(f"{len(fluxes)} frames, {len(variances)} variances and {coefficients.size} coefficients")
    masks = [None] * coefficients.size if masks is None else masks
    shape = np.shape(fluxes[0])
    flux = np.zeros(shape, np.float32)
    variance = np.zeros(shape, np.float32)
    mask = np.zeros(shape, bool)
    for c, f, v, m in zip(coefficients, fluxes, variances, masks):
        if c == 0:
            continue
        flux += np.float32(c) * np.asarray(f, np.float32)
        variance += np.float32(c * c) * np.asarray(v, np.float32)
        if m is not None:
            mask |= np.asarray(m, bool)
    return DifferenceFrame(flux, variance, mask)


def object_slit_position(offsets, *, origin=0.0, direction=1.0):
    """Slit position (arcsec) of the object in frames taken at the given nod offsets.

    Parameters
    ----------
    offsets : float or array_like
        Cumulative offsets along the slit (arcsec).
    origin : float
        Slit position of the object at zero offset.
    direction : float
        +1 when a positive offset moves the object towards positive slit positions, -1 otherwise.

    Returns
    -------
    float or numpy.ndarray
    """
    return origin + direction * np.asarray(offsets, dtype=float)


def nod_differences(pairing, fluxes, variances, masks=None, *, origin=0.0, direction=1.0, both=True):
    """The difference frames of every A-B pair.

    Parameters
    ----------
    pairing : NodPairing
        From :func:`pair_nod_frames`.
    fluxes, variances : sequence of numpy.ndarray
        All the frames (counts) and their variances, indexed as in ``pairing``;
        the frames of one nodding OB share one exposure time.
    masks : sequence of numpy.ndarray of bool, optional
        Their bad pixels.
    origin, direction : float
        Where the object sits for a given offset (see :func:`object_slit_position`).
    both : bool
        Return ``B - A`` after each ``A - B`` (the object of the B frame as the positive image).

    Returns
    -------
    list of NodDifference
    """
    masks = [None] * len(fluxes) if masks is None else masks
    slits = object_slit_position(pairing.offsets, origin=origin, direction=direction)
    out = []
    for a, b in pairing.pairs:
        diff = linear_combination([fluxes[a], fluxes[b]], [variances[a], variances[b]], [1.0, -1.0],
                                  [masks[a], masks[b]])
        out.append(NodDifference(diff.flux, diff.variance, diff.mask, int(a), int(b), float(slits[a]),
                                 float(slits[b])))
        if both:
            # the variance and mask are those of A - B: shared, not copied
            out.append(NodDifference(-diff.flux, diff.variance, diff.mask, int(b), int(a), float(slits[b]),
                                     float(slits[a])))
    return out


def object_images_mask(slit, positions, half_width):
    """Pixels within ``half_width`` (arcsec) of any of the object images along the slit.

    Parameters
    ----------
    slit : numpy.ndarray
        Slit position of every pixel (arcsec).
    positions : sequence
        Slit position of each object image: a float, or an array of the shape of ``slit``
        (e.g. a trace evaluated at every pixel's wavelength).
    half_width : float
        Half width of the masked band (arcsec).

    Returns
    -------
    numpy.ndarray of bool
    """
    mask = np.zeros(np.shape(slit), bool)
    for p in positions:
        mask |= np.abs(slit - p) < half_width
    return mask


def residual_sky(difference, wavelength, slit, order_map, *, half_width, positions=None, bad=None,
                 illumination_degree=0, **options):
    """Model the sky left in a nodding difference frame, both object images masked.

    The sky of an A - B frame is ``I(s) (S_A(lambda) - S_B(lambda))``: the
    form the Kelson model of :func:`soxspipe.commonutils.sky.sky_model` fits.
    Where the two skies are nearly equal the slit illumination ``I(s)`` is not
    constrained, hence the default ``illumination_degree=0``.

    Parameters
    ----------
    difference : NodDifference
        The difference frame.
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec).
    order_map : numpy.ndarray of int
        Order number of every pixel (0 or negative: none).
    half_width : float
        Half width (arcsec) masked around each object image.
    positions : sequence, optional
        Slit positions of the object images (floats or per-pixel arrays);
        default the positive and negative positions of ``difference``.
    bad : numpy.ndarray of bool, optional
        More pixels to leave out of the fit (the difference's own mask always is).
    illumination_degree : int
        Degree of the slit illumination polynomial.
    **options
        Passed to :func:`~soxspipe.commonutils.sky.sky_model` (``knot_spacing``, ``sigma``, ...).

    Returns
    -------
    soxspipe.commonutils.sky.SkyModel
        Subtract ``.sky`` from the difference frame and add ``.variance`` to its variance.
    """
    if positions is None:
        positions = (difference.positive_slit, difference.negative_slit)
    objects = object_images_mask(slit, positions, half_width)
    excluded = difference.mask if bad is None else difference.mask | bad
    return sky_model(difference.flux, difference.variance, wavelength, slit, order_map, object_mask=objects,
                     bad=excluded, illumination_degree=illumination_degree, **options)


def clipped_weighted_mean(values, variances, *, weights=None, valid=None, sigma=5.0, max_iterations=3):
    """Weighted mean along axis 0 after a robust rejection of outlying values.

    A value is rejected when it departs from the median of the values kept by
    more than ``sigma`` times its own standard deviation; repeated until
    nothing changes. With fewer than 3 values nothing is rejected (the outlier
    cannot be told from the good value).

    Parameters
    ----------
    values, variances : numpy.ndarray
        ``(n, ...)``: the values to combine and their variances.
    weights : numpy.ndarray, optional
        ``(n, ...)`` (or broadcastable) weights; default ``1 / variances``.
    valid : numpy.ndarray of bool, optional
        ``(n, ...)`` values that may be used (non-finite values and variances <= 0 never are).
    sigma : float or None
        Rejection threshold; None for no rejection.
    max_iterations : int
        Maximum number of rejection passes.

    Returns
    -------
    mean, variance : numpy.ndarray
        ``(...)``: the weighted mean of the values kept and its variance; NaN where none is kept.
    kept : numpy.ndarray of bool
        ``(n, ...)`` the values used.
    """
    values = np.asarray(values)
    variances = np.asarray(variances)
    usable = np.isfinite(values) & np.isfinite(variances) & (variances > 0)
    if weights is not None:
        weights = np.broadcast_to(np.asarray(weights, dtype=float), values.shape)
        usable &= np.isfinite(weights) & (weights > 0)
    if valid is not None:
        usable &= valid
    kept = usable
    if sigma is not None:
        error = np.sqrt(np.where(usable, variances, np.inf))
        enough = usable.sum(axis=0) >= 3
        for _ in range(max_iterations):
            centre = bn.nanmedian(np.where(kept, values, np.nan), axis=0)
            with np.errstate(invalid="ignore"):
                deviant = np.abs(values - centre) > sigma * error
            new = usable & ~(deviant & enough)
            if np.array_equal(new, kept):
                break
            kept = new
    if weights is None:
        weight = np.where(kept, 1.0 / np.where(kept, variances, 1.0), 0.0)
    else:
        weight = np.where(kept, weights, 0.0)
    total = weight.sum(axis=0)
    with np.errstate(invalid="ignore", divide="ignore"):
        mean = (weight * np.where(kept, values, 0.0)).sum(axis=0) / total
        variance = (weight ** 2 * np.where(kept, variances, 0.0)).sum(axis=0) / total ** 2
    empty = total == 0
    return np.where(empty, np.nan, mean), np.where(empty, np.nan, variance), kept


@dataclass
class CombinedSpectrum(Spectrum1D):
    """Result of :func:`combine_spectra`: a :class:`~soxspipe.commonutils.extraction.Spectrum1D` and its make-up.

    ``n_pixels`` and ``n_rejected`` are summed over the spectra kept in each bin.

    Attributes
    ----------
    n_combined : numpy.ndarray
        Spectra kept per bin.
    outliers : numpy.ndarray of bool
        ``(n_spectra, n_bins)``: values rejected as outliers.
    """

    n_combined: np.ndarray = None
    outliers: np.ndarray = None


def combine_spectra(spectra, *, sigma=5.0, max_iterations=3):
    """Combine spectra extracted on identical wavelength bins (e.g. from every nodding difference frame).

    Parameters
    ----------
    spectra : sequence of Spectrum1D
        The spectra, all on the same bin edges.
    sigma : float or None
        Rejection threshold (see :func:`clipped_weighted_mean`); None for no rejection.
    max_iterations : int
        Maximum number of rejection passes.

    Returns
    -------
    CombinedSpectrum
        Inverse-variance weighted mean; the sky with the same weights.

    Raises
    ------
    ValueError
        When there is no spectrum, or their wavelength bins differ.
    """
    if len(spectra) == 0:
        raise ValueError("no spectrum to combine")
    edges = np.asarray(spectra[0].edges, dtype=float)
    for s in spectra[1:]:
        if np.shape(s.edges) != edges.shape or not np.allclose(s.edges, edges, rtol=0, atol=1e-9 * np.ptp(edges)):
            raise ValueError("the spectra to combine are not on the same wavelength bins")
    flux = np.array([s.flux for s in spectra], dtype=float)
    variance = np.array([s.error for s in spectra], dtype=float) ** 2
    mean, mean_variance, kept = clipped_weighted_mean(flux, variance, sigma=sigma, max_iterations=max_iterations)
    weight = np.where(kept, 1.0 / np.where(kept, variance, 1.0), 0.0)
    sky = np.array([s.sky for s in spectra], dtype=float)
    with np.errstate(invalid="ignore", divide="ignore"):
        sky_mean = (weight * np.where(kept, sky, 0.0)).sum(axis=0) / weight.sum(axis=0)

    def summed(attribute):
        parts = [getattr(s, attribute) for s in spectra]
        if any(p is None for p in parts):
            return None
        return (kept * np.array(parts)).sum(axis=0).astype(int)

    usable = np.isfinite(flux) & np.isfinite(variance) & (variance > 0)
    outliers = usable & ~kept
    if outliers.any():
        log.info("combined %d spectra: %d values rejected as outliers", len(spectra), int(outliers.sum()))
    return CombinedSpectrum(edges, mean, np.sqrt(mean_variance), sky_mean, summed("n_pixels"), summed("n_rejected"),
                            n_combined=kept.sum(axis=0), outliers=outliers)


def shift_rows(image, shift, *, power=1):
    """Shift an image along axis 0 by ``shift`` bins, sharing each bin between the two it overlaps.

    Row ``j`` of the result is ``(1 - t) image[j - k] + t image[j - k - 1]``
    with ``shift = k + t``: the exact overlap of the shifted bins with the
    grid, which conserves the sum of a piecewise-constant density. A row that
    takes any part of its value from beyond the image is NaN.

    Parameters
    ----------
    image : numpy.ndarray
        ``(n, ...)``.
    shift : float
        Shift in bins (positive: towards higher indices).
    power : int
        The overlaps are raised to this power: 2 shifts a variance.

    Returns
    -------
    numpy.ndarray
        float64.
    """
    image = np.asarray(image, dtype=float)
    k = int(np.floor(shift))
    t = float(shift - k)
    n = image.shape[0]

    def moved(m):
        out = np.full(image.shape, np.nan)
        lo, hi = max(m, 0), min(n, n + m)
        if hi > lo:
            out[lo:hi] = image[lo - m:hi - m]
        return out

    if t == 0:
        return moved(k)
    return (1 - t) ** power * moved(k) + t ** power * moved(k + 1)


@dataclass
class CombinedRectified(RectifiedOrder):
    """Result of :func:`combine_rectified`: a :class:`~soxspipe.commonutils.resample.RectifiedOrder`.

    ``flux`` holds the counts of a fully covered cell (``coverage`` is 1 where
    any frame contributed, 0 elsewhere), so that ``density`` is the combined
    surface density.

    Attributes
    ----------
    n_combined : numpy.ndarray
        Frames combined in each cell (int16).
    reference : float
        Slit position (arcsec) of the object in the combined image.
    """

    n_combined: np.ndarray = None
    reference: float = np.nan


def combine_rectified(orders, positions, *, reference=None, min_coverage=0.5, sigma=None, max_iterations=3):
    """Shift rectified images along the slit so that their objects coincide, and combine them.

    Parameters
    ----------
    orders : sequence of RectifiedOrder
        The (slit, wavelength) images of one order (e.g. of every nodding difference frame),
        all on the same grid, its slit bins uniform.
    positions : sequence of float
        Slit position (arcsec) of the object in each (e.g. :attr:`NodDifference.positive_slit`).
    reference : float, optional
        Where the object is put (default: ``positions[0]``).
    min_coverage : float
        Cells covered less than this (order edges, pixels left out) are not used.
    sigma : float, optional
        Reject outlying values across the frames (see :func:`clipped_weighted_mean`); default none.
    max_iterations : int
        Maximum number of rejection passes.

    Returns
    -------
    CombinedRectified
        The weighted mean of the shifted images, each weighted by the inverse of its variance (see Notes).

    Notes
    -----
    Each image is first brought to the counts of a fully covered cell
    (``flux / coverage``), so that cells covered in part (a cell catches whole
    sub-pixels) weigh as they should. A shifted value is the overlap-weighted
    sum of two cells, its variance the sum of their variances times the
    overlaps squared (the covariance between neighbouring cells is not kept).
    The weight of an image in a wavelength column is the inverse of its median
    variance along the slit there: its noise level (sky, read noise), not the
    variance of each cell, which includes the object's own photon noise and would
    weigh every image down where its object is brighter, biasing the flux low.
    """
    if len(orders) == 0 or len(orders) != len(positions):
        raise ValueError(f"{len(orders)} rectified images and {len(positions)} positions")
    first = orders[0]
    wave_edges = np.asarray(first.wave_edges, dtype=float)
    slit_edges = np.asarray(first.slit_edges, dtype=float)
    steps = np.diff(slit_edges)
    if not np.allclose(steps, steps[0], rtol=1e-6, atol=0):
        raise ValueError("combine_rectified needs uniform slit bins")
    for o in orders[1:]:
        if not (np.array_equal(o.wave_edges, first.wave_edges) and np.array_equal(o.slit_edges, first.slit_edges)):
            raise ValueError("the rectified images to combine are not on the same (wavelength, slit) grid")
    reference = float(positions[0]) if reference is None else float(reference)
    values, variances, noise = [], [], []
    for o, p in zip(orders, positions):
        coverage = np.asarray(o.coverage, dtype=float)
        ok = (coverage >= min_coverage) & np.isfinite(o.flux) & np.isfinite(o.variance)
        with np.errstate(invalid="ignore", divide="ignore"):
            full = np.where(ok, o.flux / coverage, np.nan)
            full_var = np.where(ok, o.variance / coverage ** 2, np.nan)
        shift = (reference - float(p)) / steps[0]
        values.append(shift_rows(full, shift))
        variances.append(shift_rows(full_var, shift, power=2))
        noise.append(bn.nanmedian(full_var, axis=0))
    with np.errstate(divide="ignore"):
        weights = 1.0 / np.array(noise)[:, None, :]
    mean, variance, kept = clipped_weighted_mean(np.array(values), np.array(variances), weights=weights,
                                                 sigma=sigma, max_iterations=max_iterations)
    n = kept.sum(axis=0)
    covered = n > 0
    log.debug("combined %d rectified images onto slit position %.3f", len(orders), reference)
    return CombinedRectified(wave_edges, slit_edges, np.where(covered, mean, 0.0).astype(np.float32),
                             np.where(covered, variance, 0.0).astype(np.float32), covered.astype(np.float32),
                             n.astype(np.int16), reference)
