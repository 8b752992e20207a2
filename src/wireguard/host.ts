// This host's one WireGuard interface, shared by every encrypted overlay.
// Design notes:
// - One interface per host, not per network: each peer host is one
//   WireGuard peer whatever the number of overlays shared with it, and each
//   encrypted overlay's VXLAN port sends to peers' tunnel addresses
//   (net/tunnel.ts) through it. A peer's AllowedIPs is its tunnel address.
// - Peers come from sources, one per encrypted network: a static network's
//   fixed list, or a cluster overlay's members as etcd last said. Until
//   every source has spoken (etcd answers after start-up), peers already on
//   the device are kept rather than removed, so a restarted tsnet never
//   cuts the sessions wireguard-go kept up while it was away.
// - When two sources disagree about a host's key (a rotation reaching one
//   overlay's watch before another's) the newest key wins.
// - Every change is `wg syncconf` of the whole wish: what did not change
//   keeps its sessions. Changes are serialised.
// - The interface goes with the last encrypted network (wireguard-go with it).
import { promises as fs } from 'node:fs';
import type { Logger } from 'pino';
import type { Runner } from '../kernel/exec.js';
import { ALIAS_PREFIX } from '../kernel/names.js';
import { nftApply, readTable } from '../firewall/nft.js';
import { renderWireGuardGuard, renderWireGuardGuardRemoval } from '../firewall/wireguard-rules.js';
import { ipFamily } from '../net/cidr.js';
import { TUNNEL_PREFIX, formatEndpoint, tunnelAddress } from '../net/tunnel.js';
import type { WgPeer } from './config.js';
import { applyConfig, deleteDevice, ensureDevice, findDevice, readDevice, type Implementation } from './device.js';
import { KeyFile } from './keys.js';

export const WG_IFACE = 'tswg0';
export const WG_ALIAS = `${ALIAS_PREFIX}wg`;
export const DEFAULT_WG_PORT = 51820;
/** VXLAN over the tunnel's IPv6 addresses: outer IPv6 + UDP + VXLAN + inner Ethernet. */
export const VXLAN_IN_TUNNEL = 70;

/** Outer IP + UDP + WireGuard's data header and tag: 60 bytes over IPv4, 80 over IPv6. */
export function wireguardOverhead(local: string): number {
  return ipFamily(local) === 6 ? 80 : 60;
}

export interface PeerCandidate {
  /** the peer's underlay address: its endpoint, and where its tunnel address comes from */
  underlay: string;
  publicKey: string;
  port: number;
  /** when the key was made (ms since the epoch): the newest wins where sources disagree */
  since?: number;
}

export interface HostUnderlay {
  local: string;
  mtu: number;
}

export interface WireGuardOptions {
  runner: Runner;
  log: Logger;
  stateDir: string;
  port: number;
  vxlanPort: number;
  /** the interface's MTU; default the underlay's less WireGuard's overhead */
  mtu?: number;
  iface?: string;
  prefer?: Implementation | 'auto';
}

interface Source {
  vni: number;
  /** undefined: not known yet (a cluster overlay before etcd's first answer) */
  peers: PeerCandidate[] | undefined;
}

export interface WireGuardStatus {
  interface: string;
  implementation: Implementation | null;
  publicKey: string;
  listenPort: number;
  tunnelAddress: string | null;
  mtu: number | null;
  peers: Array<{ publicKey: string; endpoint: string | null; allowedIps: string[]; latestHandshake: string | null; rxBytes: number; txBytes: number }>;
}

export class WireGuardHost {
  readonly iface: string;
  readonly port: number;
  readonly #o: WireGuardOptions;
  readonly #log: Logger;
  readonly #keys: KeyFile;
  readonly #sources = new Map<string, Source>();
  #underlay: HostUnderlay | undefined;
  #implementation: Implementation | undefined;
  #queue: Promise<unknown> = Promise.resolve();

  constructor(o: WireGuardOptions) {
    this.#o = o;
    this.iface = o.iface ?? WG_IFACE;
    this.port = o.port;
    this.#log = o.log.child({ component: 'wireguard' });
    this.#keys = new KeyFile(o.stateDir);
  }

  get active(): boolean {
    return this.#sources.size > 0;
  }

  tunnelMtu(u: HostUnderlay): number {
    return this.#o.mtu ?? u.mtu - wireguardOverhead(u.local);
  }

  /** The MTU an encrypted overlay's containers get unless told otherwise. */
  networkMtu(u: HostUnderlay): number {
    return this.tunnelMtu(u) - VXLAN_IN_TUNNEL;
  }

  async publicKey(): Promise<{ publicKey: string; since: number }> {
    const pair = await this.#keys.load();
    const since = Math.floor((await fs.stat(this.#keys.file)).mtimeMs);
    return { publicKey: pair.publicKey, since };
  }

  #serial<T>(fn: () => Promise<T>): Promise<T> {
    const next = this.#queue.then(fn, fn);
    this.#queue = next.catch(() => undefined);
    return next;
  }

  /**
   * An encrypted network needs the interface: make it (or take over the one
   * a previous tsnet left running) and configure it with every source's
   * peers. `peers` undefined: the network's peers come later (setPeers).
   */
  attach(id: string, vni: number, underlay: HostUnderlay, peers: PeerCandidate[] | undefined): Promise<void> {
    return this.#serial(async () => {
      const had = this.#sources.get(id);
      this.#sources.set(id, { vni, peers: peers ?? had?.peers });
      this.#underlay = underlay;
      try {
        await this.#ensure(underlay);
        await this.#apply();
      } catch (err) {
        if (had) this.#sources.set(id, had);
        else this.#sources.delete(id);
        if (this.#sources.size === 0) await this.#down().catch(() => undefined);
        throw err;
      }
    });
  }

  /** A network's peers changed (etcd, or a static list at start-up). Never throws: logged, retried with the next change. */
  setPeers(id: string, peers: PeerCandidate[]): Promise<void> {
    return this.#serial(async () => {
      const s = this.#sources.get(id);
      if (!s) return;
      s.peers = peers;
      await this.#apply();
    }).catch((err: unknown) => this.#log.error({ err, networkId: id }, 'cannot update WireGuard peers; will retry with the next change'));
  }

  /** The network is gone; with the last one the interface and its rules go too. */
  detach(id: string): Promise<{ down: boolean }> {
    return this.#serial(async () => {
      if (!this.#sources.delete(id)) return { down: false };
      if (this.#sources.size > 0) {
        await this.#apply();
        return { down: false };
      }
      await this.#down();
      return { down: true };
    });
  }

  /** A new key pair, in use here at once; the caller tells the peers. */
  rotate(): Promise<{ publicKey: string; since: number; previous: string }> {
    return this.#serial(async () => {
      const previous = (await this.#keys.load()).publicKey;
      const pair = await this.#keys.rotate();
      if (this.#sources.size > 0) await this.#apply();
      this.#log.info({ publicKey: pair.publicKey, previous }, 'WireGuard key rotated');
      return { ...(await this.publicKey()), previous };
    });
  }

  /** No encrypted network at all: remove what an earlier run may have left (reconcile). */
  cleanup(): Promise<void> {
    return this.#serial(async () => {
      if (this.#sources.size > 0) return;
      await this.#down();
    });
  }

  async status(): Promise<WireGuardStatus> {
    const { publicKey } = await this.publicKey();
    const base: WireGuardStatus = { interface: this.iface, implementation: this.#implementation ?? null, publicKey, listenPort: this.port, tunnelAddress: this.#underlay ? tunnelAddress(this.#underlay.local) : null, mtu: this.#underlay ? this.tunnelMtu(this.#underlay) : null, peers: [] };
    if (!this.active) return base;
    const dev = await readDevice(this.#o.runner, this.iface).catch(() => undefined);
    base.peers = (dev?.peers ?? []).map((p) => ({
      publicKey: p.publicKey,
      endpoint: p.endpoint ?? null,
      allowedIps: p.allowedIps,
      latestHandshake: p.latestHandshake > 0 ? new Date(p.latestHandshake * 1000).toISOString() : null,
      rxBytes: p.rx,
      txBytes: p.tx,
    }));
    return base;
  }

  /** Wait for queued changes (tests, shutdown). */
  async settle(): Promise<void> {
    await this.#queue;
  }

  async #ensure(u: HostUnderlay): Promise<void> {
    const self = tunnelAddress(u.local);
    const info = await ensureDevice(this.#o.runner, {
      name: this.iface,
      mtu: this.tunnelMtu(u),
      alias: WG_ALIAS,
      address: `${self}/${TUNNEL_PREFIX.split('/')[1]}`,
      prefer: this.#o.prefer ?? 'auto',
    });
    if (info.created || this.#implementation !== info.implementation) {
      this.#log.info({ iface: this.iface, implementation: info.implementation, created: info.created, tunnelAddress: self, mtu: this.tunnelMtu(u) }, info.created ? 'WireGuard interface created' : 'WireGuard interface found running; taking it over');
    }
    this.#implementation = info.implementation;
  }

  async #apply(): Promise<void> {
    const u = this.#underlay;
    if (!u) return;
    const { privateKey } = await this.#keys.load();
    const best = new Map<string, PeerCandidate>();
    let complete = true;
    const vnis: number[] = [];
    for (const s of this.#sources.values()) {
      vnis.push(s.vni);
      if (!s.peers) complete = false;
      for (const p of s.peers ?? []) {
        if (p.underlay === u.local) continue;
        const t = tunnelAddress(p.underlay);
        const had = best.get(t);
        if (!had || (p.since ?? 0) > (had.since ?? 0)) best.set(t, p);
      }
    }
    const peers: WgPeer[] = [...best].map(([t, p]) => ({ publicKey: p.publicKey, endpoint: formatEndpoint(p.underlay, p.port), allowedIps: [`${t}/128`] }));
    const guardPeers = [...best.values()].map((p) => p.underlay);
    if (!complete) {
      // Keep what the device has for hosts nobody has spoken about yet.
      const known = new Set(peers.flatMap((p) => [p.publicKey, ...p.allowedIps]));
      const dev = await readDevice(this.#o.runner, this.iface).catch(() => undefined);
      for (const p of dev?.peers ?? []) {
        if (!p.endpoint || known.has(p.publicKey) || p.allowedIps.some((a) => known.has(a))) continue;
        peers.push({ publicKey: p.publicKey, endpoint: p.endpoint, allowedIps: p.allowedIps });
        guardPeers.push(p.endpoint.replace(/^\[?(.*?)\]?:\d+$/, '$1'));
      }
    }
    await applyConfig(this.#o.runner, this.iface, { privateKey, listenPort: this.port, peers }, this.#o.stateDir);
    await nftApply(this.#o.runner, renderWireGuardGuard({ iface: this.iface, port: this.port, vxlanPort: this.#o.vxlanPort, prefix: TUNNEL_PREFIX, peers: guardPeers, vnis }));
    this.#log.debug({ peers: peers.length, complete }, 'WireGuard configuration applied');
  }

  async #down(): Promise<void> {
    const runner = this.#o.runner;
    const had = await findDevice(runner, this.iface).catch(() => undefined);
    if (had) {
      await deleteDevice(runner, this.iface);
      this.#log.info({ iface: this.iface, implementation: had }, 'WireGuard interface removed: no encrypted network left');
    }
    this.#implementation = undefined;
    const view = await readTable(runner);
    if (view?.chains.includes('wg_in') || view?.chains.includes('wg_out')) await nftApply(runner, renderWireGuardGuardRemoval());
  }
}
