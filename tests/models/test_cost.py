"""What a schedule counts an observation as (models/cost.py), worked out by hand for a few networks."""

from __future__ import annotations

from tbptt.models import StreamConfig, observation_macs, step_macs, update_macs


def test_a_step_counts_every_layers_gates_and_the_head():
    gru = StreamConfig(input_size=8, hidden_size=32)
    assert step_macs(gru) == 3 * 32 * (8 + 32) + 32 * 1
    # two LSTM layers over 4 inputs and their 4 missing-value flags: the second layer reads the first
    lstm = StreamConfig(input_size=4, impute_missing=True, cell="lstm", hidden_size=16, num_layers=2, output_size=2)
    assert step_macs(lstm) == 4 * 16 * (8 + 16) + 4 * 16 * (16 + 16) + 16 * 2
    rnn = StreamConfig(input_size=1, elapsed_input=True, cell="rnn", hidden_size=5, num_layers=3)
    assert step_macs(rnn) == 1 * 5 * (2 + 5) + 2 * (1 * 5 * (5 + 5)) + 5


def test_an_observation_counts_its_forecasts_rolled_forward_and_the_update_it_completes():
    stream = StreamConfig(input_size=1, target="next", horizon=3, hidden_size=8, k1=4, k2=6)
    step = 3 * 8 * (1 + 8) + 8
    assert update_macs(stream) == 3 * 6 * step
    assert observation_macs(stream, updates=False) == 3 * step
    assert observation_macs(stream, updates=True) == 3 * step + 3 * 6 * step
