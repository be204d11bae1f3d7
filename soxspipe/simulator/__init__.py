"""The soxspipe end-to-end raw-data simulator.

It writes raw frames exactly as SOXS does (the raw-frame contract) into
``<output>/raw/`` and the truth about them into ``<output>/truth/``. A night holds
per spectroscopic arm the calibration sets, a flux standard, science OBs in stare,
nodding and offset mode and a telluric standard (a hot star, at an airmass 0.15-0.4
above the science targets'); the acquisition camera adds its own calibrations, star
fields and the acquisition images that open every spectroscopic OB:

>>> from soxspipe.simulator import simulate_night, load_truth
>>> manifest = simulate_night("night", arms=("VIS", "NIR"), seed=1)       # doctest: +SKIP
>>> vis = load_truth("night/truth", arm="VIS")                            # doctest: +SKIP
>>> x, y = vis.optics.xy(2, 400.0, 0.0)                                   # doctest: +SKIP
"""

import logging
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np

from .night import SCENARIOS, SIZES, night_mjd, science_blocks, simulate_arm, write_night_json
from .truth import load_truth, write_manifest

log = logging.getLogger(__name__)

__all__ = ["simulate_night", "simulate_calibration_set", "load_truth", "SCENARIOS"]

SPECTRO_ARMS = ("VIS", "NIR")


def _folders(output_dir):
    out = Path(output_dir)
    raw, truth = out / "raw", out / "truth"
    raw.mkdir(parents=True, exist_ok=True)
    truth.mkdir(parents=True, exist_ok=True)
    return raw, truth


def _check(arms, scenario, size):
    bad = [a for a in arms if a not in SPECTRO_ARMS + ("ACQ",)]
    if bad:
        raise ValueError(f"unknown arm(s) {bad}: use VIS, NIR and/or ACQ")
    if scenario not in SCENARIOS:
        raise ValueError(f"unknown scenario '{scenario}': use one of {', '.join(SCENARIOS)}")
    if size not in SIZES:
        raise ValueError(f"unknown size '{size}': use one of {', '.join(SIZES)}")


def _run_arm(arm, raw, truth, night, seed, scenario, size):
    if arm == "ACQ":
        from .acq import simulate_acq_night

        blocks, _, _ = science_blocks(night, seed, scenario, size)
        rows = simulate_acq_night(raw, truth, night=night, seed=seed, size=size,
                                  scenario="extreme" if scenario == "extreme" else "nominal",
                                  rng=np.random.default_rng([seed, 2]), blocks=blocks)
        return list(rows), {}
    return simulate_arm(arm, raw, truth, night=night, seed=seed, scenario=scenario, size=size)


def simulate_night(output_dir, *, arms=("VIS", "NIR", "ACQ"), seed=0, scenario="nominal",
                   night="2025-01-20", size="full", workers=2):
    """Simulate a whole night of SOXS data.

    Parameters
    ----------
    output_dir : str or Path
        Raw frames go to ``<output_dir>/raw``, the truth to ``<output_dir>/truth``.
    arms : sequence of str
        Any of 'VIS', 'NIR', 'ACQ'.
    seed : int
        Everything random (detector patterns, noise, seeing, flexure) follows from it.
    scenario : str
        'nominal', 'flexure' (the spectral format shifted and rotated by a few pixels)
        or 'extreme' (flexure, heavy cosmic rays, bad columns, saturated arc lines,
        faint targets).
    night : str
        'YYYY-MM-DD', the date on which the night starts.
    size : str
        'full' (a typical night) or 'small' (the minimum number of frames per set, still
        full-size frames; for tests).
    workers : int
        Arms are simulated in parallel processes (1: in this process).

    Returns
    -------
    Path
        The manifest (``<output_dir>/truth/manifest.ecsv``).
    """
    arms = tuple(arms)
    _check(arms, scenario, size)
    raw, truth = _folders(output_dir)
    night_mjd(night)  # validates the date
    args = [(a, raw, truth, night, seed, scenario, size) for a in arms]
    if workers > 1 and len(arms) > 1:
        with ProcessPoolExecutor(max_workers=min(workers, len(arms))) as pool:
            results = list(pool.map(_run_arm, *zip(*args)))
    else:
        results = [_run_arm(*a) for a in args]
    rows = [r for res in results for r in res[0]]
    info = {"seed": seed, "scenario": scenario, "night": night, "size": size, "arms": list(arms),
            "per_arm": {a: res[1] for a, res in zip(arms, results)}}
    write_night_json(truth, info)
    path = write_manifest(truth, rows)
    log.info("simulated %d raw frames into %s", len(rows), raw)
    return path


def simulate_calibration_set(output_dir, arm, *, binning=(1, 1), readout="slow", scenario="nominal",
                             seed=0, kinds=None, size="small", night="2025-01-20"):
    """Simulate one arm's calibration frames (no science) into ``output_dir``.

    Parameters
    ----------
    output_dir : str or Path
    arm : str
        'VIS' or 'NIR'.
    binning : tuple
        VIS may use (2, 1) or (2, 2).
    readout : str
        VIS 'slow' or 'fast'.
    scenario, seed, size, night : see :func:`simulate_night`
    kinds : sequence of str, optional
        Subset of 'bias', 'dark', 'pinhole_arc', 'pinhole_flat', 'slit_flat',
        'multipinhole_arc' (default all that apply to the arm). NIR darks are
        planned only for ``dark`` and take a 300 s exposure time.

    Returns
    -------
    Path
        The manifest.
    """
    if arm not in SPECTRO_ARMS:
        raise ValueError(f"calibration sets are for VIS or NIR, not '{arm}'")
    _check((arm,), scenario, size)
    raw, truth = _folders(output_dir)
    rows, info = simulate_arm(arm, raw, truth, night=night, seed=seed, scenario=scenario, size=size,
                              calibrations_only=True, binning=binning, readout=readout, kinds=kinds)
    write_night_json(truth, {"seed": seed, "scenario": scenario, "night": night, "arms": [arm],
                             "per_arm": {arm: info}})
    return write_manifest(truth, rows)
