// Across two lab hosts on one LAN: tsnet's routed network (no encapsulation)
// beside tsnet's overlay and Docker's own overlay (swarm), with the hosts'
// own path as the ceiling the routed network is held to. Same hosts, same
// run, rounds interleaved. The targets (issue 12): cross-host TCP at least
// 0.95 of the underlay's, round trip at most 1.1 times it, and
// `docker run --rm true` on a routed network no slower than on a tsnet
// bridge network (the container's side is the same bridge and veth).
import { Lab, ETCD_URL, type LabHost } from '../test/helpers/lab.js';
import { hostPairs, joinSwarm, measurePairs, runRounds } from './probe.js';
import type { Figure } from './docker.js';

export const UNDERLAY = 'hosts directly (underlay)';

export async function routedFigures(rounds: number, dataRounds: number, seconds: number, log: (m: string) => void): Promise<Figure[]> {
  const lab = await Lab.start({ hosts: 2, etcd: true, tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_LOG_LEVEL: 'info' } });
  const [h1, h2] = lab.hosts as [LabHost, LabHost];
  try {
    await joinSwarm(h1, h2);
    await h1.docker(['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.71.0.0/24', 'bench-dov']);
    for (const h of [h1, h2]) {
      await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.72.0.0/16', 'bench-tov']);
      await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--subnet', '10.73.0.0/16', 'bench-rt']);
    }
    await h1.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'bench-tbr']);
    log('bench: routed, tsnet overlay and Docker overlay up on two hosts');

    const nets: Record<string, string> = { 'tsnet bridge (one host)': 'bench-tbr', 'tsnet routed': 'bench-rt', 'tsnet overlay': 'bench-tov', 'docker overlay': 'bench-dov' };
    const run = await runRounds(h1, nets, rounds);

    const pairs = await hostPairs(h1, h2, UNDERLAY, [['tsnet routed', 'bench-rt'], ['tsnet overlay', 'bench-tov'], ['docker overlay', 'bench-dov']]);
    const { tcp, rtt } = await measurePairs(pairs, dataRounds, seconds, 5203);
    return [
      { name: '`docker run --rm true`, routed beside the others (host 1)', unit: 'ms', results: run, note: 'ratios against the tsnet bridge network on the same dockerd; target for routed: 1.0 or less' },
      { name: `TCP throughput across hosts, routed beside the overlays (iperf3, one stream, ${seconds} s)`, unit: 'Gbit/s', higherIsBetter: true, results: tcp, note: 'ratios against the two host namespaces directly; MTU 1500 routed, 1450 on both overlays; target for routed: 0.95 or more' },
      { name: 'Ping round trip across hosts, routed beside the overlays (mean of 50)', unit: 'µs', results: rtt, note: 'ratios against the underlay; target for routed: 1.1 or less' },
    ];
  } finally {
    await lab.stop();
  }
}
