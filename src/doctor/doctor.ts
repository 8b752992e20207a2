// tsnetctl doctor, the reading half: runs inside tsnet (which has the
// host's network namespace, CAP_NET_ADMIN, /proc/sys and the store, also as
// a managed plugin), reads the host through a Runner of its own and hands
// what it read to checks.ts. Read-only: it never changes the host.
import { CommandError, type Runner } from '../kernel/exec.js';
import { getLink, listLinks } from '../kernel/ip.js';
import { overlayNames } from '../kernel/names.js';
import { nsLinks, overlayRunner } from '../kernel/overlay-ns.js';
import { readNetnsDir } from '../kernel/netns-dir.js';
import type { Store } from '../store/store.js';
import { vxlanOverhead, type OverlayManager } from '../overlay/manager.js';
import type { ClusterRegistry } from '../cluster/registry.js';
import { CHAIN as TSNET_FORWARD } from '../firewall/iptables.js';
import { TABLE } from '../firewall/nft.js';
import { judgeEtcd, judgeHolders, judgeNames, judgeNetnsDir, judgeForward, judgeLinks, judgeMtu, judgeNft, judgeRouted, judgeStore, judgeSysctls, judgeVxlan, parseNftJson, type Finding, type PeerProbe } from './checks.js';
import { isRouted, type RoutedManager } from '../routed/manager.js';
import { ifSysctl } from '../kernel/exec.js';

export interface DoctorDeps {
  runner: Runner;
  store: Store;
  overlay: OverlayManager;
  /** routed networks' runtime (their peers as it last saw them) */
  routed?: RoutedManager;
  registry: () => ClusterRegistry | undefined;
  etcdConfigured: boolean;
  vxlanPort: number;
  loaded: { source: string; problems: string[] };
  hold: () => string | undefined;
  /** names across hosts (dns/service.ts status); undefined: not loaded or both off */
  names?: () => Promise<Parameters<typeof judgeNames>[0]>;
  /** TSNET_NETNS_DIR (the managed plugin): where /run/netns must lead, on a shared mount */
  netnsDir?: string | undefined;
}

async function text(runner: Runner, cmd: string, args: string[]): Promise<string | undefined> {
  try {
    return (await runner.run(cmd, args, { timeoutMs: 5000 })).stdout;
  } catch {
    return undefined;
  }
}

/** iptables-nft creates the table it lists: look with nft first, so the doctor stays read-only. */
async function readForward(runner: Runner): Promise<{ forward: string | undefined; chain: string | undefined }> {
  const version = await text(runner, 'iptables', ['-V']);
  if (version === undefined) return { forward: undefined, chain: undefined };
  if (version.includes('nf_tables') && (await text(runner, 'nft', ['list', 'table', 'ip', 'filter'])) === undefined) return { forward: undefined, chain: undefined };
  return { forward: await text(runner, 'iptables', ['-w', '-S', 'FORWARD']), chain: await text(runner, 'iptables', ['-w', '-S', TSNET_FORWARD]) };
}

export async function runDoctor(deps: DoctorDeps): Promise<Finding[]> {
  const { runner, store } = deps;
  const state = store.state;
  const findings: Finding[] = [];
  const attempt = async (check: string, fn: () => Promise<Finding[]>): Promise<void> => {
    try {
      findings.push(...(await fn()));
    } catch (err) {
      findings.push({ level: 'fail', check, message: `could not check: ${(err as Error).message}`, fix: 'see tsnet\'s log' });
    }
  };
  const { forward, chain } = await readForward(runner);
  await attempt('sysctl', async () =>
    judgeSysctls(
      state,
      {
        ipForward: await runner.readSysctl('net/ipv4/ip_forward'),
        ipv6Forwarding: await runner.readSysctl('net/ipv6/conf/all/forwarding'),
        bridgeNfCall: await runner.readSysctl('net/bridge/bridge-nf-call-iptables'),
      },
      forward === undefined ? undefined : forward.includes(`-A FORWARD -j ${TSNET_FORWARD}`),
    ),
  );
  await attempt('forward', async () => judgeForward(state, forward, chain));
  const nftText = await text(runner, 'nft', ['-j', 'list', 'table', 'inet', TABLE]);
  const nft = nftText === undefined ? undefined : parseNftJson(nftText);
  await attempt('nftables', async () => judgeNft(state, nft));
  let links: Awaited<ReturnType<typeof listLinks>> = [];
  await attempt('links', async () => {
    links = await listLinks(runner);
    // An overlay's VXLAN port and endpoint veths live in its namespace, on a
    // bridge named like the host's; its bridge there is checked by name.
    const inNs: typeof links = [];
    for (const n of Object.values(state.networks)) {
      if (!n.overlay) continue;
      const ns = await nsLinks(runner, overlayNames(n.id).netns).catch(() => undefined);
      if (!ns) continue;
      for (const l of ns.values()) if (l.ifname !== n.bridge && l.ifname !== 'lo') inNs.push(l);
    }
    return judgeLinks(state, [...links, ...inNs]);
  });
  const overlays = Object.values(state.networks).filter((n) => n.overlay);
  if (overlays.length > 0) {
    await attempt('mtu', async () => {
      const u = await deps.overlay.underlay().catch((err: unknown) => (err as Error).message);
      return judgeMtu(state, typeof u === 'string' ? u : { dev: u.dev, mtu: u.mtu, overhead: vxlanOverhead(u.local) });
    });
    await attempt('vxlan', async () => {
      const ports: Record<string, number | undefined> = {};
      for (const n of overlays) {
        const l = await getLink(overlayRunner(runner, overlayNames(n.id).netns), n.overlay!.vxlan).catch(() => undefined);
        const p = l?.linkinfo?.info_data?.port;
        ports[n.overlay!.vxlan] = typeof p === 'number' ? p : undefined;
      }
      const probes: PeerProbe[] = [];
      const peers = new Map<string, string>();
      for (const f of deps.overlay.forwarding()) for (const p of f.peerList) peers.set(p, f.networkId);
      for (const n of overlays) for (const p of n.overlay!.peers) if (!peers.has(p)) peers.set(p, n.id);
      // In parallel: a silent peer costs one timeout, not one each.
      await Promise.all(
        [...peers].map(async ([peer, networkId]) => {
          const answers = await runner.run('ping', [peer.includes(':') ? '-6' : '-4', '-c', '1', '-W', '1', peer], { timeoutMs: 3000 }).then(
            () => true,
            (err: unknown) => (err instanceof CommandError && /command not found/.test(err.stderr) ? undefined : false),
          );
          probes.push({ networkId, peer, answers });
        }),
      );
      return judgeVxlan(state, deps.vxlanPort, ports, nft !== undefined && 'vxlan_in' in nft.rules, probes);
    });
  }
  const netnsDir = deps.netnsDir;
  if (netnsDir) await attempt('netns', async () => judgeNetnsDir(await readNetnsDir(netnsDir), overlays.length));
  const routed = Object.values(state.networks).filter(isRouted);
  const runtime = deps.routed;
  if (routed.length > 0 && runtime) {
    await attempt('routed', async () =>
      judgeRouted(
        await Promise.all(
          routed.map(async (net) => {
            const { peers, known } = runtime.status(net);
            return {
              net,
              proxyArp: await runner.readSysctl(ifSysctl('ipv4', net.bridge, 'proxy_arp')),
              proxyNdp: await runner.readSysctl(ifSysctl('ipv6', net.bridge, 'proxy_ndp')),
              ipForward: await runner.readSysctl('net/ipv4/ip_forward'),
              ipv6Forwarding: await runner.readSysctl('net/ipv6/conf/all/forwarding'),
              peers: known ? peers : undefined,
            };
          }),
        ),
      ),
    );
  }
  const reg = deps.registry();
  await attempt('etcd', async () => judgeEtcd(deps.etcdConfigured, reg ? await reg.health() : undefined));
  if (reg?.available) await attempt('holders', async () => judgeHolders(await reg.holders()));
  await attempt('names', async () => judgeNames(await deps.names?.(), Object.values(state.networks).filter((n) => n.overlay?.mode === 'cluster').length));
  findings.push(...judgeStore({ source: deps.loaded.source, problems: deps.loaded.problems, hold: deps.hold(), lastWriteError: store.lastWriteError, writeFailures: store.writeFailures }));
  return findings;
}
