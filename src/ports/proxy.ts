// A userland proxy per published port, as Docker's docker-proxy, but as a
// socket in this process rather than one process per port. It does two jobs:
// - it holds the host port, so a port already used on the host (by anything)
//   is refused at publish time with a clear error instead of silently
//   shadowed, and nothing else can take it later;
// - it carries the one path DNAT cannot take safely: connections from the
//   host to 127.0.0.1 / ::1. DNAT of loopback traffic needs route_localnet,
//   which is how published loopback ports became reachable from the LAN
//   (reliability.md §2 #1, #2); tsnet never sets it;
// - and the one DNAT cannot take at all: IPv6 clients of an IPv4-only
//   container (a [::] binding relayed to its IPv4 address, as docker-proxy).
// Every other packet is DNATed in the kernel before it reaches this socket.
import dgram from 'node:dgram';
import net from 'node:net';
import type { Logger } from 'pino';
import { TsnetError } from '../errors.js';
import type { Proto } from './portmap.js';

export interface ProxyTarget {
  proto: Proto;
  hostIp: string;
  hostPort: number;
  containerIp: string;
  containerPort: number;
}

export interface Proxy {
  close(): Promise<void>;
}

const UDP_IDLE_MS = 90_000;

function bindError(err: NodeJS.ErrnoException, t: ProxyTarget): TsnetError {
  const where = `${t.hostIp.includes(':') ? `[${t.hostIp}]` : t.hostIp}:${t.hostPort}/${t.proto}`;
  if (err.code === 'EADDRINUSE') return new TsnetError('TSNET_ERR_PORT_IN_USE', `host port ${where} is already in use on this host`);
  if (err.code === 'EADDRNOTAVAIL') return new TsnetError('TSNET_ERR_INVALID_OPTION', `HostIP ${t.hostIp} is not an address of this host (publishing ${where})`);
  return new TsnetError('TSNET_ERR_PORT_IN_USE', `cannot bind host port ${where}: ${err.message}`, { cause: err });
}

function startTcp(t: ProxyTarget, log: Logger): Promise<Proxy> {
  const sockets = new Set<net.Socket>();
  const server = net.createServer({ pauseOnConnect: true }, (client) => {
    const upstream = net.connect({ host: t.containerIp, port: t.containerPort });
    sockets.add(client).add(upstream);
    const done = (): void => {
      client.destroy();
      upstream.destroy();
      sockets.delete(client);
      sockets.delete(upstream);
    };
    client.on('error', done).on('close', done);
    upstream.on('error', done).on('close', done);
    upstream.once('connect', () => {
      client.pipe(upstream);
      upstream.pipe(client);
      client.resume();
    });
  });
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => reject(bindError(err, t)));
    server.listen({ host: t.hostIp, port: t.hostPort, exclusive: true, ipv6Only: t.hostIp === '::' }, () => {
      server.removeAllListeners('error');
      server.on('error', (err) => log.warn({ err, port: t.hostPort }, 'proxy error'));
      resolve({
        close: () =>
          new Promise<void>((res) => {
            for (const s of sockets) s.destroy();
            server.close(() => res());
          }),
      });
    });
  });
}

function startUdp(t: ProxyTarget, log: Logger): Promise<Proxy> {
  const family = t.hostIp.includes(':') ? 'udp6' : 'udp4';
  const front = dgram.createSocket({ type: family, reuseAddr: false, ipv6Only: t.hostIp === '::' });
  // One upstream socket per client, so replies find their way back.
  const flows = new Map<string, { sock: dgram.Socket; timer: NodeJS.Timeout }>();
  const containerFamily = t.containerIp.includes(':') ? 'udp6' : 'udp4';
  front.on('message', (msg, rinfo) => {
    const key = `${rinfo.address}:${rinfo.port}`;
    let flow = flows.get(key);
    if (!flow) {
      const sock = dgram.createSocket(containerFamily);
      sock.on('message', (reply) => front.send(reply, rinfo.port, rinfo.address));
      sock.on('error', () => undefined);
      const timer = setTimeout(() => close(), UDP_IDLE_MS);
      const close = (): void => {
        clearTimeout(flow!.timer);
        sock.close();
        flows.delete(key);
      };
      flow = { sock, timer };
      flows.set(key, flow);
    }
    flow.timer.refresh();
    flow.sock.send(msg, t.containerPort, t.containerIp);
  });
  return new Promise((resolve, reject) => {
    front.once('error', (err: NodeJS.ErrnoException) => reject(bindError(err, t)));
    front.bind({ address: t.hostIp, port: t.hostPort, exclusive: true }, () => {
      front.removeAllListeners('error');
      front.on('error', (err) => log.warn({ err, port: t.hostPort }, 'udp proxy error'));
      resolve({
        close: () =>
          new Promise<void>((res) => {
            for (const f of flows.values()) {
              clearTimeout(f.timer);
              f.sock.close();
            }
            flows.clear();
            front.close(() => res());
          }),
      });
    });
  });
}

/** Bind the host port; SCTP has no socket API in Node, so it is published by DNAT only. */
export async function startProxy(t: ProxyTarget, log: Logger): Promise<Proxy> {
  if (t.proto === 'tcp') return startTcp(t, log);
  if (t.proto === 'udp') return startUdp(t, log);
  return { close: async () => undefined };
}
