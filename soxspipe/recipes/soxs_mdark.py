"""soxs_mdark: combine dark frames of one exposure time into a master dark.

Prepare each dark (bias-subtracted with the ``MASTER_BIAS`` where the arm has a
bias), stack them with the shared sigma-clipped combine, flag hot pixels, measure
QC (level, raw read noise, hot pixels) and write ``MASTER_DARK_<ARM>`` in
electrons for the set's exposure time.
"""

from ..commonutils.detector_qc import hot_pixels, read_noise_from_pair, robust_stats
from ..commonutils.qc_plots import PlotCall, detector_frame_plot
from ._base_recipe_ import Product, _base_recipe_


class soxs_mdark(_base_recipe_):
    """Combine a set of dark frames (NIR, ACQ or VIS) into ``MASTER_DARK_<ARM>``."""

    name = "mdark"
    raw_kinds = ("dark",)
    plot_worker = True
    calibrations = {"MASTER_BIAS": "has_bias"}
    same_exptime = True

    def reduce(self):
        bias = self.calibration("MASTER_BIAS")
        frames = [self.prepare(f, master_bias=bias) for f in self.raw_frames]
        master = self.combine(frames)
        exptime = self.raw_frames[0].exptime
        hot = hot_pixels(master.data, exptime=exptime, nsigma=self.params["hot-pixel-sigma"])
        master.mask = master.mask | hot

        catg = f"MASTER_DARK_{self.arm}"
        plot = ("master", PlotCall(detector_frame_plot, master.data, mask=master.mask, title=f"{catg} {exptime:g} s"))
        product = Product(catg, master, pro_type="REDUCED", pro_tech="IMAGE", plots=[plot])
        self.start_plots(product)  # drawn while the QC is measured
        level, _ = robust_stats(master.data, master.mask)

        self.qc.add("MDARK MEDIAN", level, "e", f"median level of the master dark ({exptime:g} s)")
        self.qc.add("RAW RON", read_noise_from_pair(frames[0].data, frames[1].data, mask=frames[0].mask | frames[1].mask), "e", "noise of two raw darks' difference")
        self.qc.add("HOTPIX NUM", int(hot.sum()), "", "hot pixels")
        self.qc.add("HOTPIX FRAC", float(hot.mean()), "", "fraction of hot pixels")
        self.record_temperature()
        return [product]
