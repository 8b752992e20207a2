// The error catalogue. Every failure a request can meet is one of these codes,
// so logs, tests and the Docker-facing reply all speak the same vocabulary.
// dockerd only sees the message (protocol.md §1.5: HTTP 500 + {"Err": msg}),
// prefixed by the method name, so messages name the object and the reason.

export const ErrorCodes = {
  TSNET_ERR_INVALID_REQUEST: 'the request does not match the protocol schema',
  TSNET_ERR_INVALID_OPTION: 'a network or endpoint option is invalid',
  TSNET_ERR_INVALID_CONFIG: 'the plugin configuration is invalid',
  TSNET_ERR_NETWORK_NOT_FOUND: 'no such network',
  TSNET_ERR_NETWORK_EXISTS: 'the network already exists with other settings',
  TSNET_ERR_ENDPOINT_NOT_FOUND: 'no such endpoint',
  TSNET_ERR_ENDPOINT_EXISTS: 'the endpoint already exists',
  TSNET_ERR_BRIDGE_IN_USE: 'the bridge name is used by another network or device',
  TSNET_ERR_POOL_NOT_FOUND: 'no such address pool',
  TSNET_ERR_POOL_OVERLAP: 'the address pool overlaps an existing pool',
  TSNET_ERR_POOL_EXHAUSTED: 'no free address pool is left',
  TSNET_ERR_ADDRESS_EXHAUSTED: 'no free address is left in the pool',
  TSNET_ERR_ADDRESS_IN_USE: 'the address is already allocated',
  TSNET_ERR_ADDRESS_OUT_OF_POOL: 'the address is outside the pool',
  TSNET_ERR_PORT_IN_USE: 'the host port is already published',
  TSNET_ERR_CMD_FAILED: 'a kernel command failed',
  TSNET_ERR_STORE: 'the state store failed',
  TSNET_ERR_STORE_CORRUPT: 'the state store cannot be read',
  TSNET_ERR_UNAVAILABLE: 'the plugin cannot serve this request now',
  TSNET_ERR_CLUSTER: 'the cluster store rejected the request',
  TSNET_ERR_UNSUPPORTED: "this host's kernel or this network cannot do what was asked",
  TSNET_ERR_PARENT: 'the parent interface cannot carry the network',
  TSNET_ERR_INTERNAL: 'an unexpected internal error',
} as const;

export type ErrorCode = keyof typeof ErrorCodes;

export class TsnetError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;

  constructor(code: ErrorCode, message?: string, opts: { cause?: unknown; details?: Record<string, unknown> } = {}) {
    super(message ?? ErrorCodes[code], opts.cause === undefined ? undefined : { cause: opts.cause });
    this.name = 'TsnetError';
    this.code = code;
    this.details = opts.details;
  }
}

export function isTsnetError(err: unknown, code?: ErrorCode): err is TsnetError {
  return err instanceof TsnetError && (code === undefined || err.code === code);
}

/** Quote a user-supplied value for an error message without letting it flood the log. */
export function quote(value: unknown, max = 80): string {
  let s: string;
  try {
    s = typeof value === 'string' ? JSON.stringify(value) : JSON.stringify(value) ?? String(value);
  } catch {
    s = String(value);
  }
  return s.length > max ? `${s.slice(0, max)}…` : s;
}

/** The one mapping from any thrown value to what dockerd reads on a non-200 reply. */
export function toDockerError(err: unknown): { status: number; body: { Err: string } } {
  if (err instanceof TsnetError) return { status: 500, body: { Err: err.message } };
  const msg = err instanceof Error ? err.message : String(err);
  return { status: 500, body: { Err: `internal error: ${msg}` } };
}
