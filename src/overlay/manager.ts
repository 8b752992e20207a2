// Overlay networks at run time: VXLAN forwarding kept in step with the
// cluster, addresses unique across hosts, the VXLAN port guard. Design notes:
// - Each overlay network is a tsnet bridge plus a VXLAN port. The control
//   plane (cluster/registry.ts) tells every host which endpoints live where;
//   this module turns each change into the minimal FDB and neighbour edits,
//   batched (kernel/vxlan.ts), within a moment of the etcd event.
// - Addresses: each host leases blocks of the overlay's range and hands out
//   addresses from them with no round trip to etcd. A static --ip elsewhere
//   is claimed in one transaction, or confirmed by the host owning its block.
//   With etcd down a host keeps allocating from blocks it already holds;
//   anything that would need etcd fails with a clear error instead of guessing.
// - Static-peers mode has no control plane: the VXLAN device floods to the
//   listed peers and learns MACs from traffic; IPAM stays per host (split the
//   range with --ip-range per host).
import type { Logger } from 'pino';
import { TsnetError, quote } from '../errors.js';
import type { ClusterRegistry, OverlayView } from '../cluster/registry.js';
import { formatIp, ipFamily, parseIp, parsePrefix, type Prefix } from '../net/cidr.js';
import type { Runner } from '../kernel/exec.js';
import { getLink, listAddrs, defaultRouteInfo } from '../kernel/ip.js';
import { applyForwarding, fdbLines, neighLines, type RemoteEndpoint } from '../kernel/vxlan.js';
import { bridgeMac, shortId } from '../kernel/names.js';
import { readTable } from '../firewall/nft.js';
import { applyOverlayRules, renderGatewayGuard, renderGatewayGuardRemoval, renderVxlanGuard, renderVxlanGuardRemoval } from '../firewall/overlay-rules.js';
import type { Store } from '../store/store.js';
import type { EndpointRecord, NetworkRecord, OverlayRecord } from '../store/schema.js';
import { blockKey, blockOf, blocksOf, firstFreeIn, parseBlockKey } from './blocks.js';

/** Outer IP + UDP + VXLAN + inner Ethernet headers: 50 bytes over IPv4, 70 over IPv6. */
export function vxlanOverhead(local: string): number {
  return ipFamily(local) === 6 ? 70 : 50;
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
  registry: ClusterRegistry | undefined;
  log: Logger;
  vxlanPort: number;
  advertiseAddr: string | undefined;
}

interface Runtime {
  watch?: { close: () => Promise<void> };
  view?: OverlayView;
  /** what the kernel holds for this overlay: remote endpoints by MAC, flood VTEPs */
  programmed: Map<string, RemoteEndpoint>;
  flood: Set<string>;
  /** addresses in this host's blocks confirmed to other hosts */
  lent: Set<bigint>;
  /** member VTEPs of the other IP family, reported once each */
  unreachable: Set<string>;
  converging: Promise<void>;
}

/** Something the IPAM side answers: is this address allocated in that pool? */
export type AllocatedProbe = (poolId: string, value: bigint) => boolean;

export class OverlayManager {
  readonly #runner: Runner;
  readonly #store: Store;
  #registry: ClusterRegistry | undefined;
  readonly #log: Logger;
  readonly port: number;
  readonly #advertise: string | undefined;
  readonly #nets = new Map<string, Runtime>();
  /** set by the IPAM service once both exist */
  isAllocated: AllocatedProbe = () => false;
  /** told when other hosts' VTEPs join or leave an overlay's flood list (the event stream); must not throw */
  onPeers: ((networkId: string, joined: string[], left: string[]) => void) | undefined;

  constructor(deps: OverlayDeps) {
    this.#runner = deps.runner;
    this.#store = deps.store;
    this.#registry = deps.registry;
    this.#log = deps.log.child({ component: 'overlay' });
    this.port = deps.vxlanPort;
    this.#advertise = deps.advertiseAddr;
    if (deps.registry) this.attachRegistry(deps.registry);
  }

  /** The registry can arrive after start-up (etcd3 loads after the socket listens). */
  attachRegistry(registry: ClusterRegistry): void {
    this.#registry = registry;
    registry.on('available', () => {
      for (const net of this.#overlays()) void this.#rejoin(net);
    });
  }

  get clustered(): boolean {
    return this.#registry !== undefined;
  }

  #overlays(): NetworkRecord[] {
    return Object.values(this.#store.state.networks).filter((n) => n.overlay);
  }

  /** This host's VTEP address and the interface and MTU under it. */
  async underlay(): Promise<Underlay> {
    const addrs = await listAddrs(this.#runner);
    let local = this.#advertise;
    let dev: string | undefined;
    if (local) {
      dev = addrs.find((l) => l.addr_info.some((a) => a.local === local))?.ifname;
      if (!dev) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_ADVERTISE_ADDR ${local} is not an address of this host`);
    } else {
      // The IPv4 default route, or on an IPv6-only host the IPv6 one.
      const route4 = await defaultRouteInfo(this.#runner, 4);
      const route = route4 ?? (await defaultRouteInfo(this.#runner, 6));
      if (!route?.dev) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', 'no default route to take the underlay address from; set TSNET_ADVERTISE_ADDR');
      dev = route.dev;
      const inet = route4 ? 'inet' : 'inet6';
      local = route.prefsrc ?? addrs.find((l) => l.ifname === dev)?.addr_info.find((a) => a.family === inet && a.scope === 'global')?.local;
      if (!local) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `the default route's interface ${dev} has no global ${inet === 'inet' ? 'IPv4' : 'IPv6'} address; set TSNET_ADVERTISE_ADDR`);
    }
    const link = await getLink(this.#runner, dev);
    return { local, dev, mtu: link?.mtu ?? 1500 };
  }

  /**
   * Everything an overlay needs decided before the kernel is touched: VNI
   * (agreed in etcd), underlay, dynamic range. Throws clear errors for
   * overlays that cannot work here.
   */
  async plan(args: { id: string; subnet: string | undefined; subPool: string | undefined; gateway: string | undefined; poolId: string | undefined; vni: number | undefined; peers: string[] | undefined; vxlan: string }): Promise<{ overlay: OverlayRecord; underlay: Underlay }> {
    if (!args.subnet) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', 'an overlay network needs an IPv4 subnet (--subnet)');
    // Everything that can be refused is refused before asking the kernel or etcd anything.
    if (args.peers) {
      for (const p of args.peers) {
        if (!parseIp(p)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(p)} is not an IP address`);
        if (ipFamily(p) !== ipFamily(args.peers[0]!)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(p)} and ${quote(args.peers[0]!)} are of different IP families; VXLAN peers share one underlay`);
      }
    } else if (!this.#registry) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', 'tsnet.mode=overlay needs a cluster (TSNET_ETCD_ENDPOINTS) or a static peer list (-o tsnet.peers=ADDR,ADDR)');
    } else if (!args.poolId) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', 'a cluster overlay needs --ipam-driver tsnet, so addresses are unique across hosts');
    } else if (this.#store.state.pools[args.poolId]?.dynamic) {
      // Each host would pick its own pool: they must all name the same one.
      throw new TsnetError('TSNET_ERR_INVALID_REQUEST', 'a cluster overlay needs an explicit --subnet, the same on every host');
    }
    const underlay = await this.underlay();
    const base = { vxlan: args.vxlan, subnet: args.subnet, range: args.subPool ?? args.subnet, local: underlay.local, underlay: underlay.dev, blocks: [] as string[], claims: [] as string[] };
    if (args.peers) {
      if (ipFamily(args.peers[0]!) !== ipFamily(underlay.local)) {
        throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.peers: ${quote(args.peers[0]!)} is IPv${ipFamily(args.peers[0]!)} but this host's VTEP address ${underlay.local} is IPv${ipFamily(underlay.local)} (TSNET_ADVERTISE_ADDR)`);
      }
      const peers = args.peers.filter((p) => p !== underlay.local);
      return { overlay: { mode: 'static', vni: args.vni ?? derivedVni(args.subnet), peers, ...base }, underlay };
    }
    if (!this.#registry) throw new TsnetError('TSNET_ERR_INTERNAL', 'no registry');
    const gw = args.gateway ? args.gateway.slice(0, args.gateway.indexOf('/')) : undefined;
    const info = await this.#registry.ensureOverlay(args.subnet, { ...(args.vni !== undefined ? { vni: args.vni } : {}), ...(gw ? { gateway: gw } : {}) }).catch((err: unknown) => {
      if (err instanceof TsnetError && err.code !== 'TSNET_ERR_CLUSTER') throw err;
      throw new TsnetError('TSNET_ERR_CLUSTER', `cannot create overlay ${args.subnet}: ${(err as Error).message}`, { cause: err });
    });
    return { overlay: { mode: 'cluster', vni: info.vni, peers: [], poolId: args.poolId, ...base }, underlay };
  }

  /** Kernel rules that exist while overlays do; `extra` is a network not yet in the store. */
  async syncRules(extra?: NetworkRecord): Promise<void> {
    const overlays = this.#overlays();
    if (extra && !overlays.includes(extra)) overlays.push(extra);
    if (overlays.length === 0) {
      // Only touch the table if the guard is there: never create state to delete it.
      const view = await readTable(this.#runner);
      if (view?.chains.includes('vxlan_in')) await applyOverlayRules(this.#runner, renderVxlanGuardRemoval());
      return;
    }
    const peers = new Set<string>();
    for (const net of overlays) {
      for (const p of net.overlay!.peers) peers.add(p);
      for (const m of this.#nets.get(net.id)?.view?.members.values() ?? []) peers.add(m.vtep);
    }
    const self = overlays[0]!.overlay!.local;
    peers.delete(self);
    await applyOverlayRules(this.#runner, renderVxlanGuard(this.port, [...peers]));
  }

  gatewayGuard(net: NetworkRecord): string {
    const gw = net.ipv4[0]?.gateway;
    return renderGatewayGuard({ sid: shortId(net.id), vxlan: net.overlay!.vxlan, gatewayMac: bridgeMac(net), ...(gw ? { gatewayIp: gw.slice(0, gw.indexOf('/')) } : {}) });
  }

  async addGatewayGuard(net: NetworkRecord): Promise<void> {
    await applyOverlayRules(this.#runner, this.gatewayGuard(net));
  }

  async removeGatewayGuard(net: NetworkRecord): Promise<void> {
    const others = this.#overlays().filter((n) => n.id !== net.id);
    await applyOverlayRules(this.#runner, renderGatewayGuardRemoval(shortId(net.id), net.overlay!.vxlan, others.length === 0));
  }

  /** Start following an overlay (after create, and at start-up). Never throws: etcd may be away. */
  start(net: NetworkRecord): void {
    if (this.#nets.has(net.id)) return;
    const rt: Runtime = { programmed: new Map(), flood: new Set(), lent: new Set(), unreachable: new Set(), converging: Promise.resolve() };
    this.#nets.set(net.id, rt);
    const o = net.overlay!;
    if (o.mode === 'static') {
      rt.converging = this.#program(net, rt, [], o.peers).catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'cannot program static peers'));
      return;
    }
    void this.#rejoin(net);
    rt.watch = this.#registry!.watchOverlay(o.subnet, (view) => {
      rt.view = view;
      rt.converging = rt.converging.then(() => this.#converge(net, rt, view)).catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'overlay convergence failed; will retry on the next change'));
    });
  }

  async #rejoin(net: NetworkRecord): Promise<void> {
    if (!this.#registry || net.overlay?.mode !== 'cluster') return;
    try {
      await this.#registry.join(net.overlay.subnet);
      for (const ep of Object.values(this.#store.state.endpoints)) {
        if (ep.networkId === net.id && ep.address) await this.#registry.publishEndpoint(net.overlay.subnet, ep.id, { ip: ep.address.slice(0, ep.address.indexOf('/')), mac: ep.mac });
      }
    } catch (err) {
      this.#log.warn({ networkId: net.id, err: (err as Error).message }, 'cannot join the overlay in etcd yet; will retry when etcd answers');
    }
  }

  async stop(net: NetworkRecord, opts: { leave: boolean }): Promise<void> {
    const rt = this.#nets.get(net.id);
    this.#nets.delete(net.id);
    await rt?.watch?.close();
    if (opts.leave && this.#registry && net.overlay?.mode === 'cluster') {
      await this.#registry.leave(net.overlay.subnet).catch((err: unknown) => this.#log.warn({ err: (err as Error).message }, 'could not leave the overlay in etcd'));
    }
  }

  async #converge(net: NetworkRecord, rt: Runtime, view: OverlayView): Promise<void> {
    if (!this.#store.state.networks[net.id]) return;
    const me = this.#registry!.hostId;
    // A VTEP of the other IP family cannot be reached over this underlay.
    const reachable = (vtep: string): boolean => {
      if (ipFamily(vtep) === ipFamily(net.overlay!.local)) return true;
      if (!rt.unreachable.has(vtep)) {
        rt.unreachable.add(vtep);
        this.#log.warn({ networkId: net.id, vtep, local: net.overlay!.local }, 'a member host\'s VTEP is of another IP family than this host\'s; its endpoints are unreachable from here (set TSNET_ADVERTISE_ADDR alike on every host)');
      }
      return false;
    };
    const remote: RemoteEndpoint[] = [];
    for (const e of view.endpoints.values()) if (e.host !== me && e.vtep && reachable(e.vtep)) remote.push({ ip: e.ip, mac: e.mac, vtep: e.vtep });
    const flood = [...view.members.entries()].filter(([h, m]) => h !== me && reachable(m.vtep)).map(([, m]) => m.vtep);
    await this.#program(net, rt, remote, flood);
    await this.syncRules();
    await this.#answerClaims(net, rt, view);
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
    await applyForwarding(
      this.#runner,
      fdbLines(vx, { addEndpoints: add, delEndpoints: del.filter((d) => !want.has(d.mac)), addFlood, delFlood }),
      net.overlay!.mode === 'cluster' ? neighLines(vx, { add, del }) : [],
    );
    rt.programmed = want;
    rt.flood = wantFlood;
    if (addFlood.length + delFlood.length > 0) this.onPeers?.(net.id, addFlood, delFlood);
    this.#log.info(
      { networkId: net.id, added: add.length, removed: del.length, floodAdded: addFlood, floodRemoved: delFlood, ms: +(performance.now() - started).toFixed(1) },
      'overlay forwarding updated',
    );
  }

  /** Owner side of static claims: confirm or refuse claims on addresses in this host's blocks. */
  async #answerClaims(net: NetworkRecord, rt: Runtime, view: OverlayView): Promise<void> {
    const o = net.overlay!;
    const range = parsePrefix(o.range)!;
    const mine = new Set(o.blocks);
    const me = this.#registry!.hostId;
    const stillLent = new Set<bigint>();
    for (const [ipText, claim] of view.claims) {
      const ip = parseIp(ipText);
      if (!ip) continue;
      const block = blockOf(range, ip.value);
      if (!block || !mine.has(blockKey(block)) || claim.host === me) continue;
      if (claim.state === 'ok') stillLent.add(ip.value);
      if (claim.state !== 'pending') continue;
      const taken = (o.poolId && this.isAllocated(o.poolId, ip.value)) || rt.lent.has(ip.value);
      if (taken) await this.#registry!.answerClaim(o.subnet, ipText, { host: claim.host, state: 'refused', reason: `in use on host ${me}` });
      else {
        rt.lent.add(ip.value);
        stillLent.add(ip.value);
        await this.#registry!.answerClaim(o.subnet, ipText, { host: claim.host, state: 'ok' });
        this.#log.info({ networkId: net.id, ip: ipText, to: claim.host }, 'confirmed a static address in this host\'s block');
      }
    }
    rt.lent = stillLent;
  }

  /** For the IPAM: does this pool's allocation go through the overlay? */
  networkForPool(poolId: string): NetworkRecord | undefined {
    const netId = this.#store.state.pools[poolId]?.overlayNetwork;
    const net = netId ? this.#store.state.networks[netId] : undefined;
    return net?.overlay?.mode === 'cluster' ? net : undefined;
  }

  /**
   * Pick (or check) an endpoint address of a cluster overlay. `taken` is the
   * local pool's view (gateway, aux, this host's endpoints).
   */
  async allocate(net: NetworkRecord, wanted: bigint | undefined, taken: (v: bigint) => boolean): Promise<bigint> {
    const o = net.overlay!;
    const range = parsePrefix(o.range)!;
    const rt = this.#nets.get(net.id);
    const lent = rt?.lent ?? new Set<bigint>();
    const isTaken = (v: bigint): boolean => taken(v) || lent.has(v);
    if (wanted !== undefined) return this.#claimStatic(net, range, wanted, isTaken);
    for (let round = 0; round < 4; round++) {
      const mine = o.blocks.map(parseBlockKey).filter((b): b is Prefix => b !== undefined);
      const free = firstFreeIn(mine, isTaken);
      if (free !== undefined) return free;
      if (!this.#registry?.available) {
        throw new TsnetError(
          'TSNET_ERR_ADDRESS_EXHAUSTED',
          `no free address in the ${mine.length} block(s) this host holds in overlay ${o.subnet}, and etcd is unreachable to lease another; retry when etcd is back`,
        );
      }
      const key = await this.#registry.leaseBlock(o.subnet, (function* () {
        for (const b of blocksOf(range)) yield blockKey(b);
      })());
      if (!key) throw new TsnetError('TSNET_ERR_ADDRESS_EXHAUSTED', `overlay ${o.subnet}: every address block of ${o.range} is leased; the range is full`);
      o.blocks.push(key);
      await this.#store.commit();
      this.#log.info({ networkId: net.id, block: key }, 'leased an address block');
    }
    throw new TsnetError('TSNET_ERR_ADDRESS_EXHAUSTED', `overlay ${o.subnet}: could not find a free address`);
  }

  async #claimStatic(net: NetworkRecord, range: Prefix, value: bigint, isTaken: (v: bigint) => boolean): Promise<bigint> {
    const o = net.overlay!;
    const text = formatIp({ v6: range.v6, value });
    const block = blockOf(range, value);
    if (block && o.blocks.includes(blockKey(block))) {
      if (isTaken(value)) throw new TsnetError('TSNET_ERR_ADDRESS_IN_USE', `address ${text} is already allocated in overlay ${o.subnet}`);
      return value;
    }
    if (!this.#registry?.available) {
      throw new TsnetError('TSNET_ERR_CLUSTER', `address ${text} is outside this host's blocks; claiming it needs etcd, which is unreachable`);
    }
    const owner = block ? this.#nets.get(net.id)?.view?.blocks.get(blockKey(block))?.host : undefined;
    if (block && owner) await this.#registry.requestClaim(o.subnet, text, owner);
    else {
      const ok = await this.#registry.claimUnblocked(o.subnet, text, block ? blockKey(block) : 'none');
      if (!ok) {
        // Leased a moment ago, or claimed: ask again through the owner, or fail.
        throw new TsnetError('TSNET_ERR_ADDRESS_IN_USE', `address ${text} is already claimed in overlay ${o.subnet} (or its block was just leased; retry)`);
      }
    }
    o.claims.push(text);
    await this.#store.commit();
    return value;
  }

  async release(net: NetworkRecord, value: bigint): Promise<void> {
    const o = net.overlay!;
    const range = parsePrefix(o.range)!;
    const text = formatIp({ v6: range.v6, value });
    const i = o.claims.indexOf(text);
    if (i < 0) return;
    o.claims.splice(i, 1);
    await this.#registry?.releaseClaim(o.subnet, text).catch((err: unknown) => this.#log.warn({ err: (err as Error).message, ip: text }, 'could not release a claim in etcd; it stays until removed'));
  }

  async publish(net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    if (!this.#registry || net.overlay?.mode !== 'cluster' || !ep.address) return;
    await this.#registry
      .publishEndpoint(net.overlay.subnet, ep.id, { ip: ep.address.slice(0, ep.address.indexOf('/')), mac: ep.mac })
      .catch((err: unknown) => this.#log.warn({ endpointId: ep.id, err: (err as Error).message }, 'endpoint not yet published in etcd; it will be when etcd answers'));
  }

  async unpublish(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    if (!this.#registry || net?.overlay?.mode !== 'cluster') return;
    await this.#registry.unpublishEndpoint(net.overlay.subnet, ep.id).catch((err: unknown) => this.#log.warn({ endpointId: ep.id, err: (err as Error).message }, 'could not remove the endpoint from etcd; its lease will'));
  }

  /** Forget what was programmed (the VXLAN device was re-created) and program it all again. */
  reprogram(net: NetworkRecord): void {
    const rt = this.#nets.get(net.id);
    if (!rt) return;
    rt.programmed = new Map();
    rt.flood = new Set();
    if (net.overlay!.mode === 'static') rt.converging = rt.converging.then(() => this.#program(net, rt, [], net.overlay!.peers));
    else if (rt.view) {
      const view = rt.view;
      rt.converging = rt.converging.then(() => this.#converge(net, rt, view));
    }
    rt.converging = rt.converging.catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'overlay re-programming failed'));
  }

  /** What each followed overlay has programmed: peers flooded to, FDB entries (one per remote endpoint and per flood peer). Read-only, for metrics. */
  forwarding(): Array<{ networkId: string; peers: number; peerList: string[]; fdb: number }> {
    return [...this.#nets].map(([networkId, rt]) => ({ networkId, peers: rt.flood.size, peerList: [...rt.flood], fdb: rt.programmed.size + rt.flood.size }));
  }

  /** Wait for pending convergence (tests and shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.#nets.values()].map((r) => r.converging));
  }

  async close(): Promise<void> {
    for (const [id, rt] of this.#nets) {
      await rt.watch?.close();
      this.#nets.delete(id);
    }
  }
}

/** A VNI every host derives alike from the subnet (static-peers mode). */
export function derivedVni(subnet: string): number {
  let h = 2166136261;
  for (const c of subnet) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
  return 4096 + (h % (16777215 - 4096));
}
