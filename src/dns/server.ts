// tsnet's DNS server: UDP and TCP port 53 on the gateway address of every
// cluster overlay, the address every container of an overlay reaches on its
// own host (the distributed gateway: the same address on every host, kept
// local). Containers use it through Docker's embedded DNS: `docker run
// --dns 10.200.0.1`, or daemon.json "dns", and the embedded DNS forwards
// what it does not know itself to tsnet from the container's own address,
// which says who asks (names.ts). Design notes:
// - One socket per address, not a wildcard one: nothing else on the host
//   (a resolver on 0.0.0.0:53 with SO_REUSEADDR, or on 127.0.0.53) is
//   disturbed, and the address says which network was asked. An address
//   that cannot be bound (its bridge not up yet, port taken) is logged once
//   and tried again at the next sync.
// - Every datagram and TCP frame goes through answer.ts, which validates
//   it; a handler that throws is caught per packet, so no query can stop
//   the server. TCP: bounded connections per address, an idle deadline, and
//   a frame limit of 64 KiB (the protocol's own).
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import { ipFamily } from '../net/cidr.js';
import { decide, errorReply, questionEnd } from './answer.js';
import type { Forwarder } from './forward.js';
import type { NameDirectory } from './names.js';

const MAX_TCP_CONNECTIONS = 64;
const TCP_IDLE_MS = 10_000;

export interface Listen {
  address: string;
  network: string;
}

interface Listener extends Listen {
  udp?: dgram.Socket;
  tcp?: net.Server;
  /** open TCP connections, ended with the listener */
  conns: Set<net.Socket>;
  error?: string;
}

export interface DnsServerOptions {
  names: NameDirectory;
  forwarder: Forwarder;
  log: Logger;
  /** 53 unless a test says otherwise */
  port?: number;
}

export class DnsServer {
  readonly #names: NameDirectory;
  readonly #forwarder: Forwarder;
  readonly #log: Logger;
  readonly port: number;
  readonly #listeners = new Map<string, Listener>();
  #syncing: Promise<void> = Promise.resolve();
  #closed = false;
  /** queries by outcome, for tsnetctl and metrics */
  readonly counts: Record<string, number> = { answered: 0, nodata: 0, forwarded: 0, refused: 0, malformed: 0, notimp: 0, servfail: 0, dropped: 0 };

  constructor(opts: DnsServerOptions) {
    this.#names = opts.names;
    this.#forwarder = opts.forwarder;
    this.#log = opts.log.child({ component: 'dns' });
    this.port = opts.port ?? 53;
  }

  /** Addresses currently served. */
  addresses(): Set<string> {
    return new Set([...this.#listeners.values()].filter((l) => l.udp || l.tcp).map((l) => l.address));
  }

  listening(): Array<{ address: string; network: string; udp: boolean; tcp: boolean; error?: string }> {
    return [...this.#listeners.values()].map((l) => ({ address: l.address, network: l.network, udp: !!l.udp, tcp: !!l.tcp, ...(l.error ? { error: l.error } : {}) }));
  }

  /** Listen on exactly these addresses (serialised: calls queue behind each other). */
  sync(wanted: Listen[]): Promise<void> {
    this.#syncing = this.#syncing.then(() => this.#sync(wanted)).catch((err: unknown) => this.#log.error({ err }, 'DNS listener sync failed'));
    return this.#syncing;
  }

  async #sync(wanted: Listen[]): Promise<void> {
    if (this.#closed) return;
    const want = new Map(wanted.map((w) => [w.address, w]));
    for (const [address, l] of this.#listeners) {
      if (want.get(address)?.network === l.network) continue;
      await this.#stop(l);
      this.#listeners.delete(address);
    }
    for (const w of want.values()) {
      let l = this.#listeners.get(w.address);
      if (!l) {
        l = { ...w, conns: new Set() };
        this.#listeners.set(w.address, l);
      }
      if (l.udp && l.tcp) continue;
      const errors: string[] = [];
      if (!l.udp) l.udp = await this.#bindUdp(l).catch((err: Error) => void errors.push(`udp: ${err.message}`));
      if (!l.tcp) l.tcp = await this.#listenTcp(l).catch((err: Error) => void errors.push(`tcp: ${err.message}`));
      const error = errors.length > 0 ? errors.join('; ') : undefined;
      if (error && error !== l.error) this.#log.warn({ address: l.address, port: this.port, network: l.network, err: error }, 'cannot serve DNS on the overlay gateway address yet; retrying at the next sync');
      if (!error && l.udp && l.tcp) this.#log.info({ address: l.address, port: this.port, network: l.network }, 'serving DNS for the overlay');
      if (error) l.error = error;
      else delete l.error;
    }
  }

  #bindUdp(l: Listener): Promise<dgram.Socket> {
    return new Promise((resolve, reject) => {
      const sock = dgram.createSocket({ type: ipFamily(l.address) === 6 ? 'udp6' : 'udp4' });
      sock.once('error', (err) => {
        sock.close();
        reject(err);
      });
      sock.bind({ address: l.address, port: this.port, exclusive: true }, () => {
        sock.removeAllListeners('error');
        sock.on('error', (err) => this.#log.warn({ address: l.address, err: err.message }, 'DNS socket error'));
        sock.on('message', (msg, rinfo) => {
          void this.#handle(msg, rinfo.address, l.network, 'udp')
            .then((reply) => {
              // The socket may have closed meanwhile (its network removed): send throws then.
              if (reply && l.udp === sock) sock.send(reply, rinfo.port, rinfo.address, () => undefined);
            })
            .catch((err: unknown) => this.#log.error({ err }, 'DNS query handling failed'));
        });
        resolve(sock);
      });
    });
  }

  #listenTcp(l: Listener): Promise<net.Server> {
    return new Promise((resolve, reject) => {
      const server = net.createServer((conn) => {
        l.conns.add(conn);
        conn.once('close', () => l.conns.delete(conn));
        this.#serveConnection(conn, l.network);
      });
      server.maxConnections = MAX_TCP_CONNECTIONS;
      server.once('error', reject);
      server.listen({ host: l.address, port: this.port, exclusive: true }, () => {
        server.removeAllListeners('error');
        server.on('error', (err) => this.#log.warn({ address: l.address, err: err.message }, 'DNS listener error'));
        resolve(server);
      });
    });
  }

  #serveConnection(conn: net.Socket, network: string): void {
    const source = conn.remoteAddress ?? '';
    let buf = Buffer.alloc(0);
    conn.setTimeout(TCP_IDLE_MS, () => conn.destroy());
    conn.on('error', () => conn.destroy());
    conn.on('data', (chunk: Buffer) => {
      buf = Buffer.concat([buf, chunk]);
      while (buf.length >= 2) {
        const len = buf.readUInt16BE(0);
        if (len < 12) {
          conn.destroy();
          return;
        }
        if (buf.length < 2 + len) break;
        const msg = Buffer.from(buf.subarray(2, 2 + len));
        buf = buf.subarray(2 + len);
        void this.#handle(msg, source, network, 'tcp')
          .then((reply) => {
            if (!reply || conn.destroyed || !conn.writable) return;
            const head = Buffer.alloc(2);
            head.writeUInt16BE(reply.length);
            conn.write(Buffer.concat([head, reply]));
          })
          .catch((err: unknown) => this.#log.error({ err }, 'DNS query handling failed'));
      }
    });
  }

  /** One query to its reply (undefined: send nothing). Never throws for bad input. */
  async #handle(msg: Buffer, source: string, network: string, transport: 'udp' | 'tcp'): Promise<Buffer | undefined> {
    // IPv4 clients of a dual-stack socket appear as ::ffff:a.b.c.d.
    const from = source.startsWith('::ffff:') && source.includes('.') ? source.slice(7) : source;
    let decision;
    try {
      decision = decide(msg, { source: from, via: network, transport, names: this.#names });
    } catch (err) {
      // A bug, not bad input: still answered, and logged.
      this.#log.error({ err, source: from }, 'DNS query could not be decided');
      this.counts.servfail!++;
      return msg.length >= 12 ? errorReply(msg, 'SERVFAIL', questionEnd(msg)) : undefined;
    }
    if (decision.kind === 'drop') {
      this.counts.dropped!++;
      return undefined;
    }
    if (decision.kind === 'reply') {
      this.counts[decision.result] = (this.counts[decision.result] ?? 0) + 1;
      return decision.packet;
    }
    const res = await this.#forwarder.forward(msg, transport);
    if ('reply' in res) {
      this.counts.forwarded!++;
      return res.reply;
    }
    this.counts.servfail!++;
    this.#log.debug({ name: decision.name, type: decision.type, reason: res.reason }, 'DNS query not forwarded');
    return errorReply(msg, res.rcode, questionEnd(msg));
  }

  async #stop(l: Listener): Promise<void> {
    const udp = l.udp;
    const tcp = l.tcp;
    delete l.udp;
    delete l.tcp;
    if (udp) await new Promise<void>((r) => udp.close(() => r()));
    if (tcp) {
      const closed = new Promise<void>((r) => tcp.close(() => r()));
      for (const c of l.conns) c.destroy();
      await closed;
    }
  }

  async close(): Promise<void> {
    this.#closed = true;
    await this.#syncing;
    for (const l of this.#listeners.values()) await this.#stop(l);
    this.#listeners.clear();
  }
}
