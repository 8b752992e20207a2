// macvlan: tsnet's macvlan mode beside Docker's own macvlan driver on the
// same lab dockerd and the same parent (the host's eth0 on the lab LAN),
// rounds interleaved. The data path is measured from the LAN host (the
// lab's outside namespace) to a container, which is what macvlan is for.
// A third row, tsnet's driver with Docker's IPAM, tells the driver's own
// cost from that of tsnet's IPAM (its round trips and durable writes); it
// needs a parent of its own (one tsnet network per parent), a second leg of
// the host on the same LAN.
import { Lab, IMAGE, sh } from '../test/helpers/lab.js';
import { timeIt } from './stats.js';
import { iperf, ipOf, pidOf } from './probe.js';
import type { Figure } from './docker.js';

const LAN = ['--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1'];
/**
 * Docker's driver and tsnet share the parent but never an address: disjoint
 * ranges, and tsnet's IPAM for tsnet's network (Docker's IPAM holds one
 * network per subnet, so the two could not be up together on it).
 */
const VARIANTS: Record<string, string[]> = {
  'docker macvlan': ['-d', 'macvlan', '-o', 'parent=eth0', ...LAN, '--ip-range', '10.99.0.128/27'],
  'tsnet macvlan': ['-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth0', ...LAN, '--ip-range', '10.99.0.160/27'],
  // Docker's IPAM holds one network per subnet: this one's is apart (no traffic is measured on it).
  "tsnet macvlan, Docker's IPAM": ['-d', 'tsnet', '-o', 'tsnet.mode=macvlan', '-o', 'parent=eth1', '--subnet', '10.98.0.0/24'],
};

export async function macvlanFigures(rounds: number, dataRounds: number, seconds: number, log: (m: string) => void): Promise<Figure[]> {
  const lab = await Lab.start({ hosts: 1, tsnetEnv: { TSNET_LOG_LEVEL: 'info' } });
  const h = lab.host;
  try {
    await h.exec('ip', ['link', 'add', 'eth1', 'type', 'veth', 'peer', 'name', 'h1b', 'netns', lab.lanNs]);
    await h.exec('ip', ['link', 'set', 'eth1', 'up']);
    await sh('ip', ['-n', lab.lanNs, 'link', 'set', 'h1b', 'master', 'lan0', 'up']);
    const run: Record<string, number[]> = Object.fromEntries(Object.keys(VARIANTS).map((k) => [k, [] as number[]]));
    const createRm: Record<string, number[]> = Object.fromEntries(Object.keys(VARIANTS).map((k) => [k, [] as number[]]));
    // Create + rm first, while no network holds the parent.
    for (let i = 0; i < rounds; i++) {
      for (const [label, args] of Object.entries(VARIANTS)) {
        createRm[label]!.push(await timeIt(async () => {
          await h.docker(['network', 'create', ...args, 'bench-mv-cr']);
          await h.docker(['network', 'rm', 'bench-mv-cr']);
        }));
      }
    }
    const nets: Record<string, string> = { 'docker macvlan': 'bench-dmv', 'tsnet macvlan': 'bench-tmv', "tsnet macvlan, Docker's IPAM": 'bench-tmvd' };
    for (const [label, net] of Object.entries(nets)) await h.docker(['network', 'create', ...VARIANTS[label]!, net]);
    log('bench: macvlan networks up (Docker driver and tsnet on one parent)');
    for (const net of Object.values(nets)) await h.docker(['run', '--rm', '--network', net, IMAGE, 'true']);
    for (let i = 0; i < rounds; i++) {
      for (const [label, net] of Object.entries(nets)) run[label]!.push(await timeIt(() => h.docker(['run', '--rm', '--network', net, IMAGE, 'true'])));
    }
    const targets: Record<string, { pid: string; ip: string }> = {};
    for (const [label, net] of Object.entries(nets).filter(([l]) => !l.includes("Docker's IPAM"))) {
      await h.docker(['run', '-d', '--name', `${net}-s`, '--network', net, IMAGE, 'sleep', '3600']);
      targets[label] = { pid: await pidOf(h, `${net}-s`), ip: await ipOf(h, `${net}-s`, net) };
    }
    const tcp: Record<string, number[]> = Object.fromEntries(Object.keys(targets).map((k) => [k, [] as number[]]));
    for (let i = 0; i < dataRounds; i++) {
      for (const [label, p] of Object.entries(targets)) tcp[label]!.push(await iperf(['-t', p.pid, '-n'], [`--net=/run/netns/${lab.outNs}`], p.ip, seconds, 5204));
    }
    return [
      { name: '`docker run --rm true` on a macvlan network', unit: 'ms', results: run },
      { name: '`docker network create` + `rm`, macvlan on eth0', unit: 'ms', results: createRm },
      { name: `TCP from a LAN host to a macvlan container (iperf3, one stream, ${seconds} s)`, unit: 'Gbit/s', higherIsBetter: true, results: tcp },
    ];
  } finally {
    await lab.stop();
  }
}
