// src/kernel/exec.ts createRunner with real (harmless) programs: what a
// command prints, what it reads, how it fails. Nothing here touches the
// network: sh, cat, true and sleep only.
import t from 'tap';
import { CommandError, createRunner, isExists, isNotFound } from '../../src/kernel/exec.js';
import { silentLogger, tmpDir } from '../helpers/fake-runner.js';

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

// Warm spares: `ip -batch -` and the other stdin-fed programs are started
// ahead of the request. A stand-in `ip` first on PATH keeps this off the
// network: it echoes its stdin, fails on "fail", hangs on "hang".
t.test('stdin-fed programs run from a warm spare with the same results and errors', async (t) => {
  const { promises: fs } = await import('node:fs');
  const { pino } = await import('pino');
  const { Writable } = await import('node:stream');
  const { execFileSync } = await import('node:child_process');
  const dir = await tmpDir(t, 'warm');
  await fs.writeFile(
    `${dir}/ip`,
    '#!/bin/sh\ninput=$(cat)\ncase "$input" in *fail*) echo "RTNETLINK answers: File exists" >&2; echo "Command failed -:1" >&2; exit 1;; *hang*) exec sleep 5;; esac\nprintf "%s|%s" "$*" "$input"\n',
    { mode: 0o755 },
  );
  const savedPath = process.env.PATH;
  process.env.PATH = `${dir}:${savedPath ?? ''}`;
  t.teardown(() => void (process.env.PATH = savedPath));
  const lines: Array<{ warm?: boolean; msg?: string }> = [];
  const sink = new Writable({ write: (chunk: Buffer, _enc, cb) => (lines.push(JSON.parse(String(chunk))), cb()) });
  const warmRunner = createRunner(pino({ level: 'debug' }, sink));
  t.teardown(() => warmRunner.close?.());
  const tick = (): Promise<void> => new Promise((r) => setTimeout(r, 100));
  const lastWarm = (): boolean | undefined => lines.filter((l) => l.msg === 'exec' || l.msg === 'exec failed').at(-1)?.warm;

  t.equal((await warmRunner.run('ip', ['-batch', '-'], { input: 'one' })).stdout, '-batch -|one');
  t.equal(lastWarm(), false, 'the first call starts its own process');
  await tick();
  t.equal((await warmRunner.run('ip', ['-batch', '-'], { input: 'two' })).stdout, '-batch -|two', 'the spare read this request');
  t.equal(lastWarm(), true, 'the second call found a spare waiting');
  await tick();
  const e = (await warmRunner.run('ip', ['-batch', '-'], { input: 'fail' }).catch((x: unknown) => x)) as CommandError;
  t.ok(isExists(e), 'a failure through a spare is the same CommandError');
  t.match(e.message, /File exists/);
  await tick();
  const hung = (await warmRunner.run('ip', ['-batch', '-'], { input: 'hang', timeoutMs: 200 }).catch((x: unknown) => x)) as CommandError;
  t.equal(hung.stderr, 'timed out', 'the timeout counts from the request, not from the spare start');
  await tick();
  // A spare that died while idle (killed by an operator, say) is skipped.
  execFileSync('pkill', ['-KILL', '-P', String(process.pid), '-f', `sh ${dir}/ip`]);
  await tick();
  t.equal((await warmRunner.run('ip', ['-batch', '-'], { input: 'three' })).stdout, '-batch -|three');
  t.equal(lastWarm(), false, 'the dead spare was not used');
  t.equal((await warmRunner.run('ip', ['-json', 'link', 'show'])).stdout, '-json link show|', 'other command lines never use spares');
  t.equal(lastWarm(), false);
  warmRunner.close?.();
  await tick();
  t.equal((await warmRunner.run('ip', ['-batch', '-'], { input: 'four' })).stdout, '-batch -|four', 'a closed runner still works, cold');
  t.equal(lastWarm(), false);
});
