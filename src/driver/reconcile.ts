// Bring the kernel back in line with the store: at start-up, on SIGHUP and
// (if configured) periodically. It re-runs the same idempotent pieces the
// create paths use, so "restore" is not a second implementation:
// - every stored network's devices are put back by its mode (modes/*.ts:
//   a bridge re-created with its addresses and MTU, a VXLAN port re-made);
// - every stored endpoint's host side is back in place (a veth re-attached
//   after its bridge was re-created); one whose veth vanished is dropped,
//   since its container lost the link with it;
// - links carrying tsnet's tag that no record explains are removed;
// - the firewall is rewritten from the records, dropping stale chains.
// One failing network is logged and the rest still reconcile.
import type { Logger } from 'pino';
import type { Firewall } from '../firewall/firewall.js';
import type { Runner } from '../kernel/exec.js';
import { deleteLinks, ipBatch, listLinks, type LinkInfo } from '../kernel/ip.js';
import { ALIAS_PREFIX, shortId } from '../kernel/names.js';
import type { Store } from '../store/store.js';
import { toFirewallPorts, type PortPublisher } from '../ports/publisher.js';
import type { ReconcileRun } from './modes/mode.js';
import type { ModeRegistry } from './modes/registry.js';

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
  modes: ModeRegistry;
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

  const memo = new Map<string, Promise<unknown>>();
  const run: ReconcileRun = {
    links,
    report,
    log,
    markChanged: () => void (changed = true),
    once: <T>(key: string, fn: () => Promise<T>): Promise<T> => {
      if (!memo.has(key)) memo.set(key, fn());
      return memo.get(key) as Promise<T>;
    },
  };
  for (const net of Object.values(state.networks)) {
    try {
      await deps.modes.of(net).reconcileNetwork(net, run);
    } catch (err) {
      report.errors.push(`network ${shortId(net.id)}: ${(err as Error).message}`);
      log.error({ err, networkId: net.id }, 'could not reconcile network');
    }
  }

  const attach: Array<readonly (string | number)[]> = [];
  const idleCutoff = Date.now() - staleAfterMs();
  for (const ep of Object.values(state.endpoints)) {
    const net = state.networks[ep.networkId];
    const mode = deps.modes.of(net);
    const presence = net ? mode.endpointPresence(net, ep, links) : 'gone';
    // Never joined (or left) and its container end still in the host
    // namespace a while after creation: the container it was made for failed
    // to start or dockerd went away without DeleteEndpoint. Its address was
    // released on dockerd's side already; free the devices, ports and record.
    if (net && presence === 'host' && !ep.sandboxKey && Date.parse(ep.createdAt) < idleCutoff && !deps.keepUnknown) {
      report.endpointsDropped.push(ep.id);
      log.warn({ endpointId: ep.id, networkId: ep.networkId, hostVeth: ep.hostVeth, reason: 'never joined' }, 'removing an endpoint no container uses');
      await deps.ports.unpublish(ep, log).catch((err) => report.errors.push(`unpublish ${shortId(ep.id)}: ${(err as Error).message}`));
      await mode.deleteEndpoint(net, ep).catch((err) => report.errors.push(`endpoint ${shortId(ep.id)}: ${(err as Error).message}`));
      delete state.endpoints[ep.id];
      changed = true;
      continue;
    }
    if (!net || presence === 'gone') {
      report.endpointsDropped.push(ep.id);
      log.warn({ endpointId: ep.id, networkId: ep.networkId, hostVeth: ep.hostVeth, reason: !net ? 'network gone' : 'veth gone' }, 'dropping endpoint');
      delete state.endpoints[ep.id];
      changed = true;
      continue;
    }
    const link = links.get(ep.hostVeth);
    const fixes = link ? mode.reconcileEndpoint(net, ep, link) : [];
    if (fixes.length > 0) {
      attach.push(...fixes);
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
    const specs = Object.values(state.networks).flatMap((n) => deps.modes.of(n).firewall(n) ?? []);
    const { removedChains } = await firewall.syncAll(specs, endpoints.flatMap(toFirewallPorts), { keepUnknown: deps.keepUnknown ?? false });
    report.staleChainsRemoved.push(...removedChains);
    report.errors.push(...(await deps.ports.restore(endpoints)));
    for (const m of deps.modes.all()) await m.reconcileHost?.(run);
  } catch (err) {
    report.errors.push(`firewall: ${(err as Error).message}`);
    log.error({ err }, 'could not restore the firewall');
  }

  if (changed) await store.commit();
  report.ms = +(performance.now() - started).toFixed(1);
  return report;
}

/** How long an unjoined endpoint may wait for its Join (test hook: TSNET_TEST_STALE_AFTER_MS). */
function staleAfterMs(): number {
  const v = Number(process.env.TSNET_TEST_STALE_AFTER_MS);
  return Number.isFinite(v) && v > 0 ? v : 120_000;
}

/** Links carrying tsnet's alias whose network or endpoint has no record, endpoints first. */
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
