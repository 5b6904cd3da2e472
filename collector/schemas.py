"""What an agent may send. Anything else is rejected whole, naming the field and the value."""

from __future__ import annotations

import hashlib
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, StringConstraints, model_validator

from agent.energy import METHODS
from agent.network import NETWORK_COUNTERS
from agent.split import SPLITS
from collector.gputime import Span, excess

NETWORK_COUNTER_NAMES = tuple(NETWORK_COUNTERS)

MAX_INTERVAL_S = 3600.0  # agents cut at every push; an hour-long interval means a broken agent
MAX_POWER_W = 10_000.0  # no single GPU board draws 10 kW
MAX_TIME_S = 4_102_444_800.0  # 2100-01-01T00:00:00Z: any later timestamp is a broken clock
MAX_COUNTER = 1e18  # one record's share of a port counter: 20x 256 ports at 400 Gb/s for an hour
MAX_BYTES = 2**53  # memory in bytes: 8 PiB, far above any GPU, still exact as a float
MAX_BUDGET = 1e12  # dollars or kg CO2e: a trillion is no job's budget

# Text without NUL or other control characters (PostgreSQL refuses NUL in text). A lone
# surrogate ("\ud800"), which UTF-8 cannot encode, is refused by pydantic itself.
TEXT_PATTERN = r"^[^\x00-\x1f\x7f]*$"
Label = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x7e]+$")]
ClusterLabel = Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=r"^[\x21-\x2e\x30-\x7e]+$")]
Text = Annotated[str, StringConstraints(max_length=256, pattern=TEXT_PATTERN)]
Timestamp = Annotated[float, Field(ge=0, le=MAX_TIME_S)]
Seconds = Annotated[float, Field(ge=0, le=MAX_INTERVAL_S)]
Joules = Annotated[float, Field(ge=0, le=MAX_POWER_W * MAX_INTERVAL_S)]
Counter = Annotated[float, Field(ge=0, le=MAX_COUNTER)]
Budget = Annotated[float, Field(ge=0, le=MAX_BUDGET)]
EnergyMethod = Literal[METHODS]  # type: ignore[valid-type]
SplitMethod = Literal[SPLITS]  # type: ignore[valid-type]
PodName = Annotated[str, StringConstraints(min_length=1, max_length=253, pattern=r"^[\x21-\x7e]+$")]  # a DNS subdomain


def checked_span(start_s: float, end_s: float) -> float:
    """end_s - start_s, which must be between 0 and MAX_INTERVAL_S."""
    span_s = end_s - start_s
    if span_s < 0:
        raise ValueError(f"end_s = {end_s} is before start_s = {start_s}")
    if span_s > MAX_INTERVAL_S:
        raise ValueError(f"end_s - start_s = {span_s} s: expected at most {MAX_INTERVAL_S:g} s")
    return span_s


class Strict(BaseModel):
    # strict: no coercion (true is not 1.0, "5" is not 5); an agent sends JSON numbers.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class IntervalIn(Strict):
    gpu_uuid: Label
    gpu_index: int = Field(ge=0, le=4095)
    gpu_model: Annotated[str, StringConstraints(min_length=1, max_length=128, pattern=TEXT_PATTERN)]
    job: Label | None
    start_s: Timestamp
    end_s: Timestamp
    gpu_seconds: Seconds
    busy_gpu_seconds: Seconds
    energy_j: Joules
    energy_method: EnergyMethod
    max_memory_used_bytes: int | None = Field(default=None, ge=0, le=MAX_BYTES)
    gpu_instance: int | None = Field(default=None, ge=0, le=64, description="MIG GPU instance id; null: the whole GPU.")
    split: SplitMethod = Field(default="whole", description="How the GPU was shared among its owners: whole, "
                               "mig_slices (by compute slices), process_utilization (by per-process SM use) or equal.")

    @model_validator(mode="after")
    def _consistent(self) -> IntervalIn:
        span_s = checked_span(self.start_s, self.end_s)
        if self.gpu_seconds > span_s * (1 + 1e-9) + 1e-9:
            raise ValueError(f"gpu_seconds = {self.gpu_seconds}: expected at most end_s - start_s = {span_s}")
        if self.busy_gpu_seconds > self.gpu_seconds * (1 + 1e-9) + 1e-9:
            raise ValueError(f"busy_gpu_seconds = {self.busy_gpu_seconds}: expected at most gpu_seconds = {self.gpu_seconds}")
        if self.energy_j > MAX_POWER_W * max(self.gpu_seconds, 1e-3):
            raise ValueError(f"energy_j = {self.energy_j}: more than {MAX_POWER_W:g} W over gpu_seconds = {self.gpu_seconds}")
        return self


NetworkCounter = Literal[NETWORK_COUNTER_NAMES]  # type: ignore[valid-type]


class NetworkIn(Strict):
    """One job's share of the node's RoCE traffic over one interval (summed over ports)."""

    job: Label | None
    start_s: Timestamp
    end_s: Timestamp
    ports: int = Field(ge=0, le=256)
    seconds: Seconds
    counters: dict[NetworkCounter, Counter | None] = Field(
        description="Summed over the node's ports; null when a port's increase is unknown (a saturated counter)."
    )
    apportioned_bytes: Counter
    peak_tx_gbps: Annotated[float, Field(ge=0, le=100_000)]
    peak_rx_gbps: Annotated[float, Field(ge=0, le=100_000)]
    peak_link_util_pct: Annotated[float, Field(ge=0, le=1000)] | None = None
    link_down_port_seconds: Annotated[float, Field(ge=0, le=256 * MAX_INTERVAL_S)] = 0.0
    unknown_seconds: Seconds = Field(default=0.0, description="Seconds in which some counter's increase was unknown.")

    @model_validator(mode="after")
    def _consistent(self) -> NetworkIn:
        checked_span(self.start_s, self.end_s)
        if self.unknown_seconds > self.seconds * (1 + 1e-9):
            raise ValueError(f"unknown_seconds = {self.unknown_seconds}: expected at most seconds = {self.seconds}")
        return self


class JobIn(Strict):
    id: Label
    name: Text | None = None
    user: Text | None = None
    account: Text | None = None
    budget_usd: Budget | None = None
    budget_co2e_kg: Budget | None = None
    namespace: Label | None = Field(default=None, description="Kubernetes: the job's namespace.")
    pods: list[PodName] = Field(default_factory=list, max_length=10_000, description="Kubernetes: the job's pods on this node.")
    release: Text | None = None  # GPULEDGER_RELEASE in the job's environment


class BatchIn(Strict):
    node: Label
    cluster: ClusterLabel
    datacenter: Label
    boot_id: Label
    seq: int = Field(ge=0, le=2**62)
    sent_at_s: Timestamp
    agent_version: Text | None = None
    simulated: bool = False
    jobs: list[JobIn] = Field(default_factory=list, max_length=100_000)
    intervals: list[IntervalIn] = Field(max_length=200_000)
    merged_intervals: int = Field(default=0, ge=0, le=2**31,
                                  description="Intervals merged into coarser ones by the agent's spool.")
    network: list[NetworkIn] = Field(default_factory=list, max_length=100_000)
    _content_hash: str | None = PrivateAttr(default=None)

    def content_hash(self) -> str:
        """SHA-256 of what the batch says, as validated (``sent_at_s`` aside: a resend may restamp
        it). The same (node, boot_id, seq) with another hash is a conflicting replay. Computed once."""
        if self._content_hash is None:
            canonical = self.model_dump_json(exclude={"sent_at_s"})
            self._content_hash = hashlib.sha256(canonical.encode()).hexdigest()
        return self._content_hash

    @model_validator(mode="after")
    def _gpu_time_fits(self) -> BatchIn:
        for uuid, spans in spans_by_gpu(self).items():
            if (found := excess(spans)) is not None:
                raise ValueError(f"intervals of gpu_uuid {uuid!r} overlap: {found.describe()}")
        return self


def spans_by_gpu(batch: BatchIn) -> dict[str, list[Span]]:
    """The batch's intervals as spans, by GPU."""
    by_gpu: dict[str, list[Span]] = {}
    for interval in batch.intervals:
        by_gpu.setdefault(interval.gpu_uuid, []).append(Span(interval.start_s, interval.end_s, interval.gpu_seconds))
    return by_gpu
