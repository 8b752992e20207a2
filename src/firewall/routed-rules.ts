// nftables rules of networks routed across hosts (tsnet.mode=routed, and
// overlays whose same-LAN members are routed to directly).
// - Peer sources: the blocks of other hosts a network admits from the LAN
//   side (declared with the network in nft.ts; their elements are written
//   here, whole, each time the cluster's view changes). One transaction:
//   flush and re-add, so no packet sees a half-written set.
// - The guard: a container of another network (tsnet's or Docker's, any
//   bridge) must not reach a routed network's blocks on other hosts. Those
//   addresses sit behind the uplink, where the per-bridge isolation (oifkind
//   "bridge") does not see them. A base chain of its own, before tsnet's
//   forward chain, drops traffic from any bridge but the network's own to
//   the network's subnet; it exists while routed networks do. (The receiving
//   host drops it too, since it admits only its peers' blocks; this keeps it
//   from leaving at all.) One rule per routed network: there are few, and a
//   verdict map keyed by interval cannot be declared before its chains in one
//   transaction by nft 1.0.6.
import { TsnetError } from '../errors.js';
import { isValidIfName } from '../kernel/names.js';
import { parsePrefix } from '../net/cidr.js';
import { TABLE, peerSets, type NftNetwork } from './nft.js';

export const GUARD_CHAIN = 'routed_guard';

function cidr(text: string, v6: boolean): string {
  const p = parsePrefix(text, false);
  if (!p || p.v6 !== v6) throw new TsnetError('TSNET_ERR_INTERNAL', `not an IPv${v6 ? 6 : 4} CIDR: ${JSON.stringify(text)}`);
  return text;
}

function ifq(name: string): string {
  if (!isValidIfName(name)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe interface name ${JSON.stringify(name)}`);
  return `"${name}"`;
}

/** Replace the elements of a network's peer sets with exactly these prefixes (non-overlapping). */
export function renderPeerSources(sid: string, v4: readonly string[], v6: readonly string[]): string {
  const t = `inet ${TABLE}`;
  const s = peerSets(sid);
  const lines = [
    `add table ${t}`,
    `add set ${t} ${s.v4} { type ipv4_addr; flags interval; }`,
    `flush set ${t} ${s.v4}`,
    `add set ${t} ${s.v6} { type ipv6_addr; flags interval; }`,
    `flush set ${t} ${s.v6}`,
  ];
  if (v4.length > 0) lines.push(`add element ${t} ${s.v4} { ${v4.map((c) => cidr(c, false)).join(', ')} }`);
  if (v6.length > 0) lines.push(`add element ${t} ${s.v6} { ${v6.map((c) => cidr(c, true)).join(', ')} }`);
  return `${lines.join('\n')}\n`;
}

const GUARD_SPEC = '{ type filter hook forward priority filter - 2; policy accept; }';

/** The guard for these networks (the routed ones among them); its removal when there are none. */
export function renderRoutedGuard(networks: readonly NftNetwork[]): string {
  const t = `inet ${TABLE}`;
  const routed = networks.filter((n) => n.routed);
  if (routed.length === 0) return [`add table ${t}`, `add chain ${t} ${GUARD_CHAIN} ${GUARD_SPEC}`, `flush chain ${t} ${GUARD_CHAIN}`, `delete chain ${t} ${GUARD_CHAIN}`, ''].join('\n');
  const lines = [`add table ${t}`, `add chain ${t} ${GUARD_CHAIN} ${GUARD_SPEC}`, `flush chain ${t} ${GUARD_CHAIN}`];
  for (const n of [...routed].sort((a, b) => a.bridge.localeCompare(b.bridge))) {
    const br = ifq(n.bridge);
    for (const s of n.subnets4) lines.push(`add rule ${t} ${GUARD_CHAIN} meta iifkind "bridge" iifname != ${br} ip daddr ${cidr(s, false)} drop`);
    for (const s of n.subnets6) lines.push(`add rule ${t} ${GUARD_CHAIN} meta iifkind "bridge" iifname != ${br} ip6 daddr ${cidr(s, true)} drop`);
  }
  return `${lines.join('\n')}\n`;
}
