"""What sensors send besides values, through the real server: timestamps (kept, returned, in order), seqs
that restart after a reboot (refused, never silently dropped) and the history of what a stream saw."""

from __future__ import annotations

import httpx
import pytest
from fastapi.testclient import TestClient

from tests.service.server import Server

EXPLICIT = {"model": {"input_size": 2}}
FORECAST = {"model": {"input_size": 1}, "target": "next"}


def post(client: TestClient | httpx.Client, body: dict, stream: str = "s") -> httpx.Response:
    return client.post(f"/v1/streams/{stream}/observations", json=body)


def steps(client: TestClient | httpx.Client, stream: str = "s") -> int:
    return client.get(f"/v1/streams/{stream}").json()["steps"]


def test_timestamps_are_taken_as_rfc_3339_or_unix_seconds_and_returned_in_utc(client):
    assert client.put("/v1/streams/s", json=EXPLICIT).status_code == 201
    body = {
        "observations": [
            {"x": [1.0, 2.0], "y": 0.5, "ts": "2026-12-02T10:00:00Z"},
            {"x": [1.5, 2.5], "ts": "2026-12-02T11:00:00.25+01:00"},  # 10:00:00.25 UTC
            {"x": [2.0, 3.0], "y": 1.0, "ts": 1_796_205_601},  # Unix seconds: 10:00:01 UTC
            {"x": [2.5, 3.5]},  # none: allowed, and it does not move the stream's last ts
        ]
    }
    response = post(client, body)
    assert response.status_code == 200, response.text
    stamps = [r["ts"] for r in response.json()["results"]]
    assert stamps == ["2026-12-02T10:00:00Z", "2026-12-02T10:00:00.250000Z", "2026-12-02T10:00:01Z", None]
    history = client.get("/v1/streams/s/predictions").json()["results"]
    assert [r["ts"] for r in history] == stamps
    assert [(r["x"], r["y"]) for r in history] == [
        ([1.0, 2.0], [0.5]), ([1.5, 2.5], None), ([2.0, 3.0], [1.0]), ([2.5, 3.5], None)
    ]  # fmt: skip
    assert [r["prediction"] for r in history] == [r["prediction"] for r in response.json()["results"]]


@pytest.mark.parametrize(
    "ts, why",
    [
        ("2026-12-02T10:00:00", "UTC offset"),  # no offset: which time is it?
        ("yesterday", "RFC 3339"),
        (True, "RFC 3339"),
        (1e13, "less than or equal"),  # beyond the year 9999
    ],
)
def test_a_timestamp_that_is_not_one_is_a_422_naming_it(client, ts, why):
    assert client.put("/v1/streams/s", json=EXPLICIT).status_code == 201
    response = post(client, {"x": [1.0, 2.0], "ts": ts})
    assert response.status_code == 422
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "ts"] and why in error["msg"], error


def test_a_timestamp_out_of_order_is_a_409_and_nothing_of_its_request_is_applied(client):
    assert client.put("/v1/streams/s", json=EXPLICIT).status_code == 201
    assert post(client, {"x": [1.0, 2.0], "ts": "2026-12-02T10:00:05Z"}).status_code == 200
    late = {"observations": [{"x": [1.0, 2.0], "ts": "2026-12-02T10:00:06Z"}, {"x": [1.0, 2.0], "ts": 0}]}
    response = post(client, late)
    assert response.status_code == 409
    (error,) = response.json()["detail"]
    assert error["loc"] == ["body", "observations", 1, "ts"]
    assert "1970-01-01T00:00:00Z is not after the stream's last ts 2026-12-02T10:00:06Z" in error["msg"]
    assert steps(client) == 1  # neither observation was applied
    same = post(client, {"x": [1.0, 2.0], "ts": "2026-12-02T10:00:05Z"})  # equal is not after, either
    assert same.status_code == 409
    assert client.put("/v1/streams/any", json={**EXPLICIT, "timestamps": "any"}).status_code == 201
    for ts in (100, 50, 50):  # a stream that takes them as they come
        assert post(client, {"x": [1.0, 2.0], "ts": ts}, "any").status_code == 200
    assert client.get("/v1/streams/any").json()["config"]["timestamps"] == "any"


def test_a_rebooted_sender_reusing_seqs_is_refused_and_a_genuine_retry_is_answered(client):
    assert client.put("/v1/streams/s", json=FORECAST).status_code == 201
    first = post(client, {"observations": [{"x": float(k), "seq": k, "ts": 1000 + k} for k in range(1, 6)]})
    assert first.status_code == 200
    retry = post(client, {"observations": [{"x": 3.0, "seq": 3, "ts": 1003}, {"x": 4.0, "seq": 4, "ts": 1004}]})
    assert retry.status_code == 200  # the same values: a retry, answered with the original results
    assert retry.json()["results"] == [{**r, "duplicate": True} for r in first.json()["results"][2:4]]
    rebooted = post(client, {"x": 7.5, "seq": 1, "ts": 2000})  # its seqs started again at 1
    assert rebooted.status_code == 409
    (error,) = rebooted.json()["detail"]
    assert error["loc"] == ["body", "seq"] and "at or below the stream's last seq 5" in error["msg"]
    assert "resume after 5" in error["msg"]
    assert steps(client) == 5 and client.get("/v1/streams/s/metrics").json()["duplicates"] == 2
    assert post(client, {"x": 7.5, "seq": 6, "ts": 2000}).status_code == 200  # resumed: applied


def test_timestamps_history_and_retries_survive_kill_9(tmp_path):
    """Nothing but the log holds the last observations after kill -9: their timestamps, values and the
    stream's last ts come back with its replay."""
    server = Server(tmp_path / "data").start()
    body = {"observations": [{"x": float(k % 7), "seq": k, "ts": 1_700_000_000 + k} for k in range(1, 41)]}
    try:
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.put("/v1/streams/s", json=FORECAST).status_code == 201
            before = post(c, body).json()["results"]
            history = c.get("/v1/streams/s/predictions", params={"limit": 40}).json()["results"]
        server.kill()
        server = Server(tmp_path / "data").start()
        with httpx.Client(base_url=server.url, timeout=30) as c:
            assert c.get("/v1/streams/s/predictions", params={"limit": 40}).json()["results"] == history
            again = post(c, {"observations": body["observations"][-2:]}).json()["results"]
            assert again == [{**r, "duplicate": True} for r in before[-2:]]
            assert post(c, {"x": 1.0, "ts": 1_700_000_000}).status_code == 409  # the last ts came back too
            assert post(c, {"x": 1.0, "seq": 3}).status_code == 409  # and the values to compare retries with
    finally:
        server.stop()


def test_the_history_comes_as_csv_too(client):
    assert client.put("/v1/streams/s", json={"model": {"input_size": 2, "output_size": 2}}).status_code == 201
    body = {"observations": [{"x": [k, -k], "y": [k, 1.0], "ts": 60 * k} for k in range(1, 41)] + [{"x": [0, 0]}]}
    results = post(client, body).json()["results"]
    response = client.get("/v1/streams/s/predictions.csv", params={"limit": 41})
    assert response.status_code == 200 and response.headers["content-type"].startswith("text/csv")
    header, *rows = [line.split(",") for line in response.text.splitlines()]
    assert header == [
        "seq", "step", "ts", "x_0", "x_1", "y_0", "y_1", "prediction_0", "prediction_1",
        "lower_0", "upper_0", "lower_1", "upper_1", "loss", "updated", "anomaly", "anomalous",
    ]  # fmt: skip
    assert len(rows) == 41 and all(len(row) == len(header) for row in rows)
    first, last = dict(zip(header, rows[0])), dict(zip(header, rows[-1]))
    assert (first["seq"], first["ts"], first["x_1"], first["y_0"]) == ("1", "1970-01-01T00:01:00Z", "-1.0", "1.0")
    assert float(first["prediction_1"]) == results[0]["prediction"][1] and first["lower_0"] == ""
    assert (last["ts"], last["y_0"], last["y_1"]) == ("", "", "")  # none: empty cells
    assert [float(last["lower_1"]), float(last["upper_1"])] == results[-1]["interval"][1]
    assert client.get("/v1/streams/nope/predictions.csv").status_code == 404


def test_timestamps_are_written_as_datetime_writes_them():
    """rfc3339 rounds and formats itself (datetime's isoformat cost 3 µs a result): the same text."""
    import random
    from datetime import UTC, datetime

    from tbptt.service.results import rfc3339

    rng = random.Random(0)
    stamps = [rng.uniform(-62_135_596_800.0, 253_402_300_799.0) for _ in range(20_000)]
    stamps += [rng.uniform(1.7e9, 1.8e9) for _ in range(20_000)] + [0.0, -0.5, -1e-7, 0.9999995, 1.9999994999]
    for ts in stamps:
        assert rfc3339(ts) == datetime.fromtimestamp(ts, UTC).isoformat().replace("+00:00", "Z"), ts
    assert rfc3339(None) is None and rfc3339(float("nan")) is None
