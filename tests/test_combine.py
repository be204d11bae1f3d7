"""Tests of the sigma-clipped frame stack."""

import numpy as np
import pytest

from soxspipe.commonutils.combine import StackResult, sigma_clipped_stack


def noise_frames(n, shape=(256, 256), sigma=4.0, level=100.0, seed=1):
    return np.random.default_rng(seed).normal(level, sigma, (n, *shape)).astype(np.float32)


def test_hand_computed_mean_and_uncertainty():
    data = np.array(
        [
            [[1.0, 2.0], [10.0, -1.0]],
            [[2.0, 4.0], [12.0, 1.0]],
            [[6.0, 6.0], [14.0, 3.0]],
        ]
    )
    result = sigma_clipped_stack(data)
    assert isinstance(result, StackResult)
    np.testing.assert_allclose(result.data, [[3.0, 4.0], [12.0, 1.0]], rtol=1e-6)
    # std (ddof=1) / sqrt(3): pixel (0, 0) has deviations -2, -1, 3 -> std sqrt(7)
    np.testing.assert_allclose(result.uncertainty, [[np.sqrt(7 / 3), 2 / np.sqrt(3)], [2 / np.sqrt(3)] * 2], rtol=1e-6)
    assert result.n_used.dtype == np.int16 and (result.n_used == 3).all()
    assert result.data.dtype == np.float32 and result.uncertainty.dtype == np.float32
    assert not result.mask.any() and result.n_clipped == 0


def test_cosmic_ray_in_one_frame_is_clipped():
    frames = noise_frames(5, shape=(64, 64), sigma=3.0)
    clean = frames.copy()
    frames[2, 10, 20] += 500.0
    for errors in (None, np.full(frames.shape, 3.0, np.float32)):
        result = sigma_clipped_stack(frames, errors=errors)
        assert result.n_clipped == 1
        assert result.n_used[10, 20] == 4
        assert result.data[10, 20] == pytest.approx(np.delete(clean[:, 10, 20], 2).mean(), rel=1e-6)
        others = np.ones((64, 64), bool)
        others[10, 20] = False
        np.testing.assert_allclose(result.data[others], clean.mean(axis=0)[others], rtol=1e-6)
    # the input is untouched
    assert frames[2, 10, 20] == pytest.approx(clean[2, 10, 20] + 500.0)


def test_two_outliers_of_seven_are_clipped_and_no_clipping_when_disabled():
    frames = noise_frames(7, shape=(32, 32), sigma=2.0)
    frames[1, 5, 5] += 80.0
    frames[4, 5, 5] += 300.0
    result = sigma_clipped_stack(frames)
    assert result.n_clipped == 2 and result.n_used[5, 5] == 5
    assert result.data[5, 5] == pytest.approx(frames[[0, 2, 3, 5, 6], 5, 5].mean(), rel=1e-6)
    unclipped = sigma_clipped_stack(frames, max_iterations=0)
    assert unclipped.n_clipped == 0
    assert unclipped.data[5, 5] == pytest.approx(frames[:, 5, 5].mean(), rel=1e-6)


def test_masked_and_non_finite_values_are_excluded():
    frames = noise_frames(4, shape=(16, 16), sigma=1.0)
    masks = np.zeros(frames.shape, bool)
    masks[0, 3, 3] = True
    masks[:, 7, 8] = True  # bad in every frame
    frames[1, 3, 3] = 1e6  # would dominate the mean; also not the only survivor left
    frames[2, 9, 9] = np.nan
    result = sigma_clipped_stack(frames, masks=masks)
    assert result.data[3, 3] == pytest.approx(frames[[2, 3], 3, 3].mean(), rel=1e-6)
    assert result.n_used[3, 3] == 2
    assert result.data[9, 9] == pytest.approx(frames[[0, 1, 3], 9, 9].mean(), rel=1e-6)
    assert result.n_used[9, 9] == 3
    assert np.flatnonzero(result.mask).tolist() == [7 * 16 + 8]
    assert result.n_used[7, 8] == 0
    assert np.isnan(result.data[7, 8]) and np.isnan(result.uncertainty[7, 8])
    # n_clipped counts only the clipped outlier, not masked or NaN values
    assert result.n_clipped == 1
    filled = sigma_clipped_stack(frames, masks=masks, fill_value=0.0)
    assert filled.data[7, 8] == 0.0 and filled.uncertainty[7, 8] == 0.0


@pytest.mark.parametrize("n_frames", [3, 5, 8])
def test_noise_of_stack_is_sigma_over_sqrt_n(n_frames):
    sigma = 4.0
    frames = noise_frames(n_frames, shape=(384, 384), sigma=sigma, seed=n_frames)
    result = sigma_clipped_stack(frames)
    expected = sigma / np.sqrt(n_frames)
    # 147k pixels: the measured std is good to 0.2 %; a median would be ~1.2x too noisy
    assert np.std(result.data) == pytest.approx(expected, rel=0.02)
    # with few frames the per-pixel MAD alone would clip ~1-7 % of these Gaussian values
    assert result.n_clipped < 1e-4 * frames.size
    # per-pixel variance estimates are unbiased on average
    assert np.sqrt(np.mean(result.uncertainty.astype(np.float64) ** 2)) == pytest.approx(expected, rel=0.02)


def test_quantised_data_with_ties_is_not_overclipped():
    # integer values with a sigma of 0.8: the per-pixel MAD is often 0
    frames = np.round(noise_frames(5, shape=(256, 256), sigma=0.8, seed=7)).astype(np.int16)
    result = sigma_clipped_stack(frames)
    assert result.n_clipped < 1e-4 * frames.size
    assert np.std(result.data) == pytest.approx(np.std(frames[0].astype(float)) / np.sqrt(5), rel=0.03)


def test_propagated_errors():
    rng = np.random.default_rng(11)
    shape = (256, 256)
    frame_sigma = np.array([1.0, 2.0, 3.0, 4.0], np.float32)
    errors = np.broadcast_to(frame_sigma[:, None, None], (4, *shape)) * rng.uniform(0.9, 1.1, shape)
    frames = (50.0 + rng.normal(size=(4, *shape)) * errors).astype(np.float32)
    masks = np.zeros(frames.shape, bool)
    masks[3, :10] = True
    result = sigma_clipped_stack(frames, errors=errors, masks=masks)
    assert result.n_clipped == 0
    expected = np.sqrt((errors**2).sum(axis=0)) / 4
    expected[:10] = np.sqrt((errors[:3, :10] ** 2).sum(axis=0)) / 3
    np.testing.assert_allclose(result.uncertainty, expected, rtol=1e-5)
    # and the propagated error describes the actual scatter of the mean
    assert np.std(result.data[10:]) == pytest.approx(np.sqrt((frame_sigma**2).sum()) / 4, rel=0.02)


def test_inputs_as_list_or_other_dtype_give_the_same_result():
    frames = noise_frames(5, shape=(40, 50), sigma=2.0)
    frames[0, 1, 2] = 1000.0
    reference = sigma_clipped_stack(frames)
    for variant in (list(frames), frames.astype(np.float64)):
        result = sigma_clipped_stack(variant)
        np.testing.assert_allclose(result.data, reference.data, rtol=1e-6)
        assert result.n_clipped == reference.n_clipped == 1


def test_single_frame_has_unknown_uncertainty_without_errors():
    frame = noise_frames(1, shape=(8, 8))
    result = sigma_clipped_stack(frame)
    np.testing.assert_array_equal(result.data, frame[0])
    assert np.isnan(result.uncertainty).all() and not result.mask.any()


def test_single_survivor_uses_typical_scatter():
    frames = noise_frames(3, shape=(128, 128), sigma=2.0)
    masks = np.zeros(frames.shape, bool)
    masks[:2, 0, 0] = True
    result = sigma_clipped_stack(frames, masks=masks)
    assert result.n_used[0, 0] == 1
    # median over pixels of the 3-frame std is ~0.83 sigma (chi distribution, 2 dof)
    assert result.uncertainty[0, 0] == pytest.approx(2.0 * np.sqrt(np.log(4) / 2), rel=0.05)


@pytest.mark.parametrize(
    "kwargs",
    [
        {"errors": np.ones((2, 4, 5))},
        {"masks": np.zeros((3, 4, 4), bool)},
        {"lower_sigma": 0.0},
        {"max_iterations": -1},
    ],
)
def test_bad_arguments_raise(kwargs):
    with pytest.raises(ValueError):
        sigma_clipped_stack(np.zeros((3, 4, 5)), **kwargs)


def test_bad_data_shape_raises():
    with pytest.raises(ValueError, match="n_frames"):
        sigma_clipped_stack(np.zeros((4, 5)))
    with pytest.raises(ValueError, match="same shape"):
        sigma_clipped_stack([np.zeros((4, 5)), np.zeros((4, 6))])
