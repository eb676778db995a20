// Small SVG charts: pure functions from data to an <svg class="plot"> element. Colours and
// strokes come from style.css (.plot .series, .area, .soft, .emergency, .event, .bar).
import { svg } from "./dom.js";

const MARGIN = { top: 14, right: 14, bottom: 40, left: 72 };
const Y_TICKS = 4;
const X_TICKS = 4;
const BAR_ROW = 24;
const BAR_LABEL = 150;
const BAR_VALUE = 90;

const pad = (n) => String(n).padStart(2, "0");

// Epoch seconds as HH:MM:SS in local time (toLocaleTimeString varies by locale).
export function clock(seconds) {
  const date = new Date(seconds * 1000);
  return [date.getHours(), date.getMinutes(), date.getSeconds()].map(pad).join(":");
}

// One decimal is plenty for a viewBox a few hundred units wide, and keeps paths short.
const round = (n) => Math.round(n * 10) / 10;

function scale(from, to, start, end) {
  const span = to - from || 1;
  return (value) => round(start + ((value - from) / span) * (end - start));
}

function steps(from, to, count) {
  return Array.from({ length: count + 1 }, (_, i) => from + ((to - from) * i) / count);
}

function short(text, max = 22) {
  const value = String(text);
  return value.length > max ? `${value.slice(0, max - 1)}…` : value;
}

function frame(cls, width, height, label, ...children) {
  return svg("svg", {
    class: cls, viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label,
  }, ...children);
}

function placeholder(width, height, label, message, cls = "plot") {
  return frame(cls, width, height, `${label}: ${message}`,
    svg("text", { x: width / 2, y: height / 2, "text-anchor": "middle" }, message));
}

// The y domain starts at zero (or below, for negative data) and always takes in the
// horizontal lines, so a threshold far above the data is still drawn.
function yDomain(values) {
  const low = Math.min(0, ...values);
  const high = Math.max(...values);
  return [low, high > low ? high + (high - low) * 0.05 : low + 1];
}

function yAxis(box, sy, [low, high], format) {
  return steps(low, high, Y_TICKS).map((value) => svg("g", {},
    svg("line", { class: "axis", x1: box.left, x2: box.right, y1: sy(value), y2: sy(value) }),
    svg("text", { x: box.left - 6, y: sy(value) + 4, "text-anchor": "end" }, format(value)),
  ));
}

function xAxis(box, sx, [first, last], format) {
  return steps(first, last, X_TICKS).map((value, i) => svg("text", {
    x: sx(value), y: box.bottom + 16,
    "text-anchor": i === 0 ? "start" : i === X_TICKS ? "end" : "middle",
  }, format(value)));
}

// Labelled at the left end: the newest samples and events are at the right.
function threshold(box, sy, { y, label, cls }) {
  return svg("g", {},
    svg("line", { class: cls, x1: box.left, x2: box.right, y1: sy(y), y2: sy(y) }),
    svg("text", { x: box.left + 4, y: sy(y) - 4 }, label),
  );
}

function marker(box, sx, { x, label, cls }) {
  return svg("g", { class: cls ? `event ${cls}` : "event" },
    svg("title", {}, label),
    svg("line", { x1: sx(x), x2: sx(x), y1: box.top, y2: box.bottom }),
    svg("circle", { class: "event-dot", cx: sx(x), cy: box.top + 4, r: 4 }),
  );
}

// points [{x (epoch seconds), y}], lines [{y, label, cls}] drawn across, markers
// [{x, label, cls}] drawn down (those outside the sampled time range are left out).
export function lineChart({
  points = [], label = "Line chart", xLabel = "", yFormat = String, xFormat = clock,
  lines = [], markers = [], width = 960, height = 260,
} = {}) {
  if (points.length < 2) return placeholder(width, height, label, "No samples yet");
  const sorted = [...points].sort((a, b) => a.x - b.x);
  const xs = [sorted[0].x, sorted[sorted.length - 1].x];
  const ys = yDomain([...sorted.map((p) => p.y), ...lines.map((line) => line.y)]);
  const box = { left: MARGIN.left, right: width - MARGIN.right, top: MARGIN.top, bottom: height - MARGIN.bottom };
  const sx = scale(xs[0], xs[1], box.left, box.right);
  const sy = scale(ys[0], ys[1], box.bottom, box.top);
  const trace = sorted.map((p, i) => `${i ? "L" : "M"}${sx(p.x)},${sy(p.y)}`).join(" ");
  const latest = sorted[sorted.length - 1].y;
  return frame("plot", width, height,
    `${label}: ${sorted.length} samples from ${xFormat(xs[0])} to ${xFormat(xs[1])}, latest ${yFormat(latest)}`,
    yAxis(box, sy, ys, yFormat),
    xAxis(box, sx, xs, xFormat),
    xLabel ? svg("text", { x: (box.left + box.right) / 2, y: height - 4, "text-anchor": "middle" }, xLabel) : null,
    svg("path", { class: "area", d: `${trace} L${sx(xs[1])},${box.bottom} L${sx(xs[0])},${box.bottom} Z` }),
    svg("path", { class: "series", d: trace }),
    lines.map((line) => threshold(box, sy, line)),
    markers.filter((m) => m.x >= xs[0] && m.x <= xs[1]).map((m) => marker(box, sx, m)),
  );
}

// Horizontal bars, one row per item [{label, value}]; negative values draw no bar.
export function barChart({ items = [], label = "Bar chart", valueFormat = String, width = 640 } = {}) {
  if (!items.length) return placeholder(width, 60, label, "Nothing to show yet", "plot bars");
  const height = items.length * BAR_ROW + 8;
  const top = Math.max(0, ...items.map((item) => item.value));
  const sx = scale(0, top || 1, 0, width - BAR_LABEL - BAR_VALUE);
  const described = items.map((item) => `${item.label} ${valueFormat(item.value)}`).join("; ");
  return frame("plot bars", width, height, `${label}: ${described}`,
    items.map((item, i) => {
      const y = 4 + i * BAR_ROW;
      const length = Math.max(0, sx(item.value));
      return svg("g", {},
        svg("title", {}, `${item.label}: ${valueFormat(item.value)}`),
        svg("text", { x: BAR_LABEL - 8, y: y + BAR_ROW / 2 + 4, "text-anchor": "end" }, short(item.label)),
        svg("rect", { class: "bar", x: BAR_LABEL, y: y + 4, width: length, height: BAR_ROW - 8, rx: 2 }),
        svg("text", { x: BAR_LABEL + length + 6, y: y + BAR_ROW / 2 + 4 }, valueFormat(item.value)),
      );
    }),
  );
}
