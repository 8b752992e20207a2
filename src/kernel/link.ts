// Bridges and veth pairs. Design notes:
// - A bridge gets an explicit MAC. Otherwise Linux gives it the lowest MAC of
//   its ports, which changes as containers come and go and leaves stale
//   gateway entries in every container's ARP cache.
// - STP stays off: a port is forwarding the moment it is up, so the
//   unsolicited ARPs dockerd sends right after Join are not lost.
// - Host-side veths get no IPv6 link-local address and accept_ra=0: a bridge
//   port needs no L3, and a container must not be able to configure the host
//   with router advertisements (CVE-2020-13401 and friends).
// - Every link carries tsnet's tag in its alias so reconcile can find it.
import { TsnetError } from '../errors.js';
import { ifSysctl, type Runner } from './exec.js';
import { getLink, ipBatch, deleteLink, ownAddrLine, type LinkInfo } from './ip.js';

export interface BridgeSpec {
  name: string;
  mac: string;
  mtu: number;
  alias: string;
  /** CIDR addresses for the bridge (gateways) */
  addresses: string[];
  /** no IPv6 on the bridge at all (v4-only network) */
  disableIpv6: boolean;
}

export async function createBridge(runner: Runner, spec: BridgeSpec): Promise<void> {
  await ipBatch(runner, [
    ['link', 'add', 'name', spec.name, 'address', spec.mac, 'mtu', spec.mtu, 'type', 'bridge', 'stp_state', 0, 'forward_delay', 0],
    ['link', 'set', 'dev', spec.name, 'alias', spec.alias],
  ]);
  // sysctls before any address: no link-local, no RA processing.
  await setBridgeSysctls(runner, spec);
  await ipBatch(runner, [
    ...spec.addresses.map((a) => ownAddrLine('add', a, spec.name)),
    ['link', 'set', 'dev', spec.name, 'up'],
  ]);
}

export async function setBridgeSysctls(runner: Runner, spec: Pick<BridgeSpec, 'name' | 'disableIpv6'>): Promise<void> {
  await writeIfPresent(runner, ifSysctl('ipv6', spec.name, 'accept_ra'), '0');
  if (spec.disableIpv6) await writeIfPresent(runner, ifSysctl('ipv6', spec.name, 'disable_ipv6'), '1');
}

async function writeIfPresent(runner: Runner, key: string, value: string): Promise<void> {
  try {
    await runner.writeSysctl(key, value);
  } catch (err) {
    // IPv6 may be disabled on the host (no /proc/sys/net/ipv6); nothing to protect then.
    if ((await runner.readSysctl(key)) !== undefined) throw err;
  }
}

/** Check an existing link is a bridge we may use; returns why not, or undefined. */
export function bridgeIncompatibility(link: LinkInfo): string | undefined {
  if (link.linkinfo?.info_kind !== 'bridge') return `${link.ifname} exists and is a ${link.linkinfo?.info_kind ?? 'non-bridge'} device`;
  return undefined;
}

export interface VethSpec {
  hostName: string;
  peerName: string;
  peerMac: string;
  mtu: number;
  bridge: string;
  alias: string;
  hairpin: boolean;
  /** bridge port isolation (ICC off at layer 2) */
  isolated: boolean;
  /**
   * the endpoint has no IPv6 address: IPv6 off on the host end, as dockerd
   * 26.0.2+ turns it off on the container end (CVE-2024-32473). The
   * container end's setting does not survive its move to the sandbox, so
   * that one is dockerd's to set.
   */
  disableIpv6?: boolean;
}

export async function createVeth(runner: Runner, spec: VethSpec): Promise<void> {
  // addrgenmode none keeps the kernel from giving the host end an IPv6
  // link-local address when it comes up; one ip process does all of it.
  await ipBatch(runner, [
    ['link', 'add', 'name', spec.hostName, 'mtu', spec.mtu, 'type', 'veth', 'peer', 'name', spec.peerName, 'mtu', spec.mtu, 'address', spec.peerMac],
    ['link', 'set', 'dev', spec.hostName, 'alias', spec.alias, 'addrgenmode', 'none', 'master', spec.bridge],
    ['link', 'set', 'dev', spec.hostName, 'type', 'bridge_slave', 'hairpin', spec.hairpin ? 'on' : 'off', 'isolated', spec.isolated ? 'on' : 'off', 'learning', 'on'],
    ['link', 'set', 'dev', spec.hostName, 'up'],
  ]);
  await writeIfPresent(runner, ifSysctl('ipv6', spec.hostName, 'accept_ra'), '0');
  if (spec.disableIpv6) await writeIfPresent(runner, ifSysctl('ipv6', spec.hostName, 'disable_ipv6'), '1');
}

/**
 * Create a link with rollback if the first command succeeded but a later one
 * failed. A device of that name that was there before belongs to someone
 * else (the create failed on it): it is left alone, whatever it is.
 */
export async function withLinkRollback(runner: Runner, name: string, create: () => Promise<void>): Promise<void> {
  const before = await getLink(runner, name);
  try {
    await create();
  } catch (err) {
    if (!before) await deleteLink(runner, name).catch(() => undefined);
    throw err;
  }
}

export async function requireLink(runner: Runner, name: string): Promise<LinkInfo> {
  const link = await getLink(runner, name);
  if (!link) throw new TsnetError('TSNET_ERR_CMD_FAILED', `link ${name} is missing`);
  return link;
}

export async function setLinkUp(runner: Runner, name: string): Promise<void> {
  await ipBatch(runner, [['link', 'set', 'dev', name, 'up']]);
}
