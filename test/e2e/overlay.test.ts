// Multi-host overlays: three lab hosts (each its own dockerd and tsnet) on a
// LAN namespace, etcd in a namespace of its own. Containers on different
// hosts talk over VXLAN; addresses stay unique across hosts; lease expiry,
// an etcd outage and a forged VXLAN sender behave as promised.
import t from 'tap';
import { promises as fs } from 'node:fs';
import { Lab, ETCD_URL, IMAGE, OUTSIDE_IP6, heavyOnly, waitFor, type LabHost } from '../helpers/lab.js';
import { canPing, containerIp, overlayNamespaces, overlayNetns, removeAll, tsnetTraces } from '../helpers/docker.js';

const LEASE_TTL = 4;
const lab = await Lab.start({ hosts: 3, etcd: true, tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_ETCD_LEASE_TTL: String(LEASE_TTL) } });
t.teardown(() => lab.stop());
const [h1, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];
const NET = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.200.0.0/16', 'appnet'];

/** The overlay the tests look at (appnet, later v6u). */
let current = 'appnet';

/** `ip`/`bridge` inside the overlay's namespace on host h; the word VX stands for its VXLAN device. */
async function ov(h: LabHost, cmd: 'ip' | 'bridge', args: string[], net = current): Promise<string> {
  const ns = await overlayNetns(h, net);
  const vx = (JSON.parse((await h.exec('ip', ['-n', ns, '-json', 'link', 'show', 'type', 'vxlan'])).stdout) as Array<{ ifname: string }>)[0]?.ifname ?? 'none';
  return (await h.exec(cmd, ['-n', ns, ...args.map((a) => (a === 'VX' ? vx : a))])).stdout;
}

async function neighbours(h: LabHost): Promise<string> {
  return ov(h, 'ip', ['neigh', 'show', 'dev', 'VX']);
}

async function vniOf(h: LabHost): Promise<string> {
  return (await ov(h, 'ip', ['-d', '-json', 'link', 'show', 'dev', 'VX'])).match(/"id":(\d+)/)![1]!;
}

t.before(async () => {
  for (const h of lab.hosts) await h.docker(NET);
});

t.test('containers on different hosts reach each other by IP, ICMP and TCP', async (t) => {
  await h1.docker(['run', '-d', '--name', 'web', '--network', 'appnet', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']);
  await h2.docker(['run', '-d', '--name', 'cli2', '--network', 'appnet', IMAGE, 'sleep', '3600']);
  await h3.docker(['run', '-d', '--name', 'cli3', '--network', 'appnet', IMAGE, 'sleep', '3600']);
  const webIp = await containerIp(h1, 'web', 'appnet');
  const ip3 = await containerIp(h3, 'cli3', 'appnet');
  t.match(webIp, /^10\.200\./);
  await waitFor('host 2 learns host 1\'s endpoint', async () => (await neighbours(h2)).includes(webIp), 5000, 100);
  t.ok(await canPing(h2, 'cli2', webIp), 'host 2 -> host 1');
  await waitFor('host 1 learns host 3\'s endpoint', async () => (await neighbours(h1)).includes(ip3), 5000, 100);
  t.ok(await canPing(h1, 'web', ip3), 'host 1 -> host 3');
  const http = await h3.docker(['exec', 'cli3', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${webIp} 80`], { check: false });
  t.match(http.stdout, /tsnet-lab-ok/, 'TCP across hosts');
  t.equal((await h2.docker(['exec', 'cli2', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim(), '1450', 'MTU is the underlay minus 50');
  const gw = (await h2.docker(['exec', 'cli2', 'ip', 'route'])).stdout;
  t.match(gw, /default via 10\.200\.0\.1 /, 'the same gateway address on every host');
  t.equal((await h2.docker(['exec', 'cli2', 'sh', '-c', 'nc -w 3 10.99.0.100 1 </dev/null; ping -c 1 -W 2 10.99.0.100'], { check: false })).exitCode, 0, 'egress through the host\'s own uplink');
  const fdb = await ov(h1, 'bridge', ['fdb', 'show', 'dev', 'VX']);
  t.match(fdb, /00:00:00:00:00:00 dst 10\.99\.0\.12 (link-netnsid \d+ )?self permanent/, 'flood entry for host 2');
  t.match(fdb, /00:00:00:00:00:00 dst 10\.99\.0\.13 (link-netnsid \d+ )?self permanent/, 'flood entry for host 3');
  const mac2 = (await h2.docker(['exec', 'cli2', 'cat', '/sys/class/net/eth0/address'])).stdout.trim();
  t.match(fdb, new RegExp(`${mac2} master \\S+ static`), "host 2's container is in the bridge's own FDB: unicast to it is never flooded to every port");
});

t.test('the layout: the overlay switches in a namespace of its own, out of the host\'s netfilter', async (t) => {
  const ns = await overlayNetns(h1, 'appnet');
  t.ok((await overlayNamespaces(h1)).includes(ns), `host 1 has its overlay namespace ${ns}`);
  const hostLinks = JSON.parse((await h1.exec('ip', ['-json', '-details', 'link', 'show'])).stdout) as Array<{ ifname: string; master?: string; linkinfo?: { info_kind?: string } }>;
  t.same(hostLinks.filter((l) => l.linkinfo?.info_kind === 'vxlan').map((l) => l.ifname), [], 'no VXLAN device in the host namespace');
  const bridge = hostLinks.find((l) => l.linkinfo?.info_kind === 'bridge' && l.ifname.startsWith('tsbr-'))!;
  t.same(hostLinks.filter((l) => l.master === bridge.ifname).map((l) => l.ifname), [`tsgh-${ns.slice(5)}`], "the host's bridge has one port: the gateway's veth into the namespace");
  t.equal((await h1.exec('ip', ['netns', 'exec', ns, 'sysctl', '-n', 'net.bridge.bridge-nf-call-iptables'])).stdout.trim(), '0', 'no bridge netfilter in the namespace');
  // A counter in the host's forward hook sees no overlay-to-overlay packet, and conntrack no overlay flow.
  for (const h of [h1, h2]) {
    await h.exec('nft', ['-f', '-'], { input: 'table inet probe {\n chain counting { type filter hook forward priority 100; ip saddr 10.200.0.0/16 ip daddr 10.200.0.0/16 counter; }\n}\n' });
    await h.exec('conntrack', ['-F'], { check: false });
  }
  t.teardown(async () => {
    for (const h of [h1, h2]) await h.exec('nft', ['delete', 'table', 'inet', 'probe'], { check: false });
  });
  const webIp = await containerIp(h1, 'web', 'appnet');
  const http = await h2.docker(['exec', 'cli2', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${webIp} 80`], { check: false });
  t.match(http.stdout, /tsnet-lab-ok/, 'TCP across hosts');
  t.ok(await canPing(h2, 'cli2', webIp), 'ping across hosts');
  for (const h of [h1, h2]) {
    t.match((await h.exec('nft', ['list', 'table', 'inet', 'probe'])).stdout, /counter packets 0 bytes 0/, `host ${h.index}: no overlay packet went through the host's forward hook`);
    const ct = await h.exec('conntrack', ['-L', '-s', webIp], { check: false });
    const flows = ct.stdout.split('\n').filter((l) => l.includes(webIp));
    t.same(flows, [], `host ${h.index}: conntrack holds no flow of the overlay's containers`);
    const vx = await h.exec('conntrack', ['-L', '-p', 'udp', '--dport', '4789'], { check: false });
    t.same(vx.stdout.split('\n').filter((l) => l.includes('dport=4789')), [], `host ${h.index}: VXLAN between members is not tracked`);
  }
});

t.test('addresses stay unique across 30 containers started in parallel on three hosts', heavyOnly(), async (t) => {
  const starts = [];
  for (let i = 0; i < 30; i++) {
    const h = lab.hosts[i % 3]!;
    starts.push(h.docker(['run', '-d', '--name', `p${i}`, '--network', 'appnet', IMAGE, 'sleep', '3600']));
  }
  await Promise.all(starts);
  const ips: string[] = [];
  for (let i = 0; i < 30; i++) ips.push(await containerIp(lab.hosts[i % 3]!, `p${i}`, 'appnet'));
  t.equal(new Set(ips).size, 30, `30 distinct addresses: ${ips.join(' ')}`);
  // And they reach each other across hosts.
  await waitFor('convergence', async () => (await neighbours(h1)).includes(ips[29]!), 5000, 100);
  t.ok(await canPing(h1, 'p0', ips[29]!), 'p0 (host 1) -> p29 (host 3)');
  t.ok(await canPing(h3, 'p29', ips[1]!), 'p29 (host 3) -> p1 (host 2)');
  const blocks = (await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.200.0.0_16/blocks/', '--keys-only'])).stdout.split('\n').filter(Boolean);
  t.ok(blocks.length >= 3, `each host leased its own block(s): ${blocks.length}`);
});

t.test('a static --ip is checked cluster-wide', async (t) => {
  await h1.docker(['run', '-d', '--name', 's1', '--network', 'appnet', '--ip', '10.200.200.10', IMAGE, 'sleep', '3600']);
  const dup = await h2.docker(['run', '-d', '--name', 's2', '--network', 'appnet', '--ip', '10.200.200.10', IMAGE, 'sleep', '60'], { check: false });
  t.not(dup.exitCode, 0, 'the same static address on another host is refused');
  t.match(dup.stderr, /already claimed/);
  // An address inside another host's block: confirmed by that host, or refused when in use there.
  const taken = await containerIp(h1, 'web', 'appnet');
  const inUse = await h2.docker(['run', '-d', '--name', 's3', '--network', 'appnet', '--ip', taken, IMAGE, 'sleep', '60'], { check: false });
  t.not(inUse.exitCode, 0, 'an address host 1 handed out cannot be taken on host 2');
  const parts = taken.split('.');
  const freeInBlock = `${parts[0]}.${parts[1]}.${parts[2]}.${Number(parts[3]) + 40}`;
  await h2.docker(['run', '-d', '--name', 's4', '--network', 'appnet', '--ip', freeInBlock, IMAGE, 'sleep', '3600']);
  t.equal(await containerIp(h2, 's4', 'appnet'), freeInBlock, 'a free address in host 1\'s block, confirmed by host 1');
  await waitFor('host 1 sees s4', async () => (await neighbours(h1)).includes(freeInBlock), 5000, 100);
  t.ok(await canPing(h1, 'web', freeInBlock), 'and reachable');
});

t.test('etcd down: traffic continues, new containers attach from leased blocks, state converges when it returns', async (t) => {
  const before = await containerIp(h2, 'cli2', 'appnet');
  await lab.stopEtcd();
  t.ok(await canPing(h1, 'web', before), 'existing traffic continues without etcd');
  await h2.docker(['run', '-d', '--name', 'late', '--network', 'appnet', IMAGE, 'sleep', '3600']);
  const lateIp = await containerIp(h2, 'late', 'appnet');
  t.match(lateIp, /^10\.200\./, 'a new container attaches from the host\'s leased block');
  t.ok(await canPing(h2, 'late', 'cli2'), 'and works locally at once');
  await lab.startEtcd();
  await waitFor('host 1 learns the late container', async () => (await neighbours(h1)).includes(lateIp), 20_000, 200);
  t.ok(await canPing(h1, 'web', lateIp), 'host 1 reaches the container started during the outage');
  await h2.docker(['run', '-d', '--name', 'after', '--network', 'appnet', IMAGE, 'sleep', '3600']);
  const afterIp = await containerIp(h2, 'after', 'appnet');
  await waitFor('host 1 learns the next one', async () => (await neighbours(h1)).includes(afterIp), 5000, 100);
  t.ok(await canPing(h1, 'web', afterIp), 'a container started after etcd returned is reachable from host 1');
});

t.test('a VXLAN packet from a non-member host is dropped', async (t) => {
  const target = await containerIp(h1, 'web', 'appnet');
  const vni = await vniOf(h1);
  // The attacker: a VTEP of its own in the outside namespace, right VNI, aimed at host 1.
  await lab.outside('ip', ['link', 'add', 'evil', 'type', 'vxlan', 'id', vni, 'dstport', '4789', 'remote', h1.lanIp, 'local', '10.99.0.100', 'dev', 'eth0']);
  await lab.outside('ip', ['addr', 'add', '10.200.250.250/16', 'dev', 'evil']);
  await lab.outside('ip', ['link', 'set', 'evil', 'up']);
  t.teardown(() => lab.outside('ip', ['link', 'del', 'evil'], { check: false }));
  const counter = async (): Promise<number> => Number(/counter packets (\d+)/.exec((await h1.exec('nft', ['list', 'chain', 'inet', 'tsnet', 'vxlan_in'])).stdout)?.[1] ?? -1);
  const before = await counter();
  t.not((await lab.outside('ping', ['-c', '2', '-W', '1', target], { check: false })).exitCode, 0, 'the forged traffic gets no answer');
  t.ok((await counter()) > before, 'host 1 dropped it at the VXLAN port');
});

t.test('a host whose plugin stops and whose lease expires disappears from the others', async (t) => {
  const ip3 = await containerIp(h3, 'cli3', 'appnet');
  t.match(await neighbours(h1), ip3, 'host 1 knows host 3\'s endpoint');
  await h3.stopTsnet('SIGKILL');
  await waitFor('lease expiry', async () => !(await neighbours(h1)).includes(ip3), (LEASE_TTL + 10) * 1000, 250);
  const fdb = await ov(h1, 'bridge', ['fdb', 'show', 'dev', 'VX']);
  t.notMatch(fdb, /dst 10\.99\.0\.13/, 'no FDB entry for host 3 left on host 1');
  await h3.startTsnet();
  await waitFor('host 3 back', async () => (await neighbours(h1)).includes(ip3), 10_000, 200);
  t.ok(await canPing(h1, 'web', ip3), 'a restarted plugin rebuilds its overlay state: host 3 reachable again');
});

t.test('bad overlay input: clear errors, nothing created', async (t) => {
  const noSubnet = await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', 'bad1'], { check: false });
  t.not(noSubnet.exitCode, 0);
  t.match(noSubnet.stderr, /explicit --subnet/);
  const vni = await vniOf(h1);
  const clash = await h2.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', `tsnet.vni=${vni}`, '--subnet', '10.201.0.0/16', 'bad2'], { check: false });
  t.not(clash.exitCode, 0);
  t.match(clash.stderr, /already used by overlay 10\.200\.0\.0\/16/);
  const range = await h2.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', 'tsnet.vni=16777216', '--subnet', '10.202.0.0/16', 'bad3'], { check: false });
  t.match(range.stderr, /tsnet\.vni: 16777216 is out of range 1…16777215/);
  const peers = await h2.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', 'tsnet.peers=10.99.0.11,nonsense', '--subnet', '10.203.0.0/16', 'bad4'], { check: false });
  t.match(peers.stderr, /tsnet\.peers: "nonsense" is not an IP address/);
  const mixed = await h2.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', `tsnet.peers=${h1.lanIp6}`, '--subnet', '10.205.0.0/16', 'bad6'], { check: false });
  t.match(mixed.stderr, /tsnet\.peers: "fd00:99::11" is IPv6 but this host's VTEP address 10\.99\.0\.12 is IPv4/, 'a peer of the other family than this host\'s VTEP');
  const docIpam = await h2.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.204.0.0/16', 'bad5'], { check: false });
  t.match(docIpam.stderr, /needs --ipam-driver tsnet/);
  const vxlans = JSON.parse((await h2.exec('ip', ['-json', 'link', 'show', 'type', 'vxlan'])).stdout) as unknown[];
  t.equal(vxlans.length, 0, 'no VXLAN device left in the host namespace by the refused creates');
  t.same(await overlayNamespaces(h2), [await overlayNetns(h2, 'appnet')], 'no overlay namespace left by them either');
});

t.test('static peers: an overlay with no etcd at all', async (t) => {
  // Hosts 1 and 2, static peers, each handing out addresses from its own --ip-range.
  const common = ['-o', 'tsnet.mode=overlay', '-o', `tsnet.peers=${h1.lanIp},${h2.lanIp}`, '--subnet', '10.230.0.0/24', '--gateway', '10.230.0.1'];
  await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', ...common, '--ip-range', '10.230.0.64/26', 'peers']);
  await h2.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', ...common, '--ip-range', '10.230.0.128/26', 'peers']);
  await h1.docker(['run', '-d', '--name', 'pa', '--network', 'peers', IMAGE, 'sleep', '3600']);
  await h2.docker(['run', '-d', '--name', 'pb', '--network', 'peers', IMAGE, 'sleep', '3600']);
  const pb = await containerIp(h2, 'pb', 'peers');
  const last = Number(pb.split('.')[3]);
  t.ok(pb.startsWith('10.230.0.') && last >= 128 && last < 192, `host 2 allocates from its own range (${pb})`);
  t.ok(await canPing(h1, 'pa', pb), 'host 1 -> host 2 without a control plane');
  const keys = (await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.230', '--keys-only'])).stdout.trim();
  t.equal(keys, '', 'nothing of it in etcd');
});

t.test('an IPv6 underlay: VTEPs on the hosts\' IPv6 addresses, through etcd', async (t) => {
  for (const h of [h1, h2]) {
    await removeAll(h);
    await h.stopTsnet();
    await h.startTsnet({ TSNET_ADVERTISE_ADDR: h.lanIp6 });
  }
  current = 'v6u';
  const net = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.240.0.0/16', 'v6u'];
  for (const h of [h1, h2]) await h.docker(net);
  await h1.docker(['run', '-d', '--name', 'u1', '--network', 'v6u', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']);
  await h2.docker(['run', '-d', '--name', 'u2', '--network', 'v6u', IMAGE, 'sleep', '3600']);
  const ip1 = await containerIp(h1, 'u1', 'v6u');
  await waitFor('host 2 learns host 1\'s endpoint', async () => (await neighbours(h2)).includes(ip1), 5000, 100);
  t.ok(await canPing(h2, 'u2', ip1), 'host 2 -> host 1 over IPv6 VXLAN');
  const http = await h2.docker(['exec', 'u2', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${ip1} 80`], { check: false });
  t.match(http.stdout, /tsnet-lab-ok/, 'TCP across hosts');
  const vx = JSON.parse(await ov(h2, 'ip', ['-d', '-json', 'link', 'show', 'dev', 'VX'])) as Array<{ mtu: number; linkinfo: { info_data: { local6?: string } } }>;
  t.equal(vx[0]?.linkinfo.info_data.local6, h2.lanIp6, 'the VXLAN device sends from the advertised IPv6 address');
  t.equal((await h2.docker(['exec', 'u2', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim(), '1430', 'MTU is the underlay minus 70 over IPv6');
  const fdb = await ov(h2, 'bridge', ['fdb', 'show', 'dev', 'VX']);
  t.match(fdb, new RegExp(`00:00:00:00:00:00 dst ${h1.lanIp6} (link-netnsid \\d+ )?self permanent`), 'flood entry for host 1 at its IPv6 VTEP');
  t.match((await h2.exec('nft', ['list', 'set', 'inet', 'tsnet', 'vtep6'])).stdout, h1.lanIp6, 'the port guard admits host 1 by its IPv6 address');
  // A forged IPv6 VTEP on the outside host, right VNI, aimed at host 1.
  const vni = await vniOf(h1);
  await lab.outside('ip', ['link', 'add', 'evil6', 'type', 'vxlan', 'id', vni, 'dstport', '4789', 'remote', h1.lanIp6, 'local', OUTSIDE_IP6, 'dev', 'eth0']);
  await lab.outside('ip', ['addr', 'add', '10.240.250.250/16', 'dev', 'evil6']);
  await lab.outside('ip', ['link', 'set', 'evil6', 'up']);
  t.teardown(() => lab.outside('ip', ['link', 'del', 'evil6'], { check: false }));
  const counter6 = async (): Promise<number> => Number(/ip6 saddr != @vtep6 counter packets (\d+)/.exec((await h1.exec('nft', ['list', 'chain', 'inet', 'tsnet', 'vxlan_in'])).stdout)?.[1] ?? -1);
  const before = await counter6();
  t.not((await lab.outside('ping', ['-c', '2', '-W', '1', ip1], { check: false })).exitCode, 0, 'forged IPv6 VXLAN gets no answer');
  t.ok((await counter6()) > before, 'host 1 dropped it at the VXLAN port');
});

t.test("a host's VTEP address changes: its restarted plugin re-creates the VXLAN port and the others follow", async (t) => {
  const moved = 'fd00:99::22';
  // As a renumbered host sees it: the new address in, the old one gone.
  await h2.exec('ip', ['addr', 'add', `${moved}/64`, 'dev', 'eth0', 'nodad']);
  await h2.exec('ip', ['addr', 'del', `${h2.lanIp6}/64`, 'dev', 'eth0']);
  await h2.stopTsnet();
  await h2.startTsnet({ TSNET_ADVERTISE_ADDR: moved });
  // (The start-up reconcile runs once the socket listens.)
  const sendsFrom = async (): Promise<string | undefined> =>
    (JSON.parse(await ov(h2, 'ip', ['-d', '-json', 'link', 'show', 'type', 'vxlan'])) as Array<{ linkinfo: { info_data: { local6?: string } } }>)[0]?.linkinfo.info_data.local6;
  await waitFor('the start-up reconcile', async () => (await sendsFrom()) === moved, 5000, 100);
  t.equal(await sendsFrom(), moved, 'host 2 sends from its new address');
  t.match(await fs.readFile(h2.tsnetLog, 'utf8'), /this host's VTEP address changed; re-creating the VXLAN port/);
  await waitFor('host 1 follows', async () => (await ov(h1, 'bridge', ['fdb', 'show', 'dev', 'VX'])).includes(`dst ${moved} `), 5000, 100);
  t.notMatch(await ov(h1, 'bridge', ['fdb', 'show', 'dev', 'VX']), new RegExp(`dst ${h2.lanIp6} `), 'no entry for the old address left on host 1');
  const ip1 = await containerIp(h1, 'u1', 'v6u');
  const ip2 = await containerIp(h2, 'u2', 'v6u');
  t.ok(await canPing(h2, 'u2', ip1), 'the running container on host 2 reaches host 1 again');
  t.ok(await canPing(h1, 'u1', ip2), 'and host 1 reaches it');
});

t.test('ICC off, --internal, published ports and isolation on overlays', async (t) => {
  for (const h of [h1, h2]) {
    await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', 'com.docker.network.bridge.enable_icc=false', '--subnet', '10.221.0.0/16', 'noicc']);
    await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--internal', '--subnet', '10.222.0.0/16', 'inov']);
  }
  await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.223.0.0/24', 'plain']);
  await h1.docker(['run', '-d', '--name', 'n1', '--network', 'noicc', '-p', '8080:80', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']);
  await h1.docker(['run', '-d', '--name', 'n2', '--network', 'noicc', IMAGE, 'sleep', '3600']);
  await h2.docker(['run', '-d', '--name', 'n3', '--network', 'noicc', IMAGE, 'sleep', '3600']);
  await h1.docker(['run', '-d', '--name', 'i1', '--network', 'inov', IMAGE, 'sleep', '3600']);
  await h2.docker(['run', '-d', '--name', 'i2', '--network', 'inov', IMAGE, 'sleep', '3600']);
  await h1.docker(['run', '-d', '--name', 'b1', '--network', 'plain', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']);
  const n1 = await containerIp(h1, 'n1', 'noicc');
  const i2 = await containerIp(h2, 'i2', 'inov');
  const b1 = await containerIp(h1, 'b1', 'plain');
  await waitFor("host 2 learns host 1's endpoints", async () => (await ov(h2, 'ip', ['neigh', 'show', 'dev', 'VX'], 'noicc')).includes(n1), 5000, 100);
  await waitFor("host 1 learns i2", async () => (await ov(h1, 'ip', ['neigh', 'show', 'dev', 'VX'], 'inov')).includes(i2), 5000, 100);
  t.notOk(await canPing(h1, 'n2', n1, 1), 'ICC off: no traffic between containers of the network on one host');
  t.notOk(await canPing(h2, 'n3', n1, 1), 'ICC off: nor across hosts');
  t.equal((await h2.docker(['exec', 'n3', 'ping', '-c', '1', '-W', '2', '10.99.0.100'], { check: false })).exitCode, 0, 'ICC off: egress still works');
  t.match((await lab.outside('curl', ['-s', '--max-time', '3', `http://${h1.lanIp}:8080/`], { check: false })).stdout, /tsnet-lab-ok/, 'a published port of an overlay container, from outside');
  const hairpin = await h1.docker(['exec', 'n2', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${h1.lanIp} 8080`], { check: false });
  t.match(hairpin.stdout, /tsnet-lab-ok/, 'ICC off: a container reaches another through its published port');
  t.ok(await canPing(h1, 'i1', i2, 2), '--internal: its containers reach each other across hosts');
  t.notOk(await canPing(h2, 'i2', '10.99.0.100', 1), '--internal: nothing leaves the network');
  t.notOk(await canPing(h1, 'b1', n1, 1), 'a bridge network cannot reach an overlay container');
  const toBridge = await h1.docker(['exec', 'n2', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 2 ${b1} 80`], { check: false });
  t.notMatch(toBridge.stdout, /tsnet-lab-ok/, 'an overlay container cannot reach a bridge network');
  t.notOk(await canPing(h1, 'i1', n1, 1), 'one overlay cannot reach another');
});

t.test('restart: the overlay namespace and its devices come back as the store says', async (t) => {
  const ns = await overlayNetns(h1, 'inov');
  const i2 = await containerIp(h2, 'i2', 'inov');
  await h1.stopTsnet();
  await h1.startTsnet();
  t.ok(await canPing(h1, 'i1', i2, 2), 'a plain restart changes nothing: traffic goes on');
  await h1.stopTsnet();
  // The switching half gone (its containers lose their link with it).
  await h1.exec('ip', ['netns', 'del', ns]);
  await h1.startTsnet();
  await waitFor('the namespace back', async () => (await overlayNamespaces(h1)).includes(ns), 10_000, 200);
  // The namespace shows before its VXLAN port (reconcile makes one, then the other, ~0.1 s apart).
  const port = await waitFor('its VXLAN port', async () => (await h1.exec('ip', ['-n', ns, '-d', 'link', 'show', 'type', 'vxlan'], { check: false })).stdout || undefined, 5000, 100);
  t.match(port, /tsvx-/, 'the VXLAN port re-created in it');
  await h1.docker(['run', '-d', '--name', 'i3', '--network', 'inov', IMAGE, 'sleep', '3600']);
  await waitFor('host 1 learns i2 again', async () => (await ov(h1, 'ip', ['neigh', 'show', 'dev', 'VX'], 'inov')).includes(i2), 10_000, 200);
  t.ok(await canPing(h1, 'i3', i2, 2), 'a container started after the repair reaches host 2');
});

t.test('network rm leaves nothing: no namespace, no link, no rule', async (t) => {
  for (const h of lab.hosts) await removeAll(h);
  for (const h of lab.hosts) {
    const left = await tsnetTraces(h);
    t.same(left.namespaces, [], `host ${h.index}: no overlay namespace`);
    t.same(left.links, [], `host ${h.index}: no link`);
    t.notOk(left.nftTable, `host ${h.index}: no nftables table`);
  }
});
