"""soxspipe reduce all: the cascade over a simulated night as far as recipes exist, QC recorded,
failed products never used downstream, idempotent re-runs, and only what depends on a new frame redone."""

import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import pytest
from astropy.io import fits
from astropy.table import Table
from astropy.time import Time

from soxspipe.commonutils.settings import merge_settings
from soxspipe.organiser import format_summary, prep, reduce_all
from soxspipe.organiser.database import connect, insert, transaction
from soxspipe.organiser.runs import find_calibration
from soxspipe.recipes import RECIPES

NIGHT = "2025-01-20"
# The ACQ master bias keeps the detector's bias level (no overscan): ~960 e. A range excluding it forces a
# QC failure, a range including it a pass, whatever the bundled defaults say.
STRICT = {"mbias": {"qc-ranges": {"MBIAS MEDIAN": {"VIS": [-5.0, 5.0], "ACQ": [-5.0, 5.0]}}}}
LENIENT = {"mbias": {"qc-ranges": {"MBIAS MEDIAN": {"VIS": [-5.0, 5.0], "ACQ": [0.0, 5000.0]}}}}


#: recipes complete on every arm they serve: all their runs must pass
CORE = ("mbias", "mdark", "disp_solution", "order_centres")
#: what a recipe says when its SOF is wrong: never expected from the organiser's SOFs
ORGANISER_FAULTS = ("internal error", "is not a calibration", "in the SOF", "is not an input of", "give one",
                    "use one", "SOF file", "does not exist;")


def by_name(results):
    return {r.name: r for r in results}


def db_rows(workspace, sql, *args):
    conn = sqlite3.connect(workspace / "soxspipe.db")
    conn.row_factory = sqlite3.Row
    rows = conn.execute(sql, args).fetchall()
    conn.close()
    return rows


@pytest.fixture(scope="module")
def reduced(simulated_night, tmp_path_factory):
    """A workspace prepared from the simulated night and reduced once with STRICT settings."""
    workspace = tmp_path_factory.mktemp("reduce_ws")
    prep(workspace, simulated_night / "raw")
    results = reduce_all(workspace, settings=merge_settings(STRICT))
    return workspace, results


def test_cascade_runs_as_far_as_recipes_exist(reduced):
    workspace, results = reduced
    print(format_summary(results))
    order = [r.recipe for r in results]
    cascade = ["mbias", "mdark", "disp_solution", "order_centres", "mflat", "spat_solution", "response", "telluric",
               "stare", "nod", "offset"]
    assert [c for c in cascade if c in order] == sorted(set(order) & set(cascade), key=order.index)
    for r in results:
        if r.recipe not in RECIPES:
            assert r.status == "skipped" and r.reason == f"recipe {r.recipe} does not exist yet"
        elif r.recipe in CORE and "ACQ" not in r.setup:
            assert r.status == "ok", (r.name, r.reason)
        else:  # recipes still growing may fail on their own, never on what the organiser gave them
            assert not any(m in r.reason for m in ORGANISER_FAULTS), (r.name, r.reason)
    ok = [r for r in results if r.status == "ok"]
    assert {(r.recipe, r.setup) for r in ok} >= {("mbias", "VIS 1x1 slow"), ("mdark", "NIR 1x1 120 s"),
                                                 ("mdark", "NIR 1x1 300 s"), ("mdark", "NIR 1x1 600 s")}
    # products in reduced/<night>/<recipe>/, plots in qc/<night>/<recipe>/, all recorded with QC PASS
    # (the merges of both arms' spectra come last, outside the database: their products are checked below)
    products = db_rows(workspace, "SELECT p.*, r.status FROM products p JOIN runs r ON r.id = p.run_id WHERE p.arm != 'ACQ'")
    assert len(products) == sum(len(r.products) for r in ok if "ACQ" not in r.setup and r.recipe != "merge") >= 4
    merged = [workspace / p for r in ok if r.recipe == "merge" for p in r.products]
    assert merged and all(p.parent == workspace / "reduced" / NIGHT / "merge" and p.exists() for p in merged)
    for p in products:
        path = workspace / p["path"]
        assert path.parent == workspace / "reduced" / NIGHT / p["recipe"] and path.exists()
        assert p["qc_status"] == "PASS" == fits.getheader(path)["HIERARCH ESO QC STATUS"]
        assert not (path.parent / "qc").exists()
        qc = {q["name"]: q["value"] for q in db_rows(workspace, "SELECT * FROM qc WHERE product_id = ?", p["id"])}
        table = Table.read(path.with_name(path.stem + "_QC.ecsv"))
        assert qc == pytest.approx({str(n): float(v) for n, v in zip(table["name"], table["value"])})
    for r in ok:  # each run's QC plots (and a merge's quicklook PDF) moved to qc/<night>/<recipe>/
        stems = [Path(p).stem for p in r.products]
        plots = [p for p in (workspace / "qc" / NIGHT / r.recipe).iterdir() if p.suffix in (".png", ".pdf")]
        assert any(plot.name.startswith(stem + "_") for plot in plots for stem in stems), r.name
    (mdark600,) = [p for p in products if p["tag"] == "MASTER_DARK_NIR" and p["exptime"] == 600.0]
    assert db_rows(workspace, "SELECT COUNT(*) FROM qc WHERE product_id = ? AND name = 'MDARK MEDIAN'", mdark600["id"])[0][0] == 1


def test_failed_product_is_not_used_downstream(reduced):
    workspace, results = reduced
    acq = {r.recipe: r for r in results if r.setup.startswith("ACQ") and r.recipe in ("mbias", "mdark")}
    assert acq["mbias"].status == "failed" and acq["mbias"].reason == "QC FAIL: MBIAS MEDIAN"
    (bias,) = db_rows(workspace, "SELECT * FROM products WHERE tag = 'MASTER_BIAS_ACQ'")
    assert bias["qc_status"] == "FAIL"  # recorded, but ...
    assert acq["mdark"].status == "skipped" and "no MASTER_BIAS_ACQ that passed QC" in acq["mdark"].reason


def test_rerun_does_nothing_new_then_settings_and_x_redo(reduced):
    workspace, first = reduced
    again = reduce_all(workspace, settings=merge_settings(STRICT))
    assert [r.status for r in again if r.status == "ok"] == []
    assert {r.name for r in again if r.status == "done"} == {r.name for r in first if r.status in ("ok", "failed")}
    times = {p["path"]: (workspace / p["path"]).stat().st_mtime_ns for p in db_rows(workspace, "SELECT path FROM products")}

    # a settings change redoes the runs of that recipe (and what uses their products), nothing else
    darker = merge_settings({**STRICT, "mdark": {"default": {"hot-pixel-sigma": 9.0}}})
    redone = [r for r in reduce_all(workspace, settings=darker) if r.status == "ok"]
    assert sorted(r.setup for r in redone if r.recipe == "mdark") == ["NIR 1x1 120 s", "NIR 1x1 300 s", "NIR 1x1 600 s"]
    # only runs that took a master dark of the NIR (and the merges of the spectra those runs rewrote)
    users = [r for r in redone if r.recipe not in ("mdark", "merge")]
    for r in users:
        assert "MASTER_DARK_NIR" in (workspace / "sof" / f"{r.name}.sof").read_text(), r.name

    # the user's settings pass through: with the ACQ level inside its range the ACQ chain runs
    lenient = by_name(reduce_all(workspace, settings=merge_settings(LENIENT), arms=("ACQ",)))
    acq = {r.recipe: r for r in lenient.values() if r.recipe in ("mbias", "mdark")}
    assert acq["mbias"].status == "ok" and acq["mdark"].status == "ok", format_summary(lenient.values())
    for r in lenient.values():  # and on, as far as the imaging recipes exist: flats per filter, images
        assert r.status == "ok" or (r.status == "skipped" and r.recipe not in RECIPES), format_summary(lenient.values())
        if r.recipe == "image":
            sof = (workspace / "sof" / f"{r.name}.sof").read_text()
            assert "../static/refcat.ecsv REF_CAT" in sof and f"MASTER_FLAT_ACQ_{r.setup.split()[-1]}" in sof
    (dark,) = db_rows(workspace, "SELECT * FROM products WHERE tag = 'MASTER_DARK_ACQ'")
    (cal,) = db_rows(workspace, "SELECT p.path FROM run_calibrations c JOIN products p ON p.id = c.product_id "
                                "JOIN runs r ON r.id = c.run_id WHERE r.id = ?", dark["run_id"])
    assert cal["path"].startswith(f"reduced/{NIGHT}/mbias/MASTER_BIAS_ACQ")
    sof = workspace / db_rows(workspace, "SELECT sof FROM runs WHERE id = ?", dark["run_id"])[0]["sof"]
    assert f"../{cal['path']} MASTER_BIAS_ACQ" in sof.read_text()

    # -x redoes what is up to date (VIS only, to keep it short)
    redo = reduce_all(workspace, settings=merge_settings(STRICT), arms=("VIS",), overwrite=True)
    assert {r.name for r in redo if r.status == "ok"} == {r.name for r in first if r.status == "ok" and r.setup.startswith("VIS")}
    assert "mbias" in {r.recipe for r in redo if r.status == "ok"}
    vis_bias = db_rows(workspace, "SELECT path FROM products WHERE tag = 'MASTER_BIAS_VIS'")[0]["path"]
    assert (workspace / vis_bias).stat().st_mtime_ns > times[vis_bias]


def _copy_frame(src, dst, dt_s, extra=None):
    """A new raw frame: ``src`` taken ``dt_s`` seconds later (and with ``extra`` header values)."""
    with fits.open(src) as hdul:
        hdu = hdul[0] if hdul[0].header.get("NAXIS", 0) == 2 else hdul[1]
        header, data = hdu.header.copy(), hdu.data
        mjd = header["MJD-OBS"] + dt_s / 86400.0
        header["MJD-OBS"] = mjd
        header["DATE-OBS"] = Time(mjd, format="mjd").isot
        for key, value in (extra or {}).items():
            header[key] = value
        fits.PrimaryHDU(data, header=header).writeto(dst)
    return dst


def _dependents(workspace, run_name):
    """Names of the runs that used, directly or through other runs, a product of ``run_name``."""
    edges = db_rows(workspace, "SELECT up.name AS up, down.name AS down FROM run_calibrations c "
                               "JOIN products p ON p.id = c.product_id JOIN runs up ON up.id = p.run_id "
                               "JOIN runs down ON down.id = c.run_id")
    found, todo = set(), [run_name]
    while todo:
        here = todo.pop()
        for e in edges:
            if e["up"] == here and e["down"] not in found:
                found.add(e["down"])
                todo.append(e["down"])
    return found


def test_new_frames_redo_only_what_depends_on_them(simulated_night, tmp_path):
    workspace = tmp_path / "ws"
    prep(workspace, simulated_night / "raw")
    first = reduce_all(workspace, arms=("VIS",))
    assert all(r.status == "ok" for r in first if r.recipe in CORE)
    manifest = Table.read(simulated_night / "truth" / "manifest.ecsv")
    incoming = tmp_path / "incoming"
    incoming.mkdir()

    # one more VIS bias in the same template: the master bias is redone, then every run that used it
    biases = sorted(r["file"] for r in manifest if r["arm"] == "VIS" and r["kind"] == "bias")
    _copy_frame(simulated_night / "raw" / biases[-1], incoming / "SOXS.newbias.fits", 45.0)
    report = prep(workspace, incoming)
    assert len(report.new) == 1 and len(report.changed_runs) == 1 and report.changed_runs[0].endswith("_VIS_1X1_SLOW_MBIAS")
    expected = {report.changed_runs[0]} | _dependents(workspace, report.changed_runs[0])
    assert expected >= {r.name for r in first if r.recipe in CORE}  # every VIS run of these used the bias
    second = reduce_all(workspace, arms=("VIS",))
    assert {r.name for r in second if r.status in ("ok", "failed")} == expected, format_summary(second)
    assert all(r.status == "ok" for r in second if r.recipe in CORE)
    assert {r.status for r in second if r.name not in expected} <= {"done", "skipped"}
    (bias,) = db_rows(workspace, "SELECT p.path FROM products p JOIN runs r ON r.id = p.run_id WHERE r.name = ?",
                      report.changed_runs[0])
    assert fits.getheader(workspace / bias["path"])["HIERARCH ESO PRO REC1 RAW6 NAME"] == "SOXS.newbias.fits"

    # one new science exposure (a new OB): a new stare run, nothing else redone
    science = sorted(r["file"] for r in manifest if r["arm"] == "VIS" and r["kind"] == "science"
                     and r["dpr_tech"] == "ECHELLE,SLIT,STARE")[0]
    _copy_frame(simulated_night / "raw" / science, incoming / "SOXS.newscience.fits", 7200.0,
                {"HIERARCH ESO OBS ID": 999, "HIERARCH ESO TPL START": "2025-01-21T03:43:00"})
    report = prep(workspace, incoming)
    assert len(report.new) == 1 and len(report.changed_runs) == 1 and "_STARE_" in report.changed_runs[0]
    third = by_name(reduce_all(workspace, arms=("VIS",)))
    assert [r.name for r in third.values() if r.status == "ok"] == ([] if "stare" not in RECIPES else report.changed_runs)
    assert report.changed_runs[0] in third
    assert {r.status for n, r in third.items() if n != report.changed_runs[0]} <= {"done", "skipped"}


def test_calibration_choice(tmp_path):
    """Same arm/binning/read-out, QC passed, matching exposure time or slit, latest cascade step, nearest in time."""
    conn = connect(tmp_path)
    with transaction(conn):
        run_id = insert(conn, "runs", dict(name="up", recipe="mbias", status="ok"))

        def product(tag, recipe, mjd, qc="PASS", binning="1x1", readout="slow", exptime=None, slit=None,
                    acq_filter=None):
            arm = next(a for a in ("VIS", "NIR", "ACQ") if f"_{a}" in tag)
            insert(conn, "products", dict(run_id=run_id, path=f"{tag}_{recipe}_{mjd}_{qc}_{binning}_{exptime}_{slit}",
                                          tag=tag, recipe=recipe, arm=arm, binning=binning, readout=readout, mjd=mjd,
                                          exptime=exptime, slit=slit, acq_filter=acq_filter, qc_status=qc))
        product("MASTER_BIAS_VIS", "mbias", 100.0)
        product("MASTER_BIAS_VIS", "mbias", 100.6, qc="FAIL")          # nearest, but failed QC
        product("MASTER_BIAS_VIS", "mbias", 100.52, binning="2x1")     # wrong binning
        product("MASTER_BIAS_VIS", "mbias", 100.51, readout="fast")    # wrong read-out
        product("MASTER_BIAS_VIS", "mbias", 100.2)                     # the next best
        product("MASTER_DARK_NIR", "mdark", 100.5, readout="default", exptime=300.0)
        product("MASTER_DARK_NIR", "mdark", 100.0, readout="default", exptime=600.0)
        product("ORDER_TAB_VIS", "order_centres", 100.5)
        product("ORDER_TAB_VIS", "mflat", 99.0, slit="SLIT1.0")
        product("MASTER_FLAT_VIS", "mflat", 100.5, slit="SLIT5.0")
        product("MASTER_FLAT_VIS", "mflat", 99.0, slit="SLIT1.0")
        product("MASTER_FLAT_ACQ_r", "mflat", 100.5, readout="default", acq_filter="r")
        product("MASTER_FLAT_ACQ_g", "mflat", 100.0, readout="default", acq_filter="g")
    vis = dict(arm="VIS", binning="1x1", readout="slow", mjd=100.6, exptime=600.0, slit="SLIT1.0", acq_filter=None)
    nir = dict(vis, arm="NIR", readout="default")
    assert find_calibration(conn, dict(vis, recipe="mdark"), "MASTER_BIAS")["mjd"] == 100.2
    assert find_calibration(conn, dict(vis, recipe="mbias"), "MASTER_BIAS") is None  # not from itself or later
    # a dark of the run's exposure time, even when another is nearer in time; none of another
    assert find_calibration(conn, dict(nir, recipe="stare"), "MASTER_DARK")["exptime"] == 600.0
    assert find_calibration(conn, dict(nir, recipe="stare", exptime=900.0), "MASTER_DARK") is None
    assert find_calibration(conn, dict(vis, recipe="stare"), "ORDER_TAB")["recipe"] == "mflat"
    assert find_calibration(conn, dict(vis, recipe="mflat"), "ORDER_TAB")["recipe"] == "order_centres"
    assert find_calibration(conn, dict(vis, recipe="stare"), "MASTER_FLAT")["slit"] == "SLIT1.0"
    assert find_calibration(conn, dict(vis, recipe="stare", slit="SLIT0.5"), "MASTER_FLAT") is None
    # acquisition-camera flats are per filter, their category carries it
    acq = dict(vis, arm="ACQ", readout="default", slit=None, recipe="image")
    assert find_calibration(conn, dict(acq, acq_filter="g"), "MASTER_FLAT")["acq_filter"] == "g"
    assert find_calibration(conn, dict(acq, acq_filter="i"), "MASTER_FLAT") is None
    conn.close()


def test_science_without_calibrations_is_reported(tmp_path, monkeypatch):
    """A registered science recipe whose calibrations do not exist is skipped with the reason; nothing else stops."""
    import numpy as np

    from rawframes import kind_header, write_frame
    from soxspipe.organiser import reduce as reduce_module
    from soxspipe.organiser import runs as runs_module
    from soxspipe.recipes._base_recipe_ import _base_recipe_

    class stare(_base_recipe_):
        name = "stare"
        raw_kinds = ("science", "flux_standard")
        calibrations = {"MASTER_BIAS": "has_bias", "MASTER_FLAT": True}

    real = reduce_module.recipe_class
    monkeypatch.setitem(RECIPES, "stare", ("none", "stare", "test stand-in"))
    for module in (reduce_module, runs_module):
        monkeypatch.setattr(module, "recipe_class", lambda name: stare if name == "stare" else real(name))
    runs_module._spec.cache_clear()
    try:
        raw = tmp_path / "raw_in"
        raw.mkdir()
        # a staring science frame (a flux standard's would go to soxs_response)
        science = {"HIERARCH ESO OBS ID": 5, "HIERARCH ESO DPR CATG": "SCIENCE", "HIERARCH ESO DPR TYPE": "OBJECT"}
        write_frame(raw / "sci.fits", kind_header("std_flux_vis", mjd=60696.1, extra=science),
                    np.zeros((8, 8), np.uint16))
        prep(tmp_path / "ws", raw)
        (result,) = reduce_all(tmp_path / "ws")
        assert result.recipe == "stare" and result.status == "skipped"
        assert result.reason == "no MASTER_BIAS_VIS, MASTER_FLAT_VIS that passed QC for VIS 1x1 slow"
        env = {**os.environ, "HOME": str(tmp_path)}
        listed = subprocess.run([sys.executable, "-m", "soxspipe", "list", "sof", str(tmp_path / "ws")],
                                capture_output=True, text=True, env=env, timeout=120)
        assert "skipped" in listed.stdout and "no MASTER_BIAS_VIS" in listed.stdout
    finally:
        runs_module._spec.cache_clear()


def test_demo_command(simulated_night, tmp_path):
    """soxspipe demo on an already simulated night (VIS only): prep, reduce, say where the products are."""
    folder = tmp_path / "demo"
    for sub in ("raw", "truth"):
        (folder / "simulation" / sub).mkdir(parents=True)
        for f in (simulated_night / sub).iterdir():
            if f.is_file():
                os.link(f, folder / "simulation" / sub / f.name)
    env = {**os.environ, "HOME": str(tmp_path)}
    result = subprocess.run([sys.executable, "-m", "soxspipe", "demo", str(folder), "--arms", "VIS"],
                            capture_output=True, text=True, env=env, timeout=600)
    # exit code 1 only when a run failed: none of the complete recipes may
    assert result.returncode in (0, 1) and "internal error" not in result.stdout, result.stdout + result.stderr
    assert not [ln for ln in result.stdout.splitlines() if ln.startswith("failed") and ln.split()[1] in CORE]
    assert f"products:    {folder / 'reduced'}" in result.stdout
    assert list((folder / "reduced" / NIGHT / "mbias").glob("MASTER_BIAS_VIS_*.fits"))
    summary = [ln for ln in result.stdout.splitlines() if " runs: " in ln]
    assert summary and (result.returncode == 1) == ("0 failed" not in summary[-1])
