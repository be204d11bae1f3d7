"""Offset mode: object and sky frames, the sky frames chosen by time, object minus sky."""

import numpy as np
import pytest

from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.extraction import OptimalExtraction
from soxspipe.commonutils.offset_sky import choose_sky_frames, is_sky_frame, split_offset_frames, subtract_sky_frames
from soxspipe.commonutils.sky import sky_model
from soxspipe.simulator.night import plan_science
from synthetic_nodding import slit_exposure

DAY = 86400.0


def test_split_the_simulated_offset_ob():
    exposures, _, _ = plan_science("VIS", 60000.0, 1, size="large", rng=np.random.default_rng(5))
    offset = [e for e in exposures if e.dpr[2].endswith("OFFSET")]
    ra = [e.header["fixoff_ra"] for e in offset]
    dec = [e.header["fixoff_dec"] for e in offset]
    objects, skies = split_offset_frames(ra, dec)
    np.testing.assert_array_equal(objects, [0, 3])
    np.testing.assert_array_equal(skies, [1, 2])
    # the simulator's truth agrees: the sky frames hold no object
    assert [e.scene.get("object") is None for e in offset] == [False, True, True, False]


def test_sky_frames_by_offset_or_by_absence_of_object():
    np.testing.assert_array_equal(is_sky_frame([0.0, 0.3, 0.0, 30.0], [0.0, 0.0, -2.0, 0.0], min_offset=0.5),
                                  [False, False, True, True])
    np.testing.assert_array_equal(is_sky_frame([0.0, 0.0], [0.0, 0.0], has_object=[True, False]), [False, True])


def test_offset_ob_errors():
    with pytest.raises(DataError, match="no sky frame: all 3 frames are within 0.5 arcsec"):
        split_offset_frames([0.0, 0.1, 0.0], [0.0, 0.0, 0.2])
    with pytest.raises(DataError, match="no object frame"):
        split_offset_frames([30.0, -30.0], [30.0, 30.0])
    with pytest.raises(DataError, match="b.fits: no valid 'ESO SEQ FIXOFF RA'"):
        split_offset_frames([0.0, np.nan, 30.0], [0.0, 0.0, 30.0], labels=["a.fits", "b.fits", "c.fits"])
    with pytest.raises(DataError, match="no sky frame"):
        choose_sky_frames([0.0], [300.0], [], [])


# sky frames start at 0, 1000 and 2000 s (300 s each), object frames at 500 and 2500 s (600 s each):
# mid-exposure times 150, 1150, 2150 and 800, 2800 s
SKY_START = np.array([0.0, 1000.0, 2000.0]) / DAY + 60000.0
OBJECT_START = np.array([500.0, 2500.0]) / DAY + 60000.0


def test_nearest_sky_frame_scaled_by_exposure_time():
    choices = choose_sky_frames(OBJECT_START, 600.0, SKY_START, 300.0, n_sky=1)
    assert [c.sky for c in choices] == [(1,), (2,)]  # 350 s after, and the last
    assert [c.coefficients for c in choices] == [(2.0,), (2.0,)]
    # an exact tie goes to the earlier frame
    tie = choose_sky_frames([650.0 / DAY], 0.0, [0.0, 1000.0 / DAY], 300.0)[0]
    assert tie.sky == (0,)


def test_bracketing_sky_frames_interpolated_in_time():
    first, last = choose_sky_frames(OBJECT_START, 600.0, SKY_START, 300.0, n_sky=2)
    # 800 s lies 650 s after the sky at 150 s and 350 s before the one at 1150 s
    assert first.sky == (0, 1)
    np.testing.assert_allclose(first.weights, (0.35, 0.65), rtol=1e-6)
    np.testing.assert_allclose(first.coefficients, (0.7, 1.3), rtol=1e-6)
    # nothing after the last object frame: the nearest sky alone
    assert last.sky == (2,) and last.coefficients == (2.0,)


def _rate(t):
    """Sky rate (counts per s, times a pattern) rising 10 % per hour."""
    return 2.0 * (1 + 0.1 * t * DAY / 3600.0)


def test_object_minus_sky_by_hand():
    rng = np.random.default_rng(1)
    pattern = rng.uniform(0.5, 1.5, (20, 30))
    obj = np.zeros((20, 30))
    obj[8:12] = 500.0
    t_sky = SKY_START + 150.0 / DAY
    t_obj = OBJECT_START[0] + 300.0 / DAY
    # a rate linear in time integrates to the rate at mid-exposure times the exposure time
    skies = [pattern * _rate(t - SKY_START[0]) * 300.0 for t in t_sky]
    sky_var = [s + 16.0 for s in skies]
    frame = obj + pattern * _rate(t_obj - SKY_START[0]) * 600.0
    sky_masks = [np.zeros((20, 30), bool) for _ in skies]
    sky_masks[1][3, 4] = True
    sky_masks[2][5, 6] = True  # a frame not used
    mask = np.zeros((20, 30), bool)
    mask[0, 0] = True
    bracketing = choose_sky_frames(OBJECT_START, 600.0, SKY_START, 300.0, n_sky=2)[0]
    out = subtract_sky_frames(frame, frame + 16.0, skies, sky_var, bracketing, mask=mask, sky_masks=sky_masks)
    # the interpolated sky is exact for a sky changing linearly in time
    np.testing.assert_allclose(out.flux, obj, atol=2e-3)
    np.testing.assert_allclose(out.variance, frame + 16.0 + 0.7 ** 2 * sky_var[0] + 1.3 ** 2 * sky_var[1],
                               rtol=1e-6)
    assert set(zip(*np.nonzero(out.mask))) == {(0, 0), (3, 4)}
    # the nearest frame alone leaves the change of the sky over 350 s: 2 * 0.1 * 350 / 3600 per s, times 600 s
    nearest = choose_sky_frames(OBJECT_START, 600.0, SKY_START, 300.0, n_sky=1)[0]
    out = subtract_sky_frames(frame, frame + 16.0, skies, sky_var, nearest)
    np.testing.assert_allclose(out.flux - obj, -pattern * 2.0 * 0.1 * 350.0 / 3600.0 * 600.0, rtol=1e-4)


def test_offset_extraction_recovers_the_object():
    """Object frame between two sky frames, the sky rising 3 % per frame, noise: object minus
    interpolated sky, residual sky as in stare, optimal extraction."""
    sky_frames = [slit_exposure(0.0, seed=10 + i, amplitude=0.0, sky_level=1.0 + 0.06 * i) for i in range(2)]
    target = slit_exposure(0.0, seed=20, sky_level=1.03)
    choice = choose_sky_frames([1000.0 / DAY], 300.0, [0.0, 2000.0 / DAY], 300.0, n_sky=2)[0]
    assert choice.sky == (0, 1) and np.allclose(choice.coefficients, (0.5, 0.5))
    diff = subtract_sky_frames(target.flux, target.variance, [s.flux for s in sky_frames],
                               [s.variance for s in sky_frames], choice)
    g = target
    residual = sky_model(diff.flux, diff.variance, g.wavelength, g.slit, g.order_map, object_mask=g.object_mask(),
                         illumination_degree=0)
    assert 0.8 < residual.chi2[7] < 1.3
    spectrum = OptimalExtraction(g.trace, 2.0)(diff.flux, diff.variance, g.wavelength, g.slit, g.pixels,
                                               sky=residual.sky, sky_variance=residual.variance)
    truth = g.object_density(spectrum.wavelength)
    full = spectrum.n_pixels > 10
    assert abs(np.median(spectrum.flux[full] / truth[full] - 1)) < 0.01
    assert 0.8 < np.std((spectrum.flux[full] - truth[full]) / spectrum.error[full]) < 1.25
