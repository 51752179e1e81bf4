"""Anomaly scores and intervals over HTTP: in every result, kept for retries and /predictions, counted in
the metrics, and the same after a restart."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import numpy as np
import pytest
import torch
from fastapi.testclient import TestClient
from safetensors.torch import load as load_tensors

from tbptt.models import Engine
from tbptt.service.schemas import StreamCreate
from tbptt.service.settings import Settings
from tests.service.factories import app_client, wait_ready

FORECAST = {"model": {"input_size": 1}, "target": "next"}


def readings(count: int = 300, spike_at: int = 250) -> list[float]:
    rng = np.random.default_rng(0)
    values = 20 + 2 * np.sin(np.arange(count) / 6) + 0.2 * rng.standard_normal(count)
    values[spike_at] += 6
    return values.tolist()


def post(client: TestClient, values: list[float], first_seq: int = 1, stream: str = "s") -> list[dict]:
    body = {"observations": [{"x": v, "seq": first_seq + k} for k, v in enumerate(values)]}
    response = client.post(f"/v1/streams/{stream}/observations", json=body)
    assert response.status_code == 200, response.text
    return response.json()["results"]


def test_results_carry_scores_and_intervals_and_retries_get_the_same(client):
    assert client.put("/v1/streams/s", json=FORECAST).status_code == 201
    values = readings()
    results = post(client, values[:200]) + post(client, values[200:], first_seq=201)
    assert results[0]["anomaly"] is None and results[0]["interval"] is None
    assert results[100]["anomaly"] is not None and results[100]["interval"] is not None
    lower, upper = results[100]["interval"][0]
    assert lower < results[100]["prediction"][0] < upper
    assert results[250]["anomalous"] is True and results[250]["anomaly"] >= 0.95
    assert sum(r["anomalous"] is True for r in results) <= 3  # the spike, and perhaps its echo
    again = post(client, values[245:255], first_seq=246)  # a retry: answered, not applied
    assert again == [{**r, "duplicate": True} for r in results[245:255]]
    kept = client.get("/v1/streams/s/predictions", params={"limit": 60}).json()
    kept = kept["results"] if isinstance(kept, dict) else kept
    assert [r["anomaly"] for r in kept] == [r["anomaly"] for r in results[-60:]]
    assert [r["interval"] for r in kept] == [r["interval"] for r in results[-60:]]
    metrics = client.get("/v1/streams/s/metrics").json()
    assert metrics["anomalies"] == sum(r["anomalous"] is True for r in results)
    assert 0.8 <= metrics["coverage"] <= 1.0 and metrics["interval_width"] > 0
    totals = prometheus(client)  # the service's totals: this stream is the only one
    assert totals["tbptt_anomalies_total"] == metrics["anomalies"]
    assert totals["tbptt_targets_judged_total"] == len(results) - 1  # every reading but the first
    with_interval = totals["tbptt_interval_targets_total"]
    assert with_interval == len(results) - 1 - 20  # (CALIBRATED_AFTER)
    assert totals["tbptt_interval_hits_total"] / with_interval == pytest.approx(metrics["coverage"])


def prometheus(client: TestClient) -> dict[str, float]:
    lines = client.get("/metrics").text.splitlines()
    return {line.split()[0]: float(line.split()[1]) for line in lines if line and not line.startswith("#")}


@pytest.mark.parametrize("patterns", [False, True])
def test_scores_and_intervals_continue_after_a_restart(tmp_path, patterns):
    """Stopped after 200 readings and started again, the stream scores the next 200 as if never stopped (with
    ``patterns``, its windows' state too: their scores start at about reading 275)."""
    values, config = readings(400), {**FORECAST, "patterns": patterns}
    with app_client(Settings(data_dir=tmp_path / "straight")) as c:
        wait_ready(c)
        c.put("/v1/streams/s", json=config)
        expected = post(c, values)
    settings = Settings(data_dir=tmp_path / "restarted")
    with app_client(settings) as c:
        wait_ready(c)
        c.put("/v1/streams/s", json=config)
        got = post(c, values[:200])
    with app_client(settings) as c:
        wait_ready(c)
        got += post(c, values[200:], first_seq=201)
        assert post(c, values[190:191], first_seq=191) == [{**got[190], "duplicate": True}]  # kept, too
    assert got == expected


def test_threshold_and_coverage_are_stream_settings(client):
    config = {**FORECAST, "anomaly_threshold": 0.6, "coverage": 0.5}
    response = client.put("/v1/streams/s", json=config)
    assert response.status_code == 201
    assert response.json()["config"]["anomaly_threshold"] == 0.6
    results = post(client, readings())
    assert sum(r["anomalous"] is True for r in results) > 10  # 0.6: an error above the typical one
    for bad in ({"coverage": 1.0}, {"coverage": 0}, {"anomaly_threshold": 1.5}, {"learn_from_anomalies": "no"}):
        assert client.put("/v1/streams/t", json={**FORECAST, **bad}).status_code == 422


def test_a_stream_may_refuse_to_learn_from_anomalies(client):
    """The outage-like run of readings is reported as anomalous, and the network does not learn from it:
    afterwards the stream's predictions differ from those of a stream that did."""
    values = readings()
    values[200:203] = [60.0, 60.0, 60.0]
    for stream, learns in (("guarded", False), ("open", True)):
        config = {**FORECAST, "learn_from_anomalies": learns}
        assert client.put(f"/v1/streams/{stream}", json=config).status_code == 201
        body = {"observations": [{"x": v} for v in values]}
        results = client.post(f"/v1/streams/{stream}/observations", json=body).json()["results"]
        assert results[200]["anomalous"] is True
        if learns:
            open_results = results
        else:
            guarded_results = results
    assert [r["prediction"] for r in guarded_results[:200]] == [r["prediction"] for r in open_results[:200]]
    assert [r["prediction"] for r in guarded_results[210:]] != [r["prediction"] for r in open_results[210:]]


@pytest.mark.parametrize("field", ["patterns", "spread"])
def test_a_stream_may_judge_the_shapes_or_the_spread_of_its_readings_too(client, field):
    """``patterns`` or ``spread``: a flat platform in a wave, which the forecast follows, is flagged, and the
    alerts feed has it; a stream that cannot judge its readings so is refused, naming the field."""
    rng = np.random.default_rng(0)
    values = np.sin(2 * np.pi * np.arange(2_200) / 40) + 0.05 * rng.standard_normal(2_200)
    values[2_000:2_060] = values[2_000] + 0.05 * rng.standard_normal(60)
    for stream, on in (("readings", True), ("errors", False)):
        alone = {"patterns": False, "spread": False, field: on}  # (the spread score is on by default)
        response = client.put(f"/v1/streams/{stream}", json={**FORECAST, **alone})
        assert response.status_code == 201 and response.json()["config"][field] is on
        results = [r for k in range(0, 2_200, 500) for r in post(client, values[k : k + 500].tolist(), k + 1, stream)]
        assert any(r["anomalous"] for r in results[2_000:2_060]) is on
    feed = client.get("/v1/anomalies").json()["anomalies"]
    assert {a["stream"] for a in feed if 2_000 < a["step"] <= 2_060} == {"readings"}
    refused = client.put("/v1/streams/explicit", json={"model": {"input_size": 1}, field: True})
    assert refused.status_code == 422 and field in refused.text


def test_a_forecast_stream_judges_the_spread_of_its_readings_unless_told_not_to(client):
    """The spread score is on by default where it applies (forecast mode, at most 4 inputs), and the config a
    stream is answered with says so; ``null`` asks for that default."""
    for stream, body, on in (
        ("forecast", FORECAST, True),
        ("asked-default", {**FORECAST, "spread": None}, True),
        ("wide", {"model": {"input_size": 5}, "target": "next"}, False),
        ("explicit", {"model": {"input_size": 1}}, False),
    ):
        response = client.put(f"/v1/streams/{stream}", json=body)
        assert response.status_code == 201 and response.json()["config"]["spread"] is on, stream
        assert client.get(f"/v1/streams/{stream}").json()["config"]["spread"] is on


def test_an_observation_may_be_scored_without_being_learnt_from(client):
    """``learn: false``: the result is judged (score, interval) but has no loss, and the stream learns as the
    engine does given the same flags (tests/models/test_anomaly.py: as the textbook loop without those
    targets; the target still moves the level it predicts changes from and the statistics)."""
    config = {"model": {"input_size": 2}, "tbptt": {"k1": 4}, "dtype": "float64"}
    rng = np.random.default_rng(1)
    x, y = rng.standard_normal((120, 2)), rng.standard_normal(120)
    skipped = set(range(60, 70))
    body = [{"x": x[k].tolist(), "y": float(y[k]), **({"learn": False} if k in skipped else {})} for k in range(120)]
    assert client.put("/v1/streams/s", json=config).status_code == 201
    results = client.post("/v1/streams/s/observations", json={"observations": body}).json()["results"]
    assert all(results[k]["loss"] is None and results[k]["anomaly"] is not None for k in skipped)
    assert results[59]["loss"] is not None and results[70]["loss"] is not None
    engine = Engine()
    engine.add_stream("s", StreamCreate.model_validate(config).to_core())
    expected = engine.observe_many([("s", o["x"], o["y"], o.get("learn", True)) for o in body])
    assert [r["prediction"] for r in results] == [r.prediction for r in expected]
    exported = load_tensors(client.get("/v1/streams/s/model").content)
    for name, value in engine.export_weights("s").items():
        assert torch.equal(exported[name], value), name
    bad = client.post("/v1/streams/s/observations", json={"x": [0.0, 0.0], "learn": "no"})
    assert bad.status_code == 422


KEY_A, KEY_B = "a-secret-key-0123456789", "b-secret-key-9876543210"
A, B = {"Authorization": f"Bearer {KEY_A}"}, {"Authorization": f"Bearer {KEY_B}"}


def spiked(spikes: tuple[int, ...]) -> list[float]:
    values = readings(spike_at=spikes[0])
    for at in spikes[1:]:
        values[at] += 6
    return values


@contextlib.contextmanager
def two_tenants(settings: Settings) -> Iterator[TestClient]:
    """The service with tenants alpha (headers A) and beta (B), each with its own forecast stream "s"."""
    with app_client(settings) as c:
        wait_ready(c)
        for headers in (A, B):
            assert c.put("/v1/streams/s", json=FORECAST, headers=headers).status_code == 201
        yield c


def keyed(tmp_path) -> Settings:
    return Settings(data_dir=tmp_path / "data", api_keys=f"alpha:{KEY_A},beta:{KEY_B}")


def test_the_alerts_feed_has_each_tenants_anomalies_pages_and_survives_a_restart(tmp_path):
    settings, values = keyed(tmp_path), spiked((150, 250))
    with two_tenants(settings) as c:
        body = {"observations": [{"x": v} for v in values]}
        results = c.post("/v1/streams/s/observations", json=body, headers=A).json()["results"]
        flagged = [r for r in results if r["anomalous"]]
        feed = c.get("/v1/anomalies", headers=A).json()
        assert [a["seq"] for a in feed["anomalies"]] == [r["seq"] for r in flagged] and feed["next"] > 0
        assert {151, 251} <= {a["seq"] for a in feed["anomalies"]}
        spike = next(a for a in feed["anomalies"] if a["seq"] == 251)
        judged = results[249]  # forecast mode: x of seq 251 is judged against the prediction made at seq 250
        assert spike["value"] == [values[250]] and spike["score"] == results[250]["anomaly"]
        assert spike["prediction"] == judged["prediction"] and spike["interval"] == judged["interval"]
        assert spike["stream"] == "s" and spike["step"] == 251 and spike["at"].endswith("Z")
        assert c.get("/v1/anomalies", headers=B).json() == {"anomalies": [], "next": 0}  # another tenant's
        first = c.get("/v1/anomalies", params={"limit": 1}, headers=A).json()
        rest = c.get("/v1/anomalies", params={"since": first["next"]}, headers=A).json()
        assert first["anomalies"] + rest["anomalies"] == feed["anomalies"]
        assert c.get("/v1/anomalies", params={"since": feed["next"]}, headers=A).json()["anomalies"] == []
        assert c.get("/v1/anomalies", params={"limit": 0}, headers=A).status_code == 422
    with app_client(settings) as c:
        wait_ready(c)
        assert c.get("/v1/anomalies", headers=A).json() == feed
        assert c.delete("/v1/streams/s", headers=A).status_code == 204
        assert c.get("/v1/anomalies", headers=A).json()["anomalies"] == []  # they went with their stream


def test_the_alerts_websocket_sends_the_backlog_then_each_alert_once_per_tenant(tmp_path):
    values = spiked((150, 250))
    with two_tenants(keyed(tmp_path)) as c:
        c.post("/v1/streams/s/observations", json={"observations": [{"x": v} for v in values[:200]]}, headers=A)
        before = c.get("/v1/anomalies", headers=A).json()["anomalies"]
        assert before
        with (
            c.websocket_connect(
                "/v1/anomalies/watch?since=0", headers=dict(A)
            ) as alpha,  # (it adds its handshake headers to the dict)
            c.websocket_connect("/v1/anomalies/watch", headers=dict(B)) as beta,
        ):
            assert alpha.receive_json() == {"anomalies": before}  # the backlog first
            c.post("/v1/streams/s/observations", json={"observations": [{"x": v} for v in values[200:]]}, headers=A)
            live = c.get("/v1/anomalies", params={"since": before[-1]["id"]}, headers=A).json()["anomalies"]
            assert 251 in [a["seq"] for a in live]
            assert received(alpha, len(live)) == live  # (the batch may have been applied in several slices)
            c.post("/v1/streams/s/observations", json={"observations": [{"x": v} for v in values]}, headers=B)
            theirs = c.get("/v1/anomalies", headers=B).json()["anomalies"]
            assert theirs and all(a["id"] > live[-1]["id"] for a in theirs)
            assert received(beta, len(theirs)) == theirs  # beta's own alerts, never alpha's


def test_the_feed_and_its_websocket_give_the_alerts_that_open_an_episode_when_asked(client):
    values = spiked((150, 165))  # the second spike: 14 readings after the first's echo
    for stream in ("s", "t"):
        assert client.put(f"/v1/streams/{stream}", json=FORECAST).status_code == 201
        post(client, values[:160], stream=stream)
    patched = client.patch("/v1/streams/t", json={"episode_gap": 10})  # from its next reading on
    assert patched.status_code == 200 and patched.json()["config"]["episode_gap"] == 10
    with client.websocket_connect("/v1/anomalies/watch?since=0&openings=true") as openings:
        for stream in ("s", "t"):
            post(client, values[160:], first_seq=161, stream=stream)
        feed = client.get("/v1/anomalies").json()
        by_stream = {stream: [a for a in feed["anomalies"] if a["stream"] == stream] for stream in ("s", "t")}
        for stream, gap in (("s", 25), ("t", 10)):
            steps = [a["step"] for a in by_stream[stream]]
            assert {151, 166} <= set(steps)
            assert [a["opens"] for a in by_stream[stream]] == [
                k == 0 or step - steps[k - 1] > gap for k, step in enumerate(steps)
            ]
        second = {stream: next(a for a in alerts if a["step"] == 166) for stream, alerts in by_stream.items()}
        assert (second["s"]["opens"], second["s"]["episode"]) == (False, 151)  # within 25 of the first's
        assert (second["t"]["opens"], second["t"]["episode"]) == (True, 166)  # more than 10 after
        opened = [a for a in feed["anomalies"] if a["opens"]]
        assert 0 < len(opened) < len(feed["anomalies"])
        assert client.get("/v1/anomalies", params={"openings": True}).json() == {**feed, "anomalies": opened}
        page = client.get("/v1/anomalies", params={"openings": True, "limit": 2}).json()
        assert page["anomalies"] == [a for a in feed["anomalies"][:2] if a["opens"]]
        assert page["next"] == feed["anomalies"][1]["id"]  # past what it looked at, openings or not
        assert received(openings, len(opened)) == opened
        assert prometheus(client)["tbptt_anomaly_episodes_total"] == len(opened)
        for stream, alerts in by_stream.items():  # each stream's metrics count its own
            metrics = client.get(f"/v1/streams/{stream}/metrics").json()
            assert (metrics["anomalies"], metrics["anomaly_episodes"]) == (len(alerts), sum(a["opens"] for a in alerts))


def received(websocket, count: int) -> list[dict]:
    """The next ``count`` alerts the socket sends, over as many messages as it takes."""
    alerts: list[dict] = []
    while len(alerts) < count:
        alerts += websocket.receive_json()["anomalies"]
    return alerts


def test_a_stream_with_a_horizon_forecasts_the_next_readings_with_intervals_through_a_restart(tmp_path):
    config = {**FORECAST, "horizon": 4, "dtype": "float64"}
    values = readings()
    engine = Engine()
    engine.add_stream("s", StreamCreate.model_validate(config).to_core())
    expected = engine.observe_many([("s", [v], None) for v in values])
    settings = Settings(data_dir=tmp_path / "data")
    with app_client(settings) as c:
        wait_ready(c)
        response = c.put("/v1/streams/s", json=config)
        assert response.status_code == 201 and response.json()["config"]["horizon"] == 4
        got = post(c, values[:200])
        assert post(c, values[150:151], first_seq=151) == [{**got[150], "duplicate": True}]  # a retry: the same
    with app_client(settings) as c:  # restarted: it continues as if never stopped
        wait_ready(c)
        got += post(c, values[200:], first_seq=201)
        kept = c.get("/v1/streams/s/predictions", params={"limit": 5}).json()
        kept = kept["results"] if isinstance(kept, dict) else kept
        assert [r["forecast"] for r in kept] == [r["forecast"] for r in got[-5:]]
        assert c.put("/v1/streams/t", json={"model": {"input_size": 1}, "horizon": 4}).status_code == 422
        assert "forecast" not in post_to(c, "u", FORECAST)  # only streams with a horizon carry it
    for result, library in zip(got, expected):
        assert [a["value"] for a in result["forecast"]] == library.forecast
        assert [a["interval"] for a in result["forecast"]] == library.forecast_intervals
        assert result["forecast"][0] == {"value": result["prediction"], "interval": result["interval"]}
    assert got[-1]["forecast"][3]["interval"] is not None


def post_to(client: TestClient, stream: str, config: dict) -> dict:
    assert client.put(f"/v1/streams/{stream}", json=config).status_code == 201
    return client.post(f"/v1/streams/{stream}/observations", json={"x": 1.0}).json()["results"][0]


def test_a_request_rolls_forecasts_forward_at_most_max_batch_steps(tmp_path):
    """Each observation of a stream with horizon H costs H - 1 more network steps: a request is refused, whole,
    when that would exceed TBPTT_MAX_BATCH steps."""
    with app_client(Settings(data_dir=tmp_path / "data", max_batch=100)) as c:
        wait_ready(c)
        assert c.put("/v1/streams/s", json={**FORECAST, "horizon": 5}).status_code == 201
        too_many = c.post("/v1/streams/s/observations", json={"observations": [{"x": 1.0}] * 26})
        assert too_many.status_code == 422 and "104 steps forward" in too_many.text
        cross = {"observations": [{"stream": "s", "x": 1.0}] * 26}
        assert c.post("/v1/observations", json=cross).status_code == 422
        assert c.get("/v1/streams/s").json()["steps"] == 0  # nothing applied
        assert len(post(c, [1.0] * 25)) == 25  # 100 steps: allowed
