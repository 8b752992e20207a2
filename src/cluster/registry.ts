// The cluster's control plane in etcd: networks that span hosts (overlays,
// and macvlan networks whose addresses are allocated cluster-wide). Design notes:
// - Key layout (prefix /tsnet/v1):
//     hosts/<host>                                {vtep}            under the host lease
//     overlays/<subnet>                           {subnet, kind, vni, gateway, ranges, backend?}
//     vnis/<vni>                                  <subnet>
//     overlays/<subnet>/members/<host>            {vtep, wg?, addr4?, addr6?}  under the host lease
//     overlays/<subnet>/blocks/<block>            {host}            leased address blocks
//     overlays/<subnet>/claims/<ip>               {host, state}     static addresses
//     overlays/<subnet>/endpoints/<host>/<ep>     {ip, mac, vtep, ip6?, names?}   under the host lease
//   (names: the container's DNS names on the network, so they go with the
//   endpoint and with the host's lease)
//   <subnet> and <block> are CIDRs with '/' replaced by '_'. The prefix says
//   "overlays" because overlays came first; every cluster network lives there
//   (`kind` tells them apart, absent meaning overlay), so hosts of an older
//   tsnet keep finding their overlays. A member's addr4/addr6 are its LAN
//   addresses of each family (routed networks route IPv6 blocks through
//   addr6); tsnet before routed networks wrote and reads {vtep} alone.
// - A subnet is one network cluster-wide: its kind, VNI, gateway and dynamic
//   ranges (one per address family) are agreed when the first host creates
//   it, and every other host must name the same (differing ranges would
//   carve differently sized blocks that overlap, and hand out one address
//   twice).
// - Everything that claims something (an overlay's VNI, a block, a static
//   address) is one etcd transaction comparing the key's version with 0, so
//   two hosts can never both win it.
// - The host lease is kept alive by etcd3; when it is lost (etcd down longer
//   than the TTL) a new one is granted as soon as etcd answers and every key
//   this host owns is written again under it. A plugin restart does the same,
//   so other hosts never see this host's endpoints flap.
// - Watches list first, then watch from the listed revision; after a
//   disconnect etcd3 resumes, and after compaction (the watch is cancelled)
//   the whole prefix is listed again.
import { EventEmitter } from 'node:events';
import { ExponentialBackoff } from 'cockatiel';
import { Etcd3, type Lease, type Watcher } from 'etcd3';
import type { Logger } from 'pino';
import { TsnetError } from '../errors.js';

export const ROOT = '/tsnet/v1';

export interface ClusterOptions {
  endpoints: string[];
  hostId: string;
  vtep: string;
  /** this host's LAN addresses of each family, published beside the VTEP */
  addrs?: MemberAddrs;
  leaseTtl: number;
  log: Logger;
}

/** What kind of network a cluster subnet is; fixed by the host that creates it. */
export type ClusterKind = 'overlay' | 'macvlan' | 'ipvlan' | 'routed';

export interface MemberAddrs {
  addr4?: string;
  addr6?: string;
}

export interface NetworkInfo {
  subnet: string;
  /** absent in records of tsnet before other kinds existed: an overlay */
  kind?: ClusterKind;
  /** overlays only */
  vni?: number;
  gateway?: string;
  /** the dynamic ranges blocks are carved from, one per pool; absent in older records */
  ranges?: string[];
  /** overlays: tsnet.encrypt, fixed by the host that creates it (absent: not encrypted) */
  encrypted?: boolean;
  /** overlays: 'auto' routes same-LAN members directly; absent means VXLAN to every member */
  backend?: 'vxlan' | 'auto';
}

/**
 * A member host as its network's peers see it. An encrypted overlay's
 * members publish their tunnel address as vtep, and wg: the WireGuard peer
 * the other hosts add (key, port, underlay address, when the key was made).
 * Every member also names its LAN address of each family (addr4, addr6),
 * which routed networks route the host's blocks through.
 */
export interface MemberInfo extends MemberAddrs {
  vtep: string;
  wg?: { key: string; port: number; underlay: string; since?: number };
}

export interface NetworkView {
  revision: number;
  members: Map<string, MemberInfo>;
  endpoints: Map<string, { host: string; ip: string; mac: string; vtep: string; ip6?: string; names?: string[] }>;
  blocks: Map<string, { host: string }>;
  claims: Map<string, Claim>;
}

/** What one host holds in the cluster: address blocks and static claims per network. */
export interface HostHoldings {
  host: string;
  /** its lease holds hosts/<host>: its tsnet is running, or stopped less than the lease TTL ago */
  alive: boolean;
  networks: Array<{ subnet: string; blocks: string[]; claims: string[] }>;
}

export interface Claim {
  host: string;
  state: 'pending' | 'ok' | 'refused';
  reason?: string;
}

export function subnetKey(subnet: string): string {
  return subnet.replace('/', '_');
}

const CALL_TIMEOUT_MS = 3000;
/** HTTP/2 ping interval on etcd connections with open streams; etcd refuses pings closer than 5 s apart. */
const KEEPALIVE_PING_MS = 6000;

/** Refuse what disagrees with the cluster's record of a subnet, naming the option. */
export type NetworkWant = { kind: ClusterKind; vni?: number; gateway?: string; ranges?: string[]; encrypted?: boolean; backend?: 'vxlan' | 'auto' };

export function checkAgreement(subnet: string, info: NetworkInfo, want: NetworkWant): void {
  const kind = info.kind ?? 'overlay';
  if (kind !== want.kind) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.mode: ${want.kind} disagrees with the cluster, where ${subnet} is a ${kind} network`);
  }
  if ((want.encrypted ?? false) !== (info.encrypted ?? false)) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.encrypt: ${want.encrypted ?? false} disagrees with the cluster, where ${subnet} is ${info.encrypted ? '' : 'not '}encrypted`);
  }
  if (want.vni !== undefined && want.vni !== info.vni) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.vni: ${want.vni} disagrees with the cluster, where ${subnet} is VNI ${info.vni}`);
  }
  if (want.backend !== undefined && want.backend !== (info.backend ?? 'vxlan')) {
    // A host routing directly to one that still sends over VXLAN (or back) is half a network.
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.backend: ${want.backend} disagrees with the cluster, where ${subnet} uses ${info.backend ?? 'vxlan'}`);
  }
  if (want.gateway && info.gateway && want.gateway !== info.gateway) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `gateway ${want.gateway} disagrees with the cluster, where ${subnet} uses ${info.gateway}`);
  }
  if (want.ranges && info.ranges && [...want.ranges].sort().join(',') !== [...info.ranges].sort().join(',')) {
    throw new TsnetError(
      'TSNET_ERR_INVALID_OPTION',
      `ip-range ${want.ranges.join(', ')} disagrees with the cluster, where ${subnet} hands out addresses from ${info.ranges.join(', ')}; give every host the same subnets and --ip-range (or none)`,
    );
  }
}

/** One block or claim more in a host's holdings, under its network. */
function addHeld(h: HostHoldings, held: { subnet: string; kind: 'blocks' | 'claims'; item: string }): void {
  let net = h.networks.find((n) => n.subnet === held.subnet);
  if (!net) h.networks.push((net = { subnet: held.subnet, blocks: [], claims: [] }));
  (held.kind === 'blocks' ? net.blocks : net.claims).push(held.item);
}

/** The host a block or claim value names, if it parses. */
function parseOwner(value: string): string | undefined {
  try {
    const v = JSON.parse(value) as { host?: unknown };
    return typeof v.host === 'string' ? v.host : undefined;
  } catch {
    return undefined;
  }
}

function withTimeout<T>(p: Promise<T>, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<T>((_, reject) => {
      timer = setTimeout(() => reject(new TsnetError('TSNET_ERR_CLUSTER', `etcd did not answer (${what}) within ${CALL_TIMEOUT_MS / 1000}s`)), CALL_TIMEOUT_MS);
    }),
  ]).finally(() => clearTimeout(timer));
}

export class ClusterRegistry extends EventEmitter {
  readonly hostId: string;
  #vtep: string;
  #addrs: MemberAddrs;
  readonly #client: Etcd3;
  readonly #ttl: number;
  readonly #log: Logger;
  #lease: Lease | undefined;
  /** keys this host owns under its lease, re-written whenever the lease is renewed */
  readonly #leased = new Map<string, string>();
  #regranting: Promise<void> | undefined;
  #closed = false;
  #available = false;
  /** times a watch was cancelled and its prefix listed again (metrics) */
  relists = 0;

  constructor(opts: ClusterOptions) {
    super();
    this.hostId = opts.hostId;
    this.#vtep = opts.vtep;
    this.#addrs = opts.addrs ?? {};
    this.#ttl = opts.leaseTtl;
    this.#log = opts.log.child({ component: 'cluster' });
    this.#client = new Etcd3({
      hosts: opts.endpoints,
      dialTimeout: 2000,
      defaultCallOptions: (ctx) => (ctx.isStream ? {} : { deadline: Date.now() + CALL_TIMEOUT_MS }),
      // etcd3 calls .next() on this at run time (a backoff factory), though its
      // typings ask for a backoff; reconnect within 2 s rather than its 30 s default.
      faultHandling: { watchBackoff: new ExponentialBackoff({ initialDelay: 200, maxDelay: 2000 }) as never },
      // A connection can die without a word: this host's address changed
      // (its packets now leave from an address it no longer has), a NAT or
      // firewall forgot it. Unary calls have deadlines, but the lease's
      // keepalive stream and the watches would hang on it until the lease
      // expired (etcd3 restarts a silent keepalive stream only after a whole
      // TTL). HTTP/2 pings find it dead within 8 s and every stream restarts
      // on a new connection. Only while calls are open, and no more often
      // than etcd's --grpc-keepalive-min-time (5 s) allows.
      grpcOptions: { 'grpc.keepalive_time_ms': KEEPALIVE_PING_MS, 'grpc.keepalive_timeout_ms': 2000, 'grpc.keepalive_permit_without_calls': 0 },
    });
  }

  /** this host's underlay (VTEP) address, as published */
  get vtep(): string {
    return this.#vtep;
  }

  /**
   * This host's addresses changed (DHCP, renumbering): published again
   * under hosts/<host> at once, and, through 'moved' (ClusterNetworks joins
   * every followed network again), in each membership and endpoint, which
   * the other hosts' watches turn into new forwarding entries and routes.
   * Returns whether anything changed.
   */
  moveTo(vtep: string, addrs: MemberAddrs): boolean {
    if (vtep === this.#vtep && addrs.addr4 === this.#addrs.addr4 && addrs.addr6 === this.#addrs.addr6) return false;
    this.#log.warn({ from: { vtep: this.#vtep, ...this.#addrs }, to: { vtep, ...addrs } }, "this host's address changed; publishing the new one to the cluster");
    this.#vtep = vtep;
    this.#addrs = { ...addrs };
    void this.#putLeased(...this.#hostEntry()).catch(() => undefined);
    this.emit('moved');
    return true;
  }

  /** hosts/<host> and what it holds: this host's addresses, under its lease */
  #hostEntry(): [string, string] {
    return [`${ROOT}/hosts/${this.hostId}`, JSON.stringify({ vtep: this.#vtep, ...this.#addrs })];
  }

  /** etcd answered the last call (the lease is alive). */
  get available(): boolean {
    return this.#available;
  }

  /** A fresh look for tsnetctl doctor: does etcd answer, and is this host's lease key (which lives only as long as the lease) there? */
  async health(): Promise<{ reachable: boolean; leaseAlive: boolean; error?: string }> {
    try {
      const v = await withTimeout(this.#client.get(`${ROOT}/hosts/${this.hostId}`).string(), 'doctor');
      return { reachable: true, leaseAlive: v !== null };
    } catch (err) {
      return { reachable: false, leaseAlive: false, error: (err as Error).message };
    }
  }

  /** Register this host; retries in the background until etcd answers. */
  start(): void {
    void this.#regrant();
  }

  #regrant(): Promise<void> {
    this.#regranting ??= (async () => {
      for (let attempt = 0; !this.#closed; attempt++) {
        try {
          const lease = this.#client.lease(this.#ttl, { autoKeepAlive: true });
          await withTimeout(lease.grant(), 'grant lease');
          lease.on('lost', (err) => {
            if (this.#lease !== lease || this.#closed) return;
            this.#available = false;
            this.#log.warn({ err: err.message }, 'etcd lease lost; re-registering when etcd answers');
            this.#lease = undefined;
            void this.#regrant();
          });
          this.#lease = lease;
          this.#leased.set(...this.#hostEntry());
          await this.flush();
          this.#log.info({ hostId: this.hostId, vtep: this.vtep, keys: this.#leased.size }, 'registered with etcd');
          this.emit('available');
          return;
        } catch (err) {
          this.#available = false;
          if (attempt % 10 === 0) this.#log.warn({ err: (err as Error).message }, 'etcd unreachable; retrying');
          await new Promise((r) => setTimeout(r, Math.min(2000, 200 * (attempt + 1))));
        }
      }
    })().finally(() => (this.#regranting = undefined));
    return this.#regranting;
  }

  async #putLeased(key: string, value: string): Promise<void> {
    await this.#writeLeased(key, value, async (lease) => void (await withTimeout(lease.put(key).value(value).exec(), `put ${key}`)));
  }

  /**
   * A key this host owns under its lease: kept for re-writing whenever the
   * lease is renewed, and written now by `write`. A failed write is retried
   * by the flush (and marks etcd unavailable until it answers).
   */
  async #writeLeased(key: string, value: string, write: (lease: Lease) => Promise<void>): Promise<void> {
    this.#leased.set(key, value);
    try {
      if (!this.#lease) throw new TsnetError('TSNET_ERR_CLUSTER', 'etcd is unreachable (no lease); the key will be written when it returns');
      await write(this.#lease);
    } catch (err) {
      this.#available = false;
      this.#scheduleFlush();
      throw err;
    }
  }

  #flushTimer: NodeJS.Timeout | undefined;

  /**
   * Retry writing every owned key until etcd takes them. The lease may well
   * have survived the outage (etcd restores leases on restart), so nothing
   * else would notice that a write was missed.
   */
  #scheduleFlush(): void {
    if (this.#flushTimer || this.#closed) return;
    this.#flushTimer = setTimeout(() => {
      this.#flushTimer = undefined;
      this.flush().then(
        () => this.#log.info({ keys: this.#leased.size }, 'wrote pending keys to etcd'),
        () => this.#scheduleFlush(),
      );
    }, 1000);
    this.#flushTimer.unref();
  }

  readonly #pendingDeletes = new Set<string>();

  async #deleteLeased(key: string): Promise<void> {
    this.#leased.delete(key);
    this.#reasserted.delete(key);
    try {
      await withTimeout(this.#client.delete().key(key).exec(), `delete ${key}`);
      this.#pendingDeletes.delete(key);
    } catch (err) {
      // Otherwise the key would live on under our (still valid) lease.
      this.#pendingDeletes.add(key);
      this.#scheduleFlush();
      throw err;
    }
  }

  /**
   * Look up or create the cluster network of a subnet. What this host asks
   * for must agree with what the cluster has: kind, VNI, gateway, ranges.
   * An overlay's VNI is claimed with the network in one transaction.
   */
  async ensureNetwork(subnet: string, want: NetworkWant): Promise<NetworkInfo> {
    const sk = subnetKey(subnet);
    const key = `${ROOT}/overlays/${sk}`;
    for (let attempt = 0; attempt < 8; attempt++) {
      const existing = await withTimeout(this.#client.get(key).string(), 'get network');
      if (existing) {
        const info = JSON.parse(existing) as NetworkInfo;
        checkAgreement(subnet, info, want);
        return info;
      }
      const vni = want.kind === 'overlay' ? (want.vni ?? (await this.#freeVni(subnet, attempt))) : undefined;
      const info: NetworkInfo = {
        subnet,
        kind: want.kind,
        ...(vni !== undefined ? { vni } : {}),
        ...(want.gateway ? { gateway: want.gateway } : {}),
        ...(want.ranges ? { ranges: want.ranges } : {}),
        ...(want.encrypted ? { encrypted: true } : {}),
        ...(want.backend === 'auto' ? { backend: want.backend } : {}),
      };
      const txn = this.#client.if(key, 'Version', '==', 0);
      if (vni !== undefined) txn.and(`${ROOT}/vnis/${vni}`, 'Version', '==', 0);
      const puts = [this.#client.put(key).value(JSON.stringify(info)), ...(vni !== undefined ? [this.#client.put(`${ROOT}/vnis/${vni}`).value(sk)] : [])];
      const res = await withTimeout(txn.then(...puts).commit(), 'claim network');
      if (res.succeeded) {
        this.#log.info({ subnet, kind: want.kind, vni }, 'network created in the cluster');
        return info;
      }
      if (vni === undefined) continue;
      const owner = await withTimeout(this.#client.get(`${ROOT}/vnis/${vni}`).string(), 'get vni');
      if (want.vni !== undefined && owner && owner !== sk) {
        throw new TsnetError('TSNET_ERR_INVALID_OPTION', `tsnet.vni: ${vni} is already used by overlay ${owner.replace('_', '/')}`);
      }
    }
    throw new TsnetError('TSNET_ERR_CLUSTER', `could not create ${subnet} in the cluster: too much contention`);
  }

  /** A VNI derived from the subnet (so hosts agree without asking), probing on from there if taken. */
  async #freeVni(subnet: string, attempt: number): Promise<number> {
    let h = 2166136261;
    for (const c of subnet) h = Math.imul(h ^ c.charCodeAt(0), 16777619) >>> 0;
    // Docker's overlay allocates from 4096 up; stay in that space too.
    const base = 4096 + (h % (16777215 - 4096));
    for (let i = 0; i < 64; i++) {
      const vni = 4096 + ((base - 4096 + attempt * 64 + i) % (16777215 - 4096));
      const taken = await withTimeout(this.#client.get(`${ROOT}/vnis/${vni}`).string(), 'get vni');
      if (!taken) return vni;
    }
    throw new TsnetError('TSNET_ERR_CLUSTER', 'no free VNI found');
  }

  /**
   * Become (or stay) a member: one transaction that also re-writes the
   * network's record, so the last other host leaving at this moment (it
   * deletes the record only if unchanged since it found the network empty)
   * cannot remove a network this host joins. A record already removed is
   * made again from `want`, the settings this host agreed to.
   */
  async join(subnet: string, member: MemberInfo = { vtep: this.vtep }, want?: NetworkWant): Promise<void> {
    const recordKey = `${ROOT}/overlays/${subnetKey(subnet)}`;
    const key = `${recordKey}/members/${this.hostId}`;
    // The LAN addresses go beside whatever the mode publishes (routed networks route through them).
    const value = JSON.stringify({ ...this.#addrs, ...member });
    await this.#writeLeased(key, value, async (lease) => {
      const leaseId = await withTimeout(lease.grant(), 'lease');
      for (let attempt = 0; attempt < 4; attempt++) {
        const kv = (await withTimeout(this.#client.get(recordKey).exec(), 'get network')).kvs[0];
        if (!kv) {
          if (!want) throw new TsnetError('TSNET_ERR_CLUSTER', `${subnet} is gone from the cluster`);
          await this.ensureNetwork(subnet, want);
          this.#log.warn({ subnet }, 'the network was gone from etcd (its last other host left as this one joined); made it again with the settings agreed before');
          continue;
        }
        const res = await withTimeout(
          this.#client.if(recordKey, 'Mod', '==', kv.mod_revision).then(this.#client.put(recordKey).value(kv.value), this.#client.put(key).value(value).lease(leaseId)).commit(),
          'join',
        );
        if (res.succeeded) return;
      }
      throw new TsnetError('TSNET_ERR_CLUSTER', `could not join ${subnet} in the cluster: too much contention`);
    });
  }

  /**
   * This host's network is gone: its membership and endpoints go, and so do
   * the address blocks and claims it held (each only if still this host's),
   * so the addresses return to the cluster. A host that dies for good keeps
   * its blocks until an operator removes them.
   */
  async leave(subnet: string): Promise<void> {
    const sk = subnetKey(subnet);
    const prefix = `${ROOT}/overlays/${sk}/`;
    for (const k of [...this.#leased.keys()]) if (k.startsWith(prefix)) this.#leased.delete(k);
    await withTimeout(this.#client.delete().key(`${prefix}members/${this.hostId}`).exec(), 'leave');
    await withTimeout(this.#client.delete().prefix(`${prefix}endpoints/${this.hostId}/`).exec(), 'leave');
    for (const sub of ['blocks/', 'claims/']) {
      const kvs = await withTimeout(this.#client.getAll().prefix(`${prefix}${sub}`).strings(), 'list held');
      for (const [k, v] of Object.entries(kvs)) {
        if (parseOwner(v) !== this.hostId) continue;
        await withTimeout(this.#client.if(k, 'Value', '==', v).then(this.#client.delete().key(k)).commit(), 'release held');
      }
    }
    await this.#forgetIfEmpty(sk);
  }

  /**
   * The last host out forgets the network, so it can be created again with
   * other settings; unless its record changed since it was read, before
   * counting: every join re-writes it in the same transaction as the
   * member, so a host joining meanwhile keeps the network. (A host that
   * created the network's record just before and has not joined yet makes
   * it again when it joins: join's `want`.)
   */
  async #forgetIfEmpty(sk: string): Promise<void> {
    const subnet = sk.replace('_', '/');
    const prefix = `${ROOT}/overlays/${sk}/`;
    const info = await withTimeout(this.#client.get(`${ROOT}/overlays/${sk}`).exec(), 'get network');
    const kv = info.kvs[0];
    if (!kv) return;
    const left = await withTimeout(this.#client.getAll().prefix(prefix).count(), 'count network');
    if (left > 0) return;
    const vni = (JSON.parse(kv.value.toString()) as NetworkInfo).vni;
    const txn = this.#client.if(`${ROOT}/overlays/${sk}`, 'Mod', '==', kv.mod_revision).then(
      this.#client.delete().key(`${ROOT}/overlays/${sk}`),
      ...(vni !== undefined ? [this.#client.delete().key(`${ROOT}/vnis/${vni}`)] : []),
    );
    const res = await withTimeout(txn.commit(), 'forget network');
    if (res.succeeded) this.#log.info({ subnet }, 'last host left; the network is gone from the cluster');
  }

  /**
   * Who holds address blocks and static claims, network by network, and
   * whether each holder is alive (its lease keeps hosts/<host>). A host
   * gone for good keeps what it held until an operator forgets it.
   */
  async holders(): Promise<HostHoldings[]> {
    const alive = new Set((await withTimeout(this.#client.getAll().prefix(`${ROOT}/hosts/`).keys(), 'list hosts')).map((k) => k.slice(`${ROOT}/hosts/`.length)));
    const byHost = new Map<string, HostHoldings>();
    for (const held of await this.#held()) {
      const h = byHost.get(held.host) ?? { host: held.host, alive: alive.has(held.host), networks: [] };
      byHost.set(held.host, h);
      addHeld(h, held);
    }
    return [...byHost.values()].sort((a, b) => Number(a.alive) - Number(b.alive) || a.host.localeCompare(b.host));
  }

  /**
   * Give back to the cluster every block and claim a dead host held, for a
   * host that is gone for good: another host may then hand out its
   * addresses. Refused for this host and for a host whose lease is alive;
   * each release is one transaction that also checks the host is still
   * away, so a host coming back meanwhile keeps what it holds.
   */
  async forgetHost(host: string): Promise<HostHoldings> {
    if (host === this.hostId) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `host: ${JSON.stringify(host)} is this host; a host gives its addresses back by removing its networks`);
    const hostKey = `${ROOT}/hosts/${host}`;
    if ((await withTimeout(this.#client.get(hostKey).string(), 'get host')) !== null) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `host: ${JSON.stringify(host)} is alive (its lease holds ${hostKey}); forget only a host whose tsnet is gone for good`);
    }
    const released: HostHoldings = { host, alive: false, networks: [] };
    for (const held of await this.#held()) {
      if (held.host !== host) continue;
      const res = await withTimeout(
        this.#client.if(held.key, 'Value', '==', held.value).and(hostKey, 'Version', '==', 0).then(this.#client.delete().key(held.key)).commit(),
        'release held',
      );
      if (res.succeeded) addHeld(released, held);
    }
    for (const net of released.networks) {
      const sk = subnetKey(net.subnet);
      // Its leased keys went with its lease; a left-over of an older tsnet goes too.
      await withTimeout(this.#client.delete().key(`${ROOT}/overlays/${sk}/members/${host}`).exec(), 'forget member');
      await withTimeout(this.#client.delete().prefix(`${ROOT}/overlays/${sk}/endpoints/${host}/`).exec(), 'forget endpoints');
      await this.#forgetIfEmpty(sk);
    }
    this.#log.warn({ host, released: released.networks }, "forgot a dead host: its address blocks and claims are the cluster's again");
    return released;
  }

  /** Every block and claim in every cluster network, with its holder. */
  async #held(): Promise<Array<{ key: string; value: string; subnet: string; kind: 'blocks' | 'claims'; item: string; host: string }>> {
    const kvs = await withTimeout(this.#client.getAll().prefix(`${ROOT}/overlays/`).strings(), 'list held');
    const out = [];
    for (const [key, value] of Object.entries(kvs)) {
      const m = /^([^/]+)\/(blocks|claims)\/([^/]+)$/.exec(key.slice(`${ROOT}/overlays/`.length));
      const host = m ? parseOwner(value) : undefined;
      if (!m || !host) continue;
      out.push({ key, value, subnet: m[1]!.replace('_', '/'), kind: m[2] as 'blocks' | 'claims', item: m[3]!.replace('_', '/'), host });
    }
    return out;
  }

  /**
   * A block (key form) or claimed address this host hands out or uses,
   * missing in etcd (an operator forgot this host while it was away): taken
   * again if still free ('retaken'); 'held' when it is this host's after
   * all (a view older than the lease), 'other' when another host has it.
   */
  async keepHeld(subnet: string, kind: 'blocks' | 'claims', item: string): Promise<'retaken' | 'held' | 'other'> {
    const key = `${ROOT}/overlays/${subnetKey(subnet)}/${kind}/${item}`;
    const value = kind === 'blocks' ? { host: this.hostId } : ({ host: this.hostId, state: 'ok' } satisfies Claim);
    const res = await withTimeout(this.#client.if(key, 'Version', '==', 0).then(this.#client.put(key).value(JSON.stringify(value))).commit(), 'keep held');
    if (res.succeeded) return 'retaken';
    return parseOwner((await withTimeout(this.#client.get(key).string(), 'get held')) ?? '') === this.hostId ? 'held' : 'other';
  }

  /** Try to lease one of the candidate blocks; returns the key won, or undefined if all are taken. */
  async leaseBlock(subnet: string, candidates: Iterable<string>, limit = 64): Promise<string | undefined> {
    const prefix = `${ROOT}/overlays/${subnetKey(subnet)}/blocks/`;
    const taken = new Set((await withTimeout(this.#client.getAll().prefix(prefix).keys(), 'list blocks')).map((k) => k.slice(prefix.length)));
    let tried = 0;
    for (const b of candidates) {
      if (taken.has(b)) continue;
      if (tried++ >= limit) break;
      const res = await withTimeout(
        this.#client
          .if(`${prefix}${b}`, 'Version', '==', 0)
          .then(this.#client.put(`${prefix}${b}`).value(JSON.stringify({ host: this.hostId })))
          .commit(),
        'lease block',
      );
      if (res.succeeded) return b;
    }
    return undefined;
  }

  /** A static address in no leased block: one transaction that also checks the block is still unleased. */
  async claimUnblocked(subnet: string, ip: string, block: string): Promise<boolean> {
    const sk = subnetKey(subnet);
    const res = await withTimeout(
      this.#client
        .if(`${ROOT}/overlays/${sk}/claims/${ip}`, 'Version', '==', 0)
        .and(`${ROOT}/overlays/${sk}/blocks/${block}`, 'Version', '==', 0)
        .then(this.#client.put(`${ROOT}/overlays/${sk}/claims/${ip}`).value(JSON.stringify({ host: this.hostId, state: 'ok' } satisfies Claim)))
        .commit(),
      'claim address',
    );
    return res.succeeded;
  }

  /**
   * A static address inside another host's block: ask its owner, who alone
   * hands out addresses there, and wait for the answer. An owner that does
   * not answer means a clear error, never a guess.
   */
  async requestClaim(subnet: string, ip: string, owner: string, waitMs = 3000): Promise<void> {
    const key = `${ROOT}/overlays/${subnetKey(subnet)}/claims/${ip}`;
    const res = await withTimeout(
      this.#client
        .if(key, 'Version', '==', 0)
        .then(this.#client.put(key).value(JSON.stringify({ host: this.hostId, state: 'pending' } satisfies Claim)))
        .commit(),
      'request claim',
    );
    if (!res.succeeded) throw new TsnetError('TSNET_ERR_ADDRESS_IN_USE', `address ${ip} is already claimed in the cluster`);
    const until = Date.now() + waitMs;
    while (Date.now() < until) {
      const text = await withTimeout(this.#client.get(key).string(), 'read claim');
      const claim = text ? (JSON.parse(text) as Claim) : undefined;
      if (claim?.state === 'ok' && claim.host === this.hostId) return;
      if (!claim || claim.state === 'refused') {
        await this.#client.delete().key(key).exec().catch(() => undefined);
        throw new TsnetError('TSNET_ERR_ADDRESS_IN_USE', `address ${ip} is in use on host ${owner}${claim?.reason ? ` (${claim.reason})` : ''}`);
      }
      await new Promise((r) => setTimeout(r, 50));
    }
    await this.#client.delete().key(key).exec().catch(() => undefined);
    throw new TsnetError('TSNET_ERR_CLUSTER', `address ${ip} belongs to host ${owner}'s block, and that host did not confirm within ${waitMs / 1000}s; is its tsnet running?`);
  }

  async answerClaim(subnet: string, ip: string, claim: Claim): Promise<void> {
    await withTimeout(this.#client.put(`${ROOT}/overlays/${subnetKey(subnet)}/claims/${ip}`).value(JSON.stringify(claim)).exec(), 'answer claim');
  }

  async releaseClaim(subnet: string, ip: string): Promise<void> {
    await withTimeout(this.#client.delete().key(`${ROOT}/overlays/${subnetKey(subnet)}/claims/${ip}`).exec(), 'release claim');
  }

  async publishEndpoint(subnet: string, endpointId: string, ep: { ip: string; mac: string; ip6?: string; names?: string[] }, vtep = this.vtep): Promise<void> {
    await this.#putLeased(`${ROOT}/overlays/${subnetKey(subnet)}/endpoints/${this.hostId}/${endpointId}`, JSON.stringify({ ...ep, vtep }));
  }

  async unpublishEndpoint(subnet: string, endpointId: string): Promise<void> {
    await this.#deleteLeased(`${ROOT}/overlays/${subnetKey(subnet)}/endpoints/${this.hostId}/${endpointId}`);
  }

  /** Write whatever is pending (keys recorded while etcd was unreachable). */
  async flush(): Promise<void> {
    if (!this.#lease) {
      await this.#regrant();
      return;
    }
    try {
      for (const [k, v] of this.#leased) await withTimeout(this.#lease.put(k).value(v).exec(), 're-put');
      for (const k of [...this.#pendingDeletes]) {
        await withTimeout(this.#client.delete().key(k).exec(), `delete ${k}`);
        this.#pendingDeletes.delete(k);
      }
      this.#available = true;
    } catch (err) {
      this.#available = false;
      throw err;
    }
  }

  /** when each key was last written again by #reassert */
  readonly #reasserted = new Map<string, number>();

  /**
   * etcd shows a key this host owns with a value other than the one it last
   * wrote: a write whose call timed out arrived after a newer one. That
   * happens when a host's address goes and comes back: the requests queued
   * on the connection from it are delivered once the address returns, an
   * endpoint's old VTEP over its new one. This host's own word is the
   * truth, so it is written again (at most once a second per key, should
   * two hosts ever share an ID and fight over it).
   */
  #reassert(key: string, seen: string): void {
    const mine = this.#leased.get(key);
    if (mine === undefined || mine === seen || !this.#lease) return;
    const now = Date.now();
    if (now - (this.#reasserted.get(key) ?? 0) < 1000) return;
    this.#reasserted.set(key, now);
    this.#log.warn({ key }, 'etcd holds an older value of a key of this host (a write that arrived late); writing it again');
    void this.#putLeased(key, mine).catch(() => undefined);
  }

  /**
   * Follow everything under one cluster network. The handler gets the whole
   * view after every change (coalesced), so it can diff against the kernel.
   */
  watchNetwork(subnet: string, onView: (view: NetworkView) => void): { close: () => Promise<void> } {
    const prefix = `${ROOT}/overlays/${subnetKey(subnet)}/`;
    let watcher: Watcher | undefined;
    let closed = false;
    let view: NetworkView | undefined;
    let timer: NodeJS.Timeout | undefined;
    const emit = (): void => {
      if (timer || !view) return;
      timer = setTimeout(() => {
        timer = undefined;
        if (view && !closed) onView(view);
      }, 20);
    };
    const apply = (key: string, value: string | undefined): void => {
      if (!view) return;
      const rest = key.slice(prefix.length).split('/');
      try {
        const parsed = value === undefined ? undefined : JSON.parse(value);
        if (rest[0] === 'members' && rest[1]) value === undefined ? view.members.delete(rest[1]) : view.members.set(rest[1], parsed);
        else if (rest[0] === 'blocks' && rest[1]) value === undefined ? view.blocks.delete(rest[1]) : view.blocks.set(rest[1], parsed);
        else if (rest[0] === 'claims' && rest[1]) value === undefined ? view.claims.delete(rest[1]) : view.claims.set(rest[1], parsed);
        else if (rest[0] === 'endpoints' && rest[1] && rest[2]) {
          const id = `${rest[1]}/${rest[2]}`;
          value === undefined ? view.endpoints.delete(id) : view.endpoints.set(id, { host: rest[1], ...parsed });
        }
      } catch (err) {
        this.#log.warn({ key, err: (err as Error).message }, 'ignoring a malformed etcd value');
      }
    };
    const relist = async (): Promise<void> => {
      for (let attempt = 0; !closed; attempt++) {
        try {
          const res = await withTimeout(this.#client.getAll().prefix(prefix).exec(), 'list network');
          view = { revision: Number(res.header.revision), members: new Map(), endpoints: new Map(), blocks: new Map(), claims: new Map() };
          for (const kv of res.kvs) {
            apply(kv.key.toString(), kv.value.toString());
            this.#reassert(kv.key.toString(), kv.value.toString());
          }
          emit();
          const w = await this.#client.watch().prefix(prefix).startRevision(String(view.revision + 1)).create();
          if (closed) {
            await w.cancel();
            return;
          }
          watcher = w;
          w.on('put', (kv) => {
            apply(kv.key.toString(), kv.value.toString());
            this.#reassert(kv.key.toString(), kv.value.toString());
            emit();
          });
          w.on('delete', (kv) => {
            apply(kv.key.toString(), undefined);
            emit();
          });
          w.on('error', (err) => {
            // Cancelled, e.g. the revision was compacted away: list again.
            this.#log.warn({ subnet, err: err.message }, 'etcd watch cancelled; listing again');
            this.relists++;
            void w.cancel().catch(() => undefined);
            if (watcher === w) watcher = undefined;
            void relist();
          });
          return;
        } catch (err) {
          if (attempt % 10 === 0) this.#log.warn({ subnet, err: (err as Error).message }, 'cannot list the network in etcd; retrying');
          await new Promise((r) => setTimeout(r, Math.min(2000, 200 * (attempt + 1))));
        }
      }
    };
    void relist();
    return {
      close: async () => {
        closed = true;
        if (timer) clearTimeout(timer);
        await watcher?.cancel().catch(() => undefined);
      },
    };
  }

  /** Stop without revoking: a restarted tsnet takes its keys over before the lease runs out. */
  async close(): Promise<void> {
    this.#closed = true;
    if (this.#flushTimer) clearTimeout(this.#flushTimer);
    this.#lease?.release();
    this.#client.close();
  }
}
