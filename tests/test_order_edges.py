"""Order-edge cores on small synthetic flats: edge measurement and fits, the order table, order maps,
the slit scale and the flat model."""

import numpy as np
import pytest
from scipy.special import erf

from soxspipe.commonutils.flat_normalise import flat_model, response_map
from soxspipe.commonutils.order_edges import (OrderTable, dispersion_major, fit_edges, measure_edges, order_map,
                                              slit_scale)
from soxspipe.commonutils.traces import OrderTraces

ND, NC = 240, 140
#: two orders: (order, lower edge, upper edge) as functions of the dispersion pixel
ORDERS = {
    5: (lambda d: 20.3 + 0.02 * d + 2.0 * np.sin(d / 60.0), lambda d: 52.1 + 0.02 * d + 2.0 * np.sin(d / 60.0)),
    6: (lambda d: 80.6 - 0.01 * d, lambda d: 112.9 - 0.012 * d),
}


def synthetic_flat(rng, response=None, sigma_edge=0.45):
    """A dispersion-major slit flat: a lamp spectrum times a smoothed top-hat between the edges, + noise."""
    d = np.arange(ND)[:, None].astype(float)
    c = np.arange(NC)[None, :].astype(float)
    image = np.zeros((ND, NC))
    for lo, hi in ORDERS.values():
        lamp = 5000.0 * (1.0 + 0.3 * np.cos(d / 90.0))
        image += lamp * 0.5 * (erf((c - lo(d)) / (np.sqrt(2) * sigma_edge)) - erf((c - hi(d)) / (np.sqrt(2) * sigma_edge)))
    image += 50.0
    if response is not None:
        image *= response
    return image + rng.normal(0, 1.0, image.shape) * np.sqrt(image) * 0.2


def cuts(step=2):
    order, d, centre = [], [], []
    for o, (lo, hi) in ORDERS.items():
        dd = np.arange(0, ND, step)
        order.append(np.full(dd.size, o))
        d.append(dd)
        centre.append(0.5 * (lo(dd) + hi(dd)))
    return np.concatenate(order), np.concatenate(d), np.concatenate(centre)


@pytest.mark.parametrize("axis", ["y", "x"])
def test_edges_measured_and_fitted(axis):
    rng = np.random.default_rng(1)
    flat = synthetic_flat(rng)
    image = flat if axis == "y" else flat.T  # 'x': dispersion along columns
    order, d, centre = cuts()
    s = measure_edges(image, d, centre, dispersion_axis=axis, half_length=16.0, fraction=0.5, average=2)
    truth_lo = np.concatenate([lo(np.arange(0, ND, 2)) for lo, _ in ORDERS.values()])
    truth_hi = np.concatenate([hi(np.arange(0, ND, 2)) for _, hi in ORDERS.values()])
    # single cuts: within 0.15 px of the truth (the edge is symmetric about the half level)
    assert np.nanmax(np.abs(s.lower - truth_lo)) < 0.15
    assert np.nanmax(np.abs(s.upper - truth_hi)) < 0.15
    assert np.isfinite(s.lower).all() and np.isfinite(s.upper).all()
    fit = fit_edges(order, s, [5, 6], degree=5, nd=ND)
    table = OrderTable.with_edges(OrderTraces(np.array([5, 6]), [np.zeros(1)] * 2, 0.0, ND - 1.0,
                                              np.array([[0, ND - 1]] * 2), axis), fit.lower, fit.upper)
    dd = np.arange(ND)
    for o, (lo, hi) in ORDERS.items():
        low, high = table.edges(np.full(dd.size, o), dd)
        assert np.sqrt(np.mean((low - lo(dd)) ** 2)) < 0.05
        assert np.sqrt(np.mean((high - hi(dd)) ** 2)) < 0.05
    assert fit.rms.max() < 0.1


def test_a_dead_pixel_does_not_move_an_edge():
    rng = np.random.default_rng(2)
    flat = synthetic_flat(rng)
    clean = measure_edges(flat, [100], [36.2], dispersion_axis="y", half_length=16.0)
    flat[100, 24] = 0.0  # inside the order, near its lower end
    dirty = measure_edges(flat, [100], [36.2], dispersion_axis="y", half_length=16.0)
    assert dirty.lower[0] == pytest.approx(clean.lower[0], abs=0.05)


def test_order_table_round_trip_and_centre_only_tables():
    traces = OrderTraces(np.array([1, 2]), [np.array([10.0, 1.0]), np.array([50.0, -1.0])], 0.0, 99.0,
                         np.array([[0, 99], [5, 90]]), "y")
    table = OrderTable.with_edges(traces, [np.array([5.0, 1.0]), np.array([45.0])],
                                  [np.array([15.0, 1.0, 0.5]), np.array([55.0, -1.0])])
    back = OrderTable.from_columns(table.to_columns())
    lo, hi = back.edges([1, 2, 2], [99.0, 0.0, 49.5])
    # d = 99 -> u = 1: 5 + 1 and 15 + 1 + 0.5; d = 0 -> u = -1: 45 and 55 + 1; u = 0: 45 and 55
    np.testing.assert_allclose(lo, [6.0, 45.0, 45.0])
    np.testing.assert_allclose(hi, [16.5, 56.0, 55.0])
    np.testing.assert_allclose(back.centre([1], [99.0]), [11.0])
    centres_only = OrderTable.from_columns(traces.to_columns())
    assert not centres_only.has_edges
    with pytest.raises(ValueError, match="centres only"):
        centres_only.edges(1, 10.0)
    with pytest.raises(KeyError):
        back.edges(3, 10.0)


def test_order_map():
    lower = np.array([[2.0, 2.5, 3.0], [10.0, 10.0, 10.0]])
    upper = np.array([[6.0, 6.5, 7.0], [12.0, 12.0, 12.0]])
    valid = np.array([[True, True, True], [True, False, True]])
    labels, u = order_map((3, 15), [4, 9], lower, upper, valid)
    np.testing.assert_array_equal(labels[0], [0, 0, 4, 4, 4, 4, 4, 0, 0, 0, 9, 9, 9, 0, 0])
    np.testing.assert_array_equal(labels[1, 10:13], [0, 0, 0])
    np.testing.assert_allclose(u[0, 2:7], [0, 0.25, 0.5, 0.75, 1.0])
    np.testing.assert_allclose(u[1, 3:7], [0.125, 0.375, 0.625, 0.875])
    assert np.isnan(u[0, 0])


def test_dispersion_major():
    a = np.arange(6).reshape(2, 3)
    assert dispersion_major(a, "y") is a
    np.testing.assert_array_equal(dispersion_major(a, "x"), a.T)


def test_slit_scale():
    # order 1: 2 lines, pinholes at -5 and +5 arcsec 40 px apart; order 2: 30 px over 10 arcsec
    order = [1, 1, 1, 1, 1, 1, 2, 2]
    wl = [500, 500, 500, 510, 510, 510, 600, 600]
    slit = [-5, 0, 5, -5, 0, 5, -5, 5]
    cross = [100, 120, 140, 101, 121, 141, 200, 230]
    np.testing.assert_allclose(slit_scale(order, wl, slit, cross, [1, 2, 3]), [4.0, 3.0, np.nan])


def test_flat_model_recovers_the_response():
    rng = np.random.default_rng(3)
    response = rng.normal(1.0, 0.01, (ND, NC))
    flat = synthetic_flat(rng, response) - 50.0 * response
    dd = np.arange(ND)
    lower = np.array([lo(dd) for lo, _ in ORDERS.values()])
    upper = np.array([hi(dd) for _, hi in ORDERS.values()])
    labels, u = order_map((ND, NC), [5, 6], lower, upper, np.ones(lower.shape, bool))
    model = flat_model(flat, labels, u, window=21, u_bin=0.02, blocks=4)
    flat[50, 30] = 0.2 * flat[50, 30]  # a low-sensitivity pixel
    resp, err, bad, low = response_map(flat, np.sqrt(np.abs(flat)), model, low_response=0.5)
    # inside the orders, away from the slit ends: the injected response within 0.3 % (noise ~0.2 %)
    c = np.arange(NC)[None, :]
    core = np.zeros((ND, NC), bool)
    for k in range(2):
        core |= (c >= lower[k][:, None] + 2) & (c <= upper[k][:, None] - 2)
    core[50, 30] = False
    dev = resp[core] / response[core] - 1
    assert np.median(np.abs(dev)) < 0.003
    assert abs(np.median(dev)) < 0.001
    assert low[50, 30] and bad[50, 30] and low.sum() == 1
    assert np.all(resp[labels == 0] == 1.0)
    assert model.inside.sum() > 0.9 * (labels > 0).sum()
