// A stand-in for dockerd's Engine API on a Unix socket, for the API tier:
// /version, the container list, inspect and /events, at the versions real
// dockerds speak (20.10: up to 1.41; 29.0: 1.44 to 1.52, refusing older
// requests as it does). It can hang like a dockerd that accepts on its
// socket but does not serve its API yet, and end its event streams like one
// that restarts. The e2e tier drives real dockerds; this drives the edges.
import http from 'node:http';
import { promises as fs } from 'node:fs';

export interface FakeContainer {
  Id: string;
  Name: string;
  NetworkSettings: { Networks: Record<string, { NetworkID: string; EndpointID: string; Aliases?: string[] | null; DNSNames?: string[] }> };
}

function cmp(a: string, b: string): number {
  const [x1, x2] = a.split('.').map(Number);
  const [y1, y2] = b.split('.').map(Number);
  return x1! - y1! || x2! - y2!;
}

export class FakeDockerd {
  readonly socket: string;
  version = '20.10.24';
  apiVersion = '1.41';
  minApiVersion = '1.12';
  /** false: connections are accepted and never answered (dockerd restoring containers before its API) */
  serving = true;
  readonly containers = new Map<string, FakeContainer>();
  readonly requests: string[] = [];
  readonly #streams = new Set<http.ServerResponse>();
  readonly #held = new Set<http.ServerResponse>();
  readonly #server: http.Server;

  constructor(socket: string) {
    this.socket = socket;
    this.#server = http.createServer((req, res) => this.#serve(req, res));
  }

  async start(): Promise<void> {
    await fs.rm(this.socket, { force: true });
    await new Promise<void>((resolve) => this.#server.listen(this.socket, resolve));
  }

  #serve(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? '/', 'http://docker');
    this.requests.push(url.pathname);
    if (!this.serving) {
      this.#held.add(res);
      res.once('close', () => this.#held.delete(res));
      return;
    }
    const json = (status: number, body: unknown): void => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body));
    };
    if (url.pathname === '/version') return json(200, { Version: this.version, ApiVersion: this.apiVersion, MinAPIVersion: this.minApiVersion });
    const m = /^\/v(\d+\.\d+)(\/.*)$/.exec(url.pathname);
    if (!m) return json(404, { message: 'page not found' });
    const [, v, rest] = m;
    if (cmp(v!, this.minApiVersion) < 0) return json(400, { message: `client version ${v} is too old. Minimum supported API version is ${this.minApiVersion}` });
    if (cmp(v!, this.apiVersion) > 0) return json(400, { message: `client version ${v} is too new. Maximum supported API version is ${this.apiVersion}` });
    if (rest === '/containers/json') {
      // As dockerd lists them: endpoint IDs, no aliases.
      return json(
        200,
        [...this.containers.values()].map((c) => ({
          Id: c.Id,
          Names: [`/${c.Name}`],
          NetworkSettings: { Networks: Object.fromEntries(Object.entries(c.NetworkSettings.Networks).map(([k, n]) => [k, { NetworkID: n.NetworkID, EndpointID: n.EndpointID }])) },
        })),
      );
    }
    const inspect = /^\/containers\/([0-9a-f]{64})\/json$/.exec(rest!);
    if (inspect) {
      const c = this.containers.get(inspect[1]!);
      if (!c) return json(404, { message: `No such container: ${inspect[1]}` });
      const dnsNamesSince = cmp(v!, '1.44') >= 0;
      const networks = Object.fromEntries(
        Object.entries(c.NetworkSettings.Networks).map(([k, n]) => {
          const { DNSNames, ...rest } = n;
          return [k, dnsNamesSince ? { ...rest, DNSNames: DNSNames ?? [] } : rest];
        }),
      );
      return json(200, { Id: c.Id, Name: `/${c.Name}`, NetworkSettings: { Networks: networks } });
    }
    if (rest === '/events') {
      res.writeHead(200, { 'content-type': 'application/json' });
      res.flushHeaders();
      this.#streams.add(res);
      res.once('close', () => this.#streams.delete(res));
      return;
    }
    json(404, { message: 'page not found' });
  }

  get streams(): number {
    return this.#streams.size;
  }

  emit(type: string, action: string, actorId: string, attributes: Record<string, string> = {}): void {
    const line = `${JSON.stringify({ Type: type, Action: action, Actor: { ID: actorId, Attributes: attributes }, scope: 'local', time: Math.floor(Date.now() / 1000) })}\n`;
    for (const s of this.#streams) s.write(line);
  }

  /** Write raw bytes to every event stream (garbage tests). */
  emitRaw(text: string): void {
    for (const s of this.#streams) s.write(text);
  }

  /** As dockerd going down: every connection closed. */
  drop(): void {
    for (const s of [...this.#streams, ...this.#held]) s.destroy();
    this.#server.closeAllConnections();
  }

  async close(): Promise<void> {
    this.drop();
    await new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }
}
