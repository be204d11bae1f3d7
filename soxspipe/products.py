"""Reading soxspipe products without knowing their file layout.

Users, tests and other tools call these functions rather than opening product
files by extension name.
"""

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from .commonutils.errors import DataError


def read_image_product(path):
    """Return an image product (``FLUX``/``QUAL``/``ERRS``) as a ``CCDData`` in its stored unit.

    The primary header becomes ``meta``; ``QUAL`` non-zero becomes the boolean mask.

    Raises
    ------
    DataError
        The file is not a soxspipe image product.
    """
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header.copy()
            flux = hdul["FLUX"]
            unit = flux.header.get("BUNIT") or "electron"
            data = np.asarray(flux.data, dtype=np.float32)
            mask = np.asarray(hdul["QUAL"].data) != 0
            errs = np.asarray(hdul["ERRS"].data, dtype=np.float32)
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a soxspipe image product with FLUX/QUAL/ERRS extensions ({exc})") from None
    unit = u.Unit(unit)
    return CCDData(data, unit=unit, mask=mask, uncertainty=StdDevUncertainty(errs, unit=unit), meta=header)
