"""The schedule on its own (service/scheduling.py), with batches that count their slices."""

from __future__ import annotations

from typing import Any

from tbptt.service.scheduling import Schedule


class Batch:
    """A batch whose payloads are answered after ``slices`` slices ("small": one)."""

    def __init__(self, payloads: list[Any], slices: int) -> None:
        self.payloads, self.left, self.ran = payloads, slices, 0

    @property
    def done(self) -> bool:
        return self.left == 0

    def run(self, deadline: float) -> list[tuple[int, Any]]:
        self.left, self.ran = self.left - 1, self.ran + 1
        return [(k, p) for k, p in enumerate(self.payloads)] if self.done else []


class Job:
    def __init__(self, tenant: str, payload: str) -> None:
        self.tenant, self.payload, self.call, self.answered = tenant, payload, None, False


def _schedule() -> tuple[Schedule[Job], list[Batch], list[str]]:
    batches: list[Batch] = []
    answered: list[str] = []

    def begin(payloads: list[Any]) -> Batch:
        batches.append(Batch(payloads, 100 if "heavy" in payloads else 1))
        return batches[-1]

    def answer(jobs: list[tuple[Job, Any]]) -> None:
        answered.extend(job.payload for job, _ in jobs)

    def failed(jobs: list[Job], exc: Exception) -> None:
        raise AssertionError(exc)

    return Schedule(begin, answer, failed, 0.001), batches, answered


def test_a_round_that_served_new_jobs_leaves_the_unfinished_batch_to_the_next_round_but_never_two_in_a_row():
    """A shard answers its round's jobs when the round ends: a small request that came while another
    tenant's heavy batch was applied waited for its own slice and then one more of the heavy batch (twice
    the single process's wait in bench.fairness --shards 2). The heavy batch must still go on: it is left
    out of one round at most, never two in a row."""
    schedule, batches, answered = _schedule()
    schedule.add(Job("heavy", "heavy"))
    schedule.round()
    (heavy,) = batches
    ran = heavy.ran
    schedule.add(Job("small", "small 1"))
    schedule.round()
    assert answered == ["small 1"] and heavy.ran == ran  # answered without another slice of the heavy batch
    schedule.add(Job("small", "small 2"))
    schedule.round()
    assert answered == ["small 1", "small 2"] and heavy.ran == ran + 1  # not left out twice in a row
    schedule.round()
    assert heavy.ran == ran + 2  # nothing new: a slice, as always
    rounds = 0
    while "heavy" not in answered:  # a new small request every round: the heavy batch still ends
        schedule.add(Job("small", f"small {rounds}"))
        schedule.round()
        rounds += 1
        assert rounds <= 2 * 100, "small requests, one a round, starved the heavy batch"
    assert answered.count("heavy") == 1 and rounds > 100  # (every other round, as said)
