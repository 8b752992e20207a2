// nftables rules that exist while the WireGuard interface does.
// - The WireGuard port admits only peers' underlay addresses. WireGuard
//   drops anything not from a configured key by itself; the set keeps the
//   handshake work (and its cookie replies) for hosts tsnet knows.
// - Encrypted traffic never leaves in clear: a packet for a tunnel address
//   that would leave by any interface but the tunnel (the device gone, a
//   wireguard-go that died and took its route along) is dropped, not sent
//   to the default route.
// - Nothing enters an encrypted overlay from outside the tunnel: VXLAN of an
//   encrypted network's VNI arriving by any other interface, and packets
//   claiming a tunnel address as their source, are dropped. (All VXLAN
//   devices of one family share the kernel's socket, and the kernel picks
//   the device by VNI alone, whatever address the packet was sent to.)
import { TsnetError } from '../errors.js';
import { isValidIfName } from '../kernel/names.js';
import { ipFamily, parseIp, parsePrefix } from '../net/cidr.js';
import { TABLE } from './nft.js';

export interface WireGuardGuard {
  iface: string;
  port: number;
  vxlanPort: number;
  /** the tunnel prefix */
  prefix: string;
  /** underlay addresses of the WireGuard peers */
  peers: readonly string[];
  /** VNIs of the encrypted overlays */
  vnis: readonly number[];
}

function addr(a: string): string {
  if (!parseIp(a)) throw new TsnetError('TSNET_ERR_INTERNAL', `not an IP address: ${JSON.stringify(a)}`);
  return a;
}

export function renderWireGuardGuard(g: WireGuardGuard): string {
  if (!isValidIfName(g.iface)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe interface name ${JSON.stringify(g.iface)}`);
  if (!parsePrefix(g.prefix)?.v6) throw new TsnetError('TSNET_ERR_INTERNAL', `not an IPv6 prefix: ${JSON.stringify(g.prefix)}`);
  const t = `inet ${TABLE}`;
  const dev = `"${g.iface}"`;
  const port = Number(g.port);
  const lines = [
    `add table ${t}`,
    `add set ${t} wgpeer4 { type ipv4_addr; }`,
    `flush set ${t} wgpeer4`,
    `add set ${t} wgpeer6 { type ipv6_addr; }`,
    `flush set ${t} wgpeer6`,
    `add chain ${t} wg_in { type filter hook input priority filter - 1; policy accept; }`,
    `flush chain ${t} wg_in`,
    `add rule ${t} wg_in udp dport ${port} ip saddr != @wgpeer4 counter drop`,
    `add rule ${t} wg_in udp dport ${port} ip6 saddr != @wgpeer6 counter drop`,
    `add rule ${t} wg_in iifname != ${dev} ip6 saddr ${g.prefix} counter drop`,
  ];
  const vnis = [...new Set(g.vnis)].map((v) => {
    if (!Number.isInteger(v) || v < 1 || v > 16777215) throw new TsnetError('TSNET_ERR_INTERNAL', `not a VNI: ${v}`);
    return v;
  });
  if (vnis.length > 0) {
    // The VNI is the 24 bits after the UDP header (8 bytes) and the VXLAN flags word (4).
    lines.push(`add rule ${t} wg_in iifname != ${dev} udp dport ${Number(g.vxlanPort)} @th,96,24 { ${vnis.join(', ')} } counter drop`);
  }
  lines.push(
    `add chain ${t} wg_out { type filter hook output priority filter - 1; policy accept; }`,
    `flush chain ${t} wg_out`,
    `add rule ${t} wg_out ip6 daddr ${g.prefix} oifname != ${dev} counter drop`,
  );
  const uniq = [...new Set(g.peers)].map(addr);
  for (const [set, members] of [['wgpeer4', uniq.filter((p) => ipFamily(p) === 4)], ['wgpeer6', uniq.filter((p) => ipFamily(p) === 6)]] as const) {
    if (members.length > 0) lines.push(`add element ${t} ${set} { ${members.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

export function renderWireGuardGuardRemoval(): string {
  const t = `inet ${TABLE}`;
  return [
    `add table ${t}`,
    `add chain ${t} wg_in`,
    `delete chain ${t} wg_in`,
    `add chain ${t} wg_out`,
    `delete chain ${t} wg_out`,
    `add set ${t} wgpeer4 { type ipv4_addr; }`,
    `delete set ${t} wgpeer4`,
    `add set ${t} wgpeer6 { type ipv6_addr; }`,
    `delete set ${t} wgpeer6`,
    '',
  ].join('\n');
}
