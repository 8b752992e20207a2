// tsnet.mode=overlay: a bridge network (bridge.ts) whose bridge also holds a
// VXLAN port, so one subnet spans hosts. The control plane (VNI agreement,
// forwarding entries, cluster-wide addresses) is the OverlayManager's; this
// module only adds the overlay's devices and rules to the bridge's and hands
// the network to the manager once it exists.
import type { FirewallNetwork } from '../../firewall/firewall.js';
import { deleteLink, deleteLinks, ipBatch, type LinkInfo } from '../../kernel/ip.js';
import { withLinkRollback } from '../../kernel/link.js';
import { networkAlias, shortId, vxlanName } from '../../kernel/names.js';
import { createVxlan } from '../../kernel/vxlan.js';
import { hasControlPlane, vxlanOverhead, type Underlay } from '../../overlay/manager.js';
import type { EndpointRecord, NetworkRecord, OverlayRecord, SubnetRecord } from '../../store/schema.js';
import type { NetworkConfig } from '../options.js';
import type { BridgeMode } from './bridge.js';
import type { EndpointDraft, EndpointPlan, EndpointPresence, ModeDeps, ModeName, NetworkDraft, NetworkMode, NetworkPlan, ReconcileRun } from './mode.js';

export class OverlayMode implements NetworkMode {
  readonly name: ModeName = 'overlay';
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
    this.#bridge.validate(cfg, ipv4, ipv6);
  }

  async planNetwork(draft: NetworkDraft): Promise<NetworkPlan> {
    const { overlay: manager, cluster, runner } = this.#deps;
    const { id, req, cfg, ipv4 } = draft;
    // VNI agreed in the cluster and underlay found, before any kernel change.
    const first = ipv4[0];
    const pools = first ? cluster.poolsOf([{ space: req.IPv4Data?.[0]?.AddressSpace ?? '', pool: first.pool }]) : undefined;
    const { overlay, underlay, cluster: clustered } = await manager.plan({
      subnet: first?.pool,
      pools,
      gateway: first?.gateway,
      vni: cfg.vni,
      peers: cfg.peers,
      vxlan: vxlanName(id),
    });
    const plan = await this.#bridge.planBridge(draft, {
      name: this.name,
      record: { overlay, ...(clustered ? { cluster: clustered.record } : {}) },
      defaultMtu: underlay.mtu - vxlanOverhead(underlay.local),
      afterBridge: (record) => [
        {
          name: 'vxlan',
          do: () =>
withLinkRollback(runner, overlay.vxlan, () => this.#createPort(record, overlay, underlay)),
          undo: async () => void (await deleteLink(runner, overlay.vxlan)),
        },
      ],
      afterFirewall: (record) => [
        {
          name: 'overlay-rules',
          do: async () => {
            await manager.addGatewayGuard(record);
            await manager.syncRules(record);
          },
          undo: async () => {
            await manager.removeGatewayGuard(record);
            await manager.syncRules();
          },
        },
      ],
    });
    // The pool's addresses become cluster-wide with the network's record.
    return {
      ...plan,
      ...(clustered ? { beforeCommit: () => clustered.beforeCommit(id), revertCommit: () => clustered.revertCommit() } : {}),
      activate: () => manager.start(plan.record),
      logFields: { ...plan.logFields, vni: overlay.vni },
    };
  }

  async deleteNetwork(net: NetworkRecord): Promise<unknown[]> {
    const { overlay: manager, runner } = this.#deps;
    const errors: unknown[] = [];
    const o = this.#record(net);
    await manager.stop(net, { leave: true });
    await manager.removeGatewayGuard(net).catch((err) => errors.push(err));
    await deleteLink(runner, o.vxlan).catch((err) => errors.push(err));
    return [...errors, ...(await this.#bridge.deleteNetwork(net))];
  }

  async afterDelete(): Promise<void> {
    await this.#deps.overlay.syncRules();
  }

  planEndpoint(draft: EndpointDraft): Promise<EndpointPlan> {
    return this.#bridge.planEndpoint(draft);
  }

  async endpointCreated(net: NetworkRecord, ep: EndpointRecord): Promise<void> {
    await this.#deps.overlay.publish(net, ep);
  }

  async deleteEndpoint(net: NetworkRecord | undefined, ep: EndpointRecord): Promise<void> {
    await this.#deps.overlay.unpublish(net, ep);
    await this.#bridge.deleteEndpoint(net, ep);
  }

  endpointAlive(ep: EndpointRecord): Promise<boolean> {
    return this.#bridge.endpointAlive(ep);
  }

  join(net: NetworkRecord, ep: EndpointRecord): Record<string, unknown> {
    return this.#bridge.join(net, ep);
  }

  firewall(net: NetworkRecord): FirewallNetwork {
    return this.#bridge.firewall(net);
  }

  /**
   * The bridge as bridge mode restores it; then the VXLAN port exists, sends
   * from this host's VTEP address as it is now (a changed
   * TSNET_ADVERTISE_ADDR, or a new address from DHCP, would otherwise leave
   * it sending from one the host no longer has) and is on its bridge; rules
   * are in; the control plane is followed again (forwarding entries come
   * from etcd, where this host registered its current address at start).
   */
  async reconcileNetwork(net: NetworkRecord, run: ReconcileRun): Promise<void> {
    await this.#bridge.reconcileNetwork(net, run);
    const { runner, overlay: manager } = this.#deps;
    const { log, report } = run;
    const o = this.#record(net);
    const underlay = await run.once('underlay', () => manager.underlay().catch((err: unknown) => err as Error));
    const vx = run.links.get(o.vxlan);
    const data = vx?.linkinfo?.info_data;
    const sendsFrom = (data?.local ?? data?.local6) as string | undefined;
    const moved = !(underlay instanceof Error) && sendsFrom !== undefined && sendsFrom !== underlay.local;
    if (!vx || moved) {
      if (underlay instanceof Error) throw underlay;
      const u: Underlay = underlay;
      if (moved) {
        log.warn({ networkId: net.id, vxlan: o.vxlan, from: sendsFrom, to: u.local }, "this host's VTEP address changed; re-creating the VXLAN port");
        await deleteLinks(runner, [o.vxlan]);
      } else log.warn({ networkId: net.id, vxlan: o.vxlan }, 'VXLAN device was missing; re-created it');
      await this.#createPort(net, o, u);
      if (o.local !== u.local || o.underlay !== u.dev) {
        o.local = u.local;
        o.underlay = u.dev;
        run.markChanged();
      }
      if (net.mtu + vxlanOverhead(u.local) > u.mtu) {
        log.warn({ networkId: net.id, mtu: net.mtu, underlayMtu: u.mtu }, "the network's MTU no longer fits the underlay with VXLAN headers; large packets will be dropped until the network is re-created");
      }
      report.bridgesFixed.push(o.vxlan);
    } else if (vx.master !== net.bridge || !vx.flags.includes('UP')) {
      await ipBatch(runner, [['link', 'set', 'dev', o.vxlan, 'master', net.bridge], ['link', 'set', 'dev', o.vxlan, 'up']]);
      report.bridgesFixed.push(o.vxlan);
    }
    await manager.addGatewayGuard(net);
    manager.start(net);
    if (!vx || moved) manager.reprogram(net);
  }

  endpointPresence(net: NetworkRecord, ep: EndpointRecord, links: Map<string, LinkInfo>): EndpointPresence {
    return this.#bridge.endpointPresence(net, ep, links);
  }

  reconcileEndpoint(net: NetworkRecord, ep: EndpointRecord, link: LinkInfo): Array<readonly (string | number)[]> {
    return this.#bridge.reconcileEndpoint(net, ep, link);
  }

  /** The overlay's host-wide rules exist while overlays do, and go with the last. */
  async reconcileHost(): Promise<void> {
    await this.#deps.overlay.syncRules();
  }

  status(net: NetworkRecord): Record<string, unknown> {
    const o = this.#record(net);
    return { ...this.#bridge.status(net), vni: o.vni, vxlan: o.vxlan, control: o.mode, local: o.local, peers: o.peers };
  }

  /** Static overlays have no control plane to program forwarding entries: their port learns. */
  #createPort(net: NetworkRecord, o: OverlayRecord, u: Underlay): Promise<void> {
    const spec = { name: o.vxlan, vni: o.vni, port: this.#deps.overlay.port, local: u.local, dev: u.dev, mtu: net.mtu, bridge: net.bridge, alias: networkAlias(net.id), learning: !hasControlPlane(o) };
    return createVxlan(this.#deps.runner, spec);
  }

  #record(net: NetworkRecord): OverlayRecord {
    if (!net.overlay) throw new Error(`network ${shortId(net.id)} is an overlay without overlay settings`);
    return net.overlay;
  }
}
