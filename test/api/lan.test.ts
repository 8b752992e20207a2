// macvlan and ipvlan networks through the real app and driver with a
// FakeRunner for the kernel: the command sequences, option handling, and
// refusals that must leave nothing behind. (The kernel and e2e tiers run
// real children on real parents.)
import t, { type Test } from 'tap';
import { endpointAlias, lanNames, networkAlias, peerVethName, shortId } from '../../src/kernel/names.js';
import { FakeRunner, dockerId } from '../helpers/fake-runner.js';
import { buildHarness, createNetworkBody, type Harness } from '../helpers/harness.js';

const LAN = { pool: '192.168.40.0/24', gateway: '192.168.40.1/24' };

function lanRunner(): FakeRunner {
  const runner = new FakeRunner();
  runner.addLink('eth0', { mtu: 1500, address: '52:54:00:aa:bb:cc', flags: ['UP'] });
  return runner;
}

async function lanHarness(t: Test, runner = lanRunner()): Promise<Harness> {
  return buildHarness(t, { runner });
}

async function create(h: Harness, id: string, generic: Record<string, string>, extra: Parameters<typeof createNetworkBody>[1] = {}) {
  return h.call('NetworkDriver.CreateNetwork', createNetworkBody(id, { ...LAN, ...extra, generic }));
}

async function endpoint(h: Harness, net: string, ep: string, address = '192.168.40.10/24', mac = '') {
  return h.call('NetworkDriver.CreateEndpoint', {
    NetworkID: net,
    EndpointID: ep,
    Interface: { Address: address, AddressIPv6: '', MacAddress: mac },
    Options: {},
  });
}

function tsnetLinks(h: Harness): string[] {
  return [...h.runner.links.values()].filter((l) => l.ifalias?.startsWith('tsnet:')).map((l) => l.ifname);
}

t.test('macvlan on an existing parent: no bridge, no firewall, a child per container', async (t) => {
  const h = await lanHarness(t);
  const id = dockerId();
  const res = await create(h, id, { 'tsnet.mode': 'macvlan', parent: 'eth0' });
  t.equal(res.status, 200, res.raw);
  const batch = h.runner.batchInput();
  t.notMatch(batch, 'type bridge', 'no bridge');
  t.same(h.runner.nftScripts(), [], 'no nft rules: LAN traffic never crosses the host');
  t.same(h.runner.callsOf('iptables-restore'), []);
  t.same(h.runner.sysctlWrites, [], 'no forwarding switched on');
  const probe = lanNames(id).probe;
  t.match(batch, `link add link eth0 name ${probe} mtu 1500 type macvlan mode bridge\nlink del dev ${probe}\n`, 'the kernel is asked for a macvlan once, and the probe goes in the same batch');
  t.equal(h.runner.calls.filter((c) => c.cmd === 'ip').length, 2, 'create costs two ip processes: one listing, one batch');
  t.notOk(h.runner.links.has(probe));
  const rec = h.store.state.networks[id]!;
  t.equal(rec.mode, 'macvlan');
  t.same(rec.lan, { kind: 'macvlan', parent: 'eth0', createdParent: false, mode: 'bridge', parentIndex: h.runner.links.get('eth0')!.ifindex }, "the parent's ifindex, to notice it re-created");
  t.equal(rec.mtu, 1500, "the parent's MTU");

  const ep = dockerId();
  h.runner.clearCalls();
  const ce = await endpoint(h, id, ep);
  t.equal(ce.status, 200, ce.raw);
  const child = peerVethName(ep);
  const mac = (ce.body.Interface as { MacAddress: string }).MacAddress;
  t.match(mac, /^02:/, 'a MAC of its own, told to dockerd');
  t.match(h.runner.batchInput(), `link add link eth0 name ${child} address ${mac} mtu 1500 type macvlan mode bridge`);
  t.equal(h.runner.links.get(child)?.ifalias, endpointAlias(ep));

  const join = await h.call('NetworkDriver.Join', { NetworkID: id, EndpointID: ep, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  t.equal(join.status, 200);
  t.same(join.body, { InterfaceName: { SrcName: child, DstPrefix: 'eth' }, DisableGatewayService: false, Gateway: '192.168.40.1' }, "the LAN's router is the gateway, as a plain IP");

  const noPorts = await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: id, EndpointID: ep, Options: {} });
  t.equal(noPorts.status, 200, 'no ports asked: nothing to refuse');
  const ports = await h.call('NetworkDriver.ProgramExternalConnectivity', {
    NetworkID: id,
    EndpointID: ep,
    Options: { 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: 8080, HostPortEnd: 8080 }] },
  });
  t.equal(ports.status, 500);
  t.match(ports.body.Err, /published ports \(-p\) do not apply to a macvlan network/);
  t.match(ports.body.Err, /192\.168\.40\.10/, 'and says where to reach the container instead');

  h.runner.clearCalls();
  t.equal((await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: id, EndpointID: ep })).status, 200);
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${child}`));
  t.equal((await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id })).status, 200);
  t.ok(h.runner.links.has('eth0'), "the user's parent is never deleted");
  t.notOk(h.runner.calls.some((c) => c.line === 'ip link del dev eth0'));
  t.same(tsnetLinks(h), [], 'nothing of tsnet left');
  t.same(h.store.state.networks, {});
});

t.test('--internal or no parent: a parent of tsnet own that leads nowhere, removed with the network', async (t) => {
  for (const [name, generic, top] of [
    ['no parent', { 'tsnet.mode': 'macvlan' }, {}],
    ['--internal with a parent', { 'tsnet.mode': 'macvlan', parent: 'eth0' }, { 'com.docker.network.internal': true }],
  ] as const) {
    await t.test(name, async (t) => {
      const h = await lanHarness(t);
      const id = dockerId();
      const res = await create(h, id, generic, { top });
      t.equal(res.status, 200, res.raw);
      const own = lanNames(id);
      t.match(h.runner.batchInput(), `link add name ${own.parent} mtu 1500 type veth peer name ${own.peer}`);
      t.equal(h.store.state.networks[id]!.lan?.parent, own.parent);
      t.equal(h.store.state.networks[id]!.bridge, own.parent);
      t.equal(h.runner.links.get(own.parent)?.ifalias, networkAlias(id));
      const ep = dockerId();
      await endpoint(h, id, ep);
      t.match(h.runner.batchInput(), `link add link ${own.parent} name ${peerVethName(ep)}`);
      const join = await h.call('NetworkDriver.Join', { NetworkID: id, EndpointID: ep, SandboxKey: '/x', Options: {} });
      if ('com.docker.network.internal' in top) t.same(join.body, { InterfaceName: { SrcName: peerVethName(ep), DstPrefix: 'eth' }, DisableGatewayService: true }, 'internal: no gateway, no docker_gwbridge');
      await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: id, EndpointID: ep });
      await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id });
      t.notOk(h.runner.links.has(own.parent), 'its own parent goes with it');
      t.same(tsnetLinks(h), []);
    });
  }
});

t.test('802.1q: parent eth0.50 is created when missing and deleted with its network; an existing one is left alone', async (t) => {
  const h = await lanHarness(t);
  const id = dockerId();
  const res = await create(h, id, { 'tsnet.mode': 'macvlan', parent: 'eth0.50' });
  t.equal(res.status, 200, res.raw);
  t.match(h.runner.batchInput(), 'link add link eth0 name eth0.50 type vlan id 50');
  t.same(h.store.state.networks[id]!.lan, { kind: 'macvlan', parent: 'eth0.50', createdParent: true, vlan: 50, mode: 'bridge' });
  const again = await create(h, dockerId(), { 'tsnet.mode': 'macvlan', parent: 'eth0.50' }, { pool: '192.168.41.0/24', gateway: '192.168.41.1/24' });
  t.equal(again.status, 500, 'two networks on one parent and VLAN are refused');
  t.match(again.body.Err, `parent eth0.50 is already used by tsnet network ${shortId(id)}`);
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id });
  t.notOk(h.runner.links.has('eth0.50'), 'the sub-interface tsnet made is gone');

  h.runner.addLink('eth0.60', { link: 'eth0', linkinfo: { info_kind: 'vlan' } });
  const mine = dockerId();
  t.equal((await create(h, mine, { 'tsnet.mode': 'macvlan', parent: 'eth0.60' })).status, 200);
  t.equal(h.store.state.networks[mine]!.lan?.createdParent, false);
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: mine });
  t.ok(h.runner.links.has('eth0.60'), 'a sub-interface tsnet did not make stays');
});

t.test('tsnet.host_access: a shim on the parent and a host route per container', async (t) => {
  const h = await lanHarness(t);
  const id = dockerId();
  const res = await create(h, id, { 'tsnet.mode': 'macvlan', parent: 'eth0', 'tsnet.host_access': 'true' }, { ipv6: [{ Pool: 'fd40::/64', Gateway: 'fd40::1/64' }] });
  t.equal(res.status, 200, res.raw);
  const shim = lanNames(id).shim;
  t.match(h.runner.batchInput(), `link add link eth0 name ${shim} mtu 1500 type macvlan mode bridge`);
  t.equal(h.runner.links.get(shim)?.ifalias, networkAlias(id));
  const ep = dockerId();
  h.runner.clearCalls();
  const ce = await h.call('NetworkDriver.CreateEndpoint', { NetworkID: id, EndpointID: ep, Interface: { Address: '192.168.40.10/24', AddressIPv6: 'fd40::10/64', MacAddress: '' }, Options: {} });
  t.equal(ce.status, 200, ce.raw);
  t.match(h.runner.batchInput(), `route replace 192.168.40.10/32 dev ${shim}`);
  t.match(h.runner.batchInput(), `route replace fd40::10/128 dev ${shim}`);
  h.runner.clearCalls();
  await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: id, EndpointID: ep });
  t.match(h.runner.batchInput(), `route del 192.168.40.10/32 dev ${shim}`);
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id });
  t.notOk(h.runner.links.has(shim));
  t.same(tsnetLinks(h), []);
});

t.test('bad input: 500 naming the option and value, nothing created', async (t) => {
  const cases: Array<[string, Record<string, string>, RegExp[], (r: FakeRunner) => void]> = [
    ['a parent that does not exist', { 'tsnet.mode': 'macvlan', parent: 'eth9' }, [/parent/, /"eth9" does not exist/], () => undefined],
    ['a VLAN on a base that does not exist', { 'tsnet.mode': 'macvlan', parent: 'eth9.5' }, [/"eth9\.5" does not exist/, /"eth9"/], () => undefined],
    ['an unsafe interface name', { 'tsnet.mode': 'macvlan', parent: 'eth0;reboot' }, [/parent/, /"eth0;reboot"/], () => undefined],
    ['a name too long', { 'tsnet.mode': 'macvlan', parent: 'abcdefghijklmnop' }, [/parent/, /"abcdefghijklmnop"/], () => undefined],
    ['VLAN id 5000', { 'tsnet.mode': 'macvlan', parent: 'eth0.5000' }, [/parent/, /VLAN id 5000/, /1-4094/], () => undefined],
    ['VLAN id 0', { 'tsnet.mode': 'macvlan', parent: 'eth0.0' }, [/VLAN id 0/], () => undefined],
    ['loopback', { 'tsnet.mode': 'macvlan', parent: 'lo' }, [/parent/, /loopback/], () => undefined],
    ['macvlan_mode foo', { 'tsnet.mode': 'macvlan', parent: 'eth0', macvlan_mode: 'foo' }, [/macvlan_mode/, /"foo"/, /bridge, private, vepa, passthru/], () => undefined],
    ['ipvlan_mode l4', { 'tsnet.mode': 'ipvlan', parent: 'eth0', ipvlan_mode: 'l4' }, [/ipvlan_mode/, /"l4"/, /l2, l3, l3s/], () => undefined],
    ['ipvlan_flag loud', { 'tsnet.mode': 'ipvlan', parent: 'eth0', ipvlan_flag: 'loud' }, [/ipvlan_flag/, /"loud"/], () => undefined],
    ['host_access maybe', { 'tsnet.mode': 'macvlan', parent: 'eth0', 'tsnet.host_access': 'maybe' }, [/tsnet\.host_access/, /"maybe"/], () => undefined],
    ['host_access on a bridge network', { 'tsnet.host_access': 'true' }, [/tsnet\.host_access only applies with tsnet\.mode=macvlan or tsnet\.mode=ipvlan/], () => undefined],
    ['host_access with passthru', { 'tsnet.mode': 'macvlan', parent: 'eth0', macvlan_mode: 'passthru', 'tsnet.host_access': 'true' }, [/tsnet\.host_access/, /passthru/], () => undefined],
    ['MTU over the parent', { 'tsnet.mode': 'macvlan', parent: 'eth0', 'com.docker.network.driver.mtu': '9000' }, [/com\.docker\.network\.driver\.mtu/, /9000/, /eth0 \(1500\)/], () => undefined],
    ['a parent tsnet made', { 'tsnet.mode': 'macvlan', parent: 'tsbr-0123456789' }, [/parent/, /"tsbr-0123456789" is a device tsnet made/], (r) => void r.addLink('tsbr-0123456789', { ifalias: `tsnet:net:${'a'.repeat(64)}`, linkinfo: { info_kind: 'bridge' } })],
    [
      'a parent already taken by a passthru child',
      { 'tsnet.mode': 'macvlan', parent: 'eth0' },
      [/parent/, /"eth0" is already the parent of mv0 in passthru mode/],
      (r) => void r.addLink('mv0', { link: 'eth0', linkinfo: { info_kind: 'macvlan', info_data: { mode: 'passthru' } } }),
    ],
  ];
  for (const [name, generic, patterns, prepare] of cases) {
    await t.test(name, async (t) => {
      const runner = lanRunner();
      prepare(runner);
      const h = await lanHarness(t, runner);
      const before = tsnetLinks(h);
      const id = dockerId();
      const res = await create(h, id, generic);
      t.equal(res.status, 500);
      for (const p of patterns) t.match(res.body.Err as string, p);
      t.same(h.runner.writes(), [], 'no kernel change');
      t.same(tsnetLinks(h), before);
      t.notOk(h.store.state.networks[id], 'nothing stored');
    });
  }
});

t.test('a subnet overlapping another tsnet network on the same host is refused', async (t) => {
  const h = await lanHarness(t);
  const a = dockerId();
  t.equal((await create(h, a, { 'tsnet.mode': 'macvlan', parent: 'eth0' })).status, 200);
  h.runner.clearCalls();
  const res = await create(h, dockerId(), { 'tsnet.mode': 'macvlan', parent: 'eth0.7' }, { pool: '192.168.40.128/25', gateway: '192.168.40.129/25' });
  t.equal(res.status, 500);
  t.match(res.body.Err, `subnet 192.168.40.128/25 overlaps 192.168.40.0/24 of tsnet network ${shortId(a)} (eth0)`);
  t.same(h.runner.writes(), []);
});

t.test('passthru takes one container: a second is refused and nothing is left of it', async (t) => {
  const h = await lanHarness(t);
  const id = dockerId();
  t.equal((await create(h, id, { 'tsnet.mode': 'macvlan', parent: 'eth0', macvlan_mode: 'passthru' })).status, 200);
  t.match(h.runner.batchInput(), 'type macvlan mode bridge', 'the probe never takes the parent over');
  t.equal((await endpoint(h, id, dockerId())).status, 200);
  t.match(h.runner.batchInput(), 'type macvlan mode passthru');
  h.runner.clearCalls();
  const second = dockerId();
  const res = await endpoint(h, id, second, '192.168.40.11/24');
  t.equal(res.status, 500);
  t.match(res.body.Err, /macvlan_mode=passthru/);
  t.match(res.body.Err, /one only/);
  t.same(h.runner.writes(), []);
  t.notOk(h.store.state.endpoints[second]);
});

t.test('ipvlan: refused with the reason on a kernel without it, nothing left', async (t) => {
  const runner = lanRunner();
  runner.failOn({ cmd: 'ip', args: ['-batch'], input: 'type ipvlan', stderr: 'Error: Unknown device type.\n' });
  const h = await lanHarness(t, runner);
  const id = dockerId();
  const res = await create(h, id, { 'tsnet.mode': 'ipvlan', parent: 'eth0' });
  t.equal(res.status, 500);
  t.match(res.body.Err, /kernel lacks ipvlan devices \(module ipvlan\)/);
  t.same(tsnetLinks(h), []);
  t.notOk(h.store.state.networks[id]);
  const vlan = lanRunner();
  vlan.failOn({ cmd: 'ip', args: ['-batch'], input: 'type vlan', stderr: 'Error: Unknown device type.\n' });
  const hv = await lanHarness(t, vlan);
  const rv = await create(hv, dockerId(), { 'tsnet.mode': 'macvlan', parent: 'eth0.50' });
  t.equal(rv.status, 500);
  t.match(rv.body.Err, /kernel lacks vlan devices \(module 8021q\)/);
  t.notOk(hv.runner.links.has('eth0.50'));
});

t.test("ipvlan: children share the parent's MAC; l3 gives a connected default route instead of a gateway", async (t) => {
  const h = await lanHarness(t);
  const l2 = dockerId();
  t.equal((await create(h, l2, { 'tsnet.mode': 'ipvlan', parent: 'eth0' })).status, 200);
  const ep = dockerId();
  const ce = await endpoint(h, l2, ep);
  t.equal(ce.status, 200, ce.raw);
  t.same(ce.body, {}, 'no MAC told to dockerd');
  t.equal(h.store.state.endpoints[ep]!.mac, '52:54:00:aa:bb:cc', "recorded as the parent's");
  t.match(h.runner.batchInput(), `link add link eth0 name ${peerVethName(ep)} mtu 1500 type ipvlan mode l2`);
  const j2 = await h.call('NetworkDriver.Join', { NetworkID: l2, EndpointID: ep, SandboxKey: '/x', Options: {} });
  t.equal(j2.body.Gateway, '192.168.40.1');

  h.runner.addLink('eth1', { mtu: 1500, address: '52:54:00:00:00:01' });
  const l3 = dockerId();
  const r3 = await create(h, l3, { 'tsnet.mode': 'ipvlan', parent: 'eth1', ipvlan_mode: 'l3', ipvlan_flag: 'private' }, { pool: '10.77.0.0/24', gateway: '10.77.0.1/24' });
  t.equal(r3.status, 200, r3.raw);
  const ep3 = dockerId();
  await endpoint(h, l3, ep3, '10.77.0.5/24');
  t.match(h.runner.batchInput(), `link add link eth1 name ${peerVethName(ep3)} mtu 1500 type ipvlan mode l3 private`);
  const j3 = await h.call('NetworkDriver.Join', { NetworkID: l3, EndpointID: ep3, SandboxKey: '/y', Options: {} });
  t.same(j3.body, { InterfaceName: { SrcName: peerVethName(ep3), DstPrefix: 'eth' }, DisableGatewayService: true, StaticRoutes: [{ Destination: '0.0.0.0/0', RouteType: 1 }] });
});

t.test('a failed child is undone and not recorded', async (t) => {
  const runner = lanRunner();
  const h = await lanHarness(t, runner);
  const id = dockerId();
  t.equal((await create(h, id, { 'tsnet.mode': 'macvlan', parent: 'eth0', 'tsnet.host_access': 'true' })).status, 200);
  runner.failOn({ cmd: 'ip', args: ['-batch'], input: 'route replace', stderr: 'RTNETLINK answers: Network is unreachable\n' });
  const ep = dockerId();
  const res = await endpoint(h, id, ep);
  t.equal(res.status, 500);
  t.notOk(h.runner.links.has(peerVethName(ep)), 'the child is deleted again');
  t.notOk(h.store.state.endpoints[ep]);
});
