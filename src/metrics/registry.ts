// tsnet's Prometheus metrics, through prom-client (its exposition format,
// its process and heap collectors). Design notes:
// - prom-client takes ~55 ms to load; a managed plugin must listen within
//   dockerd's first 500 ms, so it is loaded after the socket listens (like
//   etcd3). What happens before that is queued and replayed into it, so the
//   counts still match what dockerd asked for.
// - Events on the request path (requests, latencies, kernel command
//   failures, reconcile runs) are counted as they happen. Everything that is
//   a state (networks, endpoints, ports, pools, utilisation, overlay peers
//   and FDB entries, etcd connection, store writes) is read from its owner
//   when Prometheus scrapes, so no second count can drift from the records.
import type { Registry } from 'prom-client';
import type { ReconcileReport } from '../driver/reconcile.js';
import type { Store } from '../store/store.js';
import { modeCounts, poolUsage } from './state.js';

export const CONTENT_TYPE = 'text/plain; version=0.0.4; charset=utf-8';

/** What the scrape reads from the rest of tsnet; each may be absent (no overlay, no cluster). */
export interface MetricSources {
  store: Store;
  /** per overlay network: peer VTEPs flooded to and FDB entries programmed */
  overlayForwarding?: () => Array<{ network: string; peers: number; fdb: number }>;
  /** absent: no cluster configured */
  etcd?: () => { up: boolean; relists: number };
  eventSubscribers?: () => number;
  /** dockerd's Engine API followed (container names); absent: TSNET_DOCKER_HOST=off */
  dockerd?: () => boolean;
  /** DNS queries on the overlays' gateways, by result */
  dnsQueries?: () => Record<string, number>;
}

/** The reconcile report's lists: what a run fixed, one counter label each. */
const FIX_KINDS = ['bridgesCreated', 'bridgesFixed', 'endpointsReattached', 'endpointsDropped', 'orphanLinksRemoved', 'staleChainsRemoved'] as const;

type Op =
  | { k: 'request'; method: string; outcome: string; seconds: number }
  | { k: 'command'; cmd: string; ok: boolean }
  | { k: 'reconcile'; report: ReconcileReport | undefined; seconds: number };

interface Live {
  registry: Registry;
  apply(op: Op): void;
}

const QUEUE_MAX = 10_000;

export class Metrics {
  readonly #sources: MetricSources;
  #live: Live | undefined;
  #loading: Promise<Live> | undefined;
  #queue: Op[] = [];

  constructor(sources: MetricSources) {
    this.#sources = sources;
  }

  /** A plugin request answered: method is the route (NetworkDriver.Join), outcome "ok" or the error code. */
  request(method: string, outcome: string, seconds: number): void {
    this.#op({ k: 'request', method, outcome, seconds });
  }

  /** A command the Runner started ended; only failures are exposed per command, with the total beside. */
  command(cmd: string, ok: boolean): void {
    this.#op({ k: 'command', cmd, ok });
  }

  /** A reconcile run ended; no report: it failed as a whole. */
  reconciled(report: ReconcileReport | undefined, seconds: number): void {
    this.#op({ k: 'reconcile', report, seconds });
  }

  #op(op: Op): void {
    if (this.#live) this.#live.apply(op);
    else if (this.#queue.length < QUEUE_MAX) this.#queue.push(op);
  }

  /** Load prom-client and build the registry (idempotent); replays what was queued. */
  load(): Promise<Live> {
    this.#loading ??= (async () => {
      const live = await build(this.#sources);
      for (const op of this.#queue) live.apply(op);
      this.#queue = [];
      this.#live = live;
      return live;
    })();
    return this.#loading;
  }

  /** The text exposition format, as Prometheus scrapes it. */
  async expose(): Promise<string> {
    return (await this.load()).registry.metrics();
  }
}

async function build(src: MetricSources): Promise<Live> {
  const mod = await import('prom-client');
  // prom-client is CommonJS: node gives its exports as named ones, the
  // plugin's esbuild bundle only as `default`.
  const prom = typeof mod.Registry === 'function' ? mod : (mod as unknown as { default: typeof mod }).default;
  const registry = new prom.Registry();
  const registers = [registry];
  prom.collectDefaultMetrics({ register: registry });
  // These two read NaN (written "Nan") whenever a scrape comes before the
  // event-loop monitor's next sample; the percentiles beside them stay.
  registry.removeSingleMetric('nodejs_eventloop_lag_mean_seconds');
  registry.removeSingleMetric('nodejs_eventloop_lag_stddev_seconds');

  const requests = new prom.Counter({ name: 'tsnet_requests_total', help: 'Plugin requests answered, by method and outcome (ok, or the TSNET_ERR_* code)', labelNames: ['method', 'outcome'], registers });
  const latency = new prom.Histogram({
    name: 'tsnet_request_duration_seconds',
    help: 'Time from request to answer, by method',
    labelNames: ['method'],
    // dockerd waits on CreateEndpoint and Join while a container starts: the
    // low buckets tell the warm-spare path (a few ms) from a cold one.
    buckets: [0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10],
    registers,
  });
  const commands = new prom.Counter({ name: 'tsnet_kernel_commands_total', help: 'Commands tsnet ran (ip, nft, iptables, bridge ...)', registers });
  const failures = new prom.Counter({ name: 'tsnet_kernel_command_failures_total', help: 'Commands that failed (non-zero exit, timeout, not found), by program; some (a missing link probed) are expected', labelNames: ['cmd'], registers });
  const reconciles = new prom.Counter({ name: 'tsnet_reconcile_runs_total', help: 'Reconcile runs, by outcome (ok, errors: some networks failed, failed: the run failed)', labelNames: ['outcome'], registers });
  const fixes = new prom.Counter({ name: 'tsnet_reconcile_fixes_total', help: 'What reconcile found wrong and fixed, by kind', labelNames: ['kind'], registers });
  const reconcileSeconds = new prom.Gauge({ name: 'tsnet_reconcile_last_duration_seconds', help: 'How long the last reconcile run took', registers });
  const reconcileAt = new prom.Gauge({ name: 'tsnet_reconcile_last_run_timestamp_seconds', help: 'When the last reconcile run ended (Unix time)', registers });
  // Every label the series can have is present from the start, so rate() works from the first scrape.
  for (const k of FIX_KINDS) fixes.inc({ kind: k }, 0);
  for (const o of ['ok', 'errors', 'failed']) reconciles.inc({ outcome: o }, 0);

  // One walk of the store per scrape, shared by the gauges that read it:
  // prom-client collects every metric of a scrape before the next macrotask.
  const perScrape = <T>(fn: () => T): (() => T) => {
    let cached: { value: T } | undefined;
    return () => {
      if (!cached) {
        cached = { value: fn() };
        setImmediate(() => (cached = undefined));
      }
      return cached.value;
    };
  };
  const counts = perScrape(() => modeCounts(src.store.state));
  const usage = perScrape(() => poolUsage(src.store.state));
  /** A gauge whose series are read from the store at scrape time, all replaced each time. */
  const stateGauge = (name: string, help: string, labelNames: string[], rows: () => Array<[Record<string, string>, number]>): void => {
    new prom.Gauge({
      name,
      help,
      labelNames,
      registers,
      collect() {
        this.reset();
        for (const [labels, n] of rows()) this.set(labels, n);
      },
    });
  };
  stateGauge('tsnet_networks', 'Networks in the store, by mode', ['mode'], () => Object.entries(counts().networks).map(([mode, n]) => [{ mode }, n]));
  stateGauge('tsnet_endpoints', 'Endpoints in the store, by the mode of their network', ['mode'], () => Object.entries(counts().endpoints).map(([mode, n]) => [{ mode }, n]));
  stateGauge('tsnet_published_ports', 'Published host ports, by network mode and protocol', ['mode', 'proto'], () => counts().ports.map((p) => [{ mode: p.mode, proto: p.proto }, p.count]));
  stateGauge('tsnet_pools', 'IPAM pools, by who hands their addresses out (local: this host; cluster: cluster-wide, through etcd)', ['mode'], () => Object.entries(counts().pools).map(([mode, n]) => [{ mode }, n]));
  stateGauge('tsnet_ipam_allocated_addresses', 'Addresses allocated in a pool (gateway, aux and endpoint addresses)', ['pool', 'range'], () => usage().map((u) => [{ pool: u.pool, range: u.range }, u.allocated]));
  stateGauge('tsnet_ipam_capacity_addresses', 'Addresses a pool can hand out', ['pool', 'range'], () => usage().map((u) => [{ pool: u.pool, range: u.range }, u.capacity]));
  stateGauge('tsnet_ipam_utilisation_ratio', 'Allocated over capacity, per pool', ['pool', 'range'], () => usage().map((u) => [{ pool: u.pool, range: u.range }, u.capacity > 0 ? u.allocated / u.capacity : 1]));

  // Store figures: the store counts them itself (it also serves the benchmark).
  new prom.Counter({
    name: 'tsnet_store_writes_total',
    help: 'Durable store writes, by kind (full: state.json rewritten; journal: one line appended)',
    labelNames: ['kind'],
    registers,
    collect() {
      this.reset();
      this.inc({ kind: 'full' }, src.store.writes - src.store.appends);
      this.inc({ kind: 'journal' }, src.store.appends);
    },
  });
  new prom.Counter({
    name: 'tsnet_store_journal_folds_total',
    help: 'Times the journal was folded into a new state.json',
    registers,
    collect() {
      this.reset();
      this.inc(src.store.folds);
    },
  });
  new prom.Counter({
    name: 'tsnet_store_write_failures_total',
    help: 'Store writes that failed (the requests waiting on them failed too)',
    registers,
    collect() {
      this.reset();
      this.inc(src.store.writeFailures);
    },
  });
  new prom.Gauge({
    name: 'tsnet_store_generation',
    help: 'Generation of the state on disk',
    registers,
    collect() {
      this.set(src.store.generation);
    },
  });

  new prom.Gauge({
    name: 'tsnet_overlay_peers',
    help: 'Other hosts (VTEPs) an overlay floods to, per network',
    labelNames: ['network'],
    registers,
    collect() {
      this.reset();
      for (const o of src.overlayForwarding?.() ?? []) this.set({ network: o.network }, o.peers);
    },
  });
  new prom.Gauge({
    name: 'tsnet_overlay_fdb_entries',
    help: 'FDB entries tsnet programmed on an overlay\'s VXLAN port (remote endpoints and flood entries)',
    labelNames: ['network'],
    registers,
    collect() {
      this.reset();
      for (const o of src.overlayForwarding?.() ?? []) this.set({ network: o.network }, o.fdb);
    },
  });
  if (src.etcd) {
    const etcd = src.etcd;
    // Only with a cluster configured: a 0 would read as "etcd down".
    new prom.Gauge({
      name: 'tsnet_etcd_up',
      help: '1 when etcd answered the last call and this host\'s lease is alive',
      registers,
      collect() {
        this.set(etcd().up ? 1 : 0);
      },
    });
    new prom.Counter({
      name: 'tsnet_etcd_watch_relists_total',
      help: 'Times an overlay\'s etcd watch was cancelled (compaction, lost stream) and the prefix listed again',
      registers,
      collect() {
        this.reset();
        this.inc(etcd().relists);
      },
    });
  }
  if (src.dockerd) {
    const dockerd = src.dockerd;
    // Only with TSNET_DOCKER_HOST set: a 0 would read as "dockerd lost".
    new prom.Gauge({
      name: 'tsnet_dockerd_up',
      help: "1 while tsnet follows dockerd's Engine API (container names), 0 while it cannot",
      registers,
      collect() {
        this.set(dockerd() ? 1 : 0);
      },
    });
  }
  new prom.Counter({
    name: 'tsnet_dns_queries_total',
    help: "DNS queries on the overlays' gateway addresses, by result: answered, nodata, forwarded, refused, malformed, notimp, servfail, dropped",
    labelNames: ['result'],
    registers,
    collect() {
      this.reset();
      for (const [result, n] of Object.entries(src.dnsQueries?.() ?? {})) this.inc({ result }, n);
    },
  });
  new prom.Gauge({
    name: 'tsnet_event_subscribers',
    help: 'Clients following tsnetctl events',
    registers,
    collect() {
      this.set(src.eventSubscribers?.() ?? 0);
    },
  });

  return {
    registry,
    apply(op) {
      if (op.k === 'request') {
        requests.inc({ method: op.method, outcome: op.outcome });
        latency.observe({ method: op.method }, op.seconds);
      } else if (op.k === 'command') {
        commands.inc();
        if (!op.ok) failures.inc({ cmd: op.cmd });
      } else {
        const r = op.report;
        reconciles.inc({ outcome: !r ? 'failed' : r.errors.length > 0 ? 'errors' : 'ok' });
        for (const k of FIX_KINDS) if (r && r[k].length > 0) fixes.inc({ kind: k }, r[k].length);
        reconcileSeconds.set(op.seconds);
        reconcileAt.set(Date.now() / 1000);
      }
    },
  };
}
