"""Recipe settings: the bundled defaults, a user file's overrides, per-arm resolution.

``default_settings.yaml`` holds every tunable number. Each recipe has a section
with ``default:`` values and optional ``VIS:``/``NIR:``/``ACQ:`` blocks that
override them for one arm; ``qc-ranges:`` hold the acceptable range of each QC
value. A user settings file has the same structure and may override any key;
a key the defaults do not have is an error.
"""

import copy
from functools import lru_cache
from pathlib import Path

import yaml

from ..static_calibrations import parse_yaml
from .detectors import ARMS
from .errors import SettingsError

DEFAULTS_PATH = Path(__file__).resolve().parent.parent / "default_settings.yaml"


@lru_cache(maxsize=1)
def _bundled_defaults():
    with open(DEFAULTS_PATH) as f:
        return parse_yaml(f)


def default_settings():
    """Return a fresh copy of the bundled default settings."""
    return copy.deepcopy(_bundled_defaults())


def _merge_checked(base, override, source, trail=()):
    for key, value in override.items():
        here = trail + (str(key),)
        if key in ARMS and "default" in base:
            # an arm block may override any of the recipe's default keys
            unknown = set(value or {}) - set(base["default"])
            if unknown:
                raise SettingsError(f"{source}: unknown settings key '{'.'.join(here)}.{sorted(unknown)[0]}'; see default_settings.yaml for the valid keys")
            base.setdefault(key, {}).update(value or {})
            continue
        if key not in base:
            raise SettingsError(f"{source}: unknown settings key '{'.'.join(here)}'; see default_settings.yaml for the valid keys")
        if isinstance(base[key], dict) and trail[-1:] != ("qc-ranges",):
            if not isinstance(value, dict):
                raise SettingsError(f"{source}: settings key '{'.'.join(here)}' must be a mapping")
            _merge_checked(base[key], value, source, here)
        else:
            base[key] = value


def merge_settings(overrides, source="settings file"):
    """Return the defaults with ``overrides`` (a nested dict) applied.

    Raises
    ------
    SettingsError
        ``overrides`` holds a key the defaults do not have.
    """
    settings = default_settings()
    if overrides:
        if not isinstance(overrides, dict):
            raise SettingsError(f"{source}: a settings file must hold a YAML mapping")
        _merge_checked(settings, overrides, source)
    return settings


def load_settings_file(path):
    """Read a user settings file and return the merged settings."""
    path = Path(path)
    if not path.is_file():
        raise SettingsError(f"{path}: settings file not found")
    try:
        overrides = parse_yaml(path.read_text())
    except yaml.YAMLError as exc:
        raise SettingsError(f"{path}: not valid YAML ({str(exc).splitlines()[0]})") from None
    return merge_settings(overrides, source=str(path))


def recipe_settings(settings, recipe, arm):
    """Return the flat parameters of ``recipe`` for ``arm``: its defaults with the arm's overrides."""
    section = settings[recipe]
    resolved = copy.deepcopy(section.get("default", {}))
    for key, value in (section.get(arm) or {}).items():
        resolved[key] = value
    return resolved


def qc_ranges(settings, recipe, arm):
    """Return ``{QC name: (low, high)}`` for ``recipe`` on ``arm`` (None for an open end)."""
    ranges = {}
    for name, spec in (settings[recipe].get("qc-ranges") or {}).items():
        spec = spec.get(arm, spec.get("default")) if isinstance(spec, dict) else spec
        if spec is not None:
            ranges[name] = (spec[0], spec[1])
    return ranges
