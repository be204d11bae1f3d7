"""Nodding: A/B pairing, difference frames, residual sky, and the combination of spectra and 2D images."""

import logging

import numpy as np
import pytest
from scipy.special import erf

from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.extraction import OptimalExtraction, Spectrum1D, find_object
from soxspipe.commonutils.nodding import (classify_nod_frames, combine_rectified, combine_spectra, header_floats,
                                          linear_combination, nod_differences, object_images_mask, pair_nod_frames,
                                          residual_sky, shift_rows)
from soxspipe.commonutils.resample import RectifiedOrder, rectify_order
from soxspipe.simulator.night import plan_science
from synthetic_nodding import slit_exposure

THROW = 5.0


# -- pairing ---------------------------------------------------------------------------------


def test_pairing_abba_cycles_with_jitter():
    """Two ABBA cycles as the simulator plans them (5 arcsec throw, 1 arcsec jitter box)."""
    exposures, _, _ = plan_science("NIR", 60000.0, 1, size="large", rng=np.random.default_rng(5))
    nod = [e for e in exposures if e.dpr[2].endswith("NODDING")]
    offsets = np.array([e.header["nod_cumoff_y"] for e in nod])
    times = np.array([e.mjd for e in nod])
    assert len(nod) == 8 and np.all(np.abs(np.abs(offsets) - THROW / 2) <= 0.5)
    pairing = pair_nod_frames(offsets, times)
    np.testing.assert_array_equal(pairing.is_a, [True, False, False, True] * 2)
    np.testing.assert_array_equal(pairing.pairs, [[0, 1], [3, 2], [4, 5], [7, 6]])
    assert pairing.unpaired.size == 0
    # the exact jittered offsets are kept: the throw of each pair is A minus B
    np.testing.assert_allclose(pairing.throws, offsets[[0, 3, 4, 7]] - offsets[[1, 2, 5, 6]])
    assert np.all(np.abs(pairing.throws - THROW) <= 1.0)


@pytest.mark.parametrize("offsets, pairs", [([2.3, -2.6], [[0, 1]]), ([-2.6, 2.3], [[1, 0]]),
                                            ([2.4, 2.6, -2.7, -2.2], [[0, 3], [1, 2]])])
def test_pairing_ab_and_ba(offsets, pairs):
    # AABB: the two middle frames are closest, then the outer two
    pairing = pair_nod_frames(offsets, np.arange(len(offsets)) * 0.004)
    np.testing.assert_array_equal(pairing.pairs, pairs)
    assert pairing.unpaired.size == 0


def test_orphan_is_reported_and_left_out(caplog):
    offsets = [2.4, -2.7, -2.3, 2.6, 2.55]  # ABBA + A
    with caplog.at_level(logging.WARNING, logger="soxspipe.commonutils.nodding"):
        pairing = pair_nod_frames(offsets, np.arange(5.0), labels=[f"f{i}.fits" for i in range(5)])
    np.testing.assert_array_equal(pairing.pairs, [[0, 1], [3, 2]])
    np.testing.assert_array_equal(pairing.unpaired, [4])
    assert "f4.fits (A)" in caplog.text and "no B frame" in caplog.text
    # a B frame left alone, in the middle
    pairing = pair_nod_frames([2.5, -2.5, -2.4], [0.0, 1.0, 2.5])
    np.testing.assert_array_equal(pairing.pairs, [[0, 1]])
    np.testing.assert_array_equal(pairing.unpaired, [2])


def test_no_pair_and_undecided_frames_are_clear_errors():
    with pytest.raises(DataError, match="3 A and 0 B frames"):
        pair_nod_frames([2.5, 2.4, 2.6], [0.0, 1.0, 2.0])
    with pytest.raises(DataError, match="b.fits: the nod offset 'ESO SEQ CUMOFF Y' is 0"):
        classify_nod_frames([2.5, 0.0, -2.5], labels=["a.fits", "b.fits", "c.fits"])
    with pytest.raises(DataError, match="frame 2: no numerical 'ESO SEQ CUMOFF Y'"):
        header_floats([{"ESO SEQ CUMOFF Y": 2.5}, {}], "nod_cumoff_y")
    np.testing.assert_array_equal(header_floats([{"ESO SEQ CUMOFF Y": 2.5}, {"ESO SEQ CUMOFF Y": -2.1}],
                                                "nod_cumoff_y"), [2.5, -2.1])


# -- difference frames -------------------------------------------------------------------------


def test_linear_combination_by_hand():
    f1, f2 = np.array([[10.0, 20.0], [30.0, 40.0]]), np.array([[1.0, 2.0], [3.0, 4.0]])
    v1, v2 = np.full((2, 2), 4.0), np.full((2, 2), 9.0)
    m1, m2 = np.array([[1, 0], [0, 0]], bool), np.array([[0, 0], [0, 1]], bool)
    out = linear_combination([f1, f2], [v1, v2], [1.0, -2.0], [m1, m2])
    np.testing.assert_array_equal(out.flux, [[8.0, 16.0], [24.0, 32.0]])
    np.testing.assert_array_equal(out.variance, np.full((2, 2), 4.0 + 4 * 9.0))
    np.testing.assert_array_equal(out.mask, [[True, False], [False, True]])
    assert out.flux.dtype == np.float32
    # a frame with coefficient 0 brings neither counts nor bad pixels
    assert not linear_combination([f1, f2], [v1, v2], [1.0, 0.0], [m1, m2]).mask[1, 1]


def test_nod_differences_signs_positions_and_masks():
    frames = [np.full((3, 3), v) for v in (5.0, 2.0)]
    variances = [np.full((3, 3), v) for v in (5.0, 2.0)]
    masks = [np.eye(3, dtype=bool), np.zeros((3, 3), bool)]
    pairing = pair_nod_frames([-2.2, 2.9], [0.0, 1.0])
    ab, ba = nod_differences(pairing, frames, variances, masks, origin=0.1, direction=-1.0)
    assert (ab.positive, ab.negative, ba.positive, ba.negative) == (1, 0, 0, 1)
    np.testing.assert_array_equal(ab.flux, -3.0)
    np.testing.assert_array_equal(ba.flux, 3.0)
    np.testing.assert_array_equal(ab.variance, 7.0)
    np.testing.assert_array_equal(ba.mask, np.eye(3, dtype=bool))
    # slit = origin + direction * offset
    assert ab.positive_slit == pytest.approx(0.1 - 2.9) and ab.negative_slit == pytest.approx(0.1 + 2.2)
    assert ba.positive_slit == pytest.approx(0.1 + 2.2)
    slit = np.array([-3.2, -2.8, 0.0, 2.2, 2.5])
    np.testing.assert_array_equal(object_images_mask(slit, (ab.positive_slit, ab.negative_slit), 0.3),
                                  [False, True, False, True, True])


def _nod_pair(seed, amplitude=60000.0):
    """An A frame and a B frame, jittered, the sky 3 % brighter in B."""
    a = slit_exposure(THROW / 2 + 0.31, seed=seed, amplitude=amplitude, sky_level=1.00)
    b = slit_exposure(-THROW / 2 - 0.22, seed=seed + 100, amplitude=amplitude, sky_level=1.03)
    pairing = pair_nod_frames([a.object_slit, b.object_slit], [0.0, 1.0])
    return a, b, nod_differences(pairing, [a.flux, b.flux], [a.variance, b.variance])


def test_residual_sky_of_a_difference_frame():
    a, b, (ab, ba) = _nod_pair(1)
    sky = residual_sky(ab, a.wavelength, a.slit, a.order_map, half_width=4 * a.object_sigma)
    # what is left of the sky is noise
    assert 0.8 < sky.chi2[7] < 1.3
    # the model finds the true residual (3 % of the sky: up to 240 counts on the lines) to within its noise
    truth = a.sky_true - b.sky_true
    sky_pixels = a.pixels & ~object_images_mask(a.slit, (ab.positive_slit, ab.negative_slit), 4 * a.object_sigma)
    error = (sky.sky - truth)[sky_pixels]
    assert np.sqrt(np.mean(error ** 2)) < 0.5 * np.std(truth[sky_pixels])
    assert 0.5 < np.mean(error ** 2) / np.mean(sky.variance[sky_pixels]) < 2.0


@pytest.mark.parametrize("seed", [1, 2])
def test_difference_frames_recover_the_object(seed):
    """A - B and B - A, each extracted at its positive image after the residual sky, then combined."""
    a, b, (ab, ba) = _nod_pair(seed)
    sky = residual_sky(ab, a.wavelength, a.slit, a.order_map, half_width=4 * a.object_sigma)
    spectra = []
    for diff, frame, residual in ((ab, a, sky.sky), (ba, b, -sky.sky)):
        # the brightest image is the positive one, where the offsets say
        found = find_object(diff.flux, a.wavelength, a.slit, a.pixels, sky=residual)
        assert abs(found.slit - frame.trace(np.mean(frame.wave_range))) < 0.05
        extraction = OptimalExtraction(frame.trace, 2.0)
        spectra.append(extraction(diff.flux, diff.variance, a.wavelength, a.slit, a.pixels, sky=residual,
                                  sky_variance=sky.variance, bad=diff.mask))
    combined = combine_spectra(spectra)
    truth = a.object_density(combined.wavelength)
    full = combined.n_pixels > 20  # both spectra, whole bins
    for spectrum in spectra + [combined]:
        assert abs(np.median(spectrum.flux[full] / truth[full] - 1)) < 0.01
    # the combined error is that of the two, and it describes the scatter about the truth
    np.testing.assert_allclose(combined.error[full], 1 / np.hypot(1 / spectra[0].error, 1 / spectra[1].error)[full])
    assert 0.8 < np.std((combined.flux[full] - truth[full]) / combined.error[full]) < 1.25


# -- combining spectra -------------------------------------------------------------------------


def _spectra(n_bins=200, errors=(10.0, 12.0, 15.0, 20.0), seed=4):
    rng = np.random.default_rng(seed)
    edges = np.linspace(600.0, 610.0, n_bins + 1)
    truth = 1000.0 + 200.0 * np.sin(np.linspace(0, 6, n_bins))
    spectra = [Spectrum1D(edges, truth + rng.normal(0, e, n_bins), np.full(n_bins, e), np.full(n_bins, 3.0 + i),
                          np.full(n_bins, 12), np.zeros(n_bins, int)) for i, e in enumerate(errors)]
    return truth, spectra


def test_combine_four_spectra_rejects_outliers():
    truth, spectra = _spectra()
    spectra[2].flux[37] += 50 * spectra[2].error[37]  # a cosmic ray of an A frame
    spectra[0].flux[80] -= 30 * spectra[0].error[80]  # one of a B frame: negative in A - B
    combined = combine_spectra(spectra)
    assert set(zip(*np.nonzero(combined.outliers))) == {(2, 37), (0, 80)}
    # by hand: the inverse-variance mean of the three others
    for bin_, out in ((37, 2), (80, 0)):
        others = [s for i, s in enumerate(spectra) if i != out]
        w = np.array([1 / s.error[bin_] ** 2 for s in others])
        f = np.array([s.flux[bin_] for s in others])
        assert combined.flux[bin_] == pytest.approx((w * f).sum() / w.sum(), rel=1e-12)
        assert combined.error[bin_] == pytest.approx(1 / np.sqrt(w.sum()), rel=1e-12)
        assert combined.n_combined[bin_] == 3 and combined.n_pixels[bin_] == 36
    w = np.array([1 / s.error[0] ** 2 for s in spectra])
    assert combined.sky[0] == pytest.approx((w * [3.0, 4.0, 5.0, 6.0]).sum() / w.sum())
    assert combined.error[0] == pytest.approx(1 / np.sqrt(w.sum()))
    chi = (combined.flux - truth) / combined.error
    assert abs(np.mean(chi)) < 0.25 and 0.85 < np.std(chi) < 1.15


def test_combine_spectra_without_rejection_and_bad_grids():
    truth, spectra = _spectra(errors=(10.0, 10.0))
    spectra[1].flux[5] += 1000.0
    combined = combine_spectra(spectra)  # two values: nothing can be rejected
    assert not combined.outliers.any()
    assert combined.flux[5] == pytest.approx(0.5 * (spectra[0].flux[5] + spectra[1].flux[5]))
    spectra[1].flux[6] = np.nan  # a gap: the other spectrum alone
    assert combine_spectra(spectra).flux[6] == spectra[0].flux[6]
    shifted = Spectrum1D(spectra[0].edges + 0.01, *(getattr(spectra[0], k) for k in
                                                    ("flux", "error", "sky", "n_pixels")))
    with pytest.raises(ValueError, match="same wavelength bins"):
        combine_spectra([spectra[0], shifted])


# -- shift and combine in (wavelength, slit) ---------------------------------------------------------


def test_shift_rows_by_hand():
    column = np.array([0.0, 4.0, 0.0, 0.0])
    # a row that takes any part of its value from beyond the image is unknown
    np.testing.assert_allclose(shift_rows(column, 0.25), [np.nan, 3.0, 1.0, 0.0])
    np.testing.assert_allclose(shift_rows(column, 0.25, power=2), [np.nan, 2.25, 0.25, 0.0])
    np.testing.assert_allclose(shift_rows(column, -1.5), [2.0, 0.0, np.nan, np.nan])  # half went off row 0
    np.testing.assert_allclose(shift_rows(column, 2.0), [np.nan, np.nan, 0.0, 4.0])


def _gaussian_cells(slit_edges, centre, sigma, total):
    return total * 0.5 * np.diff(erf((slit_edges - centre) / (np.sqrt(2) * sigma)))


def test_combine_rectified_analytic_images():
    """Noiseless Gaussians at jittered positions on a 0.25 arcsec grid, sky noise different in each."""
    slit_edges = np.linspace(-6.0, 6.0, 49)
    wave_edges = np.linspace(600.0, 601.0, 11)
    positions = [2.81, -2.72, -2.09, 2.13]
    images = []
    for i, p in enumerate(positions):
        flux = np.outer(_gaussian_cells(slit_edges, p, 0.4, 1000.0), 1 + 0.1 * np.arange(10))
        variance = np.abs(flux) + 50.0 * (i + 1)
        images.append(RectifiedOrder(wave_edges, slit_edges, flux, variance, np.ones_like(flux)))
    combined = combine_rectified(images, positions)
    centres = 0.5 * (slit_edges[1:] + slit_edges[:-1])
    profile = combined.flux.sum(axis=1)
    truth_profile = images[0].flux.sum(axis=1)
    assert combined.reference == 2.81
    assert abs((profile @ centres / profile.sum() - 2.81) / 0.25) < 0.05
    np.testing.assert_allclose(combined.flux.sum(axis=0), images[0].flux.sum(axis=0), rtol=1e-4)
    # only the frame's own shift (none) leaves the first image intact: the others are broadened a little
    assert 0.9 < profile.max() / truth_profile.max() < 1.0
    # the first two rows lose the frames shifted in from beyond the grid
    assert combined.n_combined[0, 0] < 4 and combined.n_combined[24, 0] == 4
    # the variance of a weighted mean of four is below that of the best frame
    assert np.all(combined.variance[24] < images[0].variance[24])


def test_combine_rectified_rejects_a_cosmic_and_checks_grids():
    slit_edges = np.linspace(-3.0, 3.0, 25)
    wave_edges = np.linspace(600.0, 601.0, 6)
    images = []
    for i in range(4):
        flux = np.full((24, 5), 100.0 + i)
        images.append(RectifiedOrder(wave_edges, slit_edges, flux, np.full((24, 5), 100.0), np.ones((24, 5))))
    images[1].flux[10, 2] += 5000.0
    combined = combine_rectified(images, [0.0] * 4, sigma=5.0)
    assert combined.flux[10, 2] == pytest.approx((100.0 + 102.0 + 103.0) / 3)
    assert combined.n_combined[10, 2] == 3 and combined.flux[11, 2] == pytest.approx(101.5)
    coarse = RectifiedOrder(wave_edges, np.linspace(-3.0, 3.0, 13), np.ones((12, 5)), np.ones((12, 5)),
                            np.ones((12, 5)))
    with pytest.raises(ValueError, match="same"):
        combine_rectified([images[0], coarse], [0.0, 0.0])


def _rectified_nod_cycle(noise):
    """An ABBA cycle with jitter, rectified after the residual sky: 4 difference images."""
    offsets = [THROW / 2 + 0.31, -THROW / 2 - 0.22, -THROW / 2 + 0.41, THROW / 2 - 0.37]
    frames = [slit_exposure(o, seed=i + 1, sky_level=1 + 0.02 * i, object_drift=0.0, noise=noise)
              for i, o in enumerate(offsets)]
    pairing = pair_nod_frames(offsets, np.arange(4.0))
    diffs = nod_differences(pairing, [f.flux for f in frames], [f.variance for f in frames])
    g = frames[0]
    grid = {"wave_edges": np.linspace(g.wave_range[0] + 0.5, g.wave_range[1] - 0.5, 150),
            "slit_edges": np.linspace(-6.0, 6.0, 49)}
    rectified = []
    for d in diffs:
        sky = residual_sky(d, g.wavelength, g.slit, g.order_map, half_width=4 * g.object_sigma)
        rectified.append(rectify_order(d.flux - sky.sky, d.variance + sky.variance, g.wavelength, g.slit, g.pixels,
                                       **grid))
    # the truth: each frame's own object, rectified noiseless on the same grid
    truths = [rectify_order(frames[d.positive].object_true, frames[d.positive].object_true, g.wavelength, g.slit,
                            g.pixels, **grid) for d in diffs]
    return diffs, rectified, truths, grid


def _window_counts(image, slit_edges, centre, half_width=1.6):
    """Counts of a fully covered cell, summed over the slit bins within ``half_width`` of ``centre``."""
    centres = 0.5 * (slit_edges[1:] + slit_edges[:-1])
    full = np.where(image.coverage > 0.5, image.flux / np.where(image.coverage > 0, image.coverage, 1), 0.0)
    return full[np.abs(centres - centre) < half_width].sum()


@pytest.mark.parametrize("noise", [False, True])
def test_combine_rectified_nod_cycle(noise):
    diffs, rectified, truths, grid = _rectified_nod_cycle(noise)
    a_position = diffs[0].positive_slit
    combined = combine_rectified(rectified, [d.positive_slit for d in diffs], reference=a_position)
    slit_edges = grid["slit_edges"]
    centres = 0.5 * (slit_edges[1:] + slit_edges[:-1])
    window = np.abs(centres - a_position) < 1.6
    profile = combined.flux[window].sum(axis=1)
    # the object sits at the first A frame's position
    assert abs((profile @ centres[window] / profile.sum() - a_position) / np.diff(slit_edges)[0]) < 0.05
    # and carries the counts of one exposure (each image's truth at its own position, averaged)
    truth = np.mean([_window_counts(t, slit_edges, d.positive_slit) for t, d in zip(truths, diffs)])
    ratio = _window_counts(combined, slit_edges, a_position) / truth
    assert abs(ratio - 1) < (0.005 if noise else 0.001)
