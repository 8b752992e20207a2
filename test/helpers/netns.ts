// Throwaway network namespaces and a tsnet process inside one, for the
// kernel tier: real bridges, veths and rules, no dockerd. A "container" here
// is just another namespace into which the test moves the veth end that
// tsnet hands out, doing by hand what dockerd does after Join.
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Client } from 'undici';
import { NODE_FLAGS, REPO, canConnect, cleanEnv, sh, waitFor, type CmdResult } from './lab.js';

export class Netns {
  readonly name: string;
  constructor(name: string) {
    this.name = name;
  }

  get path(): string {
    return `/run/netns/${this.name}`;
  }

  static async create(tag: string): Promise<Netns> {
    const ns = new Netns(`tsk-${randomBytes(3).toString('hex')}-${tag}`);
    await sh('ip', ['netns', 'add', ns.name]);
    await sh('ip', ['-n', ns.name, 'link', 'set', 'lo', 'up']);
    return ns;
  }

  exec(cmd: string, args: string[], opts: { check?: boolean; input?: string } = {}): Promise<CmdResult> {
    return sh('nsenter', [`--net=${this.path}`, '--', cmd, ...args], opts);
  }

  async links(): Promise<Array<{ ifname: string; ifalias?: string; master?: string; mtu: number; flags: string[]; address?: string; linkinfo?: { info_kind?: string } }>> {
    return JSON.parse((await sh('ip', ['-n', this.name, '-json', '-details', 'link', 'show'])).stdout);
  }

  async delete(): Promise<void> {
    await sh('ip', ['netns', 'del', this.name], { check: false });
  }
}

/**
 * Why this machine's kernel cannot make a child link of the given type
 * (`['ipvlan', 'mode', 'l2']`, `['vlan', 'id', '5']`), or undefined if it
 * can: the reason a test of that device type reports as skipped.
 */
export async function kernelLacks(type: string[]): Promise<string | undefined> {
  const ns = await Netns.create('probe');
  try {
    await ns.exec('ip', ['link', 'add', 'p0', 'type', 'veth', 'peer', 'name', 'p1']);
    const r = await ns.exec('ip', ['link', 'add', 'link', 'p0', 'name', 'c0', 'type', ...type], { check: false });
    return r.exitCode === 0 ? undefined : `kernel lacks ${type[0] === 'vlan' ? '8021q (VLAN)' : type[0]}: ${r.stderr.trim()}`;
  } finally {
    await ns.delete();
  }
}

/** Do what dockerd does with Join's SrcName: move it into the sandbox, rename, address, route. */
export async function plugInto(host: Netns, container: Netns, srcName: string, opts: { address: string; gateway?: string; mac?: string; ifname?: string }): Promise<void> {
  const ifname = opts.ifname ?? 'eth0';
  await sh('ip', ['-n', host.name, 'link', 'set', srcName, 'netns', container.name]);
  await sh('ip', ['-n', container.name, 'link', 'set', srcName, 'name', ifname]);
  await sh('ip', ['-n', container.name, 'addr', 'add', opts.address, 'dev', ifname]);
  await sh('ip', ['-n', container.name, 'link', 'set', ifname, 'up']);
  if (opts.gateway) await sh('ip', ['-n', container.name, 'route', 'add', 'default', 'via', opts.gateway]);
}

export async function ping(from: Netns, to: string, count = 1, waitS = 1): Promise<boolean> {
  const r = await from.exec('ping', ['-c', String(count), '-W', String(waitS), '-q', to], { check: false });
  return r.exitCode === 0;
}

export interface PluginProcess {
  socket: string;
  stateDir: string;
  logFile: string;
  child: ChildProcess;
  client: Client;
  /** resolves with the exit code when the process ends by itself */
  exited: Promise<number | null>;
  call(method: string, body?: unknown): Promise<{ status: number; body: Record<string, unknown> }>;
  stop(signal?: NodeJS.Signals): Promise<number | null>;
}

export async function tmpDir(tag: string): Promise<string> {
  return fs.mkdtemp(path.join(os.tmpdir(), `tsnet-${tag}-`));
}

/** Start dist/main.js inside a namespace and talk to it the way dockerd does (undici, no Content-Type). */
export async function startPlugin(ns: Netns, opts: { dir: string; env?: Record<string, string>; expectFailure?: boolean; nodeArgs?: string[] }): Promise<PluginProcess> {
  const socket = path.join(opts.dir, 'tsnet.sock');
  const stateDir = path.join(opts.dir, 'state');
  const logFile = path.join(opts.dir, 'tsnet.log');
  const log = await fs.open(logFile, 'a');
  const child = spawn('nsenter', [`--net=${ns.path}`, '--', process.execPath, ...(opts.nodeArgs ?? NODE_FLAGS), path.join(REPO, 'dist', 'main.js')], {
    stdio: ['ignore', log.fd, log.fd],
    // No dockerd in this tier: never the machine's socket.
    env: cleanEnv({ TSNET_SOCKET: socket, TSNET_STATE_DIR: stateDir, TSNET_LOG_LEVEL: 'debug', TSNET_DOCKER_HOST: 'off', ...opts.env }),
  });
  await log.close();
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  if (!opts.expectFailure) {
    await waitFor('plugin socket', async () => {
      if (child.exitCode !== null) throw new Error(`plugin exited ${child.exitCode}: ${await fs.readFile(logFile, 'utf8')}`);
      return existsSync(socket) && (await canConnect(socket));
    });
  }
  const client = new Client('http://localhost', { socketPath: socket, pipelining: 0 });
  const proc: PluginProcess = {
    socket,
    stateDir,
    logFile,
    child,
    client,
    exited,
    async call(method, body) {
      const res = await client.request({ path: `/${method}`, method: 'POST', body: body === undefined ? '' : JSON.stringify(body) + '\n' });
      const text = await res.body.text();
      return { status: res.statusCode, body: text ? (JSON.parse(text) as Record<string, unknown>) : {} };
    },
    async stop(signal = 'SIGTERM') {
      await client.close().catch(() => undefined);
      if (child.exitCode === null && child.signalCode === null) child.kill(signal);
      const timer = setTimeout(() => child.kill('SIGKILL'), 15_000);
      const code = await exited;
      clearTimeout(timer);
      return code;
    },
  };
  return proc;
}

/** A 64-hex Docker-style ID. */
export function dockerId(): string {
  return randomBytes(32).toString('hex');
}
