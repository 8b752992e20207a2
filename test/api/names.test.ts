// Names across hosts, through real sockets: the Engine API watcher against a
// stand-in dockerd on a Unix socket (negotiation, events, a dockerd that
// hangs or restarts, and plugin requests answered meanwhile), and the DNS
// server and forwarder on loopback addresses against a stand-in upstream.
import t, { type Test } from 'tap';
import dgram from 'node:dgram';
import net from 'node:net';
import path from 'node:path';
import dnsPacket from 'dns-packet';
import { ContainerWatcher } from '../../src/docker/watcher.js';
import { NameDirectory } from '../../src/dns/names.js';
import { DnsServer } from '../../src/dns/server.js';
import { Forwarder } from '../../src/dns/forward.js';
import { emptyState, type EndpointRecord } from '../../src/store/schema.js';
import type { Store } from '../../src/store/store.js';
import { buildHarness, createNetworkBody } from '../helpers/harness.js';
import { dockerId, silentLogger, tmpDir, until } from '../helpers/fake-runner.js';
import { FakeDockerd } from '../helpers/fake-dockerd.js';

async function setup(t: Test, version: { version: string; api: string; min: string }) {
  const h = await buildHarness(t);
  const dir = await tmpDir(t, 'dockerd');
  const dockerd = new FakeDockerd(path.join(dir, 'docker.sock'));
  Object.assign(dockerd, { version: version.version, apiVersion: version.api, minApiVersion: version.min });
  await dockerd.start();
  const changed: string[][] = [];
  const watcher = new ContainerWatcher({ socket: dockerd.socket, store: h.store, log: silentLogger(), onNames: (ids) => changed.push(ids), backoff: { initialMs: 50, maxMs: 200 }, callTimeoutMs: 500 });
  t.teardown(async () => {
    await watcher.close();
    await dockerd.close();
  });
  const netId = dockerId();
  t.equal((await h.call('NetworkDriver.CreateNetwork', createNetworkBody(netId, { pool: '10.60.0.0/24' }))).status, 200);
  const endpointFor = async (address: string): Promise<string> => {
    const ep = dockerId();
    const r = await h.call('NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: ep, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: {} });
    t.equal(r.status, 200, r.raw);
    return ep;
  };
  return { h, dockerd, watcher, changed, netId, endpointFor };
}

t.test('dockerd 20.10 (API 1.41): names from the name and Aliases, followed through events', async (t) => {
  const { h, dockerd, watcher, changed, netId, endpointFor } = await setup(t, { version: '20.10.24', api: '1.41', min: '1.12' });
  const ep = await endpointFor('10.60.0.2/24');
  const web = dockerId();
  watcher.start();
  await until('the event stream', () => dockerd.streams === 1 && watcher.status.connected);
  t.equal(watcher.status.apiVersion, '1.41');
  t.equal(watcher.status.dockerd, '20.10.24');
  dockerd.containers.set(web, { Id: web, Name: 'web', NetworkSettings: { Networks: { appnet: { NetworkID: netId, EndpointID: ep, Aliases: [web.slice(0, 12), 'WWW'] } } } });
  dockerd.emit('network', 'connect', netId, { container: web, name: 'appnet', type: 'tsnet' });
  const dns = await until('names on the record', () => h.store.state.endpoints[ep]?.dns);
  t.same(dns, { container: web, name: 'web', names: ['web', web.slice(0, 12), 'www'], network: 'appnet' });
  t.ok(dockerd.requests.includes(`/v1.41/containers/${web}/json`), 'inspected at the negotiated version');
  t.same(changed.at(-1), [ep], 'told which endpoint changed');
  await h.store.commit();
  t.same((await h.diskState()).endpoints[ep]?.dns, dns, 'and written to the store');

  dockerd.containers.get(web)!.Name = 'web2';
  dockerd.emit('container', 'rename', web, { name: 'web2', oldName: '/web' });
  await until('the new name', () => h.store.state.endpoints[ep]?.dns?.name === 'web2');
  dockerd.emitRaw('not json\n{"Type":"network"}\n');
  dockerd.emit('network', 'disconnect', netId, { container: web });
  await until('names cleared on disconnect', () => !h.store.state.endpoints[ep]?.dns);
  dockerd.emit('network', 'connect', netId, { container: web });
  await until('names back', () => h.store.state.endpoints[ep]?.dns);
  dockerd.containers.delete(web);
  dockerd.emit('container', 'destroy', web);
  await until('names cleared on destroy', () => !h.store.state.endpoints[ep]?.dns);
  t.ok(watcher.status.connected, 'still connected after garbage on the stream');
});

t.test('dockerd 29.0 (refuses below 1.44): API 1.52, names from DNSNames', async (t) => {
  const { h, dockerd, watcher, netId, endpointFor } = await setup(t, { version: '29.0.0', api: '1.52', min: '1.44' });
  const ep = await endpointFor('10.60.0.3/24');
  const db = dockerId();
  dockerd.containers.set(db, { Id: db, Name: 'db', NetworkSettings: { Networks: { appnet: { NetworkID: netId, EndpointID: ep, Aliases: ['pg'], DNSNames: ['db', 'pg', db.slice(0, 12), 'dbhost'] } } } });
  watcher.start();
  // Already running when tsnet starts: found by the list, not an event.
  const dns = await until('names from the list', () => h.store.state.endpoints[ep]?.dns);
  t.same(dns.names, ['db', 'pg', db.slice(0, 12), 'dbhost']);
  t.ok(dockerd.requests.every((r) => r === '/version' || r.startsWith('/v1.52/')), 'every call at 1.52');
});

t.test('dockerd hanging before it serves its API, then restarting: requests are answered meanwhile, names follow', async (t) => {
  const { h, dockerd, watcher, netId, endpointFor } = await setup(t, { version: '26.1.5', api: '1.45', min: '1.24' });
  const old = await endpointFor('10.60.0.4/24');
  const a = dockerId();
  dockerd.containers.set(a, { Id: a, Name: 'a', NetworkSettings: { Networks: { appnet: { NetworkID: netId, EndpointID: old, DNSNames: ['a'] } } } });
  watcher.start();
  await until('a known', () => h.store.state.endpoints[old]?.dns);
  // dockerd restarts: down, then up without serving (restoring containers), then serving.
  dockerd.serving = false;
  dockerd.drop();
  await until('disconnected', () => !watcher.status.connected);
  dockerd.containers.delete(a);
  const started = Date.now();
  const fresh = await endpointFor('10.60.0.5/24');
  const joined = await h.call('NetworkDriver.Join', { NetworkID: netId, EndpointID: fresh, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  t.equal(joined.status, 200);
  t.ok(Date.now() - started < 1000, `CreateEndpoint and Join answered in ${Date.now() - started} ms while dockerd does not answer`);
  await new Promise((r) => setTimeout(r, 700));
  t.notOk(watcher.status.connected, 'a dockerd that accepts but does not answer is not taken for up');
  t.match(watcher.status.lastError ?? '', /timeout|aborted/i, `the call timed out (${watcher.status.lastError})`);
  const b = dockerId();
  dockerd.containers.set(b, { Id: b, Name: 'b', NetworkSettings: { Networks: { appnet: { NetworkID: netId, EndpointID: fresh, DNSNames: ['b', 'bee'] } } } });
  dockerd.serving = true;
  await until('reconnected and re-listed', () => h.store.state.endpoints[fresh]?.dns, 5000);
  t.same(h.store.state.endpoints[fresh]?.dns?.names, ['b', 'bee'], 'a container started while dockerd was away');
  t.equal(h.store.state.endpoints[old]?.dns, undefined, 'one that went while it was away lost its names');
  t.ok(watcher.status.connects >= 2);
});

t.test('no dockerd at all: retried quietly, nothing else affected', async (t) => {
  const h = await buildHarness(t);
  const dir = await tmpDir(t, 'dockerd');
  const watcher = new ContainerWatcher({ socket: path.join(dir, 'missing.sock'), store: h.store, log: silentLogger(), backoff: { initialMs: 20, maxMs: 50 }, callTimeoutMs: 200 });
  t.teardown(() => watcher.close());
  watcher.start();
  await new Promise((r) => setTimeout(r, 300));
  t.notOk(watcher.status.connected);
  t.match(watcher.status.lastError ?? '', /ENOENT|connect/);
  t.equal((await h.call('NetworkDriver.GetCapabilities', {})).status, 200);
});

// ---- DNS over real sockets on loopback addresses (this machine's own 127/8, nothing routed).

const N = dockerId();
const N2 = dockerId();

function store(): Store {
  const state = emptyState();
  const ep = (address: string, networkId: string, names: string[] | undefined): EndpointRecord => {
    const id = dockerId();
    return { id, networkId, hostVeth: 'tsv-x', peerVeth: 'tsp-x', mac: '02:00:00:00:00:01', macAssigned: true, address, ports: [], createdAt: '', ...(names ? { dns: { container: dockerId(), name: names[0]!, names, network: 'appnet' } } : {}) };
  };
  // The asker is 127.0.0.1 (a client socket's source on loopback).
  for (const e of [ep('127.0.0.1/8', N, ['client']), ep('10.200.0.2/16', N, ['web', 'www']), ep('10.201.0.2/16', N2, ['secret']), ep('127.0.0.9/8', N2, undefined)]) state.endpoints[e.id] = e;
  return { state } as unknown as Store;
}

async function freePort(): Promise<number> {
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  const port = s.address().port;
  s.close();
  return port;
}

/** An upstream resolver on loopback: answers outside.lab, NXDOMAIN else; `mode` makes it misbehave. */
async function upstream(t: Test, address: string, port: number, mode: { kind: 'ok' | 'servfail' | 'silent' | 'spoof' | 'truncate' }) {
  const seen: string[] = [];
  const answer = (msg: Buffer): Buffer | undefined => {
    const q = dnsPacket.decode(msg);
    const name = q.questions![0]!.name;
    seen.push(name);
    if (mode.kind === 'silent') return undefined;
    if (mode.kind === 'servfail') return dnsPacket.encode({ type: 'response', id: q.id, flags: 2, questions: q.questions });
    const known = name.toLowerCase() === 'outside.lab';
    return dnsPacket.encode({
      type: 'response',
      id: mode.kind === 'spoof' ? (q.id! + 1) & 0xffff : q.id,
      flags: (known ? 0 : 3) | (mode.kind === 'truncate' ? dnsPacket.TRUNCATED_RESPONSE : 0),
      questions: q.questions,
      answers: known ? [{ type: 'A', name, ttl: 60, data: '192.0.2.100' }] : [],
    });
  };
  const udp = dgram.createSocket('udp4');
  udp.on('message', (msg, r) => {
    const a = answer(msg);
    if (a) udp.send(a, r.port, r.address);
  });
  await new Promise<void>((r) => udp.bind(port, address, () => r()));
  const tcp = net.createServer((c) => {
    c.on('data', (d: Buffer) => {
      const a = answer(d.subarray(2));
      if (!a) return;
      const len = Buffer.alloc(2);
      len.writeUInt16BE(a.length);
      c.write(Buffer.concat([len, a]));
    });
    c.on('error', () => undefined);
  });
  await new Promise<void>((r) => tcp.listen(port, address, () => r()));
  t.teardown(() => {
    udp.close();
    tcp.close();
  });
  return seen;
}

function ask(port: number, name: string, type: string, opts: { from?: string; to?: string; id?: number } = {}): Promise<dnsPacket.DecodedPacket & { rcode?: string }> {
  return new Promise((resolve, reject) => {
    const s = dgram.createSocket('udp4');
    const timer = setTimeout(() => {
      s.close();
      reject(new Error(`no reply to ${name}`));
    }, 4000);
    s.on('message', (m) => {
      clearTimeout(timer);
      s.close();
      resolve(dnsPacket.decode(m) as dnsPacket.DecodedPacket & { rcode?: string });
    });
    s.bind(0, opts.from ?? '127.0.0.1', () => s.send(dnsPacket.encode({ type: 'query', id: opts.id ?? 77, flags: dnsPacket.RECURSION_DESIRED, questions: [{ type: type as 'A', name }] }), port, opts.to ?? '127.0.0.1'));
  });
}

function askTcp(port: number, frames: Buffer[]): Promise<Array<dnsPacket.DecodedPacket & { rcode?: string }>> {
  return new Promise((resolve, reject) => {
    const c = net.connect({ host: '127.0.0.1', port });
    let buf = Buffer.alloc(0);
    const out: Array<dnsPacket.DecodedPacket & { rcode?: string }> = [];
    c.on('error', reject);
    c.on('connect', () => c.write(Buffer.concat(frames.map((f) => Buffer.concat([Buffer.from([f.length >> 8, f.length & 255]), f])))));
    c.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      while (buf.length >= 2 && buf.length >= 2 + buf.readUInt16BE(0)) {
        out.push(dnsPacket.decode(buf.subarray(2, 2 + buf.readUInt16BE(0))) as dnsPacket.DecodedPacket & { rcode?: string });
        buf = buf.subarray(2 + buf.readUInt16BE(0));
      }
      if (out.length === frames.filter((f) => f.length >= 12).length) {
        c.destroy();
        resolve(out);
      }
    });
  });
}

async function server(t: Test, upstreams: string[], upstreamPort: number) {
  const port = await freePort();
  const names = new NameDirectory({ store: store() });
  const forwarder = new Forwarder({ servers: async () => upstreams, own: () => new Set(['127.0.0.1']), timeoutMs: 300, port: upstreamPort });
  const dns = new DnsServer({ names, forwarder, log: silentLogger(), port });
  t.teardown(() => dns.close());
  await dns.sync([{ address: '127.0.0.1', network: N }]);
  t.same(dns.listening(), [{ address: '127.0.0.1', network: N, udp: true, tcp: true }]);
  return { dns, port, forwarder };
}

t.test('DNS over UDP and TCP: names in scope answered, others forwarded to the host\'s resolvers', async (t) => {
  const up = await freePort();
  const seen = await upstream(t, '127.0.0.3', up, { kind: 'ok' });
  const { dns, port } = await server(t, ['127.0.0.1', '127.0.0.3'], up);
  const web = await ask(port, 'web', 'A');
  t.same([web.rcode, web.answers!.map((a) => (a as { data: string }).data)], ['NOERROR', ['10.200.0.2']]);
  t.same((await ask(port, 'WWW', 'A')).answers!.map((a) => (a as { data: string }).data), ['10.200.0.2'], 'an alias, any case');
  const out = await ask(port, 'outside.lab', 'A', { id: 4321 });
  t.same([out.id, out.rcode, out.answers!.map((a) => (a as { data: string }).data)], [4321, 'NOERROR', ['192.0.2.100']], 'forwarded, with the client\'s ID');
  t.equal((await ask(port, 'nowhere.lab', 'A')).rcode, 'NXDOMAIN', "the upstream's NXDOMAIN relayed");
  t.equal((await ask(port, 'secret', 'A')).rcode, 'NXDOMAIN', 'a name of a network the asker is not on goes upstream, which does not know it');
  t.same(seen, ['outside.lab', 'nowhere.lab', 'secret'], 'the upstream saw only the forwarded names; tsnet\'s own address is never forwarded to');
  t.equal((await ask(port, 'web', 'A', { from: '127.0.0.5' })).rcode, 'REFUSED', 'a source that is no endpoint');
  const tcp = await askTcp(port, [
    dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'web' }] }),
    dnsPacket.encode({ type: 'query', id: 2, questions: [{ type: 'A', name: 'outside.lab' }] }),
  ]);
  t.same(tcp.map((r) => [r.id, (r.answers![0] as { data: string }).data]).sort(), [[1, '10.200.0.2'], [2, '192.0.2.100']], 'two pipelined queries over one TCP connection');
  t.ok(dns.counts.answered! >= 3 && dns.counts.forwarded! >= 4 && dns.counts.refused === 1, JSON.stringify(dns.counts));
});

t.test('DNS: failing upstreams, spoofed replies, truncation, hostile packets', async (t) => {
  const up = await freePort();
  await upstream(t, '127.0.0.6', up, { kind: 'servfail' });
  await upstream(t, '127.0.0.7', up, { kind: 'silent' });
  await upstream(t, '127.0.0.8', up, { kind: 'spoof' });
  await upstream(t, '127.0.0.10', up, { kind: 'ok' });
  await upstream(t, '127.0.0.11', up, { kind: 'truncate' });
  const a = await server(t, ['127.0.0.6', '127.0.0.10'], up);
  t.equal((await ask(a.port, 'outside.lab', 'A')).answers!.length, 1, 'SERVFAIL from the first: the second answers');
  const b = await server(t, ['127.0.0.7', '127.0.0.8'], up);
  const started = Date.now();
  const failed = await ask(b.port, 'outside.lab', 'A');
  t.equal(failed.rcode, 'SERVFAIL', 'silence and a reply with the wrong ID: SERVFAIL');
  t.ok(Date.now() - started >= 550, 'after each server\'s deadline');
  const c = await server(t, ['127.0.0.11'], up);
  const tc = await ask(c.port, 'outside.lab', 'A');
  t.ok(tc.flag_tc, 'a truncated upstream reply is relayed truncated (the client asks again over TCP)');
  const [overTcp] = await askTcp(c.port, [dnsPacket.encode({ type: 'query', id: 9, questions: [{ type: 'A', name: 'outside.lab' }] })]);
  t.equal(overTcp!.id, 9, 'and over TCP it is forwarded over TCP');

  // Garbage, then a real query: still answered.
  const s = dgram.createSocket('udp4');
  await new Promise<void>((r) => s.bind(0, '127.0.0.1', () => r()));
  for (const junk of [Buffer.alloc(0), Buffer.alloc(3), Buffer.from('ffffffffffffffffffffffffffffffffffff', 'hex'), Buffer.alloc(600, 0xc0), Buffer.from('0001000000010000000000003f41', 'hex')]) {
    await new Promise<void>((r) => s.send(junk, a.port, '127.0.0.1', () => r()));
  }
  s.close();
  const junkTcp = new Promise<void>((resolve) => {
    const conn = net.connect({ host: '127.0.0.1', port: a.port }, () => conn.write(Buffer.from([0, 3, 1, 2, 3])));
    conn.on('close', () => resolve());
    conn.on('error', () => resolve());
  });
  await junkTcp;
  t.equal((await ask(a.port, 'web', 'A')).answers!.length, 1, 'after hostile datagrams and a bad TCP frame the server still answers');
  t.ok(a.dns.counts.malformed! >= 1, 'a packet that does not decode got FORMERR');
});

t.test('DNS listeners follow the wanted addresses; an address that cannot be bound is reported and retried', async (t) => {
  const { dns, port } = await server(t, [], 53);
  await dns.sync([{ address: '127.0.0.1', network: N }, { address: '192.0.2.1', network: N2 }]);
  const bad = dns.listening().find((l) => l.address === '192.0.2.1')!;
  t.notOk(bad.udp || bad.tcp, 'not an address of this host: not bound');
  t.match(bad.error ?? '', /EADDRNOTAVAIL/);
  t.same([...dns.addresses()], ['127.0.0.1']);
  t.equal((await ask(port, 'web', 'A')).answers!.length, 1, 'the other still answers');
  await dns.sync([]);
  t.same(dns.listening(), []);
  await t.rejects(ask(port, 'web', 'A'), /no reply/, 'closed with its network');
});

t.test('metrics: dockerd followed, DNS queries by result', async (t) => {
  const { Metrics } = await import('../../src/metrics/registry.js');
  const { Scrape } = await import('../helpers/prom.js');
  let connected = false;
  const { store } = await buildHarness(t);
  const m = new Metrics({ store, dockerd: () => connected, dnsQueries: () => ({ answered: 3, forwarded: 2 }) });
  await m.load();
  let s = await Scrape.parse(await m.expose());
  t.equal(s.value('tsnet_dockerd_up'), 0);
  t.equal(s.value('tsnet_dns_queries_total', { result: 'answered' }), 3);
  t.equal(s.value('tsnet_dns_queries_total', { result: 'forwarded' }), 2);
  connected = true;
  s = await Scrape.parse(await m.expose());
  t.equal(s.value('tsnet_dockerd_up'), 1);
  const off = new Metrics({ store });
  await off.load();
  t.equal((await Scrape.parse(await off.expose())).value('tsnet_dockerd_up'), undefined, 'TSNET_DOCKER_HOST=off: no series');
});
