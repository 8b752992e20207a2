// What the managed plugin (config.json, Dockerfile) needs from src:
// - TSNET_PROC_SYS: the plugin's /proc/sys is read-only, so the host's
//   /proc/sys/net is bind-mounted at /host/proc/sys/net and sysctls are read
//   and written there. Default: /proc/sys, as before.
// - a bad setting as PID 1 (the plugin's init) waits for SIGTERM rather than
//   exiting, so dockerd's failed enable is clean (src/main.ts exitFatal).
// - TSNET_NETNS_DIR: the rootfs's /run/netns leads into the host's /run (the
//   run mount), where tsnet makes the directory at start-up; mountinfo says
//   whether namespaces named there reach the host's mount namespace.
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
import { mountOf, parseMountinfo, propagationOf } from '../../src/kernel/mountinfo.js';
import { prepareNetnsDir, readNetnsDir } from '../../src/kernel/netns-dir.js';
import { sandboxPathHere } from '../../src/kernel/host-run.js';
import { judgeNetnsDir } from '../../src/doctor/checks.js';
import { isStaleNetns } from '../../src/kernel/overlay-ns.js';
import { CommandError } from '../../src/kernel/exec.js';

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

t.test('TSNET_NETNS_DIR in the configuration', async (t) => {
  t.equal(loadConfig({}).netnsDir, undefined, 'unset: /run/netns is the host\'s own');
  t.equal(loadConfig({ TSNET_NETNS_DIR: '/host/run/netns' }).netnsDir, '/host/run/netns');
  t.equal(loadConfig({ TSNET_NETNS_DIR: '/host/run/netns/' }).netnsDir, '/host/run/netns', 'a trailing slash is dropped');
  for (const bad of ['host/run/netns', '/', '/host/../run/netns', '/host/./run']) {
    t.throws(() => loadConfig({ TSNET_NETNS_DIR: bad }), { message: new RegExp(`^TSNET_NETNS_DIR: "${bad.replace(/[.\/]/g, '\\$&')}" must be an absolute path`) }, bad);
  }
});

t.test("TSNET_HOST_RUN: containers' namespaces opened through the host's /run", async (t) => {
  t.equal(loadConfig({}).hostRun, undefined, "unset: /run is the host's own");
  t.equal(loadConfig({ TSNET_HOST_RUN: '/host/run/' }).hostRun, '/host/run', 'a trailing slash is dropped');
  for (const bad of ['host/run', '/', '/host/../run']) {
    t.throws(() => loadConfig({ TSNET_HOST_RUN: bad }), { message: new RegExp(`^TSNET_HOST_RUN: "${bad.replace(/[.\/]/g, '\\$&')}" must be an absolute path`) }, bad);
  }
  t.equal(sandboxPathHere('/var/run/docker/netns/1f2e', undefined), '/var/run/docker/netns/1f2e', 'on the host: as dockerd gave it');
  t.equal(sandboxPathHere('/var/run/docker/netns/1f2e', '/host/run'), '/host/run/docker/netns/1f2e', "dockerd's default exec-root, through the run mount");
  t.equal(sandboxPathHere('/run/docker/netns/1f2e', '/host/run'), '/host/run/docker/netns/1f2e', '/run as well as /var/run');
  t.equal(sandboxPathHere('/srv/docker-exec/netns/1f2e', '/host/run'), '/srv/docker-exec/netns/1f2e', 'an exec-root outside /run: unchanged (unreachable, and reported so)');
  t.equal(sandboxPathHere('/var/runner/x', '/host/run'), '/var/runner/x', 'a prefix of a name is not the directory');
});

t.test('config.json and the rootfs agree on where /run/netns leads', async (t) => {
  const cfg = JSON.parse(await readFile(path.join(REPO, 'config.json'), 'utf8')) as {
    propagatedmount?: string;
    mounts: Array<{ name: string; source: string; destination: string; options: string[] }>;
    env: Array<{ name: string; value: string; settable?: string[] }>;
  };
  const dir = cfg.env.find((e) => e.name === 'TSNET_NETNS_DIR');
  t.ok(dir && !dir.settable, 'TSNET_NETNS_DIR is fixed by the manifest');
  const run = cfg.mounts.find((m) => m.name === 'run')!;
  t.same([run.source, run.destination, run.options], ['/run', '/host/run', ['rbind', 'rw', 'rshared']], "the host's /run, recursive and shared");
  t.equal(dir?.value, `${run.destination}/netns`, 'TSNET_NETNS_DIR is netns under the run mount');
  const hostRun = cfg.env.find((e) => e.name === 'TSNET_HOST_RUN');
  t.ok(hostRun && !hostRun.settable, 'TSNET_HOST_RUN is fixed by the manifest');
  t.equal(hostRun?.value, run.destination, 'TSNET_HOST_RUN is the run mount');
  t.match(await readFile(path.join(REPO, 'plugin', 'rootfs.sh'), 'utf8'), new RegExp(`\\nln -s ${dir?.value} "\\$out/run/netns"\\n`), 'rootfs.sh links /run/netns there');
  t.ok(cfg.propagatedmount, 'a propagated mount, so dockerd gives the plugin rshared root propagation (runc\'s default, rslave, would keep its mounts from the host)');
  for (const m of cfg.mounts.filter((x) => x !== run)) t.ok(m.options.includes('rslave'), `mount ${m.name}: rslave, only the run mount sends mounts to the host`);
  t.notOk(cfg.mounts.some((m) => m.source.startsWith('/run/netns')), 'no mount source that a boot removes');
});

const MOUNTINFO = [
  '22 1 254:0 / / rw,relatime - ext4 /dev/vda rw',
  '330 22 0:45 / /host/run rw,nosuid,nodev shared:41 - tmpfs tmpfs rw,mode=755',
  '331 330 0:45 /netns /host/run/netns rw shared:41 - tmpfs tmpfs rw',
  '420 22 0:40 /netns /run/netns rw,nosuid,nodev shared:39 master:53 - tmpfs tmpfs rw,mode=755',
  '421 22 0:21 /sys/net /host/proc/sys/net rw,relatime master:19 - proc proc rw',
  '500 22 0:50 / /mnt/with\\040space rw - tmpfs tmpfs rw',
].join('\n');

t.test('mountinfo: the mount a path lies on, and where its mounts go', async (t) => {
  const m = parseMountinfo(MOUNTINFO);
  t.equal(m.length, 6);
  t.same(m[3], { id: 420, parent: 22, root: '/netns', mountPoint: '/run/netns', shared: 39, master: 53, fsType: 'tmpfs' });
  t.equal(m[5]?.mountPoint, '/mnt/with space', 'octal escapes undone');
  t.equal(mountOf(m, '/host/run/netns/tsov-0123456789')?.id, 331, 'the deepest mount above a path');
  t.equal(mountOf(m, '/host/run/netnsx')?.id, 330, 'a path component, not a string prefix');
  t.equal(mountOf(m, '/srv')?.id, 22, '/ holds the rest');
  t.same(['/host/run', '/run/netns', '/host/proc/sys/net', '/'].map((p) => propagationOf(mountOf(m, p)!)), ['shared', 'slave', 'slave', 'private'], 'a shared slave sends nothing to its master');
  const stacked = parseMountinfo(`${MOUNTINFO}\n600 331 0:46 / /host/run/netns rw - tmpfs tmpfs rw`);
  t.equal(mountOf(stacked, '/host/run/netns')?.id, 600, 'of mounts stacked on one point, the one on top');
});

t.test('judgeNetnsDir: only a shared mount keeps overlay namespaces past the plugin', async (t) => {
  const reading = (propagation: 'shared' | 'slave' | 'private', leadsTo = '/host/run/netns') => ({ dir: '/host/run/netns', leadsTo, mount: { mountPoint: '/host/run', propagation } });
  t.same(judgeNetnsDir(reading('shared'), 2).map((f) => f.level), ['ok']);
  const slave = judgeNetnsDir(reading('slave'), 2)[0]!;
  t.equal(slave.level, 'fail');
  t.match(slave.message, /a slave mount: .* end when the plugin stops, taking the links of 2 overlay/);
  t.match(slave.fix, /propagatedmount/);
  t.equal(judgeNetnsDir(reading('slave'), 0)[0]?.level, 'warn', 'no overlay yet: a warning');
  t.match(judgeNetnsDir(reading('private'), 1)[0]?.fix, /mount --make-rshared \/run/);
  t.match(judgeNetnsDir(reading('shared', '/run/netns'), 1)[0]?.message, /^\/run\/netns leads to \/run\/netns, not to \/host\/run\/netns/);
  t.match(judgeNetnsDir({ dir: '/host/run/netns', leadsTo: undefined, mount: undefined }, 1)[0]?.message, /leads to nothing/);
});

t.test('prepareNetnsDir makes the directory and refuses a /run/netns that leads elsewhere', async (t) => {
  const root = await mkdtemp(path.join(os.tmpdir(), 'tsnet-netns-'));
  t.teardown(() => rm(root, { recursive: true, force: true }));
  const dir = path.join(root, 'host', 'run', 'netns');
  // This machine's /run/netns is its own, never the temporary directory.
  await t.rejects(prepareNetnsDir(dir), { message: /^TSNET_NETNS_DIR: \/run\/netns leads to .*, not to ".*\/host\/run\/netns": the plugin's rootfs needs \/run\/netns -> / });
  t.ok((await readNetnsDir(dir, async () => MOUNTINFO)).mount, 'made, and found on a mount');
});

t.test('isStaleNetns: a name nsenter cannot enter', async (t) => {
  t.ok(isStaleNetns(new CommandError('nsenter', ['--net=/run/netns/tsov-0123456789'], 1, "nsenter: reassociate to namespace 'ns/net' failed: Invalid argument\n")));
  t.notOk(isStaleNetns(new CommandError('nsenter', ['--net=/run/netns/tsov-0123456789'], 1, "nsenter: cannot open /run/netns/tsov-0123456789: No such file or directory\n")));
  t.notOk(isStaleNetns(new Error('Invalid argument')));
});
