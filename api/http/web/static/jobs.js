// The jobs page: running jobs first, sortable columns, filters by state, user and account
// (sent to the API, so a token scoped to one account is refused another), updated in place.
import {
  REFRESH_MS, apiJson, badge, budgetBadge, clearMessage, el, fmtAgo, fmtNumber, fmtTime, fmtUsd,
  initTokenState, networkBadge, reportError, setBadge, stateBadge,
} from "./common.js";

const RUNNING_LIMIT = 500;
const ENDED_LIMIT = 100;
const NETWORK_RANK = { heavy: 4, moderate: 3, unknown: 2, none: 1 };

const COLUMNS = [
  { key: "job_id", label: "Job" },
  { key: "user", label: "User" },
  { key: "account", label: "Account" },
  { key: "state", label: "State", badge: (j) => stateBadge(j.state) },
  { key: "gpus", label: "GPUs", num: true, text: (j) => String(j.gpus) },
  { key: "started_at", label: "Started", text: (j) => fmtTime(j.started_at), title: (j) => fmtAgo(j.started_at) },
  { key: "gpu_hours", label: "GPU-hours (h)", num: true },
  { key: "energy_kwh", label: "Energy (kWh)", num: true },
  { key: "cost_usd", label: "Cost ($)", num: true, text: (j) => fmtUsd(j.cost_usd) },
  { key: "co2e_kg", label: "CO₂e (kg)", num: true },
  { key: "network_congestion", label: "Network", badge: (j) => networkBadge(j.network_congestion),
    rank: (j) => NETWORK_RANK[j.network_congestion] ?? 0 },
  { key: "budget", label: "Budget", badge: (j) => budgetBadge(j.budget), rank: budgetRank },
];

const view = { sort: "started_at", dir: "desc", state: "", user: "", account: "" };
const rows = new Map(); // job_id -> <tr>, kept across polls so the table updates in place
const seen = { user: new Set(), account: new Set() };
let timer = null;
let latest = 0; // the newest poll: an older one's answer, arriving late, is dropped

function budgetRank(job) {
  const b = job.budget;
  if (b.over_budget) return 3;
  if (b.forecast_over_budget) return 2;
  return b.budget_usd !== null || b.budget_co2e_kg !== null ? 1 : 0;
}

function jobHref(jobId) {
  return `/jobs/${encodeURIComponent(jobId)}`; // "/" encoded too: "c/../x" stays one segment
}

function sortValue(column, job) {
  if (column.rank) return column.rank(job);
  return job[column.key];
}

function compare(a, b) {
  const byState = (a.state === "running" ? 0 : 1) - (b.state === "running" ? 0 : 1);
  if (byState) return byState;
  const column = COLUMNS.find((c) => c.key === view.sort) ?? COLUMNS[5];
  const [x, y] = [sortValue(column, a), sortValue(column, b)];
  let order;
  if (x === y) order = 0;
  else if (x === null || x === undefined) order = 1;
  else if (y === null || y === undefined) order = -1;
  else order = typeof x === "number" ? x - y : String(x).localeCompare(String(y));
  if (view.dir === "desc") order = -order;
  return order || a.job_id.localeCompare(b.job_id);
}

function newRow(job) {
  const tr = el("tr", { "data-job-id": job.job_id });
  for (const column of COLUMNS) {
    const td = el("td", { "data-col": column.key, class: column.num ? "num" : null });
    if (column.key === "job_id") {
      td.append(el("a", { href: jobHref(job.job_id), text: job.job_id }), el("div", { class: "sub" }),
        el("div", { class: "sub narrow" }));
    } else if (column.badge) {
      td.append(el("span", { class: "badge" }));
    }
    tr.append(td);
  }
  return tr;
}

function setText(node, text) {
  if (node.textContent === text) return;
  const changed = node.textContent !== "";
  node.textContent = text;
  if (changed) {
    node.classList.remove("changed");
    void node.offsetWidth; // restart the highlight
    node.classList.add("changed");
  }
}

function updateRow(tr, job) {
  for (const column of COLUMNS) {
    const td = tr.querySelector(`td[data-col="${column.key}"]`);
    if (column.key === "job_id") {
      td.querySelector(".sub").textContent = job.name ?? "";
      // shown instead of the user and account columns in a narrow window
      td.querySelector(".narrow").textContent = [job.user, job.account].filter(Boolean).join(" · ");
    } else if (column.badge) {
      setBadge(td.firstChild, column.badge(job));
    } else {
      const value = column.text ? column.text(job) : column.num ? fmtNumber(job[column.key]) : (job[column.key] ?? "–");
      setText(td, value);
      if (column.title) td.title = column.title(job);
    }
  }
}

function render(jobs) {
  const tbody = document.querySelector("#jobs tbody");
  const keep = new Set(jobs.map((j) => j.job_id));
  for (const [id, tr] of rows) {
    if (!keep.has(id)) {
      tr.remove();
      rows.delete(id);
    }
  }
  for (const job of [...jobs].sort(compare)) {
    let tr = rows.get(job.job_id);
    if (!tr) rows.set(job.job_id, (tr = newRow(job)));
    updateRow(tr, job);
    tr.job = job; // for sorting again without a request
    tbody.append(tr); // moves an existing row into sorted order; nothing is rebuilt
  }
  document.getElementById("empty").hidden = jobs.length > 0;
  renderTotals(jobs);
}

const SUMMED = ["gpus", "gpu_hours", "energy_kwh", "cost_usd", "co2e_kg"];

// The totals of the jobs listed, in the columns they belong to.
function renderTotals(jobs) {
  const row = document.getElementById("jobs-total");
  row.hidden = jobs.length === 0;
  row.replaceChildren(...COLUMNS.map((column) => {
    const td = el("td", { "data-col": column.key, class: column.num ? "num" : null });
    if (column.key === "job_id") td.textContent = `Total (${jobs.length} job${jobs.length === 1 ? "" : "s"})`;
    if (SUMMED.includes(column.key)) {
      const sum = jobs.reduce((acc, job) => acc + (job[column.key] ?? 0), 0);
      td.textContent = column.key === "cost_usd" ? fmtUsd(sum) : column.key === "gpus" ? String(sum) : fmtNumber(sum);
    }
    return td;
  }));
}

function renderHead() {
  const head = document.getElementById("jobs-head");
  head.replaceChildren();
  for (const column of COLUMNS) {
    const sorted = view.sort === column.key;
    const button = el("button", { type: "button", class: "sort", text: column.label,
      title: `Sort by ${column.label} (running jobs stay first)` });
    button.addEventListener("click", () => {
      view.dir = sorted && view.dir === "desc" ? "asc" : "desc";
      view.sort = column.key;
      saveView();
      renderHead();
      render([...rows.values()].map((tr) => tr.job));
    });
    head.append(el("th", { "data-col": column.key, class: column.num ? "num" : null,
      "aria-sort": sorted ? (view.dir === "asc" ? "ascending" : "descending") : "none" }, button));
  }
}

function syncOptions(name) {
  const select = document.getElementById(`filter-${name}`);
  const values = [...seen[name]].sort();
  const current = [...select.options].slice(1).map((o) => o.value);
  if (values.join("\n") === current.join("\n")) return;
  select.replaceChildren(el("option", { value: "", text: "all" }), ...values.map((v) => el("option", { value: v, text: v })));
  select.value = view[name];
}

function listUrl(state, limit) {
  const params = new URLSearchParams({ state, limit: String(limit) });
  for (const name of ["user", "account"]) if (view[name]) params.set(name, view[name]);
  return `/v1/jobs?${params}`;
}

async function fetchJobs() {
  const states = view.state ? [[view.state, RUNNING_LIMIT]] : [["running", RUNNING_LIMIT], ["ended", ENDED_LIMIT]];
  const pages = await Promise.all(states.map(([state, limit]) => apiJson(listUrl(state, limit))));
  const summary = states.map(([state], i) => {
    const page = pages[i];
    const shown = page.items.length < page.total ? ` (latest ${page.items.length} shown)` : "";
    return `${page.total} ${state}${shown}`;
  });
  return { jobs: pages.flatMap((p) => p.items), summary: summary.join(" · "), asOf: pages[0].as_of };
}

async function poll() {
  clearTimeout(timer);
  const mine = ++latest;
  try {
    const { jobs, summary, asOf } = await fetchJobs();
    if (mine !== latest) return;
    clearMessage();
    for (const job of jobs) {
      if (job.user) seen.user.add(job.user);
      if (job.account) seen.account.add(job.account);
    }
    for (const name of ["user", "account"]) syncOptions(name);
    render(jobs);
    document.getElementById("summary").textContent = summary;
    document.getElementById("updated").textContent = `updated ${fmtTime(asOf).slice(11)}`;
    const table = document.getElementById("jobs");
    table.dataset.polls = String(Number(table.dataset.polls) + 1);
    table.dataset.asOf = asOf;
  } catch (err) {
    if (mine !== latest || !reportError(err, poll)) return; // a token given polls again
  }
  timer = setTimeout(poll, REFRESH_MS);
}

function loadView() {
  const params = new URLSearchParams(location.search);
  for (const name of ["state", "user", "account", "sort", "dir"]) {
    if (params.get(name)) view[name] = params.get(name);
  }
  for (const name of ["user", "account"]) if (view[name]) seen[name].add(view[name]);
}

function saveView() {
  const params = new URLSearchParams();
  for (const name of ["state", "user", "account"]) if (view[name]) params.set(name, view[name]);
  if (view.sort !== "started_at" || view.dir !== "desc") {
    params.set("sort", view.sort);
    params.set("dir", view.dir);
  }
  history.replaceState(null, "", params.size ? `?${params}` : location.pathname);
}

function init() {
  loadView();
  renderHead();
  syncOptions("user");
  syncOptions("account");
  for (const name of ["state", "user", "account"]) {
    const select = document.getElementById(`filter-${name}`);
    select.value = view[name];
    select.addEventListener("change", () => {
      view[name] = select.value;
      saveView();
      poll();
    });
  }
  initTokenState(poll);
  poll();
}

init();
