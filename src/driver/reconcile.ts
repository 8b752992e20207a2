// Bring the kernel back in line with the store: at start-up, on SIGHUP and
// (if configured) periodically. It re-runs the same idempotent pieces the
// create paths use, so "restore" is not a second implementation:
// - every stored network's bridge exists, is up, has its gateway addresses
//   and MTU (re-created if deleted behind tsnet's back);
// - every stored endpoint's host veth exists and is attached to its bridge
//   (re-attached after a bridge was re-created); one whose veth vanished is
//   dropped, since its container lost the link with it;
// - links carrying tsnet's tag that no record explains are removed;
// - the firewall is rewritten from the records, dropping stale chains.
// One failing network is logged and the rest still reconcile.
import type { Logger } from 'pino';
import type { Firewall } from '../firewall/firewall.js';
import type { Runner } from '../kernel/exec.js';
import { deleteLinks, ipBatch, listAddrs, listLinks, type LinkInfo } from '../kernel/ip.js';
import { createBridge } from '../kernel/link.js';
import { ALIAS_PREFIX, bridgeMac, networkAlias, shortId } from '../kernel/names.js';
import type { Store } from '../store/store.js';
import type { NetworkRecord } from '../store/schema.js';
import { bridgeAddresses, firewallSpec } from './driver.js';
import { toFirewallPorts, type PortPublisher } from '../ports/publisher.js';
import { vxlanOverhead, type OverlayManager, type Underlay } from '../overlay/manager.js';
import { createVxlan } from '../kernel/vxlan.js';

export interface ReconcileReport {
  bridgesCreated: string[];
  bridgesFixed: string[];
  endpointsReattached: string[];
  endpointsDropped: string[];
  orphanLinksRemoved: string[];
  staleChainsRemoved: string[];
  errors: string[];
  ms: number;
}

export interface ReconcileDeps {
  runner: Runner;
  store: Store;
  firewall: Firewall;
  ports: PortPublisher;
  overlay: OverlayManager;
  log: Logger;
  /**
   * The store was restored from an older copy and may lack records for
   * things that still run: repair and add, but remove nothing it does not know.
   */
  keepUnknown?: boolean;
}

export async function reconcile(deps: ReconcileDeps): Promise<ReconcileReport> {
  const started = performance.now();
  const { runner, store, firewall } = deps;
  const log = deps.log.child({ component: 'reconcile' });
  const report: ReconcileReport = {
    bridgesCreated: [],
    bridgesFixed: [],
    endpointsReattached: [],
    endpointsDropped: [],
    orphanLinksRemoved: [],
    staleChainsRemoved: [],
    errors: [],
    ms: 0,
  };
  const state = store.state;
  let changed = false;
  const links = new Map((await listLinks(runner)).map((l) => [l.ifname, l]));

  for (const net of Object.values(state.networks)) {
    try {
      await reconcileBridge(runner, net, links.get(net.bridge), report, log);
    } catch (err) {
      report.errors.push(`network ${shortId(net.id)}: ${(err as Error).message}`);
      log.error({ err, networkId: net.id }, 'could not reconcile network');
    }
  }

  // Overlays: the VXLAN port exists, sends from this host's VTEP address as
  // it is now (a changed TSNET_ADVERTISE_ADDR, or a new address from DHCP,
  // would otherwise leave it sending from one the host no longer has) and is
  // on its bridge; rules are in; the control plane is followed again
  // (forwarding entries come from etcd, where this host registered its
  // current address at start).
  let underlay: Underlay | Error | undefined;
  for (const net of Object.values(state.networks)) {
    const o = net.overlay;
    if (!o) continue;
    try {
      underlay ??= await deps.overlay.underlay().catch((err: unknown) => err as Error);
      const vx = links.get(o.vxlan);
      const data = vx?.linkinfo?.info_data;
      const sendsFrom = (data?.local ?? data?.local6) as string | undefined;
      const moved = !(underlay instanceof Error) && sendsFrom !== undefined && sendsFrom !== underlay.local;
      if (!vx || moved) {
        if (underlay instanceof Error) throw underlay;
        const u = underlay;
        if (moved) {
          log.warn({ networkId: net.id, vxlan: o.vxlan, from: sendsFrom, to: u.local }, "this host's VTEP address changed; re-creating the VXLAN port");
          await deleteLinks(runner, [o.vxlan]);
        } else log.warn({ networkId: net.id, vxlan: o.vxlan }, 'VXLAN device was missing; re-created it');
        await createVxlan(runner, { name: o.vxlan, vni: o.vni, port: deps.overlay.port, local: u.local, dev: u.dev, mtu: net.mtu, bridge: net.bridge, alias: networkAlias(net.id), learning: o.mode === 'static' });
        if (o.local !== u.local || o.underlay !== u.dev) {
          o.local = u.local;
          o.underlay = u.dev;
          changed = true;
        }
        if (net.mtu + vxlanOverhead(u.local) > u.mtu) {
          log.warn({ networkId: net.id, mtu: net.mtu, underlayMtu: u.mtu }, 'the network\'s MTU no longer fits the underlay with VXLAN headers; large packets will be dropped until the network is re-created');
        }
        report.bridgesFixed.push(o.vxlan);
      } else if (vx.master !== net.bridge || !vx.flags.includes('UP')) {
        await ipBatch(runner, [['link', 'set', 'dev', o.vxlan, 'master', net.bridge], ['link', 'set', 'dev', o.vxlan, 'up']]);
        report.bridgesFixed.push(o.vxlan);
      }
      await deps.overlay.addGatewayGuard(net);
      deps.overlay.start(net);
      if (!vx || moved) deps.overlay.reprogram(net);
    } catch (err) {
      report.errors.push(`overlay ${shortId(net.id)}: ${(err as Error).message}`);
      log.error({ err, networkId: net.id }, 'could not reconcile overlay');
    }
  }

  const attach: Array<readonly (string | number)[]> = [];
  const idleCutoff = Date.now() - staleAfterMs();
  for (const ep of Object.values(state.endpoints)) {
    const net = state.networks[ep.networkId];
    const link = links.get(ep.hostVeth);
    // Never joined (or left) and its container end still in the host
    // namespace a while after creation: the container it was made for failed
    // to start or dockerd went away without DeleteEndpoint. Its address was
    // released on dockerd's side already; free the veth, ports and record.
    if (net && link && !ep.sandboxKey && links.has(ep.peerVeth) && Date.parse(ep.createdAt) < idleCutoff && !deps.keepUnknown) {
      report.endpointsDropped.push(ep.id);
      log.warn({ endpointId: ep.id, networkId: ep.networkId, hostVeth: ep.hostVeth, reason: 'never joined' }, 'removing an endpoint no container uses');
      await deps.ports.unpublish(ep, log).catch((err) => report.errors.push(`unpublish ${shortId(ep.id)}: ${(err as Error).message}`));
      await deleteLinks(runner, [ep.hostVeth]).catch((err) => report.errors.push(`endpoint ${shortId(ep.id)}: ${(err as Error).message}`));
      delete state.endpoints[ep.id];
      changed = true;
      continue;
    }
    if (!net || !link) {
      report.endpointsDropped.push(ep.id);
      log.warn({ endpointId: ep.id, networkId: ep.networkId, hostVeth: ep.hostVeth, reason: !net ? 'network gone' : 'veth gone' }, 'dropping endpoint');
      delete state.endpoints[ep.id];
      changed = true;
      continue;
    }
    if (link.master !== net.bridge || !link.flags.includes('UP')) {
      attach.push(['link', 'set', 'dev', ep.hostVeth, 'master', net.bridge], ['link', 'set', 'dev', ep.hostVeth, 'up']);
      report.endpointsReattached.push(ep.id);
    }
  }
  if (attach.length > 0) {
    try {
      await ipBatch(runner, attach);
      log.info({ endpoints: report.endpointsReattached }, 're-attached endpoints to their bridges');
    } catch (err) {
      report.errors.push(`re-attach: ${(err as Error).message}`);
    }
  }

  const orphans = findOrphans([...links.values()], state.networks, state.endpoints);
  if (orphans.length > 0 && deps.keepUnknown) {
    log.warn({ links: orphans }, 'kept links tagged by tsnet that no record explains: the store was restored from an older copy and may have lost their records');
  } else if (orphans.length > 0) {
    // Endpoints first: deleting a bridge does not delete its ports.
    await deleteLinks(runner, orphans).catch((err) => report.errors.push(`orphans: ${(err as Error).message}`));
    report.orphanLinksRemoved.push(...orphans);
    log.warn({ links: orphans }, 'removed links tagged by tsnet that no record explains');
  }

  try {
    const endpoints = Object.values(state.endpoints);
    const { removedChains } = await firewall.syncAll(Object.values(state.networks).map(firewallSpec), endpoints.flatMap(toFirewallPorts), { keepUnknown: deps.keepUnknown ?? false });
    report.staleChainsRemoved.push(...removedChains);
    report.errors.push(...(await deps.ports.restore(endpoints)));
    await deps.overlay.syncRules();
  } catch (err) {
    report.errors.push(`firewall: ${(err as Error).message}`);
    log.error({ err }, 'could not restore the firewall');
  }

  if (changed) await store.commit();
  report.ms = +(performance.now() - started).toFixed(1);
  return report;
}

async function reconcileBridge(runner: Runner, net: NetworkRecord, link: LinkInfo | undefined, report: ReconcileReport, log: Logger): Promise<void> {
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
  for (const a of wanted) if (!have.has(a)) fixes.push(['addr', 'replace', a, 'dev', net.bridge]);
  if (link.mtu !== net.mtu && net.createdBridge) fixes.push(['link', 'set', 'dev', net.bridge, 'mtu', net.mtu]);
  if (!link.flags.includes('UP')) fixes.push(['link', 'set', 'dev', net.bridge, 'up']);
  if (fixes.length > 0) {
    await ipBatch(runner, fixes);
    report.bridgesFixed.push(net.bridge);
    log.warn({ networkId: net.id, bridge: net.bridge, fixes: fixes.map((f) => f.join(' ')) }, 'bridge drifted; fixed it');
  }
}

/** Links carrying tsnet's alias whose network or endpoint has no record, endpoints first. */
/** How long an unjoined endpoint may wait for its Join (test hook: TSNET_TEST_STALE_AFTER_MS). */
function staleAfterMs(): number {
  const v = Number(process.env.TSNET_TEST_STALE_AFTER_MS);
  return Number.isFinite(v) && v > 0 ? v : 120_000;
}

export function findOrphans(links: LinkInfo[], networks: Record<string, unknown>, endpoints: Record<string, unknown>): string[] {
  const eps: string[] = [];
  const nets: string[] = [];
  for (const l of links) {
    const alias = l.ifalias ?? '';
    if (!alias.startsWith(ALIAS_PREFIX)) continue;
    const [, kind, id] = alias.split(':');
    if (!id || !/^[0-9a-f]{64}$/.test(id)) continue;
    if (kind === 'ep' && !(id in endpoints)) eps.push(l.ifname);
    if (kind === 'net' && !(id in networks)) nets.push(l.ifname);
  }
  return [...eps, ...nets];
}
