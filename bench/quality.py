"""Forecast quality on defaults: prequential one-step forecasts, MAE over the last 80% of each series, as a
ratio to the last-value forecast's MAE on the same steps (below 1 beats it).

    python -m bench.quality [--nab DIR] [--public] [--fresh] [--holdout] [--fertility FIRST:LAST] [--wheels DIR]
                            [--sensors DIR] [--m1 DIR] [--peers]

Always: the four series shipped with the tests (tests/models/data; the defaults were chosen on them),
on defaults ("after") and on the defaults before seasons ("before": season 1).
``--nab DIR`` (the Numenta Anomaly Benchmark's ``data`` folder): its real series in five folders, the first
4000 points of each, in two sets: the first four files of each folder (used to choose the gate's
settings) and all the others (used to choose nothing).
``--public``: public series used to choose nothing (river's airline passengers; statsmodels' Nile and six
US quarterly macro series); needs river and statsmodels.
``--fresh``: series first looked at on 2026-12-03, after the defaults were chosen (river's water flow and
Trump approval, statsmodels' Danish and German macro series); needs river and statsmodels.
``--holdout``, ``--fertility FIRST:LAST``, ``--wheels DIR``, ``--sensors DIR``: series first run later still,
each to judge a change chosen before it (``holdout_series``, ``fertility_series``, ``wheel_series``,
``sensor_series``); ``--m1 DIR``: the M1 competition's yearly series (``m1_series``).
``--peers``: beside ours, river's SNARIMAX (2,1,1), seasonal (0,1,1) where the period is known, Holt-Winters
(additive, with the known period) and a linear regression on the last three changes; needs river.
"""

from __future__ import annotations

import argparse
import csv
import math
from collections.abc import Callable
from pathlib import Path

import numpy as np
import torch

from tbptt.models import Engine, StreamConfig

TESTS = Path(__file__).resolve().parents[1] / "tests" / "models" / "data"
NAB_FOLDERS = ["realKnownCause", "realTraffic", "realAWSCloudwatch", "realAdExchange", "realTweets"]
POINTS = 4000
PERIODS = {"co2": 52, "elnino": 12, "elec_equip": 12, "airline": 12, "sunspots": 11}  # for the peers only


def values(path: Path) -> np.ndarray:
    with open(path) as f:
        return np.array([float(row[1]) for row in list(csv.reader(f))[1:]][:POINTS])


def ratio(series: np.ndarray, predictions: np.ndarray) -> float:
    """``predictions[k]`` forecasts ``series[k + 1]``."""
    truth, last = series[1:], series[:-1]
    warm = len(series) // 5
    return float(np.abs(predictions[warm:] - truth[warm:]).mean() / np.abs(last[warm:] - truth[warm:]).mean())


def ours(series: np.ndarray, before: bool = False) -> np.ndarray:
    engine = Engine()
    extra = {"season": 1} if before else {}  # before seasons: the defaults of the commit before them
    engine.add_stream("s", StreamConfig(input_size=1, target="next", **extra))
    results = engine.observe_many([("s", [float(v)], None) for v in series])
    return np.array([r.prediction[0] for r in results[:-1]])


def river_forecaster(make: Callable, series: np.ndarray) -> np.ndarray:
    """A river forecaster's one-step forecasts; the last value until it can forecast (Holt-Winters waits for
    its first seasons)."""
    model, out = make(), []
    for v in series[:-1]:
        model.learn_one(float(v))
        try:
            out.append(model.forecast(horizon=1)[0])
        except IndexError:
            out.append(float(v))
    return np.array(out)


def peers(period: int | None) -> dict[str, Callable[[np.ndarray], np.ndarray]]:
    from river import linear_model, optim, preprocessing, time_series

    m = period or 1

    def snarimax() -> object:
        seasonal = {"sp": 0, "sd": 1, "sq": 1, "m": m} if period else {}
        return time_series.SNARIMAX(p=2, d=1, q=1, regressor=preprocessing.StandardScaler() | linear_model.LinearRegression(optimizer=optim.SGD(0.005)), **seasonal)  # fmt: skip

    def holt_winters() -> object:
        return time_series.HoltWinters(alpha=0.3, beta=0.1, gamma=0.5 if period else None, seasonality=period or 0)

    def lagged_changes(series: np.ndarray) -> np.ndarray:
        model, out = preprocessing.StandardScaler() | linear_model.LinearRegression(), []
        for k, features in enumerate(last_changes(series)):
            out.append(series[k] + model.predict_one(features))
            model.learn_one(features, float(series[k + 1] - series[k]))
        return np.array(out)

    return {
        "SNARIMAX": lambda s: river_forecaster(snarimax, s),
        "Holt-Winters": lambda s: river_forecaster(holt_winters, s),
        "LinReg on changes": lagged_changes,
    }


def last_changes(series: np.ndarray) -> list[dict[str, float]]:
    """Per reading k but the last, the features of "LinReg on changes": its last three changes (0 before
    the first reading), ``d0`` the newest."""
    change = np.r_[0.0, np.diff(series)]
    return [{f"d{j}": float(change[k - j]) if k - j >= 0 else 0.0 for j in range(3)} for k in range(len(series) - 1)]


def public_series() -> dict[str, np.ndarray]:
    import statsmodels.api as sm
    from river import datasets

    macro = sm.datasets.macrodata.load_pandas().data
    found = {"airline": np.array([y for _, y in datasets.AirlinePassengers()], dtype=float)}
    found["nile"] = sm.datasets.nile.load_pandas().data["volume"].to_numpy(dtype=float)
    for name in ("realgdp", "realcons", "cpi", "m1", "unemp", "tbilrate"):
        found[f"macro {name}"] = macro[name].to_numpy(dtype=float)
    return found


def fresh_series() -> dict[str, np.ndarray]:
    """Series first looked at on 2026-12-03, after every default had been chosen: river's pipeline water flow
    and Trump approval ratings, statsmodels' Danish money demand and German interest and inflation data."""
    import statsmodels.api as sm
    from river import datasets

    found = {
        "water flow": np.array([y for _, y in datasets.WaterFlow()], dtype=float),
        "trump approval": np.array([y for _, y in datasets.TrumpApproval()], dtype=float),
    }
    rates = sm.datasets.interest_inflation.load_pandas().data
    for name in ("Dp", "R"):
        found[f"interest_inflation {name}"] = rates[name].to_numpy(dtype=float)
    danish = sm.datasets.danish_data.load_pandas().data
    for name in ("lrm", "lry", "lpy", "ibo", "ide"):
        found[f"danish {name}"] = danish[name].to_numpy(dtype=float)
    return found


def holdout_series() -> dict[str, np.ndarray]:
    """Series first run on the evening of 2026-12-03, after the gate's drift candidate had been chosen, to
    judge it: five quarterly US series of statsmodels' macrodata no bench had run, and the fertility rates of
    the first six countries in statsmodels' fertility data with no year missing (1960-2011)."""
    import statsmodels.api as sm

    macro = sm.datasets.macrodata.load_pandas().data
    found = {
        f"macro {name}": macro[name].to_numpy(dtype=float)
        for name in ("realinv", "realgovt", "realdpi", "realint", "pop")
    }
    return found | fertility_series(0, 6)


def fertility_series(first: int, last: int) -> dict[str, np.ndarray]:
    """The fertility rates (1960-2011) of the countries ``first`` to ``last`` - 1 among those with no year
    missing in statsmodels' fertility data, in its order. Countries 6-35 were first run on 2026-12-04 to
    judge the season detection's threshold (``--fertility 6:36``), 36-95 to judge the gate's start (36:96)."""
    import statsmodels.api as sm

    fertility = sm.datasets.fertility.load_pandas().data
    years = [c for c in fertility.columns if c.isdigit() and fertility[c].notna().any()]  # (1960-2011)
    complete = fertility.dropna(subset=years).iloc[first:last]
    return {f"fertility {row['Country Code']}": row[years].to_numpy(dtype=float) for _, row in complete.iterrows()}


WHEELS = "pip download --no-deps pmdarima==2.1.1 sktime==1.2.0 -d DIR"
AEON = "pip download --no-deps aeon==1.6.0 -d DIR"  # (the M1 series, and bench.labelled's)
SKTIME_WHEEL, AEON_WHEEL = "sktime-1.2.0-py3-none-any.whl", "aeon-1.6.0-py3-none-any.whl"


def wheel(folder: Path, name: str, download: str) -> Path:
    """The wheel file ``name`` (a glob pattern) in ``folder``; without it, exit saying how to get it."""
    found = sorted(folder.glob(name))
    if not found:
        raise SystemExit(f"{folder} lacks {name}; put it there with: {download.replace('DIR', str(folder))}")
    return found[0]


PMDARIMA = ("wineind", "woolyrnq", "heartrate", "lynx", "ausbeer", "austres", "taylor")
SKTIME = {  # csv in sktime/datasets/data: the columns taken
    "seatbelts/seatbelts.csv": ("KSI",),
    "Uschange/Uschange.csv": ("Consumption", "Income", "Production", "Savings", "Unemployment"),
    "PBS_dataset/PBS_dataset.csv": ("Scripts",),
    "yahoo/yahoo.csv": ("data",),
    "solar/solar.csv": ("solar_gen",),
}


def wheel_series(folder: Path) -> dict[str, np.ndarray]:
    """Series chosen on the night of 2026-12-03, before any run on them, to judge changes made after: the
    datasets shipped inside two wheels (``WHEELS`` puts them in ``folder``; nothing is installed): pmdarima's
    wine sales, wool production, heart rate, lynx, Australian beer and residents, Taylor's half-hourly
    electricity demand; sktime's UK road casualties (KSI), US changes in consumption, income, production,
    savings and unemployment, Australian prescriptions, Yahoo's synthetic anomaly series, solar generation.
    (Left out: series shorter than 50 readings, the airline passengers and sunspots other sets have, and
    sktime's copy of the lynx series.)"""
    import ast
    import csv
    import io
    import re
    import zipfile

    pmdarima, sktime = wheel(folder, "pmdarima-2.1.1-*.whl", WHEELS), wheel(folder, SKTIME_WHEEL, WHEELS)
    found = {}
    with zipfile.ZipFile(pmdarima) as archive:
        for name in PMDARIMA:
            source = archive.read(f"pmdarima/datasets/{name}.py").decode()
            literal = re.search(r"rslt = np\.array\((\[.*?\])", source, re.S)
            assert literal is not None, name
            values = [v for v in ast.literal_eval(literal.group(1)) if v is not None]  # (ausbeer ends with None)
            found[f"pmdarima {name}"] = np.array(values, dtype=float)
    with zipfile.ZipFile(sktime) as archive:
        for path, columns in SKTIME.items():
            rows = list(csv.DictReader(io.StringIO(archive.read(f"sktime/datasets/data/{path}").decode())))
            for column in columns:
                found[f"sktime {column}"] = np.array([float(r[column]) for r in rows])
    return found


def sensor_series(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    """More of sktime 1.2.0's wheel (``WHEELS`` puts it in ``folder``), in two sets, each chosen on 2026-12-04
    before any run on it, to judge the gate's reversion candidate (bench/README.md, "A reversion candidate").
    The first: an ECG (mitdb), the first 4,000 readings of a household's electric devices and a gun-draw
    motion (the segmentation sets), the first ten appliances' power readings of ACSF1's training file (1,460
    each) and the first ten countries' daily Covid cases of Covid3Month's. The second: the electric devices'
    readings 4,000-7,999, the first 20 appliances' currents of PLAID's training file (200-620 readings), the
    first ten motions of BasicMotions' (the first accelerometer axis, 100 readings), and the first ten of
    ACSF1's and Covid3Month's test files."""
    import csv
    import io
    import zipfile

    data = "sktime/datasets/data"
    first: dict[str, np.ndarray] = {}
    second: dict[str, np.ndarray] = {}
    with zipfile.ZipFile(wheel(folder, SKTIME_WHEEL, WHEELS)) as archive:

        def instances(name: str, split: str, count: int) -> list[np.ndarray]:
            """The first ``count`` series of a .ts file (the first dimension of each)."""
            lines = archive.read(f"{data}/{name}/{name}_{split}.ts").decode().splitlines()
            body = lines[[line.strip().lower() for line in lines].index("@data") + 1 :]
            return [np.array([float(v) for v in line.split(":")[0].split(",")]) for line in body if line.strip()][
                :count
            ]

        ecg = list(csv.DictReader(io.StringIO(archive.read(f"{data}/mitdb/mitdb.csv").decode())))
        first["sktime mitdb"] = np.array([float(r["data"]) for r in ecg])
        for name in ("ElectricDevices", "GunPoint"):
            rows = list(csv.reader(io.StringIO(archive.read(f"{data}/segmentation/{name}.csv").decode())))
            readings = np.array([float(r[1]) for r in rows])
            first[f"sktime {name}"] = readings[:POINTS]
            if name == "ElectricDevices":
                second[f"sktime {name} 4000-7999"] = readings[POINTS : 2 * POINTS]
        for name, split, count, into in (
            ("ACSF1", "TRAIN", 10, first), ("Covid3Month", "TRAIN", 10, first), ("PLAID", "TRAIN", 20, second),
            ("BasicMotions", "TRAIN", 10, second), ("ACSF1", "TEST", 10, second), ("Covid3Month", "TEST", 10, second),
        ):  # fmt: skip
            for i, values in enumerate(instances(name, split, count)):
                into[f"sktime {name} {split.lower()} {i}"] = values
    return {"chosen 2026-12-04 02:05": first, "chosen 2026-12-04 02:13": second}


def m1_series(folder: Path) -> dict[str, np.ndarray]:
    """The 181 yearly series of the M1 forecasting competition (Makridakis et al., 1982; 15-58 readings each),
    as aeon 1.6.0's wheel ships them (``AEON`` puts it in ``folder``; nothing is installed). First run on
    2026-12-04, after every default had been chosen, to see how ours and the peers do on short yearly
    trends."""
    import zipfile

    with zipfile.ZipFile(wheel(folder, AEON_WHEEL, AEON)) as archive:
        text = archive.read("aeon/datasets/data/m1_yearly_dataset/m1_yearly_dataset.tsf").decode()
    body = [line for line in text.splitlines() if line and line[0] not in "#@"]
    return {
        f"m1 {line.split(':')[0]}": np.array([float(v) for v in line.rsplit(":", 1)[1].split(",")]) for line in body
    }


def table(named: dict[str, np.ndarray], with_peers: bool) -> list[float]:
    """One line per series: ours before and after, and the peers'; returns our ratios."""
    after = []
    for name, series in named.items():
        r_before, r_after = ratio(series, ours(series, before=True)), ratio(series, ours(series))
        after.append(r_after)
        line = f"{name:44s} before {r_before:6.3f}  after {r_after:6.3f}"
        if with_peers:
            for peer, forecast in peers(PERIODS.get(name)).items():
                try:
                    line += f"  {peer} {ratio(series, forecast(series)):6.3f}"
                except (OverflowError, ValueError, ZeroDivisionError):
                    line += f"  {peer} failed"
        print(line, flush=True)
    return after


def summary(name: str, ratios: list[float]) -> None:
    rs = [r for r in ratios if math.isfinite(r) and r > 0]
    print(f"{name}: geo-mean {math.exp(np.mean(np.log(rs))):.3f}  max {max(rs):.3f}  "
          f"above 1.02: {sum(r > 1.02 for r in rs)}/{len(rs)}", flush=True)  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--nab", type=Path, help="the NAB data folder (optional)")
    parser.add_argument("--public", action="store_true", help="public series (needs river and statsmodels)")
    parser.add_argument(
        "--fresh", action="store_true", help="series first looked at on 2026-12-03 (river, statsmodels)"
    )
    parser.add_argument(
        "--holdout", action="store_true", help="series first run after the drift candidate was chosen (statsmodels)"
    )
    parser.add_argument("--wheels", type=Path, help=f"series in two wheels, put in a folder by: {WHEELS}")
    parser.add_argument(
        "--fertility",
        metavar="FIRST:LAST",
        help="the fertility rates of these countries (6:36 and 36:96 judged changes)",
    )
    parser.add_argument("--m1", type=Path, help=f"the M1 competition's yearly series, put in a folder by: {AEON}")
    parser.add_argument("--sensors", type=Path, help=f"more series in the sktime wheel, put in a folder by: {WHEELS}")
    parser.add_argument("--peers", action="store_true", help="river's forecasters beside ours (needs river)")
    args = parser.parse_args()
    wheels = None if args.wheels is None else wheel_series(args.wheels)  # (a folder without them fails first)
    sensors = None if args.sensors is None else sensor_series(args.sensors)
    m1 = None if args.m1 is None else m1_series(args.m1)
    torch.set_num_threads(1)
    summary("the tests' four series", table({p.stem: values(p) for p in sorted(TESTS.glob("*.csv")) if p.stem != "macrodata"}, args.peers))  # fmt: skip
    untuned: list[float] = []
    if args.public:
        untuned += table(public_series(), args.peers)
        summary("public series that chose nothing", untuned)
    if args.fresh:
        summary("series first looked at on 2026-12-03", table(fresh_series(), args.peers))
    if args.holdout:
        summary("series first run after the drift candidate was chosen", table(holdout_series(), args.peers))
    if args.fertility:
        first, colon, last = args.fertility.partition(":")
        if not (colon and first.isdigit() and last.isdigit()):
            parser.error(f"--fertility takes FIRST:LAST, two country indices (as 6:36), not {args.fertility!r}")
        named = fertility_series(int(first), int(last))
        summary(f"fertility rates of countries {first}-{int(last) - 1}", table(named, args.peers))
    if wheels is not None:
        summary("series in two wheels, chosen 2026-12-03 night", table(wheels, args.peers))
    for chosen, named in (sensors or {}).items():
        summary(f"more of sktime's wheel, {chosen}", table(named, args.peers))
    if m1 is not None:
        summary("the M1 competition's 181 yearly series", table(m1, args.peers))
    if args.nab is not None:
        folders = [sorted((args.nab / folder).glob("*.csv")) for folder in NAB_FOLDERS]
        summary("NAB, 20 series the gate was chosen on", table({p.stem: values(p) for f in folders for p in f[:4]}, args.peers))  # fmt: skip
        held_out = table({p.stem: values(p) for f in folders for p in f[4:]}, args.peers)
        summary("NAB, 27 series used to choose nothing", held_out)
        untuned += held_out
    if args.public and args.nab is not None:
        summary("all series that chose nothing", untuned)


if __name__ == "__main__":
    main()
