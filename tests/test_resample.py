"""Flux-conserving rebinning, order merging and rectification, against analytic cases."""

import numpy as np
import pytest

from soxspipe.commonutils.resample import linear_edges, merge_orders, pixel_area, pixel_step, rebin, rectify_order
from synthetic_orders import SyntheticOrder


def test_rebin_conserves_flux_on_random_bins():
    rng = np.random.default_rng(0)
    edges = np.cumsum(np.r_[500.0, rng.uniform(0.01, 0.05, 400)])
    flux = rng.uniform(0, 100, 400)
    error = rng.uniform(1, 5, 400)
    new_edges = np.r_[edges[0], np.sort(rng.uniform(edges[0], edges[-1], 150)), edges[-1]]
    new_flux, new_error, coverage = rebin(edges, flux, error, new_edges)
    total = np.sum(flux * np.diff(edges))
    assert abs(np.sum(new_flux * np.diff(new_edges)) / total - 1) < 1e-6
    np.testing.assert_allclose(coverage, 1.0)


def test_rebin_errors_analytic():
    edges = np.arange(5.0)  # four bins of width 1, density 1, 2, 3, 4, errors 1, 2, 3, 4
    flux = np.array([1.0, 2, 3, 4])
    error = np.array([1.0, 2, 3, 4])
    # pairs merged: density (f1 + f2) / 2, error sqrt(s1^2 + s2^2) / 2
    f, e, _ = rebin(edges, flux, error, [0.0, 2, 4])
    np.testing.assert_allclose(f, [1.5, 3.5])
    np.testing.assert_allclose(e, [np.sqrt(5) / 2, 5 / 2])
    # a bin split in halves keeps its density and its error per half
    f, e, _ = rebin(edges, flux, error, [0.0, 0.5, 1.0])
    np.testing.assert_allclose(f, [1.0, 1.0])
    np.testing.assert_allclose(e, [1.0, 1.0])
    # a bin straddling two: overlaps 0.25 and 0.75 of width 1
    f, e, _ = rebin(edges, flux, error, [0.75, 1.75])
    np.testing.assert_allclose(f, [0.25 * 1 + 0.75 * 2])
    np.testing.assert_allclose(e, [np.hypot(0.25 * 1, 0.75 * 2)])


def test_rebin_outside_and_gaps():
    f, e, coverage = rebin([0.0, 1, 2], [2.0, np.nan], [1.0, 1.0], [-1.0, 0, 0.5, 1.5, 3])
    np.testing.assert_allclose(coverage, [0, 1, 0.5, 0])
    assert np.isnan(f[0]) and np.isnan(f[3])
    np.testing.assert_allclose(f[1:3], [2.0, 2.0])


def test_merge_orders_inverse_variance_in_the_overlap():
    # order A covers 0-6 with density 10 +- 1, order B covers 4-10 with density 13 +- 2
    a = (np.arange(7.0), np.full(6, 10.0), np.full(6, 1.0))
    b = (np.arange(4.0, 11.0), np.full(6, 13.0), np.full(6, 2.0))
    merged = merge_orders([a, b], np.arange(0.0, 11.0))
    # overlap (bins 4-5 and 5-6): (10 / 1 + 13 / 4) / (1 + 1 / 4) = 10.6, error 1 / sqrt(1.25)
    np.testing.assert_allclose(merged.flux, [10] * 4 + [10.6, 10.6] + [13] * 4)
    np.testing.assert_allclose(merged.error, [1] * 4 + [1 / np.sqrt(1.25)] * 2 + [2] * 4)
    np.testing.assert_array_equal(merged.n_orders, [1] * 4 + [2, 2] + [1] * 4)


def test_merge_orders_ignores_partly_covered_bins():
    a = (np.array([0.0, 1.0, 2.5]), np.array([4.0, 4.0]), np.array([1.0, 1.0]))
    b = (np.array([2.0, 3.0, 4.0]), np.array([8.0, 8.0]), np.array([1.0, 1.0]))
    merged = merge_orders([a, b], np.arange(0.0, 5.0))
    # bin 2-3 is half covered by order A: only order B counts there
    np.testing.assert_allclose(merged.flux, [4, 4, 8, 8])


@pytest.fixture(scope="module")
def order():
    return SyntheticOrder(seed=5).add_object(60000.0)


def _rectify(order, counts, wave_step, slit_step):
    wave_edges = linear_edges(order.wave_range[0] - 0.1, order.wave_range[1] + 0.1, wave_step)
    slit_edges = linear_edges(-order.half_slit - 0.5, order.half_slit + 0.5, slit_step)
    return rectify_order(counts, np.abs(counts) + 16.0, order.wavelength, order.slit, order.pixels,
                         wave_edges=wave_edges, slit_edges=slit_edges)


@pytest.mark.parametrize("steps", [(0.05, 0.25), (0.037, 0.19)])
def test_rectification_conserves_flux(order, steps):
    counts = order.object_true.astype(np.float32)
    rect = _rectify(order, counts, *steps)
    total = counts[order.pixels].astype(float).sum()
    assert abs(rect.flux.astype(float).sum() / total - 1) < 1e-6
    # the object's spectrum: counts per wavelength column / column width, where the column is fully inside
    wave = 0.5 * (rect.wave_edges[1:] + rect.wave_edges[:-1])
    inside = (wave > order.wave_range[0] + 0.5) & (wave < order.wave_range[1] - 0.5)
    spectrum = rect.flux.sum(axis=0)[inside] / np.diff(rect.wave_edges)[inside]
    assert abs(np.median(spectrum / order.object_density(wave[inside]) - 1)) < 0.01
    # the profile: the count-weighted mean slit position follows the trace (to a tenth of a pixel rms;
    # whole sub-pixels falling in cells leave a sampling ripple)
    slit = 0.5 * (rect.slit_edges[1:] + rect.slit_edges[:-1])
    centre = (rect.flux[:, inside] * slit[:, None]).sum(axis=0) / rect.flux[:, inside].sum(axis=0)
    assert np.sqrt(np.mean((centre - order.trace(wave[inside])) ** 2)) < 0.025


def test_rectification_of_a_flat_field_gives_its_density(order):
    density = 1000.0  # counts per nm per arcsec
    counts = np.where(order.pixels, density * order.area, 0).astype(np.float32)
    rect = _rectify(order, counts, 0.05, 0.25)
    well = rect.coverage > 0.5
    np.testing.assert_allclose(rect.density[well], density, rtol=1e-3)


def test_rectification_splits_a_pixel_analytically():
    # one pixel (100 counts, variance 50) of 0.1 nm x 0.2 arcsec, cut in half by a wavelength edge
    y, x = np.mgrid[0:5, 0:5].astype(float)
    wavelength, slit = 600.0 + 0.1 * y, 0.2 * x
    counts = np.full((5, 5), 100.0)
    pixels = np.zeros((5, 5), bool)
    pixels[2, 2] = True
    rect = rectify_order(counts, np.full((5, 5), 50.0), wavelength, slit, pixels,
                         wave_edges=[600.1, 600.2, 600.3], slit_edges=[0.2, 0.6])
    np.testing.assert_allclose(rect.flux, [[50.0, 50.0]])
    # each half carries half the counts: variance (1/2)^2 * 50
    np.testing.assert_allclose(rect.variance, [[12.5, 12.5]])
    # each half covers 0.05 x 0.2 of a 0.1 x 0.4 cell
    np.testing.assert_allclose(rect.coverage, [[0.25, 0.25]])
    np.testing.assert_allclose(rect.density, [[50 / 0.01, 50 / 0.01]])


def test_pixel_geometry_of_a_curved_tilted_order(order):
    # the analytic area varies by 12 % along the order; the order's border pixels are included
    area = pixel_area(order.wavelength, order.slit, order.pixels)
    np.testing.assert_allclose(area, order.area[order.pixels], rtol=1e-3)
    assert abs(pixel_step(order.slit, order.pixels) / order.scale - 1) < 0.01
