"""Speed of soxs_spatial_solution on full-size frames, against the floor.

Run: ``python benchmarks/bench_spat_solution.py [workdir]``.

For each arm it simulates a single- and a multi-pinhole arc (with a VIS bias
set, or the NIR lamp-off partners), makes the VIS master bias and the first-guess
DISP_TAB (untimed), then times, each as a separate process, (a) the recipe end
to end (read, prepare, find, fit, DISP_IMAGE, QC, plots, write) and (b) the
floor: reading the same input files with astropy. The goal is under 15 s per
arm on 2 cores.
"""

import sys
import tempfile
from pathlib import Path

from bench_disp_order import FLOOR, first_guess, sof, timed


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    print(f"{'recipe':14s} {'arm':4s} {'recipe s':>9s} {'floor s':>8s} {'ratio':>6s}")
    for arm in ("VIS", "NIR"):
        out, truth, bias, _, disp = first_guess(work, arm, ["multipinhole_arc"])
        files = [str(p) for p in truth.raw_files(kind="multipinhole_arc")] + bias + [disp]
        set_file = sof(out / "spat_solution.sof", files)
        floor = min(timed([sys.executable, "-c", FLOOR, *files], work) for _ in range(2))
        runs = [timed([sys.executable, "-m", "soxspipe", "spat_solution", str(set_file), "-o",
                       str(out / f"run_{k}")], work) for k in range(2)]
        best = min(runs)
        print(f"{'spat_solution':14s} {arm:4s} {best:9.2f} {floor:8.2f} {best / floor:6.2f}")


if __name__ == "__main__":
    main()
