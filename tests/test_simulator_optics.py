"""The simulator's optical model against the bundled predicted pinhole tables, and its own consistency."""

import numpy as np
import pytest
from astropy.table import Table

from soxspipe.simulator.optics import OpticalModel, pinhole_table, static_model
from soxspipe.static_calibrations import path


def _residuals(model, table):
    x, y = model.xy(np.asarray(table["order"]), table["wavelength"], table["slit_position"])
    return np.hypot(x - table["detector_x"], y - table["detector_y"])


def test_vis_model_reproduces_mph_table():
    # The VIS multi-pinhole table scatters line to line by ~0.5 px around any smooth
    # curve (the same offsets at all 9 pinholes), so no smooth model gets below ~0.25 px.
    r = _residuals(static_model("VIS"), pinhole_table("VIS"))
    assert len(r) == 1188
    assert np.median(r) < 0.30
    assert np.percentile(r, 90) < 0.80
    assert r.max() < 2.8


def test_nir_model_reproduces_ar_table_on_detector():
    # orders 12-24 follow the Ar table closely; orders 10-11 of the table wobble by
    # tens of px from pinhole to pinhole near the order ends and are only followed in the mean
    t = pinhole_table("NIR")
    r = _residuals(static_model("NIR"), t)
    inner = np.asarray(t["order"]) >= 12
    assert np.median(r[inner]) < 0.05
    assert np.percentile(r[inner], 99) < 0.5
    assert np.median(r) < 0.06


def test_vis_2x1_is_1x1_with_halved_x():
    m = static_model("VIS")
    t = Table.read(path("SOXS_MPH_TAB_VIS_ThAr_2x1.fits"))
    t = t[t["delete"] == 0]
    x1, y1 = m.xy(np.asarray(t["order"]), t["wavelength"], t["slit_position"])
    x2, y2 = m.xy(np.asarray(t["order"]), t["wavelength"], t["slit_position"], binning=(2, 1))
    np.testing.assert_allclose(x2, x1 / 2, atol=1e-9)
    np.testing.assert_allclose(y2, y1, atol=1e-9)
    assert np.median(np.hypot(x2 - t["detector_x"], y2 - t["detector_y"])) < 0.25


@pytest.mark.parametrize("arm,binning", [("VIS", (1, 1)), ("VIS", (2, 1)), ("NIR", (1, 1))])
def test_footprint_inverts_the_model(arm, binning):
    m = static_model(arm).with_flexure(2.0, -1.5, 0.05)
    o = m.orders[len(m.orders) // 2]
    fp = m.footprint(o, binning)
    x, y = m.xy(o, fp["wavelength"], fp["slit"], binning)
    assert np.abs(x - fp["ix"]).max() < 1e-3
    assert np.abs(y - fp["iy"]).max() < 1e-3
    # the order spans the slit: 12 arcsec over 0.28 (VIS) or 0.25 (NIR) arcsec pixels, plus the margin
    assert fp["slit"].min() < -6.5 and fp["slit"].max() > 6.5
    # area per pixel (nm arcsec) = dispersion x spatial scale along the slit, roughly
    g = m.order_geometry(o, binning)
    scale = 12.0 / np.median(np.abs(g["upper"] - g["lower"]))
    disp = m.dispersion(o, np.median(fp["wavelength"]), binning)
    assert np.median(fp["area"]) == pytest.approx(disp * scale, rel=0.1)


def test_flexure_is_a_rigid_motion():
    m = static_model("NIR")
    f = m.with_flexure(2.5, -1.0, 0.0)
    wl = np.linspace(1300, 1350, 5)
    x0, y0 = m.xy(15, wl, 0.0)
    x1, y1 = f.xy(15, wl, 0.0)
    np.testing.assert_allclose(x1 - x0, 2.5, atol=1e-9)
    np.testing.assert_allclose(y1 - y0, -1.0, atol=1e-9)
    r = m.with_flexure(0, 0, 0.1)
    x2, y2 = r.xy(15, wl, 0.0)
    # a rotation keeps distances between points, and moves the frame corner by 0.1 deg x radius
    np.testing.assert_allclose(np.hypot(np.diff(x2), np.diff(y2)), np.hypot(np.diff(x0), np.diff(y0)), rtol=1e-9)
    cx, cy = r.flexure.centre
    assert np.hypot(x2 - x0, y2 - y0)[0] == pytest.approx(np.deg2rad(0.1) * np.hypot(x0[0] - cx, y0[0] - cy), rel=1e-6)


def test_model_round_trips_through_dict():
    m = static_model("VIS").with_flexure(1.0, 2.0, -0.03)
    m2 = OpticalModel.from_dict(m.to_dict())
    wl = np.linspace(360, 420, 7)
    np.testing.assert_allclose(np.array(m2.xy(2, wl, 3.0)), np.array(m.xy(2, wl, 3.0)), atol=1e-10)


@pytest.mark.parametrize("arm", ["VIS", "NIR"])
def test_orders_are_monotonic_and_separated(arm):
    m = static_model(arm)
    for o in m.orders:
        g = m.order_geometry(o)
        assert np.all(np.diff(g["wavelength"]) != 0)
        assert np.all(np.sign(np.diff(g["wavelength"])) == np.sign(np.diff(g["wavelength"])[0]))
        # the predicted tables put the 12 arcsec slit over 43-44 px (VIS, 0.28"/px)
        # and 34-41 px (NIR, growing from order 11 to 24)
        width = np.median(np.abs(g["upper"] - g["lower"]))
        lo, hi = {"VIS": (43.0, 44.5), "NIR": (33.5, 41.5)}[arm]
        assert lo < width < hi
    # neighbouring orders never overlap
    for a, b in zip(m.orders[:-1], m.orders[1:]):
        ga, gb = m.order_geometry(a), m.order_geometry(b)
        d, ia, ib = np.intersect1d(ga["d"], gb["d"], return_indices=True)
        lo_a, hi_a = np.minimum(ga["lower"], ga["upper"])[ia], np.maximum(ga["lower"], ga["upper"])[ia]
        lo_b, hi_b = np.minimum(gb["lower"], gb["upper"])[ib], np.maximum(gb["lower"], gb["upper"])[ib]
        assert np.all((hi_a < lo_b) | (hi_b < lo_a))
