"""Reading a CSV file of numbers for replay: which columns, and every value checked, naming row and column.

An empty input cell is a missing reading (sent as null: the stream imputes it); a row whose target cells are
all empty has no target. A time column named with ``--ts`` is sent as each observation's timestamp.
"""

from __future__ import annotations

import csv
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path

from .main import UsageError

# Columns that say when or which row, not what was measured: never inputs unless named with --x.
TIME_LIKE = re.compile(r"^(t|ts|time|timestamp|date|datetime|day|month|year|index|idx|row|id|step|seq)$", re.I)


@dataclass(frozen=True)
class Table:
    x_names: list[str]
    y_names: list[str]
    xs: list[list[float | None]]  # None: an empty cell, a missing reading
    ys: list[list[float] | None]  # empty: no target columns (forecast the next row); None: no target this row
    lines: list[int]  # each row's line in the file (1: the header), for messages
    stamps: list[float] | None = None  # each row's time (Unix seconds), from the --ts column

    @property
    def gaps(self) -> int:
        """Rows with a missing input."""
        return sum(None in x for x in self.xs)


def read(path: Path, x_spec: str | None, y_spec: str | None, ts_spec: str | None = None) -> Table:
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows:
        raise UsageError(f"{path} is empty: expected a header row and rows of numbers")
    header, body = rows[0], [(n, r) for n, r in enumerate(rows[1:], start=2) if any(v.strip() for v in r)]
    if not body:
        raise UsageError(f"{path} has a header but no rows")
    y_cols = _columns(header, y_spec)
    ts_cols = _columns(header, ts_spec)
    if len(ts_cols) > 1:
        raise UsageError(f"--ts names one column, got {ts_spec!r}")
    x_cols = _columns(header, x_spec) or _default_inputs(header, body, y_cols + ts_cols)
    if not x_cols:
        raise UsageError(f"no numeric input columns in {path}: name them with --x (the columns: {', '.join(header)})")
    return Table(
        [header[c] for c in x_cols], [header[c] for c in y_cols], _values(path, header, body, x_cols),
        _targets(path, header, body, y_cols) if y_cols else [],
        [number for number, _ in body], _stamps(path, header, body, ts_cols[0]) if ts_cols else None,
    )  # fmt: skip


def check_increasing(path: Path, table: Table, column: str) -> None:
    """Refuse, before anything is sent, a file whose times do not increase row after row: a stream that takes
    its readings in the order of their times refuses such a row, and the rows before it would have been
    applied (the stream half replayed)."""
    stamps, lines = table.stamps or [], table.lines
    for k in range(1, len(stamps)):
        if not stamps[k] > stamps[k - 1]:
            raise UsageError(
                f"{path}, row {lines[k]}, column {column!r}: {_iso(stamps[k])} is not after row {lines[k - 1]}'s "
                f"{_iso(stamps[k - 1])}; the stream takes readings in the order of their times (its timestamps: "
                'increasing): sort the file, or create the stream first with "timestamps": "any"'
            )


def _iso(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat().replace("+00:00", "Z")


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


def _default_inputs(header: list[str], body: list[tuple[int, list[str]]], taken: list[int]) -> list[int]:
    """Every column whose first cell that is not empty is a number, and that is neither taken (targets, the
    time) nor a time or index column. (Judged by the first row alone, a channel whose first cells are empty,
    one that starts late, was left out.)"""
    return [
        c for c, name in enumerate(header)
        if c not in taken and not TIME_LIKE.match(name.strip()) and _number(_first_cell(body, c)) is not None
    ]  # fmt: skip


def _first_cell(body: list[tuple[int, list[str]]], col: int) -> str:
    """The column's first cell that is not empty ("" if none)."""
    return next((row[col] for _, row in body if col < len(row) and row[col].strip()), "")


def _values(
    path: Path, header: list[str], body: list[tuple[int, list[str]]], cols: list[int]
) -> list[list[float | None]]:
    """The numbers in ``cols`` of each row; an empty cell: None."""
    out = []
    for number, row in body:
        values: list[float | None] = []
        for c in cols:
            if c >= len(row):
                raise UsageError(f"{path}, row {number}: no value for column {header[c]!r} (the row is short)")
            value = _number(row[c])
            if value is None and row[c].strip():
                raise UsageError(f"{path}, row {number}, column {header[c]!r}: {row[c]!r} is not a finite number")
            values.append(value)
        out.append(values)
    return out


def _targets(
    path: Path, header: list[str], body: list[tuple[int, list[str]]], cols: list[int]
) -> list[list[float] | None]:
    """Each row's targets: all given, or all empty (no target for that row)."""
    out: list[list[float] | None] = []
    for (number, _), values in zip(body, _values(path, header, body, cols)):
        given = [v for v in values if v is not None]
        if given and len(given) < len(values):
            empty = header[cols[values.index(None)]]
            raise UsageError(f"{path}, row {number}, column {empty!r}: empty, while the row's other targets are not")
        out.append(given or None)
    return out


def _stamps(path: Path, header: list[str], body: list[tuple[int, list[str]]], col: int) -> list[float]:
    """The column's times as Unix seconds: numbers are Unix seconds; ISO 8601 text without an offset is UTC."""
    out = []
    for number, row in body:
        text = row[col].strip() if col < len(row) else ""
        seconds = _number(text)
        if seconds is None:
            try:
                parsed = datetime.fromisoformat(text)
            except ValueError:
                raise UsageError(
                    f"{path}, row {number}, column {header[col]!r}: {text!r} is not a time (ISO 8601 or Unix seconds)"
                ) from None
            seconds = (parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)).timestamp()
        out.append(seconds)
    return out


def _number(text: str) -> float | None:
    try:
        value = float(text)
    except ValueError:
        return None
    return value if math.isfinite(value) else None
