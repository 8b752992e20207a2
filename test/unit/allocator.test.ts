// src/ipam/allocator.ts: pure allocation inside one pool, no store, no I/O.
import t from 'tap';
import { PoolAllocator } from '../../src/ipam/allocator.js';
import { formatIp, parseIp } from '../../src/ipam/cidr.js';
import type { Allocation, PoolRecord } from '../../src/store/schema.js';

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
