// The HTTP traps of the plugin protocol (protocol.md §1.2, §1.5), against the
// real app over the real services, with a fake kernel.
import t from 'tap';
import { BODY_LIMIT } from '../../src/app.js';
import { dockerId } from '../helpers/fake-runner.js';
import { buildHarness, createNetworkBody } from '../helpers/harness.js';

const ACCEPT = 'application/vnd.docker.plugins.v1.2+json';

t.test('Plugin.Activate and the capability calls: exact shapes, empty bodies', async (t) => {
  const h = await buildHarness(t);
  const expected: Record<string, unknown> = {
    'Plugin.Activate': { Implements: ['NetworkDriver', 'IpamDriver'] },
    'NetworkDriver.GetCapabilities': { Scope: 'local', ConnectivityScope: 'local', GwAllocChecker: true },
    'IpamDriver.GetCapabilities': { RequiresMACAddress: false, RequiresRequestReplay: false },
    'IpamDriver.GetDefaultAddressSpaces': { LocalDefaultAddressSpace: 'tsnet-local', GlobalDefaultAddressSpace: 'tsnet-global' },
  };
  for (const [method, body] of Object.entries(expected)) {
    // dockerd sends these with no body at all and only an Accept header.
    const res = await h.app.inject({ method: 'POST', url: `/${method}`, headers: { accept: ACCEPT } });
    t.equal(res.statusCode, 200, `${method}: 200`);
    t.same(JSON.parse(res.body), body, `${method}: exact shape`);
    t.match(String(res.headers['content-type']), /^application\/json/, `${method}: JSON reply`);
    // Same call with Content-Type: application/json and an empty body.
    const res2 = await h.app.inject({ method: 'POST', url: `/${method}`, headers: { 'content-type': 'application/json' }, payload: '' });
    t.equal(res2.statusCode, 200, `${method}: empty JSON body works`);
    t.same(JSON.parse(res2.body), body);
    // And with a body that is only dockerd's trailing newline.
    const res3 = await h.app.inject({ method: 'POST', url: `/${method}`, headers: { 'content-type': 'application/json' }, payload: '\n' });
    t.equal(res3.statusCode, 200, `${method}: whitespace body works`);
  }
  t.equal(h.runner.calls.length, 0, 'no kernel commands for capability calls');
});

t.test('a JSON body without Content-Type is parsed (dockerd sends none)', async (t) => {
  const h = await buildHarness(t);
  const id = dockerId();
  const res = await h.app.inject({ method: 'POST', url: '/NetworkDriver.CreateNetwork', payload: `${JSON.stringify(createNetworkBody(id))}\n` });
  t.equal(res.raw.req.headers['content-type'], undefined, 'really no Content-Type');
  t.equal(res.statusCode, 200, res.body);
  t.same(JSON.parse(res.body), {});
  t.ok(h.store.state.networks[id], 'the body reached the driver');
  // Any other Content-Type is read as JSON too.
  const res2 = await h.app.inject({
    method: 'POST',
    url: '/IpamDriver.RequestPool',
    headers: { 'content-type': 'text/plain' },
    payload: JSON.stringify({ Pool: '10.99.0.0/24' }),
  });
  t.equal(res2.statusCode, 200, res2.body);
  t.equal(JSON.parse(res2.body).Pool, '10.99.0.0/24');
});

t.test('every success is HTTP 200 with a JSON object body', async (t) => {
  const h = await buildHarness(t);
  const net = dockerId();
  const ep = dockerId();
  const pool = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '', SubPool: '', Options: null, V6: false });
  const poolId = pool.body.PoolID as string;
  const calls: Array<[string, unknown]> = [
    ['IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } }],
    ['NetworkDriver.GwAllocCheck', { Options: {} }],
    ['NetworkDriver.CreateNetwork', createNetworkBody(net)],
    ['NetworkDriver.CreateEndpoint', { NetworkID: net, EndpointID: ep, Interface: { Address: '10.10.0.2/24', AddressIPv6: '', MacAddress: '' }, Options: {} }],
    ['NetworkDriver.EndpointOperInfo', { NetworkID: net, EndpointID: ep }],
    ['NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: '/var/run/docker/netns/abc', Options: {} }],
    ['NetworkDriver.ProgramExternalConnectivity', { NetworkID: net, EndpointID: ep, Options: {} }],
    ['NetworkDriver.RevokeExternalConnectivity', { NetworkID: net, EndpointID: ep }],
    ['NetworkDriver.Leave', { NetworkID: net, EndpointID: ep }],
    ['NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep }],
    ['NetworkDriver.DeleteNetwork', { NetworkID: net }],
    ['NetworkDriver.AllocateNetwork', { NetworkID: net, Options: { a: 'b' }, IPv4Data: [], IPv6Data: null }],
    ['NetworkDriver.FreeNetwork', { NetworkID: net }],
    ['NetworkDriver.DiscoverNew', { DiscoveryType: 1, DiscoveryData: { Address: '10.0.0.5', BindAddress: '0.0.0.0', Self: true } }],
    ['NetworkDriver.DiscoverDelete', { DiscoveryType: 1, DiscoveryData: { Address: '10.0.0.5' } }],
    ['IpamDriver.ReleaseAddress', { PoolID: poolId, Address: '10.210.0.1' }],
    ['IpamDriver.ReleasePool', { PoolID: poolId }],
  ];
  for (const [method, body] of calls) {
    const res = await h.call(method, body);
    t.equal(res.status, 200, `${method}: ${res.raw}`);
    t.ok(res.body && typeof res.body === 'object' && !Array.isArray(res.body), `${method}: a JSON object`);
    t.notOk('Err' in res.body, `${method}: no Err`);
    t.match(res.contentType ?? '', /^application\/json/, `${method}: JSON content type`);
  }
  const alloc = await h.call('NetworkDriver.AllocateNetwork', { NetworkID: net, Options: { a: 'b' } });
  t.same(alloc.body, { Options: { a: 'b' } }, 'AllocateNetwork returns the options it was given');
});

t.test('every failure is HTTP 500 {"Err": "..."}, on both subsystems', async (t) => {
  const h = await buildHarness(t);
  const failures: Array<[string, unknown, RegExp]> = [
    ['NetworkDriver.CreateNetwork', { NetworkID: 'abc' }, /NetworkID.*"abc"/],
    ['NetworkDriver.CreateEndpoint', { NetworkID: dockerId(), EndpointID: dockerId(), Interface: null }, /not found/],
    ['NetworkDriver.Join', { NetworkID: dockerId(), EndpointID: dockerId() }, /not found/],
    ['NetworkDriver.ProgramExternalConnectivity', { NetworkID: dockerId(), EndpointID: dockerId() }, /not found/],
    ['NetworkDriver.DeleteNetwork', {}, /NetworkID is required/],
    ['NetworkDriver.DiscoverNew', { DiscoveryType: 'x' }, /DiscoveryType/],
    ['IpamDriver.RequestPool', { Pool: 'nonsense' }, /"nonsense" is not a CIDR/],
    ['IpamDriver.RequestAddress', { PoolID: 'tsnet-local/10.1.2.0/24', Address: '' }, /no pool with PoolID/],
    ['IpamDriver.ReleaseAddress', { PoolID: 'tsnet-local/10.0.0.0/24', Address: 'not-an-ip' }, /not a plain IP/],
    ['IpamDriver.ReleasePool', { PoolID: '' }, /PoolID/],
    ['IpamDriver.RequestPool', [1, 2], /must be a JSON object/],
  ];
  for (const [method, body, pattern] of failures) {
    const res = await h.call(method, body);
    t.equal(res.status, 500, `${method}: 500`);
    t.same(Object.keys(res.body), ['Err'], `${method}: exactly {Err}`);
    t.match(res.body.Err as string, pattern, `${method}: ${res.body.Err as string}`);
    t.match(res.contentType ?? '', /^application\/json/);
  }
});

t.test('malformed JSON is a 500 naming JSON, not a crash', async (t) => {
  const h = await buildHarness(t);
  for (const payload of ['{"NetworkID":', '{bad json}', '[1,', '{"__proto__":{"x":1}}']) {
    const res = await h.app.inject({ method: 'POST', url: '/NetworkDriver.CreateNetwork', payload });
    t.equal(res.statusCode, 500, `${JSON.stringify(payload)}: 500`);
    const body = JSON.parse(res.body) as { Err: string };
    t.same(Object.keys(body), ['Err']);
    t.match(body.Err, /JSON/, `${JSON.stringify(payload)}: ${body.Err}`);
  }
  const again = await h.call('NetworkDriver.GetCapabilities');
  t.equal(again.status, 200, 'the app keeps serving');
});

t.test('unknown routes are 404 (dockerd reads "not implemented")', async (t) => {
  const h = await buildHarness(t);
  for (const [method, url] of [
    ['POST', '/NetworkDriver.Nope'],
    ['POST', '/VolumeDriver.Create'],
    ['POST', '/'],
    ['GET', '/Plugin.Activate'],
  ] as const) {
    const res = await h.app.inject({ method, url });
    t.equal(res.statusCode, 404, `${method} ${url}`);
    t.match(JSON.parse(res.body).Err, /does not implement/);
  }
});

t.test('a body over 1 MiB is refused and the app keeps serving', async (t) => {
  const h = await buildHarness(t);
  const huge = JSON.stringify({ NetworkID: dockerId(), Options: { 'com.docker.network.generic': { big: 'x'.repeat(BODY_LIMIT + 10) } } });
  const res = await h.app.inject({ method: 'POST', url: '/NetworkDriver.CreateNetwork', payload: huge });
  t.equal(res.statusCode, 500);
  t.match(JSON.parse(res.body).Err, `larger than ${BODY_LIMIT} bytes`);
  t.equal(h.runner.calls.length, 0, 'nothing ran');
  t.same(h.store.state.networks, {}, 'nothing stored');
  const ok = await h.call('Plugin.Activate');
  t.equal(ok.status, 200, 'still serving');
  const justUnder = JSON.stringify({ PoolID: 'tsnet-local/10.0.0.0/24', Address: '', Options: { pad: 'x'.repeat(4000) } });
  t.ok(justUnder.length < BODY_LIMIT);
});

t.test('a JSON null or scalar body is refused where fields are required', async (t) => {
  const h = await buildHarness(t);
  for (const payload of ['"text"', '42', 'true']) {
    const res = await h.app.inject({ method: 'POST', url: '/IpamDriver.ReleasePool', payload });
    t.equal(res.statusCode, 500, payload);
    t.match(JSON.parse(res.body).Err, /must be a JSON object/);
  }
});
