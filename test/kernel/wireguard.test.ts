// Kernel tier for the WireGuard core (src/wireguard): two throwaway
// namespaces joined by a veth (the "LAN"), each with its own tunnel made by
// the same code tsnet runs, through a Runner bound to the namespace. Here
// that is wireguard-go over TUN (this kernel has no WireGuard module; the
// kernel-module test says so and skips). Ping and TCP through the tunnel, a
// capture on the LAN that must show only WireGuard UDP and never the
// payload, a key rotation in the middle of a transfer with the gap
// measured, a restart that keeps traffic flowing, and the clean-up.
import t from 'tap';
import { spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { pino } from 'pino';
import { Netns, tmpDir } from '../helpers/netns.js';
import { sh, waitFor } from '../helpers/lab.js';
import { stream } from '../helpers/stream.js';
import { createRunner, type Runner } from '../../src/kernel/exec.js';
import { WireGuardHost, type PeerCandidate } from '../../src/wireguard/host.js';
import { ensureDevice } from '../../src/wireguard/device.js';
import { tunnelAddress } from '../../src/net/tunnel.js';

const log = pino({ level: 'silent' });
const PORT = 51820;
const IP_A = '10.88.0.1';
const IP_B = '10.88.0.2';
// wireguard-go's UAPI sockets live in /run/wireguard of the machine's mount
// namespace: names unique to this run keep other runs' tunnels apart.
const tag = randomBytes(3).toString('hex');

interface Side {
  ns: Netns;
  runner: Runner;
  dir: string;
  host: WireGuardHost;
  underlay: string;
  tunnel: string;
}

const a = await Netns.create('wga');
const b = await Netns.create('wgb');
const dirs: string[] = [];
t.teardown(async () => {
  for (const s of [sideA, sideB]) await s?.host.detach('net').catch(() => undefined);
  await a.delete();
  await b.delete();
  for (const d of dirs) await fs.rm(d, { recursive: true, force: true });
});
await sh('ip', ['-n', a.name, 'link', 'add', 'lan0', 'type', 'veth', 'peer', 'name', 'lan0', 'netns', b.name]);
for (const [ns, ip] of [[a, IP_A], [b, IP_B]] as const) {
  await sh('ip', ['-n', ns.name, 'addr', 'add', `${ip}/24`, 'dev', 'lan0']);
  await sh('ip', ['-n', ns.name, 'link', 'set', 'lan0', 'up']);
}

async function side(ns: Netns, underlay: string, iface: string): Promise<Side> {
  const dir = await tmpDir('kernel-wg');
  dirs.push(dir);
  const runner = createRunner(log, ns.path);
  const host = new WireGuardHost({ runner, log, stateDir: dir, port: PORT, vxlanPort: 4789, iface });
  return { ns, runner, dir, host, underlay, tunnel: tunnelAddress(underlay) };
}

const sideA = await side(a, IP_A, `twa-${tag}`);
const sideB = await side(b, IP_B, `twb-${tag}`);

async function candidate(s: Side): Promise<PeerCandidate> {
  const k = await s.host.publicKey();
  return { underlay: s.underlay, publicKey: k.publicKey, port: PORT, since: k.since };
}

async function transfer(seconds: number, marker: string, during?: () => Promise<void>) {
  return stream([`--net=${b.path}`], [`--net=${a.path}`], sideB.tunnel, seconds, marker, during);
}

function pingOk(from: Netns, to: string): Promise<boolean> {
  return from.exec('ping', ['-c', '1', '-W', '1', to], { check: false }).then((r) => r.exitCode === 0);
}

t.test('a tunnel between two hosts carries ping and TCP; the LAN sees only WireGuard UDP', async (t) => {
  await sideA.host.attach('net', 4100, { local: IP_A, mtu: 1500 }, [await candidate(sideB)]);
  await sideB.host.attach('net', 4100, { local: IP_B, mtu: 1500 }, [await candidate(sideA)]);
  const link = (await a.links()).find((l) => l.ifname === sideA.host.iface);
  t.equal(link?.linkinfo?.info_kind, 'tun', 'wireguard-go made a TUN device');
  t.equal(link?.ifalias, 'tsnet:wg', 'tagged as tsnet\'s');
  t.equal(link?.mtu, 1440, 'MTU: the underlay less 60 bytes of WireGuard over IPv4');
  t.ok(await waitFor('ping through the tunnel', () => pingOk(a, sideB.tunnel), 10_000, 200), 'A pings B\'s tunnel address');
  const pcap = path.join(sideA.dir, 'lan.pcap');
  const capture = spawn('nsenter', [`--net=${a.path}`, '--', 'tcpdump', '-i', 'lan0', '--immediate-mode', '-U', '-n', '-w', pcap], { stdio: 'ignore' });
  await waitFor('capture running', async () => (await fs.stat(pcap).catch(() => undefined)) !== undefined, 5000, 50);
  const marker = 'TSNET-SECRET-PAYLOAD-';
  const { sent, got } = await transfer(1, marker);
  capture.kill('SIGINT');
  await new Promise((r) => capture.once('exit', r));
  t.equal(got.bytes, sent.bytes, `TCP through the tunnel: ${String(got.bytes)} bytes`);
  t.equal(got.sha256, sent.sha256, 'arrived intact');
  const raw = await fs.readFile(pcap);
  t.ok(raw.length > 100_000, `the capture holds the transfer (${raw.length} bytes)`);
  t.equal(raw.indexOf(Buffer.from(marker)), -1, 'the payload never appears on the LAN');
  const summary = (await sh('tcpdump', ['-r', pcap, '-n', '-q'], { check: false })).stdout.split('\n').filter(Boolean);
  const notWg = summary.filter((l) => !/ UDP, length \d+$/.test(l) || !(l.includes(`${IP_A}.${PORT} > ${IP_B}.${PORT}`) || l.includes(`${IP_B}.${PORT} > ${IP_A}.${PORT}`)));
  t.same(notWg.filter((l) => !/ARP|ICMP6|ip6-allrouters|ff02::/.test(l)), [], `${summary.length} packets, all WireGuard UDP between the two underlay addresses`);
});

t.test('key rotation in the middle of a transfer: the transfer completes, the pause stays under a second', async (t) => {
  const before = (await sideA.host.publicKey()).publicKey;
  const { sent, got } = await transfer(4, 'rotation-', async () => {
    await new Promise((r) => setTimeout(r, 1500));
    // What etcd carries between hosts in a cluster: the new key, to the peer.
    const rotated = await sideA.host.rotate();
    await sideB.host.setPeers('net', [{ underlay: IP_A, publicKey: rotated.publicKey, port: PORT, since: rotated.since }]);
  });
  t.not((await sideA.host.publicKey()).publicKey, before, 'A has a new key');
  t.equal(got.sha256, sent.sha256, `every byte arrived (${String(got.bytes)})`);
  const gap = Number(got.maxGapMs);
  t.ok(gap < 1000, `longest pause in the stream: ${gap.toFixed(0)} ms`);
  t.comment(`rotation gap: ${gap.toFixed(1)} ms`);
  const dump = (await b.exec('wg', ['show', sideB.host.iface, 'peers'])).stdout.trim();
  t.equal(dump, (await sideA.host.publicKey()).publicKey, 'B has exactly one peer for A: the new key');
});

t.test('a restarted tsnet takes over the running device: no new daemon, sessions and peers kept', async (t) => {
  const pids = async () => (await sh('pgrep', ['-f', `^wireguard-go ${sideA.host.iface}$`], { check: false })).stdout.trim();
  const pid = await pids();
  t.match(pid, /^\d+$/, 'one wireguard-go for A');
  // A new process over the same state directory, before etcd has told it anything.
  const again = new WireGuardHost({ runner: sideA.runner, log, stateDir: sideA.dir, port: PORT, vxlanPort: 4789, iface: sideA.host.iface });
  let lost = 0;
  const pinger = (async () => {
    for (let i = 0; i < 10; i++) if (!(await pingOk(a, sideB.tunnel))) lost++;
  })();
  await again.attach('net', 4100, { local: IP_A, mtu: 1500 }, undefined);
  await pinger;
  t.equal(await pids(), pid, 'the same wireguard-go still runs');
  t.equal(lost, 0, 'no ping lost while the new process took over');
  t.equal((await a.exec('wg', ['show', again.iface, 'peers'])).stdout.trim(), (await sideB.host.publicKey()).publicKey, 'the peer is kept while its source is still unknown');
  await again.setPeers('net', [await candidate(sideB)]);
  t.ok(await pingOk(a, sideB.tunnel), 'and traffic flows once the peers are known');
  (sideA as { host: WireGuardHost }).host = again;
});

t.test('a packet for a tunnel address never leaves in clear, and nothing enters the overlay around the tunnel', async (t) => {
  // A route that would carry tunnel traffic out of the LAN port if the device were gone.
  await a.exec('ip', ['-6', 'addr', 'add', 'fd88::1/64', 'dev', 'lan0', 'nodad']);
  await a.exec('ip', ['-6', 'route', 'add', 'default', 'via', 'fd88::2', 'dev', 'lan0']);
  await a.exec('ip', ['-6', 'neigh', 'add', 'fd88::2', 'lladdr', '02:00:00:00:00:02', 'dev', 'lan0', 'nud', 'permanent']);
  const counter = async (chain: string) => Number(/counter packets (\d+)/.exec((await a.exec('nft', ['list', 'chain', 'inet', 'tsnet', chain])).stdout)?.[1] ?? -1);
  // wireguard-go dies: its device and the tunnel route go with it.
  const pid = (await sh('pgrep', ['-f', `^wireguard-go ${sideA.host.iface}$`])).stdout.trim();
  process.kill(Number(pid), 'SIGKILL');
  await waitFor('device gone', async () => !(await a.links()).some((l) => l.ifname === sideA.host.iface), 5000, 50);
  const before = await counter('wg_out');
  t.notOk(await pingOk(a, sideB.tunnel), 'no answer without the tunnel');
  t.ok((await counter('wg_out')) > before, 'the packet was dropped at output, not sent by the default route');
  // The host's next change makes the device again (reconcile calls attach).
  await sideA.host.attach('net', 4100, { local: IP_A, mtu: 1500 }, [await candidate(sideB)]);
  t.ok(await waitFor('tunnel back', () => pingOk(a, sideB.tunnel), 10_000, 200), 'a new wireguard-go carries traffic again');
  // Clear VXLAN of the encrypted VNI, sent to A's LAN address from B's: dropped before any VXLAN device sees it.
  const vxBefore = /@th,96,24 [^\n]*? counter packets (\d+)/.exec((await a.exec('nft', ['list', 'chain', 'inet', 'tsnet', 'wg_in'])).stdout)?.[1];
  await b.exec('ip', ['link', 'add', 'evil', 'type', 'vxlan', 'id', '4100', 'dstport', '4789', 'remote', IP_A, 'local', IP_B, 'dev', 'lan0']);
  await b.exec('ip', ['addr', 'add', '10.250.0.2/24', 'dev', 'evil']);
  await b.exec('ip', ['link', 'set', 'evil', 'up']);
  await b.exec('ping', ['-c', '2', '-W', '1', '10.250.0.1'], { check: false });
  const vxAfter = /@th,96,24 [^\n]*? counter packets (\d+)/.exec((await a.exec('nft', ['list', 'chain', 'inet', 'tsnet', 'wg_in'])).stdout)?.[1];
  t.ok(Number(vxAfter) > Number(vxBefore), `clear VXLAN for the encrypted VNI dropped (${vxBefore} -> ${vxAfter})`);
  await b.exec('ip', ['link', 'del', 'evil']);
});

t.test('the last network gone: interface, wireguard-go and rules gone', async (t) => {
  const iface = sideA.host.iface;
  t.same(await sideA.host.detach('net'), { down: true });
  t.notOk((await a.links()).some((l) => l.ifname === iface), 'no interface');
  await waitFor('wireguard-go ends', async () => (await sh('pgrep', ['-f', `^wireguard-go ${iface}$`], { check: false })).exitCode !== 0, 10_000, 100);
  t.pass('wireguard-go ended with its device');
  await waitFor('UAPI socket removed', async () => !(await fs.stat(`/run/wireguard/${iface}.sock`).catch(() => undefined)), 5000, 100);
  t.pass('its UAPI socket is gone');
  const nft = (await a.exec('nft', ['list', 'ruleset'])).stdout;
  t.notMatch(nft, /wg_in|wg_out|wgpeer/, 'no WireGuard rules left');
  t.equal((await fs.stat(path.join(sideA.dir, 'wireguard.key'))).mode & 0o777, 0o600, 'the key stays (0600) for the next encrypted network');
});

const noWireguard = await (async () => {
  const ns = await Netns.create('wgprobe');
  try {
    const r = await ns.exec('ip', ['link', 'add', 'wgp0', 'type', 'wireguard'], { check: false });
    return r.exitCode === 0 ? undefined : 'kernel lacks wireguard';
  } finally {
    await ns.delete();
  }
})();

t.test('the kernel module path: the same configuration on the kernel\'s device', { skip: noWireguard ?? false }, async (t) => {
  const ns = await Netns.create('wgk');
  t.teardown(() => ns.delete());
  const runner = createRunner(log, ns.path);
  const info = await ensureDevice(runner, { name: 'tswg0', mtu: 1420, alias: 'tsnet:wg', address: `${tunnelAddress('10.1.1.1')}/64`, prefer: 'kernel' });
  t.same(info, { implementation: 'kernel', created: true });
  const dir = await tmpDir('kernel-wgk');
  dirs.push(dir);
  const host = new WireGuardHost({ runner, log, stateDir: dir, port: PORT, vxlanPort: 4789, prefer: 'kernel' });
  await host.attach('net', 4100, { local: '10.1.1.1', mtu: 1500 }, [await candidate(sideB)]);
  t.equal((await ns.exec('wg', ['show', 'tswg0', 'peers'])).stdout.trim(), (await sideB.host.publicKey()).publicKey);
  await host.detach('net');
});
