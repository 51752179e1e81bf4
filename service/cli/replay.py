"""``tbptt replay``: stream a CSV file into a stream, then report its prequential error against the naive
forecast (the last value, or in explicit mode the last target), the rows judged anomalous and the coverage
of the prediction intervals, and plot them."""

from __future__ import annotations

import argparse
import json
import math
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from ..client import APIError, Client
from ..episodes import openings
from ..mergepatch import merge_patch
from .main import UsageError, detail_text
from .plot import plot
from .progress import bar, pace
from .table import Table, check_increasing, read


def run(args: argparse.Namespace) -> None:
    table = read(args.file, args.x, args.y, args.ts)
    settings = _settings(args.config)
    forecast = not table.ys
    target = "the next row's inputs" if forecast else ", ".join(table.y_names)
    print(f"{args.stream}: inputs {', '.join(table.x_names)}; target {target}")
    if table.gaps:
        print(f"{args.stream}: {table.gaps} rows with an empty input cell, sent as null (a missing reading)")
    with Client(args.url, args.api_key) as tbptt:
        existing = _config(tbptt, args.stream)
        if table.stamps is not None and (existing or settings or {}).get("timestamps", "increasing") == "increasing":
            check_increasing(args.file, table, args.ts)
        if existing is None or settings is not None:  # (the stream that exists answers whether it has them)
            tbptt.create(args.stream, _body(table, settings or {}))
        observations: list[dict[str, Any]] = [{"x": x} for x in table.xs]
        for obs, y in zip(observations, table.ys):  # (explicit mode; None: no target this row)
            obs["y"] = y
        for obs, ts in zip(observations, table.stamps or []):
            obs["ts"] = ts
        results = _send(tbptt, args, observations, table.lines)
        config = existing if existing is not None and settings is None else tbptt.info(args.stream)["config"]
    # what each judged prediction is compared with (NaN: missing, not judged)
    truth = [
        _row(t, len(table.x_names) if forecast else len(table.y_names))
        for t in (table.xs[1:] if forecast else table.ys)
    ]
    judged = results[:-1] if forecast else results  # the results whose predictions are judged against ``truth``
    predictions = [r["prediction"] for r in judged]
    intervals = [r["interval"] for r in judged]
    flagged = [bool(r["anomalous"]) for r in (results[1:] if forecast else results)]  # per truth row
    print(f"{args.stream}: {len(results)} observations from {args.file.name}")
    carried = _carried([_row(x, len(table.x_names)) for x in table.xs] if forecast else truth)
    naive = carried[1:-1] if forecast else carried[:-1]  # (forecast: the last readings, empty cells carried)
    (mae, rmse), (baseline, _) = _errors(predictions, truth, naive), _errors(naive, truth, naive)
    print(f"prequential MAE {mae:.6g}  RMSE {rmse:.6g}")
    if baseline == baseline:
        name = "last-value" if forecast else "last-target"
        print(f"{name} forecast MAE {baseline:.6g}  (ratio {mae / baseline if baseline else math.inf:.3f})")
    _report_anomalies(flagged, 1 if forecast else 0, config["episode_gap"])
    _report_intervals(intervals, truth, config["coverage"])
    path = args.plot or Path(f"{args.stream}.png")
    plot(path, args.stream, table.x_names[0] if forecast else table.y_names[0], truth, predictions,
         [r["loss"] for r in results], intervals, flagged)  # fmt: skip
    print(f"plot: {path}")


def _report_anomalies(flagged: list[bool], first_row: int, gap: int) -> None:
    """``flagged[k]``: whether truth row k (data row ``k + first_row``, counted from 0) was judged anomalous;
    and the episodes those open (service/episodes.py: this file's alone, as if the stream had none before)."""
    rows = [k + first_row for k, flag in enumerate(flagged) if flag]
    shown = ", ".join(map(str, rows[:10])) + (f", ... ({len(rows) - 10} more)" if len(rows) > 10 else "")
    opened = len(openings(rows, gap))
    print(f"anomalies: {len(rows)} in {opened} episode{'s' * (opened != 1)}"
          + (f" (data rows {shown}, counted from 0)" if rows else ""))  # fmt: skip


def _report_intervals(intervals: list[list[list[float]] | None], truth: list[list[float]], nominal: float) -> None:
    """The empirical coverage (each output's value against its own interval) and mean width of the intervals
    the predictions had (once calibrated), over the targets known whole."""
    pairs = [(band, true) for band, true in zip(intervals, truth) if band is not None and not any(t != t for t in true)]
    if not pairs:
        print("intervals: none yet (they come once the stream has judged 20 predictions)")
        return
    inside = sum(sum(lo <= t <= hi for (lo, hi), t in zip(band, true)) / len(band) for band, true in pairs)
    width = sum(sum(hi - lo for lo, hi in band) / len(band) for band, _ in pairs) / len(pairs)
    print(f"intervals: coverage {inside / len(pairs):.3f} (nominal {nominal:g}) over {len(pairs)} predictions, "
          f"mean width {width:.6g}")  # fmt: skip


def _config(tbptt: Client, stream: str) -> dict[str, Any] | None:
    """The stream's config; None: no such stream yet."""
    try:
        return dict(tbptt.info(stream)["config"])
    except APIError as exc:
        if exc.status != 404:
            raise
        return None


def _settings(given: str | None) -> dict[str, Any] | None:
    """``--config``: a JSON object, inline or from the file after ``@``; None: not given."""
    if given is None:
        return None
    try:
        text = Path(given[1:]).read_text() if given.startswith("@") else given
        settings = json.loads(text)
    except (OSError, ValueError) as exc:
        raise UsageError(f"--config: not a JSON object ({exc})") from None
    if not isinstance(settings, dict):
        raise UsageError(f"--config: not a JSON object (a {type(settings).__name__})")
    return settings


def _body(table: Table, settings: dict[str, Any]) -> dict[str, Any]:
    """The stream's settings: the columns', ``settings`` merged over them (a JSON merge patch, as a tenant's
    template is merged); a ``UsageError`` where those contradict the columns (the stream would be created, then
    refuse the file, or learn from it what it does not hold)."""
    columns: dict[str, Any] = {
        "model": {"input_size": len(table.x_names)},
        "target": "explicit" if table.ys else "next",
    }
    if table.ys:
        columns["model"]["output_size"] = len(table.y_names)
    if table.gaps:
        columns["impute_missing"] = True
    body = merge_patch(columns, settings)
    for path, wanted in _leaves(columns):
        given = _at(body, path)
        if given is not None and given != wanted:
            raise UsageError(f"--config sets {'.'.join(path)} to {json.dumps(given)}, but the file's columns make it "
                             f"{json.dumps(wanted)}: leave it out, or choose the columns with --x and --y")  # fmt: skip
    return body


def _leaves(tree: dict[str, Any], path: tuple[str, ...] = ()) -> list[tuple[tuple[str, ...], Any]]:
    """Each value of ``tree`` that is not an object, with its path."""
    return [
        leaf for key, value in tree.items()
        for leaf in (_leaves(value, (*path, key)) if isinstance(value, dict) else [((*path, key), value)])
    ]  # fmt: skip


def _at(tree: Any, path: tuple[str, ...]) -> Any:
    """The value at ``path``; None where there is none (what the service then says of the body is its own)."""
    for key in path:
        tree = tree.get(key) if isinstance(tree, dict) else None
    return tree


def _send(
    tbptt: Client, args: argparse.Namespace, observations: list[dict[str, Any]], lines: list[int]
) -> list[dict[str, Any]]:
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    with bar(len(observations)) as progress:
        try:
            if args.websocket:
                with tbptt.stream(args.stream) as ws:
                    for k, obs in enumerate(observations):
                        results += ws.send(obs)
                        pace(args.rate, k + 1, started)
                        progress.update(1)
            else:
                size = max(1, min(args.batch, int(args.rate) or args.batch))
                for start in range(0, len(observations), size):
                    chunk = observations[start : start + size]
                    results += tbptt.observe(args.stream, chunk)
                    pace(args.rate, start + len(chunk), started)
                    progress.update(len(chunk))
        except APIError as exc:
            raise _located(exc, args, lines, len(results)) from None
    return results


def _located(exc: APIError, args: argparse.Namespace, lines: list[int], applied: int) -> APIError:
    """A refusal in the middle of the file, its observations named by their rows (the service numbers them
    within the request that it refused), and what of the file the stream has: a user fixes that row and
    replays the rest, or starts afresh."""
    if applied >= len(lines):
        return exc
    detail = exc.detail
    if isinstance(detail, list):  # FastAPI's 422 list: body.observations.K.field -> row N field
        detail = [_row_named(d, lines, applied) for d in detail]
    done = f"rows {lines[0]}-{lines[applied - 1]} were applied to {args.stream}" if applied else "no row was applied"
    return APIError(
        exc.status, f"{args.file.name}: {detail_text(detail)} (from row {lines[applied]} on nothing was; {done})"
    )


def _row_named(item: Any, lines: list[int], first: int) -> Any:
    """One item of a 422 list with observation K of a request that starts at observation ``first`` of the
    file named by its row."""
    loc = item.get("loc") if isinstance(item, dict) else None
    if not isinstance(loc, list) or "observations" not in loc:
        return item
    at = loc.index("observations")
    if at + 1 < len(loc) and isinstance(loc[at + 1], int) and first + loc[at + 1] < len(lines):
        row, rest = f"row {lines[first + loc[at + 1]]}", [str(part) for part in loc[at + 2 :]]
        return {**item, "loc": [f"{row} {rest[0]}" if rest else row, *rest[1:]]}
    return item


def _row(values: Sequence[float | None] | None, width: int) -> list[float]:
    """A row of a table as numbers, all NaN if any is missing (a reading with a missing value is not judged)."""
    if values is None or None in values:
        return [math.nan] * width
    return [v for v in values if v is not None]


def _carried(rows: list[list[float]]) -> list[list[float]]:
    """The last known value of each column before each row, and after the last (NaN: none yet)."""
    last, out = [math.nan] * len(rows[0]), []
    for row in rows:
        out.append(list(last))
        last = [v if v == v else before for v, before in zip(row, last)]
    return [*out, last]


def _errors(predictions: list[list[float]], truth: list[list[float]], naive: list[list[float]]) -> tuple[float, float]:
    """MAE and RMSE over the rows that the server judges: a whole target, and a naive forecast of every value
    (the first target, or a reading predicted before every input had one, was predicted knowing nothing of it)."""
    errors = [
        abs(p - t) for pred, true, base in zip(predictions, truth, naive)
        if all(t == t for t in true) and all(b == b for b in base) for p, t in zip(pred, true)
    ]  # fmt: skip
    if not errors:
        return math.nan, math.nan
    return sum(errors) / len(errors), math.sqrt(sum(e * e for e in errors) / len(errors))
