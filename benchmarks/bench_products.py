"""Speed of the science products of one OB: the per-arm SDP spectra, soxs_merge and the Phase 3 check.

Run: ``python benchmarks/bench_products.py [workdir]``.

Per-arm spectra of the size the science recipes make (VIS 347-853 nm by 0.02 nm,
NIR 795-2033 nm by 0.05 nm: about 25,000 bins each, flux-calibrated, a flat-f_nu
source of AB 18 seen through 70 % slit transmission) are built as SDP products and
written; then ``soxs_merge`` runs on them with an r-band source catalogue holding
the target (absolute flux, arm scaling, merging on a 10 km/s grid, the product, the
quicklook PDF), and every product is checked. The floor: reading the two inputs.
The goal: the whole (products + merge + check) under 3 s on 2 cores.
"""

import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from astropy.io import fits
from astropy.table import Table

from soxspipe.commonutils import sdp_spectrum as sdp
from soxspipe.commonutils.phase3_check import check_sdp_spectrum
from soxspipe.commonutils.synthetic_photometry import ab_to_flambda
from soxspipe.recipes.soxs_merge import soxs_merge

ARMS = {"VIS": (347.0, 853.0, 0.02), "NIR": (795.0, 2033.0, 0.05)}


def arm_product(work, arm, rng):
    lo, hi, step = ARMS[arm]
    wave = np.arange(lo, hi, step)
    flux = 0.7 * ab_to_flambda(18.0, wave)
    err = 0.05 * flux
    table = Table({"WAVE": wave, "FLUX": flux * 1e18, "ERR": err * 1e18, "SKY": np.full(wave.size, 50.0),
                   "QUAL": np.zeros(wave.size, np.int32), "FLUX_CAL": flux + rng.normal(0, err), "ERR_CAL": err})
    header = fits.Header()
    header["MJD-OBS"], header["EXPTIME"], header["OBJECT"] = 60695.9, 600.0, "GAL-A"
    header["RA"], header["DEC"], header["HIERARCH ESO OBS ID"] = 120.5, -30.1, 101
    columns, units = sdp.spectrum_columns(table, sky_calibrated=np.full(wave.size, 1e-18))
    cards = {**sdp.observation_cards([(f"raw_{arm}.fits", header)]),
             **sdp.product_cards(arm=arm, obstech="ECHELLE,SLIT,STARE", slit_width=1.0, procsoft="soxspipe/bench",
                                 calibrated=True, telluric=False, barycorr=sdp.barycentric_correction(120.5, -30.1,
                                                                                                     60695.9)),
             **sdp.wavelength_cards({"LINES TOTAL": 1000, "LINES USED FRAC": 0.8, "XRES RMS": 0.05,
                                     "XRES MEDIAN": 0.0, "RESOLVING POWER": 6000.0}, nm_per_pixel=step,
                                    dispersion_axis="x")}
    base = fits.Header()
    base["HIERARCH ESO PRO CATG"], base["HIERARCH ESO SEQ ARM"] = f"SCI_SPEC_{arm}", arm
    base["HIERARCH ESO DET BINX"] = base["HIERARCH ESO DET BINY"] = 1
    base["HIERARCH ESO DPR TECH"] = "ECHELLE,SLIT,STARE"
    base["TELESCOP"], base["INSTRUME"] = "ESO-NTT", "SOXS"
    path = work / f"SCI_SPEC_{arm}.fits"
    sdp.build_sdp_spectrum(columns, units, cards).to_hdulist(base).writeto(path, overwrite=True, checksum=True)
    return path


def catalogue(work):
    path = work / "SOURCE_CAT_ACQ_r.fits"
    table = Table({"ra": [120.5, 120.51], "dec": [-30.1, -30.09], "mag": [18.0, 16.0], "mag_err": [0.01, 0.01]})
    header = fits.Header()
    header["HIERARCH ESO PRO CATG"], header["HIERARCH ESO SEQ ARM"], header["FLUXCAL"] = "SOURCE_CAT_ACQ_r", "ACQ", \
        "ABSOLUTE"
    header["HIERARCH ESO INS ACFW ID"] = "r"
    fits.HDUList([fits.PrimaryHDU(header=header), fits.table_to_hdu(table)]).writeto(path, overwrite=True)
    return path


def main(work):
    work = Path(work)
    work.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    soxs_merge([str(arm_product(work, a, rng)) for a in ARMS], output_dir=work / "warm", overwrite=True).run()
    start = time.perf_counter()
    inputs = [str(arm_product(work, a, rng)) for a in ARMS]
    made = time.perf_counter()
    paths = soxs_merge(inputs + [str(catalogue(work))], output_dir=work / "out", overwrite=True).run()
    merged = time.perf_counter()
    problems = [p for path in inputs + [str(x) for x in paths] for p in check_sdp_spectrum(path)]
    checked = time.perf_counter()
    floor_start = time.perf_counter()
    for path in inputs:
        with fits.open(path) as hdul:
            [np.asarray(hdul[1].data[c][0]) for c in hdul[1].columns.names]
    floor = time.perf_counter() - floor_start
    total = checked - start
    print(f"per-arm SDP products {made - start:.2f} s, merge (with PDF) {merged - made:.2f} s, "
          f"checks {checked - merged:.2f} s: total {total:.2f} s (goal < 3 s); floor (reading) {floor:.3f} s; "
          f"problems: {problems or 'none'}")
    return total


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else tempfile.mkdtemp())
