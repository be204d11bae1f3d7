"""Static calibrations bundled with soxspipe: tables and instrument YAML files.

Use :func:`path` for the location of a bundled file and :func:`load_yaml` for a
parsed YAML file (cached: treat the result as read-only).
"""

from functools import lru_cache
from pathlib import Path

import yaml

STATIC_DIR = Path(__file__).resolve().parent


def path(name):
    """Return the absolute path of the bundled static file ``name``.

    Raises
    ------
    FileNotFoundError
        If soxspipe bundles no file of that name.
    """
    p = STATIC_DIR / name
    if not p.exists():
        raise FileNotFoundError(f"soxspipe bundles no static calibration named '{name}'")
    return p


@lru_cache(maxsize=None)
def load_yaml(name):
    """Return the parsed contents of the bundled YAML file ``name``."""
    with open(path(name)) as f:
        return yaml.safe_load(f)
