"""The simulated night as a whole: manifest, files, frame sets and the raw-frame contract."""

from collections import Counter

import numpy as np
import pytest
from astropy.io import fits

from soxspipe.commonutils.keywords import has_keyword, header_value
from soxspipe.simulator import simulate_calibration_set
from soxspipe.simulator.validate import validate_raw
from soxspipe.static_calibrations import load_yaml


def _header(path):
    with fits.open(path) as hdul:
        return next(h for h in hdul if h.data is not None).header


def test_manifest_lists_exactly_the_raw_files(simulated_night, night_truth):
    on_disk = sorted(p.name for p in (simulated_night / "raw").iterdir() if ".fits" in p.name)
    assert sorted(night_truth.manifest["file"]) == on_disk
    names = [n.split(".fits")[0] for n in on_disk]
    assert len(set(names)) == len(names)
    suffixes = Counter(n[n.index(".fits"):] for n in on_disk)
    assert suffixes[".fits.gz"] >= 2 and suffixes[".fits.fz"] >= 2  # compressed readers get exercised


def test_every_file_passes_the_validator(simulated_night, night_truth):
    problems = {f: validate_raw(simulated_night / "raw" / f) for f in night_truth.manifest["file"]}
    assert {f: p for f, p in problems.items() if p} == {}


def test_headers_agree_with_the_manifest(simulated_night, night_truth):
    for row in night_truth.manifest:
        h = _header(simulated_night / "raw" / row["file"])
        assert header_value(h, "dpr_catg") == row["dpr_catg"]
        assert header_value(h, "dpr_type") == row["dpr_type"]
        assert header_value(h, "dpr_tech") == row["dpr_tech"]
        assert header_value(h, "obs_id") == row["obs_id"]
        assert header_value(h, "mjd_obs") == pytest.approx(row["mjd_obs"], abs=1e-8)
        if row["arm"] != "ACQ":
            assert header_value(h, "arm") == row["arm"]
            assert header_value(h, "exptime") == row["exptime"]
            assert row["tag"] == f"{row['dpr_type']}_{row['arm']}"


def test_small_night_has_the_minimum_sets(night_truth):
    m = night_truth.manifest
    count = Counter((r["arm"], r["kind"], bool(r["lamps"])) for r in m if r["arm"] != "ACQ")
    assert count[("VIS", "bias", False)] == 5
    assert count[("VIS", "slit_flat", True)] == 10  # 5 QTH + 5 D2
    assert count[("NIR", "slit_flat", True)] == 5 and count[("NIR", "slit_flat", False)] == 5
    for arm in ("VIS", "NIR"):
        for kind in ("pinhole_arc", "pinhole_flat", "multipinhole_arc", "flux_standard", "telluric_standard"):
            assert count[(arm, kind, kind not in ("flux_standard", "telluric_standard"))] == 1
        sci = m[(m["arm"] == arm) & (m["kind"] == "science")]
        assert Counter(sci["dpr_tech"]) == {"ECHELLE,SLIT,STARE": 1, "ECHELLE,SLIT,NODDING": 4,
                                            "ECHELLE,SLIT,OFFSET": 2}
    # NIR darks: 3 for every exposure time of the science and standard frames
    nir = m[m["arm"] == "NIR"]
    dark_times = Counter(nir["exptime"][nir["kind"] == "dark"])
    science_times = set(nir["exptime"][np.isin(nir["kind"], ["science", "flux_standard", "telluric_standard"])])
    assert set(dark_times) == science_times and set(dark_times.values()) == {3}


def test_nir_lamp_frames_have_lamp_off_partners(simulated_night, night_truth):
    m = night_truth.manifest
    lamp_keys = load_yaml("frame_types.yaml")["lamps"].values()
    nir = m[(m["arm"] == "NIR") & np.array([t.startswith("LAMP") for t in m["dpr_type"]])]
    on = [r for r in nir if r["lamps"]]
    off = [r for r in nir if not r["lamps"]]
    assert len(on) == len(off) > 0
    for r in on:
        partners = [o for o in off if (o["dpr_type"], o["dpr_tech"], o["exptime"], o["obs_id"])
                    == (r["dpr_type"], r["dpr_tech"], r["exptime"], r["obs_id"])]
        assert partners
        h = _header(simulated_night / "raw" / partners[0]["file"])
        assert not any(has_keyword(h, k) for k in lamp_keys)


def test_nodding_and_offset_headers(simulated_night, night_truth):
    m = night_truth.manifest
    for arm in ("VIS", "NIR"):
        nod = m[(m["arm"] == arm) & (m["dpr_tech"] == "ECHELLE,SLIT,NODDING")]
        offs = [header_value(_header(simulated_night / "raw" / f), "nod_cumoff_y") for f in nod["file"]]
        assert [np.sign(o) for o in offs] == [1, -1, -1, 1]  # ABBA
        # the trace sits where the header says (truth of the rendering)
        np.testing.assert_allclose(offs, nod["object_position"], atol=1e-3)
        assert all(2.0 <= abs(o) <= 3.0 for o in offs)  # throw 5", jitter box 1"
        off = m[(m["arm"] == arm) & (m["dpr_tech"] == "ECHELLE,SLIT,OFFSET")]
        fix = [(header_value(h, "fixoff_ra"), header_value(h, "fixoff_dec"))
               for h in (_header(simulated_night / "raw" / f) for f in off["file"])]
        assert fix[0] == (0.0, 0.0) and fix[1] != (0.0, 0.0)
        assert off["target"][0] == "GAL-C" and not off["target"][1]  # sky frame: no object rendered


def test_calibration_set_api_binned_vis(tmp_path):
    manifest = simulate_calibration_set(tmp_path, "VIS", binning=(2, 1), kinds=["bias", "slit_flat"], seed=3)
    from soxspipe.simulator import load_truth

    truth = load_truth(manifest.parent)
    assert Counter(truth.manifest["kind"]) == {"bias": 5, "slit_flat": 10}
    assert set(truth.manifest["binning"]) == {"2x1"}
    for f in truth.manifest["file"]:
        assert validate_raw(tmp_path / "raw" / f) == []
    data = fits.getdata(tmp_path / "raw" / truth.manifest["file"][0])
    assert data.shape == (4096, 454)
    # the binned order edges are the 1x1 ones with x halved
    vis = truth.arm("VIS")
    e = vis.order_edges((2, 1))
    for o in vis.optics.orders:
        g = vis.optics.order_geometry(o, (1, 1))
        sel = e["order"] == o
        np.testing.assert_allclose(np.interp(e["dispersion_pixel"][sel], g["d"], g["lower"]) / 2,
                                   e["lower"][sel], atol=1e-3)


def test_flexure_scenario_moves_the_lines_as_its_truth_says(tmp_path):
    from soxspipe.simulator import load_truth
    from soxspipe.simulator.optics import static_model

    simulate_calibration_set(tmp_path, "NIR", kinds=["pinhole_arc"], scenario="flexure", seed=5)
    truth = load_truth(tmp_path / "truth")
    flex = truth.night["per_arm"]["NIR"]["flexure"]
    assert 1.5 <= abs(flex["dx"]) <= 3.0 and 1.5 <= abs(flex["dy"]) <= 3.0
    assert 0.03 <= abs(flex["rotation_deg"]) <= 0.08
    lines = truth.arm("NIR").lines("pinhole_arc")
    x0, y0 = static_model("NIR").xy(np.asarray(lines["order"]), lines["wavelength"], lines["slit_position"])
    shift = np.hypot(lines["x"] - x0, lines["y"] - y0)
    # shift plus rotation about the frame centre: between |d| - 0.08 deg x 1450 px and |d| + that
    d = np.hypot(flex["dx"], flex["dy"])
    assert np.all(shift > d - 2.1) and np.all(shift < d + 2.1) and np.ptp(shift) > 0.1
    np.testing.assert_allclose(truth.arm("NIR").optics.xy(np.asarray(lines["order"]), lines["wavelength"], 0.0),
                               (lines["x"], lines["y"]), atol=1e-9)


def test_extreme_scenario_saturates_lines_and_adds_bad_columns(tmp_path):
    from soxspipe.simulator import load_truth

    simulate_calibration_set(tmp_path, "VIS", kinds=["pinhole_arc"], scenario="extreme", seed=5)
    truth = load_truth(tmp_path / "truth")
    vis = truth.arm("VIS")
    det = vis.detector()
    sat_e = det["saturation_adu"] * det["gain_e_per_adu"]
    assert (vis.lines("pinhole_arc")["peak_e"] > sat_e).sum() >= 10
    data = fits.getdata(tmp_path / "raw" / truth.manifest["file"][0])
    assert (data == 65535).sum() >= 10
    assert len(det["bad_columns"]) >= 4
