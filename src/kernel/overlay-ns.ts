// An overlay network's switching half, in a network namespace of its own
// (Docker's overlay driver does the same). Design notes, from the figures in
// docs/benchmarks.md (bench/dataplane.ts):
// - dockerd keeps net.bridge.bridge-nf-call-iptables=1 in the host
//   namespace, and the sysctl is per namespace, so every frame a bridge in the
//   host namespace forwards passes conntrack, iptables and nftables there.
//   Crossing hosts, that put the overlay at 0.75-0.80 of the underlay's CPU
//   per byte. In a namespace of its own (bridge-nf off, no rule, no
//   conntrack) the bridge forwards frames without netfilter.
// - The VXLAN device is created in the host namespace and then moved: its UDP
//   socket stays where the underlay is; only its frames live here.
// - The gateway stays in the host namespace, on the network's bridge there
//   (net.bridge), which keeps one port: a veth to this namespace's bridge, of
//   the same name. Routing, NAT, published ports and the firewall's isolation
//   by bridge kind work as for a bridge network, and only routed traffic
//   (egress, published ports) meets the host's netfilter.
// - The distributed gateway stays local through bridge port isolation: the
//   gateway's port and the VXLAN port are both isolated, and isolated ports
//   never exchange frames, so no host answers for another's gateway and no
//   gateway frame crosses hosts. No per-frame rule is needed for it.
// - Nothing here gets an IPv6 address (addrgenmode none): the namespace only
//   switches frames.
// - The namespace is named (ip netns add) so it outlives tsnet, and is found
//   again by name: tsov- and a hash of the network ID.
import { CommandError, isNotFound, netnsRunner, type Runner } from './exec.js';
import { ipBatch, type LinkInfo } from './ip.js';

export const NETNS_DIR = '/run/netns';

export function netnsPath(name: string): string {
  return `${NETNS_DIR}/${name}`;
}

export interface OverlayNsSpec {
  netns: string;
  /** the bridge's name, in both namespaces */
  bridge: string;
  mtu: number;
  alias: string;
  /** the gateway pair: host end (a port of the host's bridge) and its peer here */
  gatewayHost: string;
  gatewayPort: string;
  /** the host bridge's MAC: the gateway's */
  gatewayMac: string;
}

/** The runner that acts inside an overlay namespace. */
export function overlayRunner(runner: Runner, netns: string): Runner {
  return netnsRunner(runner, netnsPath(netns));
}

/** Named network namespaces, as `ip netns` lists them. */
export async function listNetns(runner: Runner): Promise<string[]> {
  const { stdout } = await runner.run('ip', ['-json', 'netns', 'list']);
  const list = JSON.parse(stdout.trim() || '[]') as Array<{ name: string }>;
  return list.map((n) => n.name);
}

/**
 * Named namespaces this one has links into (veth peers, VXLAN devices made
 * here): the kernel numbers them for it. On a machine shared by several
 * tsnet instances (a lab), these are the overlay namespaces that are ours.
 */
export async function connectedNetns(runner: Runner): Promise<string[]> {
  const { stdout } = await runner.run('ip', ['-json', 'netns', 'list-id']);
  const list = JSON.parse(stdout.trim() || '[]') as Array<{ nsid: number; name?: string }>;
  return list.flatMap((n) => (n.name ? [n.name] : []));
}

export async function deleteNetns(runner: Runner, name: string): Promise<void> {
  try {
    await runner.run('ip', ['netns', 'del', name]);
  } catch (err) {
    if (!isNotFound(err)) throw err;
  }
}

/**
 * A name whose namespace has ended: the file in /run/netns is there, but
 * nothing is mounted on it in this mount namespace, so it cannot be
 * entered. What a namespace named by a plugin whose mounts never reached
 * the host's leaves after the plugin stopped (see netns-dir.ts).
 */
export function isStaleNetns(err: unknown): boolean {
  return err instanceof CommandError && /reassociate to namespace '?ns\/net'? failed: Invalid argument/.test(err.stderr);
}

/** Links inside the namespace, by name; undefined when the namespace is gone. */
export async function nsLinks(runner: Runner, netns: string): Promise<Map<string, LinkInfo> | undefined> {
  try {
    const { stdout } = await overlayRunner(runner, netns).run('ip', ['-json', '-details', 'link', 'show']);
    return new Map((JSON.parse(stdout.trim() || '[]') as LinkInfo[]).map((l) => [l.ifname, l]));
  } catch (err) {
    if (isNotFound(err)) return undefined;
    throw err;
  }
}

/** bridge-nf off (no netfilter for bridged frames here), no IPv6 on anything that appears here. */
const NS_SYSCTLS: Array<[string, string]> = [
  ['net/bridge/bridge-nf-call-iptables', '0'],
  ['net/bridge/bridge-nf-call-ip6tables', '0'],
  ['net/bridge/bridge-nf-call-arptables', '0'],
  ['net/ipv6/conf/all/disable_ipv6', '1'],
  ['net/ipv6/conf/default/disable_ipv6', '1'],
];

/**
 * Create the namespace, its bridge and the gateway pair, the host end on
 * `hostBridge`. `hostPid` names the host namespace from inside (tsnet's own
 * pid). Not atomic: on failure, teardownOverlayNs takes back what exists.
 */
export async function setupOverlayNs(runner: Runner, s: OverlayNsSpec, hostBridge: string, hostPid: number): Promise<void> {
  await runner.run('ip', ['netns', 'add', s.netns]);
  const ns = overlayRunner(runner, s.netns);
  for (const [key, value] of NS_SYSCTLS) {
    // A kernel without IPv6 (or bridge netfilter) has nothing to turn off.
    await ns.writeSysctl(key, value).catch(async (err: unknown) => {
      if ((await ns.readSysctl(key)) !== undefined) throw err;
    });
  }
  await ipBatch(ns, [...nsBridgeLines(s), ...gatewayPortLines(s, hostPid)]);
  await gatewayFdb(runner, s);
  await ipBatch(runner, gatewayHostLines(s, hostBridge));
}

/** The gateway's MAC lives behind its port: the port does not learn (see gatewayPortLines). */
export async function gatewayFdb(runner: Runner, s: OverlayNsSpec): Promise<void> {
  await overlayRunner(runner, s.netns).run('bridge', ['fdb', 'replace', s.gatewayMac, 'dev', s.gatewayPort, 'master', 'static']);
}

export function nsBridgeLines(s: OverlayNsSpec): Array<readonly (string | number)[]> {
  return [
    ['link', 'add', 'name', s.bridge, 'mtu', s.mtu, 'type', 'bridge', 'stp_state', 0, 'forward_delay', 0],
    ['link', 'set', 'dev', s.bridge, 'alias', s.alias, 'addrgenmode', 'none'],
    ['link', 'set', 'dev', s.bridge, 'up'],
  ];
}

/**
 * The gateway pair, made from inside the namespace: the peer goes to the
 * host's (the namespace of `hostPid`). Its port here is isolated (the
 * distributed gateway stays local), gets no unknown unicast and learns
 * nothing: a published port reached from the overlay's own containers comes
 * back through it with the client's source MAC (the host bridge's hairpin,
 * below), which must not teach this bridge that the client lives behind the
 * gateway. The gateway's MAC is a static entry instead (gatewayFdb).
 */
export function gatewayPortLines(s: OverlayNsSpec, hostPid: number): Array<readonly (string | number)[]> {
  return [
    ['link', 'add', 'name', s.gatewayPort, 'mtu', s.mtu, 'type', 'veth', 'peer', 'name', s.gatewayHost, 'mtu', s.mtu, 'netns', hostPid],
    ['link', 'set', 'dev', s.gatewayPort, 'alias', s.alias, 'addrgenmode', 'none', 'master', s.bridge],
    ['link', 'set', 'dev', s.gatewayPort, 'type', 'bridge_slave', 'isolated', 'on', 'learning', 'off', 'flood', 'off'],
    ['link', 'set', 'dev', s.gatewayPort, 'up'],
  ];
}

/**
 * The host end, the host bridge's only port. Hairpin on: a container
 * reaching a published port of its own network comes in through this port
 * and, DNATed (br_netfilter bridges it back), must leave through it again,
 * as bridge.ts sets on container ports of bridge networks. No flooding to
 * it, so no broadcast or unknown frame of the overlay is reflected back in.
 */
export function gatewayHostLines(s: OverlayNsSpec, hostBridge: string): Array<readonly (string | number)[]> {
  return [
    ['link', 'set', 'dev', s.gatewayHost, 'alias', s.alias, 'addrgenmode', 'none', 'master', hostBridge],
    ['link', 'set', 'dev', s.gatewayHost, 'type', 'bridge_slave', 'hairpin', 'on', 'flood', 'off', 'mcast_flood', 'off', 'bcast_flood', 'off'],
    ['link', 'set', 'dev', s.gatewayHost, 'up'],
  ];
}

/** Everything of the namespace and the gateway pair, whatever exists of it; missing parts are no error. */
export async function teardownOverlayNs(runner: Runner, s: Pick<OverlayNsSpec, 'netns' | 'gatewayHost'>, vxlan: string): Promise<void> {
  // The devices first, so the VXLAN socket and the veths are gone when this
  // returns (a namespace's own clean-up runs later, in the kernel's workqueue).
  const ns = overlayRunner(runner, s.netns);
  await ns.run('ip', ['link', 'del', 'dev', vxlan]).catch((err: unknown) => {
    if (!isNotFound(err) && !isStaleNetns(err)) throw err;
  });
  await deleteNetns(runner, s.netns);
  await runner.run('ip', ['link', 'del', 'dev', s.gatewayHost]).catch((err: unknown) => {
    if (!isNotFound(err)) throw err;
  });
}
