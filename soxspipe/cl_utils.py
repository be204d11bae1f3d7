"""
soxspipe: reduce SOXS data.

Usage:
    soxspipe mbias <inputFrames> [-o <outputDirectory>] [-s <pathToSettingsFile>] [-x] [-V] [--debug]
    soxspipe mdark <inputFrames> [-o <outputDirectory>] [-s <pathToSettingsFile>] [-x] [-V] [--debug]
    soxspipe -h | --help
    soxspipe --version

Commands:
    mbias       combine bias frames (VIS, ACQ) into a MASTER_BIAS
    mdark       combine dark frames of one exposure time into a MASTER_DARK

Arguments:
    <inputFrames>       a SOF file (one 'path TAG' per line), a folder of FITS files, or one FITS file

Options:
    -o, --output-dir <outputDirectory>     where products go (default: the current folder)
    -s, --settings <pathToSettingsFile>    a YAML file overriding default settings keys
    -x, --overwrite                        replace existing products
    -V, --verbose                          show debugging messages
    --debug                                show the traceback of an error
    -h, --help                             show this help
    --version                              show the version
"""

import logging
import sys
from pathlib import Path

from docopt import DocoptExit, docopt

from . import __version__
from .commonutils.errors import SoxsError, UsageError
from .commonutils.settings import load_settings_file, merge_settings

log = logging.getLogger("soxspipe")

#: The user settings file soxspipe reads when no ``-s`` file and no ./soxspipe.yaml is given.
USER_SETTINGS = Path("~/.config/soxspipe/soxspipe.yaml")

_USER_SETTINGS_TEMPLATE = """\
# soxspipe user settings.
# Any key of soxspipe's bundled default_settings.yaml may be overridden here,
# with the same nesting; a key the defaults do not have is an error. Example:
#
# mbias:
#   default:
#     clipping-lower-sigma: 4.0
#   VIS:
#     frames-min: 5
general: {}
"""


def _recipes():
    from .recipes.soxs_mbias import soxs_mbias
    from .recipes.soxs_mdark import soxs_mdark

    return {"mbias": soxs_mbias, "mdark": soxs_mdark}


def _ensure_user_settings():
    """Create the commented user settings file on first use, so no full copy of the defaults shadows later releases."""
    path = USER_SETTINGS.expanduser()
    if not path.exists():
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(_USER_SETTINGS_TEMPLATE)
        except OSError:
            pass


def load_user_settings(settings_path):
    """Return the complete settings: the bundled defaults with the user's overrides applied.

    The settings file is found the way soxspipe users know from ``fundamentals``:
    the ``-s`` file, else ``./soxspipe.yaml``, else ``~/.config/soxspipe/soxspipe.yaml``.
    """
    if settings_path:
        return load_settings_file(settings_path)
    _ensure_user_settings()
    from fundamentals import tools

    # Only the settings option is handed over: fundamentals exec()s argument values into
    # variables, and must never quit when an identical command line is already running.
    arguments = {"--settings": None}
    try:
        su = tools(
            arguments=arguments,
            docString=__doc__,
            logLevel="WARNING",
            projectName="soxspipe",
            quitIfRunning=False,
            createLogger=False,
        )
    except Exception as exc:
        found = arguments.get("settingsFile", "the user settings file")
        raise UsageError(f"{found}: cannot be read ({exc}); fix or delete it") from None
    _, overrides, _, _ = su.setup()
    return merge_settings(overrides or {}, source=str(arguments.get("settingsFile", "user settings")))


def _setup_logging(verbose):
    """Progress to stdout, warnings to stderr: stderr stays for what needs attention."""
    progress = logging.StreamHandler(sys.stdout)
    progress.setLevel(logging.DEBUG if verbose else logging.INFO)
    progress.addFilter(lambda record: record.levelno < logging.WARNING)
    progress.setFormatter(logging.Formatter("%(message)s"))
    warnings = logging.StreamHandler(sys.stderr)
    warnings.setLevel(logging.WARNING)
    warnings.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
    log.handlers[:] = [progress, warnings]
    log.setLevel(logging.DEBUG if verbose else logging.INFO)
    log.propagate = False


def run_command(arguments):
    """Dispatch parsed command-line ``arguments`` to a recipe or tool; return the exit code."""
    recipes = _recipes()
    command = next(name for name in recipes if arguments.get(name))
    settings = load_user_settings(arguments["--settings"])
    recipe = recipes[command](
        arguments["<inputFrames>"],
        output_dir=arguments["--output-dir"],
        settings=settings,
        overwrite=arguments["--overwrite"],
    )
    for path in recipe.run():
        print(path)
    return 0


def main(argv=None):
    """Entry point of the ``soxspipe`` command."""
    try:
        arguments = docopt(__doc__, argv=argv, version=f"soxspipe {__version__}")
    except DocoptExit as exc:
        print(str(exc), file=sys.stderr)
        return 2
    _setup_logging(arguments.get("--verbose"))
    try:
        return run_command(arguments)
    except SoxsError as exc:
        if arguments.get("--debug"):
            raise
        print(f"soxspipe: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("soxspipe: interrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if arguments.get("--debug"):
            raise
        print(f"soxspipe: internal error: {exc.__class__.__name__}: {exc} (rerun with --debug for the traceback)", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
