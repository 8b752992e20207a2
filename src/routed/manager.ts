// Networks routed across hosts, at run time: each host routes every other
// host's blocks of the subnet through that host's LAN address, and keeps
// the routes, the bridge's proxy-NDP entries and the firewall's peer sets in
// step with what it knows of the other hosts. Design notes:
// - Cluster form: the blocks and members come from etcd (followed through
//   cluster/networks.ts, one watch per network, a re-list after a lost
//   watch). A host's routes go when it leaves the network or its lease
//   expires (its membership key is leased; its blocks are not, so they come
//   back with it); a host whose address changed is re-pointed to.
// - Static form: the peers come from tsnet.peers, once.
// - Overlays with tsnet.backend=auto use the same machinery for the members
//   on this host's LAN (OverlayManager asks, and leaves those hosts out of
//   VXLAN); the others stay on VXLAN.
// - Each change is a diff against what the kernel holds, applied with one
//   `ip -batch` and one `nft -f`. What the kernel holds is read once per
//   start (routes tagged with ROUTE_PROTO inside the network's subnets, the
//   bridge's proxy entries), so a restarted tsnet removes routes to hosts
//   that left while it was away, and leaves the rest untouched until etcd
//   answers: with etcd down nothing is removed and traffic flows on.
// - Routes of networks tsnet no longer holds go at reconcile.
import type { Logger } from 'pino';
import type { NetworkView } from '../cluster/registry.js';
import type { ClusterNetworks } from '../cluster/networks.js';
import { batchLine, listAddrs, listProtoRoutes, listProxyNeigh } from '../kernel/ip.js';
import type { Runner } from '../kernel/exec.js';
import { shortId } from '../kernel/names.js';
import { nftApply } from '../firewall/nft.js';
import { renderPeerSources } from '../firewall/routed-rules.js';
import { containsPrefix, formatIp, parseIp, parsePrefix, type Prefix } from '../net/cidr.js';
import { findUnderlay, type Underlay } from '../overlay/manager.js';
import type { Store } from '../store/store.js';
import type { NetworkRecord } from '../store/schema.js';
import { connectedPrefixes, desiredState, onLink, peersFromView, peerWarning, routeLines, ROUTE_PROTO, type ConnectedPrefix, type Desired, type PeerReport, type RoutedPeer, type RouteValue } from './routes.js';

export interface RoutedDeps {
  runner: Runner;
  store: Store;
  cluster: ClusterNetworks;
  log: Logger;
  advertiseAddr: string | undefined;
}

interface KernelState {
  routes: Map<string, RouteValue>;
  proxy6: Set<string>;
}

interface Runtime {
  net: NetworkRecord;
  /** what the kernel holds; undefined: read it before the next change */
  have: KernelState | undefined;
  /** the peer-set script last applied */
  sources: string | undefined;
  /** the last input, to program again after a reconcile */
  last: { peers: RoutedPeer[]; local: Prefix[] } | undefined;
  desired: Desired | undefined;
  /** peers reported as not routable, so each is logged once */
  warned: Set<string>;
  busy: Promise<void>;
}

/** The subnets of a network, parsed. */
function subnetsOf(net: NetworkRecord, family?: 4 | 6): Prefix[] {
  const subnets = [...(family === 6 ? [] : net.ipv4), ...(family === 4 ? [] : net.ipv6)];
  return subnets.map((s) => parsePrefix(s.pool)).filter((p): p is Prefix => p !== undefined);
}

/** Whether a network's subnet is routed across hosts by this module. */
export function isRouted(net: NetworkRecord): boolean {
  return net.routed !== undefined || net.overlay?.backend === 'auto';
}

export class RoutedManager {
  readonly #runner: Runner;
  readonly #store: Store;
  readonly #cluster: ClusterNetworks;
  readonly #log: Logger;
  readonly #advertise: string | undefined;
  readonly #nets = new Map<string, Runtime>();
  /** networks stopped: a view still in flight for one must not bring its routes back (IDs are never reused) */
  readonly #stopped = new Set<string>();

  constructor(deps: RoutedDeps) {
    this.#runner = deps.runner;
    this.#store = deps.store;
    this.#cluster = deps.cluster;
    this.#log = deps.log.child({ component: 'routed' });
    this.#advertise = deps.advertiseAddr;
  }

  /** This host's underlay (TSNET_ADVERTISE_ADDR, else the default route's interface): the routed network's default MTU. */
  underlay(): Promise<Underlay> {
    return findUnderlay(this.#runner, this.#advertise);
  }

  /** This host's own addresses (a static peer list may name them). */
  async ownAddresses(): Promise<Set<string>> {
    const out = new Set<string>();
    for (const l of await listAddrs(this.#runner)) {
      for (const a of l.addr_info) {
        const ip = parseIp(a.local);
        if (ip) out.add(formatIp(ip));
      }
    }
    return out;
  }

  #runtime(net: NetworkRecord): Runtime {
    let rt = this.#nets.get(net.id);
    if (!rt) this.#nets.set(net.id, (rt = { net, have: undefined, sources: undefined, last: undefined, desired: undefined, warned: new Set(), busy: Promise.resolve() }));
    return rt;
  }

  #enqueue<T>(rt: Runtime, fn: () => Promise<T>): Promise<T> {
    const job = rt.busy.then(fn);
    rt.busy = job.then(
      () => undefined,
      () => undefined,
    );
    return job;
  }

  /** Start a routed network (after create, and at start-up). Never throws: etcd may be away. */
  start(net: NetworkRecord): void {
    if (this.#nets.has(net.id) || !net.routed || this.#stopped.has(net.id)) return;
    const rt = this.#runtime(net);
    if (net.routed.mode === 'static') {
      const peers: RoutedPeer[] = net.routed.peers.map((p) => {
        const v6 = p.address.includes(':');
        return { host: p.address, ...(v6 ? { addr6: p.address } : { addr4: p.address }), prefixes: [parsePrefix(p.block)!] };
      });
      void this.#enqueue(rt, () => this.#program(rt, peers, [])).catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'cannot program the static peers\' routes'));
      return;
    }
    // Endpoints are published for names only: routes go to blocks, not to containers.
    this.#cluster.follow(net, { onView: (view) => this.#converge(rt, view), endpoints: { vtep: (local) => local } });
  }

  async #converge(rt: Runtime, view: NetworkView): Promise<void> {
    const { peers, ownClaims, ignored } = peersFromView(view, this.#cluster.hostId, subnetsOf(rt.net));
    if (ignored.length > 0) this.#log.warn({ networkId: rt.net.id, ignored }, 'etcd holds blocks or claims outside the network\'s subnet; not routing them');
    await this.#enqueue(rt, () => this.#program(rt, [...peers.values()], ownClaims));
  }

  /**
   * An overlay with tsnet.backend=auto: route the members on this host's
   * LAN directly and return them; the overlay keeps the others on VXLAN.
   * Their claims inside a direct member's block stay on the bridge (VXLAN).
   */
  async direct(net: NetworkRecord, view: NetworkView): Promise<Set<string>> {
    if (this.#stopped.has(net.id)) return new Set();
    const rt = this.#runtime(net);
    const me = this.#cluster.hostId;
    const { peers, ownClaims } = peersFromView(view, me, subnetsOf(net, 4));
    return this.#enqueue(rt, async () => {
      const connected = await this.#connected();
      const direct = new Set<string>();
      for (const [host, m] of view.members) {
        const addr = typeof m?.addr4 === 'string' ? m.addr4 : m?.vtep;
        if (host !== me && typeof addr === 'string' && parseIp(addr)?.v6 === false && onLink(addr, connected)) direct.add(host);
      }
      const routed: RoutedPeer[] = [];
      const local = [...ownClaims];
      for (const p of peers.values()) {
        if (direct.has(p.host)) routed.push(p);
        else local.push(...p.prefixes.filter((x) => x.bits === 32));
      }
      await this.#program(rt, routed, local, connected);
      return direct;
    });
  }

  /** Interfaces the other hosts can be next hops on: not tsnet's own devices. */
  async #connected(): Promise<ConnectedPrefix[]> {
    const ours = new Set(Object.values(this.#store.state.networks).flatMap((n) => [n.bridge, ...(n.overlay ? [n.overlay.vxlan] : [])]));
    return connectedPrefixes(await listAddrs(this.#runner), (name) => ours.has(name));
  }

  async #program(rt: Runtime, peers: RoutedPeer[], local: Prefix[], connected?: ConnectedPrefix[]): Promise<void> {
    if (this.#nets.get(rt.net.id) !== rt || !this.#store.state.networks[rt.net.id]) return;
    const want = desiredState(peers, connected ?? (await this.#connected()), local);
    rt.last = { peers, local };
    rt.desired = want;
    this.#report(rt, want.peers);
    await this.#apply(rt, want);
  }

  /** Log each peer that cannot be routed once (until it can), so a skipped host is never silent. */
  #report(rt: Runtime, peers: PeerReport[]): void {
    const now = new Set<string>();
    for (const p of peers) {
      if (p.status === 'routed') continue;
      const key = `${p.host}/${p.family}/${p.status}/${p.address ?? ''}`;
      now.add(key);
      if (rt.warned.has(key)) continue;
      this.#log.warn({ networkId: rt.net.id, peer: p.host, address: p.address, blocks: p.prefixes }, peerWarning(p));
    }
    rt.warned = now;
  }

  async #apply(rt: Runtime, want: Desired): Promise<void> {
    const net = rt.net;
    rt.have ??= await this.#read(net);
    const script = renderPeerSources(shortId(net.id), want.sources4, want.sources6);
    // Sources first: a new peer's replies are admitted before its route exists.
    if (script !== rt.sources) {
      await nftApply(this.#runner, script);
      rt.sources = script;
    }
    const lines = routeLines(net.bridge, rt.have, want);
    if (lines.length === 0) return;
    const started = performance.now();
    try {
      await applyTolerant(this.#runner, lines);
    } catch (err) {
      rt.have = undefined;
      throw err;
    }
    rt.have = { routes: new Map(want.routes), proxy6: new Set(want.proxy6) };
    this.#log.info(
      { networkId: net.id, routes: want.routes.size, proxied: want.proxy6.size, changes: lines.length, peers: want.peers.filter((p) => p.status === 'routed').map((p) => p.address), ms: +(performance.now() - started).toFixed(1) },
      'routes to other hosts updated',
    );
  }

  /** tsnet's routes inside the network's subnets, and the bridge's proxy entries, as the kernel has them. */
  async #read(net: NetworkRecord): Promise<KernelState> {
    const subnets = subnetsOf(net);
    const routes = new Map<string, RouteValue>();
    for (const family of [4, 6] as const) {
      if (!subnets.some((s) => s.v6 === (family === 6))) continue;
      for (const r of await listProtoRoutes(this.#runner, family, ROUTE_PROTO)) {
        const dst = parsePrefix(r.dst, false);
        if (!dst || !subnets.some((s) => containsPrefix(s, dst))) continue;
        routes.set(r.dst, r.gateway ? { via: r.gateway, dev: r.dev ?? '' } : 'local');
      }
    }
    const proxy6 = net.ipv6.length > 0 ? new Set(await listProxyNeigh(this.#runner, net.bridge)) : new Set<string>();
    return { routes, proxy6 };
  }

  /** Take the network's routes and proxy entries down (network removed). */
  async stop(net: NetworkRecord): Promise<void> {
    const rt = this.#nets.get(net.id);
    this.#nets.delete(net.id);
    this.#stopped.add(net.id);
    await rt?.busy;
    const have = await this.#read(net);
    const lines = routeLines(net.bridge, have, { routes: new Map(), proxy6: new Set() });
    if (lines.length > 0) await applyTolerant(this.#runner, lines);
  }

  /** Forget what the kernel holds and program the last state again (reconcile; the bridge may be new). */
  resync(net: NetworkRecord): void {
    const rt = this.#nets.get(net.id);
    if (!rt) return;
    rt.net = net;
    rt.have = undefined;
    rt.sources = undefined;
    const last = rt.last;
    if (!last) return;
    void this.#enqueue(rt, () => this.#program(rt, last.peers, last.local)).catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'routes could not be programmed again'));
  }

  /**
   * Once per reconcile, after the firewall was rewritten: the peer sets
   * again (a re-created table has none), and tsnet's routes inside no
   * routed network's subnet removed (a network removed while tsnet was down).
   */
  async reconcileHost(): Promise<string[]> {
    for (const rt of this.#nets.values()) {
      rt.sources = undefined;
      const want = rt.desired;
      if (want) void this.#enqueue(rt, () => this.#apply(rt, want)).catch((err: unknown) => this.#log.error({ err, networkId: rt.net.id }, 'peer sources could not be written again'));
    }
    const subnets = Object.values(this.#store.state.networks).filter(isRouted).flatMap((n) => subnetsOf(n));
    const stale: string[] = [];
    for (const family of [4, 6] as const) {
      for (const r of await listProtoRoutes(this.#runner, family, ROUTE_PROTO)) {
        const dst = parsePrefix(r.dst, false);
        if (dst && !subnets.some((s) => containsPrefix(s, dst))) stale.push(r.dst);
      }
    }
    if (stale.length > 0) {
      await applyTolerant(this.#runner, stale.map((d) => batchLine(['route', 'del', d, 'proto', ROUTE_PROTO])));
      this.#log.warn({ routes: stale }, 'removed routes tagged by tsnet that no routed network explains');
    }
    return stale;
  }

  /** What `tsnetctl status` shows: each peer and whether it is routed, and why not. */
  status(net: NetworkRecord): { peers: PeerReport[]; warnings: string[]; known: boolean } {
    const desired = this.#nets.get(net.id)?.desired;
    const peers = desired?.peers ?? [];
    return { peers, warnings: peers.filter((p) => p.status !== 'routed').map(peerWarning), known: desired !== undefined };
  }

  /** Wait for pending programming (tests and shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.#nets.values()].map((r) => r.busy));
  }

  close(): void {
    this.#nets.clear();
  }
}

/** `ip -force -batch`: deleting what is already gone (a repeat, a restart) is fine; anything else fails. */
async function applyTolerant(runner: Runner, lines: readonly string[]): Promise<void> {
  try {
    await runner.run('ip', ['-force', '-batch', '-'], { input: `${lines.join('\n')}\n` });
  } catch (err) {
    const text = (err as { stderr?: string }).stderr ?? '';
    const bad = text.split('\n').filter((l) => l.trim() !== '' && !/No such file or directory|No such process|Cannot find|does not exist|Command failed -:\d+/.test(l));
    if (bad.length > 0) throw err;
  }
}
