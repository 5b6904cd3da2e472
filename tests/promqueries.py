"""Every PromQL query gpuledger ships, ready to run against a real Prometheus.

The metric names of the exporters' contract are listed once, in ``METRICS``; the tests check
that dashboards and rules use no other name.

``queries(job_id)`` returns one ``Query`` per dashboard target (deploy/grafana/dashboards/*.json)
and one per recording rule (deploy/prometheus/rules/gpuledger-recording.yml). Dashboard
expressions have Grafana's variables replaced: ``$job_id`` / ``${job_id}`` by the job id given,
``$__rate_interval`` by ``1m``, ``$__interval`` by ``15s``; ``${datasource}`` names only the
data source and never appears in an expression. ``labels`` holds the label names each result
series should carry: the ``{{label}}`` placeholders of a panel's legend, or the aggregation
level of a recording rule (``job_id_node_gpu:…`` carries job_id, node and gpu).

Against a Prometheus that scrapes the demo (agents and server) and loads the rule files::

    from tests.promqueries import queries

    for query in queries(job_id="demo/1001"):
        for expr in (query.expr, query.record):  # record: the rule's output, None for panels
            if expr is None:
                continue
            series = prometheus_instant_query(expr)  # GET /api/v1/query?query=…
            assert series, f"{query.source}: {expr} returned nothing"
            for item in series:
                missing = query.labels - item["metric"].keys()
                assert not missing, f"{query.source}: {expr} lacks {missing}"

Some queries are empty by design on a healthy cluster or a small demo (``RDMA ports down``
without ports, ``Budget`` for a job without one, a recording rule's name before the first
rule evaluation, and any rate before two scrapes): ``Query.source`` says which is which.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parent.parent
DASHBOARDS = sorted((ROOT / "deploy" / "grafana" / "dashboards").glob("*.json"))
RECORDING_RULES = ROOT / "deploy" / "prometheus" / "rules" / "gpuledger-recording.yml"
ALERT_RULES = ROOT / "deploy" / "prometheus" / "rules" / "gpuledger-alerts.yml"

_HISTOGRAMS = ("gpuledger_agent_cycle_seconds", "gpuledger_collector_ingest_seconds")
# The contract between the exporters (agent/exporter.py, api/reports/budgets.py, api/reports/jobmetrics.py,
# the collector's ingest stats) and the rules and dashboards. ``up`` is Prometheus's own.
METRICS = frozenset({
    "up",
    # agent: GPUs (labels node, gpu, uuid, model)
    "gpuledger_gpu_power_watts", "gpuledger_gpu_energy_joules_total", "gpuledger_gpu_utilization_ratio",
    "gpuledger_gpu_memory_used_bytes", "gpuledger_gpu_memory_total_bytes", "gpuledger_gpu_temperature_celsius",
    "gpuledger_gpu_power_limit_watts", "gpuledger_gpu_throttle_reason", "gpuledger_gpu_job_info",
    # agent: RDMA ports (labels node, device, port)
    "gpuledger_infiniband_port_data_transmitted_bytes_total", "gpuledger_infiniband_port_data_received_bytes_total",
    "gpuledger_infiniband_port_packets_transmitted_total", "gpuledger_infiniband_port_packets_received_total",
    "gpuledger_infiniband_port_transmit_wait_total", "gpuledger_infiniband_link_downed_total",
    "gpuledger_infiniband_np_cnp_sent_total", "gpuledger_infiniband_rp_cnp_handled_total",
    "gpuledger_infiniband_np_ecn_marked_roce_packets_total", "gpuledger_infiniband_roce_adp_retrans_total",
    "gpuledger_infiniband_local_ack_timeout_err_total", "gpuledger_infiniband_out_of_sequence_total",
    "gpuledger_infiniband_port_up", "gpuledger_infiniband_rate_bytes_per_second",
    "gpuledger_infiniband_counter_saturated",  # and label counter
    # agent: health (label node)
    "gpuledger_agent_info", "gpuledger_agent_nvml_errors_total", "gpuledger_agent_energy_counter_resets_total",
    "gpuledger_agent_gpus_lost", "gpuledger_agent_spool_batches", "gpuledger_agent_spool_bytes",
    "gpuledger_agent_push_failures_total", "gpuledger_agent_batches_rejected_total",
    "gpuledger_agent_batches_conflict_total", "gpuledger_agent_spool_set_aside_batches",
    "gpuledger_agent_last_push_success_timestamp_seconds",
    # server: jobs (labels job_id, account, cluster)
    "gpuledger_job_gpu_seconds_total", "gpuledger_job_busy_gpu_seconds_total", "gpuledger_job_energy_joules_total",
    "gpuledger_job_cost_dollars_total", "gpuledger_job_co2e_grams_total",
    "gpuledger_job_network_transmitted_bytes_total", "gpuledger_job_network_received_bytes_total",
    "gpuledger_job_info", "gpuledger_job_over_budget", "gpuledger_job_forecast_over_budget",
    "gpuledger_job_budget_dollars", "gpuledger_cluster_jobs",
    # server: collector health
    "gpuledger_collector_batches_total", "gpuledger_collector_intervals_total", "gpuledger_collector_scrape_seconds",
    "gpuledger_collector_job_metadata_conflicts_total",
    *(f"{name}{suffix}" for name in _HISTOGRAMS for suffix in ("_bucket", "_sum", "_count")),
})

# Recording rule level (before the first colon) -> the labels its series carry.
LEVEL_LABELS = {
    "cluster": frozenset({"cluster"}),
    "node": frozenset({"node"}),
    "job_id": frozenset({"job_id"}),
    "job_id_node_gpu": frozenset({"job_id", "node", "gpu"}),
}
RATE_INTERVAL, INTERVAL = "1m", "15s"

_STRINGS = re.compile(r'"(?:\\.|[^"\\])*"|\'(?:\\.|[^\'\\])*\'|`[^`]*`')
_SKIPPED = re.compile(r"\{[^}]*\}|\[[^\]]*\]|\$\w+")  # label matchers, ranges, Grafana variables
_LABEL_LISTS = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAMES = re.compile(r"(?<![\w:.])([a-zA-Z_:][\w:]*)(\s*\()?")
_KEYWORDS = frozenset({"by", "without", "on", "ignoring", "group_left", "group_right", "bool",
                       "and", "or", "unless", "offset", "inf", "nan"})
_LEGEND_LABELS = re.compile(r"\{\{\s*([a-zA-Z_]\w*)\s*\}\}")
_VARIABLES = re.compile(r"\$\{(\w+)(?::\w+)?\}|\$(\w+)|\[\[(\w+)\]\]")


@dataclass(frozen=True, slots=True)
class Query:
    source: str  # where it comes from: "<dashboard file> #<panel id> <title> [<refId>]" or "rule <name>"
    expr: str  # PromQL, variables substituted
    labels: frozenset[str]  # label names every result series carries
    record: str | None = None  # the recorded series name, for a recording rule


def metric_names(expr: str) -> set[str]:
    """The metric (and recorded series) names an expression selects."""
    text = _LABEL_LISTS.sub(" ", _SKIPPED.sub(" ", _STRINGS.sub('""', expr)))
    return {m.group(1) for m in _NAMES.finditer(text) if not m.group(2) and m.group(1).lower() not in _KEYWORDS}


def substitute(expr: str, job_id: str) -> str:
    """Grafana's variables in ``expr`` replaced; an unknown variable is an error."""
    values = {"job_id": job_id, "__rate_interval": RATE_INTERVAL, "__interval": INTERVAL}

    def value(match: re.Match[str]) -> str:
        name = next(group for group in match.groups() if group)
        if name not in values:
            raise ValueError(f"unknown Grafana variable {match.group(0)!r} in {expr!r}; known: {sorted(values)}")
        return values[name]

    return _VARIABLES.sub(value, expr)


def panels(dashboard: dict) -> Iterator[dict]:
    """Every panel of a dashboard, those inside collapsed rows included; rows themselves excluded."""
    for panel in dashboard.get("panels", []):
        if panel.get("type") == "row":
            yield from panels(panel)
        else:
            yield panel


def dashboard_queries(job_id: str) -> list[Query]:
    found = []
    for path in DASHBOARDS:
        for panel in panels(json.loads(path.read_text(encoding="utf-8"))):
            for target in panel.get("targets", []):
                labels = frozenset(_LEGEND_LABELS.findall(target.get("legendFormat", "")))
                source = f"{path.name} #{panel['id']} {panel['title']} [{target['refId']}]"
                found.append(Query(source, substitute(target["expr"], job_id), labels))
    return found


def rules(path: Path) -> list[dict]:
    return [rule for group in yaml.safe_load(path.read_text(encoding="utf-8"))["groups"] for rule in group["rules"]]


def recording_queries() -> list[Query]:
    found = []
    for rule in rules(RECORDING_RULES):
        level = rule["record"].split(":")[0]
        if level not in LEVEL_LABELS:
            raise ValueError(f"recording rule {rule['record']!r}: level {level!r} not in LEVEL_LABELS {sorted(LEVEL_LABELS)}")
        found.append(Query(f"rule {rule['record']}", rule["expr"].strip(), LEVEL_LABELS[level], rule["record"]))
    return found


def queries(job_id: str) -> list[Query]:
    """Every dashboard target (for the job ``job_id``) and every recording rule."""
    return dashboard_queries(job_id) + recording_queries()
