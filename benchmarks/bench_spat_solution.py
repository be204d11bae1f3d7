"""Speed of soxs_spatial_solution on full-size frames, against the floor.

Run: ``python benchmarks/bench_spat_solution.py [workdir]``.

For each arm it simulates a single- and a multi-pinhole arc (with a VIS bias
set, or the NIR lamp-off partners), makes the VIS master bias and the first-guess
DISP_TAB (untimed), then times, each as a separate process, (a) the recipe end
to end (read, prepare, find, fit, DISP_IMAGE, QC, plots, write) and (b) the
floor: reading the same input files with astropy. The goal is under 15 s per
arm on 2 cores.
"""

import subprocess
import sys
import tempfile
from pathlib import Path

from bench_disp_order import FLOOR, sof, timed
from soxspipe.recipes.soxs_mbias import soxs_mbias
from soxspipe.simulator import load_truth, simulate_calibration_set


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    print(f"{'recipe':14s} {'arm':4s} {'recipe s':>9s} {'floor s':>8s} {'ratio':>6s}")
    for arm in ("VIS", "NIR"):
        out = work / arm
        kinds = ["pinhole_arc", "multipinhole_arc"] + (["bias"] if arm == "VIS" else [])
        simulate_calibration_set(out, arm, kinds=kinds, seed=1)
        truth = load_truth(out / "truth")
        bias = []
        if arm == "VIS":
            bias = [str(p) for p in soxs_mbias(truth.raw_files(kind="bias"), output_dir=out / "cal").run()]
        arcs = [str(p) for p in truth.raw_files(kind="pinhole_arc")] + bias
        subprocess.run([sys.executable, "-m", "soxspipe", "disp_solution", str(sof(out / "arc.sof", arcs)), "-o",
                        str(out / "cal")], check=True, capture_output=True)
        disp = str(next((out / "cal").glob(f"DISP_TAB_{arm}_*[0-9].fits")))
        files = [str(p) for p in truth.raw_files(kind="multipinhole_arc")] + bias + [disp]
        set_file = sof(out / "spat_solution.sof", files)
        floor = min(timed([sys.executable, "-c", FLOOR, *files], work) for _ in range(2))
        runs = [timed([sys.executable, "-m", "soxspipe", "spat_solution", str(set_file), "-o",
                       str(out / f"run_{k}")], work) for k in range(2)]
        best = min(runs)
        print(f"{'spat_solution':14s} {arm:4s} {best:9.2f} {floor:8.2f} {best / floor:6.2f}")


if __name__ == "__main__":
    main()
