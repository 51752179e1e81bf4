"""What the front and a shard send each other reads back as it was written: floats to the bit."""

from __future__ import annotations

import math
import random

import orjson
import pytest

from tbptt.service.errors import Conflict, Invalid
from tbptt.service.fastjson import each_dumps, each_spliced
from tbptt.service.ingest import Incoming, Part
from tbptt.service.wire import answers_bytes, answers_of, request_bytes, request_of, results_json, results_of


def test_requests_read_back_as_written_every_float_to_the_bit():
    rng = random.Random(0)
    floats = [rng.uniform(-1e6, 1e6) for _ in range(500)] + [5e-324, 1.7976931348623157e308, -0.0, 0.1 + 0.2]
    observations = [Incoming([v, None], [v / 3], k + 1, k % 3 != 0, 1.7e9 + v if k % 2 else None)
                    for k, v in enumerate(floats)]  # fmt: skip
    requests = [
        ("alpha", [Part("s", observations, ("body", "observations"), True)]),
        ("beta", [Part("t", [Incoming([1.0, 2.0], None, None)], ("body",), False, incarnation=7)]),
        ("gamma", [Part(f"s{k}", observations[k : 2 * k + 1], ("body", "observations", k)) for k in range(4)]),
    ]
    back = [request_of(request_bytes(request)) for request in requests]
    assert back == requests
    for a, b in zip(back[0][1][0].observations, observations):
        assert math.copysign(1.0, a.x[0]) == math.copysign(1.0, b.x[0])  # -0.0 stays -0.0


def test_answers_read_back_with_their_refusals_and_the_watchers_batches():
    result = {"seq": 1, "step": 1, "ts": None, "prediction": [0.1 + 0.2], "loss": None, "updated": False,
              "anomaly": None, "anomalous": None, "interval": [[-1e-300, 2.5]], "duplicate": False}  # fmt: skip
    refused = Conflict(("body", "observations", 0, "seq"), "seq 1 was applied with other values")
    outcomes = [[[result], [result, {**result, "seq": 2}]], refused, Invalid(("body", "x"), "bad")]
    applied = [
        {("alpha", "s"): {"stream": "s", "results": [result], "observations": [{"seq": 1, "x": [1.0], "y": None}]}}
    ]
    info = ({"id": "s"}, None)  # a call's (value, error), as Ray carries it
    answered = [(7, outcomes[0], False), (3, refused, False), (9, outcomes[2], False), (4, info, True)]
    back, batches, alerted, told, busy = answers_of(answers_bytes(answered, applied, ["t"], "behind", busy=True))
    assert [job for job, _ in back] == [7, 3, 9, 4]
    assert (
        [results_of(piece) for piece in back[0][1]] == outcomes[0]
        and back[1][1] is refused
        and isinstance(back[2][1], Invalid)
    )
    assert back[3][1] is info and busy
    assert batches == applied and alerted == ["t"] and told == "behind"


def test_a_cross_stream_reply_made_of_the_shards_json_unread_is_the_one_written_whole_byte_for_byte():
    """A sharded front passes its shards' results into a cross-stream reply without reading them: the same
    bytes as the single process writes, whatever the stream's name and the result hold."""
    rng = random.Random(1)
    streams = ["s", 'quo"te', "back\\slash", "ünïcode-✓", "tab\tnew\nline", "x" * 200]
    results = [
        {"seq": k + 1, "step": k + 1, "ts": None if k % 2 else "2026-12-06T10:00:00.5Z",
         "prediction": [rng.uniform(-1e6, 1e6)], "loss": None if k == 0 else rng.random(), "updated": k % 3 == 0,
         "anomaly": rng.random(), "anomalous": k == 4, "interval": None if k == 1 else [[-1e-300, 2.5]],
         **({"forecast": [{"value": [0.1 + 0.2], "interval": None}]} if k == 3 else {}), "duplicate": k == 5}
        for k in range(len(streams))
    ]  # fmt: skip
    whole = each_dumps(streams, [[r] for r in results])
    assert each_spliced(streams, [results_json([r]) for r in results]) == whole
    assert [{"stream": s, **r} for s, r in zip(streams, results)] == orjson.loads(whole)
    assert each_spliced([], []) == each_dumps([], []) == b"[]"
    with pytest.raises(ValueError, match="not one result"):  # (a part of two observations is no cross part)
        each_spliced(["s"], [results_json(results[:2])])
