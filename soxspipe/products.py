"""Reading soxspipe products without knowing their file layout.

Users, tests and other tools call these functions rather than opening product
files by extension name.
"""

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from .commonutils.errors import DataError
from .commonutils.keywords import header_value


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
            unit = header_value(flux.header, "bunit", None) or "electron"
            data = np.asarray(flux.data, dtype=np.float32)
            mask = np.asarray(hdul["QUAL"].data) != 0
            errs = np.asarray(hdul["ERRS"].data, dtype=np.float32)
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a soxspipe image product with FLUX/QUAL/ERRS extensions ({exc})") from None
    unit = u.Unit(unit)
    return CCDData(data, unit=unit, mask=mask, uncertainty=StdDevUncertainty(errs, unit=unit), meta=header)


def _read_table(path, what):
    from astropy.table import Table

    try:
        return Table.read(path, hdu=1)
    except (OSError, KeyError, ValueError) as exc:
        raise DataError(f"{path}: not a soxspipe {what} table product ({exc})") from None


def read_dispersion_solution(path):
    """Read a ``DISP_TAB`` product: the first guess of ``disp_solution`` (slit degree 0) or the full
    solution of ``spat_solution``.

    Returns
    -------
    soxspipe.commonutils.dispersion.DispersionSolution
        ``.xy(order, wavelength, slit)`` maps arrays of order number, wavelength (nm) and
        slit position (arcsec) to prepared-frame pixels ``(x, y)``, 0-based.
    """
    from .commonutils.dispersion import DispersionSolution

    table = _read_table(path, "dispersion-solution")
    try:
        return DispersionSolution.from_columns({c: table[c] for c in table.colnames})
    except KeyError as exc:
        raise DataError(f"{path}: not a DISP_TAB product (column {exc} missing)") from None


def read_order_table(path):
    """Read an ``ORDER_TAB`` product.

    Returns
    -------
    soxspipe.commonutils.order_edges.OrderTable
        ``.centre(order, d)`` gives the cross-dispersion pixel of the order centre at
        dispersion pixel ``d`` (y for VIS, x for NIR); ``.extent`` each order's traced range;
        ``.edges(order, d)`` the ``(lower, upper)`` cross-dispersion pixels of the slit's ends,
        in an order table from ``mflat`` (``.has_edges``).
    """
    from .commonutils.order_edges import OrderTable

    table = _read_table(path, "order")
    try:
        return OrderTable.from_columns({c: table[c] for c in table.colnames})
    except KeyError as exc:
        raise DataError(f"{path}: not an ORDER_TAB product (column {exc} missing)") from None


def read_disp_image(path):
    """Read a ``DISP_IMAGE`` product: the wavelength, slit position and order of every pixel.

    Returns
    -------
    soxspipe.commonutils.disp_image.DispersionImage
        ``.wavelength`` (nm) and ``.slit`` (arcsec) float32 maps, NaN outside the orders;
        ``.order`` int16 map, 0 outside the orders. Arrays are indexed ``[y, x]``.
    """
    from .commonutils.disp_image import DispersionImage

    try:
        with fits.open(path, memmap=False) as hdul:
            maps = [np.asarray(hdul[name].data) for name in ("WAVELENGTH", "SLIT", "ORDER")]
    except (OSError, KeyError) as exc:
        raise DataError(f"{path}: not a DISP_IMAGE product with WAVELENGTH/SLIT/ORDER extensions ({exc})") from None
    return DispersionImage(*maps)


def read_line_table(path):
    """Read a ``DISP_TAB_LINES`` product: one row per predicted line.

    Returns
    -------
    astropy.table.Table
        ``order, wavelength`` (nm), ``slit`` (arcsec; multi-pinhole tables only), predicted, measured and fitted ``x, y`` (px), their
        residuals, ``flux, snr, sigma_x, sigma_y``, ``detected``, ``used`` and ``status``
        ('used' or why not: 'clipped', 'blend', 'not found', 'saturated', 'bad pixel', ...).
    """
    table = _read_table(path, "line")
    table.convert_bytestring_to_unicode()
    if "status" in table.colnames:
        table["status"] = np.char.strip(np.asarray(table["status"], dtype=str))
    return table
