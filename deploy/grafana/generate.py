"""Generate gpuledger's Grafana dashboards: ``python deploy/grafana/generate.py``.

Rewrites ``deploy/grafana/dashboards/gpuledger-cluster.json`` (cluster overview) and
``gpuledger-job.json`` (one job, picked with the ``job_id`` variable) from the code below;
``--check`` only reports whether the files are current. The output is deterministic (fixed
uids and panel ids, sorted keys), so the JSON is checked in and a test compares it with a
fresh generation. Needs grafana-foundation-sdk at the version pinned in pyproject.toml's
``test`` extra (``pip install -e '.[test]'``): a development tool, not a runtime dependency.

Queries use the recording rules of ``deploy/prometheus/rules/gpuledger-recording.yml``
where one exists. The data source is the ``${datasource}`` variable (any Prometheus).
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from grafana_foundation_sdk.builders import common as cb
from grafana_foundation_sdk.builders import stat, timeseries
from grafana_foundation_sdk.builders.dashboard import (
    Dashboard,
    DashboardLink,
    DatasourceVariable,
    QueryVariable,
    Row,
    ThresholdsConfig,
)
from grafana_foundation_sdk.builders.prometheus import Dataquery
from grafana_foundation_sdk.cog.encoder import JSONEncoder
from grafana_foundation_sdk.models import common
from grafana_foundation_sdk.models import dashboard as model

DASHBOARDS_DIR = Path(__file__).resolve().parent / "dashboards"
DATASOURCE = model.DataSourceRef(type_val="prometheus", uid="${datasource}")
JOB = 'job_id="$job_id"'
ON_JOB_NODES = f"and on (node) gpuledger_gpu_job_info{{{JOB}}}"
PER_GPU = "{{node}} GPU {{gpu}}"
CNP_STEPS = [(None, "green"), (50, "orange"), (1000, "red")]  # api/accounting/network.py: moderate, heavy
RETRANS_STEPS = [(None, "green"), (1, "orange"), (10, "red")]
ZERO_ONE = model.ValueMap(options={
    "0": model.ValueMappingResult(text="no", color="green"),
    "1": model.ValueMappingResult(text="yes", color="red"),
})
Query = tuple[str, str]  # (expr, legend format)


def _targets(panel: stat.Panel | timeseries.Panel, queries: list[Query]) -> None:
    for n, (expr, legend) in enumerate(queries):
        target = Dataquery().expr(expr).ref_id(chr(ord("A") + n)).datasource(DATASOURCE)
        panel.with_target(target.legend_format(legend or "__auto"))


def _thresholds(steps: list[tuple[float | None, str]]) -> ThresholdsConfig:
    return ThresholdsConfig().mode(model.ThresholdsMode.ABSOLUTE).steps(
        [model.Threshold(value=value, color=color) for value, color in steps])


def ts(pid: int, title: str, unit: str, queries: list[Query], description: str = "",
       steps: list[tuple[float | None, str]] | None = None, width: int = 12) -> timeseries.Panel:
    """A time series panel, its legend a table with mean, max and last."""
    panel = (timeseries.Panel().id(pid).title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(8).fill_opacity(10).min(0)
             .legend(cb.VizLegendOptions().display_mode(common.LegendDisplayMode.TABLE)
                     .placement(common.LegendPlacement.BOTTOM).show_legend(True)
                     .calcs(["mean", "max", "lastNotNull"]))
             .tooltip(cb.VizTooltipOptions().mode(common.TooltipDisplayMode.MULTI)
                      .sort(common.SortOrder.DESCENDING)))
    if steps:
        panel.thresholds(_thresholds(steps)).thresholds_style(
            cb.GraphThresholdsStyleConfig().mode(common.GraphTresholdsStyleMode.LINE))
    _targets(panel, queries)
    return panel


def single(pid: int, title: str, unit: str, queries: list[Query], description: str = "",
           width: int = 4) -> stat.Panel:
    """A stat panel showing the last value of each series."""
    panel = (stat.Panel().id(pid).title(title).description(description).unit(unit)
             .datasource(DATASOURCE).span(width).height(4).no_value("-")
             .graph_mode(common.BigValueGraphMode.AREA)
             .reduce_options(cb.ReduceDataOptions().calcs(["lastNotNull"]))
             .thresholds(_thresholds([(None, "blue")])))
    _targets(panel, queries)
    return panel


def _base(uid: str, title: str, description: str) -> Dashboard:
    return (Dashboard(title).uid(uid).description(description).tags(["gpuledger"])
            .refresh("1m").time("now-6h", "now").timezone("browser").editable()
            .link(DashboardLink("gpuledger").type(model.DashboardLinkType.DASHBOARDS)
                  .tags(["gpuledger"]).as_dropdown(True).include_vars(False).keep_time(True))
            .with_variable(DatasourceVariable("datasource").label("Data source").type("prometheus")))


def cluster_dashboard() -> Dashboard:
    dash = _base("gpuledger-cluster", "gpuledger / Cluster",
                 "Power, GPU-hours, spend, CO2e, idle GPUs and RDMA fabric health of every cluster.")
    dash.with_row(Row("Now").id(100))
    for panel in (
        single(1, "GPU power", "watt", [("cluster:gpuledger_gpu_power_watts:sum", "{{cluster}}")],
               "Board power of every GPU, idle ones included (agents)."),
        single(2, "GPUs in jobs (GPU-hours/h)", "short",
               [("cluster:gpuledger_job_gpu_seconds_allocated:rate5m", "{{cluster}}")]),
        single(3, "Spend ($/h)", "currencyUSD",
               [("cluster:gpuledger_job_cost_dollars_per_hour:rate5m", "{{cluster}}")],
               "Dollars per hour at the configured rates, idle GPUs included."),
        single(4, "CO2e (kg/h)", "masskg",
               [("cluster:gpuledger_job_co2e_grams_per_hour:rate5m / 1000", "{{cluster}}")]),
        single(5, "Idle share", "percentunit",
               [("cluster:gpuledger_job_gpu_seconds_unallocated:ratio_rate5m", "{{cluster}}")],
               "Share of GPU-seconds no job held (the unallocated account)."),
        single(6, "Running jobs", "short",
               [('max by (cluster) (gpuledger_cluster_jobs{state="running"})', "{{cluster}}")]),
    ):
        dash.with_panel(panel)
    _cluster_usage(dash)
    _cluster_fabric(dash)
    _cluster_health(dash)
    return dash


def _cluster_usage(dash: Dashboard) -> None:
    dash.with_row(Row("Power, GPU-hours, spend").id(101))
    top_jobs = ts(12, "Top 10 jobs by spend ($/h)", "currencyUSD",
                  [("topk(10, 3600 * job_id:gpuledger_job_cost_dollars:rate5m)", "{{job_id}}")],
                  "Click a series for the job's dashboard.")
    top_jobs.data_links([DashboardLink("Job ${__field.labels.job_id}").url(
        "/d/gpuledger-job/gpuledger-job?var-job_id=${__field.labels.job_id}&${__url_time_range}")])
    for panel in (
        ts(7, "GPU power per node", "watt", [("sum by (node) (gpuledger_gpu_power_watts)", "{{node}}")]),
        ts(8, "GPU-hours per hour", "short", [
            ("cluster:gpuledger_job_gpu_seconds_allocated:rate5m", "{{cluster}} in jobs"),
            ("cluster:gpuledger_job_gpu_seconds_unallocated:rate5m", "{{cluster}} idle"),
        ], "GPU-seconds per second: the number of GPUs jobs hold, and of idle ones."),
        ts(9, "Spend by account ($/h)", "currencyUSD", [
            ("3600 * sum by (cluster, account) (job_id:gpuledger_job_cost_dollars:rate5m)",
             "{{cluster}} {{account}}"),
        ]),
        ts(10, "CO2e (kg/h)", "masskg",
           [("cluster:gpuledger_job_co2e_grams_per_hour:rate5m / 1000", "{{cluster}}")],
           "Location-based operational emissions per hour."),
        ts(11, "Idle share and GPU utilisation", "percentunit", [
            ("cluster:gpuledger_job_gpu_seconds_unallocated:ratio_rate5m", "{{cluster}} idle share"),
            ("cluster:gpuledger_gpu_utilization_ratio:avg", "{{cluster}} mean utilisation"),
        ]),
        top_jobs,
    ):
        dash.with_panel(panel)


def _cluster_fabric(dash: Dashboard) -> None:
    dash.with_row(Row("RDMA fabric").id(102))
    for panel in (
        ts(13, "RDMA throughput per node", "Bps", [
            ("node:gpuledger_infiniband_port_data_transmitted_bytes:rate5m", "{{node}} sent"),
            ("node:gpuledger_infiniband_port_data_received_bytes:rate5m", "{{node}} received"),
        ]),
        ts(14, "CNPs handled per node", "cps",
           [("node:gpuledger_infiniband_rp_cnp_handled:rate5m", "{{node}}")],
           "Congestion notifications that slowed the node's senders: moderate from 50/s, heavy from 1000/s.",
           CNP_STEPS),
        ts(15, "RoCE retransmissions per GB sent", "short",
           [("node:gpuledger_infiniband_roce_adp_retrans_per_gb:ratio_rate5m", "{{node}}")],
           "Lost packets: moderate from 1 per GB, heavy from 10 per GB.", RETRANS_STEPS),
        ts(16, "RDMA ports down", "short",
           [("sum by (node) (1 - gpuledger_infiniband_port_up)", "{{node}}")],
           "Ports of each node that are not ACTIVE and LinkUp."),
    ):
        dash.with_panel(panel)


def _cluster_health(dash: Dashboard) -> None:
    dash.with_row(Row("gpuledger").id(103))
    for panel in (
        ts(17, "Agents", "short", [
            ('sum(up{job="gpuledger-agent"})', "up"),
            ('count(up{job="gpuledger-agent"})', "scraped"),
        ], width=6),
        ts(18, "Batches per second", "ops", [
            ("sum by (outcome) (rate(gpuledger_collector_batches_total[$__rate_interval]))", "{{outcome}}"),
        ], "Agents' batches at the collectors: applied, duplicate (a replay, harmless) or rejected (lost).",
           width=6),
        ts(19, "Agent spools (top 10)", "short",
           [("topk(10, max by (node) (gpuledger_agent_spool_batches))", "{{node}}")],
           "Batches waiting on each node for the collector.", width=6),
        ts(20, "Since the last push (top 10)", "s", [
            ("topk(10, time() - max by (node) (gpuledger_agent_last_push_success_timestamp_seconds))",
             "{{node}}"),
        ], width=6),
    ):
        dash.with_panel(panel)


def job_dashboard() -> Dashboard:
    dash = _base("gpuledger-job", "gpuledger / Job",
                 "One job: power, utilisation, energy, cumulative cost and CO2e, network.")
    dash.with_variable(
        QueryVariable("job_id").label("Job").datasource(DATASOURCE)
        .query("label_values(gpuledger_job_info, job_id)")
        .refresh(model.VariableRefresh.ON_TIME_RANGE_CHANGED).sort(model.VariableSort.ALPHABETICAL_ASC))
    dash.with_row(Row("Totals").id(100))
    status = single(8, "Over budget", "none", [
        (f"max by (job_id) (gpuledger_job_over_budget{{{JOB}}})", "now"),
        (f"max by (job_id) (gpuledger_job_forecast_over_budget{{{JOB}}})", "forecast"),
    ], "Cost or CO2e over the job's budget, now and at the forecast end.", width=3)
    status.mappings([ZERO_ONE]).graph_mode(common.BigValueGraphMode.NONE)
    for panel in (
        single(1, "Cost", "currencyUSD", [(f"max by (job_id) (gpuledger_job_cost_dollars_total{{{JOB}}})", "{{job_id}}")],
               width=3),
        single(2, "CO2e", "masskg",
               [(f"max by (job_id) (gpuledger_job_co2e_grams_total{{{JOB}}}) / 1000", "{{job_id}}")], width=3),
        single(3, "Energy", "kwatth",
               [(f"max by (job_id) (gpuledger_job_energy_joules_total{{{JOB}}}) / 3.6e6", "{{job_id}}")],
               "GPU board energy.", width=3),
        single(4, "GPU-hours", "short",
               [(f"max by (job_id) (gpuledger_job_gpu_seconds_total{{{JOB}}}) / 3600", "{{job_id}}")], width=3),
        single(5, "GPUs", "short", [(f"count by (job_id) (gpuledger_gpu_job_info{{{JOB}}})", "{{job_id}}")],
               "GPUs the job holds now.", width=3),
        single(6, "Spend ($/h)", "currencyUSD",
               [(f"3600 * job_id:gpuledger_job_cost_dollars:rate5m{{{JOB}}}", "{{job_id}}")], width=3),
        single(7, "Budget", "currencyUSD",
               [(f"max by (job_id) (gpuledger_job_budget_dollars{{{JOB}}})", "{{job_id}}")], width=3),
        status,
    ):
        dash.with_panel(panel)
    _job_gpus(dash)
    _job_totals(dash)
    _job_network(dash)
    return dash


def _job_gpus(dash: Dashboard) -> None:
    dash.with_row(Row("GPUs").id(101))
    for panel in (
        ts(9, "Power", "watt", [
            (f"job_id:gpuledger_gpu_power_watts:sum{{{JOB}}}", "GPU boards, live"),
            (f"job_id:gpuledger_job_energy_joules:rate5m{{{JOB}}}", "ledger, energy per second"),
        ], "The agents' power readings (a shared GPU split equally), and the rate of the energy in the ledger."),
        ts(10, "Power per GPU", "watt",
           [(f"job_id_node_gpu:gpuledger_gpu_power_watts:share{{{JOB}}}", PER_GPU)]),
        ts(11, "Utilisation per GPU", "percentunit",
           [(f"job_id_node_gpu:gpuledger_gpu_utilization_ratio:join{{{JOB}}}", PER_GPU)],
           "Under 5 % for 15 minutes raises GpuledgerGpuIdleInJob.", [(None, "red"), (0.05, "green")]).max(1),
        ts(12, "GPU memory used", "bytes", [
            (f"gpuledger_gpu_memory_used_bytes * on (node, gpu) group_left (job_id) gpuledger_gpu_job_info{{{JOB}}}",
             PER_GPU),
        ]),
    ):
        dash.with_panel(panel)


def _job_totals(dash: Dashboard) -> None:
    dash.with_row(Row("Energy, cost, CO2e").id(102))
    for panel in (
        ts(13, "Energy", "kwatth",
           [(f"max by (job_id) (gpuledger_job_energy_joules_total{{{JOB}}}) / 3.6e6", "{{job_id}}")]),
        ts(14, "Cumulative cost", "currencyUSD", [
            (f"max by (job_id) (gpuledger_job_cost_dollars_total{{{JOB}}})", "{{job_id}}"),
            (f"max by (job_id) (gpuledger_job_budget_dollars{{{JOB}}})", "budget"),
        ]),
        ts(15, "Cumulative CO2e", "masskg",
           [(f"max by (job_id) (gpuledger_job_co2e_grams_total{{{JOB}}}) / 1000", "{{job_id}}")]),
        ts(16, "GPUs held and busy", "short", [
            (f"job_id:gpuledger_job_gpu_seconds:rate5m{{{JOB}}}", "held"),
            (f"job_id:gpuledger_job_busy_gpu_seconds:rate5m{{{JOB}}}", "busy (weighted by utilisation)"),
        ]),
    ):
        dash.with_panel(panel)


def _job_network(dash: Dashboard) -> None:
    dash.with_row(Row("Network").id(103))
    nodes = "On the job's nodes; other jobs on the same nodes share these figures."
    for panel in (
        ts(17, "RDMA throughput", "Bps", [
            (f"job_id:gpuledger_job_network_transmitted_bytes:rate5m{{{JOB}}}", "sent"),
            (f"job_id:gpuledger_job_network_received_bytes:rate5m{{{JOB}}}", "received"),
        ], "The job's share of its nodes' RDMA traffic (ledger)."),
        ts(18, "RDMA throughput per node", "Bps", [
            (f"node:gpuledger_infiniband_port_data_transmitted_bytes:rate5m {ON_JOB_NODES}", "{{node}} sent"),
            (f"node:gpuledger_infiniband_port_data_received_bytes:rate5m {ON_JOB_NODES}", "{{node}} received"),
        ], nodes),
        ts(19, "CNPs handled per node", "cps",
           [(f"node:gpuledger_infiniband_rp_cnp_handled:rate5m {ON_JOB_NODES}", "{{node}}")],
           nodes + " Moderate congestion from 50/s, heavy from 1000/s.", CNP_STEPS),
        ts(20, "RoCE retransmissions per GB sent", "short",
           [(f"node:gpuledger_infiniband_roce_adp_retrans_per_gb:ratio_rate5m {ON_JOB_NODES}", "{{node}}")],
           nodes + " Moderate from 1 per GB, heavy from 10 per GB.", RETRANS_STEPS),
    ):
        dash.with_panel(panel)


def render() -> dict[str, str]:
    """File name -> JSON text of every dashboard."""
    encoder = JSONEncoder(sort_keys=True, indent=2, ensure_ascii=False)
    built = [dash.build() for dash in (cluster_dashboard(), job_dashboard())]
    return {f"{board.uid}.json": encoder.encode(board) + "\n" for board in built}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if a checked-in dashboard is stale")
    args = parser.parse_args(argv)
    stale = []
    for name, text in render().items():
        path = DASHBOARDS_DIR / name
        if path.exists() and path.read_text(encoding="utf-8") == text:
            continue
        stale.append(name)
        if not args.check:
            path.write_text(text, encoding="utf-8")
    verb = "stale" if args.check else "written"
    print(f"{verb}: {', '.join(stale)}" if stale else "dashboards are current")
    return 1 if args.check and stale else 0


if __name__ == "__main__":
    sys.exit(main())
