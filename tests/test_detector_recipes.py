"""soxs_mbias and soxs_mdark on hand-made frames: values, hot pixels, and their bad inputs."""

import numpy as np
import pytest
from astropy.io import fits

from rawframes import kind_header, write_frame
from soxspipe.commonutils.errors import DataError
from soxspipe.products import read_image_product
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.recipes.soxs_mdark import soxs_mdark

NIR_GAIN, NIR_RON = 2.3, 7.3


def nir_darks(folder, n=3, exptime=300.0, rate=0.01, seed=3, hot=None):
    """NIR darks: dark current ``rate`` e/s, Poisson + read noise, optional hot pixels {(y, x): e/s}."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    paths = []
    for i in range(n):
        electrons = np.full((2048, 2048), rate * exptime)
        for (y, x), r in (hot or {}).items():
            electrons[y + 4, x + 4] = r * exptime
        data = (rng.poisson(electrons) + rng.normal(0, NIR_RON, electrons.shape)) / NIR_GAIN
        header = kind_header("dark_nir", exptime=exptime, mjd=60695.2 + i * 0.01)
        paths.append(write_frame(folder / f"dark{i}.fits", header, data.astype(np.float32)))
    return paths


def test_mdark_nir_level_noise_and_hot_pixels(tmp_path):
    rng = np.random.default_rng(7)
    positions = set()
    while len(positions) < 200:
        positions.add((int(rng.integers(0, 2040)), int(rng.integers(0, 2040))))
    hot = {p: float(rng.uniform(0.5, 5.0)) for p in positions}
    paths = nir_darks(tmp_path / "raw", n=5, hot=hot)
    (product,) = soxs_mdark(paths, output_dir=tmp_path / "out").run()
    master = read_image_product(product)
    h = master.meta
    assert h["HIERARCH ESO QC MDARK MEDIAN"] == pytest.approx(3.0, abs=0.1)
    expected_raw_noise = np.sqrt(NIR_RON**2 + 3.0)
    assert h["HIERARCH ESO QC RAW RON"] == pytest.approx(expected_raw_noise, rel=0.03)
    found = master.mask
    truth = np.zeros_like(found)
    for y, x in hot:
        truth[y, x] = True
    recovered = (found & truth).sum() / truth.sum()
    false_positive = (found & ~truth).sum() / found.size
    assert recovered >= 0.95 and false_positive < 0.001
    assert h["HIERARCH ESO QC HOTPIX NUM"] == found.sum()


def test_mixed_exposure_times_rejected(tmp_path):
    paths = nir_darks(tmp_path / "a", n=2, exptime=300.0) + nir_darks(tmp_path / "b", n=1, exptime=600.0)
    with pytest.raises(DataError, match=r"b/dark0.fits: exposure time 600.0 s differs from 300.0 s"):
        soxs_mdark(paths, output_dir=tmp_path / "out").run()


def vis_frames(folder, n, *, binning=(1, 1), speed=1, kind="bias_vis", exptime=0.0):
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n):
        header = kind_header(kind, binning=binning, exptime=exptime, mjd=60695.3 + i * 0.01)
        header["HIERARCH ESO DET READ CURID"] = speed
        paths.append(write_frame(folder / f"f{i}_{binning[0]}{speed}.fits", header))
    return paths


def test_mixed_binning_and_readout_rejected(tmp_path):
    paths = vis_frames(tmp_path, 3) + vis_frames(tmp_path, 1, binning=(2, 1))
    with pytest.raises(DataError, match=r"f0_21.fits: binned 2x1 but .* is binned 1x1"):
        soxs_mbias(paths, output_dir=tmp_path / "out").run()
    paths = vis_frames(tmp_path, 3) + vis_frames(tmp_path, 1, speed=2)
    with pytest.raises(DataError, match=r"f0_12.fits: read out fast but .* slow"):
        soxs_mbias(paths, output_dir=tmp_path / "out").run()


def test_master_bias_of_another_binning_rejected(tmp_path):
    (master,) = soxs_mbias(vis_frames(tmp_path / "b", 3, binning=(2, 1)), output_dir=tmp_path / "m").run()
    darks = vis_frames(tmp_path / "d", 3, kind="dark_vis", exptime=60.0)
    with pytest.raises(DataError, match=r"MASTER_BIAS_VIS_2x1.*: binned 2x1 but .* is binned 1x1"):
        soxs_mdark(darks + [master], output_dir=tmp_path / "out").run()
    with pytest.raises(DataError, match="needs a MASTER_BIAS_VIS"):
        soxs_mdark(darks, output_dir=tmp_path / "out").run()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())


def test_acq_mdark_subtracts_the_master_bias(tmp_path):
    rng = np.random.default_rng(11)
    bias_paths, dark_paths = [], []
    for i in range(3):
        h = kind_header("bias_acq", mjd=60695.4 + i * 0.01)
        bias_paths.append(write_frame(tmp_path / f"b{i}.fits", h, np.round(1000 + rng.normal(0, 2.9, (1024, 1024))).astype(np.uint16)))
        h = kind_header("dark_acq", exptime=600.0, mjd=60695.5 + i * 0.01)
        dark = 1000 + rng.poisson(40.0, (1024, 1024)) + rng.normal(0, 2.9, (1024, 1024))
        dark_paths.append(write_frame(tmp_path / f"d{i}.fits", h, np.round(dark).astype(np.uint16)))
    (master_bias,) = soxs_mbias(bias_paths, output_dir=tmp_path / "out").run()
    assert fits.getheader(master_bias)["HIERARCH ESO QC MBIAS MEDIAN"] == pytest.approx(1000.0, abs=0.2)
    (master_dark,) = soxs_mdark(dark_paths + [master_bias], output_dir=tmp_path / "out").run()
    h = fits.getheader(master_dark)
    assert h["HIERARCH ESO QC MDARK MEDIAN"] == pytest.approx(40.0, abs=0.3)
    assert h["HIERARCH ESO PRO REC1 CAL1 CATG"] == "MASTER_BIAS_ACQ"
