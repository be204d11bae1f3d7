"""The data organiser: a folder of raw frames in, a reduced night out.

- :func:`prep` indexes raw frames into the workspace database (:mod:`.index`),
  groups them into recipe runs and writes one SOF per run (:mod:`.runs`);
- :func:`~.reduce.reduce_all` runs every SOF in cascade order and records the
  products and their QC (:mod:`.reduce`);
- :mod:`.listing` prints the SOFs and observation blocks of a workspace.

The database (:mod:`.database`) is documented in ``docs/organiser.rst``.
"""

from pathlib import Path

from .database import connect
from .index import PrepReport, index_folder
from .listing import list_obs, list_sofs
from .reduce import format_summary, reduce_all
from .results import RunResult
from .runs import plan_runs

__all__ = ["prep", "reduce_all", "format_summary", "list_sofs", "list_obs", "PrepReport", "RunResult",
           "format_prep_report"]


def prep(workspace, source=None):
    """Index the raw frames under ``source`` (default: the workspace) and plan the runs and SOFs.

    Parameters
    ----------
    workspace : str or Path
        Where the database, ``raw/<night>/``, ``sof/``, ``reduced/`` and ``qc/`` live.
    source : str or Path, optional
        The folder holding the raw frames, searched recursively.

    Returns
    -------
    PrepReport
    """
    workspace = Path(workspace).resolve()
    report = index_folder(workspace, source)
    conn = connect(workspace)
    try:
        report.runs, report.changed_runs = plan_runs(conn, workspace)
        report.all_rejects = [(r["source"], r["reason"]) for r in conn.execute("SELECT * FROM rejects ORDER BY source")]
        report.n_frames = conn.execute("SELECT COUNT(*) FROM frames").fetchone()[0]
        report.static = [(r["tag"], r["path"]) for r in conn.execute("SELECT tag, path FROM static_files ORDER BY path")]
    finally:
        conn.close()
    return report


def format_prep_report(report):
    """The ``prep`` summary: counts, and every file that is not indexed with the reason."""
    lines = [f"{len(report.new)} new frame(s) indexed, {report.unchanged} already known, "
             f"{len(report.rejected)} rejected now; {report.n_frames} frames in the workspace",
             f"{len(report.runs)} recipe runs, {len(report.changed_runs)} new or changed (SOFs in sof/)"]
    if report.static:
        lines.append("static inputs: " + ", ".join(f"{path} ({tag})" for tag, path in report.static))
    if report.all_rejects:
        lines.append(f"{len(report.all_rejects)} file(s) not indexed:")
        lines += [f"  {reason if reason.startswith(src) else src + ': ' + reason}" for src, reason in report.all_rejects]
    return "\n".join(lines)
