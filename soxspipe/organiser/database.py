"""The organiser's embedded sqlite database: schema and access.

One file, ``soxspipe.db``, in the workspace. It runs in WAL mode with a busy
timeout, and every change happens inside a transaction, so a ``prep`` and a
``reduce all`` running at the same time never see or leave a half-written state.
The schema is documented in ``docs/organiser.rst``.
"""

import logging
import sqlite3
from contextlib import contextmanager
from pathlib import Path

log = logging.getLogger(__name__)

#: file name of the database inside a workspace
DB_NAME = "soxspipe.db"
SCHEMA_VERSION = 1

SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS frames (
    id INTEGER PRIMARY KEY,
    source TEXT NOT NULL UNIQUE,
    path TEXT NOT NULL UNIQUE,
    size INTEGER, mtime_ns INTEGER,
    header_hash TEXT NOT NULL UNIQUE,
    arm TEXT, kind TEXT, tag TEXT, dpr_catg TEXT, dpr_type TEXT, dpr_tech TEXT,
    binning TEXT, readout TEXT, exptime REAL, mjd REAL, date_obs TEXT, night TEXT,
    slit TEXT, lamps TEXT, lamp_off INTEGER, acq_filter TEXT,
    obs_id INTEGER, obs_name TEXT, tpl_id TEXT, tpl_start TEXT, object TEXT,
    recipe TEXT, indexed_at TEXT);
CREATE INDEX IF NOT EXISTS frames_night ON frames (night, arm);
CREATE TABLE IF NOT EXISTS rejects (
    source TEXT PRIMARY KEY, size INTEGER, mtime_ns INTEGER,
    reason TEXT NOT NULL, duplicate_of INTEGER REFERENCES frames(id), indexed_at TEXT);
CREATE TABLE IF NOT EXISTS static_files (
    source TEXT PRIMARY KEY, path TEXT NOT NULL, tag TEXT NOT NULL,
    size INTEGER, mtime_ns INTEGER, indexed_at TEXT);
CREATE TABLE IF NOT EXISTS runs (
    id INTEGER PRIMARY KEY,
    name TEXT NOT NULL UNIQUE,
    recipe TEXT NOT NULL, arm TEXT, binning TEXT, readout TEXT, night TEXT,
    mjd REAL, exptime REAL, slit TEXT, acq_filter TEXT, obs_id INTEGER, tpl_start TEXT, mode TEXT,
    sof TEXT, n_frames INTEGER, frames_hash TEXT,
    status TEXT NOT NULL DEFAULT 'planned', reason TEXT, fingerprint TEXT,
    reduced_at TEXT, duration REAL);
CREATE TABLE IF NOT EXISTS run_frames (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    frame_id INTEGER NOT NULL REFERENCES frames(id) ON DELETE CASCADE,
    PRIMARY KEY (run_id, frame_id));
CREATE TABLE IF NOT EXISTS products (
    id INTEGER PRIMARY KEY,
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    path TEXT NOT NULL UNIQUE, tag TEXT NOT NULL, recipe TEXT,
    arm TEXT, binning TEXT, readout TEXT, night TEXT, mjd REAL, exptime REAL,
    slit TEXT, acq_filter TEXT, qc_status TEXT, created_at TEXT);
CREATE INDEX IF NOT EXISTS products_tag ON products (tag, arm, binning, readout);
CREATE TABLE IF NOT EXISTS qc (
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    name TEXT NOT NULL, value REAL, unit TEXT, low REAL, high REAL, status TEXT,
    PRIMARY KEY (product_id, name));
CREATE TABLE IF NOT EXISTS run_calibrations (
    run_id INTEGER NOT NULL REFERENCES runs(id) ON DELETE CASCADE,
    product_id INTEGER NOT NULL REFERENCES products(id) ON DELETE CASCADE,
    tag TEXT, PRIMARY KEY (run_id, product_id));
"""


def connect(workspace):
    """Open (and create if needed) the database of ``workspace``; return a ``sqlite3.Connection``.

    Rows come back as ``sqlite3.Row`` (access by column name). The connection
    is in autocommit mode: group changes with :func:`transaction`.
    """
    workspace = Path(workspace)
    workspace.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(workspace / DB_NAME, timeout=60.0, isolation_level=None)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA busy_timeout = 60000")
    conn.execute("PRAGMA journal_mode = WAL")
    conn.execute("PRAGMA foreign_keys = ON")
    conn.execute("PRAGMA synchronous = NORMAL")
    with transaction(conn):
        for statement in filter(str.strip, SCHEMA.split(";")):
            conn.execute(statement)
        conn.execute("INSERT OR IGNORE INTO meta (key, value) VALUES ('schema_version', ?)", (str(SCHEMA_VERSION),))
    return conn


@contextmanager
def transaction(conn):
    """A write transaction (``BEGIN IMMEDIATE``): committed on success, rolled back on any error."""
    conn.execute("BEGIN IMMEDIATE")
    try:
        yield conn
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")


def insert(conn, table, row):
    """Insert the mapping ``row`` into ``table``; return the new row id."""
    columns = list(row)
    cur = conn.execute(f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})",
                       [row[c] for c in columns])
    return cur.lastrowid


def update(conn, table, row_id, values):
    """Set the columns in the mapping ``values`` of row ``row_id`` of ``table``."""
    columns = list(values)
    conn.execute(f"UPDATE {table} SET {', '.join(f'{c} = ?' for c in columns)} WHERE id = ?",
                 [values[c] for c in columns] + [row_id])
