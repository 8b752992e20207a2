// tsnet.mode=bridge, Docker's bridge driver's model: one Linux bridge per
// network holding the gateway addresses, one veth pair per endpoint with the
// host end on the bridge, and the network's NAT and filter rules. Other
// modes that put containers on a local bridge (overlay) build on it.
import type { Logger } from 'pino';
import { TsnetError } from '../../errors.js';
import type { FirewallNetwork } from '../../firewall/firewall.js';
import { isExists } from '../../kernel/exec.js';
import { defaultRouteInfo, deleteLink, getLink, ipBatch, listAddrs, ownAddrLine, type LinkInfo } from '../../kernel/ip.js';
import { createBridge, createVeth } from '../../kernel/link.js';
import {
  ALIAS_PREFIX,
  bridgeMac,
  bridgeName,
  endpointAlias,
  hostVethName,
  networkAlias,
  peerVethName,
  shortId,
} from '../../kernel/names.js';
import type { EndpointRecord, NetworkRecord, SubnetRecord } from '../../store/schema.js';
import type { NetworkConfig } from '../options.js';
import type { Step } from '../steps.js';
import { gatewaySkips } from '../gateways.js';
import { gatewayIp } from '../subnets.js';
import { joinAnswer, settingsOf, type EndpointDraft, type EndpointPlan, type EndpointPresence, type ModeDeps, type ModeName, type NetworkDraft, type NetworkMode, type NetworkPlan, type ReconcileRun } from './mode.js';

export function firewallSpec(net: NetworkRecord): FirewallNetwork {
  return {
    sid: shortId(net.id),
    bridge: net.bridge,
    internal: net.internal,
    icc: net.icc,
    masquerade4: net.masquerade && net.gatewayMode !== 'routed',
    masquerade6: net.masquerade && (net.gatewayModeIpv6 ?? 'nat') !== 'routed',
    directAccess4: net.gatewayMode === 'routed' || net.gatewayMode === 'nat-unprotected',
    directAccess6: net.gatewayModeIpv6 === 'routed' || net.gatewayModeIpv6 === 'nat-unprotected',
    subnets4: net.ipv4.map((s) => s.pool),
    subnets6: net.ipv6.map((s) => s.pool),
  };
}

/** The addresses tsnet puts on a network's bridge. */
export function bridgeAddresses(net: NetworkRecord): string[] {
  // A gateway dockerd before 28 allocated although GwAllocCheck would have skipped it stays unused.
  const skip = gatewaySkips({ ...net, gatewayModeIpv6: net.gatewayModeIpv6 ?? 'nat' });
  const v4 = net.inhibitIpv4 || skip.v4 ? [] : net.ipv4.map((s) => s.gateway).filter((g): g is string => !!g);
  const v6 = skip.v6 ? [] : net.ipv6.map((s) => s.gateway).filter((g): g is string => !!g);
  return [...v4, ...v6];
}

/** How a mode built on the bridge extends it. */
export interface BridgeExtension {
  name: ModeName;
  /** record fields of the extending mode */
  record?: Partial<NetworkRecord>;
  /** MTU when none is given (default: the uplink's, at most 1500) */
  defaultMtu?: number;
  /** steps right after the bridge exists */
  afterBridge?(record: NetworkRecord): Step[];
  /** steps after the network's firewall rules are in */
  afterFirewall?(record: NetworkRecord): Step[];
  /** the network's firewall, when the mode adds to the bridge's */
  firewall?(record: NetworkRecord): FirewallNetwork;
}

export class BridgeMode implements NetworkMode {
  readonly name: ModeName = 'bridge';
  readonly deviceKind = 'bridge';
  readonly publishesPorts = true;
  readonly #deps: ModeDeps;

  constructor(deps: ModeDeps) {
    this.#deps = deps;
  }

  deviceName(id: string, cfg: NetworkConfig): string {
    return cfg.bridgeName ?? bridgeName(id);
  }

  validate(cfg: NetworkConfig, ipv4: SubnetRecord[], ipv6: SubnetRecord[]): void {
    const skip = gatewaySkips(cfg);
    for (const [s, fam] of [...ipv4.map((s) => [s, 'IPv4Data'] as const), ...ipv6.map((s) => [s, 'IPv6Data'] as const)]) {
      if (!s.gateway && !(fam === 'IPv4Data' ? skip.v4 || cfg.inhibitIpv4 : skip.v6)) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${fam}: no Gateway for ${s.pool}; a tsnet bridge needs one unless the network is --internal with gateway mode isolated`);
      }
    }
  }

  planNetwork(draft: NetworkDraft): Promise<NetworkPlan> {
    return this.planBridge(draft, { name: this.name });
  }

  /** The bridge network of the draft, extended by a mode built on it. */
  async planBridge(draft: NetworkDraft, ext: BridgeExtension): Promise<NetworkPlan> {
    const { runner, firewall } = this.#deps;
    const { id, cfg, ipv4, ipv6, log, device: bridge } = draft;
    let adopt = false;
    const link = await getLink(runner, bridge);
    if (link) {
      if (link.ifalias === networkAlias(id)) {
        // Our own leftover from an earlier, interrupted create of this very network.
        await deleteLink(runner, bridge);
      } else if (link.ifalias?.startsWith(ALIAS_PREFIX)) {
        throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `bridge ${bridge} is a leftover of another tsnet network (${link.ifalias}); restart tsnet to clean it up`);
      } else if (cfg.bridgeName && link.linkinfo?.info_kind === 'bridge') {
        adopt = true;
      } else {
        throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `cannot use ${bridge}: a ${link.linkinfo?.info_kind ?? 'network'} device with that name exists`);
      }
    }

    const mtu = cfg.mtu ?? ext.defaultMtu ?? (await this.#uplinkMtu());
    const record: NetworkRecord = {
      id,
      mode: ext.name,
      ...ext.record,
      bridge,
      createdBridge: !adopt,
      ipv4,
      ipv6,
      ...settingsOf(cfg, mtu),
    };
    const addresses = bridgeAddresses(record);
    const steps: Step[] = [
      {
        name: 'bridge',
        when: !adopt,
        do: () =>
          createBridge(runner, {
            name: bridge,
            mac: bridgeMac(record),
            mtu,
            alias: networkAlias(id),
            addresses,
            disableIpv6: ipv6.length === 0,
          }),
        undo: async () => void (await deleteLink(runner, bridge)),
      },
      {
        name: 'adopt-bridge',
        when: adopt,
        do: () => ipBatch(runner, [...addresses.map((a) => ownAddrLine('replace', a, bridge)), ['link', 'set', 'dev', bridge, 'up']]),
        undo: () => ipBatch(runner, addresses.map((a) => ['addr', 'del', a, 'dev', bridge]), { force: true }).catch(() => undefined),
      },
      ...(ext.afterBridge?.(record) ?? []),
      {
        // Routing between the bridge and the uplink needs forwarding, as
        // dockerd also turns on. Left on when the network goes: it is a
        // host-wide switch other networks (and Docker) rely on.
        name: 'forwarding',
        when: !cfg.internal,
        do: async () => {
          if (ipv4.length > 0) await this.#ensureSysctl('net/ipv4/ip_forward', '1', log);
          if (ipv6.length > 0) await this.#ensureSysctl('net/ipv6/conf/all/forwarding', '1', log);
        },
      },
      {
        name: 'firewall',
        do: () => firewall.addNetwork(ext.firewall?.(record) ?? firewallSpec(record)),
        undo: () => firewall.removeNetwork(shortId(id), bridge),
      },
      ...(ext.afterFirewall?.(record) ?? []),
    ];
    return { record, steps, logFields: { bridge, adopted: adopt, mtu } };
  }

  async #ensureSysctl(key: string, value: string, log: Logger): Promise<void> {
    const { runner } = this.#deps;
    if ((await runner.readSysctl(key)) === value) return;
    await runner.writeSysctl(key, value);
    log.info({ sysctl: key, value }, 'sysctl changed');
  }

  async #uplinkMtu(): Promise<number> {
    const { runner, log } = this.#deps;
    try {
      const route = await defaultRouteInfo(runner, 4);
      if (route?.dev) {
        const uplink = await getLink(runner, route.dev);
        if (uplink && uplink.mtu < 1500) return Math.max(uplink.mtu, 68);
      }
    } catch (err) {
      log.debug({ err }, 'could not read the uplink MTU; using 1500');
    }
    return 1500;
  }

  async deleteNetwork(net: NetworkRecord): Promise<unknown[]> {
    const { runner, firewall } = this.#deps;
    const errors: unknown[] = [];
    await firewall.removeNetwork(shortId(net.id), net.bridge).catch((err) => errors.push(err));
    if (net.createdBridge) await deleteLink(runner, net.bridge).catch((err) => errors.push(err));
    else {
      const addrs = bridgeAddresses(net);
      await ipBatch(runner, addrs.map((a) => ['addr', 'del', a, 'dev', net.bridge]), { force: true }).catch((err) => errors.push(err));
    }
    return errors;
  }

  async removeOrphanNetwork(id: string, log: Logger): Promise<void> {
    const { runner, firewall } = this.#deps;
    const name = bridgeName(id);
    const link = await getLink(runner, name);
    if (link?.ifalias === networkAlias(id)) {
      await deleteLink(runner, name);
      await firewall.removeNetwork(shortId(id), name);
      log.info({ bridge: name }, 'removed leftover bridge of an unknown network');
    }
  }

  async planEndpoint({ id: epId, net, mac, addressV6 }: EndpointDraft): Promise<EndpointPlan> {
    const { runner } = this.#deps;
    const host = hostVethName(epId);
    const peer = peerVethName(epId);
    const spec = { hostName: host, peerName: peer, peerMac: mac, mtu: net.mtu, bridge: net.bridge, alias: endpointAlias(epId), hairpin: true, isolated: false, disableIpv6: !addressV6 };
    const veth: Step = {
      name: 'veth',
      do: async () => {
        try {
          await createVeth(runner, spec);
        } catch (err) {
          if (!isExists(err)) {
            await deleteLink(runner, host).catch(() => undefined);
            throw err;
          }
          // Checked only on a clash, to keep the common path to one process:
          // our own leftover for this endpoint is replaced, anything else is refused.
          const link = await getLink(runner, host);
          if (link?.ifalias !== endpointAlias(epId)) {
            throw new TsnetError('TSNET_ERR_ENDPOINT_EXISTS', `cannot create ${host}: a device with that name exists`);
          }
          await deleteLink(runner, host);
          await createVeth(runner, spec);
        }
      },
      undo: async () => void (await deleteLink(runner, host)),
    };
    return { hostVeth: host, peerVeth: peer, steps: [veth] };
  }

  async deleteEndpoint(_net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    await deleteLink(this.#deps.runner, ep.hostVeth);
  }

  async endpointAlive(ep: EndpointRecord): Promise<boolean> {
    return (await getLink(this.#deps.runner, ep.hostVeth)) !== undefined;
  }

  async removeOrphanEndpoint(id: string): Promise<void> {
    const { runner } = this.#deps;
    const host = hostVethName(id);
    const link = await getLink(runner, host);
    if (link?.ifalias === endpointAlias(id)) await deleteLink(runner, host);
  }

  join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown> {
    const gw4 = !net.internal && net.gatewayMode !== 'isolated' && !net.inhibitIpv4 ? gatewayIp(net.ipv4[0]?.gateway) : undefined;
    const gw6 = !net.internal && net.gatewayMode !== 'isolated' ? gatewayIp(net.ipv6[0]?.gateway) : undefined;
    return joinAnswer(net, ep, gw4, gw6);
  }

  firewall(net: NetworkRecord): FirewallNetwork {
    return firewallSpec(net);
  }

  async reconcileNetwork(net: NetworkRecord, run: ReconcileRun): Promise<void> {
    const { runner } = this.#deps;
    const { report, log } = run;
    const link = run.links.get(net.bridge);
    const wanted = bridgeAddresses(net);
    if (!link) {
      await createBridge(runner, {
        name: net.bridge,
        mac: bridgeMac(net),
        mtu: net.mtu,
        alias: networkAlias(net.id),
        addresses: wanted,
        disableIpv6: net.ipv6.length === 0,
      });
      report.bridgesCreated.push(net.bridge);
      log.warn({ networkId: net.id, bridge: net.bridge }, 'bridge was missing; re-created it');
      return;
    }
    const fixes: Array<readonly (string | number)[]> = [];
    const have = new Set((await listAddrs(runner, net.bridge)).flatMap((l) => l.addr_info.map((a) => `${a.local}/${a.prefixlen}`)));
    for (const a of wanted) if (!have.has(a)) fixes.push(ownAddrLine('replace', a, net.bridge));
    if (link.mtu !== net.mtu && net.createdBridge) fixes.push(['link', 'set', 'dev', net.bridge, 'mtu', net.mtu]);
    if (!link.flags.includes('UP')) fixes.push(['link', 'set', 'dev', net.bridge, 'up']);
    if (fixes.length > 0) {
      await ipBatch(runner, fixes);
      report.bridgesFixed.push(net.bridge);
      log.warn({ networkId: net.id, bridge: net.bridge, fixes: fixes.map((f) => f.join(' ')) }, 'bridge drifted; fixed it');
    }
  }

  endpointPresence(_net: NetworkRecord, ep: EndpointRecord, links: Map<string, LinkInfo>): EndpointPresence {
    if (!links.has(ep.hostVeth)) return 'gone';
    return links.has(ep.peerVeth) ? 'host' : 'container';
  }

  reconcileEndpoint(net: NetworkRecord, ep: EndpointRecord, link: LinkInfo): Array<readonly (string | number)[]> {
    if (link.master === net.bridge && link.flags.includes('UP')) return [];
    return [['link', 'set', 'dev', ep.hostVeth, 'master', net.bridge], ['link', 'set', 'dev', ep.hostVeth, 'up']];
  }

  status(net: NetworkRecord): Record<string, unknown> {
    return { mtu: net.mtu };
  }
}
