// End to end: one macvlan network on the lab LAN (10.99.0.0/24, fd00:99::/64)
// created on three Docker hosts that share one etcd, with tsnet's IPAM. The
// addresses come from one cluster-wide allocator, so containers started in
// parallel on all three hosts never get the same LAN address (Docker's
// macvlan IPAM is per host and hands out duplicates unless each host is
// given a disjoint --ip-range by hand).
import t from 'tap';
import { Lab, ETCD_URL, HEAVY, type LabHost } from '../helpers/lab.js';
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
