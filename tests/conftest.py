"""Session-wide fixtures: the test suite simulates one small night, once."""

import importlib.util

import pytest

from pinhole_sets import pinhole_set, shared_root
from science_fixtures import reduced_night
from soxspipe.simulator import load_truth, simulate_night


def _arms():
    arms = ["VIS", "NIR"]
    if importlib.util.find_spec("soxspipe.simulator.acq") is not None:
        arms.append("ACQ")
    return tuple(arms)


@pytest.fixture(scope="session")
def simulated_night(tmp_path_factory):
    """Output folder of a small simulated nominal night (``raw/`` and ``truth/``), all arms.

    Full-size frames, the minimum number of frames per set. Shared by every test
    of the session: treat it as read-only.
    """
    out = tmp_path_factory.mktemp("simulated_night")
    simulate_night(out, arms=_arms(), seed=42, scenario="nominal", size="small")
    return out


@pytest.fixture(scope="session")
def night_truth(simulated_night):
    """The :class:`soxspipe.simulator.truth.Truth` of :func:`simulated_night`."""
    return load_truth(simulated_night / "truth")


@pytest.fixture(scope="session")
def night(tmp_path_factory, worker_id, request):
    """:func:`simulated_night` reduced by the organiser (VIS and NIR), once for all workers (a record of its runs).

    Modules that need the night reduced further (merged) override it.
    """
    root = shared_root(tmp_path_factory, worker_id)
    return reduced_night(root, lambda: request.getfixturevalue("simulated_night"))


@pytest.fixture(scope="session")
def sets(tmp_path_factory, worker_id):
    """``sets(arm, scenario, **kw)``: a simulated calibration set, made once and shared by every test worker."""
    root = shared_root(tmp_path_factory, worker_id)
    return lambda arm, scenario, **kw: pinhole_set(root, arm, scenario, **kw)
