"""Labelled series of counts, for ``python -m bench.labelled --csv OUT``: sensors that count events.

    python -m bench.count_series OUT [FIRST STOP]    # seeds FIRST..STOP-1, default 0..39

GutenTAG's series (bench/gutentag_series.py) are continuous; a counter is not. Its readings are whole numbers,
busy hours and quiet ones, and in the quiet ones long runs of zeros that are its nature, not a fault (NAB's
Twitter_volume_CVS is one). The protocol was fixed on 2026-12-08 before any series was generated
(bench/README.md, "A counter's quiet hours"): for seed s, 5,000 readings of a Poisson count whose rate follows a
day of 144 readings, ``level`` (2-30 events a reading) at the day's peak and ``night`` (0-3%) of it through the
half of the day when the sine is below 0; four anomalies, one of each kind in ``KINDS`` in a random order, at
1,500, 2,300, 3,100 and 3,900, each plus 0-199 and then moved on to the next busy reading (the sine above 0.3):
an ``outage`` (zeros for 20-100 readings), a ``surge`` (the rate x3 for 20-100), a ``drop`` (the rate x0.3 for
20-100), a ``burst`` (one reading of ten times the peak rate). Written beside each OUT/ct_<seed>.csv
(``value,is_anomaly``): ct_<seed>.json, with each anomaly's position and kind as bench.labelled reads them.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np

DAY = 144  # readings a day (ten minutes each)
LENGTH = 5_000
AT = (1_500, 2_300, 3_100, 3_900)
KINDS = ("outage", "surge", "drop", "burst")
BUSY = 0.3  # an anomaly starts where the day's sine is above this


def series(seed: int) -> tuple[np.ndarray, np.ndarray, dict]:
    """The counts (LENGTH,), their labels (LENGTH,) and the config they were drawn from, for ``seed``."""
    rng = np.random.default_rng(seed)
    level, night = float(rng.uniform(2.0, 30.0)), float(rng.uniform(0.0, 0.03))
    t = np.arange(LENGTH)
    sine = np.sin(2 * np.pi * t / DAY)
    rate = level * (night + (1 - night) * np.maximum(sine, 0.0))
    labels = np.zeros(LENGTH, dtype=np.int64)
    anomalies, outages = [], np.zeros(LENGTH, dtype=bool)
    for at, kind in zip(AT, rng.permutation(KINDS)):
        start = at + int(rng.integers(0, 200))
        while sine[start] <= BUSY:
            start += 1
        length = 1 if kind == "burst" else int(rng.integers(20, 101))
        span = slice(start, start + length)
        if kind == "outage":
            outages[span] = True
        elif kind == "surge":
            rate[span] *= 3.0
        elif kind == "drop":
            rate[span] *= 0.3
        else:
            rate[span] = 10.0 * level
        labels[span] = 1
        anomalies.append({"exact-position": start, "length": length, "kinds": [{"kind": str(kind)}]})
    counts = rng.poisson(rate).astype(np.float64)
    counts[outages] = 0.0
    return counts, labels, {"seed": seed, "level": level, "night": night, "anomalies": anomalies}


def main(out: Path, first: int = 0, stop: int = 40) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(first, stop):
        counts, labels, config = series(seed)
        rows = "".join(f"{int(v)},{int(a)}\n" for v, a in zip(counts, labels))
        (out / f"ct_{seed}.csv").write_text("value,is_anomaly\n" + rows)
        (out / f"ct_{seed}.json").write_text(json.dumps(config, indent=1))


if __name__ == "__main__":
    main(Path(sys.argv[1]), *(int(a) for a in sys.argv[2:4]))
