"""Read soxspipe's ESO SDP 1D spectra with ``specutils``.

specutils has no loader for the ESO SDP layout (one table row of array columns).
Importing this module registers one, ``'SOXS-SDP'``, which specutils also picks by
itself for a file whose primary header says ``PRODCATG = 'SCIENCE.SPECTRUM'`` and
whose ``PROCSOFT`` is soxspipe::

    import soxspipe.commonutils.specutils_loader  # registers the loader
    from specutils import Spectrum
    spectrum = Spectrum.read("SCI_SPEC_MERGED_....fits")

The spectrum is ``FLUX`` with ``ERR`` as its standard deviation and ``QUAL != 0`` as its
mask, on ``WAVE`` (nm, air); ``column='FLUX_TELL'`` (or another flux column) reads that one
with its error. The primary header is in ``meta['header']``. Nothing of specutils is imported
until this module is: soxspipe itself never imports it.
"""

import numpy as np
from astropy import units as u
from astropy.io import fits
from astropy.nddata import StdDevUncertainty

from .keywords import header_value
from .sdp_spectrum import EXTNAME, PRODCATG, read_sdp_spectrum

try:  # specutils >= 2
    from specutils import Spectrum
except ImportError:  # pragma: no cover - specutils 1.x
    from specutils import Spectrum1D as Spectrum
from specutils.io.registers import data_loader

FORMAT = "SOXS-SDP"
#: the error column of each flux column
ERRORS = {"FLUX": "ERR", "FLUX_TELL": "ERR_TELL", "FLUX_REDUCED": "ERR_REDUCED", "BGFLUX": None}


def identify_sdp(origin, *args, **kwargs):
    """True for a FITS file that is a soxspipe SDP spectrum."""
    path = args[0] if args and isinstance(args[0], (str, bytes)) or hasattr(args[0] if args else None, "__fspath__") \
        else None
    if path is None:
        return False
    try:
        with fits.open(path, memmap=False) as hdul:
            header = hdul[0].header
            return (str(header_value(header, "sdp_prodcatg", "")).strip() == PRODCATG
                    and str(header_value(header, "sdp_procsoft", "")).startswith("soxspipe") and EXTNAME in hdul)
    except (OSError, TypeError):
        return False


@data_loader(FORMAT, identifier=identify_sdp, dtype=Spectrum, extensions=["fits"], priority=10)
def read_sdp(path, column="FLUX", **kwargs):
    """A soxspipe SDP spectrum as a specutils ``Spectrum`` (see the module docstring)."""
    spectrum, header = read_sdp_spectrum(path)
    columns, units = spectrum.columns, spectrum.units
    if column not in columns:
        raise ValueError(f"{path}: no column {column} (it has {', '.join(columns)})")
    unit = u.Unit(units[column], format="fits") if units[column] else u.dimensionless_unscaled
    error = ERRORS.get(column)
    uncertainty = None if not error or error not in columns else StdDevUncertainty(np.asarray(columns[error], float))
    return Spectrum(flux=np.asarray(columns[column], float) * unit,
                    spectral_axis=np.asarray(columns["WAVE"], float) * u.Unit(units["WAVE"] or "nm", format="fits"),
                    uncertainty=uncertainty, mask=np.asarray(columns["QUAL"]) != 0, meta={"header": header})
