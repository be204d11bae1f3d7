"""The command line: help, version, a recipe run, and every bad input (exit code, one-line message, nothing written)."""

import os
import subprocess
import sys

import numpy as np
import pytest
from astropy.io import fits

from rawframes import kind_header, raw_header, write_frame

RON_E, GAIN = 3.0, 0.6


def run(args, cwd, home):
    env = {**os.environ, "HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "soxspipe", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def vis_bias_set(folder, n=5, seed=1):
    """n VIS bias frames: 1000 ADU + Gaussian read noise of RON_E electrons (gain GAIN e/ADU)."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    lines = []
    for i in range(n):
        data = 1000.0 + rng.normal(0.0, RON_E / GAIN, (4096, 908))
        header = kind_header("bias_vis", mjd=60695.1 + i * 0.001, conad=GAIN, ron=RON_E)
        path = write_frame(folder / f"SOXS.bias{i}.fits", header, np.round(data).astype(np.uint16))
        lines.append(f"{path.name} BIAS_VIS")
    sof = folder / "mbias.sof"
    sof.write_text("\n".join(lines) + "\n")
    return sof


@pytest.fixture(scope="module")
def bias_sof(tmp_path_factory):
    return vis_bias_set(tmp_path_factory.mktemp("bias"))


def test_help_lists_only_working_commands(tmp_path):
    result = run(["-h"], tmp_path, tmp_path)
    assert result.returncode == 0
    commands = [line.split()[1] for line in result.stdout.splitlines() if line.strip().startswith("soxspipe ") and not line.strip().startswith("soxspipe -")]
    assert "mbias" in commands and "mdark" in commands
    from soxspipe.cl_utils import TOOLS
    from soxspipe.recipes import RECIPES
    assert set(commands) == set(RECIPES) | set(TOOLS)
    version = run(["--version"], tmp_path, tmp_path)
    assert version.returncode == 0 and version.stdout.startswith("soxspipe ")


def test_mbias_from_the_command_line(bias_sof, tmp_path):
    out = tmp_path / "out"
    result = run(["mbias", bias_sof, "-o", out], tmp_path, tmp_path / "home")
    assert result.returncode == 0, result.stderr
    products = sorted(out.glob("MASTER_BIAS_VIS*.fits"))
    assert len(products) == 1 and str(products[0]) in result.stdout
    with fits.open(products[0]) as hdul:
        h = hdul[0].header
        assert [x.name for x in hdul] == ["PRIMARY", "FLUX", "QUAL", "ERRS"]
        assert h["HIERARCH ESO PRO CATG"] == "MASTER_BIAS_VIS"
        assert h["HIERARCH ESO PRO REC1 ID"] == "soxs_mbias"
        assert h["HIERARCH ESO PRO REC1 RAW5 NAME"] == "SOXS.bias4.fits"
        assert h["HIERARCH ESO PRO REC1 RAW1 CATG"] == "BIAS_VIS"
        assert any(k.startswith("ESO PRO REC1 PARAM") for k in h.keys())
        # overscan-subtracted master: level ~0; read noise measured against the injected value
        assert abs(h["HIERARCH ESO QC MBIAS MEDIAN"]) < 0.2
        assert h["HIERARCH ESO QC RAW RON"] == pytest.approx(RON_E, rel=0.03)
        assert h["HIERARCH ESO QC MASTER RON"] == pytest.approx(RON_E / np.sqrt(5), rel=0.10)
        assert h["HIERARCH ESO QC STATUS"] == "PASS"
        assert hdul["FLUX"].data.shape == (4096, 808)
    assert (out / "qc").is_dir() and list((out / "qc").glob("*.png"))
    assert list(out.glob("soxs_mbias_VIS_*.log"))
    assert list(out.glob("MASTER_BIAS_VIS*_QC.ecsv"))
    assert (tmp_path / "home/.config/soxspipe/soxspipe.yaml").exists()

    # a second run refuses to overwrite, -x replaces
    again = run(["mbias", bias_sof, "-o", out], tmp_path, tmp_path / "home")
    assert again.returncode == 1 and "use -x" in again.stderr and "Traceback" not in again.stderr
    assert run(["mbias", bias_sof, "-o", out, "-x"], tmp_path, tmp_path / "home").returncode == 0


def test_identical_commands_side_by_side_both_produce(bias_sof, tmp_path):
    home = tmp_path / "home"
    procs = []
    for name in ("a", "b"):
        cwd = tmp_path / name
        cwd.mkdir()
        env = {**os.environ, "HOME": str(home)}
        procs.append((cwd, subprocess.Popen([sys.executable, "-m", "soxspipe", "mbias", str(bias_sof), "-o", "out"],
                                            cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)))
    for cwd, proc in procs:
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
        assert len(list((cwd / "out").glob("MASTER_BIAS_VIS*.fits"))) == 1


def _bad(tmp_path, case):
    """Build one bad input; return (args, expected exit code, expected message)."""
    folder = tmp_path / "in"
    folder.mkdir()
    sof = folder / "set.sof"
    good = [write_frame(folder / f"b{i}.fits", kind_header("bias_vis", mjd=60695.1 + i)) for i in range(3)]
    lines = [f"{p.name} BIAS_VIS" for p in good]
    if case == "missing sof":
        return [folder / "nope.sof"], 2, "nope.sof: SOF file not found"
    if case == "missing file":
        lines.append("gone.fits BIAS_VIS")
        message = "gone.fits does not exist"
    elif case == "not fits":
        (folder / "text.fits").write_text("hello\n" * 100)
        lines.append("text.fits BIAS_VIS")
        message = "text.fits: not a readable FITS file"
    elif case == "truncated":
        data = write_frame(folder / "t.fits", kind_header("bias_vis")).read_bytes()
        (folder / "t.fits").write_bytes(data[: len(data) // 2])
        lines.append("t.fits BIAS_VIS")
        message = "t.fits"
    elif case == "no dpr":
        header = kind_header("bias_vis")
        del header["HIERARCH ESO DPR CATG"], header["HIERARCH ESO DPR TYPE"], header["HIERARCH ESO DPR TECH"]
        write_frame(folder / "nodpr.fits", header)
        lines.append("nodpr.fits BIAS_VIS")
        message = "nodpr.fits: no DPR"
    elif case == "two arms":
        write_frame(folder / "acq.fits", kind_header("bias_acq"))
        lines.append("acq.fits BIAS_ACQ")
        message = "acq.fits: a ACQ frame in a SOF of VIS frames"
    elif case == "unknown settings key":
        sof.write_text("\n".join(lines) + "\n")
        (folder / "s.yaml").write_text("mbias:\n  default:\n    sigma: 2\n")
        return [sof, "-s", folder / "s.yaml"], 2, "unknown settings key 'mbias.default.sigma'"
    elif case == "too few":
        lines = lines[:2]
        message = "needs at least 3 raw frames"
    elif case == "wrong kind":
        write_frame(folder / "dark.fits", raw_header("VIS", "CALIB", "DARK", "IMAGE", exptime=10.0))
        lines.append("dark.fits DARK_VIS")
        message = "dark.fits: a dark frame (DARK_VIS) is not an input of soxs_mbias"
    sof.write_text("\n".join(lines) + "\n")
    return [sof], 1, message


@pytest.mark.parametrize("case", ["missing sof", "missing file", "not fits", "truncated", "no dpr", "two arms",
                                  "unknown settings key", "too few", "wrong kind"])
def test_bad_input(tmp_path, case):
    args, code, message = _bad(tmp_path, case)
    before = {p: p.stat().st_mtime_ns for p in (tmp_path / "in").iterdir()}
    out = tmp_path / "out"
    result = run(["mbias", *args, "-o", out], tmp_path, tmp_path / "home")
    assert result.returncode == code, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0] and lines[0].startswith("soxspipe: error:"), result.stderr
    assert not out.exists() or not any(out.rglob("*"))
    assert {p: p.stat().st_mtime_ns for p in (tmp_path / "in").iterdir()} == before  # inputs untouched


def test_debug_shows_the_traceback(tmp_path):
    result = run(["mbias", tmp_path / "nope.sof", "--debug"], tmp_path, tmp_path)
    assert result.returncode != 0 and "Traceback" in result.stderr


def test_usage_error_exit_code(tmp_path):
    result = run(["mbias"], tmp_path, tmp_path)
    assert result.returncode == 2 and "Usage:" in result.stderr


def test_simulate_rejects_bad_options(tmp_path):
    result = run(["simulate", tmp_path / "night", "--scenario", "stormy"], tmp_path, tmp_path)
    assert result.returncode == 2 and "--scenario must be one of nominal" in result.stderr
    result = run(["simulate", tmp_path / "night", "--seed", "x"], tmp_path, tmp_path)
    assert result.returncode == 2 and "--seed must be a whole number" in result.stderr
