"""Classify frames from their headers, as the raw-frame contract says.

:func:`classify_header` turns a header into a :class:`FrameInfo`: arm, frame
kind (from ``frame_types.yaml``), tag, binning, read-out mode, exposure time,
slit and lamps. Products (frames with ``ESO PRO CATG``) are recognised and
tagged with their product category.
"""

from dataclasses import dataclass, field

from ..static_calibrations import load_yaml
from .detectors import ARMS, detector
from .errors import DataError
from .keywords import has_keyword, header_value, keyword

#: Frame kinds taken with a lamp on; NIR frames of these kinds with no lamp keyword are lamp-off partners.
LAMP_KINDS = ("pinhole_arc", "pinhole_flat", "slit_flat", "multipinhole_arc")


@dataclass
class FrameInfo:
    """What a frame is, read from its header."""

    path: str
    arm: str
    kind: str
    tag: str
    catg: str = ""
    type: str = ""
    tech: str = ""
    binning: tuple = (1, 1)
    readout: str = "default"
    exptime: float | None = None
    mjd: float | None = None
    slit: str | None = None
    lamps: tuple = ()
    acq_filter: str | None = None
    obs_id: int | None = None
    tpl_start: str | None = None
    is_product: bool = False
    recipe: str | None = None
    extra: dict = field(default_factory=dict)

    @property
    def lamp_off(self):
        """True for a lamp frame taken with no lamp on (NIR on/off partner)."""
        return self.kind in LAMP_KINDS and not self.lamps


def frame_arm(header, path=""):
    """Return the arm of a frame ('VIS', 'NIR' or 'ACQ'), or raise :class:`DataError`."""
    arm = header_value(header, "arm", None)
    if arm is None and str(header_value(header, "acq_cam_name", "")).strip().upper() == "ACQ":
        arm = "ACQ"
    if arm is None:
        raise DataError(f"{path}: no arm keyword ({keyword('arm')} or {keyword('acq_cam_name')}); is this a SOXS frame?")
    arm = str(arm).strip().upper()
    if arm not in ARMS:
        raise DataError(f"{path}: unknown arm '{arm}' (expected one of {', '.join(ARMS)})")
    return arm


def frame_exptime(header):
    """Exposure time in seconds; acquisition frames may keep it in the camera's own keyword."""
    value = header_value(header, "exptime", None)
    if value is None:
        value = header_value(header, "acq_exptime", None)
    return None if value is None else float(value)


def frame_lamps(header):
    """Names of the lamps that were on (their keyword is present)."""
    lamp_keys = load_yaml("frame_types.yaml")["lamps"]
    return tuple(name for name, key in lamp_keys.items() if has_keyword(header, key))


def match_kind(arm, catg, dpr_type, tech):
    """Return ``(kind, recipe)`` for a DPR CATG/TYPE/TECH combination on ``arm``, or ``(None, None)``."""
    for kind, spec in load_yaml("frame_types.yaml")["kinds"].items():
        if arm in spec["arms"] and catg in spec["catg"] and dpr_type in spec["type"] and tech in spec["tech"]:
            recipe = spec["recipe"]
            if isinstance(recipe, dict):
                recipe = recipe.get(tech)
            return kind, recipe
    return None, None


def classify_header(header, path=""):
    """Classify one frame from its header.

    Parameters
    ----------
    header : astropy.io.fits.Header
        The header of the HDU holding the image (see :func:`fitsio.read_header`).
    path : str
        The file's path, used in error messages and kept in the result.

    Returns
    -------
    FrameInfo

    Raises
    ------
    DataError
        The frame has no arm, no DPR keywords, or a combination no SOXS frame has.
    """
    arm = frame_arm(header, path)
    det = detector(arm)
    binning = (int(header_value(header, "binx", 1)), int(header_value(header, "biny", 1)))
    readout = det.readout_mode(header_value(header, "read_speed_id", None))
    slit_key = {"VIS": "slit_vis", "NIR": "slit_nir"}.get(arm)
    common = dict(
        path=str(path),
        arm=arm,
        binning=binning,
        readout=readout,
        exptime=frame_exptime(header),
        mjd=header_value(header, "mjd_obs", None),
        slit=header_value(header, slit_key, None) if slit_key else None,
        lamps=frame_lamps(header),
        acq_filter=header_value(header, "acq_filter", None),
        obs_id=header_value(header, "obs_id", None),
        tpl_start=header_value(header, "tpl_start", None),
    )
    pro_catg = header_value(header, "pro_catg", None)
    if pro_catg is not None:
        return FrameInfo(kind="product", tag=str(pro_catg).strip(), is_product=True, **common)

    dpr = [header_value(header, k, None) for k in ("dpr_catg", "dpr_type", "dpr_tech")]
    if any(v is None for v in dpr):
        raise DataError(f"{path}: no DPR CATG/TYPE/TECH keywords, so the frame cannot be classified; is it a raw SOXS frame?")
    catg, dpr_type, tech = (str(v).strip().upper() for v in dpr)
    kind, recipe = match_kind(arm, catg, dpr_type, tech)
    if kind is None:
        raise DataError(f"{path}: DPR CATG/TYPE/TECH = {catg}/{dpr_type}/{tech} is not a {arm} frame type soxspipe knows")
    return FrameInfo(kind=kind, tag=f"{dpr_type}_{arm}", catg=catg, type=dpr_type, tech=tech, recipe=recipe, **common)
