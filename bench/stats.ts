// Figures as the benchmarks report them: median of interleaved runs, with
// min and max, and ratios against Docker's own driver measured in the same run.
export interface Summary {
  n: number;
  median: number;
  min: number;
  max: number;
  p99: number;
}

export function summarize(values: number[]): Summary {
  if (values.length === 0) return { n: 0, median: NaN, min: NaN, max: NaN, p99: NaN };
  const s = [...values].sort((a, b) => a - b);
  const q = (p: number): number => {
    const idx = (s.length - 1) * p;
    const lo = Math.floor(idx);
    const hi = Math.ceil(idx);
    return s[lo]! + (s[hi]! - s[lo]!) * (idx - lo);
  };
  return { n: s.length, median: q(0.5), min: s[0]!, max: s[s.length - 1]!, p99: q(0.99) };
}

export function fmt(v: number, digits = 1): string {
  return Number.isFinite(v) ? v.toFixed(digits) : 'n/a';
}

export function ratio(a: number, b: number): string {
  return Number.isFinite(a) && Number.isFinite(b) && b > 0 ? (a / b).toFixed(2) : 'n/a';
}

export async function timeIt(fn: () => Promise<unknown>): Promise<number> {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
}

/** Markdown table from rows of cells. */
export function table(head: string[], rows: string[][]): string {
  const line = (cells: string[]): string => `| ${cells.join(' | ')} |`;
  return [line(head), line(head.map(() => '---')), ...rows.map(line)].join('\n');
}
