"""What the front and a shard send each other reads back as it was written: floats to the bit."""

from __future__ import annotations

import math
import random

from tbptt.service.errors import Conflict, Invalid
from tbptt.service.ingest import Incoming, Part
from tbptt.service.wire import answers_bytes, answers_of, request_bytes, request_of


def test_requests_read_back_as_written_every_float_to_the_bit():
    rng = random.Random(0)
    floats = [rng.uniform(-1e6, 1e6) for _ in range(500)] + [5e-324, 1.7976931348623157e308, -0.0, 0.1 + 0.2]
    observations = [Incoming([v, None], [v / 3], k + 1, k % 3 != 0, 1.7e9 + v if k % 2 else None)
                    for k, v in enumerate(floats)]  # fmt: skip
    requests = [
        ("alpha", [Part("s", observations, ("body", "observations"), True)]),
        ("beta", [Part("t", [Incoming([1.0, 2.0], None, None)], ("body",), False, incarnation=7)]),
    ]
    back = [request_of(request_bytes(request)) for request in requests]
    assert back == requests
    for a, b in zip(back[0][1][0].observations, observations):
        assert math.copysign(1.0, a.x[0]) == math.copysign(1.0, b.x[0])  # -0.0 stays -0.0


def test_answers_read_back_with_their_refusals_and_the_watchers_batches():
    result = {"seq": 1, "step": 1, "ts": None, "prediction": [0.1 + 0.2], "loss": None, "updated": False,
              "anomaly": None, "anomalous": None, "interval": [[-1e-300, 2.5]], "duplicate": False}  # fmt: skip
    refused = Conflict(("body", "observations", 0, "seq"), "seq 1 was applied with other values")
    outcomes = [[[result]], refused, Invalid(("body", "x"), "bad")]
    applied = [
        {("alpha", "s"): {"stream": "s", "results": [result], "observations": [{"seq": 1, "x": [1.0], "y": None}]}}
    ]
    info = ({"id": "s"}, None)  # a call's (value, error), as Ray carries it
    answered = [(7, outcomes[0], False), (3, refused, False), (9, outcomes[2], False), (4, info, True)]
    back, batches, alerted, told, busy = answers_of(answers_bytes(answered, applied, ["t"], "behind", busy=True))
    assert [job for job, _ in back] == [7, 3, 9, 4]
    assert back[0][1] == [[result]] and back[1][1] is refused and isinstance(back[2][1], Invalid)
    assert back[3][1] is info and busy
    assert batches == applied and alerted == ["t"] and told == "behind"
