"""``soxspipe list sof|ob``: what a workspace holds, as plain-text tables."""

from .database import connect
from .runs import cascade_position, describe


def _table(header, rows):
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return "\n".join("  ".join(str(v).ljust(w) for v, w in zip(r, widths)).rstrip() for r in [header] + rows)


def list_sofs(workspace):
    """One line per run: SOF file, recipe, setup, number of frames, status and reason (cascade order)."""
    conn = connect(workspace)
    try:
        runs = sorted(conn.execute("SELECT * FROM runs").fetchall(),
                      key=lambda r: (cascade_position(r["recipe"]), r["mjd"]))
    finally:
        conn.close()
    rows = [(r["sof"], r["recipe"], describe(r), r["n_frames"], r["status"], r["reason"] or "") for r in runs]
    return _table(("sof", "recipe", "setup", "frames", "status", "reason"), rows)


def list_obs(workspace):
    """One line per observation block and arm: OB id, name, night, arm, target, frame kinds and counts."""
    conn = connect(workspace)
    try:
        obs = conn.execute(
            "SELECT night, obs_id, arm, MAX(obs_name) AS name, MAX(object) AS object, MIN(mjd) AS mjd, "
            "COUNT(*) AS n, GROUP_CONCAT(DISTINCT kind) AS kinds, GROUP_CONCAT(DISTINCT recipe) AS recipes "
            "FROM frames GROUP BY night, obs_id, arm ORDER BY mjd, arm").fetchall()
    finally:
        conn.close()
    rows = [(o["night"], "" if o["obs_id"] is None else o["obs_id"], o["arm"], o["name"] or "", o["object"] or "",
             o["n"], o["kinds"], o["recipes"]) for o in obs]
    return _table(("night", "ob", "arm", "name", "target", "frames", "kinds", "recipes"), rows)
