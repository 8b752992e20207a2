// Names across hosts, wired: the Engine API watcher that learns the names
// of this host's containers, the directory that scopes and resolves them
// (with other hosts' names from etcd), and the DNS server on the overlays'
// gateway addresses. main.ts loads this after the plugin socket listens,
// like etcd3 and prom-client, and nothing a request handler does waits on it.
import type { Logger } from 'pino';
import type { State } from '../store/schema.js';
import type { Store } from '../store/store.js';
import { ContainerWatcher, type WatcherStatus } from '../docker/watcher.js';
import { Forwarder, ResolvConf } from './forward.js';
import { NameDirectory, type NameDirectoryDeps, type NameEntry } from './names.js';
import { DnsServer, type Listen } from './server.js';

/** Re-try binds that failed (a bridge not up yet) and follow networks changed behind our back. */
const SYNC_INTERVAL_MS = 10_000;

export interface NamesServiceOptions {
  store: Store;
  log: Logger;
  /** dockerd's socket; undefined: names are not learned (TSNET_DOCKER_HOST=off) */
  dockerSocket: string | undefined;
  /** serve DNS on the overlays' gateways (TSNET_DNS) */
  dns: boolean;
  remote?: NameDirectoryDeps['remote'];
  hostId?: NameDirectoryDeps['hostId'];
  /** endpoints whose names changed (to publish them with the endpoint) */
  onNames?: (endpointIds: string[]) => void;
  port?: number;
  resolvConf?: string;
}

/**
 * Where tsnet answers DNS: the IPv4 and IPv6 gateway addresses of every
 * network whose endpoints hosts publish in etcd (cluster overlays and
 * routed networks), on its bridge on every host.
 */
export function dnsListenAddresses(state: State): Listen[] {
  const out: Listen[] = [];
  for (const net of Object.values(state.networks)) {
    if (net.overlay?.mode !== 'cluster' && net.routed?.mode !== 'cluster') continue;
    for (const sub of [...(net.inhibitIpv4 ? [] : net.ipv4), ...net.ipv6]) {
      if (!sub.gateway) continue;
      const address = sub.gateway.slice(0, sub.gateway.indexOf('/'));
      if (!out.some((o) => o.address === address)) out.push({ address, network: net.id });
    }
  }
  return out;
}

export interface NamesStatus {
  dockerd: WatcherStatus | null;
  dns: { enabled: boolean; port: number; listening: ReturnType<DnsServer['listening']>; queries: Record<string, number>; upstreams: string[] };
  networks: Array<{ id: string; name: string | null; mode: string; names: NameEntry[] }>;
}

export class NamesService {
  readonly names: NameDirectory;
  readonly watcher: ContainerWatcher | undefined;
  readonly server: DnsServer | undefined;
  readonly #store: Store;
  readonly #resolv: ResolvConf;
  #timer: NodeJS.Timeout | undefined;

  constructor(opts: NamesServiceOptions) {
    this.#store = opts.store;
    this.names = new NameDirectory({ store: opts.store, ...(opts.remote ? { remote: opts.remote } : {}), ...(opts.hostId ? { hostId: opts.hostId } : {}) });
    this.watcher = opts.dockerSocket ? new ContainerWatcher({ socket: opts.dockerSocket, store: opts.store, log: opts.log, ...(opts.onNames ? { onNames: opts.onNames } : {}) }) : undefined;
    this.#resolv = new ResolvConf(opts.resolvConf);
    if (opts.dns) {
      const forwarder = new Forwarder({ servers: () => this.#resolv.servers(), own: () => this.server?.addresses() ?? new Set() });
      this.server = new DnsServer({ names: this.names, forwarder, log: opts.log, ...(opts.port !== undefined ? { port: opts.port } : {}) });
    }
  }

  start(): void {
    this.watcher?.start();
    if (!this.server) return;
    void this.syncListeners();
    this.#timer = setInterval(() => void this.syncListeners(), SYNC_INTERVAL_MS);
    this.#timer.unref();
  }

  /** Listen where the store says overlays are (after network changes and reconciles). */
  syncListeners(): Promise<void> {
    return this.server?.sync(dnsListenAddresses(this.#store.state)) ?? Promise.resolve();
  }

  async status(): Promise<NamesStatus> {
    const networks = Object.values(this.#store.state.networks).map((n) => ({ id: n.id, name: this.names.networkName(n.id) ?? null, mode: n.mode, names: this.names.entries(n.id) }));
    return {
      dockerd: this.watcher ? { ...this.watcher.status } : null,
      dns: {
        enabled: this.server !== undefined,
        port: this.server?.port ?? 53,
        listening: this.server?.listening() ?? [],
        queries: { ...(this.server?.counts ?? {}) },
        upstreams: this.server ? await this.#resolv.servers() : [],
      },
      networks,
    };
  }

  async close(): Promise<void> {
    if (this.#timer) clearInterval(this.#timer);
    await this.watcher?.close();
    await this.server?.close();
  }
}
