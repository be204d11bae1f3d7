"""``soxspipe reduce all``: run every planned recipe run in cascade order.

For each run (cascade order, then time) the best calibrations are looked up
among the products recorded so far (:func:`~.runs.find_calibration`: QC passed
only, so a failed product is never used downstream and the next-best one is),
the run's SOF is rewritten with them and the recipe runs in-process. Its
products, their QC values and pass/fail status are recorded in the database.
One failed run never stops the others. A run whose inputs (raw frames,
calibration files, settings) are unchanged since it last ran is not run again
unless ``overwrite`` is given.
"""

import datetime
import hashlib
import json
import logging
import time
from contextlib import contextmanager
from pathlib import Path

from astropy.io import fits
from astropy.table import Table

from ..commonutils.classify import classify_header
from ..commonutils.errors import SoxsError, UsageError
from ..commonutils.keywords import header_value
from ..commonutils.settings import default_settings
from ..recipes import recipe_class
from .database import DB_NAME, connect, insert, transaction, update
from .merge_runs import merge_obs
from .results import DONE, FAILED, OK, SKIPPED, RunResult, move_plots
from .runs import (calibration_needs, cascade_position, describe, find_calibration, find_static, recipe_spec,
                   run_frames, write_sof)

log = logging.getLogger(__name__)

#: settings sections the science recipes and the standards' recipes read from one another
_SPECTRA_SECTIONS = ("stare", "nod", "offset", "response", "telluric")


def reduce_all(workspace, *, settings=None, overwrite=False, arms=None, recipes=None):
    """Reduce every run of a prepared workspace in cascade order.

    Parameters
    ----------
    workspace : str or Path
        A workspace prepared with ``soxspipe prep``.
    settings : dict, optional
        Complete settings (defaults merged with the user's); default: the bundled defaults.
    overwrite : bool
        Run again the runs that are up to date (``-x``).
    arms, recipes : sequence of str, optional
        Only the runs of these arms / recipes. The OBs' merges of both arms (recipe ``merge``) run
        last, when both VIS and NIR are among the arms.

    Returns
    -------
    list of RunResult
        One per run, in the order they were considered.
    """
    workspace = Path(workspace).resolve()
    if not (workspace / DB_NAME).exists():
        raise UsageError(f"{workspace}: no soxspipe database here; run 'soxspipe prep {workspace}' first")
    settings = settings if settings is not None else default_settings()
    conn = connect(workspace)
    try:
        runs = [r for r in conn.execute("SELECT * FROM runs").fetchall()
                if (arms is None or r["arm"] in arms) and (recipes is None or r["recipe"] in recipes)]
        runs.sort(key=lambda r: (cascade_position(r["recipe"]), r["mjd"]))
        results = []
        for i, run in enumerate(runs, start=1):
            log.info("[%d/%d] %s %s ...", i, len(runs), run["recipe"], describe(run))
            try:
                result = _reduce_run(conn, workspace, run, settings, overwrite)
            except Exception as exc:  # a broken run must not stop the night
                log.debug("%s failed", run["name"], exc_info=True)
                result = RunResult(run["name"], run["recipe"], describe(run), FAILED,
                                   f"internal error: {exc.__class__.__name__}: {exc}")
                _set_status(conn, run, result)
            log.info("[%d/%d] %s %s: %s%s", i, len(runs), run["recipe"], result.setup, result.status,
                     f" ({result.reason})" if result.reason else f" in {result.duration:.1f} s" if result.status == OK else "")
            results.append(result)
        both_arms = arms is None or {"VIS", "NIR"} <= set(arms)
        if both_arms and (recipes is None or "merge" in recipes):  # both arms of an OB reduced: their merge
            results += merge_obs(conn, workspace, settings, overwrite)
    finally:
        conn.close()
    return results


def _fingerprint(workspace, recipe, frames, calibrations, settings):
    """A digest of everything a run's products depend on: its raw frames, calibration files and settings.

    Only the settings sections the recipe reads count (its own, ``prepare`` and
    ``general``; for the science recipes and the standards' also each other's, the
    response's and the telluric's), so a change to another recipe's settings redoes
    nothing here.
    """
    sections = (recipe, "prepare", "general") + (_SPECTRA_SECTIONS if recipe in _SPECTRA_SECTIONS else ())
    used = {key: settings.get(key) for key in sections}
    parts = [recipe, json.dumps(used, sort_keys=True, default=str)]
    parts += [f"{f['path']} {f['header_hash']}" for f in frames]
    for c in calibrations:
        stat = (workspace / c["path"]).stat()
        parts.append(f"{c['path']} {stat.st_size} {stat.st_mtime_ns}")
    return hashlib.sha1("\n".join(parts).encode()).hexdigest()


def _inputs(conn, run, spec):
    """The calibration products and static inputs of a run: ``(calibrations, static, reason)``.

    ``reason`` says what required input is missing (None when nothing is).
    """
    calibrations, static, missing = [], [], []
    for prefix, required in calibration_needs(spec, run["arm"]):
        product = find_calibration(conn, run, prefix)
        if product is not None:
            calibrations.append(product)
        elif required:
            missing.append(f"{prefix}_{run['arm']}")
    if missing:
        return calibrations, static, f"no {', '.join(missing)} that passed QC for {describe(run)}"
    for tag, required in spec.static_inputs:
        row = find_static(conn, tag)
        if row is not None:
            static.append(row)
        elif required:
            missing.append(tag)
    if missing:
        return calibrations, static, (f"no {', '.join(missing)} file: put it beside the raw frames (names in "
                                      f"organiser.yaml, e.g. refcat.ecsv) and run prep again")
    return calibrations, static, None


def _reduce_run(conn, workspace, run, settings, overwrite):
    spec = recipe_spec(run["recipe"])
    result = RunResult(run["name"], run["recipe"], describe(run), SKIPPED)
    if not spec.registered:
        result.reason = f"recipe {run['recipe']} does not exist yet"
        return _set_status(conn, run, result)
    calibrations, static, missing = _inputs(conn, run, spec)
    if missing:
        result.reason = missing
        return _set_status(conn, run, result)
    frames = run_frames(conn, run["id"])
    sof = write_sof(workspace, run, frames, calibrations + static)
    fingerprint = _fingerprint(workspace, run["recipe"], frames, calibrations + static, settings)
    previous = [r["path"] for r in conn.execute("SELECT path FROM products WHERE run_id = ?", (run["id"],))]
    if (not overwrite and run["fingerprint"] == fingerprint and run["status"] in (OK, FAILED)
            and all((workspace / p).exists() for p in previous)):
        result.status, result.products = DONE, previous
        result.reason = "up to date" + (f"; failed before: {run['reason']}" if run["status"] == FAILED else "")
        return result

    out = workspace / "reduced" / run["night"] / run["recipe"]
    start = time.perf_counter()
    paths, error = [], None
    try:
        with _recipe_logs_quiet():
            paths = recipe_class(run["recipe"])(str(sof), output_dir=out, settings=settings, overwrite=True).run()
    except SoxsError as exc:
        error = str(exc)
    except NotImplementedError as exc:  # the recipe exists but cannot reduce these frames yet
        result.reason = f"recipe {run['recipe']} cannot reduce these frames yet" + (f": {exc}" if str(exc) else "")
        return _set_status(conn, run, result)
    except Exception as exc:  # one broken run must not stop the night
        log.debug("%s failed", run["name"], exc_info=True)
        error = f"internal error: {exc.__class__.__name__}: {exc}"
    move_plots(out, workspace / "qc" / run["night"] / run["recipe"])
    result.duration = time.perf_counter() - start
    with transaction(conn):
        conn.execute("DELETE FROM products WHERE run_id = ?", (run["id"],))
        conn.execute("DELETE FROM run_calibrations WHERE run_id = ?", (run["id"],))
        failed_qc = []
        for path in paths:
            try:
                rel, status, failed = _record_product(conn, workspace, run, Path(path))
            except Exception as exc:
                error = error or f"{path}: the product cannot be recorded ({exc.__class__.__name__}: {exc})"
                continue
            result.products.append(rel)
            failed_qc += failed if status != "PASS" else []
            if status != "PASS" and not failed:
                failed_qc.append(f"{Path(path).name}: QC status {status}")
        conn.executemany("INSERT INTO run_calibrations (run_id, product_id, tag) VALUES (?, ?, ?)",
                         [(run["id"], c["id"], c["tag"]) for c in calibrations])
        if error:
            result.status, result.reason = FAILED, error
        elif failed_qc:
            result.status, result.reason = FAILED, "QC FAIL: " + ", ".join(failed_qc)
        else:
            result.status = OK
        update(conn, "runs", run["id"], dict(status=result.status, reason=result.reason or None,
                                              fingerprint=fingerprint, reduced_at=_now(), duration=result.duration))
    return result


def _set_status(conn, run, result):
    with transaction(conn):
        update(conn, "runs", run["id"], dict(status=result.status, reason=result.reason))
    return result


def _record_product(conn, workspace, run, path):
    """Record one product and its QC values; return (workspace-relative path, QC status, failed QC names)."""
    with fits.open(path) as hdul:  # products keep their keywords in the primary HDU, images and tables alike
        header = hdul[0].header.copy()
    info = classify_header(header, path)
    status = str(header_value(header, "qc_status", "NONE")).strip()
    rel = str(path.resolve().relative_to(workspace))
    product_id = insert(conn, "products", dict(
        run_id=run["id"], path=rel, tag=info.tag, recipe=run["recipe"], arm=info.arm,
        binning=f"{info.binning[0]}x{info.binning[1]}", readout=info.readout, night=run["night"],
        mjd=info.mjd if info.mjd is not None else run["mjd"], exptime=info.exptime,
        slit=None if info.slit is None else str(info.slit).strip(),
        acq_filter=None if info.acq_filter is None else str(info.acq_filter).strip(),
        qc_status=status, created_at=_now()))
    failed = []
    qc_table = path.with_name(path.stem + "_QC.ecsv")
    if qc_table.exists():
        rows = Table.read(qc_table, format="ascii.ecsv")
        conn.executemany("INSERT OR REPLACE INTO qc (product_id, name, value, unit, low, high, status) "
                         "VALUES (?, ?, ?, ?, ?, ?, ?)",
                         [(product_id, str(r["name"]), float(r["value"]), str(r["unit"]), _finite(r["low"]),
                           _finite(r["high"]), str(r["status"])) for r in rows])
        failed = [str(r["name"]) for r in rows if str(r["status"]) != "PASS"]
    return rel, status, failed


def _finite(value):
    value = float(value)
    return value if value == value else None


def _now():
    return datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")


class _OrganiserOnly(logging.Filter):
    def filter(self, record):
        return record.levelno >= logging.WARNING or record.name.startswith(__name__.rsplit(".", 1)[0])


@contextmanager
def _recipe_logs_quiet():
    """While a recipe runs, keep its progress messages off the terminal (they still reach its log file).

    With debugging on (``-V``), everything is shown.
    """
    root = logging.getLogger("soxspipe")
    if root.getEffectiveLevel() <= logging.DEBUG:
        yield
        return
    handlers = [h for h in root.handlers if not isinstance(h, logging.FileHandler)]
    quiet = _OrganiserOnly()
    for h in handlers:
        h.addFilter(quiet)
    try:
        yield
    finally:
        for h in handlers:
            h.removeFilter(quiet)


def format_summary(results):
    """The end-of-run table: one line per run (status, recipe, setup, run, reason) and the totals."""
    if not results:
        return "no runs: run 'soxspipe prep' on a folder of raw frames first"
    rows = [(r.status, r.recipe, r.setup, r.name, r.reason or f"{len(r.products)} product(s)") for r in results]
    widths = [max(len(str(row[i])) for row in rows + [("status", "recipe", "setup", "run", "")]) for i in range(4)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(("status", "recipe", "setup", "run"), widths)) + "  reason"]
    lines += ["  ".join(str(v).ljust(w) for v, w in zip(row, widths)) + "  " + row[4] for row in rows]
    counts = {s: sum(r.status == s for r in results) for s in (OK, FAILED, SKIPPED, DONE)}
    lines.append(f"{len(results)} runs: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    return "\n".join(lines)
