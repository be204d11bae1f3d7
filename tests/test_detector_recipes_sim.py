"""soxs_mbias and soxs_mdark on the simulated night, against the simulator's truth."""

import json

import numpy as np
import pytest
from astropy.table import Table

from soxspipe.products import read_image_product
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.recipes.soxs_mdark import soxs_mdark
from soxspipe.simulator.detector import SimulatedDetector


def frames_of(night, arm, kind, exptime=None):
    manifest = Table.read(night / "truth" / "manifest.ecsv").filled()
    rows = [r for r in manifest if r["arm"] == arm and r["kind"] == kind
            and (exptime is None or float(r["exptime"]) == exptime)]
    return [night / "raw" / r["file"] for r in rows]


def detector_truth(night, arm, stem):
    return json.loads((night / "truth" / f"detector_{arm}_{stem}.json").read_text())


@pytest.fixture(scope="module")
def vis_master_bias(simulated_night, tmp_path_factory):
    out = tmp_path_factory.mktemp("mbias_vis")
    (path,) = soxs_mbias(frames_of(simulated_night, "VIS", "bias"), output_dir=out).run()
    return path


def test_vis_master_bias_against_truth(simulated_night, vis_master_bias):
    truth = detector_truth(simulated_night, "VIS", "1x1_slow")
    master = read_image_product(vis_master_bias)
    n = len(frames_of(simulated_night, "VIS", "bias"))
    gain, ron = truth["gain_e_per_adu"], truth["read_noise_e"]
    # what survives the overscan subtraction: the column pattern of the science columns
    # relative to the mean of the overscan columns (same night seed, same detector)
    det = SimulatedDetector("VIS", seed=truth["seed"], readout="slow")
    pattern = det.column_pattern
    expected_level = gain * (pattern[50:858].mean() - pattern[858:908].mean())
    good = ~master.mask
    assert master.data[good].mean() == pytest.approx(expected_level, abs=0.1)
    h = master.meta
    assert h["HIERARCH ESO QC RAW RON"] == pytest.approx(ron, rel=0.03)
    assert h["HIERARCH ESO QC MASTER RON"] == pytest.approx(ron / np.sqrt(n), rel=0.10)
    assert h["HIERARCH ESO QC STATUS"] == "PASS"


def test_acq_master_bias_level(simulated_night, tmp_path):
    truth = detector_truth(simulated_night, "ACQ", "1x1_default")
    (path,) = soxs_mbias(frames_of(simulated_night, "ACQ", "bias"), output_dir=tmp_path).run()
    master = read_image_product(path)
    n = len(frames_of(simulated_night, "ACQ", "bias"))
    det = SimulatedDetector("ACQ", seed=truth["seed"])
    expected = truth["gain_e_per_adu"] * (truth["bias_level_adu"] + det.column_pattern.mean())
    assert master.data[~master.mask].mean() == pytest.approx(expected, abs=0.1)
    assert master.meta["HIERARCH ESO QC RAW RON"] == pytest.approx(truth["read_noise_e"], rel=0.03)
    assert master.meta["HIERARCH ESO QC MASTER RON"] == pytest.approx(truth["read_noise_e"] / np.sqrt(n), rel=0.10)


def test_nir_master_dark_hot_pixels(simulated_night, tmp_path):
    truth = detector_truth(simulated_night, "NIR", "1x1_default")
    exptime = 600.0
    darks = frames_of(simulated_night, "NIR", "dark", exptime)
    (path,) = soxs_mdark(darks, output_dir=tmp_path).run()
    master = read_image_product(path)
    injected = np.zeros(master.data.shape, bool)
    injected[truth["hot_pixels"]["y"], truth["hot_pixels"]["x"]] = True
    bad = np.zeros(master.data.shape, bool)
    bad[truth["bad_pixels"]["y"], truth["bad_pixels"]["x"]] = True
    found = master.mask & ~bad
    recovered = (found & injected).sum() / injected.sum()
    false_positive = (found & ~injected).sum() / found.size
    assert injected.sum() > 100
    assert recovered >= 0.95, recovered
    assert false_positive < 0.001, false_positive
    level = truth["dark_current_e_per_s"] * exptime
    assert master.meta["HIERARCH ESO QC MDARK MEDIAN"] == pytest.approx(level, abs=0.3)
    raw_noise = np.sqrt(truth["read_noise_e"] ** 2 + level)
    assert master.meta["HIERARCH ESO QC RAW RON"] == pytest.approx(raw_noise, rel=0.03)
