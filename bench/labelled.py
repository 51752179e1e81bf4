"""Anomaly scores on labelled series that chose nothing: ours against river's detectors (bench.anomaly_peers).

    python -m bench.labelled DIR
    python -m bench.labelled --csv DIR    # every DIR/*.csv of value,is_anomaly (bench/gutentag_series.py writes them)
    python -m bench.labelled --csv DIR --peers pad_unclipped sad gaussian rcf    # and Random Cut Forest (rrcf)

DIR holds aeon 1.6.0's wheel (``pip download --no-deps aeon==1.6.0 -d DIR``; nothing is installed), which
ships two univariate series with labelled anomalies: the UCR anomaly archive's InternalBleeding16 (KDD
Cup 2021, series 135: 1,200 normal readings to learn from, then one anomaly of 12 readings among 6,300) and
a synthetic ECG with 300 anomalous readings among 10,000 (GutenTAG's ecg-diff-count-3). Every detector runs
online on defaults, scoring each reading before it learns it. Printed per series and detector: where the
highest score after the learning part falls, a hit if within 100 readings of a labelled one (the UCR
archive's own measure), and the area under the ROC curve of the scores against the labels there; and
ours' alerts, the episodes they open, and whether each labelled region is near an alert and an opening.
First run on 2026-12-04, after every default had been chosen (the score was chosen on NAB).

With ``--csv DIR``: series of several labelled regions each (runs of anomalous readings). Per series and
detector, the ROC area of the scores; ours' alerts at its default threshold, the regions they find (an alert
within the region or ``AFTER`` readings after it) and the alerts elsewhere (beyond ``SETTLE`` readings after
every region); and each peer at the same alert budget (its highest-scored readings, as many as ours alerted
on: river's detectors have no threshold of ours' meaning), found and elsewhere likewise. Totals at the end.
"""

from __future__ import annotations

import argparse
import csv
import io
import json
import zipfile
from pathlib import Path

import numpy as np
import torch

from bench.anomaly import forecast, run
from bench.anomaly_peers import DETECTORS, scores
from bench.quality import AEON, AEON_WHEEL, wheel
from tbptt.models import StreamConfig
from tbptt.service.episodes import openings

DATA = "aeon/datasets/data"
SERIES = {  # name: (file in the wheel, readings to learn from before judging)
    "UCR 135 InternalBleeding16": ("KDD-TSAD_135/135_UCR_Anomaly_InternalBleeding16_TEST.csv", 1200),
    "ecg-diff-count-3": ("UnitTest/ecg-diff-count-3_TEST.csv", 0),
}
PEERS = ("pad_unclipped", "sad", "gaussian")
NEAR = 100  # a highest score this close to a labelled reading is a hit
AFTER = 10  # --csv: an alert this soon after a region finds it ...
SETTLE = 50  # ... and one this soon after a region is not elsewhere (a detector's aftermath)


def labelled(folder: Path) -> dict[str, tuple[np.ndarray, np.ndarray, int]]:
    """Each series' readings, its labels (1: anomalous) and the readings to learn from."""
    found = {}
    with zipfile.ZipFile(wheel(folder, AEON_WHEEL, AEON)) as archive:
        for name, (path, learn) in SERIES.items():
            rows = list(csv.reader(io.StringIO(archive.read(f"{DATA}/{path}").decode())))[1:]
            values = np.array([float(r[1]) for r in rows])
            found[name] = values, np.array([int(r[-1]) for r in rows]), learn
    return found


def roc_area(score: np.ndarray, label: np.ndarray) -> float:
    """The area under the ROC curve (Mann-Whitney, ties counted as half)."""
    _, inverse, counts = np.unique(score, return_inverse=True, return_counts=True)
    ends = np.cumsum(counts)
    ranks = (ends - (counts - 1) / 2)[inverse]  # each value's average rank, from 1
    positive = label == 1
    hits, misses = positive.sum(), (~positive).sum()
    return float((ranks[positive].sum() - hits * (hits + 1) / 2) / (hits * misses))


def regions_of(label: np.ndarray) -> list[tuple[int, int]]:
    """[start, end) of each run of anomalous readings."""
    edges = np.flatnonzero(np.diff(np.concatenate([[0], label, [0]])))
    return list(zip(edges[::2].tolist(), edges[1::2].tolist()))


def episodes_found(
    values: np.ndarray, label: np.ndarray, learn: int, patterns: bool = False, spread: bool | None = None
) -> str:
    """Ours' alerts after the learning part (a default stream's anomalous readings), the alert episodes they
    open (the service's rule, service/episodes.py, at the default episode_gap), and the labelled regions (runs
    of anomalous readings) within ``NEAR`` readings of an alert, and of an opening: the feed's openings
    should find every region its alerts find (streams with ``patterns``)."""
    _, results = forecast(values, patterns=patterns, spread=spread)
    every = [step for step, result in enumerate(results) if result.anomalous]
    opened = openings(every, StreamConfig(input_size=1).episode_gap)
    flags, opening = [np.array([s for s in steps if s >= learn], dtype=int) for steps in (every, opened)]
    regions = regions_of(label)
    near = [
        sum(bool(len(at)) and bool((np.abs(at[:, None] - np.arange(a, b)[None, :]) <= NEAR).any()) for a, b in regions)
        for at in (flags, opening)
    ]
    return (
        f"{len(flags)} flags opening {len(opening)} episodes; labelled regions near a flag {near[0]}/{len(regions)}, "
        f"near an opening {near[1]}/{len(regions)}"
    )


def found_each(alerts: np.ndarray, regions: list[tuple[int, int]]) -> list[bool]:
    """Whether an alert at ``alerts`` finds each region: within it or ``AFTER`` readings after."""
    return [bool(((alerts >= a) & (alerts < b + AFTER)).any()) for a, b in regions]


def alerts_elsewhere(alerts: np.ndarray, regions: list[tuple[int, int]]) -> int:
    """The alerts beyond ``SETTLE`` readings after every region."""
    near = np.zeros(len(alerts), dtype=bool)
    for a, b in regions:
        near |= (alerts >= a) & (alerts < b + SETTLE)
    return int((~near).sum())


def gutentag_kinds(path: Path, regions: list[tuple[int, int]]) -> list[str] | None:
    """The kind of each region of a series bench/gutentag_series.py wrote (beside it, ``<name>.json``: the config
    it was generated from; its anomalies lie in the order of their positions), or None for any other series, or
    where the labels did not keep the anomalies apart."""
    config = path.with_suffix(".json")
    if not config.exists():
        return None
    anomalies = sorted(json.loads(config.read_text())["anomalies"], key=lambda a: a["exact-position"])
    if len(anomalies) != len(regions):
        return None
    return [a["kinds"][0]["kind"] for a in anomalies]


def from_csv(folder: Path, peers: tuple[str, ...] = PEERS, patterns: bool = False, spread: bool | None = None) -> None:
    """``--csv``: ours (streams with ``patterns``, ``spread``) and ``peers`` (bench.anomaly_peers': river's need river) on every
    ``folder``/*.csv (``value,is_anomaly``)."""
    paths = sorted(folder.glob("*.csv"), key=lambda p: (len(p.stem), p.stem))
    if not paths:
        raise SystemExit(f"no .csv under {folder}")
    names = ("ours", *peers)
    totals = {name: [0, 0, []] for name in names}  # found, elsewhere, ROC areas
    by_kind: dict[str, dict[str, int]] = {}  # GutenTAG's kind: regions of it, and the regions each detector found
    regions_in_all = 0
    for path in paths:
        with open(path) as f:
            rows = list(csv.DictReader(f))
        values = [float(r["value"]) for r in rows]
        label = np.array([int(r["is_anomaly"]) for r in rows])
        regions = regions_of(label)
        regions_in_all += len(regions)
        kinds = gutentag_kinds(path, regions)
        for kind in kinds or ():
            by_kind.setdefault(kind, dict.fromkeys(("regions", *names), 0))["regions"] += 1
        _, results = forecast(values, patterns=patterns, spread=spread)
        alerts = np.array([k for k, r in enumerate(results) if r.anomalous], dtype=int)
        budget = len(alerts)
        line = [f"{path.stem:10s} {len(regions)} regions"]
        for name in names:
            if name == "ours":
                score = np.array([r.anomaly if r.anomaly is not None else 0.0 for r in results])
                flagged = alerts
            else:
                score = np.array(scores(DETECTORS[name], values))
                flagged = np.sort(np.argsort(-score, kind="stable")[:budget])  # (the same alert budget as ours)
            each = found_each(flagged, regions)
            found, beyond = sum(each), alerts_elsewhere(flagged, regions)
            area = roc_area(score, label)
            totals[name][0] += found
            totals[name][1] += beyond
            totals[name][2].append(area)
            for kind, hit in zip(kinds or (), each):
                by_kind[kind][name] += hit
            line.append(f"{name} {found}/{beyond} {area:.3f}")
        print("  ".join(line), flush=True)
    print(f"{len(paths)} series, {regions_in_all} regions: detector, regions found, alerts elsewhere, mean ROC area")
    for name, (found, elsewhere, areas) in totals.items():
        budget_note = "its default threshold" if name == "ours" else "ours' alert count per series"
        print(f"  {name:14s} {found:4d} / {regions_in_all}  {elsewhere:5d}  {np.mean(areas):.4f}  ({budget_note})")
    if by_kind:
        print("GutenTAG's regions by kind: regions found / regions of the kind")
        for kind, counts in sorted(by_kind.items()):
            print(f"  {kind:10s} " + "  ".join(f"{name} {counts[name]}/{counts['regions']}" for name in names))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("folder", type=Path, help=f"where aeon's wheel is: {AEON}; with --csv, the series' folder")
    parser.add_argument("--csv", action="store_true", help="the folder holds value,is_anomaly CSVs")
    parser.add_argument("--patterns", action="store_true", help="ours with patterns on (models/pattern.py)")
    parser.add_argument(
        "--no-spread",
        dest="spread",
        action="store_false",
        default=None,
        help="ours without the spread score (models/spread.py)",
    )
    parser.add_argument("--no-peers", action="store_true", help="--csv: ours only (river not needed)")
    parser.add_argument(
        "--peers", nargs="+", choices=sorted(DETECTORS), default=list(PEERS),
        help=f"the detectors of bench.anomaly_peers beside ours (default: {' '.join(PEERS)}; rcf needs rrcf)",
    )  # fmt: skip
    args = parser.parse_args()
    peers = () if args.no_peers else tuple(args.peers)
    torch.set_num_threads(1)
    if args.csv:
        from_csv(args.folder, peers, args.patterns, args.spread)
        return
    series = labelled(args.folder)
    for name, (values, label, learn) in series.items():
        anomalous = np.flatnonzero(label)
        print(f"{name}: {len(values)} readings, {len(anomalous)} labelled anomalous, the first {learn} to learn from")
        detectors = {"ours": lambda v: run(v, args.patterns, args.spread)[0]} | {
            peer: (lambda v, peer=peer: scores(DETECTORS[peer], v)) for peer in peers
        }
        print(f"  ours' alerts   {episodes_found(values, label, learn, args.patterns, args.spread)}")
        for detector, score_of in detectors.items():
            score = np.array(score_of(list(values)))[learn:]
            top = learn + int(np.argmax(score))
            hit = bool((np.abs(anomalous - top) <= NEAR).any())
            area = roc_area(score, label[learn:])
            print(f"  {detector:14s} highest at {top:6d} ({'hit' if hit else 'miss'})  ROC area {area:.4f}", flush=True)


if __name__ == "__main__":
    main()
