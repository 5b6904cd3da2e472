// Shared by both pages: API calls with the reader's token, messages, formatting, badges.
// Every value from the API is put in the page with textContent, never as HTML.

export const REFRESH_MS = 5000;
const TOKEN_KEY = "gpuledger.token";

export class ApiError extends Error {
  constructor(status, detail) {
    super(`${status}: ${detail}`);
    this.status = status;
    this.detail = detail;
  }
}

export function storedToken() {
  return localStorage.getItem(TOKEN_KEY);
}

// The last answer to each JSON path with its ETag: a poll sends If-None-Match and, when the
// server answers 304 (nothing changed), reuses the answer it has instead of downloading it again.
const answers = new Map(); // path -> { etag, body }

export async function apiFetch(path, extraHeaders = {}) {
  const headers = { ...extraHeaders };
  const token = storedToken();
  if (token) headers.Authorization = `Bearer ${token}`;
  let response;
  try {
    response = await fetch(path, { headers, cache: "no-store" });
  } catch (err) {
    throw new ApiError(0, `cannot reach the server (${err.message}); is gpuledger server running?`);
  }
  if (response.status === 304) return response;
  if (!response.ok) {
    let detail = response.statusText;
    try {
      detail = (await response.json()).detail ?? detail;
    } catch (_) { /* not JSON */ }
    throw new ApiError(response.status, typeof detail === "string" ? detail : JSON.stringify(detail));
  }
  return response;
}

export async function apiJson(path) {
  const known = answers.get(path);
  const response = await apiFetch(path, known ? { "If-None-Match": known.etag } : {});
  if (response.status === 304 && known) return known.body;
  const body = await response.json();
  const etag = response.headers.get("ETag");
  if (etag) answers.set(path, { etag, body });
  return body;
}

export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === undefined || value === null) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = value;
    else node.setAttribute(key, value);
  }
  for (const child of children) node.append(child);
  return node;
}

export function showMessage(text, kind = "error") {
  const box = document.getElementById("message");
  box.textContent = text;
  box.className = `message ${kind}`;
  box.hidden = !text;
}

export function clearMessage() {
  showMessage("");
}

function renderTokenState(onChange) {
  const holder = document.getElementById("token-state");
  holder.replaceChildren();
  const token = storedToken();
  if (!token) return;
  const forget = el("button", { type: "button", class: "link", text: "forget" });
  forget.addEventListener("click", () => {
    localStorage.removeItem(TOKEN_KEY);
    renderTokenState(onChange);
    onChange();
  });
  holder.append(el("span", { text: `token ${token.slice(0, 16)}… ` }), forget);
}

// The token form, shown when the API answers 401; `onChange` reloads the page's data.
export function askForToken(detail, onChange) {
  const panel = document.getElementById("auth");
  const input = el("input", { type: "password", id: "token-input", name: "token", autocomplete: "off",
    placeholder: "glt_…", size: "48", "aria-label": "API token" });
  const form = el("form", { class: "token-form" }, input,
    el("button", { type: "submit", text: "Use token" }));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const token = input.value.trim();
    if (!token) return;
    localStorage.setItem(TOKEN_KEY, token);
    panel.hidden = true;
    renderTokenState(onChange);
    onChange();
  });
  panel.replaceChildren(
    el("h2", { text: "This server needs a token" }),
    el("p", { text: "Paste a reader token (from `gpuledger token create --role reader`). "
      + "It is kept in this browser only and sent with each request." }),
    el("p", { class: "muted", text: `The server said: ${detail}` }),
    form,
  );
  panel.hidden = false;
  input.focus();
}

// What every poll does with a failed request. Returns false when polling should wait for the
// reader (a token to type), true when it may go on.
export function reportError(err, onChange) {
  if (err instanceof ApiError && err.status === 401) {
    clearMessage();
    askForToken(err.detail, onChange);
    return false;
  }
  if (err instanceof ApiError && err.status === 403) {
    showMessage(`Not allowed with this token: ${err.detail}`);
  } else if (err instanceof ApiError) {
    showMessage(err.status ? `The server answered ${err.status}: ${err.detail}` : err.detail);
  } else {
    showMessage(`Unexpected error: ${err}`);
    throw err;
  }
  return true;
}

export function initTokenState(onChange) {
  renderTokenState(onChange);
}

// -- formatting -------------------------------------------------------------------------------

const grouped = (digits) => new Intl.NumberFormat("en-US", { minimumFractionDigits: digits, maximumFractionDigits: digits });
const FORMATS = [0, 1, 2, 3].map(grouped);

export function fmtNumber(value) {
  if (value === null || value === undefined || Number.isNaN(value)) return "–";
  const size = Math.abs(value);
  const digits = size === 0 ? 0 : size < 10 ? 3 : size < 100 ? 2 : size < 10000 ? 1 : 0;
  return FORMATS[digits].format(value);
}

export function fmtInt(value) {
  return value === null || value === undefined ? "–" : FORMATS[0].format(Math.floor(value));
}

export function fmtUsd(value) {
  if (value === null || value === undefined) return "–";
  return `$${FORMATS[Math.abs(value) < 10000 ? 2 : 0].format(value)}`;
}

export function fmtPct(fraction) {
  return fraction === null || fraction === undefined ? "–" : `${FORMATS[1].format(fraction * 100)} %`;
}

const pad = (n) => String(n).padStart(2, "0");

export function fmtTime(iso) {
  if (!iso) return "–";
  const t = new Date(iso);
  const day = `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
  return `${day} ${pad(t.getHours())}:${pad(t.getMinutes())}:${pad(t.getSeconds())}`;
}

export function fmtAgo(iso, nowMs = Date.now()) {
  if (!iso) return "";
  const s = Math.max(0, (nowMs - new Date(iso).getTime()) / 1000);
  if (s < 90) return `${Math.round(s)} s ago`;
  if (s < 5400) return `${Math.round(s / 60)} min ago`;
  if (s < 129600) return `${FORMATS[1].format(s / 3600)} h ago`;
  return `${FORMATS[1].format(s / 86400)} days ago`;
}

// -- badges -----------------------------------------------------------------------------------

const NETWORK = {
  none: ["calm", "ok", "No congestion: few CNPs and retransmissions"],
  moderate: ["moderate", "warn", "Moderate congestion"],
  heavy: ["heavy", "bad", "Heavy congestion"],
  unknown: ["unknown", "muted", "The NICs report no congestion counters"],
};

export function networkBadge(verdict, reason) {
  if (!verdict) return ["no data", "none", "No RoCE data for this job"];
  const [text, kind, title] = NETWORK[verdict] ?? [verdict, "muted", verdict];
  return [text, kind, reason ? `${title}: ${reason}` : title];
}

export function budgetBadge(budget) {
  if (!budget || (budget.budget_usd === null && budget.budget_co2e_kg === null)) {
    return ["no budget", "none", "No budget set"];
  }
  const limits = [budget.budget_usd !== null ? fmtUsd(budget.budget_usd) : null,
    budget.budget_co2e_kg !== null ? `${fmtNumber(budget.budget_co2e_kg)} kg CO₂e` : null].filter(Boolean).join(", ");
  const forecast = budget.forecast_cost_usd === null ? "no forecast yet"
    : `forecast ${fmtUsd(budget.forecast_cost_usd)} (${budget.forecast_method})`;
  if (budget.over_budget) return ["over budget", "bad", `Over the budget of ${limits}`];
  if (budget.forecast_over_budget) return ["forecast over", "warn", `Within ${limits} now; ${forecast}`];
  return ["within", "ok", `Within the budget of ${limits}; ${forecast}`];
}

export function stateBadge(state) {
  return [state, state === "running" ? "running" : "muted", state === "running" ? "Running" : "Ended"];
}

export function badge([text, kind, title]) {
  return el("span", { class: `badge ${kind}`, title, text });
}

export function setBadge(node, spec) {
  const [text, kind, title] = spec;
  node.textContent = text;
  node.className = `badge ${kind}`;
  node.title = title;
}
