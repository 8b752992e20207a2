// What each factor of the overlay's data path costs on this kernel, measured
// in scratch namespaces (no dockerd, no tsnet process): two "hosts" joined
// through a LAN bridge namespace (as test/helpers/lab.ts builds them), a
// "container" namespace on each, and the overlay's devices built by hand in
// one of several layouts. Every variant is built at once and the rounds are
// interleaved, so drift on the shared machine hits all alike.
//
//   npx tsx bench/dataplane.ts                       every variant, 5 rounds of 3 s
//   npx tsx bench/dataplane.ts --list                the variants and what each isolates
//   npx tsx bench/dataplane.ts --only host,ns --runs 7 --seconds 4   (keys from --list)
//   npx tsx bench/dataplane.ts --json out.json       also keep the raw samples
//
// The host namespaces carry dockerd 20.10's own rule set (captured from a
// lab dockerd: FORWARD policy DROP, its isolation chains, NAT, so conntrack
// is on) unless a variant says otherwise, and tsnet's table and FORWARD glue
// rendered by src/firewall itself, so "tsnet" rows are what a tsnet host runs.
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import { sh } from '../test/helpers/lab.js';
import { renderBase, renderNetwork } from '../src/firewall/nft.js';
import { renderChain } from '../src/firewall/iptables.js';
import { renderVxlanGuard } from '../src/firewall/overlay-rules.js';
import { fmt, ratio, summarize, table } from './stats.js';
import { onAbort } from './abort.js';

/** dockerd 20.10's rules in a fresh host namespace (iptables-save of a lab dockerd, no containers). */
const DOCKERD_RULES = `*filter
:INPUT ACCEPT [0:0]
:FORWARD DROP [0:0]
:OUTPUT ACCEPT [0:0]
:DOCKER - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A FORWARD -j DOCKER-USER
-A FORWARD -j DOCKER-ISOLATION-STAGE-1
-A FORWARD -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A FORWARD -o docker0 -j DOCKER
-A FORWARD -i docker0 ! -o docker0 -j ACCEPT
-A FORWARD -i docker0 -o docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-1 -j RETURN
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
-A DOCKER-ISOLATION-STAGE-2 -j RETURN
-A DOCKER-USER -j RETURN
COMMIT
*nat
:PREROUTING ACCEPT [0:0]
:INPUT ACCEPT [0:0]
:OUTPUT ACCEPT [0:0]
:POSTROUTING ACCEPT [0:0]
:DOCKER - [0:0]
-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER
-A OUTPUT ! -d 127.0.0.0/8 -m addrtype --dst-type LOCAL -j DOCKER
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
`;

/**
 * The host-namespace gateway guard tsnet used before overlays had a
 * namespace of their own (a bridge-family table, consulted per frame), kept
 * here so the "tsnet before" row stays reproducible.
 */
function legacyGatewayGuard(sid: string, vxlan: string, gatewayMac: string, gatewayIp: string): string {
  const t = 'bridge tsnet';
  const c = `g-${sid}`;
  return [
    `add table ${t}`,
    `add map ${t} vx_out { type ifname : verdict; }`,
    `add map ${t} vx_in { type ifname : verdict; }`,
    `add chain ${t} forward { type filter hook forward priority 0; policy accept; }`,
    `add rule ${t} forward oifname vmap @vx_out`,
    `add rule ${t} forward iifname vmap @vx_in`,
    `add chain ${t} output { type filter hook output priority 0; policy accept; }`,
    `add rule ${t} output oifname vmap @vx_out`,
    `add chain ${t} ${c}-out`,
    `add rule ${t} ${c}-out ether saddr ${gatewayMac} drop`,
    `add rule ${t} ${c}-out arp operation request arp daddr ip ${gatewayIp} drop`,
    `add chain ${t} ${c}-in`,
    `add rule ${t} ${c}-in ether saddr ${gatewayMac} drop`,
    `add element ${t} vx_out { "${vxlan}" : jump ${c}-out }`,
    `add element ${t} vx_in { "${vxlan}" : jump ${c}-in }`,
    '',
  ].join('\n');
}

type Layout = 'underlay' | 'host-bridge' | 'own-ns' | 'routed';
/** none: an empty firewall; docker: dockerd's rules and an ACCEPT for the overlay's interface; tsnet: dockerd's plus tsnet's table, glue and overlay guards */
type Rules = 'none' | 'docker' | 'tsnet';

interface Variant {
  /** short name for --only */
  key: string;
  name: string;
  /** what the row isolates */
  why: string;
  layout: Layout;
  rules?: Rules;
  /** net.bridge.bridge-nf-call-iptables in the host namespaces (a new namespace starts at 1, as dockerd sets it) */
  brnf?: 0 | 1;
  /** the same in the overlay's own namespace (own-ns layout) */
  ovBrnf?: 0 | 1;
  underlayMtu?: number;
  /** outer UDP checksum on the VXLAN device (tsnet and Docker leave it off over IPv4) */
  udpcsum?: boolean;
  /** GRO (veth NAPI) on every veth of the path, and rx-udp-gro-forwarding on the underlay */
  gro?: boolean;
  /** conntrack skipped for the VXLAN UDP port in the host namespaces (raw notrack) */
  notrack?: boolean;
  /** remote MACs in the bridge's own FDB too (master), so unicast to them is not flooded to every port */
  bridgeFdb?: boolean;
  /** own-ns layout: the gateway port reaches the host through a one-port bridge (so the host's rules see a bridge) rather than a bare veth */
  hostBridge?: boolean;
}

const VARIANTS: Variant[] = [
  { key: 'underlay', name: 'underlay', why: 'host to host over the LAN, dockerd\'s rules (the ceiling)', layout: 'underlay', rules: 'docker' },
  { key: 'underlay-nofw', name: 'underlay, empty firewall', why: 'what dockerd\'s rules (conntrack) cost the underlay', layout: 'underlay', rules: 'none' },
  { key: 'host', name: 'host bridge (tsnet today)', why: 'bridge + VXLAN in the host namespace, bridge-nf on, dockerd\'s and tsnet\'s rules', layout: 'host-bridge', rules: 'tsnet' },
  { key: 'host-docker', name: 'host bridge, dockerd rules only', why: 'tsnet\'s own table and glue removed', layout: 'host-bridge', rules: 'docker' },
  { key: 'host-nofw', name: 'host bridge, empty firewall', why: 'bridge-nf on but no rule and no conntrack', layout: 'host-bridge', rules: 'none' },
  { key: 'host-brnf0', name: 'host bridge, bridge-nf off', why: 'tsnet today with bridge-nf-call-iptables=0 (not an option on a dockerd host)', layout: 'host-bridge', rules: 'tsnet', brnf: 0 },
  { key: 'host-brnf0-nofw', name: 'host bridge, bridge-nf off, empty firewall', why: 'the host-bridge layout with no netfilter at all', layout: 'host-bridge', rules: 'none', brnf: 0 },
  { key: 'host-csum', name: 'host bridge, udpcsum', why: 'outer UDP checksum on', layout: 'host-bridge', rules: 'tsnet', udpcsum: true },
  { key: 'host-gro', name: 'host bridge, GRO', why: 'veth GRO and UDP GRO forwarding on', layout: 'host-bridge', rules: 'tsnet', gro: true },
  { key: 'ns', name: 'own namespace', why: 'bridge + VXLAN in a namespace of their own (bridge-nf off there), gateway through a veth to the host\'s one-port bridge', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true },
  { key: 'ns-brnf1', name: 'own namespace, bridge-nf on in it', why: 'the same with the new namespace\'s default bridge-nf-call-iptables=1 (no rules there)', layout: 'own-ns', rules: 'tsnet', ovBrnf: 1, hostBridge: true },
  { key: 'ns-veth', name: 'own namespace, bare gateway veth', why: 'gateway on a veth in the host namespace instead of a one-port bridge', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: false },
  { key: 'ns-csum', name: 'own namespace, udpcsum', why: 'outer UDP checksum on', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true, udpcsum: true },
  { key: 'ns-gro', name: 'own namespace, GRO', why: 'veth GRO and UDP GRO forwarding on', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true, gro: true },
  { key: 'ns-notrack', name: 'own namespace, VXLAN notrack', why: 'conntrack skipped for the outer UDP in the host namespace', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true, notrack: true },
  { key: 'underlay-notrack', name: 'underlay notrack', why: 'the underlay with the VXLAN notrack rule in place (it does not apply to TCP)', layout: 'underlay', rules: 'docker', notrack: true },
  { key: 'host-fdb', name: 'host bridge, bridge FDB', why: 'tsnet today with remote MACs in the bridge\'s FDB', layout: 'host-bridge', rules: 'tsnet', bridgeFdb: true },
  { key: 'host-fdb-notrack', name: 'host bridge, bridge FDB, VXLAN notrack', why: 'the best the host-bridge layout can do on a dockerd host', layout: 'host-bridge', rules: 'tsnet', bridgeFdb: true, notrack: true },
  { key: 'ns-fdb', name: 'own namespace, bridge FDB', why: 'remote MACs in the bridge\'s FDB: no flooded copy to the gateway port', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true, bridgeFdb: true },
  { key: 'ns-fdb-notrack', name: 'own namespace, bridge FDB, VXLAN notrack', why: 'both', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true, bridgeFdb: true, notrack: true },
  { key: 'ns-veth-fdb', name: 'own namespace, bare gateway veth, bridge FDB', why: 'as own namespace, bridge FDB, with a bare veth for the gateway', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: false, bridgeFdb: true },
  { key: 'routed', name: 'routed', why: 'no bridge: container veths routed in the host namespace, an L3 VXLAN device (flannel\'s design), dockerd\'s and tsnet-like accept rules', layout: 'routed', rules: 'docker' },
  { key: 'underlay-9000', name: 'underlay, MTU 9000', why: 'the ceiling on a jumbo-frame LAN', layout: 'underlay', rules: 'docker', underlayMtu: 9000 },
  { key: 'host-9000', name: 'host bridge, MTU 9000', why: 'overlay MTU 8950', layout: 'host-bridge', rules: 'tsnet', underlayMtu: 9000 },
  { key: 'ns-9000', name: 'own namespace, MTU 9000', why: 'overlay MTU 8950', layout: 'own-ns', rules: 'tsnet', ovBrnf: 0, hostBridge: true, underlayMtu: 9000 },
];

const SID = '0123456789ab';
const SUBNET = '10.200.0.0/16';
const GATEWAY = '10.200.0.1';
const GW_MAC = '02:aa:00:00:00:01';
const VNI = 4242;
const PORT = 4789;
const hostIp = (i: number): string => `10.98.0.${10 + i}`;
const ctrIp = (i: number): string => `10.200.0.${10 + i}`;
const ctrMac = (i: number): string => `02:cc:00:00:00:0${i}`;
const vxMac = (i: number): string => `02:dd:00:00:00:0${i}`;

interface Built {
  variant: Variant;
  namespaces: string[];
  server: string;
  client: string;
  target: string;
  offloads?: string;
}

async function ip(ns: string, args: string[], input?: string): Promise<void> {
  await sh('ip', ['-n', ns, ...args], input ? { input } : {});
}

async function inNs(ns: string, cmd: string, args: string[], opts: { input?: string; check?: boolean } = {}): Promise<string> {
  return (await sh('nsenter', [`--net=/run/netns/${ns}`, '--', cmd, ...args], opts)).stdout;
}

async function sysctl(ns: string, key: string, value: string): Promise<void> {
  await inNs(ns, 'sysctl', ['-qw', `${key}=${value}`]);
}

async function batch(ns: string, lines: string[]): Promise<void> {
  await sh('ip', ['-n', ns, '-batch', '-'], { input: `${lines.join('\n')}\n` });
}

async function firewall(ns: string, v: Variant, iface: string, withGuard: boolean, peer: string): Promise<void> {
  const rules = v.rules ?? 'docker';
  if (rules !== 'none') await inNs(ns, 'iptables-restore', [], { input: DOCKERD_RULES });
  if (rules === 'docker') {
    // The least glue any plugin needs under FORWARD's DROP policy: its interface accepted both ways.
    for (const dir of ['-i', '-o']) await inNs(ns, 'iptables', ['-w', '-I', 'FORWARD', '1', dir, iface, '-j', 'ACCEPT']);
  }
  if (rules === 'tsnet') {
    const spec = { sid: SID, bridge: iface, internal: false, icc: true, masquerade4: true, masquerade6: false, directAccess4: false, directAccess6: false, subnets4: [SUBNET], subnets6: [] };
    let script = renderBase() + renderNetwork(spec) + renderVxlanGuard(PORT, [peer]);
    if (withGuard) script += legacyGatewayGuard(SID, 'vx0', GW_MAC, GATEWAY);
    await inNs(ns, 'nft', ['-f', '-'], { input: script });
    await inNs(ns, 'iptables-restore', ['-w', '--noflush'], { input: renderChain([{ sid: SID, bridge: iface, v4: true, v6: false }]) });
    await inNs(ns, 'iptables', ['-w', '-I', 'FORWARD', '2', '-j', 'TSNET-FORWARD']);
  }
  if (v.notrack) {
    await inNs(ns, 'nft', ['-f', '-'], {
      input: `table inet tsdp_raw {\n chain pre { type filter hook prerouting priority raw; udp dport ${PORT} notrack; }\n chain out { type filter hook output priority raw; udp dport ${PORT} notrack; }\n}\n`,
    });
  }
}

/** The VXLAN device: created in `ns` (its socket lives there), optionally moved to `into`. */
function vxlanLines(v: Variant, i: number, mtu: number, l3: boolean): string[] {
  return [
    `link add vx0 mtu ${mtu} ${l3 ? `address ${vxMac(i)} ` : ''}type vxlan id ${VNI} dstport ${PORT} local ${hostIp(i)} dev eth0 nolearning ${l3 ? '' : 'proxy '}${v.udpcsum ? 'udpcsum' : 'noudpcsum'} ttl 64`,
  ];
}

async function build(v: Variant, prefix: string): Promise<Built> {
  const ns = (n: string): string => `${prefix}-${n}`;
  const namespaces: string[] = [];
  const mk = async (n: string): Promise<string> => {
    const name = ns(n);
    await sh('ip', ['netns', 'add', name]);
    namespaces.push(name);
    await ip(name, ['link', 'set', 'lo', 'up']);
    return name;
  };
  const umtu = v.underlayMtu ?? 1500;
  const omtu = umtu - 50;
  const built: Built = { variant: v, namespaces, server: '', client: '', target: '' };
  try {
    const lan = await mk('lan');
    await batch(lan, ['link add lan0 type bridge', `link set lan0 mtu ${umtu} up`]);
    const hosts: string[] = [];
    for (const i of [1, 2]) {
      const h = await mk(`h${i}`);
      hosts.push(h);
      await batch(lan, [`link add h${i} mtu ${umtu} type veth peer name eth0 mtu ${umtu} netns ${h}`, `link set h${i} master lan0 up`]);
      await batch(h, [`addr add ${hostIp(i)}/24 dev eth0`, 'link set eth0 up']);
      if (v.brnf !== undefined) await sysctl(h, 'net.bridge.bridge-nf-call-iptables', String(v.brnf));
      await sysctl(h, 'net.ipv4.ip_forward', '1');
    }
    if (v.layout === 'underlay') {
      for (const [k, h] of hosts.entries()) await firewall(h, v, 'none0', false, hostIp(2 - k));
      if (v.gro) for (const h of hosts) await inNs(h, 'ethtool', ['-K', 'eth0', 'gro', 'on']);
      return { ...built, server: hosts[1]!, client: hosts[0]!, target: hostIp(2) };
    }
    const ctrs: string[] = [];
    for (const i of [1, 2]) {
      const h = hosts[i - 1]!;
      const other = 3 - i;
      const c = await mk(`c${i}`);
      ctrs.push(c);
      if (v.layout === 'host-bridge') {
        await batch(h, [
          `link add br0 address ${GW_MAC} mtu ${omtu} type bridge stp_state 0 forward_delay 0`,
          `addr add ${GATEWAY}/16 dev br0`,
          'link set br0 up',
          ...vxlanLines(v, i, omtu, false),
          'link set vx0 addrgenmode none master br0',
          'link set dev vx0 type bridge_slave learning off',
          'link set vx0 up',
          `link add ve0 mtu ${omtu} type veth peer name eth0 mtu ${omtu} address ${ctrMac(i)} netns ${c}`,
          'link set ve0 master br0 up',
        ]);
        await firewall(h, v, 'br0', true, hostIp(other));
      } else if (v.layout === 'own-ns') {
        const o = await mk(`o${i}`);
        if (v.ovBrnf !== undefined) await sysctl(o, 'net.bridge.bridge-nf-call-iptables', String(v.ovBrnf));
        // The VXLAN device is made in the host namespace, where its UDP socket stays, then moved.
        await batch(h, [...vxlanLines(v, i, omtu, false), `link set vx0 netns ${o}`]);
        await batch(o, [
          `link add br0 mtu ${omtu} type bridge stp_state 0 forward_delay 0`,
          'link set br0 addrgenmode none up',
          'link set vx0 addrgenmode none master br0',
          'link set dev vx0 type bridge_slave learning off isolated on',
          'link set vx0 up',
          `link add ve0 mtu ${omtu} type veth peer name eth0 mtu ${omtu} address ${ctrMac(i)} netns ${c}`,
          'link set ve0 master br0 up',
          // The gateway's port: isolated like the VXLAN port, so gateway frames never cross hosts.
          `link add gwp mtu ${omtu} type veth peer name gw0 mtu ${omtu} ${v.hostBridge ? '' : `address ${GW_MAC} `}netns ${h}`,
          'link set gwp addrgenmode none master br0',
          'link set dev gwp type bridge_slave isolated on',
          'link set gwp up',
        ]);
        if (v.hostBridge) {
          await batch(h, [`link add gwbr address ${GW_MAC} mtu ${omtu} type bridge stp_state 0 forward_delay 0`, `addr add ${GATEWAY}/16 dev gwbr`, 'link set gwbr up', 'link set gw0 master gwbr up']);
        } else {
          await batch(h, [`addr add ${GATEWAY}/16 dev gw0`, 'link set gw0 up']);
        }
        await firewall(h, v, v.hostBridge ? 'gwbr' : 'gw0', false, hostIp(other));
      } else {
        // Routed: the container's /32 behind its veth, proxy ARP for the gateway; remote /32s via the L3 VXLAN device.
        await batch(h, [
          `link add ve0 mtu ${omtu} type veth peer name eth0 mtu ${omtu} address ${ctrMac(i)} netns ${c}`,
          'link set ve0 up',
          `route add ${ctrIp(i)}/32 dev ve0`,
          ...vxlanLines(v, i, omtu, true),
          `addr add 10.201.0.${i}/32 dev vx0`,
          'link set vx0 up',
          `neigh replace 10.201.0.${other} lladdr ${vxMac(other)} dev vx0 nud permanent`,
          `route add ${ctrIp(other)}/32 via 10.201.0.${other} dev vx0 onlink`,
        ]);
        await sh('bridge', ['-n', h, 'fdb', 'append', vxMac(other), 'dev', 'vx0', 'dst', hostIp(other), 'self', 'permanent']);
        await batch(h, [`addr add ${GATEWAY}/32 dev ve0`]);
        await firewall(h, v, 've0', false, hostIp(other));
      }
      // The container end: inside `c`, named eth0.
      await batch(c, [`addr add ${ctrIp(i)}/${v.layout === 'routed' ? 32 : 16} dev eth0`, 'link set eth0 up']);
      if (v.layout === 'routed') await batch(c, [`route add ${GATEWAY} dev eth0 scope link`, `route add default via ${GATEWAY} dev eth0`]);
      else await batch(c, [`route add default via ${GATEWAY}`]);
      if (v.layout !== 'routed') {
        const fdbNs = v.layout === 'own-ns' ? ns(`o${i}`) : h;
        await sh('bridge', ['-n', fdbNs, '-batch', '-'], {
          input: `fdb append 00:00:00:00:00:00 dev vx0 dst ${hostIp(other)} self permanent\nfdb replace ${ctrMac(other)} dev vx0 dst ${hostIp(other)} self permanent\n${v.bridgeFdb ? `fdb replace ${ctrMac(other)} dev vx0 master static\n` : ''}`,
        });
        await batch(fdbNs, [`neigh replace ${ctrIp(other)} lladdr ${ctrMac(other)} dev vx0 nud permanent`]);
      }
    }
    if (v.gro) {
      for (const [k, h] of hosts.entries()) {
        await inNs(h, 'ethtool', ['-K', 'eth0', 'gro', 'on', 'rx-udp-gro-forwarding', 'on']);
        const portNs = v.layout === 'own-ns' ? ns(`o${k + 1}`) : h;
        await inNs(portNs, 'ethtool', ['-K', 've0', 'gro', 'on']);
        await inNs(ctrs[k]!, 'ethtool', ['-K', 'eth0', 'gro', 'on']);
      }
    }
    const vxNs = v.layout === 'own-ns' ? ns('o2') : hosts[1]!;
    built.offloads = await offloads(vxNs, hosts[1]!, ctrs[1]!);
    return { ...built, server: ctrs[1]!, client: ctrs[0]!, target: ctrIp(2) };
  } catch (err) {
    await destroy(built);
    throw err;
  }
}

/** The offload switches that decide whether super-packets survive the path (receiving host). */
async function offloads(vxNs: string, hostNs: string, ctrNs: string): Promise<string> {
  const pick = async (ns: string, dev: string): Promise<string> => {
    const out = await inNs(ns, 'ethtool', ['-k', dev], { check: false });
    const keys = ['rx-checksumming', 'tx-checksumming', 'scatter-gather', 'tcp-segmentation-offload', 'generic-segmentation-offload', 'generic-receive-offload', 'tx-udp_tnl-segmentation', 'tx-udp_tnl-csum-segmentation', 'rx-udp-gro-forwarding', 'rx-gro-list'];
    const got = out.split('\n').map((l) => l.trim()).filter((l) => keys.some((k) => l.startsWith(`${k}:`)));
    return `${dev}: ${got.map((l) => l.replace(/: /, '=').replace(' [fixed]', '*')).join(', ')}`;
  };
  return [await pick(hostNs, 'eth0'), await pick(vxNs, 'vx0'), await pick(ctrNs, 'eth0')].join('\n');
}

async function destroy(b: Built): Promise<void> {
  for (const n of [...b.namespaces].reverse()) await sh('ip', ['netns', 'del', n], { check: false });
}

/** CPU time of the kernel's softirq threads so far (ms): path work the kernel deferred out of the senders' context. */
async function softirqThreadsMs(): Promise<number> {
  let ticks = 0;
  for (const pid of await fs.readdir('/proc')) {
    if (!/^\d+$/.test(pid)) continue;
    const stat = await fs.readFile(`/proc/${pid}/stat`, 'utf8').catch(() => '');
    if (!stat.includes('(ksoftirqd/')) continue;
    const f = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
    ticks += Number(f[11]) + Number(f[12]);
  }
  return (ticks * 1000) / 100;
}

export interface Sample {
  gbps: number;
  /** CPU spent per GB moved: both iperf3 processes (the path's softirq work runs in their context) plus ksoftirqd */
  cpuMsPerGB: number;
}

async function iperf(b: Built, seconds: number): Promise<Sample> {
  const server = sh('nsenter', [`--net=/run/netns/${b.server}`, '--', 'iperf3', '-s', '-1', '-p', '5209'], { check: false, timeout: (seconds + 60) * 1000 });
  try {
    for (let attempt = 0; ; attempt++) {
      await new Promise((r) => setTimeout(r, 200));
      const soft0 = await softirqThreadsMs();
      const res = await sh('nsenter', [`--net=/run/netns/${b.client}`, '--', 'iperf3', '-c', b.target, '-p', '5209', '-t', String(seconds), '-J'], { check: false, timeout: (seconds + 30) * 1000 });
      const soft = (await softirqThreadsMs()) - soft0;
      if (res.exitCode === 0) {
        const j = JSON.parse(res.stdout) as { end: { sum_received: { bits_per_second: number; bytes: number; seconds: number }; cpu_utilization_percent: { host_total: number; remote_total: number } } };
        const { sum_received: rx, cpu_utilization_percent: cpu } = j.end;
        const cpuMs = ((cpu.host_total + cpu.remote_total) / 100) * rx.seconds * 1000 + soft;
        return { gbps: rx.bits_per_second / 1e9, cpuMsPerGB: cpuMs / (rx.bytes / 1e9) };
      }
      if (attempt >= 10) throw new Error(`iperf3 (${b.variant.name}): ${res.stdout.slice(0, 200)} ${res.stderr.slice(0, 200)}`);
    }
  } finally {
    await server;
  }
}

/** Mean and minimum round trip of 50 pings, µs. */
async function ping(b: Built): Promise<{ mean: number; min: number }> {
  const out = await inNs(b.client, 'ping', ['-c', '50', '-i', '0.02', '-q', b.target]);
  const m = /= ([\d.]+)\/([\d.]+)\//.exec(out);
  if (!m) throw new Error(`ping (${b.variant.name}): ${out}`);
  return { mean: Number(m[2]) * 1000, min: Number(m[1]) * 1000 };
}

async function reachable(b: Built): Promise<void> {
  for (let k = 0; k < 20; k++) {
    if ((await sh('nsenter', [`--net=/run/netns/${b.client}`, '--', 'ping', '-c', '1', '-W', '1', b.target], { check: false })).exitCode === 0) return;
  }
  throw new Error(`${b.variant.name}: ${b.target} never answered`);
}

export interface DataplaneResult {
  variant: Variant;
  tcp: number[];
  cpu: number[];
  rtt: number[];
  rttMin: number[];
  offloads?: string;
}

export async function measureDataplane(opts: { runs: number; seconds: number; only?: string[]; log: (m: string) => void }): Promise<DataplaneResult[]> {
  const chosen = VARIANTS.filter((v) => !opts.only || opts.only.includes(v.key) || v.key === 'underlay');
  const id = randomBytes(3).toString('hex');
  const built: Built[] = [];
  const unregister = onAbort(async () => {
    for (const b of built) await destroy(b);
  });
  try {
    for (const [k, v] of chosen.entries()) {
      built.push(await build(v, `tsdp-${id}-${k}`));
      await reachable(built[built.length - 1]!);
    }
    opts.log(`dataplane: ${built.length} variants built`);
    const results: DataplaneResult[] = built.map((b) => ({ variant: b.variant, tcp: [], cpu: [], rtt: [], rttMin: [], offloads: b.offloads }));
    for (let r = 0; r < opts.runs; r++) {
      for (const [k, b] of built.entries()) {
        const t = await iperf(b, opts.seconds);
        results[k]!.tcp.push(t.gbps);
        results[k]!.cpu.push(t.cpuMsPerGB);
        const p = await ping(b);
        results[k]!.rtt.push(p.mean);
        results[k]!.rttMin.push(p.min);
      }
      opts.log(`dataplane: round ${r + 1}/${opts.runs}`);
    }
    return results;
  } finally {
    for (const b of built) await destroy(b);
    unregister();
  }
}

export function renderDataplane(results: DataplaneResult[]): string {
  const base = results.find((r) => r.variant.name === 'underlay');
  const med = (v: number[] | undefined): number => summarize(v ?? []).median;
  const rows = results.map((r) => {
    const t = summarize(r.tcp);
    return [
      r.variant.name,
      fmt(t.median, 2),
      `${fmt(t.min, 2)}–${fmt(t.max, 2)}`,
      ratio(t.median, med(base?.tcp)),
      fmt(med(r.cpu), 0),
      // CPU per byte inverted: the throughput ratio a CPU-bound path would get, whatever else ran on the machine.
      ratio(med(base?.cpu), med(r.cpu)),
      fmt(med(r.rtt), 0),
      fmt(med(r.rttMin), 0),
      ratio(med(r.rtt), med(base?.rtt)),
      r.variant.why,
    ];
  });
  return table(['variant', 'TCP Gbit/s', 'min–max', 'vs underlay', 'CPU ms/GB', 'vs underlay (CPU)', 'RTT µs', 'min RTT µs', 'RTT vs underlay', 'what it isolates'], rows);
}

async function main(): Promise<void> {
  const argv = process.argv.slice(2);
  const arg = (k: string): string | undefined => {
    const i = argv.indexOf(k);
    return i >= 0 ? argv[i + 1] : undefined;
  };
  if (argv.includes('--list')) {
    for (const v of VARIANTS) process.stdout.write(`${v.key.padEnd(18)} ${v.name}: ${v.why}\n`);
    return;
  }
  const runs = Number(arg('--runs') ?? 5);
  const seconds = Number(arg('--seconds') ?? 3);
  const only = arg('--only')?.split(',').map((s) => s.trim());
  const log = (m: string): void => void process.stderr.write(`${new Date().toISOString().slice(11, 19)} ${m}\n`);
  const results = await measureDataplane({ runs, seconds, only, log });
  process.stdout.write(`${renderDataplane(results)}\n\n`);
  for (const r of results) if (r.offloads && ['host bridge (tsnet today)', 'own namespace', 'own namespace, GRO'].includes(r.variant.name)) process.stdout.write(`${r.variant.name}, receiving side:\n${r.offloads}\n\n`);
  const out = arg('--json');
  if (out) await fs.writeFile(out, `${JSON.stringify(results, null, 1)}\n`);
}

if (import.meta.url === `file://${process.argv[1]}`) await main();
