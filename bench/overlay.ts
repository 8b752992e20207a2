// Across two lab hosts: Docker's own overlay driver (swarm mode, the two
// dockerds joined over the lab's LAN) beside tsnet's overlay (VXLAN,
// coordinated through etcd in the lab) and tsnet's encrypted overlay (the
// same inside WireGuard; wireguard-go here, the kernel has no WireGuard),
// and the hosts' own path underneath as the ceiling. Same hosts, same run,
// rounds interleaved. Docker's encrypted overlay (IPsec ESP, AES-GCM)
// cannot run on this kernel, which lacks AES-GCM: it has no row.
import { Lab, ETCD_URL, type LabHost } from '../test/helpers/lab.js';
import { hostPairs, joinSwarm, measurePairs, runRounds } from './probe.js';
import type { Figure } from './docker.js';

/** One overlay row of the comparison: a network made on both hosts, then a container on each. */
export interface OverlayRow {
  label: string;
  network: string;
  create(h1: LabHost, h2: LabHost): Promise<void>;
}

export const UNDERLAY = 'hosts directly (underlay)';
export const DOCKER_OVERLAY = 'docker overlay';

/**
 * The overlays compared, in table order after the underlay. Another row
 * (an encrypted overlay, say) is one more entry here: the figures, ratios
 * and docs follow.
 */
export const OVERLAY_ROWS: OverlayRow[] = [
  {
    label: DOCKER_OVERLAY,
    network: 'bench-dov',
    // Swarm-scoped: made once, on the manager.
    create: (h1) => h1.docker(['network', 'create', '-d', 'overlay', '--attachable', '--subnet', '10.71.0.0/24', 'bench-dov']).then(() => undefined),
  },
  {
    label: 'tsnet overlay',
    network: 'bench-tov',
    create: async (h1, h2) => {
      const args = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.72.0.0/16', 'bench-tov'];
      await h1.docker(args);
      await h2.docker(args);
    },
  },
  {
    // The default MTU for a 1500 underlay, set explicitly: the lab's tunnel takes more (TSNET_WG_MTU below).
    label: 'tsnet encrypted overlay (wireguard-go)',
    network: 'bench-tenc',
    create: async (h1, h2) => {
      const args = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', 'tsnet.encrypt=true', '-o', 'com.docker.network.driver.mtu=1370', '--subnet', '10.73.0.0/16', 'bench-tenc'];
      await h1.docker(args);
      await h2.docker(args);
    },
  },
  {
    label: 'tsnet encrypted overlay (wireguard-go, MTU 64930)',
    network: 'bench-tencbig',
    create: async (h1, h2) => {
      const args = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '-o', 'tsnet.encrypt=true', '--subnet', '10.74.0.0/16', 'bench-tencbig'];
      await h1.docker(args);
      await h2.docker(args);
    },
  },
];

export async function overlayFigures(rounds: number, dataRounds: number, seconds: number, log: (m: string) => void): Promise<Figure[]> {
  // A WireGuard interface that takes large packets: the encrypted network at
  // the default MTU (1370, set explicitly) sends exactly what it would
  // without it; the second one uses it (IP fragments on the underlay).
  const lab = await Lab.start({ hosts: 2, etcd: true, tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_LOG_LEVEL: 'info', TSNET_WG_MTU: '65000' } });
  const [h1, h2] = lab.hosts as [LabHost, LabHost];
  try {
    await joinSwarm(h1, h2);
    for (const row of OVERLAY_ROWS) await row.create(h1, h2);
    await h1.docker(['network', 'create', 'bench-br']);
    log(`bench: overlays up (${OVERLAY_ROWS.map((r) => r.label).join(', ')})`);

    const nets: Record<string, string> = { 'docker bridge (one host)': 'bench-br', ...Object.fromEntries(OVERLAY_ROWS.map((r) => [r.label, r.network])) };
    const run = await runRounds(h1, nets, rounds);

    const pairs = await hostPairs(h1, h2, UNDERLAY, OVERLAY_ROWS.map((r) => [r.label, r.network] as const));
    // Overlay forwarding entries arrive through etcd / gossip: wait until each path answers.
    const { tcp, rtt } = await measurePairs(pairs, dataRounds, seconds, 5202);
    const baselines = [UNDERLAY, DOCKER_OVERLAY];
    return [
      { name: '`docker run --rm true` on an overlay (host 1)', unit: 'ms', results: run, note: 'the one-host bridge row is for scale' },
      { name: `TCP throughput across hosts (iperf3, one stream, ${seconds} s)`, unit: 'Gbit/s', higherIsBetter: true, results: tcp, baselines, note: 'MTU 1450 on the plain overlays, 1370 on the encrypted one (the default: WireGuard 60 + VXLAN over the tunnel 70), 64930 on the last (TSNET_WG_MTU=65000: wireguard-go encrypts 64 KB packets, the underlay carries them as IP fragments); the underlay row is the two host namespaces directly' },
      { name: 'Ping round trip across hosts (mean of 50)', unit: 'µs', results: rtt, baselines },
    ];
  } finally {
    await lab.stop();
  }
}
