// Unit tier, one process for several small modules (each process costs
// a TypeScript start-up): steps, keyed-lock, errors.

import t from 'tap';
import { type Step, runSteps } from '../../src/driver/steps.js';
import { type ErrorCode, ErrorCodes, TsnetError, isTsnetError, quote, toDockerError } from '../../src/errors.js';
import { CommandError } from '../../src/kernel/exec.js';
import { KeyedLock } from '../../src/util/keyed-lock.js';
import { silentLogger } from '../helpers/fake-runner.js';

// src/driver/steps.ts: a named step list with undo in reverse on failure.
t.test('src/driver/steps.ts runSteps', async (t) => {
  const log = silentLogger();

  /** Steps that record what ran into `trace`; `fail` names a step whose do() throws. */
  function steps(trace: string[], names: string[], opts: { fail?: string; failUndo?: string; whenFalse?: string[]; noUndo?: string[] } = {}): Step[] {
    return names.map((name) => ({
      name,
      ...(opts.whenFalse?.includes(name) ? { when: false } : {}),
      async do() {
        trace.push(`do:${name}`);
        if (opts.fail === name) throw new Error(`boom in ${name}`);
      },
      ...(opts.noUndo?.includes(name)
        ? {}
        : {
            async undo() {
              trace.push(`undo:${name}`);
              if (opts.failUndo === name) throw new Error(`undo of ${name} failed`);
            },
          }),
    }));
  }

  t.test('steps run in order and nothing is undone on success', async (t) => {
    const trace: string[] = [];
    await runSteps(steps(trace, ['a', 'b', 'c']), log);
    t.same(trace, ['do:a', 'do:b', 'do:c']);
  });

  t.test('a failure undoes the completed steps in reverse and rethrows the original error', async (t) => {
    const trace: string[] = [];
    const boom = await runSteps(steps(trace, ['a', 'b', 'c', 'd'], { fail: 'c' }), log).then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(boom instanceof Error);
    t.equal((boom as Error).message, 'boom in c', 'the original error');
    t.same(trace, ['do:a', 'do:b', 'do:c', 'undo:b', 'undo:a'], 'the failed step is not undone; d never ran');
  });

  t.test('a failing undo does not hide the original error or stop other undos', async (t) => {
    const trace: string[] = [];
    await t.rejects(runSteps(steps(trace, ['a', 'b', 'c'], { fail: 'c', failUndo: 'b' }), log), { message: 'boom in c' });
    t.same(trace, ['do:a', 'do:b', 'do:c', 'undo:b', 'undo:a']);
  });

  t.test('steps without undo are skipped when undoing', async (t) => {
    const trace: string[] = [];
    await t.rejects(runSteps(steps(trace, ['a', 'b', 'c'], { fail: 'c', noUndo: ['b'] }), log));
    t.same(trace, ['do:a', 'do:b', 'do:c', 'undo:a']);
  });

  t.test('when: false skips a step (and its undo)', async (t) => {
    const trace: string[] = [];
    await t.rejects(runSteps(steps(trace, ['a', 'b', 'c'], { whenFalse: ['b'], fail: 'c' }), log));
    t.same(trace, ['do:a', 'do:c', 'undo:a']);
    const ok: string[] = [];
    await runSteps([{ name: 'x', when: true, do: async () => void ok.push('x') }], log);
    t.same(ok, ['x'], 'when: true runs');
  });

  t.test('the returned undo reverses everything later (e.g. a failed store write)', async (t) => {
    const trace: string[] = [];
    const undo = await runSteps(steps(trace, ['a', 'b', 'c'], { whenFalse: ['b'] }), log);
    await undo();
    t.same(trace, ['do:a', 'do:c', 'undo:c', 'undo:a']);
    await undo();
    t.same(trace, ['do:a', 'do:c', 'undo:c', 'undo:a'], 'a second call undoes nothing twice');
  });

  t.test('the returned undo reports undo failures as an AggregateError', async (t) => {
    const trace: string[] = [];
    const undo = await runSteps(steps(trace, ['a', 'b'], { failUndo: 'b' }), log);
    const err = await undo().then(
      () => undefined,
      (e: unknown) => e,
    );
    t.ok(err instanceof AggregateError);
    t.equal((err as AggregateError).errors.length, 1);
    t.same(trace, ['do:a', 'do:b', 'undo:b', 'undo:a'], 'still undid a');
  });

  t.test('TSNET_TEST_FAIL_AFTER_STEP injects a failure right after the named step', async (t) => {
    const saved = process.env.TSNET_TEST_FAIL_AFTER_STEP;
    t.teardown(() => {
      if (saved === undefined) delete process.env.TSNET_TEST_FAIL_AFTER_STEP;
      else process.env.TSNET_TEST_FAIL_AFTER_STEP = saved;
    });
    process.env.TSNET_TEST_FAIL_AFTER_STEP = 'b';
    const trace: string[] = [];
    await t.rejects(runSteps(steps(trace, ['a', 'b', 'c']), log), { message: 'injected failure after step b' });
    t.same(trace, ['do:a', 'do:b', 'undo:b', 'undo:a'], 'the named step completed and is undone too');

    process.env.TSNET_TEST_FAIL_AFTER_STEP = 'nope';
    const trace2: string[] = [];
    await runSteps(steps(trace2, ['a', 'b']), log);
    t.same(trace2, ['do:a', 'do:b'], 'an unknown step name injects nothing');

    process.env.TSNET_TEST_FAIL_AFTER_STEP = 'b';
    const trace3: string[] = [];
    await runSteps(steps(trace3, ['a', 'b'], { whenFalse: ['b'] }), log);
    t.same(trace3, ['do:a'], 'a skipped step does not trigger the injection');
  });
});

// src/util/keyed-lock.ts: per-key serialisation, parallel across keys.
t.test('src/util/keyed-lock.ts', async (t) => {
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
    let timer: NodeJS.Timeout | undefined;
    const deadline = new Promise<string>((r) => (timer = setTimeout(() => r('deadlock'), 5000)));
    const done = await Promise.race([Promise.all(jobs).then(() => 'done'), deadline]);
    clearTimeout(timer);
    t.equal(done, 'done');
    t.equal(tr.max, 1, 'every job shares key b, so none overlap');
    t.equal(lock.size, 0);
  });

  t.test('runAll excludes single-key holders of any of its keys', async (t) => {
    const lock = new KeyedLock();
    const tr = tracker();
    await Promise.all([lock.run('pool', tr.task('one', 10)), lock.runAll(['pools', 'pool'], tr.task('both', 10)), lock.run('pools', tr.task('other', 10))]);
    const i = tr.order.indexOf('start:both');
    t.equal(tr.order[i + 1], 'end:both', 'nothing starts or ends while "both" holds pool and pools');
    t.ok(tr.order.indexOf('end:one') < i, '"both" waited for the holder of pool');
    const parallel = tracker();
    await Promise.all([lock.runAll(['x', 'y'], parallel.task('xy', 10)), lock.runAll(['z'], parallel.task('z', 10))]);
    t.equal(parallel.max, 2, 'disjoint key sets run in parallel');
    t.equal(await lock.runAll([], async () => 'no keys'), 'no keys');
  });
});

// src/errors.ts: the error catalogue and the one mapping to Docker's reply.
t.test('src/errors.ts', async (t) => {
  const codes = Object.keys(ErrorCodes) as ErrorCode[];

  t.test('the catalogue', async (t) => {
    t.ok(codes.length >= 20, `${codes.length} codes`);
    for (const code of codes) {
      t.match(code, /^TSNET_ERR_[A-Z_]+$/, `${code} follows the naming scheme`);
      const msg = ErrorCodes[code];
      t.ok(typeof msg === 'string' && msg.length > 5, `${code} has a message`);
      const err = new TsnetError(code);
      t.equal(err.code, code);
      t.equal(err.message, msg, `${code}: default message`);
      t.equal(err.name, 'TsnetError');
      t.ok(err instanceof Error);
    }
    t.equal(new Set(Object.values(ErrorCodes)).size, codes.length, 'no two codes share a message');
    for (const needed of ['TSNET_ERR_NETWORK_NOT_FOUND', 'TSNET_ERR_POOL_EXHAUSTED', 'TSNET_ERR_CMD_FAILED', 'TSNET_ERR_STORE_CORRUPT', 'TSNET_ERR_INVALID_OPTION']) {
      t.ok(codes.includes(needed as ErrorCode), `${needed} exists`);
    }
  });

  t.test('TsnetError carries a custom message, cause and details', async (t) => {
    const cause = new Error('root');
    const err = new TsnetError('TSNET_ERR_STORE', 'could not write', { cause, details: { file: 'x' } });
    t.equal(err.message, 'could not write');
    t.equal(err.cause, cause);
    t.same(err.details, { file: 'x' });
    t.notOk('cause' in new TsnetError('TSNET_ERR_STORE'), 'no cause property when none given');
    t.ok(isTsnetError(err));
    t.ok(isTsnetError(err, 'TSNET_ERR_STORE'));
    t.notOk(isTsnetError(err, 'TSNET_ERR_INTERNAL'));
    t.notOk(isTsnetError(new Error('plain')));
    t.notOk(isTsnetError('TSNET_ERR_STORE'));
  });

  t.test('toDockerError: always HTTP 500 with {Err}', async (t) => {
    for (const code of codes) {
      const r = toDockerError(new TsnetError(code, `msg for ${code}`));
      t.same(r, { status: 500, body: { Err: `msg for ${code}` } }, code);
    }
    t.same(toDockerError(new Error('kaboom')), { status: 500, body: { Err: 'internal error: kaboom' } }, 'a plain Error');
    t.same(toDockerError(new TypeError('x is undefined')), { status: 500, body: { Err: 'internal error: x is undefined' } });
    t.same(toDockerError('a string'), { status: 500, body: { Err: 'internal error: a string' } }, 'a thrown string');
    t.same(toDockerError(undefined), { status: 500, body: { Err: 'internal error: undefined' } });
    const cmd = new CommandError('ip', ['link', 'add', 'name', 'tsbr-x', 'type', 'bridge'], 2, 'RTNETLINK answers: File exists\n');
    const r = toDockerError(cmd);
    t.equal(r.status, 500);
    t.equal(r.body.Err, 'ip link add name tsbr-x …: RTNETLINK answers: File exists', 'a command error names the command and its stderr');
  });

  t.test('quote() keeps user values short and unambiguous', async (t) => {
    t.equal(quote('abc'), '"abc"');
    t.equal(quote('a"b\nc'), '"a\\"b\\nc"', 'quotes and newlines are escaped');
    t.equal(quote(42), '42');
    t.equal(quote(null), 'null');
    t.equal(quote(undefined), 'undefined');
    t.equal(quote({ a: 1 }), '{"a":1}');
    const long = quote('x'.repeat(500));
    t.equal(long.length, 81, 'truncated to 80 characters plus an ellipsis');
    t.ok(long.endsWith('…'));
    const circular: Record<string, unknown> = {};
    circular.self = circular;
    t.equal(quote(circular), '[object Object]', 'never throws');
    t.equal(quote(10n), '10', 'bigint');
  });
});
