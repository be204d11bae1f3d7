"""SOF parsing (comments, relative paths, folders, every error) and settings overrides."""

from pathlib import Path

import pytest

from rawframes import kind_header, write_frame
from soxspipe.commonutils.errors import DataError, SettingsError, UsageError
from soxspipe.commonutils.settings import load_settings_file, merge_settings, qc_ranges, recipe_settings
from soxspipe.commonutils.sof import parse_sof_file, read_sof


@pytest.fixture()
def frames(tmp_path):
    raw = tmp_path / "raw"
    raw.mkdir()
    for i in range(3):
        write_frame(raw / f"b{i}.fits", kind_header("bias_acq", mjd=60695.1 + i * 0.001))
    return raw


def test_comments_blank_lines_and_relative_paths(tmp_path, frames):
    sof = tmp_path / "set.sof"
    sof.write_text("# a bias set\n\nraw/b0.fits BIAS_ACQ\n   raw/b1.fits   BIAS_ACQ   # second\n" + f"{frames / 'b2.fits'} BIAS_ACQ\n")
    entries = parse_sof_file(sof)
    assert [e.path for e in entries] == [frames / "b0.fits", frames / "b1.fits", frames / "b2.fits"]
    assert {e.tag for e in entries} == {"BIAS_ACQ"}
    infos = read_sof(sof)
    assert [i.kind for i in infos] == ["bias"] * 3


def test_folder_list_and_one_fits_file_stand_in_for_a_sof(frames):
    assert [i.tag for i in read_sof(frames)] == ["BIAS_ACQ"] * 3
    assert len(read_sof([frames / "b0.fits", frames / "b2.fits"])) == 2
    assert [Path(i.path) for i in read_sof(frames / "b1.fits")] == [frames / "b1.fits"]
    with pytest.raises(DataError, match="nope.fits: file not found"):
        read_sof(frames / "nope.fits")


@pytest.mark.parametrize("text,error,message", [
    (None, UsageError, "SOF file not found"),
    ("", UsageError, "lists no files"),
    ("# only a comment\n", UsageError, "lists no files"),
    ("raw/b0.fits\n", UsageError, "set.sof:1: expected 'path TAG'"),
    ("raw/b0.fits BIAS_ACQ extra\n", UsageError, "expected 'path TAG'"),
    ("raw/b0.fits BIAS_ACQ\nraw/nope.fits BIAS_ACQ\n", DataError, "set.sof:2: .*nope.fits does not exist"),
    ("raw/b0.fits DARK_ACQ\n", DataError, "tags it DARK_ACQ but its header makes it BIAS_ACQ"),
])
def test_sof_errors(tmp_path, frames, text, error, message):
    sof = tmp_path / "set.sof"
    if text is not None:
        sof.write_text(text)
    with pytest.raises(error, match=message):
        read_sof(sof)


def test_empty_folder_is_an_error(tmp_path):
    with pytest.raises(UsageError, match="holds no FITS files"):
        read_sof(tmp_path)


def test_settings_override_and_arm_blocks(tmp_path):
    path = tmp_path / "my.yaml"
    path.write_text("mbias:\n  default:\n    clipping-lower-sigma: 3.5\n  ACQ:\n    frames-min: 7\n  qc-ranges:\n    RAW RON: [1, 2]\n")
    settings = load_settings_file(path)
    assert recipe_settings(settings, "mbias", "VIS")["clipping-lower-sigma"] == 3.5
    assert recipe_settings(settings, "mbias", "VIS")["frames-min"] == 3
    assert recipe_settings(settings, "mbias", "ACQ")["frames-min"] == 7
    assert qc_ranges(settings, "mbias", "ACQ")["RAW RON"] == (1, 2)
    assert qc_ranges(merge_settings({}), "mbias", "ACQ")["RAW RON"] == (0.5, 6.0)


@pytest.mark.parametrize("text,message", [
    ("mbias:\n  default:\n    clipping-sigma: 3\n", "unknown settings key 'mbias.default.clipping-sigma'"),
    ("mbais:\n  default: {}\n", "unknown settings key 'mbais'"),
    ("mbias:\n  NIR:\n    frames: 2\n", "unknown settings key 'mbias.NIR.frames'"),
    ("mbias: [1, 2\n", "not valid YAML"),
    ("- 1\n- 2\n", "must hold a YAML mapping"),
])
def test_settings_errors(tmp_path, text, message):
    path = tmp_path / "bad.yaml"
    path.write_text(text)
    with pytest.raises(SettingsError, match=message):
        load_settings_file(path)
