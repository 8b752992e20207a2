// Bridge parity against a real dockerd: outbound NAT, --internal, ICC,
// MTU, every -p form, and the security fixes Docker learned the hard way.
// The "outside" host on the lab LAN (10.99.0.100) plays the rest of the world.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { Lab, OUTSIDE_IP6, cleanEnv, waitFor } from '../helpers/lab.js';
import { canPing, containerIp, removeAll, runContainer } from '../helpers/docker.js';

const lab = await Lab.start({ hosts: 1 });
const h = lab.host;
const HOST = h.lanIp;
const background: ChildProcess[] = [];
t.teardown(async () => {
  for (const c of background) c.kill('SIGKILL');
  await lab.stop();
});
t.afterEach(() => removeAll(h));

function inOutside(script: string): ChildProcess {
  const c = spawn('ip', ['netns', 'exec', lab.outNs, process.execPath, '-e', script], { stdio: 'ignore', env: cleanEnv() });
  background.push(c);
  return c;
}

// The outside world: a TCP server that answers with the address it saw.
inOutside(`require('net').createServer(s => { s.on('error', () => {}); s.end(s.remoteAddress.replace('::ffff:', '') + '\\n'); }).listen(7000)`);
await waitFor(
  'outside whoami server',
  async () => (await lab.outside(process.execPath, ['-e', "require('net').connect(7000, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"], { check: false })).exitCode === 0,
);

async function whoami(container: string): Promise<string> {
  const r = await h.docker(['exec', container, 'sh', '-c', 'nc -w 3 10.99.0.100 7000 </dev/null'], { check: false });
  return r.stdout.trim();
}

async function curl(where: 'outside' | 'host', url: string): Promise<string | undefined> {
  const r =
    where === 'outside'
      ? await lab.outside('curl', ['-sg', '--max-time', '2', url], { check: false })
      : await h.exec('curl', ['-sg', '--max-time', '2', url], { check: false });
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
}

async function udpAsk(where: 'outside' | 'host', host: string, port: number): Promise<string | undefined> {
  const script = `const d=require('dgram').createSocket('udp4');d.on('message',m=>{console.log(String(m));process.exit(0)});d.send('ping',${port},'${host}');setTimeout(()=>process.exit(1),2000)`;
  const r = where === 'outside' ? await lab.outside(process.execPath, ['-e', script], { check: false }) : await h.exec(process.execPath, ['-e', script], { check: false });
  return r.exitCode === 0 ? r.stdout.trim() : undefined;
}

/** Every binding tsnet holds, as tsnetctl status lists them ("0.0.0.0:8080->80/tcp"). */
async function publishedPorts(): Promise<string[]> {
  const status = JSON.parse((await h.tsnetctl('status')).stdout) as { endpoints: Array<{ ports: string[] }> };
  return status.endpoints.flatMap((e) => e.ports);
}

async function rulesSnapshot(): Promise<{ nft: string; ipt: string }> {
  const nft = (await h.exec('nft', ['list', 'ruleset'])).stdout.replace(/counter packets \d+ bytes \d+/g, 'counter');
  const ipt = (await h.exec('iptables-save', [])).stdout.split('\n').filter((l) => !l.startsWith('#')).map((l) => l.replace(/\[\d+:\d+\]/g, '')).join('\n');
  return { nft, ipt };
}

const baseline = await rulesSnapshot();

t.test('outbound: masqueraded by default, container address kept when masquerade is off', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'masq']);
  await runContainer(h, 'm1', 'masq');
  t.equal(await whoami('m1'), HOST, 'the outside host sees the Docker host address');

  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.71.0.0/24', '-o', 'com.docker.network.bridge.enable_ip_masquerade=false', 'nomasq']);
  await runContainer(h, 'm2', 'nomasq');
  await lab.outside('ip', ['route', 'add', '10.71.0.0/24', 'via', HOST]);
  t.teardown(() => lab.outside('ip', ['route', 'del', '10.71.0.0/24'], { check: false }));
  t.equal(await whoami('m2'), '10.71.0.2', 'routed traffic keeps the container source address');
  t.equal((await h.exec('sysctl', ['-n', 'net.ipv4.ip_forward'])).stdout.trim(), '1', 'forwarding is on');
});

t.test('other LAN hosts cannot reach container addresses unless the network is routed', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.72.0.0/24', 'natnet']);
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.73.0.0/24', '-o', 'com.docker.network.bridge.gateway_mode_ipv4=routed', 'routednet']);
  await runContainer(h, 'n1', 'natnet');
  await runContainer(h, 'r1', 'routednet');
  await lab.outside('ip', ['route', 'add', '10.72.0.0/24', 'via', HOST]);
  await lab.outside('ip', ['route', 'add', '10.73.0.0/24', 'via', HOST]);
  t.teardown(async () => {
    await lab.outside('ip', ['route', 'del', '10.72.0.0/24'], { check: false });
    await lab.outside('ip', ['route', 'del', '10.73.0.0/24'], { check: false });
  });
  t.not((await lab.outside('ping', ['-c', '1', '-W', '1', '10.72.0.2'], { check: false })).exitCode, 0, 'nat mode: direct access dropped');
  t.equal((await lab.outside('ping', ['-c', '1', '-W', '2', '10.73.0.2'], { check: false })).exitCode, 0, 'routed mode: direct access allowed');
  t.equal(await whoami('r1'), '10.73.0.2', 'routed mode: no NAT');
});

t.test('--internal: nothing in or out; isolated gateway mode hides the host', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--internal', '--subnet', '10.74.0.0/24', 'inner']);
  await runContainer(h, 'in1', 'inner');
  await runContainer(h, 'in2', 'inner');
  t.ok(await canPing(h, 'in1', 'in2'), 'containers of an internal network talk to each other');
  t.notMatch((await h.docker(['exec', 'in1', 'ip', 'route'])).stdout, /default/, 'no default route');
  t.equal(await whoami('in1'), '', 'cannot reach the outside host');
  await lab.outside('ip', ['route', 'add', '10.74.0.0/24', 'via', HOST]);
  t.teardown(() => lab.outside('ip', ['route', 'del', '10.74.0.0/24'], { check: false }));
  t.not((await lab.outside('ping', ['-c', '1', '-W', '1', '10.74.0.2'], { check: false })).exitCode, 0, 'cannot be reached from outside');
  t.ok(await canPing(h, 'in1', '10.74.0.1'), 'documented: the host still answers on the gateway address');

  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--internal', '--subnet', '10.75.0.0/24', '-o', 'com.docker.network.bridge.gateway_mode_ipv4=isolated', 'sealed']);
  await runContainer(h, 'is1', 'sealed');
  await runContainer(h, 'is2', 'sealed');
  t.ok(await canPing(h, 'is1', 'is2'), 'isolated: containers still talk to each other');
  t.notOk(await canPing(h, 'is1', '10.75.0.1', 1), 'isolated: no host-reachable gateway');
  const brAddrs = (await h.exec('ip', ['-o', 'addr'])).stdout;
  t.notMatch(brAddrs, /10\.75\./, 'isolated: the bridge has no address');
});

t.test('icc=false drops container-to-container traffic, published ports still answer', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'com.docker.network.bridge.enable_icc=false', 'noicc']);
  await runContainer(h, 'ic1', 'noicc');
  await runContainer(h, 'ic2', 'noicc', ['-p', '8088:80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  t.notOk(await canPing(h, 'ic1', await containerIp(h, 'ic2', 'noicc'), 1), 'ping between containers dropped');
  const viaHost = await h.docker(['exec', 'ic1', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${HOST} 8088`], { check: false });
  t.match(viaHost.stdout, /tsnet-lab-ok/, 'the published port answers through the host address');
});

t.test('MTU: the option reaches the container; the default follows a smaller uplink', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'com.docker.network.driver.mtu=1400', 'mtu1400']);
  await runContainer(h, 'mt1', 'mtu1400');
  t.equal((await h.docker(['exec', 'mt1', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim(), '1400');
  await h.exec('ip', ['link', 'set', 'eth0', 'mtu', '1450']);
  t.teardown(() => h.exec('ip', ['link', 'set', 'eth0', 'mtu', '1500']));
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'mtudefault']);
  await runContainer(h, 'mt2', 'mtudefault');
  t.equal((await h.docker(['exec', 'mt2', 'cat', '/sys/class/net/eth0/mtu'])).stdout.trim(), '1450', 'follows the 1450 uplink');
});

t.test('published ports: every -p form, from outside, from the host, by hairpin; loopback stays local', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'pub']);
  await runContainer(h, 'web', 'pub', ['-p', '8080:80', '-p', '127.0.0.1:8081:80', '-p', `${HOST}:8082:80`, '-p', '8090-8095:80', '-p', '9999:9999/udp'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  // A UDP echo service inside the container's namespace.
  const pid = (await h.docker(['inspect', '-f', '{{.State.Pid}}', 'web'])).stdout.trim();
  const udp = spawn('nsenter', ['-t', pid, '-n', process.execPath, '-e', `const d=require('dgram').createSocket('udp4');d.on('message',(m,r)=>d.send('echo:'+m,r.port,r.address));d.bind(9999)`], { stdio: 'ignore', env: cleanEnv() });
  background.push(udp);
  await runContainer(h, 'peer', 'pub');
  const ok = 'tsnet-lab-ok';

  t.equal(await curl('outside', `http://${HOST}:8080/`), ok, 'wildcard port from another host');
  t.equal(await curl('outside', `http://${HOST}:8082/`), ok, 'port bound to the host address, from another host');
  t.equal(await curl('outside', `http://${HOST}:8090/`), ok, 'a host-port range picks its first free port');
  t.equal(await curl('outside', `http://${HOST}:8081/`), undefined, 'a 127.0.0.1 port is not reachable from another host');
  t.equal(await curl('outside', `http://[${h.lanIp6}]:8080/`), ok, 'IPv6 clients of an IPv4-only container are relayed, as docker-proxy does');
  t.equal(await curl('host', 'http://[::1]:8080/'), ok, 'also from the host on ::1');
  t.equal(await curl('outside', `http://[${h.lanIp6}]:8082/`), undefined, 'a port bound to an IPv4 address has no IPv6 twin');
  t.equal(await curl('host', 'http://127.0.0.1:8080/'), ok, 'wildcard port from the host via 127.0.0.1');
  t.equal(await curl('host', 'http://127.0.0.1:8081/'), ok, '127.0.0.1 port from the host');
  t.equal(await curl('host', `http://${HOST}:8080/`), ok, 'wildcard port from the host via its address');
  t.equal(await curl('host', `http://${HOST}:8082/`), ok, 'host-address port from the host');
  const hairpin = await h.docker(['exec', 'peer', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${HOST} 8080`], { check: false });
  t.match(hairpin.stdout, ok, 'hairpin from a container of the same network');
  const self = await h.docker(['exec', 'web', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 ${HOST} 8080`], { check: false });
  t.match(self.stdout, ok, 'hairpin from the publishing container itself');
  await waitFor('udp echo', async () => (await udpAsk('outside', HOST, 9999)) === 'echo:ping', 10_000, 300);
  t.equal(await udpAsk('outside', HOST, 9999), 'echo:ping', 'UDP from another host');
  t.equal(await udpAsk('host', '127.0.0.1', 9999), 'echo:ping', 'UDP from the host via 127.0.0.1');

  // The conflicting mapping gets a clear error.
  const clash = await h.docker(['run', '-d', '--name', 'clash', '--network', 'pub', '-p', '8080:80', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(clash.exitCode, 0, 'a host port already published is refused');
  t.match(clash.stderr, /8080\/tcp is already published/);
  const busyHost = await h.docker(['run', '-d', '--name', 'clash2', '--network', 'pub', '-p', '127.0.0.1:8080:80', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(busyHost.exitCode, 0, 'a loopback binding under a wildcard one is refused too');
  const notLocal = await h.docker(['run', '-d', '--name', 'clash3', '--network', 'pub', '-p', '192.0.2.1:8300:80', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(notLocal.exitCode, 0);
  t.match(notLocal.stderr, /HostIP 192\.0\.2\.1 is not an address of this host/);

  // Stop the container: every mapping goes with it.
  await h.docker(['rm', '-f', 'web']);
  t.equal(await curl('outside', `http://${HOST}:8080/`), undefined, 'mapping removed with the container');
  t.equal(await curl('host', 'http://127.0.0.1:8081/'), undefined, 'loopback proxy closed');
  const maps = (await h.exec('nft', ['list', 'map', 'inet', 'tsnet', 'pm4_any'])).stdout;
  t.notMatch(maps, /elements/, 'no DNAT element left');
});

t.test('a crafted packet to 127.0.0.1 from another host is dropped', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'lo']);
  await runContainer(h, 'loweb', 'lo', ['-p', '127.0.0.1:8181:80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  t.equal(await curl('host', 'http://127.0.0.1:8181/'), 'tsnet-lab-ok', 'works locally');
  // The attacker (moby/moby#45610): route 127.0.0.1 to the Docker host's MAC.
  await lab.outside('sysctl', ['-qw', 'net.ipv4.conf.eth0.route_localnet=1']);
  await lab.outside('ip', ['route', 'del', 'local', '127.0.0.0/8', 'dev', 'lo', 'table', 'local'], { check: false });
  await lab.outside('ip', ['route', 'del', 'local', '127.0.0.1', 'dev', 'lo', 'table', 'local'], { check: false });
  await lab.outside('ip', ['route', 'add', '127.0.0.1/32', 'via', HOST, 'dev', 'eth0', 'src', '10.99.0.100']);
  t.teardown(async () => {
    await lab.outside('ip', ['route', 'del', '127.0.0.1/32'], { check: false });
    await lab.outside('ip', ['route', 'add', 'local', '127.0.0.0/8', 'dev', 'lo', 'table', 'local'], { check: false });
    await lab.outside('ip', ['route', 'add', 'local', '127.0.0.1', 'dev', 'lo', 'table', 'local'], { check: false });
    await lab.outside('sysctl', ['-qw', 'net.ipv4.conf.eth0.route_localnet=0'], { check: false });
  });
  const counter = async (): Promise<number> => {
    const out = (await h.exec('nft', ['list', 'chain', 'inet', 'tsnet', 'raw_prerouting'])).stdout;
    return Number(/ip daddr 127\.0\.0\.0\/8 .*counter packets (\d+)/.exec(out)?.[1] ?? -1);
  };
  const before = await counter();
  t.equal(await curl('outside', 'http://127.0.0.1:8181/'), undefined, 'crafted connection fails');
  t.ok((await counter()) > before, 'the packets reached the host and tsnet\'s raw drop counted them');
});

t.test('-P picks free ports from the ephemeral range', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'pp']);
  await runContainer(h, 'auto', 'pp', ['-P', '--expose', '80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  const [lo, hi] = (await h.exec('sysctl', ['-n', 'net.ipv4.ip_local_port_range'])).stdout.trim().split(/\s+/).map(Number);
  const ports = await publishedPorts();
  const port = Number(/^0\.0\.0\.0:(\d+)->80\/tcp$/.exec(ports[0] ?? '')?.[1]);
  t.same(ports, [`0.0.0.0:${port}->80/tcp`, `:::${port}->80/tcp`], `IPv4 and its [::] twin on one port (tsnetctl status: ${ports.join(', ')})`);
  t.ok(port >= lo! && port <= hi!, `port ${port} in ${lo}-${hi}`);
  t.equal(await curl('outside', `http://${HOST}:${port}/`), 'tsnet-lab-ok', 'answers from another host');
  t.equal(await curl('outside', `http://[${h.lanIp6}]:${port}/`), 'tsnet-lab-ok', 'and over IPv6, relayed to the IPv4-only container');
});

t.test('a port range skips a port held on [::] only: IPv4 and its twin move on together', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'rng']);
  await runContainer(h, 'held6', 'rng', ['-p', '[::]:8300:80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  await runContainer(h, 'ranged', 'rng', ['-p', '8300-8301:80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  const ports = await publishedPorts();
  t.ok(ports.includes('0.0.0.0:8301->80/tcp') && ports.includes(':::8301->80/tcp'), `8300 is free on IPv4 but not on [::]: both on 8301 (tsnetctl status: ${ports.join(', ')})`);
  t.notOk(ports.includes('0.0.0.0:8300->80/tcp'), 'nothing left on 8300 for IPv4');
  t.equal(await curl('outside', `http://${HOST}:8301/`), 'tsnet-lab-ok', 'answers over IPv4');
  t.equal(await curl('outside', `http://[${h.lanIp6}]:8301/`), 'tsnet-lab-ok', 'and over IPv6');
});

t.test('bad port maps are refused with the binding named', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'badp']);
  const r = await h.docker(['run', '-d', '--name', 'badp1', '--network', 'badp', '-p', '10.99.0.250:8400:80', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(r.exitCode, 0);
  t.match(r.stderr, /HostIP 10\.99\.0\.250 is not an address of this host/);
});

t.test('dual stack: IPv6 addresses from tsnet\'s IPAM, IPv6 between containers and to the gateway, isolation', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--ipv6', '--subnet', '10.66.0.0/24', '--subnet', 'fd00:66::/64', 'v6a']);
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--ipv6', '--subnet', '10.67.0.0/24', '--subnet', 'fd00:67::/64', 'v6b']);
  await runContainer(h, 'six1', 'v6a');
  await runContainer(h, 'six2', 'v6a');
  await runContainer(h, 'six3', 'v6b');
  const v6 = async (c: string, n: string): Promise<string> => (await h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${n}").GlobalIPv6Address}}`, c])).stdout.trim();
  t.equal(await v6('six1', 'v6a'), 'fd00:66::2', 'first address of the IPv6 pool (the gateway is ::1)');
  const ping6 = async (from: string, to: string): Promise<boolean> => (await h.docker(['exec', from, 'ping6', '-c', '1', '-W', '2', to], { check: false })).exitCode === 0;
  // The gateway first, straight after the start: its address is not left tentative (DAD) for the first seconds.
  t.ok(await ping6('six1', 'fd00:66::1'), 'IPv6 to the gateway');
  t.ok(await ping6('six1', await v6('six2', 'v6a')), 'IPv6 between containers');
  t.match((await h.docker(['exec', 'six1', 'ip', '-6', 'route'])).stdout, /default via fd00:66::1/, 'IPv6 default route via the gateway');
  t.notOk(await ping6('six1', await v6('six3', 'v6b')), 'IPv6 isolation between networks');
  t.notOk(await ping6('six3', await v6('six1', 'v6a')), 'both ways');
});

t.test('IPv6 beyond the host: outbound masqueraded, published ports answer over IPv6 as over IPv4', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--ipv6', '--subnet', '10.68.0.0/24', '--subnet', 'fd00:68::/64', 'v6out']);
  await runContainer(h, 'web6', 'v6out', ['-p', '[::]:8086:80', '-p', '8087:80', '-p', '80'], ['httpd', '-f', '-p', '80', '-h', '/www']);
  const seen = await h.docker(['exec', 'web6', 'sh', '-c', `nc -w 3 ${OUTSIDE_IP6} 7000 </dev/null`], { check: false });
  t.equal(seen.stdout.trim(), h.lanIp6, 'the outside host sees the Docker host\'s IPv6 address');
  const ok = 'tsnet-lab-ok';
  const v6 = `[${h.lanIp6}]`;
  t.equal(await curl('outside', `http://${v6}:8086/`), ok, 'published on [::]: from another host over IPv6');
  t.equal(await curl('host', 'http://[::1]:8086/'), ok, 'and from the Docker host on ::1 (userland proxy)');
  t.equal(await curl('host', `http://${v6}:8086/`), ok, 'and from the Docker host on its own IPv6 address');
  t.equal(await curl('outside', `http://${HOST}:8087/`), ok, 'a plain -p answers over IPv4');
  t.equal(await curl('outside', `http://${v6}:8087/`), ok, 'and over IPv6 (a dual-stack container is published on both)');
  const ports = await publishedPorts();
  const ephemeral = ports.map((p) => /^0\.0\.0\.0:(\d+)->80\/tcp$/.exec(p)?.[1]).find((p) => p !== undefined && p !== '8087');
  t.ok(ephemeral, `an ephemeral IPv4 port (tsnet status: ${ports.join(', ')})`);
  t.ok(ports.includes(`:::${ephemeral}->80/tcp`), 'its IPv6 twin has the same host port');
  t.equal(await curl('outside', `http://${v6}:${ephemeral}/`), ok, 'and answers over IPv6');
  await h.docker(['rm', '-f', 'web6']);
  t.equal(await curl('outside', `http://${v6}:8086/`), undefined, 'the IPv6 mappings go with the container');
  t.equal(await curl('outside', `http://${v6}:8087/`), undefined);
});

t.test('after cleanup the namespace\'s rule set is back to its starting state', async (t) => {
  await removeAll(h);
  t.same(await rulesSnapshot(), baseline);
});
