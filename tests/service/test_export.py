"""An exported model file is self-contained: the README's plain-PyTorch function, run on the file and the
readings that come after the export, gives the predictions the service gives for them."""

from __future__ import annotations

import math
import re
from pathlib import Path

import numpy as np
import pytest
from safetensors.torch import load as load_tensors

README = Path(__file__).resolve().parents[2] / "README.md"


def readme_function():
    """The code block after the README's export-example marker, executed: its ``predictions``."""
    text = README.read_text()
    block = re.search(r"<!-- export-example -->\n```python\n(.*?)```", text, re.S)
    assert block, "README lost its export example"
    namespace: dict = {}
    exec(compile(block.group(1), "README.md", "exec"), namespace)
    return namespace["predictions"]


def series(count: int, inputs: int, seed: int, period: float = 10 * math.pi) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(count)[:, None]
    return 20 + 3 * np.sin(2 * math.pi * t / period + np.arange(inputs)) + 0.3 * rng.standard_normal((count, inputs))


CASES = {
    "forecast, GRU": {"model": {"input_size": 2}, "target": "next", "tbptt": {"k1": 64}},
    "forecast, LSTM 2 layers": {
        "model": {"input_size": 1, "cell": "lstm", "num_layers": 2, "hidden_size": 16}, "target": "next",
        "tbptt": {"k1": 64},
    },
    "forecast, GRU, no gate": {"model": {"input_size": 2}, "target": "next", "tbptt": {"k1": 64}, "gate": False},
    "explicit, RNN, some targets missing": {"model": {"input_size": 3, "cell": "rnn"}, "tbptt": {"k1": 64}},
    "forecast, GRU, season of 12 given": {"model": {"input_size": 2}, "target": "next", "tbptt": {"k1": 64}, "season": 12},
    # exported before its first reading: until a target is judged the naive forecast is reported (no update
    # before 110 readings: k1 = 128)
    "forecast, GRU, exported before any reading": {
        "model": {"input_size": 2}, "target": "next", "tbptt": {"k1": 128}, "export_at": 0,
    },
    # exported after 40 readings, the season is found after 48 and checked after 64 (no update: k1 = 128)
    "forecast, GRU, season found after the export": {
        "model": {"input_size": 1}, "target": "next", "tbptt": {"k1": 128}, "export_at": 40, "period": 12,
    },
    # readings that fall, then climb, by one a step: the gate's drift candidate (the last reading plus the
    # recent mean change) leads
    "forecast, GRU, a trend that turns": {
        "model": {"input_size": 1}, "target": "next", "tbptt": {"k1": 64}, "trend": 1.0, "period": 1e9,
    },
    # noise around a level: the gate's reversion candidate (the last reading pulled toward the recent mean) leads
    "forecast, GRU, readings around a level": {
        "model": {"input_size": 1}, "target": "next", "tbptt": {"k1": 64}, "period": 1e9, "reverts": True,
    },
    # a reading 1,000 off (in every input, so in explicit mode the target too) after the export: it enters
    # the running statistics at 8 deviations from their mean (models/normalizer.py)
    "forecast, GRU, a glitch after the export": {
        "model": {"input_size": 1}, "target": "next", "tbptt": {"k1": 64}, "period": 1e9, "glitch": 90,
    },
    "explicit, RNN, a glitch after the export": {"model": {"input_size": 3, "cell": "rnn"}, "tbptt": {"k1": 64}, "glitch": 90},
    # a first reading 1,000 off, exported before it: at the 20th reading it is replaced by the mean of the next 19
    # (no gate: the untrained network's own predictions, which the statistics scale, are what is reported)
    "forecast, GRU, a garbage first reading": {
        "model": {"input_size": 1}, "target": "next", "tbptt": {"k1": 128}, "gate": False, "export_at": 0,
        "glitch": 0,
    },
    "explicit, RNN, a garbage first reading": {
        "model": {"input_size": 3, "cell": "rnn"}, "tbptt": {"k1": 128}, "gate": False, "export_at": 0, "glitch": 0,
    },
    # 1,490 readings: the inputs' sums reach a count of 1,400 after the export and are halved (updates at 500,
    # 1,000, 1,500)
    "explicit, RNN, the inputs' sums halved after the export": {
        "model": {"input_size": 3, "cell": "rnn"}, "tbptt": {"k1": 500}, "export_at": 1010, "length": 1490,
    },
}  # fmt: skip


@pytest.mark.parametrize("case", CASES)
def test_the_readme_function_reproduces_the_services_predictions_from_an_export(client, tmp_path, case):
    config = dict(CASES[case])
    export_at, period = config.pop("export_at", 70), config.pop("period", 10 * math.pi)
    trend, reverts, glitch = config.pop("trend", 0.0), config.pop("reverts", False), config.pop("glitch", None)
    length, inputs = config.pop("length", 110), config["model"]["input_size"]
    explicit = config.get("target") != "next"
    x = series(length, inputs, seed=len(case), period=period) + trend * np.abs(np.arange(length) - 55)[:, None]
    if glitch is not None:
        x[glitch] += 1000.0
    y = x.sum(axis=1, keepdims=True) / 3 + 1.0

    def observation(k: int) -> dict:
        obs: dict = {"x": x[k].tolist()}
        if explicit and k % 4 != 3:
            obs["y"] = y[k].tolist()
        return obs

    assert client.put("/v1/streams/s", json=config).status_code == 201
    before = [observation(k) for k in range(export_at)]  # an update at step 64 (k1 64); the next at 128
    if before:
        assert client.post("/v1/streams/s/observations", json={"observations": before}).status_code == 200
    exported = tmp_path / "s.safetensors"
    exported.write_bytes(client.get("/v1/streams/s/model").content)
    judged = int(load_tensors(exported.read_bytes())["stream.gate_count"])
    gated = config.get("gate", True) and export_at > 1  # (forecast mode judges from the second reading on)
    assert judged > 0 if gated else judged == 0  # the gate's state is part of it
    after = [observation(k) for k in range(export_at, length)]
    results = client.post("/v1/streams/s/observations", json={"observations": after}).json()["results"]
    assert not any(r["updated"] for r in results)
    served = np.array([r["prediction"] for r in results])
    ours = np.array(readme_function()(str(exported), after))
    assert served.shape == ours.shape
    # float32 network, float64 statistics: the two differ by float32's rounding of the network's output,
    # scaled by the targets' std (values near 20 here), and nothing more
    tolerance = 1e-5 * max(1.0, float(np.abs(served).max()))
    assert np.abs(served - ours).max() <= tolerance, np.abs(served - ours).max()
    assert not math.isnan(float(ours.sum()))
    if trend:
        state = load_tensors(client.get("/v1/streams/s/model").content)
        others = min(
            float(state["stream.gate_err"].min()), float(state["stream.gate_season_err"].nan_to_num(math.inf).min())
        )
        assert float(state["stream.gate_drift_err"].min()) < others, "the drift candidate does not lead"
    if reverts:
        state = load_tensors(client.get("/v1/streams/s/model").content)
        others = min(float(state["stream.gate_err"].min()), float(state["stream.gate_drift_err"].min()))
        assert float(state["stream.gate_revert_err"].min()) < others, "the reversion candidate does not lead"
        assert int(load_tensors(exported.read_bytes())["stream.gate_revert_n"]) == export_at - 1
    if "season" in config or period == 12:
        assert client.get("/v1/streams/s/metrics").json()["season"] == 12


def test_an_exported_file_imports_into_another_stream(client):
    config = CASES["forecast, GRU"]
    for stream in ("a", "b"):
        assert client.put(f"/v1/streams/{stream}", json=config).status_code == 201
    observations = [{"x": row.tolist()} for row in series(30, 2, seed=1)]
    assert client.post("/v1/streams/a/observations", json={"observations": observations}).status_code == 200
    exported = client.get("/v1/streams/a/model").content
    assert "stream.x_count" in load_tensors(exported) and "stream.hidden" in load_tensors(exported)
    assert client.put("/v1/streams/b/model", content=exported).status_code == 200
    weights = {k: v for k, v in load_tensors(client.get("/v1/streams/b/model").content).items() if k[:7] != "stream."}
    assert all((weights[k] == v).all() for k, v in load_tensors(exported).items() if k[:7] != "stream.")
    typo = {**load_tensors(exported), "stream.hiden": load_tensors(exported)["stream.hidden"]}
    from safetensors.torch import save as save_tensors

    r = client.put("/v1/streams/b/model", content=save_tensors(typo))
    assert r.status_code == 422 and "stream.hiden" in r.text


def test_a_file_from_a_stream_with_other_network_inputs_is_refused_saying_why(client):
    """impute_missing and elapsed_input add inputs to the network: a model file from a stream without them
    does not fit one with them (nor the other way), and the refusal names the setting, not a shape."""
    assert client.put("/v1/streams/gappy", json={"model": {"input_size": 2}, "impute_missing": True}).status_code == 201
    assert client.put("/v1/streams/plain", json={"model": {"input_size": 2}}).status_code == 201
    exported = client.get("/v1/streams/plain/model").content
    r = client.put("/v1/streams/gappy/model", content=exported)
    assert r.status_code == 422 and "impute_missing=False, the stream True" in r.text, r.text
