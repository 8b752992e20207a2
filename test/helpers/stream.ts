// A TCP stream of a known payload between two network namespaces, with the
// longest pause at the receiver measured: what the WireGuard tests use to
// look for the payload on the wire and to time key rotations and restarts.
// Both ends are node itself run with nsenter, so no tool beyond node is
// needed inside the namespaces (a container's included).
import { spawn } from 'node:child_process';
import { cleanEnv, sh, waitFor } from './lab.js';

// Receives one connection; reports bytes, digest and the longest pause between arrivals.
const SERVER = `
const net = require('node:net'); const crypto = require('node:crypto');
const [host, port] = process.argv.slice(1);
const srv = net.createServer((c) => {
  const h = crypto.createHash('sha256'); let bytes = 0, last = 0, gap = 0, first = 0;
  c.on('data', (d) => { const now = performance.now(); if (!first) first = now; else gap = Math.max(gap, now - last); last = now; bytes += d.length; h.update(d); });
  c.on('end', () => { console.log(JSON.stringify({ bytes, sha256: h.digest('hex'), maxGapMs: gap, ms: last - first })); srv.close(); });
});
srv.listen(Number(port), host);
setTimeout(() => process.exit(3), 120000).unref();
`;
// Sends a known payload in 1 KiB chunks, one every 2 ms, for the given time.
const CLIENT = `
const net = require('node:net'); const crypto = require('node:crypto');
const [host, port, marker, seconds] = process.argv.slice(1);
const chunk = Buffer.alloc(1024, marker);
const h = crypto.createHash('sha256'); let bytes = 0;
const c = net.connect(Number(port), host, () => {
  const until = Date.now() + Number(seconds) * 1000;
  const tick = () => { if (Date.now() > until) { c.end(); return; } c.write(chunk); h.update(chunk); bytes += chunk.length; setTimeout(tick, 2); };
  tick();
});
c.on('close', () => console.log(JSON.stringify({ bytes, sha256: h.digest('hex') })));
c.on('error', (e) => { console.error(e.message); process.exit(2); });
`;

export interface StreamResult {
  sent: { bytes: number; sha256: string };
  got: { bytes: number; sha256: string; maxGapMs: number; ms: number };
}

/** `nsenter` arguments entering a namespace: ['--net=/run/netns/x'] or ['-t', pid, '-n']. */
function nodeIn(enter: string[], script: string, args: string[]): Promise<Record<string, unknown>> {
  const child = spawn('nsenter', [...enter, '--', process.execPath, '-e', script, ...args], { env: cleanEnv(), stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  let err = '';
  child.stdout.on('data', (d: Buffer) => (out += d.toString()));
  child.stderr.on('data', (d: Buffer) => (err += d.toString()));
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as Record<string, unknown>) : reject(new Error(`node (nsenter ${enter.join(' ')}) exited ${code}: ${err}`))));
  });
}

/** Stream `seconds` of `marker` from the client namespace to `ip` in the server namespace; `during` runs meanwhile. */
export async function stream(server: string[], client: string[], ip: string, seconds: number, marker: string, during?: () => Promise<void>): Promise<StreamResult> {
  const port = String(7000 + Math.floor(Math.random() * 1000));
  const got = nodeIn(server, SERVER, [ip, port]);
  got.catch(() => undefined);
  await waitFor('stream server listening', async () => (await sh('nsenter', [...server, '--', 'ss', '-ltnH', `sport = :${port}`])).stdout.includes(port), 10_000, 50);
  const sent = nodeIn(client, CLIENT, [ip, port, marker, String(seconds)]);
  sent.catch(() => undefined);
  if (during) await during();
  const [s, g] = await Promise.all([sent, got]);
  return { sent: s as StreamResult['sent'], got: g as StreamResult['got'] };
}
