// Pure pieces of the overlay: block maths, VNI derivation, the FDB and
// neighbour batch lines, the overlay firewall scripts, and the new settings.
import t from 'tap';
import { blockBits, blockKey, blockOf, blocksOf, firstFreeIn, parseBlockKey } from '../../src/net/blocks.js';
import { derivedVni } from '../../src/overlay/manager.js';
import { fdbLines, neighLines } from '../../src/kernel/vxlan.js';
import { renderIccRules, renderLegacyGatewayGuardRemoval, renderVxlanGuard, renderVxlanGuardRemoval } from '../../src/firewall/overlay-rules.js';
import { parseIp, parsePrefix, formatIp } from '../../src/net/cidr.js';
import { loadConfig } from '../../src/config.js';
import { bridgeMac } from '../../src/kernel/names.js';
import { subnetKey } from '../../src/cluster/registry.js';

const P = (s: string) => parsePrefix(s)!;
const ip = (s: string) => parseIp(s)!.value;

t.test('block sizes: /26-ish, smaller in small ranges, never below 4 addresses', async (t) => {
  t.equal(blockBits(P('10.200.0.0/16')), 26);
  t.equal(blockBits(P('10.200.0.0/24')), 27, 'a /24 gives 8 blocks');
  t.equal(blockBits(P('10.200.0.0/28')), 30, 'tiny ranges stop at /30');
  t.equal(blockBits(P('10.0.0.0/8')), 26);
  t.equal(blockBits(P('fd00::/64')), 122, 'IPv6 blocks of 64 addresses too');
});

t.test('blockOf / blocksOf / keys', async (t) => {
  const r = P('10.200.0.0/16');
  t.equal(formatIp({ v6: false, value: blockOf(r, ip('10.200.1.77'))!.base }), '10.200.1.64');
  t.equal(blockOf(r, ip('10.201.0.1')), undefined, 'outside the range: no block');
  const sub = P('10.200.0.64/26');
  t.equal(blockOf(sub, ip('10.200.0.70'))!.bits, 29, 'blocks of a SubPool');
  const all = [...blocksOf(P('10.200.0.0/24'))];
  t.equal(all.length, 8);
  t.equal(blockKey(all[1]!), '10.200.0.32_27', "keys are CIDRs with '/' made path-safe");
  t.same(parseBlockKey('10.200.0.32_27'), all[1]);
  t.equal(subnetKey('10.200.0.0/16'), '10.200.0.0_16');
});

t.test('firstFreeIn: lowest free across blocks, in address order', async (t) => {
  const blocks = [P('10.200.0.64/27'), P('10.200.0.0/27')];
  const taken = new Set([ip('10.200.0.0'), ip('10.200.0.1')]);
  t.equal(firstFreeIn(blocks, (v) => taken.has(v)), ip('10.200.0.2'));
  t.equal(firstFreeIn([P('10.200.0.0/30')], () => true), undefined, 'full');
});

t.test('derivedVni: the same on every host, in Docker\'s overlay space', async (t) => {
  const a = derivedVni('10.200.0.0/16');
  t.equal(derivedVni('10.200.0.0/16'), a, 'deterministic');
  t.not(derivedVni('10.201.0.0/16'), a);
  t.ok(a >= 4096 && a <= 16777215);
});

t.test('FDB and neighbour batch lines', async (t) => {
  const e = { ip: '10.200.0.5', mac: '02:aa:bb:cc:dd:ee', vtep: '10.99.0.12' };
  t.same(fdbLines('tsvx-1', { addEndpoints: [e], addFlood: ['10.99.0.13'] }), [
    'fdb replace 02:aa:bb:cc:dd:ee dev tsvx-1 dst 10.99.0.12 self permanent',
    'fdb append 00:00:00:00:00:00 dev tsvx-1 dst 10.99.0.13 self permanent',
  ]);
  t.same(fdbLines('tsvx-1', { delEndpoints: [e], delFlood: ['10.99.0.13'] }), ['fdb del 02:aa:bb:cc:dd:ee dev tsvx-1 self', 'fdb del 00:00:00:00:00:00 dev tsvx-1 dst 10.99.0.13 self']);
  t.same(
    fdbLines('tsvx-1', { addEndpoints: [e], delEndpoints: [{ ...e, mac: '02:aa:bb:cc:dd:ef' }] }, true),
    [
      'fdb del 02:aa:bb:cc:dd:ef dev tsvx-1 self',
      'fdb del 02:aa:bb:cc:dd:ef dev tsvx-1 master',
      'fdb replace 02:aa:bb:cc:dd:ee dev tsvx-1 dst 10.99.0.12 self permanent',
      'fdb replace 02:aa:bb:cc:dd:ee dev tsvx-1 master static',
    ],
    "with a control plane, remote MACs also go into the bridge's FDB, so unicast to them is not flooded",
  );
  t.same(neighLines('tsvx-1', { add: [e], del: [{ ...e, ip: '10.200.0.6' }] }), ['neigh del 10.200.0.6 dev tsvx-1', 'neigh replace 10.200.0.5 lladdr 02:aa:bb:cc:dd:ee dev tsvx-1 nud permanent']);
  t.throws(() => fdbLines('tsvx-1', { addEndpoints: [{ ...e, mac: 'zz\nfdb flush' }] }), 'a MAC from etcd is checked before it reaches a batch');
  t.throws(() => neighLines('tsvx-1', { add: [{ ...e, ip: '10.0.0.1 dev eth0' }] }), 'so is an address');
});

t.test('overlay firewall scripts', async (t) => {
  const guard = renderVxlanGuard(4789, ['10.99.0.12', '10.99.0.13', '10.99.0.12']);
  t.match(guard, 'udp dport 4789 ip saddr != @vtep4 counter drop', 'only member VTEPs reach the VXLAN port');
  t.match(guard, 'add element inet tsnet vtep4 { 10.99.0.12, 10.99.0.13 }', 'deduplicated');
  t.match(guard, 'flush set inet tsnet vtep4', 'members that left are dropped');
  t.notMatch(renderVxlanGuard(4789, []), /add element/, 'no peers: nobody admitted');
  t.match(guard, 'udp dport 4789 ip6 saddr != @vtep6 counter drop', 'an IPv4 underlay still guards the port against IPv6 senders');
  const guard6 = renderVxlanGuard(4789, ['fd00:99::12', '10.99.0.12', 'fd00:99::13']);
  t.match(guard6, 'add element inet tsnet vtep6 { fd00:99::12, fd00:99::13 }', 'IPv6 VTEPs in their own set');
  t.match(guard6, 'add element inet tsnet vtep4 { 10.99.0.12 }');
  t.match(renderVxlanGuardRemoval(), 'delete set inet tsnet vtep6');
  t.throws(() => renderVxlanGuard(4789, ['10.99.0.12; flush ruleset']), 'peer addresses are checked');
  t.match(guard, 'add rule inet tsnet vxlan_raw_in udp dport 4789 ip saddr @vtep4 notrack', 'VXLAN from members is not tracked');
  t.match(guard, 'add rule inet tsnet vxlan_raw_out udp dport 4789 ip daddr @vtep4 notrack', 'nor VXLAN to them');
  t.match(guard, 'vxlan_raw_in { type filter hook prerouting priority raw;', 'before conntrack sees it');
  t.match(guard6, 'add rule inet tsnet vxlan_raw_out udp dport 4789 ip6 daddr @vtep6 notrack');
  const removal = renderVxlanGuardRemoval();
  t.ok(removal.indexOf('delete chain inet tsnet vxlan_raw_out') < removal.indexOf('delete set inet tsnet vtep4'), 'the chains that use the sets go first');
  t.match(renderLegacyGatewayGuardRemoval(), 'add table bridge tsnet\ndelete table bridge tsnet', 'the old host-namespace gateway guard goes, present or not');
  const icc = renderIccRules('tsgp-0123456789');
  t.match(icc, 'add rule bridge tsnet forward iifname "tsgp-0123456789" accept', 'ICC off: the gateway port passes (published ports, egress)');
  t.match(icc, 'add rule bridge tsnet forward ether type { ip, ip6 } counter drop', 'and IP between other ports is dropped');
  t.throws(() => renderIccRules('x"; flush ruleset'), 'the port name is checked');
});

t.test('the gateway MAC of an overlay comes from its subnet, so every host agrees', async (t) => {
  const a = bridgeMac({ id: 'a'.repeat(64), overlay: { subnet: '10.200.0.0/16' } });
  const b = bridgeMac({ id: 'b'.repeat(64), overlay: { subnet: '10.200.0.0/16' } });
  t.equal(a, b, 'different network IDs on two hosts, same gateway MAC');
  t.not(bridgeMac({ id: 'a'.repeat(64) }), bridgeMac({ id: 'b'.repeat(64) }), 'bridges differ by network');
});

t.test('cluster settings are validated', async (t) => {
  const ok = loadConfig({ TSNET_ETCD_ENDPOINTS: 'http://10.0.0.5:2379, https://etcd.example:2379', TSNET_ADVERTISE_ADDR: '10.0.0.7', TSNET_VXLAN_PORT: '8472', TSNET_ETCD_LEASE_TTL: '30' });
  t.same(ok.etcdEndpoints, ['http://10.0.0.5:2379', 'https://etcd.example:2379']);
  t.equal(ok.vxlanPort, 8472);
  t.equal(ok.etcdLeaseTtl, 30);
  const d = loadConfig({});
  t.same(d.etcdEndpoints, [], 'no cluster by default');
  t.equal(d.vxlanPort, 4789);
  for (const [env, re] of [
    [{ TSNET_ETCD_ENDPOINTS: '10.0.0.5:2379' }, /TSNET_ETCD_ENDPOINTS: "10.0.0.5:2379" is not an etcd client URL/],
    [{ TSNET_ETCD_ENDPOINTS: 'ftp://x:1' }, /TSNET_ETCD_ENDPOINTS/],
    [{ TSNET_ETCD_ENDPOINTS: 'http://x:1/path' }, /TSNET_ETCD_ENDPOINTS/],
    [{ TSNET_ADVERTISE_ADDR: 'eth0' }, /TSNET_ADVERTISE_ADDR: "eth0" is not an IP address/],
    [{ TSNET_VXLAN_PORT: '70000' }, /TSNET_VXLAN_PORT: "70000" is not a UDP port/],
    [{ TSNET_ETCD_LEASE_TTL: '1' }, /TSNET_ETCD_LEASE_TTL/],
  ] as const) {
    t.throws(() => loadConfig(env as NodeJS.ProcessEnv), re);
  }
});
