// WireGuard keys: Curve25519 (X25519) pairs made with node's crypto, not by
// spawning `wg genkey`, in WireGuard's text form (base64 of 32 bytes). The
// private key lives in the state directory, 0600, written atomically; the
// public key is what other hosts are told.
import { createPrivateKey, createPublicKey, randomBytes } from 'node:crypto';
import { promises as fs } from 'node:fs';
import path from 'node:path';
import { TsnetError, quote } from '../errors.js';

// DER framing of a raw X25519 key: PKCS#8 for the private, SPKI for the public.
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export interface KeyPair {
  privateKey: string;
  publicKey: string;
}

/** 32 random bytes clamped as Curve25519 requires (what `wg genkey` prints). */
export function generatePrivateKey(): string {
  const k = randomBytes(32);
  k[0]! &= 248;
  k[31] = (k[31]! & 127) | 64;
  return k.toString('base64');
}

export function publicKeyOf(privateKey: string): string {
  const raw = decodeKey(privateKey);
  if (!raw) throw new TsnetError('TSNET_ERR_INTERNAL', 'malformed WireGuard private key');
  const priv = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  const spki = createPublicKey(priv).export({ format: 'der', type: 'spki' });
  return spki.subarray(spki.length - 32).toString('base64');
}

export function generateKeyPair(): KeyPair {
  const privateKey = generatePrivateKey();
  return { privateKey, publicKey: publicKeyOf(privateKey) };
}

/** The 32 bytes of a key in WireGuard's base64 form, or undefined if it is not one. */
export function decodeKey(text: string): Buffer | undefined {
  if (typeof text !== 'string' || !/^[A-Za-z0-9+/]{42}[AEIMQUYcgkosw048]=$/.test(text)) return undefined;
  const raw = Buffer.from(text, 'base64');
  return raw.length === 32 ? raw : undefined;
}

/** A peer's public key from user input or etcd: refused with the option and the value. */
export function parsePublicKey(text: string, what: string): string {
  if (!decodeKey(text)) throw new TsnetError('TSNET_ERR_INVALID_OPTION', `${what}: ${quote(text)} is not a WireGuard public key (44 characters of base64, as \`wg pubkey\` prints)`);
  return text;
}

/**
 * This host's private key, kept in the state directory. Made on first use;
 * replaced only by rotate(). The file is written to a temporary name and
 * renamed, so a crash leaves the old key or the new one, never half of one.
 */
export class KeyFile {
  readonly file: string;
  #pair: KeyPair | undefined;

  constructor(stateDir: string) {
    this.file = path.join(stateDir, 'wireguard.key');
  }

  async load(): Promise<KeyPair> {
    if (this.#pair) return this.#pair;
    const text = (await fs.readFile(this.file, 'utf8').catch((err: NodeJS.ErrnoException) => {
      if (err.code === 'ENOENT') return undefined;
      throw err;
    }))?.trim();
    if (text !== undefined) {
      if (!decodeKey(text)) throw new TsnetError('TSNET_ERR_INVALID_CONFIG', `${this.file} does not hold a WireGuard private key; move it away to make a new one`);
      // Whoever put it there, it must not stay readable by others.
      await fs.chmod(this.file, 0o600);
      this.#pair = { privateKey: text, publicKey: publicKeyOf(text) };
      return this.#pair;
    }
    return this.#write(generateKeyPair());
  }

  /** A new pair, durable before it is used anywhere. */
  async rotate(): Promise<KeyPair> {
    return this.#write(generateKeyPair());
  }

  async #write(pair: KeyPair): Promise<KeyPair> {
    const tmp = `${this.file}.tmp`;
    const fh = await fs.open(tmp, 'w', 0o600);
    try {
      await fh.writeFile(`${pair.privateKey}\n`);
      await fh.sync();
    } finally {
      await fh.close();
    }
    await fs.rename(tmp, this.file);
    this.#pair = pair;
    return pair;
  }
}
