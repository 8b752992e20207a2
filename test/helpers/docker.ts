// Small conveniences over the docker CLI of a lab host, shared by the e2e files.
import { overlayNames } from '../../src/kernel/names.js';
import type { LabHost } from './lab.js';
import { IMAGE } from './lab.js';

/** The namespace holding an overlay network's bridge, VXLAN port and endpoint veths on this host. */
export async function overlayNetns(h: LabHost, network: string): Promise<string> {
  const id = (await h.docker(['network', 'inspect', '-f', '{{.Id}}', network])).stdout.trim();
  return overlayNames(id).netns;
}

/** Overlay namespaces tied to the host (it has links into them). */
export async function overlayNamespaces(h: LabHost): Promise<string[]> {
  const list = JSON.parse((await h.exec('ip', ['-json', 'netns', 'list-id'])).stdout.trim() || '[]') as Array<{ name?: string }>;
  return list.flatMap((n) => (n.name && /^tsov-/.test(n.name) ? [n.name] : []));
}

export async function runContainer(h: LabHost, name: string, network: string | undefined, extra: string[] = [], cmd: string[] = ['sleep', '3600']): Promise<string> {
  const args = ['run', '-d', '--name', name, ...(network ? ['--network', network] : []), ...extra, IMAGE, ...cmd];
  return (await h.docker(args)).stdout.trim();
}

export async function canPing(h: LabHost, from: string, to: string, waitS = 2): Promise<boolean> {
  const r = await h.docker(['exec', from, 'ping', '-c', '1', '-W', String(waitS), to], { check: false });
  return r.exitCode === 0;
}

export async function containerIp(h: LabHost, container: string, network: string): Promise<string> {
  const fmt = `{{(index .NetworkSettings.Networks "${network}").IPAddress}}`;
  return (await h.docker(['inspect', '-f', fmt, container])).stdout.trim();
}

export async function removeAll(h: LabHost): Promise<void> {
  const ids = (await h.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean);
  if (ids.length > 0) await h.docker(['rm', '-f', ...ids]);
  const nets = (await h.docker(['network', 'ls', '--filter', 'driver=tsnet', '-q'])).stdout.split('\n').filter(Boolean);
  if (nets.length > 0) await h.docker(['network', 'rm', ...nets]);
}

/** What tsnet may have left in a host namespace: links, addresses, tables, rules. */
export async function tsnetTraces(h: LabHost): Promise<{ links: string[]; nftTable: boolean; iptRules: string[]; namespaces: string[] }> {
  const links = JSON.parse((await h.exec('ip', ['-json', '-details', 'link', 'show'])).stdout) as Array<{ ifname: string; ifalias?: string }>;
  const ours = links.filter((l) => l.ifalias?.startsWith('tsnet:') || /^ts(br-|v|c|vx-|gh-)/.test(l.ifname)).map((l) => l.ifname);
  const nft = (await h.exec('nft', ['list', 'tables'])).stdout;
  const ipt = [(await h.exec('iptables-save', [])).stdout, (await h.exec('ip6tables-save', [])).stdout].join('\n');
  const names = new Set((await h.exec('ip', ['-json', 'netns', 'list'])).stdout.match(/tsov-[0-9a-f]{10}/g) ?? []);
  const namespaces = (await overlayNamespaces(h)).filter((n) => names.has(n));
  return { links: ours, nftTable: /table inet tsnet/.test(nft), iptRules: ipt.split('\n').filter((l) => /TSNET|tsnet/.test(l)), namespaces };
}
