// End to end: what an operator sees, against a real dockerd in the lab.
// /metrics is scraped (plugin socket and TCP) while dockerd creates a
// network and runs containers, and its numbers must be what was done;
// `tsnetctl events` must print those steps as JSON lines; and things are
// broken on purpose inside the lab host (never the machine) for
// `tsnetctl doctor` to name, then repaired.
import { spawn, type ChildProcess } from 'node:child_process';
import t from 'tap';
import { Client } from 'undici';
import { ETCD_URL, Lab, REPO, cleanEnv, waitFor, type LabHost } from '../helpers/lab.js';
import { canPing, containerIp, removeAll, runContainer } from '../helpers/docker.js';
import { Scrape } from '../helpers/prom.js';

// Two hosts and etcd, for the overlay's peers, FDB entries and etcd checks; the bridge tests use the first.
const lab = await Lab.start({ hosts: 2, etcd: true, tsnetEnv: { TSNET_METRICS_ADDR: '127.0.0.1:9464', TSNET_ETCD_ENDPOINTS: ETCD_URL } });
t.teardown(() => lab.stop());
const h = lab.host;
const h2 = lab.hosts[1]!;

/** GET /metrics on the plugin socket, as `curl --unix-socket` would. */
async function scrape(host: LabHost): Promise<Scrape> {
  const client = new Client('http://localhost', { socketPath: host.pluginSocket });
  try {
    const res = await client.request({ path: '/metrics', method: 'GET' });
    const text = await res.body.text();
    if (res.statusCode !== 200) throw new Error(`GET /metrics: ${res.statusCode} ${text}`);
    return await Scrape.parse(text);
  } finally {
    await client.close();
  }
}

/** `tsnetctl events` running in the lab host, its stdout split into JSON lines. */
function followEvents(host: LabHost): { child: ChildProcess; events: () => Array<Record<string, unknown>> } {
  const e = host.enter();
  const child = spawn(e[0]!, [...e.slice(1), process.execPath, `${REPO}/dist/cli.js`, '--socket', '/run/docker/plugins/tsnet.sock', 'events'], { stdio: ['ignore', 'pipe', 'inherit'], env: cleanEnv() });
  let out = '';
  child.stdout!.on('data', (c: Buffer) => (out += c.toString()));
  return { child, events: () => out.split('\n').filter((l) => l !== '').map((l) => JSON.parse(l) as Record<string, unknown>) };
}

const delta = (a: Scrape, b: Scrape, name: string, labels: Record<string, string>): number => (b.value(name, labels) ?? 0) - (a.value(name, labels) ?? 0);

t.test('metrics and events follow a network create and two containers', async (t) => {
  const follow = followEvents(h);
  t.teardown(() => void follow.child.kill('SIGTERM'));
  await waitFor('the events client to subscribe', async () => (await scrape(h)).value('tsnet_event_subscribers') === 1);
  const before = await scrape(h);

  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.70.0.0/24', 'ops1']);
  const netId = (await h.docker(['network', 'inspect', '-f', '{{.Id}}', 'ops1'])).stdout.trim();
  await runContainer(h, 'web', 'ops1', ['-p', '8080:80']);
  await runContainer(h, 'client', 'ops1');
  t.ok(await canPing(h, 'client', 'web'), 'the containers reach each other');
  const after = await scrape(h);

  // What dockerd asked for: one network, two endpoints, each joined.
  t.equal(delta(before, after, 'tsnet_requests_total', { method: 'NetworkDriver.CreateNetwork', outcome: 'ok' }), 1, 'one CreateNetwork');
  t.equal(delta(before, after, 'tsnet_requests_total', { method: 'NetworkDriver.CreateEndpoint', outcome: 'ok' }), 2, 'two CreateEndpoint');
  t.equal(delta(before, after, 'tsnet_requests_total', { method: 'NetworkDriver.Join', outcome: 'ok' }), 2, 'two Join');
  t.equal(delta(before, after, 'tsnet_requests_total', { method: 'IpamDriver.RequestAddress', outcome: 'ok' }), 3, 'gateway and two container addresses');
  t.equal((after.count('tsnet_request_duration_seconds', { method: 'NetworkDriver.CreateEndpoint' }) ?? 0) - (before.count('tsnet_request_duration_seconds', { method: 'NetworkDriver.CreateEndpoint' }) ?? 0), 2, 'two CreateEndpoint latencies');
  t.equal(after.value('tsnet_networks', { mode: 'bridge' }), 1);
  t.equal(after.value('tsnet_endpoints', { mode: 'bridge' }), 2);
  const status = JSON.parse((await h.tsnetctl('status')).stdout) as { endpoints: Array<{ ports: string[] }> };
  const published = status.endpoints.reduce((a, e) => a + e.ports.length, 0);
  t.ok(published >= 1, 'the port is published');
  t.equal(after.value('tsnet_published_ports', { mode: 'bridge', proto: 'tcp' }), published, 'published ports as tsnetctl status lists them');
  t.equal(after.value('tsnet_ipam_allocated_addresses', { pool: '10.70.0.0/24' }), 3);
  t.equal(after.value('tsnet_ipam_utilisation_ratio', { pool: '10.70.0.0/24' }), 3 / 254);
  t.ok(delta(before, after, 'tsnet_store_writes_total', { kind: 'journal' }) + delta(before, after, 'tsnet_store_writes_total', { kind: 'full' }) > 0, 'the store wrote');
  t.ok((after.value('tsnet_kernel_commands_total') ?? 0) > (before.value('tsnet_kernel_commands_total') ?? 0), 'kernel commands counted');
  t.ok((after.value('process_resident_memory_bytes') ?? 0) > 10e6, 'process memory');
  t.ok((after.value('tsnet_reconcile_runs_total', { outcome: 'ok' }) ?? 0) >= 1, 'the start-up reconcile');

  // The TCP listener serves the same registry.
  const tcp = await h.exec('curl', ['-sf', 'http://127.0.0.1:9464/metrics']);
  const viaTcp = await Scrape.parse(tcp.stdout);
  t.equal(viaTcp.value('tsnet_endpoints', { mode: 'bridge' }), 2, 'TSNET_METRICS_ADDR serves /metrics over TCP');
  t.not((await h.exec('curl', ['-s', '-o', '/dev/null', '-w', '%{http_code}', '-X', 'POST', 'http://127.0.0.1:9464/Plugin.Activate'])).stdout, '200', 'and nothing of the plugin protocol');

  const events = await waitFor('the events', async () => {
    const evs = follow.events();
    return evs.filter((e) => e.type === 'endpoint.created').length >= 2 && evs.some((e) => e.type === 'ports.published') ? evs : undefined;
  });
  const created = events.find((e) => e.type === 'network.created');
  t.match(created, { network: netId, mode: 'bridge', subnets: ['10.70.0.0/24'] }, 'network.created with the network ID');
  const webIp = await containerIp(h, 'web', 'ops1');
  t.ok(events.some((e) => e.type === 'endpoint.created' && e.network === netId && e.address === `${webIp}/24`), 'endpoint.created with the container\'s address');
  t.match(events.find((e) => e.type === 'ports.published'), { network: netId, ports: [/:8080->80\/tcp$/] }, 'ports.published');
});

t.test('doctor names what was broken on purpose, and is content once repaired', async (t) => {
  const healthy = await h.tsnetctl('doctor');
  t.equal(healthy.exitCode, 0, `a healthy host: ${healthy.stdout}`);
  t.match(healthy.stdout, /no problems found/);
  const bridge = (JSON.parse((await h.tsnetctl('status')).stdout) as { networks: Array<{ bridge: string }> }).networks[0]!.bridge;
  const follow = followEvents(h);
  t.teardown(() => void follow.child.kill('SIGTERM'));
  await waitFor('the events client to subscribe', async () => (await scrape(h)).value('tsnet_event_subscribers') === 1);
  const before = await scrape(h);

  // 1. The bridge deleted behind tsnet's back.
  await h.exec('ip', ['link', 'del', 'dev', bridge]);
  t.notOk(await canPing(h, 'client', 'web', 1), 'the break is real: no packets');
  let d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 1, 'exit 1 on a problem');
  t.match(d.stdout, new RegExp(`FAIL links: network [0-9a-f]{12} \\(bridge ${bridge}\\): the bridge is missing.* -> tsnetctl reconcile`));
  t.equal((await h.tsnetctl('reconcile')).exitCode, 0);
  t.ok(await canPing(h, 'client', 'web'), 'reconcile repaired it');
  d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 0, `content again: ${d.stdout}`);
  const fixed = await waitFor('the reconcile.fixed event', async () => follow.events().find((e) => e.type === 'reconcile.fixed'));
  t.match(fixed, { bridgesCreated: [bridge] }, 'tsnetctl events tells what reconcile fixed');
  const afterFix = await scrape(h);
  t.equal(delta(before, afterFix, 'tsnet_reconcile_fixes_total', { kind: 'bridgesCreated' }), 1, 'and the metric counts it');

  // 2. tsnet's nftables table flushed.
  await h.exec('nft', ['flush', 'table', 'inet', 'tsnet']);
  d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 1);
  t.match(d.stdout, /FAIL nftables: the table's forward chain has 0 rule\(s\).*-> tsnetctl reconcile/);
  t.match(d.stdout, new RegExp(`FAIL nftables: network [0-9a-f]{12} \\(bridge ${bridge}\\): chain n-[0-9a-f]{12}-out empty`));
  await h.tsnetctl('reconcile');
  d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 0, `content again: ${d.stdout}`);

  // 3. Forwarding turned off, in the lab host's namespace only.
  await h.exec('sh', ['-c', 'echo 0 > /proc/sys/net/ipv4/ip_forward']);
  try {
    d = await h.tsnetctl('doctor');
    t.equal(d.exitCode, 1);
    t.match(d.stdout, /FAIL sysctl: net\.ipv4\.ip_forward is 0.*-> sysctl -w net\.ipv4\.ip_forward=1/);
  } finally {
    await h.exec('sh', ['-c', 'echo 1 > /proc/sys/net/ipv4/ip_forward']);
  }

  // 4. tsnet's FORWARD jump removed (dockerd's policy is DROP).
  await h.exec('iptables', ['-w', '-D', 'FORWARD', '-j', 'TSNET-FORWARD']);
  d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 1);
  t.match(d.stdout, /FAIL forward: FORWARD has no jump to TSNET-FORWARD, and its policy DROP/);
  await h.tsnetctl('reconcile');
  d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 0, `content again: ${d.stdout}`);
  await removeAll(h);
});

t.test('an overlay across two hosts: peers, FDB entries and etcd in metrics, events and doctor', async (t) => {
  const follow = followEvents(h);
  t.teardown(() => void follow.child.kill('SIGTERM'));
  await waitFor('the events client to subscribe', async () => (await scrape(h)).value('tsnet_event_subscribers') === 1);
  const net = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.240.0.0/24', 'ov'];
  await h.docker(net);
  await h2.docker(net);
  const netId = (await h.docker(['network', 'inspect', '-f', '{{.Id}}', 'ov'])).stdout.trim();
  await runContainer(h, 'o1', 'ov');
  await runContainer(h2, 'o2', 'ov');
  const ip2 = await containerIp(h2, 'o2', 'ov');
  t.ok(await waitFor('ping across hosts', () => canPing(h, 'o1', ip2, 1), 20_000, 200), 'packets cross the overlay');
  const m = await waitFor('one peer and its endpoint programmed', async () => {
    const s = await scrape(h);
    return s.value('tsnet_overlay_peers', { network: netId }) === 1 && (s.value('tsnet_overlay_fdb_entries', { network: netId }) ?? 0) >= 2 ? s : undefined;
  });
  t.equal(m.value('tsnet_overlay_fdb_entries', { network: netId }), 2, 'one remote endpoint and one flood entry');
  t.equal(m.value('tsnet_networks', { mode: 'overlay' }), 1);
  t.equal(m.value('tsnet_endpoints', { mode: 'overlay' }), 1, 'this host\'s endpoint only');
  t.equal(m.value('tsnet_pools', { mode: 'cluster' }), 1);
  t.equal(m.value('tsnet_etcd_up'), 1, 'etcd up');
  const joined = await waitFor('peer.joined', async () => follow.events().find((e) => e.type === 'peer.joined'));
  t.match(joined, { network: netId, vtep: h2.lanIp }, 'peer.joined names the other host\'s VTEP');

  let d = await h.tsnetctl('doctor');
  t.equal(d.exitCode, 0, `healthy: ${d.stdout}`);
  t.match(d.stdout, /ok {3}etcd: etcd reachable; this host's lease is alive/);
  t.match(d.stdout, /ok {3}vxlan: UDP 4789 in place; 1 peer\(s\) answer on the underlay/);
  t.match(d.stdout, /ok {3}mtu: 1 overlay\(s\) fit the underlay eth0/);

  // The underlay's MTU lowered under the overlay's.
  await h.exec('ip', ['link', 'set', 'dev', 'eth0', 'mtu', '1400']);
  try {
    d = await h.tsnetctl('doctor');
    t.equal(d.exitCode, 1);
    t.match(d.stdout, /FAIL mtu: network [0-9a-f]{12} \(bridge \S+\): MTU \d+ \+ 50 bytes of VXLAN headers exceeds the underlay eth0's 1400.*-> re-create the network with -o com\.docker\.network\.driver\.mtu=1350/);
  } finally {
    await h.exec('ip', ['link', 'set', 'dev', 'eth0', 'mtu', '1500']);
  }

  // etcd stopped.
  await lab.stopEtcd();
  try {
    d = await h.tsnetctl('doctor');
    t.equal(d.exitCode, 1);
    t.match(d.stdout, /FAIL etcd: etcd is unreachable/);
  } finally {
    await lab.startEtcd();
  }
  await waitFor('etcd back', async () => (await h.tsnetctl('doctor')).exitCode === 0, 30_000, 500);
  t.pass('doctor is content once etcd is back');

  // The other host leaves the overlay (its last container and the network go).
  await removeAll(h2);
  const left = await waitFor('peer.left', async () => follow.events().find((e) => e.type === 'peer.left'), 30_000);
  t.match(left, { network: netId, vtep: h2.lanIp }, 'peer.left when the other host leaves the overlay');
  t.equal((await scrape(h)).value('tsnet_overlay_peers', { network: netId }), 0);
  await removeAll(h);
});
