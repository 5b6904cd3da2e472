"""What the API returns."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, StringConstraints, field_validator

from collector.schemas import MAX_BUDGET


class Rates(BaseModel):
    usd_per_gpu_hour: dict[str, float | None] = Field(description="Effective price per GPU-hour, by GPU model.")
    cost_method: dict[str, str] = Field(description="list, rate_card or tco, by GPU model.")
    embodied_kg_per_gpu_hour: dict[str, float] = Field(description="Embodied kgCO2e per GPU-hour, by GPU model.")
    pue: dict[str, float] = Field(description="Effective power usage effectiveness, by datacenter.")
    region: dict[str, str] = Field(description="Grid region, by datacenter.")
    market_g_per_kwh: dict[str, float | None] = Field(description="Contractual factor, by datacenter.")
    node_overhead_w: dict[str, float] = Field(description="Per-node CPU/memory/NIC watts added, by datacenter.")
    grid_intensity_g_per_kwh: dict[str, float] = Field(description="Effective location-based gCO2e/kWh, by region.")
    intensity_hourly_fraction: dict[str, float] = Field(
        description="Share of the region's facility energy priced with the hourly series (the rest: static figure)."
    )


class Usage(BaseModel):
    gpu_hours: float = Field(description="Allocated GPU time: Σ gpu_seconds / 3600.")
    busy_gpu_hours: float = Field(description="GPU time weighted by NVML utilisation.")
    gpu_energy_kwh: float = Field(description="GPU board energy: Σ energy_j / 3.6e6.")
    overhead_energy_kwh: float = Field(description="Configured per-node overhead, shared by GPU count.")
    energy_kwh: float = Field(description="gpu_energy_kwh + overhead_energy_kwh.")
    facility_energy_kwh: float = Field(description="energy_kwh × PUE of the datacenter at that hour.")
    cost_usd: float = Field(description="Σ gpu_hours × usd_per_gpu_hour(model, hour), or TCO.")
    co2e_kg: float = Field(description="Σ_hours facility_energy_kwh × grid intensity / 1000 (location-based).")
    market_co2e_kg: float | None = Field(description="Σ facility_energy_kwh × contractual factor / 1000; null if none.")
    embodied_co2e_kg: float = Field(description="Σ gpu_hours × embodied_kg_per_gpu_hour(model).")
    embodied_gpu_co2e_kg: float | None = Field(
        default=None, description="The GPUs' own part of embodied_co2e_kg; null where no source states the split.")
    embodied_server_co2e_kg: float | None = Field(
        default=None, description="The servers' part (their share per GPU); null where no source states the split.")


class Progress(BaseModel):
    steps_done: float | None
    total_steps: float | None
    reported_at: datetime | None


class Budget(BaseModel):
    budget_usd: float | None = Field(description="From GPULEDGER_BUDGET_USD or PUT /v1/budget/{job_id} (which wins).")
    budget_co2e_kg: float | None = Field(description="From GPULEDGER_BUDGET_CO2E_KG or the budget API.")
    spend_usd_per_hour: float | None = Field(description="Average spend rate so far.")
    co2e_kg_per_hour: float | None = Field(description="Average CO2e rate so far.")
    forecast_method: str = Field(description="steps, declared_end, ended or observed_rate.")
    forecast_end_at: datetime | None = Field(description="Forecast end of the job; null when open.")
    forecast_cost_usd: float | None = Field(description="Forecast cost at completion.")
    forecast_co2e_kg: float | None = Field(description="Forecast location-based CO2e at completion.")
    over_budget: bool = Field(description="Spend so far exceeds a budget.")
    forecast_over_budget: bool = Field(description="The forecast at completion exceeds a budget.")
    budget_exhausted_at: datetime | None = Field(description="When the USD budget runs out at the observed rate.")
    progress: Progress | None


class UsagePart(Usage):
    datacenter: str
    gpu_model: str


class SchedulerInfo(BaseModel):
    """What the scheduler said about the job (Slurm prolog/epilog); it wins over what agents inferred."""

    name: str = Field(description="The scheduler, e.g. slurm.")
    partition: str | None
    qos: str | None
    array_job_id: str | None
    array_task_id: str | None
    het_job_id: str | None
    het_job_offset: str | None
    node_list: str | None = Field(description="The job's nodes as the scheduler writes them.")
    alloc_gpus: int | None = Field(description="GPUs allocated, all nodes together.")
    state: str | None = Field(description="The scheduler's final state: COMPLETED, FAILED, CANCELLED, TIMEOUT, ...")
    exit_code: str | None
    started_at: datetime | None
    ended_at: datetime | None = Field(description="The scheduler's end time; the job's ended_at when set.")


class JobSummary(Usage):
    job_id: str = Field(description="Cluster-scoped id: <cluster>/<job id>.")
    cluster: str = Field(description="The cluster label the agents report (`--cluster`).")
    name: str | None = Field(description="Job name, from the job's environment (Slurm, or GPULEDGER_JOB_NAME).")
    user: str | None = Field(description="Job owner, from the job's environment.")
    account: str | None = Field(description="Account charged; scoped reader tokens see only theirs.")
    namespace: str | None = Field(default=None, description="Kubernetes: the job's namespace; null elsewhere.")
    pods: list[str] = Field(default_factory=list, description="Kubernetes: every pod the job has run in.")
    state: str = Field(description="running, or ended: at the scheduler's end (Slurm epilog), else after the configured silence.")
    started_at: datetime = Field(description="First data seen (UTC).")
    last_seen_at: datetime = Field(description="Last data seen (UTC).")
    ended_at: datetime | None = Field(description="When the job was marked ended (UTC); null while running.")
    nodes: int = Field(description="Distinct nodes the job has run on.")
    gpus: int = Field(description="Distinct GPUs the job has run on.")
    energy_measured_fraction: float | None = Field(
        description="Share of the GPU energy from NVML's energy counter; the rest is declared or estimated."
    )
    energy_declared_fraction: float | None = Field(
        default=None, description="Share of the GPU energy declared with imported usage (`gpuledger import`).")
    energy_tdp_estimated_fraction: float | None = Field(
        default=None, description="Share of the GPU energy estimated from GPU-hours × TDP (imported usage without energy).")
    release: str | None = Field(default=None, description="Release label grouping jobs into a model card.")
    source: str = Field(default="agent", description="agent (measured) or declared (imported usage).")
    budget: Budget
    network_congestion: str | None = Field(
        default=None, description="The network report's verdict: none, moderate, heavy or unknown; null without NIC data."
    )
    scheduler: SchedulerInfo | None = Field(default=None, description="The scheduler's metadata; null if none reported the job.")


class NetworkNode(BaseModel):
    node: str
    ports: int
    seconds: float = Field(description="Seconds of this node's traffic counted for the job.")
    mean_tx_gbps: float | None
    mean_rx_gbps: float | None
    peak_tx_gbps: float = Field(description="Highest node throughput between two samples, all ports.")
    peak_rx_gbps: float
    peak_link_utilization_pct: float | None = Field(description="Busiest port's peak, % of its link rate.")


class NetworkReport(BaseModel):
    tx_bytes: float | None
    rx_bytes: float | None
    tx_packets: float | None
    rx_packets: float | None
    cnp_sent: float | None = Field(description="Congestion notifications sent for ECN-marked packets received.")
    cnp_handled: float | None = Field(description="Congestion notifications that throttled this job's senders.")
    ecn_marked_packets: float | None
    retransmits: float | None = Field(description="RoCE retransmissions (roce_adp_retrans).")
    out_of_sequence: float | None
    timeouts: float | None = Field(description="Local ACK timeouts.")
    node_seconds: float
    apportioned_fraction: float | None = Field(
        description="Share of the bytes split from a node shared with other jobs, by GPU share."
    )
    peak_link_utilization_pct: float | None
    cnp_handled_per_s: float | None = Field(description="Per node-second.")
    cnp_sent_per_s: float | None
    retransmits_per_gb: float | None = Field(description="Per GB sent.")
    link_down_port_seconds: float
    unknown_seconds: float = Field(
        default=0.0,
        description="Node-seconds in which a port's byte or packet counter could not be read (a saturated 32-bit "
        "InfiniBand counter); the byte and packet totals are then null, not a lower bound.",
    )
    congestion: str = Field(description="none, moderate, heavy or unknown (thresholds in api/accounting/README.md).")
    congestion_reason: str
    per_node: list[NetworkNode]


class JobReport(JobSummary):
    as_of: datetime = Field(description="When the report was computed; data lags by at most two push intervals.")
    rates: Rates = Field(description="Every rate applied, so the arithmetic can be checked; a rate that changed "
                                     "over the job's hours is given as its effective value.")
    rate_sources: dict[str, dict[str, str]] = Field(
        default_factory=dict, description="Where each rate came from: config, hourly series, static country figure "
        "or built-in default (same keys as rates).")
    defaults_used: list[str] = Field(default_factory=list, description="Rates priced with a built-in default.")
    breakdown: list[UsagePart] = Field(description="The totals per (datacenter, GPU model).")
    network: NetworkReport | None = Field(description="RoCE traffic and congestion; null without NIC data.")


class JobPage(BaseModel):
    items: list[JobSummary]
    total: int
    limit: int
    offset: int
    as_of: datetime


class IngestAck(BaseModel):
    applied: bool = Field(description="False when this (node, boot_id, seq) was applied before.")
    intervals: int


MAX_STEPS = 1e15
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


class ProgressIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    steps_done: float | None = Field(default=None, ge=0, le=MAX_STEPS)
    total_steps: float | None = Field(default=None, gt=0, le=MAX_STEPS)
    expected_end_at: AwareDatetime | None = Field(default=None, description="From 1970 on (a date before is refused).")

    @field_validator("expected_end_at")
    @classmethod
    def _after_epoch(cls, value: datetime | None) -> datetime | None:
        if value is not None and value < EPOCH:
            raise ValueError(f"expected_end_at = {value.isoformat()}: expected 1970-01-01T00:00:00Z or later")
        return value


class BudgetIn(BaseModel):
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False)
    usd: float | None = Field(default=None, ge=0, le=MAX_BUDGET)
    co2e_kg: float | None = Field(default=None, ge=0, le=MAX_BUDGET)


class JobMetadataIn(BaseModel):
    """Fields to set (null clears one); a field left out is kept. Agents cannot change them afterwards."""

    model_config = ConfigDict(extra="forbid")
    name: str | None = Field(default=None, max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")
    user: str | None = Field(default=None, max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")
    account: str | None = Field(default=None, max_length=256, pattern=r"^[^\x00-\x1f\x7f]*$")


class ReleaseIn(BaseModel):
    model_config = ConfigDict(extra="forbid")
    release: Annotated[str, StringConstraints(min_length=1, max_length=256)] | None = Field(
        description="Release label, e.g. llama-2; null clears it.")


class GpuSeries(BaseModel):
    """One value per bucket, oldest first: hours from the rollups, then the last hours in finer buckets."""

    start_s: list[float] = Field(description="Bucket start (Unix seconds), clipped to the job's first sample.")
    end_s: list[float] = Field(description="Bucket end (Unix seconds), clipped to the job's last sample.")
    resolution_s: list[int] = Field(description="Bucket width: 3600 for hourly rollups, step_s for the last hours.")
    gpus: list[float | None] = Field(description="Mean GPUs allocated: gpu_seconds / (end_s - start_s); "
                                                 "null in the newest buckets, until every node of the job has reported them.")
    power_w: list[float | None] = Field(description="Mean GPU board power of the job: energy_j / (end_s - start_s); null as gpus.")
    utilization_pct: list[float | None] = Field(description="busy_gpu_seconds / gpu_seconds × 100.")
    gpu_energy_kwh: list[float]
    cost_usd: list[float]
    co2e_kg: list[float] = Field(description="Location-based.")
    cumulative_cost_usd: list[float] = Field(description="Cost up to end_s; the last one is the report's cost_usd.")
    cumulative_co2e_kg: list[float] = Field(description="CO2e up to end_s; the last one is the report's co2e_kg.")


class NetworkSeries(BaseModel):
    """One value per hour with RoCE data (the network rollups are hourly), oldest first."""

    start_s: list[float]
    end_s: list[float]
    job_tx_gbps: list[float | None] = Field(description="Whole job: its nodes together, mean over the hour.")
    job_rx_gbps: list[float | None] = Field(description="Whole job: its nodes together, mean over the hour.")
    node_peak_tx_gbps: list[float] = Field(description="One node: the busiest node's highest throughput between two samples.")
    node_peak_rx_gbps: list[float] = Field(description="One node: the busiest node's highest throughput between two samples.")
    cnp_handled_per_s: list[float | None] = Field(description="Per node-second.")
    retransmits_per_gb: list[float | None] = Field(description="Per GB sent.")
    congestion: list[str] = Field(description="none, moderate, heavy or unknown, as in the job's network report.")


class SeriesForecast(BaseModel):
    method: str = Field(description="steps, declared_end or ended (see the report's budget).")
    end_s: float = Field(description="Forecast end of the job (Unix seconds).")
    cost_usd: float
    co2e_kg: float | None


class JobSeries(BaseModel):
    job_id: str
    as_of: datetime
    step_s: int = Field(description="Width of the fine buckets (seconds).")
    fine_from_s: int | None = Field(description="Where the fine buckets start (Unix seconds); null: hourly only.")
    fine_tier: Literal["raw", "minute"] = Field(
        default="raw", description="Where the fine buckets come from: raw intervals (recent) or per-minute rollups.")
    budget_usd: float | None
    budget_co2e_kg: float | None
    forecast: SeriesForecast | None = Field(description="The report's forecast at completion; null without one.")
    gpu: GpuSeries
    network: NetworkSeries
