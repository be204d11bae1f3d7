"""Time the simulation of a whole nominal night (VIS + NIR + ACQ, full-size frames).

Run with ``python benchmarks/bench_simulator.py [--workers N] [--keep DIR]``. Prints the
wall time, the number of raw frames, their disk size, and for scale the bare minimum:
writing the same number of frames of the same size with nothing to compute.
"""

import argparse
import shutil
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from soxspipe.simulator import simulate_night


def _disk_size(folder):
    return sum(p.stat().st_size for p in Path(folder).rglob("*") if p.is_file())


def _bare_minimum(paths, out_dir):
    """Write every raw frame's data again as plain FITS: the I/O floor of the simulation."""
    start = time.perf_counter()
    for i, p in enumerate(paths):
        with fits.open(p) as hdul:
            data = next(h for h in hdul if h.data is not None).data
        fits.PrimaryHDU(np.zeros_like(data)).writeto(Path(out_dir) / f"{i}.fits")
    return time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--keep", help="write the night here and keep it")
    args = parser.parse_args()
    out = Path(args.keep) if args.keep else Path(tempfile.mkdtemp(prefix="soxs_bench_"))
    try:
        start = time.perf_counter()
        manifest = simulate_night(out, arms=("VIS", "NIR", "ACQ"), seed=0, scenario="nominal", size="full",
                                  workers=args.workers)
        elapsed = time.perf_counter() - start
        m = Table.read(manifest)
        per_arm = {a: int((m["arm"] == a).sum()) for a in ("VIS", "NIR", "ACQ")}
        raw_mb = sum((out / "raw" / f).stat().st_size for f in m["file"]) / 1e6
        truth_mb = _disk_size(out / "truth") / 1e6
        floor_dir = out / "floor"
        floor_dir.mkdir()
        floor = _bare_minimum([out / "raw" / f for f in m["file"]], floor_dir)
        shutil.rmtree(floor_dir)
        print(f"full nominal night: {len(m)} raw frames {per_arm} in {elapsed:.1f} s "
              f"with {args.workers} worker(s)")
        print(f"disk: raw {raw_mb:.0f} MB, truth {truth_mb:.0f} MB")
        print(f"bare minimum (re-reading and writing the frames, one process): {floor:.1f} s "
              f"-> simulation / floor = {elapsed / floor:.1f}")
    finally:
        if not args.keep:
            shutil.rmtree(out, ignore_errors=True)


if __name__ == "__main__":
    main()
