"""Reading FITS frames as the raw-frame contract describes them.

Raw frames may be plain, gzip- or Unix-compressed (``.fits.gz``, ``.fits.Z``) with
the image in the primary HDU, or tile-compressed (``.fits.fz``) with an empty
primary HDU and the image and whole header in extension 1. Products carry their
image in the ``FLUX`` extension. :func:`read_header` and :func:`read_image` hide
these differences; every failure is a :class:`DataError` naming the file.
"""

import warnings
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.utils.exceptions import AstropyUserWarning

from .errors import DataError
from .keywords import has_keyword

FITS_SUFFIXES = (".fits", ".fit", ".fts", ".fits.gz", ".fits.Z", ".fits.fz", ".fits.bz2")


def is_fits_name(path):
    """Return True when the file name ends like a FITS file soxspipe reads."""
    name = str(path)
    return any(name.endswith(s) for s in FITS_SUFFIXES)


def _image_hdu_index(hdul, path):
    """Index of the HDU holding the frame's image and header."""
    if "FLUX" in hdul:
        return hdul.index_of("FLUX")
    if hdul[0].header.get("NAXIS", 0) >= 2:
        return 0
    for i, hdu in enumerate(hdul[1:], start=1):
        if hdu.is_image and hdu.header.get("NAXIS", 0) >= 2:
            return i
    raise DataError(f"{path}: no image found in any HDU; is this a SOXS frame?")


def _open(path):
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: file not found; check the path (relative paths resolve against the SOF's folder)")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", AstropyUserWarning)
            return fits.open(path, memmap=False, lazy_load_hdus=False)
    except Exception as exc:
        raise DataError(f"{path}: not a readable FITS file ({exc.__class__.__name__}: {exc}); replace or remove it") from None


def _check_complete(hdul, idx, path):
    """Raise :class:`DataError` when the file ends before the image's data does."""
    info = hdul.fileinfo(idx)
    size = getattr(info.get("file"), "size", None) if info else None
    if size and info["datLoc"] + info["datSpan"] > size:
        raise DataError(f"{path}: the file is truncated ({size} bytes, the image needs {info['datLoc'] + info['datSpan']}); replace it with a complete copy")


def read_header(path):
    """Return the header of the HDU that holds the frame's image.

    For a primary-HDU image this is the primary header; for a tile-compressed
    file, the compressed HDU's header; for a product, the primary header merged
    with nothing (products keep their keywords in the primary HDU).
    """
    with _open(path) as hdul:
        if len(hdul) > 1 and has_keyword(hdul[0].header, "pro_catg"):
            # a product (table, image or named maps such as DISP_IMAGE): its keywords are in the primary HDU
            _check_complete(hdul, len(hdul) - 1, path)
            return hdul[0].header.copy()
        idx = _image_hdu_index(hdul, path)
        _check_complete(hdul, idx, path)
        if "FLUX" in hdul:
            return hdul[0].header.copy()
        return hdul[idx].header.copy()


def read_image(path, dtype=np.float32):
    """Return ``(data, header)`` of a frame, the data as ``dtype``.

    Raises
    ------
    DataError
        The file is missing, not FITS, truncated or holds no 2D image.
    """
    with _open(path) as hdul:
        idx = _image_hdu_index(hdul, path)
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", AstropyUserWarning)
                data = hdul[idx].data
        except Exception as exc:
            raise DataError(f"{path}: the image data cannot be read ({exc}); the file is probably truncated") from None
        if data is None or data.ndim != 2:
            raise DataError(f"{path}: expected a 2D image, found {None if data is None else data.shape}")
        header = hdul[0].header.copy() if "FLUX" in hdul else hdul[idx].header.copy()
        return np.asarray(data, dtype=dtype), header
