"""Exposures of one target at several positions along the slit, built on :class:`SyntheticOrder`.

Each exposure is the same synthetic order (same maps, same sky spectrum) with
the object at its own slit position and the sky scaled by its own level (the
sky changes from one exposure to the next), with its own noise::

    a = slit_exposure(2.7, seed=1, sky_level=1.00)
    b = slit_exposure(-2.4, seed=2, sky_level=1.03)
"""

import numpy as np

from synthetic_orders import SyntheticOrder

#: A slit as long as SOXS's (12 arcsec), wide enough for a 5 arcsec nod throw with jitter.
HALF_SLIT = 6.0


def slit_exposure(position, *, seed, amplitude=60000.0, sky_level=1.0, read_noise=4.0, noise=True, cosmics=0,
                  **geometry):
    """A :class:`SyntheticOrder` with the object at slit ``position`` and the sky times ``sky_level``.

    ``noise=False`` gives the noiseless counts (the variance then follows from them).
    """
    geometry.setdefault("half_slit", HALF_SLIT)
    order = SyntheticOrder(seed=seed, **geometry).add_sky()
    order.sky_true = order.sky_true * sky_level
    order.add_object(amplitude, slit=position)
    if noise:
        order.add_noise(read_noise=read_noise)
        if cosmics:
            order.add_cosmics(cosmics, on_object=min(cosmics, 2))
    else:
        order.read_noise = read_noise
        order.flux = (order.sky_true + order.object_true).astype(np.float32)
    return order
