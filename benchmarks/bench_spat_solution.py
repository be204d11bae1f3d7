"""Speed of soxs_spatial_solution on full-size frames, against the floor.

Run: ``python benchmarks/bench_spat_solution.py [workdir [repeats]]`` (the best of ``repeats`` runs
counts, 2 by default: on a shared machine take more).

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

from bench_disp_order import HEADER, compare_with_floor, first_guess


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    repeats = int(sys.argv[2]) if len(sys.argv) > 2 else 2
    print(HEADER)
    for arm in ("VIS", "NIR"):
        out, truth, bias, _, disp = first_guess(work, arm, ["multipinhole_arc"])
        files = [str(p) for p in truth.raw_files(kind="multipinhole_arc")] + bias + [disp]
        compare_with_floor("spat_solution", arm, files, out, work, repeats)


if __name__ == "__main__":
    main()
