"""The simulated night against its own truth: line and pinhole centroids, order edges.

Measurements are made on the noisy raw frames of the session's small night, the way
a recipe would: bias from the overscan (VIS) or the lamp-off partner (NIR).
"""

import numpy as np
import pytest
from astropy.io import fits
from scipy.spatial import cKDTree

from soxspipe.commonutils.detectors import detector
from soxspipe.commonutils.keywords import header_value


def _image(path):
    with fits.open(path) as hdul:
        hdu = next(h for h in hdul if h.data is not None)
        return hdu.data.astype(np.float64), hdu.header


def _science_adu(path):
    """Science region of a raw frame in ADU above bias (VIS: row-wise overscan median)."""
    data, header = _image(path)
    arm = header_value(header, "arm")
    binning = (int(header_value(header, "binx", 1)), int(header_value(header, "biny", 1)))
    det = detector(arm)
    x0, x1, y0, y1 = det.science_region(binning)
    sci = data[y0:y1, x0:x1]
    if det.overscan_x is not None:
        o0, o1 = det.overscan_region(binning)
        sci = sci - np.median(data[y0:y1, o0 + 2:o1 - 2], axis=1)[:, None]
    return sci


def _lamp_frames(truth, arm, kind):
    """(on, off) raw paths of a lamp frame kind; off is None when the arm has no lamp-off pairs."""
    m = truth.manifest
    sel = (m["arm"] == arm) & (m["kind"] == kind)
    rows = m[sel]
    on = [truth.dir.parent / "raw" / r["file"] for r in rows if r["lamps"]]
    off = [truth.dir.parent / "raw" / r["file"] for r in rows if not r["lamps"]]
    return on, off


def _lamp_signal(truth, arm, kind, dpr_type=None):
    """Mean lamp-on signal (ADU) of a kind, lamp-off subtracted for NIR."""
    m = truth.manifest
    on, off = _lamp_frames(truth, arm, kind)
    if dpr_type is not None:
        types = {truth.dir.parent / "raw" / r["file"]: r["dpr_type"] for r in m}
        on = [p for p in on if types[p] == dpr_type]
    img = np.mean([_science_adu(p) for p in on], axis=0)
    if off:
        img = img - np.mean([_science_adu(p) for p in off], axis=0)
    return img


def _centroids(img, x, y, sigma=1.0, half=4, iterations=25):
    """Gaussian-windowed centroids (iterated first moments with a Gaussian weight).

    Starts at the brightest pixel within +-1 px of (x, y), so the result does not lean
    on the truth; the Gaussian window keeps neighbours a few pixels away (the other
    pinholes of the multi-pinhole mask) out of the measurement.
    """
    ny, nx = img.shape
    k = np.arange(-half, half + 1)
    xs, ys = np.rint(x).astype(int), np.rint(y).astype(int)
    best = np.full(xs.size, -np.inf)
    cx, cy = xs.copy(), ys.copy()
    for dy in (-1, 0, 1):
        for dx in (-1, 0, 1):
            v = img[np.clip(ys + dy, 0, ny - 1), np.clip(xs + dx, 0, nx - 1)]
            better = v > best
            best[better], cx[better], cy[better] = v[better], xs[better] + dx, ys[better] + dy
    iy = np.clip(cy[:, None, None] + k[None, :, None], 0, ny - 1)
    ix = np.clip(cx[:, None, None] + k[None, None, :], 0, nx - 1)
    box = img[iy, ix]
    edge = np.concatenate([box[:, 0, :], box[:, -1, :], box[:, :, 0], box[:, :, -1]], axis=1)
    box = box - np.median(edge, axis=1)[:, None, None]
    mx, my = cx.astype(float), cy.astype(float)
    for _ in range(iterations):
        w = np.exp(-0.5 * ((ix - mx[:, None, None]) ** 2 + (iy - my[:, None, None]) ** 2) / sigma**2) * box
        total = w.sum(axis=(1, 2))
        # plain weighted moments: their fixed point is the centre of any symmetric image
        mx = mx + np.clip((w * (ix - mx[:, None, None])).sum(axis=(1, 2)) / total, -0.5, 0.5)
        my = my + np.clip((w * (iy - my[:, None, None])).sum(axis=(1, 2)) / total, -0.5, 0.5)
    return mx, my


def _isolated(lines, radius=4.0, contrast=0.03):
    """Lines with no other line brighter than ``contrast`` of them within ``radius`` px."""
    x, y, f = (np.asarray(lines[c]) for c in ("x", "y", "flux_e"))
    pairs = cKDTree(np.column_stack([x, y])).query_pairs(radius, output_type="ndarray")
    i, j = pairs[:, 0], pairs[:, 1]
    spoiled = np.zeros(x.size, bool)
    spoiled[i[f[j] > contrast * f[i]]] = True
    spoiled[j[f[i] > contrast * f[j]]] = True
    return ~spoiled


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
@pytest.mark.parametrize("kind", ["pinhole_arc", "multipinhole_arc"])
def test_arc_centroids_match_truth(night_truth, arm, kind):
    truth = night_truth.arm(arm)
    lines = truth.lines(kind)
    img = _lamp_signal(night_truth, arm, kind)
    sat_e = detector(arm).saturation_adu * truth.detector()["gain_e_per_adu"]
    ny, nx = img.shape
    x, y = np.asarray(lines["x"]), np.asarray(lines["y"])
    use = (_isolated(lines) & (lines["peak_e"] > 3000) & (lines["peak_e"] < 0.7 * sat_e)
           & (x > 8) & (x < nx - 9) & (y > 8) & (y < ny - 9))
    assert use.sum() >= 30, f"only {use.sum()} isolated lines to measure"
    mx, my = _centroids(img, x[use], y[use])
    d = np.hypot(mx - x[use], my - y[use])
    measured = np.isfinite(d) & (d < 1.5)  # the rest: a cosmic ray or a bad pixel in the window
    assert measured.mean() > 0.95
    d = d[measured]
    # contract: median within 0.05 px of the truth
    assert np.median(d) < 0.05, f"{arm} {kind}: median centroid offset {np.median(d):.3f} px over {use.sum()} lines"
    assert np.percentile(d, 75) < 0.1


def _edge_crossings(profile, c, plateau_lo, plateau_hi):
    """Positions where a cross-dispersion profile crosses half its plateau, rising and falling."""
    inside = (c >= plateau_lo) & (c <= plateau_hi)
    half = 0.5 * np.median(profile[inside])
    above = profile > half
    first = np.argmax(above)
    last = len(above) - 1 - np.argmax(above[::-1])
    rise = c[first - 1] + (half - profile[first - 1]) / (profile[first] - profile[first - 1])
    fall = c[last] + (half - profile[last]) / (profile[last + 1] - profile[last])
    return rise, fall


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_slit_flat_order_edges_match_truth(night_truth, arm):
    truth = night_truth.arm(arm)
    edges = truth.order_edges()
    model = truth.optics
    disp_axis = model.dispersion_axis()
    flats = {"QTH": _lamp_signal(night_truth, arm, "slit_flat", "LAMP,QFLAT" if arm == "VIS" else None)}
    if arm == "VIS":
        flats["D2"] = _lamp_signal(night_truth, arm, "slit_flat", "LAMP,DFLAT")
    bluest = min(model.orders, key=lambda o: model.wl_range[o][0])
    offsets = []
    for o in model.orders:
        img = flats["D2" if arm == "VIS" and o == bluest else "QTH"]
        img = img if disp_axis == 1 else img.T  # rows = dispersion pixels
        e = edges[edges["order"] == o]
        n = len(e)
        for i in range(n // 10, n - n // 10, 40):  # the well-exposed middle of the order, every 40 px
            d = int(e["dispersion_pixel"][i])
            lo, hi = sorted((float(e["lower"][i]), float(e["upper"][i])))
            c = np.arange(max(int(lo) - 6, 0), min(int(hi) + 7, img.shape[1]))
            prof = img[d, c]
            if np.median(prof[(c > lo + 3) & (c < hi - 3)]) < 2000:
                continue  # too faint here (outside the order's useful range)
            rise, fall = _edge_crossings(prof, c, lo + 3, hi - 3)
            offsets += [rise - lo, fall - hi]
    offsets = np.abs(offsets)
    assert len(offsets) > 100
    assert np.median(offsets) < 0.1
    assert np.percentile(offsets, 99) < 0.3, f"{arm}: 99th percentile edge offset {np.percentile(offsets, 99):.3f} px"


def test_truth_optics_places_the_pinhole_flat_trace(night_truth):
    """The single-pinhole flat's trace lies on the truth's slit-centre line (order-centre truth)."""
    truth = night_truth.arm("NIR")
    img = _lamp_signal(night_truth, "NIR", "pinhole_flat").T  # rows = dispersion pixels (x)
    edges = truth.order_edges()
    offsets = []
    for o in truth.optics.orders:
        e = edges[edges["order"] == o]
        for i in range(len(e) // 5, len(e) - len(e) // 5, 50):
            d, c0 = int(e["dispersion_pixel"][i]), float(e["centre"][i])
            c = np.arange(int(c0) - 5, int(c0) + 6)
            prof = img[d, c]
            if prof.max() < 1000:
                continue
            offsets.append(np.sum(prof * c) / np.sum(prof) - c0)
    assert len(offsets) > 100
    assert abs(np.median(offsets)) < 0.05
    assert np.percentile(np.abs(offsets), 90) < 0.15


@pytest.mark.parametrize("kind", ["flux_standard", "telluric_standard"])
@pytest.mark.parametrize("arm,order,span", [("VIS", 4, (720.0, 800.0)), ("NIR", 17, (1110.0, 1180.0))])
def test_standard_star_counts_match_injected_spectrum(night_truth, arm, order, span, kind):
    """Electrons of a standard star in a stretch of one order = the injected spectrum integrated.

    The stretches hold telluric bands (O2 A, water at 1130 nm): the truth's transmission is in the frames."""
    truth = night_truth.arm(arm)
    m = night_truth.manifest
    row = m[(m["arm"] == arm) & (m["kind"] == kind)][0]
    img = _science_adu(night_truth.dir.parent / "raw" / row["file"]) * truth.detector()["gain_e_per_adu"]
    if truth.optics.dispersion_axis() == 0:
        img = img.T
    if arm == "NIR":  # a dark of the same exposure time removes dark current and hot pixels
        dark = m[(m["arm"] == arm) & (m["kind"] == "dark") & (m["exptime"] == row["exptime"])]
        img = img - np.mean([_science_adu(night_truth.dir.parent / "raw" / f) for f in dark["file"]],
                            axis=0).T * truth.detector()["gain_e_per_adu"]
    e = truth.order_edges()
    e = e[(e["order"] == order) & (e["wavelength"] > span[0]) & (e["wavelength"] < span[1])]
    d = np.asarray(e["dispersion_pixel"])
    c0 = np.rint(np.asarray(e["centre"])).astype(int)
    # column sums across the slit around the trace; the sky varies smoothly along the slit
    # (the slit's image scale changes across it), so it is fitted by a parabola outside the star
    k = np.arange(-16, 17)
    columns = img[d[:, None], c0[:, None] + k[None, :]].sum(axis=0)
    outside = np.abs(k) >= 12
    sky = np.polyval(np.polyfit(k[outside], columns[outside], 2), k)
    star = np.abs(k) <= 10
    measured = np.sum(columns[star] - sky[star])

    spec = truth.spectrum(row["target"])
    eff = truth.efficiency()
    eff = eff[eff["order"] == order]
    wl = np.asarray(spec["wavelength"])
    w_lo, w_hi = sorted(np.interp([d[0] - 0.5, d[-1] + 0.5], d, np.asarray(e["wavelength"])))
    sel = (wl > w_lo) & (wl < w_hi)
    meta = spec.meta
    rate = (spec["toa_photons"] * 10 ** (-0.4 * spec["extinction"] * meta["airmass"]) * spec["telluric"]
            * np.interp(wl, eff["wavelength"], eff["efficiency"]) * meta["slit_transmission"])
    expected = np.trapezoid(np.asarray(rate)[sel], wl[sel]) * row["exptime"]
    assert measured == pytest.approx(expected, rel=0.02)
