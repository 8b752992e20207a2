// Networks that span hosts through etcd, whatever their mode: an overlay,
// a macvlan network on one LAN, a routed network. What they share lives
// here, so each mode adds only its own data plane:
// - Agreement: the first host to create a subnet fixes its kind, VNI,
//   gateway and ranges in etcd; every other host must name the same.
// - Addresses, unique across hosts without a round trip per container: each
//   host leases blocks of a pool's range and hands out their addresses
//   locally. A static --ip elsewhere is claimed in one transaction, or
//   confirmed by the host owning its block (this module answers such claims
//   for the blocks this host holds). With etcd down a host keeps allocating
//   from blocks it already holds; anything that needs etcd fails with a
//   clear error instead of guessing.
// - Following: one etcd watch per network; the mode's runtime (overlay
//   forwarding, routed routes) is told of every new view.
import type { Logger } from 'pino';
import { TsnetError } from '../errors.js';
import { blockKey, blockOf, blocksOf, firstFreeIn, parseBlockKey } from '../net/blocks.js';
import { contains, formatIp, parseIp, parsePrefix, type Prefix } from '../net/cidr.js';
import type { Store, StorePath } from '../store/store.js';
import { gatewayIp } from '../driver/subnets.js';
import type { ClusterPoolRecord, ClusterRecord, EndpointRecord, NetworkRecord, PoolRecord } from '../store/schema.js';
import type { ClusterKind, ClusterRegistry, MemberInfo, NetworkInfo, NetworkView, NetworkWant } from './registry.js';

/** The longest wait between two tries of a join etcd did not take (the first waits 1 s, then doubling). */
const JOIN_RETRY_MAX_MS = 30_000;

/** What a mode runs on top of a followed network. */
export interface ClusterHooks {
  /** after every change in etcd (coalesced), and again after a re-list */
  onView?(view: NetworkView): Promise<void>;
  /** what this host publishes as a member, when not just its VTEP (an encrypted overlay's WireGuard peer) */
  member?(): Promise<MemberInfo>;
  /**
   * publish this host's endpoints of the network, with the containers'
   * names (other hosts answer them in DNS); vtep: where they are reached,
   * from this host's VTEP address
   */
  endpoints?: { vtep(local: string): string };
}

interface Followed {
  net: NetworkRecord;
  hooks: ClusterHooks;
  watch?: { close: () => Promise<void> };
  view?: NetworkView;
  /** addresses in this host's blocks confirmed to other hosts (formatted) */
  lent: Set<string>;
  /** view handling, one at a time */
  busy: Promise<void>;
  /** blocks and claims of this host's that another host holds in etcd, reported once */
  conflicts: Set<string>;
  /** a join that etcd did not take, tried again (backing off to JOIN_RETRY_MAX_MS) */
  retry?: NodeJS.Timeout;
  failedJoins?: number;
}

/** A followed network whose mode publishes its endpoints. */
type Publishing = Followed & { hooks: Required<Pick<ClusterHooks, 'endpoints'>> };

/** A network ready to be made cluster-wide: checked with etcd, nothing written locally yet. */
export interface ClusterPlan {
  record: ClusterRecord;
  info: NetworkInfo;
  /** the pools now name their network (written with the network's record) */
  beforeCommit(id: string): StorePath[];
  revertCommit(): void;
}

/** Something the IPAM side answers: is this address allocated in that pool? */
export type AllocatedProbe = (poolId: string, value: bigint) => boolean;

export interface ClusterNetworksDeps {
  store: Store;
  log: Logger;
  registry?: ClusterRegistry;
}

export class ClusterNetworks {
  readonly #store: Store;
  readonly #log: Logger;
  #registry: ClusterRegistry | undefined;
  readonly #followed = new Map<string, Followed>();
  /** set by the IPAM service once both exist */
  isAllocated: AllocatedProbe = () => false;

  constructor(deps: ClusterNetworksDeps) {
    this.#store = deps.store;
    this.#log = deps.log.child({ component: 'cluster' });
    if (deps.registry) this.attachRegistry(deps.registry);
  }

  /** The registry can arrive after start-up (etcd3 loads after the socket listens). */
  attachRegistry(registry: ClusterRegistry): void {
    this.#registry = registry;
    // Under a new lease, or from a new address: every membership and endpoint again.
    const rejoin = (): void => {
      for (const f of this.#followed.values()) void this.#join(f);
    };
    registry.on('available', rejoin);
    registry.on('moved', rejoin);
  }

  /** etcd is configured (it may be unreachable just now). */
  get clustered(): boolean {
    return this.#registry !== undefined;
  }

  get registry(): ClusterRegistry | undefined {
    return this.#registry;
  }

  get hostId(): string | undefined {
    return this.#registry?.hostId;
  }

  /** The last view of a followed network (undefined until etcd answered once). */
  view(networkId: string): NetworkView | undefined {
    return this.#followed.get(networkId)?.view;
  }

  /**
   * The tsnet IPAM pools of a network's subnets, when tsnet's IPAM gave all
   * of them. Cluster-wide addresses need tsnet's IPAM: Docker's is per host.
   */
  poolsOf(addressSpaces: { space: string; pool: string }[]): PoolRecord[] | undefined {
    const pools = addressSpaces.map((s) => this.#store.state.pools[`${s.space}/${s.pool}`]);
    return pools.length > 0 && pools.every((p) => p !== undefined) ? (pools as PoolRecord[]) : undefined;
  }

  /**
   * Agree on the network with the cluster: the first host creates it, the
   * others must name the same kind, gateway, ranges (and VNI for overlays).
   * Changes nothing locally.
   */
  async plan(args: { kind: ClusterKind; pools: PoolRecord[]; gateway?: string | undefined; vni?: number | undefined; encrypted?: boolean; backend?: 'vxlan' | 'auto' | undefined }): Promise<ClusterPlan> {
    const registry = this.#registry;
    if (!registry) throw new TsnetError('TSNET_ERR_INTERNAL', 'no cluster registry');
    const dynamic = args.pools.find((p) => p.dynamic);
    if (dynamic) {
      // Each host would pick its own pool: they must all name the same one.
      throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `a ${args.kind} network whose addresses are allocated cluster-wide needs an explicit --subnet, the same on every host (${dynamic.pool} was chosen by this host alone)`);
    }
    const subnet = args.pools[0]!.pool;
    const ranges = args.pools.map((p) => p.subPool ?? p.pool);
    const info = await registry
      .ensureNetwork(subnet, {
        kind: args.kind,
        ranges,
        ...(args.vni !== undefined ? { vni: args.vni } : {}),
        ...(args.gateway ? { gateway: args.gateway } : {}),
        ...(args.encrypted ? { encrypted: true } : {}),
        ...(args.backend !== undefined ? { backend: args.backend } : {}),
      })
      .catch((err: unknown) => {
        if (err instanceof TsnetError && err.code !== 'TSNET_ERR_CLUSTER') throw err;
        throw new TsnetError('TSNET_ERR_CLUSTER', `cannot create ${subnet} in the cluster: ${(err as Error).message}`, { cause: err });
      });
    const record: ClusterRecord = { subnet, pools: args.pools.map((p, i) => ({ poolId: p.id, range: ranges[i]!, blocks: [], claims: [] })) };
    return {
      record,
      info,
      beforeCommit: (id) => {
        for (const p of args.pools) p.clusterNetwork = id;
        return args.pools.map((p) => ['pools', p.id] as StorePath);
      },
      revertCommit: () => {
        for (const p of args.pools) delete p.clusterNetwork;
      },
    };
  }

  /** Follow a cluster network (after create, and at start-up). Never throws: etcd may be away. */
  follow(net: NetworkRecord, hooks: ClusterHooks = {}): void {
    if (!net.cluster || !this.#registry || this.#followed.has(net.id)) return;
    const f: Followed = { net, hooks, lent: new Set(), busy: Promise.resolve(), conflicts: new Set() };
    this.#followed.set(net.id, f);
    void this.#join(f);
    f.watch = this.#registry.watchNetwork(net.cluster.subnet, (view) => {
      f.view = view;
      f.busy = f.busy
        .then(async () => {
          if (!this.#store.state.networks[net.id]) return;
          await this.#keepHeld(f, view);
          await this.#answerClaims(f, view);
          await hooks.onView?.(view);
        })
        .catch((err: unknown) => this.#log.error({ err, networkId: net.id }, 'handling a cluster change failed; will retry on the next change'));
    });
  }

  /** Handle the last view again (the mode re-created its devices). */
  refresh(networkId: string): void {
    const f = this.#followed.get(networkId);
    const view = f?.view;
    if (!f || !view) return;
    f.busy = f.busy.then(() => f.hooks.onView?.(view)).catch((err: unknown) => this.#log.error({ err, networkId }, 'cluster re-programming failed'));
  }

  async #join(f: Followed): Promise<boolean> {
    if (!this.#registry || !f.net.cluster) return false;
    clearTimeout(f.retry);
    f.retry = undefined;
    try {
      await this.#registry.join(f.net.cluster.subnet, await f.hooks.member?.(), agreedSettings(f.net));
      // What it keeps under the lease, written again with the membership.
      await this.#publishAll(f);
      f.failedJoins = 0;
      return true;
    } catch (err) {
      this.#log.warn({ networkId: f.net.id, err: (err as Error).message }, 'cannot join the network in etcd yet; will retry when etcd answers');
      // The lease may outlive a short outage (or a host's new address, whose
      // old connection hangs for seconds): then no new lease comes to trigger
      // the join, and the membership and endpoints would keep what they said before.
      if (this.#followed.get(f.net.id) === f) {
        f.failedJoins = (f.failedJoins ?? 0) + 1;
        f.retry = setTimeout(() => void this.#join(f), Math.min(JOIN_RETRY_MAX_MS, 500 * 2 ** f.failedJoins));
        f.retry.unref();
      }
      return false;
    }
  }

  /** Write this host's membership again now (what it publishes changed: a new WireGuard key); false if etcd did not take it yet. */
  async rejoin(networkId: string): Promise<boolean> {
    const f = this.#followed.get(networkId);
    return f ? this.#join(f) : false;
  }

  /** Stop following; with `leave`, this host's membership, endpoints, blocks and claims go from etcd. */
  async stop(net: NetworkRecord, opts: { leave: boolean }): Promise<void> {
    const f = this.#followed.get(net.id);
    this.#followed.delete(net.id);
    clearTimeout(f?.retry);
    await f?.watch?.close();
    if (opts.leave && this.#registry && net.cluster) {
      await this.#registry.leave(net.cluster.subnet).catch((err: unknown) => this.#log.warn({ err: (err as Error).message, subnet: net.cluster!.subnet }, 'could not leave the network in etcd; its keys stay until removed'));
    }
  }

  async close(): Promise<void> {
    for (const [id, f] of this.#followed) {
      clearTimeout(f.retry);
      await f.watch?.close();
      this.#followed.delete(id);
    }
  }

  /** Wait for pending view handling (tests and shutdown). */
  async settle(): Promise<void> {
    await Promise.all([...this.#followed.values()].map((f) => f.busy));
  }

  // --- endpoints, for the modes that publish them (ClusterHooks.endpoints) ---

  /** Endpoints being deleted (still in the store until DeleteEndpoint returns), by when: never published again. */
  readonly #withdrawn = new Map<string, number>();
  readonly #keyWrites = new Map<string, Promise<void>>();

  /**
   * Writes of one endpoint's key, one after another: the put at creation,
   * the put once its names are known, the delete. Concurrent, the put
   * without names could land last, or a put after the delete bring the key
   * back for as long as the lease lives.
   */
  #enqueue(id: string, job: () => Promise<void>): Promise<void> {
    const next = (this.#keyWrites.get(id) ?? Promise.resolve()).then(job);
    const tail = next.catch(() => undefined);
    this.#keyWrites.set(id, tail);
    void tail.then(() => {
      if (this.#keyWrites.get(id) === tail) this.#keyWrites.delete(id);
    });
    return next;
  }

  /** The followed network publishing its endpoints, if this one is. */
  #publishing(net: NetworkRecord | undefined): Publishing | undefined {
    const f = net?.cluster ? this.#followed.get(net.id) : undefined;
    return f?.hooks.endpoints ? (f as Publishing) : undefined;
  }

  #putEndpoint(net: NetworkRecord, id: string): Promise<void> {
    return this.#enqueue(id, async () => {
      const registry = this.#registry;
      const f = this.#publishing(net);
      const ep = this.#store.state.endpoints[id];
      if (!registry || !f || !ep?.address || this.#withdrawn.has(id)) return;
      await registry.publishEndpoint(net.cluster!.subnet, id, endpointValue(ep), f.hooks.endpoints.vtep(registry.vtep));
    });
  }

  /** Every endpoint of the network, written again under this host's (possibly new) lease. */
  async #publishAll(f: Followed): Promise<void> {
    if (!f.hooks.endpoints) return;
    for (const ep of Object.values(this.#store.state.endpoints)) {
      if (ep.networkId === f.net.id && ep.address) await this.#putEndpoint(f.net, ep.id);
    }
  }

  async publish(net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    if (!this.#registry || !this.#publishing(net) || !ep.address) return;
    // A new endpoint with the ID of one deleted before (dockerd retrying).
    this.#withdrawn.delete(ep.id);
    await this.#putEndpoint(net, ep.id).catch((err: unknown) => this.#log.warn({ endpointId: ep.id, err: (err as Error).message }, 'endpoint not yet published in etcd; it will be when etcd answers'));
  }

  /** The endpoint's names changed (the Engine API told them): publish them with it. */
  republish(endpointId: string): void {
    const ep = this.#store.state.endpoints[endpointId];
    const net = ep ? this.#store.state.networks[ep.networkId] : undefined;
    if (!net || !this.#registry || !this.#publishing(net)) return;
    void this.#putEndpoint(net, endpointId).catch((err: unknown) => this.#log.warn({ endpointId, err: (err as Error).message }, "endpoint's names not yet published in etcd; they will be when etcd answers"));
  }

  async unpublish(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    const registry = this.#registry;
    if (!registry || !net?.cluster || !this.#publishing(net)) return;
    const now = Date.now();
    for (const [id, at] of this.#withdrawn) if (now - at > 60_000) this.#withdrawn.delete(id);
    this.#withdrawn.set(ep.id, now);
    const subnet = net.cluster.subnet;
    await this.#enqueue(ep.id, () => registry.unpublishEndpoint(subnet, ep.id)).catch((err: unknown) => this.#log.warn({ endpointId: ep.id, err: (err as Error).message }, 'could not remove the endpoint from etcd; its lease will'));
  }

  // --- addresses (IPAM's ClusterAllocator) ---

  /** The cluster network a pool's endpoint addresses are allocated for, if any. */
  networkForPool(poolId: string): NetworkRecord | undefined {
    const netId = this.#store.state.pools[poolId]?.clusterNetwork;
    const net = netId ? this.#store.state.networks[netId] : undefined;
    return net?.cluster?.pools.some((p) => p.poolId === poolId) ? net : undefined;
  }

  /**
   * Pick (or check) an endpoint address in one pool of a cluster network.
   * `taken` is the local pool's view (gateway, aux, this host's endpoints).
   */
  async allocate(net: NetworkRecord, poolId: string, wanted: bigint | undefined, taken: (v: bigint) => boolean): Promise<bigint> {
    const c = net.cluster!;
    const pool = poolOf(c, poolId);
    const range = parsePrefix(pool.range)!;
    const lent = this.#followed.get(net.id)?.lent ?? new Set<string>();
    const isTaken = (v: bigint): boolean => taken(v) || lent.has(formatIp({ v6: range.v6, value: v }));
    if (wanted !== undefined) return this.#claimStatic(net, pool, range, wanted, isTaken);
    for (let round = 0; round < 4; round++) {
      const mine = pool.blocks.map(parseBlockKey).filter((b): b is Prefix => b !== undefined);
      const free = firstFreeIn(mine, isTaken);
      if (free !== undefined) return free;
      if (!this.#registry?.available) {
        throw new TsnetError(
          'TSNET_ERR_ADDRESS_EXHAUSTED',
          `no free address in the ${mine.length} block(s) this host holds of ${pool.range} in cluster network ${c.subnet}, and etcd is unreachable to lease another; retry when etcd is back`,
        );
      }
      const key = await this.#registry.leaseBlock(
        c.subnet,
        (function* () {
          for (const b of blocksOf(range)) yield blockKey(b);
        })(),
      );
      if (!key) throw new TsnetError('TSNET_ERR_ADDRESS_EXHAUSTED', `cluster network ${c.subnet}: every address block of ${pool.range} is leased; the range is full`);
      pool.blocks.push(key);
      await this.#store.commit();
      this.#log.info({ networkId: net.id, block: key }, 'leased an address block');
    }
    throw new TsnetError('TSNET_ERR_ADDRESS_EXHAUSTED', `cluster network ${c.subnet}: could not find a free address in ${pool.range}`);
  }

  async #claimStatic(net: NetworkRecord, pool: ClusterPoolRecord, range: Prefix, value: bigint, isTaken: (v: bigint) => boolean): Promise<bigint> {
    const c = net.cluster!;
    const text = formatIp({ v6: range.v6, value });
    const block = blockOf(range, value);
    if (block && pool.blocks.includes(blockKey(block))) {
      if (isTaken(value)) throw new TsnetError('TSNET_ERR_ADDRESS_IN_USE', `address ${text} is already allocated in cluster network ${c.subnet}`);
      return value;
    }
    if (!this.#registry?.available) {
      throw new TsnetError('TSNET_ERR_CLUSTER', `address ${text} is outside this host's blocks; claiming it needs etcd, which is unreachable`);
    }
    const owner = block ? this.#followed.get(net.id)?.view?.blocks.get(blockKey(block))?.host : undefined;
    if (block && owner) await this.#registry.requestClaim(c.subnet, text, owner);
    else {
      const ok = await this.#registry.claimUnblocked(c.subnet, text, block ? blockKey(block) : 'none');
      if (!ok) {
        // Leased a moment ago, or claimed: ask again through the owner, or fail.
        throw new TsnetError('TSNET_ERR_ADDRESS_IN_USE', `address ${text} is already claimed in cluster network ${c.subnet} (or its block was just leased; retry)`);
      }
    }
    pool.claims.push(text);
    await this.#store.commit();
    return value;
  }

  async release(net: NetworkRecord, poolId: string, value: bigint): Promise<void> {
    const c = net.cluster!;
    const pool = poolOf(c, poolId);
    const text = formatIp({ v6: parsePrefix(pool.range)!.v6, value });
    const i = pool.claims.indexOf(text);
    if (i < 0) return;
    pool.claims.splice(i, 1);
    await this.#registry?.releaseClaim(c.subnet, text).catch((err: unknown) => this.#log.warn({ err: (err as Error).message, ip: text }, 'could not release a claim in etcd; it stays until removed'));
  }

  /**
   * What this host hands out from (blocks) or uses (claims) stays its own in
   * etcd: one missing there (an operator forgot this host, as dead, while it
   * was away) is taken again; one another host holds now is an error only
   * an operator can settle, as the same addresses may be in use twice.
   */
  async #keepHeld(f: Followed, view: NetworkView): Promise<void> {
    const c = f.net.cluster!;
    const registry = this.#registry!;
    for (const pool of c.pools) {
      const held = [
        ...pool.blocks.map((item) => ({ kind: 'blocks' as const, item, owner: view.blocks.get(item)?.host })),
        ...pool.claims.map((item) => ({ kind: 'claims' as const, item, owner: view.claims.get(item)?.host })),
      ];
      for (const { kind, item, owner } of held) {
        if (owner === registry.hostId) continue;
        const kept = owner === undefined ? await registry.keepHeld(c.subnet, kind, item) : 'other';
        if (kept === 'held') continue;
        if (kept === 'retaken') {
          this.#log.warn({ networkId: f.net.id, subnet: c.subnet, [kind === 'blocks' ? 'block' : 'address']: item.replace('_', '/') }, `${kind === 'blocks' ? 'an address block' : 'a claimed address'} of this host's was missing from etcd (forgotten while this host was away?); took it again`);
          continue;
        }
        if (f.conflicts.has(item)) continue;
        f.conflicts.add(item);
        this.#log.error(
          { networkId: f.net.id, subnet: c.subnet, item: item.replace('_', '/'), holder: owner ?? 'another host' },
          `${kind === 'blocks' ? 'the address block' : 'the address'} ${item.replace('_', '/')} is this host's in its store but another host's in etcd (this host was forgotten while away?): its addresses may be in use twice; remove the containers on one of the two hosts`,
        );
      }
    }
  }

  /** Owner side of static claims: confirm or refuse claims on addresses in this host's blocks. */
  async #answerClaims(f: Followed, view: NetworkView): Promise<void> {
    const c = f.net.cluster!;
    const me = this.#registry!.hostId;
    const stillLent = new Set<string>();
    for (const [ipText, claim] of view.claims) {
      const ip = parseIp(ipText);
      if (!ip || claim.host === me) continue;
      const pool = c.pools.find((p) => {
        const r = parsePrefix(p.range);
        return r !== undefined && contains(r, ip);
      });
      if (!pool) continue;
      const block = blockOf(parsePrefix(pool.range)!, ip.value);
      if (!block || !pool.blocks.includes(blockKey(block))) continue;
      if (claim.state === 'ok') stillLent.add(ipText);
      if (claim.state !== 'pending') continue;
      const taken = this.isAllocated(pool.poolId, ip.value) || f.lent.has(ipText);
      if (taken) await this.#registry!.answerClaim(c.subnet, ipText, { host: claim.host, state: 'refused', reason: `in use on host ${me}` });
      else {
        f.lent.add(ipText);
        stillLent.add(ipText);
        await this.#registry!.answerClaim(c.subnet, ipText, { host: claim.host, state: 'ok' });
        this.#log.info({ networkId: f.net.id, ip: ipText, to: claim.host }, "confirmed a static address in this host's block");
      }
    }
    f.lent = stillLent;
  }
}

/**
 * What etcd holds for one of this host's endpoints: where it is, and the
 * container's names once the Engine API told them (published again then),
 * so other hosts' DNS answers them and they go with the endpoint or the
 * host's lease.
 */
export function endpointValue(ep: EndpointRecord): { ip: string; mac: string; ip6?: string; names?: string[] } {
  const strip = (cidr: string): string => cidr.slice(0, cidr.indexOf('/'));
  return { ip: strip(ep.address!), mac: ep.mac, ...(ep.addressV6 ? { ip6: strip(ep.addressV6) } : {}), ...(ep.dns ? { names: ep.dns.names } : {}) };
}

/** What this host agreed to when it made or joined the network: enough to make its etcd record again. */
export function agreedSettings(net: NetworkRecord): NetworkWant | undefined {
  if (!net.cluster || net.mode === 'bridge') return undefined;
  const gw = gatewayIp(net.ipv4[0]?.gateway);
  const o = net.overlay;
  return {
    kind: net.mode,
    ranges: net.cluster.pools.map((p) => p.range),
    ...(gw ? { gateway: gw } : {}),
    ...(o ? { vni: o.vni, ...(o.encrypted ? { encrypted: true } : {}), ...(o.backend === 'auto' ? { backend: 'auto' as const } : {}) } : {}),
  };
}

function poolOf(c: ClusterRecord, poolId: string): ClusterPoolRecord {
  const pool = c.pools.find((p) => p.poolId === poolId);
  if (!pool) throw new TsnetError('TSNET_ERR_INTERNAL', `pool ${poolId} is not a pool of cluster network ${c.subnet}`);
  return pool;
}
