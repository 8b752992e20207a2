// Routed networks, the logic: the static peer list, what a host wants from
// the peers it knows (routes, proxy entries, admitted sources), the route
// lines, the firewall scripts, and the runtime's diffing as the cluster
// changes (a fake runner; the kernel and dockerd are test/e2e/routed.test.ts's).
import t from 'tap';
import type { NetworkView } from '../../src/cluster/registry.js';
import { checkAgreement } from '../../src/cluster/registry.js';
import { agreedSettings, type ClusterNetworks, type ClusterHooks } from '../../src/cluster/networks.js';
import { chainNames, renderNetwork, renderNetworkRemoval, type NftNetwork } from '../../src/firewall/nft.js';
import { renderPeerSources, renderRoutedGuard } from '../../src/firewall/routed-rules.js';
import { backendOf } from '../../src/driver/modes/overlay.js';
import { routedSysctls } from '../../src/driver/modes/routed.js';
import { parseNetworkOptions } from '../../src/driver/options.js';
import { parsePrefix } from '../../src/net/cidr.js';
import { RoutedManager } from '../../src/routed/manager.js';
import { parseStaticPeers, peersOfOthers } from '../../src/routed/peers.js';
import { collapse, connectedPrefixes, desiredState, onLink, peersFromView, routeLines, ROUTE_PROTO, type RoutedPeer } from '../../src/routed/routes.js';
import { Store } from '../../src/store/store.js';
import type { NetworkRecord } from '../../src/store/schema.js';
import { matchGolden } from '../helpers/golden.js';
import { FakeRunner, dockerId, keepAlive, silentLogger, tmpDir } from '../helpers/fake-runner.js';

const P = (s: string) => parsePrefix(s, false)!;
const V4 = [{ pool: '10.202.0.0/16', gateway: '10.202.0.1/16', aux: {} }];
const V6 = [{ pool: 'fd74:202::/64', gateway: 'fd74:202::1/64', aux: {} }];

t.test('static peers: ADDR=BLOCK entries checked against the subnet and each other', async (t) => {
  t.same(parseStaticPeers(['192.168.100.201=10.202.1.0/24', ' 192.168.100.202 = 10.202.2.0/24', 'fd00::0202=fd74:202::100/120'], V4, V6), [
    { address: '192.168.100.201', block: '10.202.1.0/24' },
    { address: '192.168.100.202', block: '10.202.2.0/24' },
    { address: 'fd00::202', block: 'fd74:202::100/120' },
  ], 'parsed, canonical');
  const refuses = (entries: string[], pattern: RegExp, why: string, v6 = V6): void => {
    t.throws(() => parseStaticPeers(entries, V4, v6), { code: 'TSNET_ERR_INVALID_OPTION', message: pattern }, why);
  };
  refuses(['192.168.100.202'], /^tsnet\.peers: "192\.168\.100\.202" is not ADDR=BLOCK/, 'a bare address');
  refuses(['192.168.100.999=10.202.2.0/24'], /"192\.168\.100\.999=10\.202\.2\.0\/24": "192\.168\.100\.999" is not an IP address/, 'a bad address, named');
  refuses(['192.168.100.2=10.202.2.1/24'], /"10\.202\.2\.1\/24" is not a CIDR with its host bits zero/, 'host bits set');
  refuses(['192.168.100.2=banana'], /"banana" is not a CIDR/, 'not a CIDR');
  refuses(['fd00::2=10.202.2.0/24'], /an IPv4 block is routed through the peer's IPv4 address, not fd00::2/, 'families must match');
  refuses(['192.168.100.2=10.99.0.0/24'], /10\.99\.0\.0\/24 is not inside the network's subnet 10\.202\.0\.0\/16/, 'outside the subnet');
  refuses(['192.168.100.2=10.202.2.0/24', '192.168.100.3=10.202.2.128/25'], /10\.202\.2\.128\/25 overlaps 10\.202\.2\.0\/24 of 192\.168\.100\.2/, 'overlapping blocks');
  refuses(['fd00::2=fd74:202::/112'], /too large; an IPv6 block needs a proxy-NDP entry per address, so at most 4096 addresses \(\/116 or longer\)/, 'an IPv6 block too large to proxy');
  refuses(['fd00::2=fd74:202::/120'], /the network has no IPv6 subnet/, 'no IPv6 subnet', []);
  t.throws(() => parseStaticPeers([], V4, V6), /tsnet\.peers: the list is empty/);
});

t.test('static peers: this host\'s own entry goes, and no peer block may overlap its --ip-range', async (t) => {
  const peers = parseStaticPeers(['10.99.0.11=10.202.1.0/24', '10.99.0.12=10.202.2.0/24'], V4, []);
  const own = new Set(['10.99.0.11', '127.0.0.1']);
  t.same(peersOfOthers(peers, own, [{ range: P('10.202.1.0/24'), given: true }]), [{ address: '10.99.0.12', block: '10.202.2.0/24' }], 'own entry left out');
  t.same(peersOfOthers(peers, own, undefined), [{ address: '10.99.0.12', block: '10.202.2.0/24' }], "Docker's IPAM: the range is not known to the driver");
  t.throws(() => peersOfOthers(peers, own, [{ range: P('10.202.0.0/16'), given: false }]), /tsnet\.peers: this host needs its own block as --ip-range/);
  t.throws(() => peersOfOthers(peers, new Set(), [{ range: P('10.202.2.128/25'), given: true }]), /tsnet\.peers: "10\.99\.0\.12=10\.202\.2\.0\/24": 10\.202\.2\.0\/24 overlaps this host's --ip-range 10\.202\.2\.128\/25/);
});

t.test('options: ADDR=BLOCK entries pass to the mode; bare entries must be addresses; tsnet.backend for overlays', async (t) => {
  const opts = (g: Record<string, string>) => ({ 'com.docker.network.generic': g });
  t.same(parseNetworkOptions(opts({ 'tsnet.mode': 'routed', 'tsnet.peers': '10.0.0.1=10.202.1.0/24' })).peers, ['10.0.0.1=10.202.1.0/24']);
  t.throws(() => parseNetworkOptions(opts({ 'tsnet.mode': 'routed', 'tsnet.peers': 'nope' })), /tsnet\.peers: "nope" is not an IP address/);
  t.throws(() => parseNetworkOptions(opts({ 'tsnet.mode': 'bridge', 'tsnet.peers': '10.0.0.1=10.202.1.0/24' })), /tsnet\.peers only applies with tsnet\.mode=overlay or tsnet\.mode=routed/);
  t.throws(() => parseNetworkOptions(opts({ 'tsnet.mode': 'routed', 'tsnet.backend': 'auto' })), /tsnet\.backend only applies with tsnet\.mode=overlay/);
  t.equal(backendOf(parseNetworkOptions(opts({ 'tsnet.mode': 'overlay' }))), 'vxlan', 'VXLAN by default');
  t.equal(backendOf(parseNetworkOptions(opts({ 'tsnet.mode': 'overlay', 'tsnet.backend': 'auto' }))), 'auto');
  t.throws(() => backendOf(parseNetworkOptions(opts({ 'tsnet.mode': 'overlay', 'tsnet.backend': 'host-gw' }))), /tsnet\.backend: "host-gw" is not a backend \(use vxlan or auto\)/);
});

t.test('the backend is agreed cluster-wide, absent meaning VXLAN', async (t) => {
  checkAgreement('10.200.0.0/16', { subnet: '10.200.0.0/16', vni: 5000 }, { kind: 'overlay', backend: 'vxlan' });
  checkAgreement('10.200.0.0/16', { subnet: '10.200.0.0/16', vni: 5000, backend: 'auto' }, { kind: 'overlay', backend: 'auto' });
  checkAgreement('10.200.0.0/16', { subnet: '10.200.0.0/16', vni: 5000, backend: 'auto' }, { kind: 'overlay' });
  t.throws(() => checkAgreement('10.200.0.0/16', { subnet: '10.200.0.0/16', vni: 5000 }, { kind: 'overlay', backend: 'auto' }), /tsnet\.backend: auto disagrees with the cluster, where 10\.200\.0\.0\/16 uses vxlan/);
  t.throws(() => checkAgreement('10.202.0.0/16', { subnet: '10.202.0.0/16', kind: 'overlay' }, { kind: 'routed' }), /tsnet\.mode: routed disagrees with the cluster, where 10\.202\.0\.0\/16 is a overlay network/);
});

t.test("a host joining makes a network's etcd record again from the settings it agreed to", async (t) => {
  const base = { id: 'a'.repeat(64), ipv4: [{ pool: '10.202.0.0/16', gateway: '10.202.0.1/16', aux: {} }], ipv6: [] };
  const cluster = { subnet: '10.202.0.0/16', pools: [{ poolId: 'p4', range: '10.202.128.0/17', blocks: [], claims: [] }, { poolId: 'p6', range: 'fd74:202::/64', blocks: [], claims: [] }] };
  t.same(agreedSettings({ ...base, mode: 'routed', cluster } as unknown as NetworkRecord), { kind: 'routed', ranges: ['10.202.128.0/17', 'fd74:202::/64'], gateway: '10.202.0.1' });
  t.same(agreedSettings({ ...base, mode: 'overlay', cluster, overlay: { vni: 4242, encrypted: true, backend: 'auto' } } as unknown as NetworkRecord), {
    kind: 'overlay', ranges: ['10.202.128.0/17', 'fd74:202::/64'], gateway: '10.202.0.1', vni: 4242, encrypted: true, backend: 'auto',
  }, 'an overlay: its VNI, encryption and backend too');
  t.same(agreedSettings({ ...base, mode: 'macvlan', ipv4: [], cluster } as unknown as NetworkRecord), { kind: 'macvlan', ranges: ['10.202.128.0/17', 'fd74:202::/64'] }, 'no gateway, none asked');
  t.equal(agreedSettings({ ...base, mode: 'routed' } as unknown as NetworkRecord), undefined, 'a network of this host alone has nothing to make again');
});

t.test('connected prefixes and on-link next hops', async (t) => {
  const connected = connectedPrefixes(
    [
      { ifname: 'lo', addr_info: [{ family: 'inet', local: '127.0.0.1', prefixlen: 8, scope: 'host' }] },
      { ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.99.0.11', prefixlen: 24, scope: 'global' }, { family: 'inet6', local: 'fd00:99::11', prefixlen: 64, scope: 'global' }, { family: 'inet6', local: 'fe80::1', prefixlen: 64, scope: 'link' }] },
      { ifname: 'eth1', addr_info: [{ family: 'inet', local: '10.99.0.77', prefixlen: 25, scope: 'global' }, { family: 'inet', local: '192.0.2.5', prefixlen: 32, scope: 'global' }] },
      { ifname: 'tsbr-x', addr_info: [{ family: 'inet', local: '10.202.0.1', prefixlen: 16, scope: 'global' }] },
    ],
    (n) => n.startsWith('tsbr-'),
  );
  t.same(connected.map((c) => `${c.dev} ${c.prefix.bits}`), ['eth0 24', 'eth0 64', 'eth1 25'], 'global prefixes of non-tsnet links; no host routes, no link-local, no loopback');
  t.equal(onLink('10.99.0.12', connected)?.dev, 'eth1', 'longest prefix wins');
  t.equal(onLink('10.99.0.200', connected)?.dev, 'eth0');
  t.equal(onLink('fd00:99::12', connected)?.dev, 'eth0');
  t.equal(onLink('10.98.0.14', connected), undefined, 'behind a router: not on-link');
  t.equal(onLink('10.202.0.5', connected), undefined, "a tsnet bridge's subnet is no LAN");
});

function view(parts: Partial<NetworkView>): NetworkView {
  return { revision: 1, members: new Map(), endpoints: new Map(), blocks: new Map(), claims: new Map(), ...parts };
}

t.test('peersFromView: members\' blocks and claims, checked before they can become routes', async (t) => {
  const v = view({
    members: new Map([
      ['me', { vtep: '10.99.0.11' }],
      ['h2', { vtep: '10.99.0.12', addr6: 'fd00:99::12' }],
      ['h3', { vtep: 'fd00:99::13', addr4: '10.99.0.13' }],
      ['h5', { vtep: 'not-an-ip' }],
    ]),
    blocks: new Map([
      ['10.202.0.0_26', { host: 'me' }],
      ['10.202.0.64_26', { host: 'h2' }],
      ['fd74:202::40_122', { host: 'h2' }],
      ['10.202.0.128_26', { host: 'h3' }],
      ['10.202.0.192_26', { host: 'gone' }],
      ['0.0.0.0_0', { host: 'h2' }],
      ['10.9.0.0_24', { host: 'h2' }],
      ['garbage', { host: 'h2' }],
      ['10.202.1.0_26', { host: 'h5' }],
    ]),
    claims: new Map([
      ['10.202.0.70', { host: 'me', state: 'ok' }],
      ['10.202.0.5', { host: 'h3', state: 'ok' }],
      ['10.202.0.6', { host: 'h3', state: 'pending' }],
      ['8.8.8.8', { host: 'h3', state: 'ok' }],
    ]),
  });
  const { peers, ownClaims, ignored } = peersFromView(v, 'me', [P('10.202.0.0/16'), P('fd74:202::/64')]);
  t.same([...peers.keys()].sort(), ['h2', 'h3', 'h5'], 'members with something to route; a host whose lease expired is not one');
  t.same(peers.get('h2'), { host: 'h2', addr4: '10.99.0.12', addr6: 'fd00:99::12', prefixes: [P('10.202.0.64/26'), P('fd74:202::40/122')] });
  t.same(peers.get('h3'), { host: 'h3', addr4: '10.99.0.13', addr6: 'fd00:99::13', prefixes: [P('10.202.0.128/26'), P('10.202.0.5/32')] }, 'an IPv6 VTEP with its IPv4 address beside it; a confirmed claim');
  t.same(peers.get('h5'), { host: 'h5', addr4: undefined, addr6: undefined, prefixes: [P('10.202.1.0/26')] }, 'a member publishing nothing usable has no address');
  t.same(ownClaims, [P('10.202.0.70/32')], "this host's claims in other blocks");
  t.same(ignored.sort(), ['block 0.0.0.0_0', 'block 10.9.0.0_24', 'block garbage', 'claim 8.8.8.8'], 'what etcd holds outside the subnet is never routed');
});

const LAN = connectedPrefixes([{ ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.99.0.11', prefixlen: 24, scope: 'global' }, { family: 'inet6', local: 'fd00:99::11', prefixlen: 64, scope: 'global' }] }], () => false);

t.test('desiredState: routes to on-link peers, proxy entries per IPv6 address, sources, and who is skipped', async (t) => {
  const peers: RoutedPeer[] = [
    { host: 'h2', addr4: '10.99.0.12', addr6: 'fd00:99::12', prefixes: [P('10.202.0.64/26'), P('fd74:202::40/122'), P('10.202.0.130/32')] },
    { host: 'h3', addr4: '10.99.0.13', prefixes: [P('10.202.0.128/26'), P('fd74:202::80/122')] },
    { host: 'h4', addr4: '10.98.0.14', addr6: 'fd00:98::14', prefixes: [P('10.202.0.192/26')] },
  ];
  const d = desiredState(peers, LAN, [P('10.202.0.70/32'), P('fd74:202::41/128'), P('10.202.9.9/32')]);
  t.same([...d.routes.entries()], [
    ['10.202.0.64/26', { via: '10.99.0.12', dev: 'eth0' }],
    ['10.202.0.130/32', { via: '10.99.0.12', dev: 'eth0' }],
    ['fd74:202::40/122', { via: 'fd00:99::12', dev: 'eth0' }],
    ['10.202.0.128/26', { via: '10.99.0.13', dev: 'eth0' }],
    ['10.202.0.70/32', 'local'],
    ['fd74:202::41/128', 'local'],
  ], "each family through the peer's address of that family; own addresses inside routed blocks back to the bridge");
  t.equal(d.proxy6.size, 63, 'one proxy entry per address of the remote IPv6 block, but not for this host\'s own');
  t.notOk(d.proxy6.has('fd74:202::41'));
  t.ok(d.proxy6.has('fd74:202::7f'));
  t.same(d.sources4, ['10.202.0.64/26', '10.202.0.128/26'], 'admitted sources: the routed blocks, a claim inside one folded in (an interval set takes no overlaps)');
  t.same(d.sources6, ['fd74:202::40/122']);
  t.same(d.peers.map((p) => `${p.host}/${p.family} ${p.status}`), ['h2/4 routed', 'h2/6 routed', 'h3/4 routed', 'h3/6 no-address', 'h4/4 off-lan'], 'a peer with no IPv6 address and a peer off the LAN are reported, not routed');
  t.equal(collapse([P('10.1.0.0/24'), P('10.1.0.5/32'), P('10.0.0.0/8'), P('11.0.0.0/8')]).length, 2, 'contained prefixes fold into their containers');
});

t.test('routeLines: the difference, removals first, tagged with the protocol', async (t) => {
  const have = { routes: new Map([['10.202.0.64/26', { via: '10.99.0.12', dev: 'eth0' }], ['10.202.0.192/26', { via: '10.99.0.14', dev: 'eth0' }]] as const), proxy6: new Set(['fd74:202::40', 'fd74:202::99']) };
  const want = { routes: new Map<string, { via: string; dev: string } | 'local'>([['10.202.0.64/26', { via: '10.99.0.22', dev: 'eth0' }], ['10.202.0.128/26', { via: '10.99.0.13', dev: 'eth0' }], ['10.202.0.70/32', 'local']]), proxy6: new Set(['fd74:202::40', 'fd74:202::41']) };
  t.same(routeLines('tsbr-x', have, want), [
    'neigh del proxy fd74:202::99 dev tsbr-x',
    `route del 10.202.0.192/26 proto ${ROUTE_PROTO}`,
    'route replace 10.202.0.64/26 via 10.99.0.22 dev eth0 proto 116',
    'route replace 10.202.0.128/26 via 10.99.0.13 dev eth0 proto 116',
    'route replace 10.202.0.70/32 dev tsbr-x proto 116',
    'neigh replace proxy fd74:202::41 dev tsbr-x',
  ], 'a moved host is re-pointed, a gone one removed, a new one added');
  t.same(routeLines('tsbr-x', want, want), [], 'nothing to do');
  t.throws(() => routeLines('tsbr-x', { routes: new Map(), proxy6: new Set() }, { routes: new Map([['10.0.0.0/8 dev lo', 'local']]), proxy6: new Set() }), 'a destination is checked before it reaches a batch');
  t.throws(() => routeLines('tsbr-x', { routes: new Map(), proxy6: new Set() }, { routes: new Map([['10.0.0.0/8', { via: '10.99.0.12\nroute flush all', dev: 'eth0' }]]), proxy6: new Set() }), 'so is a next hop');
});

t.test('the bridge answers for other hosts at once, forwarding on, per family', async (t) => {
  t.same(routedSysctls({ bridge: 'tsbr-x', ipv4: V4, ipv6: [] }), [['net/ipv4/ip_forward', '1'], ['net/ipv4/conf/tsbr-x/proxy_arp', '1'], ['net/ipv4/neigh/tsbr-x/proxy_delay', '0']]);
  t.same(routedSysctls({ bridge: 'tsbr-x', ipv4: [], ipv6: V6 }), [['net/ipv6/conf/all/forwarding', '1'], ['net/ipv6/conf/tsbr-x/proxy_ndp', '1'], ['net/ipv6/neigh/tsbr-x/proxy_delay', '0']]);
});

t.test('firewall scripts of routed networks', async (t) => {
  const SID = '0123456789ab';
  const c = chainNames(SID);
  const net = (flags: Partial<NftNetwork> = {}): NftNetwork => ({
    sid: SID, bridge: 'tsbr-0123456789', internal: false, icc: true, masquerade4: true, masquerade6: true, directAccess4: false, directAccess6: false,
    subnets4: ['10.202.0.0/16'], subnets6: ['fd74:202::/64'], routed: true, ...flags,
  });
  const rules = (script: string, chain: string): string[] => script.split('\n').filter((l) => l.startsWith(`add rule inet tsnet ${chain} `)).map((l) => l.slice(`add rule inet tsnet ${chain} `.length));
  for (const internal of [false, true]) {
    for (const icc of [false, true]) {
      const name = `nft-network-routed-internal${+internal}-icc${+icc}.nft`;
      const script = renderNetwork(net({ internal, icc }));
      matchGolden(t, name, script);
      t.match(script, 'add set inet tsnet r-0123456789ab-4 { type ipv4_addr; flags interval; }', `${name}: peer sets declared`);
      t.notMatch(script, /flush set/, `${name}: declaring never empties them (a reconcile keeps the peers)`);
      const inn = rules(script, c.in);
      const out = rules(script, c.out);
      const admit = 'ip saddr @r-0123456789ab-4 fib saddr . iif oif exists accept';
      t.equal(inn.includes(admit), icc, `${name}: other hosts' blocks admitted from the LAN ${icc ? '' : 'only with ICC on'}`);
      if (!internal) {
        t.same(rules(script, c.post).filter((r) => r.includes('masquerade') && !r.startsWith('ct')), [
          'oifname != "tsbr-0123456789" ip saddr 10.202.0.0/16 ip daddr != 10.202.0.0/16 masquerade',
          'oifname != "tsbr-0123456789" ip6 saddr fd74:202::/64 ip6 daddr != fd74:202::/64 masquerade',
        ], `${name}: masquerade only beyond the subnet`);
        t.ok(inn.indexOf(admit) < 0 || inn.indexOf(admit) < inn.indexOf('meta iifkind "bridge" drop'), `${name}: admitted before the bridge drop (a LAN uplink may itself be a bridge; the reverse-path check guards it)`);
        t.equal(out.includes('ip daddr @r-0123456789ab-4 ct state new drop'), !icc, `${name}: ICC off holds across hosts`);
      } else {
        t.equal(out.at(-1), 'drop', `${name}: nothing else leaves`);
        t.equal(out.includes('ip daddr @r-0123456789ab-4 accept'), icc, `${name}: but the other hosts' blocks ${icc ? 'are' : 'are not'} reached`);
        t.equal(inn.at(-1), 'drop');
      }
    }
  }
  const plain = renderNetwork(net({ routed: false }));
  t.notMatch(plain, /r-0123456789ab|daddr !=/, 'a bridge network is untouched');
  const removal = renderNetworkRemoval(SID, 'tsbr-0123456789');
  t.ok(removal.indexOf('delete set inet tsnet r-0123456789ab-4') > removal.lastIndexOf('delete chain'), 'peer sets removed after the chains that refer to them');
  const sources = renderPeerSources(SID, ['10.202.0.64/26', '10.202.0.128/26'], []);
  t.match(sources, 'flush set inet tsnet r-0123456789ab-4\n');
  t.match(sources, 'add element inet tsnet r-0123456789ab-4 { 10.202.0.64/26, 10.202.0.128/26 }');
  t.notMatch(sources, /add element inet tsnet r-0123456789ab-6/, 'an empty family is just flushed');
  t.throws(() => renderPeerSources(SID, ['10.202.0.64/26 }; flush ruleset'], []), 'sources are checked');
  t.throws(() => renderPeerSources(SID, ['fd74::/64'], []), 'and must be of the set\'s family');
  const guard = renderRoutedGuard([net(), net({ sid: '111111111111', bridge: 'tsbr-1', routed: false, subnets4: ['10.9.0.0/24'] })]);
  t.match(guard, 'add chain inet tsnet routed_guard { type filter hook forward priority filter - 2; policy accept; }', 'a base chain of its own, before tsnet\'s forward chain');
  t.same(rules(guard, 'routed_guard'), ['meta iifkind "bridge" iifname != "tsbr-0123456789" ip daddr 10.202.0.0/16 drop', 'meta iifkind "bridge" iifname != "tsbr-0123456789" ip6 daddr fd74:202::/64 drop'], 'only routed networks are guarded');
  t.match(renderRoutedGuard([]), /delete chain inet tsnet routed_guard/, 'and it goes with the last');
});

t.test('the runtime: each view becomes the minimal batch; a restart diffs against the kernel', async (t) => {
  const dir = await tmpDir(t, 'routed');
  const store = new Store({ dir, log: silentLogger(), noSync: true });
  await store.open();
  t.teardown(() => keepAlive(() => store.close()));
  const runner = new FakeRunner();
  runner.addrs = [{ ifname: 'eth0', addr_info: [{ family: 'inet', local: '10.99.0.11', prefixlen: 24, scope: 'global' }] }];
  const id = dockerId();
  const net = {
    id, mode: 'routed', bridge: 'tsbr-r', createdBridge: true, ipv4: V4, ipv6: [], internal: false, mtu: 1500, masquerade: true, icc: true, gatewayMode: 'nat', hostBindingIpv4: '0.0.0.0', inhibitIpv4: false, ifacePrefix: 'eth', trustedHostInterfaces: [], options: {}, createdAt: new Date().toISOString(),
    routed: { mode: 'cluster', peers: [] }, cluster: { subnet: '10.202.0.0/16', pools: [] },
  } as NetworkRecord;
  store.state.networks[id] = net;
  let hooks: ClusterHooks | undefined;
  const cluster = { hostId: 'me', follow: (_n: NetworkRecord, h: ClusterHooks) => void (hooks = h) } as unknown as ClusterNetworks;
  const manager = new RoutedManager({ runner, store, cluster, log: silentLogger(), advertiseAddr: undefined });
  manager.start(net);
  const members = new Map([['me', { vtep: '10.99.0.11' }], ['h2', { vtep: '10.99.0.12' }], ['h3', { vtep: '10.99.0.13' }]]);
  const blocks = new Map([['10.202.0.0_26', { host: 'me' }], ['10.202.0.64_26', { host: 'h2' }], ['10.202.0.128_26', { host: 'h3' }]]);
  const batches = (): string[] => runner.callsOf('ip', (c) => c.args.includes('-batch')).map((c) => c.input ?? '');
  await hooks!.onView!(view({ members, blocks }));
  t.same(batches(), ['route replace 10.202.0.64/26 via 10.99.0.12 dev eth0 proto 116\nroute replace 10.202.0.128/26 via 10.99.0.13 dev eth0 proto 116\n'], 'one batch for both peers');
  t.match(runner.nftScripts().at(-1)?.input, 'add element inet tsnet r-' + id.slice(0, 12) + '-4 { 10.202.0.64/26, 10.202.0.128/26 }', 'their blocks admitted');
  t.ok(runner.callsOf('ip', (c) => c.args.includes('proto') && c.args.includes('show')).length > 0, 'what the kernel held was read first');
  runner.clearCalls();
  await hooks!.onView!(view({ members, blocks }));
  t.same(runner.writes(), [], 'the same view again: nothing runs');
  // Host 3's lease expires: its member key goes, its block stays in etcd.
  await hooks!.onView!(view({ members: new Map([...members].filter(([h]) => h !== 'h3')), blocks }));
  t.same(batches(), ['route del 10.202.0.128/26 proto 116\n'], 'its route goes');
  runner.clearCalls();
  // Host 2 renumbered.
  await hooks!.onView!(view({ members: new Map([['me', { vtep: '10.99.0.11' }], ['h2', { vtep: '10.99.0.22' }]]), blocks }));
  t.same(batches(), ['route replace 10.202.0.64/26 via 10.99.0.22 dev eth0 proto 116\n'], 're-pointed');
  t.same(manager.status(net).peers.map((p) => `${p.host} ${p.status} ${p.address}`), ['h2 routed 10.99.0.22']);
  runner.clearCalls();
  // Host 2 moves behind a router: reported, its route goes.
  await hooks!.onView!(view({ members: new Map([['me', { vtep: '10.99.0.11' }], ['h2', { vtep: '10.98.0.12' }]]), blocks }));
  t.same(batches(), ['route del 10.202.0.64/26 proto 116\n']);
  t.match(manager.status(net).warnings[0], /10\.202\.0\.64\/26 of host h2 not routed: 10\.98\.0\.12 is not on a directly connected subnet of this host/);

  // A restarted tsnet: a new runtime reads the kernel's routes and removes what the view no longer has.
  const runner2 = new FakeRunner();
  runner2.addrs = runner.addrs;
  runner2.run = (async (cmd: string, args: readonly string[], opts?: { input?: string }) => {
    if (cmd === 'ip' && args.join(' ') === '-json -4 route show proto 116') {
      return { stdout: JSON.stringify([{ dst: '10.202.0.64/26', gateway: '10.99.0.12', dev: 'eth0' }, { dst: '10.202.7.0/26', gateway: '10.99.0.17', dev: 'eth0' }, { dst: '10.202.0.70', dev: 'tsbr-r' }, { dst: '10.9.0.0/24', gateway: '10.99.0.12', dev: 'eth0' }]), stderr: '' };
    }
    return FakeRunner.prototype.run.call(runner2, cmd, args, opts);
  }) as FakeRunner['run'];
  const m2 = new RoutedManager({ runner: runner2, store, cluster, log: silentLogger(), advertiseAddr: undefined });
  m2.start(net);
  await hooks!.onView!(view({ members, blocks }));
  const input = runner2.callsOf('ip', (c) => c.args.includes('-batch')).map((c) => c.input).join('');
  t.same(input.trim().split('\n'), ['route del 10.202.7.0/26 proto 116', 'route del 10.202.0.70/32 proto 116', 'route replace 10.202.0.128/26 via 10.99.0.13 dev eth0 proto 116'], 'stale ones inside the subnet removed, the one already right left alone, the missing one added');
  t.notMatch(input, '10.9.0.0', 'a route of another subnet is not this network\'s (reconcile removes it if no network explains it)');
  runner2.clearCalls();
  await m2.stop(net);
  t.match(runner2.callsOf('ip', (c) => c.args.includes('-batch')).map((c) => c.input).join(''), /route del 10\.202\.0\.64\/26 proto 116/, 'network removed: its routes go');
});

t.test('doctor: a routed bridge that stopped answering, and peers that are not routed', async (t) => {
  const { judgeRouted } = await import('../../src/doctor/checks.js');
  const net = { id: 'a'.repeat(64), bridge: 'tsbr-r', ipv4: V4, ipv6: V6 } as NetworkRecord;
  const good = { net, proxyArp: '1', proxyNdp: '1', ipForward: '1', ipv6Forwarding: '1', peers: [{ host: 'h2', family: 4 as const, address: '10.99.0.12', prefixes: ['10.202.0.64/26'], status: 'routed' as const }] };
  t.same(judgeRouted([good]).map((f) => f.level), ['ok'], 'all well');
  const broken = judgeRouted([{ ...good, proxyArp: '0' }]);
  t.match(broken[0], { level: 'fail', message: /proxy_arp 0/, fix: /tsnetctl reconcile/ });
  const off = judgeRouted([{ ...good, peers: [...good.peers, { host: 'h4', family: 4 as const, address: '10.98.0.14', prefixes: ['10.202.0.192/26'], status: 'off-lan' as const }] }]);
  t.match(off, [{ level: 'warn', message: /10\.98\.0\.14 is not on a directly connected subnet/, fix: /tsnet\.backend=auto/ }]);
  t.match(judgeRouted([{ ...good, peers: undefined }]), [{ level: 'warn', message: /no view of the other hosts yet/ }], 'etcd never answered: said so, routes kept');
});
