"""The simulated night reduced once by the organiser, for the science-recipe tests.

``soxspipe prep`` and ``soxspipe reduce all`` (VIS and NIR: the calibration
cascade, response and stare) run once per test run, under a file lock in the
run's common temporary folder: the first pytest-xdist worker that needs it
reduces the night, the others read what it recorded. The simulated night itself
is asked for only by the worker that reduces it. Staring OBs the organiser gives
another recipe (the flux standards go to soxs_response) are reduced with
soxs_stare too, with the calibrations the organiser chose for a stare OB of the
arm (and the MASTER_DARK of their own exposure time).
"""

import json
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table
from scipy.ndimage import gaussian_filter1d

from pinhole_sets import _locked
from soxspipe.organiser import prep, reduce_all
from soxspipe.recipes.soxs_stare import soxs_stare
from soxspipe.simulator import spectra


def reduced_night(root, simulated_night):
    """Reduce (once) the simulated night; return a dict.

    Parameters
    ----------
    root : Path
        The folder shared by the test workers.
    simulated_night : callable
        Returns the simulated night's folder (called only to make it).

    Returns
    -------
    dict
        ``workspace``, ``truth`` (folders) and ``runs``: one dict per run (``name``, ``recipe``, ``setup``,
        ``status``, ``reason``, ``products`` as absolute paths, ``raw``: the run's raw file names).
    """
    out = Path(root) / "science_night"
    record = out / "reduced.json"
    with _locked(Path(root) / ".science_night.lock"):
        if record.exists():
            return json.loads(record.read_text())
        night = Path(simulated_night())
        workspace = out / "ws"
        prep(workspace, night / "raw")
        results = reduce_all(workspace, arms=("VIS", "NIR"), recipes=CASCADE)
        runs = []
        for r in results:
            rows = _sof_rows(workspace / "sof" / f"{r.name}.sof")
            runs.append({"name": r.name, "recipe": r.recipe, "setup": r.setup, "status": r.status,
                         "reason": r.reason, "products": [str(workspace / p) for p in r.products],
                         "raw": [Path(p).name for p, tag in rows if "/raw/" in str(p)]})
        runs += _other_stare_obs(night, workspace, runs, out)
        result = {"workspace": str(workspace), "truth": str(night / "truth"), "runs": runs}
        record.write_text(json.dumps(result))
        return result


#: the products every science recipe run writes: ``<P>_<kind>_<ARM>``
SCIENCE_KINDS = ("ORDERS", "MERGED", "SPEC", "2D", "SPEC2D", "SKY_MODEL", "SKY_SUB")

#: the recipes reduce all runs for the science tests: the calibration cascade, the flux standards' response,
#: the telluric standards' transmission and stare
CASCADE = ("mbias", "mdark", "disp_solution", "order_centres", "mflat", "spat_solution", "response", "telluric",
           "stare")


def _sof_rows(sof):
    """``(absolute path, tag)`` of every entry of a SOF."""
    return [((sof.parent / line.split()[0]).resolve(), line.split()[1]) for line in sof.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def _other_stare_obs(night, workspace, runs, out):
    """Reduce with soxs_stare the staring OBs that the organiser gave another recipe; their run records."""
    manifest = Table.read(night / "truth" / "manifest.ecsv")
    done = {f for r in runs if r["recipe"] == "stare" for f in r["raw"]}
    records = []
    for arm in ("VIS", "NIR"):
        rows = [r for r in manifest if r["arm"] == arm and str(r["dpr_tech"]).endswith("STARE")
                and str(r["file"]) not in done]
        reduced = [r for r in runs if r["recipe"] == "stare" and r["setup"].startswith(arm) and r["status"] == "ok"]
        if not rows or not reduced:
            continue
        calibrations = [(p, t) for p, t in _sof_rows(workspace / "sof" / f"{reduced[0]['name']}.sof")
                        if "/raw/" not in str(p) and not t.startswith("MASTER_DARK")]
        for obs_id in sorted({int(r["obs_id"]) for r in rows}):
            frames = [r for r in rows if int(r["obs_id"]) == obs_id]
            exptime = float(frames[0]["exptime"])
            darks = [r for r in runs if r["recipe"] == "mdark" and r["setup"] == f"{arm} 1x1 {exptime:.0f} s"]
            dark = [(Path(darks[0]["products"][0]), f"MASTER_DARK_{arm}")] if darks else []
            raw = [(night / "raw" / str(r["file"]), f"{r['dpr_type']}_{arm}") for r in frames]
            record = {"name": f"stare {arm} OB {obs_id}", "recipe": "stare", "setup": arm, "status": "ok",
                      "reason": "", "products": [], "raw": [str(r["file"]) for r in frames]}
            try:
                paths = soxs_stare([str(p) for p, _ in raw + calibrations + dark],
                                   output_dir=out / f"stare_{arm}_{obs_id}").run()
                record["products"] = [str(p) for p in paths]
            except Exception as exc:  # recorded: the tests that need the run say why it is missing
                record.update(status="failed", reason=f"{exc.__class__.__name__}: {exc}")
            records.append(record)
    return records


def stare_run(night, arm, target):
    """The stare run of ``target`` on ``arm`` (a dict of :func:`reduced_night`), found through the truth's manifest."""
    manifest = Table.read(Path(night["truth"]) / "manifest.ecsv")
    files = {str(r["file"]) for r in manifest if r["arm"] == arm and str(r["target"]) == target}
    (run,) = [r for r in night["runs"] if r["recipe"] == "stare" and set(r["raw"]) & files]
    return run


def product(run, catg):
    """The path of the run's product whose category starts with ``catg`` (e.g. 'SCI_ORDERS_VIS')."""
    (path,) = [p for p in run["products"] if Path(p).name.startswith(catg + "_")]
    return path


def merged_night(root, simulated_night):
    """:func:`reduced_night`, then (once, under a lock) its acquisition images reduced and every OB's arms merged.

    Returns
    -------
    dict
        That of :func:`reduced_night` with ``merge_runs``: the runs of the acquisition cascade (mbias, mflat,
        image) and of soxs_merge, as its ``runs``.
    """
    night = reduced_night(root, simulated_night)
    record = Path(root) / "science_night" / "merged.json"
    with _locked(Path(root) / ".science_night_merge.lock"):
        if record.exists():
            return json.loads(record.read_text())
        workspace = Path(night["workspace"])
        results = reduce_all(workspace, arms=("ACQ",), recipes=("mbias", "mdark", "mflat", "image"))
        results += reduce_all(workspace, recipes=("merge",))
        runs = [{"name": r.name, "recipe": r.recipe, "setup": r.setup, "status": r.status, "reason": r.reason,
                 "products": [str(workspace / p) for p in r.products]} for r in results]
        result = dict(night, merge_runs=runs)
        record.write_text(json.dumps(result))
        return result


def injected_density(truth_arm, target, orders, exptime):
    """The counts per nm the simulator injected at each row of an extracted-orders table.

    ``toa_photons * 10**(-0.4 extinction airmass) * telluric * efficiency(order) * slit_transmission``
    (the truth's own note) times the exposure time, with the truth's telluric transmission beside it.
    """
    spec = truth_arm.spectrum(target)
    meta = spec.meta
    wl = np.asarray(spec["wavelength"])
    rate = (np.asarray(spec["toa_photons"]) * 10 ** (-0.4 * np.asarray(spec["extinction"]) * meta["airmass"])
            * np.asarray(spec["telluric"]) * meta["slit_transmission"])
    eff = truth_arm.efficiency()
    wave = np.asarray(orders["WAVE"], float)
    order = np.asarray(orders["ORDER"])
    efficiency = np.zeros(wave.size)
    for o in np.unique(order):
        e = eff[np.asarray(eff["order"]) == o]
        m = order == o
        efficiency[m] = np.interp(wave[m], np.asarray(e["wavelength"]), np.asarray(e["efficiency"]))
    return np.interp(wave, wl, rate) * efficiency * exptime, np.interp(wave, wl, np.asarray(spec["telluric"]))


def target_run(night, recipe, arm, target):
    """The run of ``recipe`` on ``arm`` that reduced the frames of ``target`` (through the truth's manifest)."""
    manifest = Table.read(Path(night["truth"]) / "manifest.ecsv")
    files = {str(r["file"]) for r in manifest if r["arm"] == arm and str(r["target"]) == target}
    (run,) = [r for r in night["runs"] if r["recipe"] == recipe and set(r["raw"]) & files]
    return run


def at_resolution(spec, values, wave, arm):
    """``values`` (on the truth spectrum ``spec``'s wavelength grid) seen at the instrument's resolution, at ``wave``."""
    grid = np.asarray(spec["wavelength"])
    samples = 5.0  # per sigma of the line-spread function, on a grid uniform in ln(wavelength)
    log_grid = np.arange(np.log(grid[0]), np.log(grid[-1]),
                         1.0 / (spectra.resolution(arm, spec.meta["slit_width"]) * 2.3548 * samples))
    fine = np.interp(np.exp(log_grid), grid, values)
    return np.interp(wave, np.exp(log_grid), gaussian_filter1d(fine, samples, mode="nearest"))


def merge_product(night, prefix, target="GAL-A"):
    """The ``<prefix>_SPEC_MERGED`` product of :func:`merged_night`: of ``target``'s OB for science (the night's
    workspace may hold the merges of its nodding and offset OBs too, when their tests reduced them first)."""
    paths = [p for r in night["merge_runs"] if r["recipe"] == "merge" for p in r["products"]
             if Path(p).name.startswith(f"{prefix}_SPEC_MERGED_")]
    if prefix == "SCI":
        paths = [p for p in paths if fits.getheader(p)["OBJECT"] == target]
    assert len(paths) == 1, (prefix, paths)
    return paths[0]
