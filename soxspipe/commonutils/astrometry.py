"""Astrometry of an imaging frame: match detected sources to a catalogue and fit a TAN WCS.

The raw header gives only the nominal pointing and the plate scale; the real
pointing may be off by several arcsec and rotated by a few degrees. The match
is a vote: the catalogue is projected through the nominal WCS, rotated by each
angle of a grid, and every (source, star) pair votes for its offset in a 2D
histogram; the angle and offset with the most votes, if well above what random
pairs give, is the first solution. Nearest-neighbour matches then feed
:func:`astropy.wcs.utils.fit_wcs_from_points` (TAN), refitted with outliers
clipped. A match that is not significant, too few matched stars or a fit that
leaves large residuals raise :class:`AstrometryError`: never a silently wrong WCS.
No I/O.
"""

import logging
from dataclasses import dataclass

import numpy as np
from astropy import units as u
from astropy.coordinates import SkyCoord
from astropy.wcs import WCS
from astropy.wcs.utils import fit_wcs_from_points, proj_plane_pixel_scales
from scipy.spatial import cKDTree

from .errors import DataError

log = logging.getLogger(__name__)


class AstrometryError(DataError):
    """The frame's sources and the catalogue do not give a trustworthy WCS."""


@dataclass
class PatternMatch:
    """The best rotation (deg, about ``centre``) and shift (px) taking catalogue pixels onto sources."""

    rotation: float
    dx: float
    dy: float
    votes: int
    expected: float
    centre: tuple


@dataclass
class AstrometricSolution:
    """A fitted WCS and the matches behind it.

    ``source_index`` and ``catalogue_index`` are the matched pairs used in the final
    fit (outliers removed); ``residuals`` their (east, north) offsets, fitted position
    minus catalogue, in arcsec.
    """

    wcs: WCS
    source_index: np.ndarray
    catalogue_index: np.ndarray
    residuals: np.ndarray
    rms_arcsec: float
    rotation_deg: float
    scale_arcsec: float
    offset_arcsec: tuple

    @property
    def n_matched(self):
        """Number of matched stars in the final fit."""
        return int(self.source_index.size)


def nominal_wcs(ra, dec, scale_arcsec, shape):
    """TAN WCS at (``ra``, ``dec``) on the frame centre, north up and east left, ``scale_arcsec`` per pixel."""
    w = WCS(naxis=2)
    w.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    w.wcs.crval = [float(ra), float(dec)]
    w.wcs.crpix = [(shape[1] + 1) / 2.0, (shape[0] + 1) / 2.0]
    w.wcs.cd = scale_arcsec / 3600.0 * np.array([[-1.0, 0.0], [0.0, 1.0]])
    return w


def _rotate(x, y, angle_deg, centre):
    c, s = np.cos(np.radians(angle_deg)), np.sin(np.radians(angle_deg))
    dx, dy = x - centre[0], y - centre[1]
    return centre[0] + c * dx - s * dy, centre[1] + s * dx + c * dy


def match_pattern(xy, cat_xy, centre, *, max_offset, max_rotation=0.0, rotation_step=0.25, bin_size=3.0):
    """Find the rotation and shift that lay catalogue positions onto detected ones by voting.

    Parameters
    ----------
    xy : (n, 2) array
        Detected positions (px), the brightest few tens are enough.
    cat_xy : (m, 2) array
        Catalogue positions projected to pixels with the nominal WCS.
    centre : (float, float)
        Rotation centre (px).
    max_offset : float
        Largest shift searched (px).
    max_rotation, rotation_step : float
        Rotations searched (deg): ``-max_rotation .. +max_rotation`` by ``rotation_step``.
    bin_size : float
        Vote bin (px); a rotation step misplaces stars at the field edge by
        ``radius * step / 2`` (radians), which should stay within a bin.

    Returns
    -------
    PatternMatch
        ``votes`` is the winning bin's count (the two bins either side included),
        ``expected`` what random pairs would give there.
    """
    xy, cat_xy = np.asarray(xy, float), np.asarray(cat_xy, float)
    n_angles = int(round(max_rotation / rotation_step)) if max_rotation > 0 else 0
    angles = np.arange(-n_angles, n_angles + 1) * rotation_step
    edges = np.arange(-max_offset, max_offset + bin_size, bin_size)
    best = None
    n_pairs = 0
    for angle in angles:
        cx, cy = _rotate(cat_xy[:, 0], cat_xy[:, 1], angle, centre)
        dx = (xy[:, 0][:, None] - cx[None, :]).ravel()
        dy = (xy[:, 1][:, None] - cy[None, :]).ravel()
        near = (np.abs(dx) < max_offset) & (np.abs(dy) < max_offset)
        n_pairs = max(n_pairs, int(near.sum()))
        hist, _, _ = np.histogram2d(dx[near], dy[near], bins=[edges, edges])
        # a true offset may straddle bin edges: count 2x2 blocks
        blocks = hist[:-1, :-1] + hist[1:, :-1] + hist[:-1, 1:] + hist[1:, 1:]
        if blocks.size == 0:
            continue
        i, j = np.unravel_index(np.argmax(blocks), blocks.shape)
        votes = int(blocks[i, j])
        if best is None or votes > best[0]:
            sel = near & (dx >= edges[i]) & (dx < edges[i + 2]) & (dy >= edges[j]) & (dy < edges[j + 2])
            best = (votes, angle, float(np.median(dx[sel])), float(np.median(dy[sel])))
    n_cells = max(1, (len(edges) - 1) ** 2)
    expected = 4.0 * n_pairs / n_cells
    if best is None:
        return PatternMatch(0.0, 0.0, 0.0, 0, expected, tuple(centre))
    votes, angle, dx, dy = best
    return PatternMatch(float(angle), dx, dy, votes, expected, tuple(centre))


def nearest_pairs(xy, cat_xy, radius):
    """One-to-one nearest pairs within ``radius``: (source index, catalogue index, distance)."""
    if len(cat_xy) == 0 or len(xy) == 0:
        return np.zeros(0, int), np.zeros(0, int), np.zeros(0)
    dist, idx = cKDTree(cat_xy).query(xy, distance_upper_bound=radius)
    src = np.nonzero(np.isfinite(dist))[0]
    cat, dist = idx[src], dist[src]
    # a catalogue star claimed twice keeps its nearest source only
    order = np.argsort(dist)
    _, first = np.unique(cat[order], return_index=True)
    keep = order[first]
    return src[keep], cat[keep], dist[keep]


def _residuals(wcs, xy, ra, dec):
    """(east, north) offsets (arcsec) of the WCS positions of ``xy`` from (ra, dec)."""
    fra, fdec = wcs.all_pix2world(xy[:, 0], xy[:, 1], 0)
    east = (fra - ra + 540.0) % 360.0 - 180.0
    return np.column_stack([east * np.cos(np.radians(dec)), fdec - dec]) * 3600.0


def solve_wcs(xy, ra, dec, cat_order, guess, shape, *, max_offset_arcsec=30.0, max_rotation_deg=5.0,
              rotation_step_deg=0.25, bin_px=3.0, n_pattern=60, match_radius_px=(6.0, 2.0), clip_sigma=3.0,
              iterations=3, min_matches=8, max_rms_arcsec=0.5, max_scale_error=0.02):
    """Solve the astrometry of a frame.

    Parameters
    ----------
    xy : (n, 2) array
        Detected source positions (px, 0-based), brightest first.
    ra, dec : array
        Catalogue positions (deg).
    cat_order : array
        A brightness ranking of the catalogue (e.g. its magnitudes; smaller is brighter).
    guess : astropy.wcs.WCS
        The nominal WCS (see :func:`nominal_wcs`).
    shape : tuple
        ``(ny, nx)`` of the frame.
    max_offset_arcsec, max_rotation_deg, rotation_step_deg, bin_px, n_pattern :
        The pattern search: largest pointing offset and rotation searched, the rotation
        step, the vote bin, and how many of the brightest sources and catalogue stars vote.
    match_radius_px : (float, float)
        Matching radius of the first fit and of the refits (px).
    clip_sigma, iterations :
        Outlier clipping of the refits.
    min_matches : int
        Fewer matched stars (or a vote peak below it) is an error.
    max_rms_arcsec : float
        A larger residual RMS is an error.
    max_scale_error : float
        A fitted plate scale further than this fraction from the nominal one is an error.

    Returns
    -------
    AstrometricSolution

    Raises
    ------
    AstrometryError
        No significant match, too few matches, a bad fit.
    """
    xy = np.asarray(xy, float)
    ra, dec = np.asarray(ra, float), np.asarray(dec, float)
    nominal_scale = float(np.mean(proj_plane_pixel_scales(guess))) * 3600.0
    max_offset = max_offset_arcsec / nominal_scale
    cx, cy = guess.all_world2pix(ra, dec, 0)
    cat_xy = np.column_stack([cx, cy])
    ny, nx = shape
    near = (cx > -max_offset) & (cx < nx + max_offset) & (cy > -max_offset) & (cy < ny + max_offset)
    if len(xy) < min_matches:
        raise AstrometryError(f"only {len(xy)} sources detected, at least {min_matches} are needed for the astrometry")
    if near.sum() < min_matches:
        raise AstrometryError(f"the reference catalogue has only {int(near.sum())} stars within {max_offset_arcsec:g} "
                              f"arcsec of the frame at the nominal pointing; it does not cover this field")
    cat_idx = np.nonzero(near)[0]
    cat_idx = cat_idx[np.argsort(np.asarray(cat_order, float)[cat_idx], kind="stable")]
    centre = ((nx - 1) / 2.0, (ny - 1) / 2.0)
    # the catalogue is deeper than the frame: vote with as many stars as the frame's sources allow
    n_src = min(n_pattern, len(xy))
    pm = match_pattern(xy[:n_src], cat_xy[cat_idx[: 2 * n_pattern]], centre, max_offset=max_offset,
                       max_rotation=max_rotation_deg, rotation_step=rotation_step_deg, bin_size=bin_px)
    threshold = max(min_matches, pm.expected + 5.0 * np.sqrt(pm.expected))
    log.info("pattern match: rotation %.2f deg, shift (%.1f, %.1f) px, %d votes (random pairs: %.1f)",
             pm.rotation, pm.dx, pm.dy, pm.votes, pm.expected)
    if pm.votes < threshold:
        raise AstrometryError(
            f"no significant match between the {len(xy)} detected sources and the catalogue: best {pm.votes} pairs "
            f"agree where random pairs give {pm.expected:.1f} (need {threshold:.0f}); the pointing is more than "
            f"{max_offset_arcsec:g} arcsec or {max_rotation_deg:g} deg off the nominal one, or the catalogue is wrong")
    px, py = _rotate(cx, cy, pm.rotation, centre)
    guess_xy = np.column_stack([px + pm.dx, py + pm.dy])
    src, cat, _ = nearest_pairs(xy, guess_xy, match_radius_px[0])
    wcs = None
    for it in range(iterations + 1):
        if src.size < min_matches:
            raise AstrometryError(f"only {src.size} sources match catalogue stars (need {min_matches})")
        stars = SkyCoord(ra[cat] * u.deg, dec[cat] * u.deg)
        wcs = fit_wcs_from_points((xy[src, 0], xy[src, 1]), stars, proj_point="center", projection="TAN")
        res = _residuals(wcs, xy[src], ra[cat], dec[cat])
        sep = np.hypot(res[:, 0], res[:, 1])
        if it == iterations:
            break
        # re-match every catalogue star through the new WCS, then clip outliers of the fit
        fx, fy = wcs.all_world2pix(ra, dec, 0)
        src, cat, dist = nearest_pairs(xy, np.column_stack([fx, fy]), match_radius_px[1])
        res = _residuals(wcs, xy[src], ra[cat], dec[cat])
        sep = np.hypot(res[:, 0], res[:, 1])
        if sep.size:
            sigma = 1.4826 * np.median(sep) / 1.1774  # a 2D Gaussian's median radius is 1.1774 sigma
            keep = sep <= max(clip_sigma * sigma, 1e-3)
            src, cat = src[keep], cat[keep]
    rms = float(np.sqrt(np.mean(sep**2)))
    scale = float(np.mean(proj_plane_pixel_scales(wcs))) * 3600.0
    cd = wcs.wcs.cd if wcs.wcs.has_cd() else wcs.wcs.get_pc() * wcs.wcs.cdelt[:, None]
    rotation = float(np.degrees(np.arctan2(cd[0, 1], -cd[0, 0]) if np.linalg.det(cd) < 0 else np.arctan2(cd[0, 1], cd[0, 0])))
    cra, cdec = wcs.all_pix2world([centre[0]], [centre[1]], 0)
    nra, ndec = guess.all_pix2world([centre[0]], [centre[1]], 0)
    offset = (float((cra[0] - nra[0] + 540) % 360 - 180) * np.cos(np.radians(ndec[0])) * 3600.0,
              float(cdec[0] - ndec[0]) * 3600.0)
    log.info("WCS: %d stars, rms %.3f arcsec, scale %.4f arcsec/px, rotation %.2f deg, offset (%.1f, %.1f) arcsec",
             src.size, rms, scale, rotation, *offset)
    if abs(scale / nominal_scale - 1) > max_scale_error:
        raise AstrometryError(f"the fitted plate scale {scale:.4f} arcsec/px is more than {100 * max_scale_error:g} % "
                              f"from the nominal {nominal_scale:.4f}: the match is wrong")
    if rms > max_rms_arcsec:
        raise AstrometryError(f"the WCS fit leaves {rms:.2f} arcsec rms residuals (limit {max_rms_arcsec:g}): the match is wrong")
    return AstrometricSolution(wcs, src, cat, res, rms, rotation, scale, offset)


def match_offset(ref_xy, xy, *, max_offset, bin_size=2.0, radius=2.0, min_matches=5):
    """Translation (px) taking positions ``xy`` of one frame onto ``ref_xy`` of another: ``(dx, dy, n)``.

    Used to register frames of one pointing before they are stacked.

    Raises
    ------
    AstrometryError
        Fewer than ``min_matches`` sources agree on a shift.
    """
    ref_xy, xy = np.asarray(ref_xy, float), np.asarray(xy, float)
    pm = match_pattern(ref_xy, xy, (0.0, 0.0), max_offset=max_offset, bin_size=bin_size)
    if pm.votes < min_matches:
        raise AstrometryError(f"the frames share too few sources ({pm.votes}) to be registered")
    src, cat, _ = nearest_pairs(ref_xy, xy + [pm.dx, pm.dy], radius)
    if src.size < min_matches:
        raise AstrometryError(f"the frames share too few sources ({src.size}) to be registered")
    d = ref_xy[src] - xy[cat]
    return float(np.median(d[:, 0])), float(np.median(d[:, 1])), int(src.size)
