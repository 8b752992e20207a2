// src/util/keyed-lock.ts: per-key serialisation, parallel across keys.
import t from 'tap';
import { KeyedLock } from '../../src/util/keyed-lock.js';

const tick = (ms = 5): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** A task that records how many tasks under the lock overlap it. */
function tracker() {
  let active = 0;
  let maxActive = 0;
  const order: string[] = [];
  return {
    order,
    get max() {
      return maxActive;
    },
    task: (name: string, ms = 5) => async () => {
      active++;
      maxActive = Math.max(maxActive, active);
      order.push(`start:${name}`);
      await tick(ms);
      order.push(`end:${name}`);
      active--;
      return name;
    },
  };
}

t.test('the same key is serialised in arrival order', async (t) => {
  const lock = new KeyedLock();
  const tr = tracker();
  const results = await Promise.all(['a', 'b', 'c', 'd'].map((n) => lock.run('k', tr.task(n))));
  t.same(results, ['a', 'b', 'c', 'd']);
  t.equal(tr.max, 1, 'never two at once');
  t.same(tr.order, ['start:a', 'end:a', 'start:b', 'end:b', 'start:c', 'end:c', 'start:d', 'end:d']);
  t.equal(lock.size, 0, 'no entries left behind');
});

t.test('different keys run in parallel', async (t) => {
  const lock = new KeyedLock();
  const tr = tracker();
  await Promise.all(['k1', 'k2', 'k3'].map((k) => lock.run(k, tr.task(k, 20))));
  t.equal(tr.max, 3);
});

t.test('a failing task releases the key and its error reaches the caller', async (t) => {
  const lock = new KeyedLock();
  const first = lock.run('k', async () => {
    await tick();
    throw new Error('first failed');
  });
  const second = lock.run('k', async () => 'second ran');
  await t.rejects(first, { message: 'first failed' });
  t.equal(await second, 'second ran');
  t.equal(lock.size, 0);
});

t.test('runAll takes keys in sorted order: opposite orders never deadlock', async (t) => {
  const lock = new KeyedLock();
  const tr = tracker();
  const jobs: Array<Promise<string>> = [];
  for (let i = 0; i < 20; i++) {
    jobs.push(lock.runAll(i % 2 ? ['a', 'b'] : ['b', 'a'], tr.task(`ab${i}`, 1)));
    jobs.push(lock.runAll(['b', 'c', 'b'], tr.task(`bc${i}`, 1)));
  }
  const done = await Promise.race([Promise.all(jobs).then(() => 'done'), tick(5000).then(() => 'deadlock')]);
  t.equal(done, 'done');
  t.equal(tr.max, 1, 'every job shares key b, so none overlap');
  t.equal(lock.size, 0);
});

t.test('runAll excludes single-key holders of any of its keys', async (t) => {
  const lock = new KeyedLock();
  const tr = tracker();
  await Promise.all([lock.run('pool', tr.task('one', 10)), lock.runAll(['pools', 'pool'], tr.task('both', 10)), lock.run('pools', tr.task('other', 10))]);
  t.equal(tr.max, 1);
  const parallel = tracker();
  await Promise.all([lock.runAll(['x', 'y'], parallel.task('xy', 10)), lock.runAll(['z'], parallel.task('z', 10))]);
  t.equal(parallel.max, 2, 'disjoint key sets run in parallel');
  t.equal(await lock.runAll([], async () => 'no keys'), 'no keys');
});
