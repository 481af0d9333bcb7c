"""Errors a user can fix.

Anything raised as a :class:`UserError` reaches the command line as one line
(``error: <message>``) with exit code 2 and no traceback, so its message must
name the problem and the fix. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

from typing import Iterable


class UserError(Exception):
    """Bad input: an unknown name, a bad value, a missing or corrupt file."""


class SpecError(UserError):
    """A malformed or invalid ``NAME(key=value, ...)`` specification."""


class DataError(UserError):
    """A data file or folder that is missing, unreadable or not what was expected."""


def did_you_mean(name: str, choices: Iterable[str]) -> str:
    """'; did you mean X?' for the closest choice, or '' when nothing is close.

    Lives with the errors because every "unknown name" message uses it.
    """
    from .typos import closest  # transpositions and doubled letters too (Damerau–Levenshtein)

    close = closest(name, list(choices))
    return f"; did you mean {close!r}?" if close else ""
