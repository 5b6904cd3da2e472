// One job's page: totals, budget and forecast, charts over time, network, model card, rates,
// downloads. Polls the API and updates in place.
import {
  ApiError, REFRESH_MS, apiFetch, apiJson, badge, budgetBadge, clearMessage, el, fmtAgo, fmtInt, fmtNumber, fmtPct,
  fmtTime, fmtUsd, initTokenState, networkBadge, reportError, showMessage, stateBadge,
} from "./common.js";
import { COLORS, Chart, axis, line, steps } from "./charts.js";

const jobId = decodeURIComponent(location.pathname.replace(/^\/jobs\//, ""));
// The id percent-encoded whole ("/" too): no id can then look like another path ("../x") or
// like a sub-resource; each sub-resource has its own prefix that no job id can take.
const encodedId = encodeURIComponent(jobId);
const base = `/v1/jobs/${encodedId}`;
const api = (what) => `/v1/${what}/${encodedId}`;
const fileStem = jobId.replace(/[^A-Za-z0-9._-]+/g, "_");
let timer = null;
let latest = 0; // the newest poll: an older one's answer, arriving late, is dropped

const charts = {
  power: new Chart(document.getElementById("chart-power"), {
    series: [
      line({ label: "GPU power (kW)", unit: "kW", color: COLORS.blue, scale: "kw" }),
      line({ label: "Utilisation (%)", unit: "%", color: COLORS.orange, scale: "pct", width: 1.5 }),
    ],
    axes: [axis("kw", "kW"), axis("pct", "%", 1)],
    percent: ["pct"],
  }),
  cost: new Chart(document.getElementById("chart-cost"), {
    series: [
      // Cost and CO2e grow together at steady rates, so their lines may coincide: cost is drawn wider, below.
      line({ label: "Cost ($)", unit: "$", color: COLORS.green, scale: "usd", width: 4 }),
      line({ label: "CO₂e (kg)", unit: "kg", color: COLORS.purple, scale: "kg", width: 1.5 }),
      line({ label: "Forecast cost ($)", unit: "$", color: COLORS.green, scale: "usd", dash: [8, 6], width: 3 }),
      line({ label: "Forecast CO₂e (kg)", unit: "kg", color: COLORS.purple, scale: "kg", dash: [4, 10], width: 1.5 }),
      line({ label: "Budget ($)", unit: "$", color: COLORS.red, scale: "usd", dash: [2, 4], width: 1.5 }),
    ],
    axes: [axis("usd", "$"), axis("kg", "kg", 1)],
  }),
  network: new Chart(document.getElementById("chart-network"), {
    series: [
      line({ label: "Sent (Gb/s)", unit: "Gb/s", color: COLORS.teal, scale: "gbps", stepped: true }),
      line({ label: "Received (Gb/s)", unit: "Gb/s", color: COLORS.blue, scale: "gbps", stepped: true }),
      line({ label: "Peak sent, one node (Gb/s)", unit: "Gb/s", color: COLORS.teal, scale: "gbps", stepped: true, dash: [4, 4], width: 1 }),
    ],
    axes: [axis("gbps", "Gb/s")],
  }),
  congestion: new Chart(document.getElementById("chart-congestion"), {
    series: [
      line({ label: "CNPs handled (per node-s)", unit: "/s", color: COLORS.orange, scale: "cnp", stepped: true }),
      line({ label: "Retransmissions (per GB)", unit: "/GB", color: COLORS.red, scale: "retrans", stepped: true }),
    ],
    axes: [axis("cnp", "/s"), axis("retrans", "/GB", 1)],
  }),
};

function nonNull(values) {
  return values.filter((v) => v !== null && v !== undefined).length;
}

function drawPower(gpu) {
  const xs = gpu.start_s.map((s, i) => (s + gpu.end_s[i]) / 2);
  charts.power.update([xs, gpu.power_w.map((w) => (w === null ? null : w / 1000)), gpu.utilization_pct]);
}

function drawCost(series, report) {
  const gpu = series.gpu;
  if (!gpu.end_s.length) return charts.cost.empty("No GPU time recorded yet.");
  const xs = [gpu.start_s[0], ...gpu.end_s];
  const cost = [0, ...gpu.cumulative_cost_usd];
  const co2e = [0, ...gpu.cumulative_co2e_kg];
  const nulls = () => xs.map(() => null);
  const [forecastCost, forecastCo2e] = [nulls(), nulls()];
  const f = series.forecast;
  if (f && f.end_s > xs[xs.length - 1]) {
    forecastCost[xs.length - 1] = cost[cost.length - 1];
    forecastCo2e[xs.length - 1] = co2e[co2e.length - 1];
    xs.push(f.end_s);
    for (const column of [cost, co2e]) column.push(null);
    forecastCost.push(f.cost_usd);
    forecastCo2e.push(f.co2e_kg);
  }
  const budget = xs.map(() => series.budget_usd);
  charts.cost.update([xs, cost, co2e, forecastCost, forecastCo2e, budget], {
    "Cost ($)": gpu.cumulative_cost_usd.length, "CO₂e (kg)": gpu.cumulative_co2e_kg.length,
    "Forecast cost ($)": nonNull(forecastCost), "Forecast CO₂e (kg)": nonNull(forecastCo2e),
    "Budget ($)": report.budget.budget_usd === null ? 0 : xs.length,
  });
}

function drawNetwork(net) {
  if (!net.start_s.length) {
    charts.network.empty("No RoCE data for this job.");
    charts.congestion.empty("No RoCE data for this job.");
    return;
  }
  charts.network.update(steps(net.start_s, net.end_s, [net.job_tx_gbps, net.job_rx_gbps, net.node_peak_tx_gbps]), {
    "Sent (Gb/s)": nonNull(net.job_tx_gbps), "Received (Gb/s)": nonNull(net.job_rx_gbps),
    "Peak sent, one node (Gb/s)": nonNull(net.node_peak_tx_gbps),
  });
  charts.congestion.update(steps(net.start_s, net.end_s, [net.cnp_handled_per_s, net.retransmits_per_gb]), {
    "CNPs handled (per node-s)": nonNull(net.cnp_handled_per_s),
    "Retransmissions (per GB)": nonNull(net.retransmits_per_gb),
  });
}

function seriesNote(series) {
  const fine = series.fine_from_s === null ? "Hourly points from the rollups."
    : `From ${fmtTime(new Date(series.fine_from_s * 1000).toISOString())} in ${series.step_s}-second buckets `
      + "from the raw intervals; earlier hours from the hourly rollups.";
  document.getElementById("series-note").textContent = `${fine} Network counters are kept per hour. `
    + "Power is the GPU boards' mean power; the forecast line runs to the forecast end of the job.";
}

const plural = (n, word) => `${n} ${word}${n === 1 ? "" : "s"}`;

// Kubernetes jobs: the namespace, and the pods (the first few; all of them in the title).
function kubernetesMeta(report) {
  if (!report.namespace) return [];
  const pods = report.pods ?? [];
  const shown = pods.slice(0, 4).join(", ") + (pods.length > 4 ? `, … (${pods.length})` : "");
  return [
    el("span", { text: `namespace ${report.namespace}` }),
    ...(pods.length ? [el("span", { text: `${pods.length === 1 ? "pod" : "pods"} ${shown}`, title: pods.join("\n") })] : []),
  ];
}

function renderHead(report) {
  document.title = `gpuledger: ${report.job_id}`;
  document.getElementById("job-id").textContent = report.job_id;
  document.getElementById("job-name").textContent = report.name ?? "";
  const meta = document.getElementById("job-meta");
  const ended = report.ended_at ? `ended ${fmtTime(report.ended_at)}` : `last data ${fmtAgo(report.last_seen_at)}`;
  meta.replaceChildren(
    badge(stateBadge(report.state)),
    el("span", { text: `user ${report.user ?? "–"}` }),
    el("span", { text: `account ${report.account ?? "–"}` }),
    ...kubernetesMeta(report),
    el("span", { text: `${plural(report.nodes, "node")}, ${plural(report.gpus, "GPU")}` }),
    el("span", { text: `started ${fmtTime(report.started_at)}` }),
    el("span", { text: ended }),
  );
}

function stat(label, value, sub, key) {
  return el("div", { class: "stat", "data-stat": key },
    el("div", { class: "stat-label", text: label }),
    el("div", { class: "stat-value", text: value }),
    el("div", { class: "stat-sub", text: sub }));
}

function renderStats(r) {
  const b = r.budget;
  const market = r.market_co2e_kg === null ? "" : `, market-based ${fmtNumber(r.market_co2e_kg)}`;
  document.getElementById("stats").replaceChildren(
    stat("GPU-hours", fmtNumber(r.gpu_hours), `busy ${fmtNumber(r.busy_gpu_hours)} h`, "gpu_hours"),
    stat("Energy (kWh)", fmtNumber(r.energy_kwh), `facility ${fmtNumber(r.facility_energy_kwh)} kWh`, "energy_kwh"),
    stat("Cost", fmtUsd(r.cost_usd), b.spend_usd_per_hour === null ? "" : `${fmtUsd(b.spend_usd_per_hour)} per hour`, "cost_usd"),
    stat("CO₂e (kg)", fmtNumber(r.co2e_kg), `embodied ${fmtNumber(r.embodied_co2e_kg)}${market}`, "co2e_kg"),
    stat("Measured energy", fmtPct(r.energy_measured_fraction), "from the GPUs' energy counters", "measured"),
  );
}

function renderBudget(r) {
  const b = r.budget;
  const parts = [badge(budgetBadge(b))];
  if (b.budget_usd !== null) parts.push(el("span", { text: `budget ${fmtUsd(b.budget_usd)}, spent ${fmtUsd(r.cost_usd)}` }));
  if (b.budget_co2e_kg !== null) parts.push(el("span", { text: `budget ${fmtNumber(b.budget_co2e_kg)} kg CO₂e` }));
  if (b.forecast_cost_usd !== null) {
    parts.push(el("span", { text: `forecast ${fmtUsd(b.forecast_cost_usd)} and ${fmtNumber(b.forecast_co2e_kg)} kg CO₂e `
      + `at ${fmtTime(b.forecast_end_at)} (${b.forecast_method.replace("_", " ")})` }));
  } else {
    parts.push(el("span", { class: "muted", text: "no forecast: the job reports no progress or end time" }));
  }
  if (b.progress) parts.push(el("span", { text: `step ${fmtInt(b.progress.steps_done)} of ${fmtInt(b.progress.total_steps)}` }));
  if (b.budget_exhausted_at && !b.over_budget) parts.push(el("span", { text: `budget runs out ${fmtTime(b.budget_exhausted_at)} at this rate` }));
  document.getElementById("budget").replaceChildren(...parts);
}

function table(headers, rows, numeric = () => true) {
  return el("table", { class: "data" },
    el("thead", {}, el("tr", {}, ...headers.map((h, i) => el("th", { class: i && numeric(i) ? "num" : null, text: h })))),
    el("tbody", {}, ...rows.map((row) => el("tr", {}, ...row.map((v, i) => el("td", { class: i && numeric(i) ? "num" : null, text: v }))))));
}

function renderNetwork(n) {
  const box = document.getElementById("network");
  if (!n) return box.replaceChildren(el("p", { class: "muted", text: "No RoCE data for this job." }));
  const gb = (bytes) => (bytes === null ? "–" : fmtNumber(bytes / 1e9));
  box.replaceChildren(
    el("p", {}, badge(networkBadge(n.congestion, n.congestion_reason)), el("span", { text: ` ${n.congestion_reason}` })),
    table(["", "sent (GB)", "received (GB)", "CNPs handled per node-s", "retransmissions per GB", "peak link use (%)"],
      [["job", gb(n.tx_bytes), gb(n.rx_bytes), fmtNumber(n.cnp_handled_per_s), fmtNumber(n.retransmits_per_gb), fmtNumber(n.peak_link_utilization_pct)]]),
    table(["node", "ports", "mean sent (Gb/s)", "mean received (Gb/s)", "peak sent (Gb/s)", "peak received (Gb/s)", "peak link use (%)"],
      n.per_node.map((p) => [p.node, String(p.ports), fmtNumber(p.mean_tx_gbps), fmtNumber(p.mean_rx_gbps),
        fmtNumber(p.peak_tx_gbps), fmtNumber(p.peak_rx_gbps), fmtNumber(p.peak_link_utilization_pct)])),
  );
}

const small = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3, maximumFractionDigits: 12 });
const precise = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 4, maximumFractionDigits: 12 });

// CO2e in the unit that suits the size: tonnes, or kg when every figure is below a tonne.
function co2(value, unit) {
  if (value === null || value === undefined) return "–";
  const scaled = unit === "kg" ? value * 1000 : value;
  return scaled !== 0 && Math.abs(scaled) < 1 ? small.format(scaled) : fmtNumber(scaled);
}

function renderModelCard(footprints) {
  const units = footprints.map((f) => f.unit ?? "t");
  const unit = units.includes("t") ? "t" : "kg";
  const rows = footprints.flatMap((f) => f.rows.map((r) => [f.convention, r.gpu_model, fmtNumber(r.gpu_hours),
    fmtNumber(r.power_w), fmtNumber(r.energy_kwh), fmtNumber(r.pue), fmtNumber(r.intensity_g_per_kwh),
    co2(r.location_tco2e, unit), co2(r.market_tco2e, unit), co2(r.embodied_tco2e, unit),
    co2(r.embodied_gpu_tco2e, unit), co2(r.embodied_server_tco2e, unit)]));
  const u = `${unit}CO₂e`;
  const headers = ["convention", "GPU type", "GPU-hours", "Power (W)", "Energy (kWh)", "PUE", "Intensity (gCO₂e/kWh)",
    `Location-based (${u})`, `Market-based (${u})`, `Embodied (${u})`, `Embodied GPUs (${u})`, `Embodied servers (${u})`];
  const box = document.getElementById("model-card");
  box.dataset.unit = unit;
  box.replaceChildren(
    rows.length ? table(headers, rows, (i) => i > 1) : el("p", { class: "muted", text: "No GPU time recorded yet." }));
}

// Each rate rounded to its precision: prices to the cent, factors to 4 significant digits.
const RATES = {
  usd_per_gpu_hour: ["Price per GPU-hour", (v) => fmtUsd(v)],
  cost_method: ["Cost method", (v) => v],
  embodied_kg_per_gpu_hour: ["Embodied CO₂e per GPU-hour (kg)", (v) => precise.format(v)],
  pue: ["PUE", (v) => precise.format(v)],
  region: ["Grid region", (v) => v],
  grid_intensity_g_per_kwh: ["Grid intensity (gCO₂e/kWh)", (v) => precise.format(v)],
  intensity_hourly_fraction: ["Energy priced with the hourly intensity series", (v) => fmtPct(v)],
  market_g_per_kwh: ["Contractual factor (gCO₂e/kWh)", (v) => (v === null ? "none" : precise.format(v))],
  node_overhead_w: ["Node overhead (W)", (v) => precise.format(v)],
};

function renderRates(rates, sources = {}, defaults = []) {
  const rows = [];
  for (const [kind, [label, format]] of Object.entries(RATES)) {
    for (const [key, value] of Object.entries(rates[kind] ?? {})) rows.push([label, key, format(value), sources[kind]?.[key] ?? ""]);
  }
  const notes = defaults.map((line) => el("p", { class: "default-used", text: `Built-in default: ${line}` }));
  document.getElementById("rates").replaceChildren(...notes, table(["rate", "for", "value", "source"], rows, (i) => i === 2));
}

// A panel whose data could not be read says so in place; the rest of the page still renders.
function errorText(err) {
  const text = err instanceof ApiError && err.status ? `The server answered ${err.status}: ${err.detail}` : `${err.detail ?? err}`;
  return `Could not load this part: ${text}`;
}

function panelError(id, err) {
  document.getElementById(id).replaceChildren(el("p", { class: "panel-error", role: "alert", text: errorText(err) }));
}

function chartError(chart, err) {
  chart.element.querySelector(".chart-empty")?.remove();
  chart.empty(errorText(err));
  chart.element.querySelector(".chart-empty").classList.add("panel-error");
}

async function download(kind) {
  const [path, name] = {
    "report-json": [base, "report.json"], "report-csv": [api("report.csv"), "report.csv"],
    "series-csv": [api("series.csv"), "series.csv"], "series-json": [api("series"), "series.json"],
  }[kind];
  try {
    const blob = await (await apiFetch(path)).blob();
    const url = URL.createObjectURL(blob);
    const link = el("a", { href: url, download: `${fileStem}-${name}` });
    document.body.append(link);
    link.click();
    link.remove();
    setTimeout(() => URL.revokeObjectURL(url), 10000);
  } catch (err) {
    reportError(err, poll);
  }
}

function renderReport(report) {
  renderHead(report);
  renderStats(report);
  renderBudget(report);
  renderNetwork(report.network);
  renderRates(report.rates, report.rate_sources, report.defaults_used);
}

function renderSeries(series, report) {
  drawPower(series.gpu);
  drawCost(series, report);
  drawNetwork(series.network);
  seriesNote(series);
}

const PANELS = {  // what each part of the page needs, and where its error goes
  report: { ids: ["stats", "budget", "network", "rates"] },
  footprints: { ids: ["model-card"] },
};

async function poll() {
  clearTimeout(timer);
  const mine = ++latest;
  const [report, series, footprints] = await Promise.allSettled([
    apiJson(base), apiJson(api("series")),
    Promise.all([apiJson(`${api("footprint")}?convention=measured`), apiJson(`${api("footprint")}?convention=tdp`)]),
  ]);
  if (mine !== latest) return;
  const failures = [report, series, footprints].filter((r) => r.status === "rejected").map((r) => r.reason);
  const refused = failures.find((e) => e instanceof ApiError && (e.status === 401 || e.status === 403));
  if (refused) {
    if (!reportError(refused, poll)) return; // a token given polls again
  } else if (report.status === "rejected" && report.reason instanceof ApiError && report.reason.status === 404) {
    showMessage(`Job ${jobId} not found (or not visible with this token): ${report.reason.detail}`);
  } else {
    clearMessage();
    const parts = { report, series, footprints };
    for (const [name, result] of Object.entries(parts)) {
      if (result.status === "rejected" && name === "series") {
        for (const chart of Object.values(charts)) chartError(chart, result.reason);
      } else if (result.status === "rejected") {
        for (const id of PANELS[name].ids) panelError(id, result.reason);
        if (!(result.reason instanceof ApiError)) console.warn(result.reason);
      }
    }
    if (report.status === "fulfilled") renderReport(report.value);
    if (series.status === "fulfilled" && report.status === "fulfilled") renderSeries(series.value, report.value);
    if (footprints.status === "fulfilled") renderModelCard(footprints.value);
    const main = document.getElementById("job");
    main.dataset.polls = String(Number(main.dataset.polls) + 1);
  }
  timer = setTimeout(poll, REFRESH_MS);
}

for (const button of document.querySelectorAll("[data-download]")) {
  button.addEventListener("click", () => download(button.dataset.download));
}
initTokenState(poll);
poll();
