// What the lab benchmarks measure a data path with, in one place: a
// container's pid and address, iperf3 and ping between network namespaces
// given as nsenter arguments (['-t', pid, '-n'] or ['--net=/run/netns/x']).
import { IMAGE, sh, type LabHost } from '../test/helpers/lab.js';
import { timeIt } from './stats.js';

/**
 * Two lab hosts in one swarm, for Docker's overlay beside tsnet's; on a VXLAN
 * port of its own (7789), so Docker's and tsnet's tunnels never share one.
 */
export async function joinSwarm(h1: LabHost, h2: LabHost): Promise<void> {
  await h1.docker(['swarm', 'init', '--advertise-addr', h1.lanIp, '--listen-addr', `${h1.lanIp}:2377`, '--data-path-port', '7789']);
  const token = (await h1.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
  await h2.docker(['swarm', 'join', '--token', token, '--advertise-addr', h2.lanIp, `${h1.lanIp}:2377`]);
}

export async function pidOf(h: LabHost, c: string): Promise<string> {
  return (await h.docker(['inspect', '-f', '{{.State.Pid}}', c])).stdout.trim();
}

export async function ipOf(h: LabHost, c: string, net: string): Promise<string> {
  return (await h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, c])).stdout.trim();
}

/** One iperf3 stream for `seconds`, in Gbit/s; the server serves once. Each section uses a port of its own. */
export async function iperf(server: string[], client: string[], ip: string, seconds: number, port: number): Promise<number> {
  const srv = sh('nsenter', [...server, '--', 'iperf3', '-s', '-1', '-p', String(port)], { check: false, timeout: (seconds + 60) * 1000 });
  try {
    for (let attempt = 0; ; attempt++) {
      await new Promise((r) => setTimeout(r, 300));
      const res = await sh('nsenter', [...client, '--', 'iperf3', '-c', ip, '-p', String(port), '-t', String(seconds), '-J'], { check: false, timeout: (seconds + 30) * 1000 });
      if (res.exitCode === 0) return (JSON.parse(res.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9;
      if (attempt >= 10) throw new Error(`iperf3: ${res.stdout.slice(0, 200)} ${res.stderr.slice(0, 200)}`);
    }
  } finally {
    await srv;
  }
}

/** Mean round trip of 50 pings, in µs. */
export async function ping(client: string[], ip: string): Promise<number> {
  const res = await sh('nsenter', [...client, '--', 'ping', '-c', '50', '-i', '0.02', '-q', ip]);
  const m = /= [\d.]+\/([\d.]+)\//.exec(res.stdout);
  if (!m) throw new Error(`ping: ${res.stdout}`);
  return Number(m[1]) * 1000;
}

/** `docker run --rm true` on each network: once each to warm up, then `rounds` interleaved rounds (ms). */
export async function runRounds(h: LabHost, nets: Record<string, string>, rounds: number): Promise<Record<string, number[]>> {
  const run: Record<string, number[]> = Object.fromEntries(Object.keys(nets).map((k) => [k, [] as number[]]));
  for (const net of Object.values(nets)) await h.docker(['run', '--rm', '--network', net, IMAGE, 'true']);
  for (let i = 0; i < rounds; i++) {
    for (const [label, net] of Object.entries(nets)) run[label]!.push(await timeIt(() => h.docker(['run', '--rm', '--network', net, IMAGE, 'true'])));
  }
  return run;
}

export interface Pair {
  server: string[];
  client: string[];
  ip: string;
}

/** The two hosts themselves (the underlay), and per network a container on each host, host 1's the client. */
export async function hostPairs(h1: LabHost, h2: LabHost, underlay: string, nets: ReadonlyArray<readonly [label: string, net: string]>): Promise<Record<string, Pair>> {
  const pairs: Record<string, Pair> = { [underlay]: { server: [`--net=${h2.netnsPath}`], client: [`--net=${h1.netnsPath}`], ip: h2.lanIp } };
  for (const [label, net] of nets) {
    await h1.docker(['run', '-d', '--name', `${net}-a`, '--network', net, IMAGE, 'sleep', '3600']);
    await h2.docker(['run', '-d', '--name', `${net}-b`, '--network', net, IMAGE, 'sleep', '3600']);
    pairs[label] = { server: ['-t', await pidOf(h2, `${net}-b`), '-n'], client: ['-t', await pidOf(h1, `${net}-a`), '-n'], ip: await ipOf(h2, `${net}-b`, net) };
  }
  return pairs;
}

/** Wait until every pair's path answers (routes and forwarding entries arrive through etcd or gossip), then measure TCP and RTT in interleaved rounds. */
export async function measurePairs(pairs: Record<string, Pair>, dataRounds: number, seconds: number, port: number): Promise<{ tcp: Record<string, number[]>; rtt: Record<string, number[]> }> {
  for (const [label, p] of Object.entries(pairs)) {
    let okay = false;
    for (let k = 0; k < 30 && !okay; k++) okay = (await sh('nsenter', [...p.client, '--', 'ping', '-c', '1', '-W', '1', p.ip], { check: false })).exitCode === 0;
    if (!okay) throw new Error(`${label}: ${p.ip} never answered`);
  }
  const tcp: Record<string, number[]> = Object.fromEntries(Object.keys(pairs).map((k) => [k, [] as number[]]));
  const rtt: Record<string, number[]> = Object.fromEntries(Object.keys(pairs).map((k) => [k, [] as number[]]));
  for (let i = 0; i < dataRounds; i++) {
    for (const [label, p] of Object.entries(pairs)) {
      tcp[label]!.push(await iperf(p.server, p.client, p.ip, seconds, port));
      rtt[label]!.push(await ping(p.client, p.ip));
    }
  }
  return { tcp, rtt };
}
