"""Speed of soxs_mbias and soxs_mdark on full-size frames, against the floor.

Run: ``python benchmarks/bench_detector_recipes.py [workdir] [--repeat N]``.

For 5 VIS bias frames and 5 NIR dark frames it times, each as a separate
process, (a) the recipe end to end (read, prepare, combine, QC, plots, write)
and (b) the floor: reading the same 5 files with astropy plus one numpy median
along the frame axis. The goal is a recipe within 3x of its floor.

Recipe and floor runs alternate, so that a change of machine load touches both,
and each side reports the best of ``N`` runs (default 5): its wall time and the
CPU time of its process tree (the recipe's includes its QC-plot process). The
load average is printed before and after: on a loaded machine the wall-time
ratio drifts towards the CPU-time ratio, as the recipe's second process no
longer finds a free core.
"""

import argparse
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from soxspipe.simulator.detector import SimulatedDetector
from soxspipe.simulator.header import raw_header, write_raw

FLOOR = """
import sys
import numpy as np
from astropy.io import fits
frames = [fits.getdata(p).astype(np.float32) for p in sys.argv[1:]]
np.median(np.stack(frames), axis=0)
"""


def make_set(folder, arm, dpr_type, exptime, n=5):
    """Write n simulated full-size frames of one detector; return a SOF path."""
    folder.mkdir(parents=True, exist_ok=True)
    det = SimulatedDetector(arm, seed=1)
    rng = np.random.default_rng(2)
    lines = []
    for i in range(n):
        mjd = 60695.5 + i * 0.001
        electrons = np.zeros(det.science_shape, dtype=np.float32)
        data = det.read_out(electrons, exptime, rng=rng)
        header = raw_header(arm, "CALIB", dpr_type, "IMAGE", mjd=mjd, exptime=exptime)
        path = folder / f"{arm}_{i}.fits"
        write_raw(path, data, header)
        lines.append(f"{path.name} {dpr_type}_{arm}")
    sof = folder / "set.sof"
    sof.write_text("\n".join(lines) + "\n")
    return sof


def timed(cmd, cwd):
    """Run ``cmd``; return its wall time and the CPU time (user + system) of its process tree."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    return wall, (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)


def load():
    return "load {:.2f} {:.2f} {:.2f}".format(*os.getloadavg())


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?", type=Path)
    parser.add_argument("--repeat", type=int, default=5, help="runs per side (best kept)")
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    cases = [("mbias", "VIS", "BIAS", 0.0), ("mdark", "NIR", "DARK", 300.0)]
    print(load())
    print(f"{'recipe':8s} {'arm':4s} {'recipe s':>9s} {'floor s':>8s} {'ratio':>6s}   "
          f"{'recipe cpu':>10s} {'floor cpu':>9s} {'ratio':>6s}")
    for recipe, arm, dpr_type, exptime in cases:
        sof = make_set(work / f"{recipe}_{arm}", arm, dpr_type, exptime)
        files = [str(sof.parent / line.split()[0]) for line in sof.read_text().splitlines()]
        floors, runs = [], []
        for k in range(args.repeat):
            floors.append(timed([sys.executable, "-c", FLOOR, *files], work))
            out = work / f"out_{recipe}_{k}"
            runs.append(timed([sys.executable, "-m", "soxspipe", recipe, str(sof), "-o", str(out)], work))
            shutil.rmtree(out)  # products are 30-40 MB a run
        wall, floor = min(r[0] for r in runs), min(f[0] for f in floors)
        cpu, floor_cpu = min(r[1] for r in runs), min(f[1] for f in floors)
        print(f"{recipe:8s} {arm:4s} {wall:9.2f} {floor:8.2f} {wall / floor:6.2f}   "
              f"{cpu:10.2f} {floor_cpu:9.2f} {cpu / floor_cpu:6.2f}")
    print(load())


if __name__ == "__main__":
    main()
