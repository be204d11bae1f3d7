"""soxs_disp_solution on simulated single-pinhole arcs (nominal, flexure, extreme; both arms), against the truth,
and its bad inputs through the command line."""

import re

import numpy as np
import pytest
from astropy.io import fits

from cli_helpers import assert_fails_clearly, run_cli
from soxspipe.commonutils.detectors import detector
from soxspipe.products import read_dispersion_solution, read_line_table
from soxspipe.simulator import load_truth

CASES = [("VIS", "nominal", (1, 1)), ("VIS", "flexure", (1, 1)), ("NIR", "nominal", (1, 1)),
         ("NIR", "flexure", (1, 1)), ("VIS", "flexure", (2, 1))]




def truth_of_lines(s, arm, binning=(1, 1)):
    """The truth positions of a DISP_TAB_LINES table's lines and which of them are clean.

    Clean: rendered where the truth puts it, no rendered neighbour within 6 px carrying
    5 % of its flux, well detectable (peak > 300 e) and below saturation.
    """
    truth = load_truth(s["out"] + "/truth", arm=arm)
    lines = read_line_table(s["disp"][1])
    o, w = np.asarray(lines["order"]), np.asarray(lines["wavelength"])
    tx, ty = truth.optics.xy(o, w, 0.0, binning)
    rendered = truth.lines("pinhole_arc", binning)
    rx, ry, rf, peak = (np.asarray(rendered[c]) for c in ("x", "y", "flux_e", "peak_e"))
    dist = np.hypot(tx[:, None] - rx[None], ty[:, None] - ry[None])
    own = np.argmin(dist, axis=1)
    crowded = ((dist < 6) & (rf[None] > 0.05 * rf[own][:, None])).sum(axis=1) > 1
    det = detector(arm)
    saturation = 0.8 * det.saturation_adu * det.gain("slow" if arm == "VIS" else "default")
    clean = (dist[np.arange(o.size), own] < 0.05) & ~crowded & (peak[own] > 300) & (peak[own] < saturation)
    return truth, lines, tx, ty, clean, rendered[own]


@pytest.mark.parametrize("arm,scenario,binning", CASES)
def test_dispersion_solution_against_truth(sets, arm, scenario, binning):
    s = sets(arm, scenario, binning=binning)
    assert s["disp_error"] is None, s["disp_error"]
    truth, lines, tx, ty, clean, _ = truth_of_lines(s, arm, binning)
    solution = read_dispersion_solution(s["disp"][0])
    used = np.asarray(lines["used"])
    fx, fy = solution.xy(lines["order"], lines["wavelength"], 0.0)
    # measured: 0.05-0.06 px (VIS, 1x1 and 2x1), 0.016 px (NIR)
    rms = np.sqrt(np.mean((fx - tx)[used] ** 2 + (fy - ty)[used] ** 2))
    assert rms < 0.1, rms
    # the solution between the lines too: a grid over each order's used wavelength range
    for o in np.unique(lines["order"][used]):
        wl = np.asarray(lines["wavelength"])[used & (np.asarray(lines["order"]) == o)]
        grid = np.linspace(wl.min(), wl.max(), 50)
        gx, gy = solution.xy(np.full(50, o), grid, 0.0)
        ex, ey = truth.optics.xy(int(o), grid, 0.0, binning)
        assert np.sqrt(np.mean((gx - ex) ** 2 + (gy - ey) ** 2)) < 0.1, o
    assert clean.sum() > 40
    assert used[clean].mean() >= 0.9, used[clean].mean()
    assert set(np.unique(lines["status"])) <= {"used", "clipped", "blend", "not found", "saturated", "bad pixel",
                                               "off frame", "off prediction", "faint", "no centroid"}


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_qc_widths_and_resolving_power(sets, arm):
    s = sets(arm, "nominal")
    truth, lines, _, _, _, rendered = truth_of_lines(s, arm)
    used = np.asarray(lines["used"])
    header = fits.getheader(s["disp"][0])
    true_fwhm_x = 2.3548 * np.median(np.asarray(rendered["sigma_x"])[used])
    true_fwhm_y = 2.3548 * np.median(np.asarray(rendered["sigma_y"])[used])
    # VIS: the dense ThAr forest widens the lines a little (measured +8 % along y)
    tolerance = 0.12 if arm == "VIS" else 0.03
    assert header["HIERARCH ESO QC FWHM X"] == pytest.approx(true_fwhm_x, rel=tolerance)
    assert header["HIERARCH ESO QC FWHM Y"] == pytest.approx(true_fwhm_y, rel=tolerance)
    axis = detector(arm).dispersion_axis
    sigma_d = np.asarray(rendered["sigma_y" if axis == "y" else "sigma_x"])[used]
    wl, o = np.asarray(lines["wavelength"])[used], np.asarray(lines["order"])[used]
    dispersion = np.array([truth.optics.dispersion(int(a), b) for a, b in zip(o, wl)])
    true_power = np.median(wl / (2.3548 * sigma_d * dispersion))
    assert header["HIERARCH ESO QC RESOLVING POWER"] == pytest.approx(true_power, rel=tolerance)
    assert header["HIERARCH ESO QC LINES TOTAL"] == len(lines)
    assert header["HIERARCH ESO QC LINES DETECTED"] == int(np.asarray(lines["detected"]).sum())
    assert header["HIERARCH ESO QC STATUS"] == "PASS"
    assert header["HIERARCH ESO PRO DISP DEG ORDER"] == (3 if arm == "VIS" else 10)


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_extreme_arc_within_0p3_px_or_a_clear_failure(sets, arm):
    """Extreme: lines 4x brighter (most clean ones saturate), cosmics, bad columns.

    Measured: NIR 0.016 px RMS; VIS fails, saying that order 1 keeps 11 lines, 38 saturated.
    """
    s = sets(arm, "extreme", flats=False)
    if s["disp_error"] is not None:
        assert arm == "VIS", s["disp_error"]
        assert re.search(r"order \d+: \d+ usable lines of \d+ predicted .*\d+ saturated", s["disp_error"])
        return
    truth, lines, tx, ty, _, _ = truth_of_lines(s, arm)
    used = np.asarray(lines["used"])
    fx, fy = read_dispersion_solution(s["disp"][0]).xy(lines["order"], lines["wavelength"], 0.0)
    assert np.sqrt(np.mean((fx - tx)[used] ** 2 + (fy - ty)[used] ** 2)) < 0.3
    assert (np.asarray(lines["status"]) == "saturated").sum() > 50
    header = fits.getheader(s["disp"][0])
    saturated = (np.asarray(lines["status"]) == "saturated").mean()
    assert header["HIERARCH ESO QC LINES SATURATED FRAC"] == pytest.approx(saturated, abs=1e-4)


# -- bad input through the command line -------------------------------------------------------------


def modified_arc(s, folder, change):
    """Copy the VIS arc with its data changed by ``change(data)``; return a SOF with it and the bias."""
    folder.mkdir(parents=True, exist_ok=True)
    truth = load_truth(s["out"] + "/truth")
    (arc,) = truth.raw_files(kind="pinhole_arc")
    with fits.open(arc) as hdul:
        hdul[0].data = change(hdul[0].data.astype(np.int64)).clip(0, 65535).astype(np.uint16)
        hdul.writeto(folder / "arc.fits")
    sof = folder / "arc.sof"
    sof.write_text(f"arc.fits LAMP,WAVE_VIS\n{s['bias'][0]} MASTER_BIAS_VIS\n")
    return sof


def blank(data):
    rng = np.random.default_rng(0)
    return np.round(np.median(data) + rng.normal(0, 5, data.shape))


def shifted(data):
    return np.roll(data, 40, axis=0)


def no_order_1(data):
    """Wipe order 1 (its slit spans science columns 136-199, raw columns 186-249)."""
    out = data.copy()
    out[:, 150:280] = np.median(data)
    return out


@pytest.mark.parametrize("change,poly,message", [
    (blank, None, "no dispersion solution: .*(no line stands|match the frame's peaks)"),
    (shifted, None, "no dispersion solution: .*(edge of the .* search window|match the frame's peaks)"),
    (no_order_1, None, "no dispersion solution: order 1: 0 usable lines of .* predicted"),
    (None, "3,80", "no dispersion solution: too few good lines for the fit: .* points for .* coefficients"),
    (None, "3,x", "--poly takes 2 comma-separated non-negative degrees"),
])
def test_bad_arcs_fail_clearly(sets, tmp_path, change, poly, message):
    s = sets("VIS", "nominal")
    sof = modified_arc(s, tmp_path / "in", change or (lambda d: d))
    args = ["disp_solution", sof, "-o", tmp_path / "out"] + ([f"--poly={poly}"] if poly else [])
    assert_fails_clearly(args, tmp_path, message, tmp_path / "out", "DISP_TAB*")


def test_poly_option_sets_the_degrees(sets, tmp_path):
    s = sets("VIS", "nominal")
    sof = modified_arc(s, tmp_path / "in", lambda d: d)
    result = run_cli(["disp_solution", sof, "-o", tmp_path / "out", "--poly=3,4"], tmp_path)
    assert result.returncode == 0, result.stderr
    (product,) = (tmp_path / "out").glob("DISP_TAB_VIS_*.fits")
    assert fits.getheader(product)["HIERARCH ESO PRO DISP DEG WAVE"] == 4
    assert read_dispersion_solution(product).degrees == (3, 4, 0)
    assert list((tmp_path / "out" / "qc").glob("DISP_TAB_VIS*_lines.png"))
    assert list((tmp_path / "out" / "qc").glob("DISP_TAB_VIS*_residuals.png"))


def test_nir_needs_lamp_off_or_dark(sets, tmp_path):
    s = sets("NIR", "flexure")
    truth = load_truth(s["out"] + "/truth")
    rows = [r for r in truth.manifest if r["kind"] == "pinhole_arc"]
    on = [truth.dir.parent / "raw" / r["file"] for r in rows if str(r["lamps"]).strip() not in ("", "--")]
    sof = tmp_path / "on.sof"
    sof.write_text("".join(f"{p} LAMP,WAVE_NIR\n" for p in on))
    result = run_cli(["disp_solution", sof, "-o", tmp_path / "out"], tmp_path)
    assert result.returncode == 1
    assert "needs the lamp-off partner of the lamp frame or a MASTER_DARK_NIR" in result.stderr
