// Tunnel addresses: every host of an encrypted overlay has one address on its
// WireGuard interface, derived from its underlay address alone, so static
// peers and cluster members compute each other's without allocating or
// asking anyone. They live in one IPv6 ULA /64 (never routed off the host:
// the interface holds the prefix, and a firewall rule drops anything for it
// that would leave another way):
//   IPv4 underlay a.b.c.d  -> fd74:7377:6700::a.b.c.d (the address in the low 32 bits)
//   IPv6 underlay          -> fd74:7377:6700:0:8xxx:xxxx:xxxx:xxxx (64 bits of its SHA-256,
//                             top bit set, so it never equals an IPv4-derived one)
// The /64 sits outside TSNET_DEFAULT_POOLS' ULA (fd74:736e:6574::/48).
import { createHash } from 'node:crypto';
import { formatIp, parseIp } from './cidr.js';

export const TUNNEL_PREFIX = 'fd74:7377:6700::/64';
const BASE = 0xfd74_7377_6700_0000n << 64n;

export function tunnelAddress(underlay: string): string {
  const ip = parseIp(underlay);
  if (!ip) throw new Error(`not an IP address: ${JSON.stringify(underlay)}`);
  if (!ip.v6) return formatIp({ v6: true, value: BASE | ip.value });
  const h = createHash('sha256').update(formatIp(ip)).digest();
  const low = h.readBigUInt64BE(0) | (1n << 63n);
  return formatIp({ v6: true, value: BASE | low });
}

/** A UDP endpoint as WireGuard writes it: a.b.c.d:port, [v6]:port. */
export function formatEndpoint(addr: string, port: number): string {
  return addr.includes(':') ? `[${addr}]:${port}` : `${addr}:${port}`;
}
