// Hostile input over the real socket: thousands of malformed, truncated,
// oversized, wrongly typed and injection-laden requests at every endpoint.
// Each must get an error, the process must stay up with bounded memory, and
// neither the kernel (links, nftables, iptables) nor the store may change.
import t from 'tap';
import { promises as fs } from 'node:fs';
import http from 'node:http';
import { Client } from 'undici';
import { Netns, dockerId, startPlugin, tmpDir } from '../helpers/netns.js';

const METHODS = [
  'NetworkDriver.GwAllocCheck',
  'NetworkDriver.CreateNetwork',
  'NetworkDriver.DeleteNetwork',
  'NetworkDriver.CreateEndpoint',
  'NetworkDriver.EndpointOperInfo',
  'NetworkDriver.DeleteEndpoint',
  'NetworkDriver.Join',
  'NetworkDriver.Leave',
  'NetworkDriver.ProgramExternalConnectivity',
  'NetworkDriver.RevokeExternalConnectivity',
  'NetworkDriver.AllocateNetwork',
  'NetworkDriver.FreeNetwork',
  'NetworkDriver.DiscoverNew',
  'NetworkDriver.DiscoverDelete',
  'IpamDriver.RequestPool',
  'IpamDriver.ReleasePool',
  'IpamDriver.RequestAddress',
  'IpamDriver.ReleaseAddress',
];

const EVIL = [
  '; rm -rf /',
  '$(reboot)',
  '`id`',
  '../../../../etc/passwd',
  '/dev/null',
  'a\nb',
  'tsbr-x"; drop',
  'ethernet0123456789',
  'éèàü-ß',
  '\u0000',
  '💥',
  '-j ACCEPT',
  '0.0.0.0/0',
  '::/0',
  '10.0.0.0/33',
  '999.1.1.1',
  'x'.repeat(5000),
  '',
];
const WRONG_TYPES: unknown[] = [null, 0, -1, 1e309, true, [], {}, [1, 2], { $gt: '' }];

// A deterministic PRNG so a failure can be replayed.
let seed = 0x7a5e7;
function rnd(n: number): number {
  seed = (seed * 1103515245 + 12345) & 0x7fffffff;
  return seed % n;
}
function pick<T>(xs: readonly T[]): T {
  return xs[rnd(xs.length)]!;
}

const ID = dockerId();
function validBody(method: string): Record<string, unknown> {
  switch (method) {
    case 'NetworkDriver.CreateNetwork':
      return { NetworkID: ID, Options: { 'com.docker.network.generic': {} }, IPv4Data: [{ AddressSpace: 'x', Pool: '10.90.0.0/24', Gateway: '10.90.0.1/24' }], IPv6Data: [] };
    case 'NetworkDriver.CreateEndpoint':
      return { NetworkID: ID, EndpointID: ID, Interface: { Address: '10.90.0.2/24', AddressIPv6: '', MacAddress: '' }, Options: {} };
    case 'NetworkDriver.Join':
      return { NetworkID: ID, EndpointID: ID, SandboxKey: '/var/run/docker/netns/x', Options: {} };
    case 'IpamDriver.RequestPool':
      return { AddressSpace: 'tsnet-local', Pool: '10.91.0.0/24', SubPool: '', Options: {}, V6: false };
    case 'IpamDriver.RequestAddress':
    case 'IpamDriver.ReleaseAddress':
      return { PoolID: 'tsnet-local/10.91.0.0/24', Address: '10.91.0.5', Options: null };
    case 'IpamDriver.ReleasePool':
      return { PoolID: 'tsnet-local/10.91.0.0/24' };
    case 'NetworkDriver.GwAllocCheck':
      return { Options: { 'com.docker.network.generic': {} } };
    case 'NetworkDriver.DiscoverNew':
    case 'NetworkDriver.DiscoverDelete':
      return { DiscoveryType: 1, DiscoveryData: {} };
    default:
      return { NetworkID: ID, EndpointID: ID };
  }
}

/** A body that must be refused: one field corrupted in a way no schema or option check lets through. */
function hostile(method: string): string {
  const body = validBody(method);
  const keys = Object.keys(body);
  switch (rnd(7)) {
    case 0: {
      // An ID that is not a Docker ID.
      const k = keys.find((x) => x.endsWith('ID') && x !== 'PoolID') ?? keys[0]!;
      // (An empty AddressSpace is legitimate: it means the default space.)
      body[k] = pick([...EVIL.filter((e) => k !== 'AddressSpace' || e !== ''), ID.slice(1), ID.toUpperCase(), `${ID}0`]);
      break;
    }
    case 1: {
      // A required field of the wrong type.
      const k = keys.find((x) => x.endsWith('ID')) ?? keys[0]!;
      body[k] = k === 'DiscoveryType' ? pick(['1', -1, 256, 1.5, null]) : k === 'Options' ? pick(['x', 7, true, [1]]) : pick(WRONG_TYPES);
      break;
    }
    case 2: {
      // Truncated JSON.
      const text = JSON.stringify(body);
      return text.slice(0, 1 + rnd(text.length - 2));
    }
    case 3:
      return pick(['[]', 'null', '"x"', '42', 'true', '{"NetworkID":', '{{', '\u0000\u0001', '{"__proto__":{"polluted":1}}']);
    default: {
      // Method-specific poison in the fields that reach the kernel.
      if (method === 'NetworkDriver.CreateNetwork') {
        const generic: Record<string, unknown> = {};
        const which = rnd(6);
        if (which === 0) generic['com.docker.network.bridge.name'] = pick(EVIL);
        else if (which === 1) generic['com.docker.network.driver.mtu'] = pick(['10', '70000', '-1', '1e3', ...EVIL]);
        else if (which === 2) generic['com.docker.network.bridge.enable_icc'] = pick(EVIL);
        else if (which === 3) generic[`tsnet.${pick(['x', 'mod', 'vnii'])}`] = 'y';
        else if (which === 4) (body.IPv4Data as Array<Record<string, unknown>>)[0]!.Pool = pick(['0.0.0.0/0', '::/0', ...EVIL]);
        else (body.IPv4Data as Array<Record<string, unknown>>)[0]!.Gateway = pick(['10.1.2.3/24', ...EVIL.filter((e) => e !== '')]);
        if (which < 4) body.Options = { 'com.docker.network.generic': generic };
        break;
      }
      if (method === 'IpamDriver.RequestPool') {
        body.Pool = pick(['0.0.0.0/0', '::/0', '10.0.0.0/33', '10.0.0.5/24', ...EVIL.filter((e) => e !== '')]);
        break;
      }
      if (method === 'IpamDriver.RequestAddress' || method === 'IpamDriver.ReleaseAddress') {
        body.PoolID = pick(EVIL.filter((e) => e !== ''));
        break;
      }
      if (method === 'NetworkDriver.CreateEndpoint') {
        body.Interface = { Address: pick(EVIL), MacAddress: pick(['zz:zz', ...EVIL]) };
        body.NetworkID = dockerId(); // unknown network: must be refused, not created
        break;
      }
      const k = keys[0]!;
      body[k] = k === 'Options' ? pick([...EVIL, 7, true, [1]]) : pick([...EVIL, ...WRONG_TYPES]);
      if (k === 'DiscoveryType') body[k] = pick(['x', -1, 300, null]);
    }
  }
  return JSON.stringify(body);
}

async function kernelSnapshot(ns: Netns): Promise<string> {
  const links = (await ns.links()).map((l) => `${l.ifname}:${l.ifalias ?? ''}`).sort();
  const nft = (await ns.exec('nft', ['list', 'ruleset'])).stdout;
  const ipt = (await ns.exec('iptables-save', [])).stdout.replace(/^#.*$/gm, '');
  return JSON.stringify({ links, nft, ipt });
}

async function rss(pid: number): Promise<number> {
  const status = await fs.readFile(`/proc/${pid}/status`, 'utf8');
  return Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0) * 1024;
}

t.test('thousands of hostile requests: all refused, process up, memory bounded, nothing changed', async (t) => {
  const host = await Netns.create('fuzz');
  const dir = await tmpDir('fuzz');
  const plugin = await startPlugin(host, { dir, env: { TSNET_LOG_LEVEL: 'error' } });
  t.teardown(async () => {
    await plugin.stop();
    await host.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  // nsenter execs node, so the child's pid is the plugin's.
  const nodePid = plugin.child.pid!;
  const before = await kernelSnapshot(host);
  const storeBefore = await fs.readFile(`${plugin.stateDir}/state.json`, 'utf8').catch(() => 'absent');
  const client = new Client('http://localhost', { socketPath: plugin.socket, pipelining: 1 });
  t.teardown(() => client.close());

  const N = 3000;
  let refused = 0;
  const unexpected: string[] = [];
  const rssStart = await rss(nodePid);
  for (let batch = 0; batch < N; batch += 50) {
    await Promise.all(
      Array.from({ length: 50 }, async () => {
        const method = pick(METHODS);
        const body = hostile(method);
        const res = await client.request({ path: `/${method}`, method: 'POST', body });
        const text = await res.body.text();
        let parsed: { Err?: unknown } = {};
        try {
          parsed = JSON.parse(text);
        } catch {
          /* reported below */
        }
        if (res.statusCode === 500 && typeof parsed.Err === 'string' && parsed.Err.length > 0) refused++;
        else if (unexpected.length < 10) unexpected.push(`${method} ${body.slice(0, 120)} -> ${res.statusCode} ${text.slice(0, 120)}`);
      }),
    );
  }
  t.equal(refused, N, `every hostile request refused with {"Err"}${unexpected.length ? `: ${unexpected.join(' | ')}` : ''}`);

  // Oversized: the plugin answers before reading it all and closes, so the
  // client may see the answer or a reset; either way nothing is processed.
  const big = await new Promise<{ status: number; text: string } | 'reset'>((resolve) => {
    const req = http.request({ socketPath: plugin.socket, path: '/NetworkDriver.CreateNetwork', method: 'POST' }, (res) => {
      let text = '';
      res.on('data', (d: Buffer) => (text += d.toString()));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text }));
    });
    req.on('error', () => resolve('reset'));
    req.end(`{"NetworkID":"${'a'.repeat(2 * 1024 * 1024)}"}`);
  });
  if (big !== 'reset') {
    t.equal(big.status, 500, 'a 2 MiB body is refused');
    t.match(big.text, /larger than/);
  } else t.pass('a 2 MiB body is cut off');
  const get = await client.request({ path: '/NetworkDriver.CreateNetwork', method: 'GET' });
  await get.body.text();
  t.equal(get.statusCode, 404, 'GET is not a plugin call');
  const unknown = await client.request({ path: '/../../etc/passwd', method: 'POST', body: '{}' });
  await unknown.body.text();
  t.equal(unknown.statusCode, 404, 'path traversal in the URL is just an unknown method');

  t.equal(plugin.child.exitCode, null, 'the process is still up');
  const cap = await client.request({ path: '/NetworkDriver.GetCapabilities', method: 'POST', body: '' });
  t.equal(cap.statusCode, 200, 'and still serving');
  await cap.body.text();
  const growth = (await rss(nodePid)) - rssStart;
  t.ok(growth < 64 * 1024 * 1024, `memory bounded (RSS grew ${(growth / 1048576).toFixed(1)} MiB over ${N} requests)`);
  t.equal(await kernelSnapshot(host), before, 'no link, table or rule changed');
  const storeAfter = await fs.readFile(`${plugin.stateDir}/state.json`, 'utf8').catch(() => 'absent');
  t.equal(storeAfter, storeBefore, 'the store is unchanged');
  const files = await fs.readdir(plugin.stateDir);
  t.same(files.filter((f) => !['tsnet.lock', 'state.json', 'state.prev.json'].includes(f)), [], 'no file created in the state directory');
});
