// npm run bench:plugin: the managed plugin's size and start-up, in a lab of
// its own (built with no registry, as the e2e test does). Nothing fails on a
// number; the figures are printed as markdown tables.
//   BENCH_ROUNDS   disable/enable rounds (default 15)
//
// Per round: `docker plugin disable`, then `docker plugin enable` while the
// plugin's socket is polled every 5 ms from outside. "socket listening" is
// the time from the enable call to the first successful connect; "enable
// returns" is the CLI's own time. dockerd waits 500 ms after starting a
// plugin before it first dials the socket, then retries only every 3 s, so
// enable takes at least ~0.5 s, and 3.5 s when the plugin is not listening
// by then.
import { existsSync, promises as fs } from 'node:fs';
import path from 'node:path';
import { buildPlugin } from '../plugin/build.js';
import { DOCKER, Lab, canConnect, cleanEnv, cliEnv, sh, waitFor } from '../test/helpers/lab.js';
import { fmt, summarize, table } from './stats.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);
const PLUGIN = 'tsnet:latest';

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

async function main(): Promise<void> {
  log('bench:plugin: starting a lab and building the plugin (no registry)');
  // A /run of its own, as a real host has: the plugin's run mount then propagates.
  const lab = await Lab.start({ hosts: 1, tsnet: false, ownRun: true });
  const h = lab.host;
  const out: string[] = [];
  try {
    const built = await buildPlugin({
      docker: DOCKER,
      host: `unix://${h.dockerSock}`,
      env: cleanEnv(cliEnv()),
      offline: true,
      outDir: path.join(lab.dir, 'plugin-bundle'),
      log,
    });
    const rootfs = path.join(built.bundleDir, 'rootfs');
    const part = async (rel: string): Promise<number> => Number((await sh('du', ['-sb', path.join(rootfs, rel)])).stdout.split('\t')[0]);
    const gz = Number((await sh('sh', ['-c', `tar -C '${rootfs}' -c . | gzip -6 | wc -c`])).stdout.trim());
    const mb = (b: number): string => fmt(b / 1e6);
    out.push(
      `### Managed plugin size\n\n${table(
        ['what', 'MB'],
        [
          ['rootfs (what dockerd stores per plugin)', mb(built.rootfsBytes)],
          ['… node binary', mb(await part('usr/local/bin/node'))],
          ['… tsnet, bundled (app/bundle)', mb(await part('app/bundle'))],
          ['… production node_modules', mb(await part('app/node_modules'))],
          ['… tools and shared libraries', mb(built.rootfsBytes - (await part('usr/local/bin/node')) - (await part('app')))],
          ['rootfs as tar.gz (what a push would ship)', mb(gz)],
        ],
      )}\n`,
    );

    const stateDir = path.join(h.dir, 'plugin-state');
    await fs.mkdir(stateDir, { recursive: true });
    await h.docker(['plugin', 'set', PLUGIN, `state.source=${stateDir}`]);
    const id = (await h.docker(['plugin', 'inspect', '-f', '{{.Id}}', PLUGIN])).stdout.trim();
    // The /proc/<pid>/root/… path is too long for a socket address: go through a symlink.
    const link = path.join(lab.dir, 'plugin-run');
    await fs.symlink(`/proc/${h.mntPid}/root/run/docker/plugins/${id}`, link);
    const sock = path.join(link, 'tsnet.sock');

    const listen: number[] = [];
    const enable: number[] = [];
    const inside: number[] = [];
    const toShim: number[] = [];
    let first: [number, number] = [NaN, NaN];
    const shimToListen: number[] = [];
    const dockerdLog = path.join(h.dir, 'dockerd.log');
    for (let i = 0; i <= ROUNDS; i++) {
      const mark = (await fs.stat(dockerdLog)).size;
      const wall0 = Date.now();
      const t0 = performance.now();
      let listening = NaN;
      const poll = waitFor('plugin socket', async () => existsSync(sock) && (await canConnect(sock)), 15_000, 5).then(() => (listening = performance.now() - t0));
      await h.docker(['plugin', 'enable', PLUGIN]);
      const enabled = performance.now() - t0;
      await poll;
      const text = (await fs.readFile(dockerdLog)).subarray(mark).toString('utf8');
      const ms = /\\"ms\\":([\d.]+),\\"msg\\":\\"tsnet listening/.exec(text);
      // containerd's shim for the plugin starts ("starting signal loop"), then tsnet logs "tsnet listening".
      const shim = /time="([^"]+)" level=info msg="starting signal loop"/.exec(text);
      const up = /\\"time\\":\\"([^\\]+)\\"[^\n]*\\"msg\\":\\"tsnet listening/.exec(text);
      await h.docker(['plugin', 'disable', PLUGIN]);
      if (i === 0) {
        // the first start after create: a fresh rootfs, nothing of it cached yet
        first = [listening, enabled];
        continue;
      }
      listen.push(listening);
      enable.push(enabled);
      if (ms) inside.push(Number(ms[1]));
      if (shim && up) {
        toShim.push(Date.parse(shim[1]!) - wall0);
        shimToListen.push(Date.parse(up[1]!) - Date.parse(shim[1]!));
      }
      log(`round ${i}: listening ${listening.toFixed(0)} ms, enable returned ${enabled.toFixed(0)} ms`);
    }
    const row = (name: string, v: number[]): string[] => {
      const s = summarize(v);
      return [name, fmt(s.median, 0), fmt(s.min, 0), fmt(s.max, 0), String(s.n)];
    };
    out.push(
      `### \`docker plugin enable\` to listening (${ROUNDS} rounds after a warm-up)\n\n${table(
        ['figure', 'median ms', 'min', 'max', 'runs'],
        [
          row('enable call → socket accepts a connection', listen),
          row('`docker plugin enable` returns', enable),
          row('… enable call → containerd shim started (dockerd log)', toShim),
          row('… shim started → tsnet listening (node start-up, runc, tsnet)', shimToListen),
          row('… inside tsnet: start() → listening (its own log)', inside),
          row('first enable after `docker plugin create`: socket accepts', [first[0]]),
          row('first enable after `docker plugin create`: enable returns', [first[1]]),
        ],
      )}\n`,
    );
  } finally {
    await h.docker(['plugin', 'disable', '-f', PLUGIN], { check: false });
    await h.docker(['plugin', 'rm', '-f', PLUGIN], { check: false });
    await lab.stop();
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
