"""Prometheus metrics: counts and latencies for the whole service, never labelled per stream."""

from __future__ import annotations

from collections.abc import Iterator

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, disable_created_metrics
from prometheus_client.metrics_core import Metric

disable_created_metrics()  # the *_created series add nothing a scraper needs

# What a front process counts; everything else is counted where streams are applied (a sharded server: in
# each shard, exposed by the front per shard).
HTTP_METRICS = frozenset({"tbptt_http_requests", "tbptt_http_request_duration_seconds"})

LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)


class Telemetry:
    """The service's metrics in its own registry (one per app, so tests can build many apps)."""

    def __init__(self, registry: CollectorRegistry | None) -> None:
        self.registry = registry or CollectorRegistry()
        r = self.registry
        self.observations = Counter("tbptt_observations", "Observations applied", registry=r)
        self.updates = Counter("tbptt_updates", "TBPTT updates applied", registry=r)
        self.skipped = Counter("tbptt_skipped_updates", "Updates skipped for a non-finite loss or gradient", registry=r)
        self.judged_targets = Counter(
            "tbptt_targets_judged", "Targets judged against their predictions (anomaly scores, intervals)", registry=r
        )
        self.anomalous = Counter(
            "tbptt_anomalies", "Observations judged anomalous (the score reached the stream's anomaly_threshold)",
            registry=r,
        )  # fmt: skip
        self.episodes = Counter(
            "tbptt_anomaly_episodes", "Alerts that opened an episode (none of the stream's episode_gap before)",
            registry=r,
        )  # fmt: skip
        self.interval_targets = Counter(
            "tbptt_interval_targets", "Judged target values (one per output) that had a prediction interval", registry=r
        )
        self.interval_hits = Counter(
            "tbptt_interval_hits", "Judged target values inside their prediction interval (coverage: hits / targets)",
            registry=r,
        )  # fmt: skip
        self.write_failures = Counter("tbptt_store_write_failures", "Store writes that failed", registry=r)
        self.batch_seconds = Histogram(
            "tbptt_engine_batch_seconds", "Time to step one engine batch", buckets=LATENCY_BUCKETS, registry=r
        )
        self.update_seconds = Histogram(
            "tbptt_update_duration_seconds", "Time spent in TBPTT updates per engine batch", buckets=LATENCY_BUCKETS,
            registry=r,
        )  # fmt: skip
        self.live_streams = Gauge("tbptt_streams", "Streams known to the service", registry=r)
        self.loaded_streams = Gauge("tbptt_streams_in_memory", "Streams in memory (the others are evicted)", registry=r)
        self.requests = Counter("tbptt_http_requests", "HTTP requests", ["method", "route", "status"], registry=r)
        self.latency = Histogram(
            "tbptt_http_request_duration_seconds", "HTTP request latency", ["method", "route"],
            buckets=LATENCY_BUCKETS, registry=r,
        )  # fmt: skip

    def observed(self, observations: int, updates: int, batch_seconds: float, update_seconds: float) -> None:
        if observations:
            self.observations.inc(observations)
            self.batch_seconds.observe(batch_seconds)
        if updates:
            self.updates.inc(updates)
            self.update_seconds.observe(update_seconds)

    def skipped_updates(self, count: int) -> None:
        if count:
            self.skipped.inc(count)

    def judged(self, targets: int, with_interval: int, inside: int) -> None:
        if targets:
            self.judged_targets.inc(targets)
        if with_interval:
            self.interval_targets.inc(with_interval)
            self.interval_hits.inc(inside)

    def anomalies(self, alerts: int, episodes: int) -> None:
        self.anomalous.inc(alerts)
        self.episodes.inc(episodes)

    def write_failed(self) -> None:
        self.write_failures.inc()

    def streams(self, count: int) -> None:
        self.live_streams.set(count)

    def in_memory(self, count: int) -> None:
        self.loaded_streams.set(count)


def every_front() -> CollectorRegistry:
    """The HTTP series of every front of a server with several, summed: prometheus_client's multiprocess
    mode, in which each front writes its samples to files in ``PROMETHEUS_MULTIPROC_DIR`` (set by the
    serving process, service/cli/fronts.py), and a front killed keeps its counts."""
    from prometheus_client.multiprocess import MultiProcessCollector

    registry = CollectorRegistry()
    MultiProcessCollector(registry)
    return registry


def per_shard(front: CollectorRegistry, shards: dict[int, list[Metric]]) -> list[Metric]:
    """A sharded server's metrics: the front's HTTP series, and every shard's others labelled ``shard``
    (its index: no stream labels, as everywhere). A shard that did not answer has no series."""
    families = [family for family in front.collect() if family.name in HTTP_METRICS]
    merged: dict[str, Metric] = {}
    for index, shard_families in sorted(shards.items()):
        for family in shard_families:
            if family.name in HTTP_METRICS:
                continue
            into = merged.setdefault(family.name, Metric(family.name, family.documentation, family.type, family.unit))
            for sample in family.samples:
                into.samples.append(sample._replace(labels={"shard": str(index), **sample.labels}))
    return families + list(merged.values())


class Exposition:
    """Metric families as ``generate_latest`` takes them."""

    def __init__(self, families: list[Metric]) -> None:
        self.families = families

    def collect(self) -> Iterator[Metric]:
        return iter(self.families)
