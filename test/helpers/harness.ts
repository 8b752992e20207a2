// The API-tier harness: the real app (buildApp) over the real driver, IPAM,
// firewall and JSON store in a throwaway directory, with a FakeRunner in
// place of the kernel. Each call builds its own, so tests stay independent;
// everything is closed and removed in the test's teardown.
import { mkdtemp, readFile, rm } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import type { FastifyInstance } from 'fastify';
import { buildApp } from '../../src/app.js';
import { parseDefaultPools } from '../../src/config.js';
import { buildServices, type Services } from '../../src/services.js';
import type { OverlayManager } from '../../src/overlay/manager.js';
import { Store, decodeFile } from '../../src/store/store.js';
import type { State } from '../../src/store/schema.js';
import { FakeRunner, keepAlive, silentLogger } from './fake-runner.js';
import { EventBus } from '../../src/events.js';
import { Metrics } from '../../src/metrics/registry.js';
import { observeAnswers } from '../../src/observe.js';

export interface Harness {
  app: FastifyInstance;
  runner: FakeRunner;
  store: Store;
  dir: string;
  /** the metrics and event stream, wired as main.ts wires them */
  metrics: Metrics;
  events: EventBus;
  overlay: OverlayManager;
  /** every service, as buildServices wired them (reconcile, the routed runtime) */
  services: Services;
  /** POST /<method> the way dockerd does: JSON + "\n", no Content-Type. */
  call(method: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown>; raw: string; contentType: string | undefined }>;
  /** The state as it is on disk now (decoded and checksum-verified). */
  diskState(): Promise<State>;
  /** Close the app and release the store now (teardown then does nothing more). */
  close(): Promise<void>;
}

interface TeardownHost {
  teardown(fn: () => unknown): void;
}

/**
 * opts.dir reuses a directory (a "restart" over the same state); the caller
 * then owns it. Otherwise a fresh one is made and removed at teardown.
 */
export async function buildHarness(t: TeardownHost, opts: { defaultPools?: string; runner?: FakeRunner; dir?: string } = {}): Promise<Harness> {
  const dir = opts.dir ?? (await mkdtemp(path.join(os.tmpdir(), 'tsnet-api-')));
  const log = silentLogger();
  const runner = opts.runner ?? new FakeRunner();
  const store = new Store({ dir: path.join(dir, 'state'), log, noSync: true });
  await store.open();
  const services = buildServices({
    runner,
    store,
    log,
    vxlanPort: 4789,
    advertiseAddr: undefined,
    defaultPools: parseDefaultPools(opts.defaultPools ?? '10.210.0.0/16:24,fd74:736e:6574::/48:64'),
  });
  const { driver, ipam, overlay, ports } = services;
  const events = new EventBus();
  const metrics = new Metrics({ store, overlayForwarding: () => overlay.forwarding().map((f) => ({ network: f.networkId, peers: f.peers, fdb: f.fdb })), eventSubscribers: () => events.subscribers });
  const app = buildApp({ driver, ipam, log, metrics, onAnswer: observeAnswers(metrics, events, store) });
  await app.ready();
  let closed = false;
  const close = (): Promise<void> =>
    keepAlive(async () => {
      if (closed) return;
      closed = true;
      await app.close();
      // Published ports hold real loopback sockets (the userland proxy).
      await ports.closeAll();
      await store.close();
    });
  t.teardown(async () => {
    await close();
    if (!opts.dir) await rm(dir, { recursive: true, force: true });
  });
  return {
    app,
    runner,
    store,
    dir,
    metrics,
    events,
    overlay,
    services,
    async call(method, body) {
      const res = await app.inject({
        method: 'POST',
        url: `/${method}`,
        headers: { accept: 'application/vnd.docker.plugins.v1.2+json' },
        ...(body === undefined ? {} : { payload: `${JSON.stringify(body)}\n` }),
      });
      let parsed: Record<string, unknown>;
      try {
        parsed = JSON.parse(res.body) as Record<string, unknown>;
      } catch {
        parsed = { __unparsable: res.body };
      }
      const ct = res.headers['content-type'];
      return { status: res.statusCode, body: parsed, raw: res.body, contentType: typeof ct === 'string' ? ct : undefined };
    },
    close,
    async diskState() {
      const decoded = decodeFile(await readFile(store.file, 'utf8'));
      if (typeof decoded === 'string') throw new Error(`state file unreadable: ${decoded}`);
      // What a restart would see: state.json with its journal replayed.
      const loaded = await store.load();
      if (loaded.source !== 'current') throw new Error(`state on disk is not clean: ${loaded.problems.join('; ')}`);
      return loaded.state;
    },
  };
}

/** A CreateNetwork body as dockerd sends it for `--subnet S --gateway G`. */
export function createNetworkBody(
  id: string,
  opts: { pool?: string; gateway?: string; generic?: Record<string, string>; top?: Record<string, unknown>; ipv6?: Array<{ Pool: string; Gateway?: string }> } = {},
): Record<string, unknown> {
  const pool = opts.pool ?? '10.10.0.0/24';
  return {
    NetworkID: id,
    Options: {
      'com.docker.network.enable_ipv4': true,
      'com.docker.network.enable_ipv6': (opts.ipv6?.length ?? 0) > 0,
      'com.docker.network.generic': opts.generic ?? {},
      ...opts.top,
    },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: pool, Gateway: opts.gateway ?? gatewayOf(pool) }],
    IPv6Data: (opts.ipv6 ?? []).map((d) => ({ AddressSpace: 'LocalDefault', ...d })),
  };
}

function gatewayOf(pool: string): string {
  const [base, bits] = pool.split('/') as [string, string];
  const parts = base.split('.');
  parts[3] = String(Number(parts[3]) + 1);
  return `${parts.join('.')}/${bits}`;
}
