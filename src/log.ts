// One pino logger for the process, JSON lines on stdout (dockerd copies a
// managed plugin's stdout into its own log). Requests get child loggers bound
// to their network and endpoint IDs.
import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { name: 'tsnet', pid: process.pid },
      timestamp: pino.stdTimeFunctions.isoTime,
      formatters: { level: (label) => ({ level: label }) },
      serializers: { err: pino.stdSerializers.err },
    },
    destination ?? pino.destination({ fd: 1, sync: false }),
  );
}

/** Bindings for a request's child logger: short IDs keep lines readable, full IDs stay greppable. */
export function requestBindings(body: unknown): Record<string, string> {
  const out: Record<string, string> = {};
  if (body && typeof body === 'object') {
    const b = body as Record<string, unknown>;
    for (const [k, key] of [
      ['NetworkID', 'networkId'],
      ['EndpointID', 'endpointId'],
      ['PoolID', 'poolId'],
    ] as const) {
      const v = b[k];
      if (typeof v === 'string' && v.length <= 160) out[key] = v;
    }
  }
  return out;
}

type Level = 'trace' | 'debug' | 'info' | 'warn' | 'error' | 'fatal';

/**
 * A request's child logger, made on first use. pino serializes a child's
 * bindings when the child is made: two children per request (Fastify's, with
 * the request id, and the route's, with the network and endpoint IDs) cost
 * about a tenth of the plugin's CPU under IPAM load, while most requests
 * write no line at the default level. Level checks go to the parent, so a
 * call below the level costs nothing.
 */
class LazyChild {
  readonly #parent: Logger;
  readonly #bindings: Record<string, unknown>;
  #real: Logger | undefined;

  constructor(parent: Logger, bindings: Record<string, unknown>) {
    this.#parent = parent;
    this.#bindings = bindings;
  }

  #write(level: Level, args: unknown[]): void {
    if (!this.#parent.isLevelEnabled(level)) return;
    this.#real ??= this.#parent.child(this.#bindings);
    (this.#real[level] as (...a: unknown[]) => void)(...args);
  }

  get level(): string {
    return this.#parent.level;
  }

  isLevelEnabled(level: string): boolean {
    return this.#parent.isLevelEnabled(level);
  }

  bindings(): Record<string, unknown> {
    return { ...this.#parent.bindings(), ...this.#bindings };
  }

  child(bindings: Record<string, unknown>): Logger {
    return lazyChild(this.#parent, { ...this.#bindings, ...bindings });
  }

  trace(...args: unknown[]): void {
    this.#write('trace', args);
  }

  debug(...args: unknown[]): void {
    this.#write('debug', args);
  }

  info(...args: unknown[]): void {
    this.#write('info', args);
  }

  warn(...args: unknown[]): void {
    this.#write('warn', args);
  }

  error(...args: unknown[]): void {
    this.#write('error', args);
  }

  fatal(...args: unknown[]): void {
    this.#write('fatal', args);
  }

  silent(): void {}
}

export function lazyChild(parent: Logger, bindings: Record<string, unknown>): Logger {
  // A lazy child of a lazy child is one lazy child of the real parent.
  if ((parent as unknown) instanceof LazyChild) return parent.child(bindings);
  return new LazyChild(parent, bindings) as unknown as Logger;
}
