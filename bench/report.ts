import type { Row } from "./scenarios.js";

const COLORS = ["#3b6fd1", "#e08a1e", "#2e9e5b", "#b0413e", "#7a5cc4"];

function escapeHtml(s: string): string {
  return s.replace(/[&<>"]/g, (c) => `&#${c.charCodeAt(0)};`);
}

/** A horizontal grouped bar chart as inline SVG: one group per label, one bar per series. */
function barChart(title: string, groups: string[], series: string[], value: (g: string, s: string) => number): string {
  const barH = 14;
  const gap = 10;
  const left = 150;
  const width = 760;
  const groupH = series.length * barH + gap;
  const height = 40 + groups.length * groupH + 20 * Math.ceil(series.length / 4);
  const max = Math.max(1, ...groups.flatMap((g) => series.map((s) => value(g, s))));
  let y = 30;
  const parts = [`<text x="0" y="16" font-weight="bold">${escapeHtml(title)}</text>`];
  for (const g of groups) {
    parts.push(`<text x="0" y="${y + (series.length * barH) / 2 + 4}">${escapeHtml(g)}</text>`);
    series.forEach((s, i) => {
      const v = value(g, s);
      const w = ((width - left - 90) * v) / max;
      parts.push(
        `<rect x="${left}" y="${y + i * barH}" width="${w.toFixed(1)}" height="${barH - 2}" fill="${COLORS[i % COLORS.length]}"/>`,
        `<text x="${left + w + 4}" y="${y + i * barH + barH - 4}" font-size="10">${Math.round(v).toLocaleString("en")}</text>`,
      );
    });
    y += groupH;
  }
  series.forEach((s, i) => {
    const x = (i % 4) * 180;
    const ly = y + 10 + Math.floor(i / 4) * 20;
    parts.push(
      `<rect x="${x}" y="${ly - 10}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
      `<text x="${x + 16}" y="${ly}">${escapeHtml(s)}</text>`,
    );
  });
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">${parts.join("")}</svg>`;
}

/** A line chart as inline SVG: one line per series over numeric x values, each series scaled to its own maximum (labelled). */
function lineChart(title: string, xs: number[], series: { name: string; values: number[] }[], notes: string[]): string {
  const width = 760;
  const height = 260;
  const left = 40;
  const top = 30;
  const plotW = width - left - 20;
  const plotH = height - top - 60;
  const maxX = Math.max(1, ...xs);
  const parts = [`<text x="0" y="16" font-weight="bold">${escapeHtml(title)}</text>`];
  parts.push(`<line x1="${left}" y1="${top + plotH}" x2="${left + plotW}" y2="${top + plotH}" stroke="#999"/>`);
  series.forEach((s, i) => {
    const max = Math.max(1e-9, ...s.values);
    const points = xs.map(
      (x, j) =>
        `${(left + (plotW * x) / maxX).toFixed(1)},${(top + plotH - (plotH * (s.values[j] ?? 0)) / max).toFixed(1)}`,
    );
    parts.push(
      `<polyline fill="none" stroke="${COLORS[i % COLORS.length]}" stroke-width="1.5" points="${points.join(" ")}"/>`,
    );
    parts.push(
      `<rect x="${i * 200}" y="${height - 22}" width="12" height="12" fill="${COLORS[i % COLORS.length]}"/>`,
      `<text x="${i * 200 + 16}" y="${height - 12}">${escapeHtml(`${s.name} (max ${Math.round(max * 100) / 100})`)}</text>`,
    );
  });
  for (const [i, note] of notes.entries()) {
    const [x, text] = note.split("|") as [string, string];
    const px = left + (plotW * Number(x)) / maxX;
    parts.push(
      `<line x1="${px}" y1="${top}" x2="${px}" y2="${top + plotH}" stroke="#b0413e" stroke-dasharray="3,3"/>`,
      `<text x="${px + 3}" y="${top + 12 + i * 12}" font-size="10" fill="#b0413e">${escapeHtml(text)}</text>`,
    );
  }
  parts.push(`<text x="${left}" y="${top + plotH + 16}" font-size="10">0 s</text>`);
  parts.push(`<text x="${left + plotW - 20}" y="${top + plotH + 16}" font-size="10">${maxX} s</text>`);
  return `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">${parts.join("")}</svg>`;
}

function table(rows: Row[]): string {
  if (rows.length === 0) return "<p>(not run)</p>";
  const cols = Object.keys(rows[0] as Row);
  const head = cols.map((c) => `<th>${escapeHtml(c)}</th>`).join("");
  const body = rows
    .map((r) => `<tr>${cols.map((c) => `<td>${escapeHtml(String(r[c] ?? ""))}</td>`).join("")}</tr>`)
    .join("");
  return `<table><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

/** The HTML report: charts of throughput, then every table. */
export function htmlReport(results: Record<string, Row[]>, header: string): string {
  const charts: string[] = [];
  const fe = results["front-end"] ?? [];
  for (const op of ["get", "set"]) {
    const rows = fe.filter((r) => r.op === op);
    const groups = [...new Set(rows.map((r) => `${r.conns} conns × ${r.depth}`))];
    const series = [...new Set(rows.map((r) => String(r.target)))];
    const find = (g: string, s: string) =>
      Number(rows.find((r) => `${r.conns} conns × ${r.depth}` === g && r.target === s)?.["ops/s"] ?? 0);
    if (rows.length) charts.push(barChart(`Front end: ${op} ops/s (memory store)`, groups, series, find));
  }
  const e2e = results["end-to-end"] ?? [];
  if (e2e.length) {
    const groups = [...new Set(e2e.map((r) => String(r.op)))];
    const series = [...new Set(e2e.map((r) => String(r.config)))];
    const find = (g: string, s: string) => Number(e2e.find((r) => r.op === g && r.config === s)?.["ops/s"] ?? 0);
    charts.push(barChart("End to end on DynamoDB Local: ops/s", groups, series, find));
  }
  const timeline = (results.cluster ?? []).filter((r) => typeof r.t_s === "number");
  if (timeline.length) {
    const xs = timeline.map((r) => Number(r.t_s));
    const col = (c: string) => timeline.map((r) => Number(r[c] ?? 0));
    const notes = timeline.filter((r) => r.event).map((r) => `${r.t_s}|${r.event}`);
    charts.push(
      lineChart(
        "Cluster stress through HAProxy: throughput and latency per second",
        xs,
        [
          { name: "ops/s", values: col("ops/s") },
          { name: "p50 ms", values: col("p50 ms") },
          { name: "p99 ms", values: col("p99 ms") },
        ],
        notes,
      ),
    );
  }
  const sections = Object.entries(results)
    .map(([name, rows]) => `<h2>${escapeHtml(name)}</h2>${table(rows)}`)
    .join("");
  return `<!doctype html><meta charset="utf-8"><title>kvs bench</title>
<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}th{background:#f4f4f4}</style>
<h1>kvs bench</h1><p>${escapeHtml(header)}</p>${charts.join("<br>")}${sections}`;
}
