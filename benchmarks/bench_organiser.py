"""Speed of the data organiser: prep on 1,000 frames (headers only) and reduce all on a simulated night.

Run: ``python benchmarks/bench_organiser.py [workdir] [--size small|full]``.

1. prep: 1,000 raw frames with full SOXS headers and a tiny 8 x 8 image (40
   observation blocks of 25 frames over the three arms: what the organiser
   reads is the header). Timed: the first prep (read, classify, link, plan the
   runs, write the SOFs), a second prep (nothing new), and the floor: reading
   the 1,000 headers with astropy.
2. reduce all on a simulated night (not timed: the simulation), with the
   floor: for every run that ran, reading its raw frames and one numpy median
   along the frame axis.
"""

import argparse
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits

from soxspipe.organiser import prep, reduce_all
from soxspipe.organiser.database import connect
from soxspipe.simulator import simulate_night
from soxspipe.simulator.header import raw_header, write_raw

#: (arm, catg, type, tech, exptime, slit, lamps): the kinds of frames in the header-only night
KINDS = [
    ("VIS", "CALIB", "BIAS", "IMAGE", 0.0, None, ()),
    ("NIR", "CALIB", "DARK", "IMAGE", 300.0, None, ()),
    ("VIS", "CALIB", "LAMP,WAVE", "ECHELLE,PINHOLE", 15.0, "PINHOLE", ("ThAr",)),
    ("NIR", "CALIB", "LAMP,FLAT", "ECHELLE,SLIT", 15.0, "SLIT1.0", ("QTH",)),
    ("NIR", "CALIB", "LAMP,FLAT", "ECHELLE,SLIT", 15.0, "SLIT1.0", ()),
    ("VIS", "SCIENCE", "OBJECT", "ECHELLE,SLIT,NODDING", 300.0, "SLIT1.0", ()),
    ("NIR", "SCIENCE", "OBJECT", "ECHELLE,SLIT,STARE", 600.0, "SLIT1.0", ()),
    ("ACQ", "CALIB", "FLAT,SKY", "IMAGE", 3.0, None, ()),
]


def header_only_night(folder, n_frames=1000, per_ob=25):
    """Write ``n_frames`` tiny raw frames in OBs of ``per_ob``; return their paths."""
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for i in range(n_frames):
        ob, k = divmod(i, per_ob)
        arm, catg, dpr_type, tech, exptime, slit, lamps = KINDS[ob % len(KINDS)]
        mjd = 60696.0 + i * 40.0 / 86400.0
        header = raw_header(arm, catg, dpr_type, tech, mjd=mjd, exptime=exptime, slit=slit, lamps=lamps,
                            acq_filter="r" if arm == "ACQ" else None,
                            extra={"obs_id": 100 + ob, "obs_name": f"OB {ob}", "tpl_id": "bench",
                                   "tpl_start": f"OB{ob}", "tpl_nexp": per_ob, "tpl_expno": k + 1})
        data = np.zeros((8, 8), dtype=np.float32 if arm == "NIR" else np.uint16)
        paths.append(write_raw(folder / f"SOXS.{i:04d}.fits", data, header))
    return paths


def timed(func, *args, **kwargs):
    start = time.perf_counter()
    result = func(*args, **kwargs)
    return time.perf_counter() - start, result


def bench_prep(work):
    shutil.rmtree(work / "prep_ws", ignore_errors=True)
    paths = header_only_night(work / "headers")
    floor, _ = timed(lambda: [fits.getheader(p) for p in paths])
    first, report = timed(prep, work / "prep_ws", work / "headers")
    again, report2 = timed(prep, work / "prep_ws", work / "headers")
    assert len(report.new) == len(paths) and not report2.new
    print(f"prep, {len(paths)} frames (headers only): first {first:.2f} s ({1e3 * first / len(paths):.2f} ms/frame), "
          f"again {again:.2f} s; floor (astropy headers) {floor:.2f} s; ratio {first / floor:.1f}; "
          f"{len(report.runs)} runs")


def bench_reduce(work, size):
    night = work / f"night_{size}"
    if not (night / "truth" / "manifest.ecsv").exists():
        simulate_night(night, seed=1, size=size)
    workspace = work / f"reduce_ws_{size}"
    shutil.rmtree(workspace, ignore_errors=True)
    t_prep, report = timed(prep, workspace, night / "raw")
    t_reduce, results = timed(reduce_all, workspace)
    conn = connect(workspace)
    ran = [r for r in results if r.status in ("ok", "failed")]
    start = time.perf_counter()
    for r in ran:
        paths = [workspace / row["path"] for row in conn.execute(
            "SELECT f.path FROM frames f JOIN run_frames rf ON rf.frame_id = f.id JOIN runs r ON r.id = rf.run_id "
            "WHERE r.name = ?", (r.name,))]
        stack = np.stack([fits.getdata(p, ext=1 if p.name.endswith(".fz") else 0).astype(np.float32) for p in paths])
        np.median(stack, axis=0)
    floor = time.perf_counter() - start
    conn.close()
    counts = {s: sum(r.status == s for r in results) for s in ("ok", "failed", "skipped")}
    print(f"reduce all, {size} night ({len(report.new)} frames, prep {t_prep:.1f} s): {t_reduce:.1f} s for "
          f"{len(ran)} runs ({counts}); floor (read + median per run) {floor:.1f} s; ratio {t_reduce / floor:.1f}")
    start = time.perf_counter()
    again = reduce_all(workspace)
    print(f"reduce all again (nothing to do): {time.perf_counter() - start:.2f} s, "
          f"{sum(r.status == 'done' for r in again)} runs up to date")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("workdir", nargs="?")
    parser.add_argument("--size", default="small", choices=("small", "full"))
    args = parser.parse_args()
    work = Path(args.workdir) if args.workdir else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    bench_prep(work)
    bench_reduce(work, args.size)
    return 0


if __name__ == "__main__":
    sys.exit(main())
