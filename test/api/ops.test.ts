// Metrics and the event stream through the real app (fake kernel): the
// exposition parses as Prometheus text, and its numbers are the requests
// made and the state they left.
import t from 'tap';
import { dockerId } from '../helpers/fake-runner.js';
import { buildHarness, createNetworkBody } from '../helpers/harness.js';
import { Scrape } from '../helpers/prom.js';

async function scrape(h: Awaited<ReturnType<typeof buildHarness>>): Promise<Scrape> {
  const res = await h.app.inject({ method: 'GET', url: '/metrics' });
  if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode} ${res.body}`);
  t.match(res.headers['content-type'], /^text\/plain; version=0\.0\.4/);
  return Scrape.parse(res.body);
}

t.test('request counts, outcomes, latencies and the state figures match what was done', async (t) => {
  const h = await buildHarness(t);
  const pool = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '10.50.0.0/24', SubPool: '10.50.0.0/28', Options: null, V6: false });
  const poolId = pool.body.PoolID as string;
  await h.call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  for (let i = 0; i < 3; i++) await h.call('IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: {} });
  const net = dockerId();
  t.equal((await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net, { pool: '10.50.0.0/24' }))).status, 200);
  const ep = dockerId();
  const created = await h.call('NetworkDriver.CreateEndpoint', {
    NetworkID: net,
    EndpointID: ep,
    Interface: { Address: '10.50.0.2/24', AddressIPv6: '', MacAddress: '' },
    Options: {},
  });
  t.equal(created.status, 200, created.raw);
  // Refused: a second network on the same ID with another pool.
  const bad = await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net, { pool: '10.51.0.0/24' }));
  t.equal(bad.status, 500);
  await h.call('NetworkDriver.Bogus', {});

  const m = await scrape(h);
  t.equal(m.value('tsnet_requests_total', { method: 'IpamDriver.RequestAddress', outcome: 'ok' }), 4);
  t.equal(m.value('tsnet_requests_total', { method: 'NetworkDriver.CreateNetwork', outcome: 'ok' }), 1);
  t.equal(m.value('tsnet_requests_total', { method: 'NetworkDriver.CreateNetwork', outcome: 'TSNET_ERR_NETWORK_EXISTS' }), 1, 'a refusal counts under its error code');
  t.equal(m.value('tsnet_requests_total', { method: 'unknown', outcome: 'HTTP_404' }), 1, 'an unknown method adds one series, not one per URL');
  t.equal(m.count('tsnet_request_duration_seconds', { method: 'NetworkDriver.CreateEndpoint' }), 1, 'one latency observation per request');
  t.equal(m.count('tsnet_request_duration_seconds', { method: 'NetworkDriver.CreateNetwork' }), 2);
  t.equal(m.value('tsnet_networks', { mode: 'bridge' }), 1);
  t.equal(m.value('tsnet_networks', { mode: 'overlay' }), 0);
  t.equal(m.value('tsnet_endpoints', { mode: 'bridge' }), 1);
  t.equal(m.value('tsnet_pools', { mode: 'local' }), 1);
  t.equal(m.value('tsnet_ipam_allocated_addresses', { pool: '10.50.0.0/24', range: '10.50.0.0/28' }), 4, 'gateway and three addresses');
  t.equal(m.value('tsnet_ipam_capacity_addresses', { pool: '10.50.0.0/24' }), 254);
  t.equal(m.value('tsnet_ipam_utilisation_ratio', { pool: '10.50.0.0/24' }), 4 / 254);
  t.equal(m.value('tsnet_store_writes_total', { kind: 'full' })! + m.value('tsnet_store_writes_total', { kind: 'journal' })!, h.store.writes, 'store writes as the store counted them');
  t.ok(m.value('process_resident_memory_bytes')! > 0, 'process memory from prom-client\'s collectors');
  t.equal(m.value('tsnet_etcd_up'), undefined, 'no etcd series without a cluster');
});

t.test('requests before prom-client loads are counted once it has', async (t) => {
  const h = await buildHarness(t);
  // The harness never called load(): these go to the queue.
  for (let i = 0; i < 5; i++) await h.call('NetworkDriver.GetCapabilities', {});
  const m = await scrape(h);
  t.equal(m.value('tsnet_requests_total', { method: 'NetworkDriver.GetCapabilities', outcome: 'ok' }), 5);
});

t.test('journal folds are counted', async (t) => {
  const h = await buildHarness(t);
  const pool = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '10.52.0.0/24', SubPool: '', Options: null, V6: false });
  await h.call('IpamDriver.RequestAddress', { PoolID: pool.body.PoolID, Address: '', Options: {} });
  const before = h.store.folds;
  await h.store.commit();
  t.ok(h.store.appends > 0, 'a journal line was written');
  t.equal(h.store.folds, before + 1, 'the full write folded it');
  t.equal((await scrape(h)).value('tsnet_store_journal_folds_total'), h.store.folds);
});

t.test('events: JSON lines for what succeeded, nothing for what failed', async (t) => {
  const h = await buildHarness(t);
  const stream = h.events.subscribe();
  const lines: string[] = [];
  stream.on('data', (c: Buffer) => lines.push(...c.toString().split('\n').filter(Boolean)));
  const net = dockerId();
  await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net, { pool: '10.53.0.0/24' }));
  await h.call('NetworkDriver.CreateNetwork', createNetworkBody(net, { pool: '10.54.0.0/24' }));
  const ep = dockerId();
  await h.call('NetworkDriver.CreateEndpoint', { NetworkID: net, EndpointID: ep, Interface: { Address: '10.53.0.2/24', AddressIPv6: '', MacAddress: '' }, Options: {} });
  await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: net, EndpointID: ep });
  await h.call('NetworkDriver.DeleteNetwork', { NetworkID: net });
  await new Promise((r) => setImmediate(r));
  const evs = lines.map((l) => JSON.parse(l) as Record<string, unknown>);
  t.same(evs.map((e) => e.type), ['network.created', 'endpoint.created', 'endpoint.removed', 'network.removed']);
  t.match(evs[0], { network: net, mode: 'bridge', subnets: ['10.53.0.0/24'] });
  t.match(evs[1], { network: net, endpoint: ep, address: '10.53.0.2/24' });
  t.ok(evs.every((e, i) => e.seq === (evs[0]!.seq as number) + i && typeof e.time === 'string'), 'numbered in order, timed');
  t.equal((await scrape(h)).value('tsnet_event_subscribers'), 1);
  stream.destroy();
  await new Promise((r) => setImmediate(r));
  t.equal(h.events.subscribers, 0, 'a client leaving unsubscribes');
  const late = h.events.subscribe({ recent: true });
  let first = '';
  for await (const c of late) {
    first += String(c);
    if (first.includes('}\n')) break;
  }
  t.match(JSON.parse(first.trim().split('\n')[0]!), { type: 'network.created' }, '--recent replays the backlog');
  late.destroy();
});

t.test('a client that does not read is cut off, and the bus goes on', async (t) => {
  const { EventBus } = await import('../../src/events.js');
  const bus = new EventBus();
  const stalled = bus.subscribe();
  const ended = new Promise<void>((r) => stalled.once('end', () => r()));
  for (let i = 0; i < 5000; i++) bus.emit('peer.joined', { network: 'n', vtep: `10.0.${i >> 8}.${i & 255}`, pad: 'x'.repeat(100) });
  t.equal(bus.subscribers, 0, 'dropped once its unread buffer passed the limit');
  stalled.resume();
  await ended;
  t.pass('its stream ends cleanly after what it had buffered');
});

t.test('Tsnet.Events streams over the socket and ends when the app closes', async (t) => {
  const h = await buildHarness(t);
  // The harness app has no admin routes; register them as main.ts does on a fresh app.
  const { buildApp } = await import('../../src/app.js');
  const { registerAdminRoutes, AllocationHold } = await import('../../src/admin.js');
  const app = buildApp({
    driver: undefined as never,
    ipam: undefined as never,
    log: (await import('../helpers/fake-runner.js')).silentLogger(),
    admin: (a) => registerAdminRoutes(a, { store: h.store, modes: undefined as never, hold: new AllocationHold(), reconcileNow: async () => undefined, startedAt: new Date(), events: h.events }),
  });
  await app.listen({ port: 0, host: '127.0.0.1' });
  const port = (app.server.address() as { port: number }).port;
  const { request } = await import('undici');
  const res = await request(`http://127.0.0.1:${port}/Tsnet.Events`, { method: 'POST', body: '{}', bodyTimeout: 0 });
  t.equal(res.statusCode, 200);
  t.match(res.headers['content-type'], /ndjson/);
  h.events.emit('peer.joined', { network: 'n', vtep: '10.0.0.9' });
  const it = res.body[Symbol.asyncIterator]();
  let text = '';
  while (!text.includes('}\n')) text += String((await it.next()).value);
  t.same(text.split('\n')[0], '', 'the stream opens with an empty line, so headers go out before the first event');
  t.match(JSON.parse(text.split('\n')[1]!), { type: 'peer.joined', vtep: '10.0.0.9' });
  await app.close();
  const end = await it.next();
  t.ok(end.done, 'closing the app ends the stream instead of hanging on it');
});

t.test('reconcile runs and fixes; the TCP listener serves /metrics only', async (t) => {
  const h = await buildHarness(t);
  const report = { bridgesCreated: ['tsbr-a'], bridgesFixed: [], endpointsReattached: ['x', 'y'], endpointsDropped: [], orphanLinksRemoved: [], staleChainsRemoved: [], errors: [], ms: 3 };
  h.metrics.reconciled(report, 0.003);
  h.metrics.reconciled({ ...report, bridgesCreated: [], endpointsReattached: [], errors: ['network x: boom'] }, 0.001);
  h.metrics.reconciled(undefined, 0.002);
  const { reconcileFixes } = await import('../../src/events.js');
  t.same(reconcileFixes(report), { bridgesCreated: ['tsbr-a'], endpointsReattached: ['x', 'y'], ms: 3 }, 'the event names what was fixed');
  t.equal(reconcileFixes({ ...report, bridgesCreated: [], endpointsReattached: [] }), undefined, 'nothing fixed, no event');
  const { listenMetrics } = await import('../../src/metrics/server.js');
  const { silentLogger } = await import('../helpers/fake-runner.js');
  const srv = await listenMetrics({ host: '127.0.0.1', port: 0 }, h.metrics, silentLogger());
  t.teardown(() => srv.close());
  const res = await fetch(`http://127.0.0.1:${srv.port}/metrics`);
  t.equal(res.status, 200);
  const m = await Scrape.parse(await res.text());
  t.equal(m.value('tsnet_reconcile_fixes_total', { kind: 'bridgesCreated' }), 1);
  t.equal(m.value('tsnet_reconcile_fixes_total', { kind: 'endpointsReattached' }), 2);
  t.equal(m.value('tsnet_reconcile_fixes_total', { kind: 'orphanLinksRemoved' }), 0, 'every kind present from the start');
  t.equal(m.value('tsnet_reconcile_runs_total', { outcome: 'ok' }), 1);
  t.equal(m.value('tsnet_reconcile_runs_total', { outcome: 'errors' }), 1);
  t.equal(m.value('tsnet_reconcile_runs_total', { outcome: 'failed' }), 1);
  t.equal((await fetch(`http://127.0.0.1:${srv.port}/Plugin.Activate`, { method: 'POST' })).status, 404, 'no plugin protocol on TCP');
});
