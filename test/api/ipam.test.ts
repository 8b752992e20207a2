// IpamDriver.* through the real app, IPAM service and store (protocol.md §4),
// with the host's routes coming from the FakeRunner.
import t from 'tap';
import { FakeRunner } from '../helpers/fake-runner.js';
import { buildHarness, type Harness } from '../helpers/harness.js';

const GW = { RequestAddressType: 'com.docker.network.gateway' };

async function pool(h: Harness, body: Record<string, unknown>): Promise<{ PoolID: string; Pool: string; Data: unknown }> {
  const res = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '', SubPool: '', Options: null, V6: false, ...body });
  if (res.status !== 200) throw new Error(`RequestPool ${JSON.stringify(body)}: ${res.raw}`);
  return res.body as { PoolID: string; Pool: string; Data: unknown };
}

async function address(h: Harness, poolId: string, addr = '', options: Record<string, string> | null = null) {
  return h.call('IpamDriver.RequestAddress', { PoolID: poolId, Address: addr, Options: options });
}

t.test('RequestPool without Pool: distinct, non-overlapping pools from 10.210.0.0/16:24', async (t) => {
  const h = await buildHarness(t);
  const a = await pool(h, {});
  const b = await pool(h, {});
  t.same(a, { PoolID: 'tsnet-local/10.210.0.0/24', Pool: '10.210.0.0/24', Data: {} });
  t.same(b, { PoolID: 'tsnet-local/10.210.1.0/24', Pool: '10.210.1.0/24', Data: {} }, 'the second is the next /24, not the same one');
  t.same(h.runner.callsOf('ip').map((c) => c.args.join(' ')), ['-json -4 route show table all', '-json -4 route show table all'], 'routes consulted, nothing changed');
  const disk = await h.diskState();
  t.same(Object.keys(disk.pools).sort(), ['tsnet-local/10.210.0.0/24', 'tsnet-local/10.210.1.0/24'], 'both persisted');
  t.equal(disk.pools['tsnet-local/10.210.0.0/24']!.dynamic, true);
});

t.test('a dynamic pool skips prefixes the host routes', async (t) => {
  const runner = new FakeRunner();
  runner.routes4 = [
    { dst: 'default', gateway: '192.0.2.1', dev: 'eth0' },
    { dst: '10.210.0.0/24', dev: 'eth0' },
    { dst: '10.210.1.7', dev: 'wg0', type: 'local', table: 'local' },
    { dst: '224.0.0.0/4', dev: 'eth0', type: 'multicast' },
  ];
  const h = await buildHarness(t, { runner });
  const a = await pool(h, {});
  t.equal(a.Pool, '10.210.2.0/24', 'skips the routed /24 and the /24 holding a local /32');
});

t.test('a dynamic pool skips an explicit pool of any address space', async (t) => {
  const h = await buildHarness(t);
  await pool(h, { AddressSpace: 'tsnet-global', Pool: '10.210.0.0/23' });
  t.equal((await pool(h, {})).Pool, '10.210.2.0/24');
});

t.test('dynamic pools run out with a clear error', async (t) => {
  const h = await buildHarness(t, { defaultPools: '10.250.0.0/23:24' });
  await pool(h, {});
  await pool(h, {});
  const res = await h.call('IpamDriver.RequestPool', { Pool: '' });
  t.equal(res.status, 500);
  t.match(res.body.Err, 'could not find an available, non-overlapping IPv4 address pool');
  t.match(res.body.Err, '10.250.0.0/23:24');
  t.match(res.body.Err, 'TSNET_DEFAULT_POOLS');
  const v6 = await h.call('IpamDriver.RequestPool', { Pool: '', V6: true });
  t.equal(v6.status, 500);
  t.match(v6.body.Err, 'none configured', 'no IPv6 defaults configured');
});

t.test('explicit Pool, and overlap within one address space', async (t) => {
  const h = await buildHarness(t);
  const a = await pool(h, { Pool: '192.168.50.0/24' });
  t.same(a, { PoolID: 'tsnet-local/192.168.50.0/24', Pool: '192.168.50.0/24', Data: {} });
  t.equal(h.runner.calls.length, 0, 'an explicit pool reads no routes');
  const over = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '192.168.50.128/25' });
  t.equal(over.status, 500);
  t.match(over.body.Err, '192.168.50.128/25', 'names the requested pool');
  t.match(over.body.Err, '192.168.50.0/24', 'and the one it overlaps');
  const same = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '192.168.50.0/24' });
  t.equal(same.status, 500, 'the same pool twice is an overlap too');
  const other = await pool(h, { AddressSpace: 'tsnet-global', Pool: '192.168.50.0/24' });
  t.equal(other.PoolID, 'tsnet-global/192.168.50.0/24', 'another address space may reuse it');
  const dflt = await pool(h, { AddressSpace: '', Pool: '192.168.60.0/24' });
  t.equal(dflt.PoolID, 'tsnet-local/192.168.60.0/24', 'an empty AddressSpace means the local default');
});

t.test('bad pools are refused with a useful message', async (t) => {
  const h = await buildHarness(t);
  const cases: Array<[Record<string, unknown>, RegExp]> = [
    [{ Pool: '0.0.0.0/0' }, /covers every address/],
    [{ Pool: '::/0', V6: true }, /covers every address/],
    [{ Pool: '10.1.2.3/24' }, /host bits are set; did you mean 10\.1\.2\.0\/24\?/],
    [{ Pool: 'fd00::1/64', V6: true }, /did you mean fd00::\/64\?/],
    [{ Pool: '10.1.2.0' }, /"10\.1\.2\.0" is not a CIDR/],
    [{ Pool: 'fd00::/64' }, /is IPv6 but V6 is false/],
    [{ Pool: '10.0.0.0/24', V6: true }, /is IPv4 but V6 is true/],
    [{ Pool: '10.0.0.0/31' }, /too small/],
    [{ Pool: '10.0.0.0/24', SubPool: '10.0.1.0/25' }, /SubPool 10\.0\.1\.0\/25 is not inside Pool 10\.0\.0\.0\/24/],
    [{ Pool: '10.0.0.0/24', SubPool: '10.0.0.0/23' }, /not inside Pool/],
    [{ Pool: '10.0.0.0/24', SubPool: '10.0.0.5/25' }, /SubPool "10\.0\.0\.5\/25" is not a CIDR with its host bits clear/],
    [{ Pool: '', SubPool: '10.0.0.0/25' }, /SubPool "10\.0\.0\.0\/25" given without a Pool/],
  ];
  for (const [body, pattern] of cases) {
    const res = await h.call('IpamDriver.RequestPool', body);
    t.equal(res.status, 500, JSON.stringify(body));
    t.match(res.body.Err as string, pattern, res.body.Err as string);
  }
  t.same((await h.diskState().catch(() => ({ pools: {} }))).pools, {}, 'nothing was stored');
  t.same(h.store.state.pools, {});
});

t.test('IPv6 pools come from the default ULA', async (t) => {
  const h = await buildHarness(t);
  const a = await pool(h, { V6: true });
  const b = await pool(h, { V6: true });
  t.same(a, { PoolID: 'tsnet-local/fd74:736e:6574::/64', Pool: 'fd74:736e:6574::/64', Data: {} });
  t.equal(b.Pool, 'fd74:736e:6574:1::/64');
  t.same(h.runner.calls.map((c) => c.args.join(' ')), ['-json -6 route show table all', '-json -6 route show table all']);
  const gw = await address(h, a.PoolID, '', GW);
  t.same(gw.body, { Address: 'fd74:736e:6574::1/64', Data: {} });
  const st = await address(h, a.PoolID, 'fd74:736e:6574:0:0:0:0:ff');
  t.equal(st.body.Address, 'fd74:736e:6574::ff/64', 'canonical form, with the prefix length');
  const dup = await address(h, a.PoolID, 'FD74:736E:6574::FF');
  t.equal(dup.status, 500, 'another spelling of a taken address is still taken');
  t.match(dup.body.Err, 'already allocated');
});

t.test('RequestAddress: gateway, dynamic, static, aux, errors', async (t) => {
  const h = await buildHarness(t);
  const p = await pool(h, { Pool: '10.20.0.0/24', SubPool: '10.20.0.128/25' });
  const gw = await address(h, p.PoolID, '10.20.0.1', GW);
  t.same(gw.body, { Address: '10.20.0.1/24', Data: {} }, 'explicit gateway, CIDR with the pool prefix length');
  const dyn1 = await address(h, p.PoolID, '', { 'com.docker.network.endpoint.name': 'web' });
  const dyn2 = await address(h, p.PoolID);
  t.equal(dyn1.body.Address, '10.20.0.128/24', 'dynamic addresses come from the SubPool, lowest first');
  t.equal(dyn2.body.Address, '10.20.0.129/24');
  const aux = await address(h, p.PoolID, '10.20.0.2');
  t.same(aux.body, { Address: '10.20.0.2/24', Data: {} }, 'static inside the pool but outside the SubPool (aux address) is accepted');
  const outside = await address(h, p.PoolID, '10.21.0.5');
  t.equal(outside.status, 500);
  t.match(outside.body.Err, 'address 10.21.0.5 is not in pool 10.20.0.0/24');
  const taken = await address(h, p.PoolID, '10.20.0.128');
  t.equal(taken.status, 500);
  t.match(taken.body.Err, 'address 10.20.0.128 is already allocated in pool 10.20.0.0/24 (dynamic web)');
  const gwTaken = await address(h, p.PoolID, '10.20.0.1');
  t.match(gwTaken.body.Err, '(gateway)');
  const net = await address(h, p.PoolID, '10.20.0.0');
  t.equal(net.status, 500);
  t.match(net.body.Err, 'network address');
  const bcast = await address(h, p.PoolID, '10.20.0.255');
  t.equal(bcast.status, 500);
  t.match(bcast.body.Err, 'broadcast address');
  const notIp = await address(h, p.PoolID, '10.20.0.300');
  t.match(notIp.body.Err, '"10.20.0.300" is not a plain IP address');
  const cidr = await address(h, p.PoolID, '10.20.0.9/24');
  t.equal(cidr.status, 500, 'the request Address is a plain IP, not a CIDR');
  const v6 = await address(h, p.PoolID, 'fd00::1');
  t.match(v6.body.Err, 'not in pool', 'an address of the other family');
  t.same(Object.keys((await h.diskState()).pools[p.PoolID]!.allocations).sort(), ['10.20.0.1', '10.20.0.128', '10.20.0.129', '10.20.0.2']);
});

t.test('the gateway of a pool without SubPool is its first address', async (t) => {
  const h = await buildHarness(t);
  const p = await pool(h, {});
  t.same((await address(h, p.PoolID, '', GW)).body, { Address: '10.210.0.1/24', Data: {} });
  t.equal((await address(h, p.PoolID)).body.Address, '10.210.0.2/24');
  const disk = await h.diskState();
  t.equal(disk.pools[p.PoolID]!.allocations['10.210.0.1']!.kind, 'gateway');
  t.equal(disk.pools[p.PoolID]!.allocations['10.210.0.2']!.kind, 'dynamic');
});

t.test('a /30 runs out after two addresses with a clear error', async (t) => {
  const h = await buildHarness(t);
  const p = await pool(h, { Pool: '10.30.0.0/30' });
  t.equal((await address(h, p.PoolID)).body.Address, '10.30.0.1/30');
  t.equal((await address(h, p.PoolID)).body.Address, '10.30.0.2/30');
  const res = await address(h, p.PoolID);
  t.equal(res.status, 500);
  t.match(res.body.Err, 'no free address left in pool 10.30.0.0/30');
  const sub = await pool(h, { Pool: '10.31.0.0/24', SubPool: '10.31.0.8/31' });
  await address(h, sub.PoolID);
  await address(h, sub.PoolID);
  t.match((await address(h, sub.PoolID)).body.Err, 'no free address left in ip-range 10.31.0.8/31 of pool 10.31.0.0/24');
});

t.test('ReleaseAddress / ReleasePool are idempotent', async (t) => {
  const h = await buildHarness(t);
  const p = await pool(h, { Pool: '10.40.0.0/24' });
  t.equal((await address(h, p.PoolID)).body.Address, '10.40.0.1/24');
  t.equal((await address(h, p.PoolID)).body.Address, '10.40.0.2/24');
  for (let i = 0; i < 2; i++) {
    const r = await h.call('IpamDriver.ReleaseAddress', { PoolID: p.PoolID, Address: '10.40.0.1' });
    t.same([r.status, r.body], [200, {}], `ReleaseAddress #${i + 1}`);
  }
  t.same(Object.keys((await h.diskState()).pools[p.PoolID]!.allocations), ['10.40.0.2'], 'released on disk');
  t.equal((await address(h, p.PoolID)).body.Address, '10.40.0.1/24', 'and handed out again');
  const unknownAddr = await h.call('IpamDriver.ReleaseAddress', { PoolID: p.PoolID, Address: '10.40.0.77' });
  t.same([unknownAddr.status, unknownAddr.body], [200, {}], 'an address never allocated');
  const unknownPool = await h.call('IpamDriver.ReleaseAddress', { PoolID: 'tsnet-local/10.99.0.0/24', Address: '10.99.0.1' });
  t.same([unknownPool.status, unknownPool.body], [200, {}], 'an unknown pool');
  for (let i = 0; i < 2; i++) {
    const r = await h.call('IpamDriver.ReleasePool', { PoolID: p.PoolID });
    t.same([r.status, r.body], [200, {}], `ReleasePool #${i + 1}`);
  }
  const r = await h.call('IpamDriver.ReleasePool', { PoolID: 'tsnet-local/172.16.0.0/24' });
  t.same([r.status, r.body], [200, {}], 'an unknown pool');
  t.same((await h.diskState()).pools, {}, 'gone from disk');
  const after = await address(h, p.PoolID);
  t.equal(after.status, 500, 'a released pool hands out nothing');
  t.match(after.body.Err, 'no pool with PoolID');
  const again = await pool(h, { Pool: '10.40.0.0/24' });
  t.equal(again.PoolID, p.PoolID, 'the released range can be requested again');
  t.equal((await address(h, again.PoolID)).body.Address, '10.40.0.1/24', 'empty again');
});

t.test('500 concurrent RequestAddress on a /16: 500 distinct addresses, all on disk', async (t) => {
  const h = await buildHarness(t);
  const p = await pool(h, { Pool: '10.50.0.0/16' });
  const results = await Promise.all(Array.from({ length: 500 }, () => address(h, p.PoolID)));
  t.equal(results.filter((r) => r.status === 200).length, 500, 'all succeed');
  const got = results.map((r) => r.body.Address as string);
  t.equal(new Set(got).size, 500, 'all distinct');
  t.ok(got.every((a) => /^10\.50\.\d+\.\d+\/16$/.test(a)), 'all in the pool, with /16');
  const onDisk = Object.keys((await h.diskState()).pools[p.PoolID]!.allocations).sort();
  t.same(onDisk, got.map((a) => a.replace('/16', '')).sort(), 'the store file lists exactly those 500');
  t.ok(h.store.writes < 100, `group commit: ${h.store.writes} writes for 500 requests`);
});

t.test('concurrent dynamic RequestPool calls get distinct pools', async (t) => {
  const h = await buildHarness(t);
  const pools = await Promise.all(Array.from({ length: 20 }, () => pool(h, {})));
  t.equal(new Set(pools.map((p) => p.Pool)).size, 20);
  t.same(Object.keys((await h.diskState()).pools).length, 20);
});

t.test('a failed store write takes the allocation back', async (t) => {
  const h = await buildHarness(t);
  const p = await pool(h, { Pool: '10.60.0.0/24' });
  h.store.beforeRename = () => {
    throw new Error('EIO: i/o error');
  };
  const res = await address(h, p.PoolID);
  t.equal(res.status, 500);
  t.match(res.body.Err, 'EIO');
  const failedPool = await h.call('IpamDriver.RequestPool', { Pool: '10.61.0.0/24' });
  t.equal(failedPool.status, 500);
  h.store.beforeRename = undefined;
  t.equal((await address(h, p.PoolID)).body.Address, '10.60.0.1/24', 'the address was not kept');
  t.equal((await pool(h, { Pool: '10.61.0.0/24' })).Pool, '10.61.0.0/24', 'nor the pool');
});
