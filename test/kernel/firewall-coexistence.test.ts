// tsnet beside the firewalls of the dockerds users run, which the lab has no
// binary for: Docker 28's iptables rules (FORWARD → DOCKER-USER,
// DOCKER-FORWARD; raw-table drops for container addresses) and Docker 29's
// nftables backend (tables ip/ip6 docker-bridges, no DOCKER-USER, forwarding
// left to the operator, a FORWARD DROP left over from iptables), written
// into a throwaway namespace as modern-dockerd.md §4 describes them. Each
// case checks tsnet's traffic flows and its isolation holds, before and
// after that dockerd (or firewalld) reloads its rules.
import t, { type Test } from 'tap';
import { promises as fs } from 'node:fs';
import { Netns, dockerId, ping, plugInto, startPlugin, tmpDir, type PluginProcess } from '../helpers/netns.js';
import { sh, waitFor } from '../helpers/lab.js';

interface Env {
  host: Netns;
  out: Netns;
  /** a container on Docker's own docker0 */
  d: Netns;
  /** tsnet network A: a1, a2; network B: b1 */
  a1: Netns;
  a2: Netns;
  b1: Netns;
  plugin: PluginProcess;
}

// Docker 28.2's filter and raw rules for docker0 with one container, 172.17.0.2
// (iptabler/*.go): DOCKER-FORWARD (28.0.1+), unpublished ports blocked,
// direct routing to container addresses dropped in raw PREROUTING.
const DOCKER28 = `*raw
:PREROUTING ACCEPT [0:0]
-A PREROUTING -d 172.17.0.2/32 ! -i docker0 -j DROP
COMMIT
*filter
:FORWARD DROP [0:0]
:DOCKER - [0:0]
:DOCKER-BRIDGE - [0:0]
:DOCKER-CT - [0:0]
:DOCKER-FORWARD - [0:0]
:DOCKER-ISOLATION-STAGE-1 - [0:0]
:DOCKER-ISOLATION-STAGE-2 - [0:0]
:DOCKER-USER - [0:0]
-A DOCKER ! -i docker0 -o docker0 -j DROP
-A DOCKER-BRIDGE -o docker0 -j DOCKER
-A DOCKER-CT -o docker0 -m conntrack --ctstate RELATED,ESTABLISHED -j ACCEPT
-A DOCKER-FORWARD -j DOCKER-CT
-A DOCKER-FORWARD -j DOCKER-ISOLATION-STAGE-1
-A DOCKER-FORWARD -j DOCKER-BRIDGE
-A DOCKER-FORWARD -i docker0 -j ACCEPT
-A DOCKER-ISOLATION-STAGE-1 -i docker0 ! -o docker0 -j DOCKER-ISOLATION-STAGE-2
-A DOCKER-ISOLATION-STAGE-2 -o docker0 -j DROP
COMMIT
*nat
:DOCKER - [0:0]
-A POSTROUTING -s 172.17.0.0/16 ! -o docker0 -j MASQUERADE
-A DOCKER -i docker0 -j RETURN
COMMIT
`;

/** dockerd 28 at start: its chains rewritten, then its two jumps put back at the top of FORWARD. */
async function docker28(host: Netns, opts: { restart?: boolean } = {}): Promise<void> {
  await host.exec('iptables-restore', ['-w', '--noflush'], { input: DOCKER28 });
  for (const chain of ['DOCKER-FORWARD', 'DOCKER-USER']) {
    if (opts.restart) await host.exec('iptables', ['-w', '-D', 'FORWARD', '-j', chain], { check: false });
    await host.exec('iptables', ['-w', '-I', 'FORWARD', '1', '-j', chain]);
  }
  const nat = (await host.exec('iptables', ['-w', '-t', 'nat', '-S'])).stdout;
  if (!nat.includes('-A PREROUTING -m addrtype --dst-type LOCAL -j DOCKER')) {
    await host.exec('iptables', ['-w', '-t', 'nat', '-A', 'PREROUTING', '-m', 'addrtype', '--dst-type', 'LOCAL', '-j', 'DOCKER']);
  }
}

// Docker 29's nftables backend for docker0 (docs: firewall-nftables.md;
// libnetwork/internal/nftables): its own table, verdict maps by bridge,
// the bridge's forward-in chain ending in drop, no DOCKER-USER.
const DOCKER29 = `table ip docker-bridges {
  map filter-forward-in-jumps { type ifname : verdict; elements = { "docker0" : jump filter-forward-in__docker0 } }
  map filter-forward-out-jumps { type ifname : verdict; elements = { "docker0" : jump filter-forward-out__docker0 } }
  map nat-postrouting-in-jumps { type ifname : verdict; elements = { "docker0" : jump nat-postrouting-in__docker0 } }
  chain filter-FORWARD {
    type filter hook forward priority filter; policy accept;
    oifname vmap @filter-forward-in-jumps
    iifname vmap @filter-forward-out-jumps
  }
  chain filter-forward-in__docker0 {
    ct state established,related counter accept
    iifname "docker0" counter accept
    counter drop
  }
  chain filter-forward-out__docker0 {
    ct state established,related counter accept
    oifname "docker0" counter accept
    counter accept
  }
  chain nat-POSTROUTING {
    type nat hook postrouting priority srcnat; policy accept;
    iifname vmap @nat-postrouting-in-jumps
  }
  chain nat-postrouting-in__docker0 {
    oifname != "docker0" ip saddr 172.17.0.0/16 counter masquerade
  }
  chain raw-PREROUTING {
    type filter hook prerouting priority raw; policy accept;
    ip daddr 172.17.0.2 iifname != "docker0" counter drop
  }
}
`;

/** dockerd 29 with --firewall-backend=nftables (re)starting: its table deleted and written again. */
async function docker29(host: Netns): Promise<void> {
  const tables = (await host.exec('nft', ['list', 'tables'])).stdout;
  const script = (tables.includes('table ip docker-bridges') ? 'delete table ip docker-bridges\n' : '') + DOCKER29;
  await host.exec('nft', ['-f', '-'], { input: script });
}

async function setup(t: Test, env: Record<string, string> = {}): Promise<Env> {
  const made: Netns[] = [];
  const ns = async (tag: string): Promise<Netns> => {
    const n = await Netns.create(tag);
    made.push(n);
    return n;
  };
  const dir = await tmpDir('fwcoex');
  let plugin: PluginProcess | undefined;
  t.teardown(async () => {
    await plugin?.stop().catch(() => undefined);
    for (const n of made.reverse()) await n.delete();
    await fs.rm(dir, { recursive: true, force: true });
  });
  const host = await ns('host');
  const out = await ns('out');
  await sh('ip', ['-n', host.name, 'link', 'add', 'uplink0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', out.name]);
  await sh('ip', ['-n', host.name, 'addr', 'add', '10.98.0.2/24', 'dev', 'uplink0']);
  await sh('ip', ['-n', host.name, 'link', 'set', 'uplink0', 'up']);
  await sh('ip', ['-n', host.name, 'route', 'add', 'default', 'via', '10.98.0.1']);
  await sh('ip', ['-n', out.name, 'addr', 'add', '10.98.0.1/24', 'dev', 'eth0']);
  await sh('ip', ['-n', out.name, 'link', 'set', 'eth0', 'up']);
  // The outside host knows the way to the containers: only the firewall stands between.
  await sh('ip', ['-n', out.name, 'route', 'add', '10.0.0.0/8', 'via', '10.98.0.2']);
  await sh('ip', ['-n', out.name, 'route', 'add', '172.17.0.0/16', 'via', '10.98.0.2']);
  await sh('ip', ['-n', host.name, 'link', 'add', 'docker0', 'type', 'bridge']);
  await sh('ip', ['-n', host.name, 'addr', 'add', '172.17.0.1/16', 'dev', 'docker0']);
  await sh('ip', ['-n', host.name, 'link', 'set', 'docker0', 'up']);
  const d = await ns('d');
  await sh('ip', ['-n', host.name, 'link', 'add', 'vethd', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', d.name]);
  await sh('ip', ['-n', host.name, 'link', 'set', 'vethd', 'master', 'docker0', 'up']);
  await sh('ip', ['-n', d.name, 'addr', 'add', '172.17.0.2/16', 'dev', 'eth0']);
  await sh('ip', ['-n', d.name, 'link', 'set', 'eth0', 'up']);
  await sh('ip', ['-n', d.name, 'route', 'add', 'default', 'via', '172.17.0.1']);
  plugin = await startPlugin(host, { dir, env });
  const e = { host, out, d, plugin, a1: await ns('a1'), a2: await ns('a2'), b1: await ns('b1') };
  return e;
}

async function network(e: Env, subnet: string): Promise<string> {
  const id = dockerId();
  const gw = subnet.replace('0/24', '1/24');
  const r = await e.plugin.call('NetworkDriver.CreateNetwork', {
    NetworkID: id,
    Options: { 'com.docker.network.generic': {}, 'com.docker.network.enable_ipv6': false },
    IPv4Data: [{ AddressSpace: 'LocalDefault', Pool: subnet, Gateway: gw }],
    IPv6Data: [],
  });
  if (r.status !== 200) throw new Error(`CreateNetwork: ${JSON.stringify(r.body)}`);
  return id;
}

async function attach(e: Env, net: string, ns: Netns, address: string): Promise<void> {
  const ep = dockerId();
  const c = await e.plugin.call('NetworkDriver.CreateEndpoint', { NetworkID: net, EndpointID: ep, Interface: { Address: address, AddressIPv6: '', MacAddress: '' }, Options: {} });
  if (c.status !== 200) throw new Error(`CreateEndpoint: ${JSON.stringify(c.body)}`);
  const j = await e.plugin.call('NetworkDriver.Join', { NetworkID: net, EndpointID: ep, SandboxKey: `/run/netns/${ns.name}`, Options: {} });
  if (j.status !== 200) throw new Error(`Join: ${JSON.stringify(j.body)}`);
  await plugInto(e.host, ns, (j.body.InterfaceName as { SrcName: string }).SrcName, { address, gateway: j.body.Gateway as string });
}

/** Two tsnet networks: A (a1, a2) 10.51.0.0/24 and B (b1) 10.52.0.0/24. */
async function networks(e: Env): Promise<void> {
  const a = await network(e, '10.51.0.0/24');
  const b = await network(e, '10.52.0.0/24');
  await attach(e, a, e.a1, '10.51.0.2/24');
  await attach(e, a, e.a2, '10.51.0.3/24');
  await attach(e, b, e.b1, '10.52.0.2/24');
}

/** What must hold under any of these firewalls. */
async function holds(t: Test, e: Env, when: string): Promise<void> {
  t.ok(await ping(e.a1, '10.51.0.3'), `${when}: containers of one network reach each other`);
  t.ok(await ping(e.a1, '10.98.0.1'), `${when}: egress through the uplink`);
  t.ok(await ping(e.b1, '10.98.0.1'), `${when}: egress from the other network`);
  t.notOk(await ping(e.a1, '10.52.0.2'), `${when}: network A cannot reach network B`);
  t.notOk(await ping(e.b1, '10.51.0.2'), `${when}: network B cannot reach network A`);
  t.notOk(await ping(e.a1, '172.17.0.2'), `${when}: tsnet cannot reach docker0's container`);
  t.notOk(await ping(e.d, '10.51.0.2'), `${when}: docker0's container cannot reach tsnet`);
  t.notOk(await ping(e.out, '10.51.0.2'), `${when}: the outside cannot reach a container address`);
  t.notOk(await ping(e.out, '172.17.0.2'), `${when}: nor Docker's (its raw-table drop)`);
}

t.test("Docker 28's iptables: DOCKER-FORWARD, raw-table drops; dockerd started before and after tsnet, and restarted", async (t) => {
  const e = await setup(t);
  await e.host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await docker28(e.host);
  await networks(e);
  const forward = (await e.host.exec('iptables', ['-w', '-S', 'FORWARD'])).stdout;
  t.match(forward, /-A FORWARD -j DOCKER-USER\n-A FORWARD -j TSNET-FORWARD\n-A FORWARD -j DOCKER-FORWARD/, 'tsnet jumps right after DOCKER-USER, before DOCKER-FORWARD');
  await holds(t, e, 'dockerd first');
  // An operator's DOCKER-USER rule still applies to tsnet's traffic.
  await e.host.exec('iptables', ['-w', '-I', 'DOCKER-USER', '-s', '10.51.0.2', '-d', '10.98.0.1', '-j', 'DROP']);
  t.notOk(await ping(e.a1, '10.98.0.1'), 'a DOCKER-USER drop stops a tsnet container');
  t.ok(await ping(e.a2, '10.98.0.1'), 'and only the one it names');
  await e.host.exec('iptables', ['-w', '-D', 'DOCKER-USER', '-s', '10.51.0.2', '-d', '10.98.0.1', '-j', 'DROP']);
  // dockerd restarts: its jumps go back to the top of FORWARD, above tsnet's.
  await docker28(e.host, { restart: true });
  t.match((await e.host.exec('iptables', ['-w', '-S', 'FORWARD'])).stdout, /-A FORWARD -j DOCKER-USER\n-A FORWARD -j DOCKER-FORWARD\n-A FORWARD -j TSNET-FORWARD/, "after the restart dockerd's jumps come first");
  await holds(t, e, 'after a dockerd restart');
});

t.test("Docker 28's iptables added after tsnet's networks exist", async (t) => {
  const e = await setup(t);
  await networks(e);
  await docker28(e.host);
  await holds(t, e, 'dockerd after tsnet');
});

t.test("Docker 29's nftables backend: no DOCKER-USER, ip_forward preset, a FORWARD DROP left from iptables", async (t) => {
  const e = await setup(t);
  // dockerd 29 with nftables refuses to enable forwarding itself: the operator did.
  await e.host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  // What an earlier iptables dockerd left: FORWARD's policy DROP, and its jumps.
  await e.host.exec('iptables', ['-w', '-P', 'FORWARD', 'DROP']);
  await docker29(e.host);
  await networks(e);
  t.notMatch((await e.host.exec('iptables', ['-w', '-S'])).stdout, /DOCKER-USER/, 'no DOCKER-USER chain here');
  t.match((await e.host.exec('iptables', ['-w', '-S', 'FORWARD'])).stdout, /-A FORWARD -j TSNET-FORWARD/, 'tsnet still accepts its traffic past the leftover DROP');
  await holds(t, e, 'nftables backend');
  await docker29(e.host);
  await holds(t, e, 'after dockerd rewrote its docker-bridges table');
});

t.test('a firewalld-style reload flushes every iptables chain: the next reconcile restores tsnet\'s glue', async (t) => {
  const e = await setup(t, { TSNET_RECONCILE_INTERVAL: '1' });
  await e.host.exec('sysctl', ['-qw', 'net.ipv4.ip_forward=1']);
  await docker28(e.host);
  await networks(e);
  await holds(t, e, 'before the reload');
  // firewalld (iptables backend) flushes and deletes every chain it did not
  // make; dockerd answers its Reloaded signal by writing its own again.
  await e.host.exec('iptables-restore', ['-w'], { input: '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' });
  await docker28(e.host);
  await waitFor('TSNET-FORWARD back', async () => /-A FORWARD -j TSNET-FORWARD/.test((await e.host.exec('iptables', ['-w', '-S', 'FORWARD'])).stdout), 10_000, 200);
  await holds(t, e, 'after the reload and a reconcile (TSNET_RECONCILE_INTERVAL=1)');
  // Without the interval, SIGHUP does the same at once.
  await e.host.exec('iptables-restore', ['-w'], { input: '*filter\n:INPUT ACCEPT [0:0]\n:FORWARD DROP [0:0]\n:OUTPUT ACCEPT [0:0]\nCOMMIT\n' });
  await docker28(e.host);
  e.plugin.child.kill('SIGHUP');
  await waitFor('TSNET-FORWARD back after SIGHUP', async () => /-A FORWARD -j TSNET-FORWARD/.test((await e.host.exec('iptables', ['-w', '-S', 'FORWARD'])).stdout), 10_000, 100);
  await holds(t, e, 'after SIGHUP');
});
