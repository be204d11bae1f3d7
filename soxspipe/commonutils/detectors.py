"""Detector parameters of each SOXS arm, from the bundled ``detectors.yaml``.

Every difference between the arms' detectors lives in that file; code asks
``detector("VIS")`` for a :class:`Detector` and never tests the arm's name.
"""

from dataclasses import dataclass

from ..static_calibrations import load_yaml

ARMS = ("VIS", "NIR", "ACQ")


@dataclass(frozen=True)
class Detector:
    """Static description of one arm's detector at 1x1 binning (pixels 0-based, end-exclusive)."""

    arm: str
    raw_shape_xy: tuple
    science_x: tuple
    science_y: tuple
    prescan_x: tuple | None
    overscan_x: tuple | None
    raw_dtype: str
    gain_e_per_adu: dict
    read_noise_e: dict
    read_speed_ids: dict
    saturation_adu: float
    dark_current_e_per_s: float
    pixel_scale_arcsec: float
    dispersion_axis: str | None
    slit_length_arcsec: float | None
    binnings: tuple
    has_bias: bool
    lamp_off_pairs: bool
    extra: dict

    def _binned(self, rng, factor):
        return (rng[0] // factor, rng[1] // factor) if rng is not None else None

    def science_region(self, binning=(1, 1)):
        """Return ``(x0, x1, y0, y1)`` of the science pixels in a raw frame binned ``(binx, biny)``."""
        bx, by = binning
        x0, x1 = self._binned(self.science_x, bx)
        y0, y1 = self._binned(self.science_y, by)
        return x0, x1, y0, y1

    def overscan_region(self, binning=(1, 1)):
        """Return ``(x0, x1)`` of the overscan columns at this binning, or None."""
        return self._binned(self.overscan_x, binning[0])

    def prescan_region(self, binning=(1, 1)):
        """Return ``(x0, x1)`` of the prescan columns at this binning, or None."""
        return self._binned(self.prescan_x, binning[0])

    def raw_shape(self, binning=(1, 1)):
        """Return the raw frame's numpy shape ``(ny, nx)`` at this binning."""
        return (self.raw_shape_xy[1] // binning[1], self.raw_shape_xy[0] // binning[0])

    def readout_mode(self, speed_id=None):
        """Return the read-out mode name ('slow', 'fast' or 'default') for a header speed id."""
        if not self.read_speed_ids:
            return "default"
        if speed_id is None:
            return next(iter(self.read_speed_ids.values()))
        try:
            return self.read_speed_ids[int(speed_id)]
        except (KeyError, ValueError):
            raise ValueError(f"unknown {self.arm} read-out speed id {speed_id!r}") from None

    def gain(self, mode="default"):
        """Static gain in e/ADU for a read-out mode."""
        return float(self.gain_e_per_adu.get(mode, next(iter(self.gain_e_per_adu.values()))))

    def read_noise(self, mode="default"):
        """Static read noise in electrons for a read-out mode."""
        return float(self.read_noise_e.get(mode, next(iter(self.read_noise_e.values()))))


_FIELDS = set(Detector.__dataclass_fields__) - {"arm", "extra"}


def detector(arm):
    """Return the :class:`Detector` of ``arm`` ('VIS', 'NIR' or 'ACQ')."""
    table = load_yaml("detectors.yaml")
    if arm not in table:
        raise ValueError(f"unknown arm '{arm}': SOXS arms are {', '.join(ARMS)}")
    spec = dict(table[arm])
    fields = {k: spec.pop(k) for k in list(spec) if k in _FIELDS}
    for key in ("raw_shape_xy", "science_x", "science_y", "prescan_x", "overscan_x"):
        if fields[key] is not None:
            fields[key] = tuple(fields[key])
    fields["binnings"] = tuple(tuple(b) for b in fields["binnings"])
    return Detector(arm=arm, extra=spec, **fields)
