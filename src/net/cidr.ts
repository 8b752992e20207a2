// Address maths on bigint so IPv4 and IPv6 share one code path.
// ip-cidr (ip-address underneath) does the textual parsing of IPv6; IPv4 is
// parsed strictly here because ip-address accepts forms Docker would not
// ("1.2.3", leading zeros), and a lenient parser is how two spellings of one
// address end up allocated twice.
import IPCIDR from 'ip-cidr';

export interface Ip {
  readonly v6: boolean;
  readonly value: bigint;
}

export interface Prefix {
  readonly v6: boolean;
  /** network address (host bits zero) */
  readonly base: bigint;
  readonly bits: number;
}

const V4_OCTET = /^(25[0-5]|2[0-4]\d|1\d\d|[1-9]?\d)$/;

export function width(v6: boolean): number {
  return v6 ? 128 : 32;
}

/** The family of an address already known to be one (no parsing: a colon only appears in IPv6). */
export function ipFamily(ip: string): 4 | 6 {
  return ip.includes(':') ? 6 : 4;
}

export function parseIp(text: string): Ip | undefined {
  if (typeof text !== 'string' || text.length === 0 || text.length > 45) return undefined;
  if (!text.includes(':')) {
    const parts = text.split('.');
    if (parts.length !== 4 || !parts.every((p) => V4_OCTET.test(p))) return undefined;
    const value = parts.reduce((acc, p) => (acc << 8n) | BigInt(Number(p)), 0n);
    return { v6: false, value };
  }
  if (!/^[0-9a-fA-F:.]+$/.test(text) || !IPCIDR.isValidAddress(text)) return undefined;
  const addr = IPCIDR.createAddress(text);
  if (addr.constructor.name !== 'Address6') return undefined;
  return { v6: true, value: BigInt(addr.bigInteger().toString()) };
}

export function formatIp(ip: Ip): string {
  if (!ip.v6) {
    const v = ip.value;
    return [24n, 16n, 8n, 0n].map((s) => String((v >> s) & 255n)).join('.');
  }
  // RFC 5952 canonical form, as `ip -json` prints it.
  const groups: string[] = [];
  for (let i = 7; i >= 0; i--) groups.push(((ip.value >> BigInt(i * 16)) & 0xffffn).toString(16));
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8; ) {
    if (groups[i] !== '0') {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === '0') j++;
    if (j - i > bestLen && j - i > 1) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  if (bestStart < 0) return groups.join(':');
  const head = groups.slice(0, bestStart).join(':');
  const tail = groups.slice(bestStart + bestLen).join(':');
  return `${head}::${tail}`;
}

function mask(v6: boolean, bits: number): bigint {
  const w = width(v6);
  return ((1n << BigInt(w)) - 1n) ^ ((1n << BigInt(w - bits)) - 1n);
}

/** Parse "a.b.c.d/n"; with strict, host bits must be zero (Docker's rule for --subnet). */
export function parsePrefix(text: string, strict = true): Prefix | undefined {
  if (typeof text !== 'string') return undefined;
  const slash = text.indexOf('/');
  if (slash < 0) return undefined;
  const ip = parseIp(text.slice(0, slash));
  const bitsText = text.slice(slash + 1);
  if (!ip || !/^\d{1,3}$/.test(bitsText)) return undefined;
  const bits = Number(bitsText);
  if (bits > width(ip.v6)) return undefined;
  const base = ip.value & mask(ip.v6, bits);
  if (strict && base !== ip.value) return undefined;
  return { v6: ip.v6, base, bits };
}

/** Parse an address with prefix length ("10.0.0.5/24") into the address and its prefix. */
export function parseCidrAddress(text: string): { ip: Ip; prefix: Prefix } | undefined {
  const prefix = parsePrefix(text, false);
  if (!prefix) return undefined;
  const ip = parseIp(text.slice(0, text.indexOf('/')));
  if (!ip) return undefined;
  return { ip, prefix };
}

export function formatPrefix(p: Prefix): string {
  return `${formatIp({ v6: p.v6, value: p.base })}/${p.bits}`;
}

export function prefixSize(p: Prefix): bigint {
  return 1n << BigInt(width(p.v6) - p.bits);
}

export function lastAddress(p: Prefix): bigint {
  return p.base + prefixSize(p) - 1n;
}

export function contains(p: Prefix, ip: Ip): boolean {
  return p.v6 === ip.v6 && ip.value >= p.base && ip.value <= lastAddress(p);
}

export function containsPrefix(outer: Prefix, inner: Prefix): boolean {
  return outer.v6 === inner.v6 && outer.bits <= inner.bits && inner.base >= outer.base && lastAddress(inner) <= lastAddress(outer);
}

export function overlaps(a: Prefix, b: Prefix): boolean {
  return a.v6 === b.v6 && a.base <= lastAddress(b) && b.base <= lastAddress(a);
}

export function samePrefix(a: Prefix, b: Prefix): boolean {
  return a.v6 === b.v6 && a.base === b.base && a.bits === b.bits;
}

/** "10.0.0.5" + prefix /24 -> "10.0.0.5/24": the CIDR form dockerd expects in replies. */
export function withPrefixLength(ip: Ip, bits: number): string {
  return `${formatIp(ip)}/${bits}`;
}

/** Split a pool into subnets of `bits`, yielding bases in order. */
export function* subnets(pool: Prefix, bits: number): Generator<Prefix> {
  if (bits < pool.bits || bits > width(pool.v6)) return;
  const step = 1n << BigInt(width(pool.v6) - bits);
  for (let base = pool.base; base <= lastAddress(pool); base += step) yield { v6: pool.v6, base, bits };
}

/** The address a PTR query's name stands for (4.3.2.1.in-addr.arpa, or 32 nibbles under ip6.arpa), or undefined. */
export function parseReverseName(name: string): Ip | undefined {
  const n = name.toLowerCase().replace(/\.$/, '');
  if (n.endsWith('.in-addr.arpa')) {
    const parts = n.slice(0, -'.in-addr.arpa'.length).split('.');
    if (parts.length !== 4) return undefined;
    return parseIp(parts.reverse().join('.'));
  }
  if (n.endsWith('.ip6.arpa')) {
    const nibbles = n.slice(0, -'.ip6.arpa'.length).split('.');
    if (nibbles.length !== 32 || !nibbles.every((x) => /^[0-9a-f]$/.test(x))) return undefined;
    return { v6: true, value: BigInt(`0x${nibbles.reverse().join('')}`) };
  }
  return undefined;
}
