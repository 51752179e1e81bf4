"""The benchmarks still run against the code as it is (tiny sizes: a smoke test, not a measurement)."""

from __future__ import annotations

from bench import core


def test_the_core_benchmark_runs():
    assert core.engine_rate(n=3, run_length=2, steps=16, rounds=1) > 0
    rate, per_stream, needed = core.measure_memory(20)
    assert rate > 0 and per_stream > 0 and needed > 0
