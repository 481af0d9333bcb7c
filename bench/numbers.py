"""How a measured number is printed, the same in the terminal and in generated tables."""

from __future__ import annotations

import math


def format_number(value: float | None, digits: int = 3) -> str:
    """``digits`` significant digits, scientific outside [1e-3, 1e4); "–" for missing or NaN, "inf" for ±inf."""
    if value is None or math.isnan(value):
        return "–"
    if math.isinf(value):
        return "inf"
    return f"{value:.{digits}g}" if value == 0 or 1e-3 <= abs(value) < 1e4 else f"{value:.{digits - 1}e}"
