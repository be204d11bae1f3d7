"""The ``soxspipe`` command line: parses arguments with docopt and dispatches to recipes and tools.

The usage text is built from the recipe registry (:data:`soxspipe.recipes.RECIPES`)
and the tools below, so ``soxspipe -h`` lists exactly the commands that exist.
"""

import gc
import logging
import sys
import time
from pathlib import Path

from docopt import DocoptExit, docopt

from . import __version__
from .commonutils.errors import SoxsError, UsageError
from .commonutils.settings import load_settings_file, merge_settings
import re

from .recipes import RECIPES, recipe_class, recipe_usage

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


RECIPE_OPTIONS = "[-o <outputDirectory>] [-s <pathToSettingsFile>] [-x] [-V] [--debug]"

#: tool commands: usage arguments and one-line description
TOOLS = {
    "simulate": ("<outputDirectory> [--arms=<arms>] [--seed=<n>] [--scenario=<name>] [--night=<date>] [--size=<size>] [-V] [--debug]",
                 "simulate a night of SOXS raw frames, with the truth beside them"),
    "validate": ("<path>... [-V] [--debug]", "check raw frames against the SOXS raw-frame contract"),
    "prep": ("<workspace> [<rawFolder>] [-V] [--debug]",
             "index raw frames into a workspace, write one SOF per recipe run"),
    "reduce": ("all <workspace> [--arms=<arms>] [-s <pathToSettingsFile>] [-x] [-V] [--debug]",
               "run every SOF of a workspace in cascade order"),
    "list": ("(sof|ob) <workspace> [-V] [--debug]", "list a workspace's SOFs or observation blocks"),
    "demo": ("<folder> [--size=<size>] [--arms=<arms>] [--seed=<n>] [-s <pathToSettingsFile>] [-V] [--debug]",
             "simulate a night, prep it, reduce it all"),
}

OPTIONS = """\
Options:
    -o, --output-dir <outputDirectory>     where products go (default: the current folder)
    -s, --settings <pathToSettingsFile>    a YAML file overriding default settings keys
    -x, --overwrite                        replace existing products
    -V, --verbose                          show debugging messages
    --debug                                show the traceback of an error
    --poly=<degrees>                       disp_solution, order_centres: comma-separated polynomial degrees (order,dispersion)
    --arms=<arms>                          simulate, reduce, demo: comma-separated arms [default: VIS,NIR,ACQ]
    --seed=<n>                             simulate: random seed [default: 0]
    --scenario=<name>                      simulate: nominal, flexure or extreme [default: nominal]
    --night=<date>                         simulate: the night's date, YYYY-MM-DD [default: 2025-01-20]
    --size=<size>                          simulate, demo: full (a typical night) or small (fewest frames) [default: full]
    -h, --help                             show this help
    --version                              show the version
"""


def usage():
    """The docopt usage text: one line per recipe and tool, their descriptions, the options."""
    lines = ["soxspipe: reduce SOXS data.", "", "Usage:"]
    lines += [f"    soxspipe {name} <inputFrames> {(recipe_usage(name) + ' ') if recipe_usage(name) else ''}{RECIPE_OPTIONS}"
              for name in RECIPES]
    lines += [f"    soxspipe {name} {args}" for name, (args, _) in TOOLS.items()]
    lines += ["    soxspipe -h | --help", "    soxspipe --version", "", "Commands:"]
    lines += [f"    {name:14s}{entry[2]}" for name, entry in RECIPES.items()]
    lines += [f"    {name:14s}{desc}" for name, (_, desc) in TOOLS.items()]
    lines += ["", "Arguments:",
              "    <inputFrames>       a SOF file (one 'path TAG' per line), a folder of FITS files, or one FITS file",
              "    <workspace>         the organiser's folder: soxspipe.db, raw/<night>/, sof/, reduced/, qc/",
              "    <rawFolder>         prep: the folder holding the raw frames (default: the workspace)",
              "", OPTIONS]
    return "\n".join(lines)


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
            docString=usage(),
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


def run_command(arguments, *, own_process=False):
    """Dispatch parsed command-line ``arguments`` to a recipe or tool; return the exit code.

    ``own_process``: the process ends with the command, so the objects of the modules
    imported for a recipe are frozen (:func:`gc.freeze`) before it runs: they live to
    the end, and the garbage collections during the run need not walk them again.
    """
    command = next(name for name in list(RECIPES) + list(TOOLS) if arguments.get(name))
    if command in TOOLS:
        return TOOL_RUNNERS[command](arguments)
    settings = load_user_settings(arguments["--settings"])
    cls = recipe_class(command)
    if own_process:
        gc.freeze()
    recipe = cls(
        arguments["<inputFrames>"],
        output_dir=arguments["--output-dir"],
        settings=settings,
        overwrite=arguments["--overwrite"],
        options={option: arguments.get(option) for option in re.findall(r"--[\w-]+", recipe_usage(command))},
    )
    for path in recipe.run():
        print(path)
    return 0


def run_simulate(arguments):
    """``soxspipe simulate``: write a simulated night into ``<outputDirectory>/raw`` and ``/truth``."""
    from .simulator import SCENARIOS, simulate_night

    arms = tuple(a.strip().upper() for a in arguments["--arms"].split(",") if a.strip())
    try:
        seed = int(arguments["--seed"])
    except ValueError:
        raise UsageError(f"--seed must be a whole number, not '{arguments['--seed']}'") from None
    if arguments["--scenario"] not in SCENARIOS:
        raise UsageError(f"--scenario must be one of {', '.join(SCENARIOS)}, not '{arguments['--scenario']}'")
    out = Path(arguments["<outputDirectory>"])
    start = time.perf_counter()
    try:
        manifest = simulate_night(out, arms=arms, seed=seed, scenario=arguments["--scenario"],
                                  night=arguments["--night"], size=arguments["--size"])
    except ValueError as exc:
        raise UsageError(str(exc)) from None
    size_mb = sum(f.stat().st_size for f in (out / "raw").iterdir()) / 1e6
    log.info("simulated %s in %.0f s (%.0f MB of raw frames)", out, time.perf_counter() - start, size_mb)
    print(manifest)
    return 0


def run_validate(arguments):
    """``soxspipe validate``: one line per problem; exit code 1 when any file breaks the contract."""
    from .simulator.validate import validate_paths

    return 1 if validate_paths(arguments["<path>"], verbose=arguments["--verbose"]) else 0


def _arms(arguments):
    return tuple(a.strip().upper() for a in arguments["--arms"].split(",") if a.strip())


def run_prep(arguments):
    """``soxspipe prep``: index the raw frames into the workspace database and write the SOFs."""
    from .organiser import format_prep_report, prep

    report = prep(arguments["<workspace>"], arguments["<rawFolder>"])
    print(format_prep_report(report))
    return 0


def run_reduce(arguments):
    """``soxspipe reduce all``: run every SOF in cascade order; exit code 1 when a run failed."""
    from .organiser import format_summary, reduce_all

    settings = load_user_settings(arguments["--settings"])
    results = reduce_all(arguments["<workspace>"], settings=settings, overwrite=arguments["--overwrite"],
                         arms=_arms(arguments))
    print(format_summary(results))
    return 1 if any(r.status == "failed" for r in results) else 0


def run_list(arguments):
    """``soxspipe list sof|ob``: print the workspace's recipe runs or observation blocks."""
    from .organiser import list_obs, list_sofs

    workspace = Path(arguments["<workspace>"])
    if not (workspace / "soxspipe.db").exists():
        raise UsageError(f"{workspace}: no soxspipe database here; run 'soxspipe prep {workspace}' first")
    print(list_sofs(workspace) if arguments["sof"] else list_obs(workspace))
    return 0


def run_demo(arguments):
    """``soxspipe demo``: simulate a night into ``<folder>/simulation``, prep ``<folder>``, reduce it all."""
    from .organiser import format_prep_report, format_summary, prep, reduce_all

    folder = Path(arguments["<folder>"]).resolve()
    settings = load_user_settings(arguments["--settings"])
    simulation = folder / "simulation"
    if not (simulation / "truth" / "manifest.ecsv").exists():
        run_simulate(dict(arguments, **{"<outputDirectory>": str(simulation), "--scenario": "nominal",
                                        "--night": "2025-01-20"}))
    report = prep(folder, simulation / "raw")
    print(format_prep_report(report))
    results = reduce_all(folder, settings=settings, arms=_arms(arguments))
    print(format_summary(results))
    print(f"\nraw frames:  {folder / 'raw'}\nSOFs:        {folder / 'sof'}\nproducts:    {folder / 'reduced'}"
          f"\nQC plots:    {folder / 'qc'}\ndatabase:    {folder / 'soxspipe.db'}\ntruth:       {simulation / 'truth'}")
    return 1 if any(r.status == "failed" for r in results) else 0


#: tool command -> function taking the parsed arguments and returning the exit code
TOOL_RUNNERS = {"simulate": run_simulate, "validate": run_validate, "prep": run_prep, "reduce": run_reduce,
                "list": run_list, "demo": run_demo}


def main(argv=None):
    """Entry point of the ``soxspipe`` command.

    ``argv=None`` (the process's own command line) means the process exits once this
    returns: the objects alive at that point are then frozen (:func:`gc.freeze`), which
    spares the interpreter's final garbage collections a walk through the million
    objects of the imported modules (0.1-0.3 s of a recipe's run).
    """
    try:
        arguments = docopt(usage(), argv=argv, version=f"soxspipe {__version__}")
    except DocoptExit as exc:
        print(str(exc), file=sys.stderr)
        return 2
    _setup_logging(arguments.get("--verbose"))
    try:
        return run_command(arguments, own_process=argv is None)
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
    finally:
        if argv is None:
            gc.freeze()


if __name__ == "__main__":
    sys.exit(main())
