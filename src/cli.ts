// tsnetctl: talk to a running tsnet over its socket.
//   node dist/cli.js [--socket PATH] status | reconcile | accept-state
import { Client } from 'undici';
import { DEFAULTS } from './config.js';

const METHODS: Record<string, string> = { status: 'Tsnet.Status', reconcile: 'Tsnet.Reconcile', 'accept-state': 'Tsnet.AcceptState' };

async function main(argv: string[]): Promise<number> {
  let socket = process.env.TSNET_SOCKET || DEFAULTS.socket;
  const args = [...argv];
  const i = args.indexOf('--socket');
  if (i >= 0) {
    socket = args[i + 1] ?? socket;
    args.splice(i, 2);
  }
  const method = METHODS[args[0] ?? ''];
  if (!method) {
    process.stderr.write(`usage: tsnetctl [--socket PATH] ${Object.keys(METHODS).join(' | ')}\n`);
    return 2;
  }
  const client = new Client('http://localhost', { socketPath: socket });
  try {
    const res = await client.request({ path: `/${method}`, method: 'POST', body: '' });
    const text = await res.body.text();
    process.stdout.write(`${JSON.stringify(JSON.parse(text), null, 2)}\n`);
    return res.statusCode === 200 ? 0 : 1;
  } catch (err) {
    process.stderr.write(`cannot reach tsnet at ${socket}: ${(err as Error).message}\n`);
    return 1;
  } finally {
    await client.close();
  }
}

process.exitCode = await main(process.argv.slice(2));
