"""What a shard keeps per front of a server with several (service/outboxes.py), on a clock the tests move."""

from __future__ import annotations

from tbptt.service.outboxes import BEHIND, FORGET_SECONDS, KNOWN, OUTBOX_BATCHES, RESEND, Lease, Outboxes

A, B = ("t", "a"), ("t", "b")


class Clock:
    now = 1000.0

    def __call__(self) -> float:
        return self.now


def batch(key: tuple[str, str], step: int) -> dict:
    return {key: {"stream": key[1], "results": [{"step": step}], "observations": []}}


def test_each_front_collects_the_batches_of_the_streams_it_watches_in_the_order_applied():
    boxes = Outboxes()
    assert boxes.visit("one", frozenset({A})) == KNOWN
    assert boxes.visit("two", frozenset({A, B})) == KNOWN
    assert boxes.watched == {A, B}
    boxes.applied(batch(A, 1) | batch(B, 1))  # (applied through either front: the outboxes do not care)
    boxes.applied(batch(B, 2))
    boxes.alerted({"t": []})
    assert boxes.collect("one") == ([], [batch(A, 1)], ["t"], KNOWN)
    assert boxes.collect("two") == ([], [batch(A, 1) | batch(B, 1), batch(B, 2)], ["t"], KNOWN)
    assert boxes.collect("two") == ([], [], [], KNOWN)  # emptied
    assert boxes.visit("two", frozenset()) == KNOWN and boxes.watched == {A}
    assert boxes.visit("one", None) == KNOWN and boxes.watched == {A}  # None: unchanged


def test_a_front_the_shard_does_not_know_is_asked_for_its_watched_streams():
    boxes = Outboxes()
    assert boxes.visit("restarted shard's caller", None) == RESEND
    assert boxes.collect("never seen") == ([], [], [], RESEND)
    assert boxes.visit("restarted shard's caller", frozenset({A})) == KNOWN


def test_a_front_that_stops_collecting_is_dropped_from_memory_and_told_its_watchers_fell_behind():
    clock = Clock()
    boxes = Outboxes(clock)
    boxes.visit("stuck", frozenset({A}))
    boxes.visit("live", frozenset({B}))
    for step in range(OUTBOX_BATCHES + 1):
        boxes.applied(batch(A, step))
    assert boxes.watched == {B}, "the stuck front's streams are no longer built for it"
    assert boxes.collect("stuck") == ([], [], [], BEHIND)
    assert boxes.collect("stuck") == ([], [], [], KNOWN)  # told once
    clock.now += FORGET_SECONDS / 2
    boxes.visit("live", None)
    clock.now += FORGET_SECONDS / 2 + 1
    boxes.forget_silent()  # "stuck" has not called for longer than that: gone (killed)
    assert boxes.collect("stuck") == ([], [], [], RESEND)
    assert boxes.collect("live") == ([], [], [], KNOWN)


def test_the_lease_has_one_holder_until_it_lets_go_or_its_time_runs_out():
    clock = Clock()
    lease = Lease(clock=clock)
    assert lease.take("a", 30) == 0.0
    assert lease.take("b", 30) == 30.0
    assert lease.take("a", 30) == 0.0  # its holder may take it again
    lease.release("b")  # not the holder: nothing
    clock.now += 10
    assert lease.take("b", 30) == 20.0
    lease.release("a")
    assert lease.take("b", 30) == 0.0
    clock.now += 31  # b was killed holding it
    assert lease.take("a", 30) == 0.0


def test_a_lease_restarted_with_its_shard_is_given_to_nobody_until_any_earlier_one_ran_out():
    clock = Clock()
    lease = Lease(blocked_for=30, clock=clock)
    assert lease.take("a", 30) == 30.0
    clock.now += 30
    assert lease.take("a", 30) == 0.0


def test_a_deleted_stream_is_gone_for_the_watchers_of_every_other_front():
    boxes = Outboxes()
    for front in ("deleter", "other", "elsewhere"):
        boxes.visit(front, frozenset({A}) if front != "elsewhere" else frozenset({B}))
    boxes.gone(A, but="deleter")  # (the deleting front closed its own watchers already)
    assert boxes.collect("other") == ([], [{A: None}], [], KNOWN)
    assert boxes.collect("deleter") == ([], [], [], KNOWN)
    assert boxes.collect("elsewhere") == ([], [], [], KNOWN)


def test_a_fronts_answers_wait_for_its_next_call_and_a_forgotten_front_gets_none():
    """Jobs answered in another front's call (a batch applied in slices) are kept for their own front."""
    clock = Clock()
    boxes = Outboxes(clock)
    boxes.visit("one", frozenset())
    boxes.answer("one", 4, [[{"seq": 1}]], call=False)
    boxes.answer("one", 5, ("info", None), call=True)
    boxes.answer("unknown", 6, [[{"seq": 1}]], call=False)  # (forgotten: killed)
    assert boxes.collect("one") == ([(4, [[{"seq": 1}]], False), (5, ("info", None), True)], [], [], KNOWN)
    assert boxes.collect("one") == ([], [], [], KNOWN)
    assert boxes.collect("unknown") == ([], [], [], RESEND)
