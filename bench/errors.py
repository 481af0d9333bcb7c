"""Errors a user can fix.

Anything raised as a :class:`UserError` reaches the command line as one line
(``error: <message>``) with exit code 2 and no traceback, so its message must
name the problem and the fix. Everything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import difflib
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
    choices = list(choices)
    close = difflib.get_close_matches(name, choices, n=1, cutoff=0.6)
    if not close and name:
        # Prefix matches catch short typos difflib scores low ("gs" -> "gst").
        close = [c for c in choices if c.startswith(name) or name.startswith(c)][:1]
    return f"; did you mean {close[0]!r}?" if close else ""
