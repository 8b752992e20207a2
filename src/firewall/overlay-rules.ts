// nftables rules that only exist while overlays do.
// - VXLAN is unauthenticated (reliability.md §2 #9): anyone who can send UDP
//   to the VXLAN port can inject frames into an overlay. An input-hook drop
//   admits the port only from member VTEPs (an nft set kept in step with
//   membership) before the kernel decapsulates anything.
// - The distributed gateway: every host answers at the same gateway address
//   with the same MAC. A table of the bridge family keeps that gateway local:
//   ARP for it and frames from its MAC never cross a VXLAN port, so hosts do
//   not answer for each other or see their own MAC come back.
import { TsnetError } from '../errors.js';
import type { Runner } from '../kernel/exec.js';
import { isValidIfName } from '../kernel/names.js';
import { ipFamily, parseIp } from '../net/cidr.js';
import { nftApply, TABLE } from './nft.js';

function ifq(name: string): string {
  if (!isValidIfName(name)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe interface name ${JSON.stringify(name)}`);
  return `"${name}"`;
}

function ip4(addr: string): string {
  const p = parseIp(addr);
  if (!p || p.v6) throw new TsnetError('TSNET_ERR_INTERNAL', `not an IPv4 address: ${JSON.stringify(addr)}`);
  return addr;
}

function vtepAddr(addr: string): string {
  if (!parseIp(addr)) throw new TsnetError('TSNET_ERR_INTERNAL', `not an IP address: ${JSON.stringify(addr)}`);
  return addr;
}

function mac(m: string): string {
  if (!/^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/.test(m)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe MAC ${JSON.stringify(m)}`);
  return m;
}

/**
 * The VXLAN port guard with exactly these peers allowed, per family: a host
 * whose VTEP is IPv4 still drops IPv6 datagrams to the port, and the other
 * way round.
 */
export function renderVxlanGuard(port: number, peers: readonly string[]): string {
  const t = `inet ${TABLE}`;
  const lines = [
    `add table ${t}`,
    `add set ${t} vtep4 { type ipv4_addr; }`,
    `flush set ${t} vtep4`,
    `add set ${t} vtep6 { type ipv6_addr; }`,
    `flush set ${t} vtep6`,
    `add chain ${t} vxlan_in { type filter hook input priority filter - 1; policy accept; }`,
    `flush chain ${t} vxlan_in`,
    `add rule ${t} vxlan_in udp dport ${Number(port)} ip saddr != @vtep4 counter drop`,
    `add rule ${t} vxlan_in udp dport ${Number(port)} ip6 saddr != @vtep6 counter drop`,
  ];
  const uniq = [...new Set(peers)].map(vtepAddr);
  for (const [set, members] of [['vtep4', uniq.filter((p) => ipFamily(p) === 4)], ['vtep6', uniq.filter((p) => ipFamily(p) === 6)]] as const) {
    if (members.length > 0) lines.push(`add element ${t} ${set} { ${members.join(', ')} }`);
  }
  return `${lines.join('\n')}\n`;
}

export function renderVxlanGuardRemoval(): string {
  const t = `inet ${TABLE}`;
  return [
    `add table ${t}`,
    `add chain ${t} vxlan_in`,
    `delete chain ${t} vxlan_in`,
    `add set ${t} vtep4 { type ipv4_addr; }`,
    `delete set ${t} vtep4`,
    `add set ${t} vtep6 { type ipv6_addr; }`,
    `delete set ${t} vtep6`,
    '',
  ].join('\n');
}

export interface GatewayGuard {
  sid: string;
  vxlan: string;
  gatewayIp?: string;
  gatewayMac: string;
}

/** One chain per overlay network in `table bridge tsnet`, dispatched by the VXLAN port. */
export function renderGatewayGuard(g: GatewayGuard): string {
  const t = `bridge ${TABLE}`;
  const chain = `g-${g.sid}`;
  const vx = ifq(g.vxlan);
  const lines = [
    `add table ${t}`,
    `add map ${t} vx_out { type ifname : verdict; }`,
    `add map ${t} vx_in { type ifname : verdict; }`,
    `add chain ${t} forward { type filter hook forward priority 0; policy accept; }`,
    `flush chain ${t} forward`,
    `add rule ${t} forward oifname vmap @vx_out`,
    `add rule ${t} forward iifname vmap @vx_in`,
    `add chain ${t} output { type filter hook output priority 0; policy accept; }`,
    `flush chain ${t} output`,
    `add rule ${t} output oifname vmap @vx_out`,
    `add chain ${t} ${chain}-out`,
    `flush chain ${t} ${chain}-out`,
    `add rule ${t} ${chain}-out ether saddr ${mac(g.gatewayMac)} drop`,
    ...(g.gatewayIp ? [`add rule ${t} ${chain}-out arp operation request arp daddr ip ${ip4(g.gatewayIp)} drop`] : []),
    `add chain ${t} ${chain}-in`,
    `flush chain ${t} ${chain}-in`,
    `add rule ${t} ${chain}-in ether saddr ${mac(g.gatewayMac)} drop`,
    `add element ${t} vx_out { ${vx} : jump ${chain}-out }`,
    `add element ${t} vx_in { ${vx} : jump ${chain}-in }`,
  ];
  return `${lines.join('\n')}\n`;
}

export function renderGatewayGuardRemoval(sid: string, vxlan: string, last: boolean): string {
  const t = `bridge ${TABLE}`;
  if (last) return `add table ${t}\ndelete table ${t}\n`;
  const chain = `g-${sid}`;
  const vx = ifq(vxlan);
  return [
    `add table ${t}`,
    `add map ${t} vx_out { type ifname : verdict; }`,
    `add map ${t} vx_in { type ifname : verdict; }`,
    `add chain ${t} ${chain}-out`,
    `add chain ${t} ${chain}-in`,
    `add element ${t} vx_out { ${vx} : jump ${chain}-out }`,
    `add element ${t} vx_in { ${vx} : jump ${chain}-in }`,
    `delete element ${t} vx_out { ${vx} }`,
    `delete element ${t} vx_in { ${vx} }`,
    `flush chain ${t} ${chain}-out`,
    `delete chain ${t} ${chain}-out`,
    `flush chain ${t} ${chain}-in`,
    `delete chain ${t} ${chain}-in`,
    '',
  ].join('\n');
}

export async function applyOverlayRules(runner: Runner, script: string): Promise<void> {
  await nftApply(runner, script);
}
