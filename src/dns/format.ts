// tsnetctl names, for people (the CLI loads this, not the DNS stack).
import type { NamesStatus } from './service.js';

/** tsnetctl names, for people: how dockerd is followed, where DNS listens, then one line per name. */
export function formatNames(s: NamesStatus): string {
  const lines: string[] = [];
  const d = s.dockerd;
  if (!d) lines.push('dockerd: not followed (TSNET_DOCKER_HOST=off)');
  else if (d.connected) lines.push(`dockerd: following ${d.socket} (dockerd ${d.dockerd}, API ${d.apiVersion})`);
  else lines.push(`dockerd: not connected to ${d.socket}${d.lastError ? `: ${d.lastError}` : ''}`);
  if (!s.dns.enabled) lines.push('dns: off (TSNET_DNS=off)');
  else if (s.dns.listening.length === 0) lines.push('dns: no cluster overlay to answer on');
  for (const l of s.dns.listening) lines.push(`dns: ${l.address}:${s.dns.port} for network ${l.network.slice(0, 12)}${l.error ? ` NOT LISTENING: ${l.error}` : ''}`);
  if (s.dns.enabled) lines.push(`dns: unknown names go to ${s.dns.upstreams.join(', ') || 'nobody'}`);
  const rows = [['NETWORK', 'NAMES', 'IPV4', 'IPV6', 'HOST']];
  for (const n of s.networks) {
    for (const e of n.names) rows.push([n.name ?? n.id.slice(0, 12), e.names.join(','), e.ipv4 ?? '-', e.ipv6 ?? '-', e.host]);
  }
  if (rows.length === 1) lines.push('no names known');
  else {
    const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)));
    for (const r of rows) lines.push(r.map((c, i) => (i === r.length - 1 ? c : c.padEnd(widths[i]!))).join('  '));
  }
  return `${lines.join('\n')}\n`;
}
