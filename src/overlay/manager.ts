// Overlay networks at run time: VXLAN forwarding kept in step with the
// cluster, and the VXLAN port guard. Design notes:
// - Each overlay network is a tsnet bridge plus a VXLAN port, switched in a
//   namespace of its own (kernel/overlay-ns.ts). The control
//   plane (cluster/registry.ts, followed through cluster/networks.ts, which
//   also keeps addresses unique across hosts) tells every host which
//   endpoints live where; this module turns each change into the minimal FDB
//   and neighbour edits, batched (kernel/vxlan.ts), within a moment of the
//   etcd event.
// - Static-peers mode has no control plane: the VXLAN device floods to the
//   listed peers and learns MACs from traffic; IPAM stays per host (split the
//   range with --ip-range per host).
// - Encrypted overlays (tsnet.encrypt) run the same VXLAN inside this host's
//   WireGuard tunnel (wireguard/host.ts): the port sends from this host's
//   tunnel address, its entries point at peers' tunnel addresses, and each
//   member publishes its WireGuard key and endpoint beside its VTEP, so the
//   watch that programs forwarding also programs the peers.
import type { Logger } from 'pino';
import { TsnetError, quote } from '../errors.js';
import type { MemberInfo, NetworkView } from '../cluster/registry.js';
import { tunnelAddress } from '../net/tunnel.js';
import { decodeKey } from '../wireguard/keys.js';
import type { PeerCandidate, WireGuardHost } from '../wireguard/host.js';
import type { ClusterNetworks, ClusterPlan } from '../cluster/networks.js';
import { ipFamily, parseIp } from '../net/cidr.js';
import type { Runner } from '../kernel/exec.js';
import { getLink, listAddrs, defaultRouteInfo } from '../kernel/ip.js';
import { applyForwarding, fdbLines, neighLines, type RemoteEndpoint } from '../kernel/vxlan.js';
import { overlayNames } from '../kernel/names.js';
import { overlayRunner } from '../kernel/overlay-ns.js';
import { gatewayIp } from '../driver/subnets.js';
import { readTable } from '../firewall/nft.js';
import { applyOverlayRules, renderVxlanGuard, renderVxlanGuardRemoval } from '../firewall/overlay-rules.js';
import type { Store } from '../store/store.js';
import type { NetworkRecord, OverlayRecord, PoolRecord } from '../store/schema.js';

/** Outer IP + UDP + VXLAN + inner Ethernet headers: 50 bytes over IPv4, 70 over IPv6. */
export function vxlanOverhead(local: string): number {
  return ipFamily(local) === 6 ? 70 : 50;
}

/** The address the overlay's VXLAN port sends from: the underlay's, or for an encrypted overlay the tunnel's. */
export function vtepOf(o: Pick<OverlayRecord, 'local' | 'encrypted'>): string {
  return o.encrypted ? tunnelAddress(o.local) : o.local;
}

/** Where a static overlay floods: the peers' VTEPs (their tunnel addresses when encrypted). */
export function staticFlood(o: Pick<OverlayRecord, 'peers' | 'encrypted'>): string[] {
  return o.encrypted ? o.peers.map(tunnelAddress) : o.peers;
}

/** A static encrypted overlay's WireGuard peers. */
export function staticPeers(o: OverlayRecord, port: number): PeerCandidate[] {
  return o.peers.filter((p) => o.peerKeys?.[p]).map((p) => ({ underlay: p, publicKey: o.peerKeys![p]!, port }));
}

/** Forwarding entries come from etcd (cluster), not from a fixed peer list (static). */
export function hasControlPlane(o: OverlayRecord): boolean {
  return o.mode === 'cluster';
}

export interface Underlay {
  local: string;
  dev: string;
  mtu: number;
}

export interface OverlayDeps {
  runner: Runner;
  store: Store;
  cluster: ClusterNetworks;
  log: Logger;
  vxlanPort: number;
  advertiseAddr: string | undefined;
  /** this host's WireGuard tunnel, for encrypted overlays */
  wireguard?: WireGuardHost;
}

interface Runtime {
  /** what the kernel holds for this overlay: remote endpoints by MAC, flood VTEPs */
  programmed: Map<string, RemoteEndpoint>;
  flood: Set<string>;
  /** member VTEPs of the other IP family, reported once each */
  unreachable: Set<string>;
  /** static peers' programming */
  converging: Promise<void>;
}

export class OverlayManager {
  readonly #runner: Runner;
  readonly #store: Store;
  readonly #cluster: ClusterNetworks;
  readonly #log: Logger;
  readonly port: number;
  readonly #advertise: string | undefined;
  readonly wireguard: WireGuardHost | undefined;
  readonly #nets = new Map<string, Runtime>();
  /** told when other hosts' VTEPs join or leave an overlay's flood list (the event stream); must not throw */
  onPeers: ((networkId: string, joined: string[], left: string[]) => void) | undefined;
  /**
   * Overlays with tsnet.backend=auto: routes the members on this host's LAN
   * directly (routed/manager.ts) and returns them; they get no VXLAN
   * forwarding entries. The others stay on VXLAN.
   */
  directRoutes: ((net: NetworkRecord, view: NetworkView) => Promise<Set<string>>) | undefined;

  constructor(deps: OverlayDeps) {
    this.#runner = deps.runner;
    this.#store = deps.store;
    this.#cluster = deps.cluster;
    this.#log = deps.log.child({ component: 'overlay' });
    this.port = deps.vxlanPort;
    this.#advertise = deps.advertiseAddr;
    this.wireguard = deps.wireguard;
  }

  #overlays(): NetworkRecord[] {
    return Object.values(this.#store.state.networks).filter((n) => n.overlay);
  }

  /** This host's VTEP address and the interface and MTU under it. */
  async underlay(): Promise<Underlay> {
    return findUnderlay(this.#runner, this.#advertise);
  }

  /**
   * Everything an overlay needs decided before the kernel is touched: VNI
   * (agreed in etcd), underlay, cluster-wide addressing. Throws clear errors
   * for overlays that cannot work here.
   */
  async plan(args: { id?: string; subnet: string | undefined; pools: PoolRecord[] | undefined; gateway: string | undefined; vni: number | undefined; peers: string[] | undefined; peerKeys?: Record<string, string> | undefined; encrypt?: boolean; vxlan: string; backend?: 'vxlan' | 'auto' }): Promise<{ overlay: OverlayRecord; underlay: Underlay; cluster?: ClusterPlan }> {
    if (!args.subnet) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', 'an overlay network needs an IPv4 subnet (--subnet)');
    if (args.encrypt && !this.wireguard) throw new TsnetError('TSNET_ERR_UNSUPPORTED', 'tsnet.encrypt: this tsnet has no WireGuard set up');
    // Everything that can be refused is refused before asking the kernel or etcd anything.
    if (args.peers) {
      for (const p of args.peers) {
        if (!parseIp(p)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(p)} is not an IP address`);
        if (ipFamily(p) !== ipFamily(args.peers[0]!)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(p)} and ${quote(args.peers[0]!)} are of different IP families; VXLAN peers share one underlay`);
      }
    } else if (!this.#cluster.clustered) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', 'tsnet.mode=overlay needs a cluster (TSNET_ETCD_ENDPOINTS) or a static peer list (-o tsnet.peers=ADDR,ADDR)');
    } else if (!args.pools) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', 'a cluster overlay needs --ipam-driver tsnet, so addresses are unique across hosts');
    } else if (args.pools.some((p) => p.dynamic)) {
      throw new TsnetError('TSNET_ERR_INVALID_REQUEST', 'a cluster overlay needs an explicit --subnet, the same on every host');
    }
    const underlay = await this.underlay();
    const base = { vxlan: args.vxlan, subnet: args.subnet, local: underlay.local, underlay: underlay.dev };
    if (args.peers) {
      if (ipFamily(args.peers[0]!) !== ipFamily(underlay.local)) {
        throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(args.peers[0]!)} is IPv${ipFamily(args.peers[0]!)} but this host's VTEP address ${underlay.local} is IPv${ipFamily(underlay.local)} (TSNET_ADVERTISE_ADDR)`);
      }
      const peers = args.peers.filter((p) => p !== underlay.local);
      if (!args.encrypt) return { overlay: { mode: 'static', vni: args.vni ?? derivedVni(args.subnet), peers, ...base }, underlay };
      const peerKeys = await this.#checkStaticKeys(args.id, underlay.local, args.peers, args.peerKeys ?? {});
      return { overlay: { mode: 'static', vni: args.vni ?? derivedVni(args.subnet), peers, ...base, encrypted: true, peerKeys }, underlay };
    }
    const gw = gatewayIp(args.gateway);
    const cluster = await this.#cluster.plan({ kind: 'overlay', pools: args.pools!, gateway: gw, vni: args.vni, ...(args.encrypt ? { encrypted: true } : {}), backend: args.backend });
    return { overlay: { mode: 'cluster', vni: cluster.info.vni!, peers: [], ...base, ...(args.encrypt ? { encrypted: true } : {}), ...(args.backend === 'auto' ? { backend: 'auto' as const } : {}) }, underlay, cluster };
  }

  /**
   * A static encrypted overlay names every peer with its key (ADDR=KEY), the
   * same list on every host. This host's own entry, if keyed, must carry
   * this host's key; another network must not know a peer by another key.
   */
  async #checkStaticKeys(id: string | undefined, self: string, peers: string[], keys: Record<string, string>): Promise<Record<string, string>> {
    const out: Record<string, string> = {};
    for (const p of peers) {
      const key = keys[p];
      if (p === self) {
        const mine = (await this.wireguard!.publicKey()).publicKey;
        if (key && key !== mine) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${p} is this host, whose WireGuard public key is ${mine}, not ${key}`);
        continue;
      }
      if (!key) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(p)} has no WireGuard key; an encrypted overlay names every peer as ADDR=PUBKEY (this host's key: tsnetctl wg-pubkey)`);
      for (const other of this.#overlays()) {
        const known = other.id !== id ? other.overlay!.peerKeys?.[p] : undefined;
        if (known && known !== key) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${p} is already a WireGuard peer with key ${known} (network ${other.id.slice(0, 12)}), not ${key}`);
      }
      out[p] = key;
    }
    return out;
  }

  /** What this host publishes as a member of an encrypted overlay: its tunnel address and WireGuard peer. */
  async #member(): Promise<MemberInfo> {
    const registry = this.#cluster.registry!;
    const { publicKey, since } = await this.wireguard!.publicKey();
    return { vtep: tunnelAddress(registry.vtep), wg: { key: publicKey, port: this.wireguard!.port, underlay: registry.vtep, since } };
  }

  /**
   * A new WireGuard key: in use here at once, then published in every
   * encrypted overlay this host is a member of; the other hosts replace the
   * peer when their watch sees it. Static peers name keys in their network
   * options: those networks are listed, as their peers must be told by hand.
   */
  async rotateKey(): Promise<{ publicKey: string; previous: string; published: string[]; pending: string[]; staticNetworks: string[] }> {
    if (!this.wireguard) throw new TsnetError('TSNET_ERR_UNSUPPORTED', 'this tsnet has no WireGuard set up');
    const { publicKey, previous } = await this.wireguard.rotate();
    const published: string[] = [];
    const pending: string[] = [];
    const staticNetworks: string[] = [];
    for (const net of this.#overlays()) {
      const o = net.overlay!;
      if (!o.encrypted) continue;
      if (o.mode === 'static') staticNetworks.push(net.id);
      // Not taken now: the registry writes it when etcd answers.
      else if (net.cluster) ((await this.#cluster.rejoin(net.id)) ? published : pending).push(net.cluster.subnet);
    }
    if (staticNetworks.length > 0) this.#log.warn({ networks: staticNetworks, publicKey }, "static-peer encrypted networks name this host's old key on their other hosts: re-create them there with the new key");
    return { publicKey, previous, published, pending, staticNetworks };
  }

  /** Kernel rules that exist while overlays do; `extra` is a network not yet in the store. */
  async syncRules(extra?: NetworkRecord): Promise<void> {
    const overlays = this.#overlays();
    if (extra && !overlays.includes(extra)) overlays.push(extra);
    if (overlays.length === 0) {
      // Only touch the table if the guard is there: never create state to delete it.
      const view = await readTable(this.#runner);
      if (view?.chains.includes('vxlan_in') || view?.chains.includes('vxlan_raw_in')) await applyOverlayRules(this.#runner, renderVxlanGuardRemoval());
      return;
    }
    const peers = new Set<string>();
    for (const net of overlays) {
      for (const p of staticFlood(net.overlay!)) peers.add(p);
      for (const m of this.#cluster.view(net.id)?.members.values() ?? []) peers.add(m.vtep);
    }
    const self = overlays[0]!.overlay!.local;
    peers.delete(self);
    peers.delete(tunnelAddress(self));
    await applyOverlayRules(this.#runner, renderVxlanGuard(this.port, [...peers]));
  }

  /** Start following an overlay (after create, and at start-up). Never throws: etcd may be away. */
  start(net: NetworkRecord): void {
    if (this.#nets.has(net.id)) return;
    const rt: Runtime = { programmed: new Map(), flood: new Set(), unreachable: new Set(), converging: Promise.resolve() };
    this.#nets.set(net.id, rt);
    const o = net.overlay!;
    if (o.mode === 'static') {
      rt.converging = this.#program(net, rt, [], staticFlood(o)).catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'cannot program static peers'));
      return;
    }
    this.#cluster.follow(net, {
      onView: (view) => this.#converge(net, rt, view),
      // Other hosts program their forwarding (and answer names) from these.
      endpoints: { vtep: (local) => vtepOf({ local, encrypted: o.encrypted }) },
      ...(o.encrypted && this.wireguard ? { member: () => this.#member() } : {}),
    });
  }

  async stop(net: NetworkRecord, opts: { leave: boolean }): Promise<void> {
    this.#nets.delete(net.id);
    await this.#cluster.stop(net, opts);
  }

  async #converge(net: NetworkRecord, rt: Runtime, view: NetworkView): Promise<void> {
    if (!this.#store.state.networks[net.id] || this.#nets.get(net.id) !== rt) return;
    const me = this.#cluster.hostId;
    // A VTEP of the other IP family cannot be reached over this underlay.
    const local = vtepOf(net.overlay!);
    const reachable = (vtep: string): boolean => {
      if (ipFamily(vtep) === ipFamily(local)) return true;
      if (!rt.unreachable.has(vtep)) {
        rt.unreachable.add(vtep);
        this.#log.warn({ networkId: net.id, vtep, local: net.overlay!.local }, 'a member host\'s VTEP is of another IP family than this host\'s; its endpoints are unreachable from here (set TSNET_ADVERTISE_ADDR alike on every host)');
      }
      return false;
    };
    const direct = net.overlay!.backend === 'auto' ? await this.directRoutes?.(net, view) : undefined;
    const viaVxlan = (host: string): boolean => host !== me && !direct?.has(host);
    const remote: RemoteEndpoint[] = [];
    for (const e of view.endpoints.values()) if (viaVxlan(e.host) && e.vtep && reachable(e.vtep)) remote.push({ ip: e.ip, mac: e.mac, vtep: e.vtep });
    const flood = [...view.members.entries()].filter(([h, m]) => viaVxlan(h) && reachable(m.vtep)).map(([, m]) => m.vtep);
    // The tunnel's peers first: forwarding entries point at their tunnel addresses.
    if (net.overlay!.encrypted && this.wireguard) await this.wireguard.setPeers(net.id, this.#wgPeers(net, view));
    await this.#program(net, rt, remote, flood);
    await this.syncRules();
  }

  /** An encrypted overlay's members as WireGuard peers; a malformed entry is skipped and reported. */
  #wgPeers(net: NetworkRecord, view: NetworkView): PeerCandidate[] {
    const me = this.#cluster.hostId;
    const out: PeerCandidate[] = [];
    for (const [host, m] of view.members) {
      if (host === me) continue;
      const wg = m.wg;
      if (!wg || !decodeKey(wg.key) || !parseIp(wg.underlay) || !Number.isInteger(wg.port) || tunnelAddress(wg.underlay) !== m.vtep) {
        this.#log.warn({ networkId: net.id, host }, 'a member of an encrypted overlay publishes no usable WireGuard peer; its endpoints are unreachable from here');
        continue;
      }
      out.push({ underlay: wg.underlay, publicKey: wg.key, port: wg.port, ...(wg.since !== undefined ? { since: wg.since } : {}) });
    }
    return out;
  }

  /** Diff the wanted remote state against what is programmed, and apply the difference in one go. */
  async #program(net: NetworkRecord, rt: Runtime, remote: RemoteEndpoint[], flood: string[]): Promise<void> {
    const vx = net.overlay!.vxlan;
    const want = new Map(remote.map((e) => [e.mac, e]));
    const add: RemoteEndpoint[] = [];
    const del: RemoteEndpoint[] = [];
    for (const [mac, e] of want) {
      const had = rt.programmed.get(mac);
      if (!had || had.vtep !== e.vtep || had.ip !== e.ip) {
        if (had && had.ip !== e.ip) del.push(had);
        add.push(e);
      }
    }
    for (const [mac, e] of rt.programmed) if (!want.has(mac)) del.push(e);
    const wantFlood = new Set(flood);
    const addFlood = [...wantFlood].filter((v) => !rt.flood.has(v));
    const delFlood = [...rt.flood].filter((v) => !wantFlood.has(v));
    if (add.length + del.length + addFlood.length + delFlood.length === 0) return;
    const started = performance.now();
    const cluster = net.overlay!.mode === 'cluster';
    // The VXLAN device lives in the overlay's namespace (kernel/overlay-ns.ts).
    await applyForwarding(
      overlayRunner(this.#runner, overlayNames(net.id).netns),
      fdbLines(vx, { addEndpoints: add, delEndpoints: del.filter((d) => !want.has(d.mac)), addFlood, delFlood }, cluster),
      cluster ? neighLines(vx, { add, del }) : [],
    );
    rt.programmed = want;
    rt.flood = wantFlood;
    if (addFlood.length + delFlood.length > 0) this.onPeers?.(net.id, addFlood, delFlood);
    this.#log.info(
      { networkId: net.id, added: add.length, removed: del.length, floodAdded: addFlood, floodRemoved: delFlood, ms: +(performance.now() - started).toFixed(1) },
      'overlay forwarding updated',
    );
  }

  /** Forget what was programmed (the VXLAN device was re-created) and program it all again. */
  reprogram(net: NetworkRecord): void {
    const rt = this.#nets.get(net.id);
    if (!rt) return;
    rt.programmed = new Map();
    rt.flood = new Set();
    if (net.overlay!.mode === 'static') {
      rt.converging = rt.converging.then(() => this.#program(net, rt, [], staticFlood(net.overlay!))).catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'overlay re-programming failed'));
    } else this.#cluster.refresh(net.id);
  }

  /** What each followed overlay has programmed: peers flooded to, FDB entries (one per remote endpoint and per flood peer). Read-only, for metrics. */
  forwarding(): Array<{ networkId: string; peers: number; peerList: string[]; fdb: number }> {
    return [...this.#nets].map(([networkId, rt]) => ({ networkId, peers: rt.flood.size, peerList: [...rt.flood], fdb: rt.programmed.size + rt.flood.size }));
  }

  /** Wait for pending convergence (tests and shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.#nets.values()].map((r) => r.converging));
    await this.#cluster.settle();
  }

  close(): void {
    this.#nets.clear();
  }
}

/** This host's underlay address (TSNET_ADVERTISE_ADDR, else the default route's source) and the interface and MTU under it. */
export async function findUnderlay(runner: Runner, advertise: string | undefined): Promise<Underlay> {
  const addrs = await listAddrs(runner);
  let local = advertise;
  let dev: string | undefined;
  if (local) {
    dev = addrs.find((l) => l.addr_info.some((a) => a.local === local))?.ifname;
    if (!dev) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_ADVERTISE_ADDR ${local} is not an address of this host`);
  } else {
    // The IPv4 default route, or on an IPv6-only host the IPv6 one.
    const route4 = await defaultRouteInfo(runner, 4);
    const route = route4 ?? (await defaultRouteInfo(runner, 6));
    if (!route?.dev) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', 'no default route to take the underlay address from; set TSNET_ADVERTISE_ADDR');
    dev = route.dev;
    const inet = route4 ? 'inet' : 'inet6';
    local = route.prefsrc ?? addrs.find((l) => l.ifname === dev)?.addr_info.find((a) => a.family === inet && a.scope === 'global')?.local;
    if (!local) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `the default route's interface ${dev} has no global ${inet === 'inet' ? 'IPv4' : 'IPv6'} address; set TSNET_ADVERTISE_ADDR`);
  }
  const link = await getLink(runner, dev);
  return { local, dev, mtu: link?.mtu ?? 1500 };
}

/** A VNI every host derives alike from the subnet (static-peers mode). */
export function derivedVni(subnet: string): number {
  let h = 2166136261;
  for (const c of subnet) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return 4096 + (h % (16777215 - 4096));
}
