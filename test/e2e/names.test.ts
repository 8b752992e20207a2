// Names across hosts through real dockerds (overlays, and a routed network): three lab hosts and etcd, every
// host's resolv.conf naming a resolver on the outside host (10.99.0.100,
// answering outside.lab), containers pointed at tsnet with --dns (or the
// daemon's --dns) so Docker's embedded DNS forwards what it does not know
// to tsnet on the overlay's gateway address.
import t from 'tap';
import { spawn, type ChildProcess } from 'node:child_process';
import { Lab, ETCD_URL, IMAGE, REPO, cleanEnv, waitFor, type LabHost } from '../helpers/lab.js';
import { canPing, containerIp } from '../helpers/docker.js';

const LEASE_TTL = 4;
const lab = await Lab.start({
  hosts: 3,
  etcd: true,
  resolvConf: 'nameserver 10.99.0.100\n',
  tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL, TSNET_ETCD_LEASE_TTL: String(LEASE_TTL) },
});
t.teardown(() => lab.stop());
const [h1, h2, h3] = lab.hosts as [LabHost, LabHost, LabHost];

// The outside world's resolver: outside.lab is 10.99.0.100, nothing else exists.
const resolver: ChildProcess = spawn(
  'ip',
  [
    'netns', 'exec', lab.outNs, process.execPath, '-e',
    `const p = require('dns-packet'), dgram = require('dgram');
     const s = dgram.createSocket('udp4');
     s.on('message', (m, r) => {
       let q; try { q = p.decode(m); } catch { return; }
       const name = (q.questions[0] || {}).name || '';
       const known = name.toLowerCase() === 'outside.lab';
       const answers = known && q.questions[0].type === 'A' ? [{ type: 'A', name, ttl: 30, data: '10.99.0.100' }] : [];
       s.send(p.encode({ type: 'response', id: q.id, flags: p.RECURSION_AVAILABLE | (known ? 0 : 3), questions: q.questions, answers }), r.port, r.address);
     });
     s.bind(53, '10.99.0.100');`,
  ],
  { stdio: 'ignore', env: cleanEnv(), cwd: REPO },
);
t.teardown(() => void resolver.kill());

const overlay = (subnet: string, name: string): string[] => ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', subnet, name];

/** busybox nslookup in a container, through its embedded DNS (or a server given): the addresses it printed, or undefined when it failed. */
async function lookup(h: LabHost, container: string, name: string, server?: string): Promise<string[] | undefined> {
  const r = await h.docker(['exec', container, 'nslookup', name, ...(server ? [server] : [])], { check: false });
  if (r.exitCode !== 0) return undefined;
  // Skip the "Server:/Address:" lines of the resolver itself.
  const answer = r.stdout.split(/\n\s*\n/).slice(1).join('\n');
  return [...answer.matchAll(/Address:\s*([0-9a-f.:]+)/g)].map((m) => m[1]!).filter((a) => !a.endsWith(':53'));
}

async function resolves(h: LabHost, container: string, name: string, ip: string, ms = 15_000): Promise<boolean> {
  return waitFor(`${name} resolving to ${ip} in ${container}`, async () => (await lookup(h, container, name))?.includes(ip), ms, 250);
}

async function gone(h: LabHost, container: string, name: string, ms = 15_000): Promise<boolean> {
  return waitFor(`${name} no longer resolving in ${container}`, async () => (await lookup(h, container, name)) === undefined, ms, 250);
}

t.before(async () => {
  for (const h of lab.hosts) await h.docker(overlay('10.200.0.0/16', 'appnet'));
  for (const h of [h1, h3]) await h.docker(overlay('10.201.0.0/16', 'backnet'));
  await h3.docker(['run', '-d', '--name', 'cli3', '--network', 'appnet', '--dns', '10.200.0.1', IMAGE, 'sleep', '3600']);
});

t.test('a container on host 1 resolves on host 3 by name and by alias, and is reached that way', async (t) => {
  await h1.docker(['run', '-d', '--name', 'web', '--network', 'appnet', '--network-alias', 'www', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']);
  const webIp = await containerIp(h1, 'web', 'appnet');
  t.ok(await resolves(h3, 'cli3', 'web', webIp), `web -> ${webIp} on host 3, through Docker's embedded DNS and tsnet`);
  t.same(await lookup(h3, 'cli3', 'www'), [webIp], 'the --network-alias too');
  t.same(await lookup(h3, 'cli3', 'web.appnet'), [webIp], 'NAME.NETWORK');
  t.same(await lookup(h3, 'cli3', 'web', '10.200.0.1'), [webIp], 'asking tsnet directly');
  t.ok(await canPing(h3, 'cli3', 'www'), 'ping by alias across hosts');
  const http = await h3.docker(['exec', 'cli3', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 web 80`], { check: false });
  t.match(http.stdout, /tsnet-lab-ok/, 'TCP by name across hosts');
  const names = await h3.tsnetctl('names');
  t.match(names.stdout, new RegExp(`appnet\\s+web,\\S*www\\S*\\s+${webIp.replace(/\./g, '\\.')}`), `tsnetctl names on host 3 lists it:\n${names.stdout}`);
  t.match(names.stdout, /dns: 10\.200\.0\.1:53 for network/);
  t.match((await h1.tsnetctl('names')).stdout, /dockerd: following .*docker\.sock \(dockerd \d+\.\d+/, 'host 1 follows its dockerd');
  const metrics = (await h3.exec('curl', ['-s', '--unix-socket', '/run/docker/plugins/tsnet.sock', 'http://localhost/metrics'])).stdout;
  t.match(metrics, /^tsnet_dockerd_up 1$/m, 'metrics: dockerd followed');
  t.ok(Number(/^tsnet_dns_queries_total\{result="answered"\} (\d+)/m.exec(metrics)?.[1] ?? 0) >= 4, 'metrics: DNS queries answered');
});

t.test('names are scoped per network', async (t) => {
  await h3.docker(['run', '-d', '--name', 'back3', '--network', 'backnet', '--dns', '10.201.0.1', IMAGE, 'sleep', '3600']);
  await h1.docker(['run', '-d', '--name', 'db', '--network', 'backnet', IMAGE, 'sleep', '3600']);
  const dbIp = await containerIp(h1, 'db', 'backnet');
  t.ok(await resolves(h3, 'back3', 'db', dbIp), 'a name on the second overlay resolves there');
  t.equal(await lookup(h3, 'back3', 'web'), undefined, 'a container on another overlay does not resolve web');
  t.equal(await lookup(h3, 'back3', 'web', '10.200.0.1'), undefined, 'not even asking appnet\'s address directly');
  t.equal(await lookup(h3, 'cli3', 'db'), undefined, 'and appnet does not see backnet\'s db');
});

t.test('a routed network: names across hosts as on an overlay, and they go with the container', async (t) => {
  for (const h of [h1, h2]) await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=routed', '--subnet', '10.205.0.0/16', 'rnet']);
  await h2.docker(['run', '-d', '--name', 'rcli', '--network', 'rnet', '--dns', '10.205.0.1', IMAGE, 'sleep', '3600']);
  await h1.docker(['run', '-d', '--name', 'rweb', '--network', 'rnet', '--network-alias', 'rwww', IMAGE, 'httpd', '-f', '-p', '80', '-h', '/www']);
  const ip = await containerIp(h1, 'rweb', 'rnet');
  t.ok(await resolves(h2, 'rcli', 'rweb', ip), `rweb -> ${ip} on host 2, through tsnet on the routed network's gateway`);
  t.same(await lookup(h2, 'rcli', 'rwww'), [ip], 'the --network-alias too');
  const http = await h2.docker(['exec', 'rcli', 'sh', '-c', `printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 rwww 80`], { check: false });
  t.match(http.stdout, /tsnet-lab-ok/, 'TCP by alias across hosts, routed');
  t.equal(await lookup(h2, 'rcli', 'db'), undefined, "scoped: backnet's db does not resolve on rnet");
  await h1.docker(['rm', '-f', 'rweb']);
  t.ok(await gone(h2, 'rcli', 'rweb'), 'rweb no longer resolves on host 2');
  await h2.docker(['rm', '-f', 'rcli']);
  for (const h of [h1, h2]) await h.docker(['network', 'rm', 'rnet']);
  const keys = (await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.205.0.0_16', '--keys-only'])).stdout.trim();
  t.equal(keys, '', 'nothing of the routed network left in etcd');
});

t.test("external names still resolve, through tsnet's forwarding to the host's resolvers", async (t) => {
  t.same(await lookup(h3, 'cli3', 'outside.lab'), ['10.99.0.100'], 'outside.lab from the outside host\'s resolver (the hosts\' resolv.conf)');
  t.equal(await lookup(h3, 'cli3', 'nowhere.lab'), undefined, 'an unknown name fails (NXDOMAIN relayed)');
  t.ok(await canPing(h3, 'cli3', 'outside.lab'), 'and is reachable by that name');
});

t.test('names go when the container goes', async (t) => {
  const webIp = await containerIp(h1, 'web', 'appnet');
  t.ok(await resolves(h3, 'cli3', 'web', webIp));
  await h1.docker(['rm', '-f', 'web']);
  t.ok(await gone(h3, 'cli3', 'web'), 'web no longer resolves on host 3');
  t.equal(await lookup(h3, 'cli3', 'www'), undefined, 'nor www');
  const keys = (await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.200.0.0_16/endpoints/', '--print-value-only'])).stdout;
  t.notMatch(keys, /"web"/, 'nothing of it left in etcd');
});

t.test('etcd down: names learned keep resolving; names made meanwhile arrive when it returns', async (t) => {
  await h2.docker(['run', '-d', '--name', 'api', '--network', 'appnet', '--network-alias', 'api-alias', IMAGE, 'sleep', '3600']);
  const apiIp = await containerIp(h2, 'api', 'appnet');
  t.ok(await resolves(h3, 'cli3', 'api', apiIp));
  await lab.stopEtcd();
  t.same(await lookup(h3, 'cli3', 'api-alias'), [apiIp], 'still resolves with etcd down');
  t.ok(await canPing(h3, 'cli3', 'api'), 'and traffic by name still flows');
  await h2.docker(['run', '-d', '--name', 'late', '--network', 'appnet', IMAGE, 'sleep', '3600']);
  const lateIp = await containerIp(h2, 'late', 'appnet');
  await h2.docker(['run', '-d', '--name', 'cli2', '--network', 'appnet', '--dns', '10.200.0.1', IMAGE, 'sleep', '3600']);
  t.same(await lookup(h2, 'cli2', 'late', '10.200.0.1'), [lateIp], 'a name made during the outage answers on its own host at once (from the Engine API, no etcd)');
  await lab.startEtcd();
  t.ok(await resolves(h3, 'cli3', 'late', lateIp, 30_000), 'and on host 3 once etcd is back');
});

t.test("a host whose plugin stops: its names go with its lease, and come back with it", async (t) => {
  const apiIp = await containerIp(h2, 'api', 'appnet');
  t.ok(await resolves(h3, 'cli3', 'api', apiIp));
  await h2.stopTsnet('SIGKILL');
  t.ok(await gone(h3, 'cli3', 'api', (LEASE_TTL + 15) * 1000), 'gone on host 3 after the lease expired');
  await h2.startTsnet();
  t.ok(await resolves(h3, 'cli3', 'api', apiIp), 'back once host 2\'s tsnet re-published (names kept in its store)');
});

t.test('dockerd restarted with restart-policy containers: no deadlock, names come back; the daemon-wide --dns', async (t) => {
  await h1.docker(['run', '-d', '--name', 'rp', '--restart', 'always', '--network', 'appnet', '--network-alias', 'rp-alias', IMAGE, 'sleep', '3600']);
  t.ok(await resolves(h3, 'cli3', 'rp-alias', await containerIp(h1, 'rp', 'appnet')));
  await h1.stopDockerd();
  // Every container on host 1 asks tsnet for names it does not know itself,
  // then the host's usual resolver (for containers on no tsnet network).
  const started = Date.now();
  await h1.startDockerd(['--dns', '10.200.0.1', '--dns', '10.99.0.100']);
  t.ok(Date.now() - started < 60_000, `dockerd came back in ${Date.now() - started} ms with a restart-policy container on tsnet`);
  const running = await waitFor('rp restarted', async () => (await h1.docker(['inspect', '-f', '{{.State.Running}}', 'rp'])).stdout.trim() === 'true', 30_000, 250);
  t.ok(running, 'the restart-policy container is running again');
  const rpIp = await containerIp(h1, 'rp', 'appnet');
  t.ok(await resolves(h3, 'cli3', 'rp-alias', rpIp, 30_000), `its names resolve on host 3 again (${rpIp})`);
  const cli3Ip = await containerIp(h3, 'cli3', 'appnet');
  const viaDaemon = await h1.docker(['run', '--rm', '--network', 'appnet', IMAGE, 'nslookup', 'cli3'], { check: false });
  t.match(viaDaemon.stdout, cli3Ip, 'a container started with no --dns resolves host 3\'s cli3 through the daemon\'s --dns');
  const outside = await h1.docker(['run', '--rm', '--network', 'appnet', IMAGE, 'nslookup', 'outside.lab'], { check: false });
  t.match(outside.stdout, '10.99.0.100', 'and loses nothing: external names still resolve');
  await h1.docker(['network', 'create', 'plainnet']);
  const plain = await h1.docker(['run', '--rm', '--network', 'plainnet', IMAGE, 'nslookup', 'outside.lab'], { check: false });
  t.match(plain.stdout, '10.99.0.100', "a container on Docker's own bridge network: tsnet refuses it, the next server answers");
  await h1.docker(['network', 'rm', 'plainnet']);
});
