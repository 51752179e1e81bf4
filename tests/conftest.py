"""Shared fixtures; shared factories live in tests/factories.py.

``measure``: tests marked ``measurement`` time or weigh something. On a busy machine such figures move, so
each is reported against its goal in a table at the end of the run instead of failing the suite; the test
itself still fails on a gross miss (a bound far beyond the goal, which only a real defect reaches).
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch

torch.set_num_threads(1)

_MEASURED: list[tuple[str, str, float, float, str, bool]] = []


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[..., bool]:
    """``measure(what, value, goal, unit)``: record a figure (lower is better); whether it met its goal."""
    assert request.node.get_closest_marker("measurement"), "a test that measures is marked measurement"

    def record(what: str, value: float, goal: float, unit: str = "") -> bool:
        _MEASURED.append((request.node.nodeid, what, value, goal, unit, value <= goal))
        return value <= goal

    return record


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _MEASURED:
        return
    terminalreporter.section("measurements (reported against their goals, not asserted)")
    for test, what, value, goal, unit, met in _MEASURED:
        verdict = "met" if met else "MISSED"
        terminalreporter.write_line(f"{verdict:>6}  {what}: {value:.4g}{unit} (goal <= {goal:g}{unit})  [{test}]")
