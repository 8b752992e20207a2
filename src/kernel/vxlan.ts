// VXLAN devices and their forwarding entries. Design notes (after flannel's
// vxlan backend and Docker's overlay peerdb):
// - The device is created with learning off and ARP proxy on: tsnet tells
//   it where every remote MAC lives (a static FDB entry MAC -> remote VTEP)
//   and which MAC answers for every remote IP (a permanent neighbour entry
//   on the VXLAN device, which the proxy uses to answer ARP locally), so
//   unicast never floods.
// - Broadcast and unknown traffic is replicated to every member VTEP through
//   all-zero FDB entries (head-end replication), one per member.
// - Changes go through `bridge -batch` and `ip -batch`: one process per
//   burst of changes, whatever its size.
// - In static-peers mode (no control plane) the device learns MACs from
//   traffic instead, and the all-zero entries make it flood to the peers.
// - The device is made in the host namespace (its UDP socket stays there,
//   on the underlay) and moved into the overlay's namespace, onto its bridge
//   (kernel/overlay-ns.ts). Its port is isolated: see there.
// - With a control plane, remote MACs also go into the bridge's own FDB
//   (`master`), not only the device's (`self`): a bridge that does not know
//   where a MAC lives floods every frame for it to all its ports (the VXLAN
//   port has learning off), a copy per local container.
import { TsnetError } from '../errors.js';
import type { Runner } from './exec.js';
import { batchLine, ipBatch } from './ip.js';
import { overlayRunner } from './overlay-ns.js';

export interface VxlanSpec {
  name: string;
  vni: number;
  port: number;
  /** this host's VTEP address */
  local: string;
  /** the underlay interface carrying that address */
  dev: string;
  mtu: number;
  bridge: string;
  alias: string;
  learning: boolean;
  /** the overlay's namespace, where the device ends up */
  netns: string;
}

export async function createVxlan(runner: Runner, s: VxlanSpec): Promise<void> {
  await ipBatch(runner, [
    [
      'link', 'add', 'name', s.name, 'mtu', s.mtu, 'type', 'vxlan', 'id', s.vni, 'dstport', s.port,
      'local', s.local, 'dev', s.dev,
      ...(s.learning ? ['learning'] : ['nolearning', 'proxy']),
      // No outer UDP checksum over an IPv4 underlay (allowed by RFC 7348, as
      // Docker's overlay does): the inner packets carry their own, and
      // computing it costs throughput.
      ...(s.local.includes(':') ? [] : ['noudpcsum']),
      'ttl', 64,
    ],
    // Tagged before it moves: a device left behind by a failure here is found as tsnet's.
    ['link', 'set', 'dev', s.name, 'alias', s.alias, 'addrgenmode', 'none'],
    ['link', 'set', 'dev', s.name, 'netns', s.netns],
  ]);
  await ipBatch(overlayRunner(runner, s.netns), vxlanPortLines(s));
}

/** The device on its bridge, inside the overlay's namespace. */
export function vxlanPortLines(s: Pick<VxlanSpec, 'name' | 'bridge' | 'learning'>): Array<readonly (string | number)[]> {
  return [
    ['link', 'set', 'dev', s.name, 'master', s.bridge],
    // The bridge must not learn remote MACs on this port from stray frames
    // when tsnet owns the table; static-peers mode relies on learning.
    ['link', 'set', 'dev', s.name, 'type', 'bridge_slave', 'learning', s.learning ? 'on' : 'off', 'isolated', 'on'],
    ['link', 'set', 'dev', s.name, 'up'],
  ];
}

export interface RemoteEndpoint {
  ip: string;
  mac: string;
  vtep: string;
}

const MAC = /^[0-9a-f]{2}(:[0-9a-f]{2}){5}$/;

function checkMac(mac: string): string {
  if (!MAC.test(mac)) throw new TsnetError('TSNET_ERR_INTERNAL', `unsafe MAC ${JSON.stringify(mac)}`);
  return mac;
}

/**
 * FDB lines for `bridge -batch`: where remote MACs live (the device's FDB,
 * and with `bridgeFdb` the bridge's, pointing at the VXLAN port), and who
 * gets broadcast.
 */
export function fdbLines(vxlan: string, changes: { addEndpoints?: RemoteEndpoint[]; delEndpoints?: RemoteEndpoint[]; addFlood?: string[]; delFlood?: string[] }, bridgeFdb = false): string[] {
  const lines: string[] = [];
  for (const e of changes.delEndpoints ?? []) {
    lines.push(batchLine(['fdb', 'del', checkMac(e.mac), 'dev', vxlan, 'self']));
    if (bridgeFdb) lines.push(batchLine(['fdb', 'del', checkMac(e.mac), 'dev', vxlan, 'master']));
  }
  for (const v of changes.delFlood ?? []) lines.push(batchLine(['fdb', 'del', '00:00:00:00:00:00', 'dev', vxlan, 'dst', v, 'self']));
  for (const e of changes.addEndpoints ?? []) {
    lines.push(batchLine(['fdb', 'replace', checkMac(e.mac), 'dev', vxlan, 'dst', e.vtep, 'self', 'permanent']));
    if (bridgeFdb) lines.push(batchLine(['fdb', 'replace', checkMac(e.mac), 'dev', vxlan, 'master', 'static']));
  }
  for (const v of changes.addFlood ?? []) lines.push(batchLine(['fdb', 'append', '00:00:00:00:00:00', 'dev', vxlan, 'dst', v, 'self', 'permanent']));
  return lines;
}

/** Neighbour lines for `ip -batch`: the ARP proxy's answers for remote IPs. */
export function neighLines(vxlan: string, changes: { add?: RemoteEndpoint[]; del?: RemoteEndpoint[] }): string[] {
  const lines: string[] = [];
  for (const e of changes.del ?? []) lines.push(batchLine(['neigh', 'del', e.ip, 'dev', vxlan]));
  for (const e of changes.add ?? []) lines.push(batchLine(['neigh', 'replace', e.ip, 'lladdr', checkMac(e.mac), 'dev', vxlan, 'nud', 'permanent']));
  return lines;
}

/**
 * Apply FDB and neighbour changes, two processes at most. Deletions of
 * entries already gone are expected (a repeat, a restart), so -force keeps
 * going past them; the adds use replace/append, which are idempotent.
 */
export async function applyForwarding(runner: Runner, fdb: string[], neigh: string[]): Promise<void> {
  if (fdb.length > 0) await runner.run('bridge', ['-force', '-batch', '-'], { input: `${fdb.join('\n')}\n` }).catch((err) => tolerateMissing(err));
  if (neigh.length > 0) await runner.run('ip', ['-force', '-batch', '-'], { input: `${neigh.join('\n')}\n` }).catch((err) => tolerateMissing(err));
}

function tolerateMissing(err: unknown): void {
  const text = (err as { stderr?: string }).stderr ?? '';
  // With -force the exit status reports any failure; only "not there" ones are fine.
  const bad = text
    .split('\n')
    .filter((l) => l.trim() !== '' && !/No such file or directory|Cannot find|does not exist|RTNETLINK answers: No such|Command failed -:\d+/.test(l));
  if (bad.length > 0) throw err;
}

export interface FdbEntry {
  mac: string;
  dst?: string;
  flags?: string[];
  state?: string;
}

/** The VXLAN device's own FDB (remote entries), as JSON. */
export async function listFdb(runner: Runner, vxlan: string): Promise<FdbEntry[]> {
  const { stdout } = await runner.run('bridge', ['-json', 'fdb', 'show', 'dev', vxlan]);
  const all = JSON.parse(stdout.trim() || '[]') as FdbEntry[];
  return all.filter((e) => e.dst !== undefined);
}
