// What the managed plugin (config.json, Dockerfile) needs from src:
// - TSNET_PROC_SYS: the plugin's /proc/sys is read-only, so the host's
//   /proc/sys/net is bind-mounted at /host/proc/sys/net and sysctls are read
//   and written there. Default: /proc/sys, as before.
// - a bad setting as PID 1 (the plugin's init) waits for SIGTERM rather than
//   exiting, so dockerd's failed enable is clean (src/main.ts exitFatal).
import { spawn } from 'node:child_process';
import { mkdtemp, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import os from 'node:os';
import path from 'node:path';
import { pino } from 'pino';
import t from 'tap';
import { DEFAULTS, loadConfig } from '../../src/config.js';
import { TsnetError } from '../../src/errors.js';
import { createRunner } from '../../src/kernel/exec.js';
import { REPO, cleanEnv } from '../helpers/lab.js';

const log = pino({ level: 'silent' });

t.test('TSNET_PROC_SYS in the configuration', async (t) => {
  t.equal(DEFAULTS.procSys, '/proc/sys');
  t.equal(loadConfig({}).procSys, '/proc/sys', 'default');
  t.equal(loadConfig({ TSNET_PROC_SYS: '' }).procSys, '/proc/sys', 'empty means unset');
  t.equal(loadConfig({ TSNET_PROC_SYS: '/host/proc/sys' }).procSys, '/host/proc/sys');
  let err: unknown;
  try {
    loadConfig({ TSNET_PROC_SYS: 'host/proc/sys' });
  } catch (e) {
    err = e;
  }
  t.ok(err instanceof TsnetError, 'a relative path is refused');
  t.match((err as Error).message, /^TSNET_PROC_SYS: "host\/proc\/sys" must be an absolute path/);
});

t.test('the runner reads and writes sysctls under procSys', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'tsnet-procsys-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  await mkdir(path.join(root, 'net', 'ipv4', 'conf', 'br.1'), { recursive: true });
  await writeFile(path.join(root, 'net', 'ipv4', 'ip_forward'), '0\n');
  // a trailing slash is tolerated
  const runner = createRunner(log, undefined, { procSys: `${root}/` });
  t.equal(await runner.readSysctl('net/ipv4/ip_forward'), '0');
  await runner.writeSysctl('net/ipv4/ip_forward', '1');
  t.equal(await readFile(path.join(root, 'net', 'ipv4', 'ip_forward'), 'utf8'), '1', 'written under the override, not /proc/sys');
  await runner.writeSysctl('net/ipv4/conf/br.1/accept_ra', '0');
  t.equal(await runner.readSysctl('net/ipv4/conf/br.1/accept_ra'), '0', 'dotted interface names are paths, not separators');
  t.equal(await runner.readSysctl('net/ipv6/conf/all/accept_ra'), undefined, 'missing key reads as undefined');
  await t.rejects(runner.writeSysctl('net/../../etc/passwd', 'x'), /refusing sysctl path/, 'no escape from procSys');
  await t.rejects(runner.writeSysctl('kernel/hostname', 'x'), /refusing sysctl path/, 'only net/ keys');
});

t.test('without an override the runner uses /proc/sys', async (t) => {
  const runner = createRunner(log);
  const real = (await readFile('/proc/sys/net/ipv4/ip_forward', 'utf8')).trim();
  t.equal(await runner.readSysctl('net/ipv4/ip_forward'), real);
});

// Only invalid settings here: a valid one would start tsnet in this machine's namespace.
function startMain(prefix: string[], env: Record<string, string>): { child: ReturnType<typeof spawn>; stderr: () => string; exited: Promise<number | null> } {
  const argv = [...prefix, process.execPath, '--import', 'tsx', path.join(REPO, 'src', 'main.ts')];
  const child = spawn(argv[0]!, argv.slice(1), { cwd: REPO, env: cleanEnv(env), stdio: ['ignore', 'ignore', 'pipe'] });
  let err = '';
  child.stderr!.on('data', (b: Buffer) => (err += b));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, stderr: () => err, exited };
}

t.test('a bad setting: exit 2 with one JSON line; as PID 1, only on SIGTERM', async (t) => {
  const plain = startMain([], { TSNET_LOG_LEVEL: 'verbose' });
  t.equal(await plain.exited, 2, 'not PID 1: exits at once with 2');
  const lines = plain.stderr().trim().split('\n');
  t.equal(lines.length, 1, 'one line');
  t.match(JSON.parse(lines[0]!), { level: 'fatal', name: 'tsnet', msg: /^TSNET_LOG_LEVEL: "verbose" is not one of/ });

  // unshare --pid --fork: tsnet runs as PID 1 of a new PID namespace, as in the plugin.
  const init = startMain(['unshare', '--pid', '--fork', '--kill-child'], { TSNET_DEFAULT_POOLS: '10.0.0.0/33:24' });
  t.teardown(() => {
    init.child.kill('SIGKILL');
  });
  let early: number | null | 'running' = 'running';
  void init.exited.then((c) => (early = c));
  const until = Date.now() + 20_000;
  while (!init.stderr().includes('\n') && Date.now() < until) await new Promise((r) => setTimeout(r, 50));
  await new Promise((r) => setTimeout(r, 1000));
  t.equal(early, 'running', 'still running a second after the fatal line');
  const lines1 = init.stderr().trim().split('\n');
  t.equal(lines1.length, 1, 'one line');
  t.match(JSON.parse(lines1[0]!), { level: 'fatal', msg: /^TSNET_DEFAULT_POOLS: "10\.0\.0\.0\/33:24"/ });
  // SIGTERM to tsnet (the child of unshare), as dockerd sends when it gives up.
  const kids = (await readFile(`/proc/${init.child.pid}/task/${init.child.pid}/children`, 'utf8')).trim().split(/\s+/).map(Number);
  t.equal(kids.length, 1);
  process.kill(kids[0]!, 'SIGTERM');
  t.equal(await init.exited, 2, 'exits with 2 on SIGTERM');
});

t.test('etcd3 is loaded only when etcd is configured (start-up time)', async (t) => {
  // The managed plugin must listen within 500 ms of its start (dockerd's
  // first dial); etcd3 alone takes ~250 ms to load.
  const probe = [
    "import { createRequire } from 'node:module';",
    'await import(process.env.PROBE_MODULE);',
    "const cache = createRequire(import.meta.url).cache;",
    "process.stdout.write(String(Object.keys(cache).filter((k) => k.includes('/node_modules/etcd3/')).length));",
  ].join('\n');
  const loaded = async (file: string): Promise<number> => {
    // The module path goes in the environment, not argv: with argv[1] naming
    // src/main.ts, main() would run. An invalid setting guards that too.
    const env = cleanEnv({ PROBE_MODULE: path.join(REPO, file), TSNET_LOG_LEVEL: 'never-start' });
    const child = spawn(process.execPath, ['--import', 'tsx', '--input-type=module', '-e', probe], { cwd: REPO, env, stdio: ['ignore', 'pipe', 'inherit'] });
    let out = '';
    child.stdout!.on('data', (b: Buffer) => (out += b));
    await new Promise((resolve) => child.once('exit', resolve));
    return Number(out);
  };
  t.equal(await loaded('src/main.ts'), 0, 'importing src/main.ts loads no etcd3 module');
  t.ok((await loaded('src/cluster/registry.ts')) > 0, 'the probe does see etcd3 when it is loaded');
});

// tsnet's memory figures (docs/benchmarks.md) hold only with its node flags,
// and they are written in four places that start it.
t.test('every way of starting tsnet passes the same node flags', async (t) => {
  const { NODE_FLAGS } = await import('../helpers/lab.js');
  const read = (f: string): Promise<string> => readFile(path.join(REPO, f), 'utf8');
  const manifest = JSON.parse(await read('config.json')) as { entrypoint: string[] };
  t.same(manifest.entrypoint, ['/usr/local/bin/node', ...NODE_FLAGS, '/app/bundle/main.mjs'], 'config.json (the managed plugin)');
  const pkg = JSON.parse(await read('package.json')) as { scripts: Record<string, string> };
  t.equal(pkg.scripts.start, ['node', ...NODE_FLAGS, 'dist/main.js'].join(' '), 'npm start');
  t.match(await read('scripts/run.sh'), `\nexec ${['node', ...NODE_FLAGS, 'dist/main.js'].join(' ')}\n`, 'scripts/run.sh');
  t.match(await read('Dockerfile'), `\nENTRYPOINT ${JSON.stringify(['/usr/local/bin/node', ...NODE_FLAGS, '/app/bundle/main.mjs']).replaceAll(',', ', ')}\n`, 'Dockerfile');
});
