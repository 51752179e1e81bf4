"""Anomaly scores and prediction intervals on defaults (models/anomaly.py).

    python -m bench.anomaly [--nab NAB_DATA_DIR --out OUT_DIR [--feed FEED_DIR]] [--horizon H] [--public]
                            [--fresh] [--holdout] [--wheels DIR] [--sensors DIR] [--idle] [--glitch]
                            [--csv DIR]

Always: the intervals on the four series shipped with the tests. With ``--nab``: every NAB series goes
through a default forecast stream (``input_size`` 1, nothing else set, nothing tuned per series), one
observation at a time in runs of 500; each row's ``anomaly`` (0 where there is none yet) is written in NAB's
result format, OUT_DIR/<folder>/<name>.csv with ``timestamp,value,anomaly_score``, for NAB's scorer. With
``--feed FEED_DIR``: the alerts an operator gets at the defaults, as NAB results too (1 where the stream
would alert, 0 elsewhere): FEED_DIR/alerts (every anomalous reading) and FEED_DIR/openings (the alerts that
open an episode, service/episodes.py).
Printed per series: the intervals' empirical coverage after calibration (nominal 0.9) and their mean width,
beside the same interval built from the last-value forecast's errors by the same
quantile tracker (below 1: ours are narrower). With ``--horizon H``: every series run forecasts H readings
ahead (models/horizon.py), per h the MAE against the last value's h readings ahead, and the coverage and
width of the h-ahead intervals. With ``--public``: the intervals on bench.quality's public series, which
chose nothing (needs river and statsmodels); with ``--fresh``: on its series first looked at on 2026-12-03;
with ``--holdout``: on those first run after the gate's drift candidate; with ``--wheels DIR``: on the
series in two downloaded wheels (bench.quality's ``wheel_series``); with ``--sensors DIR``: on the sensor-like
series of sktime's wheel (bench.quality's ``sensor_series``); with ``--idle``: sensors that idle at 0, then
move (``idle_then_moving``, with ``--horizon H`` the intervals 1..H ahead too; bench/README.md, "Sensors that
idle, then move"); with ``--glitch``: one absurd reading in a default stream of each mode (``glitched``;
bench/README.md, "A glitch on defaults"), whether spikes after it are still flagged (``hidden``), and how wide
the bands are after it (``held_bands``), and an explicit stream's input in new units for good (``moved``);
with ``--csv DIR``: on the ``value`` column of every DIR/*.csv
(``csv_series``: GutenTAG's series, bench/gutentag_series.py).
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Sequence
from pathlib import Path
from statistics import NormalDist

import numpy as np
import torch

from tbptt.models import Engine, StepResult, StreamConfig
from tbptt.models.anomaly import CALIBRATED_AFTER, GAMMA, SCALE_ALPHA
from tbptt.service.episodes import openings

RUN = 500
ALPHA = 0.1  # the intervals' miss rate at the default coverage 0.9 (spelled out: 1 - 0.9 is not 0.1 in floating point)
TESTS = Path(__file__).resolve().parents[1] / "tests" / "models" / "data"


def naive_interval(values: np.ndarray, coverage: float = 0.9) -> tuple[float, float]:
    """Coverage and mean width of the same quantile tracker run on the last-value forecast's errors."""
    errors = values[1:] - values[:-1]
    lo = hi = scale = 0.0
    inside, widths = [], []
    upper, lower = (1 + coverage) / 2, (1 - coverage) / 2
    for k, e in enumerate(errors):
        if k == 0:
            start = NormalDist().inv_cdf(upper) * math.sqrt(math.pi / 2)  # as models/anomaly.py starts
            lo, hi, scale = -start, start, abs(e)
            continue
        u = e / scale if scale > 0 else (0.0 if e == 0 else math.copysign(math.inf, e))
        if k >= CALIBRATED_AFTER:
            inside.append(scale * lo <= e <= scale * hi)  # the band as an interval reports it (a scale of 0: [0, 0])
            widths.append(scale * (hi - lo))
        hi += GAMMA * (upper if u > hi else -lower)
        lo -= GAMMA * (upper if u < lo else -lower)
        scale += max(1.0 / (k + 1.0), SCALE_ALPHA) * (abs(e) - scale)  # (a plain mean until 1 / SCALE_ALPHA)
    return float(np.mean(inside)), float(np.mean(widths))


def run(values: list[float], patterns: bool = False, spread: bool | None = None) -> tuple[list[float], float, float]:
    """A default forecast stream (with ``patterns``, ``spread``) over ``values``: each reading's anomaly score (0
    where there is none yet), its intervals' coverage once calibrated, and their mean width."""
    engine, results = forecast(values, patterns=patterns, spread=spread)
    m = engine.metrics("s")
    assert m.coverage is not None and m.interval_width is not None
    return [r.anomaly if r.anomaly is not None else 0.0 for r in results], m.coverage, m.interval_width


def forecast(
    values: Sequence[float], horizon: int = 1, patterns: bool = False, spread: bool | None = None
) -> tuple[Engine, list[StepResult]]:
    """A default forecast stream (with ``horizon``, ``patterns``, ``spread``) fed ``values`` in runs of ``RUN``:
    it, and its results."""
    engine = Engine()
    config = StreamConfig(input_size=1, target="next", horizon=horizon, patterns=patterns, spread=spread)
    engine.add_stream("s", config)
    results: list[StepResult] = []
    for k in range(0, len(values), RUN):
        results += engine.observe_many([("s", [float(v)], None) for v in values[k : k + RUN]])
    return engine, results


def ahead(series: list[float], horizon: int) -> list[tuple[float, float, float, float]]:
    """A default forecast stream with ``horizon``: per h, (its MAE h readings ahead / the last value's,
    the coverage of its h-ahead intervals once calibrated, their mean width / the last value's h-step MAE,
    their mean interval score / the same MAE)."""
    values = np.array(series)
    _, results = forecast(values, horizon)
    start = len(values) // 5  # the first 20% learn (as bench.quality scores the last 80%)
    out = []
    for h in range(1, horizon + 1):
        steps = range(start, len(values) - h)
        ours = np.mean([abs(results[t].forecast[h - 1][0] - values[t + h]) for t in steps])
        naive = np.mean([abs(values[t] - values[t + h]) for t in steps])
        bands = [(results[t].forecast_intervals[h - 1], values[t + h]) for t in steps]
        bands = [(band[0], v) for band, v in bands if band is not None]
        inside, width, score = scores(np.array([b for b, _ in bands]), np.array([v for _, v in bands])) if bands else (
            math.nan, math.nan, math.nan)  # fmt: skip
        out.append((ours / naive, inside, width / naive, score / naive))
    return out


def scores(bands: np.ndarray, targets: np.ndarray) -> tuple[float, float, float]:
    """(coverage, mean width, mean interval score) of 0.9 ``bands`` (N, 2) for ``targets`` (N,). The interval
    score (Gneiting and Raftery 2007): the width, plus 2 / 0.1 times the distance by which a target missed; lower
    is better, and a band can lower its expected score only by covering what it claims."""
    lo, hi = bands[:, 0], bands[:, 1]
    interval_score = (hi - lo) + 2 / ALPHA * np.maximum(lo - targets, 0) + 2 / ALPHA * np.maximum(targets - hi, 0)
    return float(np.mean((lo <= targets) & (targets <= hi))), float(np.mean(hi - lo)), float(np.mean(interval_score))


def write_nab(rows: list[list[str]], scores: list[float], target: Path) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(target, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["timestamp", "value", "anomaly_score"])
        writer.writerows([r[0], r[1], f"{s:.6f}"] for r, s in zip(rows, scores))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", type=Path, help="NAB's data folder")
    parser.add_argument("--out", type=Path, help="where to write NAB's results, in its format")
    parser.add_argument("--feed", type=Path, help="with --nab: where to write the alerts feed as NAB's results")
    parser.add_argument("--horizon", type=int, default=0, help="also forecast this many readings ahead")
    parser.add_argument("--public", action="store_true", help="public series (needs river and statsmodels)")
    parser.add_argument("--fresh", action="store_true", help="series first looked at on 2026-12-03 (bench.quality)")
    parser.add_argument(
        "--holdout", action="store_true", help="series first run after the gate's drift candidate (bench.quality)"
    )
    parser.add_argument("--wheels", type=Path, help="series in two wheels (bench.quality's WHEELS puts them there)")
    parser.add_argument("--sensors", type=Path, help="more series in sktime's wheel (bench.quality's sensor_series)")
    parser.add_argument("--idle", action="store_true", help="sensors that idle at 0, then move")
    parser.add_argument("--glitch", action="store_true", help="one absurd reading in default streams")
    parser.add_argument("--csv", type=Path, help="every DIR/*.csv's value column (bench/gutentag_series.py's)")
    parser.add_argument("--patterns", action="store_true", help="streams with patterns on (models/pattern.py)")
    parser.add_argument(
        "--no-spread",
        dest="spread",
        action="store_false",
        default=None,
        help="streams without the spread score (models/spread.py)",
    )
    args = parser.parse_args()
    if (args.nab is None) != (args.out is None):
        parser.error("--nab and --out go together")
    if args.feed is not None and args.nab is None:
        parser.error("--feed needs --nab")
    torch.set_num_threads(1)
    tests = {p.stem: [float(r[1]) for r in read(p)] for p in sorted(TESTS.glob("*.csv")) if p.stem != "macrodata"}
    groups = {"the tests' four series": tests}
    if args.public:
        from bench.quality import public_series

        groups["public series that chose nothing"] = {name: list(v) for name, v in public_series().items()}
    if args.fresh:
        from bench.quality import fresh_series

        groups["series first looked at on 2026-12-03"] = {name: list(v) for name, v in fresh_series().items()}
    if args.holdout:
        from bench.quality import holdout_series

        groups["series first run after the drift candidate"] = {name: list(v) for name, v in holdout_series().items()}
    if args.wheels is not None:
        from bench.quality import wheel_series

        groups["series in two wheels, chosen 2026-12-03 night"] = {
            name: list(v) for name, v in wheel_series(args.wheels).items()
        }
    if args.sensors is not None:
        from bench.quality import sensor_series

        for chosen, named in sensor_series(args.sensors).items():
            groups[f"more of sktime's wheel, {chosen}"] = {name: list(v) for name, v in named.items()}
    if args.csv is not None:
        groups[f"the series in {args.csv}"] = csv_series(args.csv)
    if args.idle:
        idle_then_moving(horizon=max(args.horizon, 1), spread=args.spread)
    if args.glitch:
        glitched()
        hidden()
        held_bands()
        moved()
    for name, series in groups.items():
        report(name, series, args.patterns, args.spread)
        if args.horizon > 1:
            report_ahead(name, series, args.horizon)
    if args.nab is not None:
        nab = {f"{path.parent.name}/{path.stem}": read(path) for path in sorted(args.nab.glob("*/*.csv"))}
        nab_values = {name: [float(r[1]) for r in rows] for name, rows in nab.items()}
        scores = report("NAB's 58 series", nab_values, args.patterns, args.spread)
        for name, rows in nab.items():
            write_nab(rows, scores[name], args.out / f"{name}.csv")
        defaults = StreamConfig(input_size=1)
        flagged = [[k for k, s in enumerate(series) if s >= defaults.anomaly_threshold] for series in scores.values()]
        opened = [openings(alerts, defaults.episode_gap) for alerts in flagged]
        print(f"NAB's 58 series: {sum(map(len, flagged))} alerts (scores >= {defaults.anomaly_threshold}), opening "
              f"{sum(map(len, opened))} alert episodes")  # fmt: skip
        if args.feed is not None:
            for (name, rows), alerts, first in zip(nab.items(), flagged, opened):
                for kind, marked in (("alerts", set(alerts)), ("openings", set(first))):
                    write_nab(rows, [float(k in marked) for k in range(len(rows))], args.feed / kind / f"{name}.csv")


def csv_series(folder: Path) -> dict[str, list[float]]:
    """``--csv``: the ``value`` column of every ``folder``/*.csv, by name (gt_2 before gt_10), for series no
    setting was chosen on (GutenTAG's, bench/gutentag_series.py; bench/README.md, "A lone huge error, held and
    taken back": the intervals' judges)."""
    paths = sorted(folder.glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
    if not paths:
        raise SystemExit(f"no .csv under {folder}")
    series = {}
    for path in paths:
        with open(path) as f:
            series[path.stem] = [float(row["value"]) for row in csv.DictReader(f)]
    return series


def idle_then_moving(seed: int = 0, horizon: int = 1, spread: bool | None = None) -> None:
    """Per case (idle 100, 300 or 1,000 readings of 0, then 600 of a noisy sine, a random walk or noise): how
    many of the first 50 and the next 50 moving readings are flagged, how many alert episodes those open
    (service/episodes.py), and the share of the first 100 moving readings inside their intervals (nominal 0.9);
    with ``horizon`` H > 1, that share for the intervals made 1..H readings ahead.
    The first moving reading is the event; on 2026-12-04, 8-20 of the first 50 were flagged, opening 1-2
    episodes, and 55-66% covered; since 2026-12-05 (the scale restarts at the move), 89-92% covered
    (bench/README.md, "Sensors that idle, then move")."""
    rng = np.random.default_rng(seed)
    for idle in (100, 300, 1000):
        for kind in ("sine", "walk", "noise"):
            draws = rng.standard_normal(600)
            move = {"sine": np.sin(np.arange(600) * 2 * np.pi / 24) + 0.1 * draws, "walk": np.cumsum(draws)}
            values = np.concatenate([np.zeros(idle), move.get(kind, draws)])
            _, results = forecast(values, horizon, spread=spread)
            flagged = [bool(r.anomalous) for r in results[idle:]]
            opened = episodes([step for step, flag in enumerate(flagged[:100]) if flag])
            covered = []
            for h in range(1, horizon + 1):  # the band made h readings before each of the first 100 moving ones
                made = results[idle - h + 1 : idle - h + 101]
                bands = [r.interval if h == 1 else r.forecast_intervals[h - 1] for r in made]
                inside = [
                    b is not None and b[0][0] <= y <= b[0][1] for b, y in zip(bands, values[idle + 1 : idle + 101])
                ]
                covered.append(f"{np.mean(inside):.2f}")
            print(f"idle {idle:5d}, then {kind:5s}: flagged {sum(flagged[:50]):2d} of the first 50 moving readings, "
                  f"{sum(flagged[50:100]):2d} of the next 50, opening {opened} alert episodes; the first 100's "
                  f"intervals cover {', '.join(covered)}" + (f" (h = 1..{horizon})" if horizon > 1 else ""))  # fmt: skip


GLITCHES = ((1e6, 300), (1e3, 300), (37.0, 300), (1e6, 5), (0.0, 1500), (0.0, 0))  # (value, reading): 37: 12 deviations


def glitched(seed: int = 11, n: int = 3000) -> None:
    """A sensor glitch on default streams (forecast, levels as inputs, explicit with the sine as input, and
    explicit with the reading before as input, the glitch in it: "input"): a sine plus noise 0.3 around 10 with
    one reading replaced; per case the mean absolute error against the clean series over readings 2,000-3,000,
    as a multiple of the same stream's without the glitch (and of the last value's). Until 2026-12-05 one
    reading of 1e6 set the running statistics' scale for the stream's life; in an explicit stream's input
    until 2026-12-06."""
    rng = np.random.default_rng(seed)
    signal = np.sin(np.arange(n) / 8)
    clean = 10 + 3 * signal + 0.3 * rng.standard_normal(n)
    naive = np.abs(clean[1999:-1] - clean[2000:]).mean()
    for mode in ("forecast", "levels", "explicit", "input"):
        base = _glitch_errors(mode, signal, clean, clean)
        cases = []
        for value, at in GLITCHES:
            values = clean.copy()
            values[at] = value
            err = _glitch_errors(mode, signal, values, clean)
            cases.append(f"{value:g} at {at}: {err / base:.2f}x ({err / naive:.2f})")
        print(f"{mode:8s} (clean {base / naive:.2f} of the last value's): " + "; ".join(cases), flush=True)


HIDDEN_SPIKES = (500, 1000, 2000, 5000)  # spikes of +8 (16 noise deviations) after a glitch or a boot reading


def spiked_pressure(n: int) -> tuple[np.ndarray, np.ndarray]:
    """The sine (n,) and the readings of 1013 + 5 sin + noise 0.5 with spikes of +8 at the ``HIDDEN_SPIKES``
    before ``n`` (the same draws for every ``n``: a shorter run is a prefix of a longer one)."""
    signal = np.sin(np.arange(n) / 20)
    clean = 1013 + 5 * signal + 0.5 * np.random.default_rng(0).standard_normal(n)
    clean[[k for k in HIDDEN_SPIKES if k < n]] += 8.0
    return signal, clean


def hidden(n: int = 6000) -> None:
    """Whether spikes are still flagged after one glitch: readings of 1013 + 5 sin + noise 0.5, spikes of +8 at
    ``HIDDEN_SPIKES``, with no glitch, a first reading of 0 (a sensor at boot), or one reading of 2013 or 1e6
    at 300; per mode the spikes' scores and the stream's alerts (bench/README.md, "A glitch hides the spikes
    after it")."""
    signal, clean = spiked_pressure(n)
    for mode in ("forecast", "explicit"):
        for name, value, at in (
            ("none", None, 0),
            ("0 at boot", 0.0, 0),
            ("2013 at 300", 2013.0, 300),
            ("1e6 at 300", 1e6, 300),
        ):
            values = clean.copy()
            if value is not None:
                values[at] = value
            engine = Engine()
            engine.add_stream("s", StreamConfig(input_size=1, target="next" if mode == "forecast" else "explicit"))
            if mode == "forecast":
                results = engine.observe_many([("s", [float(v)], None) for v in values])
            else:
                results = engine.observe_many([("s", [float(a)], [float(b)]) for a, b in zip(signal, values)])
            scores = " ".join(f"{results[k].anomaly:.3f}" for k in HIDDEN_SPIKES)
            alerts = sum(bool(r.anomalous) for r in results)
            print(f"{mode:8s} {name:11s} spikes at {HIDDEN_SPIKES} score {scores}; alerts {alerts}", flush=True)


def moved(n: int = 12000, at: int = 3000) -> None:
    """Not a glitch: an explicit stream's input that changes units for good at reading ``at`` (20 +- 1 read as
    68 +- 1.8, C to F; the target, 3 sin of the reading before, the same); its errors per 1,000 readings from
    2,000 on, as a multiple of the same stream's whose input never changed (bench/README.md, "A glitch in a
    level": over the stream's life the input was seen ~12x smaller than its new variation; "Levels that
    forget")."""
    rng = np.random.default_rng(0)
    signal = np.sin(np.arange(n) / 5)
    steady = 20 + signal + 0.05 * rng.standard_normal(n)
    target = 3 * np.roll(signal, 1) + 0.05 * rng.standard_normal(n)
    errors = []
    for x in (steady, np.where(np.arange(n) >= at, 32 + 1.8 * steady, steady)):
        engine = Engine()
        engine.add_stream("s", StreamConfig(input_size=1))
        results = engine.observe_many([("s", [float(a)], [float(b)]) for a, b in zip(x, target)])
        error = np.abs(np.array([r.prediction[0] for r in results]) - target)
        errors.append([error[a : a + 1000].mean() for a in range(2000, n, 1000)])
    ratios = " ".join(f"{m / s:.2f}x" for s, m in zip(*errors))
    print(f"input in new units from {at}: errors per 1,000 readings from 2,000, against never: {ratios}", flush=True)


def held_bands(n: int = 2100) -> None:
    """The bands after one reading of 1e6 at 300 among ``hidden``'s readings (its spikes at 500, 1,000, 2,000),
    against the same stream's without it: per mode and h, the mean width over readings 302-1,300 as a multiple
    of the clean stream's, and the coverage over 302-2,000 beside the clean stream's; forecast streams with
    horizon 3, explicit ones h = 1 (bench/README.md, "A lone huge error, held and taken back": 2,000x wide
    before)."""
    signal, clean = spiked_pressure(n)
    glitch = clean.copy()
    glitch[300] = 1e6
    for mode in ("forecast", "explicit"):
        (clean_bands, glitch_bands) = (_bands(mode, signal, values) for values in (clean, glitch))
        cases = []
        for h, ((w_clean, c_clean), (w_glitch, c_glitch)) in enumerate(zip(clean_bands, glitch_bands), start=1):
            cases.append(f"h = {h}: width {w_glitch / w_clean:.2f}x, coverage {c_glitch:.3f} ({c_clean:.3f})")
        print(f"{mode:8s} bands after 1e6 at 300, against none: " + "; ".join(cases), flush=True)


def _bands(mode: str, signal: np.ndarray, values: np.ndarray) -> list[tuple[float, float]]:
    """Per h: the mean width of the bands for readings 302-1,300 and the share of readings 302-2,000 inside."""
    engine, n = Engine(), len(values)
    if mode == "explicit":
        engine.add_stream("s", StreamConfig(input_size=1))
        results = engine.observe_many([("s", [float(a)], [float(b)]) for a, b in zip(signal, values)])
        made = [{k: r.interval for k, r in enumerate(results)}]  # (a result's interval is for its own target)
    else:
        engine.add_stream("s", StreamConfig(input_size=1, target="next", horizon=3))
        results = engine.observe_many([("s", [float(v)], None) for v in values])
        made = [{k + h: r.forecast_intervals[h - 1] for k, r in enumerate(results[: n - h])} for h in (1, 2, 3)]
    out = []
    for bands in made:
        width = np.mean([bands[k][0][1] - bands[k][0][0] for k in range(302, 1301)])
        inside = np.mean([bands[k][0][0] <= values[k] <= bands[k][0][1] for k in range(302, 2001)])
        out.append((float(width), float(inside)))
    return out


def _glitch_errors(mode: str, signal: np.ndarray, values: np.ndarray, clean: np.ndarray) -> float:
    engine = Engine()
    if mode == "explicit":
        engine.add_stream("s", StreamConfig(input_size=1))
        results = engine.observe_many([("s", [float(a)], [float(b)]) for a, b in zip(signal, values)])
        predicted = [r.prediction[0] for r in results[2000:]]
    elif mode == "input":  # (the target the clean reading: the glitch is the input's alone)
        engine.add_stream("s", StreamConfig(input_size=1))
        results = engine.observe_many([("s", [float(a)], [float(b)]) for a, b in zip(values[:-1], clean[1:])])
        predicted = [r.prediction[0] for r in results[1999:]]
    else:
        engine.add_stream("s", StreamConfig(input_size=1, target="next", residual=mode == "forecast"))
        results = engine.observe_many([("s", [float(v)], None) for v in values])
        predicted = [r.prediction[0] for r in results[1999:-1]]
    return float(np.abs(np.array(predicted) - clean[2000:]).mean())


def episodes(steps: list[int]) -> int:
    """How many episodes alerts at ``steps`` open (the service's rule, at the default episode_gap)."""
    return len(openings(steps, StreamConfig(input_size=1).episode_gap))


def read(path: Path) -> list[list[str]]:
    """A series' rows (timestamp, value), without its header."""
    with open(path) as f:
        return list(csv.reader(f))[1:]


def report(
    name: str, series: dict[str, list[float]], patterns: bool = False, spread: bool | None = None
) -> dict[str, list[float]]:
    """Per series a line: its intervals' coverage and width beside the last value's; then a summary. Each
    series' anomaly scores (streams with ``patterns``, ``spread``)."""
    coverages, ratios, scores = [], [], {}
    for label, values in series.items():
        scores[label], coverage, width = run(values, patterns, spread)
        naive_coverage, naive_width = naive_interval(np.array(values))
        ratio = width / naive_width if width and naive_width else math.nan
        coverages.append(coverage)
        ratios.append(ratio)
        print(f"{label:52s} coverage {coverage:.3f}  width {width:.4g}  "
              f"last-value's: coverage {naive_coverage:.3f} width {naive_width:.4g}  ratio {ratio:.3f}", flush=True)  # fmt: skip
    cov = np.array(coverages, dtype=float)
    finite = np.array([r for r in ratios if math.isfinite(r) and r > 0])
    print(f"{name}: coverage: mean {cov.mean():.3f}, min {cov.min():.3f}, max {cov.max():.3f}, within 0.02 of 0.9: "
          f"{int((np.abs(cov - 0.9) <= 0.02).sum())}/{len(cov)}; width / last-value's: geo-mean "
          f"{math.exp(np.log(finite).mean()):.3f}, narrower on {int((finite < 1).sum())}/{len(finite)}")  # fmt: skip
    return scores


def report_ahead(name: str, series: dict[str, list[float]], horizon: int) -> None:
    """Per series a line of ``ahead``'s figures per h; then, per h, the mean coverage, the mean distance of
    coverage from 0.9 and the geometric mean of the interval scores (each / the last value's h-step MAE)."""
    coverage, scores = [], []
    for label, values in series.items():
        rows = ahead(values, horizon)
        coverage.append([c for _, c, _, _ in rows])
        scores.append([s for *_, s in rows])
        print(f"{label:40s} h: MAE / last value's, coverage, width and interval score / last value's MAE: " + "; ".join(
            f"{h}: {r:.3f} {c:.3f} {w:.2f} {s:.3f}" for h, (r, c, w, s) in enumerate(rows, 1)), flush=True)  # fmt: skip
    cov, score = np.array(coverage, dtype=float), np.array(scores, dtype=float)  # (series, H)
    geo = [math.exp(np.log(column[np.isfinite(column) & (column > 0)]).mean()) for column in score.T]
    print(f"{name}, h = 1..{horizon}: coverage: mean " + ", ".join(f"{c:.3f}" for c in np.nanmean(cov, axis=0))
          + "; distance from 0.9: mean " + ", ".join(f"{d:.3f}" for d in np.nanmean(np.abs(cov - 0.9), axis=0))
          + "; interval score / last value's MAE: geo-mean " + ", ".join(f"{g:.3f}" for g in geo))  # fmt: skip


if __name__ == "__main__":
    main()
