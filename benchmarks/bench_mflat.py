"""Speed and memory of the spectroscopic soxs_mflat (VIS and NIR) on full-size slit flats, against the floor.

Run: ``python benchmarks/bench_mflat.py [workdir]``.

Per arm a simulated calibration set gives the slit flats (VIS: 5 QTH, and a second
run with 5 QTH + 5 D2; NIR: 5 lamp-on/lamp-off pairs) and the ORDER_TAB (made once
with soxs_mbias, soxs_disp_solution and soxs_order_centres). The benchmark times,
each as a separate process, (a) ``soxspipe mflat`` end to end and (b) the floor:
reading the same inputs with astropy and one median over the stack of the flats.
It reports the best of three wall times, the recipe's own time (from its log,
without the interpreter start and imports) and the recipe process's peak memory.
The goal: under 10 s per arm on 2 cores and 2 GB peak memory.
"""

import json
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from astropy.table import Table

from soxspipe.simulator import simulate_calibration_set

FLOOR = """
import sys
import numpy as np
from astropy.io import fits
split = sys.argv.index("--")
frames = []
for path in sys.argv[1:split]:
    with fits.open(path) as h:
        frames.append(np.asarray(h[0].data, np.float32))
for path in sys.argv[split + 1:]:
    with fits.open(path) as h:
        [np.asarray(x.data) for x in h[1:]]
np.median(np.stack(frames), axis=0)
"""

RECIPE = """
import resource, sys
from soxspipe.cl_utils import main
code = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""


def run(args, cwd):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done


def prepare(work, arm):
    """Simulate the arm's set and make its ORDER_TAB; return the slit-flat lines and the calibration lines."""
    out = work / arm
    kinds = ["pinhole_arc", "pinhole_flat", "slit_flat"] + (["bias"] if arm == "VIS" else [])
    simulate_calibration_set(out, arm, seed=11, kinds=kinds)
    manifest = Table.read(out / "truth" / "manifest.ecsv")
    raw = {}
    for row in manifest:
        raw.setdefault(row["kind"], []).append((out / "raw" / row["file"], row["tag"], row["lamps"]))
    cal = out / "cal"

    def recipe(name, lines):
        sof = out / f"{name}.sof"
        sof.write_text("".join(f"{p} {t}\n" for p, t in lines))
        _, done = run(["-m", "soxspipe", name, str(sof), "-o", str(cal), "-x"], work)
        return [w for w in done.stdout.split() if w.endswith(".fits")]

    cals = []
    if arm == "VIS":
        cals.append((recipe("mbias", [(p, t) for p, t, _ in raw["bias"]])[-1], "MASTER_BIAS_VIS"))
    disp = recipe("disp_solution", [(p, t) for p, t, _ in raw["pinhole_arc"]] + cals)
    disp_tab = [p for p in disp if Path(p).name.startswith(f"DISP_TAB_{arm}_")][0]
    order = recipe("order_centres", [(p, t) for p, t, _ in raw["pinhole_flat"]] + cals + [(disp_tab, f"DISP_TAB_{arm}")])
    cals.append((order[-1], f"ORDER_TAB_{arm}"))
    return raw["slit_flat"], cals


def bench(work, name, flats, cals):
    lines = [(p, t) for p, t, _ in flats] + cals
    sof = work / f"{name}.sof"
    sof.write_text("".join(f"{p} {t}\n" for p, t in lines))
    inputs = [str(p) for p, _, _ in flats] + ["--"] + [str(p) for p, _ in cals]
    floor = min(run(["-c", FLOOR, *inputs], work)[0] for _ in range(3))
    walls, own, memory = [], [], []
    for k in range(3):
        wall, done = run(["-c", RECIPE, "mflat", str(sof), "-o", str(work / f"out_{name}_{k}"), "-x"], work)
        text = done.stdout + done.stderr
        walls.append(wall)
        found = re.search(r"soxs_mflat finished in ([0-9.]+) s", text)
        own.append(float(found.group(1)) if found else float("nan"))
        memory.append(int(re.search(r"MAXRSS_KB (\d+)", text).group(1)) / 1024.0)
    return {"frames": len(flats), "floor_s": round(floor, 2), "mflat_wall_s": round(min(walls), 2),
            "mflat_recipe_s": round(min(own), 2), "ratio_wall_to_floor": round(min(walls) / floor, 2),
            "peak_memory_mb": round(max(memory))}


def main():
    work = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(tempfile.mkdtemp(prefix="soxs_bench_mflat_"))
    work.mkdir(parents=True, exist_ok=True)
    result = {}
    vis_flats, vis_cals = prepare(work, "VIS")
    result["VIS_QTH"] = bench(work, "VIS_QTH", [f for f in vis_flats if f[2] == "QTH"], vis_cals)
    result["VIS_QTH_D2"] = bench(work, "VIS_QTH_D2", vis_flats, vis_cals)
    nir_flats, nir_cals = prepare(work, "NIR")
    result["NIR"] = bench(work, "NIR", nir_flats, nir_cals)
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
