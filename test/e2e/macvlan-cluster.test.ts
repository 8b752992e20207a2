// End to end: one macvlan network on the lab LAN (10.99.0.0/24, fd00:99::/64)
// created on three Docker hosts that share one etcd, with tsnet's IPAM. The
// addresses come from one cluster-wide allocator, so containers started in
// parallel on all three hosts never get the same LAN address (Docker's
// macvlan IPAM is per host and hands out duplicates unless each host is
// given a disjoint --ip-range by hand).
import { promises as fs } from 'node:fs';
import path from 'node:path';
import t from 'tap';
import { Lab, ETCD_URL, HEAVY, waitFor, type LabHost } from '../helpers/lab.js';
import { canPing, containerIp, removeAll, runContainer, tsnetTraces } from '../helpers/docker.js';

const lab = await Lab.start({ hosts: 3, etcd: true, tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_ETCD_LEASE_TTL: '4' } });
t.teardown(() => lab.stop());
const hosts = lab.hosts as [LabHost, LabHost, LabHost];
const [h1, h2, h3] = hosts;

const LAN = ['-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0', '--ipv6',
  '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', '10.99.0.128/25',
  '--subnet', 'fd00:99::/64', '--gateway', 'fd00:99::1', '--ip-range', 'fd00:99::100/120'];

async function ip6(h: LabHost, c: string): Promise<string> {
  return (await h.docker(['inspect', '-f', '{{(index .NetworkSettings.Networks "lan").GlobalIPv6Address}}', c])).stdout.trim();
}

async function blocksOf(host: LabHost): Promise<string[]> {
  const status = JSON.parse((await host.tsnetctl('status')).stdout) as { networks: Array<{ cluster: { blocks: string[] } | null }> };
  return status.networks[0]?.cluster?.blocks ?? [];
}

t.before(async () => {
  for (const h of hosts) await h.docker(['network', 'create', ...LAN, 'lan']);
});

t.test('containers started in parallel on three hosts get distinct LAN addresses, and reach each other and the LAN', async (t) => {
  const n = HEAVY ? 30 : 12;
  await Promise.all(Array.from({ length: n }, (_, i) => runContainer(hosts[i % 3]!, `p${i}`, 'lan')));
  const v4: string[] = [];
  const v6: string[] = [];
  for (let i = 0; i < n; i++) {
    v4.push(await containerIp(hosts[i % 3]!, `p${i}`, 'lan'));
    v6.push(await ip6(hosts[i % 3]!, `p${i}`));
  }
  t.equal(new Set(v4).size, n, `${n} distinct IPv4 addresses: ${v4.join(' ')}`);
  t.equal(new Set(v6).size, n, `${n} distinct IPv6 addresses: ${v6.join(' ')}`);
  t.ok(v4.every((a) => a.startsWith('10.99.0.') && Number(a.split('.')[3]) >= 128), 'all from the IPv4 ip-range');
  t.ok(v6.every((a) => /^fd00:99::1[0-9a-f]{2}$/.test(a)), 'all from the IPv6 ip-range');
  const blocks = await Promise.all(hosts.map(blocksOf));
  t.ok(blocks.every((b) => b.length > 0), `each host leased blocks of its own: ${blocks.map((b) => b.join(',')).join(' | ')}`);
  t.equal(new Set(blocks.flat()).size, blocks.flat().length, 'no block is held by two hosts');
  // Every container is a station of the LAN: the outside host reaches each one.
  const unreachable: string[] = [];
  for (const a of v4) if ((await lab.outside('ping', ['-c', '1', '-W', '2', a], { check: false })).exitCode !== 0) unreachable.push(a);
  t.same(unreachable, [], 'the LAN host pings every container');
  t.ok(await canPing(h1, 'p0', v4[2]!), 'host 1 container to host 3 container');
  t.ok(await canPing(h3, 'p2', v6[1]!), 'host 3 container to host 2 container over IPv6');
});

t.test('a static --ip is unique cluster-wide, and a host must agree on the ranges', async (t) => {
  await runContainer(h1, 's1', 'lan', ['--ip', '10.99.0.250']);
  const dup = await h2.docker(['run', '-d', '--name', 's2', '--network', 'lan', '--ip', '10.99.0.250', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(dup.exitCode, 0, 'the same LAN address on another host is refused');
  t.match(dup.stderr, /10\.99\.0\.250.*(claimed|in use)/);
  const taken = await containerIp(h1, 'p0', 'lan');
  const inUse = await h3.docker(['run', '-d', '--name', 's3', '--network', 'lan', '--ip', taken, 'busybox:local', 'sleep', '60'], { check: false });
  t.not(inUse.exitCode, 0, `an address host 1 handed out (${taken}) cannot be taken on host 3`);
  const other = await h3.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0',
    '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', '10.99.0.64/26', 'lan-b'], { check: false });
  t.not(other.exitCode, 0, 'a second network on the same parent is refused anyway');
});

t.test('a dead host is forgotten by an operator, its blocks go back; if it returns, it takes them again', async (t) => {
  const id3 = (await fs.readFile(path.join(h3.stateDir, 'host-id'), 'utf8')).trim();
  const blocks3 = await blocksOf(h3);
  t.ok(blocks3.length > 0, `host 3 holds blocks: ${blocks3.join(' ')}`);
  const held = async (): Promise<string[]> => {
    const r = await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.99.0.0_24/blocks/']);
    const lines = r.stdout.split('\n').filter(Boolean);
    const out: string[] = [];
    for (let i = 0; i + 1 < lines.length; i += 2) if ((JSON.parse(lines[i + 1]!) as { host: string }).host === id3) out.push(lines[i]!.split('/').pop()!.replace('_', '/'));
    return out.sort();
  };
  t.same(await held(), [...blocks3].sort(), "etcd names host 3 as their holder");

  const alive = await h1.tsnetctl('forget-host', id3);
  t.not(alive.exitCode, 0, 'a host whose lease is alive is not forgotten');
  t.match(alive.stdout, /is alive/);
  t.same(await held(), [...blocks3].sort(), 'and keeps its blocks');
  const bad = await h1.tsnetctl('forget-host', 'h3; rm -rf /');
  t.not(bad.exitCode, 0);
  t.match((JSON.parse(bad.stdout) as { Err: string }).Err, /^host: "h3; rm -rf \/" is not a host id/, 'a malformed host id is named in the error');

  await h3.stopTsnet('SIGKILL');
  await waitFor("host 3's lease expiry", async () => (await lab.etcdctl(['get', `/tsnet/v1/hosts/${id3}`])).stdout.trim() === '', 20_000, 250);
  const listed = JSON.parse((await h1.tsnetctl('forget-host')).stdout) as { hosts: Array<{ host: string; alive: boolean; networks: Array<{ subnet: string; blocks: string[] }> }> };
  const dead = listed.hosts.find((h) => h.host === id3);
  t.match(dead, { alive: false, networks: [{ subnet: '10.99.0.0/24' }] }, 'forget-host lists host 3 as dead, with what it holds');
  t.ok(listed.hosts.filter((h) => h.host !== id3).every((h) => h.alive), 'the other holders are alive');
  t.match((await h1.tsnetctl('doctor')).stdout, new RegExp(`WARN holders: host ${id3} has no lease .* -> if it is gone for good: tsnetctl forget-host ${id3} `), 'tsnetctl doctor points at it, with what to do');

  const r = await h1.tsnetctl('forget-host', id3);
  t.equal(r.exitCode, 0, r.stderr);
  t.same((JSON.parse(r.stdout) as { forgotten: { networks: Array<{ blocks: string[] }> } }).forgotten.networks[0]?.blocks.sort(), [...blocks3].sort(), 'it reports the blocks it gave back');
  t.same(await held(), [], "host 3's blocks are the cluster's again");

  // As if the last other host had left as host 3 came back: the network's record is gone.
  const record = (await lab.etcdctl(['get', '/tsnet/v1/overlays/10.99.0.0_24', '--print-value-only'])).stdout.trim();
  await lab.etcdctl(['del', '/tsnet/v1/overlays/10.99.0.0_24']);
  // It was not gone for good: back, it takes the blocks it hands out from again.
  await h3.startTsnet();
  t.ok(await waitFor('the record made again', async () => (await lab.etcdctl(['get', '/tsnet/v1/overlays/10.99.0.0_24', '--print-value-only'])).stdout.trim() !== '', 15_000, 250).catch(() => false), "joining, host 3 made the network's record again");
  t.same(JSON.parse((await lab.etcdctl(['get', '/tsnet/v1/overlays/10.99.0.0_24', '--print-value-only'])).stdout), JSON.parse(record), 'with the settings agreed before');
  t.ok(await waitFor('host 3 holds its blocks again', async () => (await held()).join() === [...blocks3].sort().join(), 15_000, 250).catch(() => false), 'the returning host leased its blocks again');
  t.match(await fs.readFile(h3.tsnetLog, 'utf8'), /was missing from etcd \(forgotten while this host was away\?\); took it again/, 'and said so in its log');
});

t.test('network rm on every host leaves no child, and gives the blocks back to the cluster', async (t) => {
  for (const h of hosts) await removeAll(h);
  for (const h of hosts) t.same((await tsnetTraces(h)).links, [], `${h.netns}: nothing left`);
  const keys = (await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.99.0.0_24/', '--keys-only'])).stdout.split('\n').filter(Boolean);
  t.same(keys, [], `no members, endpoints, blocks or claims left in etcd: ${keys.join(' ')}`);
  const info = (await lab.etcdctl(['get', '/tsnet/v1/overlays/10.99.0.0_24'])).stdout;
  t.equal(info, '', 'the last host out removed the network from the cluster');
  // Created again: the first host's ranges are the cluster's, and bind the others.
  await h1.docker(['network', 'create', ...LAN, 'lan']);
  const bad = await h2.docker(['network', 'create', ...LAN.map((a) => (a === '10.99.0.128/25' ? '10.99.0.192/26' : a)), 'lan'], { check: false });
  t.not(bad.exitCode, 0, 'a host naming another --ip-range is refused');
  t.match(bad.stderr, /ip-range .* disagrees with the cluster/);
  await removeAll(h1);
});
