"""Errors a user can fix.

Anything raised as a :class:`UserError` reaches the command line as one line
(``error: <message>``) with exit code 2 and no traceback, so its message must
name the problem and the fix. Everything else is a bug and keeps its traceback.
"""


class UserError(Exception):
    """Bad input: an unknown name, a bad value, a missing or corrupt file."""


class SpecError(UserError):
    """A malformed or invalid ``NAME(key=value, ...)`` specification."""


class DataError(UserError):
    """A data file or folder that is missing, unreadable or not what was expected."""
