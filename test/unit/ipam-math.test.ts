// Unit tier, one process for several small modules (each process costs
// a TypeScript start-up): cidr, allocator.

import t from 'tap';
import { PoolAllocator } from '../../src/ipam/allocator.js';
import { type Prefix, contains, containsPrefix, formatIp, formatPrefix, lastAddress, overlaps, parseCidrAddress, parseIp, parsePrefix, prefixSize, samePrefix, subnets, withPrefixLength } from '../../src/net/cidr.js';
import type { Allocation, PoolRecord } from '../../src/store/schema.js';

// src/net/cidr.ts: strict parsing (two spellings of one address must never
// both be accepted), RFC 5952 output, and bigint maths at IPv6 sizes.
t.test('src/net/cidr.ts', async (t) => {
  function p(text: string, strict = true): Prefix {
    const r = parsePrefix(text, strict);
    if (!r) throw new Error(`test bug: ${text} did not parse`);
    return r;
  }

  t.test('IPv4 parsing is strict', async (t) => {
    t.same(parseIp('10.1.2.3'), { v6: false, value: 0x0a010203n });
    t.same(parseIp('0.0.0.0'), { v6: false, value: 0n });
    t.same(parseIp('255.255.255.255'), { v6: false, value: 0xffffffffn });
    for (const bad of ['1.2.3', '1.2.3.4.5', '01.2.3.4', '1.2.3.04', '256.1.1.1', '1.2.3.256', '1.2.3.-1', ' 1.2.3.4', '1.2.3.4 ', '1..2.3', '', '1.2.3.4/24', 'a.b.c.d', '0x1.2.3.4', '1e2.1.1.1']) {
      t.equal(parseIp(bad), undefined, `rejects ${JSON.stringify(bad)}`);
    }
  });

  t.test('IPv6 parsing', async (t) => {
    t.same(parseIp('::1'), { v6: true, value: 1n });
    t.same(parseIp('::'), { v6: true, value: 0n });
    t.same(parseIp('fd00::1'), { v6: true, value: (0xfd00n << 112n) | 1n });
    t.same(parseIp('FD00::1'), parseIp('fd00::1'), 'case-insensitive');
    t.same(parseIp('fd00:0:0:0::1'), parseIp('fd00::1'), 'non-canonical spelling parses to the same value');
    t.same(parseIp('ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff'), { v6: true, value: (1n << 128n) - 1n });
    for (const bad of ['fd00::1::2', '1:2:3:4:5:6:7:8:9', 'fd00::g', 'fd00::1%eth0', ':::', 'fd00::1/64', '12345::1']) {
      t.equal(parseIp(bad), undefined, `rejects ${JSON.stringify(bad)}`);
    }
  });

  t.test('IPv4 formatting round-trips', async (t) => {
    for (const s of ['0.0.0.0', '10.210.0.1', '192.168.255.254', '255.255.255.255']) t.equal(formatIp(parseIp(s)!), s);
  });

  t.test('IPv6 formatting follows RFC 5952', async (t) => {
    const cases: Array<[string, string]> = [
      ['fd00:0:0:0::1', 'fd00::1'],
      ['2001:db8:0:0:1:0:0:1', '2001:db8::1:0:0:1'], // first of two equal runs
      ['2001:0db8:0000:0000:0000:0000:0002:0001', '2001:db8::2:1'], // leading zeros dropped
      ['2001:db8:0:1:1:1:1:1', '2001:db8:0:1:1:1:1:1'], // a single zero group is not compressed
      ['2001:0:0:1:0:0:0:1', '2001:0:0:1::1'], // the longest run wins
      ['0:0:0:0:0:0:0:0', '::'],
      ['0:0:0:0:0:0:0:1', '::1'],
      ['1:0:0:0:0:0:0:0', '1::'],
      ['FD74:736E:6574::', 'fd74:736e:6574::'], // lower case
    ];
    for (const [input, want] of cases) t.equal(formatIp(parseIp(input)!), want, `${input} -> ${want}`);
  });

  t.test('parsePrefix strict vs loose', async (t) => {
    t.same(parsePrefix('10.0.0.0/8'), { v6: false, base: 0x0a000000n, bits: 8 });
    t.equal(parsePrefix('10.0.0.5/24'), undefined, 'strict refuses host bits');
    t.same(parsePrefix('10.0.0.5/24', false), { v6: false, base: 0x0a000000n, bits: 24 }, 'loose masks host bits');
    t.equal(parsePrefix('fd00::1/64'), undefined);
    t.equal(formatPrefix(p('fd00::1/64', false)), 'fd00::/64');
    t.same(parsePrefix('0.0.0.0/0'), { v6: false, base: 0n, bits: 0 });
    t.same(parsePrefix('1.2.3.4/32'), { v6: false, base: 0x01020304n, bits: 32 });
    t.same(parsePrefix('::/0'), { v6: true, base: 0n, bits: 0 });
    t.same(parsePrefix('::1/128'), { v6: true, base: 1n, bits: 128 });
    for (const bad of ['10.0.0.0', '10.0.0.0/33', '10.0.0.0/', '10.0.0.0/-1', '10.0.0.0/8/8', '10.0.0.0/a', 'fd00::/129', '/24', '1.2.3/24', '10.0.0.0/1000']) {
      t.equal(parsePrefix(bad), undefined, `rejects ${JSON.stringify(bad)}`);
      t.equal(parsePrefix(bad, false), undefined, `loose also rejects ${JSON.stringify(bad)}`);
    }
  });

  t.test('parseCidrAddress keeps the address and its prefix', async (t) => {
    const r = parseCidrAddress('10.0.0.5/24');
    t.ok(r);
    t.equal(formatIp(r!.ip), '10.0.0.5');
    t.equal(formatPrefix(r!.prefix), '10.0.0.0/24');
    t.equal(parseCidrAddress('10.0.0.5'), undefined, 'needs a prefix length');
    t.equal(parseCidrAddress('10.0.0.256/24'), undefined);
    t.equal(withPrefixLength(parseIp('fd00::5')!, 64), 'fd00::5/64');
  });

  t.test('contains / containsPrefix / overlaps / samePrefix', async (t) => {
    const a = p('10.0.0.0/16');
    t.ok(contains(a, parseIp('10.0.0.0')!), 'first address');
    t.ok(contains(a, parseIp('10.0.255.255')!), 'last address');
    t.notOk(contains(a, parseIp('10.1.0.0')!), 'one past the end');
    t.notOk(contains(a, parseIp('9.255.255.255')!), 'one before the start');
    t.notOk(contains(a, parseIp('::a00:1')!), 'never across families');

    t.ok(containsPrefix(a, p('10.0.128.0/17')));
    t.ok(containsPrefix(a, a), 'a prefix contains itself');
    t.notOk(containsPrefix(p('10.0.128.0/17'), a), 'inner does not contain outer');
    t.notOk(containsPrefix(a, p('10.0.0.0/8')));
    t.notOk(containsPrefix(a, p('10.1.0.0/24')));

    t.ok(overlaps(a, p('10.0.5.0/24')));
    t.ok(overlaps(p('10.0.5.0/24'), a), 'symmetric');
    t.ok(overlaps(p('10.0.0.0/8'), a));
    t.notOk(overlaps(p('10.0.0.0/24'), p('10.0.1.0/24')), 'adjacent blocks do not overlap');
    t.notOk(overlaps(p('0.0.0.0/0'), p('::/0')), 'families never overlap');
    t.ok(overlaps(p('fd00::/64'), p('fd00::8000:0:0:0/65')));
    t.notOk(overlaps(p('fd00::/64'), p('fd00:0:0:1::/64')));

    t.ok(samePrefix(p('10.0.0.0/24'), p('10.0.0.7/24', false)));
    t.notOk(samePrefix(p('10.0.0.0/24'), p('10.0.0.0/25')));
  });

  t.test('bigint maths on large IPv6 prefixes', async (t) => {
    const p64 = p('fd74:736e:6574::/64');
    t.equal(prefixSize(p64), 1n << 64n);
    t.equal(formatIp({ v6: true, value: lastAddress(p64) }), 'fd74:736e:6574:0:ffff:ffff:ffff:ffff');
    const p127 = p('fd00::/127');
    t.equal(prefixSize(p127), 2n);
    t.equal(formatIp({ v6: true, value: lastAddress(p127) }), 'fd00::1');
    t.equal(parsePrefix('fd00::1/127'), undefined, '::1 has a host bit set in a /127');
    t.equal(prefixSize(p('::/0')), 1n << 128n);
    t.equal(lastAddress(p('::/0')), (1n << 128n) - 1n);
    t.equal(prefixSize(p('10.0.0.0/30')), 4n);
    t.equal(formatIp({ v6: false, value: lastAddress(p('10.0.0.0/30')) }), '10.0.0.3');
  });

  t.test('subnets() enumerates in order', async (t) => {
    t.same(
      [...subnets(p('10.210.0.0/22'), 24)].map(formatPrefix),
      ['10.210.0.0/24', '10.210.1.0/24', '10.210.2.0/24', '10.210.3.0/24'],
    );
    t.same([...subnets(p('10.0.0.0/24'), 24)].map(formatPrefix), ['10.0.0.0/24'], 'same size: the pool itself');
    t.same([...subnets(p('10.0.0.0/24'), 23)], [], 'larger than the pool: nothing');
    t.same([...subnets(p('10.0.0.0/24'), 33)], [], 'beyond the family width: nothing');
    const v6 = subnets(p('fd74:736e:6574::/48'), 64);
    t.same(
      [v6.next().value, v6.next().value, v6.next().value].map((x) => formatPrefix(x as Prefix)),
      ['fd74:736e:6574::/64', 'fd74:736e:6574:1::/64', 'fd74:736e:6574:2::/64'],
      'lazy over 65,536 IPv6 /64s',
    );
    let n = 0;
    for (const _ of subnets(p('fd00::/120'), 127)) n++;
    t.equal(n, 128, '/120 holds 128 /127s');
    const all = [...subnets(p('10.0.0.0/16'), 24)];
    t.equal(all.length, 256);
    t.equal(formatPrefix(all[255]!), '10.0.255.0/24');
  });
});

// src/ipam/allocator.ts: pure allocation inside one pool, no store, no I/O.
t.test('src/ipam/allocator.ts', async (t) => {
  function record(pool: string, subPool?: string, allocations: Record<string, Allocation> = {}): PoolRecord {
    return {
      id: `tsnet-local/${pool}`,
      addressSpace: 'tsnet-local',
      pool,
      ...(subPool ? { subPool } : {}),
      v6: pool.includes(':'),
      dynamic: false,
      options: {},
      allocations,
      createdAt: '2026-01-01T00:00:00.000Z',
    };
  }

  const at = '2026-01-01T00:00:00.000Z';
  const ip = (s: string): bigint => parseIp(s)!.value;
  const fmt = (v: bigint | undefined, v6 = false): string | undefined => (v === undefined ? undefined : formatIp({ v6, value: v }));

  /** Take the lowest free address, as RequestAddress does. */
  function takeNext(a: PoolAllocator): string | undefined {
    const v = a.firstFree();
    return v === undefined ? undefined : a.take(v, { kind: 'dynamic', at });
  }

  t.test('lowest free first; network and broadcast never handed out (IPv4)', async (t) => {
    const a = new PoolAllocator(record('10.0.0.0/29'));
    const got: Array<string | undefined> = [];
    for (let i = 0; i < 7; i++) got.push(takeNext(a));
    t.same(got, ['10.0.0.1', '10.0.0.2', '10.0.0.3', '10.0.0.4', '10.0.0.5', '10.0.0.6', undefined], '6 usable in a /29, then exhaustion');
    t.ok(a.isReserved(ip('10.0.0.0')), 'network reserved');
    t.ok(a.isReserved(ip('10.0.0.7')), 'broadcast reserved');
    t.notOk(a.isReserved(ip('10.0.0.6')));
  });

  t.test('a released address is reused, lowest first', async (t) => {
    const a = new PoolAllocator(record('10.0.0.0/24'));
    for (let i = 0; i < 5; i++) takeNext(a);
    t.ok(a.release(ip('10.0.0.3')));
    t.ok(a.release(ip('10.0.0.2')));
    t.equal(takeNext(a), '10.0.0.2');
    t.equal(takeNext(a), '10.0.0.3');
    t.equal(takeNext(a), '10.0.0.6');
    t.notOk(a.release(ip('10.0.0.200')), 'releasing a free address reports false');
  });

  t.test('IPv6: only the network address is reserved', async (t) => {
    const a = new PoolAllocator(record('fd00::/126'));
    t.ok(a.isReserved(ip('fd00::')), 'subnet-router anycast (network) reserved');
    t.notOk(a.isReserved(ip('fd00::3')), 'no broadcast in IPv6');
    const got = [takeNext(a), takeNext(a), takeNext(a), takeNext(a)];
    t.same(got, ['fd00::1', 'fd00::2', 'fd00::3', undefined]);
    const big = new PoolAllocator(record('fd74:736e:6574::/64'));
    t.equal(takeNext(big), 'fd74:736e:6574::1', 'first of a /64');
  });

  t.test('/31 and /32 (RFC 3021) have no reserved addresses', async (t) => {
    const a = new PoolAllocator(record('10.0.0.0/31'));
    t.same([takeNext(a), takeNext(a), takeNext(a)], ['10.0.0.0', '10.0.0.1', undefined]);
    const b = new PoolAllocator(record('10.0.0.9/32'));
    t.same([takeNext(b), takeNext(b)], ['10.0.0.9', undefined]);
  });

  t.test('SubPool (ip-range) bounds dynamic allocation', async (t) => {
    const a = new PoolAllocator(record('10.0.0.0/24', '10.0.0.128/30'));
    t.equal(a.range.bits, 30);
    const got: Array<string | undefined> = [];
    for (let i = 0; i < 5; i++) got.push(takeNext(a));
    t.same(got, ['10.0.0.128', '10.0.0.129', '10.0.0.130', '10.0.0.131', undefined], 'whole range usable, then exhaustion');
    t.ok(a.inPool(ip('10.0.0.5')), 'addresses outside the range are still in the pool (static / aux)');
    a.take(ip('10.0.0.5'), { kind: 'static', at });
    t.equal(a.firstFree(), undefined, 'a static take outside the range does not free range space');
    t.equal(fmt(a.firstFree(a.prefix)), '10.0.0.1', 'the whole pool still has room');
  });

  t.test('a range at the start of the pool skips the network address', async (t) => {
    const a = new PoolAllocator(record('10.0.0.0/24', '10.0.0.0/30'));
    t.same([takeNext(a), takeNext(a), takeNext(a), takeNext(a)], ['10.0.0.1', '10.0.0.2', '10.0.0.3', undefined]);
    const b = new PoolAllocator(record('10.0.0.0/24', '10.0.0.252/30'));
    t.same([takeNext(b), takeNext(b), takeNext(b), takeNext(b)], ['10.0.0.252', '10.0.0.253', '10.0.0.254', undefined], 'and at the end, the broadcast');
  });

  t.test('take/release keep record.allocations in sync', async (t) => {
    const rec = record('10.0.0.0/24');
    const a = new PoolAllocator(rec);
    const text = a.take(ip('10.0.0.9'), { kind: 'static', name: 'web', at });
    t.equal(text, '10.0.0.9');
    t.same(rec.allocations, { '10.0.0.9': { kind: 'static', name: 'web', at } });
    t.ok(a.has(ip('10.0.0.9')));
    t.same(a.owner(ip('10.0.0.9')), { kind: 'static', name: 'web', at });
    t.equal(a.size, 1);
    a.release(ip('10.0.0.9'));
    t.same(rec.allocations, {});
    t.notOk(a.has(ip('10.0.0.9')));
    t.equal(a.size, 0);

    const v6 = record('fd00::/64');
    const b = new PoolAllocator(v6);
    t.equal(b.take(ip('fd00:0:0:0::a'), { kind: 'static', at }), 'fd00::a', 'keys are canonical text');
    t.same(Object.keys(v6.allocations), ['fd00::a']);
  });

  t.test('a record loaded from the store seeds the index', async (t) => {
    const a = new PoolAllocator(record('10.0.0.0/24', undefined, { '10.0.0.1': { kind: 'gateway', at }, '10.0.0.2': { kind: 'dynamic', at } }));
    t.equal(a.size, 2);
    t.equal(takeNext(a), '10.0.0.3');
  });

  t.test('a corrupt record is refused', async (t) => {
    t.throws(() => new PoolAllocator(record('10.0.0.0/33')), { code: 'TSNET_ERR_STORE_CORRUPT' });
    t.throws(() => new PoolAllocator(record('10.0.0.0/24', 'nonsense')), { code: 'TSNET_ERR_STORE_CORRUPT' });
  });
});
