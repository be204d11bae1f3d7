"""Helpers of the tests that run soxspipe as a user does: its command line in a subprocess, SOF files."""

import os
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
