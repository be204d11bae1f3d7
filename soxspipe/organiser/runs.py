"""Recipe runs: group indexed frames into runs, match calibrations, write SOFs.

What a run is comes from data, not code: ``frame_types.yaml`` says which recipe
reduces each frame kind, ``organiser.yaml`` lists the cascade, the values the
frames of one run share (``run_keys``) and how calibrations are matched, and a
registered recipe class says which calibrations it takes (``calibrations``) and
whether its frames share one exposure time (``same_exptime``). A recipe added to
:data:`soxspipe.recipes.RECIPES` needs no change here.
"""

import hashlib
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from ..commonutils.classify import match_kind
from ..commonutils.detectors import detector
from ..recipes import RECIPES, recipe_class
from ..static_calibrations import load_yaml
from .database import insert, transaction, update

log = logging.getLogger(__name__)

SOF_DIR = "sof"


@dataclass(frozen=True)
class RecipeSpec:
    """What the organiser needs to know of a recipe."""

    name: str
    #: product-category prefix -> rule ("has_bias", True/False or a list of arms that require it)
    calibrations: dict
    same_exptime: bool
    #: is the recipe registered (can it run)?
    registered: bool
    #: SOF tags of non-FITS inputs (e.g. ``REF_CAT``) -> required?
    static_inputs: tuple = ()


def _config():
    return load_yaml("organiser.yaml")


def cascade():
    """Recipe names in the order ``reduce all`` runs them."""
    order = list(_config()["cascade"])
    return order + [name for name in RECIPES if name not in order]


def cascade_position(recipe):
    """Position of ``recipe`` in :func:`cascade` (unknown recipes come last)."""
    order = cascade()
    return order.index(recipe) if recipe in order else len(order)


@lru_cache(maxsize=None)
def _spec(name, registered):
    if registered:
        try:
            cls = recipe_class(name)
        except Exception as exc:  # a broken recipe module must not stop prep; its runs fail in reduce
            log.warning("recipe %s cannot be loaded (%s: %s); planning its runs from organiser.yaml",
                        name, exc.__class__.__name__, exc)
        else:
            return RecipeSpec(name, dict(cls.calibrations), bool(cls.same_exptime), True,
                              tuple(dict(getattr(cls, "static_inputs", {}) or {}).items()))
    plan = _config()["cascade"].get(name) or {}
    return RecipeSpec(name, dict(plan.get("calibrations") or {}), bool(plan.get("same_exptime", False)), registered)


def recipe_spec(name):
    """The :class:`RecipeSpec` of ``name``: from the recipe class when registered, else from ``organiser.yaml``."""
    return _spec(name, name in RECIPES)


def calibration_needs(spec, arm):
    """``[(prefix, required)]``: the calibrations a run of ``spec`` on ``arm`` takes, and which it cannot do without."""
    needs = []
    for prefix, rule in spec.calibrations.items():
        if rule == "has_bias":
            if not detector(arm).has_bias:
                continue  # the arm has no bias: there is nothing to look for
            required = True
        elif isinstance(rule, (list, tuple)):
            required = arm in rule
        else:
            required = bool(rule)
        needs.append((prefix, required))
    return needs


# -- grouping --------------------------------------------------------------------------

def group_frames(frames):
    """Group ``frames`` rows into runs.

    Frames of one run have the same recipe and the same ``run_keys`` values (and
    exposure time when the recipe asks for one), so lamp-off partners (same OB
    and template) join their lamp-on frames.

    Returns
    -------
    list of list of sqlite3.Row
        One list per run, frames in time order; runs in time order.
    """
    keys = _config()["run_keys"]
    groups = {}
    for f in sorted(frames, key=lambda r: r["mjd"]):
        if not f["recipe"]:
            continue
        spec = recipe_spec(f["recipe"])
        key = (f["recipe"],) + tuple(f[k] for k in keys) + ((f["exptime"],) if spec.same_exptime else ())
        groups.setdefault(key, []).append(f)
    return list(groups.values())


def run_name(recipe, frames):
    """The soxspipe-style name of a run (and of its SOF): first frame's time, arm, binning, read-out, recipe, set."""
    first = frames[0]
    stamp = (first["date_obs"] or "").replace("-", ".").replace(":", ".") or f"MJD{first['mjd']:.5f}"
    parts = [stamp, first["arm"], first["binning"].upper()]
    if first["readout"] and first["readout"] != "default":
        parts.append(first["readout"].upper())
    parts.append(recipe.upper())
    if recipe_spec(recipe).same_exptime and first["exptime"] is not None:
        parts.append(f"{first['exptime']:g}S")
    for value in (first["slit"], first["acq_filter"]):
        if value:
            parts.append(str(value).upper())
    return "_".join(parts)


def _frames_hash(frames):
    return hashlib.sha1("\n".join(sorted(f["header_hash"] for f in frames)).encode()).hexdigest()


def plan_runs(conn, workspace):
    """Regroup every indexed frame into runs, update the ``runs`` table and write new or changed SOFs.

    A run whose frames are unchanged keeps its status and fingerprint; a run
    whose frames changed is reset to ``planned``.

    Returns
    -------
    (list of str, list of str)
        The names of all runs, and of the runs that are new or changed.
    """
    workspace = Path(workspace)
    _refresh_recipes(conn)
    frames = conn.execute("SELECT * FROM frames").fetchall()
    planned = {}
    for members in group_frames(frames):
        name = base = run_name(members[0]["recipe"], members)
        n = 1
        while name in planned:  # frames whose DATE-OBS is not unique
            n += 1
            name = f"{base}_{n}"
        planned[name] = members
    changed = []
    with transaction(conn):
        existing = {r["name"]: r for r in conn.execute("SELECT id, name, frames_hash FROM runs")}
        for name, members in planned.items():
            first = members[0]
            values = dict(recipe=first["recipe"], arm=first["arm"], binning=first["binning"],
                          readout=first["readout"], night=first["night"], mjd=first["mjd"],
                          exptime=first["exptime"], slit=first["slit"], acq_filter=first["acq_filter"],
                          obs_id=first["obs_id"], tpl_start=first["tpl_start"], mode=first["dpr_tech"],
                          sof=f"{SOF_DIR}/{name}.sof", n_frames=len(members), frames_hash=_frames_hash(members))
            old = existing.get(name)
            if old is not None and old["frames_hash"] == values["frames_hash"]:
                continue
            if old is None:
                run_id = insert(conn, "runs", dict(values, name=name, status="planned"))
            else:
                run_id = old["id"]
                update(conn, "runs", run_id, dict(values, status="planned", reason=None))
                conn.execute("DELETE FROM run_frames WHERE run_id = ?", (run_id,))
            conn.executemany("INSERT INTO run_frames (run_id, frame_id) VALUES (?, ?)",
                             [(run_id, f["id"]) for f in members])
            changed.append(name)
        for name in set(existing) - set(planned):
            conn.execute("DELETE FROM runs WHERE name = ?", (name,))
    for name in changed:
        run = conn.execute("SELECT * FROM runs WHERE name = ?", (name,)).fetchone()
        needs = calibration_needs(recipe_spec(run["recipe"]), run["arm"])
        notes = [f"calibrations chosen by 'soxspipe reduce all': "
                 + (", ".join(f"{p}_{run['arm']}{'' if req else ' (optional)'}" for p, req in needs) or "none")]
        write_sof(workspace, run, run_frames(conn, run["id"]), [], notes)
    return list(planned), changed


def _refresh_recipes(conn):
    """Give the frames indexed under an older ``frame_types.yaml`` the recipe it names now."""
    stale = []
    rows = conn.execute("SELECT id, arm, recipe, dpr_catg, dpr_type, dpr_tech FROM frames WHERE kind IS NOT NULL")
    for f in rows.fetchall():
        recipe = match_kind(f["arm"], f["dpr_catg"], f["dpr_type"], f["dpr_tech"])[1]
        if recipe is not None and recipe != f["recipe"]:
            stale.append((recipe, f["id"]))
    if stale:
        log.info("%d frame(s) now reduced by another recipe (frame_types.yaml)", len(stale))
        with transaction(conn):
            conn.executemany("UPDATE frames SET recipe = ? WHERE id = ?", stale)


def run_frames(conn, run_id):
    """The ``frames`` rows of a run, in time order."""
    return conn.execute("SELECT f.* FROM frames f JOIN run_frames rf ON rf.frame_id = f.id "
                        "WHERE rf.run_id = ? ORDER BY f.mjd", (run_id,)).fetchall()


# -- calibrations ----------------------------------------------------------------------

def find_calibration(conn, run, prefix):
    """The best calibration ``<prefix>_<ARM>`` (or ``<prefix>_<ARM>_<filter>``) for ``run``, or None.

    A candidate is a recorded product of that category with the run's arm,
    binning and read-out mode, QC passed, made by a recipe earlier in the
    cascade, and sharing with the run the values ``organiser.yaml`` requires for
    the prefix (e.g. a master flat's slit and filter). Of those, the product of
    the latest recipe in the cascade wins (an order table from mflat before one
    from order_centres), then the one sharing the preferred values (a master
    dark of the run's exposure time), then the one nearest in time.
    """
    tags = [f"{prefix}_{run['arm']}"] + ([f"{prefix}_{run['arm']}_{run['acq_filter']}"] if run["acq_filter"] else [])
    rows = conn.execute(f"SELECT * FROM products WHERE tag IN ({', '.join('?' * len(tags))}) AND arm = ? "
                        "AND binning = ? AND readout = ? AND qc_status = 'PASS'",
                        (*tags, run["arm"], run["binning"], run["readout"])).fetchall()
    rules = _config()["calibration_match"].get(prefix) or {}
    require, prefer = rules.get("require", []), rules.get("prefer", [])
    mine = cascade_position(run["recipe"])
    candidates = [p for p in rows if cascade_position(p["recipe"]) < mine and all(_same(run[k], p[k]) for k in require)]
    if not candidates:
        return None
    return max(candidates, key=lambda p: (cascade_position(p["recipe"]), sum(_same(run[k], p[k]) for k in prefer),
                                          -abs(p["mjd"] - run["mjd"])))


def _same(wanted, have):
    if wanted is None:
        return True
    if isinstance(wanted, float) and have is not None:
        return abs(wanted - float(have)) < 1e-3
    return wanted == have


def describe(run):
    """A short description of a run's setup: arm, binning, read-out, exposure time, slit, filter."""
    parts = [run["arm"], run["binning"]]
    if run["readout"] and run["readout"] != "default":
        parts.append(run["readout"])
    if recipe_spec(run["recipe"]).same_exptime and run["exptime"] is not None:
        parts.append(f"{run['exptime']:g} s")
    parts += [v for v in (run["slit"], run["acq_filter"]) if v]
    return " ".join(parts)


# -- SOF files -------------------------------------------------------------------------

def find_static(conn, tag):
    """The newest static input (``static_files`` row) with SOF tag ``tag``, or None."""
    return conn.execute("SELECT * FROM static_files WHERE tag = ? ORDER BY mtime_ns DESC, indexed_at DESC LIMIT 1",
                        (tag,)).fetchone()


def write_sof(workspace, run, frames, calibrations, notes=()):
    """Write the SOF of ``run``: one ``path TAG`` line per raw frame and calibration, paths relative to ``sof/``.

    Parameters
    ----------
    workspace : Path
    run : sqlite3.Row
        The ``runs`` row.
    frames : sequence of sqlite3.Row
        Its raw frames.
    calibrations : sequence of sqlite3.Row
        ``products`` rows, and ``static_files`` rows of the run's static inputs.
    notes : sequence of str
        Extra comment lines.

    Returns
    -------
    Path
        The SOF, rewritten only when its content changes.
    """
    path = Path(workspace) / run["sof"]
    lines = [f"# {run['recipe']}: {describe(run)}, night {run['night']} (written by soxspipe)"]
    lines += [f"# {n}" for n in notes]
    lines += [f"../{f['path']} {f['tag']}" for f in frames]
    lines += [f"../{c['path']} {c['tag']}" for c in calibrations]
    text = "\n".join(lines) + "\n"
    if not path.exists() or path.read_text() != text:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        tmp.replace(path)
    return path
