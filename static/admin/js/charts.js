// Charts drawn as inline SVG: no library, no external service. Every chart is an
// <svg class="chart" data-chart="NAME"> with <title>s on its marks for hover details.
import { s } from "./dom.js";
import { t, lang } from "./i18n.js";

const W = 640;
const H = 260;
const PAD = { top: 24, right: 52, bottom: 40, left: 60 };

function niceMax(value) {
  if (!(value > 0)) return 1;
  const power = 10 ** Math.floor(Math.log10(value));
  for (const step of [1, 2, 2.5, 5, 10]) {
    if (value <= step * power) return step * power;
  }
  return 10 * power;
}

function compact(n) {
  const abs = Math.abs(n);
  if (lang() === "en") {
    if (abs >= 1e6) return `${+(n / 1e6).toFixed(1)}M`;
    if (abs >= 1e3) return `${+(n / 1e3).toFixed(1)}k`;
  } else {
    if (abs >= 1e8) return `${+(n / 1e8).toFixed(1)}亿`;
    if (abs >= 1e4) return `${+(n / 1e4).toFixed(1)}万`;
  }
  return String(Math.round(n * 100) / 100);
}

const percent = (v) => `${Math.round(v * 100)}%`;

function frame(name, label) {
  return s("svg", {
    class: "chart",
    "data-chart": name,
    viewBox: `0 0 ${W} ${H}`,
    role: "img",
    "aria-label": label,
    preserveAspectRatio: "xMidYMid meet",
  });
}

function plot() {
  return { x0: PAD.left, x1: W - PAD.right, y0: H - PAD.bottom, y1: PAD.top };
}

function yAxis(svg, p, max, format, side = "left") {
  const ticks = 4;
  for (let i = 0; i <= ticks; i += 1) {
    const value = (max * i) / ticks;
    const y = p.y0 - ((p.y0 - p.y1) * i) / ticks;
    if (side === "left") svg.append(s("line", { class: "grid", x1: p.x0, x2: p.x1, y1: y, y2: y }));
    svg.append(
      s(
        "text",
        {
          class: "tick",
          x: side === "left" ? p.x0 - 8 : p.x1 + 8,
          y: y + 4,
          "text-anchor": side === "left" ? "end" : "start",
        },
        format(value),
      ),
    );
  }
}

function xLabels(svg, p, labels, slot) {
  const every = Math.ceil(labels.length / 12);
  labels.forEach((label, i) => {
    if (i % every) return;
    svg.append(s("text", { class: "tick", x: p.x0 + slot * (i + 0.5), y: p.y0 + 18, "text-anchor": "middle" }, label));
  });
  svg.append(s("line", { class: "axis", x1: p.x0, x2: p.x1, y1: p.y0, y2: p.y0 }));
}

function emptyNote(svg, total) {
  if (total > 0) return;
  svg.append(s("text", { class: "chart-empty", x: W / 2, y: H / 2, "text-anchor": "middle" }, t("no_data_yet")));
}

function legend(svg, entries) {
  let x = PAD.left;
  for (const [label, cls] of entries) {
    svg.append(s("rect", { class: `legend-key ${cls}`, x, y: 6, width: 12, height: 12, rx: 2 }));
    const text = s("text", { class: "legend", x: x + 16, y: 16 }, label);
    svg.append(text);
    x += 28 + label.length * (/[\u4e00-\u9fff]/.test(label) ? 13 : 7);
  }
}

/**
 * Grouped bars (left axis) with an optional rate line (right axis, 0..100%+) and a
 * shaded target band on the rate axis, e.g. points issued vs spent + consumption rate.
 */
export function barsWithRate({ name, label, labels, bars, rate, band, bandLabel }) {
  const svg = frame(name, label);
  const p = plot();
  const maxBar = niceMax(Math.max(0, ...bars.flatMap((b) => b.values)));
  const rates = rate ? rate.values.filter((v) => v !== null && v !== undefined) : [];
  const maxRate = Math.max(1, niceMax(Math.max(0, ...rates)));
  const slot = (p.x1 - p.x0) / Math.max(1, labels.length);
  const y = (v) => p.y0 - ((p.y0 - p.y1) * v) / maxBar;
  const yr = (v) => p.y0 - ((p.y0 - p.y1) * v) / maxRate;

  if (band) {
    const [low, high] = band;
    svg.append(
      s(
        "rect",
        { class: "band", "data-band": `${low}-${high}`, x: p.x0, width: p.x1 - p.x0, y: yr(high), height: yr(low) - yr(high) },
        s("title", {}, bandLabel || `${percent(low)}–${percent(high)}`),
      ),
      s("line", { class: "band-edge", x1: p.x0, x2: p.x1, y1: yr(low), y2: yr(low) }),
      s("line", { class: "band-edge", x1: p.x0, x2: p.x1, y1: yr(high), y2: yr(high) }),
      s("text", { class: "band-label", x: p.x1 - 4, y: yr(high) - 4, "text-anchor": "end" }, bandLabel || ""),
    );
  }
  yAxis(svg, p, maxBar, compact);
  if (rate) yAxis(svg, p, maxRate, percent, "right");
  const barW = Math.max(2, (slot * 0.7) / bars.length);
  labels.forEach((lab, i) => {
    bars.forEach((bar, j) => {
      const v = bar.values[i] || 0;
      const x = p.x0 + slot * i + slot * 0.15 + barW * j;
      svg.append(
        s(
          "rect",
          { class: `bar ${bar.cls}`, x, y: y(v), width: barW - 1, height: Math.max(0, p.y0 - y(v)), "data-value": v },
          s("title", {}, `${lab} ${bar.name}: ${v.toLocaleString()}`),
        ),
      );
    });
  });
  if (rate) {
    const points = [];
    labels.forEach((lab, i) => {
      const v = rate.values[i];
      if (v === null || v === undefined) return;
      points.push([p.x0 + slot * (i + 0.5), yr(v), lab, v]);
    });
    if (points.length > 1) {
      svg.append(s("polyline", { class: "rate-line", points: points.map(([px, py]) => `${px},${py}`).join(" ") }));
    }
    for (const [px, py, lab, v] of points) {
      const inBand = band && v >= band[0] && v <= band[1];
      svg.append(
        s("circle", { class: `rate-dot ${inBand ? "in-band" : "off-band"}`, cx: px, cy: py, r: 4 }, s("title", {}, `${lab} ${rate.name}: ${percent(v)}`)),
      );
    }
  }
  xLabels(svg, p, labels, slot);
  legend(svg, [...bars.map((b) => [b.name, b.cls]), ...(rate ? [[rate.name, "key-rate"]] : [])]);
  emptyNote(svg, bars.reduce((sum, b) => sum + b.values.reduce((a, v) => a + (v || 0), 0), 0));
  return svg;
}

/** Vertical bars of one series; `format` for the axis; `marks` are reference lines. */
export function bars({ name, label, labels, values, cls = "bar-a", max, format = compact, marks = [], valueLabel, integer = false }) {
  const svg = frame(name, label);
  const p = { ...plot(), x1: W - 20 };
  const highest = Math.max(0, ...values.map((v) => v || 0));
  // counts get whole-number ticks (4 steps)
  const top = max || (integer ? Math.max(4, Math.ceil(highest / 4) * 4) : niceMax(highest));
  const slot = (p.x1 - p.x0) / Math.max(1, labels.length);
  const y = (v) => p.y0 - ((p.y0 - p.y1) * v) / top;
  yAxis(svg, p, top, format);
  for (const mark of marks) {
    svg.append(
      s("line", { class: "mark", x1: p.x0, x2: p.x1, y1: y(mark.value), y2: y(mark.value) }),
      s("text", { class: "mark-label", x: p.x0 + 4, y: y(mark.value) - 4 }, mark.label),
    );
  }
  labels.forEach((lab, i) => {
    const v = values[i];
    const bw = Math.min(48, slot * 0.6);
    const x = p.x0 + slot * i + (slot - bw) / 2;
    if (v === null || v === undefined) {
      svg.append(s("text", { class: "tick", x: x + bw / 2, y: p.y0 - 6, "text-anchor": "middle" }, "—"));
      return;
    }
    svg.append(
      s(
        "rect",
        { class: `bar ${cls}`, x, y: y(v), width: bw, height: Math.max(0, p.y0 - y(v)), "data-value": v },
        s("title", {}, `${lab}: ${valueLabel ? valueLabel(v, i) : format(v)}`),
      ),
    );
    if (labels.length <= 12 && v > 0) {
      svg.append(s("text", { class: "bar-value", x: x + bw / 2, y: y(v) - 4, "text-anchor": "middle" }, format(v)));
    }
  });
  xLabels(svg, p, labels, slot);
  emptyNote(svg, values.filter((v) => v).length);
  return svg;
}

/** Horizontal bars of rates (0..1), e.g. sell-through per session. */
export function rateRows({ name, label, rows, target }) {
  const rowH = 26;
  const height = Math.max(150, PAD.top + rows.length * rowH + 30);
  const svg = s("svg", { class: "chart", "data-chart": name, viewBox: `0 0 ${W} ${height}`, role: "img", "aria-label": label });
  const x0 = 170;
  const x1 = W - 70;
  const scale = (v) => x0 + (x1 - x0) * Math.min(1, Math.max(0, v));
  for (const v of [0, 0.25, 0.5, 0.75, 1]) {
    svg.append(
      s("line", { class: "grid", x1: scale(v), x2: scale(v), y1: PAD.top - 6, y2: PAD.top + rows.length * rowH }),
      s("text", { class: "tick", x: scale(v), y: PAD.top + rows.length * rowH + 16, "text-anchor": "middle" }, percent(v)),
    );
  }
  if (target !== undefined) {
    svg.append(s("line", { class: "mark", x1: scale(target), x2: scale(target), y1: PAD.top - 10, y2: PAD.top + rows.length * rowH }));
  }
  rows.forEach((row, i) => {
    const y = PAD.top + i * rowH;
    const text = row.label.length > 14 ? `${row.label.slice(0, 13)}…` : row.label;
    svg.append(s("text", { class: "row-label", x: x0 - 8, y: y + 16, "text-anchor": "end" }, text, s("title", {}, row.label)));
    svg.append(s("rect", { class: "track", x: x0, y: y + 4, width: x1 - x0, height: rowH - 10, rx: 3 }));
    if (row.value !== null && row.value !== undefined) {
      svg.append(
        s(
          "rect",
          { class: "bar bar-a", x: x0, y: y + 4, width: Math.max(1, scale(row.value) - x0), height: rowH - 10, rx: 3, "data-value": row.value },
          s("title", {}, `${row.label}: ${percent(row.value)}${row.note ? ` (${row.note})` : ""}`),
        ),
      );
    }
    svg.append(s("text", { class: "bar-value", x: x1 + 6, y: y + 16 }, row.value === null || row.value === undefined ? "—" : percent(row.value)));
  });
  emptyNote(svg, rows.length);
  return svg;
}

/** A line with an area under it, e.g. stored value outstanding per month. */
export function area({ name, label, labels, values, format = compact }) {
  const svg = frame(name, label);
  const p = { ...plot(), x1: W - 20 };
  const top = niceMax(Math.max(0, ...values));
  const slot = (p.x1 - p.x0) / Math.max(1, labels.length);
  const y = (v) => p.y0 - ((p.y0 - p.y1) * v) / top;
  yAxis(svg, p, top, format);
  const pts = values.map((v, i) => [p.x0 + slot * (i + 0.5), y(v)]);
  if (pts.length) {
    const line = pts.map(([x, yy]) => `${x},${yy}`).join(" ");
    svg.append(
      s("polygon", { class: "area-fill", points: `${pts[0][0]},${p.y0} ${line} ${pts[pts.length - 1][0]},${p.y0}` }),
      s("polyline", { class: "area-line", points: line }),
    );
    pts.forEach(([x, yy], i) => svg.append(s("circle", { class: "area-dot", cx: x, cy: yy, r: 3 }, s("title", {}, `${labels[i]}: ${format(values[i])}`))));
  }
  xLabels(svg, p, labels, slot);
  emptyNote(svg, Math.max(0, ...values.map(Math.abs)));
  return svg;
}
