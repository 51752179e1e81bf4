"""Shared fixtures; shared factories live in tests/factories.py.

``measure``: tests marked ``measurement`` time or weigh something. On a busy machine such figures move, so
each is reported against its goal in a table at the end of the run instead of failing the suite; the test
itself still fails on a gross miss (a bound far beyond the goal, which only a real defect reaches).
"""

from __future__ import annotations

import signal
from collections.abc import Callable, Iterator

import pytest
import torch

torch.set_num_threads(1)

_MEASURED: list[tuple[str, str, float, float, str, bool]] = []


@pytest.fixture(autouse=True)
def signal_handlers_left_as_found() -> Iterator[None]:
    """A test that changes how this worker answers SIGTERM or SIGINT puts it back. Ray's cluster utility left
    its own SIGTERM handler in a worker (it drains and kills a Ray node that is long gone); a process forked
    later inherited it, and ``multiprocessing.Pool``'s SIGTERM no longer stopped it: a CI run hung ten minutes
    in a test that never touched Ray. Restored here either way; the test that left it fails, not a later one."""
    before = {signum: signal.getsignal(signum) for signum in (signal.SIGTERM, signal.SIGINT)}
    yield
    left = {signum: handler for signum, handler in before.items() if signal.getsignal(signum) != handler}
    for signum, handler in left.items():
        signal.signal(signum, handler)
    assert not left, f"the test left its own handler for {', '.join(signal.Signals(s).name for s in left)}"


@pytest.fixture
def measure(request: pytest.FixtureRequest) -> Callable[..., bool]:
    """``measure(what, value, goal, unit)``: record a figure (lower is better); whether it met its goal."""
    assert request.node.get_closest_marker("measurement"), "a test that measures is marked measurement"

    def record(what: str, value: float, goal: float, unit: str = "") -> bool:
        # (in the test's report: pytest-xdist carries reports, not a worker's globals, to the terminal)
        request.node.user_properties.append(("measured", (what, value, goal, unit, value <= goal)))
        return value <= goal

    return record


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    if report.when == "call":
        _MEASURED.extend((report.nodeid, *figure) for name, figure in report.user_properties if name == "measured")


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests that start Ray run one after another on one pytest-xdist worker. Before 8a9da9d a server's
    ``ray.init()`` joined the cluster started last on the machine (the two-node test's, say); servers now start
    Rays of their own, but local Rays started side by side are untried here, and CI must not be where they are
    first tried."""
    for item in items:
        if item.path.name == "test_sharded.py" or "2 shards" in item.nodeid:
            item.add_marker(pytest.mark.xdist_group("ray"))


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if not _MEASURED:
        return
    terminalreporter.section("measurements (reported against their goals, not asserted)")
    for test, what, value, goal, unit, met in _MEASURED:
        verdict = "met" if met else "MISSED"
        terminalreporter.write_line(f"{verdict:>6}  {what}: {value:.4g}{unit} (goal <= {goal:g}{unit})  [{test}]")
