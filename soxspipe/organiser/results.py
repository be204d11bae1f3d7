"""The outcome of the organiser's runs: :class:`RunResult`, the statuses, and where their QC plots go."""

import shutil
from dataclasses import dataclass, field

#: statuses of a run in the summary
OK, FAILED, SKIPPED, DONE = "ok", "failed", "skipped", "done"


@dataclass
class RunResult:
    """The outcome of one run in ``reduce all``."""

    name: str
    recipe: str
    setup: str
    status: str  #: ok (ran now), failed, skipped (could not run) or done (up to date, not run again)
    reason: str = ""
    products: list = field(default_factory=list)  #: workspace-relative product paths
    duration: float = 0.0


def move_plots(out, qc_dir):
    """Move the QC plots a recipe wrote into ``<out>/qc/`` to the workspace's ``qc/<night>/<recipe>/``."""
    plots = out / "qc"
    if not plots.is_dir():
        return
    qc_dir.mkdir(parents=True, exist_ok=True)
    for plot in plots.iterdir():
        shutil.move(str(plot), str(qc_dir / plot.name))
    try:
        plots.rmdir()
    except OSError:
        pass
