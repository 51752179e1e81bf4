"""A stream's kept results (service/results.py): a ring of records, searched where it wraps."""

from __future__ import annotations

import numpy as np
import pytest

from tbptt.service.results import ResultLog


def filled(log: ResultLog, seqs: list[int]) -> None:
    """One result a seq, appended in runs of 1 to 4 (one by one, and together), values from the seq."""
    at = 0
    while at < len(seqs):
        run = np.array(seqs[at : at + 1 + at % 4])
        m, s = len(run), run.astype(float)
        records = log.records(
            run, run + 100, s[:, None] / 10, s / 100, run % 2 == 0, np.where(run % 3 == 0, np.nan, s / 1000),
            np.stack([s - 1, s + 1], axis=1)[:, None, :], ts=1e9 + s, x=np.stack([s, -s], axis=1),
            y=np.where((run % 5 == 0)[:, None], np.nan, s[:, None] * 2),
        )  # fmt: skip
        if m == 1:
            log.put_one(records[0])
        else:
            log.put(records)
        at += m


@pytest.mark.parametrize("appended", [5, 16, 23, 40, 57])
def test_results_are_found_and_listed_oldest_first_wherever_the_ring_wraps(appended):
    log = ResultLog(16, 1, 0.95, input_size=2)
    seqs = [3 * k + 1 for k in range(appended)]  # (gaps between seqs: a retry may name one never kept)
    filled(log, seqs)
    kept = seqs[-16:]
    assert [r["seq"] for r in log.history(100)] == kept
    assert [r["seq"] for r in log.history(3)] == kept[-3:]
    for seq in range(seqs[-1] + 3):
        found = log.find(seq)
        assert (found is not None) == (seq in kept)
        if found is not None:
            assert found["duplicate"] and found["step"] == seq + 100 and found["prediction"] == [seq / 10]
            assert log.repeats(seq, [float(seq), -float(seq)], None if seq % 5 == 0 else [seq * 2.0], 1e9 + seq)
            assert not log.repeats(seq, [float(seq), 0.0], None if seq % 5 == 0 else [seq * 2.0], 1e9 + seq)
        else:
            assert log.repeats(seq, [0.0, 0.0], None, None) is None
        earlier = [s for s in kept if s < seq]
        before = log.before(seq)
        assert (before is None) if not earlier else (before is not None and before["seq"] == earlier[-1])


def test_a_result_reads_back_as_it_was_kept_and_through_a_checkpoint():
    log = ResultLog(16, 1, 0.95, input_size=2)
    filled(log, list(range(1, 21)))
    (last,) = log.history(1)
    assert last == {
        "seq": 20, "step": 120, "ts": "2001-09-09T01:47:00Z", "prediction": [2.0],
        "loss": 0.2, "updated": True, "anomaly": 0.02, "anomalous": False, "interval": [[19.0, 21.0]],
        "duplicate": False, "x": [20.0, -20.0], "y": None,
    }  # fmt: skip
    eighteenth = log.history(3)[0]
    assert eighteenth["anomaly"] is None and eighteenth["anomalous"] is None and eighteenth["y"] == [36.0]
    again = log.emptied()
    again.load(log.arrays())
    assert repr(again.history(100)) == repr(log.history(100))
    assert {name: array.dtype for name, array in log.arrays().items()} == {
        "seq": np.int64, "step": np.int64, "loss": np.float64, "updated": np.bool_, "prediction": np.float64,
        "anomaly": np.float64, "anomalous": np.bool_, "interval": np.float64, "ts": np.float64, "x": np.float64,
        "y": np.float64,
    }  # fmt: skip
