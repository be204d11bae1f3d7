"""The imaging master flat: the circular field, frame scaling and normalisation.

Acquisition-camera flats (twilight sky or dome) light a circular field; twilight
flats fade from one exposure to the next. These functions find the illuminated
circle in a flat, give each flat's level inside it (so the flats can be scaled to
a common level before they are stacked), and normalise the stacked flat to 1 at
the field centre, flagging pixels outside the field and of low response. They
take arrays and return arrays: no I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .errors import DataError

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Field:
    """The illuminated circle of an imaging frame: centre ``(x, y)`` (0-based px) and radius (px)."""

    x: float
    y: float
    radius: float

    def mask(self, shape, margin=0.0):
        """Boolean map, True inside the circle shrunk by ``margin`` pixels."""
        y, x = np.ogrid[: shape[0], : shape[1]]
        return (x - np.float32(self.x)) ** 2 + (y - np.float32(self.y)) ** 2 < np.float32(self.radius - margin) ** 2


def find_field(image, mask=None, *, threshold=0.5, min_radius=10.0):
    """Locate the illuminated circle of a flat.

    Pixels brighter than ``threshold`` times the bright level (the 90th percentile
    of the good pixels) are lit; the circle's centre is their centroid and its
    radius the radius of a disc of the same area.

    Parameters
    ----------
    image : numpy.ndarray
        A flat (any positive scale).
    mask : numpy.ndarray of bool, optional
        Pixels to ignore (they count as lit where the circle covers them).
    threshold : float
        Fraction of the bright level separating lit from dark.
    min_radius : float
        A circle smaller than this (px) is an error.

    Returns
    -------
    Field

    Raises
    ------
    DataError
        No illuminated field found (a blank frame).
    """
    good = np.isfinite(image) if mask is None else np.isfinite(image) & ~mask
    values = image[good]
    if values.size == 0:
        raise DataError("the flat has no usable pixel")
    bright = float(np.percentile(values[:: max(1, values.size // 200_000)], 90))
    if not bright > 0:
        raise DataError("the flat is not illuminated (its bright level is not positive)")
    lit = (image > threshold * bright) & good
    n = int(lit.sum())
    radius = float(np.sqrt(n / np.pi)) if n else 0.0
    if radius < min_radius:
        raise DataError(f"no illuminated field in the flat (lit area {n} px)")
    ys, xs = np.nonzero(lit)
    return Field(float(xs.mean()), float(ys.mean()), radius)


def field_level(image, field, mask=None, *, inner_fraction=1.0, margin=5.0):
    """Median of ``image`` inside the field (within ``inner_fraction`` of its radius, ``margin`` px off the edge)."""
    inside = Field(field.x, field.y, field.radius * inner_fraction).mask(image.shape, margin=margin)
    if mask is not None:
        inside &= ~mask
    values = image[inside & np.isfinite(image)]
    return float(np.median(values)) if values.size else float("nan")


def normalise_flat(flat, error, mask, field, *, centre_fraction=0.2, edge_margin=3.0, low_response=0.5):
    """Normalise a stacked flat to 1 at the field centre and flag bad pixels.

    Parameters
    ----------
    flat, error : numpy.ndarray
        The stacked flat and its uncertainty (same unit).
    mask : numpy.ndarray of bool
        Pixels already bad.
    field : Field
        The illuminated circle.
    centre_fraction : float
        The normalising level is the median within this fraction of the field radius,
        so that the flat carries the vignetting relative to the centre and a zero
        point measured on a flat-fielded image refers to the field centre.
    edge_margin : float
        Pixels closer than this to the field edge count as outside (the edge is soft).
    low_response : float
        Pixels inside the field with a normalised response below this are flagged.

    Returns
    -------
    flat, error : numpy.ndarray (float32)
        Normalised; 1 (error 0) outside the field and at flagged pixels, so dividing by it is harmless.
    mask : numpy.ndarray of bool
        True outside the field and at low-response or already-bad pixels.
    level : float
        The normalising level.
    """
    level = field_level(flat, field, mask, inner_fraction=centre_fraction, margin=0.0)
    if not level > 0:
        raise DataError("the flat's level at the field centre is not positive")
    scale = np.float32(1.0 / level)
    norm = np.asarray(flat, np.float32) * scale
    err = np.asarray(error, np.float32) * scale
    outside = ~field.mask(flat.shape, margin=edge_margin)
    low = ~outside & ~(norm >= low_response)
    bad = outside | low | np.asarray(mask, bool)
    norm[bad] = 1.0
    err[bad] = 0.0
    log.info("flat normalised by %.1f; %d low-response pixels flagged inside the field", level, int(low.sum()))
    return norm, err, bad, level
