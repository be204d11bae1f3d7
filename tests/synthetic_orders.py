"""A synthetic echelle order with known wavelength and slit maps, for the sky and extraction tests.

Built step by step::

    order = (SyntheticOrder(seed=1).add_sky().add_object(amplitude=3000.0)
             .add_noise(read_noise=4.0).add_cosmics(30))

Dispersion runs along y (rows). The order is curved (its centre moves in x
with y) and its lines of constant wavelength are tilted, so the pixel grid
samples the (wavelength, slit) plane at sub-pixel offsets. Pixel values are the
densities at the pixel centres times the pixel's area in (wavelength, slit)
space, which the maps give analytically:

- ``u = y - tilt * (x - xc(y))``, ``wavelength = w0 + D (u + beta u^2)``,
- ``slit = scale * (x - xc(y))``, so ``area = D (1 + 2 beta u) * scale``.

Truth kept: the noiseless sky and object images, the object's flux density
``object_density(wavelength)`` (counts per nm), its trace and profile width.
"""

from dataclasses import dataclass, field

import numpy as np


@dataclass
class SyntheticOrder:
    ny: int = 200
    nx: int = 60
    seed: int = 0
    w0: float = 600.0
    dispersion: float = 0.05
    beta: float = 3e-4
    tilt: float = 0.15
    scale: float = 0.25
    half_slit: float = 5.0
    curvature: float = 3.0
    object_slit: float = 1.0
    object_drift: float = 0.3
    object_sigma: float = 0.4
    object_amplitude: float = 0.0
    read_noise: float = 0.0
    sky_true: np.ndarray = field(default=None, repr=False)
    object_true: np.ndarray = field(default=None, repr=False)
    flux: np.ndarray = field(default=None, repr=False)
    cosmics: np.ndarray = field(default=None, repr=False)

    def __post_init__(self):
        self.rng = np.random.default_rng(self.seed)
        y, x = np.mgrid[0:self.ny, 0:self.nx].astype(float)
        centre = self.nx / 2 + self.curvature * ((y - self.ny / 2) / (self.ny / 2)) ** 2
        u = y - self.tilt * (x - centre)
        self.wavelength = self.w0 + self.dispersion * (u + self.beta * u ** 2)
        self.slit = self.scale * (x - centre)
        self.area = self.dispersion * (1 + 2 * self.beta * u) * self.scale
        self.order_map = np.where(np.abs(self.slit) <= self.half_slit, 7, 0)
        self.pixels = self.order_map == 7
        self.sky_true = np.zeros((self.ny, self.nx))
        self.object_true = np.zeros((self.ny, self.nx))
        self.cosmics = np.zeros((self.ny, self.nx), bool)
        self.wave_range = (float(self.wavelength[self.pixels].min()), float(self.wavelength[self.pixels].max()))

    # truth
    def illumination(self, slit):
        """Slit illumination: +-5 %, tilted and curved."""
        t = slit / self.half_slit
        return 1 + 0.04 * t - 0.03 * t ** 2

    def sky_density(self, wavelength):
        """Sky per nm per arcsec: continuum and emission lines narrower than 2 pixels."""
        lines = np.array([601.0, 602.3, 603.1, 604.6, 606.2, 607.0, 608.8, 609.5])
        peaks = np.array([4000, 1500, 8000, 2500, 6000, 1000, 3000, 5000.0])
        sigma = 0.8 * self.dispersion
        profile = np.exp(-0.5 * ((np.asarray(wavelength)[..., None] - lines) / sigma) ** 2) @ peaks
        return (300.0 + profile) / (self.dispersion * self.scale)

    def trace(self, wavelength):
        """Slit position of the object at ``wavelength``."""
        lo, hi = self.wave_range
        return self.object_slit + self.object_drift * (2 * (np.asarray(wavelength) - lo) / (hi - lo) - 1)

    def object_density(self, wavelength):
        """Object flux density, counts per nm."""
        lo, hi = self.wave_range
        t = (np.asarray(wavelength) - lo) / (hi - lo)
        return self.object_amplitude * (1 + 0.3 * np.sin(2 * np.pi * 1.5 * t))

    def object_profile(self, slit, wavelength):
        """Normalised (per arcsec) Gaussian profile."""
        d = (slit - self.trace(wavelength)) / self.object_sigma
        return np.exp(-0.5 * d ** 2) / (np.sqrt(2 * np.pi) * self.object_sigma)

    # building steps
    def add_sky(self):
        self.sky_true = np.where(self.pixels, self.sky_density(self.wavelength) * self.illumination(self.slit)
                                 * self.area, 0.0)
        return self

    def add_object(self, amplitude=3000.0, sigma=None, slit=None):
        self.object_amplitude = amplitude
        self.object_sigma = sigma or self.object_sigma
        self.object_slit = self.object_slit if slit is None else slit
        self.object_true = np.where(self.pixels, self.object_density(self.wavelength)
                                    * self.object_profile(self.slit, self.wavelength) * self.area, 0.0)
        return self

    def add_noise(self, read_noise=4.0):
        self.read_noise = read_noise
        model = self.sky_true + self.object_true
        self.flux = (self.rng.poisson(model) + self.rng.normal(0, read_noise, model.shape)).astype(np.float32)
        return self

    def add_cosmics(self, n=30, on_object=6):
        """``n`` single-pixel cosmic rays of 2000-20000 counts, ``on_object`` of them within 1 sigma of the trace."""
        inside = np.flatnonzero(self.pixels)
        near = np.flatnonzero(self.pixels & (np.abs(self.slit - self.trace(self.wavelength)) < self.object_sigma))
        hit = np.concatenate([self.rng.choice(inside, n - on_object, replace=False),
                              self.rng.choice(near, on_object, replace=False)])
        self.flux.ravel()[hit] += self.rng.uniform(2000, 20000, hit.size).astype(np.float32)
        self.cosmics.ravel()[hit] = True
        return self

    # what a pipeline would have
    @property
    def variance(self):
        """Variance estimated from the noisy counts, as from a real frame."""
        return (np.maximum(self.flux, 0) + self.read_noise ** 2).astype(np.float32)

    @property
    def true_variance(self):
        return self.sky_true + self.object_true + self.read_noise ** 2

    def object_mask(self, n_sigma=4.0):
        return self.pixels & (np.abs(self.slit - self.trace(self.wavelength)) < n_sigma * self.object_sigma)
