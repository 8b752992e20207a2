// Reading /metrics in tests: the text goes through a Prometheus text-format
// parser (prom2javascript; parse-prometheus-text-format was tried and
// merges the series of a labelled histogram into one), never through
// ad-hoc regexes, so a malformed exposition fails the test.
import { Readable } from 'node:stream';
import { getMetricsFromStream, type PromData, type PromHistogramData, type PromMetrics } from 'prom2javascript';

function matches(labels: Record<string, string>, want: Record<string, string>): boolean {
  return Object.entries(want).every(([k, v]) => labels[k] === v);
}

export class Scrape {
  readonly metrics: PromMetrics;

  private constructor(metrics: PromMetrics) {
    this.metrics = metrics;
  }

  static async parse(text: string): Promise<Scrape> {
    return new Scrape(await getMetricsFromStream(Readable.from([text])));
  }

  /** The value of the first sample with (at least) these labels; undefined when there is none. */
  value(name: string, labels: Record<string, string> = {}): number | undefined {
    return (this.metrics[name]?.data as PromData[] | undefined)?.find((d) => matches(d.labels, labels))?.value;
  }

  /** The sum over every sample of a family that has these labels (0 when none). */
  sum(name: string, labels: Record<string, string> = {}): number {
    return ((this.metrics[name]?.data ?? []) as PromData[]).filter((d) => matches(d.labels, labels)).reduce((a, d) => a + d.value, 0);
  }

  /** A histogram's observation count for these labels. */
  count(name: string, labels: Record<string, string> = {}): number | undefined {
    return (this.metrics[name]?.data as PromHistogramData[] | undefined)?.find((d) => matches(d.labels, labels))?.count;
  }
}
