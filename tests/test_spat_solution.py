"""soxs_spatial_solution on simulated multi-pinhole arcs (nominal and flexure, both arms) against the truth,
the pixel-map inversion against a hand-made solution, and bad inputs through the command line."""


import numpy as np
import pytest
from astropy.io import fits

from pinhole_sets import built_once, shared_root, simulate_with_bias
from cli_helpers import assert_fails_clearly, run_cli, write_sof
from soxspipe.commonutils.detectors import detector
from soxspipe.commonutils.disp_image import invert_solution
from soxspipe.commonutils.dispersion import DispersionSolution
from soxspipe.commonutils.polynomials import Polynomial
from soxspipe.commonutils.settings import default_settings, recipe_settings
from soxspipe.products import read_disp_image, read_dispersion_solution, read_line_table
from soxspipe.recipes.soxs_disp_solution import soxs_disp_solution
from soxspipe.recipes.soxs_spatial_solution import soxs_spatial_solution
from soxspipe.simulator import load_truth

SEED = 5
CASES = [("VIS", "nominal"), ("VIS", "flexure"), ("NIR", "nominal"), ("NIR", "flexure")]


def mph_set(root, arm, scenario):
    """Simulate (once) an arm's single- and multi-pinhole arcs and reduce them (once); a dict of paths."""
    def build(out):
        truth, red, bias = simulate_with_bias(out, arm, scenario, ["pinhole_arc", "multipinhole_arc"], seed=SEED)
        disp = soxs_disp_solution(truth.raw_files(kind="pinhole_arc") + bias, output_dir=red).run()
        arcs = [str(p) for p in truth.raw_files(kind="multipinhole_arc")]
        spat = soxs_spatial_solution(arcs + bias + [disp[0]], output_dir=red / "spat").run()
        return {"out": str(out), "bias": bias, "disp": str(disp[0]), "arcs": arcs, "spat": [str(p) for p in spat]}

    return built_once(root, f"mph_{arm}_{scenario}", build)


@pytest.fixture(scope="session")
def sets(tmp_path_factory, worker_id):
    root = shared_root(tmp_path_factory, worker_id)
    return lambda arm, scenario: mph_set(root, arm, scenario)


def pinholes(arm):
    return np.round(recipe_settings(default_settings(), "spat_solution", arm)["pinhole-positions"], 5)


def _line_table(s):
    return read_line_table(s["spat"][1])


@pytest.mark.parametrize("arm,scenario", CASES)
def test_lines_and_solution_against_truth(sets, arm, scenario):
    s = sets(arm, scenario)
    truth = load_truth(s["out"] + "/truth", arm=arm)
    lines = _line_table(s)
    used = np.asarray(lines["used"])
    o, w, sl = (np.asarray(lines[c]) for c in ("order", "wavelength", "slit"))
    # every pinhole is measured
    assert set(np.unique(np.round(sl[used], 5))) == set(pinholes(arm))
    # line residuals: measured - fitted (measured: VIS 0.055 px, NIR 0.045 px)
    res = np.hypot(np.asarray(lines["x_residual"])[used], np.asarray(lines["y_residual"])[used])
    assert np.sqrt(np.mean(res ** 2)) < 0.1
    # the fitted solution at the lines against the truth (measured: VIS 0.017 px, NIR 0.04 px)
    solution = read_dispersion_solution(s["spat"][0])
    fx, fy = solution.xy(o, w, sl)
    tx, ty = truth.optics.xy(o, w, sl, (1, 1))
    rms = np.sqrt(np.mean((fx - tx)[used] ** 2 + (fy - ty)[used] ** 2))
    assert rms < 0.1, rms
    assert used.sum() > 1000
    assert solution.degrees == ((3, 5, 2) if arm == "VIS" else (14, 6, 4))
    # the lines used span most of every order on the detector, NIR order 10 too, whose images
    # beyond the first guess's reach are found along the slit (measured: 0.85-0.99; order 10 0.87,
    # 0.40 without)
    edges = truth.order_edges()
    for order in np.unique(np.asarray(edges["order"])):
        on_frame = np.asarray(edges["wavelength"])[np.asarray(edges["order"]) == order]
        span = np.ptp(w[used & (o == order)])
        assert span / np.ptp(on_frame) > 0.8, order


def order_pixels(edges, along_y, shape):
    """``(rows, cols, order)`` of the pixels between an order's true slit ends, 1 px in from them."""
    lo = np.ceil(np.minimum(edges["lower"], edges["upper"])) + 1
    hi = np.floor(np.maximum(edges["lower"], edges["upper"])) - 1
    n = np.clip(hi - lo + 1, 0, None).astype(int)
    d = np.repeat(np.asarray(edges["dispersion_pixel"]), n)
    c = (np.repeat(lo, n) + np.arange(n.sum()) - np.repeat(np.cumsum(n) - n, n)).astype(int)
    rows, cols = (d, c) if along_y else (c, d)
    on = (rows >= 0) & (rows < shape[0]) & (cols >= 0) & (cols < shape[1])
    return rows[on], cols[on], np.repeat(np.asarray(edges["order"]), n)[on]


@pytest.mark.parametrize("arm,scenario", CASES)
def test_disp_image_against_truth(sets, arm, scenario):
    """Every order pixel's centre mapped to (order, wavelength, slit), projected back through the true optics.

    The error along the dispersion in pixels is the wavelength error in units of the local
    dispersion per pixel; across it, divided by the pixels per arcsec, the slit error. Every
    pixel of every order counts, beyond an order's first and last lines too, where the map
    extrapolates (the ends of the NIR orders, where the lamps' lines are faint or blended).
    """
    s = sets(arm, scenario)
    truth = load_truth(s["out"] + "/truth", arm=arm)
    maps = read_disp_image(s["spat"][2])
    assert maps.wavelength.shape == maps.order.shape == maps.slit.shape
    orders = np.unique(np.asarray(truth.lines("multipinhole_arc")["order"]))
    assert set(np.unique(maps.order)) == set(orders) | {0}
    assert np.all(np.isnan(maps.wavelength[maps.order == 0]))
    assert np.all(np.isfinite(maps.wavelength[maps.order > 0]))
    assert np.nanmin(maps.slit) >= -6.0 and np.nanmax(maps.slit) <= 6.0
    along_y = detector(arm).dispersion_axis == "y"
    # the map covers every order whole (measured: 100 %; NIR order 10 47-55 % when its solution
    # extrapolated over half of it and folded)
    rows, cols, true_order = order_pixels(truth.order_edges(), along_y, maps.order.shape)
    for order in orders:
        m = true_order == order
        assert np.mean(maps.order[rows[m], cols[m]] == order) > 0.999, order
    yy, xx = np.nonzero(maps.order > 0)
    o = maps.order[yy, xx].astype(int)
    wl = maps.wavelength[yy, xx].astype(float)
    sl = maps.slit[yy, xx].astype(float)
    px, py = truth.optics.xy(o, wl, sl, (1, 1))
    d_err, c_err = (py - yy, px - xx) if along_y else (px - xx, py - yy)
    x1, y1 = truth.optics.xy(o, wl, sl + 0.5, (1, 1))
    x0, y0 = truth.optics.xy(o, wl, sl - 0.5, (1, 1))
    s_err = c_err / np.hypot(x1 - x0, y1 - y0)
    rms = {order: (np.sqrt(np.mean(d_err[o == order] ** 2)), np.sqrt(np.mean(s_err[o == order] ** 2)))
           for order in orders}
    # measured over every order pixel: wavelength VIS 0.017 px (orders 0.009-0.020), NIR 0.018-0.019 px
    # (orders 0.008-0.043; worst order 23, nominal, and order 10, 0.028 nominal, 0.039 flexure: both
    # beyond their last lines); slit VIS 0.001", NIR 0.012" (orders up to 0.018")
    assert np.sqrt(np.mean(d_err ** 2)) < 0.05
    assert np.sqrt(np.mean(s_err ** 2)) < 0.05
    assert max(r[0] for r in rms.values()) < 0.05, rms
    assert max(r[1] for r in rms.values()) < 0.05, rms


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_qc_resolving_power_and_pinholes(sets, arm):
    s = sets(arm, "nominal")
    truth = load_truth(s["out"] + "/truth", arm=arm)
    header = fits.getheader(s["spat"][0])
    lines = _line_table(s)
    used = np.asarray(lines["used"])
    rendered = truth.lines("multipinhole_arc")
    axis = detector(arm).dispersion_axis
    sigma = np.asarray(rendered["sigma_y" if axis == "y" else "sigma_x"])
    ro, rw = np.asarray(rendered["order"]), np.asarray(rendered["wavelength"])
    for order in np.unique(ro):
        m = ro == order
        dispersion = truth.optics.dispersion(int(order), rw[m])
        true_power = np.median(rw[m] / (2.3548 * sigma[m] * dispersion))
        assert header[f"HIERARCH ESO QC ORDER{order} RES POWER"] == pytest.approx(true_power, rel=0.1), order
    counts = [header[f"HIERARCH ESO QC PINHOLE{k} LINES"] for k in range(9)]
    slits = np.round(np.asarray(lines["slit"]), 5)
    expected = [int((used & (slits == p)).sum()) for p in pinholes(arm)]
    assert counts == expected
    assert header["HIERARCH ESO QC PINHOLE LINES MIN"] == min(expected) > 100
    res = np.asarray(lines["y_residual"])[used]
    assert header["HIERARCH ESO QC YRES SD"] == pytest.approx(np.std(res), abs=1e-5)
    assert header["HIERARCH ESO QC STATUS"] == "PASS"
    assert header["HIERARCH ESO PRO CATG"] == f"DISP_TAB_{arm}"
    assert fits.getheader(s["spat"][2])["HIERARCH ESO PRO CATG"] == f"DISP_IMAGE_{arm}"
    # a line kept has at least min-pinholes images used
    key = np.char.add(np.asarray(lines["order"]).astype(str), np.round(np.asarray(lines["wavelength"]), 4).astype(str))
    kept, n = np.unique(key[used], return_counts=True)
    assert n.min() >= 5


def test_inversion_of_a_linear_solution():
    """A solution with x = 100 + 20 s + 0.5 (lambda - 500), y = 10 (lambda - 500) + 0.3 s in one order."""
    lows, highs = (1.0, 400.0, -6.0), (2.0, 600.0, 6.0)
    # Legendre in normalised variables: lambda = 500 + 100 u, s = 6 v
    x = Polynomial((0, 1, 1), lows, highs, np.array([100.0, 120.0, 50.0, 0.0]))
    y = Polynomial((0, 1, 1), lows, highs, np.array([1000.0, 1.8, 1000.0, 0.0]))
    solution = DispersionSolution(x, y, "wavelength")
    maps = invert_solution(solution, [1], [(400.0, 600.0)], (2000, 300), "y", slit_range=(-6.0, 6.0), n_slit=9,
                           samples_per_pixel=0.5)
    yy, xx = np.nonzero(maps.order == 1)
    wl, sl = maps.wavelength[yy, xx].astype(float), maps.slit[yy, xx].astype(float)
    gx, gy = solution.xy(1, wl, sl)
    assert np.max(np.abs(gx - xx)) < 1e-3 and np.max(np.abs(gy - yy)) < 1e-3
    # every pixel between the slit's ends is in the order: in row 1000 (lambda = 500 - 0.03 s),
    # x = 100 + 19.985 s runs from -19.91 to 219.91: columns 0-219 on the frame
    assert np.array_equal(xx[yy == 1000], np.arange(0, 220))
    assert np.all(np.isnan(maps.wavelength[maps.order == 0]))
    # order edges (e.g. from an ORDER_TAB) bound the order further
    edged = invert_solution(solution, [1], [(400.0, 600.0)], (2000, 300), "y", n_slit=9, samples_per_pixel=0.5,
                            edges=lambda o, d: (np.full(d.shape, 50.0), 150.0 + 0.01 * d))
    cols = np.nonzero(edged.order[1000] == 1)[0]
    assert np.array_equal(cols, np.arange(50, 161))
    assert np.array_equal(edged.wavelength[1000, cols], maps.wavelength[1000, cols])


# -- bad input through the command line -------------------------------------------------------------


@pytest.mark.parametrize("case,message", [
    ("no disp_tab", "needs a DISP_TAB_VIS in the SOF"),
    ("bad poly", "--poly takes 3 comma-separated non-negative degrees"),
    ("blank", "no spatial solution: .*(no line stands|match the frame's peaks)"),
    ("shifted", "no spatial solution: .*(edge of the .* search window|match the frame's peaks)"),
])
def test_bad_inputs_fail_clearly(sets, tmp_path, case, message):
    s = sets("VIS", "nominal")
    arc = s["arcs"][0]
    if case in ("blank", "shifted"):
        with fits.open(arc) as hdul:
            data = hdul[0].data
            if case == "blank":
                rng = np.random.default_rng(0)
                hdul[0].data = np.round(np.median(data) + rng.normal(0, 5, data.shape)).astype(np.uint16)
            else:  # by 8 px along the dispersion: beyond the first guess by far more than a pinhole spacing
                hdul[0].data = np.roll(data, 8, axis=0)
            hdul.writeto(tmp_path / "changed.fits")
        arc = tmp_path / "changed.fits"
    rows = [(arc, "LAMP,WAVE_VIS"), (s["bias"][0], "MASTER_BIAS_VIS")]
    if case != "no disp_tab":
        rows.append((s["disp"], "DISP_TAB_VIS"))
    sof = write_sof(tmp_path / "mph.sof", rows)
    poly = ["--poly=3,5"] if case == "bad poly" else []
    assert_fails_clearly(["spat_solution", sof, "-o", tmp_path / "out"] + poly, tmp_path, message, tmp_path / "out",
                         "DISP_*")


def test_cli_writes_products_and_plots(sets, tmp_path):
    s = sets("VIS", "nominal")
    sof = write_sof(tmp_path / "mph.sof", [(s["arcs"][0], "LAMP,WAVE_VIS"), (s["bias"][0], "MASTER_BIAS_VIS"),
                                           (s["disp"], "DISP_TAB_VIS")])
    result = run_cli(["spat_solution", sof, "-o", tmp_path / "out", "--poly=3,5,1"], tmp_path)
    assert result.returncode == 0, result.stderr
    (product,) = (tmp_path / "out").glob("DISP_TAB_VIS_*[0-9].fits")
    assert read_dispersion_solution(product).degrees == (3, 5, 1)
    assert len(list((tmp_path / "out").glob("DISP_IMAGE_VIS_*[0-9].fits"))) == 1
    for suffix in ("lines", "residuals", "resolution"):
        assert list((tmp_path / "out" / "qc").glob(f"DISP_TAB_VIS*_{suffix}.png")), suffix


def test_nir_needs_lamp_off_or_dark(sets, tmp_path):
    s = sets("NIR", "nominal")
    truth = load_truth(s["out"] + "/truth")
    rows = [r for r in truth.manifest if r["kind"] == "multipinhole_arc"]
    on = [truth.dir.parent / "raw" / r["file"] for r in rows if str(r["lamps"]).strip() not in ("", "--")]
    sof = write_sof(tmp_path / "on.sof", [(p, "LAMP,WAVE_NIR") for p in on] + [(s["disp"], "DISP_TAB_NIR")])
    result = run_cli(["spat_solution", sof, "-o", tmp_path / "out"], tmp_path)
    assert result.returncode == 1
    assert "needs the lamp-off partner of the lamp frame or a MASTER_DARK_NIR" in result.stderr
