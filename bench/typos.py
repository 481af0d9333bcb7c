"""Closest name to a typo, for "did you mean" hints.

The distance is Damerau–Levenshtein's (optimal string alignment): insertions, deletions,
substitutions and transpositions of adjacent letters each cost one, so the commonest
typos — swapped letters ("gtss"), doubled letters ("gsst"), a dropped letter ("gt") —
are all within one or two edits of the intended name.
"""

from __future__ import annotations

from typing import Iterable


def edit_distance(a: str, b: str) -> int:
    """Edits (insert, delete, substitute, swap two adjacent letters) turning ``a`` into ``b``."""
    previous2: list[int] = []
    previous = list(range(len(b) + 1))
    for i in range(1, len(a) + 1):
        row = [i] + [0] * len(b)
        for j in range(1, len(b) + 1):
            cost = a[i - 1] != b[j - 1]
            row[j] = min(previous[j] + 1, row[j - 1] + 1, previous[j - 1] + cost)
            if i > 1 and j > 1 and a[i - 1] == b[j - 2] and a[i - 2] == b[j - 1]:
                row[j] = min(row[j], previous2[j - 2] + 1)
        previous2, previous = previous, row
    return previous[-1]


def closest(name: str, choices: Iterable[str]) -> str | None:
    """The choice nearest to ``name`` (case-insensitive), or None when none is plausibly meant.

    Plausible: at most two edits per five letters of the longer word (at least one edit, at
    most three), or a prefix of it either way ("gs" -> "gst"). Ties go to the first choice.
    """
    if not name or len(name) > 100:  # a typo is short; a long string is not worth an O(n·m) search
        return None
    typed = name.lower()
    best, best_distance = None, None
    for choice in choices:
        distance = edit_distance(typed, choice.lower())
        allowed = min(3, max(1, round(0.4 * max(len(typed), len(choice)))))
        if distance <= allowed and (best_distance is None or distance < best_distance):
            best, best_distance = choice, distance
    if best is None:
        best = next((c for c in choices if c.startswith(name) or name.startswith(c)), None)
    return best
