// The job page's charts, on the vendored uPlot (a global from uPlot.iife.min.js). Each chart
// is built once and then fed new data in place. Every chart's element carries the number of
// points each series got (data-points, JSON), so a test can check what was drawn.
/* global uPlot */
import { fmtNumber } from "./common.js";

const HEIGHT = 260;
export const COLORS = {
  blue: "#2563eb", orange: "#ea580c", green: "#16a34a", teal: "#0d9488", red: "#dc2626",
  purple: "#7c3aed", grey: "#6b7280",
};

const tick = new Intl.NumberFormat("en-US", { maximumSignificantDigits: 3, notation: "compact" });
const pad = (n) => String(n).padStart(2, "0");

function tickValues(_u, splits) {
  return splits.map((v) => (v === null ? "" : tick.format(v)));
}

// Local time, 24-hour clock; seconds when the ticks are less than a minute apart, the date
// when they are a day or more apart.
function timeValues(_u, splits, _axis, _space, increment) {
  return splits.map((s) => {
    const t = new Date(s * 1000);
    if (increment >= 86400) return `${t.getFullYear()}-${pad(t.getMonth() + 1)}-${pad(t.getDate())}`;
    const hm = `${pad(t.getHours())}:${pad(t.getMinutes())}`;
    return increment < 60 ? `${hm}:${pad(t.getSeconds())}` : hm;
  });
}

function legendValue(unit) {
  return (_u, v) => (v === null || v === undefined ? "–" : `${fmtNumber(v)} ${unit}`);
}

// A series on scale `scale`: {label, unit, color, dash, stepped}.
export function line({ label, unit, color, scale, dash, stepped, width = 2 }) {
  const spec = { label, scale, stroke: color, width, value: legendValue(unit), points: { show: false } };
  if (dash) spec.dash = dash;
  if (stepped) spec.paths = uPlot.paths.stepped({ align: 1 });
  return spec;
}

// A y axis on the left (side 3) or right (side 1), its unit as its label.
export function axis(scale, unit, side = 3) {
  return { scale, side, label: unit, labelSize: 18, values: tickValues, size: 48, grid: { show: side === 3 } };
}

const fromZero = (_u, _min, max) => [0, max > 0 ? max * 1.08 : 1];

function countPoints(series, data) {
  const counts = {};
  series.forEach((s, i) => {
    counts[s.label] = data[i + 1].filter((v) => v !== null && v !== undefined && !Number.isNaN(v)).length;
  });
  return counts;
}

export class Chart {
  // Every y scale starts at 0; those named in `percent` run to 100.
  constructor(element, { series, axes, percent = [] }) {
    this.element = element;
    this.series = series;
    const scales = { x: { time: true } };
    for (const s of series) scales[s.scale] = percent.includes(s.scale) ? { range: [0, 100] } : { range: fromZero };
    this.options = { height: HEIGHT, series: [{ value: "{YYYY}-{MM}-{DD} {HH}:{mm}:{ss}" }, ...series],
      axes: [{ values: timeValues, space: 80 }, ...axes], scales,
      legend: { live: true }, cursor: { drag: { x: true, y: false } } };
    this.plot = null;
  }

  // data: [xs, ys...]; counts: points per series as the API gave them (default: from data).
  update(data, counts = null) {
    this.element.dataset.points = JSON.stringify(counts ?? countPoints(this.series, data));
    this.element.querySelector(".chart-empty")?.remove();
    if (this.plot) {
      this.plot.setData(data);
      return;
    }
    const width = Math.max(this.element.clientWidth, 280);
    this.plot = new uPlot({ ...this.options, width }, data, this.element);
    new ResizeObserver(() => {
      const w = Math.max(this.element.clientWidth, 280);
      if (Math.abs(w - this.plot.width) > 2) this.plot.setSize({ width: w, height: HEIGHT });
    }).observe(this.element);
  }

  empty(text) {
    this.element.dataset.points = "{}";
    if (this.plot) {
      this.plot.destroy();
      this.plot = null;
    }
    if (!this.element.querySelector(".chart-empty")) {
      const note = document.createElement("p");
      note.className = "chart-empty";
      note.textContent = text;
      this.element.append(note);
    }
  }
}

// Hourly values drawn as steps: each hour's value holds from its start to its end.
export function steps(starts, ends, columns) {
  if (!starts.length) return [[], ...columns.map(() => [])];
  const xs = [...starts, ends[ends.length - 1]];
  return [xs, ...columns.map((values) => [...values, values[values.length - 1]])];
}
