"""soxs_merge: the UV-VIS and NIR spectra of one OB as one.

The cores on hand-made spectra (the velocity grid, flux conservation and the
inverse-variance overlap, the arm ratio); then the merged spectra of the simulated
night (``science_fixtures.merged_night``: the organiser merged every OB with both
arms): continuous across the overlap, the quicklook PDF rendered to PNG; then bad
inputs through the command line and the recipe.
"""

import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from astropy.io import fits

from pinhole_sets import shared_root
from science_fixtures import merge_product, merged_night
from soxspipe.commonutils.errors import DataError
from soxspipe.commonutils.merge_arms import C_KMS, arm_ratio, bin_edges, merge_arms, velocity_edges
from soxspipe.commonutils.sdp_spectrum import SdpSpectrum, read_sdp_spectrum
from soxspipe.recipes.soxs_merge import soxs_merge


def _arm(lo, hi, n, flux, err):
    wave = np.linspace(lo, hi, n)
    f = np.full(n, float(flux))
    e = np.full(n, float(err))
    return SdpSpectrum({"WAVE": wave, "FLUX": f, "ERR": e, "QUAL": np.zeros(n, np.int32), "SNR": f / e,
                        "BGFLUX": f / 10, "FLUX_REDUCED": f * 100, "ERR_REDUCED": e * 100}, {"WAVE": "nm"})


def test_velocity_grid_has_constant_velocity_bins():
    edges = velocity_edges(350.0, 2000.0, 10.0)
    assert edges[0] == 350.0 and edges[-1] >= 2000.0 and edges[-2] < 2000.0
    np.testing.assert_allclose(np.diff(edges) / edges[:-1] * C_KMS, 10.0, rtol=1e-9)


def test_merge_conserves_flux_and_weights_the_overlap():
    vis, nir = _arm(700.0, 850.0, 1501, 2.0, 0.1), _arm(800.0, 1000.0, 801, 3.0, 0.2)
    merged = merge_arms([vis, nir], velocity_edges(700.0, 1000.0, 20.0))
    c = merged.columns
    w = c["WAVE"]
    only_vis, only_nir = (w > 702) & (w < 798), (w > 852) & (w < 998)
    both = (w > 802) & (w < 848)
    np.testing.assert_allclose(c["FLUX"][only_vis], 2.0)
    np.testing.assert_allclose(c["FLUX"][only_nir], 3.0)
    # inverse-variance weights of each arm's error on the new bins: between 2 and 3, 2.2 where the new bin lies
    # inside one bin of each arm (weights 1/0.1^2 and 1/0.2^2)
    w_vis, w_nir = merged_error(vis, merged) ** -2, merged_error(nir, merged) ** -2
    np.testing.assert_allclose(c["FLUX"][both], ((2.0 * w_vis + 3.0 * w_nir) / (w_vis + w_nir))[both], rtol=1e-9)
    np.testing.assert_allclose(c["ERR"][both], (w_vis + w_nir)[both] ** -0.5, rtol=1e-9)
    inside = both & np.isclose(merged_error(vis, merged), 0.1) & np.isclose(merged_error(nir, merged), 0.2)
    assert inside.sum() > 100
    np.testing.assert_allclose(c["FLUX"][inside], 2.2, rtol=1e-9)
    # counts of two detectors do not add: those of the arm of the larger weight
    np.testing.assert_allclose(c["FLUX_REDUCED"][both], 200.0)
    assert (c["QUAL"][only_vis | only_nir | both] == 0).all()


def merged_error(arm, merged):
    from soxspipe.commonutils.resample import rebin

    return rebin(bin_edges(arm.columns["WAVE"]), arm.columns["FLUX"], arm.columns["ERR"], merged.edges)[1]


def test_arm_ratio_in_the_window():
    ratio, n = arm_ratio(_arm(700.0, 850.0, 1501, 2.0, 0.1), _arm(800.0, 1000.0, 801, 2.5, 0.2), (800.0, 850.0))
    assert ratio == pytest.approx(0.8, rel=1e-9) and n > 10
    with pytest.raises(DataError, match="do not overlap"):
        arm_ratio(_arm(700.0, 790.0, 10, 2.0, 0.1), _arm(800.0, 1000.0, 10, 2.5, 0.2), (800.0, 850.0))


# -- the simulated night ---------------------------------------------------------------------------


@pytest.fixture(scope="module")
def night(tmp_path_factory, worker_id, request):
    return merged_night(shared_root(tmp_path_factory, worker_id), lambda: request.getfixturevalue("simulated_night"))


def _product(night, start, recipe=None):
    if start == "SCI_SPEC_MERGED_":
        return merge_product(night, "SCI")
    paths = [p for r in night["runs"] + night["merge_runs"] for p in r["products"]
             if Path(p).name.startswith(start) and recipe in (None, r["recipe"])]
    assert len(paths) == 1, (start, paths)
    return paths[0]


def test_organiser_merges_the_science_ob(night):
    merges = [r for r in night["merge_runs"] if r["recipe"] == "merge"]
    science = [r for r in merges if "SCI" in r["setup"]]  # GAL-A's stare OB, and nod/offset OBs if reduced
    assert science and all(r["status"] == "ok" for r in science), merges
    assert merge_product(night, "SCI")
    images = [r for r in night["merge_runs"] if r["recipe"] == "image"]
    assert images and all(r["status"] == "ok" for r in images), images


def test_merged_spectrum_is_continuous_across_the_overlap(night):
    """The two arms, as merged (absolute flux and scale applied), agree in 810-845 nm to 2 %."""
    merged, header = read_sdp_spectrum(_product(night, "SCI_SPEC_MERGED_"))
    vis, _ = read_sdp_spectrum(_product(night, "SCI_SPEC_VIS_"))
    nir, _ = read_sdp_spectrum(_product(night, "SCI_SPEC_NIR_"))
    factors = {arm: header.get("HIERARCH ESO PRO ABSFLUX FACTOR", 1.0) * header.get(
        f"HIERARCH ESO PRO MERGE SCALE {arm}", 1.0) for arm in ("VIS", "NIR")}
    edges = velocity_edges(810.0, 845.0, 100.0)
    from soxspipe.commonutils.resample import rebin

    f = {}
    for arm, s in (("VIS", vis), ("NIR", nir)):
        good = s.columns["QUAL"] == 0
        flux = np.where(good, s.columns["FLUX"], np.nan) * factors[arm]
        f[arm] = rebin(bin_edges(s.columns["WAVE"]), flux, s.columns["ERR"], edges)[0]
    ratio = np.nanmedian(f["VIS"] / f["NIR"])
    assert ratio == pytest.approx(1.0, abs=0.02)
    # the merged flux follows both arms there
    m = (merged.columns["WAVE"] > 810) & (merged.columns["WAVE"] < 845)
    assert np.nanmedian(merged.columns["FLUX"][m]) == pytest.approx(np.nanmedian(f["VIS"]), rel=0.03)


def test_quicklook_pdf_renders(night, tmp_path):
    pdfium = pytest.importorskip("pypdfium2")
    merged = Path(_product(night, "SCI_SPEC_MERGED_"))
    workspace = Path(night["workspace"])
    (pdf,) = list((workspace / "qc").rglob(f"{merged.stem}_quicklook.pdf"))
    document = pdfium.PdfDocument(str(pdf))
    assert len(document) == 1
    image = document[0].render(scale=1.0).to_pil()
    image.save(tmp_path / "quicklook.png")
    pixels = np.asarray(image.convert("L"), float)
    assert pixels.shape[0] > 500 and pixels.shape[1] > 700
    # drawn: far from a blank page (curves, text and the shaded bands)
    assert pixels.std() > 10 and (pixels < 128).mean() > 0.005


def test_one_arm_only_is_refused(night, tmp_path):
    sof = tmp_path / "one_arm.sof"
    sof.write_text(f"{_product(night, 'SCI_SPEC_VIS_')} SCI_SPEC_VIS\n")
    result = subprocess.run([sys.executable, "-m", "soxspipe", "merge", str(sof), "-o", str(tmp_path)],
                            capture_output=True, text=True)
    assert result.returncode != 0
    assert "no NIR spectrum to merge" in result.stderr + result.stdout
    assert not list(tmp_path.glob("*.fits"))


def test_arms_of_different_obs_are_refused(night, tmp_path):
    vis, nir = _product(night, "SCI_SPEC_VIS_"), _product(night, "STD_FLUX_SPEC_NIR_", recipe="response")
    with pytest.raises(DataError, match="spectra of different kinds|not the two arms of one OB"):
        soxs_merge([vis, nir], output_dir=tmp_path).run()
    # the same kind but another object and OB
    other = tmp_path / "other_NIR.fits"
    with fits.open(nir) as hdul:
        hdul[0].header["HIERARCH ESO PRO CATG"] = "SCI_SPEC_NIR"
        hdul.writeto(other)
    with pytest.raises(DataError, match="not the two arms of one OB"):
        soxs_merge([vis, str(other)], output_dir=tmp_path).run()
    assert not list(tmp_path.glob("SCI_SPEC_MERGED*"))


def test_non_overlapping_and_empty_spectra_are_refused(night, tmp_path):
    vis, nir = _product(night, "SCI_SPEC_VIS_"), _product(night, "SCI_SPEC_NIR_")
    # a NIR spectrum whose bins all lie beyond the VIS arm's end does not overlap it
    shifted = tmp_path / "far_NIR.fits"
    with fits.open(nir) as hdul:
        hdul[1].data["WAVE"][0][:] = hdul[1].data["WAVE"][0] + 200.0
        hdul.writeto(shifted, checksum=True)
    with pytest.raises(DataError, match="do not overlap"):
        soxs_merge([vis, str(shifted)], output_dir=tmp_path).run()
    empty = tmp_path / "empty_NIR.fits"
    with fits.open(nir) as hdul:
        hdul[1].data["QUAL"][0][:] = 1
        hdul.writeto(empty, checksum=True)
    with pytest.raises(DataError, match="no good bin"):
        soxs_merge([vis, str(empty)], output_dir=tmp_path).run()
    assert not list(tmp_path.glob("SCI_SPEC_MERGED*"))
