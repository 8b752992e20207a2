// npm run demo: a guided tour for a newcomer. Brings up a lab (a dockerd in
// network namespaces of its own, nothing touches this machine's network),
// creates a tsnet network, starts two containers, shows them pinging each
// other by name, tears everything down, and says what it did along the way.
import { Lab, ETCD_URL } from '../test/helpers/lab.js';
import { containerIp, runContainer } from '../test/helpers/docker.js';

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}
function show(cmd: string, out: string): void {
  process.stdout.write(`$ ${cmd}\n${out.trimEnd()}\n`);
}

say('Starting a lab: two simulated hosts (private network namespaces, each with its own dockerd and tsnet) on a LAN, and etcd');
const lab = await Lab.start({ hosts: 2, etcd: true, tsnetEnv: { TSNET_ETCD_ENDPOINTS: ETCD_URL } });
const h = lab.host;
const h2 = lab.hosts[1]!;
try {
  say('Creating a tsnet network (bridge mode, addresses from tsnet\'s own IPAM)');
  const create = await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'demo']);
  show('docker network create -d tsnet --ipam-driver tsnet demo', create.stdout);
  const ipam = await h.docker(['network', 'inspect', '-f', 'subnet {{(index .IPAM.Config 0).Subnet}}, gateway {{(index .IPAM.Config 0).Gateway}}', 'demo']);
  show('docker network inspect demo', ipam.stdout);

  say('Starting two containers on it');
  await runContainer(h, 'alice', 'demo');
  await runContainer(h, 'bob', 'demo');
  show('docker run -d --name alice --network demo busybox sleep 3600', `alice is ${await containerIp(h, 'alice', 'demo')}`);
  show('docker run -d --name bob --network demo busybox sleep 3600', `bob is ${await containerIp(h, 'bob', 'demo')}`);

  say('alice pings bob by name (Docker\'s embedded DNS resolves it, tsnet\'s bridge carries it)');
  const ping = await h.docker(['exec', 'alice', 'ping', '-c', '3', 'bob']);
  show('docker exec alice ping -c 3 bob', ping.stdout);

  say('What tsnet programmed in that namespace');
  const links = await h.exec('ip', ['-br', 'link', 'show', 'type', 'bridge']);
  show('ip -br link show type bridge', links.stdout);
  const ruleset = (await h.exec('nft', ['list', 'table', 'inet', 'tsnet'])).stdout;
  // The network's own chains: isolation, egress and NAT, tagged with its ID.
  const chains = ruleset.split('\n\n').filter((b) => /chain n-[0-9a-f]{12}-/.test(b)).join('\n\n');
  show('nft list table inet tsnet   # (the network\'s chains)', chains);

  say('Removing them: tsnet takes its bridge, rules and table away with the last network');
  await h.docker(['rm', '-f', 'alice', 'bob']);
  await h.docker(['network', 'rm', 'demo']);
  const left = await h.exec('nft', ['list', 'tables']);
  show('nft list tables', left.stdout || '(none)');

  say('An overlay across two hosts: the same network created on each, coordinated through etcd, carried by VXLAN');
  const ovl = ['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '-o', 'tsnet.mode=overlay', '--subnet', '10.200.0.0/16', 'appnet'];
  show(`host1$ docker ${ovl.join(' ')}`, (await h.docker(ovl)).stdout);
  show(`host2$ docker ${ovl.join(' ')}`, (await h2.docker(ovl)).stdout);
  await runContainer(h, 'carol', 'appnet');
  await runContainer(h2, 'dave', 'appnet');
  const daveIp = await containerIp(h2, 'dave', 'appnet');
  show('host1$ docker run -d --name carol --network appnet busybox sleep 3600', `carol is ${await containerIp(h, 'carol', 'appnet')} on host 1`);
  show('host2$ docker run -d --name dave --network appnet busybox sleep 3600', `dave is ${daveIp} on host 2`);
  await new Promise((r) => setTimeout(r, 1000));
  say('carol (host 1) pings dave (host 2) across the LAN, inside VXLAN');
  show(`host1$ docker exec carol ping -c 3 ${daveIp}`, (await h.docker(['exec', 'carol', 'ping', '-c', '3', daveIp])).stdout);
  const vx = JSON.parse((await h.exec('ip', ['-json', 'link', 'show', 'type', 'vxlan'])).stdout)[0].ifname as string;
  show(`host1$ bridge fdb show dev ${vx}   # where host 1 sends dave's MAC, and where broadcast goes`, (await h.exec('bridge', ['fdb', 'show', 'dev', vx])).stdout);

  say('Tearing down: containers, networks, dockerds, etcd, namespaces');
  await h.docker(['rm', '-f', 'carol']);
  await h2.docker(['rm', '-f', 'dave']);
} finally {
  await lab.stop();
}
say('Done: the lab is gone and this machine\'s own network was never touched.');
