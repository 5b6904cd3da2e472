"""The stored schema. Measured quantities only (seconds, joules); prices apply at read time."""

from __future__ import annotations

from typing import ClassVar

from sqlalchemy import BigInteger, Column, Float, Index, Integer, SmallInteger, Table, UniqueConstraint
from sqlmodel import Field, SQLModel

RUNNING = "running"
ENDED = "ended"


class TableModel(SQLModel):
    """A table's model; ``__table__`` typed for the Core statements that read and write it."""

    __table__: ClassVar[Table]


class IngestedBatch(TableModel, table=True):
    """Identity of every applied batch: the same (node, boot_id, seq) is never applied twice."""

    __tablename__ = "ingested_batches"
    __table_args__ = (Index("ix_ingested_batches_received_at_s", "received_at_s"),)
    node: str = Field(primary_key=True, max_length=128)
    boot_id: str = Field(primary_key=True, max_length=128)
    seq: int = Field(primary_key=True, sa_type=BigInteger)
    received_at_s: float
    interval_count: int
    content_hash: str | None = Field(default=None, max_length=64)  # sha256 of the batch as sent (collector.integrity)


RAW_TABLE = "raw_intervals"
MINUTE_TABLE = "job_minutes"
MINUTE_S = 60  # width of the minute tier's buckets


class JobKey(TableModel, table=True):
    """A small integer for each job id, so the raw and minute tiers do not repeat the string."""

    __tablename__ = "job_keys"
    id: int | None = Field(default=None, primary_key=True)
    job_id: str = Field(max_length=300, unique=True)


class Place(TableModel, table=True):
    """A node with its datacenter and GPU model: what the minute tier is rolled up by."""

    __tablename__ = "places"
    __table_args__ = (UniqueConstraint("node", "datacenter", "gpu_model", name="uq_places_node_datacenter_gpu_model"),)
    id: int | None = Field(default=None, primary_key=True)
    node: str = Field(max_length=128)
    datacenter: str = Field(max_length=128)
    gpu_model: str = Field(max_length=128)


class GpuKey(TableModel, table=True):
    """A GPU (UUID) at a place; raw intervals carry its id."""

    __tablename__ = "gpu_keys"
    __table_args__ = (UniqueConstraint("place_id", "gpu_uuid", name="uq_gpu_keys_place_id_gpu_uuid"),)
    id: int | None = Field(default=None, primary_key=True)
    place_id: int = Field(foreign_key="places.id")
    gpu_uuid: str = Field(max_length=128)


# Raw intervals as the agents cut them, with integer keys: reports never read these, a job's
# charts read its last hours. No primary key (nothing looks a row up by identity); on PostgreSQL
# range-partitioned by day of end_s (collector.partitions), so retention drops whole partitions.
RawInterval = Table(
    RAW_TABLE, SQLModel.metadata,
    Column("gpu_key", Integer, nullable=False),
    Column("job_key", Integer, nullable=False),
    Column("start_s", Float, nullable=False),
    Column("end_s", Float, nullable=False),
    Column("gpu_seconds", Float, nullable=False),
    Column("busy_gpu_seconds", Float, nullable=False),
    Column("energy_j", Float, nullable=False),
    Column("method", SmallInteger, nullable=False),  # index into agent.energy.METHODS
    Column("max_memory_used_bytes", BigInteger, nullable=True),
    Index("ix_raw_intervals_job_key_end_s", "job_key", "end_s"),  # one job's last hours
    Index("ix_raw_intervals_gpu_key_end_s", "gpu_key", "end_s"),  # a node's stored GPU time (collector.integrity)
    Index("ix_raw_intervals_end_s", "end_s", postgresql_using="brin"),  # retention (SQLite; tiny on PostgreSQL)
    postgresql_partition_by="RANGE (end_s)",
)


class JobMinute(TableModel, table=True):
    """Per-minute rollup per (job, place), written with the raw intervals on ingest; the charts
    of the weeks after the raw intervals are gone. Range-partitioned by minute_s on PostgreSQL."""

    __tablename__ = MINUTE_TABLE
    __table_args__ = {"postgresql_partition_by": "RANGE (minute_s)"}
    job_key: int = Field(primary_key=True)
    minute_s: int = Field(primary_key=True, sa_type=BigInteger)
    place_key: int = Field(primary_key=True)
    gpu_seconds: float
    busy_gpu_seconds: float
    energy_j: float
    energy_counter_j: float


class Job(TableModel, table=True):
    __tablename__ = "jobs"
    __table_args__ = (Index("ix_jobs_first_seen_s", "first_seen_s"),)
    job_id: str = Field(primary_key=True, max_length=300)  # "<cluster>/<local id>"
    cluster: str = Field(max_length=128)
    local_id: str = Field(max_length=128)
    name: str | None = Field(default=None, max_length=256)
    user: str | None = Field(default=None, max_length=256, index=True)
    account: str | None = Field(default=None, max_length=256, index=True)
    namespace: str | None = Field(default=None, max_length=256)  # Kubernetes
    state: str = Field(default=RUNNING, max_length=16, index=True)
    first_seen_s: float
    last_seen_s: float
    ended_s: float | None = None
    budget_usd: float | None = None
    budget_co2e_kg: float | None = None
    steps_done: float | None = None
    total_steps: float | None = None
    expected_end_s: float | None = None
    progress_at_s: float | None = None
    release: str | None = Field(default=None, max_length=256, index=True)  # model-card group, e.g. llama-2
    source: str = Field(default="agent", max_length=16, sa_column_kwargs={"server_default": "agent"})  # or "declared"
    # Set by the scheduler's lifecycle events (collector.scheduler): its metadata wins over
    # what an agent inferred, and its end time over the silence timeout.
    scheduler: str | None = Field(default=None, max_length=32)
    partition: str | None = Field(default=None, max_length=256)
    qos: str | None = Field(default=None, max_length=256)
    array_job_id: str | None = Field(default=None, max_length=128)
    array_task_id: str | None = Field(default=None, max_length=128)
    het_job_id: str | None = Field(default=None, max_length=128)
    het_job_offset: str | None = Field(default=None, max_length=128)
    node_list: str | None = Field(default=None, max_length=4096)
    alloc_gpus: int | None = None
    scheduler_state: str | None = Field(default=None, max_length=64)
    exit_code: str | None = Field(default=None, max_length=64)
    scheduler_started_s: float | None = None
    scheduler_ended_s: float | None = None
    metadata_source: str | None = Field(default=None, max_length=16)  # admin | scheduler; None: agents (first writer)


class JobHour(TableModel, table=True):
    """Hourly rollup per (job, hour, datacenter, GPU model), maintained incrementally on ingest."""

    __tablename__ = "job_hours"
    job_id: str = Field(primary_key=True, max_length=300)
    hour_s: int = Field(primary_key=True, sa_type=BigInteger)  # Unix time of the hour's start
    datacenter: str = Field(primary_key=True, max_length=128)
    gpu_model: str = Field(primary_key=True, max_length=128)
    gpu_seconds: float
    busy_gpu_seconds: float
    energy_j: float
    energy_counter_j: float  # the part of energy_j measured by the hardware counter
    energy_declared_j: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})  # declared on import
    energy_estimated_j: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})  # GPU-hours × TDP on import


class JobGpu(TableModel, table=True):
    """Every GPU a job has run on, for its node and GPU counts."""

    __tablename__ = "job_gpus"
    job_id: str = Field(primary_key=True, max_length=300)
    node: str = Field(primary_key=True, max_length=128)
    gpu_uuid: str = Field(primary_key=True, max_length=128)


class JobPod(TableModel, table=True):
    """Every Kubernetes pod a job has run in (a multi-pod training job is one job)."""

    __tablename__ = "job_pods"
    job_id: str = Field(primary_key=True, max_length=300)
    pod: str = Field(primary_key=True, max_length=256)


class JobNetHour(TableModel, table=True):
    """Hourly RoCE rollup per (job, hour, node). A counter no port reported stays NULL."""

    __tablename__ = "job_net_hours"
    job_id: str = Field(primary_key=True, max_length=300)
    hour_s: int = Field(primary_key=True, sa_type=BigInteger)
    node: str = Field(primary_key=True, max_length=128)
    seconds: float
    ports: int
    tx_bytes: float | None = None
    rx_bytes: float | None = None
    tx_packets: float | None = None
    rx_packets: float | None = None
    cnp_sent: float | None = None
    cnp_handled: float | None = None
    ecn_marked_packets: float | None = None
    retransmits: float | None = None
    out_of_sequence: float | None = None
    timeouts: float | None = None
    apportioned_bytes: float
    peak_tx_gbps: float
    peak_rx_gbps: float
    peak_link_util_pct: float | None = None
    link_down_port_seconds: float
    # Node-seconds in which a port's data counter increase was unknown (a saturated 32-bit PMA
    # counter): the hour's byte and packet counts are then only a lower bound, reported null.
    unknown_seconds: float = Field(default=0.0, sa_column_kwargs={"server_default": "0"})


class GridIntensity(TableModel, table=True):
    """Hourly grid carbon intensity per region (imported or fetched from a provider)."""

    __tablename__ = "grid_intensity"
    region: str = Field(primary_key=True, max_length=128)
    hour_s: int = Field(primary_key=True, sa_type=BigInteger)
    g_per_kwh: float
    source: str = Field(max_length=64)
    estimated: bool = False
    updated_at_s: float


class GridMarginalIntensity(TableModel, table=True):
    """Hourly *marginal* emission rate per region (WattTime co2_moer): the CO2e a change in load
    causes, for what-if and load shifting; never used to account for a job's CO2e."""

    __tablename__ = "grid_marginal_intensity"
    region: str = Field(primary_key=True, max_length=128)
    hour_s: int = Field(primary_key=True, sa_type=BigInteger)
    g_per_kwh: float
    source: str = Field(max_length=64)
    estimated: bool = False
    updated_at_s: float


class DeclaredUsage(TableModel, table=True):
    """Usage declared by import (`gpuledger import`, `POST /v1/usage/declared`), one row per
    (job, datacenter, GPU model, start, end): a re-import replaces its row, so it is idempotent.
    The job's hourly rollups are derived from its rows."""

    __tablename__ = "declared_usage"
    __table_args__ = (Index("ix_declared_usage_job_id", "job_id"),)
    row_key: str = Field(primary_key=True, max_length=64)
    job_id: str = Field(max_length=300)
    datacenter: str = Field(max_length=128)
    gpu_model: str = Field(max_length=128)
    start_s: float
    end_s: float
    gpu_seconds: float
    energy_j: float
    energy_source: str = Field(max_length=16)  # "declared" or "tdp_estimate"
    power_w: float | None = None  # the power the estimate used
    imported_at_s: float
