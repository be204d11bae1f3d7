"""Vectorised trace-centre measurement on a synthetic tilted, curved trace."""

import numpy as np

from soxspipe.commonutils.traces import trace_centres


def test_trace_centres_of_a_curved_trace():
    ny, nx = 400, 120
    yy, xx = np.mgrid[0:ny, 0:nx]
    centre = 50 + 0.05 * yy + 2e-4 * (yy - 200) ** 2
    img = 1000 * np.exp(-0.5 * ((xx - centre) / 1.1) ** 2)
    d = np.arange(5, 395, 5)
    truth = 50 + 0.05 * d + 2e-4 * (d - 200) ** 2
    s = trace_centres(img, d, truth + 2.7, dispersion_axis="y", half_width=5, average=2)
    # summing 5 rows of a curved trace biases by curvature * 2 (about 4e-4 px here)
    assert np.abs(s.centre - truth).max() < 0.01
    t = trace_centres(img.T.copy(), d, truth - 3.0, dispersion_axis="x", half_width=5, average=0)
    assert np.abs(t.centre - truth).max() < 0.01
