// What macvlan.ts and ipvlan.ts share: containers as children of a parent
// link, straight on the LAN with addresses of their own. No bridge, no NAT,
// no published ports; the gateway is the LAN's router. Docker's option names
// and values (parent, macvlan_mode, ipvlan_mode, ipvlan_flag); beyond
// Docker, tsnet.host_access gives the host a child of its own on the parent
// so host and containers reach each other (the kernel keeps a parent and its
// children apart).
//
// Many hosts on one LAN: with etcd configured and tsnet's IPAM giving the
// network's subnets, the same network created on several hosts draws its
// addresses from one cluster-wide allocator (cluster/networks.ts), so two
// hosts never hand out one LAN address (Docker's macvlan IPAM is per host
// and collides unless each host is given a disjoint --ip-range by hand).
//
// Parents: the user's interface; an 802.1q sub-interface (`eth0.50`) that
// tsnet creates when it does not exist and deletes with the network; or,
// for --internal and parent-less networks, a parent of tsnet's own that
// leads nowhere, so containers reach only each other (Docker's behaviour).
import type { Logger } from 'pino';
import { TsnetError, quote } from '../../errors.js';
import { isExists } from '../../kernel/exec.js';
import { deleteLink, deleteLinks, getLink, ipBatch, listLinks, type LinkInfo } from '../../kernel/ip.js';
import { createChild, createIsolatedParent, createShim, createVlan, probeChild, restoreChild, vlanOf, type ChildSpec } from '../../kernel/lan.js';
import { ALIAS_PREFIX, assertIfName, endpointAlias, lanNames, networkAlias, peerVethName, shortId } from '../../kernel/names.js';
import type { EndpointRecord, LanRecord, NetworkRecord } from '../../store/schema.js';
import type { NetworkConfig } from '../options.js';
import { OPT, parseBool } from '../opt.js';
import type { Step } from '../steps.js';
import { gatewayIp } from '../subnets.js';
import type { ClusterPlan } from '../../cluster/networks.js';
import { sandboxPathHere } from '../../kernel/host-run.js';
import { joinAnswer, settingsOf, type EndpointDraft, type EndpointPlan, type EndpointPresence, type ModeDeps, type NetworkDraft, type NetworkMode, type NetworkPlan, type ReconcileRun } from './mode.js';

export const HOST_ACCESS = 'tsnet.host_access';

/** How macvlan and ipvlan differ in their options. */
export interface LanKind {
  name: 'macvlan' | 'ipvlan';
  /** the option naming the child's mode, and its values (the first is the default) */
  modeOption: string;
  modes: readonly string[];
  flagOption?: string;
  flags?: readonly string[];
}

export interface LanOptions {
  /** undefined: tsnet's own isolated parent */
  parent: string | undefined;
  mode: string;
  flag: string | undefined;
  hostAccess: boolean;
}

function oneOf(option: string, value: string, allowed: readonly string[]): string {
  if (!allowed.includes(value)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${option}: ${quote(value)} is not one of ${allowed.join(', ')}`);
  return value;
}

export function parseLanOptions(kind: LanKind, cfg: NetworkConfig): LanOptions {
  const g = cfg.generic;
  let parent = g.parent !== undefined && g.parent !== '' ? g.parent : undefined;
  if (parent !== undefined) {
    assertIfName(parent, 'parent');
    if (parent === 'lo') throw new TsnetError('TSNET_ERR_INVALID_OPTION', `parent: the loopback interface cannot be the parent of a ${kind.name} network`);
    const vlan = vlanOf(parent);
    if (vlan && (vlan.vlan < 1 || vlan.vlan > 4094)) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `parent: VLAN id ${vlan.vlan} in ${quote(parent)} is not in 1-4094`);
    }
  }
  // --internal means no way out: an isolated parent whatever parent says, as Docker does.
  if (cfg.internal) parent = undefined;
  const mode = oneOf(kind.modeOption, g[kind.modeOption] ?? kind.modes[0]!, kind.modes);
  const flag = kind.flagOption ? oneOf(kind.flagOption, g[kind.flagOption] ?? kind.flags![0]!, kind.flags!) : undefined;
  const hostAccess = g[HOST_ACCESS] !== undefined ? parseBool(HOST_ACCESS, g[HOST_ACCESS]) : false;
  if (hostAccess && mode === 'passthru') {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${HOST_ACCESS}: a passthru parent takes exactly one child, so the host cannot have one beside the container`);
  }
  return { parent, mode, flag, hostAccess };
}

export abstract class LanMode implements NetworkMode {
  abstract readonly name: 'macvlan' | 'ipvlan';
  readonly deviceKind = 'parent';
  readonly publishesPorts = false;
  protected readonly deps: ModeDeps;
  readonly #kind: LanKind;
  /** the kernel made a child of this kind once: it has the driver, no need to ask again */
  #kernelHasKind = false;

  constructor(deps: ModeDeps, kind: LanKind) {
    this.deps = deps;
    this.#kind = kind;
  }

  /** The MAC a new child gets: ipvlan children share the parent's. */
  protected abstract childMac(net: NetworkRecord, proposed: string): Promise<{ mac: string; fixed: boolean }>;

  deviceName(id: string, cfg: NetworkConfig): string {
    return parseLanOptions(this.#kind, cfg).parent ?? lanNames(id).parent;
  }

  validate(cfg: NetworkConfig): void {
    parseLanOptions(this.#kind, cfg);
  }

  async planNetwork(draft: NetworkDraft): Promise<NetworkPlan> {
    const { runner } = this.deps;
    const { id, cfg, ipv4, ipv6 } = draft;
    const o = parseLanOptions(this.#kind, cfg);
    const clustered = await this.#planCluster(draft, o);
    const names = lanNames(id);
    const alias = networkAlias(id);
    const steps: Step[] = [];
    // One listing answers every question below (the parent, a passthru
    // sibling, leftovers of our own): network create+rm is measured against
    // Docker's macvlan driver, which asks netlink in-process.
    const links = new Map((await listLinks(runner)).map((l) => [l.ifname, l]));
    const leftovers = [names.parent, names.probe, names.shim].filter((n) => this.#ownLeftover(links.get(n), n, alias));
    let lan: LanRecord;
    let parentMtu: number;
    if (o.parent === undefined) {
      parentMtu = cfg.mtu ?? 1500;
      lan = { kind: this.#kind.name, parent: names.parent, parentPeer: names.peer, createdParent: true, mode: o.mode };
      steps.push({
        name: 'parent',
        do: () => createIsolatedParent(runner, { name: names.parent, peer: names.peer, mtu: parentMtu, alias }),
        undo: async () => void (await deleteLink(runner, names.parent)),
      });
    } else {
      const parent = o.parent;
      const link = links.get(parent);
      if (link) {
        this.#checkParent(link, id, [...links.values()]);
        parentMtu = link.mtu;
        lan = { kind: this.#kind.name, parent, createdParent: false, mode: o.mode, parentIndex: link.ifindex };
      } else {
        const vlan = vlanOf(parent);
        const base = vlan ? links.get(vlan.base) : undefined;
        if (!vlan || !base) {
          throw new TsnetError('TSNET_ERR_PARENT', `parent: ${quote(parent)} does not exist on this host${vlan ? ` (nor does ${quote(vlan.base)}, to make VLAN ${vlan.vlan} on)` : ''}`);
        }
        if (base.ifalias?.startsWith(ALIAS_PREFIX)) throw new TsnetError('TSNET_ERR_PARENT', `parent: ${quote(vlan.base)} is a device tsnet made (${base.ifalias}), not a LAN interface`);
        parentMtu = base.mtu;
        lan = { kind: this.#kind.name, parent, createdParent: true, vlan: vlan.vlan, mode: o.mode };
        steps.push({
          name: 'vlan',
          do: () => createVlan(runner, { name: parent, base: vlan.base, vlan: vlan.vlan, alias }),
          undo: async () => void (await deleteLink(runner, parent)),
        });
      }
    }
    if (o.flag !== undefined) lan.flag = o.flag;
    if (cfg.mtu !== undefined && cfg.mtu > parentMtu) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.mtu}: ${cfg.mtu} is larger than the MTU of parent ${lan.parent} (${parentMtu})`);
    }
    const mtu = cfg.mtu ?? parentMtu;
    // Our own leftovers of an interrupted create of this very network go first.
    if (leftovers.length > 0) steps.unshift({ name: 'leftovers', do: () => deleteLinks(runner, leftovers) });
    // The kernel may lack the device type (ipvlan on ours): find out now, not at the first container.
    const probe: ChildSpec = { name: names.probe, parent: lan.parent, mtu, alias, kind: this.#kind.name, mode: this.#kind.modes[0]! };
    steps.push({
      name: 'probe',
      when: !this.#kernelHasKind,
      do: async () => {
        await probeChild(runner, probe);
        this.#kernelHasKind = true;
      },
    });
    if (o.hostAccess) {
      lan.shim = names.shim;
      steps.push({
        name: 'shim',
        do: () => createShim(runner, { ...this.#childSpec(lan, names.shim, mtu), alias }),
        undo: async () => void (await deleteLink(runner, names.shim)),
      });
    }
    const record: NetworkRecord = {
      id,
      mode: this.name,
      lan,
      ...(clustered ? { cluster: clustered.record } : {}),
      bridge: lan.parent,
      createdBridge: lan.createdParent,
      ipv4,
      ipv6,
      ...settingsOf(cfg, mtu),
    };
    return {
      record,
      steps,
      ...(clustered ? { beforeCommit: () => clustered.beforeCommit(id), revertCommit: () => clustered.revertCommit(), activate: () => this.deps.cluster.follow(record) } : {}),
      logFields: { parent: lan.parent, createdParent: lan.createdParent, vlan: lan.vlan, [this.#kind.modeOption]: lan.mode, hostAccess: o.hostAccess, mtu, clusterAddresses: clustered !== undefined },
    };
  }

  /**
   * A network on a real LAN whose subnets tsnet's IPAM gave, on a host in a
   * cluster: addresses are allocated cluster-wide. An isolated parent leads
   * nowhere, so such a network is this host's alone; a subnet tsnet picked
   * by itself differs per host; Docker's IPAM is per host: those stay local.
   */
  async #planCluster(draft: NetworkDraft, o: LanOptions): Promise<ClusterPlan | undefined> {
    const { cluster } = this.deps;
    const { req, ipv4, ipv6, log } = draft;
    if (!cluster.clustered || o.parent === undefined) return undefined;
    const subnets = [
      ...ipv4.map((s, i) => ({ space: req.IPv4Data?.[i]?.AddressSpace ?? '', pool: s.pool })),
      ...ipv6.map((s, i) => ({ space: req.IPv6Data?.[i]?.AddressSpace ?? '', pool: s.pool })),
    ];
    const pools = cluster.poolsOf(subnets);
    if (!pools) {
      log.info({ subnets: subnets.map((s) => s.pool) }, `${this.name} network with another IPAM driver: its addresses are this host's alone (use --ipam-driver tsnet for cluster-wide allocation)`);
      return undefined;
    }
    if (pools.some((p) => p.dynamic)) {
      log.warn({ subnets: subnets.map((s) => s.pool) }, `${this.name} network without --subnet: its addresses are this host's alone (give the LAN's --subnet for cluster-wide allocation)`);
      return undefined;
    }
    return cluster.plan({ kind: this.name, pools, gateway: gatewayIp(ipv4[0]?.gateway) });
  }

  /** A parent must be a LAN link: not something tsnet made, not one a passthru child owns. */
  #checkParent(link: LinkInfo, id: string, links: LinkInfo[]): void {
    if (link.ifalias?.startsWith(ALIAS_PREFIX)) {
      throw new TsnetError('TSNET_ERR_PARENT', `parent: ${quote(link.ifname)} is a device tsnet made (${link.ifalias}), not a LAN interface`);
    }
    const passthru = links.find((l) => l.link === link.ifname && l.linkinfo?.info_kind === 'macvlan' && l.linkinfo.info_data?.mode === 'passthru');
    if (passthru) {
      throw new TsnetError('TSNET_ERR_PARENT', `parent: ${quote(link.ifname)} is already the parent of ${passthru.ifname} in passthru mode, which takes the whole interface (network ${shortId(id)})`);
    }
  }

  /** A device of this network's own name: our leftover of an interrupted create (true: to be removed), anything else is refused. */
  #ownLeftover(link: LinkInfo | undefined, name: string, alias: string): boolean {
    if (!link) return false;
    if (link.ifalias !== alias) throw new TsnetError('TSNET_ERR_BRIDGE_IN_USE', `cannot create ${name}: a device with that name exists`);
    return true;
  }

  #childSpec(lan: LanRecord, name: string, mtu: number): ChildSpec {
    return { name, parent: lan.parent, mtu, alias: '', kind: lan.kind, mode: lan.mode, ...(lan.flag ? { flag: lan.flag as ChildSpec['flag'] } : {}) };
  }

  protected lan(net: NetworkRecord): LanRecord {
    if (!net.lan) throw new Error(`network ${shortId(net.id)} is a ${net.mode} network without LAN settings`);
    return net.lan;
  }

  async deleteNetwork(net: NetworkRecord): Promise<unknown[]> {
    const { runner } = this.deps;
    const lan = this.lan(net);
    const errors: unknown[] = [];
    await this.deps.cluster.stop(net, { leave: true });
    // The probe never outlives its create (one batch makes and deletes it).
    const mine = [lan.shim, lan.createdParent ? lan.parent : undefined].filter((n): n is string => n !== undefined);
    await deleteLinks(runner, mine).catch((err) => errors.push(err));
    return errors;
  }

  async removeOrphanNetwork(id: string, log: Logger): Promise<void> {
    const { runner } = this.deps;
    const names = lanNames(id);
    for (const name of [names.shim, names.probe, names.parent]) {
      const link = await getLink(runner, name);
      if (link?.ifalias !== networkAlias(id)) continue;
      await deleteLink(runner, name);
      log.info({ link: name }, 'removed a leftover device of an unknown network');
    }
  }

  async planEndpoint({ id, net, mac, address, addressV6 }: EndpointDraft): Promise<EndpointPlan> {
    const { runner, store } = this.deps;
    const lan = this.lan(net);
    if (lan.mode === 'passthru') {
      const other = Object.values(store.state.endpoints).find((e) => e.networkId === net.id && e.id !== id);
      if (other) {
        throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${this.#kind.modeOption}=passthru: network ${shortId(net.id)} already has a container (endpoint ${shortId(other.id)}); a passthru parent takes one only`);
      }
    }
    const name = peerVethName(id);
    const chosen = await this.childMac(net, mac);
    const spec: ChildSpec = { ...this.#childSpec(lan, name, net.mtu), alias: endpointAlias(id), ...(chosen.fixed ? {} : { mac: chosen.mac }) };
    const routes = lan.shim ? hostRoutes(address, addressV6) : [];
    const steps: Step[] = [
      {
        name: 'child',
        do: async () => {
          try {
            await createChild(runner, spec);
          } catch (err) {
            await deleteLink(runner, name).catch(() => undefined);
            if (!isExists(err)) throw err;
            const link = await getLink(runner, name);
            if (link && link.ifalias !== endpointAlias(id)) throw new TsnetError('TSNET_ERR_ENDPOINT_EXISTS', `cannot create ${name}: a device with that name exists`);
            await createChild(runner, spec);
          }
        },
        undo: async () => void (await deleteLink(runner, name)),
      },
      {
        // The host reaches this container through its shim, not the parent.
        name: 'host-route',
        when: routes.length > 0,
        do: () => ipBatch(runner, routes.map((r) => ['route', 'replace', r, 'dev', lan.shim!])),
        undo: () => ipBatch(runner, routes.map((r) => ['route', 'del', r, 'dev', lan.shim!]), { force: true }).catch(() => undefined),
      },
    ];
    return { hostVeth: name, peerVeth: name, steps, ...(chosen.fixed ? { fixedMac: chosen.mac } : {}) };
  }

  async deleteEndpoint(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    const { runner } = this.deps;
    const shim = net?.lan?.shim;
    const routes = shim ? hostRoutes(ep.address, ep.addressV6) : [];
    if (routes.length > 0) await ipBatch(runner, routes.map((r) => ['route', 'del', r, 'dev', shim!]), { force: true }).catch(() => undefined);
    // Back in the host namespace only if dockerd moved it out of a sandbox it tore down.
    await deleteLink(runner, ep.hostVeth);
  }

  async endpointAlive(ep: EndpointRecord): Promise<boolean> {
    return ep.sandboxKey !== undefined || (await getLink(this.deps.runner, ep.hostVeth)) !== undefined;
  }

  async removeOrphanEndpoint(id: string): Promise<void> {
    const { runner } = this.deps;
    const name = peerVethName(id);
    const link = await getLink(runner, name);
    if (link?.ifalias === endpointAlias(id)) await deleteLink(runner, name);
  }

  join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown> {
    const gw4 = !net.internal ? gatewayIp(net.ipv4[0]?.gateway) : undefined;
    const gw6 = !net.internal ? gatewayIp(net.ipv6[0]?.gateway) : undefined;
    return joinAnswer(net, ep, gw4, gw6);
  }

  firewall(): undefined {
    return undefined;
  }

  /**
   * A parent tsnet made comes back as it was; a user's parent that is
   * missing is reported (nothing can be done until it is back). A parent
   * that is new since last seen (re-created: its ifindex changed) took the
   * containers' children with it, so they are made again inside their
   * running containers. The shim and its routes are re-made.
   */
  async reconcileNetwork(net: NetworkRecord, run: ReconcileRun): Promise<void> {
    const { runner, store } = this.deps;
    const { report, log } = run;
    const lan = this.lan(net);
    const alias = networkAlias(net.id);
    this.deps.cluster.follow(net);
    // A probe outlives its batch only if tsnet died inside it.
    const probe = lanNames(net.id).probe;
    if (run.links.get(probe)?.ifalias === alias) await deleteLink(runner, probe);
    let parent = run.links.get(lan.parent);
    let recreated = false;
    if (!parent) {
      if (!lan.createdParent) throw new TsnetError('TSNET_ERR_PARENT', `parent ${lan.parent} is missing: the network's containers lost their LAN link with it; tsnet gives them new ones when it is back (at the next reconcile: SIGHUP or tsnetctl reconcile)`);
      if (lan.vlan !== undefined) {
        const base = vlanOf(lan.parent)!.base;
        await createVlan(runner, { name: lan.parent, base, vlan: lan.vlan, alias });
      } else await createIsolatedParent(runner, { name: lan.parent, peer: lan.parentPeer ?? lanNames(net.id).peer, mtu: net.mtu, alias });
      report.bridgesCreated.push(lan.parent);
      log.warn({ networkId: net.id, parent: lan.parent }, 'parent tsnet made was missing; re-created it');
      recreated = true;
      parent = await getLink(runner, lan.parent);
    } else if (lan.createdParent && !parent.flags.includes('UP')) {
      await ipBatch(runner, [['link', 'set', 'dev', lan.parent, 'up']]);
      report.bridgesFixed.push(lan.parent);
    }
    const index = parent?.ifindex;
    if (index !== undefined && (recreated || (lan.parentIndex !== undefined && lan.parentIndex !== index))) await this.#restoreChildren(net, lan, run);
    if (index !== undefined && lan.parentIndex !== index) {
      lan.parentIndex = index;
      run.markChanged();
    }
    if (!lan.shim) return;
    if (recreated || !run.links.has(lan.shim)) {
      await createShim(runner, { ...this.#childSpec(lan, lan.shim, net.mtu), alias });
      report.bridgesFixed.push(lan.shim);
      log.warn({ networkId: net.id, shim: lan.shim }, 'host access shim was missing; re-created it');
    }
    const routes = Object.values(store.state.endpoints)
      .filter((e) => e.networkId === net.id)
      .flatMap((e) => hostRoutes(e.address, e.addressV6));
    await ipBatch(runner, routes.map((r) => ['route', 'replace', r, 'dev', lan.shim!]));
  }

  /** Every joined container of the network gets its child again, as dockerd configured it. */
  async #restoreChildren(net: NetworkRecord, lan: LanRecord, run: ReconcileRun): Promise<void> {
    const { runner, store } = this.deps;
    for (const ep of Object.values(store.state.endpoints)) {
      if (ep.networkId !== net.id || !ep.sandboxKey || run.links.has(ep.hostVeth)) continue;
      const answer = this.join(net, ep);
      const connected = ((answer.StaticRoutes ?? []) as Array<{ Destination: string; RouteType: number }>).filter((r) => r.RouteType === 1).map((r) => r.Destination);
      try {
        const dev = await restoreChild(runner, {
          ...this.#childSpec(lan, ep.hostVeth, net.mtu),
          alias: endpointAlias(ep.id),
          ...(lan.kind === 'macvlan' ? { mac: ep.mac } : {}),
          sandbox: sandboxPathHere(ep.sandboxKey, this.deps.hostRun),
          prefix: net.ifacePrefix,
          addresses: [ep.address, ep.addressV6].filter((a): a is string => a !== undefined),
          ...(typeof answer.Gateway === 'string' ? { gateway4: answer.Gateway } : {}),
          ...(typeof answer.GatewayIPv6 === 'string' ? { gateway6: answer.GatewayIPv6 } : {}),
          connected,
        });
        run.report.endpointsReattached.push(ep.id);
        run.log.warn({ networkId: net.id, endpointId: ep.id, parent: lan.parent, dev }, "the parent was re-created; gave the container its child again");
      } catch (err) {
        // The container may have gone meanwhile; dockerd deletes its endpoint.
        await deleteLink(runner, ep.hostVeth).catch(() => undefined);
        run.report.errors.push(`endpoint ${shortId(ep.id)}: ${(err as Error).message}`);
        run.log.error({ err, networkId: net.id, endpointId: ep.id }, "could not give a container its child again; restart it");
      }
    }
  }

  endpointPresence(_net: NetworkRecord, ep: EndpointRecord, links: Map<string, LinkInfo>): EndpointPresence {
    if (links.has(ep.hostVeth)) return 'host';
    // In its container, where the host cannot see it; the container's end is dockerd's to report.
    return ep.sandboxKey !== undefined ? 'container' : 'gone';
  }

  reconcileEndpoint(): Array<readonly (string | number)[]> {
    return [];
  }

  status(net: NetworkRecord): Record<string, unknown> {
    const lan = this.lan(net);
    return { mtu: net.mtu, parent: lan.parent, createdParent: lan.createdParent, vlan: lan.vlan ?? null, [this.#kind.modeOption]: lan.mode, ...(lan.flag ? { [this.#kind.flagOption!]: lan.flag } : {}), hostAccess: lan.shim !== undefined };
  }
}

/** Host routes to a container's addresses (CIDR form in, /32 and /128 out). */
export function hostRoutes(address: string | undefined, addressV6: string | undefined): string[] {
  const out: string[] = [];
  if (address) out.push(`${address.slice(0, address.indexOf('/'))}/32`);
  if (addressV6) out.push(`${addressV6.slice(0, addressV6.indexOf('/'))}/128`);
  return out;
}
