// The request sequences of dockerd 26 to 29 that 20.10 never sends
// (modern-dockerd.md §1, "What tsnet must test"), driven through the real
// app with a FakeRunner: GwAllocCheck against CreateNetwork's own rule, a
// Join answer dockerd rejects (27+: Leave, then DeleteEndpoint), 29's
// Program/Revoke on gateway changes and its lost-state case, --ipv4=false
// networks, and IPv6 switched off on links with no IPv6 address.
import t, { type Test } from 'tap';
import { bridgeName, endpointAlias, hostVethName, peerVethName } from '../../src/kernel/names.js';
import { dockerId } from '../helpers/fake-runner.js';
import { buildHarness, createNetworkBody, type Harness } from '../helpers/harness.js';

const ok200 = (t: Test, r: { status: number; raw: string }, what: string): void => void t.equal(r.status, 200, `${what}: ${r.raw}`);

/** The addresses tsnet put on a bridge, from the `ip -batch` input it ran. */
function bridgeAddrs(h: Harness, br: string): string[] {
  const re = new RegExp(`^addr (?:add|replace) (\\S+) dev ${br}(?: nodad)?$`);
  return h.runner
    .batchInput()
    .split('\n')
    .map((l) => re.exec(l)?.[1])
    .filter((a): a is string => a !== undefined);
}

const harness = (t: Test): Promise<Harness> => buildHarness(t);

function portmap(hostIp: string, hostPort: number, port = 80): Record<string, unknown> {
  return {
    'com.docker.network.endpoint.exposedports': [{ Proto: 6, Port: port }],
    'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: port, HostIP: hostIp, HostPort: hostPort, HostPortEnd: hostPort }],
  };
}

function freePort(): number {
  return 40000 + Math.floor(Math.random() * 20000);
}

async function endpoint(h: Harness, net: string, address: string, addressV6 = '', options: Record<string, unknown> = {}): Promise<string> {
  const ep = dockerId();
  const r = await h.call('NetworkDriver.CreateEndpoint', { NetworkID: net, EndpointID: ep, Interface: { Address: address, AddressIPv6: addressV6, MacAddress: '' }, Options: options });
  if (r.status !== 200) throw new Error(`CreateEndpoint: ${r.raw}`);
  return ep;
}

/** Nothing of the endpoint is left: no veth, no record in memory or on disk, no published port. */
async function endpointGone(t: Test, h: Harness, ep: string): Promise<void> {
  t.notOk(h.runner.links.has(hostVethName(ep)), 'no host veth');
  t.notOk(h.runner.links.has(peerVethName(ep)), 'no container end');
  t.notOk([...h.runner.links.values()].some((l) => l.ifalias === endpointAlias(ep)), 'no link tagged with the endpoint');
  t.notOk(h.store.state.endpoints[ep], 'no record in memory');
  t.notOk((await h.diskState()).endpoints[ep], 'no record on disk');
}

t.test('GwAllocCheck (28+) and CreateNetwork (every dockerd) apply one gateway rule', async (t) => {
  // Every valid combination of the options the rule reads, on a dual-stack network.
  const combos: Array<Record<string, string>> = [];
  for (const internal of [false, true]) {
    for (const gw4 of ['nat', 'routed', 'isolated']) {
      for (const gw6 of ['nat', 'isolated']) {
        for (const inhibit of ['false', 'true']) {
          if (!internal && (gw4 === 'isolated' || gw6 === 'isolated')) continue;
          combos.push({
            internal: String(internal),
            'com.docker.network.bridge.gateway_mode_ipv4': gw4,
            'com.docker.network.bridge.gateway_mode_ipv6': gw6,
            'com.docker.network.bridge.inhibit_ipv4': inhibit,
          });
        }
      }
    }
  }
  t.equal(combos.length, 16);
  let i = 0;
  for (const c of combos) {
    i++;
    const { internal, ...generic } = c;
    const label = `internal=${internal} ${Object.entries(generic).map(([k, v]) => `${k.split('.').pop()}=${v}`).join(' ')}`;
    await t.test(label, async (t) => {
      const h = await harness(t);
      const top = { 'com.docker.network.internal': internal === 'true' };
      const check = await h.call('NetworkDriver.GwAllocCheck', { Options: { ...top, 'com.docker.network.generic': generic, 'com.docker.network.enable_ipv4': true, 'com.docker.network.enable_ipv6': true } });
      ok200(t, check, 'GwAllocCheck');
      const skip4 = check.body.SkipIPv4 as boolean;
      const skip6 = check.body.SkipIPv6 as boolean;
      const pool4 = `10.${100 + i}.0.0/24`;
      const pool6 = `fd00:${i}::/64`;

      // dockerd 28+: the gateways GwAllocCheck skipped are not allocated.
      const n28 = dockerId();
      const body28 = createNetworkBody(n28, { pool: pool4, generic, top, ipv6: [{ Pool: pool6, ...(skip6 ? {} : { Gateway: `fd00:${i}::1/64` }) }] });
      if (skip4) delete (body28.IPv4Data as Array<Record<string, unknown>>)[0]!.Gateway;
      ok200(t, await h.call('NetworkDriver.CreateNetwork', body28), 'CreateNetwork as 28 sends it');
      // dockerd before 28 never asks: its IPAM allocated both gateways.
      const n26 = dockerId();
      const pool4b = `10.${100 + i}.1.0/24`;
      const pool6b = `fd00:${i}:1::/64`;
      ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(n26, { pool: pool4b, generic: { ...generic }, top, ipv6: [{ Pool: pool6b, Gateway: `fd00:${i}:1::1/64` }] })), 'CreateNetwork as 26 sends it');

      const want4 = !skip4 && generic['com.docker.network.bridge.inhibit_ipv4'] === 'false';
      const on28 = bridgeAddrs(h, bridgeName(n28));
      const on26 = bridgeAddrs(h, bridgeName(n26));
      t.same(on28.map((a) => a.includes(':')), [...(want4 ? [false] : []), ...(skip6 ? [] : [true])], 'the bridge has exactly the gateways not skipped (28)');
      t.same(on26.map((a) => a.includes(':')), on28.map((a) => a.includes(':')), 'a gateway allocated anyway (26) is left unused just the same');

      // A family GwAllocCheck does not skip needs its gateway from an older dockerd too.
      if (!skip6) {
        const n = dockerId();
        const r = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(n, { pool: `10.${100 + i}.2.0/24`, generic, top, ipv6: [{ Pool: `fd00:${i}:2::/64` }] }));
        t.equal(r.status, 500, 'IPv6 without the gateway GwAllocCheck asked for is refused');
        t.match(r.body.Err, /IPv6Data: no Gateway for fd00/);
      }
      if (!skip4 && generic['com.docker.network.bridge.inhibit_ipv4'] === 'false') {
        const n = dockerId();
        const body = createNetworkBody(n, { pool: `10.${100 + i}.3.0/24`, generic, top });
        delete (body.IPv4Data as Array<Record<string, unknown>>)[0]!.Gateway;
        const r = await h.call('NetworkDriver.CreateNetwork', body);
        t.equal(r.status, 500, 'IPv4 without the gateway GwAllocCheck asked for is refused');
        t.match(r.body.Err, /IPv4Data: no Gateway for 10\./);
      }
    });
  }
});

t.test('a Join answer dockerd rejects (27+): Leave, then DeleteEndpoint, leaves nothing behind', async (t) => {
  const h = await harness(t);
  const net = dockerId();
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net)), 'CreateNetwork');
  const before = new Set(h.runner.links.keys());
  const port = freePort();
  const ep = await endpoint(h, net, '10.10.0.2/24', '', portmap('127.0.0.1', port));
  const join = await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/var/run/docker/netns/0123456789ab', Options: portmap('127.0.0.1', port) });
  ok200(t, join, 'Join');
  t.equal(join.body.Gateway, '10.10.0.1', 'the answer tsnet gives is a plain address in the subnet (never what 27 rolls back for)');
  // dockerd 27+ found the answer unusable (sandbox.go: a bad Gateway or
  // StaticRoute) and rolls back: Leave, then DeleteEndpoint, no Program.
  ok200(t, await h.call('NetworkDriver.Leave', { NetworkID: net, EndpointID: ep }), 'Leave');
  t.notOk(h.store.state.endpoints[ep]?.sandboxKey, 'the sandbox is forgotten at Leave');
  ok200(t, await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep }), 'DeleteEndpoint');
  await endpointGone(t, h, ep);
  t.same(new Set(h.runner.links.keys()), before, 'the links are as before the endpoint');
  // 20.10 called no Leave: DeleteEndpoint straight after Join cleans up the same.
  const ep2 = await endpoint(h, net, '10.10.0.3/24');
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep2, SandboxKey: '/x', Options: {} }), 'Join');
  ok200(t, await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep2 }), 'DeleteEndpoint without Leave');
  await endpointGone(t, h, ep2);
  // A Join that failed (the network is not tsnet's): the rollback still answers 200.
  const stranger = dockerId();
  t.equal((await h.call('NetworkDriver.Join', { NetworkID: dockerId(), EndpointID: stranger, SandboxKey: '/x', Options: {} })).status, 500, 'a Join tsnet cannot do fails');
  ok200(t, await h.call('NetworkDriver.Leave', { NetworkID: net, EndpointID: stranger }), 'its Leave');
  ok200(t, await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: stranger }), 'its DeleteEndpoint');
});

t.test('Program/Revoke as 29 sends them: on a gateway change, once each, with the port moving between endpoints', async (t) => {
  const h = await harness(t);
  const a = dockerId();
  const b = dockerId();
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(a, { pool: '10.10.0.0/24' })), 'network a');
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(b, { pool: '10.11.0.0/24' })), 'network b');
  const port = freePort();
  const opts = portmap('127.0.0.1', port);
  // One container on both networks: b's gw-priority is raised, then lowered again.
  const ea = await endpoint(h, a, '10.10.0.2/24', '', opts);
  const eb = await endpoint(h, b, '10.11.0.2/24', '', opts);
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: a, EndpointID: ea, SandboxKey: '/x', Options: opts }), 'Join a');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: a, EndpointID: ea, Options: opts }), 'Program a (the gateway)');
  t.equal(h.store.state.endpoints[ea]!.ports.length, 1, 'a holds the port');
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: b, EndpointID: eb, SandboxKey: '/x', Options: opts }), 'Join b');
  const taken = await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: b, EndpointID: eb, Options: opts });
  t.equal(taken.status, 500, 'while a holds it, b cannot have the same host port');
  t.match(taken.body.Err, new RegExp(`127\\.0\\.0\\.1:${port}/tcp is already published by endpoint ${ea.slice(0, 12)}`));
  // 29: b becomes the gateway: Revoke a, then Program b.
  ok200(t, await h.call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: a, EndpointID: ea }), 'Revoke a');
  t.same(h.store.state.endpoints[ea]!.ports, [], 'a released the port');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: b, EndpointID: eb, Options: opts }), 'Program b');
  t.equal(h.store.state.endpoints[eb]!.ports.length, 1, 'b holds it now');
  // And back.
  ok200(t, await h.call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: b, EndpointID: eb }), 'Revoke b');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: a, EndpointID: ea, Options: opts }), 'Program a again');
  // A repeated Program (29 sends none, older dockerd may) replaces, never duplicates.
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: a, EndpointID: ea, Options: opts }), 'Program a once more');
  t.equal(h.store.state.endpoints[ea]!.ports.length, 1, 'one binding, not two');
  t.equal((await h.diskState()).endpoints[ea]!.ports.length, 1, 'on disk as well');
  // 29 at container stop: Revoke (the gateway leaves), Leave, DeleteEndpoint; b has nothing to revoke.
  ok200(t, await h.call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: a, EndpointID: ea }), 'Revoke a at stop');
  ok200(t, await h.call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: b, EndpointID: eb }), 'a Revoke of an endpoint without ports is harmless');
  for (const [n, e] of [[a, ea], [b, eb]] as const) {
    ok200(t, await h.call('NetworkDriver.Leave', { NetworkID: n, EndpointID: e }), 'Leave');
    ok200(t, await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: n, EndpointID: e }), 'DeleteEndpoint');
    await endpointGone(t, h, e);
  }
});

t.test('cleanup never waits for a Revoke: DeleteEndpoint and DeleteNetwork take the port rules with them', async (t) => {
  const h = await harness(t);
  const net = dockerId();
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net)), 'CreateNetwork');
  const port = freePort();
  const opts = portmap('127.0.0.1', port);
  const ep = await endpoint(h, net, '10.10.0.2/24', '', opts);
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: opts }), 'Join');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: net, EndpointID: ep, Options: opts }), 'Program');
  // 29 lost its gateway state (live-restore, plugin re-registration): no Revoke comes.
  h.runner.clearCalls();
  ok200(t, await h.call('NetworkDriver.Leave', { NetworkID: net, EndpointID: ep }), 'Leave');
  ok200(t, await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep }), 'DeleteEndpoint, no Revoke');
  t.ok(
    h.runner.nftScripts().some((c) => c.input?.includes('delete element') && c.input.includes(String(port))),
    'the port\'s nft elements are deleted',
  );
  await endpointGone(t, h, ep);
  const next = await endpoint(h, net, '10.10.0.3/24', '', opts);
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: next, SandboxKey: '/x', Options: opts }), 'Join');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: net, EndpointID: next, Options: opts }), 'the host port is free for the next container');
  // Not even DeleteEndpoint: the network goes with the endpoint in it.
  h.runner.clearCalls();
  ok200(t, await h.call('NetworkDriver.DeleteNetwork', { NetworkID: net }), 'DeleteNetwork with a programmed endpoint');
  t.ok(h.runner.nftScripts().some((c) => c.input?.includes('delete element') && c.input.includes(String(port))), 'its port elements go too');
  await endpointGone(t, h, next);
  const other = dockerId();
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(other, { pool: '10.12.0.0/24' })), 'another network');
  const ep3 = await endpoint(h, other, '10.12.0.2/24', '', opts);
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: other, EndpointID: ep3, SandboxKey: '/x', Options: opts }), 'Join');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: other, EndpointID: ep3, Options: opts }), 'and the port is free again');
  // 29's revoke of an endpoint tsnet no longer knows (after its own cleanup) answers 200.
  ok200(t, await h.call('NetworkDriver.RevokeExternalConnectivity', { NetworkID: net, EndpointID: ep }), 'a late Revoke');
});

t.test('--ipv4=false (28+): IPv4Data empty, an IPv6 gateway alone, no IPv4 anywhere', async (t) => {
  const h = await harness(t);
  const gw = await h.call('NetworkDriver.GwAllocCheck', { Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true, 'com.docker.network.generic': {} } });
  t.same(gw.body, { SkipIPv4: false, SkipIPv6: false }, 'GwAllocCheck: IPv6 gets its gateway');
  const net = dockerId();
  const br = bridgeName(net);
  const res = await h.call('NetworkDriver.CreateNetwork', {
    NetworkID: net,
    Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true, 'com.docker.network.generic': {} },
    IPv4Data: [],
    IPv6Data: [{ AddressSpace: 'LocalDefault', Pool: 'fd00:6::/64', Gateway: 'fd00:6::1/64' }],
  });
  ok200(t, res, 'CreateNetwork');
  t.same(bridgeAddrs(h, br), ['fd00:6::1/64'], 'the bridge gets the IPv6 gateway only');
  t.notOk(h.runner.sysctlWrites.some(([k]) => k === `net/ipv6/conf/${br}/disable_ipv6`), 'IPv6 stays on on the bridge');
  t.ok(h.runner.sysctlWrites.some(([k, v]) => k === 'net/ipv6/conf/all/forwarding' && v === '1'), 'IPv6 forwarding on');
  t.notOk(h.runner.sysctlWrites.some(([k]) => k === 'net/ipv4/ip_forward'), 'IPv4 forwarding not touched');
  const nft = h.runner.nftScripts().map((c) => c.input ?? '').join('');
  t.match(nft, /ip6 saddr fd00:6::\/64 masquerade/, 'IPv6 egress masqueraded');
  t.notMatch(nft, /ip saddr \S+ masquerade/, 'no IPv4 masquerade');
  // CreateEndpoint as 28 sends it: an empty Address.
  const port = freePort();
  const opts = portmap('::1', port);
  const ep = await endpoint(h, net, '', 'fd00:6::2/64', opts);
  t.notOk(h.store.state.endpoints[ep]!.address, 'no IPv4 address recorded');
  t.notOk(h.runner.sysctlWrites.some(([k]) => k === `net/ipv6/conf/${hostVethName(ep)}/disable_ipv6`), 'the endpoint has IPv6: it stays on');
  const join = await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: opts });
  ok200(t, join, 'Join');
  t.same(join.body, { InterfaceName: { SrcName: peerVethName(ep), DstPrefix: 'eth' }, DisableGatewayService: false, GatewayIPv6: 'fd00:6::1' }, 'GatewayIPv6 alone, which keeps 28 from adding docker_gwbridge');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: net, EndpointID: ep, Options: opts }), 'Program');
  t.same(h.store.state.endpoints[ep]!.ports.map((p) => `[${p.hostIp}]:${p.hostPort}`), [`[::1]:${port}`], 'the port is published over IPv6');
  // Without a host address it would be [::] alone (plan(), test/api/growth.test.ts), never 0.0.0.0.
  ok200(t, await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep }), 'DeleteEndpoint');
  await endpointGone(t, h, ep);
  // An IPv6-only network without its gateway is refused, as any other family.
  const bad = await h.call('NetworkDriver.CreateNetwork', { NetworkID: dockerId(), Options: { 'com.docker.network.enable_ipv4': false, 'com.docker.network.enable_ipv6': true }, IPv4Data: [], IPv6Data: [{ AddressSpace: 'LocalDefault', Pool: 'fd00:7::/64' }] });
  t.equal(bad.status, 500);
  t.match(bad.body.Err, /IPv6Data: no Gateway for fd00:7::\/64/);
});

t.test('a link with no IPv6 address gets disable_ipv6, as dockerd 26.0.2+ does in the container', async (t) => {
  const h = await harness(t);
  const v4 = dockerId();
  const dual = dockerId();
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(v4, { pool: '10.10.0.0/24' })), 'IPv4-only network');
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(dual, { pool: '10.11.0.0/24', ipv6: [{ Pool: 'fd00:8::/64', Gateway: 'fd00:8::1/64' }] })), 'dual-stack network');
  t.ok(h.runner.sysctlWrites.some(([k, v]) => k === `net/ipv6/conf/${bridgeName(v4)}/disable_ipv6` && v === '1'), 'the IPv4-only bridge');
  t.notOk(h.runner.sysctlWrites.some(([k]) => k === `net/ipv6/conf/${bridgeName(dual)}/disable_ipv6`), 'not the dual-stack bridge');
  const off = (ep: string) => h.runner.sysctlWrites.some(([k, v]) => k === `net/ipv6/conf/${hostVethName(ep)}/disable_ipv6` && v === '1');
  // Options as 27/28 add them: endpoint.sysctls and endpoint.ifname are dockerd's to apply.
  const extra = { 'com.docker.network.endpoint.sysctls': 'net.ipv4.conf.IFNAME.log_martians=1', 'com.docker.network.endpoint.ifname': 'eth7' };
  const a = await endpoint(h, v4, '10.10.0.2/24', '', extra);
  const b = await endpoint(h, dual, '10.11.0.2/24', '', extra);
  const c = await endpoint(h, dual, '10.11.0.3/24', 'fd00:8::3/64', extra);
  t.ok(off(a), 'an endpoint of an IPv4-only network');
  t.ok(off(b), 'an endpoint with no IPv6 address on a dual-stack network');
  t.notOk(off(c), 'not an endpoint with an IPv6 address');
  const join = await h.call('NetworkDriver.Join', { NetworkID: v4, EndpointID: a, SandboxKey: '/x', Options: extra });
  t.equal((join.body.InterfaceName as { DstPrefix: string }).DstPrefix, 'eth', 'endpoint.ifname is dockerd\'s (remote drivers get SetNames(Src, DstPrefix, ""))');
});

t.test('option keys 28 and 29 add are accepted: no_proxy_6to4 at Program, endpoint.name at RequestAddress', async (t) => {
  const h = await harness(t);
  const pool = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '10.77.0.0/24', SubPool: '', Options: {}, V6: false });
  ok200(t, pool, 'RequestPool');
  // 29 names the container to IPAM (#50586): a name, not a request for a particular address.
  const addr = await h.call('IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: { 'com.docker.network.endpoint.name': 'web' } });
  ok200(t, addr, 'RequestAddress with endpoint.name');
  t.match(addr.body.Address, /^10\.77\.0\.\d+\/24$/);
  const net = dockerId();
  ok200(t, await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net, { pool: '10.10.0.0/24' })), 'CreateNetwork');
  const port = freePort();
  const opts = { ...portmap('127.0.0.1', port), 'driver.private.no_proxy_6to4': true };
  const ep = await endpoint(h, net, '10.10.0.2/24', '', opts);
  ok200(t, await h.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/x', Options: opts }), 'Join');
  ok200(t, await h.call('NetworkDriver.ProgramExternalConnectivity', { NetworkID: net, EndpointID: ep, Options: opts }), 'Program with no_proxy_6to4');
  t.equal(h.store.state.endpoints[ep]!.ports.length, 1, 'the port is published');
});
