// Configuration comes only from TSNET_* environment variables, which become
// `docker plugin set` settings for the managed plugin. Every value is checked
// at start-up; a bad one stops tsnet with one line naming the variable, the
// value and what would be accepted, never a half-working plugin.
import path from 'node:path';
import { TsnetError, quote } from './errors.js';
import { formatPrefix, parseIp, parsePrefix, width, type Prefix } from './net/cidr.js';

export interface DefaultPool {
  /** the range to carve from */
  base: Prefix;
  /** prefix length of each network's pool */
  size: number;
}

export interface Config {
  socket: string;
  stateDir: string;
  logLevel: string;
  defaultPools: DefaultPool[];
  /** seconds between periodic reconciles; 0 = only at start-up and on SIGHUP */
  reconcileInterval: number;
  /** where the (writable) host /proc/sys is: /proc/sys, or a bind mount of it in the managed plugin */
  procSys: string;
  /**
   * where /run/netns leads (TSNET_NETNS_DIR): the managed plugin's is the
   * host's, through the run mount, and tsnet makes it at start-up;
   * undefined: /run/netns is the host's own (tsnet runs on the host)
   */
  netnsDir: string | undefined;
  /**
   * where the host's /run is (TSNET_HOST_RUN): the managed plugin's run
   * mount, through which it opens containers' namespaces (sandbox keys);
   * undefined: tsnet runs on the host and /run is the host's own
   */
  hostRun: string | undefined;
  /** extra TCP listener (host:port), off unless asked */
  tcpListen: string | undefined;
  /** etcd client URLs; empty = no cluster (bridge and static-peer overlays only) */
  etcdEndpoints: string[];
  /** this host's underlay (VTEP) address; undefined = the source address of the default route */
  advertiseAddr: string | undefined;
  vxlanPort: number;
  /** seconds a host's etcd lease lives without keepalives */
  etcdLeaseTtl: number;
  /** TCP address for GET /metrics (TSNET_METRICS_ADDR); undefined = the plugin socket only */
  metricsAddr: { host: string; port: number } | undefined;
  /** dockerd's Engine API socket (TSNET_DOCKER_HOST), read for container names; undefined = off */
  dockerSocket: string | undefined;
  /** answer DNS on each cluster overlay's gateway address (TSNET_DNS) */
  dns: boolean;
  /** UDP port of WireGuard (encrypted overlays) */
  wgPort: number;
  /** MTU of the WireGuard interface; undefined = the underlay's less WireGuard's overhead */
  wgMtu: number | undefined;
}

export const DEFAULTS = {
  socket: '/run/docker/plugins/tsnet.sock',
  stateDir: '/var/lib/tsnet',
  logLevel: 'info',
  // 10.210/16 sits clear of Docker's own defaults (172.17-31/16, 192.168/16)
  // and gives 256 networks; the ULA /48 gives 65,536 IPv6 /64s.
  defaultPools: '10.210.0.0/16:24,fd74:736e:6574::/48:64',
  reconcileInterval: '0',
  procSys: '/proc/sys',
  vxlanPort: '4789',
  etcdLeaseTtl: '15',
  dockerHost: 'unix:///var/run/docker.sock',
  dns: 'on',
  wgPort: '51820',
} as const;

const LEVELS = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent'];

export function parseDefaultPools(text: string, name = 'TSNET_DEFAULT_POOLS'): DefaultPool[] {
  const pools: DefaultPool[] = [];
  for (const raw of text.split(',').map((s) => s.trim()).filter((s) => s !== '')) {
    const m = /^(.+)\/(\d{1,3}):(\d{1,3})$/.exec(raw);
    const base = m ? parsePrefix(`${m[1]}/${m[2]}`) : undefined;
    if (!m || !base) {
      throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: ${quote(raw)} is not BASE/LEN:SIZE with BASE/LEN a network address (e.g. 10.210.0.0/16:24)`);
    }
    const size = Number(m[3]);
    if (base.bits === 0) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: ${quote(raw)} covers every address; pick a private range`);
    if (size < base.bits || size > width(base.v6) - 2) {
      throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: in ${quote(raw)} SIZE must be between ${base.bits} and ${width(base.v6) - 2}`);
    }
    for (const other of pools) {
      if (other.base.v6 === base.v6 && other.base.base <= base.base + (1n << BigInt(width(base.v6) - base.bits)) - 1n && base.base <= other.base.base + (1n << BigInt(width(other.base.v6) - other.base.bits)) - 1n) {
        throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: ${quote(raw)} overlaps ${formatPrefix(other.base)}`);
      }
    }
    pools.push({ base, size });
  }
  if (pools.length === 0) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: no pools given`);
  return pools;
}

/** HOST:PORT with HOST an IPv4 address or a bracketed IPv6 one (port 0: any free port, for tests). */
export function parseListenAddr(text: string, name: string): { host: string; port: number } {
  const m = /^(?:\[([0-9A-Fa-f:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/.exec(text);
  const host = m ? (m[1] ?? m[2]!) : '';
  const port = m ? Number(m[3]) : NaN;
  if (!m || !parseIp(host) || port > 65535) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: ${quote(text)} is not IP:PORT (e.g. 127.0.0.1:9464 or [::1]:9464)`);
  }
  return { host, port };
}

/** A directory of the host seen from here (the managed plugin's mounts): unset, or absolute, not /, without . or .., trailing slashes dropped. */
function optionalDir(env: NodeJS.ProcessEnv, name: string, example: string): string | undefined {
  const text = env[name] || undefined;
  if (text === undefined) return undefined;
  const dir = text.replace(/\/+$/, '');
  if (!path.isAbsolute(text) || !dir || path.normalize(dir) !== dir) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${name}: ${quote(text)} must be an absolute path to a directory other than /, without . or .. (e.g. ${example})`);
  }
  return dir;
}

export function loadConfig(env: NodeJS.ProcessEnv = process.env): Config {
  const socket = env.TSNET_SOCKET || DEFAULTS.socket;
  if (!path.isAbsolute(socket) || socket.length > 100) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_SOCKET: ${quote(socket)} must be an absolute path under 100 characters`);
  }
  const stateDir = env.TSNET_STATE_DIR || DEFAULTS.stateDir;
  if (!path.isAbsolute(stateDir)) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_STATE_DIR: ${quote(stateDir)} must be an absolute path`);
  const logLevel = env.TSNET_LOG_LEVEL || DEFAULTS.logLevel;
  if (!LEVELS.includes(logLevel)) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_LOG_LEVEL: ${quote(logLevel)} is not one of ${LEVELS.join(', ')}`);
  const defaultPools = parseDefaultPools(env.TSNET_DEFAULT_POOLS || DEFAULTS.defaultPools);
  const ri = env.TSNET_RECONCILE_INTERVAL || DEFAULTS.reconcileInterval;
  if (!/^\d{1,6}$/.test(ri)) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_RECONCILE_INTERVAL: ${quote(ri)} must be a number of seconds (0 = off)`);
  const procSys = env.TSNET_PROC_SYS || DEFAULTS.procSys;
  if (!path.isAbsolute(procSys)) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_PROC_SYS: ${quote(procSys)} must be an absolute path`);
  const netnsDir = optionalDir(env, 'TSNET_NETNS_DIR', '/host/run/netns');
  const hostRun = optionalDir(env, 'TSNET_HOST_RUN', '/host/run');
  const tcpListen = env.TSNET_TCP_LISTEN || undefined;
  if (tcpListen !== undefined && !/^(127\.0\.0\.1|\[::1\]|localhost):\d{1,5}$/.test(tcpListen)) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_TCP_LISTEN: ${quote(tcpListen)} must be 127.0.0.1:PORT (the protocol has no authentication; never expose it)`);
  }
  const etcdEndpoints = (env.TSNET_ETCD_ENDPOINTS ?? '')
    .split(',')
    .map((e) => e.trim())
    .filter((e) => e !== '');
  for (const e of etcdEndpoints) {
    let ok = false;
    try {
      const u = new URL(e);
      ok = (u.protocol === 'http:' || u.protocol === 'https:') && u.hostname !== '' && u.pathname === '/' && !u.search && !u.username;
    } catch {
      ok = false;
    }
    if (!ok) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_ETCD_ENDPOINTS: ${quote(e)} is not an etcd client URL like http://10.0.0.5:2379`);
  }
  const advertiseAddr = env.TSNET_ADVERTISE_ADDR || undefined;
  if (advertiseAddr !== undefined && !parseIp(advertiseAddr)) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_ADVERTISE_ADDR: ${quote(advertiseAddr)} is not an IP address`);
  }
  const port = env.TSNET_VXLAN_PORT || DEFAULTS.vxlanPort;
  if (!/^\d{1,5}$/.test(port) || Number(port) < 1 || Number(port) > 65535) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_VXLAN_PORT: ${quote(port)} is not a UDP port (1-65535)`);
  }
  const ttl = env.TSNET_ETCD_LEASE_TTL || DEFAULTS.etcdLeaseTtl;
  if (!/^\d{1,4}$/.test(ttl) || Number(ttl) < 2 || Number(ttl) > 3600) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_ETCD_LEASE_TTL: ${quote(ttl)} must be seconds between 2 and 3600`);
  }
  const metricsAddr = env.TSNET_METRICS_ADDR ? parseListenAddr(env.TSNET_METRICS_ADDR, 'TSNET_METRICS_ADDR') : undefined;
  const dockerSocket = parseDockerHost(env.TSNET_DOCKER_HOST || DEFAULTS.dockerHost);
  const dnsText = env.TSNET_DNS || DEFAULTS.dns;
  if (dnsText !== 'on' && dnsText !== 'off') throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_DNS: ${quote(dnsText)} must be on or off`);
  const wgPort = env.TSNET_WG_PORT || DEFAULTS.wgPort;
  if (!/^\d{1,5}$/.test(wgPort) || Number(wgPort) < 1 || Number(wgPort) > 65535) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_WG_PORT: ${quote(wgPort)} is not a UDP port (1-65535)`);
  }
  if (Number(wgPort) === Number(port)) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_WG_PORT: ${wgPort} is TSNET_VXLAN_PORT too; WireGuard and VXLAN need a port each`);
  const wgMtu = env.TSNET_WG_MTU || undefined;
  if (wgMtu !== undefined && (!/^\d{1,5}$/.test(wgMtu) || Number(wgMtu) < 1280 || Number(wgMtu) > 65535)) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_WG_MTU: ${quote(wgMtu)} must be an MTU between 1280 and 65535 (empty: the underlay's less WireGuard's overhead)`);
  }
  return {
    socket,
    stateDir,
    logLevel,
    defaultPools,
    reconcileInterval: Number(ri),
    procSys,
    netnsDir,
    hostRun,
    tcpListen,
    etcdEndpoints,
    advertiseAddr,
    vxlanPort: Number(port),
    etcdLeaseTtl: Number(ttl),
    metricsAddr,
    dockerSocket,
    dns: dnsText === 'on',
    wgPort: Number(wgPort),
    wgMtu: wgMtu === undefined ? undefined : Number(wgMtu),
  };
}

/**
 * unix:///path (dockerd's socket) or off. Only a Unix socket: a plain TCP
 * Engine API has no authentication, and tsnet has no TLS client settings.
 */
export function parseDockerHost(text: string): string | undefined {
  if (text === 'off') return undefined;
  const m = /^unix:\/\/(\/.*)$/.exec(text);
  if (!m || m[1]!.length > 100 || m[1]!.includes('\0')) {
    throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `TSNET_DOCKER_HOST: ${quote(text)} is not unix:///PATH (an absolute path under 100 characters, e.g. unix:///var/run/docker.sock) or off`);
  }
  return path.normalize(m[1]!);
}
