// tsnetctl doctor's judgements on hand-made readings: each broken thing is
// named, with what to do, and a healthy host gives no failure.
import t from 'tap';
import { formatFinding, judgeEtcd, judgeHolders, judgeForward, judgeLinks, judgeMtu, judgeNft, judgeStore, judgeSysctls, judgeVxlan, parseNftJson, type Finding } from '../../src/doctor/checks.js';
import { parseListenAddr } from '../../src/config.js';
import { emptyState, type NetworkRecord, type State } from '../../src/store/schema.js';
import type { LinkInfo } from '../../src/kernel/ip.js';
import { chainNames } from '../../src/firewall/nft.js';
import { shortId } from '../../src/kernel/names.js';

const NET = 'a'.repeat(64);
const EP = 'b'.repeat(64);
const SID = shortId(NET);

function state(opts: { overlay?: boolean; internal?: boolean } = {}): State {
  const s = emptyState();
  const n: NetworkRecord = {
    id: NET,
    mode: opts.overlay ? 'overlay' : 'bridge',
    bridge: 'tsbr-aaaa',
    createdBridge: true,
    ipv4: [{ pool: '10.10.0.0/24', gateway: '10.10.0.1/24', aux: {} }],
    ipv6: [],
    internal: opts.internal ?? false,
    mtu: 1500,
    masquerade: true,
    icc: true,
    gatewayMode: 'nat',
    hostBindingIpv4: '0.0.0.0',
    inhibitIpv4: false,
    ifacePrefix: 'eth',
    trustedHostInterfaces: [],
    options: {},
    createdAt: '',
    ...(opts.overlay
      ? { overlay: { mode: 'static' as const, vni: 4242, vxlan: 'tsvx-aaaa', subnet: '10.10.0.0/24', peers: ['10.99.0.12'], local: '10.99.0.11', underlay: 'eth0' } }
      : {}),
  };
  s.networks[NET] = n;
  s.endpoints[EP] = { id: EP, networkId: NET, hostVeth: 'tsv-bbbb', peerVeth: 'tsc-bbbb', mac: '02:00:00:00:00:01', macAssigned: true, ports: [], createdAt: '' };
  return s;
}

const fails = (fs: Finding[]): Finding[] => fs.filter((f) => f.level === 'fail');

t.test('sysctls', async (t) => {
  t.same(fails(judgeSysctls(state(), { ipForward: '1', bridgeNfCall: undefined }, true)), []);
  const off = fails(judgeSysctls(state(), { ipForward: '0' }, true));
  t.equal(off.length, 1);
  t.match(off[0]!.message, /net\.ipv4\.ip_forward is 0/);
  t.match(off[0]!.fix, /sysctl -w net\.ipv4\.ip_forward=1/);
  t.same(fails(judgeSysctls(state({ internal: true }), { ipForward: '0' }, true)), [], 'internal networks need no forwarding');
  t.match(fails(judgeSysctls(state(), { ipForward: '1', bridgeNfCall: '1' }, false))[0]?.message, /bridge-nf-call-iptables is 1/);
});

t.test('FORWARD policy and chains', async (t) => {
  const good = '-P FORWARD DROP\n-A FORWARD -j DOCKER-USER\n-A FORWARD -j TSNET-FORWARD\n-A FORWARD -j DOCKER-FORWARD\n';
  const chain = '-N TSNET-FORWARD\n-A TSNET-FORWARD -i tsbr-aaaa -m comment --comment x -j ACCEPT\n-A TSNET-FORWARD -o tsbr-aaaa -m comment --comment x -j ACCEPT\n';
  t.same(fails(judgeForward(state(), good, chain)), []);
  t.match(fails(judgeForward(state(), good.replace('-A FORWARD -j TSNET-FORWARD\n', ''), chain))[0]?.message, /no jump to TSNET-FORWARD, and its policy DROP/);
  t.match(fails(judgeForward(state(), good, '-N TSNET-FORWARD\n'))[0]?.message, /no ACCEPT for network aaaaaaaaaaaa \(bridge tsbr-aaaa\)/);
  const noDocker = judgeForward(state(), '-P FORWARD ACCEPT\n-A FORWARD -j TSNET-FORWARD\n', chain);
  t.match(noDocker.find((f) => f.level === 'warn')?.message, /DOCKER-USER jump is missing/);
});

t.test('nftables table against the store', async (t) => {
  const c = chainNames(SID);
  const json = (rules: Record<string, number>, maps: Record<string, string[]>): string =>
    JSON.stringify({
      nftables: [
        { metainfo: {} },
        ...Object.keys(rules).map((name) => ({ chain: { name } })),
        ...Object.entries(rules).flatMap(([chain, n]) => Array.from({ length: n }, () => ({ rule: { chain } }))),
        ...Object.entries(maps).map(([name, keys]) => ({ map: { name, elem: keys.map((k) => [k, { jump: { target: 'x' } }]) } })),
      ],
    });
  const good = parseNftJson(json({ forward: 2, [c.out]: 3, [c.in]: 4, [c.post]: 1, [c.hairpin]: 1 }, { fwd_out: ['tsbr-aaaa'], fwd_in: ['tsbr-aaaa'] }));
  t.same(fails(judgeNft(state(), good)), []);
  t.match(fails(judgeNft(state(), undefined))[0]?.message, /table inet tsnet is missing/);
  const flushed = parseNftJson(json({ forward: 0, [c.out]: 0, [c.in]: 0 }, { fwd_out: ['tsbr-aaaa'], fwd_in: ['tsbr-aaaa'] }));
  const f = fails(judgeNft(state(), flushed)).map((x) => x.message);
  t.match(f[0], /forward chain has 0 rule\(s\)/);
  t.match(f[1], new RegExp(`chain ${c.out} empty`));
  const stale = judgeNft(state(), parseNftJson(json({ forward: 2, [c.out]: 3, [c.in]: 4, 'n-0123456789ab-out': 1 }, { fwd_out: ['tsbr-aaaa'], fwd_in: ['tsbr-aaaa'] })));
  t.match(stale.find((x) => x.level === 'warn')?.message, /n-0123456789ab-out/);
});

t.test('links against the store', async (t) => {
  const link = (ifname: string, extra: Partial<LinkInfo> = {}): LinkInfo => ({ ifname, ifindex: 1, mtu: 1500, flags: ['UP'], ...extra });
  const links = [link('tsbr-aaaa'), link('tsv-bbbb', { master: 'tsbr-aaaa' })];
  t.same(fails(judgeLinks(state(), links)), []);
  t.match(fails(judgeLinks(state(), [links[1]!]))[0]?.message, /bridge tsbr-aaaa\): the bridge is missing/);
  t.match(fails(judgeLinks(state(), [links[0]!]))[0]?.message, /host veth tsv-bbbb is missing/);
  t.match(fails(judgeLinks(state(), [link('tsbr-aaaa', { flags: [] }), links[1]!]))[0]?.message, /the bridge is down/);
  t.match(fails(judgeLinks(state(), [links[0]!, link('tsv-bbbb')]))[0]?.message, /not on tsbr-aaaa/);
  const orphan = judgeLinks(state(), [...links, link('tsbr-zzzz', { ifalias: 'tsnet:net:zzz' })]);
  t.match(orphan.find((x) => x.level === 'warn')?.message, /tsbr-zzzz/);
});

t.test('an encrypted overlay explains tswg0, and misses it when it is gone', async (t) => {
  const link = (ifname: string, extra: Partial<LinkInfo> = {}): LinkInfo => ({ ifname, ifindex: 1, mtu: 1500, flags: ['UP'], ...extra });
  const s = state({ overlay: true });
  s.networks[NET]!.overlay!.encrypted = true;
  const vx = s.networks[NET]!.overlay!.vxlan;
  const base = [link('tsbr-aaaa'), link('tsv-bbbb', { master: 'tsbr-aaaa' }), link(vx, { master: 'tsbr-aaaa', ifalias: `tsnet:net:${NET}` })];
  const withWg = judgeLinks(s, [...base, link('tswg0', { ifalias: 'tsnet:wg' })]);
  t.same(withWg.filter((f) => f.level !== 'ok'), [], 'tswg0 is no orphan while an encrypted overlay exists');
  t.match(fails(judgeLinks(s, base))[0]?.message, /the WireGuard interface tswg0 is missing/);
  const plain = judgeLinks(state({ overlay: true }), [...base, link('tswg0', { ifalias: 'tsnet:wg' })]);
  t.match(plain.find((f) => f.level === 'warn')?.message, /tswg0/, 'and is one without');
  s.networks[NET]!.mtu = 64930;
  t.same(fails(judgeMtu(s, { dev: 'eth0', mtu: 1500, overhead: 50 })), [], 'a large MTU inside WireGuard is not the underlay\'s business');
});

t.test('overlays: MTU, VXLAN port and guard, peers', async (t) => {
  const s = state({ overlay: true });
  t.same(fails(judgeMtu(s, { dev: 'eth0', mtu: 1550, overhead: 50 })), []);
  const mtu = fails(judgeMtu(s, { dev: 'eth0', mtu: 1500, overhead: 50 }));
  t.match(mtu[0]?.message, /MTU 1500 \+ 50 bytes of VXLAN headers exceeds the underlay eth0's 1500/);
  t.match(mtu[0]?.fix, /mtu=1450/);
  t.same(judgeMtu(state(), { dev: 'eth0', mtu: 1500, overhead: 50 }), [], 'no overlay, no MTU finding');
  t.same(fails(judgeVxlan(s, 4789, { 'tsvx-aaaa': 4789 }, true, [{ networkId: NET, peer: '10.99.0.12', answers: true }])), []);
  t.match(fails(judgeVxlan(s, 4789, { 'tsvx-aaaa': 8472 }, true, []))[0]?.message, /uses UDP 8472/);
  t.match(fails(judgeVxlan(s, 4789, {}, false, []))[0]?.message, /guard for UDP 4789/);
  t.match(judgeVxlan(s, 4789, {}, true, [{ networkId: NET, peer: '10.99.0.12', answers: false }])[0]?.message, /peer 10\.99\.0\.12 does not answer/);
});

t.test('etcd and store', async (t) => {
  t.same(judgeEtcd(false, undefined), [], 'no cluster, no etcd finding');
  t.match(fails(judgeEtcd(true, { reachable: false, leaseAlive: false, error: 'timeout' }))[0]?.message, /etcd is unreachable \(timeout\)/);
  t.match(fails(judgeEtcd(true, { reachable: true, leaseAlive: false }))[0]?.message, /lease key is gone/);
  t.same(fails(judgeEtcd(true, { reachable: true, leaseAlive: true })), []);
  t.same(fails(judgeStore({ source: 'current', problems: [], hold: undefined, lastWriteError: undefined, writeFailures: 0 })), []);
  t.match(fails(judgeStore({ source: 'previous', problems: [], hold: 'damaged', lastWriteError: undefined, writeFailures: 0 }))[0]?.fix, /accept-state/);
  t.match(fails(judgeStore({ source: 'current', problems: [], hold: undefined, lastWriteError: 'ENOSPC', writeFailures: 1 }))[0]?.message, /ENOSPC/);
});

t.test('one line per finding, the fix on it', async (t) => {
  t.equal(formatFinding({ level: 'fail', check: 'links', message: 'bridge gone', fix: 'tsnetctl reconcile' }), 'FAIL links: bridge gone -> tsnetctl reconcile');
  t.equal(formatFinding({ level: 'ok', check: 'store', message: 'fine' }), 'ok   store: fine');
});

t.test('TSNET_METRICS_ADDR', async (t) => {
  t.same(parseListenAddr('127.0.0.1:9464', 'X'), { host: '127.0.0.1', port: 9464 });
  t.same(parseListenAddr('[::1]:9464', 'X'), { host: '::1', port: 9464 });
  t.throws(() => parseListenAddr('localhost:9464', 'TSNET_METRICS_ADDR'), /TSNET_METRICS_ADDR: "localhost:9464" is not IP:PORT/);
  t.throws(() => parseListenAddr('10.0.0.1:99999', 'TSNET_METRICS_ADDR'), /99999/);
  t.throws(() => parseListenAddr('300.0.0.1:80', 'TSNET_METRICS_ADDR'));
});

t.test('holders: a host with no lease that still holds addresses is pointed out, with forget-host', async (t) => {
  t.same(judgeHolders([]), [], 'no cluster network holds anything: nothing to say');
  t.same(judgeHolders([{ host: 'a'.repeat(16), alive: true, networks: [{ subnet: '10.99.0.0/24', blocks: ['10.99.0.128/28'], claims: [] }] }]).map((f) => f.level), ['ok']);
  const dead = judgeHolders([
    { host: 'a'.repeat(16), alive: true, networks: [] },
    { host: 'b'.repeat(16), alive: false, networks: [{ subnet: '10.99.0.0/24', blocks: ['10.99.0.128/28', 'fd00:99::100/123'], claims: ['10.99.0.250'] }, { subnet: '10.200.0.0/16', blocks: ['10.200.0.0/26'], claims: [] }] },
  ]);
  t.equal(dead.length, 1, 'one line per dead host');
  t.equal(formatFinding(dead[0]!), `WARN holders: host ${'b'.repeat(16)} has no lease (its tsnet is stopped, or the host is gone) and holds 3 address block(s) and 1 static address(es) of 10.99.0.0/24, 10.200.0.0/16 -> if it is gone for good: tsnetctl forget-host ${'b'.repeat(16)} (its addresses are then handed out elsewhere); if it is coming back, nothing`);
});
