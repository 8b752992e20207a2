// The WireGuard configuration in `wg`'s own file format (wg(8),
// CONFIGURATION FILE FORMAT), rendered from what tsnet wants. It is applied
// with `wg syncconf`, which changes only what differs: peers that stay keep
// their sessions, a new key replaces a peer without touching the others. The
// same text configures the kernel's device and wireguard-go's, so the two
// paths cannot drift apart.
import { TsnetError } from '../errors.js';
import { parseIp } from '../net/cidr.js';
import { decodeKey } from './keys.js';

export interface WgPeer {
  publicKey: string;
  /** the peer's underlay address and port, a.b.c.d:port or [v6]:port */
  endpoint: string;
  /** the peer's tunnel address(es), as /32 or /128 */
  allowedIps: string[];
}

export interface WgConfig {
  privateKey: string;
  listenPort: number;
  peers: WgPeer[];
}

/**
 * Every peer gets a persistent keepalive. Besides keeping idle sessions
 * warm, turning it on for a peer sends a keepalive at once, so a peer added
 * (or re-keyed after the other host rotated) shakes hands now rather than
 * when it next has data: otherwise a host that only sends ACKs waits for the
 * other side's handshake retry, 5 s later (measured: a 5 s pause in a
 * transfer across a rotation without it).
 */
export const KEEPALIVE_S = 25;

const ENDPOINT = /^(?:\[([0-9a-fA-F:.]+)\]|(\d{1,3}(?:\.\d{1,3}){3})):(\d{1,5})$/;

function check(ok: boolean, what: string): void {
  if (!ok) throw new TsnetError('TSNET_ERR_INTERNAL', `refusing to write ${what} into a WireGuard configuration`);
}

/** The text `wg syncconf` reads. Every value is checked: nothing user-made reaches `wg` unvalidated. */
export function renderConfig(c: WgConfig): string {
  check(decodeKey(c.privateKey) !== undefined, 'a malformed private key');
  check(Number.isInteger(c.listenPort) && c.listenPort > 0 && c.listenPort < 65536, `listen port ${c.listenPort}`);
  const lines = ['[Interface]', `PrivateKey = ${c.privateKey}`, `ListenPort = ${c.listenPort}`];
  // Sorted, so the same wish always renders the same text.
  for (const p of [...c.peers].sort((a, b) => a.publicKey.localeCompare(b.publicKey))) {
    check(decodeKey(p.publicKey) !== undefined, `public key ${JSON.stringify(p.publicKey)}`);
    const m = ENDPOINT.exec(p.endpoint);
    check(m !== null && parseIp(m[1] ?? m[2]!) !== undefined && Number(m[3]) < 65536, `endpoint ${JSON.stringify(p.endpoint)}`);
    for (const a of p.allowedIps) {
      const [addr, bits] = a.split('/');
      check(addr !== undefined && parseIp(addr) !== undefined && /^\d{1,3}$/.test(bits ?? ''), `allowed IP ${JSON.stringify(a)}`);
    }
    lines.push('', '[Peer]', `PublicKey = ${p.publicKey}`, `Endpoint = ${p.endpoint}`, `AllowedIPs = ${p.allowedIps.join(', ')}`, `PersistentKeepalive = ${KEEPALIVE_S}`);
  }
  return `${lines.join('\n')}\n`;
}

export interface DevicePeer {
  publicKey: string;
  endpoint: string | undefined;
  allowedIps: string[];
  /** seconds since the epoch; 0 = never */
  latestHandshake: number;
  rx: number;
  tx: number;
}

export interface DeviceState {
  publicKey: string;
  listenPort: number;
  peers: DevicePeer[];
}

/**
 * `wg show IFACE dump`: the interface line (private key, public key, port,
 * fwmark), then one line per peer. The private key is dropped here, so it
 * never reaches a log or a status answer.
 */
export function parseDump(text: string): DeviceState {
  const [head, ...rest] = text.split('\n').filter((l) => l.trim() !== '');
  const f = (head ?? '').split('\t');
  const state: DeviceState = { publicKey: f[1] ?? '', listenPort: Number(f[2] ?? 0), peers: [] };
  for (const line of rest) {
    const p = line.split('\t');
    if (p.length < 8) continue;
    state.peers.push({
      publicKey: p[0]!,
      endpoint: p[2] === '(none)' ? undefined : p[2],
      allowedIps: p[3] === '(none)' ? [] : p[3]!.split(','),
      latestHandshake: Number(p[4]),
      rx: Number(p[5]),
      tx: Number(p[6]),
    });
  }
  return state;
}
