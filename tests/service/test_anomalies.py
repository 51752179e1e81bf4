"""Anomaly scores and intervals over HTTP: in every result, kept for retries and /predictions, counted in
the metrics, and the same after a restart."""

from __future__ import annotations

import numpy as np
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


def post(client: TestClient, values: list[float], first_seq: int = 1) -> list[dict]:
    body = {"observations": [{"x": v, "seq": first_seq + k} for k, v in enumerate(values)]}
    response = client.post("/v1/streams/s/observations", json=body)
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


def test_scores_and_intervals_continue_after_a_restart(tmp_path):
    """Stopped after 200 readings and started again, the stream scores the next 100 as if never stopped."""
    values = readings()
    with app_client(Settings(data_dir=tmp_path / "straight")) as c:
        wait_ready(c)
        c.put("/v1/streams/s", json=FORECAST)
        expected = post(c, values)
    settings = Settings(data_dir=tmp_path / "restarted")
    with app_client(settings) as c:
        wait_ready(c)
        c.put("/v1/streams/s", json=FORECAST)
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
