"""Result writing of the command layer: CSV files and Markdown tables.

Every run of :mod:`cutswap_lib.runs` writes its rows with :func:`write_csv` and prints / saves
its tables with :func:`format_results_table`; the notebooks print their tables with it too.
"""

from __future__ import annotations

import csv
import math
import numbers
from pathlib import Path

__all__ = ["format_results_table", "write_csv"]


def write_csv(rows: list[dict], path: Path, columns: list[str]) -> Path:
    """Write ``rows`` to ``path`` as CSV (parent folders created)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return path


def _cell(value, floatfmt: str) -> str:
    if value is None:
        return ""
    if hasattr(value, "item") and getattr(value, "ndim", 0) == 0:  # numpy / torch scalar
        value = value.item()
    if isinstance(value, numbers.Real) and not isinstance(value, (bool, numbers.Integral)):
        return "n/a" if math.isnan(value) else format(value, floatfmt)
    return str(value).replace("|", "\\|").replace("\n", " ")


def format_results_table(rows, columns=None, floatfmt: str = ".3f") -> str:
    """list of dicts -> Markdown table: header, separator, one line per row; floats as ``floatfmt``.

    ``columns`` picks and orders the columns (default: every key, in order of first
    appearance); a missing value is an empty cell, NaN is ``n/a``; numeric columns are
    right-aligned.
    """
    rows = list(rows)
    if columns is None:
        columns = list(dict.fromkeys(key for row in rows for key in row))
    columns = list(columns)
    if not columns:
        raise ValueError("format_results_table needs at least one column")

    def numeric(col) -> bool:
        values = [r.get(col) for r in rows if r.get(col) is not None]
        return bool(values) and all(
            isinstance(v, numbers.Number) or (hasattr(v, "item") and getattr(v, "ndim", 1) == 0)
            for v in values) and not any(isinstance(v, bool) for v in values)

    header = "| " + " | ".join(_cell(c, floatfmt) for c in columns) + " |"
    separator = "|" + "|".join("---:" if numeric(c) else "---" for c in columns) + "|"
    lines = ["| " + " | ".join(_cell(r.get(c), floatfmt) for c in columns) + " |" for r in rows]
    return "\n".join([header, separator, *lines])
