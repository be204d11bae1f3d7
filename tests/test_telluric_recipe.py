"""soxs_telluric and the telluric correction of science products.

First the cores of :mod:`soxspipe.commonutils.science_telluric` on hand-made tables (the product
table's species split, the correction with a known transmission, the flags, the shift in
wavelength, the checks against the science); then, on the session's simulated night reduced once
by the organiser (``science_fixtures``: the telluric standard TELLSTD-1, a hot star at airmass
1.34, goes to ``telluric`` after ``response``; GAL-A, at airmass 1.02, to ``stare`` with the
night's TELLURIC), against the simulator's truth; then the command line: the transmission from a
product alone, a flux standard serving, bad inputs.
"""

import logging
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
from astropy.io import fits
from astropy.table import Table

from science_fixtures import SCIENCE_KINDS, at_resolution, product, target_run
from cli_helpers import assert_fails_clearly, run_cli, write_sof
from soxspipe.commonutils import science_telluric as st
from soxspipe.commonutils import telluric as tel
from soxspipe.commonutils.errors import DataError
from soxspipe.products import read_extracted_orders, read_merged_spectrum, read_telluric
from soxspipe.recipes import RECIPES
from soxspipe.simulator import load_truth, spectra

STANDARD, TARGET = "TELLSTD-1", "GAL-A"
#: the Done-when bands: name -> (arm, low, high) nm
BANDS = {"O2 A": ("VIS", 756.0, 772.0), "H2O 0.94um": ("NIR", 870.0, 1000.0), "H2O 1.13um": ("NIR", 1070.0, 1200.0)}
UNUSABLE = 1 | 4  # no data, incomplete (science_extract.QUAL_BITS)


# -- cores on hand-made tables -------------------------------------------------------------------


def _tables(airmass=1.5, step=0.02, shift_px=0.0, flux=2.0e-16, low=750.0, high=780.0):
    """A flat spectrum through the simulator's atmosphere at ``airmass`` (on a grid moved by ``shift_px`` pixels):
    the merged table (FLUX_CAL beside the counts) and an orders table of two overlapping orders on other bins."""
    grid = np.arange(low, high + step / 2, step)
    wave = 0.5 * (grid[1:] + grid[:-1])
    t = spectra.telluric(wave - shift_px * step, airmass)
    merged = Table({"WAVE": wave, "WAVE_LO": grid[:-1], "WAVE_HI": grid[1:], "FLUX": 1e3 * t,
                    "ERR": np.full(wave.size, 1.0),
                    "FLUX_CAL": flux * t, "ERR_CAL": np.full(wave.size, 1e-18), "SKY": np.zeros(wave.size),
                    "QUAL": np.zeros(wave.size, np.int32), "N_ORDERS": np.ones(wave.size, np.int32)})
    rows = []
    for order, (a, b) in ((7, (low, 0.5 * (low + high) + 3.0)), (8, (0.5 * (low + high) - 3.0, high))):
        w = np.arange(a + 0.013, b, 0.027)
        tt = spectra.telluric(w - shift_px * step, airmass)
        rows.append(Table({"ORDER": np.full(w.size, order), "WAVE": w, "FLUX": 1e3 * tt, "ERR": np.full(w.size, 1.0),
                           "QUAL": np.zeros(w.size, np.int32)}))
    from astropy.table import vstack

    return merged, vstack(rows)


def _standard(airmass=1.2, low=740.0, high=790.0, step=0.01, **meta):
    """The exact transmission at ``airmass`` as a TELLURIC would hold it (one stretch marked interpolated)."""
    wave = np.arange(low, high, step)
    interpolated = (wave > 775.0) & (wave < 776.0)
    transmission = tel.Transmission(wave, spectra.telluric(wave, airmass), np.full(wave.size, 1e-3), np.ones(wave.size),
                                    airmass, interpolated)
    values = dict(standard=STANDARD, airmass=airmass, source="STD,TELLURIC", arm="VIS", slit="SLIT1.0", binning=(1, 1),
                  path="/x/TELLURIC_VIS_test.fits")
    values.update(meta)
    return st.TelluricStandard(transmission, values)


def test_product_table_splits_the_species_and_reads_back():
    """TRANS = TRANS_H2O x TRANS_O2, each 1 outside its own bands; the table gives back the transmission."""
    wave = np.array([600.0, 700.0, 762.0, 935.0, 1268.0, 2010.0])  # outside, H2O, O2 A, H2O, O2, CO2
    trans = np.array([1.0, 0.9, 0.3, 0.6, 0.8, 0.7])
    t = tel.Transmission(wave, trans, np.full(6, 0.01), np.ones(6), 1.3, np.array([0, 0, 0, 1, 0, 0], bool))
    table = st.transmission_table(t)
    assert table["TRANS_H2O"].tolist() == [1.0, 0.9, 1.0, 0.6, 1.0, 1.0]
    assert table["TRANS_O2"].tolist() == [1.0, 1.0, 0.3, 1.0, 0.8, 0.7]
    np.testing.assert_array_equal(table["TRANS_H2O"] * table["TRANS_O2"], trans)
    assert table["QUAL"].tolist() == [0, 0, 0, st.QUAL_TRANSMISSION_INTERPOLATED, 0, 0]
    back = st.telluric_from_table(table, {"airmass": 1.3}).transmission
    np.testing.assert_array_equal(back.transmission, trans)
    assert back.airmass == 1.3 and back.unreliable.tolist() == [False, False, False, True, False, False]


def test_correction_with_a_known_transmission_and_its_flags():
    """The exact transmission at airmass 1.2 scaled to 1.5: the flat spectrum comes back to 1e-6 wherever the
    scaled transmission is 0.2 or more; below, the flux is left as it was and QUAL has bit 64; bit 128 where the
    transmission was interpolated; the counts (FLUX) are untouched and the columns sit after ERR_CAL."""
    merged, orders = _tables(1.5)
    out = st.apply_telluric(orders, merged, _standard(1.2), airmass=1.5, threshold=0.2)
    for table, column in ((out.merged, "FLUX_CAL"), (out.orders, "FLUX")):
        wave = np.asarray(table["WAVE"])
        expected = spectra.telluric(wave, 1.5)
        level = 2.0e-16 if column == "FLUX_CAL" else 1e3
        low = (table["QUAL"] & st.QUAL_LOW_TRANSMISSION) != 0
        # the scaled transmission is linearly interpolated from the standard's 0.01 nm grid
        assert np.all((expected[low] < 0.21)) and np.all(expected[~low] > 0.19)
        np.testing.assert_allclose(table["FLUX_TELL"][~low], level, rtol=2e-2)
        assert np.median(np.abs(np.asarray(table["FLUX_TELL"][~low]) / level - 1)) < 1e-3
        np.testing.assert_array_equal(table["FLUX_TELL"][low], table[column][low])
        interpolated = (table["QUAL"] & st.QUAL_TRANSMISSION_INTERPOLATED) != 0
        assert np.array_equal(interpolated, (wave > 775.0) & (wave < 776.0))
        assert 0.05 < low.mean() < 0.4
    assert out.merged.colnames[:9] == ["WAVE", "WAVE_LO", "WAVE_HI", "FLUX", "ERR", "FLUX_CAL", "ERR_CAL", "FLUX_TELL",
                                       "ERR_TELL"]
    np.testing.assert_array_equal(out.merged["FLUX"], merged["FLUX"])
    assert out.orders.colnames[:6] == ["ORDER", "WAVE", "FLUX", "ERR", "FLUX_TELL", "ERR_TELL"]
    # the error: the flux's and the transmission's (1e-3 x the exponent 1.25 x T^0.25) over the transmission
    row = int(np.argmin(np.abs(np.asarray(out.merged["WAVE"]) - 750.5)))
    t, t_std = (spectra.telluric(float(out.merged["WAVE"][row]), x) for x in (1.5, 1.2))
    expected = np.hypot(1e-18, 2e-16 * 1.25 * 1e-3 * t_std ** 0.25 / t) / t
    assert out.merged["ERR_TELL"][row] == pytest.approx(expected, rel=0.02)
    assert out.cards["pro_tell_std"] == (STANDARD, "standard of the telluric transmission")
    assert out.cards["pro_tell_std_airm"][0] == 1.2 and out.cards["pro_tell_sci_airm"][0] == 1.5
    assert out.cards["pro_tell_file"][0] == "TELLURIC_VIS_test.fits"
    assert out.cards["pro_tell_source"][0] == "STD,TELLURIC"
    qc = {name: value for name, value, _, _ in out.qc}
    assert qc["TELL AIRM FLAG"] == 0 and qc["TELL AIRM DIFF"] == pytest.approx(0.3)
    assert abs(qc["TELL SHIFT"]) < 0.002 and qc["TELL FLAGGED"] == pytest.approx(
        float(np.mean((out.merged["QUAL"] & st.QUAL_LOW_TRANSMISSION) != 0)), abs=1e-4)


@pytest.mark.parametrize("shift_px", [0.4, -0.7])
def test_shift_measured_on_the_merged_grid_is_applied_in_wavelength(shift_px):
    """The science's lines moved by a fraction of a merged pixel (0.02 nm): the shift within 0.03 px, and the
    orders (on other bins) corrected as well as the merged spectrum: within 1 % where T > 0.5 (3 % without)."""
    merged, orders = _tables(1.5, shift_px=shift_px)
    out = st.apply_telluric(orders, merged, _standard(1.2), airmass=1.5)
    assert out.cards["pro_tell_shift"][0] == pytest.approx(shift_px * 0.02, abs=0.03 * 0.02)
    unshifted = st.apply_telluric(orders, merged, _standard(1.2), airmass=1.5, max_shift=0.0)
    for good, bad in ((out.orders, unshifted.orders), (out.merged, unshifted.merged)):
        wave = np.asarray(good["WAVE"])
        clear = spectra.telluric(wave, 1.5) > 0.5
        column = "FLUX" if "ORDER" in good.colnames else "FLUX_CAL"
        level = np.median(good[column][spectra.telluric(wave, 1.5) > 0.999])
        ratio = np.asarray(good["FLUX_TELL"])[clear] / level
        print(shift_px, column, np.percentile(np.abs(ratio - 1), 99).round(4),
              np.percentile(np.abs(np.asarray(bad["FLUX_TELL"])[clear] / level - 1), 99).round(4))
        assert np.percentile(np.abs(ratio - 1), 99) < 0.01
        assert np.percentile(np.abs(np.asarray(bad["FLUX_TELL"])[clear] / level - 1), 99) > 0.03


def _frame(**kw):
    values = dict(path="sci.fits", arm="VIS", slit="SLIT1.0", binning=(1, 1), mjd=60696.0)
    values.update(kw)
    return SimpleNamespace(**values)


@pytest.mark.parametrize("frame,message", [
    (_frame(slit="SLIT5.0"), r"TELLURIC_VIS_test.fits: a telluric transmission measured with slit SLIT1.0 for frames "
                             r"of slit SLIT5.0 \(sci.fits\); give a TELLURIC_VIS"),
    (_frame(binning=(2, 1)), "measured with binning 1x1 for frames of binning 2x1"),
    (_frame(arm="NIR"), "measured with arm VIS for frames of arm NIR.*give a TELLURIC_NIR"),
])
def test_transmission_of_another_setup_is_refused(frame, message):
    merged, orders = _tables()
    with pytest.raises(DataError, match=message):
        st.apply_telluric(orders, merged, _standard(), airmass=1.5, frame=frame)
    st.apply_telluric(orders, merged, _standard(), airmass=1.5, frame=_frame())


def test_standard_far_in_airmass_is_flagged_and_no_airmass_is_an_error(caplog):
    merged, orders = _tables(1.9)
    with caplog.at_level(logging.WARNING, logger="soxspipe.commonutils.telluric"):
        out = st.apply_telluric(orders, merged, _standard(1.2), airmass=1.9, max_airmass_difference=0.5)
    assert "differs from the science airmass 1.90 by 0.70 (> 0.50)" in caplog.text
    qc = {name: value for name, value, _, _ in out.qc}
    assert qc["TELL AIRM FLAG"] == 1 and qc["TELL AIRM DIFF"] == pytest.approx(0.7)
    assert {n for n, *_ in st.apply_telluric(orders, merged, _standard(1.45), airmass=1.9).qc} >= {"TELL AIRM FLAG"}
    assert dict((n, v) for n, v, *_ in st.apply_telluric(orders, merged, _standard(1.45), airmass=1.9).qc)[
        "TELL AIRM FLAG"] == 0
    with pytest.raises(DataError, match="sci.fits: no airmass in the header, needed to scale the telluric "
                                        "transmission of /x/TELLURIC_VIS_test.fits"):
        st.apply_telluric(orders, merged, _standard(), airmass=None, frame=_frame())


# -- the recipe on the simulated night --------------------------------------------------------------


def test_reduce_all_runs_telluric_after_response_before_the_science(night):
    """The telluric standard's runs are ``telluric`` runs, after the response and before every science run; their
    products pass QC, name the standard, its airmass (the truth's) and DPR TYPE; GAL-A's SOF has the TELLURIC."""
    order = [r["recipe"] for r in night["runs"]]
    science = min(i for i, r in enumerate(order) if r in ("stare", "nod", "offset"))
    workspace = Path(night["workspace"])
    for arm in ("VIS", "NIR"):
        run = target_run(night, "telluric", arm, STANDARD)
        assert run["status"] == "ok", (run["name"], run["reason"])
        position = night["runs"].index(run)
        assert night["runs"].index(target_run(night, "response", arm, "LTT3218")) < position < science
        names = {Path(p).name.split("_1x1")[0] for p in run["products"]}
        assert {f"STD_TELL_{k}_{arm}" for k in SCIENCE_KINDS} | {f"TELLURIC_{arm}"} <= names
        for path in run["products"]:
            assert fits.getheader(path)["ESO QC STATUS"] == "PASS"
        path = Path(product(run, f"TELLURIC_{arm}"))
        telluric = read_telluric(path)
        header = telluric.meta["header"]
        truth = load_truth(night["truth"], arm=arm).spectrum(STANDARD).meta
        assert telluric.meta["standard"] == STANDARD and header["ESO DPR TYPE"] == "STD,TELLURIC"
        assert telluric.meta["source"] == "STD,TELLURIC"
        assert telluric.meta["airmass"] == pytest.approx(truth["airmass"], abs=0.01)
        assert telluric.meta["table"].colnames == ["WAVE", "TRANS", "TRANS_ERR", "TRANS_H2O", "TRANS_O2", "QUAL"]
        assert list(workspace.glob(f"qc/*/telluric/{path.stem}_telluric.png"))
        # QC: the O2 A band's depth (VIS), the water bands' equivalent widths (NIR), against the truth's
        wave = np.asarray(telluric.transmission.wavelength)
        spec = load_truth(night["truth"], arm=arm).spectrum(STANDARD)
        injected = at_resolution(spec, np.asarray(spec["telluric"]), wave, arm)
        if arm == "VIS":
            assert 0.9 < header["ESO QC O2A DEPTH"] < 1.05 and "ESO QC H2O940 EW" not in header
        else:
            for name, (low, high) in (("H2O940", (870.0, 1000.0)), ("H2O1130", (1070.0, 1200.0))):
                inside = (wave >= low) & (wave <= high)
                width = np.trapezoid(1.0 - injected[inside], wave[inside])
                print(name, header[f"ESO QC {name} EW"], round(width, 3))
                assert header[f"ESO QC {name} EW"] == pytest.approx(width, rel=0.1)
        sof = workspace / "sof" / f"{target_run(night, 'stare', arm, TARGET)['name']}.sof"
        assert f"{path.name} TELLURIC_{arm}" in sof.read_text()


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_transmission_matches_the_injected(night, arm):
    """TELLSTD-1's measured transmission against the truth's (at the resolution), bins of the Done-when bands where
    it exceeds 0.5 and that are not interpolated across the star's lines: median within 7 %, 90 % of them within
    20 % (VIS) or 30 % (NIR, S/N ~35 per bin).

    The standard is flux-calibrated with the night's response, which is bridged across the bands (they are
    masked in its fit): the response's error there is in the measured transmission, and divides out of a
    science spectrum calibrated with the same response up to the power 1 - X_sci / X_std. Measured (seed 42):
    O2 A 1.013; 0.94 um 1.013, 1.13 um 1.051 (90 % within 13 %, 12 %, 20 %)."""
    telluric = read_telluric(product(target_run(night, "telluric", arm, STANDARD), f"TELLURIC_{arm}"))
    t = telluric.transmission
    spec = load_truth(night["truth"], arm=arm).spectrum(STANDARD)
    injected = at_resolution(spec, np.asarray(spec["telluric"]), t.wavelength, arm)
    for name, (band_arm, low, high) in BANDS.items():
        if band_arm != arm:
            continue
        use = (t.wavelength > low) & (t.wavelength < high) & (injected > 0.5) & ~t.unreliable
        ratio = t.transmission[use] / injected[use]
        print(arm, name, use.sum(), np.median(ratio).round(4), np.percentile(np.abs(ratio - 1), 90).round(4))
        assert use.sum() > 300
        assert abs(np.median(ratio) - 1) < 0.07
        assert np.percentile(np.abs(ratio - 1), 90) < (0.2 if arm == "VIS" else 0.3)
    outside = ~tel.band_mask(t.wavelength)
    assert np.all(t.transmission[outside] == 1.0)


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_corrected_science_matches_the_injected_spectrum(night, arm):
    """Done when: GAL-A's telluric-corrected flux (FLUX_TELL over the truth's slit transmission) against its injected
    top-of-atmosphere flux at the resolution, in the bins of each band where the injected transmission (at GAL-A's
    airmass) exceeds 0.5, neither unusable nor interpolated across the standard's lines: median within 5 %, per
    order table and merged. The uncorrected FLUX_CAL there is 8-17 % low. Measured (seed 42, merged / orders):
    O2 A 1.019 / 1.023 (uncorrected 0.922); 0.94 um 0.990 / 0.996 (0.863); 1.13 um 1.007 / 1.008 (0.843).

    QUAL: bit 64 on exactly the bins whose applied transmission is below 0.2 (FLUX_TELL = FLUX_CAL there), on none
    outside the bands; of the bins where the injected transmission is below 0.2 (not interpolated), most are
    flagged (measured: VIS 0.99 merged, 1.0 orders; NIR 0.87, 0.90). The header names the TELLURIC, the
    standard, both airmasses (the truth's) and a shift under 0.01 nm.
    """
    run = target_run(night, "stare", arm, TARGET)
    truth = load_truth(night["truth"], arm=arm)
    spec = truth.spectrum(TARGET)
    slit = spec.meta["slit_transmission"]
    telluric_path = Path(product(target_run(night, "telluric", arm, STANDARD), f"TELLURIC_{arm}"))
    for table in (read_merged_spectrum(product(run, f"SCI_MERGED_{arm}")),
                  read_extracted_orders(product(run, f"SCI_ORDERS_{arm}"))):
        meta = table.meta
        assert meta["ESO PRO TELL FILE"] == telluric_path.name and meta["ESO PRO TELL STD"] == STANDARD
        assert meta["ESO PRO TELL SCI AIRM"] == pytest.approx(spec.meta["airmass"], abs=0.01)
        assert meta["ESO PRO TELL STD AIRM"] == pytest.approx(truth.spectrum(STANDARD).meta["airmass"], abs=0.01)
        assert abs(meta["ESO PRO TELL SHIFT"]) < 0.01 and meta["ESO QC TELL AIRM FLAG"] == 0
        assert str(table["FLUX_TELL"].unit) == str(table["FLUX_CAL"].unit)
        wave = np.asarray(table["WAVE"], float)
        qual = np.asarray(table["QUAL"])
        top = at_resolution(spec, np.asarray(spec["toa_flux"]), wave, arm)
        injected = at_resolution(spec, np.asarray(spec["telluric"]), wave, arm)
        corrected = np.asarray(table["FLUX_TELL"], float) / slit / top
        uncorrected = np.asarray(table["FLUX_CAL"], float) / slit / top
        reliable = (qual & (UNUSABLE | st.QUAL_TRANSMISSION_INTERPOLATED)) == 0
        kind = "orders" if "ORDER" in table.colnames else "merged"
        for name, (band_arm, low, high) in BANDS.items():
            if band_arm != arm:
                continue
            use = (wave > low) & (wave < high) & (injected > 0.5) & reliable
            print(arm, kind, name, use.sum(), np.median(corrected[use]).round(4), np.median(uncorrected[use]).round(4))
            assert use.sum() >= 200
            assert abs(np.median(corrected[use]) - 1) < 0.05, (name, np.median(corrected[use]))
            assert np.median(uncorrected[use]) < 0.93  # the correction did something: the test can fail
        # QUAL: exactly where the applied transmission (FLUX_CAL / FLUX_TELL where corrected) is below 0.2
        low = (qual & st.QUAL_LOW_TRANSMISSION) != 0
        applied = read_telluric(telluric_path)
        values, _, _ = tel.transmission_at(applied.transmission, wave, meta["ESO PRO TELL SCI AIRM"],
                                           shift=meta["ESO PRO TELL SHIFT"])
        assert np.array_equal(low, ~(values >= 0.2))
        np.testing.assert_array_equal(np.asarray(table["FLUX_TELL"])[low], np.asarray(table["FLUX_CAL"])[low])
        assert not low[~tel.band_mask(wave)].any()
        opaque = (injected < 0.2) & reliable
        print(arm, kind, "flagged where injected T < 0.2:", opaque.sum(), low[opaque].mean().round(3))
        assert opaque.sum() > 20 and low[opaque].mean() > 0.8


# -- command line ------------------------------------------------------------------------------------


def test_cli_lists_the_recipe():
    assert list(RECIPES).index("response") < list(RECIPES).index("telluric") < list(RECIPES).index("stare")


def test_transmission_from_the_product_alone(night, tmp_path):
    """The STD_TELL_MERGED alone gives the TELLURIC the raw frames gave (the same table); none of the input's QC."""
    run = target_run(night, "telluric", "NIR", STANDARD)
    sof = write_sof(tmp_path / "tell.sof", [(product(run, "STD_TELL_MERGED_NIR"), "STD_TELL_MERGED_NIR")])
    result = run_cli(["telluric", sof, "-o", tmp_path / "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    (path,) = (tmp_path / "out").glob("TELLURIC_NIR_*[0-9].fits")
    assert path.name == Path(product(run, "TELLURIC_NIR")).name
    mine, theirs = read_telluric(path), read_telluric(product(run, "TELLURIC_NIR"))
    for column in ("TRANS", "TRANS_ERR", "TRANS_H2O", "TRANS_O2", "QUAL"):
        np.testing.assert_allclose(mine.meta["table"][column], theirs.meta["table"][column], rtol=1e-6)
    header = mine.meta["header"]
    assert header["ESO PRO REC1 RAW1 CATG"] == "STD_TELL_MERGED_NIR" and "ESO PRO REC1 CAL1 NAME" not in header
    assert "ESO QC SNR O12" not in header and header["ESO QC H2O940 EW"] == theirs.meta["header"]["ESO QC H2O940 EW"]
    assert list((tmp_path / "out" / "qc").glob(f"{path.stem}_telluric.png"))


def test_a_flux_standard_serves_and_says_so(night, tmp_path):
    """LTT 3218's STD_FLUX_MERGED (its catalogue spectrum divides its lines out): the product says STD,FLUX, and its
    transmission in the O2 A band's bins above 0.5 matches the truth's at its airmass within 2 % (median)."""
    run = target_run(night, "response", "VIS", "LTT3218")
    sof = write_sof(tmp_path / "flux.sof", [(product(run, "STD_FLUX_MERGED_VIS"), "STD_FLUX_MERGED_VIS")])
    result = run_cli(["telluric", sof, "-o", tmp_path / "out"], tmp_path)
    assert result.returncode == 0, result.stderr
    assert "no telluric standard; the flux standard LTT3218 serves" in result.stderr
    telluric = read_telluric(next((tmp_path / "out").glob("TELLURIC_VIS_*[0-9].fits")))
    assert telluric.meta["source"] == "STD,FLUX" and telluric.meta["standard"] == "LTT3218"
    assert "flux standard served" in telluric.meta["header"].comments["HIERARCH ESO PRO TELL SOURCE"]
    t = telluric.transmission
    spec = load_truth(night["truth"], arm="VIS").spectrum("LTT3218")
    injected = at_resolution(spec, np.asarray(spec["telluric"]), t.wavelength, "VIS")
    use = (t.wavelength > 756.0) & (t.wavelength < 772.0) & (injected > 0.5)
    print(np.median(t.transmission[use] / injected[use]))
    assert abs(np.median(t.transmission[use] / injected[use]) - 1) < 0.02


def _without_airmass(path, tmp_path):
    with fits.open(path) as hdul:
        del hdul[0].header["HIERARCH ESO PRO AIRM MEAN"]
        hdul.writeto(tmp_path / Path(path).name)
    return tmp_path / Path(path).name


@pytest.mark.parametrize("case,message", [
    ("science spectrum", r"no telluric-standard frames and no STD_TELL_MERGED_<ARM> or STD_FLUX_MERGED_<ARM> product"),
    ("raw frame and product", r"a STD,TELLURIC_VIS beside the STD_TELL_MERGED_VIS .*either a telluric standard's raw "
                              r"frames"),
    ("no airmass", r"STD_TELL_MERGED_VIS_.*\.fits: no airmass of the standard"),
    ("TELLURIC of another arm", r"TELLURIC_NIR_.*\.fits: a NIR frame in a SOF of VIS frames"),
])
def test_bad_inputs_fail_clearly(night, tmp_path, case, message):
    run = target_run(night, "telluric", "VIS", STANDARD)
    merged = product(run, "STD_TELL_MERGED_VIS")
    recipe = "telluric"
    if case == "science spectrum":
        rows = [(product(target_run(night, "stare", "VIS", TARGET), "SCI_MERGED_VIS"), "SCI_MERGED_VIS")]
    elif case == "raw frame and product":
        rows = [(Path(night["truth"]).parent / "raw" / run["raw"][0], "STD,TELLURIC_VIS"),
                (merged, "STD_TELL_MERGED_VIS")]
    elif case == "no airmass":
        rows = [(_without_airmass(merged, tmp_path), "STD_TELL_MERGED_VIS")]
    else:  # the science SOF of GAL-A (VIS) with the NIR transmission
        recipe = "stare"
        sof = Path(night["workspace"]) / "sof" / f"{target_run(night, 'stare', 'VIS', TARGET)['name']}.sof"
        rows = [((sof.parent / p).resolve(), t) for p, t in (line.split() for line in sof.read_text().splitlines()
                                                            if line.strip() and not line.startswith("#"))
                if not t.startswith("TELLURIC")]
        rows.append((product(target_run(night, "telluric", "NIR", STANDARD), "TELLURIC_NIR"), "TELLURIC_NIR"))
    sof = write_sof(tmp_path / "bad.sof", rows)
    assert_fails_clearly([recipe, sof, "-o", tmp_path / "out"], tmp_path, message, tmp_path / "out",
                         exit_codes=(1,), one_line=True)
