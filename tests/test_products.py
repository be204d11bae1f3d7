"""Product writing: extensions, keywords, atomic writes, no silent overwrite; QC flags."""

import numpy as np
import pytest
from astropy.io import fits
from astropy.nddata import CCDData, StdDevUncertainty
from astropy.table import Table

from soxspipe.commonutils.errors import ProductExistsError
from soxspipe.commonutils.product_io import write_image_product, write_table_product
from soxspipe.commonutils.qc import QCRecorder
from soxspipe.products import read_image_product


def small_ccd():
    data = np.arange(12, dtype=np.float32).reshape(3, 4)
    mask = np.zeros((3, 4), bool)
    mask[1, 2] = True
    return CCDData(data, unit="electron", mask=mask, uncertainty=StdDevUncertainty(np.full((3, 4), 0.5, np.float32)))


def test_image_product_layout_and_round_trip(tmp_path):
    header = fits.Header()
    header["HIERARCH ESO PRO CATG"] = "MASTER_BIAS_VIS"
    path = write_image_product(tmp_path / "p.fits", small_ccd(), header)
    with fits.open(path) as hdul:
        assert [h.name for h in hdul] == ["PRIMARY", "FLUX", "QUAL", "ERRS"]
        assert hdul["FLUX"].data.dtype == np.dtype(">f4") and hdul["QUAL"].data.dtype == np.uint8
        assert hdul["ERRS"].data.dtype == np.dtype(">f4")
        assert hdul[0].header["HIERARCH ESO PRO CATG"] == "MASTER_BIAS_VIS"
        assert hdul["QUAL"].data[1, 2] == 1 and hdul["QUAL"].data.sum() == 1
    ccd = read_image_product(path)
    assert np.array_equal(ccd.data, small_ccd().data) and ccd.mask[1, 2] and ccd.mask.sum() == 1
    assert np.allclose(ccd.uncertainty.array, 0.5) and str(ccd.unit) == "electron"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["p.fits"]  # no temporary file left


def test_no_overwrite_unless_asked(tmp_path):
    path = write_table_product(tmp_path / "t.fits", Table({"a": [1, 2]}), fits.Header())
    before = path.read_bytes()
    with pytest.raises(ProductExistsError, match="use -x"):
        write_table_product(path, Table({"a": [3, 4]}), fits.Header())
    assert path.read_bytes() == before
    write_table_product(path, Table({"a": [3, 4]}), fits.Header(), overwrite=True)
    assert list(Table.read(path)["a"]) == [3, 4]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["t.fits"]


def test_failed_write_leaves_nothing(tmp_path, monkeypatch):
    def disk_full(self, name, **kwargs):
        with open(name, "wb") as f:
            f.write(b"SIMPLE  =                    T")
        raise OSError("No space left on device")

    monkeypatch.setattr(fits.HDUList, "writeto", disk_full)
    with pytest.raises(OSError, match="No space"):
        write_image_product(tmp_path / "p.fits", small_ccd(), fits.Header())
    assert list(tmp_path.iterdir()) == []


def test_qc_ranges_flag_values_in_header_and_table():
    qc = QCRecorder({"RAW RON": (0.5, 10.0), "MBIAS MEDIAN": (-5.0, 5.0)})
    qc.add("raw ron", 3.1, "e", "read noise")
    qc.add("MBIAS MEDIAN", 12.0, "e", "level")
    qc.add("BADPIX NUM", 7)
    header = fits.Header()
    qc.write_header(header)
    assert header["HIERARCH ESO QC RAW RON"] == 3.1
    assert header["HIERARCH ESO QC BADPIX NUM"] == 7
    assert header["HIERARCH ESO QC STATUS"] == "FAIL"
    assert header["HIERARCH ESO QC FAILED"] == "MBIAS MEDIAN"
    table = qc.table()
    assert list(table["status"]) == ["PASS", "FAIL", "PASS"]
    assert table["high"][1] == 5.0
