"""How observations are grouped (one per call, runs, many streams per call) never changes a bit."""

from __future__ import annotations

import itertools
import os
import subprocess
import sys

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from tbptt.models import Engine, StreamConfig, batched
from tests.factories import assert_identical, sequence

CONFIGS = {
    "explicit": StreamConfig(input_size=2, output_size=2, hidden_size=6, k1=5, k2=8),
    "explicit-f64-lstm": StreamConfig(cell="lstm", input_size=2, output_size=2, k1=4, dtype="float64"),
    "next-residual": StreamConfig(input_size=2, target="next", k1=3),
    "next-level-rnn": StreamConfig(cell="rnn", input_size=2, target="next", residual=False, k1=6, k2=9),
    "next-raw": StreamConfig(input_size=2, target="next", normalize=False, num_layers=2),
    "next-season-given": StreamConfig(input_size=2, target="next", k1=4, season=5),
}
STEPS = 70


def data(config: StreamConfig, seed: int):
    xs, ys = sequence(2, 2, STEPS, seed=seed, missing_every=3)
    if config.target != "next":
        return xs, ys
    pattern = [3.0, -1.0, 2.0, 0.5, -3.0, 1.0]  # a season of 6, found after 48 readings (not when given 5)
    return [[v + pattern[t % 6] for v in x] for t, x in enumerate(xs)], [None] * STEPS


def run(config: StreamConfig, cuts: list[int], streams: int = 2):
    """Feed ``streams`` streams the same-length sequences, in runs cut at ``cuts``, all streams per call."""
    engine = Engine()
    for k in range(streams):
        engine.add_stream(f"s{k}", StreamConfig(**{**config.to_dict(), "seed": k}))
    seqs = [data(config, seed=k) for k in range(streams)]
    results = {f"s{k}": [] for k in range(streams)}
    bounds = [0, *sorted(set(cuts)), STEPS]
    for a, b in itertools.pairwise(bounds):
        items = [(f"s{k}", seqs[k][0][t], seqs[k][1][t]) for k in range(streams) for t in range(a, b)]
        for (stream, _, _), result in zip(items, engine.observe_many(items)):
            results[stream].append(result)
    return engine, results


@pytest.mark.parametrize("name", CONFIGS)
@settings(max_examples=8, deadline=None)
@given(cuts=st.lists(st.integers(1, STEPS - 1), max_size=12))
def test_runs_and_single_steps_agree_bitwise(name, cuts):
    config = CONFIGS[name]
    one_by_one, expected = run(config, list(range(1, STEPS)))
    grouped, got = run(config, cuts)
    assert got == expected
    for stream in expected:
        assert_identical(grouped.state_dict(stream)["tensors"], one_by_one.state_dict(stream)["tensors"])


def test_interleaved_items_keep_per_stream_order():
    config = StreamConfig(input_size=1, k1=2)
    engine, reference = Engine(), Engine()
    for e in (engine, reference):
        e.add_stream("a", config)
        e.add_stream("b", config)
    values = np.arange(10.0)
    items = [("a", v, 2 * v) for v in values[:5]] + [("b", v, 3 * v) for v in values[:5]]
    mixed = [items[i] for i in (0, 5, 1, 6, 7, 2, 3, 8, 9, 4)]
    got = engine.observe_many(mixed)
    want = {id(item): reference.observe(*item) for item in items}
    assert got == [want[id(item)] for item in mixed]


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize("hidden_size", [31, 32])  # parameter counts 3,194 and 3,393 (input 1, output 1)
def test_a_streams_slot_in_its_fleet_never_changes_a_bit(dtype, hidden_size):
    """The same stream in slots 0 to 4 of a fleet: the same results and state. (Rows of weights that start
    at addresses of different alignment made torch's kernels round differently.)"""
    config = StreamConfig(input_size=1, target="next", hidden_size=hidden_size, k1=4, dtype=dtype)
    readings = [[float(np.sin(t / 3) + 0.01 * t)] for t in range(60)]
    outcomes = []
    for slot in range(5):
        engine = Engine()
        for k in range(slot):
            engine.add_stream(f"other{k}", StreamConfig(**{**config.to_dict(), "seed": k + 1}))
        engine.add_stream("s", config)
        results = [engine.observe_many([("s", x, None) for x in readings[t : t + 10]]) for t in range(0, 60, 10)]
        outcomes.append((slot, [r for batch in results for r in batch], engine.state_dict("s")["tensors"]))
    _, expected, state = outcomes[0]
    for slot, got, tensors in outcomes[1:]:
        assert got == expected, slot
        assert_identical(tensors, state)


@pytest.mark.parametrize("dtype", ["float32", "float64"])
@pytest.mark.parametrize(
    "config",
    [
        StreamConfig(input_size=2, hidden_size=32, k1=4, k2=16),  # output 1: the head's products are matrix-vector
        StreamConfig(cell="lstm", input_size=2, hidden_size=6, num_layers=2, k1=4, k2=6),
        StreamConfig(cell="rnn", input_size=2, hidden_size=5, k1=3),
        StreamConfig(input_size=2, hidden_size=7, target="next", k1=3),
    ],
    ids=["gru-32", "lstm-2-layers", "rnn", "gru-next"],
)
def test_a_stream_computes_the_same_bits_alone_as_beside_other_streams(config, dtype):
    """Streams of one fleet, each stepped alone or all in one call: the same bits. (A recovery replays the
    log in other groupings than the live calls had; torch's kernels computed the elements at the end of a
    tensor, and a batch of one's matrix-vector products, another way.)"""
    config = StreamConfig(**{**config.to_dict(), "dtype": dtype})
    sequences = {}
    for k in range(3):
        xs, ys = data(config, seed=k)
        sequences[f"s{k}"] = xs, [None if y is None else y[:1] for y in ys]  # output 1
    alone, together = Engine(), Engine()
    for engine in (alone, together):
        for k, stream in enumerate(sequences):
            engine.add_stream(stream, StreamConfig(**{**config.to_dict(), "seed": k}))
    by_stream = {
        stream: [alone.observe(stream, xs[t], ys[t]) for t in range(40)] for stream, (xs, ys) in sequences.items()
    }
    mixed = {stream: [] for stream in sequences}
    for t in range(40):
        items = [(stream, xs[t], ys[t]) for stream, (xs, ys) in sequences.items()]
        for (stream, _, _), result in zip(items, together.observe_many(items)):
            mixed[stream].append(result)
    assert mixed == by_stream
    for stream in sequences:
        assert_identical(together.state_dict(stream)["tensors"], alone.state_dict(stream)["tensors"])


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
@pytest.mark.parametrize("shape", [(32, 16, 1), (1, 16, 96), (2, 16, 96), (7, 16, 21)])
def test_a_matrix_product_into_a_strided_output_has_the_bits_of_the_matrices_alone(shape, dtype):
    """The gradients' products are written into views of one buffer (models/update.py). Into such a strided
    ``out`` torch sent a vector-shaped product to another kernel (float32 (32 x 16)(16 x 1) on a CPU with
    AVX-512, 2026-12-05), and a stream's gradient alone differed from its row beside others."""
    m, k, p = shape
    generator = torch.Generator().manual_seed(1)
    a = torch.randn(3, k, m, dtype=dtype, generator=generator).transpose(1, 2)  # (as the inputs' transposes)
    b = torch.randn(3, k, p, dtype=dtype, generator=generator)
    out = torch.empty(3, m + 5, p, dtype=dtype)[:, :m]
    batched.bmm(a, b, out=out)
    for i in range(3):
        alone = torch.empty(1, m + 5, p, dtype=dtype)[:, :m]
        batched.bmm(a[i : i + 1], b[i : i + 1], out=alone)
        assert torch.equal(out[i], alone[0]), i


PRODUCTS = """
import tbptt.models, hashlib, os, torch
generator, digest = torch.Generator().manual_seed(0), hashlib.sha256()
for n, m, k, p in [(3, 32, 16, 1), (3, 1, 16, 96), (5, 16, 32, 96), (40, 1, 32, 96)]:
    a, b = torch.randn(n, m, k, generator=generator), torch.randn(n, k, p, generator=generator)
    digest.update(torch.bmm(a, b).numpy().tobytes())
    digest.update(torch.bmm(torch.randn(n, k, m, generator=generator).transpose(1, 2), b).numpy().tobytes())
print(os.environ["MKL_CBWR"], digest.hexdigest())
"""


def products_digest(**env: str) -> str:
    """MKL's branch once tbptt.models is imported, and the bits of a few batched products, in a fresh
    interpreter with ``env`` besides this one's own (less MKL's settings)."""
    clean = {k: v for k, v in os.environ.items() if not k.startswith("MKL_")}
    run = subprocess.run(
        [sys.executable, "-c", PRODUCTS], capture_output=True, text=True, check=True, env={**clean, **env}
    )
    return run.stdout.strip()


@pytest.mark.skipif(not torch.backends.mkl.is_available(), reason="torch without MKL")
def test_matrix_products_have_the_bits_of_mkl_s_avx2_branch_on_any_newer_cpu():
    """MKL picks its kernels by the CPU, and the bits a stream got on one CI machine were not those it got on
    the next (AVX-512 with AMX; models/batched.py). Importing tbptt.models sets MKL's reproducible AVX2 branch
    (MKL_CBWR, unless set already): the products here have the bits MKL gives a CPU with AVX2 only."""
    assert products_digest() == products_digest(MKL_ENABLE_INSTRUCTIONS="AVX2", MKL_CBWR="AVX2")
    assert products_digest(MKL_CBWR="COMPATIBLE").startswith("COMPATIBLE ")  # (a setting of one's own is kept)
