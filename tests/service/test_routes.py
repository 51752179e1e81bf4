"""Every endpoint of the v1 contract, and every error it promises, through the real app (TestClient)."""

from __future__ import annotations

import json

import pytest
import torch
from safetensors.torch import load as load_tensors
from safetensors.torch import save as save_tensors

from tbptt.service.settings import Settings
from tests.service.factories import app_client, make_stream, wait_ready

DEFAULTS = {
    "model": {"cell": "gru", "input_size": 2, "hidden_size": 32, "num_layers": 1, "output_size": 1},
    "tbptt": {"k1": 8, "k2": 8},
    "optimizer": {
        "name": "adam",
        "lr": 0.01,
        "momentum": 0.0,
        "betas": [0.9, 0.999],
        "eps": 1e-08,
        "weight_decay": 0.0,
    },
    "loss": "huber",
    "clip_grad_norm": None,
    "target": "explicit",
    "normalize": True,
    "residual": True,
    "from_last_target": True,
    "gate": True,
    "season": None,
    "horizon": 1,
    "anomaly_threshold": 0.95,
    "coverage": 0.9,
    "learn_from_anomalies": True,
    "patterns": False,
    "spread": False,
    "episode_gap": 25,
    "dtype": "float32",
    "seed": 0,
    "timestamps": "increasing",
    "impute_missing": False,
    "elapsed_input": False,
    "labels": {},
}

NOT_JUDGED = {"anomaly": None, "anomalous": None, "interval": None}  # what a result without them says


def errors(response) -> list[dict]:
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert isinstance(detail, list) and all(set(e) == {"loc", "msg", "type"} for e in detail)
    return detail


# -- streams --------------------------------------------------------------------------------------------------


def test_put_creates_then_confirms_then_conflicts(client):
    r = client.put("/v1/streams/pump-7", json={"model": {"input_size": 2}})
    assert r.status_code == 201
    info = r.json()
    assert info["config"] == DEFAULTS  # complete: every default filled in
    assert (info["id"], info["steps"], info["updates"], info["last_seq"]) == ("pump-7", 0, 0, None)
    assert info["created_at"].endswith("Z")
    assert client.put("/v1/streams/pump-7", json={"model": {"input_size": 2}}).status_code == 200
    assert client.put("/v1/streams/pump-7", json=DEFAULTS).status_code == 200  # the same, spelled out
    r = client.put("/v1/streams/pump-7", json={"model": {"input_size": 3}})
    assert r.status_code == 409 and "another config" in r.json()["detail"]
    assert "(model.input_size 2 there, 3 here)" in r.json()["detail"]  # what to send instead


def test_a_conflicting_put_names_a_default_that_changed_since_the_stream_was_created(client):
    """A forecast stream created without the spread score (as before it was a default) is not confirmed by a
    PUT that leaves it to the default now: the 409 says which field and both values, so that a sender names the
    stream's value instead of deleting what it learnt."""
    forecast = {"model": {"input_size": 1}, "target": "next"}
    assert client.put("/v1/streams/old", json={**forecast, "spread": False}).status_code == 201
    r = client.put("/v1/streams/old", json=forecast)
    assert r.status_code == 409
    assert "(spread false there, true here)" in r.json()["detail"] and "GET /v1/streams/old" in r.json()["detail"]
    assert client.put("/v1/streams/old", json={**forecast, "spread": False}).status_code == 200


def test_forecast_defaults_and_k2(client):
    info = make_stream(client, "f", model={"input_size": 3}, target="next", tbptt={"k1": 4})
    assert info["config"]["model"]["output_size"] == 3 and info["config"]["tbptt"] == {"k1": 4, "k2": 4}


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({}, ["body", "model"]),
        ({"model": {}}, ["body", "model", "input_size"]),
        ({"model": {"input_size": 0}}, ["body", "model", "input_size"]),
        ({"model": {"input_size": 1, "cell": "transformer"}}, ["body", "model", "cell"]),
        ({"model": {"input_size": 1, "num_layers": 5}}, ["body", "model", "num_layers"]),
        ({"model": {"input_size": 1}, "tbptt": {"k1": 8, "k2": 4}}, ["body", "tbptt", "k2"]),  # rules across fields
        ({"model": {"input_size": 2, "output_size": 1}, "target": "next"}, ["body", "model", "output_size"]),
        ({"model": {"input_size": 1}, "optimizer": {"lr": -1}}, ["body", "optimizer", "lr"]),
        ({"model": {"input_size": 1}, "seed": 2**53}, ["body", "seed"]),
        ({"model": {"input_size": 1}, "colour": "red"}, ["body", "colour"]),
    ],
)
def test_invalid_configs_name_the_field(client, body, loc):
    detail = errors(client.put("/v1/streams/s", json=body))
    assert detail[0]["loc"] == loc, detail


def test_get_list_delete(client):
    make_stream(client, "b")
    make_stream(client, "a")
    assert [s["id"] for s in client.get("/v1/streams").json()["streams"]] == ["a", "b"]
    assert client.get("/v1/streams/a").json()["id"] == "a"
    assert client.delete("/v1/streams/a").status_code == 204
    assert client.get("/v1/streams/a").status_code == 404
    assert [s["id"] for s in client.get("/v1/streams").json()["streams"]] == ["b"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("get", "/v1/streams/nope"),
        ("delete", "/v1/streams/nope"),
        ("post", "/v1/streams/nope/reset"),
        ("get", "/v1/streams/nope/predictions"),
        ("get", "/v1/streams/nope/metrics"),
        ("get", "/v1/streams/nope/model"),
    ],
)
def test_unknown_stream_is_404(client, method, path):
    r = getattr(client, method)(path)
    assert r.status_code == 404 and r.json() == {"detail": "stream 'nope' not found"}


@pytest.mark.parametrize(
    ("bad", "status"), [("-starts-with-dash", 422), ("x" * 129, 422), ("sp ace", 422), ("has/slash", 404)]
)
def test_invalid_ids_are_refused(client, bad, status):
    r = client.put(f"/v1/streams/{bad}", json={"model": {"input_size": 1}})
    assert r.status_code == status  # a slash never reaches the route: no route has that path


# -- observations ---------------------------------------------------------------------------------------------


def test_single_observation_result(client):
    make_stream(client, "s")
    r = client.post("/v1/streams/s/observations", json={"x": [1.0, 2.0], "y": 0.5})
    assert r.status_code == 200
    body = r.json()
    assert body["stream"] == "s"
    (result,) = body["results"]
    assert set(result) == {
        "seq",
        "step",
        "ts",
        "prediction",
        "loss",
        "updated",
        "anomaly",
        "anomalous",
        "interval",
        "duplicate",
    }
    assert {k: result[k] for k in NOT_JUDGED} == NOT_JUDGED  # the first observation: nothing judged yet
    assert (result["seq"], result["step"], result["duplicate"], result["updated"]) == (1, 1, False, False)
    assert len(result["prediction"]) == 1


def test_plain_numbers_for_size_one(client):
    make_stream(client, "one", model={"input_size": 1})
    r = client.post("/v1/streams/one/observations", json={"x": 3.5, "y": 1})
    assert r.status_code == 200 and r.json()["results"][0]["step"] == 1


def test_batch_in_order_with_updates_at_k1_boundaries(client):
    make_stream(client, "s", tbptt={"k1": 4})
    obs = [{"x": [i, -i], "y": i % 3} for i in range(10)]
    results = client.post("/v1/streams/s/observations", json={"observations": obs}).json()["results"]
    assert [r["step"] for r in results] == list(range(1, 11))
    assert [r["seq"] for r in results] == list(range(1, 11))
    assert [r["updated"] for r in results] == [s % 4 == 0 for s in range(1, 11)]
    assert client.get("/v1/streams/s").json()["updates"] == 2


def test_a_batch_is_validated_whole_before_anything_is_applied(client):
    make_stream(client, "s")
    obs = [{"x": [1, 2]}, {"x": [1, 2]}, {"x": [1, 2, 3]}, {"x": [1, 2]}]
    detail = errors(client.post("/v1/streams/s/observations", json={"observations": obs}))
    assert detail == [
        {
            "loc": ["body", "observations", 2, "x"],
            "msg": "expected 2 values (the stream's input_size), got 3",
            "type": "value_error",
        }
    ]
    assert client.get("/v1/streams/s").json()["steps"] == 0


@pytest.mark.parametrize(
    ("body", "loc"),
    [
        ({"x": [1, 2], "y": [1, 2]}, ["body", "y"]),
        ({"x": []}, ["body", "x"]),
        ({"x": "high"}, ["body", "x"]),
        ({"x": [1, True]}, ["body", "x", 1]),
        ({"x": [1, 2], "seq": -1}, ["body", "seq"]),
        ({"x": [1, 2], "seq": 2**53}, ["body", "seq"]),
        ({"x": [1, 2], "extra": 1}, ["body", "extra"]),
        ({"x": [1, 1e16]}, ["body", "x", 1]),
        ({"observations": []}, ["body", "observations"]),
        ({"observations": [{"x": [1, 2]}, {"x": [1, "a"]}]}, ["body", "observations", 1, "x", 1]),
    ],
)
def test_bad_observations_are_422_naming_the_field(client, body, loc):
    make_stream(client, "s")
    detail = errors(client.post("/v1/streams/s/observations", json=body))
    assert detail[0]["loc"] == loc, detail


@pytest.mark.parametrize("y", ["2.0", True, {"v": 2}])
def test_a_target_that_is_neither_a_number_nor_a_list_says_so(client, y):
    make_stream(client, "s", model={"input_size": 1})
    (detail,) = errors(client.post("/v1/streams/s/observations", json={"x": 1.0, "y": y}))
    assert detail["loc"] == ["body", "y"] and detail["msg"] == "Input should be a number or a list of numbers"


@pytest.mark.parametrize(
    "raw", [b'{"x": [NaN, 1]}', b'{"x": [Infinity, 1]}', b'{"x": [1e999, 1]}', b'{"x": [-Infinity, 1]}']
)
def test_non_finite_numbers_are_422_not_500(client, raw):
    make_stream(client, "s")
    r = client.post("/v1/streams/s/observations", content=raw, headers={"content-type": "application/json"})
    assert errors(r)[0]["loc"] == ["body", "x", 0]
    assert "NaN" not in r.text and "Infinity" not in r.text


@pytest.mark.parametrize("raw", [b"{not json", b"\xff\xfe\x00", b"", b"[1, 2]"])
def test_malformed_bodies_are_422(client, raw):
    make_stream(client, "s")
    r = client.post("/v1/streams/s/observations", content=raw, headers={"content-type": "application/json"})
    assert errors(r)


def test_forecast_streams_refuse_targets(client):
    make_stream(client, "f", model={"input_size": 2}, target="next")
    detail = errors(client.post("/v1/streams/f/observations", json={"x": [1, 2], "y": [1, 2]}))
    assert detail[0]["loc"] == ["body", "y"]


def test_seq_duplicates_and_gaps(client):
    make_stream(client, "s")
    post = lambda obs: client.post("/v1/streams/s/observations", json={"observations": obs}).json()["results"]  # noqa: E731
    first = post([{"x": [1, 2], "seq": 5}, {"x": [2, 3], "seq": 9}])  # a gap is fine
    assert [r["step"] for r in first] == [1, 2]
    again = post([{"x": [1, 2], "seq": 5}, {"x": [2, 3], "seq": 9}, {"x": [3, 4]}])
    assert again[0] == {**first[0], "duplicate": True}
    assert again[1] == {**first[1], "duplicate": True}
    assert (again[2]["seq"], again[2]["step"], again[2]["duplicate"]) == (10, 3, False)  # last seq + 1
    never_seen = client.post("/v1/streams/s/observations", json={"x": [1, 2], "seq": 7})  # below the last
    assert never_seen.status_code == 409  # ... and never sent: not a retry (a sender whose seqs restarted)
    assert "not a retry (no observation with that seq is kept)" in never_seen.json()["detail"][0]["msg"]
    metrics = client.get("/v1/streams/s/metrics").json()
    assert (metrics["steps"], metrics["last_seq"], metrics["duplicates"]) == (3, 10, 2)


def test_retries_are_recognized_while_kept_and_refused_beyond_retention(tmp_path):
    with app_client(Settings(data_dir=tmp_path / "data", results_retained=1000)) as client:
        wait_ready(client)
        make_stream(client, "s", model={"input_size": 1})
        obs = [{"x": float(i)} for i in range(1500)]
        assert client.post("/v1/streams/s/observations", json={"observations": obs}).status_code == 200
        kept = client.post("/v1/streams/s/observations", json={"x": 1399.0, "seq": 1400}).json()["results"][0]
        assert kept["duplicate"] and kept["step"] == 1400 and len(kept["prediction"]) == 1
        old = client.post("/v1/streams/s/observations", json={"x": 0.0, "seq": 1})
        assert old.status_code == 409  # too old to tell a retry from a sender whose seqs restarted
        assert "no observation with that seq is kept" in old.json()["detail"][0]["msg"]
        assert client.get("/v1/streams/s/metrics").json()["duplicates"] == 1


def test_seqs_never_pass_what_a_json_client_can_send_back(client):
    make_stream(client, "s", model={"input_size": 1})
    last = 2**53 - 1
    assert client.post("/v1/streams/s/observations", json={"x": 1.0, "seq": last}).json()["results"][0]["seq"] == last
    r = client.post("/v1/streams/s/observations", json={"x": 2.0})
    assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["body", "seq"], r.text
    again = client.post("/v1/streams/s/observations", json={"x": 1.0, "seq": last}).json()["results"][0]
    assert again["duplicate"] and client.get("/v1/streams/s").json()["steps"] == 1


def test_cross_stream_observations_in_request_order(client):
    make_stream(client, "a")
    make_stream(client, "b", model={"input_size": 1})
    body = {
        "observations": [{"stream": "a", "x": [1, 2]}, {"stream": "b", "x": 3}, {"stream": "a", "x": [0, 1], "y": 1}]
    }
    results = client.post("/v1/observations", json=body).json()["results"]
    assert [(r["stream"], r["step"]) for r in results] == [("a", 1), ("b", 1), ("a", 2)]


def test_cross_stream_batch_is_all_or_nothing(client):
    make_stream(client, "a")
    r = client.post("/v1/observations", json={"observations": [{"stream": "a", "x": [1, 2]}, {"stream": "zz", "x": 1}]})
    assert r.status_code == 404 and r.json() == {"detail": "stream 'zz' not found"}
    r = client.post("/v1/observations", json={"observations": [{"stream": "a", "x": [1, 2]}, {"stream": "a", "x": 1}]})
    assert errors(r)[0]["loc"] == ["body", "observations", 1, "x"]
    assert client.get("/v1/streams/a").json()["steps"] == 0


# -- reset, predictions, metrics --------------------------------------------------------------------------------


def test_reset_hidden_and_weights(client):
    def weights() -> dict:
        tensors = load_tensors(client.get("/v1/streams/s/model").content)
        return {k: v.tolist() for k, v in tensors.items() if not k.startswith("stream.")}  # no stream state

    make_stream(client, "s", tbptt={"k1": 2})
    model = weights()
    client.post("/v1/streams/s/observations", json={"observations": [{"x": [i, 1], "y": i} for i in range(8)]})
    assert weights() != model
    info = client.post("/v1/streams/s/reset", json={"hidden": True, "weights": True}).json()
    assert info["steps"] == 8
    assert weights() == model  # initial weights again
    assert client.post("/v1/streams/s/reset").status_code == 200  # defaults: hidden only
    assert errors(client.post("/v1/streams/s/reset", json={"hidden": "maybe"}))[0]["loc"] == ["body", "hidden"]


def test_predictions_most_recent_oldest_first(client):
    make_stream(client, "s", model={"input_size": 1})
    client.post("/v1/streams/s/observations", json={"observations": [{"x": float(i)} for i in range(150)]})
    default = client.get("/v1/streams/s/predictions").json()
    assert default["stream"] == "s" and [r["step"] for r in default["results"]] == list(range(51, 151))
    assert [r["step"] for r in client.get("/v1/streams/s/predictions?limit=3").json()["results"]] == [148, 149, 150]
    for bad in ("0", "10001", "many"):
        assert errors(client.get(f"/v1/streams/s/predictions?limit={bad}"))[0]["loc"] == ["query", "limit"]


def test_metrics_shape_and_values(client):
    make_stream(client, "s", tbptt={"k1": 4})
    client.post("/v1/streams/s/observations", json={"observations": [{"x": [i, 1], "y": i % 2} for i in range(20)]})
    m = client.get("/v1/streams/s/metrics").json()
    assert set(m) >= {
        "steps",
        "updates",
        "skipped_updates",
        "last_seq",
        "duplicates",
        "loss",
        "prequential",
        "grad_norm",
        "season",
    }
    assert set(m["loss"]) == {"last_update", "ewma"} and set(m["prequential"]) == {
        "n",
        "mae",
        "rmse",
        "baseline_mae",
        "vs_baseline",
    }
    # (20 targets; the first, predicted knowing nothing of the targets, is not judged)
    assert (m["steps"], m["updates"], m["skipped_updates"], m["last_seq"], m["prequential"]["n"]) == (20, 5, 0, 20, 19)
    assert m["grad_norm"] > 0 and m["loss"]["ewma"] > 0 and m["prequential"]["rmse"] >= m["prequential"]["mae"]
    (output,) = m["outputs"]  # one output: its errors are the stream's
    assert output == {**m["prequential"], "n": 19}


# -- model files ----------------------------------------------------------------------------------------------


def test_model_export_names_shapes_and_config(client):
    make_stream(client, "s", model={"input_size": 2, "cell": "lstm", "num_layers": 2, "hidden_size": 5})
    r = client.get("/v1/streams/s/model")
    assert r.status_code == 200 and r.headers["content-type"] == "application/octet-stream"
    tensors = load_tensors(r.content)
    assert tensors["rnn.weight_ih_l0"].shape == (20, 2) and tensors["rnn.weight_hh_l1"].shape == (20, 5)
    assert tensors["head.weight"].shape == (1, 5)
    header = json.loads(r.content[8 : 8 + int.from_bytes(r.content[:8], "little")])
    assert json.loads(header["__metadata__"]["config"])["model"]["cell"] == "lstm"
    lstm = torch.nn.LSTM(2, 5, 2)
    lstm.load_state_dict({k.removeprefix("rnn."): v for k, v in tensors.items() if k.startswith("rnn.")})


def test_model_import_round_trip_and_checks(client):
    make_stream(client, "s")
    tensors = load_tensors(client.get("/v1/streams/s/model").content)
    new = {k: torch.full_like(v, 0.25) for k, v in tensors.items()}
    r = client.put("/v1/streams/s/model", content=save_tensors(new))
    assert r.status_code == 200 and r.json()["id"] == "s"
    assert torch.equal(load_tensors(client.get("/v1/streams/s/model").content)["head.bias"], new["head.bias"])
    bad = {**new, "head.bias": torch.tensor([float("nan")])}
    assert "non-finite" in errors(client.put("/v1/streams/s/model", content=save_tensors(bad)))[0]["msg"]
    wrong = {**new, "head.bias": torch.zeros(2)}
    assert "shape" in errors(client.put("/v1/streams/s/model", content=save_tensors(wrong)))[0]["msg"]
    double = {k: v.double() for k, v in new.items()}
    assert "float32" in errors(client.put("/v1/streams/s/model", content=save_tensors(double)))[0]["msg"]
    assert errors(client.put("/v1/streams/s/model", content=b"\x80\x04K\x01."))  # a pickle: refused
    assert torch.equal(load_tensors(client.get("/v1/streams/s/model").content)["head.bias"], new["head.bias"])


# -- health, metrics, docs ------------------------------------------------------------------------------------


def test_health_ready_and_prometheus(client):
    assert client.get("/healthz").json() == {"status": "ok"}
    assert client.get("/readyz").json() == {"status": "ok"}
    make_stream(client, "s")
    client.post("/v1/streams/s/observations", json={"observations": [{"x": [1, 2], "y": 1}] * 8})
    text = client.get("/metrics").text
    for name in (
        "tbptt_observations_total 8.0",
        "tbptt_updates_total 1.0",
        "tbptt_skipped_updates_total 0.0",
        "tbptt_update_duration_seconds_count 1.0",
        "tbptt_streams 1.0",
        'tbptt_http_requests_total{method="POST",route="/v1/streams/{stream_id}/observations",status="200"} 1.0',
    ):
        assert name in text, name
    assert "/v1/streams/s/" not in text  # no per-stream labels


def test_openapi_documents_every_body_with_examples(client):
    spec = client.get("/openapi.json").json()
    assert client.get("/docs").status_code == 200
    for path, methods in spec["paths"].items():
        for method, op in methods.items():
            assert op.get("summary"), (method, path)
    schemas = spec["components"]["schemas"]
    for name in ("StreamCreate", "Observation", "ObservationBatch", "CrossStreamBatch", "StreamReset"):
        assert schemas[name].get("examples"), name


def test_a_query_parameter_a_route_does_not_take_is_refused_naming_those_it_does(client):
    """``?since=5`` where only ``limit`` exists would be ignored, and the last 100 taken for those after 5: a
    422 names it and what the endpoint takes; the parameters it takes still work (the one-observation POST
    included: with a query string it goes past the fast lane to the router, which refuses it)."""
    forecast = {"model": {"input_size": 1}, "target": "next"}
    assert client.put("/v1/streams/q", json=forecast).status_code == 201
    assert client.post("/v1/streams/q/observations", json={"x": 1.0}).status_code == 200
    for method, url, body, takes in (
        ("GET", "/v1/streams/q/predictions?since=5", None, "limit"),
        ("GET", "/v1/anomalies?sinse=3", None, "limit, openings, since"),
        ("GET", "/v1/streams?since=a", None, "cursor, label, limit, prefix"),
        ("POST", "/v1/streams/q/observations?since=5", {"x": 2.0}, "none"),
    ):
        r = client.request(method, url, json=body)
        assert r.status_code == 422, url
        [error] = r.json()["detail"]
        name = url.partition("?")[2].partition("=")[0]
        assert error["loc"] == ["query", name] and error["type"] == "extra_forbidden", url
        assert f"(this endpoint takes: {takes})" in error["msg"], error["msg"]
    assert client.get("/v1/streams/q").json()["steps"] == 1  # (the refused POST applied nothing)
    assert client.get("/v1/streams/q/predictions?limit=1").status_code == 200
    assert client.get("/v1/anomalies?since=0&limit=5&openings=true").status_code == 200
    assert client.get("/healthz?probe=1").status_code == 200  # (health checks take what they are sent)
