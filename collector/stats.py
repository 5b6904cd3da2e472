"""What ingest did, for the server's ``/metrics``: one set per app, in the app's registry."""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Histogram

OUTCOMES = ("applied", "duplicate", "rejected", "conflict", "overlap")


class IngestStats:
    def __init__(self, registry: CollectorRegistry) -> None:
        self.batches = Counter("gpuledger_collector_batches", "Batches received, by outcome (applied, duplicate, "
                               "rejected: invalid; conflict: a replay with other content; overlap: GPU time already stored)",
                               ["outcome"], registry=registry)
        self.metadata_conflicts = Counter("gpuledger_collector_job_metadata_conflicts",
                                          "Job metadata values from agents that differ from the stored ones, not applied",
                                          ["field"], registry=registry)
        self.intervals = Counter("gpuledger_collector_intervals", "GPU intervals applied", registry=registry)
        self.seconds = Histogram("gpuledger_collector_ingest_seconds", "Time to apply one batch, from request to commit",
                                 registry=registry,
                                 buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10))
        # present from the start, at 0; the children kept, so a request does not look its label up
        self._outcomes = {outcome: self.batches.labels(outcome) for outcome in OUTCOMES}

    def applied(self, applied: bool, intervals: int, seconds: float) -> None:
        self._outcomes["applied" if applied else "duplicate"].inc()
        if applied:
            self.intervals.inc(intervals)
        self.seconds.observe(seconds)

    def rejected(self, outcome: str = "rejected") -> None:
        self.batches.labels(outcome).inc()

    def metadata_conflict(self, field: str) -> None:
        self.metadata_conflicts.labels(field).inc()
