"""The exceptions soxspipe raises for bad input.

Each carries the exit code the command line returns: 2 for usage problems
(command line, SOF, settings), 1 for problems with the data.
"""


class SoxsError(Exception):
    """Base of every soxspipe input error; the message names the file and the fix."""

    exit_code = 1


class UsageError(SoxsError):
    """The command line, a SOF file or a settings file is wrong (exit code 2)."""

    exit_code = 2


class SettingsError(UsageError):
    """A settings file is unreadable or holds a key soxspipe does not know."""


class DataError(SoxsError):
    """A data file is missing, unreadable, of the wrong kind or inconsistent (exit code 1)."""


class ProductExistsError(SoxsError):
    """A product would overwrite an existing file and overwriting was not asked for."""
