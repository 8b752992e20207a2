// Turning CreateNetwork's IPv4Data/IPv6Data into checked subnet records.
import { TsnetError, quote } from '../errors.js';
import type { IPAMData } from '../api/types.js';
import { contains, formatIp, formatPrefix, overlaps, parseCidrAddress, parsePrefix, type Prefix } from '../net/cidr.js';
import type { NetworkRecord, SubnetRecord } from '../store/schema.js';

export function parseSubnets(data: IPAMData[] | null | undefined, v6: boolean, field: string): SubnetRecord[] {
  const list = data ?? [];
  if (list.length > 1) {
    throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${field}: a tsnet bridge network takes one ${v6 ? 'IPv6' : 'IPv4'} subnet, got ${list.length}`);
  }
  return list.map((d, i) => {
    const at = `${field}[${i}]`;
    const pool = parsePrefix(d.Pool, false);
    if (!pool || pool.v6 !== v6) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${at}.Pool: ${quote(d.Pool)} is not an ${v6 ? 'IPv6' : 'IPv4'} CIDR`);
    if (pool.bits === 0) throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${at}.Pool: ${quote(d.Pool)} covers every address`);
    const rec: SubnetRecord = { pool: formatPrefix(pool), aux: {} };
    if (d.Gateway) {
      const gw = parseCidrAddress(d.Gateway);
      if (!gw || !contains(pool, gw.ip)) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${at}.Gateway: ${quote(d.Gateway)} is not an address in ${formatPrefix(pool)} (CIDR form)`);
      }
      rec.gateway = `${formatIp(gw.ip)}/${pool.bits}`;
    }
    for (const [name, value] of Object.entries(d.AuxAddresses ?? {})) {
      const aux = parseCidrAddress(value) ?? (() => {
        const ip = parsePrefix(`${value}/${v6 ? 128 : 32}`, false);
        return ip ? { ip: { v6: ip.v6, value: ip.base }, prefix: ip } : undefined;
      })();
      if (!aux || !contains(pool, aux.ip)) {
        throw new TsnetError('TSNET_ERR_INVALID_REQUEST', `${at}.AuxAddresses[${quote(name, 40)}]: ${quote(value)} is not an address in ${formatPrefix(pool)}`);
      }
      rec.aux[name.slice(0, 256)] = formatIp(aux.ip);
    }
    return rec;
  });
}

export function subnetPrefixes(net: Pick<NetworkRecord, 'ipv4' | 'ipv6'>): Prefix[] {
  return [...net.ipv4, ...net.ipv6].map((s) => parsePrefix(s.pool)).filter((p): p is Prefix => p !== undefined);
}

/** Another tsnet network whose subnet overlaps: two bridges routing one subnet would break both. */
export function findOverlap(candidate: Prefix[], others: NetworkRecord[]): { net: NetworkRecord; a: Prefix; b: Prefix } | undefined {
  for (const net of others) {
    for (const b of subnetPrefixes(net)) {
      for (const a of candidate) if (overlaps(a, b)) return { net, a, b };
    }
  }
  return undefined;
}

/** Plain IP of a CIDR-form gateway. */
export function gatewayIp(cidr: string | undefined): string | undefined {
  if (!cidr) return undefined;
  return cidr.slice(0, cidr.indexOf('/'));
}
