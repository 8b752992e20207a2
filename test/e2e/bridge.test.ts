// End to end: a real dockerd (in the lab's namespaces) uses tsnet as a v1
// plugin; every check is packets flowing (or not) between real containers.
import t from 'tap';
import { DOCKERD, Lab } from '../helpers/lab.js';
import { canPing, containerIp, removeAll, runContainer, tsnetTraces } from '../helpers/docker.js';

const lab = await Lab.start({ hosts: 1 });
t.teardown(() => lab.stop());
const h = lab.host;
t.afterEach(async () => {
  await removeAll(h);
});

t.test('default network: ping by IP, by name and by alias; the host reaches containers', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'n1']);
  const subnet = (await h.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}} {{(index .IPAM.Config 0).Gateway}}', 'n1'])).stdout.trim();
  t.match(subnet, /^10\.210\.\d+\.0\/24 10\.210\.\d+\.1$/, 'subnet and gateway from the default pool');
  await runContainer(h, 'c1', 'n1', ['--network-alias', 'web']);
  await runContainer(h, 'c2', 'n1');
  const ip1 = await containerIp(h, 'c1', 'n1');
  t.match(ip1, /^10\.210\.\d+\.2$/, 'first container gets the first free address');
  t.ok(await canPing(h, 'c2', ip1), 'ping by IP');
  t.ok(await canPing(h, 'c2', 'c1'), 'ping by name (Docker embedded DNS)');
  t.ok(await canPing(h, 'c2', 'web'), 'ping by alias');
  t.ok(await canPing(h, 'c1', 'c2'), 'ping the other way');
  const host = await h.exec('ping', ['-c', '1', '-W', '2', ip1], { check: false });
  t.equal(host.exitCode, 0, 'the host reaches a container on its bridge');
  const route = (await h.docker(['exec', 'c1', 'ip', 'route'])).stdout;
  t.match(route, /default via 10\.210\.\d+\.1 dev eth0/, 'default route via the tsnet gateway (no docker_gwbridge)');
  const macs = (await h.docker(['inspect', '-f', '{{(index .NetworkSettings.Networks "n1").MacAddress}}', 'c1'])).stdout.trim();
  t.match(macs, /^02:[0-9a-f]{2}(:[0-9a-f]{2}){4}$/, 'dockerd knows the MAC tsnet chose');
  // TCP as well as ICMP.
  await h.docker(['exec', '-d', 'c1', 'httpd', '-f', '-p', '8080', '-h', '/www']);
  const http = await h.docker(['exec', 'c2', 'sh', '-c', 'for i in 1 2 3 4 5; do printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc c1 8080 && break; sleep 0.3; done']);
  t.match(http.stdout, /tsnet-lab-ok/, 'TCP between containers');
});

t.test(`what the README says per dockerd version (${DOCKERD.series}): IPv6 off on an IPv4-only link, docker port empty`, async (t) => {
  const version = (await h.docker(['version', '--format', '{{.Server.Version}}'])).stdout.trim();
  t.match(version, new RegExp(`^${DOCKERD.series.replace('.', '\\.')}\\.`), `the lab runs dockerd ${version}`);
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'v4only']);
  await runContainer(h, 'v4', 'v4only', ['-p', '18080:80']);
  const inside = (await h.docker(['exec', 'v4', 'cat', '/proc/sys/net/ipv6/conf/eth0/disable_ipv6'])).stdout.trim();
  // dockerd turns IPv6 off on a container link with no IPv6 address: 20.10
  // did, 26.0.0 and 26.0.1 did not (CVE-2024-32473), 26.0.2+ does again.
  t.equal(inside, '1', `container end: IPv6 off (dockerd ${version})`);
  const status = JSON.parse((await h.tsnetctl('status')).stdout) as { endpoints: Array<{ hostVeth: string; ports: string[] }> };
  const ep = status.endpoints[0]!;
  t.equal((await h.exec('cat', [`/proc/sys/net/ipv6/conf/${ep.hostVeth}/disable_ipv6`])).stdout.trim(), '1', 'host end: IPv6 off on every version (tsnet)');
  t.ok(ep.ports.includes('0.0.0.0:18080->80/tcp'), `tsnetctl status lists the mapping: ${ep.ports.join(', ')}`);
  const port = await h.docker(['port', 'v4'], { check: false });
  t.equal(port.stdout.trim(), '', 'docker port never shows a remote driver\'s mappings (modern-dockerd.md §2)');
  const ps = (await h.docker(['ps', '--filter', 'name=v4', '--format', '{{.Ports}}'])).stdout.trim();
  t.equal(ps, '', 'nor does docker ps');
});

t.test('--subnet, --gateway, --ip-range and --aux-address', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.60.0.0/24', '--gateway', '10.60.0.254', '--ip-range', '10.60.0.8/29', '--aux-address', 'router=10.60.0.9', 'n2']);
  await runContainer(h, 'ca', 'n2');
  await runContainer(h, 'cb', 'n2');
  t.equal(await containerIp(h, 'ca', 'n2'), '10.60.0.8', 'first address of the ip-range');
  t.equal(await containerIp(h, 'cb', 'n2'), '10.60.0.10', 'the aux address is never handed out');
  t.ok(await canPing(h, 'ca', '10.60.0.254'), 'gateway answers at --gateway');
  t.ok(await canPing(h, 'ca', 'cb'));
  await runContainer(h, 'cs', 'n2', ['--ip', '10.60.0.100']);
  t.equal(await containerIp(h, 'cs', 'n2'), '10.60.0.100', '--ip outside the ip-range but inside the subnet');
  t.ok(await canPing(h, 'ca', '10.60.0.100'));
  const dup = await h.docker(['run', '-d', '--name', 'dup', '--network', 'n2', '--ip', '10.60.0.100', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(dup.exitCode, 0, 'a static address already in use is refused');
  t.match(dup.stderr, /already allocated/, 'with a clear reason');
  const aux = await h.docker(['run', '-d', '--name', 'aux', '--network', 'n2', '--ip', '10.60.0.9', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(aux.exitCode, 0, 'the aux address cannot be taken by --ip either');
});

t.test('a tsnet network on Docker\'s own IPAM', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--subnet', '10.61.0.0/24', 'n3']);
  await runContainer(h, 'cx', 'n3');
  await runContainer(h, 'cy', 'n3');
  t.equal(await containerIp(h, 'cx', 'n3'), '10.61.0.2');
  t.ok(await canPing(h, 'cx', 'cy'), 'ping by name');
});

t.test('address exhaustion gives a clear error', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.62.0.0/28', '--ip-range', '10.62.0.0/30', 'tiny']);
  await runContainer(h, 't1', 'tiny');
  await runContainer(h, 't2', 'tiny');
  const third = await h.docker(['run', '-d', '--name', 't3', '--network', 'tiny', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(third.exitCode, 0);
  t.match(third.stderr, /no free address left in ip-range 10\.62\.0\.0\/30/);
});

t.test('connect and disconnect a second network', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'front']);
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'back']);
  await runContainer(h, 'app', 'front');
  await runContainer(h, 'db', 'back');
  const dbIp = await containerIp(h, 'db', 'back');
  // By IP: an unknown name would wait for the embedded DNS's upstream to time out.
  t.notOk(await canPing(h, 'app', dbIp, 1), 'not connected yet');
  await h.docker(['network', 'connect', 'back', 'app']);
  const links = (await h.docker(['exec', 'app', 'ip', '-o', 'link'])).stdout;
  t.match(links, /eth1/, 'eth1 appears');
  t.ok(await canPing(h, 'app', 'db'), 'reaches the second network by name');
  await h.docker(['network', 'disconnect', 'back', 'app']);
  t.notMatch((await h.docker(['exec', 'app', 'ip', '-o', 'link'])).stdout, /eth1/, 'eth1 removed');
  t.notOk(await canPing(h, 'app', dbIp, 1), 'unreachable again');
});

t.test('isolation: two tsnet networks, and tsnet vs Docker\'s default bridge, both ways', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'iso1']);
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'iso2']);
  await runContainer(h, 'i1', 'iso1');
  await runContainer(h, 'i2', 'iso2');
  await runContainer(h, 'd0', undefined);
  await runContainer(h, 'dn', undefined, []);
  await h.docker(['network', 'create', 'dockernet']);
  await h.docker(['network', 'connect', 'dockernet', 'dn']);
  const ip1 = await containerIp(h, 'i1', 'iso1');
  const ip2 = await containerIp(h, 'i2', 'iso2');
  const ip0 = await containerIp(h, 'd0', 'bridge');
  const ipn = await containerIp(h, 'dn', 'dockernet');
  t.notOk(await canPing(h, 'i1', ip2, 1), 'iso1 -> iso2 dropped');
  t.notOk(await canPing(h, 'i2', ip1, 1), 'iso2 -> iso1 dropped');
  t.notOk(await canPing(h, 'i1', ip0, 1), 'tsnet -> docker0 dropped');
  t.notOk(await canPing(h, 'd0', ip1, 1), 'docker0 -> tsnet dropped');
  t.notOk(await canPing(h, 'i1', ipn, 1), 'tsnet -> user-defined Docker bridge dropped');
  t.notOk(await canPing(h, 'dn', ip1, 1), 'user-defined Docker bridge -> tsnet dropped');
  t.ok(await canPing(h, 'i1', '10.99.0.100'), 'but the outside world is reachable');
  await h.docker(['network', 'rm', 'dockernet'], { check: false });
});

t.test('network rm is refused while a container uses it', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'busy']);
  await runContainer(h, 'user', 'busy');
  const rm = await h.docker(['network', 'rm', 'busy'], { check: false });
  t.not(rm.exitCode, 0);
  t.match(rm.stderr, /active endpoints/);
  await h.docker(['rm', '-f', 'user']);
  t.equal((await h.docker(['network', 'rm', 'busy'], { check: false })).exitCode, 0, 'removed once free');
});

t.test('bad options are refused with the option named, and nothing is created', async (t) => {
  const before = await tsnetTraces(h);
  for (const [opt, re] of [
    ['com.docker.network.driver.mtu=10', /com\.docker\.network\.driver\.mtu: 10 is out of range 68…65535/],
    ['com.docker.network.bridge.name=bad name!', /invalid interface name/],
    ['com.docker.network.bridge.enable_icc=maybe', /enable_icc: invalid boolean "maybe"/],
    ['tsnet.colour=blue', /unknown tsnet option "tsnet.colour"/],
  ] as const) {
    const r = await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', opt, 'bad'], { check: false });
    t.not(r.exitCode, 0, opt);
    t.match(r.stderr, re, opt);
  }
  const pool = await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.63.0.5/24', 'bad'], { check: false });
  t.not(pool.exitCode, 0);
  t.same(await tsnetTraces(h), before, 'no link or rule left by the failed creates');
  t.equal((await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.63.0.0/24', 'good'])).exitCode, 0, 'the plugin is still serving');
});

t.test('after everything is removed no tsnet link, address or rule is left', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'last']);
  await runContainer(h, 'l1', 'last');
  t.ok((await tsnetTraces(h)).links.length > 0, 'the network exists');
  await removeAll(h);
  t.same(await tsnetTraces(h), { links: [], nftTable: false, iptRules: [], namespaces: [] });
  const addrs = (await h.exec('ip', ['-o', 'addr'])).stdout;
  t.notMatch(addrs, /10\.210\./, 'no tsnet address in the host namespace');
});
