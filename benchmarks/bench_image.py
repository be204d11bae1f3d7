"""Speed of soxs_image on one full acquisition-camera frame, against the floor.

Run: ``python benchmarks/bench_image.py [workdir]``.

A small simulated acquisition-camera night gives one r-band star field with its
master bias, dark and flat (made once with soxs_mbias, soxs_mdark, soxs_mflat).
The benchmark times, each as a separate process, (a) ``soxspipe image`` end to
end (read, detrend, cosmic rays, sources, astrometry, photometry, QC, quicklook
plot, write) and (b) the floor: reading the same inputs (the raw frame, the three
calibration products and the reference catalogue) with astropy. It also reports
the recipe's own time (from its log, without the interpreter start and imports).
The goal: the recipe under 5 s on 2 cores.
"""

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from soxspipe.simulator.acq import simulate_acq_night

FLOOR = """
import sys
import numpy as np
from astropy.io import fits
from astropy.table import Table
raw, *cals, cat = sys.argv[1:]
with fits.open(raw) as h:
    [np.asarray(x.data, np.float32) for x in h if x.data is not None]
for c in cals:
    with fits.open(c) as h:
        [np.asarray(x.data) for x in h[1:]]
Table.read(cat, format="ascii.ecsv")
"""


def run(args, cwd):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done


def prepare(work):
    """Simulate the night and make the calibrations; return the image SOF and its input paths."""
    rows = simulate_acq_night(work / "raw", work / "truth", night="2025-01-20", seed=5, size="small",
                              filters=("r",), rotation_deg=1.5, pointing_offset_arcsec=(8.0, -6.0))
    cal = work / "cal"

    def recipe(name, lines):
        sof = work / f"{name}.sof"
        sof.write_text("".join(f"{p} {t}\n" for p, t in lines))
        _, done = run(["-m", "soxspipe", name, str(sof), "-o", str(cal), "-x"], work)
        return [w for w in done.stdout.split() if w.endswith(".fits")][-1]

    raw = {k: [work / "raw" / r["file"] for r in rows if r["kind"] == k] for k in {r["kind"] for r in rows}}
    bias = recipe("mbias", [(p, "BIAS_ACQ") for p in raw["bias"]])
    dark = recipe("mdark", [(p, "DARK_ACQ") for p in raw["dark"]] + [(bias, "MASTER_BIAS_ACQ")])
    flat = recipe("mflat", [(p, "FLAT,SKY_ACQ") for p in raw["imaging_flat"]] + [(bias, "MASTER_BIAS_ACQ"),
                                                                                   (dark, "MASTER_DARK_ACQ")])
    science = raw["imaging_science"][0]
    catalogue = work / "raw" / "refcat.ecsv"
    lines = [(science, "OBJECT_ACQ"), (bias, "MASTER_BIAS_ACQ"), (dark, "MASTER_DARK_ACQ"),
             (flat, "MASTER_FLAT_ACQ_r"), (catalogue, "REF_CAT")]
    sof = work / "image.sof"
    sof.write_text("".join(f"{p} {t}\n" for p, t in lines))
    return sof, [str(science), bias, dark, flat, str(catalogue)]


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_image_"))
    work.mkdir(parents=True, exist_ok=True)
    sof, inputs = prepare(work)
    floor = min(run(["-c", FLOOR, *inputs], work)[0] for _ in range(3))
    walls, own = [], []
    for k in range(3):
        wall, done = run(["-m", "soxspipe", "image", str(sof), "-o", str(work / f"out_{k}"), "-x"], work)
        walls.append(wall)
        found = re.search(r"soxs_image finished in ([0-9.]+) s", done.stdout + done.stderr)
        own.append(float(found.group(1)) if found else float("nan"))
    result = {"floor_s": round(floor, 2), "image_wall_s": round(min(walls), 2), "image_recipe_s": round(min(own), 2),
              "ratio_wall_to_floor": round(min(walls) / floor, 2)}
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
