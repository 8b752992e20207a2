// Kernel tier: an overlay network's devices as the real plugin makes them in
// a throwaway "host" namespace (static peers, so no etcd): the namespace of
// its own, the bridge there with the VXLAN port and the endpoints' veths,
// the gateway's one-port bridge in the host namespace, port isolation, ICC
// off, nothing left behind by DeleteNetwork or a failed create, and a name
// whose namespace has ended (what a plugin whose mounts never reached the
// host leaves) taken back.
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Netns, dockerId, ping, plugInto, startPlugin, tmpDir, type PluginProcess } from '../helpers/netns.js';
import { sh, waitFor } from '../helpers/lab.js';
import { overlayNames } from '../../src/kernel/names.js';

interface Env {
  host: Netns;
  plugin: PluginProcess;
  extra: Netns[];
}

async function setup(t: Test): Promise<Env> {
  const host = await Netns.create('ovhost');
  // The underlay: an address and a default route for tsnet to take its VTEP from.
  await host.exec('ip', ['link', 'add', 'u0', 'type', 'veth', 'peer', 'name', 'u1']);
  await host.exec('ip', ['addr', 'add', '10.250.0.1/24', 'dev', 'u0']);
  await host.exec('ip', ['link', 'set', 'u0', 'up']);
  await host.exec('ip', ['link', 'set', 'u1', 'up']);
  await host.exec('ip', ['route', 'add', 'default', 'via', '10.250.0.254']);
  const dir = await tmpDir('kernel-ov');
  const plugin = await startPlugin(host, { dir });
  const e: Env = { host, plugin, extra: [] };
  t.teardown(async () => {
    await e.plugin.stop().catch(() => undefined);
    for (const ns of e.extra) await ns.delete();
    // What the plugin may have left (a failed assertion before DeleteNetwork).
    const ids = JSON.parse((await host.exec('ip', ['-json', 'netns', 'list-id'])).stdout.trim() || '[]') as Array<{ name?: string }>;
    for (const n of ids) if (n.name?.startsWith('tsov-')) await sh('ip', ['netns', 'del', n.name], { check: false });
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  return e;
}

async function createOverlay(p: PluginProcess, id: string, subnet: string, gateway: string, generic: Record<string, string> = {}) {
  return p.call('NetworkDriver.CreateNetwork', {
    NetworkID: id,
    Options: { 'com.docker.network.generic': { 'tsnet.mode': 'overlay', 'tsnet.peers': '10.250.0.1,10.250.0.2', ...generic }, 'com.docker.network.enable_ipv6': false },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: subnet, Gateway: gateway }],
    IPv6Data: [],
  });
}

async function attach(e: Env, netId: string, address: string, gateway: string): Promise<Netns> {
  const ns = await Netns.create('ovc');
  e.extra.push(ns);
  const epId = dockerId();
  const ce = await e.plugin.call('NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: epId, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  if (ce.status !== 200) throw new Error(`CreateEndpoint: ${JSON.stringify(ce.body)}`);
  const j = await e.plugin.call('NetworkDriver.Join', { NetworkID: netId, EndpointID: epId, SandboxKey: `/run/netns/${ns.name}`, Options: {} });
  if (j.status !== 200) throw new Error(`Join: ${JSON.stringify(j.body)}`);
  const src = (j.body.InterfaceName as { SrcName: string }).SrcName;
  await plugInto(e.host, ns, src, { address, gateway });
  return ns;
}

interface Link {
  ifname: string;
  master?: string;
  flags: string[];
  linkinfo?: { info_kind?: string; info_slave_data?: Record<string, unknown> };
}

async function linksIn(netns: string): Promise<Link[]> {
  return JSON.parse((await sh('ip', ['-n', netns, '-json', '-details', 'link', 'show'])).stdout) as Link[];
}

t.test('an overlay switches in a namespace of its own; the gateway stays in the host namespace', async (t) => {
  const e = await setup(t);
  const id = dockerId();
  const names = overlayNames(id);
  const res = await createOverlay(e.plugin, id, '10.120.0.0/24', '10.120.0.1/24');
  t.equal(res.status, 200, `created ${JSON.stringify(res.body)}`);

  const inNs = await linksIn(names.netns);
  const bridge = inNs.find((l) => l.linkinfo?.info_kind === 'bridge')!;
  const vx = inNs.find((l) => l.linkinfo?.info_kind === 'vxlan')!;
  const gwPort = inNs.find((l) => l.ifname === names.gatewayPort)!;
  t.ok(bridge && vx && gwPort, 'bridge, VXLAN port and gateway port in the namespace');
  t.equal(vx.master, bridge.ifname, 'the VXLAN device is a port of the bridge there');
  t.equal(vx.linkinfo?.info_slave_data?.isolated, true, 'the VXLAN port is isolated');
  t.equal(gwPort.linkinfo?.info_slave_data?.isolated, true, "so is the gateway's: gateway frames never cross hosts");
  t.equal(gwPort.linkinfo?.info_slave_data?.learning, false, "the gateway's port learns nothing");
  t.match((await sh('bridge', ['-n', names.netns, 'fdb', 'show', 'dev', names.gatewayPort])).stdout, / master \S+ static/, "the gateway's MAC is a static entry there");
  t.equal((await sh('ip', ['netns', 'exec', names.netns, 'sysctl', '-n', 'net.bridge.bridge-nf-call-iptables'])).stdout.trim(), '0', 'no bridge netfilter in the namespace');

  const inHost = JSON.parse((await e.host.exec('ip', ['-json', '-details', 'link', 'show'])).stdout) as Link[];
  t.same(inHost.filter((l) => l.linkinfo?.info_kind === 'vxlan'), [], 'no VXLAN device in the host namespace');
  const gwHost = inHost.find((l) => l.ifname === names.gatewayHost)!;
  t.equal(gwHost.master, bridge.ifname, "the gateway's veth is a port of the host's bridge of the same name");
  t.equal(gwHost.linkinfo?.info_slave_data?.hairpin, true, 'hairpin on it (published ports from the overlay itself)');
  t.same(inHost.filter((l) => l.master === bridge.ifname).map((l) => l.ifname), [names.gatewayHost], "the host's bridge has that one port");

  const c1 = await attach(e, id, '10.120.0.2/24', '10.120.0.1');
  const c2 = await attach(e, id, '10.120.0.3/24', '10.120.0.1');
  const after = await linksIn(names.netns);
  t.equal(after.filter((l) => /^tsv[0-9a-f]{11}$/.test(l.ifname) && l.master === bridge.ifname).length, 2, "the endpoints' host ends are on the namespace's bridge");
  t.ok(await ping(c1, '10.120.0.3'), 'container to container');
  t.ok(await ping(c2, '10.120.0.1'), 'container to the gateway in the host namespace');

  const del = await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: id });
  t.equal(del.status, 200);
  const list = (await sh('ip', ['-json', 'netns', 'list'])).stdout;
  t.notMatch(list, names.netns, 'DeleteNetwork removes the namespace');
  const left = JSON.parse((await e.host.exec('ip', ['-json', 'link', 'show'])).stdout) as Link[];
  t.same(left.map((l) => l.ifname).filter((n) => n.startsWith('ts')), [], 'and every device of the network in the host namespace');
});

t.test('ICC off: IP between the overlay\'s ports is dropped in its namespace, the gateway still answers', async (t) => {
  const e = await setup(t);
  const id = dockerId();
  const res = await createOverlay(e.plugin, id, '10.121.0.0/24', '10.121.0.1/24', { 'com.docker.network.bridge.enable_icc': 'false' });
  t.equal(res.status, 200, `created ${JSON.stringify(res.body)}`);
  const c1 = await attach(e, id, '10.121.0.2/24', '10.121.0.1');
  await attach(e, id, '10.121.0.3/24', '10.121.0.1');
  t.notOk(await ping(c1, '10.121.0.3'), 'no traffic between two containers');
  t.ok(await ping(c1, '10.121.0.1'), 'the gateway answers');
  const rules = (await sh('ip', ['netns', 'exec', overlayNames(id).netns, 'nft', 'list', 'table', 'bridge', 'tsnet'])).stdout;
  t.match(rules, /ether type \{ ip, ip6 \} counter packets [1-9]\d* bytes \d+ drop/, 'dropped by the namespace\'s own table');
  t.equal((await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: id })).status, 200);
});

t.test('a failed create leaves no namespace behind', async (t) => {
  const e = await setup(t);
  const id = dockerId();
  const names = overlayNames(id);
  // The VXLAN device's name is taken in the host namespace: the create fails after the namespace exists.
  await e.host.exec('ip', ['link', 'add', `tsvx-${names.netns.slice(5)}`, 'type', 'bridge']);
  const res = await createOverlay(e.plugin, id, '10.122.0.0/24', '10.122.0.1/24');
  t.not(res.status, 200, 'refused');
  t.notMatch((await sh('ip', ['-json', 'netns', 'list'])).stdout, names.netns, 'no namespace left');
  const left = JSON.parse((await e.host.exec('ip', ['-json', 'link', 'show'])).stdout) as Link[];
  t.same(left.map((l) => l.ifname).filter((n) => n.startsWith('tsbr-') || n.startsWith('tsgh-')), [], 'no bridge or gateway port left');
});

/**
 * What a managed plugin whose mounts did not reach the host's mount
 * namespace leaves once it stops: the name in /run/netns, an empty file,
 * its namespace ended. Made here by unmounting the name.
 */
async function endNamespace(name: string): Promise<void> {
  await sh('umount', [`/run/netns/${name}`]);
  await waitFor(`${name} ended`, async () => (await sh('ip', ['-n', name, 'link', 'show'], { check: false })).exitCode !== 0, 5000);
}

t.test('a name whose namespace ended: start-up makes the namespace again, DeleteNetwork removes the name', async (t) => {
  const e = await setup(t);
  const id = dockerId();
  const names = overlayNames(id);
  // An ended namespace has no id in the host's list-id: setup's clean-up would miss its name.
  t.teardown(() => sh('ip', ['netns', 'del', names.netns], { check: false }));
  t.equal((await createOverlay(e.plugin, id, '10.123.0.0/24', '10.123.0.1/24')).status, 200);
  await e.plugin.stop();
  await endNamespace(names.netns);
  t.match((await sh('ip', ['netns', 'list'])).stdout, names.netns, 'the name is left');

  e.plugin = await startPlugin(e.host, { dir: path.dirname(e.plugin.stateDir) });
  const again = await waitFor('the namespace made again', async () => {
    const r = await sh('ip', ['-n', names.netns, '-json', '-details', 'link', 'show'], { check: false });
    const links = r.exitCode === 0 ? (JSON.parse(r.stdout) as Link[]) : [];
    return links.some((l) => l.linkinfo?.info_kind === 'vxlan') && links.some((l) => l.ifname === names.gatewayPort) ? links : undefined;
  }, 15_000, 100).catch(() => [] as Link[]);
  t.ok(again.some((l) => l.linkinfo?.info_kind === 'bridge'), 'start-up reconcile made the namespace again, with its bridge, VXLAN port and gateway port');
  t.match(await fs.readFile(e.plugin.logFile, 'utf8'), /overlay namespace had ended, leaving its name/, 'and said so');
  const c1 = await attach(e, id, '10.123.0.2/24', '10.123.0.1');
  t.ok(await ping(c1, '10.123.0.1'), 'a new endpoint reaches the gateway through it');

  await endNamespace(names.netns);
  const del = await e.plugin.call('NetworkDriver.DeleteNetwork', { NetworkID: id });
  t.equal(del.status, 200, `DeleteNetwork with the namespace ended: ${JSON.stringify(del.body)}`);
  t.notMatch((await sh('ip', ['netns', 'list'])).stdout, names.netns, 'the name is gone');
});
