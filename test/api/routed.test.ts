// Routed networks through the real app, driver, IPAM, firewall and store
// with a FakeRunner for the kernel: what tsnet would run for the static
// form, what it refuses (500 naming the option and the value, nothing run,
// nothing stored), overlays with tsnet.backend=auto, and reconcile.
import t, { type Test } from 'tap';
import { reconcile } from '../../src/driver/reconcile.js';
import { shortId } from '../../src/kernel/names.js';
import { silentLogger, dockerId } from '../helpers/fake-runner.js';
import { buildHarness, type Harness } from '../helpers/harness.js';

const PEERS = '192.168.100.201=10.202.1.0/24,192.168.100.202=10.202.2.0/24,192.168.100.203=10.202.3.0/24,10.0.0.9=10.202.9.0/24';

async function lanHarness(t: Test): Promise<Harness> {
  const h = await buildHarness(t);
  h.runner.addLink('eth0', { mtu: 9000, flags: ['UP'] });
  h.runner.addrs = [{ ifname: 'eth0', addr_info: [
    { family: 'inet', local: '192.168.100.201', prefixlen: 24, scope: 'global' },
    { family: 'inet6', local: 'fd00:100::201', prefixlen: 64, scope: 'global' },
  ] }];
  h.runner.defaultRoutes4 = [{ dst: 'default', gateway: '192.168.100.1', dev: 'eth0' }];
  return h;
}

/** A tsnet IPAM pool, as `--ipam-driver tsnet --subnet … --ip-range …` asks for it. */
async function pool(h: Harness, Pool: string, SubPool = '', V6 = false): Promise<string> {
  const res = await h.call('IpamDriver.RequestPool', { AddressSpace: 'tsnet-local', Pool, SubPool, Options: {}, V6 });
  if (res.status !== 200) throw new Error(res.raw);
  return res.body.PoolID as string;
}

function body(id: string, generic: Record<string, string>, opts: { pool?: string; gateway?: string; internal?: boolean; ipv6?: { Pool: string; Gateway: string } } = {}): Record<string, unknown> {
  return {
    NetworkID: id,
    Options: { 'com.docker.network.enable_ipv6': opts.ipv6 !== undefined, 'com.docker.network.generic': generic, ...(opts.internal ? { 'com.docker.network.internal': true } : {}) },
    IPv4Data: [{ AddressSpace: 'tsnet-local', Pool: opts.pool ?? '10.202.0.0/16', Gateway: opts.gateway ?? '10.202.0.1/16' }],
    IPv6Data: opts.ipv6 ? [{ AddressSpace: 'tsnet-local', ...opts.ipv6 }] : [],
  };
}

function routeBatches(h: Harness): string {
  return h.runner.callsOf('ip', (c) => c.args.includes('-batch') && (c.input ?? '').includes('proto 116')).map((c) => c.input).join('');
}

t.test('static form: bridge, forwarding and proxy sysctls, peer sets and guard, then exactly the on-LAN peers\' routes', async (t) => {
  const h = await lanHarness(t);
  const plain = await h.call('NetworkDriver.CreateNetwork', body(dockerId(), {}, { pool: '10.10.0.0/24', gateway: '10.10.0.1/24' }));
  t.equal(plain.status, 200, 'a bridge network beside it');
  t.notMatch(h.runner.nftScripts().map((c) => c.input).join(''), /routed_guard/, 'which needs no guard');
  await pool(h, '10.202.0.0/16', '10.202.1.0/24');
  const id = dockerId();
  const res = await h.call('NetworkDriver.CreateNetwork', body(id, { 'tsnet.mode': 'routed', 'tsnet.peers': PEERS }));
  t.equal(res.status, 200, res.raw);
  const rec = h.store.state.networks[id]!;
  t.equal(rec.mode, 'routed');
  t.same(rec.routed, { mode: 'static', peers: [
    { address: '192.168.100.202', block: '10.202.2.0/24' },
    { address: '192.168.100.203', block: '10.202.3.0/24' },
    { address: '10.0.0.9', block: '10.202.9.0/24' },
  ] }, "this host's own entry left out");
  t.equal(rec.mtu, 9000, "the underlay's full MTU: nothing is encapsulated");
  t.match(h.runner.batchInput(), `link add name ${rec.bridge} address`, 'a bridge, as bridge mode makes it');
  const sysctls = new Map(h.runner.sysctlWrites);
  t.equal(sysctls.get(`net/ipv4/conf/${rec.bridge}/proxy_arp`), '1', 'the bridge answers ARP for other hosts\' containers');
  t.equal(sysctls.get(`net/ipv4/neigh/${rec.bridge}/proxy_delay`), '0', 'at once');
  t.equal(sysctls.get('net/ipv4/ip_forward'), '1');
  const nft = h.runner.nftScripts().map((c) => c.input).join('');
  const sid = shortId(id);
  t.match(nft, `add set inet tsnet r-${sid}-4 { type ipv4_addr; flags interval; }`);
  t.match(nft, `ip saddr 10.202.0.0/16 ip daddr != 10.202.0.0/16 masquerade`, 'masquerade only beyond the subnet');
  t.match(nft, `add rule inet tsnet routed_guard meta iifkind "bridge" iifname != "${rec.bridge}" ip daddr 10.202.0.0/16 drop`, 'the guard, in the network\'s own transaction');
  await h.services.routed.settle();
  t.equal(routeBatches(h), 'route replace 10.202.2.0/24 via 192.168.100.202 dev eth0 proto 116\nroute replace 10.202.3.0/24 via 192.168.100.203 dev eth0 proto 116\n', 'one batch, the on-LAN peers only');
  t.match(h.runner.nftScripts().at(-1)?.input, `add element inet tsnet r-${sid}-4 { 10.202.2.0/24, 10.202.3.0/24 }`, 'their blocks admitted from the LAN');
  const st = h.services.modes.get('routed').status(rec);
  t.match(st.warnings, [/10\.202\.9\.0\/24 of host 10\.0\.0\.9 not routed: 10\.0\.0\.9 is not on a directly connected subnet of this host/], 'the off-LAN peer is reported');
  t.equal(st.control, 'static');

  const ep = dockerId();
  const ce = await h.call('NetworkDriver.CreateEndpoint', { NetworkID: id, EndpointID: ep, Interface: { Address: '10.202.1.2/16', AddressIPv6: '', MacAddress: '' }, Options: {} });
  t.equal(ce.status, 200, ce.raw);
  const join = await h.call('NetworkDriver.Join', { NetworkID: id, EndpointID: ep, SandboxKey: '/var/run/docker/netns/x', Options: {} });
  t.equal(join.body.Gateway, '10.202.0.1', 'the bridge is the containers\' gateway beyond the subnet');

  h.runner.clearCalls();
  const again = await h.call('NetworkDriver.CreateNetwork', body(id, { 'tsnet.mode': 'routed', 'tsnet.peers': PEERS }));
  t.equal(again.status, 200, 'a repeated CreateNetwork is the same request');
  t.same(h.runner.writes(), []);
  t.equal((await h.call('NetworkDriver.DeleteEndpoint', { NetworkID: id, EndpointID: ep })).status, 200);
  h.runner.clearCalls();
  t.equal((await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id })).status, 200);
  t.equal(routeBatches(h), 'route del 10.202.2.0/24 proto 116\nroute del 10.202.3.0/24 proto 116\n', 'network removed: its routes go');
  t.equal(h.runner.protoRoutes.size, 0);
  t.match(h.runner.nftScripts().map((c) => c.input).join(''), /delete chain inet tsnet routed_guard/, 'and the guard with the last routed network, in the same transaction as its chains');
  t.equal((await h.call('NetworkDriver.DeleteNetwork', { NetworkID: id })).status, 200, 'twice is fine');
});

t.test('dual stack, static: IPv6 blocks via the peer\'s IPv6 address, a proxy-NDP entry per remote address', async (t) => {
  const h = await lanHarness(t);
  await pool(h, '10.202.0.0/16', '10.202.1.0/24');
  await pool(h, 'fd74:202::/64', 'fd74:202::100/120', true);
  const id = dockerId();
  const peers = '192.168.100.202=10.202.2.0/24,fd00:100::202=fd74:202::200/120';
  const res = await h.call('NetworkDriver.CreateNetwork', body(id, { 'tsnet.mode': 'routed', 'tsnet.peers': peers }, { ipv6: { Pool: 'fd74:202::/64', Gateway: 'fd74:202::1/64' } }));
  t.equal(res.status, 200, res.raw);
  await h.services.routed.settle();
  const bridge = h.store.state.networks[id]!.bridge;
  const lines = routeBatches(h).trim().split('\n');
  t.ok(lines.includes('route replace fd74:202::200/120 via fd00:100::202 dev eth0 proto 116'), 'the IPv6 block through the peer\'s IPv6 address');
  const proxies = h.runner.callsOf('ip', (c) => c.args.includes('-batch')).flatMap((c) => (c.input ?? '').split('\n')).filter((l) => l.startsWith('neigh replace proxy'));
  t.equal(proxies.length, 256, 'one proxy entry per address of the /120');
  t.ok(proxies.includes(`neigh replace proxy fd74:202::2ff dev ${bridge}`));
  const sysctls = new Map(h.runner.sysctlWrites);
  t.equal(sysctls.get(`net/ipv6/conf/${bridge}/proxy_ndp`), '1');
  t.equal(sysctls.get(`net/ipv6/neigh/${bridge}/proxy_delay`), '0');
  t.equal(sysctls.get('net/ipv6/conf/all/forwarding'), '1');
});

t.test('--internal: forwarding still on (the subnet is routed between hosts), no gateway, no masquerade', async (t) => {
  const h = await lanHarness(t);
  await pool(h, '10.202.0.0/16', '10.202.1.0/24');
  const id = dockerId();
  const res = await h.call('NetworkDriver.CreateNetwork', body(id, { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24' }, { internal: true }));
  t.equal(res.status, 200, res.raw);
  t.equal(new Map(h.runner.sysctlWrites).get('net/ipv4/ip_forward'), '1');
  const nft = h.runner.nftScripts().map((c) => c.input).join('');
  t.notMatch(nft, 'ip daddr != 10.202.0.0/16 masquerade', 'no uplink masquerade');
  t.match(nft, `add rule inet tsnet n-${shortId(id)}-out ip daddr @r-${shortId(id)}-4 accept`, 'other hosts\' blocks reached');
});

t.test('bad input: 500 naming the option and the value, nothing run, nothing stored', async (t) => {
  const cases: Array<[string, Record<string, string>, RegExp, { internal?: boolean; subPool?: string }?]> = [
    ['a bare address', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202' }, /tsnet\.peers: "192\.168\.100\.202" is not ADDR=BLOCK/],
    ['a block outside the subnet', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.9.0.0/24' }, /tsnet\.peers: "192\.168\.100\.202=10\.9\.0\.0\/24": 10\.9\.0\.0\/24 is not inside the network's subnet 10\.202\.0\.0\/16/],
    ['a block over this host\'s range', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.1.0/24' }, /tsnet\.peers: "192\.168\.100\.202=10\.202\.1\.0\/24": 10\.202\.1\.0\/24 overlaps this host's --ip-range 10\.202\.1\.0\/24/, { subPool: '10.202.1.0/24' }],
    ['no --ip-range', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24' }, /tsnet\.peers: this host needs its own block as --ip-range/, { subPool: '' }],
    ['overlapping blocks', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24,192.168.100.203=10.202.2.0/25' }, /overlaps 10\.202\.2\.0\/24 of 192\.168\.100\.202/],
    ['gateway mode isolated', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24', 'com.docker.network.bridge.gateway_mode_ipv4': 'isolated' }, /com\.docker\.network\.bridge\.gateway_mode_ipv4: "isolated" does not apply to a routed network/, { internal: true }],
    ['inhibit_ipv4', { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24', 'com.docker.network.bridge.inhibit_ipv4': 'true' }, /com\.docker\.network\.bridge\.inhibit_ipv4: a routed network's bridge needs its IPv4 gateway address/],
    ['no etcd, no peers', { 'tsnet.mode': 'routed' }, /tsnet\.mode=routed needs a cluster \(TSNET_ETCD_ENDPOINTS\) or a static peer list \(-o tsnet\.peers=ADDR=BLOCK,…\)/],
    ['an overlay given blocks', { 'tsnet.mode': 'overlay', 'tsnet.peers': '192.168.100.202=10.202.2.0/24' }, /tsnet\.peers: "192\.168\.100\.202=10\.202\.2\.0\/24": an overlay's peers are addresses \(ADDR,ADDR\); ADDR=BLOCK is for tsnet\.mode=routed/],
    ['auto with static peers', { 'tsnet.mode': 'overlay', 'tsnet.backend': 'auto', 'tsnet.peers': '192.168.100.202' }, /tsnet\.backend: auto routes to the address blocks other hosts lease from etcd/],
    ['auto on an encrypted overlay', { 'tsnet.mode': 'overlay', 'tsnet.backend': 'auto', 'tsnet.encrypt': 'true' }, /tsnet\.backend: auto routes same-LAN members' traffic outside the tunnel; an encrypted overlay \(tsnet\.encrypt=true\) keeps every member on WireGuard/],
    ['an unknown backend', { 'tsnet.mode': 'overlay', 'tsnet.backend': 'host-gw' }, /tsnet\.backend: "host-gw" is not a backend \(use vxlan or auto\)/],
    ['backend on a routed network', { 'tsnet.mode': 'routed', 'tsnet.backend': 'auto' }, /tsnet\.backend only applies with tsnet\.mode=overlay/],
  ];
  for (const [what, generic, pattern, opts] of cases) {
    const h = await lanHarness(t);
    await pool(h, '10.202.0.0/16', opts?.subPool ?? '10.202.1.0/24');
    h.runner.clearCalls();
    const id = dockerId();
    const res = await h.call('NetworkDriver.CreateNetwork', body(id, generic, { ...(opts?.internal ? { internal: true } : {}) }));
    t.equal(res.status, 500, `${what}: refused`);
    t.match(res.body.Err, pattern, `${what}: ${res.body.Err}`);
    t.same(h.runner.writes(), [], `${what}: nothing run`);
    t.notOk(h.store.state.networks[id], `${what}: nothing stored`);
  }
});

t.test('reconcile: routes of no routed network go, the peer sets are written again, the rest stays', async (t) => {
  const h = await lanHarness(t);
  await pool(h, '10.202.0.0/16', '10.202.1.0/24');
  const id = dockerId();
  t.equal((await h.call('NetworkDriver.CreateNetwork', body(id, { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24' }))).status, 200);
  await h.services.routed.settle();
  h.runner.protoRoutes.set('10.250.0.0/24', { dst: '10.250.0.0/24', gateway: '192.168.100.9', dev: 'eth0', proto: '116' });
  h.runner.clearCalls();
  const { firewall, ports, modes } = h.services;
  const report = await reconcile({ runner: h.runner, store: h.store, firewall, ports, modes, log: silentLogger() });
  await h.services.routed.settle();
  t.same(report.errors, []);
  t.same([...h.runner.protoRoutes.keys()], ['10.202.2.0/24'], 'the stale route gone, the network\'s own kept');
  const nft = h.runner.nftScripts().map((c) => c.input).join('');
  t.match(nft, `add element inet tsnet r-${shortId(id)}-4 { 10.202.2.0/24 }`, 'the peer set written again after the firewall rewrite');
  t.match(nft, /add chain inet tsnet routed_guard/, 'the guard with it');
});

t.test("static form on Docker's own IPAM: no etcd, no tsnet pools, the same routes", async (t) => {
  const h = await lanHarness(t);
  const id = dockerId();
  const res = await h.call('NetworkDriver.CreateNetwork', {
    ...body(id, { 'tsnet.mode': 'routed', 'tsnet.peers': '192.168.100.202=10.202.2.0/24' }),
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: '10.202.0.0/16', Gateway: '10.202.0.1/16' }],
  });
  t.equal(res.status, 200, res.raw);
  await h.services.routed.settle();
  t.equal(routeBatches(h), 'route replace 10.202.2.0/24 via 192.168.100.202 dev eth0 proto 116\n', "routed, although the driver cannot see this host's --ip-range to check it");
  t.same(h.store.state.networks[id]!.cluster, undefined, 'nothing cluster-wide');
});
