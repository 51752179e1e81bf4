"""Weights leave and enter under torch.nn names and shapes, so plain PyTorch loads them."""

from __future__ import annotations

import pytest
import torch

from tbptt.models import Engine, InvalidState, StreamConfig
from tests.factories import RAW, assert_identical, sequence
from tests.reference import MODULES, build, weights


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_initial_weights_are_those_of_seeded_torch_modules(cell, dtype):
    config = StreamConfig(cell=cell, input_size=3, hidden_size=7, num_layers=2, output_size=2, dtype=dtype, seed=42)
    engine = Engine()
    engine.add_stream("s", config)
    rnn, head = build(config)
    assert_identical(engine.export_weights("s"), weights(rnn, head))


@pytest.mark.parametrize("cell", ["rnn", "gru", "lstm"])
def test_exported_weights_load_into_torch_and_predict_the_same(cell):
    config = StreamConfig(
        cell=cell,
        input_size=3,
        hidden_size=6,
        num_layers=2,
        output_size=2,
        k1=5,
        dtype="float64",
        **RAW,
    )
    engine = Engine()
    engine.add_stream("s", config)
    xs, ys = sequence(3, 2, 50, seed=3)
    for x, y in zip(xs, ys):
        engine.observe("s", x, y)  # 50 steps: 10 updates, the last at step 50
    rnn = MODULES[cell](3, 6, 2, dtype=torch.float64)
    head = torch.nn.Linear(6, 2, dtype=torch.float64)
    exported = engine.export_weights("s")
    rnn.load_state_dict({k.removeprefix("rnn."): v for k, v in exported.items() if k.startswith("rnn.")})
    head.load_state_dict({k.removeprefix("head."): v for k, v in exported.items() if k.startswith("head.")})
    more, _ = sequence(3, 2, 4, seed=4)
    hidden = engine.hidden("s")  # (L, H), or the pair (h, c): what torch.nn takes for unbatched input
    got = [engine.observe("s", x).prediction for x in more]  # no update: the next is at step 55
    with torch.no_grad():
        out, _ = rnn(torch.tensor(more, dtype=torch.float64), hidden)
        expected = head(out).tolist()
    torch.testing.assert_close(
        torch.tensor(got, dtype=torch.float64), torch.tensor(expected, dtype=torch.float64), atol=1e-12, rtol=0
    )


def test_import_replaces_weights_and_resets_optimizer_and_hidden():
    config = StreamConfig(input_size=2, hidden_size=4, k1=2, lr=0.05)
    engine = Engine()
    engine.add_stream("s", config)
    for t in range(10):
        engine.observe("s", [t, 1.0], [0.5])
    new = {k: torch.full_like(v, 0.01) for k, v in engine.export_weights("s").items()}
    engine.import_weights("s", new)
    assert_identical(engine.export_weights("s"), new)
    assert torch.count_nonzero(engine.hidden("s")) == 0
    state = engine.state_dict("s")["tensors"]
    assert torch.count_nonzero(state["exp_avg"]) == 0 and state["opt_steps"].item() == 0


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (lambda w: w.pop("head.bias"), r"missing \['head.bias'\]"),
        (lambda w: w.update(extra=torch.zeros(1)), r"unexpected \['extra'\]"),
        (lambda w: w.update({"head.bias": torch.zeros(2)}), r"head.bias must have shape \[1\], got \[2\]"),
        (lambda w: w.update({"head.bias": torch.zeros(1, dtype=torch.float64)}), "head.bias must be float32"),
        (lambda w: w.update({"head.bias": torch.tensor([float("nan")])}), "head.bias has non-finite values"),
    ],
)
def test_import_checks_names_shapes_dtype_and_finiteness(change, message):
    engine = Engine()
    engine.add_stream("s", StreamConfig(input_size=2))
    before = engine.state_dict("s")["tensors"]
    bad = engine.export_weights("s")
    change(bad)
    with pytest.raises(InvalidState, match=message):
        engine.import_weights("s", bad)
    assert_identical(engine.state_dict("s")["tensors"], before)
