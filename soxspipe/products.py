"""Reading soxspipe products without knowing their file layout.

Users, tests and other tools call these functions rather than opening product
files by extension name.
"""

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty

from .commonutils.errors import DataError
from .commonutils.keywords import header_value, keyword


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


def _table_object(path, what, tag, cls):
    """``cls.from_columns`` of a table product, or a DataError naming the missing column."""
    table = _read_table(path, what)
    try:
        return cls.from_columns({c: table[c] for c in table.colnames})
    except KeyError as exc:
        raise DataError(f"{path}: not a{'n' if tag[0] in 'AEIOU' else ''} {tag} product (column {exc} missing)") from None


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

    return _table_object(path, "dispersion-solution", "DISP_TAB", DispersionSolution)


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

    return _table_object(path, "order", "ORDER_TAB", OrderTable)


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


def _read_spectrum_table(path, what, columns):
    import warnings

    with warnings.catch_warnings():
        # FITS has no electron: the flux columns' TUNIT 'electron/nm' is made a unit below
        warnings.simplefilter("ignore", u.UnitsWarning)
        table = _read_table(path, what)
    for column in table.itercols():
        if isinstance(column.unit, u.UnrecognizedUnit):
            try:
                column.unit = u.Unit(column.unit.name)
            except ValueError:
                pass
    missing = [c for c in columns if c not in table.colnames]
    if missing:
        raise DataError(f"{path}: not a {what} product (column {missing[0]} missing)")
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header
        table.meta.clear()
        table.meta.update((k, v) for k, v in header.items() if k not in ("COMMENT", "HISTORY", ""))
    return table


def read_extracted_orders(path):
    """Read a ``<P>_ORDERS_<ARM>`` product of stare, nod or offset: the spectrum of every order.

    Returns
    -------
    astropy.table.Table
        One row per order and wavelength bin: ``ORDER``, ``WAVE``, ``WAVE_LO``, ``WAVE_HI`` (nm, air),
        ``FLUX``, ``ERR`` (optimal extraction), ``FLUX_BOX``, ``ERR_BOX`` (boxcar), ``SKY`` (e-/nm over
        the whole exposure time), ``SNR`` and ``QUAL`` (0 good); the product's primary header in
        ``.meta`` (``EXPTIME`` the total exposure time).
    """
    return _read_spectrum_table(path, "extracted-orders", ("ORDER", "WAVE", "FLUX", "ERR", "SKY", "QUAL"))


def read_merged_spectrum(path):
    """Read a ``<P>_MERGED_<ARM>`` product of stare, nod or offset: the orders merged on one grid.

    Returns
    -------
    astropy.table.Table
        ``WAVE``, ``WAVE_LO``, ``WAVE_HI`` (nm, air), ``FLUX``, ``ERR``, ``SKY`` (e-/nm over the whole
        exposure time), ``QUAL`` (0 good) and ``N_ORDERS``; the product's primary header in ``.meta``.
    """
    return _read_spectrum_table(path, "merged-spectrum", ("WAVE", "FLUX", "ERR", "SKY", "QUAL", "N_ORDERS"))


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


def read_response(path):
    """Read a ``RESPONSE_<ARM>`` product of ``soxs_response``.

    Returns
    -------
    soxspipe.commonutils.response.Response
        ``.table``: ``ORDER``, ``WAVE`` (nm), ``RESPONSE`` ((e-/s/nm) / (erg/s/cm^2/Angstrom)),
        ``ERROR``, ``MASK``; ``.evaluate(order, wavelength)``, ``.efficiency(order, wavelength)``;
        ``.meta``: ``standard``, ``airmass``, ``exptime``, ``model``, ``slit_transmission`` (divided
        out of the response; 1 when not), the standard's ``arm``, ``slit``, ``binning``, ``mjd``,
        the ``path`` and the primary ``header``.
    """
    from .commonutils.classify import classify_header
    from .commonutils.response import Response

    table = _read_spectrum_table(path, "response", ("ORDER", "WAVE", "RESPONSE", "ERROR", "MASK"))
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header.copy()
    info = classify_header(header, path)
    if not info.tag.startswith("RESPONSE_"):
        raise DataError(f"{path}: a {info.tag}, not a RESPONSE product")
    table.meta.clear()
    meta = {"standard": header_value(header, "pro_std_name", None),
            "airmass": header_value(header, "pro_airmass", None), "exptime": info.exptime,
            "model": header_value(header, "pro_resp_model", None),
            "slit_transmission": header_value(header, "pro_slit_trans", 1.0), "arm": info.arm, "slit": info.slit,
            "binning": info.binning, "mjd": info.mjd, "path": str(path), "header": header}
    return Response(table, meta)


def read_telluric(path):
    """Read a ``TELLURIC_<ARM>`` product of ``soxs_telluric``.

    Returns
    -------
    soxspipe.commonutils.science_telluric.TelluricStandard
        ``.transmission``: wavelength (nm), transmission, its error, the standard's airmass and the
        points interpolated across its lines; ``.meta``: ``standard``, ``airmass``, ``source`` (the
        standard's ``DPR TYPE``), its ``arm``, ``slit``, ``binning``, ``mjd``, the ``path``, the primary
        ``header`` and the ``table`` (``WAVE``, ``TRANS``, ``TRANS_ERR``, ``TRANS_H2O``, ``TRANS_O2``, ``QUAL``).
    """
    from .commonutils.classify import classify_header
    from .commonutils.science_telluric import telluric_from_table

    table = _read_spectrum_table(path, "telluric", ("WAVE", "TRANS", "TRANS_ERR", "QUAL"))
    with fits.open(path, memmap=False) as hdul:
        header = hdul[0].header.copy()
    info = classify_header(header, path)
    if not info.tag.startswith("TELLURIC_"):
        raise DataError(f"{path}: a {info.tag}, not a TELLURIC product")
    airmass = header_value(header, "pro_airmass", None)
    if airmass is None:
        raise DataError(f"{path}: no airmass of the telluric standard ({keyword('pro_airmass')}); "
                        "give a TELLURIC product of soxs_telluric")
    table.meta.clear()
    meta = {"standard": header_value(header, "pro_std_name", None), "airmass": float(airmass),
            "source": header_value(header, "pro_tell_source", None), "arm": info.arm, "slit": info.slit,
            "binning": info.binning, "mjd": info.mjd, "path": str(path), "header": header, "table": table}
    return telluric_from_table(table, meta)
