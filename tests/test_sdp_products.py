"""ESO SDP (Phase 3) 1D spectra: the layout, the compliance check, and the products of the simulated night.

First on a small hand-made spectrum (every keyword against the numbers it was built
from; the check finds what a broken file breaks); then every ``<P>_SPEC_<ARM>`` and
merged product of the simulated night (``science_fixtures.merged_night``) passes the
check, with ``TEXPTIME`` against the truth's exposures, and loads with specutils and
``Table.read``.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table

from pinhole_sets import shared_root
from science_fixtures import merged_night
from soxspipe.commonutils import sdp_spectrum as sdp
from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.phase3_check import check_sdp_spectrum

N = 400


def _merged_table(telluric=False):
    wave = np.linspace(500.0, 600.0, N)
    qual = np.zeros(N, np.int32)
    qual[:5] = 1
    table = Table({"WAVE": wave, "FLUX": np.full(N, 200.0), "ERR": np.linspace(10.0, 20.0, N),
                   "SKY": np.full(N, 50.0), "QUAL": qual, "FLUX_CAL": np.full(N, 2e-16),
                   "ERR_CAL": np.linspace(1e-17, 2e-17, N)})
    if telluric:
        table["FLUX_TELL"] = np.full(N, 2.2e-16)
        table["ERR_TELL"] = np.linspace(1.1e-17, 2.2e-17, N)
    return table


def _raw_headers():
    out = []
    for k in range(2):
        h = fits.Header()
        h["MJD-OBS"] = 60000.2 + k * 0.01
        h["EXPTIME"] = 300.0
        h["OBJECT"] = "GAL-X"
        h["RA"], h["DEC"] = 120.5, -30.1
        h["HIERARCH ESO OBS ID"] = 101
        out.append((f"raw{k}.fits", h))
    return out


def _write(tmp_path, telluric=False, name="spec.fits"):
    columns, units = sdp.spectrum_columns(_merged_table(telluric), sky_calibrated=np.full(N, 5e-17))
    cards = {**sdp.observation_cards(_raw_headers()),
             **sdp.product_cards(arm="VIS", obstech="ECHELLE,SLIT,STARE", slit_width=1.0, procsoft="soxspipe/test",
                                 calibrated=True, telluric=telluric, barycorr=12.3, title="test"),
             **sdp.wavelength_cards({"LINES TOTAL": 200, "LINES USED FRAC": 0.8, "YRES RMS": 0.05,
                                     "YRES MEDIAN": -0.01, "RESOLVING POWER": 5000.0}, nm_per_pixel=0.02,
                                    dispersion_axis="y")}
    base = fits.Header()
    base["TELESCOP"], base["INSTRUME"], base["BUNIT"] = "ESO-NTT", "SOXS", "adu"
    path = tmp_path / name
    sdp.build_sdp_spectrum(columns, units, cards).to_hdulist(base).writeto(path, checksum=True)
    return path


def test_sdp_keywords_follow_the_data(tmp_path):
    path = _write(tmp_path)
    with fits.open(path) as hdul:
        primary, ext = hdul[0].header, hdul[1].header
        row = hdul[1].data[0]
        assert len(hdul) == 2 and hdul[1].data.shape == (1,) and primary["NAXIS"] == 0
        assert primary["PRODCATG"] == "SCIENCE.SPECTRUM" and ext["VOCLASS"] == "SPECTRUM v2.0"
        assert primary["WAVELMIN"] == 500.0 and primary["WAVELMAX"] == 600.0
        assert primary["SPEC_BIN"] == pytest.approx(100.0 / (N - 1))
        # S/N = FLUX / ERR of the reduced counts, median over the good bins (the first 5 are flagged)
        assert primary["SNR"] == pytest.approx(np.median(200.0 / np.linspace(10.0, 20.0, N)[5:]), rel=1e-6)
        assert primary["TEXPTIME"] == 600.0 and primary["EXPTIME"] == 600.0 and primary["NCOMBINE"] == 2
        assert primary["MJD-OBS"] == 60000.2 and primary["MJD-END"] == pytest.approx(60000.21 + 300 / 86400)
        assert ext["TELAPSE"] == pytest.approx((0.01 + 300 / 86400) * 86400)
        assert (primary["PROV1"], primary["PROV2"]) == ("raw0.fits", "raw1.fits") and primary["OBID1"] == 101
        # LAMNLIN = 200 x 0.8; LAMRMS = 0.05 px x 0.02 nm/px; SPEC_ERR = LAMRMS / sqrt(160)
        assert primary["LAMNLIN"] == 160 and primary["LAMRMS"] == pytest.approx(1e-3)
        assert primary["SPEC_ERR"] == pytest.approx(1e-3 / np.sqrt(160)) and primary["SPEC_SYE"] == pytest.approx(2e-4)
        assert primary["SPEC_RES"] == 5000.0 and primary["APERTURE"] == pytest.approx(1.0 / 3600)
        assert primary["FLUXCAL"] == "ABSOLUTE" and primary["TOT_FLUX"] is False and primary["SPECSYS"] == "TOPOCENT"
        assert "BUNIT" not in primary and "CHECKSUM" in primary and "DATASUM" in ext
        assert list(hdul[1].columns.names) == ["WAVE", "FLUX", "ERR", "QUAL", "SNR", "BGFLUX", "FLUX_REDUCED",
                                                "ERR_REDUCED"]
        assert ext["TUTYP2"] == "spec:Data.FluxAxis.Value" and ext["TUCD1"] == "em.wl;obs.atmos"
        np.testing.assert_allclose(row["FLUX"], 2e-16, rtol=1e-6)
        assert any("No telluric correction" in str(c) for c in primary["COMMENT"])
        assert primary["HIERARCH ESO PRO TELLCORR"] is False
    assert check_sdp_spectrum(path, exposures=[300.0, 300.0]) == []


def test_telluric_columns_when_corrected(tmp_path):
    path = _write(tmp_path, telluric=True)
    with fits.open(path) as hdul:
        assert "FLUX_TELL" in hdul[1].columns.names and "ERR_TELL" in hdul[1].columns.names
        n = hdul[1].columns.names.index("FLUX_TELL") + 1
        assert hdul[1].header[f"TUTYP{n}"] == "eso:Data.FluxAxis.Value"
        assert hdul[0].header["HIERARCH ESO PRO TELLCORR"] is True
        np.testing.assert_allclose(hdul[1].data["FLUX_TELL"][0], 2.2e-16, rtol=1e-6)
    assert check_sdp_spectrum(path) == []


@pytest.mark.parametrize("change, message", [
    (lambda h: h[0].header.set("WAVELMIN", 499.0), "WAVELMIN = 499.0 but WAVE starts at 500"),
    (lambda h: h[0].header.set("SNR", 3.0), "SNR = 3.0"),
    (lambda h: h[0].header.remove("SPECSYS"), "mandatory SPECSYS missing"),
    (lambda h: h[1].header.remove("TUCD3"), "column ERR: no TUCD3"),
    (lambda h: h[1].header.set("TUNIT7", "electron/nm"), "not a valid FITS unit"),
    (lambda h: h[0].header.set("NCOMBINE", 3), "NCOMBINE = 3"),
])
def test_check_finds_what_is_broken(tmp_path, change, message):
    path = _write(tmp_path)
    with fits.open(path) as hdul:
        change(hdul)
        hdul.writeto(tmp_path / "broken.fits", checksum=True)
    problems = check_sdp_spectrum(tmp_path / "broken.fits")
    assert any(message in p for p in problems), problems


def test_check_wants_the_sum_of_the_exposures(tmp_path):
    problems = check_sdp_spectrum(_write(tmp_path), exposures=[300.0])
    assert problems == ["TEXPTIME = 600.0 but the exposures add up to 300"]


def test_empty_spectrum_is_refused():
    with pytest.raises(DataError, match="empty"):
        sdp.build_sdp_spectrum({"WAVE": np.array([])}, {}, {})


def test_barycentric_correction_is_of_the_right_size():
    # the Earth's orbital speed bounds it: |v| < 30.3 km/s; towards the ecliptic pole it is small
    v = [sdp.barycentric_correction(120.5, -30.1, 60000.0 + d) for d in (0.0, 91.0, 182.0, 273.0)]
    assert max(abs(x) for x in v) < 30.5 and max(v) - min(v) > 20.0
    assert abs(sdp.barycentric_correction(90.0, -66.56, 60000.0)) < 3.0


def test_barycentric_correction_agrees_with_astropy():
    import warnings

    from astropy.coordinates import EarthLocation, SkyCoord
    from astropy.time import Time

    site = EarthLocation.from_geodetic(sdp.SITE[0] * u.deg, sdp.SITE[1] * u.deg, sdp.SITE[2] * u.m)
    for ra, dec, mjd in ((120.5, -30.1, 60695.9), (10.0, 20.0, 60000.1), (300.0, -60.0, 60200.7)):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            full = SkyCoord(ra * u.deg, dec * u.deg).radial_velocity_correction(
                "barycentric", obstime=Time(mjd, format="mjd"), location=site).to_value(u.km / u.s)
        assert sdp.barycentric_correction(ra, dec, mjd) == pytest.approx(full, abs=0.01)


# -- the simulated night ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory, worker_id, request):
    """The simulated night reduced, its acquisition images too, and its OBs' arms merged (once for all workers)."""
    return merged_night(shared_root(tmp_path_factory, worker_id), lambda: request.getfixturevalue("simulated_night"))


def _sdp_products(night):
    runs = night["runs"] + night["merge_runs"]
    return sorted({p for r in runs for p in r["products"] if "_SPEC_" in Path(p).name})


def test_every_science_product_passes_the_phase3_check(night):
    manifest = Table.read(Path(night["truth"]) / "manifest.ecsv")
    exptime = {str(r["file"]): float(r["exptime"]) for r in manifest}
    products = _sdp_products(night)
    names = {Path(p).name.split("_1x1")[0] for p in products}
    assert {"SCI_SPEC_VIS", "SCI_SPEC_NIR", "SCI_SPEC_MERGED"} <= names, names
    for path in products:
        header = fits.getheader(path)
        provs = [header[f"PROV{n}"] for n in range(1, header["NCOMBINE"] + 1)]
        assert check_sdp_spectrum(path, exposures=[exptime[p] for p in provs]) == [], path
        # the flux is the calibrated one where the run had a RESPONSE: a standard's calibration says so
        assert header["FLUXCAL"] in ("ABSOLUTE", "UNCALIBRATED")


def test_products_load_with_specutils_and_table_read(night):
    import soxspipe.commonutils.specutils_loader  # noqa: F401  registers the loader

    try:
        from specutils import Spectrum
    except ImportError:  # specutils 1.x
        from specutils import Spectrum1D as Spectrum
    for path in _sdp_products(night):
        spectrum = Spectrum.read(path)
        with fits.open(path) as hdul:
            row = hdul[1].data[0]
            np.testing.assert_allclose(spectrum.spectral_axis.to_value(u.nm), row["WAVE"])
            np.testing.assert_allclose(spectrum.flux.value, row["FLUX"], rtol=1e-6)
            np.testing.assert_array_equal(spectrum.mask, row["QUAL"] != 0)
        assert spectrum.flux.unit in (u.erg / u.s / u.cm ** 2 / u.AA, u.ct / u.nm)
        with warnings.catch_warnings():
            warnings.simplefilter("error", u.UnitsWarning)  # every unit astropy reads
            table = Table.read(path)
        assert len(table) == 1 and table["WAVE"].unit == u.nm and table["FLUX"].shape == (1, row["FLUX"].size)
