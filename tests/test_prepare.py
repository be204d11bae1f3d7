"""Prepared frames: trimming, overscan, electrons, uncertainty and masks on frames with known values."""

import numpy as np
import pytest
from astropy import units as u
from astropy.nddata import CCDData, StdDevUncertainty

from rawframes import raw_header
from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.prepare import prepare_frame


def vis_raw(binning):
    """A VIS frame: bias 1000 ADU + a linear row drift in every column, signal 200 ADU + a ramp in the science columns."""
    bx, by = binning
    ny, nx = 4096 // by, 908 // bx
    rows = np.arange(ny, dtype=np.float64)[:, None]
    raw = np.full((ny, nx), 1000.0) + 0.002 * rows
    x0, x1 = 50 // bx, 858 // bx
    signal = 200.0 + np.arange(x1 - x0)[None, :] * 0.5 + np.zeros((ny, 1))
    raw[:, x0:x1] += signal
    return raw.astype(np.uint16).astype(np.float64), signal, (x0, x1)


@pytest.mark.parametrize("binning", [(1, 1), (2, 1)])
def test_vis_trim_overscan_electrons_uncertainty(binning):
    raw, _, (x0, x1) = vis_raw(binning)
    header = raw_header("VIS", binning=binning, conad=0.6, ron=3.0)
    ccd = prepare_frame(raw, header, overscan_smooth_rows=15)
    assert ccd.data.shape == (4096 // binning[1], (858 - 50) // binning[0])
    assert ccd.unit == u.electron and ccd.data.dtype == np.float32
    # the overscan column level equals the bias + drift of each row, up to the uint16 truncation
    expected = (raw[:, x0:x1] - raw[:, -1:]) * 0.6
    assert np.allclose(ccd.data, expected, atol=0.6 + 1e-4)
    assert np.median(np.abs(ccd.data - expected)) < 0.31
    expected_err = np.sqrt(3.0**2 + np.maximum(ccd.data, 0))
    assert np.allclose(ccd.uncertainty.array, expected_err, rtol=1e-5)
    assert not ccd.mask.any()


def test_gain_keywords_and_fallback():
    raw, _, _ = vis_raw((1, 1))
    by_conad = prepare_frame(raw, raw_header("VIS", conad=2.0), photon_noise=False)
    by_inverse = prepare_frame(raw, raw_header("VIS", gain=0.5), photon_noise=False)
    static_slow = prepare_frame(raw, raw_header("VIS"), photon_noise=False)
    assert np.allclose(by_conad.data, by_inverse.data)
    assert np.allclose(static_slow.data * 2.0 / 0.6, by_conad.data, rtol=1e-5)
    # read noise: header absent -> slow read-out static value (3 e)
    assert np.allclose(static_slow.uncertainty.array, 3.0)


def test_saturated_and_nonfinite_pixels_are_masked():
    raw, _, (x0, _) = vis_raw((1, 1))
    raw[100, x0 + 7] = 65535
    ccd = prepare_frame(raw, raw_header("VIS"))
    assert ccd.mask[100, 7] and ccd.mask.sum() == 1

    nir = np.full((2048, 2048), 10.0, dtype=np.float32)
    nir[10, 20] = np.nan
    nir[30, 40] = 46000.0
    ccd = prepare_frame(nir, raw_header("NIR"))
    assert ccd.mask[6, 16] and ccd.mask[26, 36] and ccd.mask.sum() == 2
    assert ccd.data[6, 16] == 0.0


def test_nir_trim_and_static_gain():
    nir = np.zeros((2048, 2048), dtype=np.float32)
    nir[4, 4] = 100.0
    nir[2043, 2043] = 50.0
    nir[3, 3] = 999.0  # reference pixel, trimmed away
    ccd = prepare_frame(nir, raw_header("NIR"))
    assert ccd.data.shape == (2040, 2040)
    assert ccd.data[0, 0] == pytest.approx(230.0)  # 100 ADU x 2.3 e/ADU
    assert ccd.data[-1, -1] == pytest.approx(115.0)
    assert ccd.uncertainty.array[0, 0] == pytest.approx(np.sqrt(7.3**2 + 230.0), rel=1e-5)
    assert ccd.data.sum() == pytest.approx(345.0)


def test_acq_needs_master_bias_and_subtracts_it():
    raw = np.full((1024, 1024), 1100.0)
    header = raw_header("ACQ")
    with pytest.raises(DataError, match="MASTER_BIAS_ACQ"):
        prepare_frame(raw, header, path="dark.fits")
    bias = prepare_frame(np.full((1024, 1024), 1000.0), header, photon_noise=False)
    assert np.allclose(bias.data, 1000.0) and np.allclose(bias.uncertainty.array, 2.9)
    master = CCDData(np.full((1024, 1024), 1000.0, np.float32), unit="electron",
                     uncertainty=StdDevUncertainty(np.full((1024, 1024), 1.0, np.float32)),
                     mask=np.zeros((1024, 1024), bool))
    ccd = prepare_frame(raw, header, master_bias=master)
    assert np.allclose(ccd.data, 100.0)
    assert np.allclose(ccd.uncertainty.array, np.sqrt(2.9**2 + 1.0 + 100.0), rtol=1e-5)


def test_wrong_shape_is_a_clear_error():
    with pytest.raises(DataError, match="should be 908 x 4096"):
        prepare_frame(np.zeros((4096, 900)), raw_header("VIS"), path="odd.fits")
