// Control-plane figures without dockerd (issue 4): IPAM throughput over the
// socket with the durable store, and start-up to listening with a large store.
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { Client } from 'undici';
import { Netns, startPlugin, tmpDir } from '../test/helpers/netns.js';
import { REPO, canConnect, cleanEnv } from '../test/helpers/lab.js';
import { encodeFile } from '../src/store/store.js';
import { emptyState, type State } from '../src/store/schema.js';
import { onAbort } from './abort.js';

/**
 * How clients hold their connections. dockerd's plugin client (Go's
 * http.Transport) keeps connections alive but at most two idle ones, so a
 * burst beyond two concurrent calls also opens connections that are closed
 * after one request: 'kept' is its steady state, 'per-request' its worst case.
 */
export type ConnectionMode = 'kept' | 'per-request';

export interface IpamRound {
  /** absent in results from before both modes were measured: those were 'per-request' */
  connections?: ConnectionMode;
  pairsPerSecond: number;
  p50: number;
  p99: number;
  pairs: number;
}

function quantile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor((sorted.length - 1) * p))]!;
}

/**
 * RequestAddress + ReleaseAddress pairs from `clients` concurrent clients for
 * `seconds`, each round once per connection mode (interleaved); the store is
 * on disk and fsyncs (group commit).
 */
export async function ipamPairs(rounds: number, clients: number, seconds: number): Promise<IpamRound[]> {
  const out: IpamRound[] = [];
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['kept', 'per-request'] as const) out.push(await ipamRound(mode, clients, seconds));
  }
  return out;
}

const WARMUP_MS = 1000;

async function ipamRound(mode: ConnectionMode, clients: number, seconds: number): Promise<IpamRound> {
  const host = await Netns.create('ipam');
  const dir = await tmpDir('bench-ipam');
  let plugin: Awaited<ReturnType<typeof startPlugin>> | undefined;
  const off = onAbort(async () => {
    await plugin?.stop();
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  plugin = await startPlugin(host, { dir, env: { TSNET_LOG_LEVEL: 'info' } });
  // undici: pipelining 0 sends "Connection: close" on every request, 1 keeps the connection.
  const conns = Array.from({ length: clients }, () => new Client('http://localhost', { socketPath: plugin.socket, pipelining: mode === 'kept' ? 1 : 0 }));
  try {
    const call = async (c: Client, method: string, body: unknown): Promise<Record<string, unknown>> => {
      const res = await c.request({ path: `/${method}`, method: 'POST', body: `${JSON.stringify(body)}\n` });
      const text = await res.body.text();
      if (res.statusCode !== 200) throw new Error(`${method}: ${text}`);
      return JSON.parse(text) as Record<string, unknown>;
    };
    const pool = await call(conns[0]!, 'IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool: '10.70.0.0/16', SubPool: '', Options: {}, V6: false });
    const poolId = pool.PoolID as string;
    const drive = async (ms: number, lat: number[]): Promise<void> => {
      const until = performance.now() + ms;
      await Promise.all(
        conns.map(async (c) => {
          while (performance.now() < until) {
            const s = performance.now();
            const a = await call(c, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: null });
            await call(c, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: (a.Address as string).split('/')[0] });
            lat.push(performance.now() - s);
          }
        }),
      );
    };
    // The same load for a second first, not counted: V8 compiles the hot
    // paths then (that second's p99 is 3-4x the rest's).
    await drive(WARMUP_MS, []);
    const lat: number[] = [];
    const t0 = performance.now();
    await drive(seconds * 1000, lat);
    const elapsed = (performance.now() - t0) / 1000;
    lat.sort((a, b) => a - b);
    return { connections: mode, pairsPerSecond: lat.length / elapsed, p50: quantile(lat, 0.5), p99: quantile(lat, 0.99), pairs: lat.length };
  } finally {
    off();
    await Promise.all(conns.map((c) => c.close().catch(() => undefined)));
    await plugin.stop();
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  }
}

/** A store as tsnet writes it, with one network of `endpoints` endpoints (its pool's allocations to match). */
export function syntheticState(endpoints: number): State {
  const hex = (): string => randomBytes(32).toString('hex');
  const at = new Date().toISOString();
  const state = emptyState();
  const netId = hex();
  const poolId = 'tsnet-local/10.80.0.0/20';
  state.networks[netId] = {
    id: netId, mode: 'bridge', bridge: `tsbr-${netId.slice(0, 10)}`, createdBridge: true,
    ipv4: [{ pool: '10.80.0.0/20', gateway: '10.80.0.1/20', aux: {} }], ipv6: [],
    internal: false, mtu: 1500, masquerade: true, icc: true, gatewayMode: 'nat', gatewayModeIpv6: 'nat',
    hostBindingIpv4: '0.0.0.0', inhibitIpv4: false, ifacePrefix: 'eth', trustedHostInterfaces: [], options: {}, createdAt: at,
  };
  const allocations: State['pools'][string]['allocations'] = { '10.80.0.1': { kind: 'gateway', at } };
  for (let i = 0; i < endpoints; i++) {
    const id = hex();
    const n = i + 2;
    const ip = `10.80.${n >> 8}.${n & 255}`;
    allocations[ip] = { kind: 'dynamic', at };
    state.endpoints[id] = {
      id, networkId: netId, hostVeth: `tsv${id.slice(0, 11)}`, peerVeth: `tsc${id.slice(0, 11)}`,
      mac: `02:42:0a:50:${(n >> 8).toString(16).padStart(2, '0')}:${(n & 255).toString(16).padStart(2, '0')}`, macAssigned: true,
      address: `${ip}/20`, ports: [], sandboxKey: `/var/run/docker/netns/${id.slice(0, 12)}`, createdAt: at,
    };
  }
  state.pools[poolId] = { id: poolId, addressSpace: 'tsnet-local', pool: '10.80.0.0/20', v6: false, dynamic: false, options: {}, allocations, createdAt: at };
  return state;
}

/** Spawn to socket accepting, per store size, rounds interleaved. */
export async function startup(rounds: number, sizes: number[]): Promise<Record<number, number[]>> {
  const out: Record<number, number[]> = Object.fromEntries(sizes.map((s) => [s, [] as number[]]));
  const texts = Object.fromEntries(sizes.map((s) => [s, encodeFile(syntheticState(s), 1)]));
  for (let r = 0; r < rounds; r++) {
    for (const size of sizes) {
      const host = await Netns.create('start');
      const dir = await tmpDir('bench-start');
      const stateDir = path.join(dir, 'state');
      await fs.mkdir(stateDir, { mode: 0o700 });
      await fs.writeFile(path.join(stateDir, 'state.json'), texts[size]!, { mode: 0o600 });
      const socket = path.join(dir, 'tsnet.sock');
      const t0 = performance.now();
      const child = spawn('nsenter', [`--net=${host.path}`, '--', process.execPath, path.join(REPO, 'dist', 'main.js')], {
        stdio: 'ignore',
        env: cleanEnv({ TSNET_SOCKET: socket, TSNET_STATE_DIR: stateDir, TSNET_LOG_LEVEL: 'info' }),
      });
      const off = onAbort(async () => {
        child.kill('SIGKILL');
        await host.delete();
        await fs.rm(dir, { recursive: true, force: true });
      });
      try {
        for (;;) {
          if (child.exitCode !== null) throw new Error(`tsnet exited ${child.exitCode} at start-up with a ${size}-endpoint store`);
          if (existsSync(socket) && (await canConnect(socket))) break;
          if (performance.now() - t0 > 30_000) throw new Error('tsnet did not listen within 30 s');
          await new Promise((res) => setTimeout(res, 2));
        }
        out[size]!.push(performance.now() - t0);
      } finally {
        const exited = new Promise((res) => child.once('exit', res));
        if (child.exitCode === null) child.kill('SIGTERM');
        const timer = setTimeout(() => child.kill('SIGKILL'), 20_000);
        await exited;
        clearTimeout(timer);
        off();
        await host.delete();
        await fs.rm(dir, { recursive: true, force: true });
      }
    }
  }
  return out;
}
