// The IPAM driver (protocol.md §4) over the store. Design notes:
// - Pools are identified by "<address space>/<CIDR>", which is stable across
//   restarts and replays and needs no lookup table.
// - An auto-chosen pool never overlaps a pool tsnet holds (in any address
//   space), a route of this host, or another auto-chosen pool, and each
//   dynamic request gets a different pool: dockerd keeps asking while a pool
//   it got overlaps its own reserved list, holding the earlier ones
//   (protocol.md §4.3), so returning the same pool twice would loop forever.
// - Explicit pools (--subnet) are checked against pools of the same address
//   space only, as Docker's IPAM does.
// - Changes are made in memory under a lock, then made durable with a group
//   commit outside the lock; a failed commit takes the change back.
import type { Logger } from 'pino';
import type { DefaultPool } from '../config.js';
import { TsnetError, quote } from '../errors.js';
import type { Store, StorePath } from '../store/store.js';
import type { PoolRecord } from '../store/schema.js';
import { KeyedLock } from '../util/keyed-lock.js';
import type { ReleaseAddressRequest, ReleasePoolRequest, RequestAddressRequest, RequestPoolRequest } from '../api/types.js';
import { PoolAllocator } from './allocator.js';
import { containsPrefix, formatIp, formatPrefix, lastAddress, overlaps, parseIp, parsePrefix, subnets, width, type Prefix } from '../net/cidr.js';

export const LOCAL_SPACE = 'tsnet-local';
export const GLOBAL_SPACE = 'tsnet-global';
export const GATEWAY_TYPE = 'com.docker.network.gateway';
const POOLS_KEY = 'ipam:pools';

/** A route of this host, as far as choosing a free pool cares. */
export interface HostRoute {
  dst: string;
  type?: string;
}

/**
 * Cluster-wide allocation for pools that span hosts (overlay networks, and
 * macvlan networks on a LAN several hosts share): the pool's network, if it
 * has one, and addresses claimed across the cluster. IPAM tells it which
 * addresses it holds here, so claims from other hosts can be answered.
 */
export interface ClusterAllocator<N = unknown> {
  networkForPool(poolId: string): N | undefined;
  allocate(net: N, poolId: string, wanted: bigint | undefined, taken: (v: bigint) => boolean): Promise<bigint>;
  release(net: N, poolId: string, value: bigint): Promise<void>;
  isAllocated: (poolId: string, value: bigint) => boolean;
}

export interface IpamDeps {
  store: Store;
  log: Logger;
  defaultPools: DefaultPool[];
  /**
   * This host's routes of one family: an auto-chosen pool must not shadow
   * one. Handed in by whoever wires IPAM, so IPAM never reads the kernel.
   */
  hostRoutes: (v6: boolean) => Promise<HostRoute[]>;
  /** refuse new allocations (store loaded from a fallback copy) */
  readOnlyReason?: () => string | undefined;
  cluster?: ClusterAllocator;
}

export class IpamService {
  readonly #store: Store;
  readonly #hostRoutes: IpamDeps['hostRoutes'];
  readonly #defaults: DefaultPool[];
  readonly #locks = new KeyedLock();
  readonly #allocators = new Map<string, PoolAllocator>();
  readonly #readOnlyReason: () => string | undefined;
  readonly #cluster: ClusterAllocator | undefined;

  constructor(deps: IpamDeps) {
    this.#store = deps.store;
    this.#hostRoutes = deps.hostRoutes;
    this.#defaults = deps.defaultPools;
    this.#readOnlyReason = deps.readOnlyReason ?? (() => undefined);
    this.#cluster = deps.cluster;
    if (this.#cluster) this.#cluster.isAllocated = (poolId, v) => this.#allocators.get(poolId)?.has(v) ?? false;
    for (const rec of Object.values(this.#store.state.pools)) this.#allocators.set(rec.id, new PoolAllocator(rec));
  }

  capabilities(): { RequiresMACAddress: boolean; RequiresRequestReplay: boolean } {
    return { RequiresMACAddress: false, RequiresRequestReplay: false };
  }

  defaultAddressSpaces(): { LocalDefaultAddressSpace: string; GlobalDefaultAddressSpace: string } {
    return { LocalDefaultAddressSpace: LOCAL_SPACE, GlobalDefaultAddressSpace: GLOBAL_SPACE };
  }

  #assertWritable(): void {
    const reason = this.#readOnlyReason();
    if (reason) throw new TsnetError('TSNET_ERR_UNAVAILABLE', reason);
  }

  async requestPool(req: RequestPoolRequest, log: Logger): Promise<{ PoolID: string; Pool: string; Data: Record<string, string> }> {
    this.#assertWritable();
    const space = req.AddressSpace || LOCAL_SPACE;
    const v6 = req.V6 === true;
    const poolText = req.Pool ?? '';
    const subText = req.SubPool ?? '';
    const family = v6 ? 'IPv6' : 'IPv4';
    if (poolText === '' && subText !== '') {
      throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `SubPool ${quote(subText)} given without a Pool (--ip-range needs --subnet)`);
    }
    let pool: Prefix | undefined;
    if (poolText !== '') {
      pool = parsePrefix(poolText);
      if (!pool) {
        const loose = parsePrefix(poolText, false);
        throw new TsnetError(
          'TSNET_ERR_INVALID_REQUEST',
          loose ? `Pool ${quote(poolText)}: host bits are set; did you mean ${formatPrefix(loose)}?` : `Pool ${quote(poolText)} is not a CIDR`,
        );
      }
      this.#checkPoolSize(pool, v6, 'Pool', poolText);
    }
    let sub: Prefix | undefined;
    if (subText !== '') {
      sub = parsePrefix(subText);
      if (!sub) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `SubPool ${quote(subText)} is not a CIDR with its host bits clear`);
      if (!containsPrefix(pool!, sub)) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `SubPool ${subText} is not inside Pool ${poolText}`);
    }

    return this.#mutate([POOLS_KEY], async () => {
      const dynamic = pool === undefined;
      if (!pool) pool = await this.#pickDynamicPool(v6, family);
      else this.#checkOverlap(space, pool);
      const cidr = formatPrefix(pool);
      const id = `${space}/${cidr}`;
      const record: PoolRecord = {
        id,
        addressSpace: space,
        pool: cidr,
        ...(sub ? { subPool: formatPrefix(sub) } : {}),
        v6,
        dynamic,
        options: { ...(req.Options ?? {}) },
        allocations: {},
        createdAt: new Date().toISOString(),
      };
      this.#store.state.pools[id] = record;
      this.#allocators.set(id, new PoolAllocator(record));
      log.info({ poolId: id, pool: cidr, subPool: record.subPool, dynamic }, 'pool allocated');
      return {
        result: { PoolID: id, Pool: cidr, Data: {} },
        paths: [['pools', id]],
        undo: () => {
          delete this.#store.state.pools[id];
          this.#allocators.delete(id);
        },
      };
    });
  }

  #checkPoolSize(p: Prefix, v6: boolean, field: string, text: string): void {
    if (p.v6 !== v6) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${field} ${quote(text)} is ${p.v6 ? 'IPv6' : 'IPv4'} but V6 is ${v6}`);
    if (p.bits === 0) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${field} ${quote(text)} covers every address; give a real subnet`);
    if (p.bits > width(p.v6) - 2) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${field} ${quote(text)} is too small: at most /${width(p.v6) - 2}`);
  }

  #checkOverlap(space: string, pool: Prefix): void {
    for (const rec of Object.values(this.#store.state.pools)) {
      if (rec.addressSpace !== space) continue;
      const other = parsePrefix(rec.pool)!;
      if (overlaps(other, pool)) {
        throw new TsnetError(
          'TSNET_ERR_POOL_OVERLAP',
          `pool ${formatPrefix(pool)} overlaps pool ${rec.pool} already in use in address space ${space}`,
        );
      }
    }
  }

  async #pickDynamicPool(v6: boolean, family: string): Promise<Prefix> {
    const taken: Prefix[] = Object.values(this.#store.state.pools)
      .map((r) => parsePrefix(r.pool))
      .filter((p): p is Prefix => p !== undefined && p.v6 === v6);
    for (const route of await this.#hostRoutes(v6)) {
      if (route.dst === 'default' || route.type === 'multicast') continue;
      const dst = route.dst.includes('/') ? route.dst : `${route.dst}/${v6 ? 128 : 32}`;
      const p = parsePrefix(dst, false);
      if (p && p.bits > 0) taken.push(p);
    }
    // Taken ranges merged into disjoint spans sorted by start, then walked
    // once beside the candidates (which come in address order): checking
    // every candidate against every pool and route made this quadratic,
    // 0.2 ms with 10 networks and 6 ms with 200.
    const spans: Array<[bigint, bigint]> = [];
    for (const [lo, hi] of taken.map((t): [bigint, bigint] => [t.base, lastAddress(t)]).sort((a, b) => (a[0] < b[0] ? -1 : a[0] > b[0] ? 1 : 0))) {
      const last = spans[spans.length - 1];
      if (last && lo <= last[1] + 1n) {
        if (hi > last[1]) last[1] = hi;
      } else spans.push([lo, hi]);
    }
    for (const d of this.#defaults) {
      if (d.base.v6 !== v6) continue;
      let i = 0;
      for (const candidate of subnets(d.base, d.size)) {
        while (i < spans.length && spans[i]![1] < candidate.base) i++;
        if (i === spans.length || spans[i]![0] > lastAddress(candidate)) return candidate;
      }
    }
    throw new TsnetError(
      'TSNET_ERR_POOL_EXHAUSTED',
      `could not find an available, non-overlapping ${family} address pool among the defaults (${this.#defaults
        .filter((d) => d.base.v6 === v6)
        .map((d) => `${formatPrefix(d.base)}:${d.size}`)
        .join(', ') || 'none configured'}); give --subnet or widen TSNET_DEFAULT_POOLS`,
    );
  }

  async releasePool(req: ReleasePoolRequest, log: Logger): Promise<Record<string, never>> {
    await this.#mutate([POOLS_KEY, req.PoolID], async () => {
      const rec = this.#store.state.pools[req.PoolID];
      if (!rec) return undefined;
      delete this.#store.state.pools[req.PoolID];
      this.#allocators.delete(req.PoolID);
      log.info({ poolId: req.PoolID, leftover: Object.keys(rec.allocations).length }, 'pool released');
      return {
        result: undefined,
        paths: [['pools', req.PoolID]],
        undo: () => {
          this.#store.state.pools[req.PoolID] = rec;
          this.#allocators.set(req.PoolID, new PoolAllocator(rec));
        },
      };
    });
    return {};
  }

  async requestAddress(req: RequestAddressRequest, log: Logger): Promise<{ Address: string; Data: Record<string, string> }> {
    this.#assertWritable();
    const opts = req.Options ?? {};
    const isGateway = opts.RequestAddressType === GATEWAY_TYPE;
    const name = opts['com.docker.network.endpoint.name'];
    return this.#mutate([req.PoolID], async () => {
      const alloc = this.#allocators.get(req.PoolID);
      if (!alloc) {
        throw new TsnetError('TSNET_ERR_POOL_NOT_FOUND', `no pool with PoolID ${quote(req.PoolID)} (was it released, or created under another state directory?)`);
      }
      const v6 = alloc.prefix.v6;
      let value: bigint;
      const wanted = req.Address ?? '';
      const clusterNet = !isGateway ? this.#cluster?.networkForPool(req.PoolID) : undefined;
      if (wanted !== '') {
        const ip = parseIp(wanted);
        if (!ip) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `Address ${quote(wanted)} is not a plain IP address`);
        if (ip.v6 !== v6 || !alloc.inPool(ip.value)) {
          throw new TsnetError('TSNET_ERR_ADDRESS_OUT_OF_POOL', `address ${wanted} is not in pool ${alloc.record.pool}`);
        }
        if (alloc.isReserved(ip.value)) {
          throw new TsnetError('TSNET_ERR_ADDRESS_OUT_OF_POOL', `address ${wanted} is the ${ip.value === alloc.prefix.base ? 'network' : 'broadcast'} address of ${alloc.record.pool}`);
        }
        if (clusterNet && !alloc.has(ip.value)) {
          // Unique across the cluster, not just here (may ask etcd or the block's owner).
          await this.#cluster!.allocate(clusterNet, req.PoolID, ip.value, (v) => alloc.has(v) || alloc.isReserved(v));
        }
        if (alloc.has(ip.value)) {
          const owner = alloc.owner(ip.value);
          throw new TsnetError(
            'TSNET_ERR_ADDRESS_IN_USE',
            `address ${formatIp(ip)} is already allocated in pool ${alloc.record.pool}${owner ? ` (${owner.kind}${owner.name ? ` ${owner.name}` : ''})` : ''}`,
          );
        }
        value = ip.value;
      } else if (clusterNet) {
        value = await this.#cluster!.allocate(clusterNet, req.PoolID, undefined, (v) => alloc.has(v) || alloc.isReserved(v) || !alloc.inPool(v));
      } else {
        const free = alloc.firstFree();
        if (free === undefined) {
          throw new TsnetError('TSNET_ERR_ADDRESS_EXHAUSTED', `no free address left in ${alloc.record.subPool ? `ip-range ${alloc.record.subPool} of ` : ''}pool ${alloc.record.pool}`);
        }
        value = free;
      }
      const kind = isGateway ? 'gateway' : wanted !== '' ? 'static' : 'dynamic';
      const text = alloc.take(value, { kind, ...(name ? { name: String(name).slice(0, 128) } : {}), at: new Date().toISOString() });
      log.debug({ poolId: req.PoolID, address: text, kind }, 'address allocated');
      // Cluster pools also change cluster bookkeeping: those commit the whole state.
      const paths = clusterNet ? undefined : [['pools', req.PoolID, 'allocations', text]];
      return { result: { Address: `${text}/${alloc.prefix.bits}`, Data: {} }, paths, undo: () => void alloc.release(value) };
    });
  }

  async releaseAddress(req: ReleaseAddressRequest, log: Logger): Promise<Record<string, never>> {
    const ip = parseIp(req.Address);
    if (!ip) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `Address ${quote(req.Address)} is not a plain IP address`);
    await this.#mutate([req.PoolID], async () => {
      const alloc = this.#allocators.get(req.PoolID);
      if (!alloc || !alloc.has(ip.value)) return undefined;
      const prev = alloc.owner(ip.value)!;
      alloc.release(ip.value);
      const clusterNet = this.#cluster?.networkForPool(req.PoolID);
      if (clusterNet) await this.#cluster!.release(clusterNet, req.PoolID, ip.value);
      log.debug({ poolId: req.PoolID, address: req.Address }, 'address released');
      const paths = clusterNet ? undefined : [['pools', req.PoolID, 'allocations', formatIp({ v6: alloc.prefix.v6, value: ip.value })]];
      // If someone took the address meanwhile, the release stands.
      return { result: undefined, paths, undo: () => void (alloc.has(ip.value) || alloc.take(ip.value, prev)) };
    });
    return {};
  }

  /**
   * Change memory under the keys' lock, then wait for a group commit outside
   * it, so concurrent requests share one fsync. A request answers only once
   * its change is durable; if the write fails the change is taken back.
   * (Another request may see the change before it is durable; its own
   * commit then includes it, so what was answered is always on disk.)
   * `paths` names what the change touched, so the store journals just that.
   */
  async #mutate<T>(keys: string[], change: () => Promise<{ result: T; undo: () => void; paths?: StorePath[] | undefined } | undefined>): Promise<T> {
    const outcome = await this.#locks.runAll(keys, change);
    if (!outcome) return undefined as T;
    try {
      await this.#store.commit(outcome.paths);
    } catch (err) {
      await this.#locks.runAll(keys, async () => outcome.undo());
      throw err;
    }
    return outcome.result;
  }

  /** For tests and reconcile: every allocated address of a pool. */
  allocated(poolId: string): string[] {
    return Object.keys(this.#store.state.pools[poolId]?.allocations ?? {});
  }
}
