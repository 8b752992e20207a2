// Figures taken through a real dockerd in the lab, tsnet side by side with
// Docker's own bridge driver on the same daemon, rounds interleaved so drift
// hits both alike.
import { promises as fs } from 'node:fs';
import { execa, type ResultPromise } from 'execa';
import { IMAGE, cleanEnv, sh, type LabHost } from '../test/helpers/lab.js';
import { summarize, timeIt, type Summary } from './stats.js';

export interface Figure {
  name: string;
  unit: string;
  higherIsBetter?: boolean;
  /** driver label -> one value per round */
  results: Record<string, number[]>;
  note?: string;
  /** rows to give a ratio column against, in order (default: the section's one baseline) */
  baselines?: string[];
}

const TS = ['-d', 'tsnet', '--ipam-driver', 'tsnet'];

function empty(labels: string[]): Record<string, number[]> {
  return Object.fromEntries(labels.map((k) => [k, [] as number[]]));
}

async function removeContainers(h: LabHost, names: string[]): Promise<void> {
  for (let i = 0; i < names.length; i += 50) await h.docker(['rm', '-f', ...names.slice(i, i + 50)], { check: false, timeout: 300_000 });
}

/** Run fn over items with at most `width` in flight. */
async function pool<T>(items: T[], width: number, fn: (item: T) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: Math.min(width, items.length) }, async () => {
      while (next < items.length) await fn(items[next++]!);
    }),
  );
}

export async function runLatency(h: LabHost, rounds: number): Promise<Figure> {
  const nets: Record<string, string> = { none: 'none', 'docker bridge': 'bench-br', 'tsnet bridge': 'bench-ts' };
  await h.docker(['network', 'create', 'bench-br']);
  await h.docker(['network', 'create', ...TS, 'bench-ts']);
  const results = empty(Object.keys(nets));
  for (const net of Object.values(nets)) await h.docker(['run', '--rm', '--network', net, IMAGE, 'true']);
  for (let i = 0; i < rounds; i++) {
    for (const [label, net] of Object.entries(nets)) {
      results[label]!.push(await timeIt(() => h.docker(['run', '--rm', '--network', net, IMAGE, 'true'])));
    }
  }
  await h.docker(['network', 'rm', 'bench-br', 'bench-ts']);
  return { name: '`docker run --rm true`', unit: 'ms', results };
}

export async function networkCreateRemove(h: LabHost, rounds: number): Promise<Figure> {
  const variants: Record<string, string[]> = {
    'docker bridge': [],
    'tsnet bridge': ['-d', 'tsnet'],
    'tsnet bridge + tsnet IPAM': TS,
  };
  const results = empty(Object.keys(variants));
  for (let i = 0; i < rounds; i++) {
    for (const [label, args] of Object.entries(variants)) {
      results[label]!.push(
        await timeIt(async () => {
          await h.docker(['network', 'create', ...args, 'bench-cr']);
          await h.docker(['network', 'rm', 'bench-cr']);
        }),
      );
    }
  }
  return { name: '`docker network create` + `rm`', unit: 'ms', results };
}

/** `n` containers started at once (`docker run -d`, all in flight together). */
export async function burst(h: LabHost, rounds: number, n: number): Promise<Figure> {
  const nets: Record<string, string> = { 'docker bridge': 'bench-burst-br', 'tsnet bridge': 'bench-burst-ts' };
  await h.docker(['network', 'create', '--subnet', '10.61.0.0/22', 'bench-burst-br']);
  await h.docker(['network', 'create', ...TS, '--subnet', '10.62.0.0/22', 'bench-burst-ts']);
  const results = empty(Object.keys(nets));
  for (let i = 0; i < rounds; i++) {
    for (const [label, net] of Object.entries(nets)) {
      const names = Array.from({ length: n }, (_, k) => `bench-burst-${i}-${k}`);
      const ms = await timeIt(() => Promise.all(names.map((name) => h.docker(['run', '-d', '--name', name, '--network', net, IMAGE, 'sleep', '600'], { timeout: 300_000 }))));
      results[label]!.push((n * 1000) / ms);
      await removeContainers(h, names);
    }
  }
  await h.docker(['network', 'rm', ...Object.values(nets)]);
  return { name: `Burst: ${n} containers started concurrently`, unit: 'containers/s', higherIsBetter: true, results };
}

async function pidOf(h: LabHost, c: string): Promise<string> {
  return (await h.docker(['inspect', '-f', '{{.State.Pid}}', c])).stdout.trim();
}

async function ipOf(h: LabHost, c: string, net: string): Promise<string> {
  return (await h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, c])).stdout.trim();
}

async function iperf(serverPid: string, clientPid: string, ip: string, seconds: number): Promise<number> {
  const server: ResultPromise = execa('nsenter', ['-t', serverPid, '-n', '--', 'iperf3', '-s', '-1', '-p', '5201'], { reject: false, env: cleanEnv(), extendEnv: false });
  try {
    for (let attempt = 0; ; attempt++) {
      await new Promise((r) => setTimeout(r, 200));
      const res = await sh('nsenter', ['-t', clientPid, '-n', '--', 'iperf3', '-c', ip, '-p', '5201', '-t', String(seconds), '-J'], { check: false, timeout: (seconds + 30) * 1000 });
      if (res.exitCode === 0) {
        const j = JSON.parse(res.stdout) as { end: { sum_received: { bits_per_second: number } } };
        return j.end.sum_received.bits_per_second / 1e9;
      }
      if (attempt >= 10) throw new Error(`iperf3 client failed: ${res.stdout.slice(0, 300)} ${res.stderr.slice(0, 300)}`);
    }
  } finally {
    server.kill('SIGTERM');
    await server;
  }
}

async function pingRtt(clientPid: string, ip: string, count: number): Promise<number> {
  const res = await sh('nsenter', ['-t', clientPid, '-n', '--', 'ping', '-c', String(count), '-i', '0.02', '-q', ip]);
  const m = /= [\d.]+\/([\d.]+)\//.exec(res.stdout);
  if (!m) throw new Error(`cannot read ping output: ${res.stdout}`);
  return Number(m[1]) * 1000;
}

/** Container to container on one host: iperf3 TCP throughput and ping RTT, run from the host in the containers' namespaces. */
export async function dataPath(h: LabHost, rounds: number, seconds: number): Promise<{ tcp: Figure; rtt: Figure }> {
  const nets: Record<string, string> = { 'docker bridge': 'bench-dp-br', 'tsnet bridge': 'bench-dp-ts' };
  await h.docker(['network', 'create', 'bench-dp-br']);
  await h.docker(['network', 'create', ...TS, 'bench-dp-ts']);
  const pairs: Record<string, { serverPid: string; clientPid: string; ip: string }> = {};
  for (const [label, net] of Object.entries(nets)) {
    await h.docker(['run', '-d', '--name', `${net}-a`, '--network', net, IMAGE, 'sleep', '3600']);
    await h.docker(['run', '-d', '--name', `${net}-b`, '--network', net, IMAGE, 'sleep', '3600']);
    pairs[label] = { serverPid: await pidOf(h, `${net}-a`), clientPid: await pidOf(h, `${net}-b`), ip: await ipOf(h, `${net}-a`, net) };
  }
  const tcp = empty(Object.keys(nets));
  const rtt = empty(Object.keys(nets));
  for (let i = 0; i < rounds; i++) {
    for (const label of Object.keys(nets)) {
      const p = pairs[label]!;
      tcp[label]!.push(await iperf(p.serverPid, p.clientPid, p.ip, seconds));
      rtt[label]!.push(await pingRtt(p.clientPid, p.ip, 50));
    }
  }
  await removeContainers(h, Object.values(nets).flatMap((n) => [`${n}-a`, `${n}-b`]));
  await h.docker(['network', 'rm', ...Object.values(nets)]);
  return {
    tcp: { name: `TCP throughput container to container, one host (iperf3, one stream, ${seconds} s)`, unit: 'Gbit/s', higherIsBetter: true, results: tcp },
    rtt: { name: 'Ping round trip container to container, one host (mean of 50)', unit: 'µs', results: rtt },
  };
}

/** `docker run --rm -p …` with one and with ten published ports. */
export async function publishedPorts(h: LabHost, rounds: number): Promise<Figure[]> {
  const nets: Record<string, string> = { 'docker bridge': 'bench-p-br', 'tsnet bridge': 'bench-p-ts' };
  await h.docker(['network', 'create', 'bench-p-br']);
  await h.docker(['network', 'create', ...TS, 'bench-p-ts']);
  const shapes: Record<string, string[]> = { 'one port': ['-p', '18080:80'], 'ten ports': ['-p', '18080-18089:80-89'] };
  const figs: Figure[] = [];
  for (const [shape, args] of Object.entries(shapes)) {
    const results = empty(Object.keys(nets));
    for (const net of Object.values(nets)) await h.docker(['run', '--rm', '--network', net, ...args, IMAGE, 'true']);
    for (let i = 0; i < rounds; i++) {
      for (const [label, net] of Object.entries(nets)) {
        results[label]!.push(await timeIt(() => h.docker(['run', '--rm', '--network', net, ...args, IMAGE, 'true'])));
      }
    }
    figs.push({ name: `\`docker run --rm -p\`, ${shape}`, unit: 'ms', results });
  }
  await h.docker(['network', 'rm', ...Object.values(nets)]);
  return figs;
}

export interface ConnectCurve {
  levels: number[];
  /** driver label -> per level, the probe samples */
  results: Record<string, number[][]>;
}

/**
 * Attach latency through dockerd against the number of containers already on
 * the network: a probe container (parked on a bridge network of its own) is
 * `docker network connect`ed and disconnected again, `probes` times per
 * level, both drivers interleaved. Same dockerd, same path; only the driver
 * differs.
 */
export async function connectCurve(h: LabHost, levels: number[], probes: number, log: (m: string) => void): Promise<ConnectCurve> {
  const nets: Record<string, string> = { 'docker bridge': 'bench-cc-br', 'tsnet bridge': 'bench-cc-ts' };
  await h.docker(['network', 'create', '--subnet', '10.63.0.0/20', 'bench-cc-br']);
  await h.docker(['network', 'create', ...TS, '--subnet', '10.64.0.0/20', 'bench-cc-ts']);
  await h.docker(['network', 'create', 'bench-park']);
  await h.docker(['run', '-d', '--name', 'bench-probe', '--network', 'bench-park', IMAGE, 'sleep', '86400']);
  const filled: Record<string, string[]> = { 'docker bridge': [], 'tsnet bridge': [] };
  const results: Record<string, number[][]> = { 'docker bridge': [], 'tsnet bridge': [] };
  try {
    for (const level of levels) {
      for (const [label, net] of Object.entries(nets)) {
        const want = Array.from({ length: level - filled[label]!.length }, (_, k) => `${net}-${filled[label]!.length + k}`);
        await pool(want, 4, (name) => h.docker(['run', '-d', '--name', name, '--network', net, IMAGE, 'sleep', '86400'], { timeout: 300_000 }));
        filled[label]!.push(...want);
      }
      const per: Record<string, number[]> = { 'docker bridge': [], 'tsnet bridge': [] };
      for (let k = 0; k < probes; k++) {
        for (const [label, net] of Object.entries(nets)) {
          per[label]!.push(await timeIt(() => h.docker(['network', 'connect', net, 'bench-probe'])));
          await h.docker(['network', 'disconnect', net, 'bench-probe']);
        }
      }
      for (const label of Object.keys(nets)) results[label]!.push(per[label]!);
      log(`bench: docker network connect at ${level} containers`);
    }
  } finally {
    await removeContainers(h, ['bench-probe', ...Object.values(filled).flat()]);
    await h.docker(['network', 'rm', 'bench-park', ...Object.values(nets)], { check: false });
  }
  return { levels, results };
}

/** tsnet's own handler time (debug "handled" lines), per call and per endpoint (CreateEndpoint + Join). */
export async function pluginShare(h: LabHost, containers: number): Promise<{ calls: Record<string, Summary>; perEndpoint: Summary }> {
  await h.stopTsnet();
  await h.startTsnet({ TSNET_LOG_LEVEL: 'debug' });
  await h.docker(['network', 'create', ...TS, 'bench-share']);
  await fs.writeFile(h.tsnetLog, '');
  for (let i = 0; i < containers; i++) await h.docker(['run', '--rm', '--network', 'bench-share', IMAGE, 'true']);
  await h.docker(['network', 'rm', 'bench-share']);
  const text = await fs.readFile(h.tsnetLog, 'utf8');
  await h.stopTsnet();
  await h.startTsnet({ TSNET_LOG_LEVEL: 'info' });
  const per: Record<string, number[]> = {};
  const byEndpoint = new Map<string, number>();
  for (const line of text.split('\n')) {
    if (!line.includes('"handled"')) continue;
    try {
      const rec = JSON.parse(line) as { method?: string; ms?: number; endpointId?: string };
      if (!rec.method || typeof rec.ms !== 'number') continue;
      (per[rec.method] ??= []).push(rec.ms);
      if (rec.endpointId && (rec.method === 'NetworkDriver.CreateEndpoint' || rec.method === 'NetworkDriver.Join')) {
        byEndpoint.set(rec.endpointId, (byEndpoint.get(rec.endpointId) ?? 0) + rec.ms);
      }
    } catch {
      /* partial line */
    }
  }
  return { calls: Object.fromEntries(Object.entries(per).map(([k, v]) => [k, summarize(v)])), perEndpoint: summarize([...byEndpoint.values()]) };
}
