"""Online standardization: per-slot running mean and variance, in float64 whatever the model dtype.

Raw sensor readings come in arbitrary units; the network sees ``(v - mean) / std``. The statistics are
shifted sums (``sum(v - shift)``, ``sum((v - shift)**2)`` with ``shift`` the first value seen, which keeps
them accurate for large offsets). Sums are accumulated strictly in order, so a block of T values gives
bit for bit the statistics of T single steps: how observations are grouped never changes a result.
Until two values are seen the std is 1; a tiny std is floored relative to the mean (to 1 when the mean
is exactly 0), so a constant signal never divides by zero, in whatever units it comes. Statistics of
changes (``clip``) take a value more than ``CLIP`` deviations from the mean (once ``WARM`` values are seen)
at that distance: the sums cover the stream's life, so one sensor glitch of 1e6 among readings that vary by
1 set the scale for thousands of readings, and the network's share of every forecast shrank to nothing.
Statistics of levels (``held``) cannot clip so: there a glitch and a level that moves for good (a flag that
flips, a new setpoint) look alike until later readings, and clipping the new level value after value biased
the sums for good (among changes, a new level is one outlying change and a glitch two). They hold a value
that far out of the sums until the next readings tell which it was (``_held``): a glitch enters at ``CLIP``
deviations, a new level whole; taken whole at once, one input of 1e6 had set an explicit stream's input scale
for its life (its errors 2.4x, for good). And they forget (``_forgotten``): a level left for good (an input
read in new units) is no stream's own any more, as a glitch is none. In every statistic, a first value more
than ``CLIP`` deviations from the next ``WARM - 1`` (a sensor's reading at boot, 0 before 1013 hPa) is
replaced by their mean when the ``WARM``-th arrives: it is the shift, which added nothing to the sums, so the
sums are taken again around the others' mean (a history carries a shift per state). Statistics of changes
that keep their first values (``early``: a stream's targets') clip a glitch among them then too (``glitch``):
one reading of 1e4 among a forecast stream's first 20 had set the scale of its changes for its life (the
network's errors 230-680x, the gate's forecasts 2x, those without it). Each entry is counted on its own: an
input that has no reading yet (a channel that starts late, models/inputs.py) has no statistics yet, whatever
the others have. These are numpy arrays: tiny per-block operations, where numpy's call cost is a fraction of
torch's.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

_RELATIVE_FLOOR = 1e-9  # std below this fraction of the mean counts as no variation
CLIP, WARM = 8.0, 20  # a value enters the sums at most CLIP deviations from the mean, once WARM are seen
# ... and, when the WARM-th comes, those before it that are a glitch's (``glitch``): at most this many, within
# this many consecutive values (a change up to a glitch and back; a glitch of two readings)
GLITCH_VALUES, GLITCH_SPAN = 6, 3
HOLD = GLITCH_SPAN - 1  # statistics of levels hold a far value out of the sums for up to this many values
HORIZON = 700  # statistics of levels halve their sums when the count reaches twice this (``_forgotten``)


@dataclass
class Moments:
    """Statistics of n slots (``shift``, ``s1``, ``s2``, ``count``: (n, d)), or their history over a block
    ((n, m+1, d); index k = after the block's first k values; the shift (n, 1, d) where the block kept one)."""

    shift: np.ndarray
    s1: np.ndarray
    s2: np.ndarray
    count: np.ndarray
    early: np.ndarray | None = None  # (n, WARM, d): the first values less the shift (NaN: not yet); None: not kept
    held: np.ndarray | None = None  # (n, HOLD + 1, d): far levels held out of the sums, oldest first, then the
    # last found a glitch's, less the shift (NaN: none); None: statistics that hold nothing (of changes: they clip)

    def accumulate(self, values: np.ndarray, valid: np.ndarray, clip: bool = False) -> Moments:
        """The history of these statistics as ``values`` (n, m, d) arrive; rows where ``valid`` (n, m) is
        False are left out (entries, where it is (n, m, d)); ``clip``: values that are changes, far ones
        clipped; statistics that keep ``held`` are of levels, far ones held (``_held``). The result's last
        index is the final state."""
        m = values.shape[1]
        if not m:
            return self.as_history()
        if m == 1:  # (a row's mask as an (n, 1) column broadcasts)
            return self._one(values[:, 0], valid[:, 0, None] if valid.ndim == 2 else valid[:, 0], clip)
        if m <= HORIZON:
            return self._many(values, valid, clip)
        # A long block in pieces: after each value that is stepped (a glitch, a halving: one every ``HORIZON``
        # values of levels) the rest is summed again, which over the whole block was quadratic in its length
        # (100,000 readings of 8 inputs: 6.1 s; in pieces 0.05 s). Pieces are a grouping: the same bits.
        parts: list[Moments] = []
        state = self
        for start in range(0, m, HORIZON):
            piece = state.accumulate(values[:, start : start + HORIZON], valid[:, start : start + HORIZON], clip)
            parts.append(piece.states(1, piece.s1.shape[1]) if parts else piece)  # (its first: the last one's)
            state = piece.final()
        return _joined(parts)

    def _many(self, values: np.ndarray, valid: np.ndarray, clip: bool) -> Moments:
        """(``valid``: (n, m) rows, or (n, m, d) entries: the same arithmetic; rows skip finding each entry's
        first valid value, the block's most frequent case.) Summed whole, then checked: from the first value
        that is clipped or that is an entry's ``WARM``-th (rare), the rest is summed again from the state after
        it, so that grouping never changes a bit and a long block with a glitch costs a second sum, not a step
        per value."""
        history, delta = self._summed(values, valid)
        parts, start, m = [], 0, values.shape[1]  # histories whose states, in turn, are the block's
        judged = clip or self.held is not None
        while True:
            mask = valid[:, start:, None] if valid.ndim == 2 else valid[:, start:]
            before = history.count[:, :-1]
            events = mask & (before == WARM - 1)  # (a first value may be replaced: once in an entry's life)
            beyond = _beyond(delta, history.s1[:, :-1], history.s2[:, :-1], before, mask) if judged else None
            if beyond is not None:
                events |= beyond
            if self.held is not None:  # (a level's sums are halved by the value that fills them: ``_forgotten``)
                events |= mask & (before >= 2 * HORIZON - 1)
            holding = history.held is not None and _holds_any(history.held)
            if not holding and not events.any():
                parts.append(history)
                break
            # the first such value (the states before it are right); while a level is held, the next value
            k = 0 if holding else int(events.any(axis=(0, 2)).argmax())
            parts.append(history.states(0, k + 1))
            after = history.states(k, k + 1).final()._one(values[:, start + k], mask[:, k], clip).final()
            start += k + 1
            if start == m:
                parts.append(after.as_history())
                break
            history, delta = after._summed(values[:, start:], valid[:, start:])  # (its first state: ``after``)
        return _joined(parts)

    def _summed(self, values: np.ndarray, valid: np.ndarray) -> tuple[Moments, np.ndarray]:
        """The history as if no value were clipped, and each value less the shift (0 where not valid)."""
        first = valid.argmax(axis=1)
        if valid.ndim == 2:
            starts = (self.count == 0) & np.asarray(valid.any(axis=1))[:, None]
            picked = values[np.arange(len(values)), first]
            valid = valid[..., None]
        else:
            starts = (self.count == 0) & valid.any(axis=1)
            picked = np.take_along_axis(values, first[:, None], axis=1)[:, 0]
        shift = np.where(starts, picked, self.shift)
        delta = np.where(valid, values - shift[:, None], 0.0)
        s1 = np.add.accumulate(np.concatenate([self.s1[:, None], delta], axis=1), axis=1)
        s2 = np.add.accumulate(np.concatenate([self.s2[:, None], delta * delta], axis=1), axis=1)
        counted = self.count[:, None] + np.cumsum(valid, axis=1)  # (whole numbers: exact in any order)
        count = np.concatenate([self.count[:, None], counted], axis=1)
        early = self._kept(delta, valid, count[:, :-1])
        return Moments(shift[:, None], s1, s2, count, early, self.held), delta

    def _kept(self, delta: np.ndarray, valid: np.ndarray, before: np.ndarray) -> np.ndarray | None:
        """``early`` with the valid ``delta`` (n, [m,] d) among an entry's first ``WARM`` written in, by the
        count ``before`` each (a copy if any: a history may be dropped)."""
        if self.early is None:
            return None
        writes = np.broadcast_to(valid, delta.shape) & (before < WARM)
        if not writes.any():
            return self.early
        early, at = self.early.copy(), np.nonzero(writes)
        early[at[0], before[at].astype(np.intp), at[-1]] = delta[at]
        return early

    def _one(self, value: np.ndarray, valid: np.ndarray, clip: bool) -> Moments:
        """``_many`` of one value per slot (the most frequent block), bit for bit: the same operations,
        without the machinery that finds each row's first valid value and accumulates along the block
        (``valid``: (n, d), or (n, 1) for whole rows)."""
        shift = np.where((self.count == 0) & valid, value, self.shift)
        delta = np.where(valid, value - shift, 0.0)
        held = self.held
        beyond = _beyond(delta, self.s1, self.s2, self.count, valid) if clip or held is not None else None
        s1, s2 = _two(self.s1), _two(self.s2)
        if held is not None and (beyond is not None or _holds_any(held)):
            s1[:, 1], s2[:, 1], counted, held = _held(self.s1, self.s2, self.count, delta, valid, beyond, held)
        else:
            if beyond is not None:
                delta = np.where(beyond, _clipped(delta, self.s1, self.s2, self.count), delta)
            np.add(self.s1, delta, out=s1[:, 1])
            np.add(self.s2, delta * delta, out=s2[:, 1])
            counted = self.count + valid
        count = np.stack([self.count, counted], axis=1)
        shifts = shift[:, None]
        early = self._kept(delta, valid, self.count)
        reaching = _reaching(self.count, valid)
        if reaching is not None:
            shifts = np.stack([shift, shift], axis=1)
            sums = s1[:, 1], s2[:, 1]
            if (clip or held is not None) and early is not None:
                sums = _early_clipped(shift, *sums, early, reaching)
            shifts[:, 1], s1[:, 1], s2[:, 1] = _replaced(shift, *sums, reaching)
        if held is not None:
            s1[:, 1], s2[:, 1], count[:, 1] = _forgotten(s1[:, 1], s2[:, 1], count[:, 1])
        return Moments(shifts, s1, s2, count, early, held)

    def states(self, first: int, end: int) -> Moments:
        """The states ``first`` to ``end`` (excluded) of a history."""
        shift = self.shift if self.shift.shape[1] == 1 else self.shift[:, first:end]
        s1, s2, count = (part[:, first:end] for part in (self.s1, self.s2, self.count))
        return Moments(shift, s1, s2, count, self.early, self.held)

    def as_history(self) -> Moments:
        """These statistics as a history of one state."""
        s1, s2, count = self.s1[:, None], self.s2[:, None], self.count[:, None]
        return Moments(self.shift[:, None], s1, s2, count, self.early, self.held)

    def final(self) -> Moments:
        """The last state of a history."""
        return Moments(self.shift[:, -1], self.s1[:, -1], self.s2[:, -1], self.count[:, -1], self.early, self.held)

    def scale(self) -> tuple[np.ndarray, np.ndarray]:
        """(mean, std) of a history, each (n, m+1, d)."""
        m1, var = _centred(self.s1, self.s2, self.count)
        mean = np.where(self.count > 0, self.shift + m1, 0.0)  # nothing seen: 0
        std = np.sqrt(np.maximum(var, 0.0))
        std = np.maximum(std, _RELATIVE_FLOOR * magnitude(mean))
        return mean, np.where(self.count >= 2, std, 1.0)


def _joined(parts: list[Moments]) -> Moments:
    """One history of histories that follow each other (each one's states after the one before's)."""
    if len(parts) == 1:
        return parts[0]
    shifts = np.concatenate([np.broadcast_to(p.shift, p.s1.shape) for p in parts], axis=1)
    s1, s2, count = (np.concatenate([getattr(p, part) for p in parts], axis=1) for part in ("s1", "s2", "count"))
    return Moments(shifts, s1, s2, count, parts[-1].early, parts[-1].held)


def _centred(s1: np.ndarray, s2: np.ndarray, count: np.ndarray | int) -> tuple[np.ndarray, np.ndarray]:
    """The mean of the values less the shift, and their variance (may round below 0), from the sums."""
    n = np.maximum(count, 1)
    m1 = s1 / n
    return m1, s2 / n - m1 * m1


def _beyond(
    delta: np.ndarray, s1: np.ndarray, s2: np.ndarray, count: np.ndarray, valid: np.ndarray
) -> np.ndarray | None:
    """Where a valid ``delta`` (a value less the shift) lies more than ``CLIP`` deviations from the mean of the
    statistics ``s1``, ``s2``, ``count`` before it, those being warm and varying; None: nowhere (the rule)."""
    if delta.size == 1:  # one stream's one value, the most frequent call: in floats, numpy's arithmetic
        far = _far(float(delta.flat[0]), float(s1.flat[0]), float(s2.flat[0]), float(count.flat[0]))
        return np.ones_like(valid) if valid.all() and far else None
    m1, var = _centred(s1, s2, count)
    off = delta - m1
    far = off * off > CLIP * CLIP * var
    if not far.any():  # (the usual answer, in a third of the operations)
        return None
    beyond = valid & far & (var > 0) & (count >= WARM)
    return beyond if beyond.any() else None


def _holds_any(held: np.ndarray) -> bool:
    """Whether any entry holds a level (its oldest held is first: one test of it per entry; in floats for one)."""
    if held.shape[0] * held.shape[2] == 1:
        first = float(held.flat[0])
        return first == first
    return bool((held[:, 0] == held[:, 0]).any())


def _held(
    s1: np.ndarray, s2: np.ndarray, count: np.ndarray, delta: np.ndarray, valid: np.ndarray,
    beyond: np.ndarray | None, held: np.ndarray,
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:  # fmt: skip
    """The sums and count (n, d) after one value less the shift, ``delta``, and what is held after it, in
    statistics of levels, where a glitch and a level that moves for good look alike until the readings after
    them: a value ``beyond`` (``CLIP`` deviations from the mean, once ``WARM`` are in) is held out of the sums.
    The next value decides: back within, or on the other side, and the held ones were a glitch's (up to
    ``HOLD`` readings): they enter at ``CLIP`` deviations, on their side, as a far change does; one more as far
    on the same side once ``HOLD`` are held, and the level moved: they enter whole. Either way the value is
    then judged against the sums as they are. A far value like the last glitch's (``_alike``) is no glitch but
    a rare value of the stream's own (a flag that is seldom 1): it enters whole, as it did before any was
    held; clipped each time, such values had shrunk the scale without end (a flag 1 in 300 readings: 18
    deviations out taken whole, 35 -> 89 clipped, over 20,000 readings). An entry without a value keeps what it
    holds. Entries that neither hold nor are beyond take the value whole, as ``_one`` does; the others are rare,
    so in Python floats (the same arithmetic as numpy's, bit for bit)."""
    valid = np.broadcast_to(valid, s1.shape)
    far = np.zeros(s1.shape, dtype=bool) if beyond is None else np.broadcast_to(beyond, s1.shape)
    involved = valid & (far | (held[:, 0] == held[:, 0]))
    whole = np.where(involved, 0.0, delta)
    new1, new2, counted, held = s1 + whole, s2 + whole * whole, count + (valid & ~involved), held.copy()
    for i, j in zip(*np.nonzero(involved)):
        a, b, c, d = float(s1[i, j]), float(s2[i, j]), float(count[i, j]), float(delta[i, j])
        queue, last = [h for h in held[i, :HOLD, j].tolist() if h == h], float(held[i, HOLD, j])
        take = True  # whether ``d`` is judged and, unless far, enters
        if queue:
            mean = a / max(c, 1.0)
            level = _far(d, a, b, c) and (d - mean) * (queue[0] - mean) > 0
            if level and len(queue) < HOLD:
                queue.append(d)
                take = False
            else:
                for h in queue:
                    if not level:
                        h, last = _clip_to(h, a, b, c), h
                    a, b, c = a + h, b + h * h, c + 1.0
                queue = []
        if take:
            if _far(d, a, b, c) and not _alike(d, last, a / max(c, 1.0)):
                queue = [d]
            else:
                a, b, c = a + d, b + d * d, c + 1.0
        new1[i, j], new2[i, j], counted[i, j] = a, b, c
        held[i, :, j] = [*queue, *[np.nan] * (HOLD - len(queue)), last]
    return new1, new2, counted, held


def _forgotten(s1: np.ndarray, s2: np.ndarray, count: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The sums and count (n, d) of statistics of levels, halved where the count reached ``2 * HORIZON``: the
    readings before weigh half as much as those after, a quarter after the next ``HORIZON``, and so on. Over a
    stream's life, an input that changed units for good (a sensor read in C, then in F: 20 +- 1, then 68 +- 1.8)
    was seen for thousands of readings with the variance of both levels together, its new variation ~12x
    smaller than it was (the errors 5-6.5x, from 1,000 to 8,000 readings after). Halving leaves the mean and the
    variance as they were, bit for bit (a power of two), so no reading's scale jumps; and the count stays at
    least ``HORIZON``, far above the 20 the first values' rules count to. (In floats for one entry, the most
    frequent call.)"""
    full = 2.0 * HORIZON
    if count.size == 1:
        if float(count.flat[0]) < full:
            return s1, s2, count
        return s1 * 0.5, s2 * 0.5, count * 0.5
    filled = count >= full
    if not filled.any():
        return s1, s2, count
    return np.where(filled, s1 * 0.5, s1), np.where(filled, s2 * 0.5, s2), np.where(filled, count * 0.5, count)


def _alike(value: float, last: float, mean: float) -> bool:
    """Whether a far value is like the last glitch's (NaN: none): nearer to it than half its distance from the
    ``mean``, as a flag's 1 is to its last 1, and a pump's current on to its last."""
    return abs(value - last) <= 0.5 * abs(last - mean)


def _far(delta: float, s1: float, s2: float, count: float) -> bool:
    """``_beyond`` of one value in floats."""
    n = max(count, 1.0)
    mean = s1 / n
    spread, off = s2 / n - mean * mean, delta - mean
    return count >= WARM and spread > 0 and off * off > CLIP * CLIP * spread


def _clip_to(delta: float, s1: float, s2: float, count: float) -> float:
    """``_clipped`` of one value in floats."""
    n = max(count, 1.0)
    mean = s1 / n
    sd = math.sqrt(max(s2 / n - mean * mean, 0.0))
    return mean + CLIP * sd if delta > mean else mean - CLIP * sd


def _reaching(count: np.ndarray, valid: np.ndarray) -> np.ndarray | None:
    """Where a valid value brings an entry's ``count`` to ``WARM``; None: nowhere (in floats for one value,
    most calls)."""
    if count.size == 1:
        return np.ones_like(valid) if float(count.flat[0]) == WARM - 1 and valid.all() else None
    reaching = valid & (count == WARM - 1)
    return reaching if reaching.any() else None


def _replaced(
    shift: np.ndarray, s1: np.ndarray, s2: np.ndarray, reaching: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The state (``shift``, ``s1``, ``s2``) with a first value (the shift: it added 0 to the sums) that lies
    more than ``CLIP`` deviations from the mean of the ``WARM - 1`` values after it replaced by that mean,
    where the count is ``reaching`` ``WARM`` and those values vary (beyond the std's floor): then the shift moves
    to their mean, around which their sum is 0 and their sum of squares ``WARM - 1`` times their variance.
    Elsewhere unchanged."""
    others = WARM - 1
    m1, var = _centred(s1, s2, others)
    floor = _RELATIVE_FLOOR * magnitude(shift + m1)
    far = reaching & (var > floor * floor) & (m1 * m1 > CLIP * CLIP * var)
    return np.where(far, shift + m1, shift), np.where(far, 0.0, s1), np.where(far, others * var, s2)


def _early_clipped(
    shift: np.ndarray, s1: np.ndarray, s2: np.ndarray, early: np.ndarray, reaching: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The sums ``s1``, ``s2`` (n, d) of the ``WARM - 1`` values after the first (less the ``shift``: the first
    added 0) where ``reaching`` ``WARM``, with a glitch among them (``glitch``) entered at ``CLIP`` deviations
    from the others, as a later value is (``_clipped``); summed again in order from the values kept in
    ``early`` (n, WARM, d). Elsewhere unchanged: the same bits."""
    rows, entries = np.nonzero(reaching)
    values = early[rows, 1:, entries]  # (k, WARM - 1)
    far = glitch(values, shift[rows, entries])
    hit = far.any(axis=1)
    if not hit.any():
        return s1, s2
    mean, var = plain(values, ~far)
    sd = np.sqrt(np.maximum(var, 0.0))[:, None]
    values = np.where(
        far, np.where(values > mean[:, None], mean[:, None] + CLIP * sd, mean[:, None] - CLIP * sd), values
    )
    total, squares = in_order(values), in_order(values * values)  # (from 0: the first value's 0, as accumulated)
    s1, s2 = s1.copy(), s2.copy()
    s1[rows, entries] = np.where(hit, total, s1[rows, entries])
    s2[rows, entries] = np.where(hit, squares, s2[rows, entries])
    return s1, s2


def glitch(values: np.ndarray, shift: np.ndarray) -> np.ndarray:
    """Which of an entry's first values ``values`` (k, m; less the ``shift``, (k,)) are a glitch's: more than
    ``CLIP`` deviations from the mean of the others, which vary (beyond the std's floor), at most
    ``GLITCH_VALUES`` of them (``outlying``: the change up from a glitch and the change back hide each other
    from a test of one at a time), lying within ``GLITCH_SPAN`` consecutive values (far values spread wider are
    the stream's own)."""

    def far(value: np.ndarray, mean: np.ndarray, var: np.ndarray) -> np.ndarray:
        floor, off = _RELATIVE_FLOOR * magnitude(shift + mean), value - mean
        return (var > floor * floor) & (off * off > CLIP * CLIP * var)

    return outlying(values, far, GLITCH_VALUES, GLITCH_SPAN - 1)


def outlying(
    values: np.ndarray, far: Callable[[np.ndarray, np.ndarray, np.ndarray], np.ndarray], most: int,
    reach: np.ndarray | int,
) -> np.ndarray:  # fmt: skip
    """Which of each row's ``values`` (k, m) are outliers, found as Rosner's generalized ESD test finds them: for
    r = 1 to ``most`` the value farthest from the mean of those left is set aside and tested, ``far(value, mean,
    var)`` (each (k,)), against the mean and variance of the rest; the largest r whose r-th is far marks all r
    (one at a time, an outlier as far as another hides it). None where they lie more than ``reach`` ((k,) or
    one for all) positions apart, nor where a value is unknown (NaN: a state saved before they were kept)."""
    k, m = values.shape
    line = np.arange(k)
    aside, picks, found = np.zeros((k, m), dtype=bool), [], np.zeros(k, dtype=np.intp)
    for r in range(1, most + 1):
        mean, _ = plain(values, ~aside)
        pick = np.where(aside, -1.0, np.abs(values - mean[:, None])).argmax(axis=1)
        aside[line, pick] = True
        picks.append(pick)
        found = np.where(far(values[line, pick], *plain(values, ~aside)), r, found)
    found = np.where(np.isnan(values).any(axis=1), 0, found)
    marked = np.zeros((k, m), dtype=bool)
    for r, pick in enumerate(picks, start=1):
        marked[line, pick] |= found >= r
    at = np.arange(m)[None, :]
    spread = np.where(marked, at, -1).max(axis=1) - np.where(marked, at, m).min(axis=1)
    return marked & (spread <= reach)[:, None]


def plain(values: np.ndarray, kept: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The plain mean and variance of the ``kept`` ``values`` of each row (k, m), summed in order (a row's bits
    do not depend on the rows beside it)."""
    n = np.maximum(kept.sum(axis=1), 1)
    mean = in_order(np.where(kept, values, 0.0)) / n
    off = np.where(kept, values - mean[:, None], 0.0)
    return mean, in_order(off * off) / n


def in_order(terms: np.ndarray) -> np.ndarray:
    """Each row's sum of ``terms`` (k, m), added left to right from 0: ``np.add.accumulate`` adds in order, where
    ``np.sum`` adds pairwise in blocks whose bounds depend on the layout. Bit for bit the loop over columns it
    replaces, ten times faster at m = 30 (a stream's first glitch checks, the warm-up's largest cost)."""
    if terms.shape[1] == 0:
        return np.zeros(len(terms))
    return 0.0 + np.add.accumulate(terms, axis=1)[:, -1]  # (0.0 +: a row of -0.0 sums to 0.0, as from 0)


def _clipped(delta: np.ndarray, s1: np.ndarray, s2: np.ndarray, count: np.ndarray) -> np.ndarray:
    """``delta`` moved to ``CLIP`` deviations from the mean, on its side."""
    m1, var = _centred(s1, s2, count)
    sd = np.sqrt(np.maximum(var, 0.0))
    return np.where(delta > m1, m1 + CLIP * sd, m1 - CLIP * sd)


def magnitude(mean: np.ndarray) -> np.ndarray:
    """What a floor is relative to: ``|mean|``, or 1 where the mean is exactly 0 (a constant 0 has no scale
    of its own). Not ``max(|mean|, 1)``: in units where a series reads ~1e-12 that floor (1e-9) was larger
    than its whole variation, and the network saw nothing but 0. (The anomaly scores' floor is the same.)"""
    return np.where(mean != 0, np.abs(mean), 1.0)


def _two(start: np.ndarray) -> np.ndarray:
    """A history of two states (n, 2, d) whose first is ``start`` (n, d); the second to be written."""
    history = np.empty((start.shape[0], 2, *start.shape[1:]))
    history[:, 0] = start
    return history
