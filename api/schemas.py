"""What the API returns."""

from __future__ import annotations

from datetime import datetime

from pydantic import BaseModel, Field


class Rates(BaseModel):
    usd_per_gpu_hour: dict[str, float] = Field(description="Price applied, by GPU model.")
    embodied_kg_per_gpu_hour: dict[str, float] = Field(description="Embodied kgCO2e per GPU-hour, by GPU model.")
    pue: dict[str, float] = Field(description="Power usage effectiveness, by datacenter.")
    region: dict[str, str] = Field(description="Grid region, by datacenter.")
    grid_intensity_g_per_kwh: dict[str, float] = Field(description="Location-based gCO2e per kWh, by region.")


class Usage(BaseModel):
    gpu_hours: float = Field(description="Allocated GPU time: Σ gpu_seconds / 3600.")
    busy_gpu_hours: float = Field(description="GPU time weighted by NVML utilisation.")
    energy_kwh: float = Field(description="GPU board energy: Σ energy_j / 3.6e6.")
    facility_energy_kwh: float = Field(description="energy_kwh × PUE of the datacenter.")
    cost_usd: float = Field(description="Σ gpu_hours × usd_per_gpu_hour(model).")
    co2e_kg: float = Field(description="Σ facility_energy_kwh × grid intensity / 1000 (location-based).")
    embodied_co2e_kg: float = Field(description="Σ gpu_hours × embodied_kg_per_gpu_hour(model).")


class UsagePart(Usage):
    datacenter: str
    gpu_model: str


class JobSummary(Usage):
    job_id: str = Field(description="Cluster-scoped id: <cluster>/<job id>.")
    cluster: str
    name: str | None
    user: str | None
    account: str | None
    state: str = Field(description="running, or ended after the configured silence.")
    started_at: datetime
    last_seen_at: datetime
    ended_at: datetime | None
    nodes: int
    gpus: int
    energy_measured_fraction: float | None = Field(
        description="Share of energy_kwh from NVML's energy counter; the rest is estimated from power."
    )


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
    congestion: str = Field(description="none, moderate, heavy or unknown (thresholds in the README).")
    congestion_reason: str
    per_node: list[NetworkNode]


class JobReport(JobSummary):
    as_of: datetime
    rates: Rates
    breakdown: list[UsagePart]
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
