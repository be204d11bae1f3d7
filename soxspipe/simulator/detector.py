"""A simulated SOXS detector: turns a noise-free electron image into a raw frame.

:class:`SimulatedDetector` holds the fixed patterns of one arm's detector for a
night (bias level and column pattern, hot pixels, bad pixels and columns,
pixel-to-pixel response), drawn from a seed so that the same seed always gives
the same detector. :meth:`SimulatedDetector.read_out` adds what changes from
frame to frame (photon and read noise, cosmic rays, the row-wise bias drift
that the overscan tracks) and returns the raw frame in the layout and dtype of
the raw-frame contract.

The fixed patterns are drawn at 1x1 binning and binned, so that the detector
seen at 2x1 is the same CCD as at 1x1. Positions in the truth are 0-based
``(x, y)`` in the prepared (trimmed) frame at the detector's binning.
"""

import json
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from astropy.io import fits

from ..commonutils.detectors import ARMS, detector

log = logging.getLogger(__name__)

#: Cosmic-ray hits per second per cm^2 of detector (``nominal``; ``extreme`` multiplies it).
COSMIC_RATE = 0.02
#: Number of reference pixels along each edge of the NIR detector (they see no light).
_NIR_REFERENCE = 4


@dataclass(frozen=True)
class _Recipe:
    """How the simulator draws one arm's detector (simulation choices, not instrument facts)."""

    bias_level_adu: dict  # read-out mode -> (low, high) of the uniform draw; empty: no bias
    column_pattern_adu: float  # rms of the fixed column-to-column bias pattern
    row_drift_adu: float  # amplitude of the smooth row-wise bias drift of one frame
    frame_offset_adu: float  # rms of the frame-to-frame bias offset
    hot_fraction: float
    hot_rate_e_per_s: tuple  # log-uniform range of the hot pixels' dark rates
    dead_fraction: float
    cosmic_scale: float  # the NIR ramp fit rejects most hits
    response_rms: float = 0.01


_RECIPES = {
    "VIS": _Recipe({"slow": (1400.0, 1800.0), "fast": (1000.0, 1300.0)}, 1.5, 1.0, 1.5, 2e-5, (0.02, 2.0), 1e-4, 1.0),
    "NIR": _Recipe({}, 0.0, 0.0, 0.0, 1e-3, (0.05, 5.0), 2e-4, 0.3),
    "ACQ": _Recipe({"default": (900.0, 1100.0)}, 0.8, 0.0, 0.5, 2e-4, (0.02, 2.0), 1e-4, 1.0),
}

#: What ``extreme`` changes: more dead pixels, bad columns and heavy cosmic rays.
_EXTREME = {"dead_factor": 10.0, "bad_columns": (4, 8), "cosmic_factor": 5.0}
SCENARIOS = ("nominal", "extreme")


def _bin_sum(image, binning):
    """Sum ``image`` (ny, nx) over ``(bx, by)`` blocks (sizes divide exactly)."""
    bx, by = binning
    ny, nx = image.shape
    return image.reshape(ny // by, by, nx // bx, bx).sum(axis=(1, 3))


class SimulatedDetector:
    """The detector of one SOXS arm for one night, with fixed, seeded patterns.

    Parameters
    ----------
    arm : str
        'VIS', 'NIR' or 'ACQ'.
    binning : tuple of int
        ``(binx, biny)``; must be one of the arm's binnings.
    readout : str
        'slow' or 'fast' for VIS; the other arms have one mode and ignore it.
    seed : int
        Seeds the fixed patterns (the same seed gives the same detector) and the
        detector's own stream of frame noise.
    scenario : str
        'nominal' or 'extreme' (more bad pixels, bad columns, heavy cosmic rays).

    Attributes
    ----------
    gain, read_noise : float
        e/ADU and electrons of the read-out mode (``mode``).
    response : numpy.ndarray
        Pixel-to-pixel response of the science region (float32, ~1 % rms).
    bad_pixel_mask : numpy.ndarray
        True where a pixel is dead or in a bad column.
    hot_pixel_map, dark_rate : numpy.ndarray
        Hot pixels' extra dark current, and the whole dark current (e/s per binned pixel).
    last_row_bias : numpy.ndarray
        Bias (ADU) per raw row of the last frame read out (arms with a bias).
    last_cosmic_hits, last_cosmic_pixels : int, tuple of arrays
        Cosmic-ray hits of the last frame and the ``(y, x)`` pixels they touched.
    """

    def __init__(self, arm, *, binning=(1, 1), readout="slow", seed=0, scenario="nominal"):
        if scenario not in SCENARIOS:
            raise ValueError(f"unknown scenario '{scenario}': use one of {', '.join(SCENARIOS)}")
        self.det = detector(arm)
        self.arm = arm
        self.binning = tuple(int(b) for b in binning)
        if self.binning not in self.det.binnings:
            raise ValueError(f"{arm} has no binning {self.binning}; it has {list(self.det.binnings)}")
        self.mode = readout if readout in self.det.gain_e_per_adu else "default"
        if self.mode == "default" and self.det.read_speed_ids:
            raise ValueError(f"unknown {arm} read-out '{readout}': use one of {list(self.det.gain_e_per_adu)}")
        self.seed = int(seed)
        self.scenario = scenario
        self.gain = self.det.gain(self.mode)
        self.read_noise = self.det.read_noise(self.mode)
        self.saturation = float(self.det.saturation_adu)
        self.raw_shape = self.det.raw_shape(self.binning)
        x0, x1, y0, y1 = self.det.science_region(self.binning)
        self.science_slice = (slice(y0, y1), slice(x0, x1))
        self.science_shape = (y1 - y0, x1 - x0)
        self._recipe = _RECIPES[arm]
        self.cosmic_rate = COSMIC_RATE * self._recipe.cosmic_scale * (
            _EXTREME["cosmic_factor"] if scenario == "extreme" else 1.0)
        pixel_cm = self.det.extra.get("pixel_size_um", 15.0) * 1e-4
        self._binned_pixel_area_cm2 = pixel_cm**2 * self.binning[0] * self.binning[1]
        self._draw_fixed_patterns()
        arm_code = ARMS.index(arm)
        mode_code = sorted(self.det.gain_e_per_adu).index(self.mode)
        self._frame_rng = np.random.default_rng([self.seed, arm_code, *self.binning, mode_code, 1])
        self.last_cosmic_pixels = (np.empty(0, int), np.empty(0, int))
        self.last_cosmic_hits = 0

    # ------------------------------------------------------------------ fixed patterns
    def _draw_fixed_patterns(self):
        """Draw the night's fixed patterns at 1x1 and bin them to this detector's binning."""
        rec = self._recipe
        rng = np.random.default_rng([self.seed, ARMS.index(self.arm)])
        det = self.det
        ny1 = det.science_y[1] - det.science_y[0]
        nx1 = det.science_x[1] - det.science_x[0]
        nb = self.binning[0] * self.binning[1]

        levels = {mode: float(rng.uniform(*rng_)) for mode, rng_ in sorted(rec.bias_level_adu.items())}
        self.bias_level = levels.get(self.mode, 0.0)
        raw_nx1 = det.raw_shape_xy[0]
        columns1 = rng.normal(0.0, rec.column_pattern_adu, raw_nx1).astype(np.float32)
        self.column_pattern = columns1.reshape(-1, self.binning[0]).mean(axis=1)

        response1 = rng.normal(1.0, rec.response_rms, (ny1, nx1)).astype(np.float32)
        dead_fraction = rec.dead_fraction * (_EXTREME["dead_factor"] if self.scenario == "extreme" else 1.0)
        n_dead = rng.poisson(dead_fraction * ny1 * nx1)
        dead = np.zeros(ny1 * nx1, bool)
        dead[rng.choice(ny1 * nx1, n_dead, replace=False)] = True
        dead = dead.reshape(ny1, nx1)
        response1[dead] = rng.uniform(0.0, 0.2, n_dead).astype(np.float32)

        # bad columns (extreme): a dead stretch from a random row to the top of the detector
        self.bad_columns = []
        if self.scenario == "extreme":
            n_cols = int(rng.integers(*_EXTREME["bad_columns"]))
            for x in rng.choice(nx1, n_cols, replace=False):
                y_start = int(rng.integers(0, ny1 // 2))
                response1[y_start:, x] *= np.float32(0.05)
                dead[y_start:, x] = True
                self.bad_columns.append({"x": int(x) // self.binning[0], "y0": y_start // self.binning[1],
                                         "y1": ny1 // self.binning[1]})

        n_hot = rng.poisson(rec.hot_fraction * ny1 * nx1)
        hot_idx = rng.choice(ny1 * nx1, n_hot, replace=False)
        lo, hi = rec.hot_rate_e_per_s
        hot1 = np.zeros(ny1 * nx1, np.float32)
        hot1[hot_idx] = np.exp(rng.uniform(np.log(lo), np.log(hi), n_hot))
        hot = _bin_sum(hot1.reshape(ny1, nx1), self.binning)

        self.response = (_bin_sum(response1, self.binning) / nb).astype(np.float32)
        self.bad_pixel_mask = _bin_sum(dead.astype(np.uint8), self.binning) > 0
        self.hot_pixel_map = hot.astype(np.float32)
        self.dark_rate = np.float32(det.dark_current_e_per_s * nb) + self.hot_pixel_map

    # ------------------------------------------------------------------ per-frame pieces
    def _cosmics(self, exptime, rng):
        """Electron image of the cosmic-ray hits of one exposure (science region)."""
        ny, nx = self.science_shape
        n = rng.poisson(self.cosmic_rate * exptime * ny * nx * self._binned_pixel_area_cm2)
        self.last_cosmic_hits = int(n)
        if n == 0:
            self.last_cosmic_pixels = (np.empty(0, int), np.empty(0, int))
            return None
        length = np.minimum(1 + rng.exponential(1.5, n).astype(int), 12)
        angle = rng.uniform(0, np.pi, n)
        charge = rng.lognormal(np.log(1500.0), 0.6, n)
        step = np.arange(12)
        x = np.rint(rng.uniform(0, nx, n)[:, None] + step * np.cos(angle)[:, None]).astype(int)
        y = np.rint(rng.uniform(0, ny, n)[:, None] + step * np.sin(angle)[:, None]).astype(int)
        keep = (step < length[:, None]) & (x >= 0) & (x < nx) & (y < ny)
        deposit = np.broadcast_to((charge / length)[:, None], keep.shape)[keep]
        flat = y[keep] * nx + x[keep]
        image = np.bincount(flat, weights=deposit, minlength=ny * nx).reshape(ny, nx)
        self.last_cosmic_pixels = np.unravel_index(np.unique(flat), (ny, nx))
        return image.astype(np.float32)

    def _bias(self, rng):
        """Bias in ADU of one frame: level, fixed column pattern, frame offset, row drift."""
        rec = self._recipe
        ny = self.raw_shape[0]
        rows = np.linspace(0.0, 1.0, ny, dtype=np.float32)
        freq, phase = rng.uniform(0.5, 3.0), rng.uniform(0, 2 * np.pi)
        drift = rec.row_drift_adu * (np.sin(2 * np.pi * freq * rows + phase) + rng.normal(0, 0.5) * rows)
        offset = rng.normal(0.0, rec.frame_offset_adu)
        self.last_row_bias = (self.bias_level + offset + drift).astype(np.float32)
        return self.last_row_bias[:, None] + self.column_pattern[None, :]

    def read_out(self, electrons, exptime, rng=None, cosmics=True):
        """Expose and read out the detector.

        Parameters
        ----------
        electrons : numpy.ndarray, float or None
            Noise-free expected photo-electrons per pixel of the science region
            (the prepared frame's shape at this binning); a scalar or None (no
            light) is allowed.
        exptime : float
            Exposure time in seconds (dark current and cosmic rays).
        rng : numpy.random.Generator, optional
            Noise source; by default the detector's own seeded stream.
        cosmics : bool
            Add cosmic-ray hits.

        Returns
        -------
        numpy.ndarray
            The whole raw frame in the contract's dtype and layout (VIS uint16
            with prescan and overscan, NIR float32 ramp-fitted ADU without bias,
            ACQ uint16), clipped at saturation.
        """
        rng = self._frame_rng if rng is None else rng
        light = np.zeros(self.science_shape, np.float32) if electrons is None else electrons
        light = np.asarray(light, np.float32)
        if light.ndim and light.shape != self.science_shape:
            raise ValueError(f"{self.arm} {self.binning} electrons must have shape {self.science_shape}, got {light.shape}")
        expected = light * self.response + self.dark_rate * np.float32(exptime)
        signal = rng.poisson(np.maximum(expected, 0)).astype(np.float32)
        if cosmics and exptime > 0:
            hits = self._cosmics(exptime, rng)
            if hits is not None:
                signal += hits
        else:
            self.last_cosmic_pixels = (np.empty(0, int), np.empty(0, int))
            self.last_cosmic_hits = 0

        frame = rng.standard_normal(self.raw_shape, dtype=np.float32)
        frame *= np.float32(self.read_noise)
        frame[self.science_slice] += signal
        frame *= np.float32(1.0 / self.gain)
        if self._recipe.bias_level_adu:
            frame += self._bias(rng)
        if np.dtype(self.det.raw_dtype).kind == "u":
            np.clip(frame, 0, min(self.saturation, np.iinfo(self.det.raw_dtype).max), out=frame)
            return np.rint(frame).astype(self.det.raw_dtype)
        np.minimum(frame, np.float32(self.saturation), out=frame)
        return frame.astype(self.det.raw_dtype)

    # ------------------------------------------------------------------ truth
    @property
    def _stem(self):
        bx, by = self.binning
        return f"detector_{self.arm}_{bx}x{by}_{self.mode}"

    def truth(self):
        """Return the detector's truth as a JSON-able dict.

        Gain (e/ADU), read noise (e), bias level (ADU), dark current (e/s per
        binned pixel), hot pixels (prepared-frame ``x``, ``y`` and rate in e/s),
        bad pixels and columns, cosmic-ray rate, saturation, and the names of
        the response and bad-pixel maps :meth:`write_truth` writes.
        """
        hy, hx = np.nonzero(self.hot_pixel_map)
        by_, bx_ = np.nonzero(self.bad_pixel_mask)
        x0, _, y0, _ = self.det.science_region(self.binning)
        return {
            "arm": self.arm,
            "binning": list(self.binning),
            "readout": self.mode,
            "seed": self.seed,
            "scenario": self.scenario,
            "coordinates": "prepared frame, 0-based, x along NAXIS1, at this binning",
            "science_origin_in_raw": [int(x0), int(y0)],
            "gain_e_per_adu": self.gain,
            "read_noise_e": self.read_noise,
            "read_noise_adu": self.read_noise / self.gain,
            "bias_level_adu": self.bias_level,
            "column_pattern_rms_adu": float(np.std(self.column_pattern)),
            "row_drift_adu": self._recipe.row_drift_adu,
            "frame_offset_rms_adu": self._recipe.frame_offset_adu,
            "dark_current_e_per_s": float(self.det.dark_current_e_per_s * self.binning[0] * self.binning[1]),
            "hot_pixels": {"x": hx.tolist(), "y": hy.tolist(),
                           "rate_e_per_s": [round(float(r), 5) for r in self.hot_pixel_map[hy, hx]]},
            "bad_pixels": {"count": int(bx_.size), "x": bx_.tolist(), "y": by_.tolist()},
            "bad_columns": self.bad_columns,
            "bad_pixel_mask_file": f"{self._stem}_badpix.fits",
            "response_file": f"{self._stem}_response.fits",
            "response_rms": float(np.std(self.response[~self.bad_pixel_mask])),
            "cosmic_rate_per_s_per_cm2": self.cosmic_rate,
            "saturation_adu": self.saturation,
        }

    def write_truth(self, folder):
        """Write the truth JSON, the response map and the bad-pixel mask into ``folder``.

        Returns
        -------
        dict
            Paths written, keyed ``json``, ``response`` and ``bad_pixel_mask``.
        """
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        truth = self.truth()
        paths = {"json": folder / f"{self._stem}.json",
                 "response": folder / truth["response_file"],
                 "bad_pixel_mask": folder / truth["bad_pixel_mask_file"]}
        paths["json"].write_text(json.dumps(truth, indent=1))
        fits.PrimaryHDU(self.response).writeto(paths["response"], overwrite=True)
        fits.PrimaryHDU(self.bad_pixel_mask.astype(np.uint8)).writeto(paths["bad_pixel_mask"], overwrite=True)
        log.debug("wrote %s detector truth to %s", self.arm, folder)
        return paths
