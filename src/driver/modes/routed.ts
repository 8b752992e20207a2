// tsnet.mode=routed: one subnet across hosts on one LAN, with no
// encapsulation. Containers sit on a local bridge, as in bridge mode (so
// -p, ICC, --internal, isolation and dual stack are the bridge's); each
// host holds blocks of the subnet (cluster-wide IPAM through etcd, or its
// --ip-range in the static form) and routes every other host's blocks
// through that host's LAN address (routed/). The full MTU of the LAN, and
// containers see each other's own addresses: flannel's host-gw backend, for
// plain dockerd. Design notes:
// - The containers' prefix is the whole subnet's, so they take every other
//   host's container for a neighbour. The bridge answers for those: IPv4
//   proxy_arp (answers only for addresses routed out of another interface,
//   so local containers still answer for themselves) with proxy_delay 0,
//   IPv6 proxy NDP (an entry per remote address, routed/routes.ts).
// - No masquerade within the subnet; what leaves it is masqueraded unless
//   masquerade is off. From the LAN side only the other hosts' blocks are
//   admitted (firewall/nft.ts, the peer sets). --internal means the subnet
//   only: the other hosts' blocks, nothing beyond, no gateway.
// - The bridge must hold the gateway address (the subnet's connected route
//   is how replies reach local containers): gateway mode isolated and
//   inhibit_ipv4 are refused.
import type { Logger } from 'pino';
import { TsnetError, quote } from '../../errors.js';
import type { FirewallNetwork } from '../../firewall/firewall.js';
import { ifSysctl, type Runner } from '../../kernel/exec.js';
import type { LinkInfo } from '../../kernel/ip.js';
import { parsePrefix } from '../../net/cidr.js';
import { parseStaticPeers, peersOfOthers } from '../../routed/peers.js';
import type { EndpointRecord, NetworkRecord, RoutedRecord, SubnetRecord } from '../../store/schema.js';
import type { NetworkConfig } from '../options.js';
import { OPT } from '../opt.js';
import type { Step } from '../steps.js';
import { gatewayIp } from '../subnets.js';
import type { ClusterPlan } from '../../cluster/networks.js';
import { firewallSpec, type BridgeMode } from './bridge.js';
import type { EndpointDraft, EndpointPlan, EndpointPresence, ModeDeps, ModeName, NetworkDraft, NetworkMode, NetworkPlan, ReconcileRun } from './mode.js';

/** The sysctls a bridge answering for other hosts' addresses needs: [key, value]. */
export function routedSysctls(net: Pick<NetworkRecord, 'bridge' | 'ipv4' | 'ipv6'>): Array<[string, string]> {
  const br = net.bridge;
  const out: Array<[string, string]> = [];
  if (net.ipv4.length > 0) out.push(['net/ipv4/ip_forward', '1'], [ifSysctl('ipv4', br, 'proxy_arp'), '1'], [`net/ipv4/neigh/${br}/proxy_delay`, '0']);
  if (net.ipv6.length > 0) out.push(['net/ipv6/conf/all/forwarding', '1'], [ifSysctl('ipv6', br, 'proxy_ndp'), '1'], [`net/ipv6/neigh/${br}/proxy_delay`, '0']);
  return out;
}

/**
 * Forwarding on (also for --internal: the subnet is routed between hosts),
 * and the bridge answering for the other hosts' addresses at once (the
 * default proxy_delay holds each answer back up to 0.8 s). Returns what changed.
 */
export async function ensureRoutedSysctls(runner: Runner, net: Pick<NetworkRecord, 'bridge' | 'ipv4' | 'ipv6'>, log: Logger): Promise<string[]> {
  const changed: string[] = [];
  for (const [key, value] of routedSysctls(net)) {
    if ((await runner.readSysctl(key)) === value) continue;
    await runner.writeSysctl(key, value);
    changed.push(key);
  }
  if (changed.length > 0) log.info({ bridge: net.bridge, sysctls: changed }, 'sysctls changed for routing between hosts');
  return changed;
}

/** The bridge step every routed bridge gets (routed mode, overlays with backend=auto). */
export function routedBridgeStep(runner: Runner, record: NetworkRecord, log: Logger): Step {
  return { name: 'routed-sysctls', do: async () => void (await ensureRoutedSysctls(runner, record, log)) };
}

/** An adopted bridge outlives the network: it stops answering for other hosts. */
async function resetAdopted(runner: Runner, net: NetworkRecord): Promise<void> {
  if (net.createdBridge) return;
  for (const [key] of routedSysctls(net)) {
    if (/proxy_(arp|ndp)$/.test(key)) await runner.writeSysctl(key, '0').catch(() => undefined);
  }
}

export class RoutedMode implements NetworkMode {
  readonly name: ModeName = 'routed';
  readonly deviceKind = 'bridge';
  readonly publishesPorts = true;
  readonly #deps: ModeDeps;
  readonly #bridge: BridgeMode;

  constructor(deps: ModeDeps, bridge: BridgeMode) {
    this.#deps = deps;
    this.#bridge = bridge;
  }

  deviceName(id: string, cfg: NetworkConfig): string {
    return this.#bridge.deviceName(id, cfg);
  }

  validate(cfg: NetworkConfig, ipv4: SubnetRecord[], ipv6: SubnetRecord[]): void {
    for (const [key, mode] of [[OPT.gatewayModeIpv4, cfg.gatewayMode], [OPT.gatewayModeIpv6, cfg.gatewayModeIpv6]] as const) {
      if (mode === 'isolated') throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${key}: ${quote(mode)} does not apply to a routed network: its bridge holds the gateway address, through which replies reach the containers (use --internal alone)`);
    }
    if (cfg.inhibitIpv4) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.inhibitIpv4}: a routed network's bridge needs its IPv4 gateway address, through which replies reach the containers`);
    this.#bridge.validate(cfg, ipv4, ipv6);
    if (cfg.peers) parseStaticPeers(cfg.peers, ipv4, ipv6);
  }

  async planNetwork(draft: NetworkDraft): Promise<NetworkPlan> {
    const { cluster, routed: manager, runner } = this.#deps;
    const { id, req, cfg, ipv4, ipv6, log } = draft;
    const subnets = [
      ...ipv4.map((s, i) => ({ space: req.IPv4Data?.[i]?.AddressSpace ?? '', pool: s.pool })),
      ...ipv6.map((s, i) => ({ space: req.IPv6Data?.[i]?.AddressSpace ?? '', pool: s.pool })),
    ];
    const pools = subnets.length > 0 ? cluster.poolsOf(subnets) : undefined;
    let routed: RoutedRecord;
    let clustered: ClusterPlan | undefined;
    if (cfg.peers) {
      const peers = parseStaticPeers(cfg.peers, ipv4, ipv6);
      if (pools?.some((p) => p.dynamic)) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `a routed network needs an explicit --subnet, the same on every host (${pools.find((p) => p.dynamic)!.pool} was chosen by this host alone)`);
      }
      const ranges = pools?.map((p) => ({ range: parsePrefix(p.subPool ?? p.pool)!, given: p.subPool !== undefined }));
      routed = { mode: 'static', peers: peersOfOthers(peers, await manager.ownAddresses(), ranges) };
      if (!pools) log.info('static routed network with another IPAM driver: make sure each host\'s --ip-range is its own block, apart from the peers\'');
    } else {
      if (!cluster.clustered) {
        throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.mode}=routed needs a cluster (TSNET_ETCD_ENDPOINTS) or a static peer list (-o ${OPT.peers}=ADDR=BLOCK,…)`);
      }
      if (!pools) throw new TsnetError('TSNET_ERR_INVALID_OPTION', 'a routed network in a cluster needs --ipam-driver tsnet: each host routes the address blocks it leases from etcd');
      clustered = await cluster.plan({ kind: 'routed', pools, gateway: gatewayIp(ipv4[0]?.gateway) });
      routed = { mode: 'cluster', peers: [] };
    }
    // Full MTU: nothing is encapsulated. Without a default route (a static
    // network on an isolated LAN) the bridge's own default applies.
    const underlay = await manager.underlay().catch(() => undefined);
    const plan = await this.#bridge.planBridge(draft, {
      name: this.name,
      record: { routed, ...(clustered ? { cluster: clustered.record } : {}) },
      ...(underlay ? { defaultMtu: underlay.mtu } : {}),
      afterBridge: (record) => [routedBridgeStep(runner, record, log)],
      firewall: (record) => this.firewall(record),
    });
    return {
      ...plan,
      ...(clustered ? { beforeCommit: () => clustered.beforeCommit(id), revertCommit: () => clustered.revertCommit() } : {}),
      activate: () => manager.start(plan.record),
      logFields: { ...plan.logFields, control: routed.mode, ...(routed.mode === 'static' ? { peers: routed.peers.map((p) => `${p.address}=${p.block}`) } : {}) },
    };
  }

  async deleteNetwork(net: NetworkRecord): Promise<unknown[]> {
    const { routed: manager, cluster, runner } = this.#deps;
    const errors: unknown[] = [];
    await manager.stop(net).catch((err) => errors.push(err));
    if (net.routed?.mode === 'cluster') await cluster.stop(net, { leave: true });
    await resetAdopted(runner, net);
    return [...errors, ...(await this.#bridge.deleteNetwork(net))];
  }

  planEndpoint(draft: EndpointDraft): Promise<EndpointPlan> {
    return this.#bridge.planEndpoint(draft);
  }

  /** Published with the container's names, so other hosts' DNS answers them (cluster form). */
  async endpointCreated(net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.#deps.cluster.publish(net, ep);
  }

  async deleteEndpoint(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    await this.#deps.cluster.unpublish(net, ep);
    await this.#bridge.deleteEndpoint(net, ep);
  }

  endpointAlive(ep: EndpointRecord): Promise<boolean> {
    return this.#bridge.endpointAlive(ep);
  }

  join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown> {
    return this.#bridge.join(net, ep);
  }

  firewall(net: NetworkRecord): FirewallNetwork {
    return { ...firewallSpec(net), routed: true };
  }

  async reconcileNetwork(net: NetworkRecord, run: ReconcileRun): Promise<void> {
    const { runner, routed: manager } = this.#deps;
    await this.#bridge.reconcileNetwork(net, run);
    if ((await ensureRoutedSysctls(runner, net, run.log)).length > 0) run.report.bridgesFixed.push(net.bridge);
    manager.start(net);
    manager.resync(net);
  }

  endpointPresence(net: NetworkRecord, ep: EndpointRecord, links: Map<string, LinkInfo>): EndpointPresence {
    return this.#bridge.endpointPresence(net, ep, links);
  }

  reconcileEndpoint(net: NetworkRecord, ep: EndpointRecord, link: LinkInfo): Array<readonly (string | number)[]> {
    return this.#bridge.reconcileEndpoint(net, ep, link);
  }

  /** After the firewall was rewritten: peer sets back, routes of networks gone removed (overlays with backend=auto included). */
  async reconcileHost(): Promise<void> {
    await this.#deps.routed.reconcileHost();
  }

  status(net: NetworkRecord): Record<string, unknown> {
    const r = net.routed!;
    const { peers, warnings } = this.#deps.routed.status(net);
    return { ...this.#bridge.status(net), control: r.mode, ...(r.mode === 'static' ? { staticPeers: r.peers.map((p) => `${p.address}=${p.block}`) } : {}), peers, warnings };
  }
}
