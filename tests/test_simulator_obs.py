"""The spectroscopic OBs of a simulated night: the telluric standard and the acquisition images that open
every OB, against the truth and the raw-frame contract (session's small night unless said)."""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from soxspipe.commonutils.fitsio import read_header, read_image
from soxspipe.commonutils.keywords import header_value
from soxspipe.commonutils.synthetic_photometry import ab_magnitude
from soxspipe.recipes.soxs_image import soxs_image
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.recipes.soxs_mflat import soxs_mflat
from soxspipe.simulator import spectra
from soxspipe.simulator.header import sky_position
from soxspipe.simulator.night import ACQ_TPL_ID, TARGETS, TELLURIC_STAR, plan_science, science_blocks
from soxspipe.simulator.render import slit_transmission

SPECTRO = ("flux_standard", "science", "telluric_standard")


def _dpr(header):
    return tuple(header_value(header, k) for k in ("dpr_catg", "dpr_type", "dpr_tech"))


def _airmass(header):
    return 0.5 * (header_value(header, "airmass_start") + header_value(header, "airmass_end"))


def _rows(truth, arm, kinds):
    m = truth.manifest
    return m[(m["arm"] == arm) & np.isin(m["kind"], kinds)]


# -- the plan, both sizes (no rendering) ---------------------------------------------------------

@pytest.mark.parametrize("size", ["small", "full"])
def test_plan_telluric_airmass_and_wide_seeing(size):
    blocks, _, _ = science_blocks("2025-01-20", 42, "nominal", size)
    assert [b.target for b in blocks] == ["LTT3218", "GAL-A", "GAL-B", "GAL-C", TELLURIC_STAR]
    assert [b.obs_id for b in blocks] == list(range(100, 105))

    def airmasses(block):
        return np.array([sky_position(*TARGETS[block.target], e.mjd + e.exptime / 172800.0)[3]
                         for e in block.exposures])

    telluric = airmasses(blocks[-1])
    science = np.concatenate([airmasses(b) for b in blocks[1:4]])
    difference = telluric.mean() - science
    assert np.all(difference >= 0.15) and np.all(difference <= 0.4), difference
    # the stare target in 1.2 arcsec seeing through the 1 arcsec slit: a third of its light stays out
    stare = blocks[1]
    assert {e.scene["seeing"] for e in stare.exposures} == {1.2}
    assert slit_transmission(1.2, 1.0) == pytest.approx(0.674, abs=1e-3)
    # each OB opens with its acquisition slot, then the spectra; OBs never overlap
    for b, following in zip(blocks, blocks[1:] + [None]):
        assert b.exposures[0].mjd == pytest.approx(b.start_mjd + b.acquisition_s / 86400.0)
        if following is not None:
            assert b.exposures[-1].mjd + b.exposures[-1].exptime / 86400.0 < following.start_mjd
    # both arms observe the same OBs at the same times (within the arms' start delay)
    vis, _, _ = plan_science("VIS", blocks[0].start_mjd, 100, size=size, rng=np.random.default_rng([42, 3]))
    nir, _, _ = plan_science("NIR", blocks[0].start_mjd, 100, size=size, rng=np.random.default_rng([42, 3]))
    assert [e.header["obs_id"] for e in vis] == [e.header["obs_id"] for e in nir]
    np.testing.assert_allclose([e.mjd for e in nir], [e.mjd for e in vis], atol=2.0 / 86400)


# -- the telluric standard -------------------------------------------------------------------------

@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_telluric_standard_frames(simulated_night, night_truth, arm):
    (row,) = _rows(night_truth, arm, ["telluric_standard"])
    header = read_header(simulated_night / "raw" / row["file"])
    assert _dpr(header) == ("CALIB", "STD,TELLURIC", "ECHELLE,SLIT,STARE")
    assert header_value(header, "object") == TELLURIC_STAR and row["exptime"] == 120.0
    telluric = _airmass(header)
    science = np.array([_airmass(read_header(simulated_night / "raw" / f))
                        for f in _rows(night_truth, arm, ["science"])["file"]])
    assert np.all(telluric - science >= 0.15) and np.all(telluric - science <= 0.4), (telluric, science)
    meta = night_truth.arm(arm).spectrum(TELLURIC_STAR).meta
    assert meta["kind"] == "telluric_standard" and meta["obs_id"] == row["obs_id"]
    assert meta["airmass"] == pytest.approx(telluric, abs=0.005)


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_telluric_truth_splits_into_water_and_o2(night_truth, arm):
    spec = night_truth.arm(arm).spectrum(TELLURIC_STAR)
    wl = np.asarray(spec["wavelength"])
    airmass, water = spec.meta["airmass"], spec.meta["water_vapour_scale"]
    h2o, o2, total = (np.asarray(spec[c]) for c in ("telluric_h2o", "telluric_o2", "telluric"))
    np.testing.assert_allclose(total, h2o * o2, rtol=1e-12)
    np.testing.assert_allclose(total, spectra.telluric(wl, airmass, water), rtol=1e-9)
    # each part scales to another airmass as T^(X / X_std): what a telluric correction does
    h2o_2, o2_2 = spectra.telluric_parts(wl, airmass - 0.3, water)
    np.testing.assert_allclose(h2o_2, h2o ** ((airmass - 0.3) / airmass), rtol=1e-9)
    np.testing.assert_allclose(o2_2, o2 ** ((airmass - 0.3) / airmass), rtol=1e-9)
    if arm == "VIS":  # the O2 A band is O2 only
        band = (wl > 759) & (wl < 765)
        assert h2o[band].min() > 0.99 and o2[band].min() < 0.3
        # the star: V = 11.5 (AB) through the bundled V curve, broad Balmer lines
        assert ab_magnitude(wl, np.asarray(spec["toa_flux"]), "V") == pytest.approx(spec.meta["v_mag_ab"], abs=2e-3)
        assert spec.meta["ab_magnitudes"]["V"] == pytest.approx(11.5, abs=1e-4)
        f = np.asarray(spec["toa_flux"])
        continuum = np.interp(486.13, [476.0, 496.0], np.interp([476.0, 496.0], wl, f))
        assert np.interp(486.13, wl, f) / continuum == pytest.approx(0.55, abs=0.02)
    else:  # the 1130 nm water band is water only
        band = (wl > 1120) & (wl < 1140)
        assert o2[band].min() > 0.99 and h2o[band].min() < 0.5


# -- acquisition images ------------------------------------------------------------------------------

def _acquisitions(simulated_night):
    return Table.read(simulated_night / "truth" / "acq_targets.ecsv")


def test_every_spectroscopic_ob_opens_with_an_acquisition_image(simulated_night, night_truth):
    m = night_truth.manifest
    acq = m[(m["arm"] == "ACQ") & (m["kind"] == "imaging_science")]
    targets = _acquisitions(simulated_night)
    obs_ids = sorted(set(_rows(night_truth, "VIS", SPECTRO)["obs_id"]))
    assert len(obs_ids) == 5 and sorted(targets["obs_id"]) == obs_ids
    ends = {}
    for obs_id in obs_ids:
        spectro = m[(m["obs_id"] == obs_id) & (m["arm"] != "ACQ")]
        ends[obs_id] = (spectro["mjd_obs"].min(), (spectro["mjd_obs"] + spectro["exptime"] / 86400.0).max())
    for row in acq[np.isin(acq["obs_id"], obs_ids)]:
        header = read_header(simulated_night / "raw" / row["file"])
        first = m[(m["obs_id"] == row["obs_id"]) & (m["arm"] == "VIS")][0]
        spectro_header = read_header(simulated_night / "raw" / first["file"])
        assert _dpr(header) == ("SCIENCE", "OBJECT", "IMAGE")
        assert row["filter"] == header_value(header, "acq_filter") == "r"
        for key in ("object", "ra", "dec", "obs_name"):
            assert header_value(header, key) == header_value(spectro_header, key), key
        assert header_value(header, "tpl_id") == ACQ_TPL_ID != header_value(spectro_header, "tpl_id")
        # at the start of its OB: before the OB's first spectrum, after the previous OB's last
        start, end = row["mjd_obs"], row["mjd_obs"] + row["exptime"] / 86400.0
        assert end < ends[row["obs_id"]][0]
        assert all(start > e for o, (_, e) in ends.items() if o < row["obs_id"])


def test_acquisition_truth_magnitudes_are_synthetic_photometry_of_the_injected_spectra(night_truth, simulated_night):
    for row in _acquisitions(simulated_night):
        spec = night_truth.arm("VIS").spectrum(row["target"])
        # the VIS truth spectrum holds all of r: its own synthetic magnitude, on its own grid
        assert ab_magnitude(spec["wavelength"], spec["toa_flux"], "r") == pytest.approx(row["ab_mag"], abs=2e-3)
        assert spec.meta["ab_magnitudes"]["r"] == pytest.approx(row["ab_mag"], abs=1e-4)
    mags = dict(zip(_acquisitions(simulated_night)["target"], _acquisitions(simulated_night)["ab_mag"]))
    assert mags["LTT3218"] == pytest.approx(11.906, abs=0.01) and mags["GAL-A"] == pytest.approx(17.642, abs=0.01)


def test_target_sits_at_the_slit_position_with_its_true_flux(simulated_night):
    info = json.loads((simulated_night / "truth" / "acq.json").read_text())
    raw = simulated_night / "raw"
    m = Table.read(simulated_night / "truth" / "manifest.ecsv")
    biases = m["file"][(m["arm"] == "ACQ") & (m["kind"] == "bias")]
    bias = np.median([read_image(raw / f, dtype=np.float64)[0] for f in biases], axis=0)
    refcat = Table.read(raw / "refcat.ecsv")
    for row in _acquisitions(simulated_night):
        frame = info["acquisitions"][row["file"]]
        assert (row["x"], row["y"]) == (511.5, 511.5)  # the image centre: CRPIX of the true WCS, CRVAL the target
        assert [frame["wcs"]["CRVAL1"], frame["wcs"]["CRVAL2"]] == pytest.approx([row["ra"], row["dec"]], abs=1e-9)
        image = read_image(raw / row["file"], dtype=np.float64)[0] - bias
        yy, xx = np.indices(image.shape)
        r = np.hypot(xx - row["x"], yy - row["y"])
        assert image[r < 3].max() < 0.75 * 65535  # the exposure keeps the target unsaturated
        sky = np.median(image[(r > 24) & (r < 32)])
        electrons = (image[r < 21] - sky).sum()  # ACQ: 1 e/ADU
        measured = row["zero_point"] - 2.5 * np.log10(electrons / row["illumination"] / row["exptime"])
        assert measured == pytest.approx(row["ab_mag"], abs=0.02), row["target"]
        # the target is not a catalogue star; its field stars are
        d = np.hypot((refcat["ra"] - row["ra"]) * np.cos(np.radians(row["dec"])), refcat["dec"] - row["dec"]) * 3600
        assert d.min() > 10.0 and (d < 100).sum() >= 15


@pytest.fixture(scope="module")
def reduced_acquisitions(simulated_night, tmp_path_factory):
    """soxs_image on the flux standard's (shortest exposure) and the stare target's (1.2" seeing) acquisitions."""
    out = tmp_path_factory.mktemp("acquisitions")
    raw = simulated_night / "raw"
    m = Table.read(simulated_night / "truth" / "manifest.ecsv")
    acq = m[m["arm"] == "ACQ"]

    def sof(name, lines):
        (out / name).write_text("".join(f"{p} {t}\n" for p, t in lines))
        return out / name

    (bias,) = soxs_mbias(sof("bias.sof", [(raw / f, "BIAS_ACQ") for f in acq["file"][acq["kind"] == "bias"]]),
                         output_dir=out).run()
    flats = acq["file"][(acq["kind"] == "imaging_flat") & (acq["filter"] == "r")]
    (flat,) = soxs_mflat(sof("flat.sof", [(raw / f, "FLAT,SKY_ACQ") for f in flats] + [(bias, "MASTER_BIAS_ACQ")]),
                         output_dir=out).run()
    results = {}
    for row in _acquisitions(simulated_night):
        if row["target"] in ("LTT3218", "GAL-A"):
            lines = [(raw / row["file"], "OBJECT_ACQ"), (bias, "MASTER_BIAS_ACQ"), (flat, "MASTER_FLAT_ACQ_r"),
                     (raw / "refcat.ecsv", "REF_CAT")]
            results[row["target"]] = (row, *soxs_image(sof(f"{row['target']}.sof", lines),
                                                       output_dir=out / row["target"]).run())
    return results


@pytest.mark.parametrize("target", ["LTT3218", "GAL-A"])
def test_soxs_image_reduces_the_acquisition_and_finds_the_target(reduced_acquisitions, target):
    row, image, catalogue = reduced_acquisitions[target]
    header = fits.getheader(image)
    assert header["HIERARCH ESO QC ASTROM NMATCH"] >= 30 and header["HIERARCH ESO QC ASTROM RMS"] < 0.1
    assert header["HIERARCH ESO QC ZP FRAME"] == pytest.approx(row["zero_point"], abs=0.02)
    cat = Table.read(catalogue)
    d = np.hypot((cat["ra"] - row["ra"]) * np.cos(np.radians(row["dec"])), cat["dec"] - row["dec"]) * 3600
    nearest = cat[np.argmin(d)]
    assert d.min() < 0.1 and nearest["cat_id"] == -1 and nearest["flags"] == 0
    assert np.hypot(nearest["x"] - row["x"], nearest["y"] - row["y"]) < 0.1
    assert nearest["mag"] == pytest.approx(row["ab_mag"], abs=0.03)
