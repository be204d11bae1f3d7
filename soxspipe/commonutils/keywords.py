"""FITS keywords by logical name, from the bundled keyword dictionary.

No FITS keyword string is spelled out anywhere else in soxspipe: code asks
``keyword("exptime")`` and reads values with ``header_value(header, "exptime")``.
"""

import warnings

from astropy.io import fits
from astropy.io.fits.verify import VerifyWarning

from ..static_calibrations import load_yaml

_MISSING = object()


def keyword(name, **fields):
    """Return the FITS keyword of the logical ``name``.

    Templates such as ``pro_rec_raw_name`` (``ESO PRO REC1 RAW{n} NAME``) are
    filled with ``fields`` (e.g. ``keyword("pro_rec_raw_name", n=1)``).
    """
    table = load_yaml("keywords.yaml")
    try:
        kw = table[name]
    except KeyError:
        raise KeyError(f"'{name}' is not in the soxspipe keyword dictionary") from None
    return kw.format(**fields) if fields else kw


def header_value(header, name, default=_MISSING, **fields):
    """Return the value of the logical keyword ``name`` in ``header``.

    Returns ``default`` when the keyword is absent; without a default a missing
    keyword raises ``KeyError`` naming the FITS keyword.
    """
    kw = keyword(name, **fields)
    if kw in header:
        return header[kw]
    if default is _MISSING:
        raise KeyError(f"header has no '{kw}'")
    return default


def has_keyword(header, name, **fields):
    """Return True when the logical keyword ``name`` is present in ``header``."""
    return keyword(name, **fields) in header


def set_value(header, name, value, comment=None, **fields):
    """Set the logical keyword ``name`` in ``header`` (HIERARCH as needed)."""
    kw = keyword(name, **fields)
    if len(kw) > 8 and not kw.startswith("HIERARCH"):
        kw = "HIERARCH " + kw
    if comment:
        # shorten the comment to what fits on the 80-character card beside the value
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", VerifyWarning)
            room = 80 - len(fits.Card(kw, value).image.rstrip()) - 3
        comment = comment[: max(room, 0)] or None
    header[kw] = (value, comment) if comment else value
