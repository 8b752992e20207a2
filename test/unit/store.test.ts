// src/store/store.ts on a real temporary directory: atomic, group-committed,
// checksummed, locked.
import t, { type Test } from 'tap';
import { execFile } from 'node:child_process';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Store, decodeFile, encodeFile, encodeJournalLine } from '../../src/store/store.js';
import { emptyState, type PoolRecord, type State } from '../../src/store/schema.js';
import { TsnetError } from '../../src/errors.js';
import { keepAlive, silentLogger, tmpDir } from '../helpers/fake-runner.js';

// Subtests use their own directories; run them side by side so the lock
// test's wait (src retries a held lock for 3 s) overlaps the others.
t.jobs = 4;

function pool(cidr: string): PoolRecord {
  return {
    id: `tsnet-local/${cidr}`,
    addressSpace: 'tsnet-local',
    pool: cidr,
    v6: false,
    dynamic: false,
    options: {},
    allocations: {},
    createdAt: '2026-01-01T00:00:00.000Z',
  };
}

/** Open a store on dir and close it when the test ends. */
async function openStore(t: Test, dir: string, opts: { noSync?: boolean } = {}): Promise<{ store: Store; loaded: Awaited<ReturnType<Store['open']>> }> {
  const store = new Store({ dir, log: silentLogger(), ...opts });
  const loaded = await store.open();
  t.teardown(() => keepAlive(() => store.close()));
  return { store, loaded };
}

/**
 * Two generations on disk: pool A in the first, A and B in the second (in
 * state.json and its copy). `stale` is the copy as the first generation left
 * it, to put back where a test needs a copy older than state.json.
 */
async function twoGenerations(t: Test): Promise<string> {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const store = new Store({ dir, log: silentLogger() });
  await store.open();
  store.state.pools['tsnet-local/10.0.0.0/24'] = pool('10.0.0.0/24');
  await store.commit();
  await fs.copyFile(store.prevFile, path.join(dir, 'stale'));
  store.state.pools['tsnet-local/10.0.1.0/24'] = pool('10.0.1.0/24');
  await store.commit();
  await keepAlive(() => store.close());
  return dir;
}

const BOTH = ['tsnet-local/10.0.0.0/24', 'tsnet-local/10.0.1.0/24'];

t.test('a fresh directory opens empty', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'nested', 'state');
  const { store, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'empty');
  t.same(loaded.problems, []);
  t.same(store.state, emptyState());
  t.equal(store.generation, 0);
  t.equal((await fs.stat(dir)).mode & 0o777, 0o700, 'state directory is 0700');
});

t.test('commit, close, reopen: round trip', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const a = new Store({ dir, log: silentLogger() });
  await a.open();
  a.state.pools['tsnet-local/10.0.0.0/24'] = pool('10.0.0.0/24');
  a.state.pools['tsnet-local/10.0.0.0/24'].allocations['10.0.0.1'] = { kind: 'gateway', at: 'now' };
  await a.commit();
  t.equal(a.generation, 1);
  t.equal(a.writes, 1);
  const expected = structuredClone(a.state);
  await keepAlive(() => a.close());

  const { store: b, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'current');
  t.equal(loaded.generation, 1);
  t.same(b.state, expected);
  t.equal(((await fs.stat(b.file)).mode & 0o777).toString(8), '600', 'state.json is 0600');
  await b.commit();
  t.equal(b.generation, 2, 'generation keeps counting across restarts');
  t.equal(((await fs.stat(b.prevFile)).mode & 0o777).toString(8), '600', 'state.prev.json is 0600');
});

t.test('a commit after close is refused', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const s = new Store({ dir, log: silentLogger() });
  await s.open();
  await keepAlive(() => s.close());
  await t.rejects(s.commit(), { code: 'TSNET_ERR_STORE' });
});

t.test('group commit: 200 concurrent commits share a few writes', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const { store } = await openStore(t, dir);
  const all: Array<Promise<void>> = [];
  for (let i = 0; i < 200; i++) {
    store.state.pools[`tsnet-local/10.1.${i}.0/24`] = pool(`10.1.${i}.0/24`);
    all.push(store.commit());
  }
  const results = await Promise.allSettled(all);
  t.equal(results.filter((r) => r.status === 'fulfilled').length, 200, 'every commit resolves');
  t.ok(store.writes >= 1 && store.writes <= 5, `writes (${store.writes}) far below 200`);
  const disk = decodeFile(await fs.readFile(store.file, 'utf8'));
  t.not(typeof disk, 'string');
  if (typeof disk !== 'string') t.equal(Object.keys(disk.state.pools).length, 200, 'the last write holds every change');
});

t.test('a commit made during a write is durable when it resolves', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const { store } = await openStore(t, dir);
  store.state.pools['tsnet-local/10.0.0.0/24'] = pool('10.0.0.0/24');
  const first = store.commit();
  store.state.pools['tsnet-local/10.0.1.0/24'] = pool('10.0.1.0/24');
  const second = store.commit();
  await Promise.all([first, second]);
  const disk = decodeFile(await fs.readFile(store.file, 'utf8'));
  if (typeof disk === 'string') return t.fail(disk);
  t.same(Object.keys(disk.state.pools).sort(), ['tsnet-local/10.0.0.0/24', 'tsnet-local/10.0.1.0/24']);
});

t.test('a failed write rejects its commit and leaves the old file', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const { store } = await openStore(t, dir);
  store.state.pools['tsnet-local/10.0.0.0/24'] = pool('10.0.0.0/24');
  await store.commit();
  const before = await fs.readFile(store.file, 'utf8');
  store.beforeRename = () => {
    throw new Error('disk full');
  };
  store.state.pools['tsnet-local/10.0.1.0/24'] = pool('10.0.1.0/24');
  await t.rejects(store.commit(), { code: 'TSNET_ERR_STORE', message: /disk full/ });
  t.equal(await fs.readFile(store.file, 'utf8'), before, 'state.json untouched');
  store.beforeRename = undefined;
  await store.commit();
  t.equal(store.writes, 2, 'the store keeps working after a failed write');
});

t.test('truncated state.json: rebuilt whole from its copy, set aside, reported', async (t) => {
  const dir = await twoGenerations(t);
  const file = path.join(dir, 'state.json');
  const text = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, text.slice(0, Math.floor(text.length / 2)));
  const { store, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'recovered', 'the copy has the same generation: nothing lost');
  t.equal(loaded.generation, 2);
  t.same(Object.keys(store.state.pools).sort(), BOTH, 'every change');
  t.equal(loaded.problems.length, 1);
  t.match(loaded.problems[0], 'state.json');
  t.match(loaded.problems[0], /not valid JSON|truncated/);
  t.equal(await fs.readFile(`${file}.bad`, 'utf8'), text.slice(0, Math.floor(text.length / 2)), 'the damaged file is kept for an operator');
  const disk = decodeFile(await fs.readFile(file, 'utf8'));
  if (typeof disk === 'string') return t.fail(disk);
  t.same(Object.keys(disk.state.pools).sort(), BOTH, 'a good state.json is written at once');
});

t.test('a flipped byte inside the state fails the checksum', async (t) => {
  const dir = await twoGenerations(t);
  const file = path.join(dir, 'state.json');
  const text = await fs.readFile(file, 'utf8');
  // Still valid JSON, still fits the schema: only the checksum can tell.
  const damaged = text.replace('10.0.1.0/24","addressSpace"', '10.0.9.0/24","addressSpace"');
  t.not(damaged, text, 'test bug: the byte was not flipped');
  await fs.writeFile(file, damaged);
  const { store, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'recovered');
  t.match(loaded.problems.join('\n'), 'checksum mismatch');
  t.same(Object.keys(store.state.pools).sort(), BOTH);
});

t.test('a copy older than the damaged state.json: loaded, but reported as possibly lacking changes', async (t) => {
  const dir = await twoGenerations(t);
  await fs.rename(path.join(dir, 'stale'), path.join(dir, 'state.prev.json'));
  const file = path.join(dir, 'state.json');
  await fs.writeFile(file, (await fs.readFile(file, 'utf8')).replace('10.0.1.0/24","addressSpace"', '10.0.9.0/24","addressSpace"'));
  const { store, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'previous', 'callers pause allocation');
  t.equal(loaded.generation, 1);
  t.same(Object.keys(store.state.pools), ['tsnet-local/10.0.0.0/24'], 'the older generation');
  t.match(loaded.problems.join('\n'), /the lost state\.json had generation 2, .*state\.prev\.json only 1/);
});

t.test('missing state.json with a good copy: whether it holds everything is unknown', async (t) => {
  const dir = await twoGenerations(t);
  await fs.rm(path.join(dir, 'state.json'));
  const { store, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'previous');
  t.match(loaded.problems.join('\n'), 'missing');
  t.match(loaded.problems.join('\n'), /cannot be read/);
  t.same(Object.keys(store.state.pools).sort(), BOTH, 'what the copy holds');
});

t.test('a write that fails between the copy and state.json: nothing acknowledged is lost, the next write is a whole one', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const { store } = await openStore(t, dir);
  store.state.pools['tsnet-local/10.0.0.0/24'] = pool('10.0.0.0/24');
  await store.commit();
  store.beforeSecondRename = () => {
    throw new Error('disk full');
  };
  store.state.pools['tsnet-local/10.0.1.0/24'] = pool('10.0.1.0/24');
  await t.rejects(store.commit(), { message: /disk full/ });
  store.beforeSecondRename = undefined;
  const appends = store.appends;
  store.state.pools['tsnet-local/10.0.2.0/24'] = pool('10.0.2.0/24');
  await store.commit([['pools', 'tsnet-local/10.0.2.0/24']]);
  t.equal(store.appends, appends, 'not appended: a line would reuse the generation the copy took');
  const expected = structuredClone(store.state);
  await keepAlive(() => store.close());
  const file = path.join(dir, 'state.json');
  await fs.writeFile(file, (await fs.readFile(file, 'utf8')).slice(0, 60));
  const s2 = new Store({ dir, log: silentLogger() });
  const loaded = await s2.open();
  t.teardown(() => keepAlive(() => s2.close()));
  t.equal(loaded.source, 'recovered');
  t.same(s2.state, expected);
});

t.test('both copies damaged: refuse to start, say what to do', async (t) => {
  const dir = await twoGenerations(t);
  await fs.writeFile(path.join(dir, 'state.json'), '{"schemaVersion":1');
  await fs.writeFile(path.join(dir, 'state.prev.json'), 'garbage');
  const s = new Store({ dir, log: silentLogger() });
  // (keepAlive: the failed open() releases the lock the same way close() does)
  const err = await keepAlive(() => s.open()).then(
    () => undefined,
    (e: unknown) => e,
  );
  t.teardown(() => keepAlive(() => s.close()));
  t.ok(err instanceof TsnetError);
  t.equal((err as TsnetError).code, 'TSNET_ERR_STORE_CORRUPT');
  const msg = (err as Error).message;
  t.match(msg, 'state.json');
  t.match(msg, 'state.prev.json');
  t.match(msg, /restore a backup/);
  t.match(msg, /move the directory aside/);
  // The failed open released the lock: a corrected directory opens.
  await fs.rm(path.join(dir, 'state.json'));
  await fs.rm(path.join(dir, 'state.prev.json'));
  const { loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'empty');
});

t.test('a file from a newer tsnet, or of the wrong shape, is not trusted', async (t) => {
  const good = encodeFile(emptyState(), 3);
  t.same(decodeFile(good), { state: emptyState(), generation: 3 });
  t.match(decodeFile(good.replace(/"schemaVersion":\d+/, '"schemaVersion":9')) as string, 'newer tsnet');
  t.match(decodeFile('{"a":1}') as string, 'not a tsnet state file');
  const wrongShape = { networks: {}, endpoints: {}, pools: { x: { id: 1 } } } as unknown as State;
  t.match(decodeFile(encodeFile(wrongShape, 1)) as string, 'does not fit the schema');
});

t.test('a schema 1 store (cluster addressing inside the overlay record) loads migrated, its journal too', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  await fs.mkdir(dir, { recursive: true });
  const id = (c: string): string => c.repeat(64);
  const overlayNet = (netId: string, subnet: string): Record<string, unknown> => ({
    id: netId, mode: 'overlay', bridge: `tsbr-${netId.slice(0, 10)}`, createdBridge: true, ipv4: [{ pool: subnet, gateway: subnet.replace('0/24', '1/24'), aux: {} }], ipv6: [],
    internal: false, mtu: 1450, masquerade: true, icc: true, gatewayMode: 'nat', hostBindingIpv4: '0.0.0.0', inhibitIpv4: false, ifacePrefix: 'eth', trustedHostInterfaces: [], options: {}, createdAt: '',
    overlay: { mode: 'cluster', vni: 5000, vxlan: `tsvx-${netId.slice(0, 10)}`, subnet, poolId: `tsnet-local/${subnet}`, range: subnet, peers: [], local: '10.99.0.11', underlay: 'eth0', blocks: [subnet.replace('/24', '_30')], claims: [] },
  });
  const old = { ...pool('10.200.0.0/24'), overlayNetwork: id('a') } as unknown as PoolRecord;
  const v1 = { networks: { [id('a')]: overlayNet(id('a'), '10.200.0.0/24') }, endpoints: {}, pools: { [old.id]: old } } as unknown as State;
  const file = encodeFile(v1, 1).replace(/"schemaVersion":\d+/, '"schemaVersion":1');
  await fs.writeFile(path.join(dir, 'state.json'), file);
  await fs.writeFile(path.join(dir, 'state.prev.json'), file);
  // A journal line of the old tsnet: a whole old-shaped network record.
  const later = { ...v1, networks: { ...v1.networks, [id('b')]: overlayNet(id('b'), '10.201.0.0/24') } } as unknown as State;
  await fs.writeFile(path.join(dir, 'state.journal'), encodeJournalLine(later, 2, [['networks', id('b')]]));
  const { store, loaded } = await openStore(t, dir);
  t.equal(loaded.source, 'current', 'loaded as it is, nothing reported damaged');
  const a = store.state.networks[id('a')]!;
  t.same(a.cluster, { subnet: '10.200.0.0/24', pools: [{ poolId: 'tsnet-local/10.200.0.0/24', range: '10.200.0.0/24', blocks: ['10.200.0.0_30'], claims: [] }] });
  t.notOk('blocks' in a.overlay!, 'the overlay record keeps only the VXLAN settings');
  t.equal(store.state.networks[id('b')]?.cluster?.subnet, '10.201.0.0/24', 'the journal line is migrated too');
  t.same(store.state.pools[old.id]!.clusterNetwork, id('a'));
  t.notOk('overlayNetwork' in store.state.pools[old.id]!);
  t.match(await fs.readFile(path.join(dir, 'state.json'), 'utf8'), /^\{"schemaVersion":2,/, 'written back in the new layout');
});

t.test('a second open of a locked directory fails until the first closes', async (t) => {
  const dir = path.join(await tmpDir(t, 'store'), 'state');
  const first = new Store({ dir, log: silentLogger() });
  await first.open();
  let firstOpen = true;
  t.teardown(async () => {
    if (firstOpen) await keepAlive(() => first.close());
  });
  const second = new Store({ dir, log: silentLogger() });
  const err = await second.open().then(
    () => undefined,
    (e: unknown) => e,
  );
  t.ok(err instanceof TsnetError, 'second open rejected');
  t.equal((err as TsnetError).code, 'TSNET_ERR_STORE');
  t.match((err as Error).message, 'locked');
  t.match((err as Error).message, 'TSNET_STATE_DIR', 'and says how to avoid it');
  await keepAlive(() => first.close());
  firstOpen = false;
  const third = new Store({ dir, log: silentLogger() });
  const loaded = await third.open();
  t.teardown(() => keepAlive(() => third.close()));
  t.equal(loaded.source, 'empty', 'opens once the first store closed');
});

t.test('close() settles even when nothing else keeps the process alive', async (t) => {
  // Store.close() waits for the flock child, which lock.ts unref()s. If the
  // event loop has nothing else to do (main.ts's stop() after app.close()),
  // Node exits before close() resolves: main never logs "stopped" nor
  // flushes its async pino destination. Run it in a bare child process.
  const dir = await tmpDir(t, 'store');
  const script = path.join(dir, 'close.mjs');
  await fs.writeFile(
    script,
    [
      'const { Store } = await import(process.argv[2]);',
      'const log = { child: () => log, error() {}, warn() {}, info() {}, debug() {}, trace() {} };',
      'const s = new Store({ dir: process.argv[3], log, noSync: true });',
      'await s.open();',
      'await s.close();',
      "console.log('closed');",
    ].join('\n'),
  );
  const storeTs = new URL('../../src/store/store.ts', import.meta.url).pathname;
  const loader = process.execArgv.filter((a) => a.includes('@tapjs/typescript'));
  const res = await new Promise<{ code: number | null; stdout: string }>((resolve) => {
    const child = execFile(process.execPath, [...loader, script, storeTs, path.join(dir, 'state')], { timeout: 15_000 }, (_err, stdout) =>
      resolve({ code: child.exitCode, stdout: String(stdout) }),
    );
  });
  t.equal(res.stdout.trim(), 'closed', `close() resolved before the process ended (exit code ${res.code})`);
});
