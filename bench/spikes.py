"""Spikes injected into series nothing was chosen on: how many an operator is alerted to, and what else.

    python -m bench.spikes DIR [--series] [--explicit]

DIR holds the wheels of bench.quality's ``wheel_series`` and ``sensor_series`` (``pip download --no-deps
pmdarima==2.1.1 sktime==1.2.0 -d DIR``); the public, fresh and held-out series need river and statsmodels.
Every series of at least ``LEAST`` readings gets spikes of ``SIZE`` times its median absolute change (its
mean, where that is 0), the first at a quarter of its length and then one every eighth of it, signs
alternating. A default forecast stream reads it in runs of 500. Printed per group: the spikes flagged (the
reading or the one after it: the last value still carries a spike), and the alerts elsewhere (not within 2
readings after a spike), out of how many readings; with ``--series``, the same per series, with each spike's
score. With ``--explicit``, the streams are explicit-mode ones instead, whose input is the previous reading and
whose target is the reading (what a user with no other inputs would send). bench/README.md, "A spike's echo a
season later" and "An explicit stream's first target".
"""

from __future__ import annotations

import argparse
from pathlib import Path

import numpy as np
import torch

from bench.anomaly import RUN, forecast
from tbptt.models import Engine, StepResult, StreamConfig

LEAST = 300  # readings a series needs to be spiked (shorter ones have hardly learnt their season)
SIZE = 10  # a spike, in median absolute changes


def injected(values: np.ndarray) -> tuple[np.ndarray, list[int]]:
    """``values`` with spikes added, and where they are."""
    spiked = np.asarray(values, dtype=float).copy()
    change = np.abs(np.diff(spiked))
    size = SIZE * (float(np.median(change)) or float(change.mean()) or 1.0)
    at = list(range(len(spiked) // 4, len(spiked) - 2, max(len(spiked) // 8, 1)))
    for k, a in enumerate(at):
        spiked[a] += size if k % 2 == 0 else -size
    return spiked, at


def counted(alerts: list[int], at: list[int]) -> tuple[int, int]:
    """The spikes ``at`` alerted to (the reading or the next), and the ``alerts`` not within 2 after one."""
    near = {a + d for a in at for d in (0, 1, 2)}
    flagged = set(alerts)
    return sum(a in flagged or a + 1 in flagged for a in at), sum(k not in near for k in alerts)


def explicit(values: np.ndarray) -> list[StepResult | None]:
    """A default explicit stream fed, in runs of ``RUN``, each reading as the target of the previous one: its
    result for each reading (None for the first, which has no previous reading)."""
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=1))
    results: list[StepResult | None] = [None]
    for k in range(1, len(values), RUN):
        run = range(k, min(k + RUN, len(values)))
        results += engine.observe_many([("s", [float(values[t - 1])], [float(values[t])]) for t in run])
    return results


def spiked_run(values: np.ndarray, explicit_mode: bool = False) -> tuple[int, int, int, list[float]]:
    """``values`` with spikes, read by a default forecast stream (or an ``explicit`` one): the spikes flagged,
    how many there were, the alerts elsewhere, and each spike's score (the higher of the reading's and the
    next one's)."""
    spiked, at = injected(values)
    results = explicit(spiked) if explicit_mode else forecast(list(spiked))[1]
    hits, elsewhere = counted([k for k, r in enumerate(results) if r is not None and r.anomalous], at)
    scores = [max(results[a].anomaly or 0.0, results[a + 1].anomaly or 0.0) for a in at]
    return hits, len(at), elsewhere, scores


def groups(folder: Path) -> dict[str, dict[str, np.ndarray]]:
    from bench.quality import fresh_series, holdout_series, public_series, sensor_series, wheel_series

    found = {"public": public_series(), "fresh": fresh_series(), "held-out": holdout_series()}
    found["wheels"] = wheel_series(folder)
    for chosen, named in sensor_series(folder).items():
        found[f"sensors, {chosen}"] = named
    return found


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help="where the wheels are")
    parser.add_argument("--series", action="store_true", help="a line per series, with each spike's score")
    parser.add_argument("--explicit", action="store_true", help="explicit streams: the previous reading as input")
    args = parser.parse_args()
    torch.set_num_threads(1)
    totals = np.zeros(3, dtype=int)
    for group, series in groups(args.folder).items():
        row, readings, count = np.zeros(3, dtype=int), 0, 0
        for name, values in series.items():
            if len(values) < LEAST:
                continue
            hits, spikes, elsewhere, scores = spiked_run(values, args.explicit)
            row += (hits, spikes, elsewhere)
            readings, count = readings + len(values), count + 1
            if args.series:
                print(f"  {name[:40]:40s} {len(values):6,d} readings: flagged {hits} / {spikes}, elsewhere "
                      f"{elsewhere:3d}; scores {' '.join(f'{v:.3f}' for v in scores)}")  # fmt: skip
        totals += row
        print(f"{group:32s} {count:3d} series: spikes flagged {row[0]:3d} / {row[1]:3d}, "
              f"alerts elsewhere {row[2]:3d} in {readings:,} readings", flush=True)  # fmt: skip
    print(f"all: spikes flagged {totals[0]} / {totals[1]}, alerts elsewhere {totals[2]}")


if __name__ == "__main__":
    main()
