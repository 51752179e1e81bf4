"""Labelled series from GutenTAG (TimeEval's anomaly generator), for ``python -m bench.labelled --csv OUT``.

    python -m venv /tmp/gt && /tmp/gt/bin/pip install timeeval-gutentag==1.5.0
    /tmp/gt/bin/python bench/gutentag_series.py OUT [FIRST STOP]    # seeds FIRST..STOP-1, default 0..39

GutenTAG pulls in pandas, scikit-learn and neurokit2, so it runs in a venv of its own and only writes files:
OUT/gt_<seed>.csv with ``value,is_anomaly`` (GutenTAG's own labels), and beside it gt_<seed>.json, the config
drawn for it (each anomaly's position, length and kind). The protocol was fixed on 2026-12-05
before any series was looked at (bench/README.md, "A later glitch, a bounded entry"): for seed s, the base
oscillation ``BASES[s % 7]`` with amplitude 1 and noise 0.05, 5,000 readings; four anomalies at 1,500, 2,300,
3,100 and 3,900, each plus 0-199, of a kind drawn from those GutenTAG allows on the base (``KINDS``), one
reading long for an extremum, else 20-100, parameters drawn as ``kind_parameters`` says. Seeds 0-39 judged one
candidate; seeds 40-79 have been generated once and never run.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import numpy as np

BASES = ["sine", "cosine", "ecg", "random-walk", "cylinder-bell-funnel", "square", "sawtooth"]
# (GutenTAG's trend raised a broadcast error on random walks in 1.5.0: left out before the first series)
KINDS = ["extremum", "mean", "variance", "platform", "amplitude", "frequency", "pattern"]
LENGTH = 5000
AT = (1500, 2300, 3100, 3900)


def kinds(base: str) -> list[str]:
    """The kinds GutenTAG's own compatibility table allows on ``base``."""
    from gutenTAG.utils.compatibility import Compatibility

    return [k for k in KINDS if Compatibility.check(k, base)]


def oscillation(base: str, rng: np.random.Generator) -> dict[str, Any]:
    o: dict[str, Any] = {"kind": base, "variance": 0.05, "amplitude": 1.0}
    if base in ("sine", "cosine", "square", "sawtooth", "ecg"):
        o["frequency"] = float(rng.uniform(2, 10))
    if base == "cylinder-bell-funnel":
        o["avg-pattern-length"] = int(rng.integers(40, 120))
    if base == "random-walk":
        o["smoothing"] = 0.01
    return o


def kind_parameters(kind: str, rng: np.random.Generator) -> dict[str, Any]:
    if kind == "extremum":
        return {"kind": kind, "min": bool(rng.integers(0, 2)), "local": bool(rng.integers(0, 2))}
    if kind == "mean":
        return {"kind": kind, "offset": float(rng.choice([-1, 1]) * rng.uniform(0.3, 1.5))}
    if kind == "variance":
        return {"kind": kind, "variance": float(rng.uniform(0.2, 0.8))}
    if kind == "platform":
        return {"kind": kind, "value": float(rng.uniform(-1, 1))}
    if kind == "amplitude":
        return {"kind": kind, "amplitude_factor": float(rng.choice([rng.uniform(0.2, 0.6), rng.uniform(1.5, 3)]))}
    if kind == "frequency":
        return {"kind": kind, "frequency_factor": float(rng.choice([0.5, 2.0]))}
    return {"kind": kind, "sinusoid_k": 10.0, "cbf_pattern_factor": 2.0, "square_duty": 0.8, "sawtooth_width": 0.7}


def config(seed: int) -> dict[str, Any]:
    rng = np.random.default_rng(1000 + seed)
    base = BASES[seed % len(BASES)]
    anomalies = []
    for at in AT:
        kind = str(rng.choice(kinds(base)))
        anomalies.append({
            "exact-position": int(at + rng.integers(0, 200)),
            "length": 1 if kind == "extremum" else int(rng.integers(20, 101)),
            "channel": 0,
            "kinds": [kind_parameters(kind, rng)],
        })  # fmt: skip
    return {
        "name": f"gt_{seed}", "semi-supervised": False, "supervised": False, "channels": 1, "length": LENGTH,
        "base-oscillation": oscillation(base, rng), "anomalies": anomalies,
    }  # fmt: skip


def main() -> None:
    from gutenTAG import GutenTAG

    out = Path(sys.argv[1])
    first, stop = (int(sys.argv[2]), int(sys.argv[3])) if len(sys.argv) > 3 else (0, 40)
    out.mkdir(parents=True, exist_ok=True)
    for seed in range(first, stop):
        generator = GutenTAG(seed=seed, n_jobs=1)
        drawn = config(seed)
        (out / f"gt_{seed}.json").write_text(json.dumps(drawn, indent=1))  # (bench.labelled counts by kind from it)
        generator.load_config_dict({"timeseries": [drawn]})
        frame = generator.generate(return_timeseries=True)[0].timeseries
        with open(out / f"gt_{seed}.csv", "w") as f:
            f.write("value,is_anomaly\n")
            for value, label in zip(frame["value-0"].to_numpy(), frame["is_anomaly"].to_numpy()):
                f.write(f"{float(value)!r},{int(label)}\n")


if __name__ == "__main__":
    main()
