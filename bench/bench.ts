// npm run bench: tsnet side by side with Docker's own bridge driver on the
// same lab dockerd, runs interleaved so drift hits both alike. Benchmarks are
// not tests: nothing here fails on a number; a figure that cannot be measured
// is printed as n/a.
//   BENCH_ROUNDS   interleaved rounds per figure (default 15)
import { promises as fs } from 'node:fs';
import os from 'node:os';
import { Lab, IMAGE, type LabHost } from '../test/helpers/lab.js';
import { fmt, ratio, summarize, table, timeIt, type Summary } from './stats.js';

const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 15);

interface Figure {
  name: string;
  unit: string;
  /** lower is better unless stated */
  results: Record<string, number[]>;
}

function log(msg: string): void {
  process.stderr.write(`${msg}\n`);
}

async function dockerRunLatency(h: LabHost): Promise<Figure> {
  const nets: Record<string, string> = { none: 'none', 'docker bridge': 'bench-br', 'tsnet bridge': 'bench-ts' };
  await h.docker(['network', 'create', 'bench-br']);
  await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'bench-ts']);
  const results: Record<string, number[]> = Object.fromEntries(Object.keys(nets).map((k) => [k, []]));
  for (const net of Object.values(nets)) await h.docker(['run', '--rm', '--network', net, IMAGE, 'true']);
  for (let i = 0; i < ROUNDS; i++) {
    for (const [label, net] of Object.entries(nets)) {
      results[label]!.push(await timeIt(() => h.docker(['run', '--rm', '--network', net, IMAGE, 'true'])));
    }
  }
  await h.docker(['network', 'rm', 'bench-br', 'bench-ts']);
  return { name: '`docker run --rm true`', unit: 'ms', results };
}

async function networkCreateRemove(h: LabHost): Promise<Figure> {
  const variants: Record<string, string[]> = {
    'docker bridge': [],
    'tsnet bridge': ['-d', 'tsnet'],
    'tsnet bridge + tsnet IPAM': ['-d', 'tsnet', '--ipam-driver', 'tsnet'],
  };
  const results: Record<string, number[]> = Object.fromEntries(Object.keys(variants).map((k) => [k, []]));
  for (let i = 0; i < ROUNDS; i++) {
    for (const [label, args] of Object.entries(variants)) {
      results[label]!.push(
        await timeIt(async () => {
          await h.docker(['network', 'create', ...args, 'bench-cr']);
          await h.docker(['network', 'rm', 'bench-cr']);
        }),
      );
    }
  }
  return { name: '`docker network create` + `rm`', unit: 'ms', results };
}

/** tsnet's own time inside CreateEndpoint + Join, from its debug log ("handled" lines). */
async function pluginShare(h: LabHost): Promise<Record<string, Summary>> {
  const text = await fs.readFile(h.tsnetLog, 'utf8');
  const per: Record<string, number[]> = {};
  for (const line of text.split('\n')) {
    if (!line.includes('"handled"')) continue;
    try {
      const rec = JSON.parse(line) as { method?: string; ms?: number };
      if (rec.method && typeof rec.ms === 'number') (per[rec.method] ??= []).push(rec.ms);
    } catch {
      /* partial line */
    }
  }
  return Object.fromEntries(Object.entries(per).map(([k, v]) => [k, summarize(v)]));
}

function render(fig: Figure, baseline: string): string {
  const base = summarize(fig.results[baseline] ?? []);
  const rows = Object.entries(fig.results).map(([label, values]) => {
    const s = summarize(values);
    return [label, fmt(s.median), fmt(s.min), fmt(s.max), String(s.n), label === baseline ? '1.00' : ratio(s.median, base.median)];
  });
  return `### ${fig.name}\n\n${table(['driver', `median ${fig.unit}`, 'min', 'max', 'runs', `ratio vs ${baseline}`], rows)}\n`;
}

async function main(): Promise<void> {
  const started = new Date();
  log(`bench: starting a lab (${ROUNDS} interleaved rounds per figure)`);
  // tsnet at info level for the latency figures, so logging costs what it would in production;
  // the plugin-share figure below needs debug timing lines, taken in a second pass.
  const lab = await Lab.start({ hosts: 1, tsnetEnv: { TSNET_LOG_LEVEL: 'info' } });
  const h = lab.host;
  const out: string[] = [];
  try {
    const dockerd = (await h.docker(['version', '-f', '{{.Server.Version}}'])).stdout.trim();
    out.push(`## tsnet benchmark, ${started.toISOString()}`, '');
    out.push(`Machine: ${os.cpus().length} × ${os.cpus()[0]?.model ?? '?'}, ${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, Linux ${os.release()}; dockerd ${dockerd}; node ${process.version}.`, '');
    log('bench: docker run latency');
    const run = await dockerRunLatency(h);
    out.push(render(run, 'docker bridge'));
    log('bench: network create + rm');
    out.push(render(await networkCreateRemove(h), 'docker bridge'));

    log('bench: plugin share (tsnet restarted at debug level for its timing lines)');
    await h.stopTsnet();
    await h.startTsnet({ TSNET_LOG_LEVEL: 'debug' });
    await h.docker(['network', 'create', '-d', 'tsnet', '--ipam-driver', 'tsnet', 'bench-share']);
    await fs.writeFile(h.tsnetLog, '');
    for (let i = 0; i < ROUNDS * 2; i++) await h.docker(['run', '--rm', '--network', 'bench-share', IMAGE, 'true']);
    const share = await pluginShare(h);
    const rows = ['NetworkDriver.CreateEndpoint', 'NetworkDriver.Join', 'IpamDriver.RequestAddress', 'NetworkDriver.DeleteEndpoint'].map((m) => {
      const s = share[m];
      return [m, s ? fmt(s.median, 2) : 'n/a', s ? fmt(s.p99, 2) : 'n/a', s ? String(s.n) : '0'];
    });
    out.push(`### Time inside tsnet's handlers (its own timing, debug log)\n\n${table(['call', 'p50 ms', 'p99 ms', 'calls'], rows)}\n`);
  } finally {
    await lab.stop();
  }
  process.stdout.write(`${out.join('\n')}\n`);
}

await main();
