// Names across hosts, the logic: Engine API version negotiation and what an
// inspect means for the endpoint records, the directory's scoping, and the
// DNS decisions over bytes (malformed input included).
import t from 'tap';
import dnsPacket from 'dns-packet';
import { API_MAX, compareApiVersions, containerView, dnsName, negotiateApiVersion, parseEvent, parseServerVersion } from '../../src/docker/engine.js';
import { namesFor } from '../../src/docker/watcher.js';
import { NameDirectory, type RemoteEndpointValue } from '../../src/dns/names.js';
import { ANSWER_TTL, decide, errorReply, matchesQuery, questionEnd, type Decision } from '../../src/dns/answer.js';
import { parseResolvConf } from '../../src/dns/forward.js';
import { dnsListenAddresses } from '../../src/dns/service.js';
import { formatNames } from '../../src/dns/format.js';
import { parseIp, parseReverseName, formatIp } from '../../src/net/cidr.js';
import { loadConfig } from '../../src/config.js';
import { emptyState, type EndpointRecord, type NetworkRecord, type State } from '../../src/store/schema.js';
import type { Store } from '../../src/store/store.js';

const id = (c: string): string => c.repeat(64).slice(0, 64);
const NET_A = id('a');
const NET_B = id('b');
const NET_C = id('c');
const CTR_WEB = id('1');
const CTR_CLI = id('2');
const CTR_OTHER = id('3');

t.test('API version negotiation: the highest both speak, refused with both ranges named', async (t) => {
  const v = (ApiVersion: string, MinAPIVersion?: string, Version = 'x') => parseServerVersion({ ApiVersion, MinAPIVersion, Version });
  t.equal(negotiateApiVersion(v('1.41', '1.12', '20.10.24')), '1.41', 'dockerd 20.10: its own 1.41');
  t.equal(negotiateApiVersion(v('1.45', '1.24', '26.1.5')), '1.45', 'dockerd 26.1: 1.45');
  t.equal(negotiateApiVersion(v('1.52', '1.44', '29.0.0')), '1.52', 'dockerd 29.0 (refuses below 1.44): 1.52');
  t.equal(negotiateApiVersion(v('1.60', '1.44', '31.0.0')), API_MAX, 'a newer dockerd: ours');
  t.equal(negotiateApiVersion(v('1.24')), '1.24', 'no MinAPIVersion (API 1.24): taken as old');
  t.throws(() => negotiateApiVersion(v('1.23', '1.12', '1.11.2')), /dockerd 1\.11\.2 speaks Engine API up to 1\.23; tsnet needs 1\.24 or later/);
  t.throws(() => negotiateApiVersion(v('1.70', '1.60', '40.0.0')), /dockerd 40\.0\.0 accepts Engine API 1\.60 or later; tsnet speaks up to 1\.52/);
  t.throws(() => parseServerVersion({ ApiVersion: 'one' }), /no usable ApiVersion/);
  t.throws(() => parseServerVersion('garbage'), /no usable ApiVersion/);
  t.ok(compareApiVersions('1.9', '1.10') < 0, 'minor versions compare as numbers, not text');
});

const inspect41 = {
  Id: CTR_WEB,
  Name: '/web',
  NetworkSettings: {
    Networks: {
      appnet: { NetworkID: NET_A, EndpointID: id('e'), Aliases: ['1111111111111', 'WWW', 'bad name!'], IPAddress: '10.200.0.2' },
      bridge: { NetworkID: id('f'), EndpointID: id('d'), Aliases: null },
      broken: { NetworkID: 'nope', EndpointID: id('9') },
      empty: null,
    },
  },
};

t.test('an inspect: names per network, DNSNames from API 1.44, the name and Aliases before', async (t) => {
  const old = containerView(inspect41, '1.41')!;
  t.equal(old.name, 'web');
  t.same(old.networks.map((n) => [n.networkName, n.names]), [
    ['appnet', ['web', '1111111111111', 'www']],
    ['bridge', ['web']],
  ], 'container name first, aliases lower-cased, invalid ones and malformed networks left out');
  const modern = containerView(
    { ...inspect41, NetworkSettings: { Networks: { appnet: { NetworkID: NET_A, EndpointID: id('e'), Aliases: ['www'], DNSNames: ['web', 'www', '111111111111', 'myhost'] } } } },
    '1.45',
  )!;
  t.same(modern.networks[0]!.names, ['web', 'www', '111111111111', 'myhost'], 'DNSNames as dockerd lists them');
  const pre44 = containerView({ ...inspect41, NetworkSettings: { Networks: { appnet: { NetworkID: NET_A, EndpointID: id('e'), Aliases: ['www'], DNSNames: ['nope'] } } } }, '1.43')!;
  t.same(pre44.networks[0]!.names, ['web', 'www'], 'DNSNames are not read below 1.44');
  t.equal(containerView({ Id: 'short' }, '1.41'), undefined);
  t.equal(containerView(null, '1.41'), undefined);
  t.same(containerView({ Id: CTR_WEB }, '1.41')!.networks, [], 'no network settings: no networks');
});

t.test('DNS names: labels of letters, digits, _ and -, 253 characters at most', async (t) => {
  t.equal(dnsName('Web-1.Example'), 'web-1.example');
  t.equal(dnsName('_sip._tcp'), '_sip._tcp');
  for (const bad of ['', 'a..b', '-a', 'a-', 'a b', 'a/b', 'é', `${'a'.repeat(64)}`, `${'a.'.repeat(127)}a`, 42, null]) t.equal(dnsName(bad), undefined, `refused: ${JSON.stringify(bad)}`);
});

t.test('events: type, action, actor; anything else is not an event', async (t) => {
  t.same(parseEvent(JSON.stringify({ Type: 'network', Action: 'connect', Actor: { ID: NET_A, Attributes: { container: CTR_WEB, name: 'appnet', n: 1 } } })), {
    type: 'network',
    action: 'connect',
    actorId: NET_A,
    attributes: { container: CTR_WEB, name: 'appnet' },
  });
  for (const bad of ['', 'not json', '[]', '{}', '{"Type":"network","Action":"connect"}', 'null']) t.equal(parseEvent(bad), undefined);
});

function endpoint(idc: string, networkId: string, address: string, extra: Partial<EndpointRecord> = {}): EndpointRecord {
  return { id: id(idc), networkId, hostVeth: `tsv-${idc}`, peerVeth: `tsp-${idc}`, mac: '02:00:00:00:00:01', macAssigned: true, address, ports: [], createdAt: '', ...extra };
}

t.test('namesFor: endpoints matched by ID and network; names the container no longer has are cleared', async (t) => {
  const endpoints: Record<string, EndpointRecord> = {
    [id('e')]: endpoint('e', NET_A, '10.200.0.2/16'),
    [id('d')]: endpoint('d', NET_C, '10.210.0.2/24'),
    [id('7')]: endpoint('7', NET_B, '10.201.0.2/16', { dns: { container: CTR_WEB, name: 'web', names: ['web'], network: 'old' } }),
  };
  const changes = namesFor(CTR_WEB, containerView(inspect41, '1.41'), endpoints);
  t.same(changes.get(id('e')), { container: CTR_WEB, name: 'web', names: ['web', '1111111111111', 'www'], network: 'appnet' }, 'our endpoint on appnet gets its names');
  t.notOk(changes.has(id('d')), 'an endpoint of ours on another network than dockerd says is not matched');
  t.equal(changes.get(id('7')), undefined);
  t.ok(changes.has(id('7')), 'an endpoint of the container it is no longer on loses its names');
  endpoints[id('e')]!.dns = changes.get(id('e'));
  const again = namesFor(CTR_WEB, containerView(inspect41, '1.41'), endpoints);
  t.notOk(again.has(id('e')), 'unchanged names are no change');
  t.same([...namesFor(CTR_WEB, undefined, endpoints).keys()], [id('e'), id('7')], 'a container gone: all its names go');
});

/** A host with networks A and B (overlays) and C (bridge). web is on A; cli on A and B; other on B and C. */
function directory(remote: Record<string, Array<[string, RemoteEndpointValue]>> = {}): { names: NameDirectory; state: State } {
  const state = emptyState();
  const dns = (container: string, name: string, network: string, more: string[] = []) => ({ container, name, names: [name, ...more], network });
  for (const [k, e] of Object.entries({
    web: endpoint('e', NET_A, '10.200.0.2/16', { addressV6: 'fd00:200::2/64', dns: dns(CTR_WEB, 'web', 'appnet', ['www']) }),
    cliA: endpoint('4', NET_A, '10.200.0.3/16', { dns: dns(CTR_CLI, 'cli', 'appnet') }),
    cliB: endpoint('5', NET_B, '10.201.0.3/16', { dns: dns(CTR_CLI, 'cli', 'backnet') }),
    otherB: endpoint('6', NET_B, '10.201.0.4/16', { dns: dns(CTR_OTHER, 'other', 'backnet', ['db']) }),
    otherC: endpoint('8', NET_C, '10.210.0.4/24', { dns: dns(CTR_OTHER, 'other', 'local') }),
    anon: endpoint('9', NET_A, '10.200.0.9/16'),
  })) {
    void k;
    state.endpoints[e.id] = e;
  }
  const names = new NameDirectory({ store: { state } as unknown as Store, remote: (n) => remote[n], hostId: () => 'me' });
  return { names, state };
}

t.test('the directory: who asks, what it sees, what names stand for', async (t) => {
  const { names } = directory({
    [NET_A]: [
      ['h2/' + id('a1'), { host: 'h2', ip: '10.200.0.70', names: ['web', 'api', 'API', 'bad name', 7] }],
      ['me/' + id('e'), { host: 'me', ip: '10.200.0.2', names: ['stale'] }],
      ['h3/' + id('a3'), { host: 'h3', ip: 'not an ip', ip6: 'fd00:200::3', names: ['v6only'] }],
      ['h3/' + id('a4'), { host: 'h3', ip: '10.200.0.80' }],
    ],
  });
  t.equal(names.asker('10.200.0.3', NET_A)?.id, id('4'));
  t.equal(names.asker('10.201.0.3', NET_A)?.id, id('5'), 'an endpoint on another network of this host still asks');
  t.equal(names.asker('10.99.0.1', NET_A), undefined, 'an address no endpoint has');
  t.equal(names.asker('fd00:200::2', NET_A)?.id, id('e'), 'by IPv6 too');
  t.equal(names.asker('garbage'), undefined);
  t.same(names.scope(names.asker('10.200.0.3', NET_A)!), [NET_A, NET_B], "the arrival network, then the container's others");
  t.same(names.scope(names.asker('10.200.0.9', NET_A)!), [NET_A], 'a container not known yet: its own network only');

  const web = names.resolve('WEB.', [NET_A])!;
  t.same(web.entries.map((e) => [e.host, e.ipv4]).sort(), [['h2', '10.200.0.70'], ['local', '10.200.0.2']], 'this host and another both have web: both answer');
  t.same(names.resolve('api', [NET_A])!.entries.map((e) => e.ipv4), ['10.200.0.70'], "another host's alias, lower-cased");
  t.equal(names.resolve('stale', [NET_A]), undefined, "this host's entries in etcd are not read back: the records are the truth");
  t.same(names.resolve('v6only', [NET_A])!.entries[0], { endpoint: id('a3'), host: 'h3', names: ['v6only'], ipv6: 'fd00:200::3' }, 'a bad address is left out, the good one kept');
  t.equal(names.resolve('db', [NET_A]), undefined, 'a name of a network not in scope is not answered');
  t.equal(names.resolve('db', [NET_A, NET_B])!.network, NET_B);
  t.equal(names.resolve('other', [NET_B, NET_C])!.network, NET_B, 'the first network in scope that has it');
  t.same(names.resolve('other.local', [NET_B, NET_C])!.entries.map((e) => e.ipv4), ['10.210.0.4'], 'NAME.NETWORK asks that network');
  t.equal(names.resolve('other.local', [NET_B]), undefined, 'not a network in scope');
  t.equal(names.reverse(parseIp('10.200.0.70')!, [NET_A])?.entry.host, 'h2');
  t.equal(names.reverse(parseIp('10.201.0.4')!, [NET_A]), undefined);
  t.equal(names.networkName(NET_B), 'backnet');
});

t.test('reverse names', async (t) => {
  t.equal(formatIp(parseReverseName('2.0.200.10.in-addr.arpa.')!), '10.200.0.2');
  t.equal(formatIp(parseReverseName(`${'2.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.0.2.0.0.0.d.f'}.ip6.arpa`)!), 'fd00:200::2');
  for (const bad of ['1.2.3.in-addr.arpa', '256.0.0.10.in-addr.arpa', 'x.ip6.arpa', 'example.com']) t.equal(parseReverseName(bad), undefined, bad);
});

function query(name: string, type: string, opts: { id?: number; edns?: number; flags?: number } = {}): Buffer {
  return dnsPacket.encode({
    type: 'query',
    id: opts.id ?? 4242,
    flags: opts.flags ?? dnsPacket.RECURSION_DESIRED,
    questions: [{ type: type as 'A', name, class: 'IN' }],
    ...(opts.edns ? { additionals: [{ type: 'OPT', name: '.', udpPayloadSize: opts.edns, extendedRcode: 0, ednsVersion: 0, flags: 0, flag_do: false, options: [] }] } : {}),
  });
}

function reply(d: Decision): dnsPacket.DecodedPacket & { rcode?: string } {
  if (d.kind !== 'reply') throw new Error(`expected a reply, got ${d.kind}`);
  return dnsPacket.decode(d.packet) as dnsPacket.DecodedPacket & { rcode?: string };
}

t.test('decide: answers, NODATA, forwards and refusals', async (t) => {
  const { names } = directory({ [NET_A]: [['h2/' + id('a1'), { host: 'h2', ip: '10.200.0.70', names: ['api'] }]] });
  const from = { source: '10.200.0.3', via: NET_A, transport: 'udp' as const, names };
  const a = reply(decide(query('web', 'A'), from));
  t.equal(a.id, 4242);
  t.equal(a.rcode, 'NOERROR');
  t.ok(a.flag_qr && a.flag_rd && a.flag_ra, 'a response, recursion desired echoed and available');
  t.same(a.answers!.map((x) => [x.type, (x as { data: string }).data, (x as { ttl: number }).ttl]), [['A', '10.200.0.2', ANSWER_TTL]]);
  t.same(a.questions, [{ name: 'web', type: 'A', class: 'IN' }], 'the question echoed');
  t.same(reply(decide(query('api', 'A'), from)).answers!.map((x) => (x as { data: string }).data), ['10.200.0.70'], "another host's container");
  t.same(reply(decide(query('web', 'AAAA'), from)).answers!.map((x) => (x as { data: string }).data), ['fd00:200::2']);
  const nodata = decide(query('api', 'AAAA'), from);
  t.equal(nodata.kind === 'reply' && nodata.result, 'nodata');
  t.same([reply(nodata).rcode, reply(nodata).answers!.length], ['NOERROR', 0], 'a known name without IPv6: NODATA, not NXDOMAIN');
  t.same([reply(decide(query('web', 'MX'), from)).rcode, reply(decide(query('web', 'MX'), from)).answers!.length], ['NOERROR', 0], 'other types of a known name: NODATA');
  t.equal(reply(decide(query('web', 'ANY'), from)).answers!.length, 2, 'ANY: both families');
  t.same(decide(query('example.com', 'A'), from), { kind: 'forward', name: 'example.com', type: 'A' }, 'unknown names go to the host\'s resolvers');
  t.same(decide(query('db', 'A'), { ...from, source: '10.200.0.2' }), { kind: 'forward', name: 'db', type: 'A' }, 'a name on a network the asker (web) is not on is not answered');
  t.equal(reply(decide(query('db', 'A'), { ...from, source: '10.201.0.4', via: NET_B })).answers!.length, 1, 'the same name for a container on that network');
  t.equal(reply(decide(query('db', 'A'), from)).answers!.length, 1, 'and for one (cli) that is also on it, asking through its other network');
  const refused = decide(query('web', 'A'), { ...from, source: '192.0.2.1' });
  t.equal(reply(refused).rcode, 'REFUSED', 'a source that is no endpoint of this host');
  t.same(reply(refused).questions, [{ name: 'web', type: 'A', class: 'IN' }]);
  const ptr = reply(decide(query('70.0.200.10.in-addr.arpa', 'PTR'), from));
  t.same(ptr.answers!.map((x) => (x as { data: string }).data), ['api.appnet'], "another host's container, with this host's name for the network");
  const ptrLocal = reply(decide(query('2.0.200.10.in-addr.arpa', 'PTR'), from));
  t.same(ptrLocal.answers!.map((x) => (x as { data: string }).data), ['web.appnet'], 'NAME.NETWORK, as Docker answers');
  t.equal(decide(query('9.9.9.9.in-addr.arpa', 'PTR'), from).kind, 'forward');
  t.equal(decide(query('web', 'A', { flags: 0 }), from).kind, 'reply');
  t.notOk(reply(decide(query('web', 'A', { flags: 0 }), from)).flag_rd, 'RD only when asked');
  t.equal(reply(decide(query('WeB', 'A'), from)).questions![0]!.name, 'WeB', 'the question keeps its case');
});

t.test('decide: EDNS and truncation', async (t) => {
  const { names, state } = directory();
  for (let i = 0; i < 50; i++) state.endpoints[id(`f${i}`)] = endpoint(`f${i}`, NET_A, `10.200.1.${i}/16`, { id: `${i}`.padStart(64, 'f'), dns: { container: id('c'), name: 'many', names: ['many'], network: 'appnet' } });
  const from = { source: '10.200.0.3', via: NET_A, transport: 'udp' as const, names };
  const plain = decide(query('many', 'A'), from);
  t.ok(plain.kind === 'reply' && plain.packet.length <= 512, 'no EDNS: 512 bytes at most');
  t.ok(reply(plain).flag_tc, 'and truncated');
  t.ok(reply(plain).answers!.length > 0 && reply(plain).answers!.length < 50);
  const edns = decide(query('many', 'A', { edns: 4096 }), from);
  t.equal(reply(edns).answers!.length, 50, 'EDNS: all of them (1232 bytes at most)');
  t.ok(edns.kind === 'reply' && edns.packet.length <= 1232);
  t.notOk(reply(edns).flag_tc);
  t.ok(reply(edns).additionals!.some((a) => a.type === 'OPT'), 'an OPT back for an OPT');
  t.equal(reply(decide(query('many', 'A'), { ...from, transport: 'tcp' })).answers!.length, 50, 'TCP: all of them');
});

t.test('decide: malformed input never throws', async (t) => {
  const { names } = directory();
  const from = { source: '10.200.0.3', via: NET_A, transport: 'udp' as const, names };
  t.same(decide(Buffer.alloc(5), from), { kind: 'drop' }, 'shorter than a header');
  const resp = query('web', 'A');
  resp.writeUInt16BE(resp.readUInt16BE(2) | 0x8000, 2);
  t.same(decide(resp, from), { kind: 'drop' }, 'a response is never answered');
  const junk = Buffer.concat([query('web', 'A').subarray(0, 12), Buffer.from([0xc0, 0x0c, 0, 1, 0, 1])]);
  t.equal(reply(decide(junk, from)).rcode, 'FORMERR', 'a pointer loop');
  const two = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'A', name: 'a' }, { type: 'A', name: 'b' }] });
  t.equal(reply(decide(two, from)).rcode, 'FORMERR', 'two questions');
  const none = dnsPacket.encode({ type: 'query', id: 1, questions: [] });
  t.equal(reply(decide(none, from)).rcode, 'FORMERR', 'no question');
  const status = query('web', 'A');
  status.writeUInt16BE(status.readUInt16BE(2) | (2 << 11), 2);
  t.equal(reply(decide(status, from)).rcode, 'NOTIMP', 'opcode STATUS');
  const ch = dnsPacket.encode({ type: 'query', id: 1, questions: [{ type: 'TXT', name: 'version.bind', class: 'CH' }] });
  t.equal(decide(ch, from).kind, 'forward', 'another class: not ours, forwarded');
  // A seeded stream of random and mutated packets.
  let seed = 7;
  const rnd = (n: number): number => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff), seed % n);
  const base = query('web.appnet', 'A', { edns: 1232 });
  let replies = 0;
  const wrong: string[] = [];
  for (let i = 0; i < 5000; i++) {
    const msg = i % 2 === 0 ? Buffer.from(Array.from({ length: rnd(80) }, () => rnd(256))) : Buffer.from(base);
    if (i % 2 === 1) for (let k = 0; k < 1 + rnd(4); k++) msg[rnd(msg.length)] = rnd(256);
    const d = decide(msg, from);
    if (d.kind !== 'reply') continue;
    replies++;
    if (d.packet.length < 12 || d.packet.readUInt16BE(0) !== msg.readUInt16BE(0) || (d.packet.readUInt16BE(2) & 0x8000) === 0) wrong.push(msg.toString('hex'));
  }
  t.ok(replies > 100, `${replies} replies to 5000 hostile packets, none thrown`);
  t.same(wrong, [], "every reply is a response with the query's ID");
});

t.test('errorReply and matchesQuery', async (t) => {
  const q = query('Example.COM', 'A', { id: 7 });
  const end = questionEnd(q)!;
  t.equal(end, q.length);
  const e = dnsPacket.decode(errorReply(q, 'SERVFAIL', end)) as dnsPacket.DecodedPacket & { rcode: string };
  t.same([e.id, e.rcode, e.questions![0]!.name], [7, 'SERVFAIL', 'Example.COM']);
  const good = dnsPacket.encode({ type: 'response', id: 7, questions: [{ type: 'A', name: 'example.com' }], answers: [{ type: 'A', name: 'example.com', data: '192.0.2.1' }] });
  t.ok(matchesQuery(q, good), 'same ID and question, case aside');
  t.notOk(matchesQuery(q, dnsPacket.encode({ type: 'response', id: 8, questions: [{ type: 'A', name: 'example.com' }] })), 'another ID');
  t.notOk(matchesQuery(q, dnsPacket.encode({ type: 'response', id: 7, questions: [{ type: 'AAAA', name: 'example.com' }] })), 'another type');
  t.notOk(matchesQuery(q, dnsPacket.encode({ type: 'response', id: 7, questions: [{ type: 'A', name: 'example.org' }] })), 'another name');
  t.notOk(matchesQuery(q, q), 'a query is no reply');
  t.notOk(matchesQuery(q, Buffer.alloc(3)));
});

t.test('resolv.conf: nameservers in order, three at most, comments and junk skipped', async (t) => {
  t.same(parseResolvConf('# hi\nsearch lab\nnameserver 10.99.0.100\nnameserver  fe80::1%eth0 ; x\nnameserver bogus\nnameserver 10.99.0.100\nnameserver ::1\nnameserver 1.1.1.1\n'), ['10.99.0.100', 'fe80::1%eth0', '::1']);
  t.same(parseResolvConf(''), []);
});

t.test('DNS listens on the gateway addresses of cluster overlays and cluster routed networks only', async (t) => {
  const state = emptyState();
  const net = (idc: string, mode: NetworkRecord['mode'], extra: Partial<NetworkRecord> = {}): NetworkRecord =>
    ({ id: id(idc), mode, bridge: `tsbr-${idc}`, ipv4: [{ pool: '10.200.0.0/16', gateway: '10.200.0.1/16', aux: {} }], ipv6: [], inhibitIpv4: false, ...extra }) as NetworkRecord;
  const overlay = (mode: 'cluster' | 'static') => ({ overlay: { mode } as NetworkRecord['overlay'] });
  state.networks[id('1')] = net('1', 'overlay', overlay('cluster'));
  state.networks[id('2')] = net('2', 'overlay', { ...overlay('cluster'), ipv4: [{ pool: '10.201.0.0/16', gateway: '10.201.0.1/16', aux: {} }], ipv6: [{ pool: 'fd00:201::/64', gateway: 'fd00:201::1/64', aux: {} }] });
  state.networks[id('3')] = net('3', 'overlay', { ...overlay('cluster'), ipv4: [{ pool: '10.202.0.0/16', aux: {} }] });
  state.networks[id('4')] = net('4', 'overlay', overlay('static'));
  state.networks[id('5')] = net('5', 'bridge');
  state.networks[id('6')] = net('6', 'overlay', { ...overlay('cluster'), inhibitIpv4: true });
  const routed = (mode: 'cluster' | 'static', pool: string) => ({ routed: { mode } as NetworkRecord['routed'], ipv4: [{ pool, gateway: pool.replace('0.0/16', '0.1/16'), aux: {} }] });
  state.networks[id('7')] = net('7', 'routed', routed('cluster', '10.203.0.0/16'));
  state.networks[id('8')] = net('8', 'routed', routed('static', '10.204.0.0/16'));
  t.same(dnsListenAddresses(state), [
    { address: '10.200.0.1', network: id('1') },
    { address: '10.201.0.1', network: id('2') },
    { address: 'fd00:201::1', network: id('2') },
    { address: '10.203.0.1', network: id('7') },
  ], 'a static routed network publishes nothing, so it has no names of other hosts to answer');
});

t.test('configuration: TSNET_DOCKER_HOST and TSNET_DNS', async (t) => {
  t.equal(loadConfig({}).dockerSocket, '/var/run/docker.sock');
  t.equal(loadConfig({}).dns, true);
  t.equal(loadConfig({ TSNET_DOCKER_HOST: 'unix:///run/d/../docker.sock' }).dockerSocket, '/run/docker.sock');
  t.equal(loadConfig({ TSNET_DOCKER_HOST: 'off' }).dockerSocket, undefined);
  t.equal(loadConfig({ TSNET_DNS: 'off' }).dns, false);
  t.throws(() => loadConfig({ TSNET_DOCKER_HOST: 'tcp://10.0.0.1:2375' }), /TSNET_DOCKER_HOST: "tcp:\/\/10\.0\.0\.1:2375" is not unix:\/\/\/PATH/);
  t.throws(() => loadConfig({ TSNET_DOCKER_HOST: 'unix://relative' }), /TSNET_DOCKER_HOST/);
  t.throws(() => loadConfig({ TSNET_DNS: 'yes' }), /TSNET_DNS: "yes" must be on or off/);
});

t.test('tsnetctl names, for people', async (t) => {
  const text = formatNames({
    dockerd: { socket: '/var/run/docker.sock', connected: true, dockerd: '26.1.5', apiVersion: '1.45', connects: 1 },
    dns: { enabled: true, port: 53, listening: [{ address: '10.200.0.1', network: NET_A, udp: true, tcp: true }], queries: {}, upstreams: ['10.99.0.100'] },
    networks: [{ id: NET_A, name: 'appnet', mode: 'overlay', names: [{ endpoint: id('e'), host: 'local', names: ['web', 'www'], ipv4: '10.200.0.2' }, { endpoint: id('f'), host: 'h2', names: ['api'], ipv4: '10.200.0.70' }] }],
  });
  t.match(text, /dockerd: following \/var\/run\/docker\.sock \(dockerd 26\.1\.5, API 1\.45\)/);
  t.match(text, /dns: 10\.200\.0\.1:53 for network aaaaaaaaaaaa/);
  t.match(text, /unknown names go to 10\.99\.0\.100/);
  t.match(text, /appnet\s+web,www\s+10\.200\.0\.2\s+-\s+local/);
  t.match(text, /appnet\s+api\s+10\.200\.0\.70\s+-\s+h2/);
});

t.test('doctor: dockerd not followed warns, an overlay gateway without DNS fails', async (t) => {
  const { judgeNames } = await import('../../src/doctor/checks.js');
  const listening = (udp: boolean, error?: string) => [{ address: '10.200.0.1', network: NET_A, udp, tcp: udp, ...(error ? { error } : {}) }];
  t.same(judgeNames(undefined, 1), [], 'both off: nothing to say');
  const good = judgeNames({ dockerd: { socket: '/var/run/docker.sock', connected: true }, dns: { enabled: true, listening: listening(true) } }, 1);
  t.same(good.map((f) => f.level), ['ok']);
  t.match(good[0]!.message, /following dockerd at \/var\/run\/docker\.sock; DNS on 1 overlay gateway address/);
  const bad = judgeNames({ dockerd: { socket: '/var/run/docker.sock', connected: false, lastError: 'connect ENOENT' }, dns: { enabled: true, listening: listening(false, 'udp: bind EADDRINUSE') } }, 1);
  t.same(bad.map((f) => [f.level, f.check]), [['warn', 'names'], ['fail', 'names']]);
  t.match(bad[0]!.message, /not answering \(connect ENOENT\)/);
  t.match(bad[1]!.message, /no DNS on 10\.200\.0\.1:53 .*EADDRINUSE/);
  t.same(judgeNames({ dockerd: null, dns: { enabled: true, listening: [] } }, 0), [], 'nothing configured that needs it: silent');
});
