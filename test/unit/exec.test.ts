// src/kernel/exec.ts createRunner with real (harmless) programs: what a
// command prints, what it reads, how it fails. Nothing here touches the
// network: sh, cat, true and sleep only.
import t from 'tap';
import { CommandError, createRunner, isNotFound } from '../../src/kernel/exec.js';
import { silentLogger } from '../helpers/fake-runner.js';

const runner = createRunner(silentLogger());

t.test('stdout and stderr come back whole, stdin is fed, LC_ALL=C is set', async (t) => {
  const res = await runner.run('sh', ['-c', 'cat; echo "lc=$LC_ALL"; echo err >&2'], { input: 'line one\nline two\n' });
  t.equal(res.stdout, 'line one\nline two\nlc=C\n', 'final newline kept');
  t.equal(res.stderr, 'err\n');
});

t.test('large output is not truncated', async (t) => {
  const res = await runner.run('sh', ['-c', 'i=0; while [ $i -lt 20000 ]; do echo "0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789"; i=$((i+1)); done']);
  t.equal(res.stdout.length, 20000 * 101);
});

t.test('a non-zero exit is a CommandError carrying the exit code and stderr', async (t) => {
  const err = await runner.run('sh', ['-c', 'echo "Cannot find device \\"x\\"" >&2; exit 3']).catch((e: unknown) => e);
  t.ok(err instanceof CommandError);
  const e = err as CommandError;
  t.equal(e.exitCode, 3);
  t.equal(e.code, 'TSNET_ERR_CMD_FAILED');
  t.match(e.stderr, 'Cannot find device');
  t.ok(isNotFound(e), 'the not-found classifier reads its stderr');
  t.match(e.message, /^sh -c .*Cannot find device/);
});

t.test('a program that does not exist', async (t) => {
  const e = (await runner.run('tsnet-no-such-program', ['x']).catch((x: unknown) => x)) as CommandError;
  t.ok(e instanceof CommandError);
  t.equal(e.stderr, 'tsnet-no-such-program: command not found');
  t.equal(e.exitCode, undefined);
});

t.test('a program that ignores its stdin does not break the call', async (t) => {
  const res = await runner.run('true', [], { input: 'x'.repeat(1 << 20) });
  t.equal(res.stdout, '');
});

t.test('a program that runs past its timeout is killed and reported as timed out', async (t) => {
  const started = Date.now();
  const e = (await runner.run('sleep', ['5'], { timeoutMs: 200 }).catch((x: unknown) => x)) as CommandError;
  t.ok(e instanceof CommandError);
  t.equal(e.stderr, 'timed out');
  t.ok(Date.now() - started < 3000, 'did not wait for the program');
});
