// The process's own event stream: what tsnet did, as it did it, for
// `tsnetctl events` (JSON lines over the admin socket). Fed from the
// answers to dockerd's requests (only successful ones: an event says a
// thing happened), from reconcile reports and from the overlay manager's
// peer changes. A short backlog lets a client that just connected see what
// happened a moment before; a slow client is cut off rather than let its
// buffer grow without bound.
import { Readable } from 'node:stream';
import type { ReconcileReport } from './driver/reconcile.js';
import type { State } from './store/schema.js';

export type EventType =
  | 'network.created'
  | 'network.removed'
  | 'endpoint.created'
  | 'endpoint.removed'
  | 'ports.published'
  | 'peer.joined'
  | 'peer.left'
  | 'reconcile.fixed';

export interface TsnetEvent {
  seq: number;
  time: string;
  type: EventType;
  [k: string]: unknown;
}

const BACKLOG = 256;
/** a stream holding this many unread events is ended: the client is not reading */
const MAX_UNREAD = 1024;

export class EventBus {
  #seq = 0;
  readonly #backlog: TsnetEvent[] = [];
  readonly #streams = new Set<Readable>();

  emit(type: EventType, fields: Record<string, unknown> = {}): TsnetEvent {
    const ev: TsnetEvent = { seq: ++this.#seq, time: new Date().toISOString(), type, ...fields };
    this.#backlog.push(ev);
    if (this.#backlog.length > BACKLOG) this.#backlog.shift();
    const line = `${JSON.stringify(ev)}\n`;
    for (const s of this.#streams) {
      if (s.readableLength > MAX_UNREAD * 256) {
        // Out of the set first: a push after the end is an error event.
        this.#streams.delete(s);
        s.push(null);
      } else s.push(line);
    }
    return ev;
  }

  get subscribers(): number {
    return this.#streams.size;
  }

  recent(): TsnetEvent[] {
    return [...this.#backlog];
  }

  /** A stream of JSON lines; with `recent`, the backlog first. Ends when the bus closes. */
  subscribe(opts: { recent?: boolean } = {}): Readable {
    const s = new Readable({ read() {} });
    // Node sends the response head with the first body byte: an empty line
    // first tells the client at once that it is subscribed.
    s.push('\n');
    if (opts.recent) for (const ev of this.#backlog) s.push(`${JSON.stringify(ev)}\n`);
    this.#streams.add(s);
    const drop = (): void => void this.#streams.delete(s);
    s.once('close', drop);
    s.once('end', drop);
    return s;
  }

  /** End every stream (shutdown: an open stream would keep the server from closing). */
  close(): void {
    for (const s of this.#streams) s.push(null);
    this.#streams.clear();
  }
}

/** The event a successful plugin request makes, if any; `body` is what dockerd sent, `state` the store after the answer. */
export function eventForRequest(method: string, body: unknown, state: State): { type: EventType; fields: Record<string, unknown> } | undefined {
  const b = (body && typeof body === 'object' ? body : {}) as Record<string, unknown>;
  const network = typeof b.NetworkID === 'string' ? b.NetworkID : undefined;
  const endpoint = typeof b.EndpointID === 'string' ? b.EndpointID : undefined;
  switch (method) {
    case 'NetworkDriver.CreateNetwork': {
      const n = network ? state.networks[network] : undefined;
      return { type: 'network.created', fields: { network, mode: n?.mode, bridge: n?.bridge, subnets: n ? [...n.ipv4, ...n.ipv6].map((s) => s.pool) : [] } };
    }
    case 'NetworkDriver.DeleteNetwork':
      return { type: 'network.removed', fields: { network } };
    case 'NetworkDriver.CreateEndpoint': {
      const e = endpoint ? state.endpoints[endpoint] : undefined;
      return { type: 'endpoint.created', fields: { network, endpoint, address: e?.address, addressV6: e?.addressV6, mac: e?.mac, hostVeth: e?.hostVeth } };
    }
    case 'NetworkDriver.DeleteEndpoint':
      return { type: 'endpoint.removed', fields: { network, endpoint } };
    case 'NetworkDriver.ProgramExternalConnectivity': {
      const e = endpoint ? state.endpoints[endpoint] : undefined;
      // Connectivity with nothing to publish is not an event an operator follows.
      if (!e || e.ports.length === 0) return undefined;
      return { type: 'ports.published', fields: { network, endpoint, ports: e.ports.map((p) => `${p.hostIp}:${p.hostPort}->${p.containerPort}/${p.proto}`) } };
    }
    default:
      return undefined;
  }
}

/** What a reconcile run fixed, or undefined when it fixed nothing. */
export function reconcileFixes(report: ReconcileReport): Record<string, unknown> | undefined {
  const fixed: Record<string, unknown> = {};
  for (const k of ['bridgesCreated', 'bridgesFixed', 'endpointsReattached', 'endpointsDropped', 'orphanLinksRemoved', 'staleChainsRemoved'] as const) {
    if (report[k].length > 0) fixed[k] = report[k];
  }
  if (Object.keys(fixed).length === 0) return undefined;
  return { ...fixed, ...(report.errors.length > 0 ? { errors: report.errors } : {}), ms: report.ms };
}
