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
  /** where /proc/sys is writable (TSNET_PROC_SYS); absent: /proc/sys */
  readonly procSys?: string;
  /** end helper processes the runner keeps (warm spares); the runner still works after, cold */
  close?(): void;
}

// Keys are /proc/sys-relative paths ("net/ipv4/ip_forward"), never dotted
// names: interface names may contain dots.
const SYSCTL_PATH = /^net\/(ipv4|ipv6|bridge|core)\/[A-Za-z0-9_.\/-]+$/;

export function toPath(key: string, procSys: string): string {
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
  /** told of every command's end (the metrics count failures per program); must not throw */
  onCommand?: (cmd: string, ok: boolean) => void;
}

interface Collected {
  stdout: string;
  stderr: string;
  exitCode: number | undefined;
  signal: string | undefined;
  timedOut: boolean;
  error: NodeJS.ErrnoException | undefined;
}

const EXECA_OPTIONS = {
  reject: false,
  killSignal: 'SIGKILL',
  stripFinalNewline: false,
  env: { LC_ALL: 'C' },
  extendEnv: true,
} as const;

type ExecaResult = Awaited<ReturnType<typeof execa>>;

function toCollected(res: ExecaResult, timedOut: boolean): Collected {
  const cause = (res as { cause?: unknown }).cause as NodeJS.ErrnoException | undefined;
  const spawnError = res.failed && res.exitCode === undefined && !timedOut && !res.signal ? (cause ?? new Error(res.message)) : undefined;
  return {
    stdout: String(res.stdout ?? ''),
    stderr: String(res.stderr ?? ''),
    exitCode: spawnError ? undefined : res.exitCode,
    signal: res.signal,
    timedOut,
    error: spawnError as NodeJS.ErrnoException | undefined,
  };
}

/** Run a program with `input` on stdin; never rejects, the outcome says what happened. */
async function collect(file: string, argv: readonly string[], input: string | undefined, timeoutMs: number): Promise<Collected> {
  const res = await execa(file, argv, {
    // No stdin pipe when there is nothing to feed: cheaper, and a program
    // that exits without reading (ip -V, a failing nft) cannot break the call.
    ...(input === undefined ? { stdin: 'ignore' as const } : { input }),
    ...EXECA_OPTIONS,
    timeout: timeoutMs,
  });
  return toCollected(res, res.timedOut);
}

// Programs that read all their work from stdin can be started before the
// work exists. One spare of each waits, blocked on its stdin, so a request
// pays for a pipe write instead of fork, exec and dynamic linking: about
// 4 ms of the ~6 ms tsnet spent on a CreateEndpoint (see
// docs/benchmarks.md). Each spare serves one request and is replaced after
// it, never during it (see refillLater). Why not
// one long-lived `ip -batch`: iproute2 caches interface indexes for the
// life of the process, so after a bridge is deleted and re-created behind
// its back it fails on the stale index (checked with iproute2 6.1). Why not
// iptables-restore: legacy builds take the xtables lock at start-up, and an
// idle spare would hold it against dockerd.
const WARM = new Set(['ip -batch -', 'ip -force -batch -', 'ip -json -details -batch -', 'bridge -force -batch -', 'nft -f -']);

type Child = ReturnType<typeof execa>;

const REFILL_DELAY_MS = 25;

class Spares {
  readonly #idle = new Map<string, Child>();
  #closed = false;

  /** A started process for this command line, or undefined when none is ready. */
  take(key: string): Child | undefined {
    const child = this.#idle.get(key);
    if (!child) return undefined;
    this.#idle.delete(key);
    if (child.exitCode !== null || child.signalCode !== null || !child.stdin?.writable) return undefined;
    hold(child, true);
    return child;
  }

  /**
   * Starting a process blocks the event loop for a few milliseconds (execa's
   * set-up, fork, exec), so the replacement is started once the request that
   * used the spare has been answered, not while its store write is pending:
   * done right away it put ~5 ms back into every CreateEndpoint.
   */
  refillLater(key: string, file: string, argv: readonly string[]): void {
    setTimeout(() => this.refill(key, file, argv), REFILL_DELAY_MS).unref();
  }

  refill(key: string, file: string, argv: readonly string[]): void {
    if (this.#closed || this.#idle.has(key)) return;
    let child: Child;
    try {
      child = execa(file, argv, { ...EXECA_OPTIONS, stdin: 'pipe' });
    } catch {
      return;
    }
    // Settles when the spare ends, used or not; the user awaits it itself.
    child.catch(() => undefined);
    child.once('exit', () => {
      if (this.#idle.get(key) === child) this.#idle.delete(key);
    });
    hold(child, false);
    this.#idle.set(key, child);
  }

  /** End the idle spares: stdin closed with nothing written, each exits having done nothing. */
  close(): void {
    this.#closed = true;
    for (const child of this.#idle.values()) child.stdin?.end();
    this.#idle.clear();
  }
}

/** An idle spare must not keep the process alive; a working one must. */
function hold(child: Child, on: boolean): void {
  for (const handle of [child, child.stdin, child.stdout, child.stderr] as Array<{ ref?: () => void; unref?: () => void } | null>) {
    if (on) handle?.ref?.();
    else handle?.unref?.();
  }
}

async function collectWarm(child: Child, input: string, timeoutMs: number): Promise<Collected> {
  let timedOut = false;
  const timer = setTimeout(() => {
    timedOut = true;
    child.kill('SIGKILL');
  }, timeoutMs);
  try {
    child.stdin?.end(input);
    return toCollected(await child, timedOut);
  } finally {
    clearTimeout(timer);
  }
}

export function createRunner(log: Logger, netnsPath?: string, options: RunnerOptions = {}): Runner {
  const procSys = (options.procSys ?? '/proc/sys').replace(/\/+$/, '');
  const spares = new Spares();
  const run = async (cmd: string, args: readonly string[], opts: RunOptions = {}): Promise<RunResult> => {
    const [file, argv] = netnsPath ? ['nsenter', [`--net=${netnsPath}`, '--', cmd, ...args]] : [cmd, [...args]];
    const key = `${cmd} ${args.join(' ')}`;
    const warmable = opts.input !== undefined && WARM.has(key);
    const started = performance.now();
    const spare = warmable ? spares.take(key) : undefined;
    const timeoutMs = opts.timeoutMs ?? 20_000;
    const res = spare ? await collectWarm(spare, opts.input ?? '', timeoutMs) : await collect(file, argv, opts.input, timeoutMs);
    const ms = +(performance.now() - started).toFixed(2);
    if (warmable) spares.refillLater(key, file, argv);
    const ok = res.exitCode === 0 && !res.timedOut && !res.error;
    options.onCommand?.(cmd, ok);
    if (ok) {
      log.debug({ cmd, args: args.length > 12 ? [...args.slice(0, 12), '…'] : args, ms, warm: spare !== undefined }, 'exec');
      return { stdout: res.stdout, stderr: res.stderr };
    }
    const stderr = res.timedOut ? 'timed out' : res.error?.code === 'ENOENT' ? `${cmd}: command not found` : res.stderr;
    log.debug({ cmd, args, exitCode: res.exitCode, stderr, ms }, 'exec failed');
    throw new CommandError(cmd, args, res.exitCode, stderr, res.error ?? new Error(`${file} exited with ${res.exitCode ?? res.signal ?? '?'}`));
  };
  return {
    netnsPath,
    procSys,
    run,
    close: () => spares.close(),
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

/**
 * A runner acting inside the named network namespace `path`, through the
 * given one (its metrics, its logging): every command is `nsenter --net`.
 * /proc/sys/net resolves against the opener's namespace, so sysctls are
 * written by a process inside it.
 */
export function netnsRunner(base: Runner, path: string): Runner {
  const procSys = (base.procSys ?? '/proc/sys').replace(/\/+$/, '');
  const run = (cmd: string, args: readonly string[], opts?: RunOptions): Promise<RunResult> => base.run('nsenter', [`--net=${path}`, '--', cmd, ...args], opts);
  return {
    netnsPath: path,
    procSys,
    run,
    async writeSysctl(key, value) {
      await run('tee', [toPath(key, procSys)], { input: value });
    },
    async readSysctl(key) {
      try {
        return (await run('cat', [toPath(key, procSys)])).stdout.trim();
      } catch {
        return undefined;
      }
    },
  };
}
