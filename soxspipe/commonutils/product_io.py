"""Writing product files safely.

Image products have a header-only primary HDU and the extensions ``FLUX``
(float32), ``QUAL`` (uint8, non-zero = bad) and ``ERRS`` (float32); table
products a primary HDU and one binary table; map products (e.g. ``DISP_IMAGE``) a
primary HDU and one named image extension per map. Every file is written to a
temporary name in the target folder and then linked into place, so a product is
never half-written and an existing product is never replaced unless asked.
"""

import os
import uuid
from pathlib import Path

import numpy as np
from astropy.io import fits

from .errors import ProductExistsError
from .keywords import set_value


def publish(write, path, overwrite=False):
    """Run ``write(tmp_path)`` then move the file to ``path`` atomically.

    Without ``overwrite``, an existing ``path`` raises :class:`ProductExistsError`
    (checked again at the moment of linking, so two runs cannot both win).
    """
    path = Path(path)
    if path.exists() and not overwrite:
        raise ProductExistsError(f"{path}: product exists; use -x to overwrite it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}.tmp")
    try:
        write(tmp)
        if overwrite:
            os.replace(tmp, path)
        else:
            try:
                os.link(tmp, path)
            except FileExistsError:
                raise ProductExistsError(f"{path}: product exists; use -x to overwrite it") from None
    finally:
        if tmp.exists():
            tmp.unlink()
    return path


def image_hdulist(ccd, header):
    """Build the ``FLUX``/``QUAL``/``ERRS`` HDU list of an image product from a ``CCDData``."""
    primary = fits.PrimaryHDU(header=header)
    unit = str(ccd.unit) if ccd.unit is not None else ""
    flux = fits.ImageHDU(np.asarray(ccd.data, dtype=np.float32), name="FLUX")
    set_value(flux.header, "bunit", unit)
    mask = ccd.mask if ccd.mask is not None else np.zeros(ccd.data.shape, bool)
    qual = fits.ImageHDU(np.asarray(mask, dtype=np.uint8), name="QUAL")
    errs_data = ccd.uncertainty.array if ccd.uncertainty is not None else np.zeros(ccd.data.shape)
    errs = fits.ImageHDU(np.asarray(errs_data, dtype=np.float32), name="ERRS")
    set_value(errs.header, "bunit", unit)
    if ccd.wcs is not None:  # every image extension carries the frame's WCS, for viewers
        for hdu in (flux, qual, errs):
            hdu.header.update(ccd.wcs.to_header(relax=True))
    return fits.HDUList([primary, flux, qual, errs])


def write_image_product(path, ccd, header, overwrite=False):
    """Write a ``CCDData`` as an image product; return the path."""
    hdul = image_hdulist(ccd, header)
    return publish(lambda tmp: hdul.writeto(tmp, output_verify="exception"), path, overwrite)


def write_table_product(path, table, header, overwrite=False, extname="TABLE"):
    """Write an astropy ``Table`` as a table product; return the path."""
    hdul = fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)])
    hdul[1].name = extname
    return publish(lambda tmp: hdul.writeto(tmp, output_verify="exception"), path, overwrite)


def write_maps_product(path, maps, header, overwrite=False):
    """Write named 2D arrays (``{extname: array}``, in order) as image extensions of one product; return the path."""
    hdus = [fits.PrimaryHDU(header=header)]
    for name, array in maps.items():
        hdus.append(fits.ImageHDU(np.asarray(array), name=name))
    hdul = fits.HDUList(hdus)
    return publish(lambda tmp: hdul.writeto(tmp, output_verify="exception"), path, overwrite)


def write_hdulist_product(path, hdul, overwrite=False):
    """Write a complete HDU list (a product of its own layout, e.g. an SDP spectrum) with checksums; return the path."""
    return publish(lambda tmp: hdul.writeto(tmp, output_verify="exception", checksum=True), path, overwrite)
