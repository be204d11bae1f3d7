"""soxs_mflat (imaging) and soxs_image end to end on simulated acquisition-camera nights, against the truth.

Two nights: the session's nominal small night (g and r), and one whose true pointing is
off the nominal one by (8, -6) arcsec and rotated by 1.5 deg, in r and V (V: no
photometric calibration). Bad inputs go through the command line.
"""

import json

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.wcs import WCS

from soxspipe.cl_utils import main
from soxspipe.commonutils.classify import frame_exptime
from soxspipe.commonutils.fitsio import read_header, read_image
from soxspipe.products import read_image_product
from soxspipe.recipes.soxs_image import soxs_image
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.recipes.soxs_mdark import soxs_mdark
from soxspipe.recipes.soxs_mflat import soxs_mflat
from soxspipe.simulator.acq import simulate_acq_night


STRUCTURAL = ("SIMPLE", "BITPIX", "NAXIS", "NAXIS1", "NAXIS2", "EXTEND", "BZERO", "BSCALE", "XTENSION", "PCOUNT",
              "GCOUNT", "EXTNAME", "CHECKSUM", "DATASUM")


def _sof(path, lines):
    path.write_text("".join(f"{p} {t}\n" for p, t in lines))
    return path


def reduce_acq(raw, truth, out):
    """Run mbias, mdark, mflat per filter and image per science frame; return the products and the truth."""
    manifest = Table.read(truth / "manifest.ecsv") if (truth / "manifest.ecsv").exists() else None
    rows = [dict(zip(manifest.colnames, r)) for r in manifest if r["arm"] == "ACQ"] if manifest else None
    info = json.loads((truth / "acq.json").read_text())
    if rows is None:
        rows = json.loads((truth / "rows.json").read_text())
    out.mkdir(parents=True, exist_ok=True)

    def of(kind, **match):
        return [raw / r["file"] for r in rows if r["kind"] == kind and all(r[k] == v for k, v in match.items())]

    (bias,) = soxs_mbias(_sof(out / "bias.sof", [(p, "BIAS_ACQ") for p in of("bias")]), output_dir=out).run()
    darks = of("dark")
    (dark,) = soxs_mdark(_sof(out / "dark.sof", [(p, "DARK_ACQ") for p in darks] + [(bias, "MASTER_BIAS_ACQ")]),
                         output_dir=out).run()
    result = {"bias": bias, "dark": dark, "flat": {}, "image": {}, "catalogue": {}, "truth": info, "out": out,
              "raw": raw, "truth_dir": truth}
    filters = sorted({r["filter"] for r in rows if r["kind"] == "imaging_flat"})
    for f in filters:
        sof = _sof(out / f"flat_{f}.sof", [(p, "FLAT,SKY_ACQ") for p in of("imaging_flat", filter=f)]
                   + [(bias, "MASTER_BIAS_ACQ"), (dark, "MASTER_DARK_ACQ")])
        (result["flat"][f],) = soxs_mflat(sof, output_dir=out).run()
    for name, frame in info["frames"].items():
        f = frame["filter"]
        sof = _sof(out / f"image_{f}.sof", [(raw / name, "OBJECT_ACQ"), (bias, "MASTER_BIAS_ACQ"),
                                             (dark, "MASTER_DARK_ACQ"), (result["flat"][f], f"MASTER_FLAT_ACQ_{f}"),
                                             (raw / "refcat.ecsv", "REF_CAT")])
        image, catalogue = soxs_image(sof, output_dir=out / name).run()
        result["image"][name], result["catalogue"][name] = image, catalogue
    return result


@pytest.fixture(scope="module")
def nominal(simulated_night, tmp_path_factory):
    return reduce_acq(simulated_night / "raw", simulated_night / "truth", tmp_path_factory.mktemp("acq_nominal"))


@pytest.fixture(scope="module")
def rotated(tmp_path_factory):
    base = tmp_path_factory.mktemp("acq_rotated")
    rows = simulate_acq_night(base / "raw", base / "truth", night="2025-02-11", seed=11, size="small",
                              filters=("r", "V"), rotation_deg=1.5, pointing_offset_arcsec=(8.0, -6.0))
    (base / "truth" / "rows.json").write_text(json.dumps(rows))
    return reduce_acq(base / "raw", base / "truth", base / "reduced")


def _star_truth(result, name):
    stars = Table.read(result["truth_dir"] / "acq_stars.ecsv")
    return stars[stars["file"] == name]


def _wcs_errors(result, name):
    """Sky offsets (arcsec) of the product WCS at the true pixel positions of the stars inside the field."""
    wcs = WCS(fits.getheader(result["image"][name], "FLUX"))
    stars = _star_truth(result, name)
    stars = stars[stars["in_field"]]
    ra, dec = wcs.all_pix2world(stars["x"], stars["y"], 0)
    return np.hypot((ra - stars["ra"]) * np.cos(np.radians(stars["dec"])), dec - stars["dec"]) * 3600.0


def _completeness(result, name, limit=20.0):
    """Fraction of the catalogue stars with r < limit inside the field that are in the source catalogue, matched."""
    refcat = Table.read(result["raw"] / "refcat.ecsv")
    r_mag = dict(zip(refcat["id"], refcat["r"]))
    stars = _star_truth(result, name)
    wanted = {int(i) for i, inside in zip(stars["id"], stars["in_field"]) if inside and r_mag[i] < limit}
    found = set(Table.read(result["catalogue"][name])["cat_id"].tolist())
    return len(wanted & found) / len(wanted), len(wanted)


def _qc(path):
    header = fits.getheader(path)
    return {k[len("ESO QC "):]: v for k, v in header.items() if k.startswith("ESO QC ")}


@pytest.mark.parametrize("night", ["nominal", "rotated"])
def test_master_flat_matches_vignetting_and_response(night, request):
    result = request.getfixturevalue(night)
    truth_dir = result["truth_dir"]
    field = result["truth"]["field"]
    illumination = fits.getdata(truth_dir / "acq_illumination.fits")
    response = fits.getdata(truth_dir / "detector_ACQ_1x1_default_response.fits")
    expected = illumination * response
    for f, path in result["flat"].items():
        flat = read_image_product(path)
        assert fits.getheader(path)["HIERARCH ESO PRO CATG"] == f"MASTER_FLAT_ACQ_{f}"
        y, x = np.indices(flat.shape)
        r = np.hypot(x - field["centre_px"][0], y - field["centre_px"][1])
        inside = r < field["radius_px"] - 5
        assert flat.mask[r > field["radius_px"] + 5].all()  # outside the field: flagged
        assert flat.mask[inside].mean() < 1e-3  # inside: only the dead pixels
        assert flat.mask[inside & (response < 0.5)].all()
        good = inside & ~flat.mask
        ratio = flat.data[good] / expected[good]
        # normalised at the field centre, as the truth's vignetting is
        assert np.median(ratio) == pytest.approx(1.0, abs=0.01)
        ratio = flat.data / expected / np.median(ratio)
        # per pixel: 3 flats of ~20000 e leave ~0.4 % noise; on 16x16 blocks the noise is gone
        assert np.std(ratio[good]) < 0.006
        blocks = np.where(good, ratio, np.nan)[:1024, :1024].reshape(64, 16, 64, 16)
        full = good.reshape(64, 16, 64, 16).all(axis=(1, 3))
        block_means = blocks.transpose(0, 2, 1, 3)[full].reshape(-1, 256).mean(axis=1)
        assert full.sum() > 2500 and np.abs(block_means - 1).max() < 0.01
        qc = _qc(path)
        assert qc["FIELD RADIUS"] == pytest.approx(field["radius_px"], abs=1.0)
        assert qc["FIELD X"] == pytest.approx(field["centre_px"][0], abs=0.5)


@pytest.mark.parametrize("night", ["nominal", "rotated"])
def test_astrometry_against_true_star_positions(night, request):
    result = request.getfixturevalue(night)
    for name, frame in result["truth"]["frames"].items():
        errors = _wcs_errors(result, name)
        rms = float(np.sqrt(np.mean(errors**2)))
        assert rms < 0.1, (name, rms)
        qc = _qc(result["image"][name])
        assert qc["ASTROM RMS"] < 0.1 and qc["ASTROM NMATCH"] >= 30
        offset = frame["pointing_offset_arcsec"]
        assert qc["ASTROM OFFSET RA"] == pytest.approx(offset[0], abs=0.1)
        assert qc["ASTROM OFFSET DEC"] == pytest.approx(offset[1], abs=0.1)
        assert qc["ASTROM ROTATION"] == pytest.approx(result["truth"]["rotation_deg"], abs=0.02)
        assert qc["FWHM"] == pytest.approx(frame["seeing_arcsec"], rel=0.1)
        completeness, n = _completeness(result, name)
        assert n >= 15 and completeness >= 0.9, (name, completeness, n)
        catalogue = Table.read(result["catalogue"][name])
        assert {"ra", "dec", "x", "y", "mag", "mag_err", "flags", "cat_id"} <= set(catalogue.colnames)
        assert list((result["out"] / name / "qc").glob("IMAGE_ACQ_*_quicklook.png"))


def test_zero_points_in_g_and_r(nominal):
    truth = nominal["truth"]
    for name, frame in truth["frames"].items():
        path = nominal["image"][name]
        qc = _qc(path)
        header = fits.getheader(path)
        assert header["FLUXCAL"] == "ABSOLUTE" and qc["PHOTCAL"] == 1
        assert qc["ZP FRAME"] == pytest.approx(frame["zero_point"], abs=0.02), name
        assert qc["ZP"] == pytest.approx(truth["zero_points_above_atmosphere"][frame["filter"]], abs=0.02)
        assert 0 < qc["ZP ERR"] < 0.02 and qc["ZP NSTARS"] >= 10
        exptime = frame_exptime(read_header(nominal["raw"] / name))
        assert header["PHOTZP"] == pytest.approx(frame["zero_point"] + 2.5 * np.log10(exptime), abs=0.02)
        # calibrated magnitudes of unflagged bright stars against the catalogue
        cat = Table.read(nominal["catalogue"][name])
        refcat = Table.read(nominal["raw"] / "refcat.ecsv")
        mags = dict(zip(refcat["id"], refcat[frame["filter"]]))
        good = (cat["flags"] == 0) & (cat["cat_id"] >= 0) & (cat["mag_err"] < 0.01)
        diff = np.array([m - mags[i] for m, i in zip(cat["mag"][good], cat["cat_id"][good])])
        assert good.sum() >= 10 and abs(np.median(diff)) < 0.02 and np.std(diff) < 0.03
        assert 21.0 < qc["LIMMAG"] < 26.0


def test_zero_point_with_offset_pointing(rotated):
    (name,) = [n for n, f in rotated["truth"]["frames"].items() if f["filter"] == "r"]
    assert _qc(rotated["image"][name])["ZP FRAME"] == pytest.approx(rotated["truth"]["frames"][name]["zero_point"], abs=0.02)


def test_v_frame_has_a_wcs_and_no_photometric_calibration(rotated):
    (name,) = [n for n, f in rotated["truth"]["frames"].items() if f["filter"] == "V"]
    header = fits.getheader(rotated["image"][name])
    assert header["FLUXCAL"] == "UNCALIBRATED" and "astrometry only" in header.comments["FLUXCAL"]
    qc = _qc(rotated["image"][name])
    assert qc["PHOTCAL"] == 0 and "ZP" not in qc and "PHOTZP" not in header
    assert qc["ASTROM RMS"] < 0.1 and header["CTYPE1"] == "RA---TAN"
    assert fits.getheader(rotated["catalogue"][name])["FLUXCAL"] == "UNCALIBRATED"


# -- bad inputs through the command line --------------------------------------------------

@pytest.fixture
def bad(nominal, tmp_path):
    """Inputs for a g-band run: the science frame, the calibrations, the catalogue; and a runner."""
    (name,) = [n for n, f in nominal["truth"]["frames"].items() if f["filter"] == "g"]
    inputs = {"science": nominal["raw"] / name, "bias": nominal["bias"], "dark": nominal["dark"],
              "flat": nominal["flat"]["g"], "refcat": nominal["raw"] / "refcat.ecsv"}

    def run(capsys, **replace):
        given = {**inputs, **replace}
        lines = [(given["science"], "OBJECT_ACQ"), (given["bias"], "MASTER_BIAS_ACQ"),
                 (given["dark"], "MASTER_DARK_ACQ")]
        flat_filter = "r" if given["flat"] == nominal["flat"]["r"] else "g"
        lines.append((given["flat"], f"MASTER_FLAT_ACQ_{flat_filter}"))
        if given["refcat"] is not None:
            lines.append((given["refcat"], "REF_CAT"))
        out = tmp_path / "out"
        code = main(["image", str(_sof(tmp_path / "image.sof", lines)), "-o", str(out)])
        err = capsys.readouterr().err
        written = list(out.glob("*.fits")) if out.exists() else []
        return code, err, written

    return inputs, run


def _science_copy(path, target, data=None, **cards):
    """An uncompressed copy of a raw frame, with other pixels or header values."""
    raw, header = read_image(path)
    header = fits.Header([c for c in read_header(path).cards if c.keyword not in STRUCTURAL])
    for key, value in cards.items():
        header[key] = value
    image = raw if data is None else data
    fits.PrimaryHDU(np.clip(np.round(image), 0, 65535).astype(np.uint16), header=header).writeto(target)
    return target


def test_blank_frame_is_an_error(bad, tmp_path, capsys):
    inputs, run = bad
    blank = read_image_product(inputs["bias"]).data + np.random.default_rng(1).normal(100, 10, (1024, 1024))
    code, err, written = run(capsys, science=_science_copy(inputs["science"], tmp_path / "blank.fits", data=blank))
    assert code != 0 and "sources detected" in err and "blank or clouded frame" in err and not written


def test_pointing_far_off_is_an_error(bad, tmp_path, capsys):
    inputs, run = bad
    header = read_header(inputs["science"])
    moved = _science_copy(inputs["science"], tmp_path / "moved.fits", DEC=header["DEC"] + 100.0 / 3600.0)
    code, err, written = run(capsys, science=moved)
    assert code != 0 and "astrometry failed" in err and "no significant match" in err and not written


def test_too_few_catalogue_stars_is_an_error(bad, tmp_path, capsys):
    inputs, run = bad
    refcat = Table.read(inputs["refcat"])
    refcat[np.argsort(refcat["r"])[:5]].write(tmp_path / "tiny.ecsv", format="ascii.ecsv")
    code, err, written = run(capsys, refcat=tmp_path / "tiny.ecsv")
    assert code != 0 and "astrometry failed" in err and not written


def test_flat_of_another_filter_is_an_error(bad, nominal, capsys):
    _, run = bad
    code, err, written = run(capsys, flat=nominal["flat"]["r"])
    assert code != 0 and "MASTER_FLAT_ACQ_r is for filter r but the raw frames are of filter g" in err and not written


def test_missing_catalogue_is_an_error(bad, capsys):
    _, run = bad
    code, err, written = run(capsys, refcat=None)
    assert code != 0 and "needs a REF_CAT" in err and not written


def test_catalogue_without_the_filter_flags_the_product(bad, tmp_path, capsys):
    inputs, run = bad
    refcat = Table.read(inputs["refcat"])
    refcat.remove_column("g")
    refcat.meta.clear()
    refcat.write(tmp_path / "no_g.fits")
    code, err, written = run(capsys, refcat=tmp_path / "no_g.fits")
    assert code == 0
    (image,) = [p for p in written if p.name.startswith("IMAGE_ACQ_g")]
    header = fits.getheader(image)
    assert header["FLUXCAL"] == "UNCALIBRATED" and "no g magnitudes" in header.comments["FLUXCAL"]
    assert header["HIERARCH ESO QC PHOTCAL"] == 0 and header["HIERARCH ESO QC ASTROM RMS"] < 0.1


def test_mflat_rejects_mixed_filters(nominal, tmp_path, capsys):
    manifest = Table.read(nominal["truth_dir"] / "manifest.ecsv")
    flats = [nominal["raw"] / r["file"] for r in manifest if r["kind"] == "imaging_flat"]
    sof = _sof(tmp_path / "flat.sof", [(p, "FLAT,SKY_ACQ") for p in flats] + [(nominal["bias"], "MASTER_BIAS_ACQ")])
    code = main(["mflat", str(sof), "-o", str(tmp_path / "out")])
    err = capsys.readouterr().err
    assert code != 0 and "use one filter per SOF" in err
    assert not list((tmp_path / "out").glob("*.fits"))


def test_frames_of_one_ob_are_registered_and_stacked(nominal, tmp_path, caplog):
    """The r frame and a copy shifted by (7, -4) px: registered back, the stack keeps the seeing and the WCS."""
    (name,) = [n for n, f in nominal["truth"]["frames"].items() if f["filter"] == "r"]
    raw, _ = read_image(nominal["raw"] / name)
    rng = np.random.default_rng(3)
    shifted = np.roll(raw, (-4, 7), axis=(0, 1)) + rng.normal(0, 3, raw.shape)
    copy = _science_copy(nominal["raw"] / name, tmp_path / "shifted.fits", data=shifted)
    sof = _sof(tmp_path / "two.sof", [(nominal["raw"] / name, "OBJECT_ACQ"), (copy, "OBJECT_ACQ"),
                                      (nominal["bias"], "MASTER_BIAS_ACQ"), (nominal["flat"]["r"], "MASTER_FLAT_ACQ_r"),
                                      (nominal["raw"] / "refcat.ecsv", "REF_CAT")])
    with caplog.at_level("INFO", logger="soxspipe"):
        image, _ = soxs_image(sof, output_dir=tmp_path / "out").run()
    shifts = [r.args for r in caplog.records if r.getMessage().startswith("registered a frame")]
    assert len(shifts) == 1
    dx, dy, n = shifts[0]
    assert dx == pytest.approx(-7.0, abs=0.05) and dy == pytest.approx(4.0, abs=0.05) and n >= 30
    qc = _qc(image)
    truth = nominal["truth"]["frames"][name]
    assert qc["NFRAMES"] == 2 and qc["ASTROM RMS"] < 0.1
    assert qc["FWHM"] == pytest.approx(truth["seeing_arcsec"], rel=0.1)
    assert qc["ZP FRAME"] == pytest.approx(truth["zero_point"], abs=0.03)
