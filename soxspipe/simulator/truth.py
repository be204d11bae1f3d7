"""The simulator's truth: writing it next to the raw frames, and loading it back.

Layout of ``<output>/truth/``:

- ``manifest.ecsv``: every raw file with arm, frame kind, DPR CATG/TYPE/TECH, tag,
  exposure time, OB id, binning, read-out, slit, lamps and MJD;
- ``night.json``: seed, scenario, night, per-arm flexure and observing conditions;
- ``optics_<ARM>.json``: the optical model (Legendre coefficients + flexure), loadable as
  :class:`~soxspipe.simulator.optics.OpticalModel`; ``optics_grid_<ARM>_<bx>x<by>.ecsv``:
  x, y on an (order, wavelength, slit) grid;
- ``order_edges_<ARM>_<bx>x<by>.ecsv``: per order and integer dispersion pixel, the
  cross-dispersion position of the slit centre and of both slit ends;
- ``lines_<ARM>_<kind>_<bx>x<by>.ecsv``: every rendered line (arcs: order, wavelength,
  slit position, x, y, electrons; sky lines at the slit centre);
- ``spectrum_<ARM>_<target>.ecsv`` and ``efficiency_<ARM>.ecsv``: injected spectra (per
  target: top-of-atmosphere flux, sky, telluric transmission at its airmass and its water
  and O2 parts, extinction; AB magnitudes through the bundled filters in the metadata);
- ``acq.json``, ``acq_stars.ecsv``, ``acq_targets.ecsv``, ``refcat.ecsv``: the acquisition
  camera's truth (see :mod:`soxspipe.simulator.acq`);
- ``detector_<ARM>_<bx>x<by>_<readout>.json`` (+ response and bad-pixel FITS maps).
"""

import json
import logging
from pathlib import Path

import numpy as np
from astropy.table import Table

from .optics import OpticalModel

log = logging.getLogger(__name__)

MANIFEST = "manifest.ecsv"


def binning_tag(binning):
    """'1x1', '2x1', ... as used in truth file names."""
    return f"{int(binning[0])}x{int(binning[1])}"


def write_table(path, columns, meta=None):
    """Write a dict of equal-length columns as ECSV; returns the path."""
    t = Table({k: np.asarray(v) for k, v in columns.items()})
    t.meta.update(meta or {})
    t.write(path, format="ascii.ecsv", overwrite=True)
    return Path(path)


def write_optics(truth_dir, model, binnings=((1, 1),)):
    """Write the optical model (JSON), its grid (ECSV) and the order edges per binning."""
    truth_dir = Path(truth_dir)
    (truth_dir / f"optics_{model.arm}.json").write_text(json.dumps(model.to_dict(), indent=1))
    for b in binnings:
        tag = binning_tag(b)
        model.grid_table(b).write(truth_dir / f"optics_grid_{model.arm}_{tag}.ecsv", overwrite=True)
        cols = {"order": [], "dispersion_pixel": [], "wavelength": [], "centre": [], "lower": [], "upper": []}
        for o in model.orders:
            g = model.order_geometry(o, b)
            cols["order"].append(np.full(g["d"].size, o))
            cols["dispersion_pixel"].append(g["d"])
            for k in ("wavelength", "centre", "lower", "upper"):
                cols[k].append(g[k])
        cols = {k: np.concatenate(v) for k, v in cols.items()}
        axis = "y" if model.dispersion_axis() == 1 else "x"
        write_table(truth_dir / f"order_edges_{model.arm}_{tag}.ecsv", cols, {
            "arm": model.arm, "binning": list(b), "dispersion_axis": axis,
            "description": "cross-dispersion position (prepared-frame px) of slit -6 (lower), 0 (centre) "
                           "and +6 arcsec (upper) at each integer dispersion pixel"})


def write_manifest(truth_dir, rows):
    """Write the manifest of raw files (list of dicts) as ECSV; returns its path."""
    keys = ["file", "arm", "kind", "dpr_catg", "dpr_type", "dpr_tech", "tag", "exptime", "obs_id",
            "binning", "readout", "slit", "lamps", "mjd_obs"]
    for r in rows:
        for k in r:
            if k not in keys:
                keys.append(k)
    cols = {}
    for k in keys:
        vals = [r.get(k) for r in rows]
        numbers = [v for v in vals if v is not None]
        if numbers and all(isinstance(v, (int, np.integer)) and not isinstance(v, bool) for v in numbers) \
                and len(numbers) == len(vals):
            cols[k] = np.array(vals, dtype=np.int64)
        elif numbers and all(isinstance(v, (int, float, np.integer, np.floating)) and not isinstance(v, bool)
                             for v in numbers):
            cols[k] = np.array([np.nan if v is None else v for v in vals], dtype=float)
        else:
            cols[k] = np.array(["" if v is None else str(v) for v in vals])
    t = Table(cols)
    if len(t):
        t.sort(["arm", "mjd_obs"])
    path = Path(truth_dir) / MANIFEST
    t.write(path, format="ascii.ecsv", overwrite=True)
    return path


class ArmTruth:
    """Truth of one arm: optics, order edges, lines and detector."""

    def __init__(self, truth_dir, arm):
        self.dir = Path(truth_dir)
        self.arm = arm
        self.optics = OpticalModel.from_dict(json.loads((self.dir / f"optics_{arm}.json").read_text()))

    def order_edges(self, binning=(1, 1)):
        """Table of order centre and edges per integer dispersion pixel."""
        return Table.read(self.dir / f"order_edges_{self.arm}_{binning_tag(binning)}.ecsv")

    def lines(self, kind, binning=(1, 1)):
        """Table of the lines rendered in frames of ``kind`` ('pinhole_arc', 'multipinhole_arc', 'sky')."""
        return Table.read(self.dir / f"lines_{self.arm}_{kind}_{binning_tag(binning)}.ecsv")

    def detector(self, binning=(1, 1), readout=None):
        """The detector truth dict (see SimulatedDetector.truth)."""
        pattern = f"detector_{self.arm}_{binning_tag(binning)}_{readout or '*'}.json"
        files = sorted(self.dir.glob(pattern))
        if not files:
            raise FileNotFoundError(f"no detector truth {pattern} in {self.dir}")
        return json.loads(files[0].read_text())

    def spectrum(self, target):
        """Injected spectrum of ``target`` in this arm (ECSV table)."""
        return Table.read(self.dir / f"spectrum_{self.arm}_{target}.ecsv")

    def efficiency(self):
        """Efficiency per order and wavelength (ECSV table)."""
        return Table.read(self.dir / f"efficiency_{self.arm}.ecsv")


class Truth:
    """Everything the simulator knows about a simulated night (see the module docstring)."""

    def __init__(self, truth_dir):
        self.dir = Path(truth_dir)
        if not (self.dir / MANIFEST).exists():
            raise FileNotFoundError(f"{self.dir} holds no simulator truth ({MANIFEST} missing)")
        self.manifest = Table.read(self.dir / MANIFEST)
        night = self.dir / "night.json"
        self.night = json.loads(night.read_text()) if night.exists() else {}
        self._arms = {}

    @property
    def arms(self):
        """Spectroscopic arms with an optical model in the truth."""
        return sorted(p.stem.split("_", 1)[1] for p in self.dir.glob("optics_*.json"))

    def arm(self, name):
        """The :class:`ArmTruth` of arm ``name``."""
        if name not in self._arms:
            self._arms[name] = ArmTruth(self.dir, name)
        return self._arms[name]

    @property
    def optics(self):
        """Dict arm -> optical model (flexure included)."""
        return {a: self.arm(a).optics for a in self.arms}

    def raw_files(self, **selection):
        """Paths of the raw files whose manifest columns equal the given values."""
        t = self.manifest
        mask = np.ones(len(t), bool)
        for k, v in selection.items():
            mask &= np.asarray(t[k]) == v
        raw = self.dir.parent / "raw"
        return [raw / f for f in t["file"][mask]]


def load_truth(truth_dir, arm=None):
    """Load the truth written by the simulator.

    Parameters
    ----------
    truth_dir : str or Path
        The ``truth`` folder (or the simulation's output folder holding it).
    arm : str, optional
        Return that arm's :class:`ArmTruth` (``load_truth(d, "VIS").optics.xy(...)``).

    Returns
    -------
    Truth or ArmTruth
    """
    truth_dir = Path(truth_dir)
    if not (truth_dir / MANIFEST).exists() and (truth_dir / "truth" / MANIFEST).exists():
        truth_dir = truth_dir / "truth"
    t = Truth(truth_dir)
    return t.arm(arm) if arm else t
