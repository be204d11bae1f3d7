"""The 2D spectrum per arm (``<P>_SPEC2D_<ARM>``): one (slit, wavelength) image on the merged grid, with a WCS.

First hand-made orders whose merged, flux-calibrated image is known exactly (values,
inverse-variance errors, conserved flux, flagged cells, the WCS); then GAL-A on the
session's simulated night: the image summed over the slit against the 1D merged
spectrum, the object's row against QC ``OBJ POS``, and the WCS of both arms.
"""

import warnings
from pathlib import Path

import numpy as np
import pytest
from astropy import units as u
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from science_fixtures import product, stare_run
from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.extinction import band_mask, extinction
from soxspipe.commonutils.resample import RectifiedOrder, linear_edges, merge_orders
from soxspipe.commonutils.response import Response
from soxspipe.commonutils.spectrum2d import CALIBRATED_UNIT, COUNTS_UNIT, Spectrum2D, build_spectrum2d
from soxspipe.products import read_merged_spectrum

EXPTIME, AIRMASS = 600.0, 1.3
#: the true surface density above the atmosphere (erg/s/cm^2/Angstrom/arcsec) and its error per cell
TRUE_FLUX = 2.0e-17
SLIT_EDGES = linear_edges(-2.5, 2.5, 0.5)
#: order -> (wavelength edges, response, calibrated error of a rectified cell): A's cells 0.05 nm, B's 0.025
ORDERS = {1: (linear_edges(500.05, 520.0, 0.05), 3.0e16, 4.0e-18),
          2: (linear_edges(515.0, 540.0, 0.025), 1.5e16, 6.0e-18)}
#: the merged grid: 0.1 nm bins whose edges are edges of both orders' cells
GRID = linear_edges(499.0, 541.0, 0.1)


def counts_factor(wave, response):
    """Counts per nm per arcsec over the exposure of one erg/s/cm^2/Angstrom/arcsec above the atmosphere."""
    return EXPTIME * response * 10.0 ** (-0.4 * extinction(wave) * AIRMASS)


def rectified_order(order, density=None, coverage=None):
    """A rectified order of :data:`ORDERS` holding ``density`` (default: :data:`TRUE_FLUX` seen through it)."""
    edges, response, error = ORDERS[order]
    wave = 0.5 * (edges[1:] + edges[:-1])
    shape = (SLIT_EDGES.size - 1, wave.size)
    factor = counts_factor(wave, response)
    if density is None:
        density = np.broadcast_to(TRUE_FLUX * factor, shape)
    coverage = np.ones(shape) if coverage is None else coverage
    area = np.outer(np.diff(SLIT_EDGES), np.diff(edges)) * coverage
    return RectifiedOrder(edges, SLIT_EDGES, (density * area).astype(np.float32),
                          ((error * factor * area) ** 2 * np.ones(shape)).astype(np.float32),
                          coverage.astype(np.float32))


def flat_response(orders=None):
    """A response constant in each order (no error): ``{order: (edges, value)}``, by default :data:`ORDERS`'."""
    orders = orders or {o: (edges, r) for o, (edges, r, _) in ORDERS.items()}
    rows = [(o, w, r, 0.0) for o, (edges, r) in orders.items() for w in np.linspace(edges[0], edges[-1], 50)]
    return Response(Table(rows=rows, names=("ORDER", "WAVE", "RESPONSE", "ERROR")), {"path": "response.fits"})


def cells(spectrum, low, high):
    """Columns of ``spectrum`` whose bins lie inside (low, high) nm."""
    return (spectrum.wave_edges[:-1] > low - 1e-6) & (spectrum.wave_edges[1:] < high + 1e-6)


# -- hand-made orders ----------------------------------------------------------------------------


def test_two_orders_calibrate_merge_and_combine_errors_by_inverse_variance():
    holed = np.ones((SLIT_EDGES.size - 1, ORDERS[1][0].size - 1))
    holed[3, 100] = 0.0  # nothing fell in this cell
    holed[6, 200] = 0.3  # too little: left out, as in the <P>_2D_ image
    spectrum = build_spectrum2d({1: rectified_order(1, coverage=holed), 2: rectified_order(2)}, GRID,
                                response=flat_response(), exptime=EXPTIME, airmass=AIRMASS)
    assert spectrum.calibrated and spectrum.unit == CALIBRATED_UNIT
    assert spectrum.flux.shape == (10, GRID.size - 1) and spectrum.flux.dtype == np.float32
    good = spectrum.qual == 0
    # every covered cell holds the true density, from either order alone or both
    np.testing.assert_allclose(spectrum.flux[good], TRUE_FLUX, rtol=1e-6)
    # errors: a 0.1 nm bin averages 2 cells of A (0.05 nm) or 4 of B (0.025 nm); both: inverse variance
    sigma_a, sigma_b = ORDERS[1][2] / np.sqrt(2), ORDERS[2][2] / 2
    only_a, both, only_b = cells(spectrum, 500.1, 515.0), cells(spectrum, 515.0, 520.0), cells(spectrum, 520.0, 540)
    assert only_a.sum() == 149 and both.sum() == 50 and only_b.sum() == 200
    np.testing.assert_allclose(spectrum.error[:, both], 1 / np.sqrt(sigma_a ** -2 + sigma_b ** -2), rtol=1e-6)
    np.testing.assert_allclose(spectrum.error[:, only_b], sigma_b, rtol=1e-6)
    np.testing.assert_allclose(spectrum.error[:, only_a][good[:, only_a]], sigma_a, rtol=1e-6)
    assert (spectrum.n_orders[:, both] == 2).all() and (spectrum.n_orders[:, only_b] == 1).all()
    # flagged (NaN): beyond both orders, the bin A's first edge cuts in half, the two bins with a hole
    flagged = ~good
    assert flagged[:, cells(spectrum, 499.0, 500.0)].all() and flagged[:, cells(spectrum, 540.0, 541.0)].all()
    assert flagged[:, cells(spectrum, 500.0, 500.1)].all()
    edges = ORDERS[1][0]
    for row, cell in ((3, 100), (6, 200)):
        low = np.floor((edges[cell] + 1e-6) * 10) / 10  # the 0.1 nm bin holding the cell
        column = cells(spectrum, low, low + 0.1)
        assert flagged[row, column].all() and not flagged[row - 1, column].any()
    assert flagged.sum() == 10 * (10 + 10 + 1) + 2
    assert np.isnan(spectrum.flux[flagged]).all() and np.isnan(spectrum.error[flagged]).all()
    assert (spectrum.qual[flagged] == 1).all() and spectrum.qual.dtype == np.uint8


def test_flux_is_conserved_over_an_interval():
    """One order, counts: the integral over 505-515 nm of every row is that of the rectified cells."""
    rng = np.random.default_rng(3)
    density = rng.uniform(50.0, 150.0, (SLIT_EDGES.size - 1, ORDERS[1][0].size - 1))
    spectrum = build_spectrum2d({1: rectified_order(1, density=density)}, GRID)
    assert not spectrum.calibrated and spectrum.unit == COUNTS_UNIT
    wave = 0.5 * (ORDERS[1][0][1:] + ORDERS[1][0][:-1])
    inside = (wave > 505.0) & (wave < 515.0)
    expected = (density[:, inside] * np.diff(ORDERS[1][0])[inside]).sum(axis=1)
    columns = cells(spectrum, 505.0, 515.0)
    assert columns.sum() == 100
    np.testing.assert_allclose((spectrum.flux[:, columns] * np.diff(GRID)[columns]).sum(axis=1), expected, rtol=1e-6)


def test_weights_do_not_follow_the_noise():
    """Cells whose variances come from their own noisy counts: the merged mean stays unbiased.

    Two orders overlapping, of efficiencies 1 and 0.6, an object of 2 e-/cell over a sky of 3 e-/cell
    (before the efficiency), Poisson noise, each cell's variance its own counts (sky included), 400
    rows x 50 bins. Weighting every cell by its own variance gives a merged mean 15 % low (measured:
    0.849); the slit columns' median variance 1.0002, with a noise of 0.45 % (0.48 % over 20 seeds).
    """
    rng = np.random.default_rng(5)
    slit = linear_edges(0.0, 400.0, 1.0)
    edges = linear_edges(515.0, 520.0, 0.05)
    grid = linear_edges(515.0, 520.0, 0.1)
    rectified, calibrated = {}, []
    for order, efficiency in ((1, 1.0), (2, 0.6)):
        sky = rng.poisson(3.0 * efficiency, (slit.size - 1, edges.size - 1))
        counts = rng.poisson(2.0 * efficiency, sky.shape) + sky - 3.0 * efficiency
        variance = np.maximum(counts + 3.0 * efficiency, 1.0)
        rectified[order] = RectifiedOrder(edges, slit, counts.astype(np.float32), variance.astype(np.float32),
                                          np.ones(sky.shape, np.float32))
        # densities (per nm per arcsec) over the exposure, per unit of response
        scale = 0.05 * EXPTIME * efficiency
        calibrated.append((edges, counts / scale, np.sqrt(variance) / scale))
    response = flat_response({1: (edges, 1.0), 2: (edges, 0.6)})
    merged = build_spectrum2d(rectified, grid, response=response, exptime=EXPTIME, airmass=0.0)
    truth = 2.0 / (0.05 * EXPTIME)
    assert merged.flux.mean() / truth == pytest.approx(1.0, abs=0.015)
    # the same cells weighted by their own variances: biased low, as the docstring says
    per_cell = merge_orders(calibrated, grid)
    assert per_cell.flux.mean() / truth < 0.9


def test_rows_merge_as_the_one_dimensional_spectra_do():
    """A 2D flux through merge_orders: every row exactly its own 1D merge."""
    rng = np.random.default_rng(7)
    spectra = []
    for edges in (linear_edges(500.0, 510.0, 0.07), linear_edges(506.0, 515.0, 0.03)):
        flux = rng.normal(10.0, 1.0, (4, edges.size - 1))
        flux[rng.random(flux.shape) < 0.05] = np.nan
        spectra.append((edges, flux, rng.uniform(0.5, 2.0, flux.shape)))
    merged = merge_orders(spectra, GRID)
    for row in range(4):
        one = merge_orders([(e, f[row], s[row]) for e, f, s in spectra], GRID)
        np.testing.assert_array_equal(merged.flux[row], one.flux)
        np.testing.assert_array_equal(merged.error[row], one.error)
        np.testing.assert_array_equal(merged.n_orders[row], one.n_orders)


def test_product_file_layout_and_wcs(tmp_path):
    spectrum = build_spectrum2d({1: rectified_order(1), 2: rectified_order(2)}, GRID, response=flat_response(),
                                exptime=EXPTIME, airmass=AIRMASS)
    header = fits.Header()
    header["OBJECT"] = "HAND-MADE"
    path = tmp_path / "spec2d.fits"
    spectrum.to_hdulist(header).writeto(path, output_verify="exception", checksum=True)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "FLUX", "QUAL", "ERRS"]
        assert hdul[0].header["NAXIS"] == 0 and hdul[0].header["OBJECT"] == "HAND-MADE"
        assert hdul[0].header["FLUXCAL"] == "ABSOLUTE"
        assert hdul["FLUX"].data.dtype.kind == "f" and hdul["QUAL"].data.dtype == np.uint8
        for name in ("FLUX", "ERRS"):
            assert hdul[name].header["BUNIT"] == CALIBRATED_UNIT
            assert u.Unit(hdul[name].header["BUNIT"], format="fits") == u.erg / (u.s * u.cm ** 2 * u.AA * u.arcsec)
        # ESO's classification and cross references
        assert [hdul[n].header["HDUCLAS2"] for n in ("FLUX", "QUAL", "ERRS")] == ["DATA", "QUALITY", "ERROR"]
        assert hdul["ERRS"].header["HDUCLAS3"] == "RMSE"
        assert (hdul["FLUX"].header["ERRDATA"], hdul["FLUX"].header["QUALDATA"]) == ("ERRS", "QUAL")
        assert (hdul["ERRS"].header["SCIDATA"], hdul["ERRS"].header["QUALDATA"]) == ("FLUX", "QUAL")
        assert (hdul["QUAL"].header["SCIDATA"], hdul["QUAL"].header["ERRDATA"]) == ("FLUX", "ERRS")
        for name in ("FLUX", "QUAL", "ERRS"):
            ext = hdul[name].header
            assert (ext["CTYPE1"], ext["CUNIT1"], ext["CUNIT2"]) == ("AWAV", "nm", "arcsec")
            with warnings.catch_warnings():
                warnings.simplefilter("error")
                wcs = WCS(ext)
            x, y = np.meshgrid(np.arange(GRID.size - 1), np.arange(SLIT_EDGES.size - 1))
            wave, slit = wcs.pixel_to_world(x, y)
            np.testing.assert_allclose(wave.to_value(u.nm), np.broadcast_to(spectrum.wavelength, x.shape),
                                       rtol=0, atol=1e-9)
            np.testing.assert_allclose(slit.to_value(u.arcsec), np.broadcast_to(spectrum.slit[:, None], x.shape),
                                       rtol=0, atol=1e-9)


def test_a_logarithmic_grid_gets_a_log_axis_and_an_irregular_one_is_refused():
    flux = np.zeros((2, 50), np.float32)
    log_edges = 500.0 * np.exp(1e-4 * np.arange(51))
    log_grid = Spectrum2D(log_edges, np.array([-1.0, 0.0, 1.0]), flux, flux, flux.astype(np.uint8), flux)
    header = log_grid.to_hdulist()["FLUX"].header
    assert header["CTYPE1"] == "AWAV-LOG" and header["CUNIT1"] == "nm"
    wave = WCS(header).pixel_to_world(np.arange(50), np.zeros(50))[0].to_value(u.nm)
    np.testing.assert_allclose(wave, log_grid.wavelength, rtol=1e-9)
    irregular = Spectrum2D(np.r_[500.0, 500.1, 500.3, 500.35], np.array([-1.0, 0.0, 1.0]), flux[:, :3],
                           flux[:, :3], flux[:, :3].astype(np.uint8), flux[:, :3])
    with pytest.raises(ValueError, match="neither linear nor logarithmic"):
        irregular.to_hdulist()


def test_bad_inputs():
    with pytest.raises(DataError, match=r"no response for order\(s\) \[3\]"):
        build_spectrum2d({3: rectified_order(1)}, GRID, response=flat_response(), exptime=EXPTIME, airmass=AIRMASS)
    with pytest.raises(ValueError, match="exposure time and an airmass"):
        build_spectrum2d({1: rectified_order(1)}, GRID, response=flat_response(), exptime=EXPTIME, airmass=None)
    other = rectified_order(2)
    other.slit_edges = other.slit_edges + 0.1
    with pytest.raises(ValueError, match="another slit grid"):
        build_spectrum2d({1: rectified_order(1), 2: other}, GRID)
    with pytest.raises(ValueError, match="no rectified orders"):
        build_spectrum2d({}, GRID)


# -- the simulated night -------------------------------------------------------------------------


def _read(path):
    with fits.open(path) as hdul:
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            wcs = {name: WCS(hdul[name].header) for name in ("FLUX", "QUAL", "ERRS")}
        return ({name: hdul[name].data.astype(float) for name in ("FLUX", "QUAL", "ERRS")}, hdul[0].header.copy(),
                wcs)


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_galaxy_summed_over_the_slit_is_its_merged_spectrum(night, arm):
    """GAL-A: the image summed over the slit rows against the 1D merged FLUX_CAL (optimal extraction).

    In 20 nm bins outside the telluric bands, over wavelengths where every row has data, the median
    ratio of the two is 1 within 1 % plus 4 times its own noise (1.25 x the bin's robust scatter /
    sqrt(n)): the slit sum adds the sky noise of every row (S/N per bin 1.4-13 against 2.2-13 for the
    optimal extraction), which leaves a bin's median 0.2-2.3 % (UV-VIS) and 0.7-2.5 % (NIR) uncertain.
    Measured: every bin within 1.8 % (UV-VIS) and 5.3 % (NIR, at S/N 1.4), at most 1.9 noise beyond
    the 1 %; the median of the bins' ratios 1.0006 and 1.0000. Weighting every cell by its own
    variance made the 20 nm bins of the UV-VIS order overlaps 2.3-3 % low (noise 0.3 %): two of
    the three beyond this tolerance.
    """
    run = stare_run(night, arm, "GAL-A")
    images, header, wcs = _read(product(run, f"SCI_SPEC2D_{arm}"))
    merged = read_merged_spectrum(product(run, f"SCI_MERGED_{arm}"))
    assert header["FLUXCAL"] == "ABSOLUTE"
    assert header["ESO PRO FLUXCAL RESP"] == merged.meta["ESO PRO FLUXCAL RESP"]
    flux, qual = images["FLUX"], images["QUAL"]
    n_slit, n_wave = flux.shape
    wave = wcs["FLUX"].pixel_to_world(np.arange(n_wave), np.zeros(n_wave))[0].to_value(u.nm)
    slit = wcs["FLUX"].pixel_to_world(np.zeros(n_slit), np.arange(n_slit))[1].to_value(u.arcsec)
    # the same bins as the 1D spectrum
    np.testing.assert_allclose(wave, np.asarray(merged["WAVE"], float), rtol=0, atol=1e-6)
    summed = flux.sum(axis=0) * (slit[1] - slit[0])
    one_d = np.asarray(merged["FLUX_CAL"], float)
    good = (qual == 0).all(axis=0) & ~band_mask(wave) & np.isfinite(one_d) & (np.asarray(merged["QUAL"]) == 0)
    ratios, medians = {}, []
    for low in np.arange(wave[0] // 20 * 20, wave[-1], 20.0):
        inside = good & (wave >= low) & (wave < low + 20.0)
        if inside.sum() > 100:
            ratio = summed[inside] / one_d[inside]
            median = float(np.median(ratio))
            noise = 1.2533 * 1.4826 * float(np.median(np.abs(ratio - median))) / np.sqrt(inside.sum())
            ratios[int(low)] = (round(median, 4), round(noise, 4))
            medians.append(median)
    assert len(ratios) > 15, ratios
    assert all(abs(m - 1) < 0.01 + 4 * n for m, n in ratios.values()), ratios
    assert np.median(medians) == pytest.approx(1.0, abs=0.01)


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_object_row_is_at_its_slit_position(night, arm):
    """GAL-A's profile along the slit (median over the good wavelengths) peaks at QC OBJ POS.

    The peak's position, refined by a parabola through the brightest row and its neighbours,
    within 0.05 arcsec (a sixth of a row) of OBJ POS: measured 0.007 (UV-VIS) and 0.010 (NIR).
    """
    run = stare_run(night, arm, "GAL-A")
    images, header, wcs = _read(product(run, f"SCI_SPEC2D_{arm}"))
    flux, qual = images["FLUX"], images["QUAL"]
    n_slit, n_wave = flux.shape
    slit = wcs["FLUX"].pixel_to_world(np.zeros(n_slit), np.arange(n_slit))[1].to_value(u.arcsec)
    wave = wcs["FLUX"].pixel_to_world(np.arange(n_wave), np.zeros(n_wave))[0].to_value(u.nm)
    columns = (qual == 0).all(axis=0) & ~band_mask(wave)
    profile = np.median(flux[:, columns], axis=1)
    peak = int(np.argmax(profile))
    left, centre, right = profile[peak - 1:peak + 2]
    position = slit[peak] + 0.5 * (left - right) / (left - 2 * centre + right) * (slit[1] - slit[0])
    assert position == pytest.approx(header["HIERARCH ESO QC OBJ POS"], abs=0.05)
    # the object, not a sky residual: the peak stands out of the rows 2 arcsec away and more, which hold
    # only sky-subtracted noise (measured: 1130 (UV-VIS) and 128 (NIR) times their scatter, their median
    # within 0.6 times it of zero)
    far = np.abs(slit - position) > 2.0
    scatter = 1.4826 * np.median(np.abs(profile[far] - np.median(profile[far])))
    assert centre > 50 * scatter and abs(np.median(profile[far])) < 2 * scatter


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_the_three_extensions_share_one_wcs(night, arm):
    run = stare_run(night, arm, "GAL-A")
    images, _, wcs = _read(product(run, f"SCI_SPEC2D_{arm}"))
    n_slit, n_wave = images["FLUX"].shape
    x, y = np.meshgrid(np.arange(0, n_wave, 997), np.arange(n_slit))
    reference = wcs["FLUX"].pixel_to_world(x, y)
    for name in ("QUAL", "ERRS"):
        other = wcs[name].pixel_to_world(x, y)
        np.testing.assert_array_equal(other[0].to_value(u.nm), reference[0].to_value(u.nm))
        np.testing.assert_array_equal(other[1].to_value(u.arcsec), reference[1].to_value(u.arcsec))
    assert np.isnan(images["FLUX"][images["QUAL"] > 0]).all()
    assert Path(product(run, f"SCI_SPEC2D_{arm}")).name.startswith(f"SCI_SPEC2D_{arm}_")
