// Across two lab hosts on one LAN: tsnet's routed network (no encapsulation)
// beside tsnet's overlay and Docker's own overlay (swarm), with the hosts'
// own path as the ceiling the routed network is held to. Same hosts, same
// run, rounds interleaved. The targets (issue 12): cross-host TCP at least
// 0.95 of the underlay's, round trip at most 1.1 times it, and
// `docker run --rm true` on a routed network no slower than on a tsnet
// bridge network (the container's side is the same bridge and veth).
import { Lab, ETCD_URL, IMAGE, sh, type LabHost } from '../test/helpers/lab.js';
import { timeIt } from './stats.js';
import type { Figure } from './docker.js';

async function pidOf(h: LabHost, c: string): Promise<string> {
  return (await h.docker(['inspect', '-f', '{{.State.Pid}}', c])).stdout.trim();
}

async function ipOf(h: LabHost, c: string, net: string): Promise<string> {
  return (await h.docker(['inspect', '-f', `{{(index .NetworkSettings.Networks "${net}").IPAddress}}`, c])).stdout.trim();
}

/** iperf3 between two network namespaces given as nsenter arguments. */
async function iperf(server: string[], client: string[], ip: string, seconds: number): Promise<number> {
  const srv = sh('nsenter', [...server, '--', 'iperf3', '-s', '-1', '-p', '5203'], { check: false, timeout: (seconds + 60) * 1000 });
  try {
    for (let attempt = 0; ; attempt++) {
      await new Promise((r) => setTimeout(r, 300));
      const res = await sh('nsenter', [...client, '--', 'iperf3', '-c', ip, '-p', '5203', '-t', String(seconds), '-J'], { check: false, timeout: (seconds + 30) * 1000 });
      if (res.exitCode === 0) return (JSON.parse(res.stdout) as { end: { sum_received: { bits_per_second: number } } }).end.sum_received.bits_per_second / 1e9;
      if (attempt >= 10) throw new Error(`iperf3: ${res.stdout.slice(0, 200)} ${res.stderr.slice(0, 200)}`);
    }
  } finally {
    await srv;
  }
}

async function ping(client: string[], ip: string): Promise<number> {
  const res = await sh('nsenter', [...client, '--', 'ping', '-c', '50', '-i', '0.02', '-q', ip]);
  const m = /= [\d.]+\/([\d.]+)\//.exec(res.stdout);
  if (!m) throw new Error(`ping: ${res.stdout}`);
  return Number(m[1]) * 1000;
}

export const UNDERLAY = 'hosts directly (underlay)';

export async function routedFigures(rounds: number, dataRounds: number, seconds: number, log: (m: string) => void): Promise<Figure[]> {
  const lab = await Lab.start({ hosts: 2, etcd: true, tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_LOG_LEVEL: 'info' } });
  const [h1, h2] = lab.hosts as [LabHost, LabHost];
  try {
    // Swarm on a VXLAN port of its own, so Docker's and tsnet's tunnels never share one.
    await h1.docker(['swarm', 'init', '--advertise-addr', h1.lanIp, '--listen-addr', `${h1.lanIp}:2377`, '--data-path-port', '7789']);
    const token = (await h1.docker(['swarm', 'join-token', '-q', 'worker'])).stdout.trim();
    await h2.docker(['swarm', 'join', '--token', token, '--advertise-addr', h2.lanIp, `${h1.lanIp}:2377`]);
    await h1.docker(['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.71.0.0/24', 'bench-dov']);
    for (const h of [h1, h2]) {
      await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.72.0.0/16', 'bench-tov']);
      await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--subnet', '10.73.0.0/16', 'bench-rt']);
    }
    await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'bench-tbr']);
    log('bench: routed, tsnet overlay and Docker overlay up on two hosts');

    const nets: Record<string, string> = { 'tsnet bridge (one host)': 'bench-tbr', 'tsnet routed': 'bench-rt', 'tsnet overlay': 'bench-tov', 'docker overlay': 'bench-dov' };
    const run: Record<string, number[]> = Object.fromEntries(Object.keys(nets).map((k) => [k, [] as number[]]));
    for (const net of Object.values(nets)) await h1.docker(['run', '--rm', '--network', net, IMAGE, 'true']);
    for (let i = 0; i < rounds; i++) {
      for (const [label, net] of Object.entries(nets)) run[label]!.push(await timeIt(() => h1.docker(['run', '--rm', '--network', net, IMAGE, 'true'])));
    }

    const pairs: Record<string, { server: string[]; client: string[]; ip: string }> = {
      [UNDERLAY]: { server: [`--net=${h2.netnsPath}`], client: [`--net=${h1.netnsPath}`], ip: h2.lanIp },
    };
    for (const [label, net] of [['tsnet routed', 'bench-rt'], ['tsnet overlay', 'bench-tov'], ['docker overlay', 'bench-dov']] as const) {
      await h1.docker(['run', '-d', '--name', `${net}-a`, '--network', net, IMAGE, 'sleep', '3600']);
      await h2.docker(['run', '-d', '--name', `${net}-b`, '--network', net, IMAGE, 'sleep', '3600']);
      pairs[label] = { server: ['-t', await pidOf(h2, `${net}-b`), '-n'], client: ['-t', await pidOf(h1, `${net}-a`), '-n'], ip: await ipOf(h2, `${net}-b`, net) };
    }
    // Routes and forwarding entries arrive through etcd (or gossip): wait until each path answers.
    for (const [label, p] of Object.entries(pairs)) {
      let okay = false;
      for (let k = 0; k < 30 && !okay; k++) okay = (await sh('nsenter', [...p.client, '--', 'ping', '-c', '1', '-W', '1', p.ip], { check: false })).exitCode === 0;
      if (!okay) throw new Error(`${label}: ${p.ip} never answered`);
    }
    const tcp: Record<string, number[]> = Object.fromEntries(Object.keys(pairs).map((k) => [k, [] as number[]]));
    const rtt: Record<string, number[]> = Object.fromEntries(Object.keys(pairs).map((k) => [k, [] as number[]]));
    for (let i = 0; i < dataRounds; i++) {
      for (const [label, p] of Object.entries(pairs)) {
        tcp[label]!.push(await iperf(p.server, p.client, p.ip, seconds));
        rtt[label]!.push(await ping(p.client, p.ip));
      }
    }
    return [
      { name: '`docker run --rm true`, routed beside the others (host 1)', unit: 'ms', results: run, note: 'ratios against the tsnet bridge network on the same dockerd; target for routed: 1.0 or less' },
      { name: `TCP throughput across hosts, routed beside the overlays (iperf3, one stream, ${seconds} s)`, unit: 'Gbit/s', higherIsBetter: true, results: tcp, note: 'ratios against the two host namespaces directly; MTU 1500 routed, 1450 on both overlays; target for routed: 0.95 or more' },
      { name: 'Ping round trip across hosts, routed beside the overlays (mean of 50)', unit: 'µs', results: rtt, note: 'ratios against the underlay; target for routed: 1.1 or less' },
    ];
  } finally {
    await lab.stop();
  }
}
