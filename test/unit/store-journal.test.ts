// The store's journal (src/store/store.ts): commits that name the records
// they changed append one checksummed line instead of rewriting state.json,
// and a reopened store sees exactly what a full rewrite would have given.
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Store, decodeFile, replayJournal } from '../../src/store/store.js';
import type { EndpointRecord, PoolRecord } from '../../src/store/schema.js';
import { dockerId, keepAlive, silentLogger, tmpDir } from '../helpers/fake-runner.js';

t.jobs = 4;

const POOL = 'tsnet-local/10.0.0.0/24';

function pool(): PoolRecord {
  return { id: POOL, addressSpace: 'tsnet-local', pool: '10.0.0.0/24', v6: false, dynamic: false, options: {}, allocations: {}, createdAt: '2026-01-01T00:00:00.000Z' };
}

function endpoint(id: string, netId: string, address: string): EndpointRecord {
  return {
    id,
    networkId: netId,
    hostVeth: `tsv${id.slice(0, 11)}`,
    peerVeth: `tsc${id.slice(0, 11)}`,
    mac: '02:42:ac:11:00:02',
    macAssigned: true,
    address,
    ports: [],
    createdAt: '2026-01-01T00:00:00.000Z',
  };
}

async function fresh(t: Test, opts: { journalMinBytes?: number } = {}): Promise<{ dir: string; store: Store }> {
  const dir = path.join(await tmpDir(t, 'journal'), 'state');
  const store = new Store({ dir, log: silentLogger(), ...opts });
  await store.open();
  store.state.pools[POOL] = pool();
  await store.commit();
  return { dir, store };
}

async function reopen(t: Test, dir: string): Promise<{ store: Store; loaded: Awaited<ReturnType<Store['open']>> }> {
  const store = new Store({ dir, log: silentLogger() });
  const loaded = await store.open();
  t.teardown(() => keepAlive(() => store.close()));
  return { store, loaded };
}

t.test('named commits append to the journal and survive a reopen, sets and deletes alike', async (t) => {
  const { dir, store } = await fresh(t);
  const fileBefore = await fs.readFile(store.file, 'utf8');
  const net = dockerId();
  const a = dockerId();
  const b = dockerId();
  store.state.pools[POOL]!.allocations['10.0.0.2'] = { kind: 'dynamic', at: 'x' };
  store.state.endpoints[a] = endpoint(a, net, '10.0.0.2/24');
  await store.commit([['pools', POOL, 'allocations', '10.0.0.2'], ['endpoints', a]]);
  store.state.pools[POOL]!.allocations['10.0.0.3'] = { kind: 'dynamic', at: 'y' };
  store.state.endpoints[b] = endpoint(b, net, '10.0.0.3/24');
  await store.commit([['pools', POOL, 'allocations', '10.0.0.3'], ['endpoints', b]]);
  store.state.endpoints[a]!.sandboxKey = '/var/run/docker/netns/abc';
  store.commitLazy([['endpoints', a]]);
  delete store.state.endpoints[b];
  delete store.state.pools[POOL]!.allocations['10.0.0.3'];
  await store.commit([['endpoints', b], ['pools', POOL, 'allocations', '10.0.0.3']]);
  t.equal(store.appends, store.writes - 1, 'every named commit was an append');
  t.equal(await fs.readFile(store.file, 'utf8'), fileBefore, 'state.json not rewritten');
  t.ok((await fs.stat(store.journalFile)).size > 0, 'journal written');
  const expected = structuredClone(store.state);
  const generation = store.generation;
  await keepAlive(() => store.close());

  const { store: again, loaded } = await reopen(t, dir);
  t.equal(loaded.source, 'current');
  t.equal(loaded.generation, generation, 'generation of the last journal line');
  t.same(again.state, expected, 'state as it was in memory');
  t.equal((await fs.stat(again.journalFile)).size, 0, 'open folds the journal into state.json');
  const disk = decodeFile(await fs.readFile(again.file, 'utf8'));
  if (typeof disk === 'string') return t.fail(disk);
  t.same(disk.state, expected);
  t.equal(disk.generation, generation + 1);
});

t.test('a commit without paths in a batch writes the whole state and empties the journal', async (t) => {
  const { store } = await fresh(t);
  t.teardown(() => keepAlive(() => store.close()));
  const a = dockerId();
  store.state.endpoints[a] = endpoint(a, dockerId(), '10.0.0.2/24');
  await store.commit([['endpoints', a]]);
  t.ok((await fs.stat(store.journalFile)).size > 0);
  const writes = store.writes;
  const both = [store.commit([['endpoints', a]]), store.commit()];
  await Promise.all(both);
  t.equal((await fs.stat(store.journalFile)).size, 0, 'journal emptied');
  t.ok(store.writes > writes);
  const disk = decodeFile(await fs.readFile(store.file, 'utf8'));
  if (typeof disk === 'string') return t.fail(disk);
  t.ok(disk.state.endpoints[a], 'state.json holds the journalled endpoint');
});

t.test('the journal is folded into state.json once it outweighs it', async (t) => {
  const { dir, store } = await fresh(t, { journalMinBytes: 2000 });
  const net = dockerId();
  const ids: string[] = [];
  for (let i = 0; i < 40; i++) {
    const id = dockerId();
    ids.push(id);
    store.state.endpoints[id] = endpoint(id, net, `10.0.0.${i + 2}/24`);
    await store.commit([['endpoints', id]]);
    const bound = Math.max(2000, (await fs.stat(store.file)).size) + 1000;
    t.ok((await fs.stat(store.journalFile)).size < bound, 'journal stays within what state.json weighs');
  }
  t.ok(store.writes - store.appends > 1, 'some commits rewrote state.json');
  const expected = structuredClone(store.state);
  await keepAlive(() => store.close());
  const { store: again } = await reopen(t, dir);
  t.same(again.state, expected);
  t.equal(Object.keys(again.state.endpoints).length, 40);
});

/** A closed store whose last change, one endpoint, is only in the journal. */
async function oneJournalled(t: Test): Promise<{ dir: string; expected: unknown; generation: number }> {
  const { dir, store } = await fresh(t);
  const a = dockerId();
  store.state.endpoints[a] = endpoint(a, dockerId(), '10.0.0.2/24');
  await store.commit([['endpoints', a]]);
  const expected = structuredClone(store.state);
  const generation = store.generation;
  await keepAlive(() => store.close());
  return { dir, expected, generation };
}

t.test('a torn last line is a write that never finished: ignored, the rest applies', async (t) => {
  const { dir, expected, generation } = await oneJournalled(t);
  await fs.appendFile(path.join(dir, 'state.journal'), '{"g":99,"c":"abc","ops":[[["endpoints","x"');
  const { store: again, loaded } = await reopen(t, dir);
  t.equal(loaded.source, 'current', 'not a damage: nothing acknowledged was lost');
  t.equal(loaded.generation, generation);
  t.same(again.state, expected);
  const b = dockerId();
  again.state.endpoints[b] = endpoint(b, dockerId(), '10.0.0.3/24');
  await again.commit([['endpoints', b]]);
  const text = await fs.readFile(again.journalFile, 'utf8');
  t.equal(text.split('\n').length, 2, 'the journal restarted clean: one line');
});

t.test('a damaged line before the end: stop there, report it like a fallback copy', async (t) => {
  const { dir, store } = await fresh(t);
  const a = dockerId();
  const b = dockerId();
  store.state.endpoints[a] = endpoint(a, dockerId(), '10.0.0.2/24');
  await store.commit([['endpoints', a]]);
  store.state.endpoints[b] = endpoint(b, dockerId(), '10.0.0.3/24');
  await store.commit([['endpoints', b]]);
  await keepAlive(() => store.close());
  const jf = path.join(dir, 'state.journal');
  const lines = (await fs.readFile(jf, 'utf8')).split('\n');
  lines[0] = lines[0]!.replace('10.0.0.2', '10.0.0.9');
  await fs.writeFile(jf, lines.join('\n'));
  const { store: again, loaded } = await reopen(t, dir);
  t.equal(loaded.source, 'previous', 'callers pause allocation');
  t.match(loaded.problems.join(' '), /state\.journal: line 1: checksum mismatch/);
  t.same(Object.keys(again.state.endpoints), [], 'nothing after the damage is trusted');
  t.ok(await fs.stat(`${jf}.bad`), 'the damaged journal is kept for an operator');
});

t.test('a damaged state.json is rebuilt from its copy and the journal that follows it', async (t) => {
  const { dir, expected, generation } = await oneJournalled(t);
  await fs.writeFile(path.join(dir, 'state.json'), '');
  const { store: again, loaded } = await reopen(t, dir);
  t.equal(loaded.source, 'recovered', 'the journal\'s first line dates the lost file: the copy is as new');
  t.equal(loaded.generation, generation);
  t.same(again.state, expected, 'the journalled endpoint too');
  t.equal((await fs.stat(again.journalFile)).size, 0, 'folded into the new state.json');
});

t.test('lines already in state.json (a crash before the journal was emptied) are skipped', async (t) => {
  const { dir, store } = await fresh(t);
  const a = dockerId();
  store.state.endpoints[a] = endpoint(a, dockerId(), '10.0.0.2/24');
  await store.commit([['endpoints', a]]);
  const journal = await fs.readFile(store.journalFile, 'utf8');
  delete store.state.endpoints[a];
  await store.commit();
  await keepAlive(() => store.close());
  await fs.writeFile(path.join(dir, 'state.journal'), journal);
  const { store: again, loaded } = await reopen(t, dir);
  t.equal(loaded.source, 'current');
  t.same(again.state.endpoints, {}, 'the old line did not resurrect the endpoint');
});

t.test('replayJournal refuses paths that lead nowhere or at the prototype', async (t) => {
  const base = () => ({ networks: {}, endpoints: {}, pools: {} });
  const line = (g: number, ops: unknown): string => {
    const opsJson = JSON.stringify(ops);
    return `{"g":${g},"c":"${require_sha(opsJson)}","ops":${opsJson}}\n`;
  };
  const { createHash } = await import('node:crypto');
  const require_sha = (s: string): string => createHash('sha256').update(s).digest('hex');
  const bad = replayJournal(base(), 0, line(1, [[['pools', 'nope', 'allocations', 'x'], {}]]) + line(2, []));
  t.match(bad.damage, /leads nowhere/);
  const proto = replayJournal(base(), 0, line(1, [[['__proto__', 'polluted'], 1]]) + line(2, []));
  t.match(proto.damage, /malformed path/);
  t.equal(({} as Record<string, unknown>).polluted, undefined);
  const gap = replayJournal(base(), 0, line(2, []) + line(3, []));
  t.match(gap.damage, /does not follow/);
});

t.test('an append that fails after writing leaves no partial line in front of the next ones', async (t) => {
  const { dir, store } = await fresh(t);
  const a = dockerId();
  const b = dockerId();
  store.state.endpoints[a] = endpoint(a, dockerId(), '10.0.0.2/24');
  await store.commit([['endpoints', a]]);
  const size = (await fs.stat(store.journalFile)).size;
  store.afterJournalWrite = () => {
    throw new Error('EIO: i/o error');
  };
  store.state.endpoints[b] = endpoint(b, dockerId(), '10.0.0.3/24');
  await t.rejects(store.commit([['endpoints', b]]), { code: 'TSNET_ERR_STORE', message: /EIO/ });
  t.equal((await fs.stat(store.journalFile)).size, size, 'journal cut back to before the failed line');
  store.afterJournalWrite = undefined;
  delete store.state.endpoints[b];
  const c = dockerId();
  store.state.endpoints[c] = endpoint(c, dockerId(), '10.0.0.4/24');
  await store.commit([['endpoints', c]]);
  await keepAlive(() => store.close());
  const { store: again, loaded } = await reopen(t, dir);
  t.equal(loaded.source, 'current', 'no damage seen');
  t.same(Object.keys(again.state.endpoints).sort(), [a, c].sort(), 'the failed change is not there, the later one is');
});
