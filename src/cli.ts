// tsnetctl: talk to a running tsnet over its socket.
//   node dist/cli.js [--socket PATH] status | reconcile | accept-state
//   node dist/cli.js [--socket PATH] doctor [--json]
//   node dist/cli.js [--socket PATH] events [--recent]
//   node dist/cli.js [--socket PATH] names [--json]
//   node dist/cli.js [--socket PATH] wg-pubkey | rotate-key
//   node dist/cli.js [--socket PATH] forget-host [HOST]
import { Client } from 'undici';
import { DEFAULTS } from './config.js';
import { formatFinding, type Finding } from './doctor/checks.js';
import { formatNames } from './dns/format.js';
import type { NamesStatus } from './dns/service.js';

const METHODS: Record<string, string> = {
  status: 'Tsnet.Status',
  reconcile: 'Tsnet.Reconcile',
  'accept-state': 'Tsnet.AcceptState',
  doctor: 'Tsnet.Doctor',
  events: 'Tsnet.Events',
  names: 'Tsnet.Names',
  'wg-pubkey': 'Tsnet.WgPubkey',
  'rotate-key': 'Tsnet.RotateKey',
  'forget-host': 'Tsnet.ForgetHost',
};

async function main(argv: string[]): Promise<number> {
  let socket = process.env.TSNET_SOCKET || DEFAULTS.socket;
  const args = [...argv];
  const i = args.indexOf('--socket');
  if (i >= 0) {
    socket = args[i + 1] ?? socket;
    args.splice(i, 2);
  }
  const command = args[0] ?? '';
  const method = METHODS[command];
  if (!method) {
    process.stderr.write(`usage: tsnetctl [--socket PATH] ${Object.keys(METHODS).join(' | ')}\n`);
    return 2;
  }
  // Events stay open for as long as the operator watches: no idle timeout.
  const client = new Client('http://localhost', { socketPath: socket, ...(command === 'events' ? { bodyTimeout: 0, headersTimeout: 0 } : {}) });
  try {
    const body =
      command === 'events' ? JSON.stringify({ recent: args.includes('--recent') }) : command === 'forget-host' ? JSON.stringify(args[1] === undefined ? {} : { host: args[1] }) : '';
    const res = await client.request({ path: `/${method}`, method: 'POST', body });
    if (command === 'events' && res.statusCode === 200) {
      // The stream's opening empty line is for the connection, not the operator.
      let opened = false;
      for await (const chunk of res.body) {
        let text = (chunk as Buffer).toString('utf8');
        if (!opened && text.startsWith('\n')) text = text.slice(1);
        opened = true;
        if (text !== '') process.stdout.write(text);
      }
      return 0;
    }
    const parsed = JSON.parse(await res.body.text()) as unknown;
    if (command === 'wg-pubkey' && res.statusCode === 200) {
      // Plain, for `-o tsnet.peers=ADDR=$(tsnetctl wg-pubkey)` on the other hosts.
      process.stdout.write(`${(parsed as { publicKey: string }).publicKey}\n`);
      return 0;
    }
    if (command === 'names' && res.statusCode === 200 && !args.includes('--json') && (parsed as { networks?: unknown }).networks) {
      process.stdout.write(formatNames(parsed as NamesStatus));
      return 0;
    }
    if (command === 'doctor' && res.statusCode === 200 && !args.includes('--json')) {
      const findings = (parsed as { findings: Finding[] }).findings;
      for (const f of findings) process.stdout.write(`${formatFinding(f)}\n`);
      const failed = findings.filter((f) => f.level === 'fail').length;
      process.stdout.write(failed > 0 ? `${failed} problem(s) found\n` : 'no problems found\n');
      return failed > 0 ? 1 : 0;
    }
    process.stdout.write(`${JSON.stringify(parsed, null, 2)}\n`);
    if (command === 'doctor' && res.statusCode === 200) return (parsed as { findings: Finding[] }).findings.some((f) => f.level === 'fail') ? 1 : 0;
    return res.statusCode === 200 ? 0 : 1;
  } catch (err) {
    process.stderr.write(`cannot reach tsnet at ${socket}: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await client.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
