// NetworkDriver.* through the real app, driver, firewall and store
// (protocol.md §2), with a FakeRunner standing in for the kernel: tests
// assert on the commands tsnet would run and on what it persisted.
import t, { type Test } from 'tap';
import { bridgeName, containerMac, endpointMac, hostVethName, networkAlias, peerVethName, shortId } from '../../src/kernel/names.js';
import { FakeRunner, dockerId, silentLogger, tmpDir } from '../helpers/fake-runner.js';
import { buildHarness, createNetworkBody, type Harness } from '../helpers/harness.js';

async function createNetwork(h: Harness, id: string, opts: Parameters<typeof createNetworkBody>[1] = {}) {
  const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id, opts));
  if (res.status !== 200) throw new Error(`CreateNetwork: ${res.raw}`);
  return res;
}

async function createEndpoint(h: Harness, net: string, ep: string, iface: Record<string, string> = {}) {
  return h.call('NetworkDriver.CreateEndpoint', {
    NetworkID: net,
    EndpointID: ep,
    Interface: { Address: '10.10.0.2/24', AddressIPv6: '', MacAddress: '', ...iface },
    Options: { 'com.docker.network.endpoint.exposedports': [], 'com.docker.network.portmap': [] },
  });
}

/** The request was refused before anything happened: no command, no record. */
async function nothingHappened(t: Test, h: Harness, id: string): Promise<void> {
  t.same(h.runner.calls.map((c) => c.line), [], 'the fake runner recorded zero commands');
  t.same(h.runner.sysctlWrites, [], 'no sysctl written');
  t.notOk(h.store.state.networks[id], 'no record in memory');
  const disk = await h.diskState().catch(() => undefined);
  t.notOk(disk?.networks[id], 'no record on disk');
}

t.test('CreateNetwork programs bridge, address, forwarding, nft and iptables, then persists', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  const br = bridgeName(id);
  const res = await createNetwork(h, id);
  t.same(res.body, {});

  const batches = h.runner.callsOf('ip', (c) => c.args.includes('-batch') && !c.args.includes('-json'));
  t.equal(batches.length, 2, 'two ip -batch processes: create, then address and up');
  t.equal(
    batches[0]!.input,
    `link add name ${br} address ${endpointMac(`bridge:${id}`)} mtu 1500 type bridge stp_state 0 forward_delay 0\nlink set dev ${br} alias ${networkAlias(id)}\n`,
  );
  t.equal(batches[1]!.input, `addr add 10.10.0.1/24 dev ${br}\nlink set dev ${br} up\n`, 'the gateway goes on the bridge');
  t.same(
    h.runner.sysctlWrites,
    [
      [`net/ipv6/conf/${br}/accept_ra`, '0'],
      [`net/ipv6/conf/${br}/disable_ipv6`, '1'],
      ['net/ipv4/ip_forward', '1'],
    ],
    'no RA, no IPv6 on a v4-only bridge, forwarding on',
  );

  const nft = h.runner.nftScripts();
  t.same(
    nft.map((c) => c.args),
    [
      ['-f', '-'],
      ['-f', '-'],
    ],
    'two nft transactions',
  );
  t.match(nft[0]!.input, /^add table inet tsnet\n/, 'the table skeleton first');
  const sid = shortId(id);
  t.match(nft[1]!.input, `add chain inet tsnet n-${sid}-out`);
  t.match(nft[1]!.input, `add element inet tsnet fwd_out { "${br}" : jump n-${sid}-out }`);
  t.match(nft[1]!.input, `oifname != "${br}" ip saddr 10.10.0.0/24 masquerade`, 'masquerade on by default');

  const restores = h.runner.callsOf('iptables-restore');
  t.ok(restores.length >= 1, 'iptables-restore ran');
  t.same(restores.at(-1)!.args, ['-w', '--noflush']);
  t.match(restores.at(-1)!.input, `-A TSNET-FORWARD -i ${br} -m comment --comment tsnet:${sid} -j ACCEPT`);
  t.match(restores.at(-1)!.input, `-A TSNET-FORWARD -o ${br} -m comment --comment tsnet:${sid} -j ACCEPT`);
  t.ok(
    h.runner.calls.some((c) => c.line === 'iptables -w -I FORWARD 2 -j TSNET-FORWARD'),
    'FORWARD jumps to TSNET-FORWARD right after DOCKER-USER',
  );
  t.same(
    h.runner.writes().filter((c) => c.cmd.startsWith('ip6tables')),
    [],
    'an IPv4-only network adds no ip6tables glue',
  );

  const order = h.runner.writes().map((c) => c.cmd + (c.input?.includes('link add') ? ':link-add' : ''));
  t.ok(order.indexOf('ip:link-add') < order.indexOf('nft'), 'the bridge exists before its rules');

  const rec = h.store.state.networks[id];
  t.ok(rec, 'recorded');
  t.match(rec, { id, mode: 'bridge', bridge: br, createdBridge: true, mtu: 1500, internal: false, masquerade: true, icc: true, gatewayMode: 'nat' });
  t.same(rec!.ipv4, [{ pool: '10.10.0.0/24', gateway: '10.10.0.1/24', aux: {} }]);
  t.same((await h.diskState()).networks[id], rec, 'and on disk');
  t.equal(h.runner.links.get(br)?.linkinfo?.info_kind, 'bridge', 'the modelled kernel has the bridge');
});

t.test('CreateNetwork with IPv6, aux addresses, MTU and a custom bridge name', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  const body = createNetworkBody(id, {
    generic: { 'com.docker.network.bridge.name': 'br-mine', 'com.docker.network.driver.mtu': '1400' },
    ipv6: [{ Pool: 'fd00:1::/64', Gateway: 'fd00:1::1/64' }],
  });
  (body.IPv4Data as Array<Record<string, unknown>>)[0]!.AuxAddresses = { router: '10.10.0.2/24', plain: '10.10.0.3' };
  const res = await h.call('NetworkDriver.CreateNetwork', body);
  t.equal(res.status, 200, res.raw);
  const input = h.runner.batchInput();
  t.match(input, 'link add name br-mine address');
  t.match(input, 'mtu 1400 type bridge');
  t.match(input, 'addr add 10.10.0.1/24 dev br-mine\naddr add fd00:1::1/64 dev br-mine nodad\n');
  t.notOk(h.runner.sysctlWrites.some(([k]) => k.endsWith('disable_ipv6')), 'IPv6 stays enabled on a dual-stack bridge');
  t.ok(h.runner.sysctlWrites.some(([k, v]) => k === 'net/ipv6/conf/all/forwarding' && v === '1'));
  t.match(h.runner.nftScripts()[1]!.input, 'ip6 saddr fd00:1::/64 masquerade');
  t.ok(
    h.runner.callsOf('ip6tables-restore').some((c) => c.input?.includes('-A TSNET-FORWARD -i br-mine ')),
    'a dual-stack network gets the ip6tables FORWARD glue too',
  );
  const rec = h.store.state.networks[id]!;
  t.same(rec.ipv4[0]!.aux, { router: '10.10.0.2', plain: '10.10.0.3' });
  t.same(rec.ipv6, [{ pool: 'fd00:1::/64', gateway: 'fd00:1::1/64', aux: {} }]);
  t.equal(rec.mtu, 1400);
});

t.test('CreateNetwork takes a smaller uplink MTU by default', async (t) => {
  const runner = new FakeRunner();
  runner.defaultRoutes4 = [{ dst: 'default', gateway: '192.0.2.1', dev: 'eth0' }];
  runner.addLink('eth0', { mtu: 1450 });
  const h = await buildHarness(t, { runner });
  const id = dockerId();
  await createNetwork(h, id);
  t.match(h.runner.batchInput(), 'mtu 1450 type bridge');
  t.equal(h.store.state.networks[id]!.mtu, 1450);
});

t.test('CreateNetwork twice with the same settings is idempotent', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  await createNetwork(h, id);
  const writes = h.store.writes;
  h.runner.clearCalls();
  const again = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.same([again.status, again.body], [200, {}]);
  t.same(h.runner.calls, [], 'no command the second time');
  t.equal(h.store.writes, writes, 'no extra store write');
});

t.test('CreateNetwork again with other settings is refused', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  await createNetwork(h, id);
  const otherPool = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id, { pool: '10.11.0.0/24' }));
  t.equal(otherPool.status, 500, 'different IPv4 subnet');
  t.match(otherPool.body.Err, 'already exists with other settings');
  // Only the bridge and the IPv4 data are compared today: a replay that
  // differs in IPv6 or in --internal answers success for a network that
  // does not have those settings.
  const otherV6 = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id, { ipv6: [{ Pool: 'fd00:9::/64', Gateway: 'fd00:9::1/64' }] }));
  t.equal(otherV6.status, 500, 'different IPv6 subnet');
  const otherInternal = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id, { top: { 'com.docker.network.internal': true } }));
  t.equal(otherInternal.status, 500, '--internal this time');
});

t.test('bad input: 500 naming the option or field, zero commands, nothing stored', async (t) => {
  const cases: Array<[string, (id: string) => unknown, RegExp[]]> = [
    ['invalid bridge name', (id) => createNetworkBody(id, { generic: { 'com.docker.network.bridge.name': 'bad name' } }), [/com\.docker\.network\.bridge\.name/, /"bad name"/]],
    ['MTU 10', (id) => createNetworkBody(id, { generic: { 'com.docker.network.driver.mtu': '10' } }), [/com\.docker\.network\.driver\.mtu/, /10/]],
    ['masquerade maybe', (id) => createNetworkBody(id, { generic: { 'com.docker.network.bridge.enable_ip_masquerade': 'maybe' } }), [/enable_ip_masquerade/, /"maybe"/]],
    ['unknown tsnet option', (id) => createNetworkBody(id, { generic: { 'tsnet.colour': 'blue' } }), [/tsnet\.colour/]],
    ['overlay mode', (id) => createNetworkBody(id, { generic: { 'tsnet.mode': 'overlay' } }), [/overlay/]],
    [
      'two IPv4Data entries',
      (id) => ({
        ...createNetworkBody(id),
        IPv4Data: [
          { AddressSpace: 'x', Pool: '10.10.0.0/24', Gateway: '10.10.0.1/24' },
          { AddressSpace: 'x', Pool: '10.12.0.0/24', Gateway: '10.12.0.1/24' },
        ],
      }),
      [/IPv4Data/, /got 2/],
    ],
    ['Gateway outside Pool', (id) => createNetworkBody(id, { gateway: '10.99.0.1/24' }), [/IPv4Data\[0\]\.Gateway/, /"10\.99\.0\.1\/24"/, /10\.10\.0\.0\/24/]],
    ['Pool not a CIDR', (id) => ({ ...createNetworkBody(id), IPv4Data: [{ AddressSpace: 'x', Pool: '10.10.0.0', Gateway: '10.10.0.1/24' }] }), [/IPv4Data\[0\]\.Pool/, /"10\.10\.0\.0"/]],
    ['IPv6 pool in IPv4Data', (id) => ({ ...createNetworkBody(id), IPv4Data: [{ AddressSpace: 'x', Pool: 'fd00::/64', Gateway: 'fd00::1/64' }] }), [/IPv4Data\[0\]\.Pool/, /not an IPv4 CIDR/]],
    ['no Gateway', (id) => ({ ...createNetworkBody(id), IPv4Data: [{ AddressSpace: 'x', Pool: '10.10.0.0/24' }] }), [/IPv4Data/, /no Gateway/]],
    [
      'aux address outside Pool',
      (id) => ({ ...createNetworkBody(id), IPv4Data: [{ AddressSpace: 'x', Pool: '10.10.0.0/24', Gateway: '10.10.0.1/24', AuxAddresses: { r: '10.11.0.2/24' } }] }),
      [/AuxAddresses\["r"\]/, /"10\.11\.0\.2\/24"/],
    ],
    ['NetworkID not hex', (id) => createNetworkBody(`${id.slice(0, 60)}zzzz`), [/NetworkID/, /hex/, /zzzz/]],
    ['isolated without --internal', (id) => createNetworkBody(id, { generic: { 'com.docker.network.bridge.gateway_mode_ipv4': 'isolated' } }), [/gateway_mode_ipv4/, /internal/]],
  ];
  for (const [name, body, patterns] of cases) {
    await t.test(name, async (t) => {
      const h = await buildHarness(t);
      const id = dockerId();
      const res = await h.call('NetworkDriver.CreateNetwork', body(id));
      t.equal(res.status, 500);
      t.same(Object.keys(res.body), ['Err']);
      for (const p of patterns) t.match(res.body.Err as string, p);
      await nothingHappened(t, h, id);
      t.same(h.store.state.networks, {}, 'no record at all');
    });
  }
});

t.test('overlapping subnets or a taken bridge name are refused before the kernel', async (t) => {
  const h = await buildHarness(t);
  const a = dockerId();
  await createNetwork(h, a, { generic: { 'com.docker.network.bridge.name': 'br-shared' } });
  h.runner.clearCalls();
  const b = dockerId();
  const overlap = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(b, { pool: '10.10.0.128/25', gateway: '10.10.0.129/25' }));
  t.equal(overlap.status, 500);
  t.match(overlap.body.Err, `subnet 10.10.0.128/25 overlaps 10.10.0.0/24 of tsnet network ${shortId(a)} (br-shared)`);
  const sameBridge = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(b, { pool: '10.20.0.0/24', generic: { 'com.docker.network.bridge.name': 'br-shared' } }));
  t.equal(sameBridge.status, 500);
  t.match(sameBridge.body.Err, `bridge br-shared is already used by tsnet network ${shortId(a)}`);
  t.same(h.runner.writes(), [], 'no kernel change');
  t.notOk(h.store.state.networks[b]);
});

t.test('a foreign device with the bridge name is not taken over', async (t) => {
  const runner = new FakeRunner();
  const id = dockerId();
  runner.addLink(bridgeName(id), { linkinfo: { info_kind: 'veth' } });
  runner.addLink('br-user', { linkinfo: { info_kind: 'bridge' } });
  const h = await buildHarness(t, { runner });
  const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.equal(res.status, 500);
  t.match(res.body.Err, `cannot use ${bridgeName(id)}: a veth device with that name exists`);
  t.same(h.runner.writes(), []);
  // A user's bridge named with -o bridge.name is adopted: addresses added, never created or deleted.
  const id2 = dockerId();
  h.runner.clearCalls();
  const adopt = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id2, { generic: { 'com.docker.network.bridge.name': 'br-user' } }));
  t.equal(adopt.status, 200, adopt.raw);
  t.notMatch(h.runner.batchInput(), 'link add', 'the bridge is not created');
  t.match(h.runner.batchInput(), 'addr replace 10.10.0.1/24 dev br-user');
  t.equal(h.store.state.networks[id2]!.createdBridge, false);
  h.runner.clearCalls();
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id2 });
  t.notOk(h.runner.calls.some((c) => c.line === 'ip link del dev br-user'), 'an adopted bridge is never deleted');
  t.match(h.runner.batchInput(), 'addr del 10.10.0.1/24 dev br-user', 'only its gateway address is removed');
  t.ok(h.runner.links.has('br-user'));
});

t.test('CreateEndpoint', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);

  const unknownNet = await createEndpoint(h, dockerId(), dockerId());
  t.equal(unknownNet.status, 500, 'unknown network');
  t.match(unknownNet.body.Err, /network [0-9a-f]{12} not found/);

  h.runner.clearCalls();
  const ep = dockerId();
  const res = await createEndpoint(h, net, ep);
  t.equal(res.status, 200, res.raw);
  t.same(res.body, { Interface: { MacAddress: containerMac(net, '10.10.0.2/24', ep) } }, 'MAC returned when dockerd gave none; Address never echoed');
  t.match((res.body.Interface as { MacAddress: string }).MacAddress, /^02:/, 'locally administered');
  const input = h.runner.batchInput();
  t.match(input, `link add name ${hostVethName(ep)} mtu 1500 type veth peer name ${peerVethName(ep)} mtu 1500 address ${containerMac(net, '10.10.0.2/24', ep)}`);
  t.match(input, `master ${bridgeName(net)}`);
  t.match(input, `link set dev ${hostVethName(ep)} up`);
  t.notOk(h.runner.calls.some((c) => c.cmd === 'nft' || c.cmd.startsWith('iptables')), 'no firewall change per endpoint');
  const rec = (await h.diskState()).endpoints[ep];
  t.match(rec, { id: ep, networkId: net, hostVeth: hostVethName(ep), peerVeth: peerVethName(ep), mac: containerMac(net, '10.10.0.2/24', ep), macAssigned: true, address: '10.10.0.2/24' });

  // The same address in the same network again (a restarted container): the same MAC, so peers' ARP caches stay right.
  t.equal(containerMac(net, '10.10.0.2/24', dockerId()), containerMac(net, '10.10.0.2/24', ep), 'derived from the address, not the endpoint');
  t.not(containerMac(net, '10.10.0.3/24', ep), containerMac(net, '10.10.0.2/24', ep));
  const again = await createEndpoint(h, net, ep);
  t.same([again.status, again.body], [200, { Interface: { MacAddress: containerMac(net, '10.10.0.2/24', ep) } }], 'a repeat answers the same');

  const ep2 = dockerId();
  const given = await createEndpoint(h, net, ep2, { Address: '10.10.0.3/24', MacAddress: '02:42:AC:11:00:02' });
  t.equal(given.status, 200);
  t.same(given.body, {}, 'dockerd set the MAC: nothing is returned');
  t.equal(h.store.state.endpoints[ep2]!.mac, '02:42:ac:11:00:02');
  t.equal(h.store.state.endpoints[ep2]!.macAssigned, false);

  const ep3 = dockerId();
  h.runner.clearCalls();
  const outside = await createEndpoint(h, net, ep3, { Address: '10.99.0.3/24' });
  t.equal(outside.status, 500);
  t.match(outside.body.Err, "Interface.Address: 10.99.0.3/24 is not in the network's subnet 10.10.0.0/24");
  const badMac = await createEndpoint(h, net, ep3, { MacAddress: 'zz:zz' });
  t.match(badMac.body.Err, 'Interface.MacAddress: "zz:zz" is not a MAC address');
  t.same(h.runner.writes(), [], 'refused before the kernel');
  t.notOk(h.store.state.endpoints[ep3]);
});

t.test('an endpoint whose address dockerd gives to a new one is dropped, devices and all', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);
  // The first CreateEndpoint completed here, but dockerd never got the answer
  // (tsnet killed mid-request): it released the address and sent no DeleteEndpoint.
  const lost = dockerId();
  t.equal((await createEndpoint(h, net, lost, { Address: '10.10.0.5/24' })).status, 200);
  const other = dockerId();
  t.equal((await createEndpoint(h, net, other, { Address: '10.10.0.6/24' })).status, 200);
  h.runner.clearCalls();
  const fresh = dockerId();
  t.equal((await createEndpoint(h, net, fresh, { Address: '10.10.0.5/24' })).status, 200, 'the address given again');
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${hostVethName(lost)}`), "the lost endpoint's veth is deleted");
  const disk = await h.diskState();
  t.notOk(disk.endpoints[lost], 'and its record, on disk');
  t.ok(disk.endpoints[fresh] && disk.endpoints[other], 'the new endpoint and the others stay');
});

t.test('a failed veth is cleaned up and not recorded', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);
  h.runner.failOn({ cmd: 'ip', args: ['-batch'], input: 'type bridge_slave', stderr: 'Error: argument "isolated" is wrong\n' });
  const ep = dockerId();
  const res = await createEndpoint(h, net, ep);
  t.equal(res.status, 500);
  t.match(res.body.Err, 'isolated');
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${hostVethName(ep)}`), 'the half-made veth is deleted');
  t.notOk(h.store.state.endpoints[ep]);
});

t.test('Join: interface names and a plain-IP gateway', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net, { generic: { 'com.docker.network.container_iface_prefix': 'tsn' } });
  const ep = dockerId();
  await createEndpoint(h, net, ep);
  const res = await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/var/run/docker/netns/1a2b3c4d5e6f', Options: {} });
  t.equal(res.status, 200, res.raw);
  t.same(res.body, { InterfaceName: { SrcName: peerVethName(ep), DstPrefix: 'tsn' }, DisableGatewayService: false, Gateway: '10.10.0.1' });
  t.notMatch(res.body.Gateway as string, '/', 'no prefix length');
  await h.store.commit();
  t.equal((await h.diskState()).endpoints[ep]!.sandboxKey, '/var/run/docker/netns/1a2b3c4d5e6f', 'the sandbox is remembered');

  const unknownEp = await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: dockerId(), SandboxKey: '/x', Options: {} });
  t.equal(unknownEp.status, 500);
  t.match(unknownEp.body.Err, /endpoint [0-9a-f]{12} not found on network/);
});

t.test('Join on a dual-stack network returns both gateways, plain', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net, { ipv6: [{ Pool: 'fd00:2::/64', Gateway: 'fd00:2::1/64' }] });
  const ep = dockerId();
  await createEndpoint(h, net, ep, { AddressIPv6: 'fd00:2::5/64' });
  const res = await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: {} });
  t.same(res.body, { InterfaceName: { SrcName: peerVethName(ep), DstPrefix: 'eth' }, DisableGatewayService: false, Gateway: '10.10.0.1', GatewayIPv6: 'fd00:2::1' });
});

t.test('--internal: no gateway, no docker_gwbridge, no way out', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net, { top: { 'com.docker.network.internal': true } });
  t.notOk(h.runner.sysctlWrites.some(([k]) => k === 'net/ipv4/ip_forward'), 'forwarding is not needed');
  const sid = shortId(net);
  const script = h.runner.nftScripts()[1]!.input!;
  t.match(script, `add rule inet tsnet n-${sid}-out drop`);
  t.match(script, `add rule inet tsnet n-${sid}-in drop`);
  t.notMatch(script, /oifname != "[^"]+" ip6? saddr \S+ masquerade/, 'no masquerade towards the uplink');
  const ep = dockerId();
  await createEndpoint(h, net, ep);
  const res = await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: {} });
  t.equal(res.status, 200);
  t.same(res.body, { InterfaceName: { SrcName: peerVethName(ep), DstPrefix: 'eth' }, DisableGatewayService: true });
  t.notOk('Gateway' in res.body);
});

t.test('GwAllocCheck: skip gateways only in isolated mode', async (t) => {
  const h = await buildHarness(t);
  t.same((await h.call('NetworkDriver.GwAllocCheck', { Options: {} })).body, { SkipIPv4: false, SkipIPv6: false });
  const iso = await h.call('NetworkDriver.GwAllocCheck', {
    Options: { 'com.docker.network.internal': true, 'com.docker.network.generic': { 'com.docker.network.bridge.gateway_mode_ipv4': 'isolated' } },
  });
  t.same(iso.body, { SkipIPv4: true, SkipIPv6: true });
  const bad = await h.call('NetworkDriver.GwAllocCheck', { Options: { 'com.docker.network.generic': { 'com.docker.network.driver.mtu': 'x' } } });
  t.equal(bad.status, 500, 'options are validated here too');
});

t.test('EndpointOperInfo returns {"Value": {...}}', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);
  const ep = dockerId();
  await createEndpoint(h, net, ep);
  const res = await h.call('NetworkDriver.EndpointOperInfo', { NetworkID: net, EndpointID: ep });
  t.equal(res.status, 200);
  t.same(Object.keys(res.body), ['Value']);
  t.match(res.body.Value, { 'tsnet.host_veth': hostVethName(ep), 'tsnet.mac': containerMac(net, '10.10.0.2/24', ep) });
  t.ok(res.body.Value && typeof res.body.Value === 'object' && !Array.isArray(res.body.Value), 'Value is an object (a map)');
  const unknown = await h.call('NetworkDriver.EndpointOperInfo', { NetworkID: net, EndpointID: dockerId() });
  t.same([unknown.status, unknown.body], [200, { Value: {} }]);
});

t.test('Leave, DeleteEndpoint, DeleteNetwork: twice and for unknown IDs all answer 200 {}', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  const br = bridgeName(net);
  await createNetwork(h, net);
  const ep = dockerId();
  await createEndpoint(h, net, ep);
  await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: {} });
  const ok = (r: { status: number; body: unknown }, what: string) => t.same([r.status, r.body], [200, {}], what);

  for (let i = 1; i <= 2; i++) ok(await h.call('NetworkDriver.Leave', { NetworkID: net, EndpointID: ep }), `Leave #${i}`);
  ok(await h.call('NetworkDriver.Leave', { NetworkID: dockerId(), EndpointID: dockerId() }), 'Leave unknown');

  h.runner.clearCalls();
  ok(await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep }), 'DeleteEndpoint #1');
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${hostVethName(ep)}`), 'the veth is deleted');
  t.notOk((await h.diskState()).endpoints[ep], 'and forgotten on disk');
  ok(await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep }), 'DeleteEndpoint #2');
  ok(await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: dockerId(), EndpointID: dockerId() }), 'DeleteEndpoint unknown');

  h.runner.clearCalls();
  ok(await h.call('NetworkDriver.DeleteNetwork', { NetworkID: net }), 'DeleteNetwork #1');
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${br}`), 'the bridge is deleted');
  t.ok(
    h.runner.nftScripts().some((c) => c.input?.includes('delete table inet tsnet')),
    'the last network takes the nft table with it',
  );
  t.ok(
    h.runner.callsOf('iptables-restore').some((c) => c.input?.includes('-D FORWARD -j TSNET-FORWARD') && c.input.includes('-X TSNET-FORWARD')),
    'and the iptables jump and chain',
  );
  t.notOk((await h.diskState()).networks[net], 'forgotten on disk');
  t.notOk(h.runner.links.has(br));
  ok(await h.call('NetworkDriver.DeleteNetwork', { NetworkID: net }), 'DeleteNetwork #2');
  ok(await h.call('NetworkDriver.DeleteNetwork', { NetworkID: dockerId() }), 'DeleteNetwork unknown');
  ok(await h.call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: net, EndpointID: ep }), 'Revoke after delete');
});

t.test('DeleteNetwork of one network keeps the firewall of the others', async (t) => {
  const h = await buildHarness(t);
  const a = dockerId();
  const b = dockerId();
  await createNetwork(h, a);
  await createNetwork(h, b, { pool: '10.20.0.0/24' });
  h.runner.clearCalls();
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: a });
  const nft = h.runner.nftScripts();
  t.equal(nft.length, 1);
  t.match(nft[0]!.input, `delete chain inet tsnet n-${shortId(a)}-out`);
  t.notMatch(nft[0]!.input, 'delete table', 'the table stays');
  t.notMatch(nft[0]!.input, shortId(b), 'b is untouched');
  // Only a's two rules are deleted; the chain is not rewritten.
  const restore = h.runner.callsOf('iptables-restore').at(-1)!.input!;
  t.match(restore, `-D TSNET-FORWARD -i ${bridgeName(a)} -m comment --comment tsnet:${shortId(a)} -j ACCEPT`, 'a left TSNET-FORWARD');
  t.match(restore, `-D TSNET-FORWARD -o ${bridgeName(a)} -m comment --comment tsnet:${shortId(a)} -j ACCEPT`);
  t.notMatch(restore, bridgeName(b), 'b is untouched');
  t.notMatch(restore, ':TSNET-FORWARD', 'no flush of the chain');
});

t.test('DeleteNetwork also removes endpoints dockerd never deleted', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);
  const ep = dockerId();
  await createEndpoint(h, net, ep);
  h.runner.clearCalls();
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: net });
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${hostVethName(ep)}`));
  t.same((await h.diskState()).endpoints, {});
});

t.test('DeleteNetwork of an unknown ID removes a tagged leftover bridge only', async (t) => {
  const runner = new FakeRunner();
  const leftover = dockerId();
  runner.addLink(bridgeName(leftover), { ifalias: networkAlias(leftover), linkinfo: { info_kind: 'bridge' } });
  const foreign = dockerId();
  runner.addLink(bridgeName(foreign), { ifalias: 'somebody else', linkinfo: { info_kind: 'bridge' } });
  const h = await buildHarness(t, { runner });
  t.equal((await h.call('NetworkDriver.DeleteNetwork', { NetworkID: leftover })).status, 200);
  t.notOk(runner.links.has(bridgeName(leftover)), 'our tagged leftover is removed');
  t.equal((await h.call('NetworkDriver.DeleteNetwork', { NetworkID: foreign })).status, 200);
  t.ok(runner.links.has(bridgeName(foreign)), 'an untagged device is left alone');
});

t.test('a failing nft during CreateNetwork: 500, earlier steps undone, nothing persisted', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  const br = bridgeName(id);
  h.runner.failOn({ cmd: 'nft', stderr: 'Error: Could not process rule: Operation not supported\n' });
  const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.equal(res.status, 500);
  t.match(res.body.Err, /^nft -f -: .*Operation not supported/, 'the error names the command and its stderr');
  const bridgeAdd = h.runner.calls.findIndex((c) => c.input?.includes(`link add name ${br}`));
  const bridgeDel = h.runner.calls.findIndex((c) => c.line === `ip link del dev ${br}`);
  t.ok(bridgeAdd >= 0, 'the bridge had been created');
  t.ok(bridgeDel > bridgeAdd, 'and was deleted again (undo)');
  t.notOk(h.runner.links.has(br), 'no bridge left in the modelled kernel');
  t.notOk(h.store.state.networks[id], 'no record in memory');
  t.notOk((await h.diskState().catch(() => undefined))?.networks[id], 'no record on disk');

  h.runner.clearFailures();
  const retry = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.equal(retry.status, 200, 'a retry after the fault clears succeeds');
  t.ok(h.store.state.networks[id]);
});

t.test('a failing iptables-restore during CreateNetwork: nft rules and bridge undone', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  const br = bridgeName(id);
  h.runner.failOn({ cmd: 'iptables-restore', input: `-i ${br}`, stderr: 'iptables-restore: line 3 failed\n' });
  const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.equal(res.status, 500);
  t.match(res.body.Err, 'iptables-restore');
  const nft = h.runner.nftScripts();
  t.match(nft.at(-1)!.input, `delete chain inet tsnet n-${shortId(id)}-out`, "the network's nft chains were removed again");
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${br}`), 'the bridge was deleted');
  t.same(h.store.state.networks, {});
});

t.test('TSNET_TEST_FAIL_AFTER_STEP=firewall: every step undone, in reverse', async (t) => {
  const saved = process.env.TSNET_TEST_FAIL_AFTER_STEP;
  process.env.TSNET_TEST_FAIL_AFTER_STEP = 'firewall';
  t.teardown(() => {
    if (saved === undefined) delete process.env.TSNET_TEST_FAIL_AFTER_STEP;
    else process.env.TSNET_TEST_FAIL_AFTER_STEP = saved;
  });
  const h = await buildHarness(t);
  const id = dockerId();
  const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.equal(res.status, 500);
  t.match(res.body.Err, 'injected failure after step firewall');
  const lines = h.runner.calls.map((c) => (c.cmd === 'nft' ? `nft:${c.input?.includes('delete') ? 'delete' : 'add'}` : c.line));
  const fwRemoved = lines.lastIndexOf('nft:delete');
  const brDeleted = lines.indexOf(`ip link del dev ${bridgeName(id)}`);
  t.ok(fwRemoved >= 0 && brDeleted > fwRemoved, 'firewall removed first, then the bridge');
  t.same(h.store.state.networks, {});
});

t.test('a failing store write during CreateNetwork undoes the kernel changes', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  h.store.beforeRename = () => {
    throw new Error('No space left on device');
  };
  const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id));
  t.equal(res.status, 500);
  t.match(res.body.Err, 'No space left on device');
  t.ok(h.runner.calls.some((c) => c.line === `ip link del dev ${bridgeName(id)}`), 'bridge deleted');
  t.notOk(h.store.state.networks[id]);
});

t.test('networks and endpoints survive a plugin restart (dockerd does not replay them)', async (t) => {
  const dir = await tmpDir(t, 'restart');
  const first = await buildHarness(t, { dir });
  const net = dockerId();
  await createNetwork(first, net);
  await first.close();

  const second = await buildHarness(t, { dir });
  const ep = dockerId();
  const res = await createEndpoint(second, net, ep);
  t.equal(res.status, 200, 'CreateEndpoint for a network created in an earlier life');
  const join = await second.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: {} });
  t.equal(join.body.Gateway, '10.10.0.1');
});

t.test('gateway modes apply per address family, as in Docker', async (t) => {
  // Docker keeps IPv4 and IPv6 NAT apart: gateway_mode_ipv6=routed means
  // "no NAT for IPv6" and leaves IPv4 masqueraded, and the reverse.
  const dual = { ipv6: [{ Pool: 'fd00:3::/64', Gateway: 'fd00:3::1/64' }] };
  const h = await buildHarness(t);
  const a = dockerId();
  await createNetwork(h, a, { ...dual, generic: { 'com.docker.network.bridge.gateway_mode_ipv6': 'routed' } });
  const scriptA = h.runner.nftScripts().at(-1)!.input!;
  const uplinkA = (saddr: string) => `oifname != "${bridgeName(a)}" ${saddr} masquerade`;
  t.match(scriptA, uplinkA('ip saddr 10.10.0.0/24'), 'ipv6 routed: IPv4 still masqueraded');
  t.notMatch(scriptA, uplinkA('ip6 saddr fd00:3::/64'), 'ipv6 routed: IPv6 not masqueraded');
  const b = dockerId();
  await createNetwork(h, b, { pool: '10.20.0.0/24', ipv6: [{ Pool: 'fd00:4::/64', Gateway: 'fd00:4::1/64' }], generic: { 'com.docker.network.bridge.gateway_mode_ipv4': 'routed' } });
  const scriptB = h.runner.nftScripts().at(-1)!.input!;
  const uplinkB = (saddr: string) => `oifname != "${bridgeName(b)}" ${saddr} masquerade`;
  t.notMatch(scriptB, uplinkB('ip saddr 10.20.0.0/24'), 'ipv4 routed: IPv4 not masqueraded');
  t.match(scriptB, uplinkB('ip6 saddr fd00:4::/64'), 'ipv4 routed: IPv6 still masqueraded');
});

t.test('50 concurrent CreateEndpoint calls on one network all land', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);
  const eps = Array.from({ length: 50 }, () => dockerId());
  const res = await Promise.all(eps.map((ep, i) => createEndpoint(h, net, ep, { Address: `10.10.0.${i + 2}/24` })));
  t.equal(res.filter((r) => r.status === 200).length, 50);
  const disk = await h.diskState();
  t.same(Object.keys(disk.endpoints).sort(), [...eps].sort(), 'every endpoint is on disk');
  t.equal(new Set(Object.values(disk.endpoints).map((e) => e.hostVeth)).size, 50);
});

t.test('Leave forgets the sandbox; Join without a network record fails cleanly', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  await createNetwork(h, net);
  const ep = dockerId();
  await createEndpoint(h, net, ep);
  await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  await h.call('NetworkDriver.Leave', { NetworkID: net, EndpointID: ep });
  await h.store.commit();
  t.notOk((await h.diskState()).endpoints[ep]!.sandboxKey, 'sandboxKey cleared on disk');
  const none = await h.call('NetworkDriver.Join', { NetworkID: dockerId(), EndpointID: ep, SandboxKey: '/x', Options: {} });
  t.equal(none.status, 500);
  t.match(none.body.Err, 'not found');
});

t.test("an overlay's underlay: this host's VTEP address, IPv4 or IPv6, and peers of one family", async (t) => {
  const { OverlayManager } = await import('../../src/overlay/manager.js');
  const { ClusterNetworks } = await import('../../src/cluster/networks.js');
  const h = await buildHarness(t);
  const cluster = new ClusterNetworks({ store: h.store, log: silentLogger() });
  const manager = (advertiseAddr?: string): InstanceType<typeof OverlayManager> =>
    new OverlayManager({ runner: h.runner, store: h.store, cluster, log: silentLogger(), vxlanPort: 4789, advertiseAddr });
  h.runner.addLink('eth0', { mtu: 9000 });
  h.runner.addrs = [{ ifname: 'eth0', addr_info: [
    { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' },
    { family: 'inet6', local: '2001:db8::10', prefixlen: 64, scope: 'global' },
  ] }];
  h.runner.defaultRoutes6 = [{ dst: 'default', gateway: 'fe80::ff', dev: 'eth0' }];
  t.same(await manager().underlay(), { local: '2001:db8::10', dev: 'eth0', mtu: 9000 }, 'an IPv6-only host: the global IPv6 address of the default route\'s interface');
  h.runner.addrs[0]!.addr_info.push({ family: 'inet', local: '192.0.2.10', prefixlen: 24, scope: 'global' });
  h.runner.defaultRoutes4 = [{ dst: 'default', gateway: '192.0.2.1', dev: 'eth0' }];
  t.same(await manager().underlay(), { local: '192.0.2.10', dev: 'eth0', mtu: 9000 }, 'with an IPv4 default route, IPv4 first');
  t.same(await manager('2001:db8::10').underlay(), { local: '2001:db8::10', dev: 'eth0', mtu: 9000 }, 'TSNET_ADVERTISE_ADDR chooses');
  await t.rejects(manager('2001:db8::99').underlay(), /TSNET_ADVERTISE_ADDR 2001:db8::99 is not an address of this host/);
  h.runner.defaultRoutes4 = [];
  h.runner.defaultRoutes6 = [];
  await t.rejects(manager().underlay(), /no default route .*set TSNET_ADVERTISE_ADDR/);

  const { vxlanOverhead } = await import('../../src/overlay/manager.js');
  t.equal(vxlanOverhead('192.0.2.10'), 50);
  t.equal(vxlanOverhead('2001:db8::10'), 70, 'a 40-byte outer IPv6 header');
  const plan = (m: InstanceType<typeof OverlayManager>, peers: string[]) =>
    m.plan({ subnet: '10.230.0.0/24', pools: undefined, gateway: undefined, vni: undefined, peers, vxlan: 'tsvx-test' });
  await t.rejects(plan(manager('192.0.2.10'), ['192.0.2.11', '2001:db8::11']), /tsnet\.peers: "2001:db8::11" and "192\.0\.2\.11" are of different IP families/);
  await t.rejects(plan(manager('192.0.2.10'), ['2001:db8::11']), /"2001:db8::11" is IPv6 but this host's VTEP address 192\.0\.2\.10 is IPv4/);
  const ok = await plan(manager('2001:db8::10'), ['2001:db8::10', '2001:db8::11']);
  t.same(ok.overlay.peers, ['2001:db8::11'], 'an IPv6 static overlay, this host left out of its own peers');
  t.equal(ok.overlay.local, '2001:db8::10');
  t.same(h.runner.callsOf('ip').filter((c) => c.args.includes('add')), [], 'planning touches nothing');
});
