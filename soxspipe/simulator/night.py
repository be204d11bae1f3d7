"""A night of simulated SOXS spectroscopy: what is taken, when, and writing it.

:func:`plan_calibrations` and :func:`plan_science` list the exposures of one arm
(:class:`Exposure`); :func:`plan_blocks` gives the spectroscopic OBs as every arm
and the acquisition camera share them (:class:`ObservingBlock`: a flux standard,
science in stare, nodding and offset mode, a telluric standard; each opens with
a slot for its acquisition images). :class:`ArmSimulator` renders, reads out and
writes the exposures, with the arm's truth. The public entry points are in
``soxspipe.simulator``.
"""

import json
import logging
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from astropy.time import Time

from ..commonutils.detectors import ARMS, detector
from . import spectra
from .detector import SimulatedDetector
from .header import raw_header, sky_position, write_raw
from .optics import PINHOLE_POSITIONS, static_model
from .render import SceneRenderer, fine_grid, line_spectrum, slit_transmission
from .truth import binning_tag, write_optics, write_table

log = logging.getLogger(__name__)

SCENARIOS = ("nominal", "flexure", "extreme")
SIZES = ("small", "full")
# read-out and setup overhead between exposures (s)
_OVERHEAD = {"VIS": 45.0, "NIR": 10.0}
# NIR frames start this much later than VIS ones of the same template, so names never collide
_ARM_DELAY = {"VIS": 0.0, "NIR": 1.5}
SCIENCE_SLIT = 1.0
#: scale of the telluric model's water-vapour absorption through the night
WATER_VAPOUR_SCALE = 1.0
CAL_KINDS = ("bias", "dark", "pinhole_arc", "pinhole_flat", "slit_flat", "multipinhole_arc")


@dataclass
class Exposure:
    """One planned exposure of a spectroscopic arm."""

    arm: str
    kind: str
    dpr: tuple
    exptime: float
    mjd: float = 0.0
    binning: tuple = (1, 1)
    readout: str = "slow"
    slit: str = None
    lamps: tuple = ()
    scene: dict = field(default_factory=dict)
    header: dict = field(default_factory=dict)
    compression: str = None


def _template(exposures, start_mjd, obs_id, obs_name, tpl_id):
    """Time the exposures of one template in sequence and fill their template keywords.

    Returns the MJD at which the template ends.
    """
    mjd = start_mjd
    for e in exposures:
        e.mjd = mjd + _ARM_DELAY[e.arm] / 86400.0
        mjd += (e.exptime + _OVERHEAD[e.arm]) / 86400.0
    _template_keywords(exposures, obs_id, obs_name, tpl_id, None)
    return mjd


def _with_lamp_off(arm, exposures):
    """NIR lamp frames come in pairs: add a lamp-off partner after every lamp-on frame."""
    if not detector(arm).lamp_off_pairs:
        return exposures
    out = []
    for e in exposures:
        out.append(e)
        if e.lamps:
            out.append(replace(e, lamps=(), scene={"type": "dark"}, header=dict(e.header)))
    return out


def plan_calibrations(arm, start_mjd, obs_id, *, binning=(1, 1), readout="slow", size="small",
                      dark_exptimes=(), kinds=None):
    """Plan one arm's calibration sets; returns ``(exposures, next_obs_id, end_mjd)``.

    Parameters
    ----------
    arm : str
        'VIS' or 'NIR'.
    start_mjd : float
    obs_id : int
        First OB id to use (each set is its own OB).
    binning, readout : see :class:`Exposure`
    size : str
        'small' (the minimum number of frames per set) or 'full'.
    dark_exptimes : sequence of float
        Exposure times that need darks (NIR: those of the science frames).
    kinds : sequence of str, optional
        Subset of :data:`CAL_KINDS` to plan (default: all that apply to the arm).
    """
    det = detector(arm)
    n_bias, n_dark, n_flat = (5, 3, 5) if size == "small" else (10, 5, 5)
    kinds = set(kinds or CAL_KINDS)
    slit_key = f"SLIT{SCIENCE_SLIT:.1f}"
    common = {"binning": tuple(binning), "readout": readout}
    sets = []  # (exposures, obs_name, tpl_id)
    if "bias" in kinds and det.has_bias:
        sets.append(([Exposure(arm, "bias", ("CALIB", "BIAS", "IMAGE"), 0.0, scene={"type": "dark"}, **common)
                      for _ in range(n_bias)], "Bias", "SOXS_gen_cal_Bias"))
    if "dark" in kinds and not det.has_bias:
        for t in sorted(set(float(x) for x in dark_exptimes)):
            sets.append(([Exposure(arm, "dark", ("CALIB", "DARK", "IMAGE"), t, scene={"type": "dark"}, **common)
                          for _ in range(n_dark)], f"Dark {t:.0f}s", "SOXS_gen_cal_Dark"))
    flat_lamps = ("QTH", "D2") if arm == "VIS" else ("QTH",)
    arc_lamps = spectra.ARC_LAMPS[arm]
    arc_t, flat_t = (15.0, 10.0) if arm == "VIS" else (20.0, 15.0)
    if "pinhole_arc" in kinds:
        sets.append(([Exposure(arm, "pinhole_arc", ("CALIB", "LAMP,WAVE", "ECHELLE,PINHOLE"), arc_t,
                               slit="PINHOLE", lamps=arc_lamps, scene={"type": "arc", "pinholes": "single"},
                               **common)], "Single-pinhole arc", "SOXS_spec_cal_Arc"))
    if "pinhole_flat" in kinds:
        sets.append(([Exposure(arm, "pinhole_flat", ("CALIB", "LAMP,ORDERDEF", "ECHELLE,PINHOLE"), flat_t,
                               slit="PINHOLE", lamps=flat_lamps,
                               scene={"type": "flat", "lamps": flat_lamps, "slit_width": None}, **common)],
                     "Single-pinhole flat", "SOXS_spec_cal_OrderDef"))
    if "slit_flat" in kinds:
        flats = []
        for lamp in flat_lamps:
            dpr_type = {"QTH": "LAMP,QFLAT", "D2": "LAMP,DFLAT"}[lamp] if arm == "VIS" else "LAMP,FLAT"
            flats += [Exposure(arm, "slit_flat", ("CALIB", dpr_type, "ECHELLE,SLIT"), flat_t, slit=slit_key,
                               lamps=(lamp,), scene={"type": "flat", "lamps": (lamp,), "slit_width": SCIENCE_SLIT},
                               **common) for _ in range(n_flat)]
        sets.append((flats, "Slit flats", "SOXS_spec_cal_Flat"))
    if "multipinhole_arc" in kinds:
        sets.append(([Exposure(arm, "multipinhole_arc", ("CALIB", "LAMP,WAVE", "ECHELLE,MULTI-PINHOLE"), arc_t,
                               slit="MULTIPIN", lamps=arc_lamps, scene={"type": "arc", "pinholes": "multi"},
                               **common)], "Multi-pinhole arc", "SOXS_spec_cal_MultiPinhole"))
    out, mjd = [], start_mjd
    for exposures, name, tpl in sets:
        exposures = _with_lamp_off(arm, exposures)
        mjd = _template(exposures, mjd, obs_id, name, tpl) + 60.0 / 86400.0
        obs_id += 1
        out += exposures
    return out, obs_id, mjd


# Targets of the night's spectroscopic OBs: name -> (RA, Dec) in degrees
TELLURIC_STAR = "TELLSTD-1"
TARGETS = {
    "LTT3218": (131.0, -32.63),
    "GAL-A": (120.5, -30.1),
    "GAL-B": (135.2, -25.4),
    "GAL-C": (150.3, -28.8),
    # a hot star near the meridian at ~41 deg zenith distance when it is observed: airmass ~1.33,
    # 0.15-0.4 above that of the science targets, which are observed close to the zenith
    TELLURIC_STAR: (131.5, -70.5),
}
#: V magnitude (AB, through the bundled Johnson V curve) and temperature of the telluric standard
TELLURIC_V, TELLURIC_TEMPERATURE = 11.5, 15000.0
#: the stare target is observed in this seeing (arcsec), wider than the 1" slit
STARE_SEEING = 1.2
#: the spectroscopic OBs start this long (days) after local noon (night_mjd): about 23:30 local time
SCIENCE_START = 0.48
FIRST_SCIENCE_OB = 100
#: filters of the acquisition images at the start of every spectroscopic OB, per night size
ACQ_FILTERS = {"small": ("r",), "full": ("g", "r", "i", "z")}
#: longest acquisition exposure, and the camera's time per frame and for centring (s)
ACQ_MAX_EXPTIME, ACQ_OVERHEAD, ACQ_CENTRING = 60.0, 5.0, 30.0
ACQ_TPL_ID = "SOXS_spec_acq"


def acquisition_filters(size):
    """Filters of the acquisition images of each spectroscopic OB in a night of ``size``."""
    return ACQ_FILTERS["small" if size == "small" else "full"]


@dataclass
class ObservingBlock:
    """One spectroscopic OB as both arms and the acquisition camera see it.

    The acquisition images are taken from ``start_mjd`` (the OB's start) for at most
    ``acquisition_s`` seconds; the spectrograph's template follows. ``exposures`` are
    arm-less :class:`Exposure` templates timed for the arm without delay.
    """

    obs_id: int
    name: str
    tpl_id: str
    target: str
    start_mjd: float
    acquisition_s: float
    exposures: list

    @property
    def scene(self):
        """Scene of the first exposure with the target in the slit."""
        return next(e.scene for e in self.exposures if e.scene.get("object"))

    @property
    def seeing(self):
        """Seeing FWHM (arcsec) at the OB's start."""
        return self.exposures[0].scene["seeing"]


def plan_blocks(start_mjd, obs_id, *, size="small", scenario="nominal", rng=None):
    """Plan the night's spectroscopic OBs: flux standard, science (stare, nodding, offset), telluric standard.

    Returns ``(blocks, next_obs_id, end_mjd)``. ``rng`` draws the jitter and seeing;
    seeded the same, it gives every arm and the acquisition camera the same OBs.
    """
    rng = rng or np.random.default_rng(0)
    stare_n, nod_cycles, offset_n = (1, 1, 2) if size == "small" else (2, 2, 4)
    mag = 21.5 if scenario == "extreme" else 18.0
    slit = f"SLIT{SCIENCE_SLIT:.1f}"
    acquisition_s = len(acquisition_filters(size)) * (ACQ_MAX_EXPTIME + ACQ_OVERHEAD) + ACQ_CENTRING
    obs = []  # (exposures, obs_name, tpl_id, target)

    def exposure(kind, dpr, t, target, scene, header=None, seeing=None):
        ra, dec = TARGETS[target]
        drawn = float(rng.uniform(0.7, 1.1))
        scene = dict(scene, target=target, seeing=drawn if seeing is None else seeing)
        head = {"ra": ra, "dec": dec, "seeing_start": round(scene["seeing"], 3),
                "seeing_end": round(scene["seeing"], 3)}
        head.update(header or {})
        return Exposure(None, kind, dpr, t, slit=slit, scene=scene, header=head)

    std = [exposure("flux_standard", ("CALIB", "STD,FLUX", "ECHELLE,SLIT,STARE"), 120.0, "LTT3218",
                    {"type": "sky", "object": "standard", "position": 0.0})]
    obs.append((std, "Flux standard LTT3218", "SOXS_spec_cal_FluxStd", "LTT3218"))
    stare = [exposure("science", ("SCIENCE", "OBJECT", "ECHELLE,SLIT,STARE"), 600.0, "GAL-A",
                      {"type": "sky", "object": "galaxy", "position": 0.0, "mag": mag}, seeing=STARE_SEEING)
             for _ in range(stare_n)]
    obs.append((stare, "GAL-A stare", "SOXS_spec_obs_Stare", "GAL-A"))
    throw, jitter = 5.0, 1.0
    nod = []
    for _ in range(nod_cycles):
        for ab in "ABBA":
            offset = (throw / 2 if ab == "A" else -throw / 2) + float(rng.uniform(-jitter / 2, jitter / 2))
            nod.append(exposure("science", ("SCIENCE", "OBJECT", "ECHELLE,SLIT,NODDING"), 300.0, "GAL-B",
                                {"type": "sky", "object": "galaxy", "position": offset, "mag": mag},
                                {"nod_cumoff_y": round(offset, 3), "nod_throw": throw, "jitter_width": jitter}))
    obs.append((nod, "GAL-B nodding", "SOXS_spec_obs_Nodding", "GAL-B"))
    off = []
    for i in range(offset_n):
        on_target = i % 4 in (0, 3)
        fix = (0.0, 0.0) if on_target else (30.0, -30.0)
        off.append(exposure("science", ("SCIENCE", "OBJECT", "ECHELLE,SLIT,OFFSET"), 300.0, "GAL-C",
                            {"type": "sky", "object": "galaxy" if on_target else None, "position": 0.0, "mag": mag},
                            {"fixoff_ra": fix[0], "fixoff_dec": fix[1]}))
    obs.append((off, "GAL-C offset", "SOXS_spec_obs_Offset", "GAL-C"))
    # the same exposure time as the flux standard: the NIR darks of the night serve it too
    tell = [exposure("telluric_standard", ("CALIB", "STD,TELLURIC", "ECHELLE,SLIT,STARE"), 120.0, TELLURIC_STAR,
                     {"type": "sky", "object": "telluric", "position": 0.0, "mag": TELLURIC_V,
                      "temperature": TELLURIC_TEMPERATURE})]
    obs.append((tell, f"Telluric standard {TELLURIC_STAR}", "SOXS_spec_cal_TelluricStd", TELLURIC_STAR))
    blocks, mjd = [], start_mjd
    for exposures, name, tpl, target in obs:
        start = mjd
        mjd += acquisition_s / 86400.0
        # both arms share the OB's timing: the slower VIS overhead sets it
        for e in exposures:
            e.mjd = mjd
            mjd += (e.exptime + _OVERHEAD["VIS"]) / 86400.0
        blocks.append(ObservingBlock(obs_id, name, tpl, target, start, acquisition_s, exposures))
        mjd += 300.0 / 86400.0
        obs_id += 1
    return blocks, obs_id, mjd


def science_blocks(night, seed, scenario, size):
    """The spectroscopic OBs of a simulated night (the same for every arm): ``(blocks, next_obs_id, end_mjd)``."""
    return plan_blocks(night_mjd(night) + SCIENCE_START, FIRST_SCIENCE_OB, size=size, scenario=scenario,
                       rng=np.random.default_rng([seed, 3]))


def plan_science(arm, start_mjd, obs_id, *, size="small", scenario="nominal", rng=None):
    """Plan one arm's exposures of the spectroscopic OBs (see :func:`plan_blocks`).

    Returns ``(exposures, next_obs_id, end_mjd)``. Both arms observe the same OBs
    at the same time; ``rng`` draws the jitter and seeing and must be seeded the
    same for both arms.
    """
    blocks, obs_id, mjd = plan_blocks(start_mjd, obs_id, size=size, scenario=scenario, rng=rng)
    out = []
    for b in blocks:
        exposures = [replace(e, arm=arm, mjd=e.mjd + _ARM_DELAY[arm] / 86400.0, scene=dict(e.scene),
                             header=dict(e.header)) for e in b.exposures]
        _template_keywords(exposures, b.obs_id, b.name, b.tpl_id, b.target)
        out += exposures
    return out, obs_id, mjd


def _template_keywords(exposures, obs_id, obs_name, tpl_id, target):
    tpl_start = Time(exposures[0].mjd - _ARM_DELAY[exposures[0].arm] / 86400.0, format="mjd").isot[:19]
    for i, e in enumerate(exposures):
        e.header.update({"obs_id": obs_id, "obs_name": obs_name, "tpl_id": tpl_id, "tpl_start": tpl_start,
                         "tpl_nexp": len(exposures), "tpl_expno": i + 1})
        if target:
            e.header.update({"object": target, "obs_targ_name": target})


def flexure_for(arm, scenario, seed):
    """Flexure (dx, dy px; rotation deg) of ``arm`` in a scenario, drawn from the seed."""
    if scenario == "nominal":
        return 0.0, 0.0, 0.0
    rng = np.random.default_rng([seed, ARMS.index(arm), 7])
    sign = rng.choice([-1.0, 1.0], 3)
    return (float(sign[0] * rng.uniform(1.5, 3.0)), float(sign[1] * rng.uniform(1.5, 3.0)),
            float(sign[2] * rng.uniform(0.03, 0.08)))


class ArmSimulator:
    """Renders, reads out and writes the exposures of one spectroscopic arm, with its truth.

    Parameters
    ----------
    arm : str
    raw_dir, truth_dir : Path
    seed : int
    scenario : str
        'nominal', 'flexure' or 'extreme'.
    """

    def __init__(self, arm, raw_dir, truth_dir, *, seed=0, scenario="nominal"):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario '{scenario}': use one of {', '.join(SCENARIOS)}")
        self.arm = arm
        self.raw_dir, self.truth_dir = Path(raw_dir), Path(truth_dir)
        self.seed, self.scenario = seed, scenario
        self.flexure = flexure_for(arm, scenario, seed)
        self.model = static_model(arm).with_flexure(*self.flexure)
        self._renderers, self._detectors, self._cache = {}, {}, {}
        self._lines_written = set()
        self._spectra_written = set()
        self._count = 0

    def renderer(self, binning, readout):
        key = (tuple(binning), readout)
        if key not in self._renderers:
            self._renderers[key] = SceneRenderer(self.model, binning, readout,
                                                 bright_lines=self.scenario == "extreme")
        return self._renderers[key]

    def detector(self, binning, readout):
        key = (tuple(binning), readout)
        if key not in self._detectors:
            det = SimulatedDetector(self.arm, binning=binning, readout=readout, seed=self.seed,
                                    scenario="extreme" if self.scenario == "extreme" else "nominal")
            det.write_truth(self.truth_dir)
            self._detectors[key] = det
        return self._detectors[key]

    # -- rendering -----------------------------------------------------------------
    def electrons(self, e):
        """Noise-free electron image of exposure ``e`` (None for dark frames)."""
        scene = e.scene
        kind = scene.get("type")
        if kind == "dark":
            return None
        r = self.renderer(e.binning, e.readout)
        tag = binning_tag(e.binning)
        if kind == "flat":
            key = ("flat", e.binning, e.readout, tuple(scene["lamps"]), scene["slit_width"])
            if key not in self._cache:
                self._cache[key] = r.lamp_flat(scene["lamps"], scene["slit_width"])[0]
            return self._cache[key]
        if kind == "arc":
            key = ("arc", e.binning, e.readout, scene["pinholes"])
            if key not in self._cache:
                positions = [0.0] if scene["pinholes"] == "single" else PINHOLE_POSITIONS[self.arm]
                image, lines = r.arc(positions)
                self._cache[key] = image
                self._write_lines(f"{e.kind}_{tag}", lines, {"lamps": list(e.lamps)})
            return self._cache[key]
        if kind == "sky":
            return self._sky_and_target(e, r)
        raise ValueError(f"unknown scene {kind!r}")

    def _sky_and_target(self, e, r):
        scene = e.scene
        key = ("sky", e.binning, e.readout, SCIENCE_SLIT)
        if key not in self._cache:
            image, lines = r.sky(SCIENCE_SLIT, 1.0)
            self._cache[key] = image
            self._write_lines(f"sky_{binning_tag(e.binning)}", lines,
                              {"units": "electrons per second per arcsec of slit"})
        image = self._cache[key] * np.float32(e.exptime)
        if scene.get("object") is None:
            return image
        ra, dec = e.header["ra"], e.header["dec"]
        airmass = sky_position(ra, dec, e.mjd + e.exptime / 172800.0)[3]
        toa = spectra.source_flux(scene)

        def photons(o, wl):
            return (spectra.photon_rate(wl, toa(wl)) * 10 ** (-0.4 * spectra.extinction(wl) * airmass)
                    * spectra.telluric(wl, airmass, WATER_VAPOUR_SCALE) * spectra.efficiency(self.arm, o, wl)
                    * e.exptime)

        obj, _ = r.point_source(photons, scene["position"], scene["seeing"], SCIENCE_SLIT)
        self._write_spectrum(e, toa, airmass)
        return image + obj

    # -- truth -------------------------------------------------------------------------
    def _write_lines(self, name, lines, meta):
        if name in self._lines_written:
            return
        write_table(self.truth_dir / f"lines_{self.arm}_{name}.ecsv", lines,
                    dict(meta, arm=self.arm, coordinates="prepared frame, 0-based, at the frame's binning"))
        self._lines_written.add(name)

    def _write_spectrum(self, e, toa, airmass):
        target = e.scene["target"]
        if target in self._spectra_written:
            return
        lo, hi = spectra.arm_range(self.arm)
        step = min(float(np.diff(fine_grid(self.model, o, e.binning, 1)).min()) for o in self.model.orders)
        wl = np.arange(lo, hi, step)
        r = spectra.resolution(self.arm, SCIENCE_SLIT)
        lines = spectra.sky_lines(self.arm)
        sky = spectra.sky_continuum(wl) + line_spectrum(wl, np.asarray(lines["wavelength"]),
                                                        np.asarray(lines["flux"]),
                                                        np.asarray(lines["wavelength"]) / r / 2.3548)
        h2o, o2 = spectra.telluric_parts(wl, airmass, WATER_VAPOUR_SCALE)
        cols = {"wavelength": wl, "toa_flux": toa(wl), "toa_photons": spectra.photon_rate(wl, toa(wl)),
                "sky_photons": sky, "telluric": h2o * o2, "telluric_h2o": h2o, "telluric_o2": o2,
                "extinction": spectra.extinction(wl)}
        meta = {"arm": self.arm, "target": target, "kind": e.kind, "obs_id": int(e.header["obs_id"]),
                "ra": e.header["ra"], "dec": e.header["dec"], "airmass": airmass, "seeing_fwhm": e.scene["seeing"],
                "slit_width": SCIENCE_SLIT, "slit_transmission": slit_transmission(e.scene["seeing"], SCIENCE_SLIT),
                "water_vapour_scale": WATER_VAPOUR_SCALE,
                "ab_magnitudes": spectra.ab_magnitudes(toa),
                "units": {"wavelength": "nm", "toa_flux": "erg/s/cm2/Angstrom",
                          "toa_photons": "photons/s/nm over the telescope area",
                          "sky_photons": "photons/s/cm2/nm/arcsec2 (lines at the slit's resolution)",
                          "telluric": "transmission", "telluric_h2o": "transmission",
                          "telluric_o2": "transmission", "extinction": "mag/airmass",
                          "ab_magnitudes": "AB mag of toa_flux through the bundled filter curves"},
                "note": "electrons/s/nm in order o = toa_photons * 10**(-0.4 extinction airmass) * telluric "
                        "* efficiency(o) * slit_transmission; airmass and seeing of the first exposure. "
                        "telluric = telluric_h2o * telluric_o2 (water vapour; O2 with the other well-mixed "
                        "gases); each part at airmass X is its value here to the power X / airmass"}
        if e.scene["object"] == "telluric":
            meta.update({"v_mag_ab": e.scene["mag"], "temperature_K": e.scene["temperature"]})
        write_table(self.truth_dir / f"spectrum_{self.arm}_{target}.ecsv", cols, meta)
        self._spectra_written.add(target)

    def write_static_truth(self, binnings):
        """Optical model, order edges and efficiency of the arm."""
        write_optics(self.truth_dir, self.model, binnings)
        cols = {"order": [], "wavelength": [], "efficiency": []}
        for o in self.model.orders:
            wl = np.linspace(*self.model.wl_range[o], 500)
            cols["order"].append(np.full(wl.size, o))
            cols["wavelength"].append(wl)
            cols["efficiency"].append(spectra.efficiency(self.arm, o, wl))
        write_table(self.truth_dir / f"efficiency_{self.arm}.ecsv", {k: np.concatenate(v) for k, v in cols.items()},
                    {"arm": self.arm, "description": "telescope + instrument + detector, per order"})

    # -- writing -----------------------------------------------------------------------
    def write(self, e, names):
        """Render, read out and write exposure ``e``; returns its manifest row."""
        det = self.detector(e.binning, e.readout)
        electrons = self.electrons(e)
        rng = np.random.default_rng([self.seed, ARMS.index(self.arm), self._count, 11])
        self._count += 1
        raw = det.read_out(electrons, e.exptime, rng)
        header = raw_header(self.arm, *e.dpr, mjd=e.mjd, exptime=e.exptime, binning=e.binning,
                            readout=e.readout, slit=e.slit, lamps=e.lamps, extra=e.header)
        name = _unique_name(e.mjd, names, e.compression)
        write_raw(self.raw_dir / name, raw, header, e.compression)
        return {"file": name, "arm": self.arm, "kind": e.kind, "dpr_catg": e.dpr[0], "dpr_type": e.dpr[1],
                "dpr_tech": e.dpr[2], "tag": f"{e.dpr[1]}_{self.arm}", "exptime": float(e.exptime),
                "obs_id": int(e.header["obs_id"]), "binning": binning_tag(e.binning), "readout": det.mode,
                "slit": e.slit or "", "lamps": ",".join(e.lamps), "mjd_obs": float(e.mjd),
                "target": e.scene.get("target", "") if e.scene.get("object") else "",
                "nod_cumoff_y": e.header.get("nod_cumoff_y"),
                "object_position": e.scene.get("position") if e.scene.get("object") else None}


def _unique_name(mjd, names, compression):
    """``SOXS.<DATE-OBS>.fits[.gz|.fz]``, moved on by a millisecond if the name is taken."""
    t = Time(mjd, format="mjd", scale="utc")
    while True:
        stem = f"SOXS.{t.isot[:23]}"
        if stem not in names:
            names.add(stem)
            return stem + ".fits" + {None: "", "gz": ".gz", "fz": ".fz"}[compression]
        t = t + 0.001 / 86400.0


def night_mjd(night):
    """MJD of local noon on the day the night ``YYYY-MM-DD`` starts (La Silla, UTC-4)."""
    return Time(f"{night}T16:00:00", scale="utc").mjd


def simulate_arm(arm, raw_dir, truth_dir, *, night, seed, scenario, size, calibrations_only=False,
                 binning=(1, 1), readout="slow", kinds=None, names=None):
    """Plan and write everything of one spectroscopic arm; returns the manifest rows."""
    base = night_mjd(night)
    sim = ArmSimulator(arm, raw_dir, truth_dir, seed=seed, scenario=scenario)
    exposures = []
    obs_id = 1000 * (ARMS.index(arm) + 1) + (0 if tuple(binning) == (1, 1) else 500)
    if not calibrations_only:
        # the same seed for both arms: the same seeing and jitter in simultaneous exposures
        sci, obs_id, _ = plan_science(arm, base + SCIENCE_START, FIRST_SCIENCE_OB, size=size, scenario=scenario,
                                      rng=np.random.default_rng([seed, 3]))
        exposures += sci
    science_times = sorted({e.exptime for e in exposures}) or [300.0]
    cal, obs_id, _ = plan_calibrations(arm, base + 0.75, obs_id, binning=binning, readout=readout, size=size,
                                       dark_exptimes=science_times, kinds=kinds)
    exposures = cal + exposures
    if not calibrations_only and exposures:
        # exercise the compressed-file readers: one gzipped and one tile-compressed frame
        exposures[0].compression = "gz"
        exposures[1].compression = "fz"
        exposures[-1].compression = "gz"
    sim.write_static_truth([tuple(binning)])
    names = set() if names is None else names
    rows = [sim.write(e, names) for e in exposures]
    log.info("%s: wrote %d raw frames", arm, len(rows))
    return rows, {"flexure": dict(zip(("dx", "dy", "rotation_deg"), sim.flexure))}


def write_night_json(truth_dir, info):
    """Write ``night.json`` (seed, scenario, per-arm flexure, ...)."""
    (Path(truth_dir) / "night.json").write_text(json.dumps(info, indent=1, default=float))
