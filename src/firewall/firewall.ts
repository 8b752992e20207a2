// The firewall behind one interface: add/remove a network's rules, with the
// nftables table and the iptables FORWARD glue kept in step. Rules are per
// network and tagged with its short ID; nothing here is per endpoint, so
// container starts never touch the firewall.
import type { Logger } from 'pino';
import type { Runner } from '../kernel/exec.js';
import { isValidIfName } from '../kernel/names.js';
import { IptablesGlue, type IptNetwork } from './iptables.js';
import { renderRoutedGuard } from './routed-rules.js';
import {
  PEER_SET,
  peerSets,
  nftApply,
  readTable,
  renderBase,
  renderNetwork,
  renderNetworkRemoval,
  networkChains,
  NETWORK_CHAIN,
  renderPortsAdd,
  renderPortsFlush,
  renderPortsRemove,
  type NftNetwork,
  type NftPort,
} from './nft.js';

export type FirewallNetwork = NftNetwork;

function glueOf(n: FirewallNetwork): IptNetwork {
  return { sid: n.sid, bridge: n.bridge, v4: n.subnets4.length > 0 || n.subnets6.length === 0, v6: n.subnets6.length > 0 };
}
export type FirewallPort = NftPort;

export class Firewall {
  readonly #runner: Runner;
  readonly #log: Logger;
  readonly #ipt: IptablesGlue;
  /** bridge -> network, what TSNET-FORWARD must contain */
  readonly #networks = new Map<string, FirewallNetwork>();
  #ready = false;
  /** the routed guard chain may exist (written by this process; syncAll, which start-up runs, also clears a stale one) */
  #guard = false;

  constructor(runner: Runner, log: Logger) {
    this.#runner = runner;
    this.#log = log.child({ component: 'firewall' });
    this.#ipt = new IptablesGlue(runner, this.#log);
  }

  /** Create the table skeleton and the FORWARD jump. Idempotent. */
  async init(): Promise<void> {
    await nftApply(this.#runner, renderBase());
    await this.#ipt.sync(this.#glue(), { ensureJump: true });
    this.#ready = true;
  }

  #glue(): IptNetwork[] {
    return [...this.#networks.values()].map(glueOf);
  }

  async #ensureReady(): Promise<void> {
    if (!this.#ready) await this.init();
  }

  /** The routed guard as the networks now are; nothing when neither it nor routed networks exist. */
  #guardScript(): string {
    const routed = [...this.#networks.values()].some((n) => n.routed);
    if (!routed && !this.#guard) return '';
    this.#guard = routed;
    return renderRoutedGuard([...this.#networks.values()]);
  }

  async addNetwork(n: FirewallNetwork): Promise<void> {
    await this.#ensureReady();
    const had = this.#guard;
    this.#networks.set(n.bridge, n);
    try {
      await nftApply(this.#runner, renderNetwork(n) + this.#guardScript());
    } catch (err) {
      this.#networks.delete(n.bridge);
      this.#guard = had;
      throw err;
    }
    try {
      await this.#ipt.add(glueOf(n), this.#glue());
    } catch (err) {
      this.#networks.delete(n.bridge);
      await nftApply(this.#runner, renderNetworkRemoval(n.sid, n.bridge) + this.#guardScript()).catch(() => undefined);
      throw err;
    }
  }

  async removeNetwork(sid: string, bridge: string): Promise<void> {
    const had = this.#networks.get(bridge);
    this.#networks.delete(bridge);
    if (this.#networks.size === 0) {
      // The last network leaves no trace: no table, no chain, no jump.
      await this.removeAll();
      return;
    }
    await this.#ensureReady();
    await nftApply(this.#runner, renderNetworkRemoval(sid, bridge) + (had?.routed ? this.#guardScript() : ''));
    if (had) await this.#ipt.delete(glueOf(had), this.#glue());
  }

  /** Publish ports: map elements only, one transaction, independent of how many exist. */
  async addPorts(ports: readonly FirewallPort[]): Promise<void> {
    if (ports.length === 0) return;
    await this.#ensureReady();
    await nftApply(this.#runner, renderPortsAdd(ports));
  }

  async removePorts(ports: readonly FirewallPort[]): Promise<void> {
    if (ports.length === 0 || !this.#ready) return;
    await nftApply(this.#runner, renderPortsRemove(ports));
  }

  /** Re-assert everything from the given desired set (start-up and reconcile). */
  async syncAll(networks: readonly FirewallNetwork[], ports: readonly FirewallPort[] = [], opts: { keepUnknown?: boolean } = {}): Promise<{ removedChains: string[] }> {
    if (opts.keepUnknown) {
      // The store may be missing networks that still run: add what it knows,
      // remove nothing (no stale chains, no port flush, no chain rewrite).
      for (const n of networks) this.#networks.set(n.bridge, n);
      if (networks.length > 0) {
        const guard = networks.some((n) => n.routed) ? this.#guardScript() : '';
        await nftApply(this.#runner, renderBase() + networks.map(renderNetwork).join('') + renderPortsAdd(ports) + guard);
        await this.#ipt.ensure(this.#glue());
        this.#ready = true;
      }
      return { removedChains: [] };
    }
    if (networks.length === 0) {
      await this.removeAll();
      return { removedChains: [] };
    }
    this.#networks.clear();
    for (const n of networks) this.#networks.set(n.bridge, n);
    // Skeleton, every network and every published port in one transaction.
    this.#guard = true;
    await nftApply(this.#runner, renderBase() + networks.map(renderNetwork).join('') + renderPortsFlush() + renderPortsAdd(ports) + this.#guardScript());
    // Chains of networks tsnet no longer knows: leftovers of a crash.
    const view = await readTable(this.#runner);
    const wanted = new Set(networks.flatMap((n) => networkChains(n.sid)));
    const removed: string[] = [];
    if (view) {
      const stale = view.chains.filter((c) => NETWORK_CHAIN.test(c) && !wanted.has(c));
      const wantedBridges = new Set(networks.map((n) => n.bridge));
      const lines: string[] = [];
      for (const [map, names] of Object.entries(view.elements)) {
        for (const name of names) if (isValidIfName(name) && !wantedBridges.has(name)) lines.push(`delete element inet tsnet ${map} { "${name}" }`);
      }
      for (const c of stale) lines.push(`flush chain inet tsnet ${c}`, `delete chain inet tsnet ${c}`);
      // Peer sets of networks no longer routed here (after their chains, which may refer to them).
      const wantedSets = new Set(networks.filter((n) => n.routed).flatMap((n) => Object.values(peerSets(n.sid))));
      const staleSets = view.sets.filter((s) => PEER_SET.test(s) && !wantedSets.has(s));
      for (const s of staleSets) lines.push(`delete set inet tsnet ${s}`);
      if (lines.length > 0) {
        await nftApply(this.#runner, `${lines.join('\n')}\n`);
        removed.push(...stale);
      }
    }
    await this.#ipt.sync(this.#glue(), { ensureJump: true });
    this.#ready = true;
    return { removedChains: removed };
  }

  /** Remove the whole table and the FORWARD glue (uninstall / test cleanup). */
  async removeAll(): Promise<void> {
    // "add" then "delete" in one transaction: no error when the table is absent.
    await nftApply(this.#runner, 'add table inet tsnet\ndelete table inet tsnet\n');
    await this.#ipt.removeAll();
    this.#networks.clear();
    this.#ready = false;
    this.#guard = false;
  }
}
