"""Sets of files (SOF): what a recipe reduces.

A SOF file holds one ``path TAG`` per line; ``#`` starts a comment and blank lines
are skipped; relative paths resolve against the SOF's own folder. A directory or a
list of FITS files may stand in for a SOF file: the tags then come from the headers.
"""

from dataclasses import dataclass
from pathlib import Path

from .classify import classify_header
from .errors import DataError, UsageError
from .fitsio import is_fits_name, read_header


@dataclass(frozen=True)
class SofEntry:
    """One line of a SOF: a file and the tag it is given (None: take it from the header)."""

    path: Path
    tag: str | None


def parse_sof_file(sof_path):
    """Parse a SOF file into :class:`SofEntry` items, in the order given.

    Raises
    ------
    UsageError
        The SOF is missing, empty, or a line is not ``path TAG``.
    DataError
        A file the SOF names does not exist.
    """
    sof_path = Path(sof_path)
    if not sof_path.is_file():
        raise UsageError(f"{sof_path}: SOF file not found; give the path of a file listing one 'path TAG' per line")
    entries = []
    for number, line in enumerate(sof_path.read_text().splitlines(), start=1):
        content = line.split("#", 1)[0].strip()
        if not content:
            continue
        parts = content.split()
        if len(parts) != 2:
            raise UsageError(f"{sof_path}:{number}: expected 'path TAG', found '{content}'")
        path = Path(parts[0]).expanduser()
        if not path.is_absolute():
            path = sof_path.parent / path
        if not path.exists():
            raise DataError(f"{sof_path}:{number}: {path} does not exist; fix the path or remove the line")
        entries.append(SofEntry(path=path, tag=parts[1]))
    if not entries:
        raise UsageError(f"{sof_path}: the SOF lists no files")
    return entries


def sof_entries(source):
    """Return the :class:`SofEntry` items of a SOF file, a directory, one FITS file, or a list of FITS files."""
    if isinstance(source, (list, tuple)):
        paths = [Path(p) for p in source]
        missing = [p for p in paths if not p.exists()]
        if missing:
            raise DataError(f"{missing[0]}: file not found")
        return [SofEntry(path=p, tag=None) for p in paths]
    source = Path(source)
    if source.is_dir():
        paths = sorted(p for p in source.iterdir() if p.is_file() and is_fits_name(p))
        if not paths:
            raise UsageError(f"{source}: the folder holds no FITS files")
        return [SofEntry(path=p, tag=None) for p in paths]
    if is_fits_name(source):
        return sof_entries([source])
    return parse_sof_file(source)


def read_sof(source):
    """Read and classify every frame of a SOF.

    Returns
    -------
    list of FrameInfo
        One per file, in SOF order, with ``tag`` as the SOF gives it (or from the header).

    Raises
    ------
    DataError
        A file cannot be read or classified, or its SOF tag contradicts its header.
    """
    return read_sof_inputs(source)[0]


def read_sof_inputs(source, static_tags=()):
    """Read a SOF whose entries tagged with one of ``static_tags`` are not FITS frames.

    Static inputs (e.g. a reference catalogue, tag ``REF_CAT``) are neither read
    nor classified here: they are returned by tag for the recipe to read.

    Returns
    -------
    frames : list of FrameInfo
        The FITS frames, as :func:`read_sof` gives them.
    static : dict
        ``{tag: Path}`` of the static inputs.

    Raises
    ------
    DataError
        As :func:`read_sof`; also a static tag given twice.
    """
    frames, static = [], {}
    for entry in sof_entries(source):
        if entry.tag in static_tags:
            if entry.tag in static:
                raise DataError(f"{entry.path}: a second {entry.tag} in the SOF (first: {static[entry.tag]}); give one")
            static[entry.tag] = entry.path
            continue
        info = classify_header(read_header(entry.path), entry.path)
        if entry.tag is not None and entry.tag != info.tag:
            raise DataError(f"{entry.path}: the SOF tags it {entry.tag} but its header makes it {info.tag}; fix the tag in the SOF")
        frames.append(info)
    return frames, static
