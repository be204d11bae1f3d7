"""Static calibrations bundled with soxspipe: tables and instrument YAML files.

Use :func:`path` for the location of a bundled file and :func:`load_yaml` for a
parsed YAML file (cached: treat the result as read-only); :func:`parse_yaml` parses
any YAML text or stream the same way.
"""

from functools import lru_cache
from pathlib import Path

import yaml

STATIC_DIR = Path(__file__).resolve().parent
# libyaml's parser where PyYAML was built with it: the same result, several times faster
_SAFE_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def parse_yaml(stream):
    """Parse YAML text or an open file safely (plain data only), with libyaml when available."""
    return yaml.load(stream, Loader=_SAFE_LOADER)


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
        return parse_yaml(f)
