// Kernel tier for macvlan and ipvlan networks: the real plugin in a
// throwaway "host" namespace whose eth0 is one end of a veth to a "LAN
// station" namespace; containers are namespaces wired as dockerd would.
// ipvlan and 802.1q parents run where the kernel has them and are reported
// as skipped, with the reason, where it does not.
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import { Netns, dockerId, kernelLacks, ping, plugInto, startPlugin, tmpDir, type PluginProcess } from '../helpers/netns.js';
import { sh } from '../helpers/lab.js';

const HOST_IP = '10.44.0.2';
const STATION_IP = '10.44.0.100';

interface Env {
  host: Netns;
  station: Netns;
  plugin: PluginProcess;
  dir: string;
  extra: Netns[];
}

const noIpvlan = await kernelLacks(['ipvlan', 'mode', 'l2']);
const noVlan = await kernelLacks(['vlan', 'id', '5']);

async function setup(t: Test): Promise<Env> {
  const host = await Netns.create('host');
  const station = await Netns.create('lan');
  const dir = await tmpDir('kernel-lan');
  await sh('ip', ['-n', host.name, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'lan0', 'netns', station.name]);
  await sh('ip', ['-n', host.name, 'addr', 'add', `${HOST_IP}/24`, 'dev', 'eth0']);
  await sh('ip', ['-n', host.name, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', station.name, 'addr', 'add', `${STATION_IP}/24`, 'dev', 'lan0']);
  await sh('ip', ['-n', station.name, 'link', 'set', 'lan0', 'up']);
  const plugin = await startPlugin(host, { dir });
  const e: Env = { host, station, plugin, dir, extra: [] };
  t.teardown(async () => {
    await e.plugin.stop().catch(() => undefined);
    for (const ns of e.extra) await ns.delete();
    await station.delete();
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  return e;
}

async function createNetwork(e: Env, generic: Record<string, string>, top: Record<string, unknown> = {}, subnet = '10.44.0.0/24', gateway = '10.44.0.1/24') {
  const id = dockerId();
  const res = await e.plugin.call('NetworkDriver.CreateNetwork', {
    NetworkID: id,
    Options: { 'com.docker.network.generic': generic, 'com.docker.network.enable_ipv6': false, ...top },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: subnet, Gateway: gateway }],
    IPv6Data: [],
  });
  if (res.status !== 200) throw new Error(`CreateNetwork: ${JSON.stringify(res.body)}`);
  return id;
}

async function attach(e: Env, netId: string, tag: string, address: string) {
  const ns = await Netns.create(tag);
  e.extra.push(ns);
  const epId = dockerId();
  const ce = await e.plugin.call('NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: epId, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  if (ce.status !== 200) throw new Error(`CreateEndpoint: ${JSON.stringify(ce.body)}`);
  const j = await e.plugin.call('NetworkDriver.Join', { NetworkID: netId, EndpointID: epId, SandboxKey: ns.path, Options: {} });
  if (j.status !== 200) throw new Error(`Join: ${JSON.stringify(j.body)}`);
  const src = (j.body.InterfaceName as { SrcName: string }).SrcName;
  await plugInto(e.host, ns, src, { address, gateway: j.body.Gateway as string | undefined });
  const mac = JSON.parse((await sh('ip', ['-n', ns.name, '-json', 'link', 'show', 'eth0'])).stdout)[0].address as string;
  return { ns, epId, mac, told: (ce.body.Interface as { MacAddress?: string } | undefined)?.MacAddress };
}

/** What a container's end does when its container goes: the namespace and the child with it. */
async function detach(e: Env, netId: string, c: { ns: Netns; epId: string }): Promise<void> {
  await c.ns.delete();
  e.extra = e.extra.filter((n) => n !== c.ns);
  await e.plugin.call('NetworkDriver.Leave', { NetworkID: netId, EndpointID: c.epId });
  const del = await e.plugin.call('NetworkDriver.DeleteEndpoint', { NetworkID: netId, EndpointID: c.epId });
  if (del.status !== 200) throw new Error(`DeleteEndpoint: ${JSON.stringify(del.body)}`);
}

async function tsnetLinks(ns: Netns): Promise<string[]> {
  return (await ns.links()).filter((l) => l.ifalias?.startsWith('tsnet:')).map((l) => l.ifname);
}

async function neighMac(ns: Netns, ip: string): Promise<string | undefined> {
  const entries = JSON.parse((await ns.exec('ip', ['-json', 'neigh', 'show', ip])).stdout || '[]') as Array<{ lladdr?: string }>;
  return entries[0]?.lladdr;
}

t.test('macvlan: containers are stations on the LAN with their own address and MAC; the host is kept apart', async (t) => {
  const e = await setup(t);
  const net = await createNetwork(e, { 'tsnet.mode': 'macvlan', parent: 'eth0' });
  const a = await attach(e, net, 'a', '10.44.0.10/24');
  const b = await attach(e, net, 'b', '10.44.0.11/24');
  t.equal(a.mac, a.told, 'the container has the MAC tsnet told dockerd');
  t.ok(await ping(e.station, '10.44.0.10', 2), 'the LAN station reaches container a directly');
  t.equal(await neighMac(e.station, '10.44.0.10'), a.mac, "and sees a's own MAC, no NAT or proxy between");
  t.ok(await ping(a.ns, '10.44.0.11', 2), 'a reaches b');
  t.ok(await ping(b.ns, STATION_IP, 2), 'b reaches the LAN station');
  t.notOk(await ping(e.host, '10.44.0.10', 1), 'the host cannot reach its containers without tsnet.host_access (kernel macvlan isolation)');
  const st = await e.plugin.call('Tsnet.Status', {});
  const row = (st.body.networks as Array<Record<string, unknown>>).find((n) => n.id === net)!;
  t.match(row, { mode: 'macvlan', parent: 'eth0', createdParent: false, macvlan_mode: 'bridge', hostAccess: false, endpoints: 2 }, 'tsnetctl status shows the LAN settings');

  await detach(e, net, a);
  await detach(e, net, b);
  t.equal((await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net })).status, 200);
  t.same(await tsnetLinks(e.host), [], 'nothing tsnet made is left');
  t.ok((await e.host.links()).some((l) => l.ifname === 'eth0'), 'the parent stays');
});

t.test('tsnet.host_access: host and containers reach each other through the shim', async (t) => {
  const e = await setup(t);
  const net = await createNetwork(e, { 'tsnet.mode': 'macvlan', parent: 'eth0', 'tsnet.host_access': 'true' });
  const a = await attach(e, net, 'a', '10.44.0.10/24');
  t.ok(await ping(e.host, '10.44.0.10', 2), 'host to container');
  t.ok(await ping(a.ns, HOST_IP, 2), "container to the host's LAN address");
  t.ok(await ping(e.station, '10.44.0.10', 2), 'the LAN still reaches it');
  const route = (await e.host.exec('ip', ['route', 'show', '10.44.0.10/32'])).stdout;
  t.match(route, /dev tsmh-[0-9a-f]{10}/, 'through a /32 route on the shim');
  await detach(e, net, a);
  t.equal((await e.host.exec('ip', ['route', 'show', '10.44.0.10/32'])).stdout.trim(), '', 'the route goes with the container');
  await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net });
  t.same(await tsnetLinks(e.host), []);
});

t.test('--internal: a parent of tsnet own; containers reach each other and nothing else', async (t) => {
  const e = await setup(t);
  const net = await createNetwork(e, { 'tsnet.mode': 'macvlan', parent: 'eth0' }, { 'com.docker.network.internal': true });
  const a = await attach(e, net, 'a', '10.44.0.10/24');
  const b = await attach(e, net, 'b', '10.44.0.11/24');
  t.ok(await ping(a.ns, '10.44.0.11', 2), 'a reaches b');
  t.notOk(await ping(a.ns, STATION_IP, 1), 'not the LAN');
  t.notOk(await ping(e.station, '10.44.0.10', 1), 'and the LAN not it');
  await detach(e, net, a);
  await detach(e, net, b);
  await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net });
  t.same(await tsnetLinks(e.host), [], 'its own parent (both ends) is gone');
});

t.test('restart and reconcile: joined containers stay recorded; a parent tsnet made comes back', async (t) => {
  const e = await setup(t);
  const net = await createNetwork(e, { 'tsnet.mode': 'macvlan' });
  const a = await attach(e, net, 'a', '10.44.0.10/24');
  await e.plugin.stop();
  e.plugin = await startPlugin(e.host, { dir: e.dir });
  await e.plugin.call('Tsnet.Reconcile', {});
  const st = await e.plugin.call('Tsnet.Status', {});
  t.ok((st.body.endpoints as Array<{ id: string }>).some((x) => x.id === a.epId), 'an endpoint whose child is in its container is not mistaken for a lost one');
  const parent = (await tsnetLinks(e.host)).find((n) => n.startsWith('tsmv-'))!;
  t.ok(parent, 'the isolated parent exists');
  await sh('ip', ['-n', e.host.name, 'link', 'del', parent]);
  await e.plugin.call('Tsnet.Reconcile', {});
  const back = (await e.host.links()).find((l) => l.ifname === parent);
  t.equal(back?.ifalias, `tsnet:net:${net}`, 'reconcile re-created it, tagged');
  t.ok(back?.flags.includes('UP'));
});

t.test('ipvlan l2: children share the parent MAC and reach the LAN', { skip: noIpvlan ?? false }, async (t) => {
  const e = await setup(t);
  const net = await createNetwork(e, { 'tsnet.mode': 'ipvlan', parent: 'eth0' });
  const a = await attach(e, net, 'a', '10.44.0.10/24');
  const hostMac = (await e.host.links()).find((l) => l.ifname === 'eth0')!.address;
  t.equal(a.mac, hostMac, "the container shows the parent's MAC");
  t.ok(await ping(e.station, '10.44.0.10', 2));
  await detach(e, net, a);
  await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net });
  t.same(await tsnetLinks(e.host), []);
});

t.test('802.1q: parent eth0.50 is made for the network and removed with it', { skip: noVlan ?? false }, async (t) => {
  const e = await setup(t);
  await sh('ip', ['-n', e.station.name, 'link', 'add', 'link', 'lan0', 'name', 'lan0.50', 'type', 'vlan', 'id', '50']);
  await sh('ip', ['-n', e.station.name, 'addr', 'add', '10.50.0.100/24', 'dev', 'lan0.50']);
  await sh('ip', ['-n', e.station.name, 'link', 'set', 'lan0.50', 'up']);
  const net = await createNetwork(e, { 'tsnet.mode': 'macvlan', parent: 'eth0.50' }, {}, '10.50.0.0/24', '10.50.0.1/24');
  const vlan = (await e.host.links()).find((l) => l.ifname === 'eth0.50');
  t.equal(vlan?.linkinfo?.info_kind, 'vlan');
  const a = await attach(e, net, 'a', '10.50.0.10/24');
  t.ok(await ping(e.station, '10.50.0.10', 2), 'tagged traffic reaches the container');
  await detach(e, net, a);
  await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: net });
  t.notOk((await e.host.links()).some((l) => l.ifname === 'eth0.50'), 'the sub-interface tsnet made is gone');
});
