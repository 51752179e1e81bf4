"""The ``tbptt`` command as a user meets it: ordinary failures are one line on stderr and a non-zero exit,
never a traceback; replay names the row and column of a bad value and says which columns it used."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import httpx
import numpy as np
import pytest

from tests.service.server import Server, free_port

KEY = "cli-key-0123456789ab"


def tbptt(*args: str, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    inherited = {k: v for k, v in os.environ.items() if k not in ("TBPTT_API_KEY", "TBPTT_URL")}
    full_env = {**inherited, "TBPTT_PROGRESS": "0", **(env or {})}
    return subprocess.run(
        [sys.executable, "-m", "tbptt.service.cli", *args], capture_output=True, text=True, env=full_env,
        timeout=timeout,
    )  # fmt: skip


def assert_one_line_error(result: subprocess.CompletedProcess, *phrases: str) -> None:
    assert result.returncode != 0, result.stdout
    assert "Traceback" not in result.stderr, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1, result.stderr
    for phrase in phrases:
        assert phrase in lines[0], lines[0]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    s = Server(tmp_path_factory.mktemp("cli") / "data", TBPTT_API_KEYS=f"ops:{KEY}").start()
    yield s
    assert s.stop() == 0


def test_client_errors_are_one_line(server, tmp_path):
    url = ["--url", server.url]
    assert_one_line_error(tbptt("streams", *url), "401", "--api-key", "TBPTT_API_KEY")
    assert_one_line_error(tbptt("streams", "show", "nope", *url, "--api-key", KEY), "404", "not found")
    assert_one_line_error(tbptt("streams", "show", *url, "--api-key", KEY), "needs a stream id")
    assert_one_line_error(tbptt("import", "s", str(tmp_path / "missing.safetensors"), *url), "No such file")
    assert_one_line_error(tbptt("streams", "--url", f"http://127.0.0.1:{free_port()}"), "cannot reach", "TBPTT_URL")


def test_bad_settings_are_one_line():
    assert_one_line_error(tbptt("serve", env={"TBPTT_FSYNC": "sometimes"}), "TBPTT_FSYNC")
    assert_one_line_error(tbptt("serve", env={"TBPTT_API_KEYS": "ops:short"}), "16+ characters")
    assert_one_line_error(tbptt("serve", "--workers", "2"), "--workers needs --shards")


def test_a_reader_that_leaves_early_gets_no_traceback(server):
    import httpx

    env = {**os.environ, "TBPTT_API_KEY": KEY}
    with httpx.Client(base_url=server.url, headers={"Authorization": f"Bearer {KEY}"}) as http:
        for k in range(1500):  # ~100 KB of listing: more than a pipe holds, so the writer meets the closed pipe
            assert http.put(f"/v1/streams/many-{k:04d}", json={"model": {"input_size": 1}}).status_code == 201
    shell = f"{sys.executable} -m tbptt.service.cli streams list --url {server.url} | head -1"
    result = subprocess.run(shell, shell=True, capture_output=True, text=True, env=env, timeout=120)
    assert result.stdout.count("\n") == 1 and result.stderr == "", result.stderr  # not an error: nothing said


@pytest.mark.parametrize(
    ("content", "phrases", "more"),
    [
        ("", ["is empty"], []),
        ("t,value\n", ["no rows"], []),
        ("a,b\n1,2\n\nn/a,3\n", ["row 4", "'a'", "'n/a' is not a finite number"], []),  # (empty: missing)
        ("a,b\n1,2\n3\n", ["row 3", "'b'", "short"], []),
        ("a,b\n" + "".join(f"{k},{k}\n" for k in range(25)) + "oops,1\n", ["row 27", "'a'", "'oops'"], []),
        ("t,a\n2026-12-02,1\nlater,2\n", ["row 3", "'t'", "not a time"], ["--ts", "t"]),
        ("a,b,c\n1,2,3\n1,,3\n", ["row 3", "'b'", "empty, while the row's other targets are not"], ["--y", "b,c"]),
    ],
)
def test_replay_refuses_bad_files_naming_row_and_column(tmp_path, content, phrases, more):
    path = tmp_path / "data.csv"
    path.write_text(content)
    result = tbptt("replay", str(path), "--stream", "s", *more, "--url", f"http://127.0.0.1:{free_port()}")
    assert_one_line_error(result, *phrases)


def test_replay_reports_the_anomalies_and_the_intervals_coverage(server, tmp_path):
    path = tmp_path / "boiler.csv"
    values = [20 + 5 * ((k % 24) / 12 - 1) ** 2 for k in range(200)]
    values[150] = 60.0
    path.write_text("temp\n" + "".join(f"{v}\n" for v in values))
    result = tbptt("replay", str(path), "--stream", "boiler", "--url", server.url, "--api-key", KEY,
                   "--plot", str(tmp_path / "b.png"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    auth = {"Authorization": f"Bearer {KEY}"}
    metrics = httpx.get(f"{server.url}/v1/streams/boiler/metrics", headers=auth).json()
    feed = httpx.get(f"{server.url}/v1/anomalies", params={"openings": True, "limit": 1000}, headers=auth).json()
    opened = sum(alert["stream"] == "boiler" for alert in feed["anomalies"])
    anomalies = next(line for line in result.stdout.splitlines() if line.startswith("anomalies:"))
    assert metrics["anomalies"] > opened >= 1  # (the spike's echo is in its episode)
    assert anomalies.startswith(f"anomalies: {metrics['anomalies']} in {opened} episode")
    assert "(data rows 150" in anomalies
    intervals = next(line for line in result.stdout.splitlines() if line.startswith("intervals:"))
    coverage = float(intervals.split()[2])
    assert (
        abs(coverage - metrics["coverage"]) < 0.01 and "(nominal 0.9) over 179 predictions" in intervals
    )  # 199 judged, 20 to calibrate
    assert Path(tmp_path / "b.png").stat().st_size > 10_000


def test_replay_judges_the_model_and_the_last_value_on_the_same_predictions(server, tmp_path):
    """A target near 1e6: the first prediction, made before any target was known, was in the model's MAE
    but has no last-target forecast to compare with, and replay printed a ratio of ~1,200. Two outputs: a
    step counted as covered only when both were inside, and 0.9 intervals read ~0.81."""
    rng = np.random.default_rng(3)
    x = np.sin(np.arange(600) / 8)
    y = 1e6 + 30 + 3 * x + 0.3 * rng.standard_normal(600)
    path = tmp_path / "offset.csv"
    path.write_text("x,y\n" + "".join(f"{a:.6f},{b:.4f}\n" for a, b in zip(x, y)))
    explicit = tbptt("replay", str(path), "--y", "y", "--stream", "offset", "--url", server.url, "--api-key", KEY,
                     "--plot", str(tmp_path / "o.png"))  # fmt: skip
    assert explicit.returncode == 0, explicit.stderr
    ratio = next(line for line in explicit.stdout.splitlines() if line.startswith("last-target forecast MAE"))
    assert float(ratio.split("ratio ")[1].rstrip(")")) < 1.0, ratio
    two = tmp_path / "two.csv"
    rows = 5 + rng.standard_normal((600, 2))
    two.write_text("a,b\n" + "".join(f"{a:.4f},{b:.4f}\n" for a, b in rows))
    forecast = tbptt("replay", str(two), "--stream", "two", "--url", server.url, "--api-key", KEY,
                     "--plot", str(tmp_path / "t.png"))  # fmt: skip
    assert forecast.returncode == 0, forecast.stderr
    intervals = next(line for line in forecast.stdout.splitlines() if line.startswith("intervals:"))
    metrics = httpx.get(f"{server.url}/v1/streams/two/metrics", headers={"Authorization": f"Bearer {KEY}"}).json()
    assert float(intervals.split()[2]) == pytest.approx(metrics["coverage"], abs=0.005)
    assert metrics["coverage"] == pytest.approx(0.9, abs=0.04)  # (579 predictions, 2 outputs)


def test_replay_leaves_time_and_index_columns_out_and_says_which_it_used(server, tmp_path):
    path = tmp_path / "plant.csv"
    rows = "".join(f"{k},{2000 + k},{20 + (k % 7) * 0.5},{(k % 5) * 0.1}\n" for k in range(60))
    path.write_text("index,year,temp,flow\n" + rows)
    result = tbptt("replay", str(path), "--stream", "plant", "--url", server.url, "--api-key", KEY,
                   "--plot", str(tmp_path / "p.png"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert result.stdout.splitlines()[0] == "plant: inputs temp, flow; target the next row's inputs"
    explicit = tbptt("replay", str(path), "--stream", "plant-y", "--y", "flow", "--url", server.url,
                     "--api-key", KEY, "--plot", str(tmp_path / "q.png"))  # fmt: skip
    assert explicit.returncode == 0, explicit.stderr
    lines = explicit.stdout.splitlines()
    assert lines[0] == "plant-y: inputs temp; target flow"
    assert any(line.startswith("last-target forecast MAE") for line in lines)  # the baseline, in explicit mode too
    assert Path(tmp_path / "q.png").stat().st_size > 10_000


def test_replay_takes_a_column_whose_first_cells_are_empty_as_an_input(tmp_path):
    """A channel that starts late: judged by the first row alone, it was left out of the inputs."""
    from tbptt.service.cli import table

    path = tmp_path / "late.csv"
    path.write_text("time,pressure,temp,note,dead\n" + "".join(
        f"{k},{'' if k < 3 else 1013 + k * 0.1},{20 + k * 0.01},{'' if k < 2 else 'ok'},\n" for k in range(10)
    ))  # fmt: skip
    read = table.read(path, None, None)
    assert read.x_names == ["pressure", "temp"]  # (text and empty columns: not inputs)
    assert read.xs[0] == [None, 20.0] and read.xs[3] == [1013.3, 20.03] and read.gaps == 3


def test_replay_sends_empty_cells_as_missing_readings_and_a_time_column_as_ts(server, tmp_path):
    """A sensor's CSV as exported: a time column without an offset (read as UTC) and a channel that went dead
    for a while (empty cells). The stream is created imputing them; every reading keeps its time."""
    path = tmp_path / "sensor.csv"
    rows = [
        f"2026-12-02 10:{k // 60:02d}:{k % 60:02d},{20 + (k % 7) * 0.5},{'' if 30 <= k < 40 else (k % 5) * 0.1}\n"
        for k in range(0, 3 * 80, 3)
    ]
    path.write_text("time,temp,flow\n" + "".join(rows))
    result = tbptt("replay", str(path), "--stream", "sensor", "--ts", "time", "--url", server.url, "--api-key", KEY,
                   "--plot", str(tmp_path / "s.png"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = result.stdout.splitlines()
    assert lines[0] == "sensor: inputs temp, flow; target the next row's inputs"
    assert lines[1] == "sensor: 4 rows with an empty input cell, sent as null (a missing reading)"
    headers = {"Authorization": f"Bearer {KEY}"}
    info = httpx.get(f"{server.url}/v1/streams/sensor", headers=headers).json()
    assert info["config"]["impute_missing"] is True and info["steps"] == 80
    history = httpx.get(f"{server.url}/v1/streams/sensor/predictions", params={"limit": 80}, headers=headers).json()
    kept = history["results"]
    assert kept[0]["ts"] == "2026-12-02T10:00:00Z" and kept[-1]["ts"] == "2026-12-02T10:03:57Z"
    assert [r["x"][1] for r in kept[10:14]] == [None] * 4 and kept[14]["x"][1] is not None
    metrics = httpx.get(f"{server.url}/v1/streams/sensor/metrics", headers=headers).json()
    assert metrics["imputed"] == 4
    mae = float(next(line for line in lines if line.startswith("prequential MAE")).split()[2])
    assert mae == pytest.approx(metrics["prequential"]["mae"], rel=1e-5)  # the same readings judged as the server


def test_replay_creates_its_stream_with_the_settings_given_and_keeps_to_them(server, tmp_path):
    """``--config``: a stream replay creates had only the settings the columns give, so a user who wanted the
    window score (``patterns``) or another network had to create it by hand first."""
    path = tmp_path / "pump.csv"
    path.write_text("temp,flow\n" + "".join(f"{20 + k % 7},{k % 5}\n" for k in range(60)))
    auth = {"Authorization": f"Bearer {KEY}"}
    url = ["--url", server.url, "--api-key", KEY, "--plot", str(tmp_path / "p.png")]
    given = '{"patterns": true, "model": {"hidden_size": 16}}'
    assert tbptt("replay", str(path), "--stream", "pump", "--config", given, *url).returncode == 0
    info = httpx.get(f"{server.url}/v1/streams/pump", headers=auth).json()
    assert info["config"]["patterns"] is True and info["steps"] == 60
    assert info["config"]["model"] == {**info["config"]["model"], "input_size": 2, "hidden_size": 16}
    assert info["config"]["target"] == "next"  # (the columns' settings, under those given)
    (tmp_path / "pump.json").write_text(given)
    again = tbptt("replay", str(path), "--stream", "pump", "--config", f"@{tmp_path / 'pump.json'}", *url)
    assert again.returncode == 0, again.stderr
    assert httpx.get(f"{server.url}/v1/streams/pump", headers=auth).json()["steps"] == 120
    other = tbptt("replay", str(path), "--stream", "pump", "--config", '{"patterns": false}', *url)
    assert_one_line_error(other, "409")
    assert httpx.get(f"{server.url}/v1/streams/pump", headers=auth).json()["steps"] == 120  # nothing sent
    for bad in ("[1]", "patterns", f"@{tmp_path / 'missing.json'}"):
        result = tbptt("replay", str(path), "--stream", "pump2", "--config", bad, *url)
        assert_one_line_error(result, "--config: not a JSON object")
    contradicting = tbptt("replay", str(path), "--stream", "pump2", "--config", '{"model": {"input_size": 3}}', *url)
    assert_one_line_error(contradicting, "--config sets model.input_size to 3, but the file's columns make it 2")
    assert httpx.get(f"{server.url}/v1/streams/pump2", headers=auth).status_code == 404  # nothing created


def test_replay_refuses_times_out_of_order_before_sending_anything(server, tmp_path):
    """A repeated time (a clock's hour twice over at the end of daylight saving) in row 5: the stream takes
    readings in the order of their times, so the server refused that row after the first three had been
    applied, and the message named observation 0 of a request, not a row of the file."""
    path = tmp_path / "clock.csv"
    times = ["10:00", "10:10", "10:20", "10:20", "10:30"]
    path.write_text("time,temp\n" + "".join(f"2026-10-25 {t},{20 + k}\n" for k, t in enumerate(times)))
    result = tbptt("replay", str(path), "--stream", "clock", "--ts", "time", "--url", server.url, "--api-key", KEY)
    assert_one_line_error(result, "row 5", "'time'", "is not after row 4's", '"timestamps": "any"')
    missing = httpx.get(f"{server.url}/v1/streams/clock", headers={"Authorization": f"Bearer {KEY}"})
    assert missing.status_code == 404  # nothing created, nothing applied


def test_a_refusal_in_the_middle_of_a_file_names_its_row_and_what_was_applied(server, tmp_path):
    """A value the service refuses (beyond 1e15) in row 152: rows 2-101 went in the first request, and the
    second request's refusal named ``observations.50``."""
    path = tmp_path / "glitchy.csv"
    path.write_text("temp\n" + "".join(f"{1e300 if k == 150 else 20 + k % 7}\n" for k in range(300)))
    for more in ([], ["--websocket"]):
        stream = f"glitchy{len(more)}"
        result = tbptt("replay", str(path), "--stream", stream, *more, "--url", server.url, "--api-key", KEY)
        applied = 100 if not more else 150  # (a request of 100 rows, refused whole; over a WebSocket, one a message)
        assert_one_line_error(
            result, "422", "glitchy.csv", f"from row {applied + 2} on nothing was", f"rows 2-{applied + 1} were applied"
        )
        if not more:
            assert "row 152 x.0: Input should be less than or equal to" in result.stderr
        info = httpx.get(f"{server.url}/v1/streams/{stream}", headers={"Authorization": f"Bearer {KEY}"}).json()
        assert info["steps"] == applied


def test_replay_sends_a_row_without_target_cells_without_a_target(server, tmp_path):
    path = tmp_path / "plant.csv"
    path.write_text("temp,flow\n" + "".join(f"{20 + k % 7},{'' if k % 4 == 3 else k % 5}\n" for k in range(60)))
    result = tbptt("replay", str(path), "--stream", "plant-gaps", "--y", "flow", "--url", server.url, "--api-key", KEY,
                   "--plot", str(tmp_path / "g.png"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    metrics = httpx.get(f"{server.url}/v1/streams/plant-gaps/metrics", headers={"Authorization": f"Bearer {KEY}"})
    assert (
        metrics.json()["steps"] == 60 and metrics.json()["prequential"]["n"] == 44
    )  # 45 targets, the first not judged


def test_the_metrics_folders_of_killed_serving_processes_are_removed_at_the_next_start(tmp_path):
    """A serving process with --workers counts its fronts' requests in a temporary folder, which a graceful
    stop removes and a kill -9 used to leave behind for ever."""
    from tbptt.service.cli.fronts import METRICS_PREFIX, forget_dead_metrics

    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
    dead, live = tmp_path / f"{METRICS_PREFIX}{gone.stdout.strip()}-x1", tmp_path / f"{METRICS_PREFIX}{os.getpid()}-x2"
    other = tmp_path / f"{METRICS_PREFIX}someone-else"
    for folder in (dead, live, other):
        folder.mkdir()
        (folder / "counter_1.db").write_bytes(b"\0" * 16)
    forget_dead_metrics(tmp_path)
    assert not dead.exists() and live.exists() and other.exists()
