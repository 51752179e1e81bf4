"""Dead channels and irregular sampling through the real server: a null in x (streams with impute_missing),
the time between observations as an input (elapsed_input); what is refused, what is reported, and that both
come back exactly after kill -9."""

from __future__ import annotations

import httpx
from fastapi.testclient import TestClient

from tbptt.models import Engine, StreamConfig
from tests.service.server import Server

GAPPY = {"model": {"input_size": 3}, "target": "next", "impute_missing": True, "elapsed_input": True}


def post(client: TestClient | httpx.Client, body: dict, stream: str = "s") -> httpx.Response:
    return client.post(f"/v1/streams/{stream}/observations", json=body)


def readings(count: int, start: int = 0) -> list[dict]:
    """A 3-channel sensor whose channel 1 dies for a while and whose sampling is irregular."""
    out = []
    for k in range(start, start + count):
        x = [float(k % 5), None if 20 <= k < 35 else float(k % 3) * 2.0, 0.5 * k]
        out.append({"x": x, "seq": k + 1, "ts": 1_700_000_000 + 30 * k + (k % 4) ** 3})
    return out


def test_a_null_reading_is_filled_learnt_around_and_reported(client):
    assert client.put("/v1/streams/s", json=GAPPY).status_code == 201
    body = {"observations": readings(60)}
    response = post(client, body)
    assert response.status_code == 200, response.text
    results = response.json()["results"]
    # The engine given the same observations (its own tests check it against the reference loop).
    config = StreamConfig(input_size=3, target="next", impute_missing=True, elapsed_input=True)
    engine = Engine()
    engine.add_stream("s", config)
    want = engine.observe_many([("s", o["x"], None, True, float(o["ts"])) for o in body["observations"]])
    assert [r["prediction"] for r in results] == [w.prediction for w in want]
    # readings with a gap: learnt from for their readings (a loss), judged by nothing (no score)
    assert all(r["loss"] is not None and r["anomaly"] is None for r in results[20:35])
    metrics = client.get("/v1/streams/s/metrics").json()
    assert metrics["imputed"] == 15 and metrics["steps"] == 60
    history = client.get("/v1/streams/s/predictions", params={"limit": 60}).json()["results"]
    assert [r["x"] for r in history] == [o["x"] for o in body["observations"]]  # the nulls as sent
    csv = client.get("/v1/streams/s/predictions.csv", params={"limit": 60}).text.splitlines()
    assert csv[21].split(",")[3:6] == ["0.0", "", "10.0"]  # seq 21: x_1 missing, an empty cell
    again = post(client, {"observations": body["observations"][25:27]})  # a retry of readings with a null
    assert again.status_code == 200 and [r["duplicate"] for r in again.json()["results"]] == [True, True]
    other = {**body["observations"][26], "x": [1.0, 1.0, 1.0]}
    assert post(client, other).status_code == 409  # the same seq with other values is not a retry


def test_what_such_streams_refuse_and_why(client):
    assert client.put("/v1/streams/plain", json={"model": {"input_size": 2}}).status_code == 201
    response = post(client, {"x": [1.0, None]}, "plain")
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "x", 1] and "impute_missing" in error["msg"]
    assert client.put("/v1/streams/s", json=GAPPY).status_code == 201
    response = post(client, {"observations": [{"x": [1.0, None, 2.0], "ts": 5}, {"x": [1.0, 2.0, 3.0]}]})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "observations", 1, "ts"] and "elapsed_input" in error["msg"]
    assert client.get("/v1/streams/s").json()["steps"] == 0  # nothing of a refused request is applied
    refused = client.put("/v1/streams/t", json={**GAPPY, "timestamps": "any"})
    assert refused.status_code == 422 and "timestamps" in refused.text
    assert client.patch("/v1/streams/s", json={"impute_missing": False}).status_code == 409  # its network's inputs
    config = client.get("/v1/streams/s").json()["config"]
    assert (config["impute_missing"], config["elapsed_input"]) == (True, True)


def test_gaps_and_elapsed_times_survive_kill_9(tmp_path):
    """The log alone holds the last observations after kill -9: replayed with their nulls and timestamps,
    the stream continues as if it had never stopped."""
    body = readings(50)
    server = Server(tmp_path / "data").start()
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put("/v1/streams/s", json=GAPPY).status_code == 201
            assert post(c, {"observations": body[:40]}).status_code == 200
        server.kill()
        server = Server(tmp_path / "data").start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            after = post(c, {"observations": body[40:]}).json()["results"]
            history = c.get("/v1/streams/s/predictions", params={"limit": 50}).json()["results"]
    finally:
        server.stop()
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=3, target="next", impute_missing=True, elapsed_input=True))
    want = engine.observe_many([("s", o["x"], None, True, float(o["ts"])) for o in body])
    assert [r["prediction"] for r in after] == [w.prediction for w in want[40:]]
    assert [r["x"] for r in history] == [o["x"] for o in body]
