"""Absolute flux: scale a spectrum to the acquisition image's photometry of its target.

The flux calibration with a standard star leaves the science's own slit losses (and
any cloud) in the spectrum. The acquisition camera images the target at the start of
the OB: its ``SOURCE_CAT_ACQ_<filter>`` (from ``soxs_image``, zero point against the
reference catalogue, aperture-corrected to total flux) gives the target's AB magnitude.
:func:`target_photometry` takes the catalogue source nearest the target's RA/DEC
(within ``max_separation`` arcsec, else a :class:`~.errors.DataError`);
:func:`absolute_flux_factor` computes the spectrum's synthetic AB magnitude through the
same bundled filter curve (:func:`~.synthetic_photometry.ab_magnitude`) and returns the
factor ``10**(-0.4 (m_image - m_spectrum))`` that makes them agree; and
:func:`scale_spectrum` applies it to an SDP spectrum and records the factor and the
photometry in its header (``ESO PRO ABSFLUX ...``; ``TOT_FLUX = T``, ``FLUXERR`` the
photometric error in %).

A catalogue without a zero point (``FLUXCAL = 'UNCALIBRATED'``: a filter the reference
catalogue does not calibrate), a spectrum that does not cover the filter, or no source
at the target's position leave the spectrum as it was: :func:`photometry_problem` says why.
No I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np

from .errors import DataError
from .synthetic_photometry import ab_magnitude, filter_curve

log = logging.getLogger(__name__)

#: 2.5 / ln(10): magnitude error per fractional flux error
_MAG_PER_FRACTION = 2.5 / np.log(10.0)


@dataclass(frozen=True)
class TargetPhotometry:
    """The target in an acquisition image's source catalogue.

    Attributes
    ----------
    filter : str
    magnitude, error : float
        AB magnitude (total, above the atmosphere) and its error.
    separation : float
        Distance (arcsec) of the catalogue source from the target's RA/DEC.
    source : str
        The catalogue's file name (for the header).
    """

    filter: str
    magnitude: float
    error: float
    separation: float
    source: str = ""


@dataclass(frozen=True)
class AbsoluteFlux:
    """Result of :func:`absolute_flux_factor`: ``factor`` multiplies the spectrum; ``synthetic`` its magnitude before."""

    factor: float
    synthetic: float
    photometry: TargetPhotometry


def target_photometry(catalogue, ra, dec, filter_name, *, max_separation=1.5, source=""):
    """The catalogue source nearest (``ra``, ``dec``) as a :class:`TargetPhotometry`.

    Parameters
    ----------
    catalogue : astropy.table.Table
        ``ra``, ``dec`` (deg), ``mag``, ``mag_err`` (a ``SOURCE_CAT_ACQ_<filter>`` of ``soxs_image``).
    ra, dec : float
        The target (deg).
    filter_name : str
    max_separation : float
        Largest distance (arcsec) at which a source is taken to be the target.
    source : str
        Names the catalogue in messages and the header.

    Raises
    ------
    DataError
        No source within ``max_separation``, or the nearest has no magnitude.
    """
    if len(catalogue) == 0:
        raise DataError(f"{source}: the acquisition image's catalogue holds no source")
    cra, cdec = (np.radians(np.asarray(catalogue[c], float)) for c in ("ra", "dec"))
    ra0, dec0 = np.radians(float(ra)), np.radians(float(dec))
    cos_sep = np.sin(dec0) * np.sin(cdec) + np.cos(dec0) * np.cos(cdec) * np.cos(cra - ra0)
    separation = np.degrees(np.arccos(np.clip(cos_sep, -1.0, 1.0))) * 3600.0
    nearest = int(np.argmin(separation))
    if separation[nearest] > max_separation:
        raise DataError(f"{source}: no source within {max_separation:g} arcsec of the target "
                        f"(RA {float(ra):.5f}, Dec {float(dec):.5f}; nearest at {separation[nearest]:.1f} arcsec): "
                        "the target is not in the acquisition image")
    magnitude, error = float(catalogue["mag"][nearest]), float(catalogue["mag_err"][nearest])
    if not np.isfinite(magnitude):
        raise DataError(f"{source}: the source at the target's position has no magnitude (not detected above "
                        "its sky)")
    return TargetPhotometry(filter_name, magnitude, error if np.isfinite(error) else float("nan"),
                            float(separation[nearest]), source)


def _filled(wavelength, flux, usable):
    """``flux`` with the unusable bins interpolated from the usable ones (a synthetic magnitude needs no gaps)."""
    if usable.sum() < 2:
        raise DataError("the spectrum has fewer than two usable bins in the filter")
    return np.interp(wavelength, wavelength[usable], flux[usable])


def absolute_flux_factor(wavelength, flux, qual, photometry):
    """The factor that scales a flux-calibrated spectrum to the target's photometry.

    Parameters
    ----------
    wavelength : array
        nm, increasing.
    flux : array
        erg/s/cm^2/Angstrom.
    qual : array
        0 for good bins; the others are bridged by linear interpolation.
    photometry : TargetPhotometry

    Returns
    -------
    AbsoluteFlux

    Raises
    ------
    DataError
        The spectrum does not cover the filter, or its synthetic flux is not positive.
    """
    wavelength = np.asarray(wavelength, float)
    flux = np.asarray(flux, float)
    usable = (np.asarray(qual) == 0) & np.isfinite(flux)
    synthetic = ab_magnitude(wavelength, _filled(wavelength, flux, usable), photometry.filter)
    if not np.isfinite(synthetic):
        raise DataError(f"the spectrum's flux through filter {photometry.filter} is not positive: no absolute flux")
    factor = float(10 ** (-0.4 * (photometry.magnitude - synthetic)))
    log.info("absolute flux: %s = %.3f (image) vs %.3f (spectrum): factor %.4f", photometry.filter,
             photometry.magnitude, synthetic, factor)
    return AbsoluteFlux(factor, float(synthetic), photometry)


def scale_spectrum(spectrum, result):
    """An SDP spectrum (:class:`~.sdp_spectrum.SdpSpectrum`) scaled by ``result`` (:class:`AbsoluteFlux`).

    The header records the factor, the filter, both magnitudes, the separation and the catalogue;
    ``TOT_FLUX`` becomes true and ``FLUXERR`` the photometric error in per cent.
    """
    p = result.photometry
    fluxerr = 100.0 * p.error / _MAG_PER_FRACTION if np.isfinite(p.error) else -2.0
    cards = {"pro_absflux": (True, "scaled to the acquisition image photometry"),
             "pro_absflux_factor": (round(result.factor, 6), "flux scale (slit losses, clouds)"),
             "pro_absflux_filter": (p.filter, "acquisition-camera filter"),
             "pro_absflux_mag": (round(p.magnitude, 4), "[mag] AB magnitude in the image"),
             "pro_absflux_magerr": (round(p.error, 4) if np.isfinite(p.error) else -1.0, "[mag] its error"),
             "pro_absflux_synmag": (round(result.synthetic, 4), "[mag] AB magnitude of the spectrum before"),
             "pro_absflux_sep": (round(p.separation, 3), "[arcsec] source distance from RA/DEC"),
             "pro_absflux_cat": (p.source, "source catalogue used"),
             "sdp_tot_flux": (True, "scaled to the total flux of the source"),
             "sdp_fluxerr": (round(fluxerr, 3), "[%] flux scale error (photometry)")}
    return spectrum.scaled(result.factor, cards)


def photometry_problem(catalogue_header_fluxcal, spectrum_wavelength, filter_name):
    """Why a catalogue cannot give the absolute flux of a spectrum (None when it can).

    Parameters
    ----------
    catalogue_header_fluxcal : str
        The catalogue's ``FLUXCAL``: 'ABSOLUTE' when ``soxs_image`` measured a zero point.
    spectrum_wavelength : array
        The spectrum's wavelengths (nm).
    filter_name : str
    """
    if str(catalogue_header_fluxcal or "").strip() != "ABSOLUTE":
        return f"the {filter_name} image has no photometric zero point"
    try:
        lo, hi = filter_curve(filter_name).band
    except DataError as exc:
        return str(exc)
    wave = np.asarray(spectrum_wavelength, float)
    if wave.size == 0 or wave[0] > lo or wave[-1] < hi:
        return f"the spectrum does not cover filter {filter_name} ({lo:.0f}-{hi:.0f} nm)"
    return None
