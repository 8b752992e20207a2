// npm run demo: a guided tour for a newcomer. Brings up a lab (a dockerd in
// network namespaces of its own, nothing touches this machine's network),
// creates a tsnet network, starts two containers, shows them pinging each
// other by name, tears everything down, and says what it did along the way.
import { Lab } from '../test/helpers/lab.js';
import { containerIp, runContainer } from '../test/helpers/docker.js';

function say(text: string): void {
  process.stdout.write(`\n\x1b[1m== ${text}\x1b[0m\n`);
}
function show(cmd: string, out: string): void {
  process.stdout.write(`$ ${cmd}\n${out.trimEnd()}\n`);
}

say('Starting a lab: a private network namespace with its own dockerd, and tsnet serving /run/docker/plugins/tsnet.sock inside it');
const lab = await Lab.start({ hosts: 1 });
const h = lab.host;
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
  const rules = await h.exec('nft', ['list', 'table', 'inet', 'tsnet']);
  show('nft list table inet tsnet', rules.stdout.split('\n').slice(0, 30).join('\n'));

  say('Tearing down: containers, network, dockerd, namespaces');
  await h.docker(['rm', '-f', 'alice', 'bob']);
  await h.docker(['network', 'rm', 'demo']);
  const left = await h.exec('nft', ['list', 'tables']);
  show('nft list tables   # tsnet removed its table with its last network', left.stdout || '(none)');
} finally {
  await lab.stop();
}
say('Done: the lab is gone and this machine\'s own network was never touched.');
