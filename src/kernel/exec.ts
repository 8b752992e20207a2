// The one place tsnet starts processes. Every kernel change goes through a
// Runner: argv arrays only (execa, never a shell), a timeout, stderr kept
// for the error, and the duration logged at debug. execa is the project's
// committed process library; measured here it costs ~1-1.5 ms more per
// command than bare child_process.spawn. Tests pass a fake Runner
// and assert on argv; kernel tests pass one bound to a throwaway namespace.
import { execa } from 'execa';
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
  signal: string | undefined;
  timedOut: boolean;
  error: NodeJS.ErrnoException | undefined;
}

/** Run a program with `input` on stdin; never rejects, the outcome says what happened. */
async function collect(file: string, argv: readonly string[], input: string | undefined, timeoutMs: number): Promise<Collected> {
  const res = await execa(file, argv, {
    // No stdin pipe when there is nothing to feed: cheaper, and a program
    // that exits without reading (ip -V, a failing nft) cannot break the call.
    ...(input === undefined ? { stdin: 'ignore' as const } : { input }),
    reject: false,
    timeout: timeoutMs,
    killSignal: 'SIGKILL',
    stripFinalNewline: false,
    env: { LC_ALL: 'C' },
    extendEnv: true,
  });
  const cause = (res as { cause?: unknown }).cause as NodeJS.ErrnoException | undefined;
  const spawnError = res.failed && res.exitCode === undefined && !res.timedOut && !res.signal ? (cause ?? new Error(res.message)) : undefined;
  return {
    stdout: String(res.stdout ?? ''),
    stderr: String(res.stderr ?? ''),
    exitCode: spawnError ? undefined : res.exitCode,
    signal: res.signal,
    timedOut: res.timedOut,
    error: spawnError as NodeJS.ErrnoException | undefined,
  };
}

export function createRunner(log: Logger, netnsPath?: string, options: RunnerOptions = {}): Runner {
  const procSys = (options.procSys ?? '/proc/sys').replace(/\/+$/, '');
  const run = async (cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> => {
    const [file, argv] = netnsPath ? ['nsenter', [`--net=${netnsPath}`, '--', cmd, ...args]] : [cmd, [...args]];
    const started = performance.now();
    const res = await collect(file, argv, opts.input, opts.timeoutMs ?? 20_000);
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
