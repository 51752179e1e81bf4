"""What a stream's work costs, in multiply-adds: how a scheduler sizes its slices and a service bounds the
work one observation may cause.

Estimates, not measurements: the matrix products dominate a step of any but the smallest networks, and
everything else (the per-call overhead of a tiny network, the optimizer's step) is left to the caller's
calibration against the clock.
"""

from __future__ import annotations

from .config import StreamConfig

GATES = {"rnn": 1, "gru": 3, "lstm": 4}
BACKWARD_FACTOR = 3  # an update replays the window's forward and runs its backward (about twice the forward)


def step_macs(config: StreamConfig) -> int:
    """Multiply-adds of one live step: every layer's gates and the output head."""
    assert config.output_size is not None
    hidden, gates = config.hidden_size, GATES[config.cell]
    # the first layer reads the network's inputs, every later one the layer below (a schedule costs every
    # observation of a batch: a closed form, not a loop over layers)
    first = gates * hidden * (config.network_inputs + hidden)
    return first + (config.num_layers - 1) * gates * hidden * 2 * hidden + hidden * config.output_size


def update_macs(config: StreamConfig) -> int:
    """Multiply-adds of one TBPTT update: forward and backward through the last k2 steps (an upper bound:
    with k1 == k2 the live forward is reused)."""
    return _update_macs(config, step_macs(config))


def _update_macs(config: StreamConfig, step: int) -> int:
    assert config.k2 is not None
    return BACKWARD_FACTOR * config.k2 * step


def observation_macs(config: StreamConfig, updates: bool) -> int:
    """Multiply-adds of one observation: its live step, the forecasts rolled forward (a horizon H: H - 1
    more steps), and the update it completes, if it does."""
    step = step_macs(config)
    return config.horizon * step + (_update_macs(config, step) if updates else 0)
