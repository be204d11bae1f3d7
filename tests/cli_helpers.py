"""Helpers of the tests that run soxspipe as a user does: its command line in a subprocess, SOF files."""

import os
import re
import subprocess
import sys


def run_cli(args, cwd):
    """Run ``python -m soxspipe <args>`` in ``cwd`` (with ``HOME`` there: no user settings); the CompletedProcess."""
    env = {**os.environ, "HOME": str(cwd)}
    return subprocess.run([sys.executable, "-m", "soxspipe", *map(str, args)], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def write_sof(path, rows):
    """Write a SOF of ``(path, tag)`` rows to ``path``; return ``path``."""
    path.write_text("".join(f"{p} {tag}\n" for p, tag in rows))
    return path


def assert_fails_clearly(args, cwd, message, out, products="*.fits", *, exit_codes=(1, 2), one_line=False):
    """The command line exits with one of ``exit_codes``, says ``message`` (a regex) with no traceback (on a single
    line with ``one_line``), and leaves no ``products`` (a glob) in ``out``."""
    result = run_cli(args, cwd)
    assert result.returncode in exit_codes, result.stdout + result.stderr
    assert "Traceback" not in result.stderr
    if one_line:
        lines = [ln for ln in result.stderr.splitlines() if ln.strip()]
        assert len(lines) == 1 and re.search(message, lines[0]), result.stderr
    else:
        assert re.search(message, result.stderr), result.stderr
    assert not list(out.glob(products)) if out.exists() else True
