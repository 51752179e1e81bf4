"""Rules an observation must follow that depend on its stream (its sizes and target mode)."""

from __future__ import annotations

from tbptt.models import StreamConfig as CoreConfig

from .errors import Invalid
from .hub import Incoming
from .schemas import Observation

Loc = tuple[str | int, ...]


def incoming(config: CoreConfig, observation: Observation, loc: Loc) -> Incoming:
    """The observation checked against ``config``; a 422 naming ``loc`` + the field otherwise."""
    x = observation.x
    if len(x) != config.input_size:
        raise Invalid([*loc, "x"], f"expected {config.input_size} values (the stream's input_size), got {len(x)}")
    y = None
    if observation.y is not None:
        if config.target == "next":
            raise Invalid([*loc, "y"], "must be null: in forecast mode the target is the next observation's x")
        y = observation.y
        if len(y) != config.output_size:
            raise Invalid([*loc, "y"], f"expected {config.output_size} values (the stream's output_size), got {len(y)}")
    return Incoming(x, y, observation.seq)
