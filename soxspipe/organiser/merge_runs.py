"""``reduce all``, last step: merge the two arms of every OB whose per-arm SDP spectra were made.

The per-arm spectra (``<P>_SPEC_VIS``, ``<P>_SPEC_NIR``) recorded for one OB (the
runs' ``obs_id``), with the OB's acquisition-camera catalogues
(``SOURCE_CAT_ACQ_<filter>``, same OB), go into a SOF for ``soxs_merge``, whose
products are written to ``reduced/<night>/merge/``. An OB with one arm only is
reported as skipped, with the reason; a merge whose inputs are older than its
products is not run again unless ``overwrite`` is given.
"""

import logging
import time
from pathlib import Path

from ..commonutils.errors import SoxsError
from ..recipes.soxs_merge import ACQ_TAG, SPECTRUM_TAG, soxs_merge
from .results import DONE, FAILED, OK, SKIPPED, RunResult, move_plots
from .runs import SOF_DIR

log = logging.getLogger(__name__)


def merge_obs(conn, workspace, settings, overwrite=False):
    """Run ``soxs_merge`` on every OB with both arms' spectra; return one RunResult per OB with a spectrum."""
    rows = conn.execute("SELECT p.path, p.tag, p.night, r.obs_id FROM products p JOIN runs r ON r.id = p.run_id "
                        "WHERE r.obs_id IS NOT NULL AND p.qc_status = 'PASS'").fetchall()
    spectra, catalogues = {}, {}
    for row in rows:
        spectrum, acq = SPECTRUM_TAG.match(row["tag"]), ACQ_TAG.match(row["tag"])
        if spectrum:
            key = (row["night"], int(row["obs_id"]), spectrum.group(1))
            spectra.setdefault(key, {})[spectrum.group(2)] = row
        elif acq and acq.group(1) == "SOURCE_CAT":
            catalogues.setdefault(int(row["obs_id"]), []).append(row)
    results = []
    for (night, obs_id, prefix), arms in sorted(spectra.items()):
        name = f"{night}_OB{obs_id}_{prefix}_MERGE"
        setup = f"OB {obs_id} {prefix}"
        if set(arms) != {"VIS", "NIR"}:
            reason = f"only the {', '.join(sorted(arms))} spectrum of OB {obs_id}: no merge (it needs both arms)"
            log.info("merge %s: %s", setup, reason)
            results.append(RunResult(name, "merge", setup, SKIPPED, reason))
            continue
        inputs = [(arms[a]["path"], arms[a]["tag"]) for a in ("VIS", "NIR")]
        inputs += [(c["path"], c["tag"]) for c in catalogues.get(obs_id, [])]
        results.append(_merge(workspace, night, name, setup, inputs, settings, overwrite))
    return results


def _merge(workspace, night, name, setup, inputs, settings, overwrite):
    sof = Path(workspace) / SOF_DIR / f"{name}.sof"
    sof.parent.mkdir(parents=True, exist_ok=True)
    sof.write_text(f"# merge: {setup}, night {night} (written by soxspipe)\n"
                   + "".join(f"../{path} {tag}\n" for path, tag in inputs))
    out = Path(workspace) / "reduced" / night / "merge"
    newest = max((Path(workspace) / p).stat().st_mtime for p, _ in inputs)
    marker = out / f".{name}.done"
    if not overwrite and marker.exists() and marker.stat().st_mtime >= newest:
        return RunResult(name, "merge", setup, DONE, "up to date", marker.read_text().split())
    start = time.perf_counter()
    try:
        paths = soxs_merge(str(sof), output_dir=out, settings=settings, overwrite=True).run()
    except SoxsError as exc:
        return RunResult(name, "merge", setup, FAILED, str(exc), duration=time.perf_counter() - start)
    except Exception as exc:  # one broken merge must not stop the night
        log.debug("%s failed", name, exc_info=True)
        return RunResult(name, "merge", setup, FAILED, f"internal error: {exc.__class__.__name__}: {exc}",
                         duration=time.perf_counter() - start)
    move_plots(out, Path(workspace) / "qc" / night / "merge")
    products = [str(Path(p).resolve().relative_to(Path(workspace).resolve())) for p in paths]
    marker.write_text("\n".join(products))
    return RunResult(name, "merge", setup, OK, products=products, duration=time.perf_counter() - start)
