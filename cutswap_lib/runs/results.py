"""Result writing of the command layer: CSV files and Markdown tables.

Every run of :mod:`cutswap_lib.runs` writes its rows with :func:`write_csv` (atomically: an
interrupt leaves the previous file whole) and prints / saves its tables with
:func:`format_results_table`; the notebooks print their tables with it too.

Results accumulate: :func:`merge_rows` adds a run's rows to the rows already in a results CSV,
replacing only those with the same key (the same dataset, category, method, variant, coreset /
setting, seed and :func:`settings_fingerprint`), so a run on another category, seed or setting
never erases earlier results, and the Markdown table is made again from all of them.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import json
import math
import numbers
from pathlib import Path

from ..files import atomic_write, atomic_write_text

__all__ = ["fingerprint", "format_results_table", "merge_rows", "read_csv_rows", "rows_with_settings", "settings_fingerprint",
           "write_csv", "write_text"]


def write_csv(rows: list[dict], path: Path, columns: list[str]) -> Path:
    """Write ``rows`` to ``path`` as CSV, atomically (parent folders created)."""
    with atomic_write(path, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    return Path(path)


def write_text(path: Path, text: str) -> Path:
    """Write a Markdown (or any text) file atomically."""
    return atomic_write_text(path, text)


def fingerprint(*parts) -> str:
    """16 hex digits of SHA-1 over tensors (their bytes, shape, dtype) and JSON-able values, in order."""
    h = hashlib.sha1()
    for part in parts:
        if hasattr(part, "detach"):  # a torch.Tensor (this module does not import torch)
            t = part.detach().cpu().contiguous()
            h.update(f"{tuple(t.shape)} {t.dtype}".encode())
            h.update(t.numpy().tobytes())
        else:
            h.update(json.dumps(part, sort_keys=True, default=str).encode())
    return h.hexdigest()[:16]


def settings_fingerprint(settings, exclude=("seeds", "coresets")) -> str:
    """12 hex digits of SHA-1 over a dataclass's fields (nested dataclasses included), as JSON.

    ``exclude``: fields that are row keys of their own (a run over seeds 0-2 and a later run
    over seed 3 share a fingerprint, so one table can hold all four seeds).
    """
    fields = dataclasses.asdict(settings) if dataclasses.is_dataclass(settings) else dict(settings)
    return fingerprint({k: v for k, v in fields.items() if k not in exclude})[:12]


def _typed(value: str, like):
    """A CSV cell back in the type of ``like`` (the same column in a new row); '' is None."""
    if value == "":
        return None
    if isinstance(like, bool):
        return value == "True"
    if isinstance(like, int):
        return int(float(value))
    if isinstance(like, float) or like is None:
        try:
            return float(value)
        except ValueError:
            return value
    return value


def read_csv_rows(path: Path, like: dict) -> list[dict]:
    """Rows of a results CSV, each cell in the type of the same column of ``like`` (a new row)."""
    path = Path(path)
    if not path.is_file():
        return []
    with path.open(newline="") as fh:
        return [{k: _typed(v or "", like.get(k, "")) for k, v in row.items() if k is not None}
                for row in csv.DictReader(fh)]


def merge_rows(path: Path, rows: list[dict], key: tuple[str, ...]) -> list[dict]:
    """The rows of ``path`` (if it exists) with ``rows`` added; an old row with the same ``key`` is dropped.

    Old rows keep their order, new rows follow. Columns a new row lacks stay as read.
    """
    if not rows:
        return read_csv_rows(path, {})
    new_keys = {tuple(str(r.get(k)) for k in key) for r in rows}
    old = [r for r in read_csv_rows(path, rows[0]) if tuple(str(r.get(k)) for k in key) not in new_keys]
    return old + list(rows)


def rows_with_settings(rows: list[dict], fingerprint: str, source: str) -> tuple[list[dict], str]:
    """The rows made with ``fingerprint`` and a note counting the others (``source``: the CSV's name)."""
    same = [r for r in rows if r.get("settings") == fingerprint]
    other = len(rows) - len(same)
    note = f"\n{other} row(s) of {source} were made with other settings and are not in this table." if other else ""
    return same, note


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
