// Costs that must not grow with what is already in place (issue 7, scale):
// behaviour kept, work per request bounded. The timing side is bench/scale.ts.
import t, { type Test } from 'tap';
import { Firewall } from '../../src/firewall/firewall.js';
import { overlaps, parsePrefix, subnets, formatPrefix } from '../../src/net/cidr.js';
import { bridgeName, shortId } from '../../src/kernel/names.js';
import { PortPublisher } from '../../src/ports/publisher.js';
import type { EndpointRecord, NetworkRecord } from '../../src/store/schema.js';
import { buildHarness, createNetworkBody } from '../helpers/harness.js';
import { FakeRunner, dockerId, silentLogger } from '../helpers/fake-runner.js';

t.test('with 20 networks in place, creating one more appends its two FORWARD rules, nothing else', async (t) => {
  const h = await buildHarness(t);
  for (let i = 0; i < 20; i++) {
    const res = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(dockerId(), { pool: `10.30.${i}.0/24` }));
    t.equal(res.status, 200);
  }
  h.runner.clearCalls();
  const id = dockerId();
  t.equal((await h.call('NetworkDriver.CreateNetwork', createNetworkBody(id, { pool: '10.31.0.0/24' }))).status, 200);
  const restores = h.runner.callsOf('iptables-restore');
  t.equal(restores.length, 1, 'one iptables-restore');
  const lines = restores[0]!.input!.trim().split('\n');
  t.same(lines, [
    '*filter',
    `-A TSNET-FORWARD -i ${bridgeName(id)} -m comment --comment tsnet:${shortId(id)} -j ACCEPT`,
    `-A TSNET-FORWARD -o ${bridgeName(id)} -m comment --comment tsnet:${shortId(id)} -j ACCEPT`,
    'COMMIT',
  ]);
  t.same(
    h.runner.calls.filter((c) => c.cmd.startsWith('ip6tables')).map((c) => c.line),
    [],
    'an IPv4-only network neither lists nor writes ip6tables once the glue is known absent',
  );
  t.same(h.runner.calls.filter((c) => c.cmd === 'iptables').map((c) => c.line), [], 'no listing of FORWARD either');
});

t.test('a delete whose FORWARD rules vanished rewrites the chain from what remains', async (t) => {
  const h = await buildHarness(t);
  const a = dockerId();
  const b = dockerId();
  await h.call('NetworkDriver.CreateNetwork', createNetworkBody(a, { pool: '10.30.0.0/24' }));
  await h.call('NetworkDriver.CreateNetwork', createNetworkBody(b, { pool: '10.30.1.0/24' }));
  h.runner.failOn({ cmd: 'iptables-restore', input: '-D TSNET-FORWARD', stderr: 'iptables-restore: line 2 failed\n', times: 1 });
  h.runner.clearCalls();
  t.equal((await h.call('NetworkDriver.DeleteNetwork', { NetworkID: a })).status, 200);
  const last = h.runner.callsOf('iptables-restore').at(-1)!.input!;
  t.match(last, ':TSNET-FORWARD - [0:0]', 'the chain is rewritten');
  t.match(last, `-A TSNET-FORWARD -i ${bridgeName(b)} `);
  t.notMatch(last, bridgeName(a));
});

t.test('removing the last network still takes the chain and the jump; the next network brings them back', async (t) => {
  const h = await buildHarness(t);
  const a = dockerId();
  await h.call('NetworkDriver.CreateNetwork', createNetworkBody(a, { pool: '10.30.0.0/24' }));
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: a });
  t.ok(h.runner.callsOf('iptables-restore').some((c) => c.input?.includes('-X TSNET-FORWARD')), 'chain removed');
  h.runner.clearCalls();
  const b = dockerId();
  await h.call('NetworkDriver.CreateNetwork', createNetworkBody(b, { pool: '10.30.1.0/24' }));
  const restore = h.runner.callsOf('iptables-restore').at(-1)!.input!;
  t.match(restore, ':TSNET-FORWARD - [0:0]', 'chain declared again');
  t.match(restore, `-A TSNET-FORWARD -i ${bridgeName(b)} `);
  t.ok(h.runner.calls.some((c) => c.line === 'iptables -w -I FORWARD 2 -j TSNET-FORWARD'), 'and the jump');
});

t.test('dynamic pools: lowest free /24, skipping pools and routes, as a brute-force search would', async (t) => {
  const runner = new FakeRunner();
  runner.routes4 = [
    { dst: 'default', gateway: '10.99.0.1', dev: 'eth0' },
    { dst: '10.210.0.0/22', dev: 'x0' },
    { dst: '10.210.7.0/24', dev: 'x1' },
    { dst: '10.210.9.128/25', dev: 'x2' },
    { dst: '10.210.12.0/23', dev: 'x3' },
    { dst: '10.210.12.0/24', dev: 'x4' },
    { dst: '10.210.20.7', dev: 'x5' },
  ];
  const h = await buildHarness(t, { runner });
  const taken = runner.routes4.filter((r) => r.dst !== 'default').map((r) => parsePrefix(r.dst.includes('/') ? r.dst : `${r.dst}/32`, false)!);
  const got: string[] = [];
  for (let i = 0; i < 30; i++) {
    const res = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '', SubPool: '', Options: {}, V6: false });
    t.equal(res.status, 200, JSON.stringify(res.body));
    got.push(res.body.Pool as string);
  }
  const expected: string[] = [];
  for (const c of subnets(parsePrefix('10.210.0.0/16')!, 24)) {
    if (expected.length === 30) break;
    if (!taken.some((p) => overlaps(p, c)) && !expected.some((e) => overlaps(parsePrefix(e)!, c))) expected.push(formatPrefix(c));
  }
  t.same(got, expected);
  t.equal(got[0], '10.210.4.0/24');
  t.notOk(got.includes('10.210.9.0/24') || got.includes('10.210.13.0/24') || got.includes('10.210.20.0/24'), 'partial overlaps skipped');
});

/** A publisher over a fake runner (its proxies bind real sockets), a default network and a random high port. */
function publisher(t: Test): { ports: PortPublisher; log: ReturnType<typeof silentLogger>; net: NetworkRecord; port: number } {
  const runner = new FakeRunner();
  const log = silentLogger();
  const ports = new PortPublisher({ runner, firewall: new Firewall(runner, log), log });
  t.teardown(() => ports.closeAll());
  return { ports, log, net: { hostBindingIpv4: '0.0.0.0' } as NetworkRecord, port: 40000 + Math.floor(Math.random() * 20000) };
}

t.test('port reservations: a wildcard request sees a binding on one address; unpublish frees it', async (t) => {
  const { ports, log, net, port } = publisher(t);
  const ep = { id: dockerId(), address: '10.30.0.2/24', ports: [] } as unknown as EndpointRecord;
  const bound = await ports.publish(ep, net, [{ proto: 'tcp', containerPort: 80, hostIp: '127.0.0.1', hostPortStart: port, hostPortEnd: port }], false, log);
  t.same(bound, [{ proto: 'tcp', containerPort: 80, hostIp: '127.0.0.1', hostPort: port }]);
  ep.ports = bound;
  const ask = (hostIp: string, p = port) => [{ proto: 'tcp' as const, containerPort: 80, hostIp, hostPortStart: p, hostPortEnd: p }];
  t.same(ports.holders(ask('0.0.0.0'), '0.0.0.0'), [ep.id], 'the wildcard conflicts with 127.0.0.1');
  t.same(ports.holders(ask('127.0.0.1'), '0.0.0.0'), [ep.id], 'the same address conflicts');
  t.same(ports.holders(ask('::'), '0.0.0.0'), [], 'another family does not');
  t.same(ports.holders(ask('0.0.0.0', port + 1), '0.0.0.0'), [], 'another port does not');
  await ports.unpublish(ep, log);
  t.same(ports.holders(ask('0.0.0.0'), '0.0.0.0'), [], 'free again');
});

t.test('a -P or range binding moves to the next port when its [::] twin cannot have this one', async (t) => {
  const { ports, log, net, port } = publisher(t);
  const a = { id: dockerId(), address: '10.30.0.2/24', ports: [] } as unknown as EndpointRecord;
  a.ports = await ports.publish(a, net, [{ proto: 'tcp', containerPort: 80, hostIp: '::', hostPortStart: port, hostPortEnd: port }], true, log);
  const b = { id: dockerId(), address: '10.30.0.3/24', ports: [] } as unknown as EndpointRecord;
  const bound = await ports.publish(b, net, [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPortStart: port, hostPortEnd: port + 1 }], true, log);
  t.same(bound.map((x) => `${x.hostIp}:${x.hostPort}`), [`0.0.0.0:${port + 1}`, `:::${port + 1}`], 'both families on the next port, together');
  const single = await ports.publish({ ...b, id: dockerId() }, net, [{ proto: 'tcp', containerPort: 80, hostIp: '', hostPortStart: port, hostPortEnd: port }], true, log).catch((e: Error) => e);
  t.match(String(single), new RegExp(`host port :::${port}/tcp is already published by endpoint ${a.id.slice(0, 12)}`), 'a single port names the family that holds it');
  t.same(ports.holders([{ proto: 'tcp', containerPort: 80, hostIp: '', hostPortStart: port, hostPortEnd: port }], '0.0.0.0', true, false, true), [a.id], 'holders() sees the twin\'s holder too');
});

t.test('default bindings: IPv4 wildcard, plus [::] on the same port when the host has IPv6', async (t) => {
  const { plan } = await import('../../src/ports/publisher.js');
  const req = (hostIp: string, start = 8080, end = start, proto: 'tcp' | 'udp' | 'sctp' = 'tcp') => ({ proto, containerPort: 80, hostIp, hostPortStart: start, hostPortEnd: end });
  const show = (jobs: ReturnType<typeof plan>) => jobs.map((j) => j.hostIps.join(' + '));
  t.same(show(plan([req('')], '0.0.0.0', true, false, false)), ['0.0.0.0'], 'a host without IPv6: one binding');
  t.same(show(plan([req('')], '0.0.0.0', true, false, true)), ['0.0.0.0 + ::'], 'IPv4-only container: a [::] twin (relayed by the proxy)');
  t.same(show(plan([req('', 8080, 8080, 'sctp')], '0.0.0.0', true, false, true)), ['0.0.0.0'], 'SCTP has no proxy: no relayed twin');
  t.same(show(plan([req('', 8080, 8080, 'sctp')], '0.0.0.0', true, true, true)), ['0.0.0.0 + ::'], 'but a dual-stack container gets a DNAT twin');
  t.same(show(plan([req('')], '0.0.0.0', true, true, true)), ['0.0.0.0 + ::'], 'dual stack: a twin on [::] with the IPv4 port');
  t.same(show(plan([req('', 0, 0), req('')], '0.0.0.0', true, true, true)), ['0.0.0.0 + ::', '0.0.0.0 + ::'], 'each request keeps its own twin (-P too)');
  t.same(show(plan([req('')], '0.0.0.0', false, true, true)), ['::'], 'IPv6-only container: [::] alone, any free port');
  t.same(show(plan([req('')], '10.0.0.5', true, true, true)), ['10.0.0.5'], 'a host_binding_ipv4 address is used alone');
  t.same(show(plan([req('0.0.0.0'), req('::')], '0.0.0.0', true, true, true)), ['0.0.0.0', '::'], 'explicit HostIPs are kept as given, no twins');
  t.same(show(plan([req('')], '0.0.0.0', false, false, true)), [], 'no address, no default binding');
});
