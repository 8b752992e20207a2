// src/driver/steps.ts: a named step list with undo in reverse on failure.
import t from 'tap';
import { runSteps, type Step } from '../../src/driver/steps.js';
import { silentLogger } from '../helpers/fake-runner.js';

const log = silentLogger();

/** Steps that record what ran into `trace`; `fail` names a step whose do() throws. */
function steps(trace: string[], names: string[], opts: { fail?: string; failUndo?: string; skip?: string[]; noUndo?: string[] } = {}): Step[] {
  return names.map((name) => ({
    name,
    ...(opts.skip?.includes(name) ? { when: false } : {}),
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
  await t.rejects(runSteps(steps(trace, ['a', 'b', 'c'], { skip: ['b'], fail: 'c' }), log));
  t.same(trace, ['do:a', 'do:c', 'undo:a']);
  const ok: string[] = [];
  await runSteps([{ name: 'x', when: true, do: async () => void ok.push('x') }], log);
  t.same(ok, ['x'], 'when: true runs');
});

t.test('the returned undo reverses everything later (e.g. a failed store write)', async (t) => {
  const trace: string[] = [];
  const undo = await runSteps(steps(trace, ['a', 'b', 'c'], { skip: ['b'] }), log);
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
  await runSteps(steps(trace3, ['a', 'b'], { skip: ['b'] }), log);
  t.same(trace3, ['do:a'], 'a skipped step does not trigger the injection');
});
