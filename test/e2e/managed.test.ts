// End to end: tsnet as a managed (v2) plugin on a lab dockerd. The bundle is
// built with no registry (plugin/build.ts --offline: a debootstrap base and
// the host's npm cache), created and enabled as tsnet:latest, and driven
// through docker plugin set / disable / enable, a dockerd restart, a
// re-create from the bundle (the upgrade path) and bad settings; a macvlan
// container given its child back inside its sandbox, which the plugin opens
// through the host's /run (dockerd's exec-root is /run/docker); then the
// same bundle on a second host, the two forming an overlay through etcd,
// whose namespace must be the host's: it stays through disable/enable and a
// dockerd restart while the containers keep reaching each other, and a host
// whose /run/netns is gone (a reboot) still gets the plugin started.
// The lab hosts have a /run of their own, empty as after a boot, and mount
// namespaces shared inside as on a systemd host (lab.ts), so what the
// plugin's container mounts with rshared propagation reaches them.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import t, { type Test } from 'tap';
import { buildPlugin, LOCAL_BASE, type BuildResult } from '../../plugin/build.js';
import { overlayNames } from '../../src/kernel/names.js';
import { canPing, containerIp, runContainer } from '../helpers/docker.js';
import { DOCKER, ETCD_URL, Lab, REPO, canConnect, cleanEnv, cliEnv, sh, waitFor, type LabHost } from '../helpers/lab.js';
import { Scrape } from '../helpers/prom.js';

const PLUGIN = 'tsnet:latest';
const lab = await Lab.start({ hosts: 2, etcd: true, tsnet: false, ownRun: true });
const [h, h2] = lab.hosts as [LabHost, LabHost];
const stateDir = path.join(h.dir, 'plugin-state');
const dockerdLog = path.join(h.dir, 'dockerd.log');

t.teardown(async () => {
  for (const host of [h, h2]) {
    await host.docker(['plugin', 'disable', '-f', PLUGIN], { check: false });
    await host.docker(['plugin', 'rm', '-f', PLUGIN], { check: false });
  }
  await h.docker(['rmi', LOCAL_BASE], { check: false });
  await h.docker(['image', 'prune', '-af'], { check: false });
  await lab.stop();
});

const pluginId = async (host: LabHost = h): Promise<string> => (await host.docker(['plugin', 'inspect', '-f', '{{.Id}}', PLUGIN])).stdout.trim();
const enabled = async (host: LabHost = h): Promise<boolean> => (await host.docker(['plugin', 'inspect', '-f', '{{.Enabled}}', PLUGIN], { check: false })).stdout.trim() === 'true';

/**
 * A named namespace as the lab host's own mount namespace sees it: the
 * inode of the namespace mounted on /run/netns/NAME there (a namespace made
 * anew has another), or why there is none.
 */
async function hostNetns(host: LabHost, name: string): Promise<string> {
  const list = (await host.exec('ip', ['netns', 'list'], { check: false })).stdout;
  if (!list.split('\n').some((l) => l.split(' ')[0] === name)) return `not listed (ip netns list: ${list.trim().replace(/\n/g, ', ') || 'nothing'})`;
  const fsType = (await host.exec('stat', ['-f', '-c', '%T', `/run/netns/${name}`], { check: false })).stdout.trim();
  if (fsType !== 'nsfs') return `listed, but no namespace mounted on it in the host's mount namespace (${fsType})`;
  return `nsfs inode ${(await host.exec('stat', ['-L', '-c', '%i', `/run/netns/${name}`])).stdout.trim()}`;
}

/** tsnetctl doctor against a host's managed plugin: its netns line. */
async function doctorNetns(host: LabHost): Promise<string> {
  const sock = `/run/docker/plugins/${await pluginId(host)}/tsnet.sock`;
  const r = await host.exec(process.execPath, [`${REPO}/dist/cli.js`, '--socket', sock, 'doctor'], { check: false });
  return r.stdout.split('\n').find((l) => / netns: /.test(l)) ?? `no netns line (exit ${r.exitCode}): ${r.stdout}${r.stderr}`;
}
/**
 * The plugin's socket as seen from outside the host's mount namespace
 * (dockerd puts it in /run/docker/plugins/<id>/), through a symlink: the
 * /proc/<pid>/root/… path is longer than a socket address may be.
 */
async function socketOf(id: string): Promise<string> {
  const link = path.join(lab.dir, `p-${id.slice(0, 12)}`);
  await fs.symlink(`/proc/${h.mntPid}/root/run/docker/plugins/${id}`, link).catch(() => undefined);
  return path.join(link, 'tsnet.sock');
}

interface PluginLine {
  dockerLevel: string;
  json: Record<string, unknown>;
}

/** The plugin's lines in dockerd's log from byte offset `from`: each is a JSON object. */
async function pluginLines(id: string, from = 0): Promise<PluginLine[]> {
  const text = (await fs.readFile(dockerdLog)).subarray(from).toString('utf8');
  const out: PluginLine[] = [];
  for (const line of text.split('\n')) {
    if (!line.endsWith(`plugin=${id}`)) continue;
    const m = /level=(\w+) msg="((?:[^"\\]|\\.)*)"/.exec(line);
    if (!m) continue;
    const msg = JSON.parse(`"${m[2]}"`) as string;
    if (!msg.startsWith('{')) continue; // dockerd's own notes about the plugin
    out.push({ dockerLevel: m[1]!, json: JSON.parse(msg) as Record<string, unknown> });
  }
  return out;
}

const logSize = async (): Promise<number> => (await fs.stat(dockerdLog)).size;

/** Everything in the state directory (state.json, and a journal if the store keeps one). */
async function stateText(): Promise<string> {
  const names = await fs.readdir(stateDir);
  return (await Promise.all(names.filter((n) => !n.endsWith('.lock')).map((n) => fs.readFile(path.join(stateDir, n), 'utf8')))).join('\n');
}

async function removeContainers(): Promise<void> {
  const ids = (await h.docker(['ps', '-aq'])).stdout.split('\n').filter(Boolean);
  if (ids.length > 0) await h.docker(['rm', '-f', ...ids]);
}

/** disable (-f: networks hold a reference), set, enable. */
async function reconfigure(settings: string[]): Promise<{ exitCode: number; stderr: string; ms: number }> {
  await h.docker(['plugin', 'disable', '-f', PLUGIN]);
  if (settings.length > 0) await h.docker(['plugin', 'set', PLUGIN, ...settings]);
  const t0 = performance.now();
  const r = await h.docker(['plugin', 'enable', PLUGIN], { check: false });
  return { exitCode: r.exitCode, stderr: r.stderr, ms: performance.now() - t0 };
}

let built: BuildResult;

t.test('the plugin bundle builds with no registry and is created as tsnet:latest', async (t) => {
  const t0 = performance.now();
  built = await buildPlugin({
    docker: DOCKER,
    host: `unix://${h.dockerSock}`,
    env: cleanEnv(cliEnv()),
    offline: true,
    outDir: path.join(lab.dir, 'plugin-bundle'),
    log: (line) => t.comment(line),
  });
  t.comment(`built in ${((performance.now() - t0) / 1000).toFixed(1)} s: ${JSON.stringify(built.seconds)}`);
  t.equal(built.plugin, PLUGIN);
  t.ok(existsSync(path.join(built.bundleDir, 'config.json')), 'config.json next to rootfs/');
  t.ok(existsSync(path.join(built.bundleDir, 'rootfs', 'run', 'docker', 'plugins')), 'rootfs has /run/docker/plugins');
  t.comment(`rootfs ${(built.rootfsBytes / 1e6).toFixed(1)} MB`);
  t.ok(built.rootfsBytes < 150e6, `rootfs under 150 MB (${(built.rootfsBytes / 1e6).toFixed(1)} MB)`);
  const ls = (await h.docker(['plugin', 'ls', '--format', '{{.Name}} {{.Enabled}}'])).stdout.trim();
  t.equal(ls, `${PLUGIN} false`, 'created, disabled');
  const cfg = JSON.parse((await h.docker(['plugin', 'inspect', '-f', '{{json .Config}}', PLUGIN])).stdout) as {
    Interface: { Types: string[]; Socket: string };
    Linux: { Capabilities: string[] };
    Network: { Type: string };
    PropagatedMount: string;
    Mounts: Array<{ Name: string; Source: string; Destination: string; Options: string[] }>;
  };
  t.same(cfg.Interface.Types, ['docker.networkdriver/1.0', 'docker.ipamdriver/1.0']);
  t.equal(cfg.Interface.Socket, 'tsnet.sock');
  t.equal(cfg.Network.Type, 'host');
  t.same(cfg.Linux.Capabilities, ['CAP_NET_ADMIN', 'CAP_SYS_ADMIN']);
  t.equal(cfg.PropagatedMount, '/host/propagated', 'a propagated mount: dockerd then gives the plugin rshared root propagation');
  t.same(cfg.Mounts.map((m) => `${m.Source} ${m.Destination}`), ['/var/lib/tsnet /var/lib/tsnet', '/var/run/docker.sock /run/docker.sock', '/run /host/run', '/proc/sys/net /host/proc/sys/net'], 'no mount source that a boot removes');
  t.equal((await fs.readlink(path.join(built.bundleDir, 'rootfs', 'run', 'netns'))), '/host/run/netns', "the rootfs's /run/netns leads into the host's /run");
});

t.test('enable; a network on tsnet:latest; two containers ping each other by name', async (t) => {
  await fs.mkdir(stateDir, { recursive: true });
  // The state directory must exist; the default /var/lib/tsnet would be this machine's.
  // And dockerd's socket (for names) is where this lab host's dockerd listens.
  await h.docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`, `docker.source=${h.dockerSock}`]);
  t.not((await h.exec('test', ['-e', '/run/netns'], { check: false })).exitCode, 0, "the host's /run is as after a boot: no /run/netns");
  const sock = await socketOf(await pluginId());
  const t0 = performance.now();
  let listening = 0;
  const poll = waitFor('plugin socket', async () => existsSync(sock) && (await canConnect(sock)), 15_000, 5).then(() => (listening = performance.now() - t0));
  await h.docker(['plugin', 'enable', PLUGIN]);
  const enableMs = performance.now() - t0;
  await poll;
  t.comment(`enable returned after ${enableMs.toFixed(0)} ms; socket listening after ${listening.toFixed(0)} ms`);
  t.ok(await enabled());
  t.equal((await h.exec('test', ['-d', '/run/netns'], { check: false })).exitCode, 0, "the plugin made the host's /run/netns");

  const refused = await h.docker(['network', 'create', '-d', 'tsnet', 'untagged'], { check: false });
  t.not(refused.exitCode, 0, '-d tsnet (no tag) does not name the managed plugin');

  await h.docker(['network', 'create', '-d', PLUGIN, '--ipam-driver', PLUGIN, 'mnet']);
  const ipam = (await h.docker(['network', 'inspect', '-f', '{{.Driver}} {{.IPAM.Driver}} {{(index .IPAM.Config 0).Subnet}}', 'mnet'])).stdout.trim();
  t.match(ipam, /^tsnet:latest tsnet:latest 10\.210\.\d+\.0\/24$/, 'driver, IPAM driver and a pool from TSNET_DEFAULT_POOLS');
  await runContainer(h, 'm1', 'mnet');
  await runContainer(h, 'm2', 'mnet');
  t.ok(await canPing(h, 'm1', 'm2'), 'm1 pings m2 by name');
  t.ok(await canPing(h, 'm2', 'm1'), 'm2 pings m1 by name');
  // The bundle's prom-client works: /metrics on the plugin's socket, with curl as an operator would.
  const scraped = await h.exec('curl', ['-sf', '--unix-socket', `/run/docker/plugins/${await pluginId()}/tsnet.sock`, 'http://localhost/metrics']);
  const m = await Scrape.parse(scraped.stdout);
  t.equal(m.value('tsnet_endpoints', { mode: 'bridge' }), 2, 'the managed plugin\'s /metrics counts the two endpoints');
  t.equal(m.value('tsnet_requests_total', { method: 'NetworkDriver.CreateNetwork', outcome: 'ok' }), 1);
  // tsnet wrote host sysctls through the sysctl mount (the plugin's /proc/sys is read-only).
  const bridge = (await h.exec('ip', ['-o', 'link', 'show', 'type', 'bridge'])).stdout.match(/tsbr-[0-9a-f]+/)?.[0];
  t.ok(bridge, 'a tsnet bridge in the host namespace');
  const ra = await h.exec('cat', [`/proc/sys/net/ipv6/conf/${bridge}/accept_ra`], { check: false });
  if (ra.exitCode === 0) t.equal(ra.stdout.trim(), '0', 'accept_ra=0 on the bridge, written by the plugin');

  const lines = await pluginLines(await pluginId());
  t.ok(lines.length > 0, "the plugin's output is in dockerd's log, tagged plugin=<id>");
  t.ok(lines.every((l) => typeof l.json.level === 'string' && l.json.name === 'tsnet'), 'every line a JSON object');
  t.ok(lines.some((l) => l.json.msg === 'tsnet listening'));
  t.notOk(lines.some((l) => l.json.level === 'debug'), 'no debug lines at the default level (info)');
  await removeContainers();
});

t.test("macvlan: the plugin gives a container its child back through the host's /run when the parent comes back", async (t) => {
  // The user's parent: a second leg of host 1 on the LAN, made and re-made by
  // hand, from the machine's mount namespace (the host's own /run names no LAN namespace).
  const plugParent = async (): Promise<void> => {
    await sh('ip', ['-n', h.netns, 'link', 'add', 'lanp', 'type', 'veth', 'peer', 'name', 'h1p', 'netns', lab.lanNs]);
    await sh('ip', ['-n', h.netns, 'link', 'set', 'lanp', 'up']);
    await sh('ip', ['-n', lab.lanNs, 'link', 'set', 'h1p', 'master', 'lan0', 'up']);
  };
  await plugParent();
  t.teardown(() => h.exec('ip', ['link', 'del', 'lanp'], { check: false }));
  await h.docker(['network', 'create', '-d', PLUGIN, '-o', 'tsnet.mode=macvlan', '-o', 'parent=lanp', '--subnet', '10.99.0.0/24', '--gateway', '10.99.0.1', '--ip-range', '10.99.0.224/28', 'mlan']);
  await runContainer(h, 'v1', 'mlan');
  const key = (await h.docker(['inspect', '-f', '{{.NetworkSettings.SandboxKey}}', 'v1'])).stdout.trim();
  t.match(key, /^\/var\/run\/docker\/netns\/|^\/run\/docker\/netns\//, `the sandbox key is under the host's /run, as with dockerd's default exec-root (${key})`);
  t.ok(await canPing(h, 'v1', h2.lanIp), 'v1 reaches host 2 on the LAN through the user parent');
  await h.exec('ip', ['link', 'del', 'lanp']);
  t.notOk(await canPing(h, 'v1', h2.lanIp, 1), 'the parent gone: v1 is off the LAN');
  await plugParent();
  const sock = `/run/docker/plugins/${await pluginId()}/tsnet.sock`;
  const r = await h.exec(process.execPath, [`${REPO}/dist/cli.js`, '--socket', sock, 'reconcile'], { check: false });
  t.equal(r.exitCode, 0, `tsnetctl reconcile against the plugin: ${r.stdout}${r.stderr}`);
  t.ok(await waitFor('v1 back on the LAN', () => canPing(h, 'v1', h2.lanIp, 1), 10_000, 300).catch(() => false), 'the plugin gave v1 its child back inside its namespace: on the LAN again');
  t.match((await h.docker(['exec', 'v1', 'ip', 'route'])).stdout, /default via 10\.99\.0\.1 dev eth0/, 'as eth0, with its default route');
  await removeContainers();
  await h.docker(['network', 'rm', 'mlan']);
});

t.test('docker plugin set TSNET_LOG_LEVEL=debug takes effect after disable/enable; the network and its state stay', async (t) => {
  const netId = (await h.docker(['network', 'inspect', '-f', '{{.Id}}', 'mnet'])).stdout.trim();
  t.ok(existsSync(path.join(stateDir, 'state.json')), 'the store is in the state mount');
  t.ok((await stateText()).includes(netId), 'and holds the network');
  const mark = await logSize();
  const r = await reconfigure(['TSNET_LOG_LEVEL=debug', 'TSNET_METRICS_ADDR=127.0.0.1:9464']);
  t.equal(r.exitCode, 0, r.stderr);
  // The plugin shares the host's network namespace: its metrics port is the host's.
  const viaTcp = await waitFor('metrics on TCP', async () => {
    const res = await h.exec('curl', ['-sf', 'http://127.0.0.1:9464/metrics'], { check: false });
    return res.exitCode === 0 ? Scrape.parse(res.stdout) : undefined;
  });
  t.equal(viaTcp.value('tsnet_networks', { mode: 'bridge' }), 1, 'docker plugin set TSNET_METRICS_ADDR serves /metrics on TCP');
  t.equal((await h.docker(['plugin', 'inspect', '-f', '{{.Settings.Env}}', PLUGIN])).stdout.includes('TSNET_LOG_LEVEL=debug'), true);
  await runContainer(h, 'd1', 'mnet');
  await runContainer(h, 'd2', 'mnet');
  t.ok(await canPing(h, 'd1', 'd2'), 'the network still carries traffic after disable/enable');
  const lines = await pluginLines(await pluginId(), mark);
  t.ok(lines.some((l) => l.json.level === 'debug'), 'debug lines now');
  const started = lines.find((l) => l.json.msg === 'tsnet listening');
  t.equal(started?.json.networks, 1, 'the restarted plugin loaded the network from the state mount');
  t.ok((await stateText()).includes(netId), 'still in the store');
  await removeContainers();
});

t.test('dockerd restart with the plugin enabled: the network keeps working', async (t) => {
  const subnet = (await h.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'mnet'])).stdout.trim();
  await h.stopDockerd();
  await h.startDockerd();
  await waitFor('plugin enabled after dockerd restart', enabled, 30_000, 200);
  t.equal((await h.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'mnet'])).stdout.trim(), subnet, 'same network, same pool');
  await runContainer(h, 'r1', 'mnet');
  await runContainer(h, 'r2', 'mnet');
  t.ok(await canPing(h, 'r1', 'r2'), 'containers started after the restart ping each other by name');
  await removeContainers();
});

t.test('upgrade path: disable, rm, create again, set state.source, enable: state kept', async (t) => {
  const subnet = (await h.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'mnet'])).stdout.trim();
  const oldId = await pluginId();
  await h.docker(['plugin', 'disable', '-f', PLUGIN]);
  await h.docker(['plugin', 'rm', '-f', PLUGIN]);
  await h.docker(['plugin', 'create', 'tsnet', built.bundleDir]);
  await h.docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`, `docker.source=${h.dockerSock}`]);
  await h.docker(['plugin', 'enable', PLUGIN]);
  t.not(await pluginId(), oldId, 'a new plugin');
  const lines = await pluginLines(await pluginId());
  t.equal(lines.find((l) => l.json.msg === 'tsnet listening')?.json.networks, 1, 'it found the network in the kept state directory');
  await runContainer(h, 'u1', 'mnet');
  await runContainer(h, 'u2', 'mnet');
  t.ok(await canPing(h, 'u1', 'u2'), 'the old network works with the new plugin');
  await h.docker(['network', 'create', '-d', PLUGIN, '--ipam-driver', PLUGIN, 'mnet2']);
  const subnet2 = (await h.docker(['network', 'inspect', '-f', '{{(index .IPAM.Config 0).Subnet}}', 'mnet2'])).stdout.trim();
  t.not(subnet2, subnet, 'the kept pool is not handed out again');
  await removeContainers();
  await h.docker(['network', 'rm', 'mnet2']);
});

t.test('bad settings: enable fails, one clear line in dockerd\'s log, and a good setting enables at once', async (t) => {
  const cases: Array<[string, string, RegExp]> = [
    ['TSNET_LOG_LEVEL', 'verbose', /^TSNET_LOG_LEVEL: "verbose" is not one of /],
    ['TSNET_DEFAULT_POOLS', '10.210.0.0/16', /^TSNET_DEFAULT_POOLS: "10\.210\.0\.0\/16" is not BASE\/LEN:SIZE/],
  ];
  for (const [name, value, message] of cases) {
    const mark = await logSize();
    const bad = await reconfigure([`${name}=${value}`]);
    t.not(bad.exitCode, 0, `${name}=${value}: docker plugin enable fails (${(bad.ms / 1000).toFixed(1)} s)`);
    t.notOk(await enabled(), 'and the plugin stays disabled');
    const lines = await pluginLines(await pluginId(), mark);
    const fatal = lines.filter((l) => l.json.level === 'fatal');
    t.equal(fatal.length, 1, 'exactly one fatal line');
    t.match(String(fatal[0]?.json.msg), message, 'naming the variable and the value');
    t.notOk(lines.some((l) => l.json.msg === 'tsnet listening'), 'never listening');
    await h.docker(['plugin', 'set', PLUGIN, `${name}=${name === 'TSNET_LOG_LEVEL' ? 'info' : '10.210.0.0/16:24,fd74:736e:6574::/48:64'}`]);
    const good = await h.docker(['plugin', 'enable', PLUGIN], { check: false });
    t.equal(good.exitCode, 0, `a good value enables at once: ${good.stderr.trim()}`);
    t.ok(await enabled());
  }
  await runContainer(h, 'b1', 'mnet');
  await runContainer(h, 'b2', 'mnet');
  t.ok(await canPing(h, 'b1', 'b2'), 'and the network works');
  await removeContainers();
});

t.test('the same bundle on a second host: an overlay through etcd between two managed plugins', async (t) => {
  // Host 2 never built anything: the bundle (config.json + rootfs) is all it gets.
  const stateDir2 = path.join(h2.dir, 'plugin-state');
  await fs.mkdir(stateDir2, { recursive: true });
  await h2.docker(['plugin', 'create', 'tsnet', built.bundleDir]);
  await h2.docker(['plugin', 'set', PLUGIN, `state.source=${stateDir2}`, `docker.source=${h2.dockerSock}`, `TSNET_ETCD_ENDPOINTS=${ETCD_URL}`]);
  await h2.docker(['plugin', 'enable', PLUGIN]);
  const r = await reconfigure([`TSNET_ETCD_ENDPOINTS=${ETCD_URL}`]);
  t.equal(r.exitCode, 0, r.stderr);
  // Registration follows the socket (etcd3 loads after it listens): wait for it, briefly.
  const listHosts = async (): Promise<string[]> => (await lab.etcdctl(['get', '--prefix', '/tsnet/v1/hosts/', '--keys-only'])).stdout.split('\n').filter(Boolean);
  const hosts = await waitFor('both hosts in etcd', async () => {
    const keys = await listHosts();
    return keys.length === 2 ? keys : undefined;
  }, 10_000, 200).catch(listHosts);
  t.equal(hosts.length, 2, `both plugins registered in etcd: ${hosts.join(' ')}`);
  for (const host of [h, h2]) {
    await host.docker(['network', 'create', '-d', PLUGIN, '--ipam-driver', PLUGIN, '-o', 'tsnet.mode=overlay', '--subnet', '10.201.0.0/16', 'movl']);
  }
  await runContainer(h, 'o1', 'movl', ['--network-alias', 'o1-alias']);
  // A MAC of its own: o2 is started again after the dockerd restart below, and
  // without one tsnet gives the new endpoint a new MAC for the same address,
  // which o1's ARP cache on the other host keeps the old one of for ~30 s.
  await runContainer(h2, 'o2', 'movl', ['--dns', '10.201.0.1', '--mac-address', '02:74:73:00:00:02']);
  const ip1 = await containerIp(h, 'o1', 'movl');
  const ip2 = await containerIp(h2, 'o2', 'movl');
  t.not(ip1, ip2, `addresses unique across hosts (${ip1}, ${ip2})`);
  await waitFor('host 2 reaches host 1 over the overlay', () => canPing(h2, 'o2', ip1, 1), 10_000, 200);
  t.ok(await canPing(h, 'o1', ip2), 'host 1 -> host 2');
  t.ok(await canPing(h2, 'o2', ip1), 'host 2 -> host 1');
  // Names through the docker mount: each plugin reads its own dockerd's Engine API.
  const resolved = await waitFor('o1-alias resolving on host 2', async () => {
    const r = await h2.docker(['exec', 'o2', 'nslookup', 'o1-alias'], { check: false });
    return r.exitCode === 0 && r.stdout.includes(ip1) ? r.stdout : undefined;
  }, 15_000, 250).catch(() => '');
  t.match(resolved, ip1, "host 1's container resolves by alias on host 2 (names from the Engine API through the docker mount, through etcd)");
  // The overlay switches in a namespace of the plugin's making: no VXLAN device in the host's,
  // the network's bridge there holds one port, a veth whose peer is in that namespace.
  const links = JSON.parse((await h2.exec('ip', ['-json', '-details', 'link', 'show'])).stdout) as Array<{ ifname: string; master?: string; link_netnsid?: number; linkinfo?: { info_kind?: string } }>;
  t.same(links.filter((l) => l.linkinfo?.info_kind === 'vxlan'), [], 'no VXLAN device in the host namespace');
  const gw = links.filter((l) => l.ifname.startsWith('tsgh-'));
  t.equal(gw.length, 1, 'one gateway port');
  t.ok(gw[0]?.master?.startsWith('tsbr-') && gw[0]?.link_netnsid !== undefined, "on the network's bridge, its peer in the overlay's namespace");
  // And that namespace is the host's: mounted on the host's /run/netns by the plugin's container.
  for (const host of [h, h2]) {
    const name = overlayNames((await host.docker(['network', 'inspect', '-f', '{{.Id}}', 'movl'])).stdout.trim()).netns;
    t.match(await hostNetns(host, name), /^nsfs inode \d+$/, `host ${host.index}: ${name} is mounted in the host's own /run/netns`);
    t.match(await doctorNetns(host), /^ok +netns: \/host\/run\/netns is on \/host\/run(\/netns)?, a shared mount/, `host ${host.index}: tsnetctl doctor agrees`);
  }
});

/** Each host's overlay namespace for movl, and the inode it has now. */
async function overlayNetns(): Promise<Array<{ host: LabHost; name: string; inode: string }>> {
  const out = [];
  for (const host of [h, h2]) {
    const name = overlayNames((await host.docker(['network', 'inspect', '-f', '{{.Id}}', 'movl'])).stdout.trim()).netns;
    out.push({ host, name, inode: await hostNetns(host, name) });
  }
  return out;
}

/** o1 (host 1) and o2 (host 2) reach each other over movl, waiting a little for the control plane. */
async function acrossHosts(t: Test, when: string): Promise<void> {
  const ip1 = await containerIp(h, 'o1', 'movl');
  const ip2 = await containerIp(h2, 'o2', 'movl');
  const there = await waitFor(`o1 -> o2 ${when}`, () => canPing(h, 'o1', ip2, 1), 10_000, 200).catch(() => false);
  t.ok(there, `${when}: o1 (host 1) -> o2 (host 2, ${ip2})`);
  t.ok(await canPing(h2, 'o2', ip1), `${when}: o2 (host 2) -> o1 (host 1, ${ip1})`);
}

t.test("disable and enable: the overlay's namespace stays the host's, and its containers keep their links", async (t) => {
  const before = await overlayNetns();
  for (const b of before) t.match(b.inode, /^nsfs inode/, `host ${b.host.index}: ${b.name} before`);
  for (const host of [h2, h]) {
    await host.docker(['plugin', 'disable', '-f', PLUGIN]);
    t.notOk(await enabled(host), `host ${host.index}: plugin disabled`);
    const mine = before.find((b) => b.host === host)!;
    t.equal(await hostNetns(host, mine.name), mine.inode, `host ${host.index}: ${mine.name} is still there, the same namespace, with the plugin disabled`);
    // Nothing of the data plane runs in the plugin: it forwards without it.
    await acrossHosts(t, `host ${host.index}'s plugin disabled`);
    await host.docker(['plugin', 'enable', PLUGIN]);
    t.equal(await hostNetns(host, mine.name), mine.inode, `host ${host.index}: the same namespace after enable`);
    await acrossHosts(t, `host ${host.index}'s plugin enabled again`);
  }
  t.same((await overlayNetns()).map((n) => n.inode), before.map((b) => b.inode), 'neither namespace was made anew');
});

t.test("dockerd restart with the plugin enabled: the overlay's namespace stays, containers come back on it", async (t) => {
  const before = (await overlayNetns()).find((n) => n.host === h2)!;
  await h2.stopDockerd();
  t.equal(await hostNetns(h2, before.name), before.inode, `${before.name} stays while dockerd and the plugin are down`);
  await h2.startDockerd();
  await waitFor('plugin enabled after dockerd restart', () => enabled(h2), 30_000, 200);
  t.equal(await hostNetns(h2, before.name), before.inode, 'the same namespace once dockerd started the plugin again');
  // dockerd stopped o2 on its way down; started again, it joins the same namespace.
  await h2.docker(['start', 'o2']);
  await acrossHosts(t, 'after the dockerd restart');
  t.equal(await hostNetns(h2, before.name), before.inode, 'still the same namespace');
});

t.test("network rm: no device of the overlay is left, and its namespace leaves the host's /run/netns", async (t) => {
  const names = await overlayNetns();
  await removeContainers();
  await h2.docker(['rm', '-f', 'o2']);
  for (const host of [h, h2]) await host.docker(['network', 'rm', 'movl']);
  const after = JSON.parse((await h2.exec('ip', ['-json', 'link', 'show'])).stdout) as Array<{ ifname: string }>;
  t.same(after.filter((l) => /^ts(gh|br|vx)-/.test(l.ifname)).map((l) => l.ifname), [], 'network rm leaves no device of the overlay');
  for (const n of names) t.match(await hostNetns(n.host, n.name), /^not listed/, `host ${n.host.index}: ${n.name} is gone from the host's /run/netns (the plugin's unmount reached it)`);
  t.equal((await lab.etcdctl(['get', '--prefix', '/tsnet/v1/overlays/10.201.0.0_16/endpoints/', '--keys-only'])).stdout.trim(), '', 'no endpoint left in etcd');
});

t.test('a host whose /run/netns is gone, as after a reboot: dockerd starts the enabled plugin, and overlays work', async (t) => {
  t.ok(await enabled(h2), 'the plugin is enabled on host 2');
  await h2.stopDockerd();
  const left = (await h2.exec('ip', ['netns', 'list'], { check: false })).stdout.trim();
  t.equal(left, '', 'no namespace is named on host 2, so nothing holds /run/netns');
  // ip netns made /run/netns a mount of its own (the plugin's, propagated): a boot leaves neither.
  if ((await h2.exec('mountpoint', ['-q', '/run/netns'], { check: false })).exitCode === 0) await h2.exec('umount', ['/run/netns']);
  await h2.exec('rmdir', ['/run/netns']);
  t.not((await h2.exec('test', ['-e', '/run/netns'], { check: false })).exitCode, 0, '/run/netns removed');
  await h2.startDockerd();
  const up = await waitFor('plugin enabled by dockerd at start-up', () => enabled(h2), 30_000, 200).catch(() => false);
  t.ok(up, 'dockerd started the plugin: no mount source it needs was missing');
  t.equal((await h2.exec('test', ['-d', '/run/netns'], { check: false })).exitCode, 0, 'the plugin made /run/netns again');
  for (const host of [h, h2]) {
    await host.docker(['network', 'create', '-d', PLUGIN, '--ipam-driver', PLUGIN, '-o', 'tsnet.mode=overlay', '--subnet', '10.202.0.0/16', 'movl2']);
  }
  await runContainer(h, 'p1', 'movl2');
  await runContainer(h2, 'p2', 'movl2');
  const ip1 = await containerIp(h, 'p1', 'movl2');
  const ip2 = await containerIp(h2, 'p2', 'movl2');
  t.ok(await waitFor('p2 -> p1', () => canPing(h2, 'p2', ip1, 1), 10_000, 200).catch(() => false), 'host 2 -> host 1 over the new overlay');
  t.ok(await canPing(h, 'p1', ip2), 'host 1 -> host 2');
  const name = overlayNames((await h2.docker(['network', 'inspect', '-f', '{{.Id}}', 'movl2'])).stdout.trim()).netns;
  t.match(await hostNetns(h2, name), /^nsfs inode \d+$/, `${name} is mounted in host 2's fresh /run/netns`);
  await removeContainers();
  await h2.docker(['rm', '-f', 'p2']);
  for (const host of [h, h2]) await host.docker(['network', 'rm', 'movl2']);
});
