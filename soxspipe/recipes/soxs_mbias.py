"""soxs_mbias: combine bias frames into a master bias.

Prepare each bias (trim, overscan, electrons, read-noise uncertainty), stack
them with the shared sigma-clipped combine, flag pixels far from the master's
level, measure QC (level, read noise of the raw frames and of the master,
structure, fixed-pattern noise, bad pixels) and write ``MASTER_BIAS_<ARM>``.
"""

import bottleneck as bn

from ..commonutils.detector_qc import (
    fixed_pattern_noise,
    out_of_range_pixels,
    read_noise_from_pair,
    robust_stats,
    structure_slopes,
)
from ..commonutils.qc_plots import PlotCall, detector_frame_plot
from ._base_recipe_ import Product, _base_recipe_


def master_read_noise(master, mask=None):
    """Random noise of a master frame: robust sigma after removing its column and row structure."""
    residual = master - bn.median(master, axis=0)
    residual -= bn.median(residual, axis=1)[:, None]
    return robust_stats(residual, mask)[1]


class soxs_mbias(_base_recipe_):
    """Combine a set of bias frames (VIS or ACQ) into ``MASTER_BIAS_<ARM>``."""

    name = "mbias"
    raw_kinds = ("bias",)
    plot_worker = True

    def reduce(self):
        frames = [self.prepare(f, photon_noise=False) for f in self.raw_frames]
        master = self.combine(frames)
        bad = out_of_range_pixels(master.data, mask=master.mask, nsigma=self.params["bad-pixel-sigma"])
        master.mask = master.mask | bad

        catg = f"MASTER_BIAS_{self.arm}"
        plot = ("master", PlotCall(detector_frame_plot, master.data, mask=master.mask, title=catg))
        product = Product(catg, master, pro_type="REDUCED", pro_tech="IMAGE", plots=[plot])
        self.start_plots(product)  # drawn while the QC is measured
        level, _ = robust_stats(master.data, master.mask)
        structx, structy = structure_slopes(master.data, mask=master.mask)

        self.qc.add("MBIAS MEDIAN", level, "e", "median level of the master bias")
        self.qc.add("RAW RON", read_noise_from_pair(frames[0].data, frames[1].data, mask=frames[0].mask | frames[1].mask), "e", "read noise from two raw frames")
        self.qc.add("MASTER RON", master_read_noise(master.data, master.mask), "e", "random noise of the master")
        self.qc.add("STRUCTX", structx, "e/px", "slope of the master along x")
        self.qc.add("STRUCTY", structy, "e/px", "slope of the master along y")
        self.qc.add("FPN FRACMAX", fixed_pattern_noise(master.data, mask=master.mask), "", "peak fraction of FFT power")
        self.qc.add("BADPIX NUM", int(master.mask.sum()), "", "bad pixels in the master")
        self.qc.add("BADPIX FRAC", float(master.mask.mean()), "", "fraction of bad pixels")
        self.record_temperature()
        return [product]
