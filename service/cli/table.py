"""Reading a CSV file of numbers for replay: which columns, and every value checked, naming row and column."""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from pathlib import Path

from .main import UsageError

# Columns that say when or which row, not what was measured: never inputs unless named with --x.
TIME_LIKE = re.compile(r"^(t|ts|time|timestamp|date|datetime|day|month|year|index|idx|row|id|step|seq)$", re.I)


@dataclass(frozen=True)
class Table:
    x_names: list[str]
    y_names: list[str]
    xs: list[list[float]]
    ys: list[list[float]]  # empty: no target columns (forecast the next row)


def read(path: Path, x_spec: str | None, y_spec: str | None) -> Table:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise UsageError(f"{path} is empty: expected a header row and rows of numbers")
    header, body = rows[0], [(n, r) for n, r in enumerate(rows[1:], start=2) if any(v.strip() for v in r)]
    if not body:
        raise UsageError(f"{path} has a header but no rows")
    y_cols = _columns(header, y_spec)
    x_cols = _columns(header, x_spec) or _default_inputs(header, body, y_cols)
    if not x_cols:
        raise UsageError(f"no numeric input columns in {path}: name them with --x (the columns: {', '.join(header)})")
    return Table(
        [header[c] for c in x_cols], [header[c] for c in y_cols], _values(path, header, body, x_cols),
        _values(path, header, body, y_cols) if y_cols else [],
    )  # fmt: skip


def _columns(header: list[str], spec: str | None) -> list[int]:
    if not spec:
        return []
    picked = []
    for name in (n.strip() for n in spec.split(",")):
        if name.isdigit() and int(name) < len(header):
            picked.append(int(name))
        elif name in header:
            picked.append(header.index(name))
        else:
            raise UsageError(f"no column {name!r}: the columns are {', '.join(header)}")
    return picked


def _default_inputs(header: list[str], body: list[tuple[int, list[str]]], y_cols: list[int]) -> list[int]:
    """Every column that is numeric in the first row and is neither a target nor a time or index column."""
    _, first = body[0]
    return [
        c for c, name in enumerate(header)
        if c not in y_cols and not TIME_LIKE.match(name.strip()) and c < len(first) and _number(first[c]) is not None
    ]  # fmt: skip


def _values(path: Path, header: list[str], body: list[tuple[int, list[str]]], cols: list[int]) -> list[list[float]]:
    out = []
    for number, row in body:
        values = []
        for c in cols:
            if c >= len(row):
                raise UsageError(f"{path}, row {number}: no value for column {header[c]!r} (the row is short)")
            value = _number(row[c])
            if value is None:
                raise UsageError(f"{path}, row {number}, column {header[c]!r}: {row[c]!r} is not a finite number")
            values.append(value)
        out.append(values)
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
