"""``soxspipe prep``, first half: index raw frames into the workspace database.

Every FITS file under a folder is read once (header only), classified with
:func:`~soxspipe.commonutils.classify.classify_header` and recorded in the
``frames`` table; the frame is hard-linked (or, across file systems, copied)
into ``raw/<night>/`` of the workspace and never modified. Files that cannot be
read or classified, pipeline products and duplicates are recorded in
``rejects`` with the reason. Files already indexed (same path, size and
modification time) are not read again, so re-running is cheap and idempotent.
"""

import datetime
import fnmatch
import hashlib
import logging
import os
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

from ..commonutils.classify import classify_header
from ..commonutils.errors import DataError
from ..commonutils.fitsio import is_fits_name, read_header
from ..commonutils.keywords import header_value, keyword
from ..static_calibrations import load_yaml
from .database import connect, insert, transaction

log = logging.getLogger(__name__)

#: workspace folders the organiser writes; prep never indexes what is inside them
MANAGED_DIRS = ("reduced", "qc", "sof", "static")
_NIGHT_DIR = re.compile(r"^\d{4}-\d{2}-\d{2}$")
_MJD0 = datetime.date(1858, 11, 17)
#: the night of a frame: the date of MJD-OBS minus this many hours (UTC)
NIGHT_OFFSET_HOURS = 15.0


def night_of(mjd):
    """The night (``YYYY-MM-DD``) a frame belongs to: the date of MJD-OBS minus 15 hours."""
    days = int((mjd - NIGHT_OFFSET_HOURS / 24.0) // 1)
    return (_MJD0 + datetime.timedelta(days=days)).isoformat()


@dataclass
class PrepReport:
    """What one ``prep`` did."""

    new: list = field(default_factory=list)        #: workspace paths of frames indexed now
    rejected: list = field(default_factory=list)   #: (source, reason) of files rejected now
    unchanged: int = 0                              #: files already indexed, not read again
    runs: list = field(default_factory=list)       #: names of the runs planned (all of them)
    changed_runs: list = field(default_factory=list)  #: names of runs that are new or whose frames changed
    all_rejects: list = field(default_factory=list)  #: (source, reason) of every file not indexed
    n_frames: int = 0                               #: frames in the workspace after this prep
    static: list = field(default_factory=list)      #: (tag, workspace path) of the static inputs (e.g. REF_CAT)


def candidate_files(folder, workspace):
    """The files under ``folder`` prep looks at, skipping the organiser's own folders of ``workspace``.

    Returns
    -------
    (list of Path, list of (Path, str))
        The FITS files, and the static inputs with their SOF tag (``static_inputs``
        in ``organiser.yaml``, e.g. a reference catalogue ``refcat.ecsv``).
    """
    folder, workspace = Path(folder).resolve(), Path(workspace).resolve()
    patterns = load_yaml("organiser.yaml").get("static_inputs") or {}
    fits_files, static = [], []
    for root, dirs, files in os.walk(folder):
        here = Path(root)
        dirs[:] = sorted(d for d in dirs if not d.startswith(".") and not _managed(here / d, workspace))
        for name in sorted(files):
            tag = next((t for t, globs in patterns.items() if any(fnmatch.fnmatchcase(name, g) for g in globs)), None)
            if tag:
                static.append((here / name, tag))
            elif is_fits_name(name):
                fits_files.append(here / name)
    return fits_files, static


def _managed(path, workspace):
    if path.parent == workspace and path.name in MANAGED_DIRS:
        return True
    return path.parent == workspace / "raw" and bool(_NIGHT_DIR.match(path.name))


def header_hash(header):
    """A digest of every card of a header: two files with the same digest hold the same exposure."""
    return hashlib.sha1(header.tostring().encode("ascii", "replace")).hexdigest()


def frame_record(path):
    """Read and classify one file; return its ``frames`` row (without path and id).

    Raises
    ------
    DataError
        The file cannot be read, is not a SOXS raw frame (no arm, no DPR
        keywords, a pipeline product) or has no exposure start.
    """
    header = read_header(path)
    info = classify_header(header, path)
    if info.is_product:
        raise DataError(f"{path}: a pipeline product ({info.tag}), not a raw frame")
    if info.mjd is None:
        raise DataError(f"{path}: no exposure start ({keyword('mjd_obs')}), so the night it belongs to is unknown")
    stat = Path(path).stat()
    row = dict(
        source=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns, header_hash=header_hash(header),
        arm=info.arm, kind=info.kind, tag=info.tag, dpr_catg=info.catg, dpr_type=info.type, dpr_tech=info.tech,
        binning=f"{info.binning[0]}x{info.binning[1]}", readout=info.readout, exptime=info.exptime,
        mjd=float(info.mjd), night=night_of(float(info.mjd)), slit=_text(info.slit), lamps=",".join(info.lamps),
        lamp_off=int(info.lamp_off), acq_filter=_text(info.acq_filter),
        obs_id=None if info.obs_id is None else int(info.obs_id), tpl_start=_text(info.tpl_start),
        recipe=info.recipe,
    )
    for name in load_yaml("organiser.yaml")["index_keywords"]:
        row[name] = _text(header_value(header, name, None))
    return row


def _text(value):
    return None if value is None else str(value).strip()


def link_raw(source, workspace, night):
    """Hard-link (or copy) ``source`` into ``<workspace>/raw/<night>/``; return the workspace-relative path."""
    return link_into(source, workspace, Path("raw") / night)


def link_into(source, workspace, subfolder):
    """Hard-link (or copy) ``source`` into ``<workspace>/<subfolder>/`` under a free name; return the relative path."""
    folder = Path(workspace) / subfolder
    folder.mkdir(parents=True, exist_ok=True)
    source = Path(source)
    name = source.name
    if ".fits" in name:
        stem, rest = name.split(".fits", 1)
        rest = ".fits" + rest
    else:
        stem, dot, ext = name.rpartition(".")
        stem, rest = (stem, dot + ext) if stem else (name, "")
    for n in range(1000):
        target = folder / (name if n == 0 else f"{stem}_{n}{rest}")
        if target.exists():
            if os.path.samefile(target, source):
                break
            continue
        try:
            os.link(source, target)
        except FileExistsError:
            if os.path.samefile(target, source):
                break
            continue
        except OSError:
            shutil.copy2(source, target)
        break
    return str(target.relative_to(workspace))


def index_folder(workspace, source=None):
    """Index the new FITS files under ``source`` (default: the workspace) into the database.

    Parameters
    ----------
    workspace : str or Path
        The workspace: database, ``raw/``, ``sof/``, ``reduced/``, ``qc/``.
    source : str or Path, optional
        The folder holding the raw frames (searched recursively).

    Returns
    -------
    PrepReport
        Frames indexed and files rejected by this call (``runs`` is left empty).
    """
    workspace = Path(workspace).resolve()
    source = Path(source).resolve() if source else workspace
    if not source.is_dir():
        raise DataError(f"{source}: no such folder; give the folder holding the raw frames")
    conn = connect(workspace)
    report = PrepReport()
    try:
        known = {r["source"]: (r["size"], r["mtime_ns"]) for r in
                 conn.execute("SELECT source, size, mtime_ns FROM frames UNION ALL SELECT source, size, mtime_ns FROM rejects")}
        records, rejects = [], []
        fits_files, static = candidate_files(source, workspace)
        _index_static(conn, workspace, static)
        for path in fits_files:
            stat = path.stat()
            if known.get(str(path)) == (stat.st_size, stat.st_mtime_ns):
                report.unchanged += 1
                continue
            try:
                records.append(frame_record(path))
            except DataError as exc:
                rejects.append(dict(source=str(path), size=stat.st_size, mtime_ns=stat.st_mtime_ns,
                                    reason=str(exc), duplicate_of=None))
        now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
        with transaction(conn):
            for row in records:
                done = conn.execute("SELECT 1 FROM frames WHERE source = ? AND size = ? AND mtime_ns = ?",
                                    (row["source"], row["size"], row["mtime_ns"])).fetchone()
                if done:  # a prep running at the same time indexed it first
                    continue
                conn.execute("DELETE FROM frames WHERE source = ?", (row["source"],))
                conn.execute("DELETE FROM rejects WHERE source = ?", (row["source"],))
                twin = conn.execute("SELECT id, source FROM frames WHERE header_hash = ?", (row["header_hash"],)).fetchone()
                if twin is not None:
                    rejects.append(dict(source=row["source"], size=row["size"], mtime_ns=row["mtime_ns"],
                                        reason=f"{row['source']}: a duplicate of {twin['source']} (same header)",
                                        duplicate_of=twin["id"]))
                    continue
                row["path"] = link_raw(row["source"], workspace, row["night"])
                row["indexed_at"] = now
                insert(conn, "frames", row)
                report.new.append(row["path"])
            for row in rejects:
                conn.execute("DELETE FROM rejects WHERE source = ?", (row["source"],))
                insert(conn, "rejects", dict(row, indexed_at=now))
                report.rejected.append((row["source"], row["reason"]))
    finally:
        conn.close()
    for src, reason in report.rejected:
        log.warning("rejected %s", reason if reason.startswith(src) else f"{src}: {reason}")
    return report


def _index_static(conn, workspace, static):
    """Record the new or changed static inputs (e.g. reference catalogues) and link them into ``static/``."""
    now = datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds")
    with transaction(conn):
        for path, tag in static:
            stat = path.stat()
            old = conn.execute("SELECT size, mtime_ns FROM static_files WHERE source = ?", (str(path),)).fetchone()
            if old is not None and (old["size"], old["mtime_ns"]) == (stat.st_size, stat.st_mtime_ns):
                continue
            conn.execute("DELETE FROM static_files WHERE source = ?", (str(path),))
            insert(conn, "static_files", dict(source=str(path), path=link_into(path, workspace, "static"), tag=tag,
                                              size=stat.st_size, mtime_ns=stat.st_mtime_ns, indexed_at=now))
            log.info("static input %s: %s", tag, path)
