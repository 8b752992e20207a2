// Scale: the plugin driven straight over its socket, the way dockerd drives
// it (undici, no Content-Type), with real kernel objects in a throwaway
// network namespace. No dockerd: the figures are tsnet's own, and dockerd's
// share (netns moves, containerd) is left out on purpose.
//   - 200 networks: network create (RequestPool + gateway RequestAddress +
//     CreateNetwork) probed at 10, 50, 100, 150 and 200 networks;
//   - 1,000 endpoints on one network, each with one published port: attach
//     (RequestAddress + CreateEndpoint + Join) and publishing one more port
//     probed at 10 … 1,000 endpoints/mappings, plugin RSS and store size;
//   - teardown through the API, then a check that nothing of tsnet is left.
// A probe is an extra endpoint (or network) created, timed and removed again,
// repeated `probes` times at each level, so every level gets a median.
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { Netns, dockerId, startPlugin, tmpDir, type PluginProcess } from '../test/helpers/netns.js';
import { sh, NODE_FLAGS } from '../test/helpers/lab.js';
import { timeIt } from './stats.js';
import { onAbort } from './abort.js';

export interface Level {
  /** objects already in place when the probe ran */
  at: number;
  samples: number[];
}

export interface Leftovers {
  links: string[];
  nftTable: boolean;
  iptRules: string[];
}

export interface ScaleResult {
  endpoints: number;
  networks: number;
  /** RequestAddress + CreateEndpoint + Join of one more endpoint */
  attach: Level[];
  /** CreateEndpoint + Join alone (the network driver's share) */
  attachDriver: Level[];
  /** ProgramExternalConnectivity with one port, with `at` mappings in place */
  publish: Level[];
  /** every fill endpoint's attach, in order: fill[i] had i endpoints before it */
  fill: number[];
  rss: Array<{ at: number; mb: number }>;
  /** RSS with 1,000 endpoints filled again in a fresh plugin started with these node flags */
  rssWithFlags?: { flags: string[]; at: number; mb: number; idleMb: number };
  storeBytes: Array<{ at: number; bytes: number }>;
  netCreate: Level[];
  netCreateDriver: Level[];
  netRemove: Level[];
  netRss: Array<{ at: number; mb: number }>;
  teardownMs: { endpoints: number; networks: number };
  leftovers: { endpoints: Leftovers; networks: Leftovers };
}

export interface ScaleOptions {
  endpoints: number;
  networks: number;
  probes: number;
  /** also fill a fresh plugin started with these node flags, for its RSS only */
  rssFlags?: string[];
  log: (msg: string) => void;
}

const SPACE = 'tsnet-local';

async function ok(p: PluginProcess, method: string, body: unknown): Promise<Record<string, unknown>> {
  const res = await p.call(method, body);
  if (res.status !== 200) throw new Error(`${method}: ${res.status} ${JSON.stringify(res.body)}`);
  return res.body;
}

async function rssMb(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  const m = /VmRSS:\s+(\d+) kB/.exec(status);
  return m ? Number(m[1]) / 1024 : NaN;
}

export async function leftovers(ns: Netns): Promise<Leftovers> {
  const links = (await ns.links()).filter((l) => l.ifalias?.startsWith('tsnet:') || /^ts(br-|v|c|vx-)/.test(l.ifname)).map((l) => l.ifname);
  const nft = (await ns.exec('nft', ['list', 'tables'])).stdout;
  const ipt = [(await ns.exec('iptables-save', [])).stdout, (await ns.exec('ip6tables-save', [], { check: false })).stdout].join('\n');
  return { links, nftTable: /table inet tsnet/.test(nft), iptRules: ipt.split('\n').filter((l) => /TSNET|tsnet/.test(l)) };
}

function levels(max: number, marks: number[]): number[] {
  return [...new Set([...marks.filter((m) => m < max), max])].filter((m) => m > 0);
}

function portmap(hostPort: number): Record<string, unknown> {
  return { 'com.docker.network.portmap': [{ Proto: 6, IP: '', Port: 80, HostIP: '', HostPort: hostPort, HostPortEnd: hostPort }] };
}

interface Env {
  host: Netns;
  sandbox: Netns;
  dir: string;
  plugin: PluginProcess;
  off: () => void;
}

async function setup(tag: string, nodeArgs: string[] = NODE_FLAGS): Promise<Env> {
  const host = await Netns.create(`sc${tag}`);
  const sandbox = await Netns.create(`sb${tag}`);
  const dir = await tmpDir('bench-scale');
  const partial = onAbort(async () => {
    await sandbox.delete();
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  // info level: what a production plugin logs, not the per-exec debug lines.
  const plugin = await startPlugin(host, { dir, env: { TSNET_LOG_LEVEL: 'info' }, nodeArgs });
  partial();
  const e: Env = { host, sandbox, dir, plugin, off: () => undefined };
  e.off = onAbort(() => cleanup(e));
  return e;
}

async function cleanup(e: Env): Promise<void> {
  e.off();
  await e.plugin.stop().catch(() => undefined);
  await e.sandbox.delete();
  await e.host.delete();
  await fs.rm(e.dir, { recursive: true, force: true });
}

async function createNet(p: PluginProcess, opts: { pool?: string } = {}): Promise<{ id: string; poolId: string; gateway: string; driverMs: number }> {
  const pool = await ok(p, 'IpamDriver.RequestPool', { AddressSpace: SPACE, Pool: opts.pool ?? '', SubPool: '', Options: {}, V6: false });
  const poolId = pool.PoolID as string;
  const gw = await ok(p, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: { RequestAddressType: 'com.docker.network.gateway' } });
  const id = dockerId();
  const gateway = gw.Address as string;
  const driverMs = await timeIt(() =>
    ok(p, 'NetworkDriver.CreateNetwork', {
      NetworkID: id,
      Options: { 'com.docker.network.enable_ipv6': false, 'com.docker.network.generic': {} },
      IPv4Data: [{ AddressSpace: SPACE, Pool: pool.Pool, Gateway: gateway }],
      IPv6Data: [],
    }),
  );
  return { id, poolId, gateway, driverMs };
}

async function removeNet(p: PluginProcess, n: { id: string; poolId: string; gateway: string }): Promise<void> {
  await ok(p, 'NetworkDriver.DeleteNetwork', { NetworkID: n.id });
  await ok(p, 'IpamDriver.ReleaseAddress', { PoolID: n.poolId, Address: n.gateway.split('/')[0] });
  await ok(p, 'IpamDriver.ReleasePool', { PoolID: n.poolId });
}

interface Ep {
  id: string;
  address: string;
  srcName: string;
}

async function attach(p: PluginProcess, netId: string, poolId: string): Promise<{ ep: Ep; totalMs: number; driverMs: number }> {
  const t0 = performance.now();
  const ra = await ok(p, 'IpamDriver.RequestAddress', { PoolID: poolId, Address: '', Options: null });
  const t1 = performance.now();
  const id = dockerId();
  const address = ra.Address as string;
  await ok(p, 'NetworkDriver.CreateEndpoint', { NetworkID: netId, EndpointID: id, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  const j = await ok(p, 'NetworkDriver.Join', { NetworkID: netId, EndpointID: id, SandboxKey: `/var/run/docker/netns/${id.slice(0, 12)}`, Options: {} });
  const t2 = performance.now();
  return { ep: { id, address, srcName: (j.InterfaceName as { SrcName: string }).SrcName }, totalMs: t2 - t0, driverMs: t2 - t1 };
}

async function detach(p: PluginProcess, netId: string, poolId: string, ep: Ep): Promise<void> {
  await ok(p, 'NetworkDriver.RevokeExternalConnectivity', { NetworkID: netId, EndpointID: ep.id });
  await ok(p, 'NetworkDriver.Leave', { NetworkID: netId, EndpointID: ep.id });
  await ok(p, 'NetworkDriver.DeleteEndpoint', { NetworkID: netId, EndpointID: ep.id });
  await ok(p, 'IpamDriver.ReleaseAddress', { PoolID: poolId, Address: ep.address.split('/')[0] });
}

async function scaleNetworks(opts: ScaleOptions, r: ScaleResult): Promise<void> {
  const e = await setup('n');
  try {
    const nets: Array<{ id: string; poolId: string; gateway: string }> = [];
    for (const level of levels(opts.networks, [10, 50, 100, 150])) {
      while (nets.length < level) nets.push(await createNet(e.plugin));
      const create: number[] = [];
      const driver: number[] = [];
      const remove: number[] = [];
      for (let k = 0; k < opts.probes; k++) {
        let probe!: Awaited<ReturnType<typeof createNet>>;
        create.push(await timeIt(async () => (probe = await createNet(e.plugin))));
        driver.push(probe.driverMs);
        remove.push(await timeIt(() => removeNet(e.plugin, probe)));
      }
      r.netCreate.push({ at: level, samples: create });
      r.netCreateDriver.push({ at: level, samples: driver });
      r.netRemove.push({ at: level, samples: remove });
      r.netRss.push({ at: level, mb: await rssMb(e.plugin.child.pid!) });
      opts.log(`scale: ${level} networks`);
    }
    r.teardownMs.networks = await timeIt(async () => {
      for (const n of nets.splice(0)) await removeNet(e.plugin, n);
    });
    r.leftovers.networks = await leftovers(e.host);
  } finally {
    await cleanup(e);
  }
}

async function scaleEndpoints(opts: ScaleOptions, r: ScaleResult): Promise<void> {
  const e = await setup('e');
  try {
    // A /20 holds 4,094 addresses: room for 1,000 endpoints and the probes.
    const net = await createNet(e.plugin, { pool: '10.40.0.0/20' });
    const eps: Ep[] = [];
    let nextPort = 20000;
    for (const level of levels(opts.endpoints, [10, 100, 250, 500, 750])) {
      while (eps.length < level) {
        const a = await attach(e.plugin, net.id, net.poolId);
        r.fill.push(a.totalMs);
        await ok(e.plugin, 'NetworkDriver.ProgramExternalConnectivity', { NetworkID: net.id, EndpointID: a.ep.id, Options: portmap(nextPort++) });
        // What dockerd does next: the container end leaves for the sandbox (untimed; dockerd's cost).
        await sh('ip', ['-n', e.host.name, 'link', 'set', a.ep.srcName, 'netns', e.sandbox.name]);
        eps.push(a.ep);
      }
      const total: number[] = [];
      const driver: number[] = [];
      const publish: number[] = [];
      for (let k = 0; k < opts.probes; k++) {
        const a = await attach(e.plugin, net.id, net.poolId);
        total.push(a.totalMs);
        driver.push(a.driverMs);
        publish.push(await timeIt(() => ok(e.plugin, 'NetworkDriver.ProgramExternalConnectivity', { NetworkID: net.id, EndpointID: a.ep.id, Options: portmap(40000) })));
        await detach(e.plugin, net.id, net.poolId, a.ep);
      }
      r.attach.push({ at: level, samples: total });
      r.attachDriver.push({ at: level, samples: driver });
      r.publish.push({ at: level, samples: publish });
      r.rss.push({ at: level, mb: await rssMb(e.plugin.child.pid!) });
      r.storeBytes.push({ at: level, bytes: (await fs.stat(path.join(e.plugin.stateDir, 'state.json'))).size });
      opts.log(`scale: ${level} endpoints`);
    }
    r.teardownMs.endpoints = await timeIt(async () => {
      for (const ep of eps.splice(0)) await detach(e.plugin, net.id, net.poolId, ep);
      await removeNet(e.plugin, net);
    });
    r.leftovers.endpoints = await leftovers(e.host);
  } finally {
    await cleanup(e);
  }
}

/** Fill one network to `endpoints` in a plugin started with `flags`; its RSS idle and then. */
async function rssOnly(opts: ScaleOptions, flags: string[]): Promise<NonNullable<ScaleResult['rssWithFlags']>> {
  const e = await setup('r', flags);
  try {
    const idleMb = await rssMb(e.plugin.child.pid!);
    const net = await createNet(e.plugin, { pool: '10.41.0.0/20' });
    const eps: Ep[] = [];
    for (let i = 0; i < opts.endpoints; i++) {
      const a = await attach(e.plugin, net.id, net.poolId);
      await ok(e.plugin, 'NetworkDriver.ProgramExternalConnectivity', { NetworkID: net.id, EndpointID: a.ep.id, Options: portmap(20000 + i) });
      await sh('ip', ['-n', e.host.name, 'link', 'set', a.ep.srcName, 'netns', e.sandbox.name]);
      eps.push(a.ep);
    }
    const mb = await rssMb(e.plugin.child.pid!);
    for (const ep of eps) await detach(e.plugin, net.id, net.poolId, ep);
    await removeNet(e.plugin, net);
    return { flags, at: opts.endpoints, mb, idleMb };
  } finally {
    await cleanup(e);
  }
}

export async function runScale(opts: ScaleOptions): Promise<ScaleResult> {
  const none: Leftovers = { links: [], nftTable: false, iptRules: [] };
  const r: ScaleResult = {
    endpoints: opts.endpoints,
    networks: opts.networks,
    attach: [],
    attachDriver: [],
    publish: [],
    fill: [],
    rss: [],
    storeBytes: [],
    netCreate: [],
    netCreateDriver: [],
    netRemove: [],
    netRss: [],
    teardownMs: { endpoints: NaN, networks: NaN },
    leftovers: { endpoints: none, networks: none },
  };
  if (opts.networks > 0) await scaleNetworks(opts, r);
  if (opts.endpoints > 0) await scaleEndpoints(opts, r);
  if (opts.endpoints > 0 && opts.rssFlags) {
    opts.log(`scale: RSS with ${opts.rssFlags.join(' ')}`);
    r.rssWithFlags = await rssOnly(opts, opts.rssFlags);
  }
  return r;
}
