"""Offset mode: object frames minus the sky frames nearest in time.

An offset OB alternates exposures on the target with exposures on blank sky;
``ESO SEQ FIXOFF RA/DEC`` give each exposure's offset from the target, (0, 0)
on target, anything else sky.

- :func:`split_offset_frames`: object and sky frames by their offsets (or by
  the absence of an object).
- :func:`choose_sky_frames`: for each object frame the sky frame nearest in
  time, or the two that bracket it interpolated linearly to its mid-exposure
  time; each scaled by the ratio of exposure times.
- :func:`subtract_sky_frames`: object minus that sky, variances propagated and
  bad pixels OR-ed (a :class:`~soxspipe.commonutils.nodding.DifferenceFrame`).

The sky left (the sky changes between exposures) is removed afterwards as in
stare mode (:func:`soxspipe.commonutils.sky.sky_model`). No I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .keywords import keyword
from .nodding import frame_names, linear_combination

log = logging.getLogger(__name__)

_SECONDS_PER_DAY = 86400.0


def is_sky_frame(fixoff_ra, fixoff_dec, *, min_offset=0.5, has_object=None):
    """Sky (True) or object (False) for each frame of an offset OB.

    Parameters
    ----------
    fixoff_ra, fixoff_dec : array_like
        ``ESO SEQ FIXOFF RA/DEC`` of every frame (arcsec).
    min_offset : float
        A frame offset by more than this (arcsec, total) from the target is sky.
    has_object : array_like of bool, optional
        False for frames known to hold no object (they are sky whatever their offsets).

    Returns
    -------
    numpy.ndarray of bool
    """
    offset = np.hypot(np.asarray(fixoff_ra, dtype=float), np.asarray(fixoff_dec, dtype=float))
    with np.errstate(invalid="ignore"):
        sky = offset > min_offset
    if has_object is not None:
        sky |= ~np.asarray(has_object, dtype=bool)
    return sky


def split_offset_frames(fixoff_ra, fixoff_dec, *, min_offset=0.5, has_object=None, labels=None):
    """Indices of the object frames and of the sky frames of an offset OB.

    Parameters
    ----------
    fixoff_ra, fixoff_dec, min_offset, has_object
        As for :func:`is_sky_frame`.
    labels : sequence of str, optional
        Names of the frames for the error messages.

    Returns
    -------
    objects, skies : numpy.ndarray of int

    Raises
    ------
    DataError
        When an offset is not finite, or there is no object frame or no sky frame.
    """
    ra, dec = np.asarray(fixoff_ra, dtype=float), np.asarray(fixoff_dec, dtype=float)
    names = frame_names(labels, ra.size)
    unknown = ~(np.isfinite(ra) & np.isfinite(dec))
    if has_object is not None:
        unknown &= np.asarray(has_object, dtype=bool)
    if np.any(unknown):
        raise DataError(f"{', '.join(names[i] for i in np.flatnonzero(unknown))}: no valid "
                        f"'{keyword('fixoff_ra')}'/'{keyword('fixoff_dec')}', so the frame is neither object "
                        "nor sky; remove it from the set of files")
    sky = is_sky_frame(ra, dec, min_offset=min_offset, has_object=has_object)
    objects, skies = np.flatnonzero(~sky), np.flatnonzero(sky)
    if skies.size == 0:
        raise DataError(f"the offset OB has no sky frame: all {ra.size} frames are within {min_offset} arcsec of "
                        f"the target ('{keyword('fixoff_ra')}'/'{keyword('fixoff_dec')}'); add its sky frames "
                        "to the set of files or reduce it in stare mode")
    if objects.size == 0:
        raise DataError(f"the offset OB has no object frame: all {ra.size} frames are offset from the target; "
                        "add its object frames to the set of files")
    log.info("offset: %d object and %d sky frames", objects.size, skies.size)
    return objects, skies


@dataclass(frozen=True)
class SkyChoice:
    """The sky of one object frame: ``sum(coefficients[i] * sky_frame[sky[i]])``.

    Attributes
    ----------
    sky : tuple of int
        The sky frames used (indices into the sky frames given).
    weights : tuple of float
        Their interpolation weights in time (sum 1).
    coefficients : tuple of float
        The weights times the object's exposure time over the sky frame's.
    """

    sky: tuple
    weights: tuple
    coefficients: tuple


def choose_sky_frames(object_start, object_exptime, sky_start, sky_exptime, *, n_sky=1):
    """Choose the sky frame(s) of every object frame, by time.

    Times compared are the mid-exposure times.

    Parameters
    ----------
    object_start, sky_start : array_like
        Exposure start (MJD) of the object frames and of the sky frames.
    object_exptime, sky_exptime : array_like
        Their exposure times (s).
    n_sky : {1, 2}
        1: the sky frame nearest in time (ties: the earlier). 2: the nearest sky
        frame before and the nearest after, interpolated linearly to the object's
        time; an object frame with sky on one side only gets the nearest one.

    Returns
    -------
    list of SkyChoice
        One per object frame.

    Raises
    ------
    DataError
        When there is no sky frame.
    """
    if n_sky not in (1, 2):
        raise ValueError(f"n_sky must be 1 or 2, not {n_sky}")
    object_exptime = np.broadcast_to(np.asarray(object_exptime, dtype=float), np.shape(object_start))
    sky_exptime = np.broadcast_to(np.asarray(sky_exptime, dtype=float), np.shape(sky_start))
    if np.size(sky_start) == 0:
        raise DataError("the offset OB has no sky frame to subtract; add its sky frames to the set of files")
    t_object = np.asarray(object_start, dtype=float) + 0.5 * object_exptime / _SECONDS_PER_DAY
    t_sky = np.asarray(sky_start, dtype=float) + 0.5 * sky_exptime / _SECONDS_PER_DAY
    dt = t_sky[None, :] - t_object[:, None]
    nearest = np.argmin(np.abs(dt) + 1e-12 * np.sign(dt), axis=1)  # a tie goes to the earlier frame
    before = np.where(dt <= 0, -dt, np.inf)
    after = np.where(dt > 0, dt, np.inf)
    i_before, i_after = np.argmin(before, axis=1), np.argmin(after, axis=1)
    bracketed = np.isfinite(before.min(axis=1)) & np.isfinite(after.min(axis=1))
    choices = []
    for k in range(t_object.size):
        if n_sky == 2 and bracketed[k]:
            sky = (int(i_before[k]), int(i_after[k]))
            span = t_sky[sky[1]] - t_sky[sky[0]]
            w_after = (t_object[k] - t_sky[sky[0]]) / span
            weights = (1.0 - w_after, w_after)
        else:
            if n_sky == 2:
                log.info("offset: object frame %d has sky on one side only; the nearest sky frame is used", k)
            sky, weights = (int(nearest[k]),), (1.0,)
        coefficients = tuple(float(w * object_exptime[k] / sky_exptime[s]) for s, w in zip(sky, weights))
        choices.append(SkyChoice(sky, tuple(float(w) for w in weights), coefficients))
    return choices


def subtract_sky_frames(flux, variance, sky_fluxes, sky_variances, choice, *, mask=None, sky_masks=None):
    """An object frame minus its sky from the sky frames (see :func:`choose_sky_frames`).

    Parameters
    ----------
    flux, variance : numpy.ndarray
        The object frame (counts) and its variance.
    sky_fluxes, sky_variances : sequence of numpy.ndarray
        All the sky frames and their variances, indexed as in ``choice``.
    choice : SkyChoice
        The sky frames to use and their coefficients.
    mask : numpy.ndarray of bool, optional
        Bad pixels of the object frame.
    sky_masks : sequence of numpy.ndarray of bool, optional
        Bad pixels of the sky frames.

    Returns
    -------
    soxspipe.commonutils.nodding.DifferenceFrame
        ``object - sum(c_i sky_i)``, variance ``variance + sum(c_i^2 sky_variance_i)``,
        bad where any frame used is bad.
    """
    sky_masks = [None] * len(sky_fluxes) if sky_masks is None else sky_masks
    return linear_combination([flux] + [sky_fluxes[i] for i in choice.sky],
                              [variance] + [sky_variances[i] for i in choice.sky],
                              [1.0] + [-c for c in choice.coefficients],
                              [mask] + [sky_masks[i] for i in choice.sky])
