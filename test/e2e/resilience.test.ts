// Never lose a network: kill -9 during a start storm, things deleted behind
// tsnet's back, dockerd restarts, a damaged store. A real dockerd throughout.
import t from 'tap';
import { promises as fs } from 'node:fs';
import { Lab, IMAGE, heavyOnly, waitFor } from '../helpers/lab.js';
import { canPing, containerIp, removeAll, runContainer } from '../helpers/docker.js';

const lab = await Lab.start({ hosts: 1 });
t.teardown(() => lab.stop());
const h = lab.host;
t.afterEach(async () => {
  if (!h.tsnet) await h.startTsnet();
  await removeAll(h);
});

async function tsnetLinks(): Promise<Array<{ ifname: string; ifalias?: string; master?: string }>> {
  return (JSON.parse((await h.exec('ip', ['-json', 'link', 'show'])).stdout) as Array<{ ifname: string; ifalias?: string; master?: string }>).filter((l) =>
    l.ifalias?.startsWith('tsnet:'),
  );
}

/** What tsnet holds (state.json plus its journal), as tsnetctl reports it. */
async function storedState(): Promise<{ endpoints: Record<string, { address?: string; hostVeth: string }>; networks: Record<string, unknown> }> {
  const r = await h.tsnetctl('status');
  if (r.exitCode !== 0) throw new Error(`tsnetctl status: ${r.stdout}`);
  const s = JSON.parse(r.stdout) as { endpoints: Array<{ id: string; address: string | null; hostVeth: string }>; networks: Array<{ id: string }> };
  return {
    endpoints: Object.fromEntries(s.endpoints.map((e) => [e.id, { hostVeth: e.hostVeth, ...(e.address ? { address: e.address } : {}) }])),
    networks: Object.fromEntries(s.networks.map((n) => [n.id, n])),
  };
}

t.test('kill -9 during a burst of 30 container starts: running containers work, no address twice', heavyOnly(), async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', '--subnet', '10.80.0.0/24', 'storm']);
  const names = Array.from({ length: 30 }, (_, i) => `s${i}`);
  const starts = names.map((n, i) =>
    new Promise((r) => setTimeout(r, i * 40)).then(() => h.docker(['run', '-d', '--name', n, '--network', 'storm', IMAGE, 'sleep', '3600'], { check: false })),
  );
  // Let a few land, then kill the plugin in the middle of the rest.
  await waitFor('first containers', async () => Object.keys((await storedState()).endpoints).length >= 5, 60_000, 50);
  await h.stopTsnet('SIGKILL');
  await new Promise((r) => setTimeout(r, 1500));
  await h.startTsnet();
  const results = await Promise.all(starts);
  t.ok(results.some((r) => r.exitCode === 0), 'some containers started');
  // Containers that failed to start are not running; everything running must work.
  const running = (await h.docker(['ps', '--filter', 'network=storm', '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean);
  t.ok(running.length >= 5, `${running.length} containers running`);
  // Those whose start failed may be retried by the user: start them now.
  for (const n of names.filter((n) => !running.includes(n))) await h.docker(['start', n], { check: false });
  const all = (await h.docker(['ps', '--filter', 'network=storm', '--format', '{{.Names}}'])).stdout.split('\n').filter(Boolean);
  t.equal(all.length, 30, 'every container runs once retried');
  const ips = await Promise.all(all.map((n) => containerIp(h, n, 'storm')));
  t.equal(new Set(ips).size, ips.length, 'no address is used twice');
  for (let i = 0; i < all.length; i += 6) {
    t.ok(await canPing(h, all[i]!, all[(i + 7) % all.length]!), `${all[i]} reaches a peer by name`);
  }
  const stored = await storedState();
  const veths = (await tsnetLinks()).filter((l) => l.ifalias?.startsWith('tsnet:ep:')).map((l) => l.ifname).sort();
  t.same(veths, Object.values(stored.endpoints).map((e) => e.hostVeth).sort(), 'host veths and endpoint records match exactly');
  const epIps = Object.values(stored.endpoints).map((e) => e.address?.split('/')[0]).sort();
  t.same(epIps, [...ips].sort(), `one endpoint per running container (records: ${veths.length}, running: ${all.length})`);
});

t.test('a bridge and a rule deleted behind tsnet\'s back come back at restart; containers keep talking', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'heal']);
  await runContainer(h, 'h1', 'heal');
  await runContainer(h, 'h2', 'heal');
  t.ok(await canPing(h, 'h1', 'h2'));
  await h.stopTsnet();
  t.ok(await canPing(h, 'h1', 'h2'), 'traffic flows while tsnet is stopped');
  const bridge = (await tsnetLinks()).find((l) => l.ifalias?.startsWith('tsnet:net:'))!.ifname;
  await h.exec('ip', ['link', 'del', bridge]);
  await h.exec('iptables', ['-F', 'TSNET-FORWARD']);
  t.notOk(await canPing(h, 'h1', 'h2', 1), 'broken behind tsnet\'s back');
  await h.startTsnet();
  await waitFor('reconcile', async () => (await fs.readFile(h.tsnetLog, 'utf8')).includes('bridge was missing; re-created it'), 10_000);
  await waitFor('connectivity back', () => canPing(h, 'h1', 'h2', 1), 10_000, 200);
  t.ok(await canPing(h, 'h1', 'h2'), 'restored');
  t.match((await h.exec('iptables', ['-S', 'TSNET-FORWARD'])).stdout, new RegExp(`-i ${bridge}`), 'FORWARD accept restored');
  await runContainer(h, 'h3', 'heal');
  t.ok(await canPing(h, 'h3', 'h1'), 'new containers attach right after');
  // On demand, too: tsnetctl reconcile.
  await h.exec('ip', ['link', 'set', bridge, 'down']);
  t.equal((await h.tsnetctl('reconcile')).exitCode, 0, 'tsnetctl reconcile');
  t.ok(await canPing(h, 'h1', 'h2'), 'fixed by an on-demand reconcile');
  const status = JSON.parse((await h.tsnetctl('status')).stdout);
  t.equal(status.networks.length, 1, 'tsnetctl status lists the network');
  // node's own figures, in bytes: a live plugin's heap and RSS are megabytes, never 0.
  t.ok(status.memory.rss > 2 ** 20 && status.memory.heapUsed > 2 ** 20, `tsnetctl status reports memory (${JSON.stringify(status.memory)})`);
});

t.test('dockerd restart: restart-policy containers come back with working networking', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'sticky']);
  await runContainer(h, 'r1', 'sticky', ['--restart', 'always']);
  await runContainer(h, 'r2', 'sticky', ['--restart', 'always']);
  t.ok(await canPing(h, 'r1', 'r2'));
  await h.stopDockerd();
  await h.startDockerd();
  await waitFor('containers restarted', async () => (await h.docker(['ps', '--filter', 'network=sticky', '-q'])).stdout.split('\n').filter(Boolean).length === 2, 60_000, 500);
  t.ok(await canPing(h, 'r1', 'r2'), 'r1 reaches r2 by name after the restart');
  t.ok(await canPing(h, 'r2', 'r1'));
  const stored = await storedState();
  t.equal(Object.keys(stored.endpoints).length, 2, 'stale endpoints of the old containers were cleaned');
  t.equal((await tsnetLinks()).filter((l) => l.ifalias?.startsWith('tsnet:ep:')).length, 2, 'and their veths');
  await h.docker(['update', '--restart', 'no', 'r1', 'r2']);
});

t.test('dockerd restart with --live-restore: containers keep running and talking; cleanup afterwards needs no Revoke', async (t) => {
  // dockerd 29 loses its gateway state here and sends no Revoke (modern-dockerd.md §1);
  // 20.10 and 26 send none for a restored container either. Removal must still clean up.
  await h.stopDockerd();
  await h.startDockerd(['--live-restore']);
  t.teardown(async () => {
    await removeAll(h).catch(() => undefined);
    await h.stopDockerd();
    await h.startDockerd();
  });
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'kept']);
  await runContainer(h, 'k1', 'kept', ['-p', '18090:80']);
  await runContainer(h, 'k2', 'kept');
  await h.docker(['exec', '-d', 'k1', 'httpd', '-f', '-p', '80', '-h', '/www']);
  const outside = async (): Promise<string> => (await lab.outside('curl', ['-s', '--max-time', '2', `http://${h.lanIp}:18090/`], { check: false })).stdout;
  await waitFor('published port', async () => (await outside()).includes('tsnet-lab-ok'), 10_000, 200);
  const pid = (await h.docker(['inspect', '-f', '{{.State.Pid}}', 'k1'])).stdout.trim();
  await h.stopDockerd();
  t.match(await outside(), /tsnet-lab-ok/, 'the published port answers while dockerd is down');
  await h.startDockerd(['--live-restore']);
  t.equal((await h.docker(['inspect', '-f', '{{.State.Pid}}', 'k1'])).stdout.trim(), pid, 'the same container process, restored, not restarted');
  t.ok(await canPing(h, 'k2', 'k1'), 'k2 reaches k1 by name after the restore');
  t.match(await outside(), /tsnet-lab-ok/, 'and the published port still answers');
  await h.docker(['rm', '-f', 'k1', 'k2']);
  await h.docker(['network', 'rm', 'kept']);
  const stored = await storedState();
  t.same([Object.keys(stored.endpoints).length, Object.keys(stored.networks).length], [0, 0], 'no endpoint or network left in the store');
  t.same(await tsnetLinks(), [], 'no tsnet link left');
  t.equal(await outside(), '', 'the host port is closed');
  const status = JSON.parse((await h.tsnetctl('status')).stdout) as { endpoints: unknown[] };
  t.same(status.endpoints, [], 'tsnetctl status lists nothing');
});

t.test('a torn journal write is ignored at the next start; nothing else is lost', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'torn']);
  await runContainer(h, 't1', 'torn');
  await runContainer(h, 't2', 'torn');
  await h.stopTsnet('SIGKILL');
  // A kill in the middle of an append: half a line at the end of the journal.
  await fs.appendFile(`${h.stateDir}/state.journal`, '{"g":999999,"c":"00","ops":[[["endpoints","');
  await h.startTsnet();
  t.notMatch(await fs.readFile(h.tsnetLog, 'utf8'), /address allocation paused/, 'no pause: the torn line was never acknowledged');
  t.ok(await canPing(h, 't1', 't2'), 'running containers unaffected');
  await runContainer(h, 't3', 'torn');
  const ips = await Promise.all(['t1', 't2', 't3'].map((n) => containerIp(h, n, 'torn')));
  t.equal(new Set(ips).size, 3, 'allocation continues with every address accounted for');
});

t.test('a damaged state file is rebuilt from its copy: nothing lost, allocation goes on', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'rot']);
  await runContainer(h, 'r1', 'rot');
  await runContainer(h, 'r2', 'rot');
  await h.stopTsnet();
  // A torn state.json (its head, with the generation, still readable).
  const file = `${h.stateDir}/state.json`;
  const text = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, text.slice(0, text.length - 20));
  await h.startTsnet();
  const log = await fs.readFile(h.tsnetLog, 'utf8');
  t.match(log, /state store damaged; rebuilt from .*state\.prev\.json and the journal with every change/, 'detected and logged');
  t.match(log, /not valid JSON/);
  t.notMatch(log, /address allocation paused/, 'no pause: the copy is as new as the lost file');
  t.ok(await fs.stat(`${file}.bad`), 'the damaged file is kept for an operator');
  t.ok(await canPing(h, 'r1', 'r2'), 'running containers unaffected');
  await runContainer(h, 'r3', 'rot');
  const ips = await Promise.all(['r1', 'r2', 'r3'].map((n) => containerIp(h, n, 'rot')));
  t.equal(new Set(ips).size, 3, 'distinct addresses');
});

t.test('a damaged state file whose copy is older: the copy is used, nothing running is touched, allocation pauses until accepted', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'dmg']);
  await runContainer(h, 'd1', 'dmg');
  await runContainer(h, 'd2', 'dmg');
  // A copy that does not know d0 (as if its last write was lost), put back
  // beside a state.json that does. Each start folds the journal, so after
  // the second one state.json is the only file that knows d0.
  await h.stopTsnet();
  await h.startTsnet();
  const stale = await fs.readFile(`${h.stateDir}/state.prev.json`);
  await runContainer(h, 'd0', 'dmg');
  await h.stopTsnet();
  await h.startTsnet();
  await h.stopTsnet();
  await fs.writeFile(`${h.stateDir}/state.prev.json`, stale);
  const file = `${h.stateDir}/state.json`;
  const text = await fs.readFile(file, 'utf8');
  await fs.writeFile(file, text.slice(0, text.length - 20));
  await h.startTsnet();
  const log = await fs.readFile(h.tsnetLog, 'utf8');
  t.match(log, /state store damaged; loaded the last good copy/, 'detected and logged');
  t.match(log, /tsnetctl accept-state/, 'the log line says what to do');
  await waitFor('reconcile', async () => (await fs.readFile(h.tsnetLog, 'utf8')).includes('kept links tagged by tsnet that no record explains'), 10_000, 100);
  t.ok(await canPing(h, 'd1', 'd2'), 'running containers unaffected');
  t.ok(await canPing(h, 'd1', 'd0'), 'including the one whose record was lost: nothing unknown is removed');
  const refused = await h.docker(['run', '-d', '--name', 'd3', '--network', 'dmg', IMAGE, 'sleep', '60'], { check: false });
  t.not(refused.exitCode, 0, 'no address is handed out meanwhile');
  t.match(refused.stderr, /hands out none until an operator checks/);
  // Restarting does not forget the pause.
  await h.stopTsnet();
  await h.startTsnet();
  t.not((await h.docker(['start', 'd3'], { check: false })).exitCode, 0, 'still paused after a restart');
  // The operator checks: d0 is the container the old copy does not know; it goes, then the state is accepted.
  await h.docker(['rm', '-f', 'd0']);
  t.equal((await h.tsnetctl('accept-state')).exitCode, 0, 'operator accepts the state');
  t.equal((await h.docker(['start', 'd3'], { check: false })).exitCode, 0, 'allocation resumes');
  const ips = await Promise.all(['d1', 'd2', 'd3'].map((n) => containerIp(h, n, 'dmg')));
  t.equal(new Set(ips).size, 3, 'distinct addresses');
});

t.test('both copies damaged: tsnet refuses to start rather than start empty', async (t) => {
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'gone']);
  await h.stopTsnet();
  await fs.writeFile(`${h.stateDir}/state.json`, '{"garbage": tru');
  await fs.writeFile(`${h.stateDir}/state.prev.json`, '');
  await t.rejects(h.startTsnet(), /tsnet exited with 1/, 'does not start');
  const log = await fs.readFile(h.tsnetLog, 'utf8');
  t.match(log, /no usable state in .*will not start with an empty store/);
  // Put a good state back so the rest of the file can clean up.
  await fs.rm(h.stateDir, { recursive: true, force: true });
  await h.startTsnet();
  await h.docker(['network', 'rm', 'gone'], { check: false });
});
