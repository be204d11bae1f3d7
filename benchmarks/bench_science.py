"""Speed and memory of the science recipes end to end, against the floor, with a profile.

Run: ``python benchmarks/bench_science.py [workdir] [--case=stare|nod] [--arm=NIR]``.

Cases (both by default): ``stare``, soxs_stare on the GAL-A stare OB (one full-size
frame; VIS unless ``--arm``), and ``nod``, soxs_nod on the GAL-B nodding OB (four
full-size frames, two A-B pairs; NIR unless ``--arm``). A small simulated night of the
arm is prepared and its calibrations reduced by the organiser (untimed). Then, each as
a separate process: (a) the recipe on the OB end to end (best of two wall times, the
recipe's own time from its log, and the process's peak memory) and (b) the floor:
reading the same input files with astropy. Last, one run in this process under
cProfile, summarised by cumulative and by own time. The goal: under 30 s on 2 cores
and 3 GB peak memory.
"""

import cProfile
import io
import pstats
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from astropy.table import Table

from soxspipe.organiser import prep, reduce_all
from soxspipe.simulator import simulate_night

FLOOR = """
import sys
import numpy as np
from astropy.io import fits
for p in sys.argv[1:]:
    with fits.open(p, memmap=False) as hdul:
        [np.asarray(h.data) for h in hdul if h.data is not None]
"""

RECIPE = """
import resource, sys
from soxspipe.cl_utils import main
code = main(sys.argv[1:])
print("MAXRSS_KB", resource.getrusage(resource.RUSAGE_SELF).ru_maxrss)
sys.exit(code)
"""

CALIBRATION_RECIPES = ("mbias", "mdark", "disp_solution", "order_centres", "mflat", "spat_solution")


#: case -> (recipe, default arm, target, DPR TECH ending)
CASES = {"stare": ("stare", "VIS", "GAL-A", "STARE"), "nod": ("nod", "NIR", "GAL-B", "NODDING")}


def calibrated_night(work, arm, recipe="stare", target="GAL-A", tech="STARE"):
    """Simulate a small night of ``arm`` and reduce its calibrations; return (workspace, SOF of the target's OB)."""
    night, workspace = work / f"night_{arm}", work / f"ws_{arm}"
    if not (night / "truth" / "manifest.ecsv").exists():
        simulate_night(night, arms=(arm,), seed=1, size="small")
    if not workspace.exists():
        prep(workspace, night / "raw")
    reduce_all(workspace, arms=(arm,), recipes=CALIBRATION_RECIPES)
    manifest = Table.read(night / "truth" / "manifest.ecsv")
    (raw,) = [r["file"] for r in manifest if r["arm"] == arm and r["target"] == target
              and str(r["dpr_tech"]).endswith(tech)][:1]
    # the SOF the organiser would write: the OB's run with its calibrations attached
    results = reduce_all(workspace, arms=(arm,), recipes=(recipe,))
    (run,) = [r for r in results if raw in (workspace / "sof" / f"{r.name}.sof").read_text()]
    return workspace, workspace / "sof" / f"{run.name}.sof"


def sof_files(sof):
    """The files a SOF names, as absolute paths."""
    return [str((sof.parent / line.split()[0]).resolve()) for line in sof.read_text().splitlines()
            if line.strip() and not line.startswith("#")]


def run(args, cwd):
    start = time.perf_counter()
    done = subprocess.run([sys.executable, *args], cwd=cwd, check=True, capture_output=True, text=True)
    return time.perf_counter() - start, done


def bench(work, case, arm=None):
    """Time one case (see the module docstring); print its line and its profile."""
    recipe, default_arm, target, tech = CASES[case]
    arm = arm or default_arm
    workspace, sof = calibrated_night(work, arm, recipe, target, tech)
    files = sof_files(sof)
    floor = min(run(["-c", FLOOR, *files], work)[0] for _ in range(2))
    walls, own, peaks = [], [], []
    for k in range(2):
        out = work / f"out_{recipe}_{arm}_{k}"
        wall, done = run(["-c", RECIPE, recipe, str(sof), "-o", str(out), "-x"], work)
        walls.append(wall)
        peaks.append(int(re.search(r"MAXRSS_KB (\d+)", done.stdout).group(1)) / 1024 ** 2)
        # the newest log: a run into an earlier run's folder (-x) writes a log of its own beside the old ones
        log = max(out.glob(f"soxs_{recipe}_*.log"), key=lambda p: p.stat().st_mtime).read_text()
        own.append(float(re.search(rf"soxs_{recipe} finished in ([\d.]+) s", log).group(1)))
    print(f"{'recipe':8s} {'arm':4s} {'frames':>6s} {'wall s':>7s} {'recipe s':>9s} {'floor s':>8s} {'ratio':>6s} "
          f"{'peak GB':>8s}")
    print(f"{recipe:8s} {arm:4s} {sum('/raw/' in f for f in files):6d} {min(walls):7.2f} {min(own):9.2f} {floor:8.2f} "
          f"{min(walls) / floor:6.1f} {max(peaks):8.2f}")

    from soxspipe.recipes import recipe_class

    profile = cProfile.Profile()
    profile.enable()
    recipe_class(recipe)(str(sof), output_dir=work / f"out_{recipe}_{arm}_profile", overwrite=True).run()
    profile.disable()
    for key in ("cumulative", "tottime"):
        text = io.StringIO()
        pstats.Stats(profile, stream=text).sort_stats(key).print_stats(22)
        print(f"\n--- {recipe} {arm}: profile by {key} ---")
        print("\n".join(line for line in text.getvalue().splitlines() if line.strip())[:6000])


def main():
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    arm = next((a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--arm=")), None)
    cases = [a.split("=", 1)[1] for a in sys.argv[1:] if a.startswith("--case=")] or list(CASES)
    work = Path(args[0]) if args else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    work.mkdir(parents=True, exist_ok=True)
    for case in cases:
        bench(work, case, arm)


if __name__ == "__main__":
    main()
