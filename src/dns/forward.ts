// Names tsnet does not answer go to the host's own resolvers, read from
// /etc/resolv.conf as the host sees it (a managed plugin gets the host's
// file bind-mounted by dockerd), so a container or a whole daemon pointed
// at tsnet loses nothing. Design notes:
// - Each forward uses a socket of its own (a fresh random source port) and a
//   fresh random ID, and takes only a reply from the server it asked that
//   matches the question: a blind spoofer must guess both.
// - Servers in resolv.conf order, each with a deadline; SERVFAIL or REFUSED
//   moves on to the next, as glibc and Docker's own resolver do. A UDP reply
//   that was truncated is relayed as it is: the client asks again over TCP,
//   and so does tsnet.
// - resolv.conf is read again when it changes (checked at most every 2 s);
//   without nameserver lines glibc uses the local host, and so does tsnet.
//   tsnet's own listening addresses are never forwarded to (no loops).
// - In-flight forwards are capped; beyond that a query is REFUSED at once.
import { randomInt } from 'node:crypto';
import dgram from 'node:dgram';
import { promises as fs } from 'node:fs';
import net from 'node:net';
import { ipFamily, parseIp } from '../net/cidr.js';
import { matchesQuery, rcodeOf, RCODE } from './answer.js';

/** nameserver addresses of a resolv.conf text, in order, at most three (as glibc) */
export function parseResolvConf(text: string): string[] {
  const out: string[] = [];
  for (const raw of text.split('\n')) {
    const line = raw.replace(/[#;].*$/, '').trim();
    const m = /^nameserver\s+(\S+)$/.exec(line);
    if (!m) continue;
    // A link-local IPv6 server names its interface (fe80::1%eth0): kept as written.
    const [addr] = m[1]!.split('%');
    if (!addr || !parseIp(addr)) continue;
    if (!out.includes(m[1]!)) out.push(m[1]!);
    if (out.length === 3) break;
  }
  return out;
}

export class ResolvConf {
  readonly file: string;
  #servers: string[] = [];
  #mtime = -1;
  #checked = 0;

  constructor(file = '/etc/resolv.conf') {
    this.file = file;
  }

  async servers(): Promise<string[]> {
    const now = Date.now();
    if (now - this.#checked < 2000 && this.#mtime >= 0) return this.#servers;
    this.#checked = now;
    const st = await fs.stat(this.file).catch(() => undefined);
    const mtime = st ? st.mtimeMs : 0;
    if (mtime !== this.#mtime) {
      this.#mtime = mtime;
      const text = st ? await fs.readFile(this.file, 'utf8').catch(() => '') : '';
      const found = parseResolvConf(text);
      this.#servers = found.length > 0 ? found : ['127.0.0.1', '::1'];
    }
    return this.#servers;
  }
}

export interface ForwarderOptions {
  servers: () => Promise<string[]>;
  /** addresses tsnet answers on itself: never forwarded to */
  own: () => Set<string>;
  /** per server */
  timeoutMs?: number;
  maxInFlight?: number;
  port?: number;
}

export type ForwardResult = { reply: Buffer; server: string } | { rcode: 'SERVFAIL' | 'REFUSED'; reason: string };

export class Forwarder {
  readonly #opts: Required<ForwarderOptions>;
  #inFlight = 0;
  /** per result, for metrics and tsnetctl */
  readonly counts = { forwarded: 0, failed: 0, overloaded: 0 };

  constructor(opts: ForwarderOptions) {
    this.#opts = { timeoutMs: 2000, maxInFlight: 256, port: 53, ...opts };
  }

  get inFlight(): number {
    return this.#inFlight;
  }

  /** Ask the host's resolvers; the reply carries the client's own ID. */
  async forward(query: Buffer, transport: 'udp' | 'tcp'): Promise<ForwardResult> {
    if (this.#inFlight >= this.#opts.maxInFlight) {
      this.counts.overloaded++;
      return { rcode: 'REFUSED', reason: `more than ${this.#opts.maxInFlight} queries in flight` };
    }
    this.#inFlight++;
    try {
      const own = this.#opts.own();
      const servers = (await this.#opts.servers()).filter((s) => !own.has(s.split('%')[0]!));
      let last: ForwardResult = { rcode: 'SERVFAIL', reason: 'no resolver in resolv.conf to forward to' };
      for (const server of servers) {
        const id = randomInt(0, 65536);
        const out = Buffer.from(query);
        out.writeUInt16BE(id, 0);
        let reply: Buffer | undefined;
        try {
          reply = transport === 'udp' ? await this.#udp(server, out) : await this.#tcp(server, out);
        } catch (err) {
          last = { rcode: 'SERVFAIL', reason: `${server}: ${(err as Error).message}` };
          continue;
        }
        const code = rcodeOf(reply);
        reply.writeUInt16BE(query.readUInt16BE(0), 0);
        last = { reply, server };
        if (code === RCODE.SERVFAIL || code === RCODE.REFUSED) continue;
        this.counts.forwarded++;
        return last;
      }
      if ('reply' in last) this.counts.forwarded++;
      else this.counts.failed++;
      return last;
    } finally {
      this.#inFlight--;
    }
  }

  #udp(server: string, query: Buffer): Promise<Buffer> {
    const [address, scope] = server.split('%');
    return new Promise<Buffer>((resolve, reject) => {
      const sock = dgram.createSocket(ipFamily(address!) === 6 ? 'udp6' : 'udp4');
      let settled = false;
      const done = (err: Error | undefined, reply?: Buffer): void => {
        if (settled) return;
        settled = true;
        clearTimeout(timer);
        sock.removeAllListeners();
        sock.on('error', () => undefined);
        try {
          sock.close();
        } catch {
          /* closed */
        }
        if (err) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(() => done(new Error(`no answer within ${this.#opts.timeoutMs} ms`)), this.#opts.timeoutMs);
      sock.on('error', (err) => done(err));
      // Connected: the kernel drops datagrams from anyone but the server.
      sock.on('message', (msg) => {
        if (matchesQuery(query, msg)) done(undefined, msg);
      });
      sock.connect(this.#opts.port, scope ? `${address}%${scope}` : address, () => {
        try {
          sock.send(query, (err) => err && done(err));
        } catch (err) {
          // Closed by the deadline before it connected.
          done(err as Error);
        }
      });
    });
  }

  #tcp(server: string, query: Buffer): Promise<Buffer> {
    return new Promise<Buffer>((resolve, reject) => {
      const sock = net.connect({ host: server, port: this.#opts.port });
      let buf = Buffer.alloc(0);
      const done = (err: Error | undefined, reply?: Buffer): void => {
        clearTimeout(timer);
        sock.removeAllListeners();
        sock.on('error', () => undefined);
        sock.destroy();
        if (err) reject(err);
        else resolve(reply!);
      };
      const timer = setTimeout(() => done(new Error(`no answer within ${this.#opts.timeoutMs} ms`)), this.#opts.timeoutMs);
      sock.on('error', (err) => done(err));
      sock.on('connect', () => {
        const len = Buffer.alloc(2);
        len.writeUInt16BE(query.length);
        sock.write(Buffer.concat([len, query]));
      });
      sock.on('data', (chunk: Buffer) => {
        buf = Buffer.concat([buf, chunk]);
        if (buf.length < 2) return;
        const need = buf.readUInt16BE(0);
        if (buf.length < 2 + need) return;
        const msg = buf.subarray(2, 2 + need);
        if (matchesQuery(query, msg)) done(undefined, Buffer.from(msg));
        else done(new Error('the reply did not match the query'));
      });
      sock.on('end', () => done(new Error('connection closed before a reply')));
    });
  }
}
