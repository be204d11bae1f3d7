"""Sigma-clipped stacking of frames along the frame axis.

Every recipe that combines frames (master bias, dark, flat, arc lamp-on/off
sets) calls :func:`sigma_clipped_stack`. Pixels are independent, so the stack
is processed in blocks of rows: memory stays at a few blocks on top of the
inputs and outputs, and after the first clipping pass only the pixels whose
set of survivors changed are revisited.
"""

import logging
from dataclasses import dataclass
from functools import lru_cache

import bottleneck as bn
import numpy as np

log = logging.getLogger(__name__)

MAD_TO_SIGMA = 1.4826
"""Ratio of the standard deviation to the median absolute deviation of a Gaussian."""

_BLOCK_VALUES = 1 << 20
"""Number of values (all frames) handled per block: a few MB, cache-sized."""


@dataclass(frozen=True)
class StackResult:
    """Result of :func:`sigma_clipped_stack`.

    Attributes
    ----------
    data : numpy.ndarray
        Mean of the surviving values per pixel (float32, ``(ny, nx)``);
        ``fill_value`` where no value survived.
    uncertainty : numpy.ndarray
        1-sigma uncertainty of ``data`` (float32); ``fill_value`` where no
        value survived.
    mask : numpy.ndarray
        True where no value survived (masked or clipped in every frame).
    n_used : numpy.ndarray
        Number of surviving values per pixel (int16).
    n_clipped : int
        Total number of values rejected by the clipping (masked and
        non-finite values are not counted).
    """

    data: np.ndarray
    uncertainty: np.ndarray
    mask: np.ndarray
    n_used: np.ndarray
    n_clipped: int


def sigma_clipped_stack(
    data,
    *,
    errors=None,
    masks=None,
    lower_sigma=5.0,
    upper_sigma=5.0,
    max_iterations=3,
    fill_value=np.nan,
):
    """Combine frames pixel by pixel: sigma-clip along the frame axis, then average.

    For each pixel the centre is the median and the width ``1.4826 x MAD`` of
    the values not yet excluded; values below ``centre - lower_sigma x width``
    or above ``centre + upper_sigma x width`` are clipped, and this repeats
    until nothing changes or ``max_iterations`` passes were made.

    With few frames the per-pixel MAD is a poor, low-biased width (with 5
    frames a 5-sigma clip would reject about 3 % of Gaussian values, and ties
    in quantised data make it zero), so the width is never taken below a
    floor. With ``errors`` the floor is the larger of the value's own error
    and the median error of the pixel's values, which also judges frames of
    unequal noise fairly; without, it is the noise of one value pooled over
    the pixels of the current block of rows (see ``_pooled_noise``). Passing
    ``errors`` is preferable where the noise varies strongly across the frame
    (e.g. flats).

    The combined value is the mean of the survivors, so that a master made of
    N frames has noise ``sigma / sqrt(N)`` (a median would give about 1.25x
    that).

    Parameters
    ----------
    data : array_like
        ``(n_frames, ny, nx)`` array, or a sequence of ``n_frames`` 2D arrays
        of the same shape. Converted to float32 block by block; the input is
        never modified or copied as a whole.
    errors : array_like, optional
        Per-frame 1-sigma uncertainties, same shape as ``data``.
    masks : array_like of bool, optional
        Per-frame bad-pixel masks (True = bad), same shape as ``data``.
        Non-finite values in ``data`` or ``errors`` are masked as well.
    lower_sigma, upper_sigma : float
        Clipping thresholds below and above the centre, in units of the width.
    max_iterations : int
        Maximum number of clipping passes; 0 disables clipping.
    fill_value : float
        Value of ``data`` and ``uncertainty`` where no value survived.

    Returns
    -------
    StackResult
        The combined frame, its uncertainty, the mask of pixels without any
        survivor, the number of survivors per pixel and the number of clipped
        values.

    Notes
    -----
    Uncertainty: with ``errors``, ``sqrt(sum of survivors' sigma^2) / n_used``.
    Without, the survivors' standard deviation (ddof=1) divided by
    ``sqrt(n_used)``; where a single value survived, the frame-wide median of
    that standard deviation stands in for it. If no pixel has two survivors
    (e.g. one frame) the uncertainty is ``fill_value``.
    """
    frames = _as_frames(data, "data")
    n_frames = len(frames)
    shape = frames[0].shape
    err_frames = _as_frames(errors, "errors", n_frames, shape) if errors is not None else None
    mask_frames = _as_frames(masks, "masks", n_frames, shape) if masks is not None else None
    if lower_sigma <= 0 or upper_sigma <= 0:
        raise ValueError(f"clipping thresholds must be positive, got {lower_sigma}, {upper_sigma}")
    if max_iterations < 0:
        raise ValueError(f"max_iterations must be >= 0, got {max_iterations}")

    ny, nx = shape
    # flat outputs: a block of rows is a contiguous slice of pixels
    combined = np.empty(ny * nx, np.float32)
    uncertainty = np.empty(ny * nx, np.float32)
    n_used = np.empty(ny * nx, np.int16)
    n_clipped = 0

    rows = max(1, _BLOCK_VALUES // max(1, n_frames * nx))
    for y0 in range(0, ny, rows):
        rs = slice(y0, min(ny, y0 + rows))
        ps = slice(rs.start * nx, rs.stop * nx)
        work = _stack_rows(frames, rs, np.float32)
        excluded = ~np.isfinite(work)
        if mask_frames is not None:
            excluded |= _stack_rows(mask_frames, rs, bool)
        err = None
        if err_frames is not None:
            err = _stack_rows(err_frames, rs, np.float32)
            excluded |= ~np.isfinite(err)
            err[excluded] = np.nan
        work[excluded] = np.nan

        if err is not None:
            floor = np.fmax(err, nanmedian_frames(err))
        else:
            floor = _pooled_noise(work)
        n_clipped += _clip_in_place(work, floor, lower_sigma, upper_sigma, max_iterations)

        survived = ~np.isnan(work)
        n_used[ps] = survived.sum(axis=0)
        combined[ps] = bn.nanmean(work, axis=0)
        if err is not None:
            err[~survived] = 0.0
            err *= err
            uncertainty[ps] = np.sqrt(err.sum(axis=0))
        else:
            # standard deviation for now; divided by sqrt(n_used) below
            uncertainty[ps] = bn.nanstd(work, axis=0, ddof=1)

    combined, uncertainty, n_used = (a.reshape(shape) for a in (combined, uncertainty, n_used))
    empty = n_used == 0
    with np.errstate(divide="ignore", invalid="ignore"):
        if err_frames is not None:
            uncertainty /= n_used
        else:
            single = n_used == 1
            if single.any():
                typical = bn.nanmedian(uncertainty[n_used >= 2])
                if np.isnan(typical):
                    log.warning("no pixel has two unclipped values: the stack's uncertainty is unknown")
                uncertainty[single] = typical
            uncertainty /= np.sqrt(n_used, dtype=np.float32)
    combined[empty] = fill_value
    uncertainty[empty] = fill_value

    log.debug(
        "stacked %d frames of %d x %d: %d values clipped, %d pixels without survivors",
        n_frames, ny, nx, n_clipped, int(empty.sum()),
    )
    return StackResult(data=combined, uncertainty=uncertainty, mask=empty, n_used=n_used, n_clipped=n_clipped)


def _as_frames(frames, name, n_frames=None, shape=None):
    """Return ``frames`` as an array or list of 2D arrays, without copying, after checking shapes."""
    if isinstance(frames, np.ndarray):
        if frames.ndim != 3:
            raise ValueError(f"{name} must be (n_frames, ny, nx), got shape {frames.shape}")
    else:
        frames = [np.asarray(f) for f in frames]
        if not frames or any(f.ndim != 2 or f.shape != frames[0].shape for f in frames):
            raise ValueError(f"{name} must be a non-empty sequence of 2D arrays of the same shape")
    if len(frames) == 0:
        raise ValueError(f"{name} holds no frame")
    if n_frames is not None and (len(frames) != n_frames or frames[0].shape != shape):
        raise ValueError(
            f"{name} must match data: {n_frames} frames of {shape}, "
            f"got {len(frames)} frames of {frames[0].shape}"
        )
    return frames


def _stack_rows(frames, rows, dtype):
    """Return the rows ``rows`` of every frame as a new ``(n_frames, n_rows * nx)`` array of ``dtype``."""
    block = np.stack([f[rows] for f in frames], dtype=dtype, casting="unsafe")
    return block.reshape(len(frames), -1)


def _pooled_noise(work, max_pixels=1 << 14):
    """Return a robust noise of one value in ``work`` (n_frames, n_pixels), pooled over pixels.

    Differences between consecutive frames at a pixel are Gaussian with
    ``sqrt(2)`` times the per-value sigma whatever the number of frames, so
    their pooled ``1.4826 x MAD / sqrt(2)`` is a consistent estimate of it
    (unlike the median of the per-pixel MADs, biased low for a few frames),
    and an outlier spoils at most two differences of its pixel. A regular
    subsample of ``max_pixels`` pixels is plenty. NaN if ``work`` has one frame.
    """
    sample = work[:, :: max(1, work.shape[1] // max_pixels)]
    return MAD_TO_SIGMA / np.sqrt(2.0) * bn.nanmedian(np.abs(np.diff(sample, axis=0)))


#: largest number of frames whose median uses a sorting network rather than bottleneck
_NETWORK_MAX_FRAMES = 16


@lru_cache(maxsize=None)
def _sorting_network(n):
    """Compare-exchange pairs ``(i, j)``, ``i < j``, that sort ``n`` values (Batcher's odd-even merge sort).

    Built for the next power of two; comparators that touch the missing (virtually
    +inf) values are dropped, as they would never move anything.
    """
    size = 1
    while size < n:
        size *= 2
    pairs = []
    p = 1
    while p < size:
        k = p
        while k >= 1:
            for j in range(k % p, size - k, 2 * k):
                for i in range(min(k, size - j - k)):
                    if (i + j) // (2 * p) == (i + j + k) // (2 * p):
                        pairs.append((i + j, i + j + k))
            k //= 2
        p *= 2
    return tuple((i, j) for i, j in pairs if j < n)


def nanmedian_frames(values):
    """Median along axis 0 of ``values`` (n_frames, n_pixels) ignoring NaN: ``bottleneck.nanmedian(values, axis=0)``.

    With a few frames, sorting every pixel's values with a vectorised sorting network
    (whole rows of min/max) is several times faster than bottleneck's per-pixel
    selection; pixels holding a NaN are then recomputed by bottleneck. The result is
    the same to the bit: the middle value, or the float32 mean of the two middle ones.
    """
    n = values.shape[0]
    if n > _NETWORK_MAX_FRAMES or values.dtype != np.float32:
        return bn.nanmedian(values, axis=0)
    rows = values.copy()
    for i, j in _sorting_network(n):
        low = np.minimum(rows[i], rows[j])
        np.maximum(rows[i], rows[j], out=rows[j])
        rows[i] = low
    half = n // 2
    if n % 2:
        median = rows[half]
    else:
        median = rows[half - 1]
        median += rows[half]
        median *= np.float32(0.5)
    # a NaN anywhere in a pixel's values makes their sum NaN (the values are finite or NaN)
    with_nan = np.flatnonzero(np.isnan(values.sum(axis=0)))
    if with_nan.size:
        median[with_nan] = bn.nanmedian(values[:, with_nan], axis=0)
    return median


def _clip_in_place(work, floor, lower, upper, max_iterations):
    """Sigma-clip ``work`` (n_frames, n_pixels) along axis 0 by setting clipped values to NaN.

    ``floor`` is the lowest width allowed: a number, or an array like ``work``.

    Returns the number of clipped values. After the first pass only the
    pixels whose survivors changed are recomputed: for the others the centre
    and width, hence the outcome, would be the same.
    """
    n_clipped = 0
    active = None  # None: every pixel; otherwise indices of the pixels to revisit
    for _ in range(max_iterations):
        sub = work if active is None else work[:, active]
        centre = nanmedian_frames(sub)
        dev = sub - centre
        width = nanmedian_frames(np.abs(dev))
        width *= MAD_TO_SIGMA
        # the floor is one number, or one per value (n_frames, n_pixels)
        width = np.fmax(width, floor if active is None or np.ndim(floor) == 0 else floor[:, active])
        clip = dev < -lower * width
        clip |= dev > upper * width
        changed = clip.any(axis=0)
        n_new = int(np.count_nonzero(clip))
        if n_new == 0:
            break
        n_clipped += n_new
        sub[clip] = np.nan
        if active is None:
            active = np.flatnonzero(changed)
        else:
            work[:, active] = sub
            active = active[changed]
    return n_clipped
