"""Simulated single-pinhole calibration sets, reduced once per test run and shared by test modules.

Under pytest-xdist every worker has its own session, so the sets are made under
the run's common temporary folder behind a file lock: the first worker to need a
set simulates and reduces it, the others reuse it.
"""

import fcntl
import json
from contextlib import contextmanager
from pathlib import Path

from soxspipe.commonutils.errors import DataError
from soxspipe.recipes.soxs_disp_solution import soxs_disp_solution
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.recipes.soxs_order_centres import soxs_order_centres
from soxspipe.simulator import load_truth, simulate_calibration_set

SEED = 3


def shared_root(tmp_path_factory, worker_id):
    """A folder shared by all xdist workers of this run (the session's own folder without xdist)."""
    base = tmp_path_factory.getbasetemp()
    return (base.parent if worker_id != "master" else base) / "pinhole_sets"


@contextmanager
def _locked(path):
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def built_once(root, name, build):
    """The record (a JSON-able dict) of ``build(out)`` for ``<root>/<name>``, built by the first caller only.

    The first caller of this run builds it into ``out`` behind a file lock and records its result in
    ``out/reduced.json``; later callers, in any xdist worker, read the record.
    """
    out = Path(root) / name
    record = out / "reduced.json"
    with _locked(Path(root) / f".{name}.lock"):
        if record.exists():
            return json.loads(record.read_text())
        result = build(out)
        record.write_text(json.dumps(result))
        return result


def simulate_with_bias(out, arm, scenario, kinds, *, seed=SEED, binning=(1, 1)):
    """Simulate an arm's calibration ``kinds`` (plus biases on VIS, reduced to a master).

    Returns the truth, the reduced folder and the list of MASTER_BIAS paths (empty on NIR).
    """
    kinds = list(kinds) + (["bias"] if arm == "VIS" else [])
    simulate_calibration_set(out, arm, scenario=scenario, seed=seed, kinds=kinds, binning=binning)
    truth = load_truth(out / "truth")
    red = out / "reduced"
    bias = [str(p) for p in soxs_mbias(truth.raw_files(kind="bias"), output_dir=red).run()] if arm == "VIS" else []
    return truth, red, bias


def pinhole_set(root, arm, scenario, *, flats=True, binning=(1, 1)):
    """Simulate (once) and reduce (once) an arm's pinhole set; return a dict of paths and any error.

    Keys: ``out`` (the simulation folder), ``bias`` (list: the MASTER_BIAS or nothing),
    ``disp`` (DISP_TAB, DISP_TAB_LINES paths) or ``disp_error`` (the message), ``order``
    (ORDER_TAB path) or None.
    """
    def build(out):
        truth, red, bias = simulate_with_bias(out, arm, scenario, ["pinhole_arc", "pinhole_flat"], binning=binning)
        result = {"out": str(out), "bias": bias, "disp": None, "disp_error": None, "order": None}
        try:
            disp = soxs_disp_solution(truth.raw_files(kind="pinhole_arc") + bias, output_dir=red).run()
            result["disp"] = [str(p) for p in disp]
        except DataError as exc:
            result["disp_error"] = str(exc)
        if result["disp"] and flats:
            order = soxs_order_centres(truth.raw_files(kind="pinhole_flat") + bias + [result["disp"][0]],
                                       output_dir=red).run()
            result["order"] = str(order[0])
        return result

    return built_once(root, f"{arm}_{scenario}_{binning[0]}x{binning[1]}", build)
