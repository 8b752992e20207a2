// The one place tsnet starts processes. Every kernel change goes through a
// Runner: argv arrays only (child_process.spawn, never a shell), a timeout,
// stderr kept for the error, and the duration logged at debug. Plain spawn
// rather than execa: execa cost ~4 ms of this process's CPU per command
// (about 2 ms for spawn itself; an endpoint runs two commands, a network
// about eight) and ~8 MB of resident memory for its modules. Tests pass a fake Runner
// and assert on argv; kernel tests pass one bound to a throwaway namespace.
import { spawn } from 'node:child_process';
import { promises as fs } from 'node:fs';
import type { Logger } from 'pino';
import { TsnetError } from '../errors.js';

export interface RunOptions {
  /** text fed to stdin (ip -batch -, nft -f -, iptables-restore) */
  input?: string;
  timeoutMs?: number;
}

export interface RunResult {
  stdout: string;
  stderr: string;
}

export class CommandError extends TsnetError {
  readonly cmd: string;
  readonly args: readonly string[];
  readonly exitCode: number | undefined;
  readonly stderr: string;

  constructor(cmd: string, args: readonly string[], exitCode: number | undefined, stderr: string, cause?: unknown) {
    const text = stderr.trim().split('\n').slice(-3).join(' | ') || `exit code ${exitCode ?? '?'}`;
    super('TSNET_ERR_CMD_FAILED', `${cmd} ${args.slice(0, 4).join(' ')}${args.length > 4 ? ' …' : ''}: ${text}`, { cause });
    this.name = 'CommandError';
    this.cmd = cmd;
    this.args = args;
    this.exitCode = exitCode;
    this.stderr = stderr;
  }
}

export function isExists(err: unknown): boolean {
  return err instanceof CommandError && /File exists|already exists/i.test(err.stderr);
}

export function isNotFound(err: unknown): boolean {
  return (
    err instanceof CommandError &&
    /Cannot find device|does not exist|No such file or directory|No such process|not found|Bad rule|No chain\/target\/match|Could not process rule/i.test(
      err.stderr,
    )
  );
}

export interface Runner {
  run(cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult>;
  /** write a /proc/sys value in the namespace this runner acts in */
  writeSysctl(key: string, value: string): Promise<void>;
  readSysctl(key: string): Promise<string | undefined>;
  /** the network namespace path commands enter, if any */
  readonly netnsPath: string | undefined;
}

// Keys are /proc/sys-relative paths ("net/ipv4/ip_forward"), never dotted
// names: interface names may contain dots.
const SYSCTL_PATH = /^net\/(ipv4|ipv6|bridge|core)\/[A-Za-z0-9_.\/-]+$/;

function toPath(key: string, procSys: string): string {
  if (!SYSCTL_PATH.test(key) || key.split('/').some((part) => part === '..' || part === '.' || part === '')) {
    throw new TsnetError('TSNET_ERR_INTERNAL', `refusing sysctl path ${key}`);
  }
  return `${procSys}/${key}`;
}

/** The sysctl path of a per-interface setting. */
export function ifSysctl(family: 'ipv4' | 'ipv6', ifname: string, leaf: string): string {
  return `net/${family}/conf/${ifname}/${leaf}`;
}

export interface RunnerOptions {
  /**
   * Where /proc/sys is writable (TSNET_PROC_SYS). A managed plugin's own
   * /proc/sys is read-only, so it gets the host's /proc/sys/net bind-mounted
   * elsewhere; net sysctls resolve against the opener's network namespace,
   * which for a plugin with `network.type: host` is the host's.
   */
  procSys?: string;
}

interface Collected {
  stdout: string;
  stderr: string;
  exitCode: number | undefined;
  signal: NodeJS.Signals | undefined;
  timedOut: boolean;
  error: NodeJS.ErrnoException | undefined;
}

/** Run a program with `input` on stdin; never rejects, the outcome says what happened. */
function spawnCollect(file: string, argv: readonly string[], input: string, timeoutMs: number): Promise<Collected> {
  return new Promise((resolve) => {
    const out: Collected = { stdout: '', stderr: '', exitCode: undefined, signal: undefined, timedOut: false, error: undefined };
    let child;
    try {
      child = spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'], env: { ...process.env, LC_ALL: 'C' } });
    } catch (err) {
      out.error = err as NodeJS.ErrnoException;
      resolve(out);
      return;
    }
    const timer = setTimeout(() => {
      out.timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.setEncoding('utf8').on('data', (d: string) => (out.stdout += d));
    child.stderr.setEncoding('utf8').on('data', (d: string) => (out.stderr += d));
    // A program that exits without reading its stdin (ip -V, a failing nft) is not an error of ours.
    child.stdin.on('error', () => undefined);
    child.on('error', (err: NodeJS.ErrnoException) => {
      out.error ??= err;
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      out.exitCode = out.error ? undefined : (code ?? undefined);
      out.signal = signal ?? undefined;
      resolve(out);
    });
    child.stdin.end(input);
  });
}

export function createRunner(log: Logger, netnsPath?: string, options: RunnerOptions = {}): Runner {
  const procSys = (options.procSys ?? '/proc/sys').replace(/\/+$/, '');
  const run = async (cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> => {
    const [file, argv] = netnsPath ? ['nsenter', [`--net=${netnsPath}`, '--', cmd, ...args]] : [cmd, [...args]];
    const started = performance.now();
    const res = await spawnCollect(file, argv, opts.input ?? '', opts.timeoutMs ?? 20_000);
    const ms = +(performance.now() - started).toFixed(2);
    if (res.exitCode === 0 && !res.timedOut && !res.error) {
      log.debug({ cmd, args: args.length > 12 ? [...args.slice(0, 12), '…'] : args, ms }, 'exec');
      return { stdout: res.stdout, stderr: res.stderr };
    }
    const stderr = res.timedOut ? 'timed out' : res.error?.code === 'ENOENT' ? `${cmd}: command not found` : res.stderr;
    log.debug({ cmd, args, exitCode: res.exitCode, stderr, ms }, 'exec failed');
    throw new CommandError(cmd, args, res.exitCode, stderr, res.error ?? new Error(`${file} exited with ${res.exitCode ?? res.signal ?? '?'}`));
  };
  return {
    netnsPath,
    run,
    async writeSysctl(key, value) {
      const p = toPath(key, procSys);
      if (!netnsPath) {
        await fs.writeFile(p, value);
        return;
      }
      // /proc/sys/net resolves against the opener's namespace, so the write
      // must happen from a process inside it.
      await run('tee', [p], { input: value });
    },
    async readSysctl(key) {
      const p = toPath(key, procSys);
      try {
        if (!netnsPath) return (await fs.readFile(p, 'utf8')).trim();
        return (await run('cat', [p])).stdout.trim();
      } catch {
        return undefined;
      }
    },
  };
}
