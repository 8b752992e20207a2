// End to end: macvlan networks through real dockerd hosts on the lab LAN
// (10.99.0.0/24, router 10.99.0.1, the outside host 10.99.0.100). The LAN
// host reaches containers at their own addresses and MACs, with no NAT;
// containers on two Docker hosts share one LAN network. ipvlan and 802.1q
// parents run where the kernel has them and are skipped with the reason
// where it does not (ours: no ipvlan, no 8021q).
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { Lab, cleanEnv, sh, waitFor, type LabHost } from '../helpers/lab.js';
import { canPing, containerIp, removeAll, runContainer, tsnetTraces } from '../helpers/docker.js';
import { kernelLacks } from '../helpers/netns.js';

const lab = await Lab.start({ hosts: 2 });
const [h1, h2] = lab.hosts as [LabHost, LabHost];
const background: ChildProcess[] = [];
t.teardown(async () => {
  for (const c of background) c.kill('SIGKILL');
  await lab.stop();
});
t.afterEach(async () => {
  await Promise.all([removeAll(h1), removeAll(h2)]);
  for (const h of [h1, h2]) {
    const left = await tsnetTraces(h);
    if (left.links.length > 0) throw new Error(`${h.netns}: network rm left ${left.links.join(', ')}`);
  }
});

// The LAN host's TCP server answers with the address it saw.
const server = spawn('ip', ['netns', 'exec', lab.outNs, process.execPath, '-e', `require('net').createServer(s => { s.on('error', () => {}); s.end(s.remoteAddress.replace('::ffff:', '') + '\\n'); }).listen(7000)`], { stdio: 'ignore', env: cleanEnv() });
background.push(server);
await waitFor('outside whoami server', async () => (await lab.outside(process.execPath, ['-e', "require('net').connect(7000, '127.0.0.1').on('connect', () => process.exit(0)).on('error', () => process.exit(1))"], { check: false })).exitCode === 0);

function lanNetwork(h: LabHost, range: string, extra: string[] = [], name = 'lan'): Promise<unknown> {
  return h.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0', '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', range, ...extra, name]);
}

async function mac(h: LabHost, container: string, network: string): Promise<string> {
  return (await h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${network}").MacAddress}}`, container])).stdout.trim();
}

async function outsidePing(ip: string): Promise<boolean> {
  return (await lab.outside('ping', ['-c', '1', '-W', '2', ip], { check: false })).exitCode === 0;
}

t.test('macvlan: the LAN host reaches containers at their own address and MAC; TCP both ways, no NAT', async (t) => {
  await lanNetwork(h1, '10.99.0.192/28');
  await runContainer(h1, 'c1', 'lan');
  await runContainer(h1, 'c2', 'lan');
  const ip1 = await containerIp(h1, 'c1', 'lan');
  t.match(ip1, /^10\.99\.0\.(19[2-9]|20[0-7])$/, 'an address of the LAN, from the ip-range');
  t.ok(await outsidePing(ip1), 'the LAN host pings the container directly');
  const neigh = JSON.parse((await lab.outside('ip', ['-json', 'neigh', 'show', ip1])).stdout) as Array<{ lladdr?: string }>;
  t.equal(neigh[0]?.lladdr, await mac(h1, 'c1', 'lan'), "it sees the container's own MAC");
  t.not(neigh[0]?.lladdr, JSON.parse((await h1.exec('ip', ['-json', 'link', 'show', 'eth0'])).stdout)[0].address, "not the Docker host's");

  // TCP in: the container sees the LAN host's own address.
  await h1.docker(['exec', '-d', 'c1', 'nc', '-l', '-p', '7100', '-e', 'netstat', '-tn']);
  const seen = await waitFor('TCP to the container', async () => {
    const script = `const c=require('net').connect(7100,'${ip1}');let d='';c.on('data',x=>d+=x);c.on('end',()=>{console.log(d);process.exit(0)});c.on('error',()=>process.exit(1));setTimeout(()=>process.exit(1),3000)`;
    const r = await lab.outside(process.execPath, ['-e', script], { check: false });
    return r.stdout.includes(':7100') ? r.stdout : undefined;
  }, 10_000, 300);
  t.match(seen, new RegExp(`(::ffff:)?${ip1.replace(/\./g, '\\.')}:7100\\s+(::ffff:)?10\\.99\\.0\\.100:\\d+\\s+ESTABLISHED`), 'the container sees the LAN host as the peer');
  // TCP out: the LAN host sees the container's address, not the Docker host's.
  const who = await h1.docker(['exec', 'c1', 'sh', '-c', 'nc -w 3 10.99.0.100 7000 </dev/null']);
  t.equal(who.stdout.trim(), ip1, 'the LAN host sees the container address (no masquerade)');
  const route = (await h1.docker(['exec', 'c1', 'ip', 'route'])).stdout;
  t.match(route, /default via 10\.99\.0\.1 dev eth0/, "the LAN's router is the gateway");

  t.ok(await canPing(h1, 'c2', 'c1'), 'containers reach each other by name (embedded DNS)');
  const fromHost = await h1.exec('ping', ['-c', '1', '-W', '1', ip1], { check: false });
  t.not(fromHost.exitCode, 0, 'the Docker host cannot reach them without tsnet.host_access (kernel macvlan isolation)');

  const published = await h1.docker(['run', '-d', '--name', 'p1', '--network', 'lan', '-p', '8080:80', 'busybox:local', 'sleep', '60'], { check: false });
  t.not(published.exitCode, 0, '-p on a macvlan network is refused');
  t.match(published.stderr, /published ports \(-p\) do not apply to a macvlan network/, 'with the reason');

  const status = JSON.parse((await h1.tsnetctl('status')).stdout) as { networks: Array<Record<string, unknown>> };
  t.match(status.networks[0], { mode: 'macvlan', parent: 'eth0', hostAccess: false, endpoints: 2 }, 'tsnetctl status shows the network');
  const doctor = await h1.tsnetctl('doctor');
  t.equal(doctor.exitCode, 0, `tsnetctl doctor finds nothing wrong with a macvlan network (children in containers, no bridge or rules): ${doctor.stdout}`);
});

t.test('two Docker hosts, one macvlan network: containers reach each other across hosts', async (t) => {
  await lanNetwork(h1, '10.99.0.192/28');
  await lanNetwork(h2, '10.99.0.208/28');
  await runContainer(h1, 'a1', 'lan');
  await runContainer(h2, 'a2', 'lan');
  const ip1 = await containerIp(h1, 'a1', 'lan');
  const ip2 = await containerIp(h2, 'a2', 'lan');
  t.ok(await canPing(h2, 'a2', ip1), 'host 2 container to host 1 container');
  t.ok(await canPing(h1, 'a1', ip2), 'and back');
  const http = await (async () => {
    await h1.docker(['exec', '-d', 'a1', 'httpd', '-f', '-p', '8080', '-h', '/www']);
    return waitFor('http across hosts', async () => {
      const r = await h2.docker(['exec', 'a2', 'sh', '-c', `printf "GET / HTTP/1.0\\r\\n\\r\\n" | nc -w 2 ${ip1} 8080`], { check: false });
      return r.stdout.includes('tsnet-lab-ok') ? r.stdout : undefined;
    }, 10_000, 300);
  })();
  t.match(http, /tsnet-lab-ok/, 'TCP across hosts');
});

t.test('dual stack, --ip, --aux-address, connect and disconnect on a macvlan network', async (t) => {
  await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0', '--ipv6',
    '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', '10.99.0.176/28', '--aux-address', 'printer=10.99.0.176',
    '--subnet', 'fd00:99::/64', '--gateway', 'fd00:99::1', '--ip-range', 'fd00:99::b0/124', 'lan6']);
  await runContainer(h1, 'd1', 'lan6');
  const ip = await containerIp(h1, 'd1', 'lan6');
  t.equal(ip, '10.99.0.177', 'the aux address is never handed out');
  const ip6 = (await h1.docker(['inspect', '-f', '{{(index .NetworkSettings.Networks "lan6").GlobalIPv6Address}}', 'd1'])).stdout.trim();
  t.match(ip6, /^fd00:99::b[0-9a-f]$/, 'an IPv6 address of the LAN, from its ip-range');
  t.equal((await lab.outside('ping', ['-6', '-c', '1', '-W', '2', ip6], { check: false })).exitCode, 0, 'the LAN host reaches it over IPv6');
  await runContainer(h1, 'd2', 'lan6', ['--ip', '10.99.0.190']);
  t.equal(await containerIp(h1, 'd2', 'lan6'), '10.99.0.190', '--ip');
  t.ok(await outsidePing('10.99.0.190'));
  await runContainer(h1, 'd3', undefined);
  await h1.docker(['network', 'connect', 'lan6', 'd3']);
  const ip3 = await containerIp(h1, 'd3', 'lan6');
  t.ok(await outsidePing(ip3), 'a container connected later is on the LAN');
  await h1.docker(['network', 'disconnect', 'lan6', 'd3']);
  t.notOk(await outsidePing(ip3), 'and off it after disconnect');
});

t.test('tsnet.host_access=true: the host and its containers reach each other', async (t) => {
  // A range of its own: the LAN host's neighbour cache still holds the earlier tests' containers.
  await lanNetwork(h1, '10.99.0.240/28', ['-o', 'tsnet.host_access=true']);
  await runContainer(h1, 'c1', 'lan');
  const ip1 = await containerIp(h1, 'c1', 'lan');
  const fromHost = await h1.exec('ping', ['-c', '1', '-W', '2', ip1], { check: false });
  t.equal(fromHost.exitCode, 0, 'host to container');
  t.ok(await canPing(h1, 'c1', h1.lanIp), "container to the host's LAN address");
  t.ok(await outsidePing(ip1), 'and the LAN still reaches it');
});

t.test('--internal: containers reach only each other', async (t) => {
  await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0', '--internal', '--subnet', '10.98.0.0/24', 'isolan']);
  await runContainer(h1, 'i1', 'isolan');
  await runContainer(h1, 'i2', 'isolan');
  t.ok(await canPing(h1, 'i1', 'i2'), 'by name');
  t.notOk(await canPing(h1, 'i1', '10.99.0.100', 1), 'not the LAN');
  const route = (await h1.docker(['exec', 'i1', 'ip', 'route'])).stdout;
  t.notMatch(route, /default/, 'no default route');
});

t.test('a parent re-created under running containers: reconcile gives them their children again', async (t) => {
  // The user's parent: a second leg of host 1 on the LAN, made (and re-made) by hand.
  const plugParent = async (): Promise<void> => {
    await h1.exec('ip', ['link', 'add', 'lanp', 'type', 'veth', 'peer', 'name', 'h1p', 'netns', lab.lanNs]);
    await h1.exec('ip', ['link', 'set', 'lanp', 'up']);
    await sh('ip', ['-n', lab.lanNs, 'link', 'set', 'h1p', 'master', 'lan0', 'up']);
  };
  await plugParent();
  t.teardown(() => h1.exec('ip', ['link', 'del', 'lanp'], { check: false }));
  await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=lanp', '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', '10.99.0.224/28', 'userlan']);
  await runContainer(h1, 'u1', 'userlan');
  const ip = await containerIp(h1, 'u1', 'userlan');
  const mac1 = await mac(h1, 'u1', 'userlan');
  t.ok(await outsidePing(ip), 'on the LAN through the user parent');
  await h1.exec('ip', ['link', 'del', 'lanp']);
  t.notOk(await outsidePing(ip), 'the parent gone: the container is off the LAN');
  await plugParent();
  const r = await h1.tsnetctl('reconcile');
  t.equal(r.exitCode, 0, r.stderr);
  t.ok(await waitFor('the container back on the LAN', () => outsidePing(ip), 10_000, 300), 'the container is back on the LAN with its own address');
  const inside = JSON.parse((await h1.execInContainer('u1', 'ip', ['-json', 'addr', 'show', 'eth0'])).stdout) as Array<{ address: string; addr_info: Array<{ local: string }> }>;
  t.equal(inside[0]?.address, mac1, 'its own MAC again, as eth0');
  t.ok(inside[0]?.addr_info.some((a) => a.local === ip), 'and its address');
  t.match((await h1.docker(['exec', 'u1', 'ip', 'route'])).stdout, /default via 10\.99\.0\.1 dev eth0/, 'and its default route');

  // tsnet's own isolated parent (--internal): deleted behind its back, re-made with the children.
  await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=macvlan', '--internal', '--subnet', '10.94.0.0/24', 'iso']);
  await runContainer(h1, 'i1', 'iso');
  await runContainer(h1, 'i2', 'iso');
  t.ok(await canPing(h1, 'i1', 'i2'));
  const own = JSON.parse((await h1.exec('ip', ['-json', '-details', 'link', 'show'])).stdout) as Array<{ ifname: string; ifalias?: string; linkinfo?: { info_kind?: string } }>;
  const parent = own.find((l) => l.ifalias?.startsWith('tsnet:net:') && l.linkinfo?.info_kind === 'veth' && l.ifname.startsWith('tsmv'))!;
  await h1.exec('ip', ['link', 'del', parent.ifname]);
  t.notOk(await canPing(h1, 'i1', 'i2', 1), 'cut off with the parent');
  t.equal((await h1.tsnetctl('reconcile')).exitCode, 0);
  t.ok(await canPing(h1, 'i1', 'i2'), 'reconcile re-made the parent and both children: i1 reaches i2 by name');
});

t.test('bad input through dockerd: the reason reaches the user and nothing is created', async (t) => {
  const cases: Array<[string[], RegExp]> = [
    [['-o', 'parent=eth9'], /"eth9" does not exist/],
    [['-o', 'parent=eth0', '-o', 'macvlan_mode=foo'], /macvlan_mode: "foo" is not one of/],
    [['-o', 'parent=eth0.5000'], /VLAN id 5000/],
  ];
  for (const [opts, reason] of cases) {
    const r = await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=macvlan', ...opts, '--subnet', '10.97.0.0/24', 'bad'], { check: false });
    t.not(r.exitCode, 0, opts.join(' '));
    t.match(r.stderr, reason);
  }
  t.same((await tsnetTraces(h1)).links, []);
});

const noIpvlan = await kernelLacks(['ipvlan', 'mode', 'l2']);
t.test('ipvlan l2: containers show the parent MAC and reach the LAN', { skip: noIpvlan ?? false }, async (t) => {
  await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=ipvlan', '-o', 'parent=eth0', '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', '10.99.0.224/28', 'ipv']);
  await runContainer(h1, 'v1', 'ipv');
  const ip = await containerIp(h1, 'v1', 'ipv');
  t.ok(await outsidePing(ip));
  const inside = (await h1.docker(['exec', 'v1', 'cat', '/sys/class/net/eth0/address'])).stdout.trim();
  t.equal(inside, JSON.parse((await h1.exec('ip', ['-json', 'link', 'show', 'eth0'])).stdout)[0].address);
});

t.test('ipvlan l3: containers on a subnet of their own, reached through a route on the LAN host', { skip: noIpvlan ?? false }, async (t) => {
  await h1.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=ipvlan', '-o', 'parent=eth0', '-o', 'ipvlan_mode=l3', '--subnet', '10.95.0.0/24', 'ipv3']);
  await runContainer(h1, 'l3a', 'ipv3');
  const ip = await containerIp(h1, 'l3a', 'ipv3');
  await lab.outside('ip', ['route', 'add', '10.95.0.0/24', 'via', h1.lanIp]);
  t.teardown(() => lab.outside('ip', ['route', 'del', '10.95.0.0/24'], { check: false }));
  t.ok(await outsidePing(ip), 'the LAN host reaches the l3 container through the Docker host');
});

const noVlan = await kernelLacks(['vlan', 'id', '5']);
t.test('802.1q: a VLAN-tagged macvlan network between two hosts', { skip: noVlan ?? false }, async (t) => {
  for (const [h, range] of [[h1, '10.96.0.16/28'], [h2, '10.96.0.32/28']] as const) {
    await h.docker(['network', 'create', '-d', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0.50', '--subnet', '10.96.0.0/24', '--ip-range', range, 'vl50']);
  }
  await runContainer(h1, 'g1', 'vl50');
  await runContainer(h2, 'g2', 'vl50');
  t.ok(await canPing(h2, 'g2', await containerIp(h1, 'g1', 'vl50')));
});
