"""The benchmarks still run against the code as it is (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

import json
import math
import os
import signal
import subprocess
import sys
import time

import numpy as np
import pytest

from bench import (
    anomaly,
    anomaly_peers,
    checkpoints,
    churn,
    core,
    count_series,
    fairness,
    interval_peers,
    labelled,
    shard_rounds,
    shard_scaling,
    spikes,
)
from bench.labelled import roc_area
from tbptt.service.settings import Settings
from tests.service.factories import app_client, wait_ready


def test_the_core_benchmark_runs():
    assert core.engine_rate(n=3, run_length=2, steps=16, rounds=1) > 0
    rate, per_stream, needed = core.measure_memory(20)
    # Resident memory need not grow for 20 small streams: in a process that has run other tests, the
    # allocator reuses pages those freed (this asserted per_stream > 0 and failed now and then in CI's run).
    assert rate > 0 and needed > 0 and math.isfinite(per_stream)


def test_the_idle_sensors_benchmark_prints_each_horizons_coverage(capsys):
    anomaly.idle_then_moving(horizon=2)
    lines = capsys.readouterr().out.splitlines()
    assert len(lines) == 9 and all(line.endswith("(h = 1..2)") for line in lines)
    for line in lines:  # the next reading's intervals cover the first 100 moving readings (models/anomaly.py)
        assert float(line.split("cover ")[1].split(",")[0]) >= 0.85, line


def test_the_shard_scaling_benchmark_runs():
    assert shard_scaling.total_rate(shards=2, seconds=0.2, streams=10) > 0


def test_the_checkpoint_benchmark_measures_whole_rings_that_grow_with_the_results_kept_and_runs_that_do_not():
    (few, few_whole, few_runs), (more, more_whole, more_runs) = checkpoints.measure(streams=3, kept=[5, 60], added=5)
    assert (few, more) == (15, 70) and more_whole.nbytes > few_whole.nbytes  # (two more checkpoints' added)
    assert more_runs.nbytes < more_whole.nbytes and more_runs.nbytes < few_runs.nbytes + 100
    assert min(c.pack for c in (few_whole, few_runs, more_whole, more_runs)) > 0


def test_the_churn_benchmark_runs_and_every_request_it_sends_is_accepted():
    """(``churn`` raises on any answer but the expected one: a refused loop would measure nothing.)"""
    result = churn.churn(seconds=2.0, warmup=1.0, clients=1)
    assert result["created"] >= 1 and list(result["memory"]) == ["server"] and result["memory"]["server"][1] > 0


def test_a_process_started_below_another_is_among_its_descendants():
    """(bench.churn finds a sharded server's shard actors this way: Ray's daemons start them, not the server.)"""
    with subprocess.Popen([sys.executable, "-c", "import subprocess; subprocess.run(['sleep', '30'])"]) as child:
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and len(churn.descendants(child.pid)) < 1:
            time.sleep(0.05)
        grandchildren = churn.descendants(child.pid)
        assert child.pid in churn.descendants(os.getpid()) and len(grandchildren) == 1
        assert set(grandchildren) < set(churn.descendants(os.getpid()))
        for pid in grandchildren:
            os.kill(pid, signal.SIGKILL)
        child.wait(10)


def test_the_shard_rounds_benchmark_runs():
    assert min(shard_rounds.rate(shared, fronts=2, per_call=2, seconds=0.2, streams=4) for shared in (True, False)) > 0


def test_every_load_of_the_fairness_benchmark_is_one_the_service_accepts(tmp_path):
    """A refused load measures nothing: its /predictions load asked for more than a reply may carry for a day
    (each load asserts its answers are 200)."""
    keys = f"small:{fairness.SMALL_KEY},heavy:{fairness.HEAVY_KEY}"
    with app_client(Settings(data_dir=tmp_path / "data", api_keys=keys)) as c:
        wait_ready(c)
        fairness.setup(c, {"one"})
        assert [load(c) for load in (fairness.heavy_batches, fairness.wide_reads, fairness.wide_writes)] == [
            100,
            64,
            20,
        ]


def test_the_roc_area_counts_ties_as_half():
    """bench.labelled's measure of how well scores rank the labelled readings."""
    assert roc_area(np.array([0.1, 0.2, 0.9]), np.array([0, 0, 1])) == 1.0
    assert roc_area(np.array([0.9, 0.2, 0.1]), np.array([0, 0, 1])) == 0.0
    assert roc_area(np.array([0.1, 0.2, 0.3, 0.3]), np.array([0, 0, 1, 0])) == 2.5 / 3


def _one_spike(path) -> None:
    """A labelled series for bench.labelled --csv: a slow wave with one labelled spike, at reading 600."""
    values = 10 + np.sin(np.arange(700) / 5.0)
    values[600] += 8.0
    path.write_text("value,is_anomaly\n" + "".join(f"{v!r},{int(k == 600)}\n" for k, v in enumerate(values.tolist())))


def test_the_labelled_benchmark_counts_regions_found_and_alerts_elsewhere_from_csv_files(tmp_path, capsys):
    """bench.labelled --csv: a region is found by an alert within it or 10 readings after; an alert up to 50
    readings after a region is its aftermath, not elsewhere."""
    regions = labelled.regions_of(np.array([0, 1, 1, 0, 0, 1, 0]))
    assert regions == [(1, 3), (5, 6)]
    alerts, far_apart = np.array([2, 40, 200]), [(1, 3), (100, 110)]
    assert labelled.found_each(alerts, far_apart) == [True, False]
    assert labelled.alerts_elsewhere(alerts, far_apart) == 1  # 40: aftermath
    _one_spike(tmp_path / "one.csv")
    labelled.from_csv(tmp_path, peers=())  # (river's detectors need river, which the tests do not install)
    out = capsys.readouterr().out
    assert "one        1 regions  ours 1/" in out and "1 series, 1 regions" in out, out


def test_the_labelled_benchmark_counts_gutentags_regions_by_the_kind_its_config_drew(tmp_path, capsys):
    """bench.labelled --csv: beside a series bench/gutentag_series.py wrote, its config names each region's kind."""
    _one_spike(tmp_path / "gt_0.csv")
    config = {"anomalies": [{"exact-position": 600, "length": 1, "kinds": [{"kind": "extremum"}]}]}
    (tmp_path / "gt_0.json").write_text(json.dumps(config))
    labelled.from_csv(tmp_path, peers=())
    assert "  extremum   ours 1/1" in capsys.readouterr().out
    assert labelled.gutentag_kinds(tmp_path / "gt_0.csv", [(600, 601), (700, 701)]) is None  # (one anomaly drawn)


def test_the_count_series_are_whole_counts_quiet_at_night_with_one_anomaly_of_each_kind_in_busy_hours(tmp_path):
    """bench/count_series.py's protocol: whole counts, runs of zeros in the quiet half of the day that are no
    anomaly, and four labelled regions (one of each kind) that start where the day is busy; the same seed, the
    same files, which bench.labelled reads with their kinds."""
    count_series.main(tmp_path, 3, 5)
    for seed in (3, 4):
        counts, labels, config = count_series.series(seed)
        assert (counts == np.round(counts)).all() and (counts >= 0).all()
        assert sorted(a["kinds"][0]["kind"] for a in config["anomalies"]) == sorted(count_series.KINDS)
        phase = np.sin(2 * np.pi * np.arange(count_series.LENGTH) / count_series.DAY)
        for drawn in config["anomalies"]:
            start, length = drawn["exact-position"], drawn["length"]
            assert phase[start] > count_series.BUSY and labels[start : start + length].all()
        assert labels.sum() == sum(a["length"] for a in config["anomalies"])
        quiet = (phase < 0) & (labels == 0)
        assert (counts[quiet] == 0).mean() > 0.5  # (the nights: mostly zeros, and no anomaly)
        written = (tmp_path / f"ct_{seed}.csv").read_text().splitlines()
        assert written[0] == "value,is_anomaly" and written[1:] == [f"{int(v)},{a}" for v, a in zip(counts, labels)]
        regions = labelled.regions_of(labels)
        assert labelled.gutentag_kinds(tmp_path / f"ct_{seed}.csv", regions) == [
            a["kinds"][0]["kind"] for a in sorted(config["anomalies"], key=lambda a: a["exact-position"])
        ]


def _distance_from_last() -> anomaly_peers.Step:
    """A stand-in peer (river's and rrcf's are not installed for the tests): how far a reading is from the last."""
    last: list[float] = []

    def step(value: float) -> float:
        score = abs(value - last[-1]) / (1 + abs(value - last[-1])) if last else 0.0
        last[:] = [value]
        return score

    return step


def test_a_peer_of_the_labelled_benchmark_alerts_on_its_highest_scores_as_often_as_ours(tmp_path, capsys, monkeypatch):
    """bench.labelled --csv --peers: a peer's alerts are its highest-scored readings, as many as ours raised."""
    monkeypatch.setitem(labelled.DETECTORS, "jump", _distance_from_last)
    _one_spike(tmp_path / "one.csv")
    labelled.from_csv(tmp_path, peers=("jump",))
    line = next(line for line in capsys.readouterr().out.splitlines() if line.startswith("one"))
    ours, jump = line.split("ours ")[1].split()[0], line.split("jump ")[1].split()[0]
    alerts = sum(int(n) for n in ours.split("/"))  # (a reading alerted on is found, or near the region, or elsewhere)
    assert jump.startswith("1/") and sum(int(n) for n in jump.split("/")) <= alerts, line


def test_the_peers_benchmark_writes_every_series_scores_in_nabs_layout_from_several_processes(tmp_path, monkeypatch):
    """bench.anomaly_peers --processes 2: one result file per series and detector where NAB's scorer looks, a
    score per row in the data's order (the processes fork: they see the stand-in detector)."""
    monkeypatch.setitem(anomaly_peers.DETECTORS, "jump", _distance_from_last)
    series = {"kindA/a.csv": [1.0, 1.0, 4.0, 1.0], "kindA/b.csv": [2.0, 2.0], "kindB/c.csv": [0.0, 3.0, 3.0]}
    for name, values in series.items():
        (tmp_path / "data" / name).parent.mkdir(parents=True, exist_ok=True)
        rows = "".join(f"2026-01-01 00:0{k}:00,{v}\n" for k, v in enumerate(values))
        (tmp_path / "data" / name).write_text("timestamp,value\n" + rows)
    args = ["--nab", str(tmp_path / "data"), "--out", str(tmp_path / "out"), "--only", "jump", "--processes", "2"]
    monkeypatch.setattr("sys.argv", ["anomaly_peers", *args])
    anomaly_peers.main()
    for name, values in series.items():
        lines = (tmp_path / "out" / "jump" / name).read_text().splitlines()
        assert lines[0] == "timestamp,value,anomaly_score" and len(lines) == len(values) + 1
        step = _distance_from_last()
        assert [float(line.split(",")[2]) for line in lines[1:]] == pytest.approx([step(v) for v in values], abs=1e-6)


def test_the_labelled_benchmark_runs_ours_with_patterns_when_asked_and_spread_unless_told_not_to(tmp_path, capsys):
    """bench.labelled --csv [--patterns] [--no-spread]: a platform in a wave, which the forecast follows, found
    only with either (the spread score by default)."""
    rng = np.random.default_rng(0)
    values = np.sin(2 * np.pi * np.arange(1_700) / 40) + 0.05 * rng.standard_normal(1_700)
    values[1_500:1_560] = values[1_500] + 0.05 * rng.standard_normal(60)
    with open(tmp_path / "flat.csv", "w") as f:
        f.write(
            "value,is_anomaly\n" + "".join(f"{v!r},{int(1_500 <= k < 1_560)}\n" for k, v in enumerate(values.tolist()))
        )
    for patterns, spread, found in ((False, False, "0/"), (True, False, "1/"), (False, None, "1/")):
        labelled.from_csv(tmp_path, peers=(), patterns=patterns, spread=spread)
        out = capsys.readouterr().out
        assert f"flat       1 regions  ours {found}" in out, out


def test_the_intervals_benchmark_reads_the_value_column_of_csv_files_in_their_order(tmp_path, capsys):
    """bench.anomaly --csv: every file's value column, gt_2 before gt_10, through the intervals' report."""
    values = 10 + np.sin(np.arange(300) / 5.0)
    for name in ("gt_10", "gt_2"):
        with open(tmp_path / f"{name}.csv", "w") as f:
            f.write("value,is_anomaly\n" + "".join(f"{v!r},0\n" for v in values.tolist()))
    series = anomaly.csv_series(tmp_path)
    assert list(series) == ["gt_2", "gt_10"] and series["gt_2"] == values.tolist()
    anomaly.report("the CSVs", series)
    assert "the CSVs: coverage: mean" in capsys.readouterr().out


def test_the_interval_score_charges_a_miss_twenty_times_its_distance():
    """bench.interval_peers' measure of a 0.9 interval: its width, plus 2 / 0.1 times how far a target misses."""
    bands = np.array([[0.0, 1.0], [0.0, 1.0], [0.0, 1.0]])
    assert interval_peers.scores(bands, np.array([0.5, 2.0, -0.5])) == (1 / 3, 1.0, (1 + 21 + 11) / 3)


def test_our_intervals_in_the_interval_peers_benchmark_start_once_calibrated():
    bands = interval_peers.ours(np.sin(np.arange(60) / 3.0))
    assert bands.shape == (59, 2) and np.isnan(bands[:10]).all() and (bands[40:, 0] <= bands[40:, 1]).all()


def test_the_spikes_benchmark_counts_a_spike_found_by_the_reading_after_it_and_nothing_else_near_it():
    spiked, at = spikes.injected(np.sin(np.arange(800) / 5.0))
    assert at == [200, 300, 400, 500, 600, 700] and spiked[200] > 1.5 and spiked[300] < -1.5
    assert spikes.counted([201, 302, 450], at) == (1, 1)  # 201: the reading after; 302: near; 450: elsewhere


def test_the_spikes_benchmark_s_explicit_streams_predict_each_reading_from_the_one_before():
    values = 30 + np.sin(np.arange(600) / 5.0)
    results = spikes.explicit(values)  # (runs of bench.anomaly.RUN = 500: two calls)
    assert len(results) == 600 and results[0] is None
    assert abs(results[599].prediction[0] - values[599]) < 0.5  # (the target of the last: the last reading)
    hits, count, _, scores = spikes.spiked_run(values, explicit_mode=True)
    assert count == 6 and hits == 6 and min(scores) >= 0.95  # (at 150, 225, ... 525)
