"""The ingest plan of one micro-batch: which observations are new (their seqs and steps, in order within
each stream) and which are duplicates, and afterwards what each request is answered.

Pure: no thread, no store, no engine; the shard runs it on the engine thread around the log append and
the engine step, and tests run it on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from tbptt.models import Results
from tbptt.models import StreamConfig as CoreConfig

from .errors import Conflict, Invalid, StreamReplaced
from .results import Result, ResultLog, ahead_of, calibrated, rfc3339
from .schemas import MAX_SAFE_INT as MAX_SEQ
from .streams import Key, StreamState

Loc = tuple[str | int, ...]
SEQS_EXHAUSTED = (
    f"the stream's seqs have reached {MAX_SEQ}, the largest a JSON client holds exactly: no later seq could be "
    "sent back; create a new stream (its seqs start at 1)"
)
Entry = tuple[bool, int]  # (True, seq): a duplicate of that seq; (False, k): new, the plan's item k
# (engine key, x, y); with learn false, a fourth element False; with a timestamp, learn and ts (the engine's Item)
PlanItem = (
    tuple[str, list[float | None], list[float] | None]
    | tuple[str, list[float | None], list[float] | None, bool]
    | tuple[str, list[float | None], list[float] | None, bool, float]
)


# Incoming and Part are not frozen: a frozen dataclass's __init__ sets each field through
# object.__setattr__, 1.0 us against 0.26 us here for Incoming, and a request builds one of each per
# observation (twice on the sharded server: in the front, and where its shard decodes it). Treat them as
# read-only all the same: their lists are shared with the request's other holders.
@dataclass(slots=True)
class Incoming:
    """One observation as a request carries it (already valid JSON of the right types)."""

    x: list[float | None]  # None: missing (streams with impute_missing)
    y: list[float] | None
    seq: int | None
    learn: bool = True  # False: its target is judged, not learnt from
    ts: float | None = None  # its timestamp, Unix seconds


@dataclass(slots=True)
class Part:
    """Observations for one stream; observation k is at ``loc + (k,)`` in the request when ``indexed``, else
    at ``loc`` (error messages name it)."""

    stream: str
    observations: list[Incoming]
    loc: Loc = ("body",)
    indexed: bool = False
    incarnation: int | None = None  # when set: only for this incarnation of the stream (a WebSocket's own)


def admits(states: Sequence[StreamState], parts: list[Part]) -> None:
    """Raise what planning this request would (``Plan.add``: seqs and timestamps in order, retries that repeat),
    planned alone, keeping nothing: asked before a request creates streams, so that a refused one creates none.
    Alone it is never stricter than in its micro-batch, whose earlier requests only move the streams' last seq
    and timestamp on."""
    Plan().add(None, list(states), parts)


def provisional(tenant: str, stream: str, config: CoreConfig, retained: int) -> StreamState:
    """A stream as it would be created, for ``admits`` (no uid yet: nothing of it is kept)."""
    return StreamState(-1, tenant, stream, config, "", ResultLog.of(retained, config))


def check(state: StreamState, part: Part) -> None:
    """``part`` is for this incarnation of the stream, and every observation fits the stream's sizes and
    target mode (a 422 naming the first that does not). Checked on the engine thread against the stream as
    it is when the batch is applied."""
    if part.incarnation is not None and part.incarnation != state.uid:
        raise StreamReplaced(state.id)
    fits(state.config, part)


def fits(config: CoreConfig, part: Part) -> None:
    """Every observation of ``part`` fits a stream of this config (a 422 naming the first that does not)."""
    gaps, timed = config.impute_missing, config.elapsed_input
    for k, obs in enumerate(part.observations):
        if len(obs.x) != config.input_size or (obs.y is not None and _bad_target(config, obs.y)):
            _refuse(config, obs, _loc(part, k))
        if not gaps and None in obs.x:
            raise Invalid([*_loc(part, k), "x", obs.x.index(None)], NO_GAPS)
        if timed and obs.ts is None:
            raise Invalid([*_loc(part, k), "ts"], TS_REQUIRED)


NO_GAPS = "null (a missing reading) needs a stream with impute_missing: true; this one refuses it"
TS_REQUIRED = "required: the stream feeds the time since its previous observation to its network (elapsed_input)"


def _bad_target(config: CoreConfig, y: list[float]) -> bool:
    return config.target == "next" or len(y) != config.output_size


def _refuse(config: CoreConfig, obs: Incoming, loc: Loc) -> None:
    if len(obs.x) != config.input_size:
        raise Invalid([*loc, "x"], f"expected {config.input_size} values (the stream's input_size), got {len(obs.x)}")
    if config.target == "next":
        raise Invalid([*loc, "y"], "must be null: in forecast mode the target is the next observation's x")
    assert obs.y is not None
    raise Invalid([*loc, "y"], f"expected {config.output_size} values (the stream's output_size), got {len(obs.y)}")


@dataclass
class Planned:
    """One request's share of the plan: per part, its stream and entries."""

    handle: Any  # the caller's name for the request (the shard: its index in the batch)
    parts: list[tuple[StreamState, list[Entry]]]


@dataclass
class Plan:
    """What a micro-batch applies: ``items`` for the engine, and for each the owner, seq and step."""

    items: list[PlanItem] = field(default_factory=list)
    owners: list[StreamState] = field(default_factory=list)
    seqs: list[int] = field(default_factory=list)
    steps: list[int] = field(default_factory=list)
    stamps: list[float | None] = field(default_factory=list)  # each item's timestamp
    requests: list[Planned] = field(default_factory=list)
    _last_seq: dict[str, int | None] = field(default_factory=dict)  # per stream, as the plan goes
    _last_ts: dict[str, float | None] = field(default_factory=dict)
    _last_step: dict[str, int] = field(default_factory=dict)
    _repeats: dict[int, tuple[StreamState, int]] = field(default_factory=dict)  # uid -> (stream, retries)
    _item_of: dict[tuple[str, int], int] = field(default_factory=dict)  # (engine key, seq) -> item, this plan's
    _built: dict[int, Result] = field(default_factory=dict)  # item k's result, once the engine applied it

    def add(self, handle: Any, states: list[StreamState], parts: list[Part]) -> None:
        """Plan a request whose parts go to ``states``: a seq at or below the stream's last is a duplicate if
        it repeats that observation (``Conflict`` if not), a missing seq is the last plus one; timestamps
        increase where the stream says so. All or nothing: a refused request (``Invalid``) leaves the plan as
        it was."""
        seen: dict[str, int] = {}  # this request's last seq per stream, merged into the plan at the end
        seen_ts: dict[str, float] = {}  # ... and last timestamp
        repeats: dict[int, tuple[StreamState, int]] = {}  # ... and its duplicates per stream (uid)
        new: list[tuple[StreamState, Incoming, int]] = []
        planned = []
        for state, part in zip(states, parts):
            key = state.key
            entries: list[Entry] = []
            for k, obs in enumerate(part.observations):
                last = seen[key] if key in seen else self._last_seq.get(key, state.last_seq)
                seq = obs.seq if obs.seq is not None else (1 if last is None else last + 1)
                if last is not None and seq <= last:  # (rare: what it repeats is looked for only now)
                    mine = next((o for st, o, q in reversed(new) if q == seq and st.key == key), None)
                    self._check_retry(state, obs, seq, last, mine, _loc(part, k))
                    entries.append((True, seq))  # answered from the results
                    repeats[state.uid] = (state, repeats.get(state.uid, (state, 0))[1] + 1)
                    continue
                if seq > MAX_SEQ:
                    raise Invalid([*_loc(part, k), "seq"], SEQS_EXHAUSTED)
                if obs.ts is not None:
                    last_ts = seen_ts[key] if key in seen_ts else self._last_ts.get(key, state.last_ts)
                    if last_ts is not None and obs.ts <= last_ts and state.config.timestamps == "increasing":
                        raise Conflict([*_loc(part, k), "ts"], _out_of_order(obs.ts, last_ts), "ts_out_of_order")
                    seen_ts[key] = obs.ts
                seen[key] = seq
                entries.append((False, len(self.items) + len(new)))
                new.append((state, obs, seq))
            planned.append((state, entries))
        for state, obs, seq in new:
            key = state.key
            self._last_step[key] = step = self._last_step.get(key, state.steps) + 1
            self._item_of[(key, seq)] = len(self.items)
            if obs.ts is not None:  # (the engine needs it for streams with elapsed_input)
                self.items.append((key, obs.x, obs.y, obs.learn, obs.ts))
            else:
                self.items.append((key, obs.x, obs.y) if obs.learn else (key, obs.x, obs.y, False))
            self.owners.append(state)
            self.seqs.append(seq)
            self.steps.append(step)
            self.stamps.append(obs.ts)
        self._last_seq.update(seen)
        self._last_ts.update(seen_ts)
        for uid, (state, n) in repeats.items():
            self._repeats[uid] = (state, self._repeats.get(uid, (state, 0))[1] + n)
        self.requests.append(Planned(handle, planned))

    def _check_retry(
        self, state: StreamState, obs: Incoming, seq: int, last: int, mine: Incoming | None, loc: Loc
    ) -> None:
        """``obs`` repeats the observation ``seq`` of the stream (kept, planned, or earlier in its own
        request) with the same x, y and ts: a genuine retry. Anything else is a ``Conflict``: answering it
        with another observation's results would drop its readings silently (a sender whose seqs restarted)."""
        item = self._item_of.get((state.key, seq))
        if mine is not None:
            same: bool | None = _same(mine, obs.x, obs.y, obs.ts)
        elif item is not None:
            planned = self.items[item]
            same = _same(Incoming(planned[1], planned[2], seq, ts=self.stamps[item]), obs.x, obs.y, obs.ts)
        else:
            same = state.results.repeats(seq, obs.x, obs.y, obs.ts)
        if same:
            return
        why = "no observation with that seq is kept" if same is None else "its values differ from that observation's"
        raise Conflict(
            [*loc, "seq"],
            f"seq {seq} is at or below the stream's last seq {last} and is not a retry ({why}): a sender whose "
            f"seqs restarted (a reboot) must resume after {last}, or leave seq out",
            "seq_reused",
        )

    @property
    def duplicates(self) -> dict[int, int]:
        """Per stream (uid) that this plan answers retries of: its duplicates count once they are answered."""
        return {uid: state.duplicates + n for uid, (state, n) in self._repeats.items()}

    def record(self, indices: list[int], results: Results) -> None:
        """The engine applied items ``indices`` (a plan may be applied in slices): ``results`` in that order.
        Each result is built once, as clients and watchers get it, and shared by both."""
        built, seqs = self._built, self.seqs
        stamps = self.stamps
        for part in results.parts:
            predictions, losses, updated = part.predictions.tolist(), part.losses.tolist(), part.updated.tolist()
            steps, scores, anomalous = part.steps.tolist(), part.scores.tolist(), part.anomalous.tolist()
            bands = part.intervals.tolist()
            for row, item in enumerate(part.items):
                k, loss, score, band = indices[item], losses[row], scores[row], bands[row]
                built[k] = {
                    "seq": seqs[k], "step": steps[row], "ts": rfc3339(stamps[k]), "prediction": predictions[row],
                    "loss": None if loss != loss else loss, "updated": updated[row],  # NaN: none
                    "anomaly": None if score != score else score, "anomalous": None if score != score else anomalous[row],
                    "interval": calibrated(band), "duplicate": False,
                }  # fmt: skip
            if part.forecasts is not None and part.forecast_intervals is not None:  # streams with a horizon
                for row, item in enumerate(part.items):
                    result = built[indices[item]]
                    result["forecast"] = ahead_of(part.forecasts[row], part.forecast_intervals[row])

    def complete(self, request: Planned) -> bool:
        """Every new observation of ``request`` has been applied, and every seq it repeats from this plan."""
        for state, entries in request.parts:
            for duplicate, ref in entries:
                item = self._item_of.get((state.key, ref), -1) if duplicate else ref
                if item >= 0 and item not in self._built:
                    return False
        return True

    def answer(self, request: Planned) -> list[list[Result]]:
        """A complete request's results per part, in order. Duplicates are answered with their original
        result if still kept, and counted."""
        answer = []
        for state, entries in request.parts:
            part: list[Result] = []
            for duplicate, ref in entries:
                if duplicate:
                    state.duplicates += 1
                    part.append(_duplicate(state, ref))
                else:
                    part.append(self._built[ref])
            answer.append(part)
        return answer

    def applied(self, indices: list[int], keys: frozenset[Key]) -> dict[Key, dict[str, Any]]:
        """For the streams among ``keys`` (those watched): what items ``indices`` applied to each, as
        watchers get it."""
        batches: dict[Key, dict[str, Any]] = {}
        for k in indices:
            state = self.owners[k]
            key = state.tenant_key
            if key not in keys:
                continue
            batch = batches.setdefault(key, {"stream": state.id, "results": [], "observations": []})
            item = self.items[k]
            batch["results"].append(self._built[k])
            seen: dict[str, Any] = {"seq": self.seqs[k], "x": item[1], "y": item[2]}
            if not learns(item):
                seen["learn"] = False
            if self.stamps[k] is not None:
                seen["ts"] = rfc3339(self.stamps[k])
            batch["observations"].append(seen)
        return batches


def learns(item: PlanItem) -> bool:
    """Whether the network learns from this item's target (``learn`` false: a fourth element, False)."""
    return len(item) < 4 or item[3] is not False


def _duplicate(state: StreamState, seq: int) -> Result:
    found = state.results.find(seq)
    if found is not None:
        return found
    return {  # a retry of an observation whose result is no longer kept (planned and applied, then dropped)
        "seq": seq, "step": state.steps, "ts": None, "prediction": [], "loss": None, "updated": False,
        "anomaly": None, "anomalous": None, "interval": None, "duplicate": True,
    }  # fmt: skip


def _loc(part: Part, k: int) -> Loc:
    """Where observation ``k`` of ``part`` is in its request (built only for an error message)."""
    return (*part.loc, k) if part.indexed else part.loc


def _same(obs: Incoming, x: Sequence[float | None], y: list[float] | None, ts: float | None) -> bool:
    return list(obs.x) == list(x) and obs.y == y and obs.ts == ts


def _out_of_order(ts: float, last: float) -> str:
    return (
        f"ts {rfc3339(ts)} is not after the stream's last ts {rfc3339(last)}: the stream applies observations in "
        "the order of their timestamps (its timestamps: increasing); send them in order, or create the stream "
        'with "timestamps": "any"'
    )
