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
