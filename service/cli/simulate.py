"""``tbptt simulate``: synthetic sensors (a daily-like sine, noise, slow drift, rare spikes), sent to the
service or written to a CSV file."""

from __future__ import annotations

import argparse
import csv
import math
import random
import time
from collections.abc import Iterator

from ..client import Client
from .progress import bar, pace


def _readings(count: int, seed: int = 0) -> Iterator[tuple[int, list[float]]]:
    """Endless readings of ``count`` synthetic sensors: a daily-like sine, noise, slow drift, rare spikes."""
    rng = random.Random(seed)
    phases = [rng.uniform(0, 2 * math.pi) for _ in range(count)]
    levels = [rng.uniform(10, 50) for _ in range(count)]
    t = 0
    while True:
        t += 1
        yield (
            t,
            [
                levels[k] + 5 * math.sin(2 * math.pi * t / 96 + phases[k]) + 0.01 * t + rng.gauss(0, 0.3)
                for k in range(count)
            ],
        )


def run(args: argparse.Namespace) -> None:
    rng = random.Random(1)
    ticks = max(1, int(args.seconds * args.rate))
    readings = _readings(args.streams)
    if args.csv:
        with open(args.csv, "w", newline="") as f:
            writer = csv.writer(f)
            writer.writerow(["t", *[f"sim-{k}" for k in range(args.streams)]])
            for _ in range(ticks):
                t, values = next(readings)
                writer.writerow([t, *(round(v + (rng.choice([-1, 1]) * 20 if rng.random() < args.anomalies else 0), 4)
                                      for v in values)])  # fmt: skip
        print(f"wrote {ticks} readings of {args.streams} sensors to {args.csv}")
        return
    with Client(args.url, args.api_key) as tbptt:
        for k in range(args.streams):
            tbptt.create(f"sim-{k}", {"model": {"input_size": 1}, "target": "next"})
        started = time.monotonic()
        with bar(ticks, unit="tick") as progress:
            for tick in range(ticks):
                _, values = next(readings)
                spikes = [v + (rng.choice([-1, 1]) * 20 if rng.random() < args.anomalies else 0) for v in values]
                tbptt.observe_many([{"stream": f"sim-{k}", "x": v} for k, v in enumerate(spikes)])
                pace(args.rate, tick + 1, started)
                progress.update(1)
    print(f"sent {ticks * args.streams} readings to {args.streams} streams (sim-0 ... sim-{args.streams - 1})")
