// A small hand-written SVG line chart (no charting library): panels side by
// side, each with its own axes, series drawn as lines with markers and
// optional min–max whiskers.
export interface Point {
  x: number;
  y: number;
  lo?: number;
  hi?: number;
}

export interface Series {
  label: string;
  color: string;
  points: Point[];
  dashed?: boolean;
  markers?: boolean;
}

export interface Panel {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  note?: string;
}

function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');
}

/** 1, 2, 5 × 10^k steps giving about `n` ticks up to at least max. */
function ticks(max: number, n = 5): number[] {
  if (!(max > 0)) return [0, 1];
  const raw = max / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = 0; v < max + step * 0.999; v += step) out.push(+v.toFixed(10));
  return out;
}

function fmtTick(v: number): string {
  return Math.abs(v) >= 10000 ? `${v / 1000}k` : String(+v.toFixed(2));
}

function panel(p: Panel, ox: number, oy: number, w: number, h: number): string {
  const m = { l: 58, r: 14, t: 34, b: 48 + 16 * p.series.length };
  const pw = w - m.l - m.r;
  const ph = h - m.t - m.b;
  const pts = p.series.flatMap((s) => s.points);
  const xt = ticks(Math.max(1, ...pts.map((q) => q.x)));
  const yt = ticks(Math.max(1e-9, ...pts.map((q) => q.hi ?? q.y)));
  const xMax = xt[xt.length - 1]!;
  const yMax = yt[yt.length - 1]!;
  const X = (v: number): number => ox + m.l + (v / xMax) * pw;
  const Y = (v: number): number => oy + m.t + ph - (v / yMax) * ph;
  const o: string[] = [];
  o.push(`<text x="${ox + m.l}" y="${oy + 20}" font-size="14" font-weight="bold">${esc(p.title)}</text>`);
  for (const v of yt) {
    o.push(`<line x1="${X(0)}" y1="${Y(v)}" x2="${X(xMax)}" y2="${Y(v)}" stroke="#e4e4e4"/>`);
    o.push(`<text x="${X(0) - 6}" y="${Y(v) + 4}" font-size="11" text-anchor="end">${fmtTick(v)}</text>`);
  }
  for (const v of xt) {
    o.push(`<line x1="${X(v)}" y1="${Y(0)}" x2="${X(v)}" y2="${Y(0) + 4}" stroke="#333"/>`);
    o.push(`<text x="${X(v)}" y="${Y(0) + 17}" font-size="11" text-anchor="middle">${fmtTick(v)}</text>`);
  }
  o.push(`<line x1="${X(0)}" y1="${Y(0)}" x2="${X(xMax)}" y2="${Y(0)}" stroke="#333"/>`);
  o.push(`<line x1="${X(0)}" y1="${Y(0)}" x2="${X(0)}" y2="${Y(yMax)}" stroke="#333"/>`);
  o.push(`<text x="${X(xMax / 2)}" y="${Y(0) + 34}" font-size="12" text-anchor="middle">${esc(p.xLabel)}</text>`);
  o.push(`<text transform="translate(${ox + 14} ${Y(yMax / 2)}) rotate(-90)" font-size="12" text-anchor="middle">${esc(p.yLabel)}</text>`);
  p.series.forEach((s, si) => {
    const sorted = [...s.points].sort((a, b) => a.x - b.x);
    // Whiskers of different series at one x are set a little apart.
    const dx = (si - (p.series.length - 1) / 2) * 4;
    for (const q of sorted) {
      if (q.lo !== undefined && q.hi !== undefined) {
        o.push(`<line x1="${(X(q.x) + dx).toFixed(1)}" y1="${Y(q.lo).toFixed(1)}" x2="${(X(q.x) + dx).toFixed(1)}" y2="${Y(q.hi).toFixed(1)}" stroke="${s.color}" stroke-opacity="0.55" stroke-width="1.5"/>`);
      }
    }
    if (sorted.length > 1) {
      const d = sorted.map((q, i) => `${i === 0 ? 'M' : 'L'}${X(q.x).toFixed(1)},${Y(q.y).toFixed(1)}`).join(' ');
      o.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="${s.markers === false ? 1.2 : 2}"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    }
    if (s.markers !== false) for (const q of sorted) o.push(`<circle cx="${X(q.x).toFixed(1)}" cy="${Y(q.y).toFixed(1)}" r="3.2" fill="${s.color}"/>`);
  });
  // Legend: one row per series under the x-axis label.
  p.series.forEach((s, i) => {
    const lx = ox + m.l + 8;
    const ly = Y(0) + 52 + i * 16;
    o.push(`<line x1="${lx}" y1="${ly - 4}" x2="${lx + 22}" y2="${ly - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    if (s.markers !== false) o.push(`<circle cx="${lx + 11}" cy="${ly - 4}" r="3.2" fill="${s.color}"/>`);
    o.push(`<text x="${lx + 28}" y="${ly}" font-size="11">${esc(s.label)}</text>`);
  });
  if (p.note) o.push(`<text x="${ox + m.l}" y="${oy + h + 2}" font-size="10" fill="#555">${esc(p.note)}</text>`);
  return o.join('\n');
}

export function renderChart(title: string, panels: Panel[], opts: { width?: number; height?: number } = {}): string {
  const pw = opts.width ?? 500;
  const ph = opts.height ?? 400;
  const W = pw * panels.length;
  const H = ph + 40;
  const body = panels.map((p, i) => panel(p, i * pw, 30, pw, ph - 10)).join('\n');
  return [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif">`,
    `<rect width="${W}" height="${H}" fill="white"/>`,
    `<text x="12" y="20" font-size="15" font-weight="bold">${esc(title)}</text>`,
    body,
    '</svg>',
    '',
  ].join('\n');
}
