// tsnet.mode=overlay: one subnet spanning hosts over VXLAN. The network is a
// bridge network (bridge.ts) split in two (kernel/overlay-ns.ts): in the host
// namespace, the bridge holding the gateway addresses, with the network's
// firewall, NAT and published ports as for any bridge network; in a namespace
// of its own, a bridge of the same name switching the endpoints' veths and
// the VXLAN port, out of reach of the host's netfilter. A veth pair joins the
// two. The control plane (VNI agreement, forwarding entries, cluster-wide
// addresses) is the OverlayManager's; this module builds the devices and
// hands the network to the manager once it exists. An encrypted overlay
// (tsnet.encrypt) also needs the host's WireGuard tunnel: it is brought up
// (or joined) before the VXLAN port, which sends from the tunnel address
// through it, and left with the network (the last one takes it down).
//
// tsnet.backend=auto (flannel's DirectRouting): member hosts on this host's
// LAN are reached by plain routes to their address blocks, as routed
// networks do (routed/), and only the others over VXLAN. The gateway's
// bridge (in the host's namespace) then answers ARP for the direct members'
// containers, and the firewall admits their blocks from the LAN side.
import type { Logger } from 'pino';
import { TsnetError, quote } from '../../errors.js';
import type { FirewallNetwork } from '../../firewall/firewall.js';
import { nftApply } from '../../firewall/nft.js';
import { renderIccRemoval, renderIccRules, renderLegacyGatewayGuardRemoval } from '../../firewall/overlay-rules.js';
import { isExists, type Runner } from '../../kernel/exec.js';
import { deleteLink, deleteLinks, getLink, ipBatch, type LinkInfo } from '../../kernel/ip.js';
import { withLinkRollback } from '../../kernel/link.js';
import { ALIAS_PREFIX, OVERLAY_NETNS, PREFIX, bridgeMac, endpointAlias, hostVethName, networkAlias, overlayNames, peerVethName, shortId, vxlanName } from '../../kernel/names.js';
import { connectedNetns, deleteNetns, gatewayFdb, gatewayHostLines, gatewayPortLines, isStaleNetns, listNetns, nsBridgeLines, nsLinks, overlayRunner, setupOverlayNs, teardownOverlayNs, type OverlayNsSpec } from '../../kernel/overlay-ns.js';
import { createVxlan, vxlanPortLines } from '../../kernel/vxlan.js';
import { hasControlPlane, staticPeers, vtepOf, vxlanOverhead, type Underlay } from '../../overlay/manager.js';
import type { EndpointRecord, NetworkRecord, OverlayRecord, SubnetRecord } from '../../store/schema.js';
import type { NetworkConfig } from '../options.js';
import { OPT } from '../opt.js';
import type { Step } from '../steps.js';
import type { BridgeMode } from './bridge.js';
import { ensureRoutedSysctls, routedBridgeStep } from './routed.js';
import type { EndpointDraft, EndpointPlan, EndpointPresence, ModeDeps, ModeName, NetworkDraft, NetworkMode, NetworkPlan, ReconcileRun } from './mode.js';

export class OverlayMode implements NetworkMode {
  readonly name: ModeName = 'overlay';
  readonly deviceKind = 'bridge';
  readonly publishesPorts = true;
  readonly #deps: ModeDeps;
  readonly #bridge: BridgeMode;
  /** the links of each overlay's namespace as the last reconcile saw them (endpointPresence is synchronous) */
  readonly #seen = new Map<string, Map<string, LinkInfo>>();

  constructor(deps: ModeDeps, bridge: BridgeMode) {
    this.#deps = deps;
    this.#bridge = bridge;
  }

  deviceName(id: string, cfg: NetworkConfig): string {
    return this.#bridge.deviceName(id, cfg);
  }

  validate(cfg: NetworkConfig, ipv4: SubnetRecord[], ipv6: SubnetRecord[]): void {
    this.#bridge.validate(cfg, ipv4, ipv6);
    const entry = cfg.peers?.find((p) => p.includes('='));
    if (entry) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.peers}: ${quote(entry)}: an overlay's peers are addresses (ADDR,ADDR); ADDR=BLOCK is for ${OPT.mode}=routed`);
    if (backendOf(cfg) === 'auto' && cfg.peers) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.backend}: auto routes to the address blocks other hosts lease from etcd; a static-peers overlay (${OPT.peers}) has none`);
    }
    if (backendOf(cfg) === 'auto' && cfg.encrypt) {
      // Direct routes carry the containers' packets in the clear: not what an encrypted overlay promises.
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.backend}: auto routes same-LAN members' traffic outside the tunnel; an encrypted overlay (${OPT.encrypt}=true) keeps every member on WireGuard`);
    }
  }

  async planNetwork(draft: NetworkDraft): Promise<NetworkPlan> {
    const { overlay: manager, cluster, runner } = this.#deps;
    const { id, req, cfg, ipv4, log } = draft;
    const backend = backendOf(cfg);
    const auto = backend === 'auto';
    // VNI agreed in the cluster and underlay found, before any kernel change.
    const first = ipv4[0];
    const pools = first ? cluster.poolsOf([{ space: req.IPv4Data?.[0]?.AddressSpace ?? '', pool: first.pool }]) : undefined;
    const { overlay, underlay, cluster: clustered } = await manager.plan({
      id,
      subnet: first?.pool,
      pools,
      gateway: first?.gateway,
      vni: cfg.vni,
      peers: cfg.peers,
      peerKeys: cfg.peerKeys,
      encrypt: cfg.encrypt,
      vxlan: vxlanName(id),
      ...(cfg.peers ? {} : { backend }),
    });
    const wg = manager.wireguard;
    const names = overlayNames(id);
    if ((await listNetns(runner)).includes(names.netns)) {
      // A namespace of this very network: a create interrupted before its record was written.
      await teardownOverlayNs(runner, names, overlay.vxlan);
    }
    const plan = await this.#bridge.planBridge(draft, {
      name: this.name,
      record: { overlay, ...(clustered ? { cluster: clustered.record } : {}) },
      defaultMtu: overlay.encrypted && wg ? wg.networkMtu(underlay) : underlay.mtu - vxlanOverhead(underlay.local),
      afterBridge: (record) => [
        ...this.#tunnelSteps(record, underlay),
        {
          name: 'overlay-netns',
          do: async () => {
            try {
              await setupOverlayNs(runner, this.#nsSpec(record), record.bridge, process.pid);
              await withLinkRollback(runner, overlay.vxlan, () => this.#createPort(record, overlay, underlay));
            } catch (err) {
              await teardownOverlayNs(runner, names, overlay.vxlan).catch(() => undefined);
              throw err;
            }
          },
          undo: () => teardownOverlayNs(runner, names, overlay.vxlan),
        },
        ...(auto ? [routedBridgeStep(runner, record, log)] : []),
      ],
      firewall: (record) => this.firewall(record),
      afterFirewall: (record) => [
        {
          name: 'overlay-rules',
          do: async () => {
            await manager.syncRules(record);
            if (!record.icc) await this.#iccRules(record);
          },
          undo: async () => manager.syncRules(),
        },
      ],
    });
    // The pool's addresses become cluster-wide with the network's record.
    return {
      ...plan,
      ...(clustered ? { beforeCommit: () => clustered.beforeCommit(id), revertCommit: () => clustered.revertCommit() } : {}),
      activate: () => manager.start(plan.record),
      logFields: { ...plan.logFields, vni: overlay.vni, netns: names.netns },
    };
  }

  async deleteNetwork(net: NetworkRecord): Promise<unknown[]> {
    const { overlay: manager, runner } = this.#deps;
    const errors: unknown[] = [];
    const o = this.#record(net);
    await manager.stop(net, { leave: true });
    if (o.backend === 'auto') await this.#deps.routed.stop(net).catch((err) => errors.push(err));
    await teardownOverlayNs(runner, overlayNames(net.id), o.vxlan).catch((err) => errors.push(err));
    // A VXLAN device of the layout before namespaces, still in the host's.
    await deleteLink(runner, o.vxlan).catch((err) => errors.push(err));
    if (o.encrypted) await manager.wireguard?.detach(net.id).catch((err) => errors.push(err));
    this.#seen.delete(net.id);
    return [...errors, ...(await this.#bridge.deleteNetwork(net))];
  }

  async afterDelete(): Promise<void> {
    await this.#deps.overlay.syncRules();
  }

  async removeOrphanNetwork(id: string, log: Logger): Promise<void> {
    const { runner } = this.#deps;
    const names = overlayNames(id);
    if ((await listNetns(runner)).includes(names.netns)) {
      await teardownOverlayNs(runner, names, vxlanName(id));
      log.info({ netns: names.netns }, 'removed the overlay namespace of an unknown network');
    }
    await this.#bridge.removeOrphanNetwork(id, log);
  }

  async planEndpoint({ id: epId, net, mac }: EndpointDraft): Promise<EndpointPlan> {
    const { runner } = this.#deps;
    const ns = this.#ns(net);
    const host = hostVethName(epId);
    const peer = peerVethName(epId);
    // Made from inside the namespace: the host end stays there, on the
    // bridge; the container end goes to the host's namespace (tsnet's own),
    // where dockerd picks it up. One process.
    const lines: Array<readonly (string | number)[]> = [
      ['link', 'add', 'name', host, 'mtu', net.mtu, 'type', 'veth', 'peer', 'name', peer, 'mtu', net.mtu, 'address', mac, 'netns', process.pid],
      ['link', 'set', 'dev', host, 'alias', endpointAlias(epId), 'addrgenmode', 'none', 'master', net.bridge],
      ['link', 'set', 'dev', host, 'up'],
    ];
    const veth: Step = {
      name: 'veth',
      do: async () => {
        try {
          await ipBatch(ns, lines);
        } catch (err) {
          if (!isExists(err)) {
            await deleteLink(ns, host).catch(() => undefined);
            throw err;
          }
          // Our own leftover for this endpoint is replaced, anything else is refused.
          const link = await getLink(ns, host);
          const other = await getLink(runner, peer);
          if ((link && link.ifalias !== endpointAlias(epId)) || (!link && other)) {
            throw new TsnetError('TSNET_ERR_ENDPOINT_EXISTS', `cannot create ${host}: a device with that name exists`);
          }
          await deleteLink(ns, host);
          await ipBatch(ns, lines);
        }
      },
      undo: async () => void (await deleteLink(ns, host)),
    };
    return { hostVeth: host, peerVeth: peer, steps: [veth] };
  }

  async endpointCreated(net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.#deps.cluster.publish(net, ep);
  }

  async deleteEndpoint(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    await this.#deps.cluster.unpublish(net, ep);
    if (net && (await deleteLink(this.#ns(net), ep.hostVeth).catch(() => false))) return;
    // Either end takes its pair: the container end, if it never left the
    // host's namespace, or the host end where the layout before namespaces kept it.
    await deleteLinks(this.#deps.runner, [ep.peerVeth, ep.hostVeth]);
  }

  async endpointAlive(ep: EndpointRecord): Promise<boolean> {
    const net = this.#deps.store.state.networks[ep.networkId];
    if (net && (await getLink(this.#ns(net), ep.hostVeth).catch(() => undefined))) return true;
    return (await getLink(this.#deps.runner, ep.hostVeth)) !== undefined;
  }

  join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown> {
    return this.#bridge.join(net, ep);
  }

  firewall(net: NetworkRecord): FirewallNetwork {
    return { ...this.#bridge.firewall(net), ...(net.overlay?.backend === 'auto' ? { routed: true } : {}) };
  }

  /**
   * The gateway's bridge as bridge mode restores it; then the namespace, its
   * bridge and the gateway pair; the VXLAN port, sending from this host's
   * VTEP address as it is now (a changed TSNET_ADVERTISE_ADDR, or a new
   * address from DHCP, would otherwise leave it sending from one the host no
   * longer has); the endpoints' veths on the bridge; the rules. Networks made
   * before overlays had a namespace are moved into one here. Then the control
   * plane is followed again (forwarding entries come from etcd, where this
   * host registered its current address at start).
   */
  async reconcileNetwork(net: NetworkRecord, run: ReconcileRun): Promise<void> {
    await this.#bridge.reconcileNetwork(net, run);
    const { runner, overlay: manager, store } = this.#deps;
    const { log, report } = run;
    const o = this.#record(net);
    const names = overlayNames(net.id);
    const spec = this.#nsSpec(net);
    const ns = this.#ns(net);
    let stale = false;
    let links =
      (await nsLinks(runner, names.netns).catch((err: unknown) => {
        if (!isStaleNetns(err)) throw err;
        stale = true;
        return undefined;
      })) ?? new Map<string, LinkInfo>();
    if (stale) {
      // Its containers' links ended with it; new ones need the namespace back.
      log.error({ networkId: net.id, netns: names.netns }, "overlay namespace had ended, leaving its name (it was mounted where the host's /run/netns never saw it; tsnetctl doctor, check netns); re-created it");
      await deleteNetns(runner, names.netns);
      await setupOverlayNs(runner, spec, net.bridge, process.pid);
      report.bridgesCreated.push(`${names.netns}/${net.bridge}`);
      links = (await nsLinks(runner, names.netns)) ?? new Map();
    } else if (!(await run.once('netns', () => listNetns(runner))).includes(names.netns)) {
      log.warn({ networkId: net.id, netns: names.netns }, 'overlay namespace was missing; re-created it');
      await setupOverlayNs(runner, spec, net.bridge, process.pid);
      report.bridgesCreated.push(`${names.netns}/${net.bridge}`);
      links = (await nsLinks(runner, names.netns)) ?? new Map();
    } else {
      if (!links.has(net.bridge)) {
        await ipBatch(ns, nsBridgeLines(spec));
        report.bridgesCreated.push(`${names.netns}/${net.bridge}`);
      }
      if (!links.has(names.gatewayPort)) {
        await deleteLink(runner, names.gatewayHost);
        await ipBatch(ns, gatewayPortLines(spec, process.pid));
        await gatewayFdb(runner, spec);
        await ipBatch(runner, gatewayHostLines(spec, net.bridge));
        report.bridgesFixed.push(names.gatewayPort);
      }
    }
    const gwHost = run.links.get(names.gatewayHost) ?? (await getLink(runner, names.gatewayHost));
    if (gwHost && (gwHost.master !== net.bridge || !gwHost.flags.includes('UP'))) {
      await ipBatch(runner, gatewayHostLines(spec, net.bridge));
      report.bridgesFixed.push(names.gatewayHost);
    }

    const underlay = await run.once('underlay', () => manager.underlay().catch((err: unknown) => err as Error));
    if (o.encrypted) {
      // The tunnel first (made again if wireguard-go died; found and kept if it runs).
      if (underlay instanceof Error) throw underlay;
      await this.#attachTunnel(net, underlay);
    }
    const vx = links.get(o.vxlan);
    const data = vx?.linkinfo?.info_data;
    const sendsFrom = (data?.local ?? data?.local6) as string | undefined;
    const moved = !(underlay instanceof Error) && sendsFrom !== undefined && sendsFrom !== vtepOf({ local: underlay.local, encrypted: o.encrypted });
    // The layout before namespaces: the VXLAN port in the host's namespace.
    const legacy = run.links.get(o.vxlan);
    if (!vx || moved) {
      if (underlay instanceof Error) throw underlay;
      const u: Underlay = underlay;
      if (moved) {
        log.warn({ networkId: net.id, vxlan: o.vxlan, from: sendsFrom, to: vtepOf({ local: u.local, encrypted: o.encrypted }) }, "this host's VTEP address changed; re-creating the VXLAN port");
        await ns.run('ip', ['link', 'del', 'dev', o.vxlan]);
      } else if (legacy) log.info({ networkId: net.id, vxlan: o.vxlan, netns: names.netns }, "moving the overlay's VXLAN port into its own namespace");
      else log.warn({ networkId: net.id, vxlan: o.vxlan }, 'VXLAN device was missing; re-created it');
      if (legacy) await deleteLink(runner, o.vxlan);
      await this.#createPort(net, o, u);
      if (o.local !== u.local || o.underlay !== u.dev) {
        o.local = u.local;
        o.underlay = u.dev;
        run.markChanged();
      }
      const room = o.encrypted && manager.wireguard ? manager.wireguard.networkMtu(u) : u.mtu - vxlanOverhead(u.local);
      if (net.mtu > room) {
        log.warn({ networkId: net.id, mtu: net.mtu, underlayMtu: u.mtu }, "the network's MTU no longer fits the underlay with VXLAN headers; large packets will be dropped until the network is re-created");
      }
      report.bridgesFixed.push(o.vxlan);
    } else if (vx.master !== net.bridge || !vx.flags.includes('UP')) {
      await ipBatch(ns, vxlanPortLines({ name: o.vxlan, bridge: net.bridge, learning: !hasControlPlane(o) }));
      report.bridgesFixed.push(o.vxlan);
    }

    // Endpoints' host ends: on the namespace's bridge; moved in from the host's (older layout).
    const fixes: Array<readonly (string | number)[]> = [];
    const moves: Array<readonly (string | number)[]> = [];
    const mine = Object.values(store.state.endpoints).filter((e) => e.networkId === net.id);
    for (const ep of mine) {
      const l = links.get(ep.hostVeth);
      const inHost = !l && run.links.get(ep.hostVeth)?.ifalias === endpointAlias(ep.id);
      if (inHost) moves.push(['link', 'set', 'dev', ep.hostVeth, 'netns', names.netns]);
      if (inHost || (l && (l.master !== net.bridge || !l.flags.includes('UP')))) {
        fixes.push(['link', 'set', 'dev', ep.hostVeth, 'addrgenmode', 'none', 'master', net.bridge], ['link', 'set', 'dev', ep.hostVeth, 'up']);
        report.endpointsReattached.push(ep.id);
      }
    }
    if (moves.length > 0) {
      await ipBatch(runner, moves);
      log.info({ networkId: net.id, netns: names.netns, endpoints: moves.length }, "moved the overlay's endpoints into its namespace");
    }
    // Tagged endpoint links here that no record explains: an interrupted create or delete.
    const known = new Set(mine.map((e) => e.hostVeth));
    const orphans = [...links.values()].filter((l) => l.ifalias?.startsWith(`${ALIAS_PREFIX}ep:`) && !known.has(l.ifname)).map((l) => l.ifname);
    if (orphans.length > 0) {
      await ipBatch(ns, orphans.map((n) => ['link', 'del', 'dev', n]), { force: true }).catch((err) => report.errors.push(`orphans in ${names.netns}: ${(err as Error).message}`));
      report.orphanLinksRemoved.push(...orphans);
    }
    if (fixes.length > 0) await ipBatch(ns, fixes, { force: true });
    this.#seen.set(net.id, (await nsLinks(runner, names.netns)) ?? new Map());

    if (!net.icc) await this.#iccRules(net);
    if (o.backend === 'auto') {
      await ensureRoutedSysctls(runner, net, log);
      this.#deps.routed.resync(net);
    }
    manager.start(net);
    if (!vx || moved) manager.reprogram(net);
  }

  endpointPresence(net: NetworkRecord, ep: EndpointRecord, links: Map<string, LinkInfo>): EndpointPresence {
    const seen = this.#seen.get(net.id);
    // The namespace could not be read this run: never drop a live container's record on a guess.
    if (!seen) return links.has(ep.peerVeth) ? 'host' : 'container';
    if (!seen.has(ep.hostVeth) && !links.has(ep.hostVeth)) return 'gone';
    return links.has(ep.peerVeth) ? 'host' : 'container';
  }

  reconcileEndpoint(): Array<readonly (string | number)[]> {
    // Done by reconcileNetwork, inside the namespace.
    return [];
  }

  /**
   * Host-wide: the VXLAN guard while overlays exist; the host-namespace
   * gateway guard of older versions gone; overlay namespaces tied to this
   * host that no network explains removed (an interrupted create or delete).
   */
  async reconcileHost(run: ReconcileRun): Promise<void> {
    const { runner, overlay: manager, store } = this.#deps;
    await manager.syncRules();
    // The tunnel goes with the last encrypted overlay (a network removed while tsnet was away).
    if (!Object.values(store.state.networks).some((n) => n.overlay?.encrypted)) await manager.wireguard?.cleanup();
    await nftApply(runner, renderLegacyGatewayGuardRemoval()).catch((err: unknown) => run.log.debug({ err }, 'no bridge-family table to remove'));
    const wanted = new Set(Object.values(store.state.networks).filter((n) => n.overlay).map((n) => overlayNames(n.id).netns));
    // Only namespaces this one has links into: on a machine where several
    // tsnet instances share /run/netns, the others' are not ours to judge.
    const ours = await connectedNetns(runner).catch(() => [] as string[]);
    for (const name of ours) {
      if (!OVERLAY_NETNS.test(name) || wanted.has(name)) continue;
      const vx = [...((await nsLinks(runner, name)) ?? new Map<string, LinkInfo>()).values()].find((l) => l.linkinfo?.info_kind === 'vxlan');
      await teardownOverlayNs(runner, { netns: name, gatewayHost: `${PREFIX.gatewayHost}${name.slice(PREFIX.overlayNetns.length)}` }, vx?.ifname ?? 'none').catch((err: unknown) => run.report.errors.push(`netns ${name}: ${(err as Error).message}`));
      run.report.orphanLinksRemoved.push(name);
      run.log.warn({ netns: name }, 'removed an overlay namespace no network explains');
    }
  }

  status(net: NetworkRecord): Record<string, unknown> {
    const o = this.#record(net);
    const direct = o.backend === 'auto' ? { backend: 'auto', direct: this.#deps.routed.status(net) } : {};
    return { ...this.#bridge.status(net), vni: o.vni, vxlan: o.vxlan, netns: overlayNames(net.id).netns, control: o.mode, local: o.local, peers: o.peers, encrypted: o.encrypted ?? false, ...(o.encrypted ? { vtep: vtepOf(o) } : {}), ...direct };
  }

  /** An encrypted overlay's first step: the host's tunnel up with this network's peers (static) or theirs to come (etcd). */
  #tunnelSteps(net: NetworkRecord, u: Underlay): Step[] {
    const wg = this.#deps.overlay.wireguard;
    if (!net.overlay?.encrypted || !wg) return [];
    return [
      {
        name: 'wireguard',
        do: () => this.#attachTunnel(net, u),
        undo: async () => void (await wg.detach(net.id)),
      },
    ];
  }

  #attachTunnel(net: NetworkRecord, u: Underlay): Promise<void> {
    const o = net.overlay!;
    const wg = this.#deps.overlay.wireguard!;
    return wg.attach(net.id, o.vni, u, o.mode === 'static' ? staticPeers(o, wg.port) : undefined);
  }

  #nsSpec(net: NetworkRecord): OverlayNsSpec {
    const names = overlayNames(net.id);
    return { netns: names.netns, bridge: net.bridge, mtu: net.mtu, alias: networkAlias(net.id), gatewayHost: names.gatewayHost, gatewayPort: names.gatewayPort, gatewayMac: bridgeMac(net) };
  }

  #ns(net: NetworkRecord): Runner {
    return overlayRunner(this.#deps.runner, overlayNames(net.id).netns);
  }

  async #iccRules(net: NetworkRecord): Promise<void> {
    const ns = this.#ns(net);
    if (net.icc) await nftApply(ns, renderIccRemoval());
    else await nftApply(ns, renderIccRules(overlayNames(net.id).gatewayPort));
  }

  /** Static overlays have no control plane to program forwarding entries: their port learns. */
  #createPort(net: NetworkRecord, o: OverlayRecord, u: Underlay): Promise<void> {
    const wg = o.encrypted ? this.#deps.overlay.wireguard : undefined;
    const spec = { name: o.vxlan, vni: o.vni, port: this.#deps.overlay.port, local: vtepOf({ local: u.local, encrypted: o.encrypted }), dev: wg ? wg.iface : u.dev, mtu: net.mtu, bridge: net.bridge, alias: networkAlias(net.id), learning: !hasControlPlane(o), netns: overlayNames(net.id).netns };
    return createVxlan(this.#deps.runner, spec);
  }

  #record(net: NetworkRecord): OverlayRecord {
    if (!net.overlay) throw new Error(`network ${shortId(net.id)} is an overlay without overlay settings`);
    return net.overlay;
  }
}

/** tsnet.backend: vxlan (every member over VXLAN, the default) or auto (same-LAN members routed directly). */
export function backendOf(cfg: NetworkConfig): 'vxlan' | 'auto' {
  const v = cfg.generic[OPT.backend] ?? 'vxlan';
  if (v !== 'vxlan' && v !== 'auto') throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${OPT.backend}: ${quote(v)} is not a backend (use vxlan or auto)`);
  return v;
}
