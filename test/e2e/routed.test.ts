// Routed networks across hosts (tsnet.mode=routed): four lab hosts with
// etcd, hosts 1-3 on one LAN and host 4 behind the LAN namespace's router.
// Each host routes the other hosts' blocks of one subnet through their LAN
// addresses: containers reach each other with their own source addresses,
// at the LAN's MTU. Routes follow the cluster (join, lease expiry, restart),
// a host off the LAN is reported and skipped (and reached over VXLAN by an
// overlay with tsnet.backend=auto), the static form works with no etcd, and
// isolation, --internal, -p and network rm hold as for bridge networks.
import t from 'tap';
import { promises as fs } from 'node:fs';
import { Lab, ETCD_URL, IMAGE, waitFor, type LabHost } from '../helpers/lab.js';
import { canPing, containerIp, overlayNetns, runContainer, tsnetTraces } from '../helpers/docker.js';

const LEASE_TTL = 4;
const lab = await Lab.start({ hosts: 4, etcd: true, offLan: [4], tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_ETCD_LEASE_TTL: String(LEASE_TTL) } });
t.teardown(() => lab.stop());
const [h1, h2, h3, h4] = lab.hosts as [LabHost, LabHost, LabHost, LabHost];
const onLan = [h1, h2, h3];
const SUBNET = '10.202.0.0/16';
const SUBNET6 = 'fd74:202::/64';
const NET = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--ipv6', '--subnet', SUBNET, '--subnet', SUBNET6, 'routed'];

interface Route {
  dst: string;
  gateway?: string;
  dev: string;
}

async function routes(h: LabHost, family: 4 | 6 = 4): Promise<Route[]> {
  return JSON.parse((await h.exec('ip', ['-json', `-${family}`, 'route', 'show', 'proto', '116'])).stdout) as Route[];
}

async function ip6(h: LabHost, c: string, net = 'routed'): Promise<string> {
  return (await h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").GlobalIPv6Address}}`, c])).stdout.trim();
}

interface Status {
  networks: Array<{ mode: string; bridge: string; subnets: string[]; cluster: { blocks: string[] } | null; peers?: Array<{ host: string; address: string | null; status: string; prefixes: string[] }>; warnings?: string[]; direct?: { peers: Array<{ status: string; address: string | null }> } }>;
}

async function status(h: LabHost, subnet = SUBNET): Promise<Status['networks'][number]> {
  const s = JSON.parse((await h.tsnetctl('status')).stdout) as Status;
  const n = s.networks.find((x) => x.subnets.includes(subnet));
  if (!n) throw new Error(`${h.netns}: no network ${subnet} in tsnetctl status`);
  return n;
}

/** The blocks a host holds of the network. */
async function blocksOf(h: LabHost, subnet = SUBNET): Promise<string[]> {
  return (await status(h, subnet)).cluster?.blocks ?? [];
}

/**
 * A TCP server in a container's namespace (python on the host's side of
 * nsenter) that prints the address of each peer it accepts: what the
 * receiving container sees as the source.
 */
async function peersSeenBy(h: LabHost, container: string, port: number, connect: Array<() => Promise<unknown>>): Promise<string[]> {
  const script = [
    'import socket',
    `s = socket.create_server(("::", ${port}), family=socket.AF_INET6, dualstack_ipv6=True)`,
    's.settimeout(20)',
    `for _ in range(${connect.length}):`,
    '    c, a = s.accept()',
    '    print(a[0].removeprefix("::ffff:"), flush=True)',
    '    c.close()',
  ].join('\n');
  const server = h.execInContainer(container, 'python3', ['-c', script], { check: false });
  await waitFor('the server listening', async () => (await h.execInContainer(container, 'ss', ['-ltnH', `sport = :${port}`], { check: false })).stdout.includes(`${port}`), 10_000, 100);
  for (const c of connect) await c();
  const res = await server;
  return res.stdout.split('\n').filter(Boolean);
}

function nc(h: LabHost, c: string, target: string, port: number): () => Promise<unknown> {
  return () => h.docker(['exec', c, 'sh', '-c', `nc -w 3 ${target} ${port} </dev/null`], { check: false });
}

t.before(async () => {
  for (const h of onLan) await h.docker(NET);
});

t.test('containers on three hosts reach each other by IP, with their own source addresses, at the full MTU', async (t) => {
  await Promise.all(onLan.map((h, i) => runContainer(h, `c${i + 1}`, 'routed')));
  const ips = await Promise.all(onLan.map((h, i) => containerIp(h, `c${i + 1}`, 'routed')));
  const ips6 = await Promise.all(onLan.map((h, i) => ip6(h, `c${i + 1}`)));
  t.ok(ips.every((a) => a.startsWith('10.202.')), `addresses from the subnet: ${ips.join(' ')}`);
  t.ok(ips6.every((a) => a.startsWith('fd74:202::')), `IPv6 too: ${ips6.join(' ')}`);
  const blocks = await Promise.all(onLan.map((h) => blocksOf(h)));
  t.ok(blocks.every((b) => b.length >= 2), `each host leased an IPv4 and an IPv6 block: ${blocks.map((b) => b.join(',')).join(' | ')}`);
  // Every host routes every other host's blocks through its LAN address.
  for (const [i, h] of onLan.entries()) {
    await waitFor(`${h.netns} routes the other hosts' blocks`, async () => {
      const r4 = await routes(h, 4);
      const r6 = await routes(h, 6);
      return onLan.every((o, j) => j === i || blocks[j]!.every((b) => (b.includes(':') ? r6 : r4).some((r) => r.dst === b && r.gateway === (b.includes(':') ? o.lanIp6 : o.lanIp) && r.dev === 'eth0')));
    }, 10_000, 200);
  }
  t.pass('BLOCK via PEER dev eth0 proto 116 on every host, for IPv4 and IPv6 blocks');
  for (const [i, h] of onLan.entries()) {
    for (const [j] of onLan.entries()) {
      if (i === j) continue;
      t.ok(await canPing(h, `c${i + 1}`, ips[j]!), `c${i + 1} -> c${j + 1} (IPv4)`);
      t.ok(await canPing(h, `c${i + 1}`, ips6[j]!), `c${i + 1} -> c${j + 1} (IPv6)`);
    }
  }
  const seen = await peersSeenBy(h1, 'c1', 7000, [nc(h2, 'c2', ips[0]!, 7000), nc(h3, 'c3', ips[0]!, 7000)]);
  t.same(seen, [ips[1], ips[2]], 'the server on host 1 sees the other hosts\' containers\' own addresses (no masquerade)');
  const seen6 = await peersSeenBy(h1, 'c1', 7001, [nc(h2, 'c2', ips6[0]!, 7001)]);
  t.same(seen6, [ips6[1]], 'and over IPv6');
  t.equal((await h2.docker(['exec', 'c2', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim(), '1500', 'the LAN\'s MTU: nothing is encapsulated');
  const big = await h2.docker(['exec', 'c2', 'ping', '-c', '1', '-W', '2', '-s', '1472', ips[0]!], { check: false });
  t.equal(big.exitCode, 0, 'a full-size packet crosses');
  // The bridge answers for the other hosts' containers; local ones answer for themselves.
  const bridge = (await status(h1)).bridge;
  const bridgeMac = (JSON.parse((await h1.exec('ip', ['-json', 'link', 'show', 'dev', bridge])).stdout) as Array<{ address: string }>)[0]!.address;
  t.equal((await h1.exec('cat', [`/proc/sys/net/ipv4/conf/${bridge}/proxy_arp`])).stdout.trim(), '1', 'proxy_arp on the bridge');
  const neigh = (await h1.docker(['exec', 'c1', 'ip', 'neigh'])).stdout;
  t.match(neigh, new RegExp(`${ips[1]!.replace(/\./g, '\\.')} dev eth0 lladdr ${bridgeMac}`), 'a remote container\'s address resolves to the bridge\'s MAC');
  await runContainer(h1, 'c1b', 'routed');
  const local = await containerIp(h1, 'c1b', 'routed');
  t.ok(await canPing(h1, 'c1', local), 'a local neighbour answers for itself');
  const localMac = (await h1.docker(['inspect', '-f', '{{(index .NetworkSettings.Networks "routed").MacAddress}}', 'c1b'])).stdout.trim();
  t.match((await h1.docker(['exec', 'c1', 'ip', 'neigh'])).stdout, new RegExp(`${local.replace(/\./g, '\\.')} dev eth0 lladdr ${localMac}`), 'with its own MAC');
  t.equal((await h1.docker(['exec', 'c1', 'ping', '-c', '1', '-W', '2', '10.99.0.100'], { check: false })).exitCode, 0, 'egress beyond the subnet (masqueraded: the outside host has no route back to it)');
  t.equal((await h1.docker(['exec', 'c1', 'ping', '-c', '1', '-W', '2', 'fd00:99::100'], { check: false })).exitCode, 0, 'IPv6 egress too');
});

t.test('-p publishes on the container\'s own host', async (t) => {
  await runContainer(h2, 'web2', 'routed', ['-p', '18080:80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  const res = await waitFor('the published port', async () => {
    const r = await lab.outside('curl', ['-s', '-m', '2', `http://${h2.lanIp}:18080/`], { check: false });
    return r.exitCode === 0 ? r.stdout : undefined;
  }, 10_000, 200);
  t.match(res, /tsnet-lab-ok/, 'the outside host reaches it at host 2\'s address');
});

t.test('isolation from a second routed network and from other bridges, both ways, the other hosts\' blocks included', async (t) => {
  const other = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--subnet', '10.203.0.0/16', 'other'];
  await h1.docker(other);
  await h2.docker(other);
  await runContainer(h1, 'o1', 'other');
  await runContainer(h2, 'o2', 'other');
  const o1 = await containerIp(h1, 'o1', 'other');
  const o2 = await containerIp(h2, 'o2', 'other');
  await waitFor('host 1 routes the other network\'s block on host 2', async () => (await routes(h1)).some((r) => r.dst.startsWith('10.203.') && r.gateway === h2.lanIp), 10_000, 200);
  t.ok(await canPing(h1, 'o1', o2), 'the second network works across hosts');
  const c2 = await containerIp(h2, 'c2', 'routed');
  const c1 = await containerIp(h1, 'c1', 'routed');
  t.notOk(await canPing(h1, 'o1', c2, 1), 'other (host 1) cannot reach routed (host 2)');
  t.notOk(await canPing(h2, 'c2', o1, 1), 'routed (host 2) cannot reach other (host 1)');
  t.notOk(await canPing(h1, 'o1', c1, 1), 'nor on one host');
  await h1.docker(['network', 'create', '--subnet', '172.30.0.0/24', 'dockerbr']);
  await runContainer(h1, 'd1', 'dockerbr');
  t.notOk(await canPing(h1, 'd1', c2, 1), 'a container on Docker\'s own bridge cannot reach the routed network on another host');
  const guard = (await h1.exec('nft', ['list', 'chain', 'inet', 'tsnet', 'routed_guard'])).stdout;
  t.match(guard, /iifname != "tsbr-[0-9a-f]+" ip daddr 10\.202\.0\.0\/16 drop/, 'the guard keeps other bridges out of the subnet before it leaves the host');
  for (const h of [h1, h2]) await h.docker(['rm', '-f', ...(h === h1 ? ['o1', 'd1'] : ['o2'])]);
  await h1.docker(['network', 'rm', 'other', 'dockerbr']);
  await h2.docker(['network', 'rm', 'other']);
  await waitFor('the other network\'s routes go', async () => !(await routes(h1)).some((r) => r.dst.startsWith('10.203.')), 10_000, 200);
  t.pass('its routes go with it');
});

t.test('--internal: the cluster subnet only', async (t) => {
  const internal = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--internal', '--subnet', '10.204.0.0/16', 'inner'];
  await h1.docker(internal);
  await h2.docker(internal);
  await runContainer(h1, 'i1', 'inner');
  await runContainer(h2, 'i2', 'inner');
  const i2 = await containerIp(h2, 'i2', 'inner');
  await waitFor('the route to host 2\'s block', async () => (await routes(h1)).some((r) => r.dst.startsWith('10.204.')), 10_000, 200);
  t.ok(await canPing(h1, 'i1', i2), 'containers on different hosts reach each other');
  t.notOk(await canPing(h1, 'i1', '10.99.0.100', 1), 'nothing beyond the subnet');
  t.notOk(await canPing(h1, 'i1', h2.lanIp, 1), 'not even the peer host');
  t.notMatch((await h1.docker(['exec', 'i1', 'ip', 'route'])).stdout, /default/, 'no default route');
  await h1.docker(['rm', '-f', 'i1']);
  await h2.docker(['rm', '-f', 'i2']);
  await h1.docker(['network', 'rm', 'inner']);
  await h2.docker(['network', 'rm', 'inner']);
});

t.test('a host whose plugin stops and whose lease expires loses its routes; a restarted one gets them back', async (t) => {
  const b3 = (await blocksOf(h3)).filter((b) => !b.includes(':'));
  const has = async (): Promise<boolean> => (await routes(h1)).some((r) => b3.includes(r.dst));
  t.ok(await has(), `host 1 routes host 3's blocks ${b3.join(',')}`);
  await h3.stopTsnet('SIGKILL');
  await waitFor('lease expiry', async () => !(await has()), (LEASE_TTL + 10) * 1000, 250);
  t.pass('gone from host 1 once host 3\'s lease expired');
  t.notOk((await routes(h2)).some((r) => b3.includes(r.dst)), 'and from host 2');
  await h3.startTsnet();
  await waitFor('host 3 back', has, 15_000, 250);
  const c3 = await containerIp(h3, 'c3', 'routed');
  t.ok(await canPing(h1, 'c1', c3), 'reachable again');
});

t.test("a host whose LAN address changes: its reconcile publishes the new one, and the others route its blocks through it", async (t) => {
  const b3 = (await blocksOf(h3)).filter((b) => !b.includes(':'));
  const via = async (h: LabHost): Promise<string[]> => (await routes(h)).filter((r) => b3.includes(r.dst)).map((r) => r.gateway ?? '');
  const c3 = await containerIp(h3, 'c3', 'routed');
  t.same(await via(h1), b3.map(() => h3.lanIp), `host 1 routes host 3's blocks through ${h3.lanIp}`);
  // Renumbered as DHCP would: the new address added, then the old one
  // removed, the new one promoted in its place (the default route stays).
  await h3.exec('sysctl', ['-qw', 'net.ipv4.conf.eth0.promote_secondaries=1']);
  const renumber = async (from: string, to: string): Promise<void> => {
    await h3.exec('ip', ['addr', 'add', `${to}/24`, 'dev', 'eth0']);
    await h3.exec('ip', ['addr', 'del', `${from}/24`, 'dev', 'eth0']);
    t.equal((await h3.tsnetctl('reconcile')).exitCode, 0, `host 3 renumbered ${from} -> ${to}; reconciled`);
    const moved = await waitFor(`routes via ${to}`, async () => {
      const [one, two] = [await via(h1), await via(h2)];
      return one.length === b3.length && two.length === b3.length && [...one, ...two].every((g) => g === to);
    }, 20_000, 250).catch(() => false);
    t.ok(moved, `hosts 1 and 2 route host 3's blocks through ${to}`);
    t.ok(await canPing(h1, 'c1', c3), `host 1's container reaches host 3's (${c3}) through ${to}`);
  };
  await renumber(h3.lanIp, '10.99.0.33');
  await renumber('10.99.0.33', h3.lanIp);
});

t.test('etcd down: routes and traffic stay; a restart reconciles routes from etcd, stale ones removed', async (t) => {
  const c2 = await containerIp(h2, 'c2', 'routed');
  const before = await routes(h1);
  await lab.stopEtcd();
  t.ok(await canPing(h1, 'c1', c2), 'traffic flows without etcd');
  await h1.stopTsnet();
  await h1.startTsnet();
  await new Promise((r) => setTimeout(r, 2000));
  t.same((await routes(h1)).map((r) => r.dst).sort(), before.map((r) => r.dst).sort(), 'a tsnet restarted while etcd is down leaves the routes as they are');
  t.ok(await canPing(h1, 'c1', c2), 'and traffic flows on');
  // Stale routes: one inside the subnet (a host long gone), one of a network tsnet no longer has.
  await h1.exec('ip', ['route', 'add', '10.202.250.0/26', 'via', h2.lanIp, 'proto', '116']);
  await h1.exec('ip', ['route', 'add', '10.250.0.0/26', 'via', h2.lanIp, 'proto', '116']);
  await lab.startEtcd();
  await h1.stopTsnet();
  await h1.startTsnet();
  await waitFor('stale routes removed', async () => {
    const now = (await routes(h1)).map((r) => r.dst);
    return !now.includes('10.202.250.0/26') && !now.includes('10.250.0.0/26');
  }, 15_000, 250);
  t.pass('both stale routes removed once etcd answered');
  t.same((await routes(h1)).map((r) => r.dst).sort(), before.map((r) => r.dst).sort(), 'the others re-derived from etcd');
  t.ok(await canPing(h1, 'c1', c2), 'traffic unaffected');
});

t.test('a host off the LAN is reported and skipped, never routed through a router', async (t) => {
  await h4.docker(NET);
  await runContainer(h4, 'c4', 'routed');
  const b4 = (await blocksOf(h4)).filter((b) => !b.includes(':'));
  const n = await waitFor('host 1 reports host 4', async () => {
    const s = await status(h1);
    return s.peers?.some((p) => p.address === h4.lanIp && p.status === 'off-lan') ? s : undefined;
  }, 10_000, 200);
  t.ok(n.warnings?.some((w) => w.includes(h4.lanIp) && /not on a directly connected subnet/.test(w)), `tsnetctl status says why: ${n.warnings?.join(' / ')}`);
  t.notOk((await routes(h1)).some((r) => b4.includes(r.dst)), 'no route to host 4\'s block');
  t.match(await fs.readFile(h1.tsnetLog, 'utf8'), /not on a directly connected subnet of this host/, 'and the log says so');
  const doctor = await h1.tsnetctl('doctor');
  t.match(doctor.stdout, new RegExp(`WARN routed: .*${h4.lanIp.replace(/\./g, '\\.')} is not on a directly connected subnet.* -> .*tsnet\\.backend=auto`), 'and tsnetctl doctor, with what to do');
  const c4 = await containerIp(h4, 'c4', 'routed');
  t.notOk(await canPing(h1, 'c1', c4, 1), 'host 4\'s container is not reachable (no silent black hole: ARP goes unanswered)');
  t.same((await status(h4)).peers?.filter((p) => p.status === 'routed'), [], 'host 4 routes to none of the others either');
  await h4.docker(['rm', '-f', 'c4']);
  await h4.docker(['network', 'rm', 'routed']);
});

t.test('an overlay with tsnet.backend=auto: same-LAN members routed directly, a host off the LAN over VXLAN', async (t) => {
  const ov = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', 'tsnet.backend=auto', '--subnet', '10.205.0.0/16', 'auto'];
  for (const h of [h1, h2, h4]) await h.docker(ov);
  await runContainer(h1, 'a1', 'auto');
  await runContainer(h2, 'a2', 'auto');
  await runContainer(h4, 'a4', 'auto');
  const a2 = await containerIp(h2, 'a2', 'auto');
  const a4 = await containerIp(h4, 'a4', 'auto');
  const b2 = (await blocksOf(h2, '10.205.0.0/16'))[0]!;
  await waitFor('host 1 routes host 2\'s block', async () => (await routes(h1)).some((r) => r.dst === b2 && r.gateway === h2.lanIp), 10_000, 200);
  // The overlay switches in a namespace of its own; its VXLAN port is there.
  const ns = await overlayNetns(h1, 'auto');
  const vx = (JSON.parse((await h1.exec('ip', ['-n', ns, '-json', 'link', 'show', 'type', 'vxlan'])).stdout) as Array<{ ifname: string }>)[0]!.ifname;
  await waitFor('host 1 learns host 4\'s endpoint over VXLAN', async () => (await h1.exec('ip', ['-n', ns, 'neigh', 'show', 'dev', vx])).stdout.includes(a4), 10_000, 200);
  t.ok(await canPing(h1, 'a1', a2), 'host 1 -> host 2, routed');
  t.ok(await canPing(h1, 'a1', a4), 'host 1 -> host 4, over VXLAN through the router');
  t.ok(await canPing(h4, 'a4', a2), 'host 4 -> host 2, over VXLAN');
  const fdb = (await h1.exec('bridge', ['-n', ns, 'fdb', 'show', 'dev', vx])).stdout;
  t.match(fdb, new RegExp(`dst ${h4.lanIp.replace(/\./g, '\\.')} (link-netnsid \\d+ )?self permanent`), 'VXLAN entries for host 4');
  t.notMatch(fdb, new RegExp(`dst ${h2.lanIp.replace(/\./g, '\\.')} `), 'none for host 2');
  const seen = await peersSeenBy(h1, 'a1', 7002, [nc(h2, 'a2', await containerIp(h1, 'a1', 'auto'), 7002)]);
  t.same(seen, [a2], 'host 2\'s container arrives with its own address');
  const direct = (await status(h1, '10.205.0.0/16')).direct?.peers ?? [];
  t.ok(direct.some((p) => p.address === h2.lanIp && p.status === 'routed'), 'tsnetctl status lists host 2 as routed directly');
  for (const [h, c] of [[h1, 'a1'], [h2, 'a2'], [h4, 'a4']] as const) {
    await h.docker(['rm', '-f', c]);
    await h.docker(['network', 'rm', 'auto']);
  }
  t.notOk((await routes(h1)).some((r) => r.dst.startsWith('10.205.')), 'its direct routes go with it');
  t.same((await tsnetTraces(h1)).namespaces, [], 'and its namespace');
});

t.test('the static form between two hosts, no etcd', async (t) => {
  const peers = `tsnet.peers=${h1.lanIp}=10.230.1.0/24,${h2.lanIp}=10.230.2.0/24`;
  const common = ['-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '-o', peers, '--subnet', '10.230.0.0/16', '--gateway', '10.230.0.1'];
  await h1.docker(['network', 'create', ...common, '--ip-range', '10.230.1.0/24', 'static']);
  await h2.docker(['network', 'create', ...common, '--ip-range', '10.230.2.0/24', 'static']);
  await runContainer(h1, 's1', 'static');
  await runContainer(h2, 's2', 'static');
  const s1 = await containerIp(h1, 's1', 'static');
  const s2 = await containerIp(h2, 's2', 'static');
  t.match(s2, /^10\.230\.2\./, `host 2 hands out its own block (${s2})`);
  t.same((await routes(h1)).filter((r) => r.dst.startsWith('10.230.')).map((r) => ({ dst: r.dst, gateway: r.gateway, dev: r.dev })), [{ dst: '10.230.2.0/24', gateway: h2.lanIp, dev: 'eth0' }], 'host 1 routes exactly host 2\'s block');
  t.ok(await canPing(h1, 's1', s2), 'host 1 -> host 2');
  const seen = await peersSeenBy(h2, 's2', 7003, [nc(h1, 's1', s2, 7003)]);
  t.same(seen, [s1], 'with its own address');
  t.equal((await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.230', '--keys-only'])).stdout.trim(), '', 'nothing of it in etcd');
  const bad = await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '-o', `tsnet.peers=${h2.lanIp}=10.231.1.0/24`, '--subnet', '10.231.0.0/16', '--ip-range', '10.231.1.0/25', 'bad1'], { check: false });
  t.match(bad.stderr, /tsnet\.peers: .*10\.231\.1\.0\/24 overlaps this host's --ip-range 10\.231\.1\.0\/25/, 'a peer block over this host\'s own range is refused');
  const outside = await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=routed', '-o', `tsnet.peers=${h2.lanIp}=10.99.0.0/24`, '--subnet', '10.231.0.0/16', 'bad2'], { check: false });
  t.match(outside.stderr, /tsnet\.peers: ".*": 10\.99\.0\.0\/24 is not inside the network's subnet 10\.231\.0\.0\/16/, 'a block outside the subnet is refused');
  const syntax = await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=routed', '-o', `tsnet.peers=${h2.lanIp}`, '--subnet', '10.231.0.0/16', 'bad3'], { check: false });
  t.match(syntax.stderr, /tsnet\.peers: "10\.99\.0\.12" is not ADDR=BLOCK/, 'a bare address is refused, with the form asked for');
  const iso = await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--internal', '-o', 'com.docker.network.bridge.gateway_mode_ipv4=isolated', '--subnet', '10.232.0.0/16', 'bad4'], { check: false });
  t.match(iso.stderr, /gateway_mode_ipv4: "isolated" does not apply to a routed network/);
  const dockerIpam = await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=routed', '--subnet', '10.233.0.0/16', 'bad5'], { check: false });
  t.match(dockerIpam.stderr, /needs --ipam-driver tsnet/, 'the cluster form needs tsnet\'s IPAM');
  const nets = (await h1.docker(['network', 'ls', '--format', '{{.Name}}'])).stdout;
  t.notMatch(nets, /bad\d/, 'none of the refused networks exists');
  await h1.docker(['rm', '-f', 's1']);
  await h2.docker(['rm', '-f', 's2']);
  await h1.docker(['network', 'rm', 'static']);
  await h2.docker(['network', 'rm', 'static']);
});

t.test('network rm on every host leaves nothing: no link, route, proxy entry, rule or etcd key', async (t) => {
  for (const h of onLan) {
    const ids = (await h.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean);
    if (ids.length > 0) await h.docker(['rm', '-f', ...ids]);
    await h.docker(['network', 'rm', 'routed']);
  }
  for (const h of lab.hosts) {
    const traces = await tsnetTraces(h);
    t.same(traces.links, [], `${h.netns}: no tsnet link`);
    t.notOk(traces.nftTable, `${h.netns}: no nftables table`);
    t.same(traces.iptRules, [], `${h.netns}: no iptables rule`);
    t.same(traces.namespaces, [], `${h.netns}: no overlay namespace`);
    t.same([...(await routes(h, 4)), ...(await routes(h, 6))], [], `${h.netns}: no route tagged 116`);
    t.equal((await h.exec('ip', ['-6', 'neigh', 'show', 'proxy'])).stdout.trim(), '', `${h.netns}: no proxy-NDP entry`);
  }
  const keys = (await lab.etcdctl(['get', '--prefix', `/tsnet/v1/overlays/${SUBNET.replace('/', '_')}`, '--keys-only'])).stdout.trim();
  t.equal(keys, '', 'the network is gone from etcd');
  void IMAGE;
});
