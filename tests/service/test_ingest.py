"""The ingest plan on its own: no thread, no store, no engine."""

from __future__ import annotations

import numpy as np
import pytest

from tbptt.models import Results, StepResult, StreamConfig
from tbptt.service.errors import Conflict, Invalid
from tbptt.service.ingest import MAX_SEQ, Incoming, Part, Plan, check
from tbptt.service.results import ResultLog
from tbptt.service.streams import StreamState, record_results

NOT_JUDGED = {"anomaly": None, "anomalous": None, "interval": None}  # what a result without them says


def state(stream: str = "s", last_seq: int | None = None, steps: int = 0, **config) -> StreamState:
    core = StreamConfig(**{"input_size": 2, **config})
    s = StreamState(1, "t", stream, core, "now", ResultLog.of(1000, core))
    s.last_seq, s.steps = last_seq, steps
    return s


def obs(
    seq: int | None = None, x: list[float] | None = None, y: list[float] | None = None, ts: float | None = None
) -> Incoming:
    return Incoming(x or [0.0, 1.0], y, seq, ts=ts)


def applied(plan: Plan) -> list[int]:
    """What an engine would answer (a prediction of each item's index), recorded as the shard records it;
    the items applied."""
    results = Results.of([StepResult(step, [float(k)], None, False) for k, step in enumerate(plan.steps)])
    record_results(plan.owners, plan.seqs, results, plan.items, plan.stamps)
    indices = list(range(len(results)))
    plan.record(indices, results)
    return indices


def answers(plan: Plan) -> list[tuple[str, list]]:
    applied(plan)
    assert all(plan.complete(request) for request in plan.requests)
    return [(request.handle, plan.answer(request)) for request in plan.requests]


def test_seqs_continue_from_the_stream_and_within_the_batch():
    s = state(last_seq=10, steps=4)
    plan = Plan()
    plan.add("first", [s], [Part("s", [obs(), obs(seq=20), obs()])])
    plan.add("second", [s], [Part("s", [obs()])])
    assert plan.seqs == [11, 20, 21, 22] and plan.steps == [5, 6, 7, 8]
    assert [key for key, _, _ in plan.items] == ["t/s"] * 4


def kept_result(s: StreamState) -> None:
    """Seq 2 of ``s``, kept: prediction 0.5 for x = [0, 1], no loss, score or interval."""
    nan = np.full(1, np.nan)
    s.results.put(s.results.records(
        np.array([2]), np.array([2]), np.array([[0.5]]), nan, np.array([False]), nan, np.full((1, 1, 2), np.nan),
        x=np.array([[0.0, 1.0]]),
    ))  # fmt: skip


def test_duplicates_within_and_before_the_batch_are_answered_not_applied():
    s = state(last_seq=3, steps=3)
    kept_result(s)
    plan = Plan()
    plan.add("job", [s], [Part("s", [obs(seq=2), obs(seq=4), obs(seq=4)])])
    assert plan.seqs == [4]  # one new observation
    ((job, (answered,)),) = answers(plan)
    assert job == "job"
    assert [(r["seq"], r["duplicate"]) for r in answered] == [(2, True), (4, False), (4, True)]
    assert answered[0]["prediction"] == [0.5]  # kept: the original result
    assert answered[2]["prediction"] == answered[1]["prediction"] == [0.0]  # a seq applied in this very batch
    assert s.duplicates == 2
    again = Plan()  # a retry of the batch, once applied: every observation answered from the kept results
    again.add("retry", [s], [Part("s", [obs(seq=4)])])
    ((_, ((retried,),)),) = answers(again)
    assert retried == {**answered[1], "duplicate": True}


@pytest.mark.parametrize(
    "repeat, why",
    [
        (obs(seq=1), "no observation with that seq is kept"),  # before the kept results: a rebooted sender
        (obs(seq=2, x=[9.0, 9.0]), "its values differ"),  # a kept seq with other values
        (obs(seq=2, ts=5.0), "its values differ"),  # ... or another timestamp
        (obs(seq=4, y=[1.0]), "its values differ"),  # a seq earlier in the same batch, other values
    ],
)
def test_a_seq_reused_with_other_values_is_a_conflict_not_a_duplicate(repeat, why):
    s = state(last_seq=3, steps=3)
    kept_result(s)
    plan = Plan()
    plan.add("earlier", [s], [Part("s", [obs(seq=4)])])
    with pytest.raises(Conflict) as refused:
        plan.add("job", [s], [Part("s", [obs(seq=5), repeat], ("body", "observations"), indexed=True)])
    (error,) = refused.value.detail()
    assert error["loc"] == ["body", "observations", 1, "seq"] and why in error["msg"]
    assert "last seq" in error["msg"] and refused.value.status == 409
    assert plan.seqs == [4] and len(plan.requests) == 1  # the refused request left nothing behind


def test_timestamps_must_increase_unless_the_stream_says_any():
    s = state(last_seq=1, steps=1)
    s.last_ts = 100.0
    plan = Plan()
    plan.add("ok", [s], [Part("s", [obs(ts=101.0), obs(), obs(ts=102.5)])])
    for late in (102.5, 50.0):  # equal or earlier than the last, in the plan so far
        with pytest.raises(Conflict, match=r"is not after the stream's last ts 1970-01-01T00:01:42\.500000Z"):
            plan.add("late", [s], [Part("s", [obs(ts=late)])])
    assert plan.stamps == [101.0, None, 102.5]
    anything = state(last_seq=1, steps=1, timestamps="any")
    anything.last_ts = 100.0
    plan = Plan()
    plan.add("ok", [anything], [Part("s", [obs(ts=50.0), obs(ts=50.0)])])
    ((_, ((first, second),)),) = answers(plan)
    assert first["ts"] == second["ts"] == "1970-01-01T00:00:50Z" and anything.last_ts == 50.0


def test_parts_of_several_streams_keep_request_order():
    a, b = state("a"), state("b")
    plan = Plan()
    plan.add("job", [a, b, a], [Part("a", [obs()]), Part("b", [obs()]), Part("a", [obs()])])
    assert [(o.id, seq) for o, seq in zip(plan.owners, plan.seqs)] == [("a", 1), ("b", 1), ("a", 2)]
    ((_, answer),) = answers(plan)
    assert [part[0]["step"] for part in answer] == [1, 1, 2]


def test_watched_streams_get_the_values_behind_their_results():
    a, b = state("a"), state("b")
    plan = Plan()
    plan.add("job", [a, b], [Part("a", [obs(x=[1.0, 2.0])]), Part("b", [obs()])])
    batches = plan.applied(applied(plan), frozenset({("t", "a")}))
    assert list(batches) == [("t", "a")]
    assert batches[("t", "a")]["observations"] == [{"seq": 1, "x": [1.0, 2.0], "y": None}]


@pytest.mark.parametrize(
    ("part", "config", "loc"),
    [
        (
            Part("s", [obs(), obs(x=[1.0])], ("body", "observations"), indexed=True),
            {},
            ["body", "observations", 1, "x"],
        ),
        (Part("s", [obs(y=[1.0, 2.0])]), {}, ["body", "y"]),
        (Part("s", [obs(y=[1.0, 2.0])]), {"target": "next"}, ["body", "y"]),
        (Part("s", [obs(x=[1.0])], ("body", "observations", 7)), {}, ["body", "observations", 7, "x"]),
    ],
)
def test_check_names_where_the_bad_value_is(part, config, loc):
    with pytest.raises(Invalid) as refused:
        check(state(**config), part)
    assert refused.value.errors[0]["loc"] == loc


def test_a_stream_whose_seqs_are_exhausted_refuses_the_request_whole():
    s = state(last_seq=MAX_SEQ - 1, steps=5)
    plan = Plan()
    plan.add("ok", [s], [Part("s", [obs()])])
    assert plan.seqs == [MAX_SEQ]
    with pytest.raises(Invalid) as refused:
        plan.add("refused", [s], [Part("s", [obs(seq=MAX_SEQ), obs()], ("body", "observations"), indexed=True)])
    assert refused.value.errors[0]["loc"] == ["body", "observations", 1, "seq"]
    assert plan.seqs == [MAX_SEQ] and len(plan.requests) == 1  # nothing of the refused request was planned


def test_a_request_is_complete_once_its_new_observations_are_applied_whatever_the_slices():
    a, b = state("a"), state("b")
    plan = Plan()
    plan.add("both", [a, b], [Part("a", [obs(), obs()]), Part("b", [obs()])])
    plan.add("b again", [b], [Part("b", [obs(seq=1)])])  # repeats b's seq 1: complete when that one is
    assert [plan.complete(r) for r in plan.requests] == [False, False]
    first = [0, 2]  # a's first observation and b's
    plan.record(first, Results.of([StepResult(plan.steps[k], [0.0], None, False) for k in first]))
    assert [plan.complete(r) for r in plan.requests] == [False, True]
    plan.record([1], Results.of([StepResult(plan.steps[1], [1.0], None, False)]))
    assert plan.complete(plan.requests[0])
    assert [[r["step"] for r in part] for part in plan.answer(plan.requests[0])] == [[1, 2], [1]]


@pytest.mark.parametrize("rows", [1, 3, 16, 17])
def test_a_streams_results_are_recorded_alike_one_at_a_time_and_as_arrays(rows, monkeypatch):
    """``record_results`` appends a stream's few rows of a batch one at a time and more as arrays
    (``APPENDED_ROWS``): both keep the same results, observations, stamps and counts."""
    import tbptt.service.streams as streams

    def recorded(appended: int) -> list[tuple]:
        monkeypatch.setattr(streams, "APPENDED_ROWS", appended)
        states = [state(stream) for stream in ("a", "b")]
        owners, seqs, items, stamps, answers = [], [], [], [], []
        for k in range(rows):  # interleaved: a, b, a, b, ... (each stream's rows in order)
            for i, s in enumerate(states):
                owners.append(s)
                seqs.append(10 + k)
                items.append((s.id, [float(k), -1.0], None if k % 3 else [float(i)]))
                stamps.append(None if k % 2 else 100.0 + k)
                band = None if k < 2 else [[k - 1.0, k + 1.0]]
                answers.append(StepResult(k + 1, [k / 7], None if k % 4 else 0.5, k % 5 == 4, k / 10, k > 7, band))
        results = Results.of(answers)
        record_results(owners, seqs, results, items, stamps)
        return [
            (s.last_seq, s.steps, s.updates, s.last_ts, {k: v.tolist() for k, v in s.results.arrays().items()})
            for s in states
        ]

    one_at_a_time, as_arrays = recorded(streams.APPENDED_ROWS), recorded(0)
    assert one_at_a_time[0][1] == rows  # (the steps: every row recorded)
    assert repr(one_at_a_time) == repr(as_arrays)  # (repr: NaN equals NaN)
