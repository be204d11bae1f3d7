"""Prepared frames: the one way every recipe turns a raw frame into electrons.

:func:`prepare_frame` trims a raw frame to its science region (binning aware),
subtracts the overscan level row by row where the detector has one, converts
ADU to electrons with the header's gain (the static value as fallback), attaches
the uncertainty ``sqrt(RON^2 + max(signal, 0))`` and masks saturated, non-finite
and static bad pixels. The result is a ``CCDData`` in electrons.
"""

import logging

import numpy as np
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty

from .classify import frame_arm
from .detectors import detector
from .errors import DataError
from .keywords import header_value, keyword

log = logging.getLogger(__name__)


def gain_and_read_noise(header, det, readout):
    """Return ``(gain in e/ADU, read noise in e)`` from the header, else the detector's static values.

    ``ESO DET OUT1 CONAD`` is the e/ADU factor; ``ESO DET OUT1 GAIN`` is its inverse (ADU/e).
    """
    conad = header_value(header, "conad", None)
    if conad is None:
        adu_per_e = header_value(header, "gain_adu_per_e", None)
        conad = 1.0 / float(adu_per_e) if adu_per_e else None
    gain = float(conad) if conad else det.gain(readout)
    ron = header_value(header, "ron", None)
    ron = float(ron) if ron else det.read_noise(readout)
    return gain, ron


def overscan_level(raw, columns, smooth_rows=1):
    """Per-row robust overscan level of ``raw`` from the ``(x0, x1)`` columns, median-smoothed over ``smooth_rows``."""
    level = np.median(raw[:, columns[0] : columns[1]], axis=1)
    if smooth_rows > 1:
        level = running_median(level, int(smooth_rows))
    return level.astype(np.float32)


def running_median(values, size):
    """Median of a 1D array in a sliding window of ``size`` values, the edge values repeated beyond the ends.

    The same as ``scipy.ndimage.median_filter(values, size, mode="nearest")`` (for an
    even ``size``, the upper of the two middle values), without importing scipy.ndimage.
    """
    half = size // 2
    padded = np.pad(values, (half, size - half - 1), mode="edge")
    windows = np.lib.stride_tricks.sliding_window_view(padded, size)
    return np.partition(windows, half, axis=1)[:, half]


def prepare_frame(
    raw,
    header,
    *,
    path="",
    master_bias=None,
    photon_noise=True,
    bad_pixel_mask=None,
    overscan_smooth_rows=15,
    saturation_fraction=1.0,
):
    """Turn a raw frame into a prepared ``CCDData`` in electrons.

    Parameters
    ----------
    raw : numpy.ndarray
        The raw image in ADU, as read (full frame, x along axis 1).
    header : astropy.io.fits.Header
        Its header; gives the arm, binning, read-out speed, gain and read noise.
    path : str
        The file the frame came from, for messages.
    master_bias : CCDData, optional
        Subtracted (in electrons) before the photon noise is computed, its
        uncertainty propagated. Required for an arm that has a bias but no
        overscan (ACQ) whenever ``photon_noise`` is True.
    photon_noise : bool
        False for frames with no photo-electrons (bias frames): the uncertainty is the read noise alone.
    bad_pixel_mask : numpy.ndarray of bool, optional
        Static bad pixels on the science region (True = bad).
    overscan_smooth_rows : int
        Window (rows) of the median smoothing of the per-row overscan level.
    saturation_fraction : float
        Raw values at or above this fraction of the saturation level are masked.

    Returns
    -------
    astropy.nddata.CCDData
        float32 data in electrons, ``StdDevUncertainty`` in electrons, boolean mask.
    """
    arm = frame_arm(header, path)
    det = detector(arm)
    binning = (int(header_value(header, "binx", 1)), int(header_value(header, "biny", 1)))
    readout = det.readout_mode(header_value(header, "read_speed_id", None))
    expected = det.raw_shape(binning)
    if raw.shape != expected:
        raise DataError(f"{path}: a {arm} frame binned {binning[0]}x{binning[1]} should be {expected[1]} x {expected[0]} pixels, found {raw.shape[1]} x {raw.shape[0]}")
    x0, x1, y0, y1 = det.science_region(binning)
    science = raw[y0:y1, x0:x1]
    threshold = det.saturation_adu * saturation_fraction
    limits = np.iinfo(science.dtype) if np.issubdtype(science.dtype, np.integer) else None
    if limits is not None and limits.min <= np.ceil(threshold) <= limits.max:
        # an integer is >= t exactly when it is >= ceil(t): no float64 copy of the frame
        saturated = science >= science.dtype.type(np.ceil(threshold))
    else:
        saturated = science >= threshold
    data = science.astype(np.float32, copy=True)
    overscan = det.overscan_region(binning)
    if overscan is not None:
        data -= overscan_level(raw, overscan, overscan_smooth_rows)[y0:y1, None]
    elif det.has_bias and master_bias is None and photon_noise:
        raise DataError(f"{path}: an {arm} frame has no overscan, so it needs a MASTER_BIAS_{arm} in the SOF to be calibrated")

    gain, ron = gain_and_read_noise(header, det, readout)
    data *= np.float32(gain)
    variance = np.float32(ron * ron)  # an array once a term varies across the frame
    if master_bias is not None:
        if master_bias.data.shape != data.shape:
            raise DataError(f"{path}: the master bias is {master_bias.data.shape[::-1]} pixels but the prepared frame {data.shape[::-1]}; use a master bias of the same binning")
        data -= np.asarray(master_bias.data, dtype=np.float32)
        if master_bias.uncertainty is not None:
            variance = variance + np.asarray(master_bias.uncertainty.array, dtype=np.float32) ** 2
    if photon_noise:
        variance = variance + np.maximum(data, 0)
    sigma = np.sqrt(variance)
    if np.ndim(sigma) == 0:
        sigma = np.full(data.shape, sigma, dtype=np.float32)

    mask = saturated
    non_finite = ~np.isfinite(data)
    if non_finite.any():
        mask |= non_finite
        data[non_finite] = 0.0
    if bad_pixel_mask is not None:
        mask |= bad_pixel_mask
    if master_bias is not None and master_bias.mask is not None:
        mask |= master_bias.mask

    out_header = header.copy()
    out_header[keyword("bunit")] = "electron"
    return CCDData(
        data,
        unit=u.electron,
        uncertainty=StdDevUncertainty(sigma, unit=u.electron, copy=False),
        mask=mask,
        meta=out_header,
    )
