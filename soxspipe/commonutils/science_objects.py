"""Where the object is along the slit: found in all orders together, then in each, then traced.

A science frame's object may be too faint to see in one order but plain when
the orders are collapsed together along the slit, so :func:`locate_object`
first looks at all the orders at once (:func:`~.extraction.find_object` on
their union: a median profile along the slit) and then at each order on its
own. An order keeps its own position only where its detection is significant
and agrees with the joint one; otherwise it takes the joint one. An object that
is not found anywhere is placed where it is expected (or at the slit centre)
and flagged, so that a faint target is still extracted where it should be. A
detected object's FWHM along the slit is that of a Gaussian fitted to its
profile with every cut across the orders normalised (:func:`gaussian_fwhm`):
the slit losses of a flux standard are computed from it.

:func:`object_trace` follows a detected object across wavelength with
:func:`~.extraction.trace_object`, or holds it at one slit position when it is
too faint to trace. No I/O.
"""

import logging
from dataclasses import dataclass, field

import numpy as np

from .extraction import find_object, trace_object
from .polynomials import FitError, Polynomial, robust_sigma
from .resample import pixel_step

log = logging.getLogger(__name__)

_FWHM_PER_SIGMA = 2.0 * np.sqrt(2.0 * np.log(2.0))


@dataclass
class Detection:
    """The object in one profile along the slit.

    Attributes
    ----------
    slit : float
        Slit position (arcsec).
    fwhm : float
        FWHM along the slit (arcsec).
    significance : float
        Peak of the profile over the robust noise of the profile away from it.
    found : bool
        Whether the detection is significant (else ``slit``/``fwhm`` are the fallback values).
    """

    slit: float
    fwhm: float
    significance: float
    found: bool


@dataclass
class ObjectLocation:
    """Result of :func:`locate_object`.

    Attributes
    ----------
    joint : Detection
        The object in all the orders collapsed together.
    orders : dict
        Order -> the :class:`Detection` used for that order (its own, or the joint one with ``found``
        telling whether the object was detected in the order itself).
    """

    joint: Detection
    orders: dict = field(default_factory=dict)

    @property
    def found(self):
        """Whether the object was detected at all."""
        return self.joint.found


def _detect(flux, wavelength, slit, orders, usable, min_significance, max_fwhm, slit_step, window=None):
    """The brightest peak (within ``window``, a slit range) of the median profile of the ``usable`` pixels of
    ``orders`` (an order map, 0 elsewhere) and its significance: over the noise of the profile along the whole
    slit, away from the peak. A significant peak's FWHM is that of :func:`gaussian_fwhm` where it can be fitted."""
    pixels = usable & (orders > 0)
    if pixels.sum() < 10:
        return None
    try:
        position = find_object(flux, wavelength, slit, pixels, slit_step=slit_step, window=window)
    except ValueError:
        return None
    s, profile = position.profile_slit, position.profile
    far = np.abs(s - position.slit) > max(2.0 * position.fwhm, 3.0 * slit_step)
    noise = robust_sigma(profile[far]) if far.sum() >= 5 else np.nan
    significance = position.peak / noise if noise > 0 else 0.0
    fwhm = position.fwhm
    if significance >= min_significance and 0 < fwhm <= max_fwhm:
        fwhm = gaussian_fwhm(flux, slit, orders, usable, position.slit, fwhm) or fwhm
    ok = bool(significance >= min_significance and 0 < fwhm <= max_fwhm)
    return Detection(position.slit, float(fwhm), float(significance), ok)


def gaussian_fwhm(flux, slit, orders, usable, centre, fwhm, *, window_fwhm=2.0, oversample=4, iterations=20):
    """FWHM along the slit of a Gaussian fitted to an object's profile, every cut across the orders normalised.

    The half-maximum width of the median profile (:func:`~.extraction.find_object`) is biased by
    its bins, one slit step wide: the peak bin's median lies below the peak, by how much
    depends on where the peak falls in it. Finer bins of the raw counts would each gather the
    pixels of a few wavelengths only (a pixel's phase along the slit follows its wavelength) and
    trace the object's spectrum as much as its profile. So every cut across an order (a detector
    row or column, whichever the slit map changes most along) is divided by its own counts
    within ``window_fwhm`` FWHM of the object times its slit step: what is left at each pixel is
    the object's normalised profile at the pixel's slit position, whatever the spectrum. It is
    averaged in bins of ``1 / oversample`` slit step (the bin's counts over its cuts'
    normalisations, so that faint cuts weigh little), a Gaussian plus a constant is fitted to it
    by Gauss-Newton steps (linear least squares), and the bins' width is taken out of its
    variance (``w^2 / 12``).

    Parameters
    ----------
    flux, slit : numpy.ndarray
        Sky-free frame (or a block of it) and its slit map (arcsec).
    orders : numpy.ndarray of int
        Order of every pixel considered (0: none).
    usable : numpy.ndarray of bool
        Pixels with valid data; a cut with an unusable pixel within the window is left out.
    centre, fwhm : float
        The object's slit position and a first FWHM (arcsec).
    window_fwhm : float
        Half-width of the window that normalises each cut, in ``fwhm``.
    oversample : int
        Profile bins per slit step.
    iterations : int
        Most Gauss-Newton steps.

    Returns
    -------
    float or None
        The FWHM (arcsec); None when too few cuts are complete or the fit fails or strays beyond a factor
        two of ``fwhm``.
    """
    half = window_fwhm * fwhm
    inside = orders > 0
    # in double precision throughout: a float32 map's pixel selected at the window's edge may fall just
    # outside it when its position is taken again in float64
    slit = np.asarray(slit, dtype=float)
    gy, gx = np.gradient(slit)
    across_rows = np.nanmedian(np.abs(gy[inside])) > np.nanmedian(np.abs(gx[inside]))
    step_map = np.abs(gy if across_rows else gx)
    with np.errstate(invalid="ignore"):
        iy, ix = np.nonzero(inside & (np.abs(slit - centre) <= half))
    if iy.size < 10:
        return None
    # one cut per order and detector column (rows across the slit) or row
    cut = orders[iy, ix].astype(np.int64) * (max(flux.shape) + 1) + (ix if across_rows else iy)
    index = np.unique(cut, return_inverse=True)[1].ravel()
    n_cuts = int(index.max()) + 1
    good = usable[iy, ix] & np.isfinite(flux[iy, ix]) & np.isfinite(step_map[iy, ix])
    counts = np.where(good, flux[iy, ix], 0.0).astype(float)
    n_all = np.bincount(index, minlength=n_cuts)
    n_good = np.bincount(index, weights=good, minlength=n_cuts)
    complete = (n_good == n_all) & (n_all >= 3)
    if complete.sum() < 10:
        return None
    total = np.bincount(index, weights=counts, minlength=n_cuts)
    step = np.bincount(index, weights=np.where(good, step_map[iy, ix], 0.0), minlength=n_cuts) / np.maximum(n_good, 1)
    keep = complete[index]
    s = slit[iy, ix][keep].astype(float)
    width = float(np.median(step[complete])) / oversample
    k = np.floor((s - (centre - half)) / width).astype(int)
    n_bins = int(k.max()) + 1
    number = np.bincount(k, minlength=n_bins)
    norm = np.bincount(k, weights=(total * step)[index][keep], minlength=n_bins)
    used = (number > 0) & (norm > 0)
    if used.sum() < 8:
        return None
    x = np.bincount(k, weights=s, minlength=n_bins)[used] / number[used]
    y = np.bincount(k, weights=counts[keep], minlength=n_bins)[used] / norm[used]
    # a bin's noise: its pixels' (about equal) noise over its normalisation
    weight = norm[used] / np.sqrt(number[used])
    p = np.array([float(np.max(y)), float(centre), fwhm / _FWHM_PER_SIGMA, 0.0])
    for _ in range(int(iterations)):
        e = np.exp(-0.5 * ((x - p[1]) / p[2]) ** 2)
        model = p[0] * e
        jacobian = np.column_stack([e, model * (x - p[1]) / p[2] ** 2, model * (x - p[1]) ** 2 / p[2] ** 3,
                                    np.ones_like(x)])
        delta = np.linalg.lstsq(jacobian * weight[:, None], (y - model - p[3]) * weight, rcond=None)[0]
        p = p + delta
        if not (np.all(np.isfinite(p)) and p[2] > 0):
            return None
        if abs(delta[2]) < 1e-6 * p[2]:
            break
    variance = p[2] ** 2 - width ** 2 / 12.0
    if not (p[0] > 0 and abs(p[1] - centre) < fwhm and variance > 0):
        return None
    result = _FWHM_PER_SIGMA * float(np.sqrt(variance))
    return result if 0.5 * fwhm < result < 2.0 * fwhm else None


def order_box(order_map, order, margin=2):
    """The smallest block of the frame that holds an order, ``margin`` pixels wider: ``(rows, columns)`` slices.

    The extraction and resampling cores take whole frames; handing them this block
    of every array instead spares them the pixels of the other orders.
    """
    rows = np.flatnonzero(np.any(order_map == order, axis=1))
    columns = np.flatnonzero(np.any(order_map == order, axis=0))
    ny, nx = order_map.shape
    return (slice(max(int(rows[0]) - margin, 0), min(int(rows[-1]) + margin + 1, ny)),
            slice(max(int(columns[0]) - margin, 0), min(int(columns[-1]) + margin + 1, nx)))


def locate_object(flux, wavelength, slit, order_map, *, bad=None, expected=None, search_radius=None,
                  min_significance=5.0, fallback_fwhm=1.0, max_fwhm=4.0):
    """Find the object along the slit in all the orders together and in each order.

    Parameters
    ----------
    flux : numpy.ndarray
        2D frame, sky removed (or not: the median of each profile is taken as its background).
    wavelength, slit : numpy.ndarray
        2D maps (nm, arcsec).
    order_map : numpy.ndarray of int
        Order of every pixel (0: none); only these pixels are searched.
    bad : numpy.ndarray of bool, optional
        Pixels left out.
    expected : float, optional
        Slit position (arcsec) where the object should be; the peak is looked for within
        ``search_radius`` of it (its significance judged against the noise of the whole
        slit), and an object not found is placed there.
    search_radius : float, optional
        Half width (arcsec) of the search window around ``expected``.
    min_significance : float
        Detection threshold: profile peak over the profile's robust noise.
    fallback_fwhm : float
        FWHM (arcsec) given to an object that is not found (e.g. the seeing).
    max_fwhm : float
        A wider peak is not an object (arcsec).

    Returns
    -------
    ObjectLocation
    """
    usable = (order_map > 0) & np.isfinite(flux) & np.isfinite(slit) & np.isfinite(wavelength)
    if bad is not None:
        usable &= ~bad
    # the peak is looked for in the window, the noise it is judged against measured along the whole slit
    window = None
    if expected is not None and search_radius is not None:
        window = (float(expected) - search_radius, float(expected) + search_radius)
    centre = 0.0 if expected is None else float(expected)
    fallback = Detection(centre, float(fallback_fwhm), 0.0, False)
    boxes = {int(o): order_box(order_map, o) for o in np.unique(order_map[order_map > 0])}
    # one slit step for all the orders (the joint profile's bins): the median of the orders' own
    step = float(np.median([pixel_step(slit[box], order_map[box] == o) for o, box in boxes.items()]))
    joint = _detect(flux, wavelength, slit, order_map, usable, min_significance, max_fwhm, step, window) or fallback
    if not joint.found:
        joint = Detection(centre, float(fallback_fwhm), joint.significance, False)
    location = ObjectLocation(joint)
    for order, box in boxes.items():
        own = _detect(flux[box], wavelength[box], slit[box], np.where(order_map[box] == order, order, 0),
                      usable[box], min_significance, max_fwhm, step, window)
        agrees = own is not None and own.found and joint.found and abs(own.slit - joint.slit) <= joint.fwhm
        location.orders[int(order)] = own if agrees else Detection(joint.slit, joint.fwhm,
                                                                    own.significance if own else 0.0, False)
    log.info("object %s at slit %+.2f arcsec, FWHM %.2f arcsec (significance %.1f); found in %d of %d orders",
             "found" if joint.found else "NOT found, placed", joint.slit, joint.fwhm, joint.significance,
             sum(d.found for d in location.orders.values()), len(location.orders))
    return location


def constant_trace(position, low, high):
    """A trace that holds the object at one slit position over ``[low, high]`` nm."""
    return Polynomial((0,), (float(low),), (float(high),), np.array([float(position)]))


def object_trace(flux, wavelength, slit, pixels, detection, *, bad=None, degree=2, n_bins=30,
                 min_significance=10.0, max_offset=None):
    """The object's slit position as a function of wavelength in one order.

    Parameters
    ----------
    flux, wavelength, slit : numpy.ndarray
        Sky-free frame and its maps.
    pixels : numpy.ndarray of bool
        The pixels of the order.
    detection : Detection
        The object in this order (:attr:`ObjectLocation.orders`).
    bad : numpy.ndarray of bool, optional
    degree : int
        Degree of the polynomial ``slit(lambda)``.
    n_bins : int
        Wavelength bins, one centroid each.
    min_significance : float
        Below this significance the object is held at ``detection.slit`` (no trace fitted).
    max_offset : float, optional
        A fitted trace straying farther than this (arcsec) from ``detection.slit`` is refused
        (default: the detection's FWHM).

    Returns
    -------
    trace : Polynomial
        Slit position (arcsec) against wavelength (nm).
    traced : bool
        Whether a trace was fitted (False: constant).
    """
    w = wavelength[pixels]
    w = w[np.isfinite(w)]
    low, high = float(w.min()), float(w.max())
    constant = constant_trace(detection.slit, low, high)
    if not detection.found or detection.significance < min_significance:
        return constant, False
    try:
        trace = trace_object(flux, wavelength, slit, pixels, position=detection.slit,
                             half_width=1.5 * detection.fwhm, bad=bad, n_bins=n_bins, degree=degree)
    except FitError:
        return constant, False
    limit = detection.fwhm if max_offset is None else max_offset
    grid = np.linspace(low, high, 64)
    if not np.all(np.abs(trace.polynomial(grid) - detection.slit) <= limit):
        log.warning("a trace straying more than %.2f arcsec from the object's position was refused", limit)
        return constant, False
    return trace.polynomial, True
