"""Speed of soxs_mbias and soxs_mdark on full-size frames, against the floor.

Run: ``python benchmarks/bench_detector_recipes.py [workdir]``.

For 5 VIS bias frames and 5 NIR dark frames it times, each as a separate
process, (a) the recipe end to end (read, prepare, combine, QC, plots, write)
and (b) the floor: reading the same 5 files with astropy plus one numpy median
along the frame axis. The goal is a recipe within 3x of its floor.
"""

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
    start = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - start


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    cases = [("mbias", "VIS", "BIAS", 0.0), ("mdark", "NIR", "DARK", 300.0)]
    print(f"{'recipe':8s} {'arm':4s} {'recipe s':>9s} {'floor s':>8s} {'ratio':>6s}")
    for recipe, arm, dpr_type, exptime in cases:
        sof = make_set(work / f"{recipe}_{arm}", arm, dpr_type, exptime)
        files = [str(sof.parent / line.split()[0]) for line in sof.read_text().splitlines()]
        floor = min(timed([sys.executable, "-c", FLOOR, *files], work) for _ in range(2))
        runs = []
        for k in range(2):
            runs.append(timed([sys.executable, "-m", "soxspipe", recipe, str(sof), "-o", str(work / f"out_{recipe}_{k}")], work))
        best = min(runs)
        print(f"{recipe:8s} {arm:4s} {best:9.2f} {floor:8.2f} {best / floor:6.2f}")


if __name__ == "__main__":
    main()
