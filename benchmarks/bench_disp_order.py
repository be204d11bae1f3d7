"""Speed of soxs_disp_solution and soxs_order_centres on full-size frames, against the floor.

Run: ``python benchmarks/bench_disp_order.py [workdir]``.

For each arm it simulates a single-pinhole arc and flat (with a VIS bias set, or
the NIR lamp-off partners), makes the VIS master bias, then times, each as a
separate process, (a) each recipe end to end (read, prepare, find, fit, QC,
plots, write) and (b) the floor: reading the same input files with astropy.
The goal is each recipe under 5 s on 2 cores.
"""

import subprocess
import sys
import tempfile
import time
from pathlib import Path

from soxspipe.commonutils.sof import read_sof
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.simulator import load_truth, simulate_calibration_set

FLOOR = """
import sys
import numpy as np
from astropy.io import fits
for p in sys.argv[1:]:
    with fits.open(p, memmap=False) as hdul:
        [np.asarray(h.data) for h in hdul if h.data is not None]
"""


def timed(cmd, cwd):
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def sof(path, files):
    """Write a SOF of ``files``, tagged from their headers."""
    path.write_text("".join(f"{f.path} {f.tag}\n" for f in read_sof([Path(p) for p in files])))
    return path


def first_guess(work, arm, kinds):
    """Simulate an arm's single-pinhole arc (+ ``kinds``), make its VIS master bias and first-guess DISP_TAB.

    Returns ``(out, truth, bias, arcs, disp)``: the folder, its truth, the master-bias paths
    (VIS), the disp_solution input files and the DISP_TAB path.
    """
    out = work / arm
    simulate_calibration_set(out, arm, kinds=["pinhole_arc", *kinds] + (["bias"] if arm == "VIS" else []), seed=1)
    truth = load_truth(out / "truth")
    bias = []
    if arm == "VIS":
        bias = [str(p) for p in soxs_mbias(truth.raw_files(kind="bias"), output_dir=out / "cal").run()]
    arcs = [str(p) for p in truth.raw_files(kind="pinhole_arc")] + bias
    # the DISP_TAB the later recipes take: one untimed run
    subprocess.run([sys.executable, "-m", "soxspipe", "disp_solution", str(sof(out / "arc.sof", arcs)), "-o",
                    str(out / "cal")], check=True, capture_output=True)
    disp = str(next((out / "cal").glob(f"DISP_TAB_{arm}_*[0-9].fits")))
    return out, truth, bias, arcs, disp


def compare_with_floor(recipe, arm, files, out, work, repeats=2):
    """Print the best of ``repeats`` end-to-end runs of ``recipe`` on ``files``, the floor, and their ratio."""
    set_file = sof(out / f"{recipe}.sof", files)
    floor = min(timed([sys.executable, "-c", FLOOR, *files], work) for _ in range(repeats))
    best = min(timed([sys.executable, "-m", "soxspipe", recipe, str(set_file), "-o", str(out / f"run_{recipe}_{k}")],
                     work) for k in range(repeats))
    print(f"{recipe:14s} {arm:4s} {best:9.2f} {floor:8.2f} {best / floor:6.2f}", flush=True)


HEADER = f"{'recipe':14s} {'arm':4s} {'recipe s':>9s} {'floor s':>8s} {'ratio':>6s}"


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    print(HEADER)
    for arm in ("VIS", "NIR"):
        out, truth, bias, arcs, disp = first_guess(work, arm, ["pinhole_flat"])
        flats = [str(p) for p in truth.raw_files(kind="pinhole_flat")] + bias + [disp]
        for recipe, files in (("disp_solution", arcs), ("order_centres", flats)):
            compare_with_floor(recipe, arm, files, out, work)


if __name__ == "__main__":
    main()
