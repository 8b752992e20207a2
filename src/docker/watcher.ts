// Learns the names of the containers on tsnet's endpoints from the Engine
// API, in the background, and keeps them on the endpoint records (`dns`).
// Design notes:
// - Started after the plugin socket listens; nothing a request handler does
//   waits on it (engine.ts says why that matters). A dockerd that is down,
//   restarting or not serving its API yet is retried with backoff.
// - On every (re)connect: the event stream first, then the list of running
//   containers, so nothing that happens in between is missed. Containers
//   whose names went while dockerd was away are forgotten.
// - An event only says which container to look at; the inspect says what is
//   true. Containers to look at are a set, inspected a few at a time, each
//   one at most once at a time, so a burst of starts costs one inspect per
//   container and an event during an inspect makes one more.
// - A container disconnected or removed loses its names at once, without an
//   inspect (which would wait for the container's lock while it stops).
// - The records are written lazily and at most twice a second, as one
//   journal line (store.commitLazy): a burst of container starts must not
//   queue an fsync per container in front of the plugin's own writes, and
//   names lost in a crash are learned again from dockerd.
import type { Logger } from 'pino';
import type { Store } from '../store/store.js';
import type { EndpointDns, EndpointRecord } from '../store/schema.js';
import { EngineClient, negotiateApiVersion, type ContainerView, type EngineEvent } from './engine.js';

const CONCURRENCY = 4;
const WRITE_DELAY_MS = 500;
const RETRIES = 5;

export interface WatcherOptions {
  socket: string;
  store: Store;
  log: Logger;
  /** endpoints whose names were set, changed or cleared; must not throw */
  onNames?: (endpointIds: string[]) => void;
  backoff?: { initialMs: number; maxMs: number };
  /** per Engine API call (tests shorten it) */
  callTimeoutMs?: number;
}

export interface WatcherStatus {
  socket: string;
  connected: boolean;
  dockerd?: string;
  apiVersion?: string;
  lastError?: string;
  /** successful connections so far (1 after the first) */
  connects: number;
}

export function sameDns(a: EndpointDns | undefined, b: EndpointDns | undefined): boolean {
  if (!a || !b) return a === b;
  return a.container === b.container && a.name === b.name && a.network === b.network && a.names.length === b.names.length && a.names.every((n, i) => n === b.names[i]);
}

/**
 * What a container's inspect means for the endpoint records: the names each
 * of its endpoints that tsnet holds should carry, and which records of the
 * container carry names they should no longer have.
 */
export function namesFor(containerId: string, view: ContainerView | undefined, endpoints: Record<string, EndpointRecord>): Map<string, EndpointDns | undefined> {
  const changes = new Map<string, EndpointDns | undefined>();
  const wanted = new Map<string, EndpointDns>();
  for (const n of view?.networks ?? []) {
    // Matched by endpoint ID and network: the endpoint must be ours.
    if (endpoints[n.endpointId]?.networkId !== n.networkId) continue;
    wanted.set(n.endpointId, { container: containerId, name: view!.name, names: n.names, network: n.networkName });
  }
  for (const ep of Object.values(endpoints)) {
    const want = wanted.get(ep.id);
    if (want) {
      if (!sameDns(ep.dns, want)) changes.set(ep.id, want);
    } else if (ep.dns?.container === containerId) changes.set(ep.id, undefined);
  }
  return changes;
}

export class ContainerWatcher {
  readonly #engine: EngineClient;
  readonly #store: Store;
  readonly #log: Logger;
  readonly #onNames: (ids: string[]) => void;
  readonly #backoff: { initialMs: number; maxMs: number };
  #api: string | undefined;
  #closed = false;
  #abort: AbortController | undefined;
  #wake: (() => void) | undefined;
  #running: Promise<void> | undefined;
  readonly #dirty = new Set<string>();
  readonly #busy = new Set<string>();
  readonly #tries = new Map<string, number>();
  #inFlight = 0;
  #idle: Array<() => void> = [];
  readonly status: WatcherStatus;

  constructor(opts: WatcherOptions) {
    this.#engine = new EngineClient(opts.socket, opts.callTimeoutMs !== undefined ? { timeoutMs: opts.callTimeoutMs } : {});
    this.#store = opts.store;
    this.#log = opts.log.child({ component: 'docker' });
    this.#onNames = opts.onNames ?? (() => undefined);
    this.#backoff = opts.backoff ?? { initialMs: 250, maxMs: 10_000 };
    this.status = { socket: opts.socket, connected: false, connects: 0 };
  }

  start(): void {
    this.#running ??= this.#run();
  }

  async #run(): Promise<void> {
    let delay = this.#backoff.initialMs;
    let failures = 0;
    while (!this.#closed) {
      const abort = new AbortController();
      this.#abort = abort;
      try {
        const server = await this.#engine.version();
        const api = negotiateApiVersion(server);
        const { done } = await this.#engine.events(api, (e) => this.#onEvent(e), abort.signal);
        this.#api = api;
        Object.assign(this.status, { connected: true, dockerd: server.version, apiVersion: api, connects: this.status.connects + 1 });
        delete this.status.lastError;
        this.#log.info({ socket: this.#engine.socket, dockerd: server.version, api }, 'following dockerd\'s containers for their names');
        delay = this.#backoff.initialMs;
        failures = 0;
        this.#relist(api).catch((err: unknown) => {
          this.#log.warn({ err: (err as Error).message }, 'cannot list dockerd\'s containers; reconnecting');
          abort.abort();
        });
        await done;
        if (!this.#closed) this.#log.info('dockerd ended the event stream (restarting?); reconnecting');
      } catch (err) {
        if (this.#closed) break;
        const msg = (err as Error).message;
        this.status.lastError = msg;
        // Once per outage, then every 20th attempt: dockerd may be away for long.
        if (failures++ % 20 === 0) this.#log.warn({ socket: this.#engine.socket, err: msg }, 'cannot follow dockerd\'s containers yet (names across hosts wait for it); retrying');
      } finally {
        abort.abort();
        this.#api = undefined;
        this.status.connected = false;
      }
      if (this.#closed) break;
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, delay);
        this.#wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.#wake = undefined;
      delay = Math.min(delay * 2, this.#backoff.maxMs);
    }
  }

  async #relist(api: string): Promise<void> {
    const running = await this.#engine.runningContainers(api);
    if (this.#api !== api) return;
    const ids = new Set(running.map((c) => c.id));
    const endpoints = this.#store.state.endpoints;
    // Names of containers that went while dockerd was not watched.
    const gone = new Map<string, EndpointDns | undefined>();
    for (const ep of Object.values(endpoints)) if (ep.dns && !ids.has(ep.dns.container)) gone.set(ep.id, undefined);
    this.#write(gone);
    for (const c of running) if (c.endpointIds.some((id) => endpoints[id])) this.#mark(c.id);
  }

  #onEvent(e: EngineEvent): void {
    if (e.type === 'network') {
      const container = e.attributes.container;
      if (!container) return;
      if (e.action === 'connect') this.#mark(container);
      else if (e.action === 'disconnect') this.#forget(container, e.actorId);
    } else if (e.type === 'container') {
      if (e.action === 'destroy') {
        this.#dirty.delete(e.actorId);
        this.#forget(e.actorId);
      } else if (e.action === 'rename') this.#mark(e.actorId);
    }
  }

  /** Clear a container's names (on one network, or all). */
  #forget(container: string, networkId?: string): void {
    const changes = new Map<string, EndpointDns | undefined>();
    for (const ep of Object.values(this.#store.state.endpoints)) {
      if (ep.dns?.container === container && (networkId === undefined || ep.networkId === networkId)) changes.set(ep.id, undefined);
    }
    this.#write(changes);
  }

  #write(changes: Map<string, EndpointDns | undefined>): void {
    if (changes.size === 0) return;
    const endpoints = this.#store.state.endpoints;
    const ids: string[] = [];
    for (const [id, dns] of changes) {
      const ep = endpoints[id];
      if (!ep) continue;
      if (dns) ep.dns = dns;
      else delete ep.dns;
      ids.push(id);
    }
    if (ids.length === 0) return;
    for (const id of ids) this.#unwritten.add(id);
    this.#flushTimer ??= setTimeout(() => this.#flush(), WRITE_DELAY_MS);
    this.#log.debug({ endpoints: ids.map((id) => ({ id: id.slice(0, 12), names: endpoints[id]?.dns?.names ?? [] })) }, 'container names updated');
    try {
      this.#onNames(ids);
    } catch (err) {
      this.#log.error({ err }, 'a names listener failed');
    }
  }

  readonly #unwritten = new Set<string>();
  #flushTimer: NodeJS.Timeout | undefined;

  #flush(): void {
    this.#flushTimer = undefined;
    if (this.#unwritten.size === 0) return;
    this.#store.commitLazy([...this.#unwritten].map((id) => ['endpoints', id]));
    this.#unwritten.clear();
  }

  #mark(id: string): void {
    this.#dirty.add(id);
    this.#pump();
  }

  #pump(): void {
    while (this.#inFlight < CONCURRENCY) {
      const id = [...this.#dirty].find((d) => !this.#busy.has(d));
      if (id === undefined) break;
      this.#dirty.delete(id);
      this.#busy.add(id);
      this.#inFlight++;
      void this.#inspect(id).finally(() => {
        this.#busy.delete(id);
        this.#inFlight--;
        this.#pump();
        if (this.#inFlight === 0 && this.#dirty.size === 0) for (const r of this.#idle.splice(0)) r();
      });
    }
  }

  async #inspect(id: string): Promise<void> {
    const api = this.#api;
    // Disconnected: the relist after the reconnect looks at it again.
    if (!api || this.#closed) return;
    try {
      const view = await this.#engine.inspect(api, id);
      this.#tries.delete(id);
      if (this.#closed) return;
      this.#write(namesFor(id, view, this.#store.state.endpoints));
    } catch (err) {
      const tries = (this.#tries.get(id) ?? 0) + 1;
      if (tries >= RETRIES || this.#closed) {
        this.#tries.delete(id);
        this.#log.warn({ container: id.slice(0, 12), err: (err as Error).message }, 'cannot inspect a container; its names stay as they were');
        return;
      }
      this.#tries.set(id, tries);
      setTimeout(() => this.#mark(id), 500 * tries).unref();
    }
  }

  /** Resolves once no container is waiting to be looked at (tests). */
  settled(): Promise<void> {
    if (this.#inFlight === 0 && this.#dirty.size === 0) return Promise.resolve();
    return new Promise((r) => this.#idle.push(r));
  }

  async close(): Promise<void> {
    this.#closed = true;
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#flush();
    this.#abort?.abort();
    this.#wake?.();
    await this.#engine.close();
    await this.#running?.catch(() => undefined);
    for (const r of this.#idle.splice(0)) r();
  }
}
