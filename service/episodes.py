"""Alert episodes: an alert opens one when none of its stream's ``episode_gap`` observations before it was
anomalous, else belongs to the episode open since. A sensor waking up after idling raises a storm of alerts
while its statistics catch up: one episode. Plain Python, so that the command line tools can count them
without the learning core."""

from __future__ import annotations

from collections.abc import Iterable


def opens_episode(last_alert: int | None, step: int, gap: int) -> bool:
    """Whether an alert at ``step`` opens an episode, the stream's previous one at ``last_alert`` (None: none)."""
    return last_alert is None or step - last_alert > gap


def openings(steps: Iterable[int], gap: int, last_alert: int | None = None) -> list[int]:
    """The steps among alerts at ``steps`` (increasing) that open an episode, after one at ``last_alert``."""
    opened = []
    for step in steps:
        if opens_episode(last_alert, step, gap):
            opened.append(step)
        last_alert = step
    return opened
