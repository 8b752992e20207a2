// The part of dockerd's Engine API tsnet reads: its version (to negotiate
// one both sides speak), the running containers, one container's networks,
// and the event stream. dockerd never tells a network driver a container's
// name or aliases (modern-dockerd.md §3); this is where they come from.
// Design notes:
// - No plugin request ever waits on anything here. dockerd starts
//   restart-policy containers (and so calls the plugin) before it serves the
//   API, with its socket already accepting: a handler waiting on the API
//   would hang dockerd's start. Every call has a deadline, and only the
//   background watcher (watcher.ts) makes them.
// - Version negotiation as the docker CLI does it: the highest version both
//   sides speak, min(server's ApiVersion, ours), refused when under the
//   server's MinAPIVersion (dockerd 29.0-29.2 refuse below 1.44) or ours.
// - The fields read (Name, NetworkSettings.Networks[].{NetworkID,
//   EndpointID, Aliases, DNSNames}, events' Type/Action/Actor) are the same
//   from 1.24 to 1.52 (moby's api/docs/CHANGELOG.md), except DNSNames, which
//   1.44 added: the names Docker's own DNS answers for the endpoint. Before
//   1.44 that is the container name plus Aliases (which then hold the short
//   ID too).
// - Two connections: the event stream holds one for as long as it lasts
//   (undici queues requests behind a pending one on the same connection).
import { Client } from 'undici';
import { TsnetError } from '../errors.js';

export const API_MIN = '1.24';
/** Docker 29.0's API; what tsnet reads is unchanged up to here */
export const API_MAX = '1.52';
export const DNSNAMES_SINCE = '1.44';

const CALL_TIMEOUT_MS = 10_000;

export function parseApiVersion(v: unknown): [number, number] | undefined {
  if (typeof v !== 'string') return undefined;
  const m = /^(\d{1,3})\.(\d{1,3})$/.exec(v);
  return m ? [Number(m[1]), Number(m[2])] : undefined;
}

export function compareApiVersions(a: string, b: string): number {
  const x = parseApiVersion(a);
  const y = parseApiVersion(b);
  if (!x || !y) throw new TsnetError('TSNET_ERR_INTERNAL', `not an API version: ${a} or ${b}`);
  return x[0] - y[0] || x[1] - y[1];
}

export interface ServerVersion {
  /** dockerd's release, e.g. 26.1.5 */
  version: string;
  apiMax: string;
  apiMin: string;
}

/** What GET /version answers, checked; a daemon older than 1.25 sends no MinAPIVersion. */
export function parseServerVersion(raw: unknown): ServerVersion {
  const r = (raw && typeof raw === 'object' ? raw : {}) as Record<string, unknown>;
  if (!parseApiVersion(r.ApiVersion)) throw new TsnetError('TSNET_ERR_UNAVAILABLE', `dockerd's /version has no usable ApiVersion (${JSON.stringify(r.ApiVersion)})`);
  const apiMin = parseApiVersion(r.MinAPIVersion) ? (r.MinAPIVersion as string) : '1.12';
  return { version: typeof r.Version === 'string' ? r.Version : '?', apiMax: r.ApiVersion as string, apiMin };
}

/** The highest API version both dockerd and tsnet speak. */
export function negotiateApiVersion(server: ServerVersion, ours: { min: string; max: string } = { min: API_MIN, max: API_MAX }): string {
  const v = compareApiVersions(server.apiMax, ours.max) < 0 ? server.apiMax : ours.max;
  if (compareApiVersions(v, ours.min) < 0) {
    throw new TsnetError('TSNET_ERR_UNSUPPORTED', `dockerd ${server.version} speaks Engine API up to ${server.apiMax}; tsnet needs ${ours.min} or later`);
  }
  if (compareApiVersions(v, server.apiMin) < 0) {
    throw new TsnetError('TSNET_ERR_UNSUPPORTED', `dockerd ${server.version} accepts Engine API ${server.apiMin} or later; tsnet speaks up to ${ours.max}`);
  }
  return v;
}

export interface ContainerNetwork {
  networkId: string;
  /** the network's name on this host (docker network ls) */
  networkName: string;
  endpointId: string;
  /** what Docker's DNS answers for this endpoint, lower case, container name first */
  names: string[];
}

export interface ContainerView {
  id: string;
  name: string;
  networks: ContainerNetwork[];
}

const ID = /^[0-9a-f]{64}$/;
const LABEL = /^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$/;

/**
 * A name Docker would answer and a DNS query can carry: dot-separated
 * labels of letters, digits, '_' and '-', at most 253 characters. Returns
 * it in lower case (DNS names compare case-insensitively), or undefined.
 */
export function dnsName(raw: unknown): string | undefined {
  if (typeof raw !== 'string' || raw.length === 0 || raw.length > 253) return undefined;
  const name = raw.toLowerCase();
  return name.split('.').every((l) => LABEL.test(l)) ? name : undefined;
}

/**
 * One container's names per network, from GET /containers/{id}/json at the
 * negotiated version: DNSNames where it exists, else the name and Aliases.
 * Anything malformed is left out rather than trusted.
 */
export function containerView(raw: unknown, apiVersion: string): ContainerView | undefined {
  if (!raw || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  if (typeof r.Id !== 'string' || !ID.test(r.Id)) return undefined;
  const name = typeof r.Name === 'string' ? r.Name.replace(/^\//, '') : '';
  const settings = r.NetworkSettings as Record<string, unknown> | undefined;
  const nets = settings && typeof settings.Networks === 'object' && settings.Networks ? (settings.Networks as Record<string, unknown>) : {};
  const useDnsNames = compareApiVersions(apiVersion, DNSNAMES_SINCE) >= 0;
  const networks: ContainerNetwork[] = [];
  for (const [networkName, value] of Object.entries(nets)) {
    if (!value || typeof value !== 'object') continue;
    const n = value as Record<string, unknown>;
    if (typeof n.NetworkID !== 'string' || !ID.test(n.NetworkID) || typeof n.EndpointID !== 'string' || !ID.test(n.EndpointID)) continue;
    const listed = useDnsNames && Array.isArray(n.DNSNames) ? n.DNSNames : [name, ...(Array.isArray(n.Aliases) ? n.Aliases : [])];
    const names: string[] = [];
    for (const candidate of [name, ...listed]) {
      const d = dnsName(candidate);
      if (d && !names.includes(d)) names.push(d);
    }
    networks.push({ networkId: n.NetworkID, networkName, endpointId: n.EndpointID, names });
  }
  return { id: r.Id, name, networks };
}

export interface EngineEvent {
  type: string;
  action: string;
  actorId: string;
  attributes: Record<string, string>;
}

/** One line of GET /events; undefined for anything that is not an event object. */
export function parseEvent(line: string): EngineEvent | undefined {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch {
    return undefined;
  }
  if (!raw || typeof raw !== 'object') return undefined;
  const r = raw as Record<string, unknown>;
  const actor = (r.Actor && typeof r.Actor === 'object' ? r.Actor : {}) as Record<string, unknown>;
  if (typeof r.Type !== 'string' || typeof r.Action !== 'string' || typeof actor.ID !== 'string') return undefined;
  const attributes: Record<string, string> = {};
  if (actor.Attributes && typeof actor.Attributes === 'object') {
    for (const [k, v] of Object.entries(actor.Attributes as Record<string, unknown>)) if (typeof v === 'string') attributes[k] = v;
  }
  return { type: r.Type, action: r.Action, actorId: actor.ID, attributes };
}

/** The events the watcher follows: endpoints coming and going, containers removed or renamed. */
export const EVENT_FILTERS = { type: { container: true, network: true }, event: { connect: true, disconnect: true, destroy: true, rename: true } };

export class EngineClient {
  readonly socket: string;
  readonly #calls: Client;
  readonly #stream: Client;
  readonly #timeoutMs: number;

  /** `timeoutMs`: for each call (and for the event stream's headers); inspects get three times that */
  constructor(socket: string, opts: { timeoutMs?: number } = {}) {
    this.socket = socket;
    this.#timeoutMs = opts.timeoutMs ?? CALL_TIMEOUT_MS;
    this.#calls = new Client('http://docker', { socketPath: socket, connect: { timeout: 3000 } });
    this.#stream = new Client('http://docker', { socketPath: socket, connect: { timeout: 3000 }, bodyTimeout: 0 });
  }

  async #get(path: string, timeoutMs = this.#timeoutMs): Promise<{ status: number; body: unknown }> {
    const res = await this.#calls.request({ method: 'GET', path, headersTimeout: timeoutMs, bodyTimeout: timeoutMs, signal: AbortSignal.timeout(timeoutMs) });
    const text = await res.body.text();
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      body = text;
    }
    return { status: res.statusCode, body };
  }

  async version(): Promise<ServerVersion> {
    const { status, body } = await this.#get('/version');
    if (status !== 200) throw new TsnetError('TSNET_ERR_UNAVAILABLE', `dockerd's /version answered ${status}`);
    return parseServerVersion(body);
  }

  /** Running containers and their endpoint IDs (the list carries no aliases: those need an inspect). */
  async runningContainers(api: string): Promise<Array<{ id: string; endpointIds: string[] }>> {
    const { status, body } = await this.#get(`/v${api}/containers/json`);
    if (status !== 200 || !Array.isArray(body)) throw new TsnetError('TSNET_ERR_UNAVAILABLE', `dockerd's container list answered ${status}`);
    const out: Array<{ id: string; endpointIds: string[] }> = [];
    for (const c of body as Array<Record<string, unknown>>) {
      if (!c || typeof c.Id !== 'string' || !ID.test(c.Id)) continue;
      const nets = (c.NetworkSettings as { Networks?: Record<string, { EndpointID?: unknown }> } | undefined)?.Networks ?? {};
      const endpointIds = Object.values(nets)
        .map((n) => n?.EndpointID)
        .filter((e): e is string => typeof e === 'string' && ID.test(e));
      out.push({ id: c.Id, endpointIds });
    }
    return out;
  }

  /** A container's names per network; undefined when it no longer exists. */
  async inspect(api: string, id: string): Promise<ContainerView | undefined> {
    if (!ID.test(id)) return undefined;
    // An inspect waits for the container's lock, which a start holds.
    const { status, body } = await this.#get(`/v${api}/containers/${id}/json`, this.#timeoutMs * 3);
    if (status === 404) return undefined;
    if (status !== 200) throw new TsnetError('TSNET_ERR_UNAVAILABLE', `dockerd's inspect of ${id.slice(0, 12)} answered ${status}`);
    return containerView(body, api);
  }

  /**
   * Follow GET /events until it ends. Resolves once dockerd has answered
   * (the stream is open); `done` settles when it ends or fails.
   */
  async events(api: string, onEvent: (e: EngineEvent) => void, signal: AbortSignal): Promise<{ done: Promise<void> }> {
    const filters = encodeURIComponent(JSON.stringify(EVENT_FILTERS));
    const res = await this.#stream.request({ method: 'GET', path: `/v${api}/events?filters=${filters}`, headersTimeout: this.#timeoutMs, signal });
    if (res.statusCode !== 200) {
      await res.body.dump().catch(() => undefined);
      throw new TsnetError('TSNET_ERR_UNAVAILABLE', `dockerd's /events answered ${res.statusCode}`);
    }
    const done = (async () => {
      let pending = '';
      for await (const chunk of res.body) {
        pending += (chunk as Buffer).toString('utf8');
        // A line longer than any event dockerd sends is not one: drop it.
        if (pending.length > 1 << 20) pending = '';
        let nl: number;
        while ((nl = pending.indexOf('\n')) >= 0) {
          const line = pending.slice(0, nl).trim();
          pending = pending.slice(nl + 1);
          const ev = line ? parseEvent(line) : undefined;
          if (ev) onEvent(ev);
        }
      }
    })();
    return { done };
  }

  async close(): Promise<void> {
    await Promise.all([this.#calls.destroy().catch(() => undefined), this.#stream.destroy().catch(() => undefined)]);
  }
}
