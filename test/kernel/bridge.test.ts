// Kernel tier: the real plugin process in a throwaway namespace programs
// real bridges, veths and rules; "containers" are namespaces the test wires
// up the way dockerd would. No dockerd here (that is the e2e tier).
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import { Netns, dockerId, ping, plugInto, startPlugin, tmpDir, type PluginProcess } from '../helpers/netns.js';
import { sh } from '../helpers/lab.js';

interface Env {
  host: Netns;
  dir: string;
  plugin: PluginProcess;
  extra: Netns[];
}

async function setup(t: Test, env: Record<string, string> = {}): Promise<Env> {
  const host = await Netns.create('host');
  const dir = await tmpDir('kernel');
  const plugin = await startPlugin(host, { dir, env });
  const e: Env = { host, dir, plugin, extra: [] };
  t.teardown(async () => {
    await e.plugin.stop().catch(() => undefined);
    for (const ns of e.extra) await ns.delete();
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  return e;
}

async function container(e: Env, tag: string): Promise<Netns> {
  const ns = await Netns.create(tag);
  e.extra.push(ns);
  return ns;
}

function createNetwork(p: PluginProcess, id: string, subnet: string, gateway: string, generic: Record<string, string> = {}, top: Record<string, unknown> = {}) {
  return p.call('NetworkDriver.CreateNetwork', {
    NetworkID: id,
    Options: { 'com.docker.network.generic': generic, 'com.docker.network.enable_ipv6': false, ...top },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: subnet, Gateway: gateway }],
    IPv6Data: [],
  });
}

async function attach(e: Env, netId: string, ns: Netns, address: string, gateway?: string) {
  const epId = dockerId();
  const ce = await e.plugin.call('NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: epId, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  if (ce.status !== 200) throw new Error(`CreateEndpoint: ${JSON.stringify(ce.body)}`);
  const j = await e.plugin.call('NetworkDriver.Join', { NetworkID: netId, EndpointID: epId, SandboxKey: `/run/netns/${ns.name}`, Options: {} });
  if (j.status !== 200) throw new Error(`Join: ${JSON.stringify(j.body)}`);
  const src = (j.body.InterfaceName as { SrcName: string }).SrcName;
  await plugInto(e.host, ns, src, { address, gateway: gateway ?? (j.body.Gateway as string | undefined), mac: (ce.body.Interface as { MacAddress?: string } | undefined)?.MacAddress });
  return { epId, join: j.body, create: ce.body };
}

async function snapshot(ns: Netns) {
  const links = (await ns.links()).map((l) => l.ifname).sort();
  const nft = (await ns.exec('nft', ['list', 'ruleset'])).stdout;
  const ipt = (await ns.exec('iptables-save', [])).stdout.split('\n').filter((l) => !l.startsWith('#') && !l.startsWith(':') && l.trim() !== '');
  return { links, tsnetTable: nft.includes('table inet tsnet'), tsnetRules: ipt.filter((l) => l.includes('TSNET')) };
}

t.test('network, endpoints and join program the kernel; delete leaves nothing', async (t) => {
  const e = await setup(t);
  const before = await snapshot(e.host);
  const net = dockerId();
  const res = await createNetwork(e.plugin, net, '10.31.0.0/24', '10.31.0.1/24', { 'com.docker.network.driver.mtu': '1400' });
  t.equal(res.status, 200, JSON.stringify(res.body));

  const links = await e.host.links();
  const br = links.find((l) => l.ifalias === `tsnet:net:${net}`);
  t.ok(br, 'bridge tagged with the network id');
  t.equal(br?.linkinfo?.info_kind, 'bridge');
  t.equal(br?.mtu, 1400, 'MTU option applied to the bridge');
  t.match(br?.ifname, /^tsbr-[0-9a-f]{10}$/);
  const addrs = JSON.parse((await sh('ip', ['-n', e.host.name, '-json', 'addr', 'show', 'dev', br!.ifname])).stdout)[0].addr_info;
  t.ok(addrs.some((a: { local: string; prefixlen: number }) => a.local === '10.31.0.1' && a.prefixlen === 24), 'gateway on the bridge');

  const a = await container(e, 'a');
  const b = await container(e, 'b');
  const ea = await attach(e, net, a, '10.31.0.2/24');
  await attach(e, net, b, '10.31.0.3/24');
  t.equal(ea.join.Gateway, '10.31.0.1', 'gateway is a plain IP');
  t.same(ea.join.InterfaceName, { SrcName: `tsc${ea.epId.slice(0, 11)}`, DstPrefix: 'eth' });
  const macA = (ea.create.Interface as { MacAddress: string }).MacAddress;
  const eth0 = (await a.links()).find((l) => l.ifname === 'eth0');
  t.equal(eth0?.address, macA, 'container end carries the MAC reported to dockerd');
  t.equal(eth0?.mtu, 1400, 'MTU on the container end');
  const hostEnd = (await e.host.links()).find((l) => l.ifalias === `tsnet:ep:${ea.epId}`);
  t.equal(hostEnd?.master, br!.ifname, 'host end attached to the bridge');
  t.ok(hostEnd?.flags.includes('UP'), 'host end up before Join returned');
  t.equal(hostEnd?.mtu, 1400, 'MTU on the host end');

  t.ok(await ping(a, '10.31.0.3'), 'container to container on one bridge');
  t.ok(await ping(a, '10.31.0.1'), 'container to gateway');
  t.ok(await ping(e.host, '10.31.0.2'), 'host reaches a container on its bridge');

  for (const ep of [ea.epId]) {
    t.equal((await e.plugin.call('NetworkDriver.Leave', { NetworkID: net, EndpointID: ep })).status, 200);
    t.equal((await e.plugin.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep })).status, 200);
    t.equal((await e.plugin.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep })).status, 200, 'second delete is fine');
  }
  t.notOk((await a.links()).some((l) => l.ifname === 'eth0'), 'deleting the endpoint removed both veth ends');
  // Endpoint b is left for DeleteNetwork to clean up (a stale endpoint).
  t.equal((await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net })).status, 200);
  t.equal((await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net })).status, 200, 'second delete is fine');
  t.same(await snapshot(e.host), before, 'no link, table or rule left');
});

t.test('isolation between two tsnet networks and a foreign bridge, both ways; egress to the uplink', async (t) => {
  const e = await setup(t);
  // An uplink: a plain veth to an "outside" namespace with a default route.
  const out = await container(e, 'out');
  await sh('ip', ['-n', e.host.name, 'link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', out.name]);
  await sh('ip', ['-n', e.host.name, 'addr', 'add', '10.98.0.2/24', 'dev', 'uplink0']);
  await sh('ip', ['-n', e.host.name, 'link', 'set', 'uplink0', 'up']);
  await sh('ip', ['-n', e.host.name, 'route', 'add', 'default', 'via', '10.98.0.1']);
  await sh('ip', ['-n', out.name, 'addr', 'add', '10.98.0.1/24', 'dev', 'eth0']);
  await sh('ip', ['-n', out.name, 'link', 'set', 'eth0', 'up']);
  // A bridge tsnet does not own, standing in for docker0.
  await sh('ip', ['-n', e.host.name, 'link', 'add', 'docker0', 'type', 'bridge']);
  await sh('ip', ['-n', e.host.name, 'addr', 'add', '172.17.0.1/16', 'dev', 'docker0']);
  await sh('ip', ['-n', e.host.name, 'link', 'set', 'docker0', 'up']);
  const d = await container(e, 'd');
  await sh('ip', ['-n', e.host.name, 'link', 'add', 'vethd', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', d.name]);
  await sh('ip', ['-n', e.host.name, 'link', 'set', 'vethd', 'master', 'docker0', 'up']);
  await sh('ip', ['-n', d.name, 'addr', 'add', '172.17.0.2/16', 'dev', 'eth0']);
  await sh('ip', ['-n', d.name, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', d.name, 'route', 'add', 'default', 'via', '172.17.0.1']);
  await e.host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);

  const n1 = dockerId();
  const n2 = dockerId();
  t.equal((await createNetwork(e.plugin, n1, '10.41.0.0/24', '10.41.0.1/24')).status, 200);
  t.equal((await createNetwork(e.plugin, n2, '10.42.0.0/24', '10.42.0.1/24')).status, 200);
  const a = await container(e, 'a');
  const b = await container(e, 'b');
  await attach(e, n1, a, '10.41.0.2/24');
  await attach(e, n2, b, '10.42.0.2/24');

  t.notOk(await ping(a, '10.42.0.2'), 'network 1 cannot reach network 2');
  t.notOk(await ping(b, '10.41.0.2'), 'network 2 cannot reach network 1');
  t.notOk(await ping(a, '172.17.0.2'), 'tsnet cannot reach a foreign bridge');
  t.notOk(await ping(d, '10.41.0.2'), 'a foreign bridge cannot reach tsnet');
  t.ok(await ping(a, '10.98.0.1'), 'egress through the uplink works');
  // Masquerade: the outside sees the host's address, not the container's.
  const conntrack = await e.host.exec('conntrack', ['-L', '-p', 'icmp'], { check: false });
  t.match(conntrack.stdout, /src=10\.41\.0\.2 .*dst=10\.98\.0\.1 .*src=10\.98\.0\.1 dst=10\.98\.0\.2/, 'egress is source-NATed to the uplink address');
  t.notOk(await ping(out, '10.41.0.2'), 'the outside cannot reach a container address directly');
});

t.test('an injected failure after the firewall step leaves nothing behind', async (t) => {
  const e = await setup(t, { TSNET_TEST_FAIL_AFTER_STEP: 'firewall' });
  const before = await snapshot(e.host);
  const net = dockerId();
  const res = await createNetwork(e.plugin, net, '10.51.0.0/24', '10.51.0.1/24');
  t.equal(res.status, 500);
  t.match(res.body.Err, /injected failure after step firewall/);
  t.same(await snapshot(e.host), before, 'no bridge, table or rule');
  const state = JSON.parse(await fs.readFile(`${e.plugin.stateDir}/state.json`, 'utf8').catch(() => '{"state":{"networks":{}}}'));
  t.same(Object.keys(state.state.networks), [], 'nothing persisted');
});

t.test('restart: state survives, reconcile restores a deleted bridge and flushed rules, removes orphans', async (t) => {
  const e = await setup(t);
  const net = dockerId();
  t.equal((await createNetwork(e.plugin, net, '10.61.0.0/24', '10.61.0.1/24')).status, 200);
  const a = await container(e, 'a');
  const b = await container(e, 'b');
  const ea = await attach(e, net, a, '10.61.0.2/24');
  await attach(e, net, b, '10.61.0.3/24');
  t.ok(await ping(a, '10.61.0.3'));
  t.equal(await e.plugin.stop(), 0, 'SIGTERM exits 0');
  t.notOk(await fs.stat(e.plugin.socket).catch(() => false), 'socket removed on exit');
  t.ok(await ping(a, '10.61.0.3'), 'containers keep talking while tsnet is down');

  const bridge = (await e.host.links()).find((l) => l.ifalias === `tsnet:net:${net}`)!.ifname;
  await sh('ip', ['-n', e.host.name, 'link', 'del', bridge]);
  await e.host.exec('nft', ['delete', 'table', 'inet', 'tsnet']);
  await e.host.exec('iptables', ['-F', 'TSNET-FORWARD']);
  const orphanId = dockerId();
  await sh('ip', ['-n', e.host.name, 'link', 'add', 'tsbr-orphan', 'type', 'bridge']);
  await sh('ip', ['-n', e.host.name, 'link', 'set', 'tsbr-orphan', 'alias', `tsnet:net:${orphanId}`]);
  await sh('ip', ['-n', e.host.name, 'link', 'add', 'not-ours', 'type', 'bridge']);

  e.plugin = await startPlugin(e.host, { dir: e.dir });
  // Reconcile runs right after listening; a Join waits for it.
  const j = await e.plugin.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ea.epId, SandboxKey: '', Options: {} });
  t.equal(j.status, 200, 'the endpoint is known after restart');
  const links = await e.host.links();
  t.ok(links.some((l) => l.ifname === bridge), 'bridge re-created');
  t.ok(links.filter((l) => l.ifalias?.startsWith('tsnet:ep:')).every((l) => l.master === bridge), 'veths re-attached');
  t.notOk(links.some((l) => l.ifname === 'tsbr-orphan'), 'orphan tagged bridge removed');
  t.ok(links.some((l) => l.ifname === 'not-ours'), 'an untagged bridge is left alone');
  t.ok((await snapshot(e.host)).tsnetTable, 'nft table restored');
  t.equal((await snapshot(e.host)).tsnetRules.filter((r) => r.startsWith('-A TSNET-FORWARD')).length, 2, 'FORWARD accepts restored');
  t.ok(await ping(a, '10.61.0.3'), 'traffic flows after reconcile');
  const log = await fs.readFile(e.plugin.logFile, 'utf8');
  t.match(log, /bridge was missing; re-created it/, 'reconcile logs what it fixed');
});

t.test('socket and state directory safety', async (t) => {
  const e = await setup(t);
  const mode = (await fs.stat(e.plugin.socket)).mode & 0o777;
  t.equal(mode, 0o660, 'socket is 0660');
  const stateMode = (await fs.stat(e.plugin.stateDir)).mode & 0o777;
  t.equal(stateMode, 0o700, 'state dir is 0700');
  // A second plugin on the same socket must not steal it.
  const dir2 = await tmpDir('kernel2');
  t.teardown(() => fs.rm(dir2, { recursive: true, force: true }));
  const second = await startPlugin(e.host, { dir: dir2, env: { TSNET_SOCKET: e.plugin.socket, TSNET_STATE_DIR: `${dir2}/other-state` }, expectFailure: true });
  t.equal(await second.exited, 1, 'second instance on a live socket exits 1');
  t.match(await fs.readFile(second.logFile, 'utf8'), /another process is serving/);
  await fs.rm(second.logFile);
  // A second plugin on another socket but the same state dir is refused.
  const third = await startPlugin(e.host, { dir: dir2, env: { TSNET_STATE_DIR: e.plugin.stateDir }, expectFailure: true });
  t.equal(await third.exited, 1, 'second instance on a locked state dir exits 1');
  t.match(await fs.readFile(third.logFile, 'utf8'), /locked by another tsnet process/);
  t.equal((await e.plugin.call('NetworkDriver.GetCapabilities')).status, 200, 'the first one still serves');
  // A stale socket file (no listener) is replaced.
  await e.plugin.stop('SIGKILL');
  e.plugin = await startPlugin(e.host, { dir: e.dir });
  t.equal((await e.plugin.call('Plugin.Activate')).status, 200, 'restarted over a stale socket');
  // Bad configuration: one clear line, non-zero exit.
  const bad = await startPlugin(e.host, { dir: dir2, env: { TSNET_DEFAULT_POOLS: 'nonsense' }, expectFailure: true });
  t.equal(await bad.exited, 2, 'bad configuration exits 2');
  t.match(await fs.readFile(bad.logFile, 'utf8'), /TSNET_DEFAULT_POOLS: .*nonsense.* is not BASE\/LEN:SIZE/);
});

t.test('an endpoint no container ever joined is removed at reconcile; joined ones stay', async (t) => {
  const e = await setup(t);
  const net = dockerId();
  t.equal((await createNetwork(e.plugin, net, '10.81.0.0/24', '10.81.0.1/24')).status, 200);
  const a = await container(e, 'a');
  const joined = await attach(e, net, a, '10.81.0.2/24');
  const lonely = dockerId();
  t.equal((await e.plugin.call('NetworkDriver.CreateEndpoint', { NetworkID: net, EndpointID: lonely, Interface: { Address: '10.81.0.3/24', AddressIPv6: '', MacAddress: '' }, Options: {} })).status, 200);
  await e.plugin.stop();
  // Its container never started (dockerd gave up after CreateEndpoint): no Join, the peer still on the host.
  e.plugin = await startPlugin(e.host, { dir: e.dir, env: { TSNET_TEST_STALE_AFTER_MS: '1' } });
  const j = await e.plugin.call('NetworkDriver.Join', { NetworkID: net, EndpointID: joined.epId, SandboxKey: `/run/netns/${a.name}`, Options: {} });
  t.equal(j.status, 200, 'the joined endpoint is still known');
  const links = await e.host.links();
  t.notOk(links.some((l) => l.ifalias === `tsnet:ep:${lonely}`), 'the never-joined endpoint\'s veth is gone');
  t.ok(links.some((l) => l.ifalias === `tsnet:ep:${joined.epId}`), 'the joined one\'s is not');
  const gone = await e.plugin.call('NetworkDriver.Join', { NetworkID: net, EndpointID: lonely, SandboxKey: '', Options: {} });
  t.equal(gone.status, 500, 'and its record is gone');
  t.ok(await ping(a, '10.81.0.1'), 'the joined container still works');
});
