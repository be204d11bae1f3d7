"""soxspipe prep: the simulated night classified as its manifest says, the expected runs and SOFs,
idempotent re-runs, every bad input reported, concurrent preps."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.table import Table

from rawframes import kind_header, write_frame
from soxspipe.organiser import prep
from soxspipe.organiser.index import night_of

NIGHT = "2025-01-20"


@pytest.fixture(scope="module")
def prepared(simulated_night, tmp_path_factory):
    """A workspace prepared from the session's simulated night (frames hard-linked, never changed)."""
    workspace = tmp_path_factory.mktemp("prep_ws")
    report = prep(workspace, simulated_night / "raw")
    return workspace, report


def frames_table(workspace):
    conn = sqlite3.connect(workspace / "soxspipe.db")
    conn.row_factory = sqlite3.Row
    rows = {Path(r["source"]).name: dict(r) for r in conn.execute("SELECT * FROM frames")}
    conn.close()
    return rows


def read_sofs(workspace):
    """SOF name -> list of (file name, tag) of its frame lines."""
    sofs = {}
    for sof in (workspace / "sof").glob("*.sof"):
        lines = [ln.split() for ln in sof.read_text().splitlines() if ln.strip() and not ln.startswith("#")]
        sofs[sof.stem] = [(Path(p).name, tag) for p, tag in lines]
        assert all((sof.parent / p).resolve().exists() for p, _ in lines)
    return sofs


def test_night_is_mjd_minus_15_hours():
    assert night_of(60695.0) == "2025-01-19"          # 2025-01-20T00:00 UTC belongs to the night before
    assert night_of(60695.625) == "2025-01-20"        # 15:00 UTC starts the next night
    assert night_of(60695.625 - 1e-6) == "2025-01-19"


def test_every_frame_classified_as_the_manifest_says(simulated_night, prepared):
    workspace, report = prepared
    manifest = Table.read(simulated_night / "truth" / "manifest.ecsv")
    frames = frames_table(workspace)
    assert report.all_rejects == [] and len(report.new) == len(manifest) == len(frames)
    # the reference catalogue beside the raw frames is a static input, not a rejected frame
    if (simulated_night / "raw" / "refcat.ecsv").exists():
        assert report.static == [("REF_CAT", "static/refcat.ecsv")]
        assert os.path.samefile(workspace / "static" / "refcat.ecsv", simulated_night / "raw" / "refcat.ecsv")
    for row in manifest:
        f = frames[row["file"]]
        assert (f["arm"], f["kind"], f["tag"], f["binning"]) == (row["arm"], row["kind"], row["tag"], row["binning"])
        assert f["readout"] == row["readout"] and f["obs_id"] == row["obs_id"]
        assert f["exptime"] == pytest.approx(row["exptime"], abs=1e-6)
        assert f["mjd"] == pytest.approx(row["mjd_obs"], abs=1e-7)
        assert (f["slit"] or "") == (row["slit"] or "") if not np.ma.is_masked(row["slit"]) else f["slit"] is None
        lamps = "" if np.ma.is_masked(row["lamps"]) else row["lamps"]
        assert set(filter(None, f["lamps"].split(","))) == set(filter(None, lamps.split(",")))
        assert f["lamp_off"] == int(row["arm"] == "NIR" and row["kind"] in ("pinhole_arc", "pinhole_flat", "slit_flat", "multipinhole_arc") and not lamps)
        if "filter" in manifest.colnames and not np.ma.is_masked(row["filter"]) and row["filter"]:
            assert f["acq_filter"] == row["filter"]
        assert f["night"] == NIGHT
        # linked into raw/<night>/, the same file, never modified
        linked = workspace / f["path"]
        assert linked.parent == workspace / "raw" / NIGHT and os.path.samefile(linked, simulated_night / "raw" / row["file"])


def _expected_runs(manifest):
    """Runs computed independently from the manifest: recipe per kind/technique, one run per OB and arm,
    darks split by exposure time, imaging by filter."""
    recipe = {"bias": "mbias", "dark": "mdark", "pinhole_arc": "disp_solution", "pinhole_flat": "order_centres",
              "slit_flat": "mflat", "imaging_flat": "mflat", "multipinhole_arc": "spat_solution", "imaging_science": "image",
              "flux_standard": "response", "telluric_standard": "telluric"}
    mode = {"ECHELLE,SLIT,STARE": "stare", "ECHELLE,SLIT,NODDING": "nod", "ECHELLE,SLIT,OFFSET": "offset"}
    runs = {}
    for row in manifest:
        name = recipe.get(row["kind"]) or mode[row["dpr_tech"]]
        acq_filter = "" if "filter" not in manifest.colnames or np.ma.is_masked(row["filter"]) else row["filter"]
        key = (name, row["arm"], int(row["obs_id"]), float(row["exptime"]) if name == "mdark" else None, acq_filter)
        runs.setdefault(key, set()).add((row["file"], row["tag"]))
    return runs


def test_the_expected_runs_and_sofs(simulated_night, prepared):
    workspace, report = prepared
    manifest = Table.read(simulated_night / "truth" / "manifest.ecsv")
    expected = _expected_runs(manifest)
    sofs = read_sofs(workspace)
    assert len(sofs) == len(report.runs) == len(expected)
    assert sorted(map(frozenset, expected.values()), key=sorted) == sorted((frozenset(v) for v in sofs.values()), key=sorted)
    # soxspipe-style names: <first DATE-OBS>_<ARM>_<BINNING>[_<READOUT>]_<RECIPE>[_<set>]
    for (recipe, arm, _, exptime, acq_filter), files in expected.items():
        (name,) = [n for n, lines in sofs.items() if set(lines) == files]
        first = min(f for f, _ in files)[5:28].replace("-", ".").replace(":", ".")
        assert name.startswith(f"{first}_{arm}_1X1") and f"_{recipe.upper()}" in name
        if exptime is not None:
            assert name.endswith(f"_{exptime:g}S")
        if acq_filter:
            assert name.endswith(f"_{acq_filter.upper()}")
    # NIR lamp frames travel with their lamp-off partners: one run per pair set, half the frames lamp-off
    frames = frames_table(workspace)
    for name, lines in sofs.items():
        if "_NIR_" in name and any(k in name for k in ("DISP_SOLUTION", "ORDER_CENTRES", "MFLAT", "SPAT_SOLUTION")):
            offs = [frames[f]["lamp_off"] for f, _ in lines]
            assert len(offs) >= 2 and sum(offs) * 2 == len(offs)


def test_list_commands(prepared, tmp_path):
    workspace, report = prepared
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "soxspipe", "list", "sof", str(workspace)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert sum(".sof" in line for line in result.stdout.splitlines()) == len(report.runs)
    result = subprocess.run([sys.executable, "-m", "soxspipe", "list", "ob", str(workspace)], capture_output=True,
                            text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    assert "GAL-B nodding" in result.stdout and "Multi-pinhole arc" in result.stdout


def test_prep_again_does_nothing_new(simulated_night, prepared):
    workspace, report = prepared
    sof_times = {p: p.stat().st_mtime_ns for p in (workspace / "sof").iterdir()}
    again = prep(workspace, simulated_night / "raw")
    assert again.new == [] and again.rejected == [] and again.changed_runs == []
    assert again.unchanged == len(report.new) and sorted(again.runs) == sorted(report.runs)
    assert {p: p.stat().st_mtime_ns for p in (workspace / "sof").iterdir()} == sof_times


def test_frames_indexed_under_an_older_frame_types_get_their_recipe_now(simulated_night, prepared):
    """Telluric standards went to stare before soxs_telluric existed: prep gives them to telluric, runs unchanged."""
    workspace, report = prepared
    conn = sqlite3.connect(workspace / "soxspipe.db")
    with conn:
        n = conn.execute("UPDATE frames SET recipe = 'stare' WHERE kind = 'telluric_standard'").rowcount
    conn.close()
    assert n >= 2
    again = prep(workspace, simulated_night / "raw")
    assert {r["recipe"] for r in frames_table(workspace).values() if r["kind"] == "telluric_standard"} == {"telluric"}
    assert again.changed_runs == [] and sorted(again.runs) == sorted(report.runs)
    assert sum("_TELLURIC_" in name for name in again.runs) == 2


# -- bad input ---------------------------------------------------------------------------

TINY = np.zeros((8, 8), dtype=np.uint16)


def _bias(folder, i, **kw):
    return write_frame(folder / f"bias{i}.fits", kind_header("bias_vis", mjd=60696.4 + i * 0.001,
                       extra={"DATE-OBS": f"2025-01-21T09:{i:02d}:00.000", "HIERARCH ESO OBS ID": 7}), TINY, **kw)


def test_bad_inputs_are_reported_and_nothing_else_stops(tmp_path):
    raw = tmp_path / "incoming"
    raw.mkdir()
    good = [_bias(raw, i) for i in range(5)]
    (raw / "notfits.fits").write_text("hello\n" * 100)
    full = write_frame(raw / "full.fits", kind_header("bias_vis", mjd=60696.5))
    (raw / "truncated.fits").write_bytes(full.read_bytes()[:100000])
    full.unlink()
    (raw / "copy").mkdir()
    (raw / "copy" / "bias0_again.fits").write_bytes(good[0].read_bytes())
    header = kind_header("bias_vis", mjd=60696.6)
    for key in ("HIERARCH ESO DPR CATG", "HIERARCH ESO DPR TYPE", "HIERARCH ESO DPR TECH"):
        del header[key]
    write_frame(raw / "nodpr.fits", header, TINY)
    product = kind_header("bias_vis", mjd=60696.7, extra={"HIERARCH ESO PRO CATG": "MASTER_BIAS_VIS"})
    write_frame(raw / "product.fits", product, TINY)
    before = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in raw.rglob("*.fits")}

    workspace = tmp_path / "ws"
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "soxspipe", "prep", str(workspace), str(raw)],
                            capture_output=True, text=True, env=env, timeout=120)
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "5 new frame(s) indexed" in out and "5 file(s) not indexed" in out
    assert "notfits.fits: not a readable FITS file" in out
    assert "truncated.fits: the file is truncated" in out
    assert "bias0_again.fits: a duplicate of" in out and "bias0.fits" in out
    assert "nodpr.fits: no DPR CATG/TYPE/TECH" in out
    assert "product.fits: a pipeline product (MASTER_BIAS_VIS)" in out
    assert {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in raw.rglob("*.fits")} == before  # never modified
    (sof,) = (workspace / "sof").glob("*MBIAS.sof")
    assert sum(not ln.startswith("#") for ln in sof.read_text().splitlines()) == 5

    # the rejects stay listed (not re-read) on the next prep; a new file is picked up
    _bias(raw, 9)
    again = prep(workspace, raw)
    assert len(again.new) == 1 and again.rejected == [] and len(again.all_rejects) == 5
    assert again.changed_runs == [sof.stem]


def test_workspace_is_the_raw_folder(tmp_path):
    """prep <workspace> alone indexes the frames inside it and ignores its own raw/<night>/, sof/, reduced/."""
    for i in range(3):
        _bias(tmp_path, i)
    first = prep(tmp_path)
    assert len(first.new) == 3 and first.all_rejects == []
    assert len(list((tmp_path / "raw" / "2025-01-20").glob("*.fits"))) == 3
    again = prep(tmp_path)
    assert again.new == [] and again.unchanged == 3 and again.all_rejects == []


def test_concurrent_prep_and_reduce_never_corrupt_the_database(tmp_path):
    """Three preps and a reduce all at the same time: every frame indexed once, the database intact."""
    raw = tmp_path / "incoming"
    raw.mkdir()

    def dark(i):
        header = kind_header("dark_nir", mjd=60696.4 + i * 0.001, exptime=float(10 * (i % 4 + 1)),
                             extra={"DATE-OBS": f"2025-01-21T09:{i:02d}:00.000", "HIERARCH ESO OBS ID": i % 4})
        write_frame(raw / f"dark{i:02d}.fits", header, np.zeros((8, 8), np.float32))

    for i in range(8):
        dark(i)
    workspace = tmp_path / "ws"
    prep(workspace, raw)
    for i in range(8, 40):
        dark(i)
    env = {**os.environ, "HOME": str(tmp_path)}
    commands = [["prep", str(workspace), str(raw)]] * 3 + [["reduce", "all", str(workspace)]]
    procs = [subprocess.Popen([sys.executable, "-m", "soxspipe", *c], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                              text=True, env=env) for c in commands]
    for command, proc in zip(commands, procs):
        out, err = proc.communicate(timeout=120)
        assert "database is locked" not in err and "internal error" not in err, err
        # the tiny 8 x 8 darks fail in mdark (exit code 1), which reduce all reports and goes on
        assert proc.returncode == 0 or (command[0] == "reduce" and proc.returncode == 1 and " runs: " in out), err
    conn = sqlite3.connect(workspace / "soxspipe.db")
    assert conn.execute("PRAGMA integrity_check").fetchone()[0] == "ok"
    assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert conn.execute("SELECT COUNT(*), COUNT(DISTINCT source) FROM frames").fetchone() == (40, 40)
    assert conn.execute("SELECT COUNT(*) FROM rejects").fetchone()[0] == 0
    assert conn.execute("SELECT COUNT(*) FROM runs").fetchone()[0] == 4
    assert conn.execute("SELECT COUNT(*) FROM run_frames").fetchone()[0] == 40
    conn.close()
