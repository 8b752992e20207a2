// The `com.docker.network.portmap` option dockerd sends (protocol.md §3.2):
// [{"Proto": 6, "IP": "", "Port": 80, "HostIP": "", "HostPort": 8080, "HostPortEnd": 8080}]
// One entry per -p binding; -P gives HostPort 0; a host-port range asks the
// driver to pick one free port in it. Checked here before anything is bound.
import { TsnetError, quote } from '../errors.js';
import { parseIp } from '../net/cidr.js';

export type Proto = 'tcp' | 'udp' | 'sctp';

const PROTOS: Record<number, Proto> = { 6: 'tcp', 17: 'udp', 132: 'sctp' };

export interface PortRequest {
  proto: Proto;
  containerPort: number;
  /** '' = the network's default binding address */
  hostIp: string;
  /** 0 = any port from the ephemeral range */
  hostPortStart: number;
  hostPortEnd: number;
}

export const PORTMAP_KEY = 'com.docker.network.portmap';
const MAX_ENTRIES = 4096;

function port(v: unknown, at: string, allowZero: boolean): number {
  if (typeof v !== 'number' || !Number.isInteger(v) || v < (allowZero ? 0 : 1) || v > 65535) {
    throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${at}: ${quote(v)} is not a port number (${allowZero ? 0 : 1}…65535)`);
  }
  return v;
}

export function parsePortmap(raw: unknown): PortRequest[] {
  if (raw === undefined || raw === null) return [];
  if (!Array.isArray(raw)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${PORTMAP_KEY}: expected a list, got ${quote(raw)}`);
  if (raw.length > MAX_ENTRIES) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${PORTMAP_KEY}: ${raw.length} bindings; at most ${MAX_ENTRIES}`);
  return raw.map((e, i) => {
    const at = `${PORTMAP_KEY}[${i}]`;
    if (!e || typeof e !== 'object') throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${at}: expected an object, got ${quote(e)}`);
    const b = e as Record<string, unknown>;
    const proto = PROTOS[b.Proto as number];
    if (!proto) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${at}.Proto: ${quote(b.Proto)} is not 6 (tcp), 17 (udp) or 132 (sctp)`);
    const containerPort = port(b.Port, `${at}.Port`, false);
    const start = port(b.HostPort ?? 0, `${at}.HostPort`, true);
    let end = port(b.HostPortEnd ?? 0, `${at}.HostPortEnd`, true);
    if (end === 0) end = start;
    if (start === 0 && end !== 0) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${at}: HostPortEnd ${end} without a HostPort`);
    if (end < start) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${at}: host port range ${start}-${end} is empty`);
    const hostIp = b.HostIP ?? '';
    if (typeof hostIp !== 'string' || (hostIp !== '' && !parseIp(hostIp))) {
      throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${at}.HostIP: ${quote(hostIp)} is not an IP address`);
    }
    return { proto, containerPort, hostIp, hostPortStart: start, hostPortEnd: end };
  });
}

export function isWildcard(ip: string): boolean {
  return ip === '0.0.0.0' || ip === '::';
}

export function isLoopback(ip: string): boolean {
  return ip.startsWith('127.') || ip === '::1';
}
