// The lab: real dockerd hosts inside network namespaces of their own, on a
// LAN that lives in one more namespace, with an "outside" host on that LAN
// (lab.md). Nothing here touches the machine's own namespace: every link,
// route, rule and daemon is inside namespaces this file creates, and stop()
// removes them, also when a test fails or the test process gets SIGTERM.
//
// Layout (addresses are per lab; labs never see each other, so they may repeat):
//   tsl-<id>-lan   bridge lan0 10.99.0.1/24, fd00:99::1/64 (the "router" leading nowhere)
//   tsl-<id>-hN    eth0 10.99.0.(10+N)/24, fd00:99::(10+N)/64, default routes
//                  via the router; dockerd + tsnet
//   tsl-<id>-out   eth0 10.99.0.100/24, fd00:99::100/64: the outside world
// With `offLan`, the hosts named there sit on a second LAN instead (bridge
// lan1 in the LAN namespace, 10.98.0.1/24 and fd00:98::1/64; hosts
// 10.98.0.(10+N), fd00:98::(10+N)), and the LAN namespace routes between
// the two: a host that others reach, but only through a router.
// Each host also gets a mount namespace of its own with a tmpfs on
// /run/docker/plugins, so every host's dockerd finds its own tsnet socket.
// It is created private (nothing mounted in it reaches the machine's) and
// then made shared inside, as / is on a systemd host: mounts that a managed
// plugin's container makes with rshared propagation reach the lab host's
// namespace, as they would reach a real host's. With `ownRun`, a host also
// gets a /run of its own, empty like a host's /run just after boot.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { createReadStream, existsSync, promises as fs } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import { execa, type Options as ExecaOptions } from 'execa';
import { DOCKERD, cliEnv } from './dockerd-build.js';

export { DOCKERD, HEAVY, cliEnv, heavyOnly } from './dockerd-build.js';
export const REPO = path.resolve(new URL('.', import.meta.url).pathname, '..', '..');
/** The docker CLI of the lab's dockerd build (TSNET_LAB_DOCKERD, dockerd-build.ts). */
export const DOCKER = DOCKERD.cli;
/** node flags tsnet runs with in production (package.json start, scripts/run.sh, the plugin's entrypoint). */
export const NODE_FLAGS = ['--max-semi-space-size=1', '--heap-growing-percent=20'];
export const IMAGE = 'busybox:local';
/** The LAN is dual stack: IPv4 10.99.0.0/24, IPv6 fd00:99::/64 (hosts ::10+n, the outside host ::100). */
export const OUTSIDE_IP6 = 'fd00:99::100';
const LAN_ROUTER6 = 'fd00:99::1';
const LAB_ROOT = '/tmp/tsnet-lab';

/**
 * The environment for processes the tests start. tap runs test files with
 * its loaders in NODE_OPTIONS; a plugin or a helper server must not inherit
 * them (they would run under tap's TypeScript loader and process tracking).
 */
export function cleanEnv(extra: Record<string, string> = {}): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = { ...process.env, ...extra };
  delete env.NODE_OPTIONS;
  for (const k of Object.keys(env)) if (k.startsWith('TAP') || k.startsWith('_TAPJS')) delete env[k];
  return env;
}

export interface CmdResult {
  stdout: string;
  stderr: string;
  exitCode: number;
}

export async function sh(cmd: string, args: string[], opts: ExecaOptions & { check?: boolean } = {}): Promise<CmdResult> {
  const { check = true, ...rest } = opts;
  const res = await execa(cmd, args, { reject: false, timeout: 120_000, env: cleanEnv(), extendEnv: false, ...rest });
  const out = { stdout: String(res.stdout ?? ''), stderr: String(res.stderr ?? ''), exitCode: res.exitCode ?? -1 };
  if (check && out.exitCode !== 0) {
    throw new Error(`${cmd} ${args.join(' ')} failed (${out.exitCode}): ${out.stderr.trim() || out.stdout.trim()}`);
  }
  return out;
}

export function canConnect(socketPath: string): Promise<boolean> {
  return new Promise((resolve) => {
    const c = net.connect({ path: socketPath });
    c.once('connect', () => {
      c.destroy();
      resolve(true);
    });
    c.once('error', () => resolve(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

export async function waitFor<T>(what: string, fn: () => Promise<T | undefined | false>, timeoutMs = 20_000, stepMs = 100): Promise<T> {
  const until = Date.now() + timeoutMs;
  let lastErr: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== undefined && v !== false) return v as T;
    } catch (err) {
      lastErr = err;
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${lastErr ? `: ${(lastErr as Error).message}` : ''}`);
    await sleep(stepMs);
  }
}

function pidAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitExit(pid: number, ms: number): Promise<boolean> {
  const until = Date.now() + ms;
  while (Date.now() < until) {
    if (!pidAlive(pid)) return true;
    await sleep(50);
  }
  return !pidAlive(pid);
}

/** Processes whose mount namespace is the given one: everything a lab host started. */
async function pidsInMountNs(nsInode: string): Promise<number[]> {
  const pids: number[] = [];
  for (const entry of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    try {
      if ((await fs.readlink(`/proc/${entry}/ns/mnt`)) === nsInode) pids.push(Number(entry));
    } catch {
      /* gone */
    }
  }
  return pids;
}

// Hosts start in parallel and each imports the image: one build per lab dir,
// shared as a promise. (A check for the file alone let a second host import
// a tar the first was still writing: "sleep" not found in the container.)
const busyboxTars = new Map<string, Promise<string>>();

function buildBusyboxTar(dir: string): Promise<string> {
  let tar = busyboxTars.get(dir);
  if (!tar) {
    tar = writeBusyboxTar(dir);
    busyboxTars.set(dir, tar);
  }
  return tar;
}

async function writeBusyboxTar(dir: string): Promise<string> {
  const tar = path.join(dir, 'busybox.tar');
  if (existsSync(tar)) return tar;
  const root = path.join(dir, 'busybox-root');
  await fs.mkdir(path.join(root, 'bin'), { recursive: true });
  await fs.mkdir(path.join(root, 'etc'), { recursive: true });
  await fs.mkdir(path.join(root, 'tmp'), { recursive: true });
  await fs.mkdir(path.join(root, 'www'), { recursive: true });
  await fs.copyFile('/bin/busybox', path.join(root, 'bin', 'busybox'));
  await fs.chmod(path.join(root, 'bin', 'busybox'), 0o755);
  const applets = ['sh', 'ping', 'ping6', 'ip', 'nc', 'httpd', 'sleep', 'cat', 'ls', 'echo', 'true', 'false', 'hostname', 'nslookup', 'ifconfig', 'route', 'grep', 'sed', 'awk', 'wc', 'head', 'tail', 'timeout', 'seq', 'printf', 'test', 'env', 'kill', 'ps', 'netstat', 'arping', 'traceroute', 'udhcpc', 'mkdir', 'rm', 'cut', 'tr', 'sort', 'uniq', 'date', 'id', 'ipneigh', 'telnet', 'wget'];
  for (const a of applets) await fs.symlink('busybox', path.join(root, 'bin', a)).catch(() => undefined);
  await fs.writeFile(path.join(root, 'www', 'index.html'), 'tsnet-lab-ok\n');
  await fs.writeFile(path.join(root, 'etc', 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  await sh('tar', ['-C', root, '-cf', `${tar}.tmp`, '.']);
  await fs.rename(`${tar}.tmp`, tar);
  return tar;
}

export interface HostOptions {
  /** env for tsnet (TSNET_*), merged over the lab defaults */
  tsnetEnv?: Record<string, string>;
  /** start tsnet right after dockerd (default true) */
  tsnet?: boolean;
  /** extra dockerd flags */
  dockerdArgs?: string[];
  /**
   * a tmpfs of the host's own on /run, empty as after a boot (no /run/netns
   * until something makes it), instead of the machine's /run
   */
  ownRun?: boolean;
}

/** The lab's LAN segments: the main one, and the second one `offLan` hosts sit on. */
const SEGMENTS = [
  { bridge: 'lan0', net: '10.99.0', net6: 'fd00:99' },
  { bridge: 'lan1', net: '10.98.0', net6: 'fd00:98' },
] as const;

export class LabHost {
  readonly lab: Lab;
  readonly index: number;
  /** 0: the main LAN; 1: the second one, behind the LAN namespace's router */
  readonly segment: 0 | 1;
  readonly netns: string;
  readonly dir: string;
  readonly lanIp: string;
  readonly lanIp6: string;
  mntPid = 0;
  /** a /run of its own: dockerd keeps its exec-root where a real host's does (/run/docker) */
  ownRun = false;
  #mntHolder: ChildProcess | undefined;
  #mntInode = '';
  tsnet: ChildProcess | undefined;
  tsnetEnv: Record<string, string> = {};

  constructor(lab: Lab, index: number, segment: 0 | 1 = 0) {
    this.lab = lab;
    this.index = index;
    this.segment = segment;
    this.netns = `${lab.prefix}-h${index}`;
    this.dir = path.join(lab.dir, `h${index}`);
    this.lanIp = `${SEGMENTS[segment].net}.${10 + index}`;
    this.lanIp6 = `${SEGMENTS[segment].net6}::${10 + index}`;
  }

  get netnsPath(): string {
    return `/run/netns/${this.netns}`;
  }

  get dockerSock(): string {
    return path.join(this.dir, 'docker.sock');
  }

  /** The plugin socket as seen from outside the host's mount namespace. */
  get pluginSocket(): string {
    return `/proc/${this.mntPid}/root/run/docker/plugins/tsnet.sock`;
  }

  get stateDir(): string {
    return path.join(this.dir, 'tsnet-state');
  }

  get tsnetLog(): string {
    return path.join(this.dir, 'tsnet.log');
  }

  /** argv prefix entering this host's namespaces */
  enter(): string[] {
    return ['nsenter', `--mount=/proc/${this.mntPid}/ns/mnt`, `--net=${this.netnsPath}`, '--'];
  }

  async createNamespaces(opts: Pick<HostOptions, 'ownRun'> = {}): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    this.ownRun = opts.ownRun ?? false;
    await sh('ip', ['netns', 'add', this.netns]);
    await sh('ip', ['-n', this.netns, 'link', 'set', 'lo', 'up']);
    // The host's leg on the LAN.
    await sh('ip', ['-n', this.lab.lanNs, 'link', 'add', `h${this.index}`, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', this.netns]);
    const seg = SEGMENTS[this.segment];
    await sh('ip', ['-n', this.lab.lanNs, 'link', 'set', `h${this.index}`, 'master', seg.bridge, 'up']);
    await sh('ip', ['-n', this.netns, 'addr', 'add', `${this.lanIp}/24`, 'dev', 'eth0']);
    // nodad: usable at once, not after duplicate address detection's ~2 s.
    await sh('ip', ['-n', this.netns, 'addr', 'add', `${this.lanIp6}/64`, 'dev', 'eth0', 'nodad']);
    await sh('ip', ['-n', this.netns, 'link', 'set', 'eth0', 'up']);
    await sh('ip', ['-n', this.netns, 'route', 'add', 'default', 'via', `${seg.net}.1`]);
    await sh('ip', ['-n', this.netns, '-6', 'route', 'add', 'default', 'via', `${seg.net6}::1`]);
    // A mount namespace created private, holding a tmpfs on
    // /run/docker/plugins and one on /run/wireguard (wireguard-go's UAPI
    // socket is /run/wireguard/<iface>.sock, and every lab host's tunnel has
    // the same name), or one tmpfs on /run with ownRun; then made shared
    // inside: `--make-rshared /` gives its mounts peer groups of their own,
    // which no mount of the machine's belongs to, so propagation stays among
    // this host's namespace and the ones made from it (dockerd's plugins).
    const mounts = opts.ownRun
      ? 'mount -t tmpfs -o mode=0755,nosuid,nodev tmpfs /run && mkdir -p /run/docker/plugins && mkdir -m 0700 /run/wireguard'
      : 'mount -t tmpfs -o mode=0755 tmpfs /run/docker/plugins && mount -t tmpfs -o mode=0700 tmpfs /run/wireguard';
    if (!opts.ownRun) {
      await fs.mkdir('/run/docker/plugins', { recursive: true });
      await fs.mkdir('/run/wireguard', { recursive: true, mode: 0o700 });
    }
    const holder = spawn('unshare', ['--mount', '--propagation', 'private', 'sh', '-c', `${mounts} && mount --make-rshared / && echo ready && exec sleep 1000000`], {
      stdio: ['ignore', 'pipe', 'inherit'],
      detached: false,
    });
    await new Promise<void>((resolve, reject) => {
      holder.once('error', reject);
      holder.once('exit', (code) => reject(new Error(`mount namespace holder exited (${code})`)));
      holder.stdout?.once('data', () => resolve());
    });
    holder.removeAllListeners('exit');
    // `sh -c` execs sleep, so the holder's pid is the namespace member.
    this.#mntHolder = holder;
    this.mntPid = holder.pid!;
    this.#mntInode = await fs.readlink(`/proc/${this.mntPid}/ns/mnt`);
    await fs.writeFile(path.join(this.dir, 'mnt.pid'), String(this.mntPid));
  }

  /**
   * This host's /etc/resolv.conf, as dockerd and tsnet read it: a file bind-
   * mounted over it in the host's own mount namespace (the machine's file is
   * untouched), e.g. naming a resolver on the outside host.
   */
  async setResolvConf(text: string): Promise<void> {
    const file = path.join(this.dir, 'resolv.conf');
    await fs.writeFile(file, text);
    await sh('nsenter', [`--mount=/proc/${this.mntPid}/ns/mnt`, '--', 'mount', '--bind', file, '/etc/resolv.conf']);
  }

  async startDockerd(extra: string[] = []): Promise<void> {
    await fs.writeFile(path.join(this.dir, 'daemon.json'), '{}\n');
    const log = await fs.open(path.join(this.dir, 'dockerd.log'), 'a');
    const args = [
      ...this.enter(),
      DOCKERD.dockerd,
      // Its own build's proxy: dockerd 28 refuses another version's.
      '--userland-proxy-path', DOCKERD.proxy,
      '--data-root', path.join(this.dir, 'data'),
      // A host with a /run of its own has dockerd's default exec-root, so
      // sandbox keys are /var/run/docker/netns/… as a managed plugin sees them on a real host.
      '--exec-root', this.ownRun ? '/run/docker' : path.join(this.dir, 'exec'),
      '-H', `unix://${this.dockerSock}`,
      '--pidfile', path.join(this.dir, 'dockerd.pid'),
      '--config-file', path.join(this.dir, 'daemon.json'),
      ...extra,
    ];
    const child = spawn(args[0]!, args.slice(1), { stdio: ['ignore', log.fd, log.fd], detached: true, env: cleanEnv() });
    child.unref();
    await log.close();
    // The server's version, not the exit code alone: docker CLI 26 exits 0
    // from `info --format` while the daemon is not answering yet, which let
    // a test talk to a dockerd still starting up ("Cannot connect").
    await waitFor('dockerd', async () => {
      const r = await this.docker(['info', '--format', '{{.ServerVersion}}'], { check: false });
      return r.exitCode === 0 && /^\d+\.\d+/.test(r.stdout.trim());
    }, 60_000, 200);
  }

  async stopDockerd(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const pidFile = path.join(this.dir, 'dockerd.pid');
    let pid: number;
    try {
      pid = Number((await fs.readFile(pidFile, 'utf8')).trim());
    } catch {
      return;
    }
    if (!pid || !pidAlive(pid)) return;
    process.kill(pid, signal);
    if (!(await waitExit(pid, 30_000))) process.kill(pid, 'SIGKILL');
    await waitExit(pid, 5000);
  }

  async importImage(): Promise<void> {
    const tar = await buildBusyboxTar(this.lab.dir);
    await sh(DOCKER, ['-H', `unix://${this.dockerSock}`, 'import', '-', IMAGE], { inputFile: tar, env: cleanEnv(cliEnv()) });
    void createReadStream;
  }

  async startTsnet(env: Record<string, string> = {}): Promise<void> {
    this.tsnetEnv = { ...this.tsnetEnv, ...env };
    const log = await fs.open(this.tsnetLog, 'a');
    const child = spawn(
      this.enter()[0]!,
      [...this.enter().slice(1), process.execPath, ...NODE_FLAGS, path.join(REPO, 'dist', 'main.js')],
      {
        stdio: ['ignore', log.fd, log.fd],
        env: cleanEnv({
          TSNET_SOCKET: '/run/docker/plugins/tsnet.sock',
          TSNET_STATE_DIR: this.stateDir,
          TSNET_LOG_LEVEL: 'debug',
          // This host's own dockerd, never the machine's socket.
          TSNET_DOCKER_HOST: `unix://${this.dockerSock}`,
          ...this.tsnetEnv,
        }),
      },
    );
    await log.close();
    this.tsnet = child;
    const died = new Promise<never>((_, reject) =>
      child.once('exit', (code, signal) => reject(new Error(`tsnet exited with ${code ?? signal}; see ${this.tsnetLog}`))),
    );
    died.catch(() => undefined);
    try {
      await Promise.race([died, waitFor('tsnet socket', async () => existsSync(this.pluginSocket) && (await canConnect(this.pluginSocket)), 20_000, 50)]);
    } catch (err) {
      this.tsnet = undefined;
      throw err;
    }
  }

  async stopTsnet(signal: NodeJS.Signals = 'SIGTERM'): Promise<void> {
    const child = this.tsnet;
    if (!child || child.exitCode !== null || child.signalCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    await Promise.race([exited, sleep(15_000)]);
    if (child.exitCode === null && child.signalCode === null) {
      child.kill('SIGKILL');
      await exited;
    }
    this.tsnet = undefined;
  }

  docker(args: string[], opts: ExecaOptions & { check?: boolean } = {}): Promise<CmdResult> {
    return sh(DOCKER, ['-H', `unix://${this.dockerSock}`, ...args], { env: cleanEnv(cliEnv()), ...opts });
  }

  /** Run a command in this host's network (and mount) namespace. */
  exec(cmd: string, args: string[], opts: ExecaOptions & { check?: boolean } = {}): Promise<CmdResult> {
    const e = this.enter();
    return sh(e[0]!, [...e.slice(1), cmd, ...args], opts);
  }

  /** tsnetctl (dist/cli.js) against this host's plugin; never throws, the exit code says */
  tsnetctl(cmd: string, ...args: string[]): Promise<CmdResult> {
    return this.exec(process.execPath, [`${REPO}/dist/cli.js`, '--socket', '/run/docker/plugins/tsnet.sock', cmd, ...args], { check: false });
  }

  /** Run a command inside a container's network namespace from the host's tools (iperf3, ip -json). */
  async execInContainer(container: string, cmd: string, args: string[], opts: ExecaOptions & { check?: boolean } = {}): Promise<CmdResult> {
    const pid = (await this.docker(['inspect', '-f', '{{.State.Pid}}', container])).stdout.trim();
    return sh('nsenter', ['-t', pid, '-n', '--', cmd, ...args], opts);
  }

  async teardown(): Promise<void> {
    const errors: string[] = [];
    const attempt = async (what: string, fn: () => Promise<unknown>): Promise<void> => {
      try {
        await fn();
      } catch (err) {
        errors.push(`${what}: ${(err as Error).message}`);
      }
    };
    if (existsSync(this.dockerSock)) {
      await attempt('remove containers', async () => {
        const ids = (await this.docker(['ps', '-aq'], { check: false })).stdout.split('\n').filter(Boolean);
        if (ids.length > 0) await this.docker(['rm', '-f', ...ids], { check: false, timeout: 60_000 });
      });
    }
    await attempt('stop tsnet', () => this.stopTsnet());
    await attempt('stop dockerd', () => this.stopDockerd());
    // tsnet named its overlay namespaces from inside this host's mount
    // namespace: their mounts live there, and go with it, leaving empty
    // files in the machine's /run/netns (unless the host has a /run of its
    // own). Removed from in here, both go. exec() is in the host's network
    // namespace already, and with ownRun its /run/netns does not name it.
    if (this.mntPid) await attempt('delete overlay namespaces', () => deleteOverlayNamespaces(undefined, (args) => this.exec('ip', args, { check: false })));
    // Anything still living in the host's mount namespace was started by this lab.
    if (this.#mntInode) {
      for (const pid of await pidsInMountNs(this.#mntInode)) {
        if (pid === this.mntPid) continue;
        try {
          process.kill(pid, 'SIGKILL');
        } catch {
          /* gone */
        }
      }
    }
    this.#mntHolder?.kill('SIGKILL');
    if (this.mntPid) await waitExit(this.mntPid, 5000);
    await attempt('delete netns', () => sh('ip', ['netns', 'del', this.netns], { check: false }));
    if (errors.length > 0) console.error(`lab host ${this.netns} teardown: ${errors.join('; ')}`);
  }
}

export interface LabOptions extends HostOptions {
  hosts?: number;
  /** build the outside namespace (default true) */
  outside?: boolean;
  /** start dockerd on every host (default true) */
  dockerd?: boolean;
  /** run etcd in a namespace of its own on the LAN (10.99.0.5:2379) */
  etcd?: boolean;
  /** every host's /etc/resolv.conf (LabHost.setResolvConf); default: the machine's */
  resolvConf?: string;
  /** hosts (1-based) on a second LAN segment, routed to the first by the LAN namespace */
  offLan?: number[];
}

export const ETCD_URL = 'http://10.99.0.5:2379';

export class Lab {
  readonly id: string;
  readonly prefix: string;
  readonly dir: string;
  readonly lanNs: string;
  readonly outNs: string;
  readonly hosts: LabHost[] = [];
  #stopped = false;
  #offLan = false;
  #onSignal: (() => void) | undefined;

  constructor() {
    this.id = randomBytes(3).toString('hex');
    this.prefix = `tsl-${this.id}`;
    this.dir = `${LAB_ROOT}-${this.id}`;
    this.lanNs = `${this.prefix}-lan`;
    this.outNs = `${this.prefix}-out`;
  }

  get host(): LabHost {
    return this.hosts[0]!;
  }

  static async start(opts: LabOptions = {}): Promise<Lab> {
    await cleanStaleLabs();
    const lab = new Lab();
    lab.#installSignalHandler();
    try {
      await lab.#build(opts);
    } catch (err) {
      await lab.stop();
      throw err;
    }
    return lab;
  }

  #installSignalHandler(): void {
    // tap sends SIGTERM on a file timeout: still clean up before dying.
    this.#onSignal = () => {
      void this.stop().finally(() => process.exit(1));
    };
    process.once('SIGTERM', this.#onSignal);
    process.once('SIGINT', this.#onSignal);
  }

  /** A namespace of its own with eth0 on the LAN bridge (the outside host, etcd). */
  async #lanStation(ns: string, port: string, address: string, address6?: string): Promise<void> {
    await sh('ip', ['netns', 'add', ns]);
    await sh('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
    await sh('ip', ['-n', this.lanNs, 'link', 'add', port, 'type', 'veth', 'peer', 'name', 'eth0', 'netns', ns]);
    await sh('ip', ['-n', this.lanNs, 'link', 'set', port, 'master', 'lan0', 'up']);
    await sh('ip', ['-n', ns, 'addr', 'add', `${address}/24`, 'dev', 'eth0']);
    if (address6) await sh('ip', ['-n', ns, 'addr', 'add', `${address6}/64`, 'dev', 'eth0', 'nodad']);
    await sh('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    if (this.#offLan) {
      // Only the second segment goes through the router: the outside host still has no way to container subnets.
      await sh('ip', ['-n', ns, 'route', 'add', '10.98.0.0/24', 'via', '10.99.0.1']);
      if (address6) await sh('ip', ['-n', ns, '-6', 'route', 'add', 'fd00:98::/64', 'via', LAN_ROUTER6]);
    }
  }

  async #build(opts: LabOptions): Promise<void> {
    await fs.mkdir(this.dir, { recursive: true });
    await fs.writeFile(path.join(this.dir, 'owner.pid'), String(process.pid));
    await sh('ip', ['netns', 'add', this.lanNs]);
    await sh('ip', ['-n', this.lanNs, 'link', 'set', 'lo', 'up']);
    await sh('ip', ['-n', this.lanNs, 'link', 'add', 'lan0', 'type', 'bridge']);
    await sh('ip', ['-n', this.lanNs, 'addr', 'add', '10.99.0.1/24', 'dev', 'lan0']);
    await sh('ip', ['-n', this.lanNs, 'addr', 'add', `${LAN_ROUTER6}/64`, 'dev', 'lan0', 'nodad']);
    await sh('ip', ['-n', this.lanNs, 'link', 'set', 'lan0', 'up']);
    this.#offLan = (opts.offLan?.length ?? 0) > 0;
    if (this.#offLan) {
      // The LAN namespace becomes a router between two segments.
      await sh('ip', ['-n', this.lanNs, 'link', 'add', 'lan1', 'type', 'bridge']);
      await sh('ip', ['-n', this.lanNs, 'addr', 'add', '10.98.0.1/24', 'dev', 'lan1']);
      await sh('ip', ['-n', this.lanNs, 'addr', 'add', 'fd00:98::1/64', 'dev', 'lan1', 'nodad']);
      await sh('ip', ['-n', this.lanNs, 'link', 'set', 'lan1', 'up']);
      await sh('ip', ['netns', 'exec', this.lanNs, 'sysctl', '-qw', 'net.ipv4.ip_forward=1', 'net.ipv6.conf.all.forwarding=1']);
    }
    if (opts.outside !== false) await this.#lanStation(this.outNs, 'out', '10.99.0.100', OUTSIDE_IP6);
    if (opts.etcd) {
      await this.#lanStation(this.etcdNs, 'etcd', '10.99.0.5');
      await this.startEtcd();
    }
    const n = opts.hosts ?? 1;
    for (let i = 1; i <= n; i++) {
      const h = new LabHost(this, i, opts.offLan?.includes(i) ? 1 : 0);
      this.hosts.push(h);
      await h.createNamespaces(opts);
      if (opts.resolvConf !== undefined) await h.setResolvConf(opts.resolvConf);
    }
    if (opts.dockerd !== false) {
      await Promise.all(
        this.hosts.map(async (h) => {
          try {
            await h.startDockerd(opts.dockerdArgs);
            await h.importImage();
          } catch (err) {
            // The directory goes with the lab: keep the daemon's last words in the error.
            const log = await fs.readFile(path.join(h.dir, 'dockerd.log'), 'utf8').catch(() => '');
            throw new Error(`${(err as Error).message}\n${DOCKERD.dockerd} log (last lines):\n${log.split('\n').slice(-15).join('\n')}`);
          }
          if (opts.tsnet !== false) await h.startTsnet(opts.tsnetEnv);
        }),
      );
    }
  }

  get etcdNs(): string {
    return `${this.prefix}-etcd`;
  }

  #etcd: ChildProcess | undefined;

  async startEtcd(): Promise<void> {
    const log = await fs.open(path.join(this.dir, 'etcd.log'), 'a');
    const child = spawn(
      'ip',
      [
        'netns', 'exec', this.etcdNs, 'etcd',
        '--name', 'lab', '--data-dir', path.join(this.dir, 'etcd-data'),
        '--listen-client-urls', ETCD_URL, '--advertise-client-urls', ETCD_URL,
        '--listen-peer-urls', 'http://127.0.0.1:2380', '--initial-advertise-peer-urls', 'http://127.0.0.1:2380',
        '--initial-cluster', 'lab=http://127.0.0.1:2380',
      ],
      { stdio: ['ignore', log.fd, log.fd], env: cleanEnv() },
    );
    await log.close();
    this.#etcd = child;
    await waitFor('etcd', async () => (await sh('ip', ['netns', 'exec', this.etcdNs, 'etcdctl', '--endpoints', ETCD_URL, 'endpoint', 'health'], { check: false, env: cleanEnv({ ETCDCTL_API: '3' }) })).exitCode === 0, 20_000, 200);
  }

  async stopEtcd(): Promise<void> {
    const c = this.#etcd;
    if (!c || c.exitCode !== null || c.signalCode !== null) return;
    const exited = new Promise<void>((r) => c.once('exit', () => r()));
    c.kill('SIGTERM');
    await Promise.race([exited, sleep(10_000)]);
    if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL');
    this.#etcd = undefined;
  }

  /** etcdctl against the lab's etcd. */
  etcdctl(args: string[]): Promise<CmdResult> {
    return sh('ip', ['netns', 'exec', this.etcdNs, 'etcdctl', '--endpoints', ETCD_URL, ...args], { check: false, env: cleanEnv({ ETCDCTL_API: '3' }) });
  }

  /** Run a command in the outside namespace. */
  outside(cmd: string, args: string[], opts: ExecaOptions & { check?: boolean } = {}): Promise<CmdResult> {
    return sh('ip', ['netns', 'exec', this.outNs, cmd, ...args], opts);
  }

  async stop(): Promise<void> {
    if (this.#stopped) return;
    this.#stopped = true;
    if (this.#onSignal) {
      process.removeListener('SIGTERM', this.#onSignal);
      process.removeListener('SIGINT', this.#onSignal);
    }
    await Promise.all(this.hosts.map((h) => h.teardown()));
    await this.stopEtcd();
    await sh('ip', ['netns', 'del', this.etcdNs], { check: false });
    await sh('ip', ['netns', 'del', this.outNs], { check: false });
    await sh('ip', ['netns', 'del', this.lanNs], { check: false });
    if (!process.env.TSNET_LAB_KEEP) await fs.rm(this.dir, { recursive: true, force: true }).catch(() => undefined);
  }
}

/**
 * tsnet's overlay namespaces (tsov-…) are named, so they outlive the lab
 * host whose tsnet made them when a network was not removed. The host's
 * namespace numbers every namespace it has links into; those are its.
 * `hostNetns` undefined: `ip` runs in the host's network namespace already.
 */
export async function deleteOverlayNamespaces(hostNetns: string | undefined, ip: (args: string[]) => Promise<CmdResult> = (args) => sh('ip', args, { check: false })): Promise<void> {
  const res = await ip([...(hostNetns ? ['-n', hostNetns] : []), '-json', 'netns', 'list-id']);
  if (res.exitCode !== 0) return;
  for (const n of JSON.parse(res.stdout.trim() || '[]') as Array<{ name?: string }>) {
    if (n.name && /^tsov-[0-9a-f]{10}$/.test(n.name)) await ip(['netns', 'del', n.name]);
  }
}

/** Labs left by a test process that died without cleaning up (kill -9, crash). */
export async function cleanStaleLabs(): Promise<void> {
  const tmp = path.dirname(LAB_ROOT);
  for (const entry of await fs.readdir(tmp).catch(() => [] as string[])) {
    if (!entry.startsWith(path.basename(LAB_ROOT) + '-')) continue;
    const dir = path.join(tmp, entry);
    const owner = Number(await fs.readFile(path.join(dir, 'owner.pid'), 'utf8').catch(() => '0'));
    if (owner && pidAlive(owner)) continue;
    const id = entry.slice(path.basename(LAB_ROOT).length + 1);
    for (const h of await fs.readdir(dir).catch(() => [] as string[])) {
      const mnt = Number(await fs.readFile(path.join(dir, h, 'mnt.pid'), 'utf8').catch(() => '0'));
      if (mnt && pidAlive(mnt)) {
        const inode = await fs.readlink(`/proc/${mnt}/ns/mnt`).catch(() => '');
        if (inode) for (const pid of await pidsInMountNs(inode)) process.kill(pid, 'SIGKILL');
      }
    }
    const { stdout } = await sh('ip', ['netns', 'list'], { check: false });
    for (const line of stdout.split('\n')) {
      const name = line.split(' ')[0];
      if (name && name.startsWith(`tsl-${id}-`)) {
        await deleteOverlayNamespaces(name);
        await sh('ip', ['netns', 'del', name], { check: false });
      }
    }
    await fs.rm(dir, { recursive: true, force: true }).catch(() => undefined);
  }
}
